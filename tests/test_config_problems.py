"""Every problem of a risk configuration at once: the README's stricter checks (an empty or repeating EventFilter,
the order of the risk levels' actions) are listed together with the section's schema problems, not only once those
are fixed; the same for ``riskgate config validate``, ``config set``, ``whatif --config`` and SetRiskConfiguration."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli import app
from risk import config as rc
from risk import store
from service import cognito

CC = "CompromisedCredentialsRiskConfiguration"
ATO = "AccountTakeoverRiskConfiguration"
ORDER_RULE = ("a higher risk level may not get a less restrictive action "
              "(NO_ACTION < MFA_IF_CONFIGURED < MFA_REQUIRED < BLOCK)")
EMPTY_FILTER = (f"{CC}.EventFilter: empty; leave EventFilter out to check all events "
                "(SIGN_IN, PASSWORD_CHANGE, SIGN_UP)")


def problems(doc) -> list[str]:
    with pytest.raises(rc.RiskConfigurationError) as info:
        rc.validate_document(doc)
    return [str(p) for p in info.value.problems]


def actions(low=None, medium=None, high=None) -> dict:
    out = {}
    for name, level in (("LowAction", low), ("MediumAction", medium), ("HighAction", high)):
        if level is not None:
            out[name] = level
    return {ATO: {"Actions": out}}


CASES = {
    "empty EventFilter and a wrong EventAction": (
        {CC: {"EventFilter": [], "Actions": {"EventAction": "MFA_REQUIRED"}}},
        [EMPTY_FILTER,
         f"{CC}.Actions.EventAction: 'MFA_REQUIRED' is not one of BLOCK, NO_ACTION"],
    ),
    "a repeat and an unknown filter": (
        {CC: {"EventFilter": ["SIGN_IN", "SIGN_IN", "NOPE"], "Actions": {"EventAction": "BLOCK"}}},
        [f"{CC}.EventFilter[1]: 'SIGN_IN' is repeated",
         f"{CC}.EventFilter[2]: 'NOPE' is not one of SIGN_IN, PASSWORD_CHANGE, SIGN_UP"],
    ),
    "an unknown filter given twice is unknown, not also repeated": (
        {CC: {"EventFilter": ["NOPE", "SIGN_UP", "NOPE", "SIGN_UP"], "Actions": {"EventAction": "BLOCK"}}},
        [f"{CC}.EventFilter[0]: 'NOPE' is not one of SIGN_IN, PASSWORD_CHANGE, SIGN_UP",
         f"{CC}.EventFilter[2]: 'NOPE' is not one of SIGN_IN, PASSWORD_CHANGE, SIGN_UP",
         f"{CC}.EventFilter[3]: 'SIGN_UP' is repeated"],
    ),
    "an empty EventFilter and a missing Actions": (
        {CC: {"EventFilter": []}},
        [EMPTY_FILTER, f"{CC}.Actions: required field missing"],
    ),
    "the order and a non-boolean Notify": (
        actions({"Notify": False, "EventAction": "BLOCK"}, {"Notify": "yes", "EventAction": "NO_ACTION"},
                {"Notify": True, "EventAction": "BLOCK"}),
        [f"{ATO}.Actions.MediumAction.Notify: expected true or false, got a string 'yes'",
         f"{ATO}.Actions.MediumAction.EventAction: 'NO_ACTION' is less restrictive than LowAction.EventAction "
         f"'BLOCK'; {ORDER_RULE}"],
    ),
    "the order and a missing Notify, the higher level absent": (
        actions({"EventAction": "MFA_REQUIRED"}),
        [f"{ATO}.Actions.LowAction.Notify: required field missing",
         f"{ATO}.Actions.MediumAction: absent (NO_ACTION) is less restrictive than LowAction.EventAction "
         f"'MFA_REQUIRED'; {ORDER_RULE}"],
    ),
    "a level with a wrong action is compared with none; the next is compared with the one below it": (
        actions({"Notify": False, "EventAction": "BLOCK"}, {"Notify": True, "EventAction": "NOPE"},
                {"Notify": False, "EventAction": "MFA_IF_CONFIGURED"}),
        [f"{ATO}.Actions.MediumAction.EventAction: 'NOPE' is not one of BLOCK, MFA_IF_CONFIGURED, MFA_REQUIRED, "
         "NO_ACTION",
         f"{ATO}.Actions.HighAction.EventAction: 'MFA_IF_CONFIGURED' is less restrictive than LowAction.EventAction "
         f"'BLOCK'; {ORDER_RULE}"],
    ),
    "a level that is not an object is compared with none": (
        actions("BLOCK", {"Notify": False, "EventAction": "NO_ACTION"}, {"Notify": False, "EventAction": "NO_ACTION"}),
        [f"{ATO}.Actions.LowAction: expected an object, got a string 'BLOCK'"],
    ),
    "the order and a NotifyConfiguration's problems": (
        {ATO: {"NotifyConfiguration": {"From": "nobody", "BlockEmail": {"Subject": ""}},
               "Actions": {"LowAction": {"Notify": True, "EventAction": "MFA_REQUIRED"},
                           "MediumAction": {"Notify": True, "EventAction": "MFA_IF_CONFIGURED"},
                           "HighAction": {"Notify": True, "EventAction": "BLOCK"}}}},
        [f"{ATO}.NotifyConfiguration.From: 'nobody' is not one email address (expected 'addr@domain' or "
         "'Name <addr@domain>')",
         f"{ATO}.NotifyConfiguration.BlockEmail.Subject: '' is too short: 0 characters, at least 1 required",
         f"{ATO}.NotifyConfiguration.SourceArn: required field missing",  # absent: after the fields written
         f"{ATO}.Actions.MediumAction.EventAction: 'MFA_IF_CONFIGURED' is less restrictive than "
         f"LowAction.EventAction 'MFA_REQUIRED'; {ORDER_RULE}"],
    ),
    "201 ranges, a bad entry and an unknown field": (
        {"RiskExceptionConfiguration": {"BlockedIPRangeList": ["10.0.0.1/8"] + [f"10.0.{i}.0/24" for i in range(200)],
                                        "Skipped": []}},
        ["RiskExceptionConfiguration.BlockedIPRangeList: 201 ranges, at most 200 allowed",
         "RiskExceptionConfiguration.BlockedIPRangeList[0]: '10.0.0.1/8' is not a valid CIDR (host bits set; the "
         "network is '10.0.0.0/8')",
         "RiskExceptionConfiguration.Skipped: unknown field (allowed here: BlockedIPRangeList, SkippedIPRangeList)"],
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_every_problem_of_a_section_is_listed_at_once_in_the_documents_order(case):
    doc, expected = CASES[case]
    assert problems(doc) == expected


def test_every_section_and_the_wrapper_at_once():
    doc = {"RiskConfiguration": {**CASES["an empty EventFilter and a missing Actions"][0],
                                 **CASES["the order and a non-boolean Notify"][0]},
           "UserPoolId": "us-east-1_X"}
    assert problems(doc) == [
        "UserPoolId: unknown field beside the RiskConfiguration wrapper (put every field inside it)",
        *CASES["an empty EventFilter and a missing Actions"][1],
        *CASES["the order and a non-boolean Notify"][1],
    ]


def test_valid_sections_still_pass_and_stored_documents_read_back():
    doc = {CC: {"EventFilter": ["SIGN_UP", "SIGN_IN"], "Actions": {"EventAction": "BLOCK"}},
           **actions({"Notify": False, "EventAction": "NO_ACTION"}, None, {"Notify": True, "EventAction": "BLOCK"})}
    cfg = rc.validate_document(doc)
    assert rc.RiskConfiguration.model_validate_json(json.dumps(cfg.to_document())) == cfg


# -- the same list from every command and the service -------------------------------------------------------

FILE_TEXT = """{
  "CompromisedCredentialsRiskConfiguration": {
    "EventFilter": ["SIGN_IN", "SIGN_IN", "NOPE"],
    "Actions": {"EventAction": "MFA_REQUIRED"}
  },
  "AccountTakeoverRiskConfiguration": {"Actions": {
    "LowAction": {"Notify": false, "EventAction": "BLOCK"},
    "MediumAction": {"Notify": "yes", "EventAction": "NO_ACTION"},
    "HighAction": {"Notify": true, "EventAction": "BLOCK"}
  }}
}
"""
FILE_PROBLEMS = [
    f"line 3: {CC}.EventFilter[1]: 'SIGN_IN' is repeated",
    f"line 3: {CC}.EventFilter[2]: 'NOPE' is not one of SIGN_IN, PASSWORD_CHANGE, SIGN_UP",
    f"line 4: {CC}.Actions.EventAction: 'MFA_REQUIRED' is not one of BLOCK, NO_ACTION",
    f"line 8: {ATO}.Actions.MediumAction.Notify: expected true or false, got a string 'yes'",
    f"line 8: {ATO}.Actions.MediumAction.EventAction: 'NO_ACTION' is less restrictive than LowAction.EventAction "
    f"'BLOCK'; {ORDER_RULE}",
]


@pytest.mark.parametrize("command", [("config", "validate"), ("config", "set"), ("whatif", "--config")])
def test_the_commands_list_every_problem_with_its_line_exit_2(tmp_path, store_path, monkeypatch, command):
    monkeypatch.delenv(rc.POOL_ENV, raising=False)
    path = tmp_path / "risk.json"
    path.write_text(FILE_TEXT)
    args = [*command, str(path)] + ([] if command == ("config", "validate") else ["--db", str(store_path)])
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert res.stdout == ""
    assert res.stderr == (f"error: {path}: invalid risk configuration (5 problems):\n"
                          + "".join(f"  {p}\n" for p in FILE_PROBLEMS))
    assert not store_path.exists() or store.connect(store_path, read_only=True).execute(
        "SELECT count(*) FROM risk_config_versions").fetchall() == [(0,)]


def test_set_risk_configuration_lists_every_problem(store_path):
    doc = json.loads(FILE_TEXT)
    with store.connect(store_path) as con:
        with pytest.raises(cognito.CognitoError) as info:
            cognito.set_risk_configuration(con, {"UserPoolId": "us-east-1_X", **doc})
        assert con.execute("SELECT count(*) FROM risk_config_versions").fetchall() == [(0,)]
    assert info.value.code == "InvalidParameterException"
    assert info.value.message == ("invalid risk configuration (5 problems):"
                                  + "".join(f"\n  {p.removeprefix(p.split(': ')[0] + ': ')}" for p in FILE_PROBLEMS))
