"""``riskgate config ...`` and ``riskgate mode``: thin commands over risk.config, exit code 2 on bad input."""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from typer.testing import CliRunner

from cli import app
from risk import config as rc
from risk import store

DOC = {
    "UserPoolId": "us-east-1_TEST",
    "CompromisedCredentialsRiskConfiguration": {"Actions": {"EventAction": "BLOCK"}},
    "AccountTakeoverRiskConfiguration": {
        "NotifyConfiguration": {
            "From": "security@example.com",
            "SourceArn": "arn:aws:ses:us-east-1:123456789012:identity/example.com",
        },
        "Actions": {
            "LowAction": {"Notify": False, "EventAction": "NO_ACTION"},
            "MediumAction": {"Notify": True, "EventAction": "MFA_IF_CONFIGURED"},
            "HighAction": {"Notify": True, "EventAction": "MFA_REQUIRED"},
        },
    },
    "RiskExceptionConfiguration": {"BlockedIPRangeList": ["192.0.2.0/24"], "SkippedIPRangeList": ["10.0.0.0/8"]},
}


@pytest.fixture
def cli(store_path, monkeypatch):
    monkeypatch.delenv(rc.POOL_ENV, raising=False)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args))

    return invoke


def write(tmp_path, doc, name="risk.json") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False) if name.endswith((".yaml", ".yml")) else json.dumps(doc, indent=2))
    return str(path)


def count_versions(store_path) -> int:
    con = store.connect(store_path)
    try:
        return rc.version_count(con)
    finally:
        con.close()


def test_validate_good_file_never_touches_the_store(cli, tmp_path, store_path):
    res = cli("config", "validate", write(tmp_path, DOC))
    assert res.exit_code == 0, res.output
    assert "valid: account takeover: Low=NO_ACTION Medium=MFA_IF_CONFIGURED+notify High=MFA_REQUIRED+notify" in res.stdout
    assert not store_path.exists()


def test_validate_json_output(cli, tmp_path):
    res = cli("config", "validate", write(tmp_path, DOC, "risk.yaml"), "--json")
    assert res.exit_code == 0
    assert json.loads(res.stdout)["valid"] is True


BAD_INPUTS = {
    "201 CIDRs": (
        ["RiskExceptionConfiguration", "BlockedIPRangeList"],
        [f"10.0.{i}.0/24" for i in range(201)],
        "RiskExceptionConfiguration.BlockedIPRangeList: 201 ranges, at most 200 allowed",
    ),
    "10.0.0.0/33": (
        ["RiskExceptionConfiguration", "SkippedIPRangeList"],
        ["10.0.0.0/33"],
        "RiskExceptionConfiguration.SkippedIPRangeList[0]: '10.0.0.0/33' is not a valid CIDR (prefix length 33 > 32)",
    ),
    "::1/129": (
        ["RiskExceptionConfiguration", "BlockedIPRangeList"],
        ["192.0.2.0/24", "::1/129"],
        "RiskExceptionConfiguration.BlockedIPRangeList[1]: '::1/129' is not a valid CIDR (prefix length 129 > 128)",
    ),
    "20001-character template": (
        ["AccountTakeoverRiskConfiguration", "NotifyConfiguration", "BlockEmail"],
        {"Subject": "Blocked", "TextBody": "x" * 20001},
        "AccountTakeoverRiskConfiguration.NotifyConfiguration.BlockEmail.TextBody: ",
    ),
    "unknown enum": (
        ["AccountTakeoverRiskConfiguration", "Actions", "HighAction", "EventAction"],
        "BLOK",
        "'BLOK' is not one of BLOCK, MFA_IF_CONFIGURED, MFA_REQUIRED, NO_ACTION",
    ),
    "less restrictive higher level": (
        ["AccountTakeoverRiskConfiguration", "Actions", "HighAction", "EventAction"],
        "NO_ACTION",
        "HighAction.EventAction: 'NO_ACTION' is less restrictive than MediumAction.EventAction 'MFA_IF_CONFIGURED'",
    ),
    "missing required": (
        ["AccountTakeoverRiskConfiguration", "NotifyConfiguration"],
        {"From": "security@example.com"},
        "AccountTakeoverRiskConfiguration.NotifyConfiguration.SourceArn: required field missing",
    ),
}


def bad_doc(path, value):
    doc = copy.deepcopy(DOC)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_exit_2_message_on_stderr_and_nothing_stored(cli, tmp_path, store_path, case):
    path, value, message = BAD_INPUTS[case]
    assert cli("config", "set", write(tmp_path, DOC, "good.json")).exit_code == 0
    before = count_versions(store_path)
    bad = write(tmp_path, bad_doc(path, value))
    for command in (("config", "validate", bad), ("config", "set", bad)):
        res = cli(*command)
        assert res.exit_code == 2
        assert message in res.stderr
        assert bad in res.stderr
        assert res.stdout == ""
    assert count_versions(store_path) == before


def test_template_of_20001_characters_names_the_length(cli, tmp_path):
    path, value, _ = BAD_INPUTS["20001-character template"]
    res = cli("config", "validate", write(tmp_path, bad_doc(path, value)))
    assert "(20001 characters) is too long: at most 20000 characters allowed" in res.stderr


def test_set_describe_round_trip(cli, tmp_path):
    res = cli("config", "set", write(tmp_path, DOC))
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("version 1: pool us-east-1_TEST: ")
    res = cli("config", "describe")
    assert res.exit_code == 0
    described = json.loads(res.stdout)["RiskConfiguration"]
    assert described.pop("LastModifiedDate")
    assert described == DOC
    assert "applies: the pool's configuration, version 1" in res.stderr
    # what describe prints can be set again unchanged
    again = tmp_path / "described.json"
    again.write_text(res.stdout)
    assert cli("config", "set", str(again)).exit_code == 0


def test_describe_yaml(cli, tmp_path):
    cli("config", "set", write(tmp_path, DOC))
    res = cli("config", "describe", "--yaml", "--user-pool-id", "us-east-1_TEST")
    assert yaml.safe_load(res.stdout)["RiskConfiguration"]["UserPoolId"] == "us-east-1_TEST"


def test_describe_defaults_when_nothing_set(cli):
    res = cli("config", "describe", "--user-pool-id", "fresh")
    assert res.exit_code == 0
    doc = json.loads(res.stdout)["RiskConfiguration"]
    assert doc["UserPoolId"] == "fresh"
    assert doc["AccountTakeoverRiskConfiguration"]["Actions"]["HighAction"] == {"Notify": True, "EventAction": "MFA_REQUIRED"}
    assert "applies: the default configuration" in res.stderr


def test_client_precedence_reset_and_history(cli, tmp_path):
    cli("config", "set", write(tmp_path, DOC))
    client_doc = copy.deepcopy(DOC)
    client_doc["AccountTakeoverRiskConfiguration"]["Actions"]["HighAction"]["EventAction"] = "BLOCK"
    res = cli("config", "set", write(tmp_path, client_doc, "client.yaml"), "--client-id", "web1")
    assert res.exit_code == 0, res.output
    assert "client web1 of pool us-east-1_TEST" in res.stdout

    def high(*extra):
        out = json.loads(cli("config", "describe", *extra).stdout)["RiskConfiguration"]
        return out.get("ClientId"), out["AccountTakeoverRiskConfiguration"]["Actions"]["HighAction"]["EventAction"]

    assert high("--client-id", "web1") == ("web1", "BLOCK")
    assert high("--client-id", "mobile") == (None, "MFA_REQUIRED")  # inherits the pool's
    assert cli("config", "reset", "--client-id", "web1").exit_code == 0
    assert high("--client-id", "web1") == (None, "MFA_REQUIRED")
    res = cli("config", "reset")
    assert "reset: the pool uses the default configuration" in res.stdout

    res = cli("config", "history", "--json")
    rows = json.loads(res.stdout)
    assert [(r["version"], r["kind"], r["client_id"]) for r in rows] == [
        (4, "reset", None), (3, "reset", "web1"), (2, "set", "web1"), (1, "set", None)
    ]
    table = cli("config", "history").stdout
    assert "version" in table and "reset" in table
    assert len(json.loads(cli("config", "history", "--json", "--limit", "2").stdout)) == 2


def test_conflicting_user_pool_id_is_refused(cli, tmp_path, store_path):
    res = cli("config", "set", write(tmp_path, DOC), "--user-pool-id", "other")
    assert res.exit_code == 2
    assert "--user-pool-id 'other' contradicts the document's UserPoolId 'us-east-1_TEST'" in res.stderr
    assert count_versions(store_path) == 0


def test_mode_show_and_set(cli, tmp_path):
    res = cli("mode")
    assert res.exit_code == 0 and "pool default: AdvancedSecurityMode AUDIT (default, never set)" in res.stdout
    res = cli("mode", "ENFORCED", "--user-pool-id", "default")
    assert res.exit_code == 0 and "AUDIT -> ENFORCED" in res.stdout
    res = cli("mode", "--json")
    assert json.loads(res.stdout) == {"user_pool_id": "default", "mode": "ENFORCED", "version": 1}
    res = cli("mode", "SOMETIMES")
    assert res.exit_code == 2 and "'SOMETIMES' is not one of OFF, AUDIT, ENFORCED" in res.stderr
    assert "mode" in cli("config", "history").stdout


def test_several_pools_need_a_choice(cli, tmp_path):
    cli("config", "set", write(tmp_path, DOC))
    cli("config", "set", write(tmp_path, {**DOC, "UserPoolId": "eu-west-1_B"}, "b.json"))
    res = cli("mode", "OFF")
    assert res.exit_code == 2 and "several pools (eu-west-1_B, us-east-1_TEST)" in res.stderr
    assert cli("mode", "OFF", "--user-pool-id", "eu-west-1_B").exit_code == 0


def test_an_empty_pool_id_or_a_bad_client_id_is_refused_before_anything_changes(cli, tmp_path, store_path):
    """``--user-pool-id ""`` (an unset shell variable) used to mean "the store's pool" and turned its mode OFF."""
    cli("config", "set", write(tmp_path, DOC))
    before = count_versions(store_path)
    for args in (("mode", "OFF", "--user-pool-id", ""), ("mode", "OFF", "--user-pool-id", " "),
                 ("config", "reset", "--user-pool-id", ""), ("config", "set", write(tmp_path, DOC), "--user-pool-id", "")):
        res = cli(*args)
        assert res.exit_code == 2 and "is empty: give a pool id of 1..55 characters" in res.stderr, args
    assert count_versions(store_path) == before
    assert json.loads(cli("mode", "--json").stdout)["mode"] == "AUDIT"
    res = cli("config", "describe", "--client-id", "bad id!")
    assert res.exit_code == 2 and "client id 'bad id!' must be 1..128 characters" in res.stderr


def test_zone_ids_are_refused_and_mapped_ranges_overlap_as_ipv4(cli, tmp_path):
    res = cli("config", "validate", write(tmp_path, {"RiskExceptionConfiguration": {
        "BlockedIPRangeList": ["fe80::%eth0/64"]}}))
    assert res.exit_code == 2 and "'fe80::%eth0/64' is not a valid CIDR (an IPv6 zone id" in res.stderr
    res = cli("config", "validate", write(tmp_path, {"RiskExceptionConfiguration": {
        "BlockedIPRangeList": ["10.0.0.0/8", "::ffff:192.0.2.0/120"],
        "SkippedIPRangeList": ["::ffff:10.2.0.0/112", "192.0.2.128/25", "::ffff:11.0.0.0/120", "2001:db8::/32"]}}))
    assert res.exit_code == 0, res.stderr
    warned = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert warned == [
        "warning: RiskExceptionConfiguration.SkippedIPRangeList: '::ffff:10.2.0.0/112' overlaps blocked 10.0.0.0/8; "
        "blocked wins for addresses in both",
        "warning: RiskExceptionConfiguration.SkippedIPRangeList: '192.0.2.128/25' overlaps blocked "
        "::ffff:192.0.2.0/120; blocked wins for addresses in both"]


def test_missing_file(cli, tmp_path):
    res = cli("config", "validate", str(tmp_path / "none.json"))
    assert res.exit_code == 2 and "file not found" in res.stderr


def test_commands_are_documented():
    runner = CliRunner()
    for args in (["config", "--help"], ["mode", "--help"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 0
    help_text = runner.invoke(app, ["config", "--help"]).stdout
    for name in ("set", "describe", "validate", "reset", "history"):
        assert name in help_text


def test_only_the_commands_reading_a_document_say_its_user_pool_id_comes_first():
    """`mode`, `config describe` and `config reset` read no document, yet their --user-pool-id help said the default
    was "the document's UserPoolId"."""
    runner = CliRunner(env={"COLUMNS": "200"})
    for args, says in ((["mode"], False), (["config", "describe"], False), (["config", "reset"], False),
                       (["config", "set"], True), (["config", "validate"], True)):
        text = " ".join(runner.invoke(app, [*args, "--help"]).stdout.split())
        if "--user-pool-id" in text:
            assert ("the document's UserPoolId" in text) is says, args
            assert "$RISKGATE_USER_POOL_ID, else the only pool the store knows" in text, args


def test_a_pool_the_store_has_never_seen_is_set_with_a_warning_naming_the_known_ones(cli, tmp_path, store_path):
    """`mode ENFORCED --user-pool-id` with a typo (O for 0) was recorded without a word, and made the store know
    two pools (exploratory review); the service answers such a pool with ResourceNotFoundException."""
    cli("config", "set", write(tmp_path, DOC))
    res = cli("mode", "ENFORCED", "--user-pool-id", "us-east-1_TE5T")
    assert res.exit_code == 0 and "AUDIT -> ENFORCED" in res.stdout
    assert ("the store has never seen pool 'us-east-1_TE5T' (no events, users or configuration of it); "
            "it knows us-east-1_TEST; recorded all the same: check the id. The store now knows 2 pools") in res.stderr
    res = cli("config", "set", write(tmp_path, {**DOC, "UserPoolId": "eu-west-1_B"}, "b.json"))
    assert res.exit_code == 0 and "never seen pool 'eu-west-1_B'" in res.stderr
    assert "it knows us-east-1_TE5T, us-east-1_TEST" in res.stderr and "now knows" not in res.stderr
    res = cli("config", "reset", "--user-pool-id", "x")
    assert res.exit_code == 0 and "never seen pool 'x'" in res.stderr
    for args in (("mode", "OFF", "--user-pool-id", "us-east-1_TEST"), ("config", "set", write(tmp_path, DOC))):
        res = cli(*args)
        assert res.exit_code == 0 and "warning" not in res.stderr, args


def test_a_pool_id_over_55_characters_is_refused_wherever_it_comes_from(cli, tmp_path, store_path, monkeypatch):
    for args in (("mode", "OFF", "--user-pool-id", "p" * 56), ("config", "set", write(tmp_path, {**DOC, "UserPoolId": "p" * 56}))):
        res = cli(*args)
        assert res.exit_code == 2 and "is too long: at most 55 characters allowed" in res.stderr, args
    monkeypatch.setenv(rc.POOL_ENV, "p" * 56)
    res = cli("mode", "OFF")
    assert res.exit_code == 2 and "$RISKGATE_USER_POOL_ID '" + "p" * 56 + "' is too long" in res.stderr
    assert count_versions(store_path) == 0
