"""risk.config: documents as Cognito writes them, strict validation with clear messages, versioned storage."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from ingest.errors import ConfigurationError
from risk import config as rc
from risk import store

# A document written for `aws cognito-idp set-risk-configuration --cli-input-json` (every field the API has).
CLI_INPUT = {
    "UserPoolId": "us-west-2_EXAMPLE",
    "CompromisedCredentialsRiskConfiguration": {
        "EventFilter": ["SIGN_IN", "PASSWORD_CHANGE"],
        "Actions": {"EventAction": "BLOCK"},
    },
    "AccountTakeoverRiskConfiguration": {
        "NotifyConfiguration": {
            "From": "Security <security@example.com>",
            "ReplyTo": "help@example.com",
            "SourceArn": "arn:aws:ses:us-west-2:123456789012:identity/example.com",
            "BlockEmail": {
                "Subject": "Blocked sign-in",
                "HtmlBody": "<p>Hi {username}, we blocked a sign-in from {ip-address}.</p>",
                "TextBody": "Hi {username}, we blocked a sign-in from {ip-address}.",
            },
            "NoActionEmail": {"Subject": "New sign-in", "TextBody": "Hi {username}, new sign-in from {city}."},
            "MfaEmail": {"Subject": "MFA requested", "HtmlBody": "<p>Was this you? {one-click-link-valid}</p>"},
        },
        "Actions": {
            "LowAction": {"Notify": False, "EventAction": "NO_ACTION"},
            "MediumAction": {"Notify": True, "EventAction": "MFA_IF_CONFIGURED"},
            "HighAction": {"Notify": True, "EventAction": "BLOCK"},
        },
    },
    "RiskExceptionConfiguration": {
        "BlockedIPRangeList": ["192.0.2.0/24", "2001:db8:bad::/48"],
        "SkippedIPRangeList": ["10.0.0.0/8"],
    },
}


def errors_of(doc, **kw) -> rc.RiskConfigurationError:
    with pytest.raises(rc.RiskConfigurationError) as info:
        rc.validate_document(doc, **kw)
    return info.value


def messages(doc) -> list[str]:
    return [str(p) for p in errors_of(doc).problems]


def with_change(path: list, value):
    doc = copy.deepcopy(CLI_INPUT)
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


ATO = "AccountTakeoverRiskConfiguration"
NC = [ATO, "NotifyConfiguration"]
REC = "RiskExceptionConfiguration"


# -- loading --------------------------------------------------------------------------


def test_cli_input_json_loads_unchanged(tmp_path):
    path = tmp_path / "risk.json"
    path.write_text(json.dumps(CLI_INPUT, indent=2))
    cfg = rc.load_file(path)
    assert cfg.to_document() == CLI_INPUT
    assert cfg.action_for(rc.RiskLevel.HIGH).EventAction is rc.AccountTakeoverEventAction.BLOCK
    assert cfg.CompromisedCredentialsRiskConfiguration.event_types() == {rc.EventType.SIGN_IN, rc.EventType.PASSWORD_CHANGE}


def test_byte_order_mark_is_tolerated(tmp_path):
    path = tmp_path / "risk.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(CLI_INPUT).encode())
    assert rc.load_file(path).to_document() == CLI_INPUT


def test_file_url_prefix_as_the_aws_cli_takes_it(tmp_path):
    path = tmp_path / "risk.json"
    path.write_text(json.dumps(CLI_INPUT))
    assert rc.load_file(f"file://{path}").to_document() == CLI_INPUT


def test_yaml_document_is_the_same_configuration(tmp_path):
    path = tmp_path / "risk.yaml"
    path.write_text(yaml.safe_dump(CLI_INPUT, sort_keys=False))
    assert rc.load_file(path).to_document() == CLI_INPUT


@pytest.mark.parametrize("last_modified", [1721237155.123, "2024-07-17T17:25:55.123000+00:00"])
def test_describe_output_wrapper_accepted_and_last_modified_ignored(last_modified):
    doc = {"RiskConfiguration": {**CLI_INPUT, "LastModifiedDate": last_modified}}
    assert rc.validate_document(doc).to_document() == CLI_INPUT


def test_wrapper_with_other_top_level_keys_is_refused():
    err = errors_of({"RiskConfiguration": CLI_INPUT, "UserPoolId": "x"})
    assert "UserPoolId: unknown field beside the RiskConfiguration wrapper" in str(err)


def test_absent_event_filter_means_all_three_events():
    cfg = rc.validate_document({"CompromisedCredentialsRiskConfiguration": {"Actions": {"EventAction": "NO_ACTION"}}})
    assert cfg.CompromisedCredentialsRiskConfiguration.event_types() == {
        rc.EventType.SIGN_IN,
        rc.EventType.PASSWORD_CHANGE,
        rc.EventType.SIGN_UP,
    }


def test_only_ids_is_a_reset_document():
    assert rc.validate_document({"UserPoolId": "p"}).is_reset
    assert rc.validate_document({"UserPoolId": "p", "ClientId": "c1"}).is_reset
    assert not rc.validate_document(CLI_INPUT).is_reset


def test_exactly_200_ranges_and_ipv6_are_accepted():
    v4 = [f"10.{i}.0.0/16" for i in range(200)]
    v6 = [f"2001:db8:{i:x}::/48" for i in range(200)]
    cfg = rc.validate_document({REC: {"BlockedIPRangeList": v4, "SkippedIPRangeList": v6}})
    assert len(cfg.RiskExceptionConfiguration.BlockedIPRangeList) == 200


# -- validation: every kind of error names the field and the value ----------------------------------


def test_unknown_enum_value_message_is_exact():
    doc = with_change([ATO, "Actions", "HighAction", "EventAction"], "BLOK")
    assert messages(doc) == [
        "AccountTakeoverRiskConfiguration.Actions.HighAction.EventAction: "
        "'BLOK' is not one of BLOCK, MFA_IF_CONFIGURED, MFA_REQUIRED, NO_ACTION"
    ]


@pytest.mark.parametrize(
    "path, value, expected",
    [
        (["CompromisedCredentialsRiskConfiguration", "Actions", "EventAction"], "MFA_REQUIRED",
         "CompromisedCredentialsRiskConfiguration.Actions.EventAction: 'MFA_REQUIRED' is not one of BLOCK, NO_ACTION"),
        (["CompromisedCredentialsRiskConfiguration", "EventFilter"], ["SIGN_IN", "FORGOT_PASSWORD"],
         "CompromisedCredentialsRiskConfiguration.EventFilter[1]: 'FORGOT_PASSWORD' is not one of SIGN_IN, PASSWORD_CHANGE, SIGN_UP"),
        (["CompromisedCredentialsRiskConfiguration", "EventFilter"], ["SIGN_IN", "SIGN_IN"],
         "CompromisedCredentialsRiskConfiguration.EventFilter[1]: 'SIGN_IN' is repeated"),
        (["CompromisedCredentialsRiskConfiguration", "EventFilter"], [],
         "CompromisedCredentialsRiskConfiguration.EventFilter: empty; leave EventFilter out"),
        (["CompromisedCredentialsRiskConfiguration", "EventFilter"], "SIGN_IN",
         "CompromisedCredentialsRiskConfiguration.EventFilter: expected a list, got a string 'SIGN_IN'"),
        (["UserPoolId"], "p" * 56, "UserPoolId: '" + "p" * 56 + "' is too long: at most 55 characters"),
        (["UserPoolId"], "", "UserPoolId: '' is too short: 0 characters, at least 1 required"),
        (["UserPoolId"], 12345, "UserPoolId: expected a string, got a number 12345"),
        (["ClientId"], "c" * 129, "ClientId: '" + "c" * 60 + "…' (129 characters) is too long: at most 128"),
        (["ClientId"], "my-client", "ClientId: 'my-client' must match [\\w+]+"),
        (["ClientId"], "", "ClientId: '' is too short"),
        (NC + ["BlockEmail", "Subject"], "s" * 141, "NotifyConfiguration.BlockEmail.Subject: '" + "s" * 60 + "…' (141 characters) is too long: at most 140"),
        (NC + ["BlockEmail", "Subject"], "", "NotifyConfiguration.BlockEmail.Subject: '' is too short"),
        (NC + ["BlockEmail", "HtmlBody"], "<p/>", "NotifyConfiguration.BlockEmail.HtmlBody: '<p/>' is too short: 4 characters, at least 6"),
        (NC + ["BlockEmail", "TextBody"], "t" * 20001, "NotifyConfiguration.BlockEmail.TextBody: '" + "t" * 60 + "…' (20001 characters) is too long: at most 20000"),
        (NC + ["MfaEmail", "HtmlBody"], "h" * 20001, "NotifyConfiguration.MfaEmail.HtmlBody: '" + "h" * 60 + "…' (20001 characters) is too long: at most 20000"),
        (NC + ["SourceArn"], "arn:aws:ses:x:1:y", "NotifyConfiguration.SourceArn: 'arn:aws:ses:x:1:y' is too short: 17 characters, at least 20"),
        (NC + ["SourceArn"], "arn:" + "a" * 2045, "NotifyConfiguration.SourceArn: 'arn:" + "a" * 56 + "…' (2049 characters) is too long: at most 2048"),
        (NC + ["SourceArn"], "not-an-arn-but-long-enough", "NotifyConfiguration.SourceArn: 'not-an-arn-but-long-enough' is not an ARN"),
        (NC + ["SourceArn"], KeyError, "AccountTakeoverRiskConfiguration.NotifyConfiguration.SourceArn: required field missing"),
        (NC + ["BlockEmail", "Subject"], KeyError, "AccountTakeoverRiskConfiguration.NotifyConfiguration.BlockEmail.Subject: required field missing"),
        (NC + ["From"], "nobody", "NotifyConfiguration.From: 'nobody' is not one email address"),
        # what the sender could never send from (risk.notify.single_address applies the same rule)
        (NC + ["From"], "security@example.com, ops@example.com", "NotifyConfiguration.From: 'security@example.com, ops@example.com' is not one email address"),
        (NC + ["From"], "a@b.com\r\nBcc: x@evil.com", "NotifyConfiguration.From: 'a@b.com\\r\\nBcc: x@evil.com' contains a line break"),
        (NC + ["ReplyTo"], "help@example.com\nBcc: x@evil.example", "NotifyConfiguration.ReplyTo: 'help@example.com\\nBcc: x@evil.example' contains a line break"),
        (NC + ["ReplyTo"], "jösé@ex..ämple.com", "NotifyConfiguration.ReplyTo: 'jösé@ex..ämple.com' has a domain that is not a valid internationalised domain name"),
        ([ATO, "Actions"], KeyError, "AccountTakeoverRiskConfiguration.Actions: required field missing"),
        ([ATO, "Actions", "LowAction", "Notify"], KeyError, "AccountTakeoverRiskConfiguration.Actions.LowAction.Notify: required field missing"),
        ([ATO, "Actions", "LowAction", "EventAction"], KeyError, "AccountTakeoverRiskConfiguration.Actions.LowAction.EventAction: required field missing"),
        ([ATO, "Actions", "LowAction", "Notify"], "true", "AccountTakeoverRiskConfiguration.Actions.LowAction.Notify: expected true or false, got a string 'true'"),
        ([ATO, "Actions", "LowAction"], "NO_ACTION", "AccountTakeoverRiskConfiguration.Actions.LowAction: expected an object, got a string 'NO_ACTION'"),
        (["CompromisedCredentialsRiskConfiguration", "Actions"], KeyError, "CompromisedCredentialsRiskConfiguration.Actions: required field missing"),
        (["CompromisedCredentialsRiskConfiguration", "Actions", "EventAction"], KeyError, "CompromisedCredentialsRiskConfiguration.Actions.EventAction: required field missing"),
        ([ATO, "Actions", "MediumAction", "Notfy"], True, "AccountTakeoverRiskConfiguration.Actions.MediumAction.Notfy: unknown field (allowed here: Notify, EventAction)"),
        (["AdvancedSecurityMode"], "ENFORCED", "AdvancedSecurityMode: unknown field (allowed here: UserPoolId, ClientId,"),
        ([REC, "BlockedIPRangeList"], "10.0.0.0/8", "RiskExceptionConfiguration.BlockedIPRangeList: expected a list, got a string '10.0.0.0/8'"),
    ],
)
def test_each_kind_of_error_names_field_and_value(path, value, expected):
    got = messages(with_change(path, value))
    assert len(got) == 1, got
    assert expected in got[0]


@pytest.mark.parametrize(
    "cidr, reason",
    [
        ("10.0.0.0/33", "prefix length 33 > 32"),
        ("::1/129", "prefix length 129 > 128"),
        ("300.0.0.0/8", "'300.0.0.0' is not an IPv4 or IPv6 address"),
        ("10.0.0.1/24", "host bits set; the network is '10.0.0.0/24'"),
        ("2001:db8::1/32", "host bits set; the network is '2001:db8::/32'"),
        ("192.0.2.7", "no prefix length; write '192.0.2.7/32'"),
        ("2001:db8::7", "no prefix length; write '2001:db8::7/128'"),
        ("10.0.0.0/x", "prefix length 'x' is not a number"),
        ("10.0.0.0/-1", "prefix length '-1' is not a number"),
        (" 10.0.0.0/8", "surrounded by spaces"),
        ("010.0.0.0/8", "'010.0.0.0' is not an IPv4 or IPv6 address"),
        ("", "empty"),
    ],
)
def test_bad_cidr_says_which_list_which_entry_and_why(cidr, reason):
    doc = with_change([REC, "BlockedIPRangeList"], ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", cidr])
    assert messages(doc) == [f"RiskExceptionConfiguration.BlockedIPRangeList[3]: {cidr!r} is not a valid CIDR ({reason})"]


def test_cidr_message_from_the_brief():
    doc = with_change([REC, "BlockedIPRangeList"], ["1.0.0.0/8", "2.0.0.0/8", "3.0.0.0/8", "10.0.0.0/33"])
    assert messages(doc) == [
        "RiskExceptionConfiguration.BlockedIPRangeList[3]: '10.0.0.0/33' is not a valid CIDR (prefix length 33 > 32)"
    ]


def test_201_ranges_refused_and_bad_entries_still_listed():
    ranges = [f"10.{i // 256}.{i % 256}.0/24" for i in range(201)]
    ranges[5] = "::1/129"
    got = messages(with_change([REC, "SkippedIPRangeList"], ranges))
    assert got == [
        "RiskExceptionConfiguration.SkippedIPRangeList: 201 ranges, at most 200 allowed",
        "RiskExceptionConfiguration.SkippedIPRangeList[5]: '::1/129' is not a valid CIDR (prefix length 129 > 128)",
    ]


@pytest.mark.parametrize(
    "low, medium, high, expected",
    [
        ("BLOCK", "NO_ACTION", "BLOCK",
         "Actions.MediumAction.EventAction: 'NO_ACTION' is less restrictive than LowAction.EventAction 'BLOCK'"),
        ("NO_ACTION", "MFA_REQUIRED", "MFA_IF_CONFIGURED",
         "Actions.HighAction.EventAction: 'MFA_IF_CONFIGURED' is less restrictive than MediumAction.EventAction 'MFA_REQUIRED'"),
        ("MFA_IF_CONFIGURED", "MFA_IF_CONFIGURED", None,
         "Actions.HighAction: absent (NO_ACTION) is less restrictive than MediumAction.EventAction 'MFA_IF_CONFIGURED'"),
    ],
)
def test_higher_level_may_not_be_less_restrictive(low, medium, high, expected):
    actions = {"LowAction": {"Notify": False, "EventAction": low}, "MediumAction": {"Notify": False, "EventAction": medium}}
    if high:
        actions["HighAction"] = {"Notify": False, "EventAction": high}
    got = messages({ATO: {"Actions": actions}})
    assert len(got) == 1 and expected in got[0], got


@pytest.mark.parametrize(
    "low, medium, high",
    [
        ("NO_ACTION", "NO_ACTION", "NO_ACTION"),
        ("NO_ACTION", "MFA_IF_CONFIGURED", "MFA_REQUIRED"),
        ("MFA_IF_CONFIGURED", "MFA_REQUIRED", "BLOCK"),
        ("BLOCK", "BLOCK", "BLOCK"),
    ],
)
def test_non_decreasing_actions_are_accepted(low, medium, high):
    actions = {
        "LowAction": {"Notify": False, "EventAction": low},
        "MediumAction": {"Notify": False, "EventAction": medium},
        "HighAction": {"Notify": True, "EventAction": high},
    }
    assert rc.validate_document({ATO: {"Actions": actions}}).action_for("High").EventAction == high


def test_all_problems_are_listed_together_and_the_error_is_a_configuration_error():
    doc = copy.deepcopy(CLI_INPUT)
    doc[ATO]["Actions"]["HighAction"]["EventAction"] = "BLOK"
    doc[REC]["BlockedIPRangeList"] = ["10.0.0.0/33", "::1/129"]
    doc[ATO]["NotifyConfiguration"]["BlockEmail"]["HtmlBody"] = "x" * 20001
    doc["Extra"] = 1
    err = errors_of(doc, source="risk.json")
    assert isinstance(err, ConfigurationError)
    assert len(err.problems) == 5
    text = str(err)
    assert text.startswith("risk.json: invalid risk configuration (5 problems):")
    for part in ("'BLOK'", "'10.0.0.0/33'", "'::1/129'", "20001 characters", "Extra: unknown field"):
        assert part in text


def test_problems_carry_the_line_of_the_field(tmp_path):
    text = json.dumps(with_change([ATO, "Actions", "HighAction", "EventAction"], "BLOK"), indent=2)
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(rc.RiskConfigurationError) as info:
        rc.load_file(path)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if '"BLOK"' in ln)
    assert info.value.problems[0].line == line
    assert f"line {line}: AccountTakeoverRiskConfiguration.Actions.HighAction.EventAction" in str(info.value)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("a.json", '{"UserPoolId": "p",\n "UserPoolId": "q"}', "a.json:2: key 'UserPoolId' is repeated (first at line 1)"),
        ("a.json", '{"RiskExceptionConfiguration": {\n  "BlockedIPRangeList": [],\n  "BlockedIPRangeList": []}}',
         "a.json:3: key 'BlockedIPRangeList' is repeated (first at line 2)"),
        ("a.yaml", "UserPoolId: p\nUserPoolId: q\n", "key 'UserPoolId' is repeated (first at line 1)"),
        ("a.json", '{"UserPoolId": "p",\n}', "not valid JSON"),
        ("a.yaml", "UserPoolId: [p\n", "a.yaml:2: not valid YAML: while parsing a flow sequence: expected ',' or ']', "
                                      "but got '<stream end>' (column 1)"),
        ("a.yaml", "a: b: c\n", "a.yaml:1: not valid YAML: mapping values are not allowed here (column 5)"),
        ("a.yaml", "", "the document is empty"),
        ("a.yaml", "- UserPoolId: p\n", "expected an object (mapping), got a list"),
    ],
)
def test_unreadable_documents(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigurationError) as info:
        rc.load_file(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_yaml_merge_keys_with_an_own_key_overriding_a_merged_one_are_read(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("""UserPoolId: us-east-1_A
AccountTakeoverRiskConfiguration:
  Actions:
    LowAction: &a {Notify: true, EventAction: NO_ACTION}
    MediumAction: {<<: *a, EventAction: MFA_IF_CONFIGURED}
    HighAction: {<<: *a, EventAction: BLOCK}
""")
    actions = rc.load_file(path).AccountTakeoverRiskConfiguration.Actions
    assert [(str(a.EventAction), a.Notify) for a in (actions.LowAction, actions.MediumAction, actions.HighAction)] == [
        ("NO_ACTION", True), ("MFA_IF_CONFIGURED", True), ("BLOCK", True)]
    path.write_text("UserPoolId: p\nx: &a {k: 1}\ny: {<<: *a, k: 2, k: 3}\n")  # an own key twice is still refused
    with pytest.raises(ConfigurationError, match="key 'k' is repeated"):
        rc.load_file(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigurationError, match="file not found"):
        rc.load_file(tmp_path / "nope.json")


def test_lint_warns_about_probable_mistakes():
    doc = copy.deepcopy(CLI_INPUT)
    doc[ATO]["NotifyConfiguration"]["BlockEmail"]["TextBody"] = "Hi {user-name}, {username}"
    doc[REC]["SkippedIPRangeList"] = ["192.0.2.128/25"]
    warnings = rc.lint(rc.validate_document(doc))
    assert any("unknown placeholder(s) {user-name}" in w for w in warnings)
    assert any("'192.0.2.128/25' overlaps blocked 192.0.2.0/24" in w for w in warnings)
    bare = rc.validate_document({ATO: {"Actions": {"HighAction": {"Notify": True, "EventAction": "BLOCK"}}}})
    assert any("Notify is true for HighAction but there is no NotifyConfiguration" in w for w in rc.lint(bare))
    assert rc.lint(rc.validate_document(CLI_INPUT)) == []
    subject_only = copy.deepcopy(CLI_INPUT)  # valid for Cognito, but no email could be sent with it
    subject_only[ATO]["NotifyConfiguration"]["MfaEmail"] = {"Subject": "Was this you?"}
    assert rc.lint(rc.validate_document(subject_only)) == [
        "AccountTakeoverRiskConfiguration.NotifyConfiguration.MfaEmail: neither HtmlBody nor TextBody: every email "
        "with this template would fail to send"]
    empty = copy.deepcopy(CLI_INPUT)  # an empty From or ReplyTo is not set: say so rather than take it in silence
    empty[ATO]["NotifyConfiguration"].update({"From": "", "ReplyTo": ""})
    assert rc.lint(rc.validate_document(empty)) == [
        "AccountTakeoverRiskConfiguration.NotifyConfiguration.From is empty: taken as not set (the sender is "
        "$RISKGATE_NOTIFY_FROM); leave it out to say so",
        "AccountTakeoverRiskConfiguration.NotifyConfiguration.ReplyTo is empty: taken as not set (no Reply-To); "
        "leave it out to say so"]


# -- defaults ----------------------------------------------------------------------------------------


def test_defaults_mirror_cognito_console_defaults():
    d = rc.default_configuration()
    actions = {lvl: (d.action_for(lvl).EventAction, d.action_for(lvl).Notify) for lvl in rc.RiskLevel}
    assert actions == {
        rc.RiskLevel.LOW: ("NO_ACTION", True),
        rc.RiskLevel.MEDIUM: ("MFA_IF_CONFIGURED", True),
        rc.RiskLevel.HIGH: ("MFA_REQUIRED", True),
    }
    cc = d.CompromisedCredentialsRiskConfiguration
    assert cc.Actions.EventAction == "BLOCK"
    assert cc.event_types() == {rc.EventType.SIGN_IN, rc.EventType.PASSWORD_CHANGE, rc.EventType.SIGN_UP}
    assert d.RiskExceptionConfiguration is None
    assert rc.lint(d) == []


@pytest.mark.parametrize("name", ["BlockEmail", "NoActionEmail", "MfaEmail"])
def test_default_templates_use_the_placeholders(name):
    t = rc.default_template(name)
    assert 1 <= len(t.Subject) <= 140
    for body in (t.HtmlBody, t.TextBody):
        for ph in ("{username}", "{ip-address}", "{login-time}", "{one-click-link-valid}", "{one-click-link-invalid}"):
            assert ph in body


def test_template_for_falls_back_to_default():
    cfg = rc.validate_document(CLI_INPUT)
    assert rc.template_for(cfg, "BlockEmail").Subject == "Blocked sign-in"
    bare = rc.validate_document({ATO: {"Actions": {}}})
    assert rc.template_for(bare, "MfaEmail") == rc.default_template("MfaEmail")
    with pytest.raises(ConfigurationError, match="no notification template 'Email'"):
        rc.template_for(bare, "Email")


# -- storage ------------------------------------------------------------------------------------------


@pytest.fixture
def con(tmp_path, monkeypatch):
    monkeypatch.delenv(rc.POOL_ENV, raising=False)
    c = store.connect(tmp_path / "s.duckdb")
    yield c
    c.close()


def doc_with_high(action: str, **ids) -> rc.RiskConfiguration:
    d = {**ids, ATO: {"Actions": {"HighAction": {"Notify": False, "EventAction": action}}}}
    return rc.validate_document(d)


def test_migration_is_recorded(con):
    names = {r[0] for r in con.execute("SELECT name FROM schema_migrations").fetchall()}
    assert "risk_config_0001_versions" in names


def test_nothing_set_resolves_to_defaults_version_0(con):
    cfg, version = rc.resolve(con, "pool-a")
    assert version == 0
    assert cfg.UserPoolId == "pool-a" and cfg.ClientId is None
    assert cfg.to_document() == {**rc.default_configuration().to_document(), "UserPoolId": "pool-a"}
    assert "LastModifiedDate" not in rc.describe(con, "pool-a")["RiskConfiguration"]


def test_client_replaces_pool_and_reset_rules(con):
    t0 = datetime(2024, 7, 1, tzinfo=timezone.utc)
    v1 = rc.set_configuration(con, doc_with_high("MFA_REQUIRED", UserPoolId="pool-a"), now=t0)
    v2 = rc.set_configuration(con, doc_with_high("BLOCK"), user_pool_id="pool-a", client_id="web1", now=t0 + timedelta(1))
    assert (v1.version, v2.version) == (1, 2)

    def high(client=None):
        cfg, version = rc.resolve(con, "pool-a", client)
        return cfg.action_for("High").EventAction, version

    assert high() == ("MFA_REQUIRED", 1)
    assert high("web1") == ("BLOCK", 2)
    assert high("other") == ("MFA_REQUIRED", 1)  # clients without their own use the pool's

    # client reset (UserPoolId + ClientId and nothing else): inherits the pool again
    v3 = rc.set_configuration(con, rc.validate_document({"UserPoolId": "pool-a", "ClientId": "web1"}))
    assert v3.kind == "reset" and v3.version == 3
    assert high("web1") == ("MFA_REQUIRED", 1)

    # pool reset (UserPoolId only): defaults, as of the reset's version
    v4 = rc.set_configuration(con, rc.validate_document({"UserPoolId": "pool-a"}))
    cfg, version = rc.resolve(con, "pool-a", "web1")
    assert version == v4.version == 4
    assert cfg.action_for("High").EventAction == "MFA_REQUIRED" and cfg.action_for("Medium").EventAction == "MFA_IF_CONFIGURED"
    assert rc.configuration_at(con, 4).to_document() == cfg.to_document()

    # history keeps everything, newest first
    hist = rc.history(con)
    assert [h.version for h in hist] == [4, 3, 2, 1]
    assert [h.kind for h in hist] == ["reset", "reset", "set", "set"]
    assert hist[2].scope == "client web1 of pool pool-a"
    assert hist[3].changed_at == t0
    assert rc.configuration_at(con, 2).action_for("High").EventAction == "BLOCK"
    assert [h.version for h in rc.history(con, "pool-a", "web1")] == [3, 2]


def test_describe_is_what_applies_with_last_modified(con):
    t = datetime(2024, 7, 17, 17, 25, 55, tzinfo=timezone.utc)
    rc.set_configuration(con, rc.validate_document(CLI_INPUT), now=t)
    described = rc.describe(con, "us-west-2_EXAMPLE", "anyclient")
    assert described == {"RiskConfiguration": {**CLI_INPUT, "LastModifiedDate": "2024-07-17T17:25:55+00:00"}}
    # and it loads back unchanged
    assert rc.validate_document(described).to_document() == CLI_INPUT


def test_versions_are_monotonic_across_pools_and_modes(con):
    a = rc.set_configuration(con, doc_with_high("BLOCK"), user_pool_id="a")
    b = rc.set_mode(con, "ENFORCED", "a")
    c = rc.set_configuration(con, doc_with_high("BLOCK"), user_pool_id="b")
    assert [a.version, b.version, c.version] == [1, 2, 3]
    assert rc.version_count(con) == 3
    assert rc.known_pools(con) == ["a", "b"]


def test_mode_defaults_to_audit_and_is_versioned(con):
    assert rc.get_mode(con, "p") == (rc.AdvancedSecurityMode.AUDIT, 0)
    v = rc.set_mode(con, "enforced", "p")
    assert v.summary == "AdvancedSecurityMode AUDIT -> ENFORCED" and v.kind == "mode"
    assert rc.get_mode(con, "p") == (rc.AdvancedSecurityMode.ENFORCED, v.version)
    rc.set_mode(con, rc.AdvancedSecurityMode.OFF, "p")
    assert rc.get_mode(con, "p")[0] is rc.AdvancedSecurityMode.OFF
    assert rc.get_mode(con, "q") == (rc.AdvancedSecurityMode.AUDIT, 0)
    with pytest.raises(ConfigurationError, match="'AUDITED' is not one of OFF, AUDIT, ENFORCED"):
        rc.set_mode(con, "AUDITED", "p")


def test_pool_choice(con, monkeypatch):
    assert rc.choose_pool(con) == "default"  # nothing known
    rc.set_configuration(con, doc_with_high("BLOCK", UserPoolId="only"))
    assert rc.choose_pool(con) == "only"  # the one pool the store knows
    monkeypatch.setenv(rc.POOL_ENV, "from-env")
    assert rc.choose_pool(con) == "from-env"
    assert rc.choose_pool(con, document="doc") == "doc"
    assert rc.choose_pool(con, "flag", "flag") == "flag"
    monkeypatch.delenv(rc.POOL_ENV)
    rc.set_configuration(con, doc_with_high("BLOCK", UserPoolId="second"))
    with pytest.raises(ConfigurationError, match=r"several pools \(only, second\)"):
        rc.choose_pool(con)
    with pytest.raises(ConfigurationError, match="--user-pool-id 'x' contradicts the document's UserPoolId 'y'"):
        rc.choose_pool(con, "x", "y")


def test_contradicting_ids_change_nothing(con):
    before = rc.version_count(con)
    with pytest.raises(ConfigurationError, match="--client-id 'a' contradicts the document's ClientId 'b'"):
        rc.set_configuration(con, doc_with_high("BLOCK", ClientId="b"), client_id="a")
    with pytest.raises(ConfigurationError, match="contradicts the document's UserPoolId"):
        rc.set_configuration(con, doc_with_high("BLOCK", UserPoolId="b"), user_pool_id="a")
    with pytest.raises(ConfigurationError, match="client id 'bad id' must be"):
        rc.set_configuration(con, doc_with_high("BLOCK"), client_id="bad id")
    assert rc.version_count(con) == before


def test_configuration_at_unknown_or_mode_version(con):
    assert rc.configuration_at(con, 0) == rc.default_configuration()
    with pytest.raises(ConfigurationError, match="no risk configuration version 9"):
        rc.configuration_at(con, 9)
    v = rc.set_mode(con, "OFF", "p")
    with pytest.raises(ConfigurationError, match="is a mode of p"):
        rc.configuration_at(con, v.version)


def test_store_keeps_the_document_not_a_summary(con):
    rc.set_configuration(con, rc.validate_document(CLI_INPUT))
    stored = con.execute("SELECT document FROM risk_config_versions WHERE version = 1").fetchall()[0][0]
    assert json.loads(stored) == CLI_INPUT
