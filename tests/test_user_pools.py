"""A user is a username in its pool: features (SQL and the service's in-memory state), the users table (MFA,
resets, email) and tuning never mix two pools' users."""

from __future__ import annotations

from datetime import timedelta

import duckdb
import pytest

import risk.store
from ingest.users import UserRecord, get_user, set_user_status, upsert_users
from risk import config as rc
from risk import credentials
from risk import notify as rn
from risk.config import unpooled_pool
from risk.features import compute_features
from risk.online import OnlineFeatures
from risk.score import _mfa_state
from risk.tuning import labelled_scores
from tests.test_features import SYDNEY, T0, add, ev
from tests.test_online import _assert_equal, _serve, _sql, _stream

NOVELTY = ["new_ip", "new_ip_prefix", "new_asn", "new_country", "new_city", "new_device"]


@pytest.fixture
def con(tmp_path, monkeypatch):
    monkeypatch.delenv(rc.POOL_ENV, raising=False)
    c = risk.store.connect(tmp_path / "s.duckdb")
    yield c
    c.close()


def feats(con, **kw) -> dict[str, dict]:
    return {r["event_id"]: r for r in compute_features(con, **kw).to_pylist()}


def test_the_same_username_in_another_pool_is_another_user(con):
    # alice of P1 signs in three times from London; alice of P2 then signs in from the same address and device
    add(con, [ev("a1", "alice", 0, user_pool_id="P1"), ev("a2", "alice", 60, user_pool_id="P1"),
              ev("a3", "alice", 120, user_pool_id="P1"),
              ev("b1", "alice", 180, user_pool_id="P2"), ev("a4", "alice", 240, user_pool_id="P1")])
    f = feats(con)
    # a brand-new user of P2: no history, everything new, nothing since a last sign-in
    assert f["b1"]["history_size"] == 0.0
    assert [f["b1"][c] for c in NOVELTY] == [1.0] * 6
    assert f["b1"]["hours_since_last_success"] is None
    # and P1's alice is not disturbed by her: three earlier sign-ins, the last one two hours before
    assert f["a4"]["history_size"] == 3.0 and f["a4"]["hours_since_last_success"] == pytest.approx(2.0)
    assert [f["a4"][c] for c in NOVELTY] == [0.0] * 6


def test_two_pools_users_of_one_name_count_as_two_users_from_an_address(con):
    add(con, [ev("a1", "alice", 0, response="Fail", user_pool_id="P1"),
              ev("b1", "alice", 5, response="Fail", user_pool_id="P2"),
              ev("c1", "carol", 10, user_pool_id="P1")])
    f = feats(con)
    assert f["c1"]["ip_users_1h"] == 2.0 and f["c1"]["ip_failures_1h"] == 2.0
    # each alice has one failure of her own
    add(con, [ev("a2", "alice", 20, user_pool_id="P1")])
    assert feats(con)["a2"]["user_failures_1h"] == 1.0


def test_events_without_a_pool_belong_to_the_stores_only_pool(con):
    # history ingested without a UserPoolId (an RBA CSV, say), then sign-ins of pool P1: one user
    add(con, [ev("h1", "alice", 0, user_pool_id=None), ev("h2", "alice", 60, user_pool_id=None),
              ev("p1", "alice", 120, user_pool_id="P1")])
    assert unpooled_pool(con) == "P1"
    f = feats(con)
    assert f["p1"]["history_size"] == 2.0 and f["p1"]["new_ip"] == 0.0


def test_in_a_store_of_several_pools_events_without_one_follow_the_variable(con, monkeypatch):
    add(con, [ev("h1", "alice", 0, user_pool_id="P1"), ev("h2", "alice", 60, user_pool_id="P2"),
              ev("h3", "alice", 90, user_pool_id="P2"), ev("x1", "alice", 120)])
    assert unpooled_pool(con) is None
    assert feats(con)["x1"]["history_size"] == 0.0  # a user of no pool: neither alice
    monkeypatch.setenv(rc.POOL_ENV, "P2")
    assert feats(con)["x1"]["history_size"] == 2.0  # P2's alice
    monkeypatch.setenv(rc.POOL_ENV, "P1")
    assert feats(con)["x1"]["history_size"] == 1.0


def test_windows_over_history_give_the_same_features_as_one_call(con):
    # the history before a call's rows is aggregated per user: it must keep the pools apart too
    rows = [ev(f"e{i:03d}", f"u{i % 3}", i * 50.0, user_pool_id=("P1", "P2", None)[i % 4 % 3],
               ip=("81.2.69.160", "1.120.0.9")[i % 2], **(SYDNEY if i % 5 == 0 else {}))
            for i in range(120)]
    add(con, rows)
    whole = feats(con)
    mid = rows[70]["creation_date"]
    parts = {**feats(con, until=mid), **feats(con, since=mid)}
    assert parts == whole
    assert len({r["history_size"] for r in whole.values()}) > 10


def test_the_services_state_keeps_pools_apart_exactly_as_the_sql(con):
    rows = _stream(900, seed=11)
    for k, r in enumerate(rows):  # a store of two pools, some events without one
        r["user_pool_id"] = ("P1", "P2", None)[k % 3]
    add(con, rows[:500])
    state = OnlineFeatures()
    state.ensure(con)
    assert state.unpooled is None
    online = _serve(state, con, rows[500:])
    add(con, rows[500:])
    sql = _sql(con, [r["event_id"] for r in rows[500:]])
    assert _assert_equal(online, sql) > 0
    # the pools made a difference: the same username had different histories in P1 and P2
    sizes = {}
    for r in rows[500:]:
        sizes.setdefault(r["username"], set()).add(sql[r["event_id"]]["history_size"])
    assert all(len(s) > 1 for s in sizes.values())


def test_the_services_state_reloads_when_a_pool_gets_configured(con):
    # one pool known from the events: pool-less events are its users; a configuration for a second pool
    # makes them users of no pool, and the state must notice it although no event or feedback changed
    add(con, [ev("h1", "alice", 0, user_pool_id="P1"), ev("h2", "alice", 60)])
    state = OnlineFeatures()
    state.ensure(con)
    assert state.unpooled == "P1"
    rc.set_mode(con, "ENFORCED", "P2")
    state.ensure(con)
    assert state.loads == 2 and state.unpooled is None
    new = [ev("n1", "alice", 120)]
    online = _serve(state, con, new)
    add(con, new)
    _assert_equal(online, _sql(con, ["n1"]))
    assert online["n1"]["history_size"] == 1.0  # h2 only, another user of no pool; P1's h1 no longer counts


# -- the users table: one row per (pool, username) ------------------------------------------------


def _users(con):
    upsert_users(con, [
        UserRecord("alice", "P1", user_status="CONFIRMED", mfa_settings=(), email="alice@p1.example"),
        UserRecord("alice", "P2", user_status="CONFIRMED", mfa_settings=("SOFTWARE_TOKEN_MFA",),
                   preferred_mfa="SOFTWARE_TOKEN_MFA", email="alice@p2.example"),
    ])


def test_two_pools_users_of_one_name_are_two_rows_each_with_its_own_settings(con):
    _users(con)
    assert con.execute("SELECT count(*) FROM users WHERE username = 'alice'").fetchall()[0][0] == 2
    assert get_user(con, "alice", "P1")["email"] == "alice@p1.example"
    assert get_user(con, "alice", "P2")["mfa_enabled"] is True and get_user(con, "alice", "P1")["mfa_enabled"] is False
    # loading P2's alice again updates her only
    added, updated = upsert_users(con, [UserRecord("alice", "P2", email="new@p2.example")])
    assert (added, updated) == (0, 1)
    assert get_user(con, "alice", "P2")["email"] == "new@p2.example"
    assert get_user(con, "alice", "P1")["email"] == "alice@p1.example"
    assert _mfa_state(con, [("P1", "alice"), ("P2", "alice")], None) == {("P1", "alice"): False,
                                                                          ("P2", "alice"): True}
    assert rn.user_email(con, "alice", "P2") == "new@p2.example"


def test_a_reset_for_compromised_credentials_reaches_only_that_pools_user(con):
    _users(con)
    assert credentials.apply_block(con, "alice", "P2") == "CONFIRMED"
    assert get_user(con, "alice", "P2")["user_status"] == "RESET_REQUIRED"
    assert get_user(con, "alice", "P1")["user_status"] == "CONFIRMED"
    # a user of a third pool not loaded yet gets a row of her own, with her pool
    assert set_user_status(con, "alice", "RESET_REQUIRED", "P3") is None
    assert get_user(con, "alice", "P3")["user_pool_id"] == "P3"
    assert con.execute("SELECT count(*) FROM users WHERE username = 'alice'").fetchall()[0][0] == 3


def test_users_loaded_without_a_pool_are_the_stores_pools_until_loaded_for_it(con):
    add(con, [ev("p1", "alice", 0, user_pool_id="P1")])
    upsert_users(con, [UserRecord("alice", None, mfa_settings=("SMS_MFA",), email="a@nopool.example")])
    unpooled = unpooled_pool(con)
    assert unpooled == "P1"
    assert get_user(con, "alice", "P1", unpooled=unpooled)["email"] == "a@nopool.example"
    assert rn.user_email(con, "alice", "P1") == "a@nopool.example"
    assert _mfa_state(con, [("P1", "alice")], unpooled) == {("P1", "alice"): True}
    assert _mfa_state(con, None, unpooled) == {("P1", "alice"): True}
    # loaded for P1 later: that row wins, and a reset goes to it
    upsert_users(con, [UserRecord("alice", "P1", mfa_settings=(), email="a@p1.example")])
    assert _mfa_state(con, None, unpooled) == {("P1", "alice"): False}
    set_user_status(con, "alice", "RESET_REQUIRED", "P1", unpooled=unpooled)
    assert get_user(con, "alice", "P1", unpooled=unpooled)["user_status"] == "RESET_REQUIRED"
    assert get_user(con, "alice", None, unpooled=None)["user_status"] is None  # the pool-less row untouched


def test_tuning_reads_each_sign_in_once_with_its_pools_mfa(con):
    _users(con)
    upsert_users(con, [UserRecord("alice", None, mfa_settings=("SMS_MFA",))])  # a third row, of no pool
    add(con, [ev("e1", "alice", 0, user_pool_id="P1"), ev("e2", "alice", 1, user_pool_id="P2")])
    con.executemany("INSERT INTO assessments (event_id, score, scored_at) VALUES (?, ?, ?)",
                    [("e1", 0.1, T0), ("e2", 0.2, T0 + timedelta(seconds=1))])
    df = labelled_scores(con, columns=["event_id", "user_pool_id", "has_mfa"]).sort_values("event_id")
    assert df["event_id"].tolist() == ["e1", "e2"]  # no sign-in doubled by two rows of one name
    assert df["has_mfa"].tolist() == [False, True]


def test_a_pools_row_with_a_preferred_method_but_no_list_keeps_its_own_mfa_state(con):
    """A pool's row with no MFA list (NULL) but a preferred method states its MFA, as has_mfa_configured reads
    it (the preferred method tells); the pool-less row's state was taken instead, or none without such a row, so
    scoring and tuning said no MFA for it while the same row loaded without a pool id had MFA."""
    add(con, [ev(f"e{i}", name, i, user_pool_id="P1") for i, name in enumerate(("alice", "bob", "carol"))])
    con.executemany("INSERT INTO assessments (event_id, score, scored_at) VALUES (?, 0.5, ?)",
                    [(f"e{i}", T0 + timedelta(seconds=i)) for i in range(3)])
    con.execute("INSERT INTO users (username, user_pool_id, mfa_settings, preferred_mfa, pool_key) VALUES "
                "('alice', 'P1', NULL, 'SMS_MFA', 'P1'), "  # no pool-less row
                "('bob', 'P1', NULL, 'SMS_MFA', 'P1'), ('bob', NULL, [], NULL, ''), "  # the pool's row comes first
                "('carol', NULL, NULL, 'SMS_MFA', '')")  # loaded without a pool id: always read so
    unpooled = unpooled_pool(con)
    assert unpooled == "P1"
    assert [(u["mfa_settings"], u["preferred_mfa"]) for u in (get_user(con, n, "P1", unpooled=unpooled)
                                                          for n in ("alice", "bob", "carol"))] == [([], "SMS_MFA")] * 3
    assert _mfa_state(con, None, unpooled) == {("P1", "alice"): True, ("P1", "bob"): True, ("P1", "carol"): True}
    assert labelled_scores(con, columns=["has_mfa"])["has_mfa"].tolist() == [True] * 3


def test_a_store_of_the_old_shape_is_migrated_with_its_users(tmp_path):
    path = tmp_path / "old.duckdb"
    risk.store.connect(path).close()
    raw = duckdb.connect(str(path))  # back to the old table: keyed by username alone
    raw.execute("DROP TABLE users")
    raw.execute("""CREATE TABLE users (username VARCHAR PRIMARY KEY, user_pool_id VARCHAR, user_sub VARCHAR,
                   user_status VARCHAR, enabled BOOLEAN, mfa_settings VARCHAR[], preferred_mfa VARCHAR,
                   email VARCHAR, created_at TIMESTAMPTZ, modified_at TIMESTAMPTZ, attributes VARCHAR)""")
    raw.execute("INSERT INTO users (username, user_pool_id, email) VALUES ('alice', 'P1', 'a@p1'), ('bob', NULL, 'b@x')")
    raw.execute("DELETE FROM schema_migrations WHERE name = '0002_users_per_pool'")
    raw.close()
    c = risk.store.connect(path)
    try:
        assert c.execute("SELECT username, user_pool_id, pool_key, email FROM users ORDER BY 1").fetchall() == [
            ("alice", "P1", "P1", "a@p1"), ("bob", None, "", "b@x")]
        upsert_users(c, [UserRecord("alice", "P2", email="a@p2")])
        assert get_user(c, "alice", "P1")["email"] == "a@p1" and get_user(c, "alice", "P2")["email"] == "a@p2"
    finally:
        c.close()


def test_a_reset_made_before_the_users_were_loaded_keeps_its_status_and_gains_their_settings(con):
    # one pool; compromised credentials blocked for yui before any user was loaded, then ListUsers loaded
    # without a pool id: her MFA and email come from the load, her RESET_REQUIRED from the block
    add(con, [ev("p1", "yui", 0, user_pool_id="P1")])
    unpooled = unpooled_pool(con)
    assert set_user_status(con, "yui", "RESET_REQUIRED", "P1", unpooled=unpooled) is None
    upsert_users(con, [UserRecord("yui", None, mfa_settings=("SOFTWARE_TOKEN_MFA",), email="yui@example.org")])
    yui = get_user(con, "yui", "P1", unpooled=unpooled)
    assert (yui["user_status"], yui["email"], yui["mfa_enabled"]) == ("RESET_REQUIRED", "yui@example.org", True)
    assert _mfa_state(con, [("P1", "yui")], unpooled) == {("P1", "yui"): True}
    assert rn.user_email(con, "yui", "P1") == "yui@example.org"


def test_users_loaded_for_a_pool_make_it_the_pool_of_events_without_one(con):
    # an RBA history without pool ids, and the users loaded with --user-pool-id: they meet in that pool
    add(con, [ev("h1", "alice", 0, user_pool_id=None)])
    upsert_users(con, [UserRecord("alice", "P9", mfa_settings=("SMS_MFA",))])
    assert unpooled_pool(con) == "P9" and rc.known_pools(con) == ["P9"]
    assert _mfa_state(con, None, unpooled_pool(con)) == {("P9", "alice"): True}


def test_users_without_a_pool_in_a_store_of_several_pools_are_reported(con, monkeypatch):
    add(con, [ev("a", "alice", 0, user_pool_id="P1"), ev("b", "bob", 1, user_pool_id="P2")])
    assert rc.unpooled_users_problem(con) is None  # none loaded without a pool
    upsert_users(con, [UserRecord("alice", None, email="a@example.org")])
    problem = rc.unpooled_users_problem(con)
    assert "1 user(s) loaded without a pool id belong to no pool" in problem and "P1, P2" in problem
    monkeypatch.setenv(rc.POOL_ENV, "P1")
    assert rc.unpooled_users_problem(con) is None


def test_the_commands_say_when_loaded_users_belong_to_no_pool(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cli import app

    monkeypatch.delenv(rc.POOL_ENV, raising=False)
    db = tmp_path / "two.duckdb"
    c = risk.store.connect(db)
    add(c, [ev("a", "alice", 0, user_pool_id="P1"), ev("b", "bob", 1, user_pool_id="P2")])
    c.close()
    users = tmp_path / "u.csv"
    users.write_text("username,sub,status,enabled,mfa_settings,preferred_mfa,email\n"
                     "alice,s-1,CONFIRMED,true,SMS_MFA,SMS_MFA,a@example.org\n")
    res = CliRunner().invoke(app, ["users", "load", str(users), "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert "warning: 1 user(s) loaded without a pool id belong to no pool" in res.output and "P1, P2" in res.output
    res = CliRunner().invoke(app, ["users", "load", str(users), "--user-pool-id", "P1", "--db", str(db)])
    assert res.exit_code == 0 and "warning" not in res.output


def test_score_json_says_too_that_loaded_users_belong_to_no_pool(tmp_path_factory, monkeypatch):
    """A mistyped pool made the store know two pools: `score --json` gave no sign that the users' MFA applied to
    nobody (the text output warned)."""
    import json

    from typer.testing import CliRunner

    from cli import app
    from tests.service_support import copy_store, trained_base

    monkeypatch.delenv(rc.POOL_ENV, raising=False)
    db = copy_store(trained_base(tmp_path_factory), tmp_path_factory.mktemp("typo") / "s.duckdb")
    assert CliRunner().invoke(app, ["mode", "AUDIT", "--user-pool-id", "us-east-1_Typo", "--db", str(db)]).exit_code == 0
    res = CliRunner().invoke(app, ["score", "--json", "--db", str(db)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert len(out["warnings"]) == 1 and "loaded without a pool id belong to no pool" in out["warnings"][0]
    assert "loaded without a pool id belong to no pool" in res.stderr


def test_the_summary_counts_a_name_in_two_pools_as_two_users_and_pool_less_rows_as_the_pools(con):
    from ingest.store import summary

    add(con, [ev("a1", "alice", 0, user_pool_id="P1"), ev("a2", "alice", 1, user_pool_id=None),
              ev("b1", "bob", 2, user_pool_id="P1")])
    assert summary(con, unpooled_pool(con))["users_in_events"] == 2  # alice (with and without the id), bob
    add(con, [ev("a3", "alice", 3, user_pool_id="P2")])
    assert summary(con, unpooled_pool(con))["users_in_events"] == 4  # alice of P1, P2 and of no pool; bob


def test_a_pools_listing_of_a_users_events_has_pool_less_events_only_when_they_are_its(con):
    from risk.auth_events import list_user_auth_events

    add(con, [ev("a1", "alice", 0, user_pool_id="P1"), ev("x1", "alice", 1, user_pool_id=None)])
    ids = lambda pool: sorted(e["EventId"] for e in list_user_auth_events(con, "alice", user_pool_id=pool)["AuthEvents"])  # noqa: E731
    assert ids("P1") == ["a1", "x1"]  # one pool: the pool-less event is P1's alice's
    add(con, [ev("b1", "alice", 2, user_pool_id="P2")])
    assert ids("P1") == ["a1"] and ids("P2") == ["b1"]  # two pools: it is neither's
    assert ids(None) == ["a1", "b1", "x1"]


def test_the_dashboards_counts_of_users_count_a_name_in_two_pools_twice(con):
    from risk import insights

    add(con, [ev("a1", "alice", 0, user_pool_id="P1"), ev("a2", "alice", 1, user_pool_id="P2")])
    con.executemany("INSERT INTO assessments (event_id, score, risk_level, scored_at) VALUES (?, ?, ?, ?)",
                    [("a1", 0.9, "High", T0), ("a2", 0.9, "High", T0)])
    assert insights.overview_metrics(con)["users"] == 2
    top = insights.top_risky(con, by="ip")
    assert top["users"].tolist() == [2]
    top = insights.top_risky(con, by="user")  # a user is a username in its pool: alice twice
    assert top[["username", "user_pool_id", "events", "users"]].values.tolist() == [
        ["alice", "P1", 1, 1], ["alice", "P2", 1, 1]]


def test_the_services_feedback_finds_a_pool_less_event_only_in_the_pool_it_belongs_to(con):
    from service.cognito import CognitoError, _require_event

    add(con, [ev("a1", "alice", 0, user_pool_id="P1"), ev("x1", "alice", 1, user_pool_id=None)])
    _require_event(con, "alice", "x1", "P1")  # one pool: the pool-less event is P1's alice's
    add(con, [ev("b1", "alice", 2, user_pool_id="P2")])
    for pool in ("P1", "P2"):  # two pools: it is neither's
        with pytest.raises(CognitoError, match="Event x1 of user alice not found"):
            _require_event(con, "alice", "x1", pool)
    _require_event(con, "alice", "b1", "P2")
    with pytest.raises(CognitoError):
        _require_event(con, "alice", "b1", "P1")


def test_the_dashboards_pool_filter_keeps_pool_less_events_of_that_pool(con):
    from risk import insights

    add(con, [ev("a1", "alice", 0, user_pool_id="P1"), ev("x1", "alice", 1, user_pool_id=None)])
    assert insights.overview_metrics(con, pool="P1")["events"] == 2  # one pool: the pool-less event is P1's
    add(con, [ev("b1", "bob", 2, user_pool_id="P2")])
    assert insights.overview_metrics(con, pool="P1")["events"] == 1  # two pools: it is neither's
    assert insights.overview_metrics(con)["events"] == 3


def test_loading_users_of_a_new_pool_says_that_the_pool_less_users_now_belong_to_none(tmp_path, monkeypatch):
    """`users load --user-pool-id` of a second pool printed only its counts, exit 0: the users loaded without a pool
    id silently became nobody's (their MFA unused), and only the next `score` said so."""
    from typer.testing import CliRunner

    from cli import app

    monkeypatch.delenv(rc.POOL_ENV, raising=False)
    db = tmp_path / "one.duckdb"
    c = risk.store.connect(db)
    add(c, [ev("a", "alice", 0, user_pool_id="P1"), ev("b", "bob", 1, user_pool_id="P1")])
    c.close()
    pool_less = tmp_path / "u.csv"
    pool_less.write_text("username,sub,status,enabled,mfa_settings,preferred_mfa,email\n"
                         "alice,s-1,CONFIRMED,true,SMS_MFA,SMS_MFA,a@example.org\n"
                         "bob,s-2,CONFIRMED,true,,,b@example.org\n")
    other = tmp_path / "other.csv"
    other.write_text("username,sub,status,enabled,mfa_settings,preferred_mfa,email\ncarol,s-3,CONFIRMED,true,,,\n")

    def load(*args):
        res = CliRunner().invoke(app, ["users", "load", *map(str, args), "--db", str(db)])
        assert res.exit_code == 0, res.output
        return res

    assert load(pool_less).stderr == ""  # one pool: they are P1's
    assert load(other, "--user-pool-id", "P1").stderr == ""  # still one pool
    res = load(other, "--user-pool-id", "P2")
    assert res.stdout == "users read 1  added 1  updated 0  rejected 0\n"
    expected = ("warning: 2 user(s) loaded without a pool id belong to no pool: the store knows several (P1, P2), so "
                "their MFA settings, email and status apply to nobody (no notification email reaches them: each fails "
                "with 'no email address for user'); load them again with `riskgate users load FILE --user-pool-id "
                "POOL`, or set $RISKGATE_USER_POOL_ID to their pool")
    assert " ".join(res.stderr.split()) == expected
    c = risk.store.connect(db)
    try:
        assert rc.unpooled_users_problem(c) == expected.removeprefix("warning: ")  # what score says
    finally:
        c.close()
    # loading that pool's users again changes nothing of it: no warning repeated; with a pool id set, none at all
    assert load(other, "--user-pool-id", "P2").stderr == ""
    monkeypatch.setenv(rc.POOL_ENV, "P1")
    assert load(other, "--user-pool-id", "P3").stderr == ""
