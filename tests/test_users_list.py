"""riskgate users list: the users as scoring sees them, filtered, and as ListUsers JSON that `users load` reads back."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli import app

runner = CliRunner()

CSV = """username,sub,status,enabled,mfa_settings,preferred_mfa,email
alice,s-a,CONFIRMED,true,SMS_MFA,SMS_MFA,alice@example.org
bob,s-b,RESET_REQUIRED,true,,,bob@example.org
carol,s-c,CONFIRMED,false,SOFTWARE_TOKEN_MFA;SMS_MFA,SOFTWARE_TOKEN_MFA,
"""


def rg(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_list_filters_and_round_trips_through_load(tmp_path):
    db, db2 = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    (tmp_path / "u.csv").write_text(CSV)
    assert rg("users", "load", tmp_path / "u.csv", "--user-pool-id", "eu-west-1_P", "--db", db).exit_code == 0
    # dave without a pool id: the store's only pool is his (as scoring sees him)
    (tmp_path / "d.json").write_text(json.dumps({"Users": [{"Username": "dave", "UserStatus": "CONFIRMED",
                                                            "UserMFASettingList": []}]}))
    assert rg("users", "load", tmp_path / "d.json", "--db", db).exit_code == 0

    def names(*args):
        res = rg("users", "list", "--json", "--db", db, *args)
        assert res.exit_code == 0, res.output
        return [(u["Username"], u.get("UserPoolId")) for u in json.loads(res.output)["Users"]]

    everyone = [("alice", "eu-west-1_P"), ("bob", "eu-west-1_P"), ("carol", "eu-west-1_P"), ("dave", "eu-west-1_P")]
    assert names() == everyone
    assert names("--status", "RESET_REQUIRED") == [("bob", "eu-west-1_P")]
    assert names("--mfa") == [("alice", "eu-west-1_P"), ("carol", "eu-west-1_P")]
    assert names("--no-mfa") == [("bob", "eu-west-1_P"), ("dave", "eu-west-1_P")]
    assert names("--disabled") == [("carol", "eu-west-1_P")]
    assert names("--user-pool-id", "other_X") == []
    out = json.loads(rg("users", "list", "--json", "--db", db).output)
    carol = next(u for u in out["Users"] if u["Username"] == "carol")
    assert (carol["UserMFASettingList"], carol["PreferredMfaSetting"], carol["Enabled"]) == (
        ["SMS_MFA", "SOFTWARE_TOKEN_MFA"], "SOFTWARE_TOKEN_MFA", False)
    assert {"Name": "sub", "Value": "s-c"} in carol["Attributes"]
    # what it prints, `users load` reads back: the same users in another store
    (tmp_path / "out.json").write_text(rg("users", "list", "--json", "--db", db).output)
    res = rg("users", "load", tmp_path / "out.json", "--db", db2)
    assert res.exit_code == 0 and "added 4" in res.output, res.output
    again = json.loads(rg("users", "list", "--json", "--db", db2).output)
    assert again == out
    # the table: one line per user and a count
    res = rg("users", "list", "--db", db, "--status", "RESET_REQUIRED")
    assert res.exit_code == 0 and "bob" in res.output and "alice" not in res.output and "1 user" in res.output


def test_a_bad_status_or_pool_is_one_line_and_exit_2(tmp_path):
    res = rg("users", "list", "--status", "GONE", "--db", tmp_path / "s.duckdb")
    assert res.exit_code == 2 and "UserStatus 'GONE' is not one of" in res.output
    res = rg("users", "list", "--user-pool-id", "", "--db", tmp_path / "s.duckdb")
    assert res.exit_code == 2 and "--user-pool-id" in res.output
