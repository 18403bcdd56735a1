"""riskgate users load: ListUsers JSON (pages) and CSV, upsert, rejected entries; get/set/list users."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timezone

import pyarrow as pa

import pytest
from typer.testing import CliRunner

from cli import app
from ingest import store
from ingest.enrich import Enricher
from ingest.errors import ConfigurationError, InputFormatError
from ingest.schema import SOURCE_SCHEMA
from ingest.users import UserDataError, get_user, list_users, load_users, set_user_status

runner = CliRunner()


def user(name, status="CONFIRMED", enabled=True, mfa=None, preferred=None, options=None, **extra):
    u = {
        "Username": name,
        "Attributes": [{"Name": "sub", "Value": f"sub-{name}"}, {"Name": "email", "Value": f"{name}@example.com"},
                       {"Name": "custom:tier", "Value": "gold"}],
        "UserCreateDate": "2024-07-17T17:25:55.123000+00:00",
        "UserLastModifiedDate": "2024-08-01T10:00:00+00:00",
        "Enabled": enabled,
        "UserStatus": status,
        "MFAOptions": options or [],
    }
    if mfa is not None:
        u["UserMFASettingList"] = mfa
    if preferred is not None:
        u["PreferredMfaSetting"] = preferred
    u.update(extra)
    return u


@pytest.fixture
def con(tmp_path):
    c = store.connect(tmp_path / "u.duckdb")
    yield c
    c.close()


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_list_users_page_loads_every_field(con, tmp_path):
    page = {"Users": [
        user("alice", mfa=["SOFTWARE_TOKEN_MFA", "SMS_MFA"], preferred="SOFTWARE_TOKEN_MFA"),
        user("bob", status="RESET_REQUIRED", enabled=False),
        user("carol", options=[{"DeliveryMedium": "SMS", "AttributeName": "phone_number"}]),
    ], "PaginationToken": "abc"}
    r = load_users(con, write(tmp_path, "u.json", json.dumps(page, indent=4)), user_pool_id="eu-west-1_X")
    assert (r.read, r.added, r.updated, r.rejected) == (3, 3, 0, [])
    a = get_user(con, "alice", "eu-west-1_X")
    assert a["user_sub"] == "sub-alice" and a["email"] == "alice@example.com"
    assert a["user_pool_id"] == "eu-west-1_X" and a["user_status"] == "CONFIRMED" and a["enabled"] is True
    assert a["mfa_settings"] == ["SMS_MFA", "SOFTWARE_TOKEN_MFA"] and a["preferred_mfa"] == "SOFTWARE_TOKEN_MFA"
    assert a["mfa_enabled"] is True
    assert a["attributes"]["custom:tier"] == "gold"
    assert a["created_at"].isoformat().startswith("2024-07-17T17:25:55.123")
    b = get_user(con, "bob", "eu-west-1_X")
    assert b["user_status"] == "RESET_REQUIRED" and b["enabled"] is False
    assert b["mfa_enabled"] is False and b["mfa_settings"] == []
    c = get_user(con, "carol", "eu-west-1_X")
    assert c["mfa_settings"] == ["SMS_MFA"] and c["mfa_enabled"] is True, "legacy MFAOptions SMS means SMS_MFA"
    assert get_user(con, "nobody", "eu-west-1_X") is None


def test_pages_back_to_back_and_a_list_of_pages(con, tmp_path):
    p1 = json.dumps({"Users": [user("a"), user("b")], "PaginationToken": "t"}, indent=2)
    p2 = json.dumps({"Users": [user("c")]})
    r = load_users(con, write(tmp_path, "pages.json", p1 + "\n" + p2 + "\n"))
    assert (r.read, r.added) == (3, 3)
    r = load_users(con, write(tmp_path, "list.json", json.dumps([{"Users": [user("d")]}, {"Users": [user("e")]}])))
    assert (r.read, r.added) == (2, 2)
    assert [u["username"] for u in list_users(con)] == ["a", "b", "c", "d", "e"]


def test_loading_again_updates_and_never_duplicates(con, tmp_path):
    f = write(tmp_path, "u.json", json.dumps({"Users": [user("a"), user("b")]}))
    load_users(con, f)
    r = load_users(con, write(tmp_path, "u2.json", json.dumps({"Users": [user("a", status="COMPROMISED"),
                                                                          user("z")]})))
    assert (r.added, r.updated) == (1, 1)
    assert store.count(con, "users") == 3
    assert get_user(con, "a")["user_status"] == "COMPROMISED"
    # the same user twice in one file: the last one wins, counted as an update
    r = load_users(con, write(tmp_path, "u3.json", json.dumps({"Users": [user("n", status="UNCONFIRMED"),
                                                                          user("n", status="CONFIRMED")]})))
    assert (r.read, r.added, r.updated) == (2, 1, 1)
    assert get_user(con, "n")["user_status"] == "CONFIRMED"


def test_email_otp_is_mfa_a_load_takes(con, tmp_path):
    """Cognito's email MFA (EMAIL_OTP) was refused, the whole user with it: scored as without MFA (blocked at
    MFA_REQUIRED) though she has it."""
    r = load_users(con, write(tmp_path, "e.json", json.dumps({"Users": [user("em", mfa=["EMAIL_OTP"],
                                                                             preferred="EMAIL_OTP")]})))
    assert (r.added, r.rejected) == (1, [])
    got = get_user(con, "em")
    assert (got["mfa_settings"], got["preferred_mfa"], got["mfa_enabled"]) == (["EMAIL_OTP"], "EMAIL_OTP", True)
    r = load_users(con, write(tmp_path, "e.csv", "username,sub,status,enabled,mfa_settings,preferred_mfa,email\n"
                                                 "ec,s,CONFIRMED,true,EMAIL_OTP;SMS_MFA,EMAIL_OTP,\n"))
    assert (r.added, r.rejected) == (1, []) and get_user(con, "ec")["mfa_settings"] == ["SMS_MFA", "EMAIL_OTP"]


def test_bad_entries_are_rejected_with_position_and_reason_and_the_rest_loads(con, tmp_path):
    page = {"Users": [
        user("ok1"),
        user("x", status="ACTIVE"),
        user("y", mfa=["VOICE_MFA"]),
        {"Attributes": []},
        user("w", enabled="yes"),
        user("v", options=[{"DeliveryMedium": "EMAIL", "AttributeName": "email"}]),
        user("ok2"),
    ]}
    r = load_users(con, write(tmp_path, "bad.json", json.dumps({"Users": [user("first")]}) + "\n" + json.dumps(page)))
    assert (r.read, r.added) == (8, 3)
    got = {x.position: x.reason for x in r.rejected}
    assert got == {
        "page 2 (line 2), Users[1]": "UserStatus 'ACTIVE' is not one of: UNCONFIRMED, CONFIRMED, ARCHIVED, COMPROMISED, "
                                     "UNKNOWN, RESET_REQUIRED, FORCE_CHANGE_PASSWORD",
        "page 2 (line 2), Users[2]": "unknown MFA name in UserMFASettingList: 'VOICE_MFA'; expected one of: SMS_MFA, "
                                     "SOFTWARE_TOKEN_MFA, EMAIL_OTP",
        "page 2 (line 2), Users[3]": "Username is missing",
        "page 2 (line 2), Users[4]": "Enabled must be true or false, got 'yes'",
        "page 2 (line 2), Users[5]": "unknown MFA name in MFAOptions[0].DeliveryMedium: 'EMAIL'; expected 'SMS'",
    }
    assert {u["username"] for u in list_users(con)} == {"first", "ok1", "ok2"}


def test_a_file_that_is_not_list_users_is_refused_whole(con, tmp_path):
    with pytest.raises(InputFormatError, match=r"bad\.json: malformed JSON: .* line 1"):
        load_users(con, write(tmp_path, "bad.json", '{"Users": [ {"Username": "a",'))
    with pytest.raises(InputFormatError, match=r"cut\.json: malformed JSON: Unterminated string starting at line 1 column 25$"):
        load_users(con, write(tmp_path, "cut.json", '{"Users": [{"Username": "a'))
    with pytest.raises(InputFormatError, match=r'expected ListUsers output, an object with a "Users" list'):
        load_users(con, write(tmp_path, "other.json", '{"AuthEvents": []}'))
    with pytest.raises(InputFormatError, match="is empty"):
        load_users(con, write(tmp_path, "empty.json", "  \n"))
    with pytest.raises(InputFormatError, match="no such file"):
        load_users(con, tmp_path / "missing.json")
    assert store.count(con, "users") == 0


def test_csv_users(con, tmp_path):
    text = (
        "username,sub,status,enabled,mfa_settings,preferred_mfa,email\n"
        "alice,s-a,CONFIRMED,true,SMS_MFA;SOFTWARE_TOKEN_MFA,SMS_MFA,alice@example.com\n"
        "bob,s-b,FORCE_CHANGE_PASSWORD,false,,,\n"
        "\n"
        ",s-x,CONFIRMED,true,,,\n"
        "carol,s-c,SUSPENDED,true,,,\n"
        "dan,s-d,CONFIRMED,maybe,,,\n"
        "erin,s-e,CONFIRMED,true,VOICE_MFA,,\n"
        "fay,s-f,CONFIRMED,true\n"
        '"gus",s-g,,,,SOFTWARE_TOKEN_MFA,"gus@example.com"\n'
    )
    r = load_users(con, write(tmp_path, "u.csv", text))
    assert (r.read, r.added) == (8, 3)
    assert {(x.position, x.reason) for x in r.rejected} == {
        ("line 5", "Username is missing"),
        ("line 6", "UserStatus 'SUSPENDED' is not one of: UNCONFIRMED, CONFIRMED, ARCHIVED, COMPROMISED, UNKNOWN, "
                   "RESET_REQUIRED, FORCE_CHANGE_PASSWORD"),
        ("line 7", "enabled must be true or false, got 'maybe'"),
        ("line 8", "unknown MFA name in mfa_settings: 'VOICE_MFA'; expected one of: SMS_MFA, SOFTWARE_TOKEN_MFA, EMAIL_OTP"),
        ("line 9", "expected 7 fields, found 4"),
    }
    a = get_user(con, "alice")
    assert a["mfa_settings"] == ["SMS_MFA", "SOFTWARE_TOKEN_MFA"] and a["preferred_mfa"] == "SMS_MFA"
    assert get_user(con, "bob")["enabled"] is False and get_user(con, "bob")["mfa_enabled"] is False
    g = get_user(con, "gus")
    assert g["mfa_settings"] == ["SOFTWARE_TOKEN_MFA"], "a preferred method is an enabled one"
    assert g["user_status"] is None and g["email"] == "gus@example.com"


def test_csv_reload_keeps_what_the_csv_does_not_say(con, tmp_path):
    load_users(con, write(tmp_path, "u.json", json.dumps({"Users": [user("alice")]})))
    load_users(con, write(tmp_path, "u.csv", "username,sub,status,enabled,mfa_settings,preferred_mfa,email\n"
                                            "alice,,RESET_REQUIRED,,,,\n"))
    a = get_user(con, "alice")
    assert a["user_status"] == "RESET_REQUIRED"
    assert a["user_sub"] == "sub-alice" and a["enabled"] is True and a["created_at"] is not None
    assert a["attributes"]["email"] == "alice@example.com"


def test_csv_header_must_name_the_columns(con, tmp_path):
    with pytest.raises(InputFormatError, match=r"u\.csv:1: the header must be .*; missing: mfa_settings, "
                                               r"preferred_mfa; unknown: mfa"):
        load_users(con, write(tmp_path, "u.csv", "username,sub,status,enabled,mfa,email\nalice,,,,,\n"))


def test_gzip_input(con, tmp_path):
    p = tmp_path / "u.json.gz"
    p.write_bytes(gzip.compress(json.dumps({"Users": [user("a")]}).encode()))
    assert load_users(con, p).added == 1


def test_set_user_status(con, tmp_path):
    load_users(con, write(tmp_path, "u.json", json.dumps({"Users": [user("alice")]})))
    before = get_user(con, "alice")["modified_at"]
    assert set_user_status(con, "alice", "RESET_REQUIRED") == "CONFIRMED"
    a = get_user(con, "alice")
    assert a["user_status"] == "RESET_REQUIRED" and a["modified_at"] > before
    assert a["email"] == "alice@example.com" and a["enabled"] is True, "the rest of the user is kept"
    # a user not loaded yet: the block is recorded on a new row, which a later load completes
    assert set_user_status(con, "bob", "RESET_REQUIRED") is None
    assert get_user(con, "bob")["user_status"] == "RESET_REQUIRED"
    load_users(con, write(tmp_path, "b.json", json.dumps({"Users": [user("bob", status="RESET_REQUIRED")]})))
    assert get_user(con, "bob")["email"] == "bob@example.com" and store.count(con, "users") == 2
    with pytest.raises(UserDataError, match="UserStatus 'BLOCKED' is not one of"):
        set_user_status(con, "alice", "BLOCKED")
    assert get_user(con, "alice")["user_status"] == "RESET_REQUIRED"


def test_list_users_filters(con, tmp_path):
    load_users(con, write(tmp_path, "u.json", json.dumps({"Users": [
        user("a", mfa=["SMS_MFA"]), user("b"), user("c", status="RESET_REQUIRED", enabled=False),
        user("d", mfa=["SOFTWARE_TOKEN_MFA"])]})))
    assert [u["username"] for u in list_users(con, mfa_enabled=True)] == ["a", "d"]
    assert [u["username"] for u in list_users(con, mfa_enabled=False)] == ["b", "c"]
    assert [u["username"] for u in list_users(con, status="RESET_REQUIRED")] == ["c"]
    assert [u["username"] for u in list_users(con, enabled=True, limit=2, offset=1)] == ["b", "d"]
    with pytest.raises(UserDataError):
        list_users(con, status="nope")


def test_synth_users_file_loads_whole(con, tmp_path):
    from ingest.synth import SynthConfig, synthesize

    synthesize(SynthConfig(users=120, days=1, seed=2), "csv", tmp_path / "s.csv")
    r = load_users(con, tmp_path / "s.users.json")
    assert (r.read, r.added, r.rejected) == (120, 120, [])
    doc = json.loads((tmp_path / "s.users.json").read_text())
    mfa = sum(bool(u["UserMFASettingList"]) for u in doc["Users"])
    assert len(list_users(con, mfa_enabled=True)) == mfa > 0


def test_cli_users_load(tmp_path, monkeypatch):
    monkeypatch.setenv("RISKGATE_DB", str(tmp_path / "c.duckdb"))
    f = write(tmp_path, "u.json", json.dumps({"Users": [user("a"), user("b", status="NOPE")]}))
    res = runner.invoke(app, ["users", "load", str(f)])
    assert res.exit_code == 0, res.output
    assert "users read 2  added 1  updated 0  rejected 1" in res.stdout
    assert "rejected page 1 (line 1), Users[1]: UserStatus 'NOPE' is not one of" in res.stdout
    res = runner.invoke(app, ["users", "load", str(f), "--json"])
    doc = json.loads(res.stdout)
    assert (doc["read"], doc["added"], doc["updated"], doc["rejected"]) == (2, 0, 1, 1)
    res = runner.invoke(app, ["users", "load", str(tmp_path / "missing.json")])
    assert res.exit_code == 2 and "no such file" in res.output


def test_a_pool_id_the_configuration_would_refuse_is_refused_and_the_rest_loads(con, tmp_path):
    """A 60-character pool id was loaded, which `riskgate mode` / `config` refuse (1..55 characters); and the store
    then knew several pools, so users loaded without one applied to nobody (exploratory review)."""
    page = {"Users": [user("a", UserPoolId="p" * 56), user("b", UserPoolId=7), user("c", UserPoolId="eu-west-1_X"),
                      user("d")]}
    r = load_users(con, write(tmp_path, "u.json", json.dumps(page)))
    assert (r.read, r.added) == (4, 2)
    assert [(x.position, x.reason) for x in r.rejected] == [
        ("page 1 (line 1), Users[0]", "UserPoolId '" + "p" * 56 + "' is too long: at most 55 characters allowed"),
        ("page 1 (line 1), Users[1]", "UserPoolId must be a string, got 7")]
    assert con.execute("SELECT pool_key, username FROM users ORDER BY 2").fetchall() == [("eu-west-1_X", "c"), ("", "d")]
    csv_file = write(tmp_path, "u.csv", "username,sub,status,enabled,mfa_settings,preferred_mfa,email\nzed,s,,,,,\n")
    with pytest.raises(ConfigurationError, match="--user-pool-id '" + "p" * 60 + "' is too long: at most 55"):
        load_users(con, csv_file, user_pool_id="p" * 60)
    with pytest.raises(ConfigurationError, match="--user-pool-id '' is too short"):
        load_users(con, csv_file, user_pool_id="")
    assert con.execute("SELECT count(*) FROM users").fetchall() == [(2,)]


def test_cli_users_load_refuses_a_bad_pool_id_before_the_store_is_touched(tmp_path, monkeypatch):
    monkeypatch.setenv("RISKGATE_DB", str(tmp_path / "c.duckdb"))
    f = write(tmp_path, "u.csv", "username,sub,status,enabled,mfa_settings,preferred_mfa,email\nzed,s,,,,,\n")
    res = runner.invoke(app, ["users", "load", str(f), "--user-pool-id", "p" * 60])
    assert res.exit_code == 2 and "--user-pool-id 'p" in res.stderr and "is too long: at most 55" in res.stderr
    assert not (tmp_path / "c.duckdb").exists()


def test_a_username_ingest_would_quarantine_is_rejected_with_ingests_reason(con, tmp_path):
    """`users load` took a 129-character Username that ingest quarantines (exploratory review)."""
    long_name = "u" * 129
    csv_file = write(tmp_path, "u.csv", "username,sub,status,enabled,mfa_settings,preferred_mfa,email\n"
                     f"{long_name},s,,,,,\n{'v' * 128},s,,,,,\n")
    r = load_users(con, csv_file)
    assert (r.read, r.added) == (2, 1)
    assert [(x.position, x.reason) for x in r.rejected] == [("line 2", "Username is longer than 128 characters (129)")]
    r = load_users(con, write(tmp_path, "u.json", json.dumps({"Users": [user(long_name)]})))
    assert [x.reason for x in r.rejected] == ["Username is longer than 128 characters (129)"]
    # the same words as ingest's quarantine
    row = {c: None for c in SOURCE_SCHEMA.names} | {"event_id": "e1", "username": long_name, "event_type": "SignIn",
                                                   "event_response": "Pass", "source_line": 1}
    row["creation_date"] = datetime(2026, 3, 1, tzinfo=timezone.utc)
    _, bad = Enricher(geo=None).run(pa.Table.from_pylist([row], SOURCE_SCHEMA), "x", "x")
    assert bad.column("reason").to_pylist() == [r.rejected[0].reason]


# -- a load that states the user's MFA replaces it whole, and scoring sees it ------------------------------------


def _mfa_reasons(db) -> dict[str, set[bool]]:
    """Per user: whether each of their assessed events was challenged because the user has MFA of their own."""
    import duckdb

    c = duckdb.connect(str(db), read_only=True)
    try:
        rows = c.execute("SELECT e.username, list_contains(a.decision_reasons, "
                         "'the user has MFA of their own: always challenged') FROM assessments a "
                         "JOIN events e USING (event_id)").fetchall()
    finally:
        c.close()
    out: dict[str, set[bool]] = {}
    for name, own in rows:
        out.setdefault(name, set()).add(own)
    return out


def test_a_load_stating_no_mfa_clears_it_and_the_next_score_sees_no_mfa(tmp_path, monkeypatch):
    """`users load` of an entry with an empty UserMFASettingList (or a CSV row with empty MFA cells) kept the stored
    PreferredMfaSetting, which counted as MFA: the user's every sign-in stayed an MFA challenge. Loaded again for the
    pool, the pool row's missing preferred method was taken from the row loaded without a pool."""
    from risk import config as rc
    from tests.events_gen import many, write_jsonl

    monkeypatch.delenv(rc.POOL_ENV, raising=False)
    db = tmp_path / "s.duckdb"
    write_jsonl(tmp_path / "e.jsonl", many(200))  # user0 .. user49 of us-east-1_TEST, 4 sign-ins each

    def run(*args):
        res = runner.invoke(app, [*map(str, args), "--db", str(db)])
        assert res.exit_code == 0, res.output
        return res

    totp = {"mfa": ["SOFTWARE_TOKEN_MFA"], "preferred": "SOFTWARE_TOKEN_MFA"}
    run("ingest", tmp_path / "e.jsonl")
    run("users", "load", write(tmp_path, "mfa.json", json.dumps({"Users": [
        user("user0", **totp), user("user1", **totp), user("user2", **totp), user("user3", **totp),
        user("user4", mfa=["SMS_MFA"], preferred="SMS_MFA")]})))
    run("train", "--no-labels")
    run("score")
    before = _mfa_reasons(db)
    assert [before[f"user{i}"] for i in range(6)] == [{True}] * 5 + [{False}]
    # user0: ListUsers/AdminGetUser JSON stating no MFA; user1: a CSV row with empty MFA cells;
    # user2: an entry that says nothing of MFA (kept); user3: loaded for its pool with no MFA; user4: not loaded again
    run("users", "load", write(tmp_path, "nomfa.json", json.dumps({"Users": [
        {"Username": "user0", "Enabled": True, "UserStatus": "CONFIRMED", "MFAOptions": [],
         "UserMFASettingList": []},
        {"Username": "user2", "UserStatus": "CONFIRMED"}]})))
    run("users", "load", write(tmp_path, "nomfa.csv", "username,sub,status,enabled,mfa_settings,preferred_mfa,email\n"
                               "user1,,CONFIRMED,true,,,\n"))
    run("users", "load", write(tmp_path, "pool.json", json.dumps({"Users": [user("user3", mfa=[])]})),
        "--user-pool-id", "us-east-1_TEST")
    con = store.connect(db)
    try:
        assert [(u["mfa_settings"], u["preferred_mfa"]) for u in (get_user(con, f"user{i}", unpooled="us-east-1_TEST")
                                                              for i in range(4))] == [
            ([], None), ([], None), (["SOFTWARE_TOKEN_MFA"], "SOFTWARE_TOKEN_MFA"), ([], None)]
        assert get_user(con, "user3", "us-east-1_TEST", unpooled="us-east-1_TEST")["mfa_enabled"] is False
    finally:
        con.close()
    run("score", "--rescore")
    after = _mfa_reasons(db)
    assert [after[f"user{i}"] for i in range(6)] == [{False}, {False}, {True}, {False}, {True}, {False}]


# -- "has MFA" is one rule: in Python, in SQL, and for every reader of the users table ------------------------------

#: the kinds of MFA that count (ingest.users.MFA_KINDS)
KINDS = ("SMS_MFA", "SOFTWARE_TOKEN_MFA", "EMAIL_OTP")
#: (mfa_settings, preferred_mfa, kinds that count, has MFA): the truth table of ingest.users.has_mfa_configured
MFA_TABLE = [
    (None, None, KINDS, False),
    (None, "SMS_MFA", KINDS, True),  # settings not stated: the preferred method tells
    (None, "SOFTWARE_TOKEN_MFA", KINDS, True),
    (None, "VOICE_MFA", KINDS, False),  # not a kind that counts
    ([], None, KINDS, False),
    ([], "SMS_MFA", KINDS, False),  # stated: a preferred method not among the settings is none, as in Cognito
    (["SMS_MFA"], None, KINDS, True),
    (["SMS_MFA"], "SMS_MFA", KINDS, True),
    (["SOFTWARE_TOKEN_MFA"], "SMS_MFA", KINDS, True),  # the settings tell, whatever the preferred method
    (["EMAIL_OTP"], None, KINDS, True),
    (["VOICE_MFA"], None, KINDS, False),
    (["VOICE_MFA"], "SMS_MFA", KINDS, False),
    ([None], "SMS_MFA", KINDS, False),
    (["VOICE_MFA", None, "SOFTWARE_TOKEN_MFA"], None, KINDS, True),
    (None, "SMS_MFA", ("SOFTWARE_TOKEN_MFA",), False),
    (["SMS_MFA"], None, ("SOFTWARE_TOKEN_MFA",), False),
    (["SMS_MFA", "SOFTWARE_TOKEN_MFA"], "SMS_MFA", ("SOFTWARE_TOKEN_MFA",), True),
    (["SMS_MFA"], "SMS_MFA", (), False),
]


@pytest.mark.parametrize("settings, preferred, kinds, expected", MFA_TABLE)
def test_has_mfa_is_one_truth_table_in_python_and_in_sql(settings, preferred, kinds, expected):
    """ingest.users.has_mfa_configured and the SQL expression of has_mfa_configured_sql (on a real DuckDB, with
    either kind of bound parameter and a table alias or none) give the table's answer."""
    import duckdb

    from ingest.users import has_mfa_configured, has_mfa_configured_sql

    row = "SELECT CAST($s AS VARCHAR[]) AS mfa_settings, CAST($p AS VARCHAR) AS preferred_mfa"
    c = duckdb.connect()
    try:
        named = c.execute(f"SELECT {has_mfa_configured_sql('$kinds', 'u')} FROM ({row}) u",
                          {"kinds": list(kinds), "s": settings, "p": preferred}).fetchall()
        positional = c.execute(f"SELECT {has_mfa_configured_sql('?')} FROM (SELECT CAST(? AS VARCHAR[]) AS "
                               "mfa_settings, CAST(? AS VARCHAR) AS preferred_mfa)",
                               [list(kinds), settings, preferred]).fetchall()
    finally:
        c.close()
    assert has_mfa_configured(settings, preferred, kinds=kinds) is expected
    assert named == positional == [(expected,)]


def test_decide_scores_by_the_users_rule():
    """risk.decide's has_mfa_configured and MFA_KINDS are ingest.users' (one rule), counting the kinds of the table."""
    import risk.decide
    from ingest import users

    assert risk.decide.has_mfa_configured is users.has_mfa_configured
    assert risk.decide.MFA_KINDS == users.MFA_KINDS == KINDS
    assert [users.has_mfa_configured(s, p) for s, p, k, _e in MFA_TABLE if k == KINDS] == [
        e for _s, _p, k, e in MFA_TABLE if k == KINDS]


def _mfa_users(con, rows, pool: str | None) -> dict[str, bool]:
    """Users u00, u01, ... with the MFA columns of ``rows`` ((mfa_settings, preferred_mfa, has MFA)), written as
    they are (a load would make a preferred method one of the settings), as users of ``pool`` (P1 or None: loaded
    without a pool id), each with one assessed sign-in of pool P1; returns the answers, by username."""
    from datetime import timedelta

    from tests.test_features import T0, add, ev

    names = [f"u{i:02}" for i in range(len(rows))]
    con.executemany("INSERT INTO users (username, user_pool_id, mfa_settings, preferred_mfa, pool_key) "
                    "VALUES (?, ?, ?, ?, coalesce(?, ''))",
                    [(n, pool, s, p, pool) for n, (s, p, _e) in zip(names, rows)])
    add(con, [ev(f"e{n}", n, i, user_pool_id="P1") for i, n in enumerate(names)])
    con.executemany("INSERT INTO assessments (event_id, score, scored_at) VALUES (?, 0.5, ?)",
                    [(f"e{n}", T0 + timedelta(seconds=i)) for i, n in enumerate(names)])
    return {n: e for n, (_s, _p, e) in zip(names, rows)}


def _every_reader(con) -> dict[str, dict[str, bool]]:
    """What get_user, list_users (its rows and its filter), scoring (risk.score._mfa_state) and tuning's history
    (has_mfa) say of each user's MFA."""
    from risk.config import unpooled_pool
    from risk.score import _mfa_state
    from risk.tuning import labelled_scores

    unpooled = unpooled_pool(con)
    names = [u["username"] for u in list_users(con)]
    on, off = ({u["username"] for u in list_users(con, mfa_enabled=flag)} for flag in (True, False))
    history = labelled_scores(con, columns=["username", "has_mfa"])
    return {
        "get_user": {n: get_user(con, n, "P1", unpooled=unpooled)["mfa_enabled"] for n in names},
        "list_users": {u["username"]: u["mfa_enabled"] for u in list_users(con)},
        "list_users(mfa_enabled=...)": {n: (n in on) if (n in on) != (n in off) else None for n in names},
        "scoring": {n: m for (_pool, n), m in _mfa_state(con, None, unpooled).items()},
        "tuning": dict(zip(history["username"], history["has_mfa"].tolist())),
    }


@pytest.mark.parametrize("pool", [None, "P1"])
def test_a_user_without_a_list_but_with_a_preferred_method_has_mfa_wherever_asked(tmp_path, monkeypatch, pool):
    """The known case: a row with no MFA list (NULL) but a preferred method (SMS) was listed as without MFA
    (get_user/list_users mfa_enabled False, and not in list_users(mfa_enabled=True)) while scoring and tuning
    took it as with MFA (loaded without a pool id; a pool's row lost its preferred method to the pool-less row's
    state, so it had no MFA anywhere); a row with an empty list and a preferred method is without MFA everywhere."""
    import risk.store
    from risk import config as rc

    monkeypatch.delenv(rc.POOL_ENV, raising=False)
    con = risk.store.connect(tmp_path / "s.duckdb")
    try:
        _mfa_users(con, [(None, "SMS_MFA", True), ([], "SMS_MFA", False), (["SOFTWARE_TOKEN_MFA"], None, True),
                         (None, None, False)], pool)
        said = _every_reader(con)
    finally:
        con.close()
    want = {"u00": True, "u01": False, "u02": True, "u03": False}
    assert said == {reader: want for reader in said}


@pytest.mark.parametrize("pool", [None, "P1"])
def test_every_reader_of_the_users_table_follows_the_truth_table(tmp_path, monkeypatch, pool):
    """Each row of MFA_TABLE (the kinds that count) as a stored user, loaded without a pool id or for the pool:
    listing, filtering, scoring and tuning all give the table's answer."""
    import risk.store
    from risk import config as rc

    monkeypatch.delenv(rc.POOL_ENV, raising=False)
    con = risk.store.connect(tmp_path / "s.duckdb")
    try:
        want = _mfa_users(con, [(s, p, e) for s, p, k, e in MFA_TABLE if k == KINDS], pool)
        said = _every_reader(con)
    finally:
        con.close()
    assert said == {reader: want for reader in said}


def test_a_user_without_a_list_but_with_a_preferred_method_is_scored_and_listed_with_mfa(tmp_path, monkeypatch):
    """End to end through the commands: `score` challenges the NULL-list + SMS user for MFA of their own, and
    get_user/list_users say that user has MFA; the []-list + SMS user is neither challenged nor listed with MFA."""
    from risk import config as rc
    from tests.events_gen import many, write_jsonl

    monkeypatch.delenv(rc.POOL_ENV, raising=False)
    db = tmp_path / "s.duckdb"
    write_jsonl(tmp_path / "e.jsonl", many(200))  # user0 .. user49 of us-east-1_TEST, 4 sign-ins each

    def run(*args):
        res = runner.invoke(app, [*map(str, args), "--db", str(db)])
        assert res.exit_code == 0, res.output

    run("ingest", tmp_path / "e.jsonl")
    con = store.connect(db)
    try:  # rows of users loaded without a pool id, as no load writes them (it makes a preferred method a setting)
        con.execute("INSERT INTO users (username, user_pool_id, mfa_settings, preferred_mfa, pool_key) VALUES "
                    "('user0', NULL, NULL, 'SMS_MFA', ''), ('user1', NULL, [], 'SMS_MFA', '')")
    finally:
        con.close()
    run("train", "--no-labels")
    run("score")
    scored = _mfa_reasons(db)
    con = store.connect(db)
    try:
        listed = {n: get_user(con, n, "us-east-1_TEST", unpooled="us-east-1_TEST")["mfa_enabled"]
                  for n in ("user0", "user1")}
        with_mfa = [u["username"] for u in list_users(con, mfa_enabled=True)]
        without = [u["username"] for u in list_users(con, mfa_enabled=False)]
    finally:
        con.close()
    assert (scored["user0"], scored["user1"], scored["user2"]) == ({True}, {False}, {False})
    assert listed == {"user0": True, "user1": False}
    assert (with_mfa, without) == (["user0"], ["user1"])


# -- a date out of range is a bad entry, not a crash ---------------------------------------------------------------


def test_a_date_out_of_range_is_rejected_with_its_position_and_the_rest_loads(con, tmp_path):
    """An epoch UserCreateDate of 1e20 raised OSError (EOVERFLOW) out of `users load`, -1e12 and 99999999999999999
    ValueError, NaN ValueError and Infinity OverflowError: a traceback, and nothing of the file loaded."""
    text = ('{"Users": [{"Username": "ok1", "UserCreateDate": 1721236555.5},\n'
            '{"Username": "t1", "UserCreateDate": 1e20}, {"Username": "t2", "UserCreateDate": -1e12},\n'
            '{"Username": "t3", "UserCreateDate": 99999999999999999}, {"Username": "t4", "UserCreateDate": NaN},\n'
            '{"Username": "t5", "UserLastModifiedDate": Infinity}, {"Username": "t6", "UserCreateDate": -Infinity},\n'
            '{"Username": "t7", "UserCreateDate": "0001-01-01T00:00:00+01:00"},\n'
            '{"Username": "t8", "UserCreateDate": ' + "9" * 600 + '},\n'
            '{"Username": "ok2", "UserCreateDate": 1721236555123, "UserLastModifiedDate": "9999-12-31T23:59:59Z"}]}')
    r = load_users(con, write(tmp_path, "dates.json", text))
    assert (r.read, r.added, r.updated) == (10, 2, 0)
    epoch = "is not a date of the years 1..9999 in epoch seconds or milliseconds"
    where = "page 1 (line 1), Users"
    assert [(x.position, x.reason) for x in r.rejected] == [
        (f"{where}[1]", f"UserCreateDate is out of range: 1e+20 {epoch}"),
        (f"{where}[2]", f"UserCreateDate is out of range: -1000000000000.0 {epoch}"),
        (f"{where}[3]", f"UserCreateDate is out of range: 99999999999999999 {epoch}"),
        (f"{where}[4]", f"UserCreateDate is out of range: nan {epoch}"),
        (f"{where}[5]", f"UserLastModifiedDate is out of range: inf {epoch}"),
        (f"{where}[6]", f"UserCreateDate is out of range: -inf {epoch}"),
        (f"{where}[7]", "UserCreateDate is out of range: '0001-01-01T00:00:00+01:00' is not of the years 1..9999 in UTC"),
        (f"{where}[8]", f"UserCreateDate is out of range: a number of 600 digits {epoch}"),
    ]
    assert get_user(con, "ok1")["created_at"] == datetime(2024, 7, 17, 17, 15, 55, 500000, tzinfo=timezone.utc)
    ok2 = get_user(con, "ok2")
    assert ok2["created_at"] == datetime(2024, 7, 17, 17, 15, 55, 123000, tzinfo=timezone.utc)
    assert ok2["modified_at"] == datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
    # through the command: exit 0, the entries named
    db = tmp_path / "c.duckdb"
    res = runner.invoke(app, ["users", "load", str(tmp_path / "dates.json"), "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert "users read 10  added 2  updated 0  rejected 8" in res.stdout
    assert f"rejected {where}[1]: UserCreateDate is out of range: 1e+20 {epoch}" in res.stdout


def test_a_number_too_long_for_the_parser_refuses_the_file_with_a_message(con, tmp_path):
    """A 5,000-digit number raised ValueError ("Exceeds the limit (4300 digits)") out of `users load`."""
    f = write(tmp_path, "long.json", '{"Users": [{"Username": "a"}]}\n{"Users": [{"Username": "b", '
                                     '"UserCreateDate": ' + "9" * 5000 + "}]}")
    with pytest.raises(InputFormatError, match=r"long\.json: the document of line 2 holds a number of more than "
                                               r"4,300 digits, which Python's JSON parser does not read"):
        load_users(con, f)
    assert store.count(con, "users") == 0
    res = runner.invoke(app, ["users", "load", str(f), "--db", str(tmp_path / "c.duckdb")])
    assert res.exit_code == 2 and "holds a number of more than 4,300 digits" in res.output
