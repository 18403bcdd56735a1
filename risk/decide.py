"""The decision: risk level + exceptions + compromised credentials + configuration + mode + MFA -> outcome.

:func:`decide` is pure (no I/O, no store, no clock). It implements the
reference's table (COGNITO_REFERENCE.md, "Behaviour") as follows; quoted
phrases are the reference's.

Mode
  ``OFF``: "no risk evaluation" -- nothing is evaluated, not even the IP-range
  exceptions: RiskDecision and level absent (``None``), no block, no
  notification; the outcome is the user's own MFA challenge when they have MFA,
  else Allow. ``AUDIT``: "every event is evaluated ... but no action is taken
  (the decision is recorded as what would have happened)" -- every field below
  is computed exactly as in ENFORCED, but ``enforced`` is False, ``blocked``
  and ``reset_required`` are False, and ``notification`` is None
  (``would_notify`` keeps the template): Cognito's audit-only mode "gathers
  metrics on detected risks, but doesn't take automatic action", and a
  notification is one of the automatic responses. ``ENFORCED``: "actions apply".

  A user's own MFA is not a risk response: the pool challenges "users who have
  MFA enabled for themselves" in every mode, so ``mfa_challenge`` is True for
  them in OFF and AUDIT too (an application asking riskgate what to do must not
  stop challenging them while the pool is audited); only an enforced block
  stops them earlier.

IP-range exceptions (checked first)
  Blocked range: "the request is blocked, RiskDecision Block, no risk level;
  counted as OverrideBlock" -- nothing else is evaluated (no compromised
  credentials check, no notification: there is no level whose Notify could
  apply). Skipped range: "no risk detection; the event gets no risk level"
  -- RiskDecision NoRisk, compromised credentials are not checked either (they
  are a risk detection); a user with MFA is still challenged (below).

Account takeover, for the level given (``None`` = no risk)
  The level's action (an absent AccountTakeoverRiskConfiguration or absent
  level entry acts as NO_ACTION without Notify):

  ================== ==================== ===================
  EventAction        user has MFA         user without MFA
  ================== ==================== ===================
  (no risk level)    MFA challenge        allow
  NO_ACTION          MFA challenge        allow
  MFA_IF_CONFIGURED  MFA challenge        allow
  MFA_REQUIRED       MFA challenge        block
  BLOCK              block                block
  ================== ==================== ===================

  "Users who have MFA enabled for themselves are always challenged, whatever
  the level" -- implemented as stated, including at no risk and in a skipped
  range (Cognito's guide: "those users will always receive the second factor
  challenge during authentication regardless of how you configured adaptive
  authentication"); only a block stops them earlier.

Compromised credentials
  A result counts only for an event type in the EventFilter (absent = SignIn,
  PasswordChange, SignUp; ForgotPassword and ResendCode never). ``None`` means
  not checked (no password presented). Detected + ``BLOCK``: the request is
  blocked and, when enforced, the user must reset the password
  (``reset_required``, UserStatus RESET_REQUIRED) -- when the password was the
  user's: not for a failed attempt (``event_response`` ``Fail``: a wrong
  password that happens to be a common one says nothing of the user's own, and
  resetting would let anyone lock any account out by guessing ``123456``) nor
  for a SignUp (blocked, so there is no user to reset). Detected + ``NO_ACTION``:
  only CompromisedCredentialsDetected is recorded. Without a
  CompromisedCredentialsRiskConfiguration a detection is recorded with
  NO_ACTION. The outcome is the more restrictive of account takeover and
  compromised credentials (block > MFA challenge > allow).

RiskDecision ("AccountTakeover when the configured response was applied,
Block when the attempt was prevented, NoRisk otherwise")
  * ``Block``: the outcome is a block (blocked range, BLOCK, MFA_REQUIRED for a
    user without MFA, compromised credentials with BLOCK).
  * ``AccountTakeover``: not blocked and a risk level (Low / Medium / High) was
    assessed, so that level's configured response was applied -- whether it is
    an MFA challenge, a notification, or NO_ACTION's allow.
  * ``NoRisk``: not blocked and no risk level (no risk, or a skipped range) --
    also when a user with their own MFA is challenged, since no risk response
    caused it.

Notification
  When the assessed level's ``Notify`` is true, the template for the outcome:
  BlockEmail (blocked), MfaEmail (challenged), NoActionEmail (allowed). Never
  without a level (no risk, skipped, blocked range). Sent only in ENFORCED.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

# whether a user has MFA of their own (``user_has_mfa``) is one rule, kept with the users table it reads:
# ingest.users.has_mfa_configured (its truth table), in SQL ingest.users.has_mfa_configured_sql
from ingest.users import MFA_KINDS, has_mfa_configured  # noqa: F401 (MFA_KINDS: re-exported)
from risk.config import (
    AccountTakeoverEventAction,
    AdvancedSecurityMode,
    CompromisedCredentialsEventAction,
    EventFilterType,
    EventType,
    RiskConfiguration,
    RiskLevel,
    EVENT_FILTER_EVENT_TYPES,
)
from risk.exceptions import ExceptionResult

__all__ = [
    "Decision",
    "NotificationTemplate",
    "Outcome",
    "RiskDecision",
    "decide",
    "has_mfa_configured",
]


class RiskDecision(StrEnum):
    NO_RISK = "NoRisk"
    ACCOUNT_TAKEOVER = "AccountTakeover"
    BLOCK = "Block"


class Outcome(StrEnum):
    """What happens to the request (or, in AUDIT, would have happened)."""

    ALLOW = "Allow"
    MFA_CHALLENGE = "MfaChallenge"
    BLOCK = "Block"


class NotificationTemplate(StrEnum):
    BLOCK_EMAIL = "BlockEmail"
    MFA_EMAIL = "MfaEmail"
    NO_ACTION_EMAIL = "NoActionEmail"


_TEMPLATE_FOR_OUTCOME = {
    Outcome.BLOCK: NotificationTemplate.BLOCK_EMAIL,
    Outcome.MFA_CHALLENGE: NotificationTemplate.MFA_EMAIL,
    Outcome.ALLOW: NotificationTemplate.NO_ACTION_EMAIL,
}
_SEVERITY = {Outcome.ALLOW: 0, Outcome.MFA_CHALLENGE: 1, Outcome.BLOCK: 2}
_ALL_FILTERS = tuple(EventFilterType)


@dataclass(frozen=True)
class Decision:
    """The outcome of one event. In AUDIT the *_would fields and ``outcome`` say what would have happened."""

    mode: AdvancedSecurityMode
    evaluated: bool  # False: mode OFF
    enforced: bool  # True only in ENFORCED
    risk_decision: RiskDecision | None  # None: not evaluated (mode OFF)
    risk_level: RiskLevel | None  # absent when no risk, skipped or blocked range
    event_action: AccountTakeoverEventAction | None  # the level's action (None without a level)
    notify: bool  # the level's Notify
    outcome: Outcome  # what happens (ENFORCED) / would happen (AUDIT)
    mfa_challenge: bool  # an MFA challenge is issued
    blocked: bool  # the request is blocked
    override_block: bool  # blocked by BlockedIPRangeList (OverrideBlock), also in AUDIT
    exception: ExceptionResult
    compromised_credentials_checked: bool
    compromised_credentials_detected: bool
    compromised_credentials_action: CompromisedCredentialsEventAction | None
    reset_required: bool  # compromised + BLOCK, enforced
    notification: NotificationTemplate | None  # the email that goes out
    would_notify: NotificationTemplate | None  # the email due by the configuration (sent only when enforced)
    reasons: tuple[str, ...]

    @property
    def would_block(self) -> bool:
        return self.outcome is Outcome.BLOCK

    @property
    def would_challenge(self) -> bool:
        return self.outcome is Outcome.MFA_CHALLENGE

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reasons"] = list(self.reasons)
        return {k: (str(v) if isinstance(v, StrEnum) else v) for k, v in out.items()}


def _detected(result: Any) -> bool | None:
    """None (not checked), or whether compromised credentials were detected.

    Accepts a bool, None, or an object with ``detected`` (and optional
    ``applies``) or ``compromised`` -- e.g. ``risk.credentials.CredentialsOutcome``
    or ``CheckResult``.
    """
    if result is None or isinstance(result, bool):
        return result
    if getattr(result, "applies", True) is False:
        return None
    for name in ("detected", "compromised"):
        value = getattr(result, name, None)
        if isinstance(value, bool):
            return value
    raise TypeError(f"a compromised-credentials result must be None, a bool, or have .detected; got {result!r}")


#: The decision reason of a user challenged by MFA of their own (also stored with each assessment).
OWN_MFA_REASON = "the user has MFA of their own: always challenged"
#: How the decision reason of a sign-in blocked for compromised credentials begins (whatever its level).
CREDENTIALS_BLOCK_REASON = f"compromised credentials detected: {CompromisedCredentialsEventAction.BLOCK}"


def _ato_outcome(action: AccountTakeoverEventAction | None, has_mfa: bool) -> Outcome:
    if action is AccountTakeoverEventAction.BLOCK:
        return Outcome.BLOCK
    if action is AccountTakeoverEventAction.MFA_REQUIRED:
        return Outcome.MFA_CHALLENGE if has_mfa else Outcome.BLOCK
    # NO_ACTION, MFA_IF_CONFIGURED, or no risk level: the user's own MFA decides
    return Outcome.MFA_CHALLENGE if has_mfa else Outcome.ALLOW


def decide(
    *,
    risk_level: RiskLevel | str | None,
    exception: ExceptionResult | str | None,
    compromised: Any,
    event_type: EventType | str,
    configuration: RiskConfiguration,
    mode: AdvancedSecurityMode | str,
    user_has_mfa: bool,
    event_response: str | None = None,
) -> Decision:
    """Apply the configuration to one event (see the module docstring for the exact table). ``event_response``:
    ``Pass`` / ``Fail`` (None: not known, taken as ``Pass``)."""
    mode = AdvancedSecurityMode(mode)
    level = RiskLevel(risk_level) if risk_level is not None else None
    exc = ExceptionResult(exception) if exception is not None else ExceptionResult.NONE
    event_type = EventType(event_type)
    has_mfa = bool(user_has_mfa)
    reasons: list[str] = []

    own_mfa = OWN_MFA_REASON
    if mode is AdvancedSecurityMode.OFF:
        return Decision(
            mode=mode, evaluated=False, enforced=False, risk_decision=None, risk_level=None, event_action=None,
            notify=False, outcome=Outcome.MFA_CHALLENGE if has_mfa else Outcome.ALLOW, mfa_challenge=has_mfa,
            blocked=False, override_block=False, exception=exc, compromised_credentials_checked=False,
            compromised_credentials_detected=False, compromised_credentials_action=None, reset_required=False,
            notification=None, would_notify=None,
            reasons=("AdvancedSecurityMode OFF: no risk evaluation", *((own_mfa,) if has_mfa else ())),
        )

    enforced = mode is AdvancedSecurityMode.ENFORCED
    event_action: AccountTakeoverEventAction | None = None
    notify = False
    cc_checked = cc_detected = cc_block = cc_reset = False
    cc_action: CompromisedCredentialsEventAction | None = None
    override_block = False

    if exc is ExceptionResult.BLOCKED:
        outcome = Outcome.BLOCK
        override_block = True
        level = None
        reasons.append("IP address in BlockedIPRangeList: blocked (OverrideBlock); no risk evaluation")
    elif exc is ExceptionResult.SKIPPED:
        level = None
        outcome = Outcome.MFA_CHALLENGE if has_mfa else Outcome.ALLOW
        reasons.append("IP address in SkippedIPRangeList: no risk detection, no risk level")
        if has_mfa:
            reasons.append(own_mfa)
    else:
        # account takeover
        if level is None:
            reasons.append("no risk")
        else:
            setting = configuration.action_for(level)
            if setting is None:
                event_action = AccountTakeoverEventAction.NO_ACTION
                what = "no AccountTakeoverRiskConfiguration" if configuration.AccountTakeoverRiskConfiguration is None else f"no {level}Action configured"
                reasons.append(f"risk level {level}: {what}, so NO_ACTION")
            else:
                event_action, notify = setting.EventAction, setting.Notify
                reasons.append(f"risk level {level}: {level}Action is {event_action}" + (" with Notify" if notify else ""))
        outcome = _ato_outcome(event_action, has_mfa)
        if event_action is AccountTakeoverEventAction.MFA_REQUIRED and not has_mfa:
            reasons.append("MFA_REQUIRED and the user has no MFA: blocked")
        elif event_action is AccountTakeoverEventAction.BLOCK:
            reasons.append("BLOCK: blocked")
        elif has_mfa:
            reasons.append(own_mfa)
        elif event_action is AccountTakeoverEventAction.MFA_IF_CONFIGURED:
            reasons.append("MFA_IF_CONFIGURED and the user has no MFA: allowed")

        # compromised credentials
        detected = _detected(compromised)
        ccc = configuration.CompromisedCredentialsRiskConfiguration
        filters = tuple(ccc.EventFilter) if ccc is not None and ccc.EventFilter is not None else _ALL_FILTERS
        in_filter = event_type in {EVENT_FILTER_EVENT_TYPES[f] for f in filters}
        if not in_filter:  # first: whether a password came or not, the filter alone says why it was not checked
            reasons.append(
                f"compromised credentials: not checked for {event_type} (EventFilter: {', '.join(filters)})"
            )
        elif detected is None:
            reasons.append("compromised credentials: not checked (no password presented)")
        else:
            cc_checked = True
            cc_action = ccc.Actions.EventAction if ccc is not None else CompromisedCredentialsEventAction.NO_ACTION
            if detected:
                cc_detected = True
                cc_block = cc_action is CompromisedCredentialsEventAction.BLOCK
                # the password is the user's only when it was accepted, and there is a user: not after a failed
                # attempt (anyone could lock anyone out by guessing a common password), nor for a sign-up
                cc_reset = cc_block and event_response != "Fail" and event_type is not EventType.SIGN_UP
                if not cc_block:
                    what = "recorded only"
                elif cc_reset:
                    what = "blocked, password reset required"
                elif event_type is EventType.SIGN_UP:
                    what = "blocked; the sign-up made no user, so there is no password to reset"
                else:
                    what = "blocked; the password failed, so it is not the user's: no reset"
                reasons.append(f"compromised credentials detected: {cc_action} ({what})")
            else:
                reasons.append("compromised credentials: checked, not detected")
        if cc_block and _SEVERITY[Outcome.BLOCK] > _SEVERITY[outcome]:
            outcome = Outcome.BLOCK

    if outcome is Outcome.BLOCK:
        risk_decision = RiskDecision.BLOCK
    elif level is not None:
        risk_decision = RiskDecision.ACCOUNT_TAKEOVER
    else:
        risk_decision = RiskDecision.NO_RISK

    would_notify = _TEMPLATE_FOR_OUTCOME[outcome] if (level is not None and notify) else None
    if not enforced:
        text = {Outcome.BLOCK: "blocked", Outcome.MFA_CHALLENGE: "challenged with MFA", Outcome.ALLOW: "allowed"}
        reasons.append(
            f"AdvancedSecurityMode AUDIT: recorded only; would have been {text[outcome]}"
            + (f" and sent {would_notify}" if would_notify else "")
        )
    elif would_notify:
        reasons.append(f"Notify: {would_notify}")

    return Decision(
        mode=mode,
        evaluated=True,
        enforced=enforced,
        risk_decision=risk_decision,
        risk_level=level,
        event_action=event_action,
        notify=notify,
        outcome=outcome,
        # the user's own MFA is the pool's, not a risk response: challenged whatever the mode unless blocked
        mfa_challenge=outcome is Outcome.MFA_CHALLENGE if enforced else has_mfa,
        blocked=enforced and outcome is Outcome.BLOCK,
        override_block=override_block,
        exception=exc,
        compromised_credentials_checked=cc_checked,
        compromised_credentials_detected=cc_detected,
        compromised_credentials_action=cc_action,
        reset_required=enforced and cc_reset,
        notification=would_notify if enforced else None,
        would_notify=would_notify,
        reasons=tuple(reasons),
    )
