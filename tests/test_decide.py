"""risk.decide: every combination checked against the reference's table, written out here by hand.

The expectation below is built from plain strings and dicts transcribed from
COGNITO_REFERENCE.md ("Behaviour") and the decisions documented in
risk/decide.py; it never calls the code under test.
"""

from __future__ import annotations

import functools
import itertools
import json
from dataclasses import dataclass

import pytest

from risk import config as rc
from risk.credentials import CheckResult, CredentialsOutcome
from risk.decide import Decision, NotificationTemplate, Outcome, RiskDecision, decide, has_mfa_configured
from risk.exceptions import ExceptionResult

# -- the reference, transcribed ------------------------------------------------------------------------

#: (EventAction of the level, or None for no risk; user has MFA) -> what happens.
ACCOUNT_TAKEOVER_TABLE = {
    (None, True): "MfaChallenge",  # "users who have MFA enabled ... are always challenged, whatever the level"
    (None, False): "Allow",
    ("NO_ACTION", True): "MfaChallenge",
    ("NO_ACTION", False): "Allow",  # "NO_ACTION: allow"
    ("MFA_IF_CONFIGURED", True): "MfaChallenge",  # "challenge with MFA if the user has MFA set up"
    ("MFA_IF_CONFIGURED", False): "Allow",  # "else allow"
    ("MFA_REQUIRED", True): "MfaChallenge",  # "challenge with MFA if set up"
    ("MFA_REQUIRED", False): "Block",  # "else block"
    ("BLOCK", True): "Block",  # "BLOCK: block"
    ("BLOCK", False): "Block",
}
#: "Notify: true sends the user the template for the outcome"
TEMPLATE_FOR = {"Block": "BlockEmail", "MfaChallenge": "MfaEmail", "Allow": "NoActionEmail"}
MOST_RESTRICTIVE = {"Allow": 0, "MfaChallenge": 1, "Block": 2}

LEVELS = [None, "Low", "Medium", "High"]
ACTIONS = ["NO_ACTION", "MFA_IF_CONFIGURED", "MFA_REQUIRED", "BLOCK"]
MODES = ["OFF", "AUDIT", "ENFORCED"]
EXCEPTIONS = ["none", "skipped", "blocked"]
CC_RESULTS = [None, False, True]  # not checked / checked, not found / detected
CC_ACTIONS = ["BLOCK", "NO_ACTION"]
EVENT = "SignIn"
#: EventFilter that includes SignIn, and one that does not.
FILTERS = {True: ["SIGN_IN"], False: ["PASSWORD_CHANGE", "SIGN_UP"]}


@dataclass(frozen=True)
class Expected:
    evaluated: bool
    enforced: bool
    risk_decision: str | None
    risk_level: str | None
    event_action: str | None
    outcome: str
    mfa_challenge: bool
    blocked: bool
    override_block: bool
    cc_checked: bool
    cc_detected: bool
    reset_required: bool
    notification: str | None
    would_notify: str | None


def expected(level, action, notify, mode, mfa, exception, cc_result, cc_action, filter_match) -> Expected:
    if mode == "OFF":  # "no risk evaluation"; the pool still challenges a user's own MFA
        return Expected(False, False, None, None, None, "MfaChallenge" if mfa else "Allow", mfa, False, False, False,
                        False, False, None, None)
    enforced = mode == "ENFORCED"
    if exception == "blocked":  # "blocked, RiskDecision Block, no risk level; counted as OverrideBlock"
        outcome, decision, out_level, out_action, override = "Block", "Block", None, None, True
        cc_checked = cc_detected = cc_block = False
        template = None
    elif exception == "skipped":  # "no risk detection; the event gets no risk level"
        outcome = ACCOUNT_TAKEOVER_TABLE[(None, mfa)]
        decision, out_level, out_action, override = "NoRisk", None, None, False
        cc_checked = cc_detected = cc_block = False
        template = None
    else:
        out_level = level
        out_action = action if level is not None else None
        outcome = ACCOUNT_TAKEOVER_TABLE[(out_action, mfa)]
        cc_checked = cc_result is not None and filter_match
        cc_detected = cc_checked and cc_result is True
        cc_block = cc_detected and cc_action == "BLOCK"
        if cc_block and MOST_RESTRICTIVE["Block"] > MOST_RESTRICTIVE[outcome]:
            outcome = "Block"
        override = False
        # "AccountTakeover when the configured response was applied, Block when prevented, NoRisk otherwise"
        decision = "Block" if outcome == "Block" else ("AccountTakeover" if level is not None else "NoRisk")
        template = TEMPLATE_FOR[outcome] if (level is not None and notify) else None
    return Expected(
        evaluated=True,
        enforced=enforced,
        risk_decision=decision,
        risk_level=out_level,
        event_action=out_action,
        outcome=outcome,
        # "users who have MFA enabled for themselves are always challenged": not a risk action, so in AUDIT too
        mfa_challenge=outcome == "MfaChallenge" if enforced else mfa,
        blocked=enforced and outcome == "Block",
        override_block=override,
        cc_checked=cc_checked,
        cc_detected=cc_detected,
        reset_required=enforced and cc_block,
        notification=template if enforced else None,  # audit-only mode takes no automatic action
        would_notify=template,
    )


@functools.cache
def configuration(action: str, notify: bool, cc_action: str, filter_match: bool) -> rc.RiskConfiguration:
    level = {"Notify": notify, "EventAction": action}
    return rc.validate_document(
        {
            "UserPoolId": "pool",
            "CompromisedCredentialsRiskConfiguration": {
                "EventFilter": FILTERS[filter_match],
                "Actions": {"EventAction": cc_action},
            },
            "AccountTakeoverRiskConfiguration": {
                "Actions": {"LowAction": level, "MediumAction": level, "HighAction": level}
            },
        }
    )


def observed(d: Decision) -> Expected:
    def s(v):
        return None if v is None else str(v)

    return Expected(
        evaluated=d.evaluated,
        enforced=d.enforced,
        risk_decision=s(d.risk_decision),
        risk_level=s(d.risk_level),
        event_action=s(d.event_action),
        outcome=str(d.outcome),
        mfa_challenge=d.mfa_challenge,
        blocked=d.blocked,
        override_block=d.override_block,
        cc_checked=d.compromised_credentials_checked,
        cc_detected=d.compromised_credentials_detected,
        reset_required=d.reset_required,
        notification=s(d.notification),
        would_notify=s(d.would_notify),
    )


COMBINATIONS = list(
    itertools.product(LEVELS, ACTIONS, [True, False], MODES, [True, False], EXCEPTIONS, CC_RESULTS, CC_ACTIONS, [True, False])
)


def _id(c) -> str:
    level, action, notify, mode, mfa, exc, ccr, cca, fm = c
    return (
        f"{level or 'none'}-{action}-{'notify' if notify else 'quiet'}-{mode}-{'mfa' if mfa else 'nomfa'}-"
        f"exc:{exc}-cc:{ccr}/{cca}/{'match' if fm else 'nomatch'}"
    )


def test_enumeration_is_complete():
    assert len(COMBINATIONS) == 4 * 4 * 2 * 3 * 2 * 3 * 3 * 2 * 2 == 6912


@pytest.mark.parametrize("combo", COMBINATIONS, ids=[_id(c) for c in COMBINATIONS])
def test_every_combination(combo):
    level, action, notify, mode, mfa, exc, cc_result, cc_action, filter_match = combo
    d = decide(
        risk_level=level,
        exception=exc,
        compromised=cc_result,
        event_type=EVENT,
        configuration=configuration(action, notify, cc_action, filter_match),
        mode=mode,
        user_has_mfa=mfa,
    )
    assert observed(d) == expected(*combo)
    assert d.reasons  # always says why


# -- hand-picked cases that read like the reference ------------------------------------------------------

MIXED = rc.validate_document(
    {
        "AccountTakeoverRiskConfiguration": {
            "Actions": {
                "LowAction": {"Notify": False, "EventAction": "NO_ACTION"},
                "MediumAction": {"Notify": True, "EventAction": "MFA_IF_CONFIGURED"},
                "HighAction": {"Notify": True, "EventAction": "MFA_REQUIRED"},
            }
        },
        "CompromisedCredentialsRiskConfiguration": {"Actions": {"EventAction": "BLOCK"}},
    }
)


def run(**kw) -> Decision:
    args = dict(risk_level=None, exception="none", compromised=None, event_type="SignIn", configuration=MIXED,
                mode="ENFORCED", user_has_mfa=False)
    args.update(kw)
    return decide(**args)


def test_each_level_uses_its_own_action():
    assert run(risk_level="Low").outcome is Outcome.ALLOW
    assert run(risk_level="Medium").notification is NotificationTemplate.NO_ACTION_EMAIL
    assert run(risk_level="High").blocked  # MFA_REQUIRED without MFA
    d = run(risk_level="High", user_has_mfa=True)
    assert (d.mfa_challenge, d.notification, d.risk_decision) == (True, NotificationTemplate.MFA_EMAIL, RiskDecision.ACCOUNT_TAKEOVER)


def test_high_risk_without_mfa_is_blocked_with_block_email():
    d = run(risk_level="High")
    assert d.risk_decision is RiskDecision.BLOCK and d.risk_level is rc.RiskLevel.HIGH
    assert d.event_action is rc.AccountTakeoverEventAction.MFA_REQUIRED
    assert d.notification is NotificationTemplate.BLOCK_EMAIL
    assert any("MFA_REQUIRED and the user has no MFA" in r for r in d.reasons)


def test_audit_records_what_would_have_happened_and_sends_nothing():
    d = run(risk_level="High", mode="AUDIT")
    assert (d.blocked, d.mfa_challenge, d.notification) == (False, False, None)
    assert (d.outcome, d.would_block, d.would_notify) == (Outcome.BLOCK, True, NotificationTemplate.BLOCK_EMAIL)
    assert d.risk_decision is RiskDecision.BLOCK
    assert any("AUDIT" in r and "would have been blocked" in r for r in d.reasons)
    d = run(risk_level="High", mode="AUDIT", user_has_mfa=True)  # the user's own MFA is no risk action: it stays
    assert (d.blocked, d.mfa_challenge, d.notification, d.outcome) == (False, True, None, Outcome.MFA_CHALLENGE)


@pytest.mark.parametrize("event_type, checked", [
    ("SignIn", True), ("SignUp", True), ("PasswordChange", True), ("ForgotPassword", False), ("ResendCode", False),
])
def test_absent_event_filter_means_sign_in_password_change_sign_up(event_type, checked):
    d = run(compromised=True, event_type=event_type)
    assert d.compromised_credentials_checked is checked
    assert d.blocked is checked and d.reset_required is (checked and event_type != "SignUp")


@pytest.mark.parametrize("compromised", [None, True, False])
def test_an_event_type_outside_the_event_filter_says_so_whether_a_password_came_or_not(compromised):
    """The service checks no password for a type outside EventFilter and passed None: the reason then said "no
    password presented" although one was, while batch scoring named the filter."""
    d = run(compromised=compromised, event_type="ForgotPassword")
    assert "compromised credentials: not checked for ForgotPassword (EventFilter: SIGN_IN, PASSWORD_CHANGE, SIGN_UP)" \
        in d.reasons and not d.compromised_credentials_checked


def test_without_account_takeover_configuration_levels_are_no_action():
    cfg = rc.validate_document({})
    d = run(risk_level="High", configuration=cfg)
    assert (d.event_action, d.outcome, d.risk_decision, d.notification) == (
        rc.AccountTakeoverEventAction.NO_ACTION, Outcome.ALLOW, RiskDecision.ACCOUNT_TAKEOVER, None)
    # without a compromised-credentials configuration a detection is recorded, not acted on
    d = run(compromised=True, configuration=cfg)
    assert d.compromised_credentials_detected and not d.blocked
    assert d.compromised_credentials_action is rc.CompromisedCredentialsEventAction.NO_ACTION


def test_missing_level_entry_is_no_action_without_notify():
    cfg = rc.validate_document(
        {"AccountTakeoverRiskConfiguration": {"Actions": {"HighAction": {"Notify": True, "EventAction": "BLOCK"}}}}
    )
    d = run(risk_level="Low", configuration=cfg)
    assert (d.event_action, d.notify, d.notification) == (rc.AccountTakeoverEventAction.NO_ACTION, False, None)
    assert any("no LowAction configured" in r for r in d.reasons)


def test_results_of_the_credentials_module_are_accepted():
    found = CredentialsOutcome("SignIn", applies=True, detected=True, event_action="BLOCK", block=True)
    not_applicable = CredentialsOutcome("ForgotPassword", applies=False, detected=False, event_action="BLOCK", block=False)
    assert run(compromised=found).reset_required
    assert not run(compromised=not_applicable).compromised_credentials_checked
    assert run(compromised=CheckResult(True, 12, "pwned")).blocked
    assert not run(compromised=CheckResult(False, 0, "pwned")).blocked
    with pytest.raises(TypeError, match="compromised-credentials result"):
        run(compromised="yes")


def test_bad_enum_inputs_are_refused():
    with pytest.raises(ValueError):
        run(risk_level="Severe")
    with pytest.raises(ValueError):
        run(mode="ON")
    with pytest.raises(ValueError):
        run(event_type="Login")
    with pytest.raises(ValueError):
        run(exception="maybe")


def test_pure_same_inputs_same_output_and_configuration_untouched():
    before = MIXED.to_document()
    a, b = run(risk_level="Medium", user_has_mfa=True), run(risk_level="Medium", user_has_mfa=True)
    assert a == b and MIXED.to_document() == before


def test_to_dict_is_json_ready():
    d = run(risk_level="High", exception="none", mode="AUDIT").to_dict()
    text = json.loads(json.dumps(d))
    assert text["risk_decision"] == "Block" and text["mode"] == "AUDIT" and text["risk_level"] == "High"
    assert text["notification"] is None and text["would_notify"] == "BlockEmail"


def test_blocked_range_reason_and_override():
    d = run(exception=ExceptionResult.BLOCKED, risk_level="Low", compromised=True)
    assert d.override_block and d.blocked and d.risk_level is None and not d.compromised_credentials_detected
    assert "BlockedIPRangeList" in d.reasons[0]


@pytest.mark.parametrize(
    "settings, preferred, expected",
    [
        (["SOFTWARE_TOKEN_MFA"], None, True),
        (["SMS_MFA"], "SMS_MFA", True),
        ([], None, False),
        (None, None, False),
        ([], "SOFTWARE_TOKEN_MFA", False),  # a preferred method not among the settings is none, as in Cognito
        (None, "SOFTWARE_TOKEN_MFA", True),  # settings unknown: the preferred method tells
        (["NOPE"], None, False),
    ],
)
def test_has_mfa_configured(settings, preferred, expected):
    assert has_mfa_configured(settings, preferred) is expected


@pytest.mark.parametrize("event_type, response, reset", [
    ("SignIn", "Pass", True), ("SignIn", None, True), ("PasswordChange", "Pass", True),
    ("SignIn", "Fail", False),  # a wrong guess that is a common password is not the user's password
    ("PasswordChange", "Fail", False),
    ("SignUp", "Pass", False),  # blocked: no user was made, so there is none to reset
])
def test_a_compromised_password_resets_the_user_only_when_it_was_the_users(event_type, response, reset):
    d = run(compromised=True, event_type=event_type, event_response=response)
    assert (d.blocked, d.compromised_credentials_detected, d.reset_required) == (True, True, reset)
    assert any(("password reset required" in r) == reset for r in d.reasons if r.startswith("compromised"))
    assert not run(compromised=True, event_type=event_type, event_response=response, mode="AUDIT").reset_required
