"""Risk configuration with a Cognito user pool's semantics (COGNITO_REFERENCE.md, RiskConfigurationType).

A document uses the API's PascalCase names verbatim, in JSON or YAML, so a file
written for ``aws cognito-idp set-risk-configuration --cli-input-json`` loads
unchanged, and so does what ``describe-risk-configuration`` prints (the
``{"RiskConfiguration": {...}}`` wrapper is accepted; ``LastModifiedDate`` is
output-only and ignored on input).

Validation is stricter than the API's and says where: every problem names its
field path, the offending value and, when read from a file, the line. All
problems of a document are reported together as one
:class:`RiskConfigurationError` (a ``ConfigurationError``); nothing is stored
unless the whole document is valid. Choices made where Cognito is silent or
lax:

* A CIDR must have a prefix length and no host bits set (``10.0.0.1/24`` is
  refused with the network it probably meant, ``10.0.0.0/24``); a bare address
  is refused with the ``/32`` or ``/128`` form to write instead.
* ``EventFilter`` may be absent (all three events) but not empty or repeating.
* A higher risk level may not get a less restrictive action than a lower one
  (NO_ACTION < MFA_IF_CONFIGURED < MFA_REQUIRED < BLOCK); an absent level
  counts as NO_ACTION without notification.
* ``Notify`` must be a JSON boolean, ids and texts must be strings (no
  coercion from numbers or ``"yes"``).
* ``From`` / ``ReplyTo``, when not empty, must contain an address
  (``"Name <addr@example.com>"`` is fine); ``SourceArn`` must match the API's
  ARN pattern.

Storage: every change (set, reset, mode) is a new row of ``risk_config_versions``
with a store-wide monotonic version number and its time; nothing is ever
updated or deleted, so ``history`` is complete. :func:`resolve` returns what
applies to a (pool, client) and the version of that document; the version is
0 for the shipped defaults when nothing was ever set.

Precedence (as Cognito's): a client-level document replaces the pool-level one
for that client; clients without one use the pool's; a pool without one uses
the defaults (``risk/data/default_risk_configuration.json``). Setting a
document with only UserPoolId (and nothing else) resets the pool to the
defaults; with UserPoolId + ClientId and nothing else the client goes back to
inheriting from the pool. A document's absent section means that feature is
not configured: no account-takeover actions (every level NO_ACTION, no
notification), compromised credentials recorded but not acted on (NO_ACTION),
no IP-range exceptions. The defaults are not merged into a partial document.

Which pool a command means: ``--user-pool-id``, else the document's
UserPoolId, else ``$RISKGATE_USER_POOL_ID``, else the only pool the store knows
(from its configuration versions or its events' UserPoolId), else ``default`` when the store knows none (several known
pools and no choice is an error listing them). A ``--user-pool-id`` or
``--client-id`` that contradicts the document is an error, not an override.

The AdvancedSecurityMode of a pool defaults to AUDIT (the reference's
recommended first step: evaluate and record, act on nothing).
"""

from __future__ import annotations

import email.utils
import functools
import ipaddress
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import duckdb
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from ingest.documents import (
    RepeatedKeyError,
    StrictYamlLoader,
    load_json,
    load_yaml,
    repeated_key,
    strict_json_pairs,
    yaml_refusal,
)
from ingest.errors import ConfigurationError
from ingest.schema import MAX_USER_POOL_ID, user_pool_id_problem
from ingest.store import Migration, has_table

# -- Cognito enumerations ------------------------------------------------------


class RiskLevel(StrEnum):
    LOW = "Low"
    MEDIUM = "Medium"
    HIGH = "High"


class EventType(StrEnum):
    SIGN_IN = "SignIn"
    SIGN_UP = "SignUp"
    FORGOT_PASSWORD = "ForgotPassword"
    PASSWORD_CHANGE = "PasswordChange"
    RESEND_CODE = "ResendCode"


class AccountTakeoverEventAction(StrEnum):
    BLOCK = "BLOCK"
    MFA_IF_CONFIGURED = "MFA_IF_CONFIGURED"
    MFA_REQUIRED = "MFA_REQUIRED"
    NO_ACTION = "NO_ACTION"


class CompromisedCredentialsEventAction(StrEnum):
    BLOCK = "BLOCK"
    NO_ACTION = "NO_ACTION"


class EventFilterType(StrEnum):
    SIGN_IN = "SIGN_IN"
    PASSWORD_CHANGE = "PASSWORD_CHANGE"
    SIGN_UP = "SIGN_UP"


class AdvancedSecurityMode(StrEnum):
    OFF = "OFF"
    AUDIT = "AUDIT"
    ENFORCED = "ENFORCED"


#: The event type each EventFilter value stands for.
EVENT_FILTER_EVENT_TYPES: dict[EventFilterType, EventType] = {
    EventFilterType.SIGN_IN: EventType.SIGN_IN,
    EventFilterType.PASSWORD_CHANGE: EventType.PASSWORD_CHANGE,
    EventFilterType.SIGN_UP: EventType.SIGN_UP,
}

#: Restrictiveness of account-takeover actions (the console's rule).
ACTION_ORDER: dict[AccountTakeoverEventAction, int] = {
    AccountTakeoverEventAction.NO_ACTION: 0,
    AccountTakeoverEventAction.MFA_IF_CONFIGURED: 1,
    AccountTakeoverEventAction.MFA_REQUIRED: 2,
    AccountTakeoverEventAction.BLOCK: 3,
}
LEVEL_FIELDS: dict[RiskLevel, str] = {
    RiskLevel.LOW: "LowAction",
    RiskLevel.MEDIUM: "MediumAction",
    RiskLevel.HIGH: "HighAction",
}

#: Placeholders Cognito fills in notification templates.
TEMPLATE_PLACEHOLDERS = (
    "{username}",
    "{ip-address}",
    "{city}",
    "{country}",
    "{login-time}",
    "{device-name}",
    "{one-click-link-valid}",
    "{one-click-link-invalid}",
    "{event-id}",
    "{feedback-token}",
)

MAX_IP_RANGES = 200
DEFAULT_MODE = AdvancedSecurityMode.AUDIT
DEFAULT_POOL_ID = "default"
POOL_ENV = "RISKGATE_USER_POOL_ID"
#: Keys of the document that are output-only and ignored on input.
OUTPUT_ONLY_KEYS = ("LastModifiedDate",)

_CLIENT_ID_RE = re.compile(r"[\w+]+", re.ASCII)
_ARN_RE = re.compile(
    r"arn:[\w+=/,.@-]+:[\w+=/,.@-]+:([\w+=/,.@-]*)?:[0-9]+:[\w+=/,.@-]+(:[\w+=/,.@-]+)?(:[\w+=/,.@-]+)?",
    re.ASCII,
)
_PLACEHOLDER_RE = re.compile(r"\{[a-z][a-z-]*\}")


# -- field checks (each raises a PydanticCustomError with our own message) ------


def _custom(message: str) -> PydanticCustomError:
    return PydanticCustomError("riskgate", "{message}", {"message": message})


def check_cidr(value: str) -> str:
    """A CIDR (IPv4 or IPv6) with a prefix length and no host bits; the reason when not."""
    text = value.strip()
    if not text:
        raise _custom(f"{value!r} is not a valid CIDR (empty)")
    if text != value:
        raise _custom(f"{value!r} is not a valid CIDR (surrounded by spaces)")
    addr_text, sep, prefix_text = text.partition("/")
    if "%" in addr_text:  # ip_address() accepts an IPv6 zone ("fe80::%eth0"): no place in a range of addresses
        raise _custom(f"{value!r} is not a valid CIDR (an IPv6 zone id '%…' is not part of an address range)")
    try:
        addr = ipaddress.ip_address(addr_text)
    except ValueError:
        raise _custom(f"{value!r} is not a valid CIDR ({addr_text!r} is not an IPv4 or IPv6 address)") from None
    if not sep:
        raise _custom(f"{value!r} is not a valid CIDR (no prefix length; write '{addr}/{addr.max_prefixlen}')")
    if not prefix_text.isdigit() or not prefix_text.isascii():
        raise _custom(f"{value!r} is not a valid CIDR (prefix length {prefix_text!r} is not a number)")
    prefix = int(prefix_text)
    if prefix > addr.max_prefixlen:
        raise _custom(f"{value!r} is not a valid CIDR (prefix length {prefix} > {addr.max_prefixlen})")
    net = ipaddress.ip_network(f"{addr}/{prefix}", strict=False)
    if net.network_address != addr:
        raise _custom(f"{value!r} is not a valid CIDR (host bits set; the network is '{net}')")
    return value


def _check_client_id(value: str) -> str:
    if not _CLIENT_ID_RE.fullmatch(value):
        raise _custom(f"{value!r} must match [\\w+]+ (letters, digits, '_' and '+')")
    return value


def _check_arn(value: str) -> str:
    if not _ARN_RE.fullmatch(value):
        raise _custom(f"{value!r} is not an ARN (expected arn:partition:service:region:account-id:resource)")
    return value


#: Line breaks and control characters (C0, DEL, C1, U+2028/9): refused in addresses here, replaced in mail text
#: by ``risk.notify``.
CONTROL_CHARS_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u0085]+")


def address_problem(value: str) -> str | None:
    """Why ``value`` is not one mail address a message can carry ('addr@domain' or 'Name <addr@domain>'), or None.

    The one rule for the configuration's From / ReplyTo and for the sender (``risk.notify.single_address``): a
    document that validates can be sent from.
    """
    if CONTROL_CHARS_RE.search(value):
        return "contains a line break or control character"
    pairs = email.utils.getaddresses([value])
    addr = pairs[0][1] if len(pairs) == 1 else ""
    local, at, domain = addr.rpartition("@")
    if len(pairs) != 1 or not at or not local or not domain or any(c.isspace() for c in addr):
        return "is not one email address (expected 'addr@domain' or 'Name <addr@domain>')"
    if not domain.isascii():  # sent in its ASCII form (risk.notify.wire_address): it must have one
        try:
            domain.encode("idna")
        except UnicodeError:
            return "has a domain that is not a valid internationalised domain name"
    return None


def _check_address(value: str) -> str:
    if value == "":
        return value
    problem = address_problem(value)
    if problem:
        raise _custom(f"{value!r} {problem}")
    return value


def _check_pool_id(value: str) -> str:
    problem = user_pool_id_problem(value)
    if problem:
        raise _custom(f"{_preview(value)} {problem}")
    return value


UserPoolIdStr = Annotated[StrictStr, AfterValidator(_check_pool_id)]
ClientIdStr = Annotated[StrictStr, Field(min_length=1, max_length=128), AfterValidator(_check_client_id)]
Cidr = Annotated[StrictStr, AfterValidator(check_cidr)]
SubjectStr = Annotated[StrictStr, Field(min_length=1, max_length=140)]
BodyStr = Annotated[StrictStr, Field(min_length=6, max_length=20000)]
AddressStr = Annotated[StrictStr, Field(max_length=131072), AfterValidator(_check_address)]
ArnStr = Annotated[StrictStr, Field(min_length=20, max_length=2048), AfterValidator(_check_arn)]


# -- the document ----------------------------------------------------------------


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NotifyEmailType(_Shape):
    Subject: SubjectStr
    HtmlBody: BodyStr | None = None
    TextBody: BodyStr | None = None


class NotifyConfigurationType(_Shape):
    From: AddressStr | None = None
    ReplyTo: AddressStr | None = None
    SourceArn: ArnStr
    BlockEmail: NotifyEmailType | None = None
    NoActionEmail: NotifyEmailType | None = None
    MfaEmail: NotifyEmailType | None = None


def _member(enum: type[StrEnum], value: Any) -> Any:
    """``value`` as a member of ``enum`` when it is one of its values (as validation takes it), else None."""
    if not isinstance(value, str):
        return None
    try:
        return enum(value)
    except ValueError:
        return None


def _with_problems(cls: type[BaseModel], data: Any, handler, problems: list[InitErrorDetails]):
    """Validate ``data`` with ``handler``; with ``problems`` (found on the input by a wrap validator), raise them
    together with the ones validation finds, in one ValidationError."""
    if not problems:
        return handler(data)
    try:
        handler(data)
    except ValidationError as exc:
        problems = _reraise_details(exc) + problems
    problems.sort(key=lambda p: _document_order(data, p["loc"]))
    raise ValidationError.from_exception_data(cls.__name__, problems)


def _document_order(data: Any, loc: Sequence[Any]) -> tuple[int, ...]:
    """Where ``loc`` is in ``data`` as read (keys in the order written, items by index; an absent key after the
    present ones): problems are listed in the order of the document."""
    out = []
    for part in loc:
        if isinstance(data, Mapping):
            keys = list(data)
            out.append(keys.index(part) if part in keys else len(keys))
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int):
            out.append(part)
            data = data[part] if 0 <= part < len(data) else None
        else:
            out.append(0)
            data = None
    return tuple(out)


class AccountTakeoverActionType(_Shape):
    Notify: StrictBool
    EventAction: AccountTakeoverEventAction


class AccountTakeoverActionsType(_Shape):
    LowAction: AccountTakeoverActionType | None = None
    MediumAction: AccountTakeoverActionType | None = None
    HighAction: AccountTakeoverActionType | None = None

    def for_level(self, level: RiskLevel) -> AccountTakeoverActionType | None:
        return getattr(self, LEVEL_FIELDS[RiskLevel(level)])

    def notifying(self) -> list[str]:
        """The levels' fields (``LowAction``, ...) whose Notify is true, low to high."""
        return [name for name in LEVEL_FIELDS.values() if (a := getattr(self, name)) and a.Notify]

    @model_validator(mode="wrap")
    @classmethod
    def _monotonic(cls, data: Any, handler):
        """A higher level no less restrictive than a lower one; checked on the input, so that the order is
        reported together with the levels' own problems (a non-boolean Notify, say), not only once they are fixed.
        A level whose EventAction is itself wrong (reported as such) is left out of the comparison: the nearest
        lower level with a valid action is compared instead."""
        if isinstance(data, cls) or not isinstance(data, Mapping):
            return handler(data)
        problems = []
        lower: tuple[str, AccountTakeoverEventAction] | None = None  # the nearest lower level with a known action
        for name in LEVEL_FIELDS.values():
            level = data.get(name)
            if level is None:
                action, present = AccountTakeoverEventAction.NO_ACTION, False
            elif isinstance(level, Mapping) and (found := _member(AccountTakeoverEventAction, level.get("EventAction"))):
                action, present = found, True
            else:  # not an object, or no valid EventAction: its own problem, not an order to judge
                continue
            if lower is not None and ACTION_ORDER[action] < ACTION_ORDER[lower[1]]:
                what = f"'{action}'" if present else "absent (NO_ACTION)"
                problems.append(
                    InitErrorDetails(
                        type=_custom(
                            f"{what} is less restrictive than {lower[0]}.EventAction '{lower[1]}'; a higher risk "
                            "level may not get a less restrictive action "
                            "(NO_ACTION < MFA_IF_CONFIGURED < MFA_REQUIRED < BLOCK)"
                        ),
                        loc=(name, "EventAction") if present else (name,),
                        input=str(action) if present else None,
                    )
                )
            lower = (name, action)
        return _with_problems(cls, data, handler, problems)


class AccountTakeoverRiskConfigurationType(_Shape):
    NotifyConfiguration: NotifyConfigurationType | None = None
    Actions: AccountTakeoverActionsType


class CompromisedCredentialsActionsType(_Shape):
    EventAction: CompromisedCredentialsEventAction


class CompromisedCredentialsRiskConfigurationType(_Shape):
    EventFilter: list[EventFilterType] | None = None
    Actions: CompromisedCredentialsActionsType

    @model_validator(mode="wrap")
    @classmethod
    def _filter(cls, data: Any, handler):
        """EventFilter not empty and not repeating; checked on the input, so that these are reported together
        with the section's other problems (an invalid EventAction, an unknown filter value). A value that is not
        a filter at all is reported as such, never also as repeated."""
        if isinstance(data, cls) or not isinstance(data, Mapping):
            return handler(data)
        values = data.get("EventFilter")
        problems = []
        if isinstance(values, list) and not values:
            problems.append(
                InitErrorDetails(
                    type=_custom("empty; leave EventFilter out to check all events (SIGN_IN, PASSWORD_CHANGE, SIGN_UP)"),
                    loc=("EventFilter",),
                    input=[],
                )
            )
        elif isinstance(values, list):
            seen: set = set()
            for i, value in enumerate(values):
                member = _member(EventFilterType, value)
                if member is None:
                    continue
                if member in seen:
                    problems.append(
                        InitErrorDetails(type=_custom(f"'{member}' is repeated"), loc=("EventFilter", i), input=str(member))
                    )
                seen.add(member)
        return _with_problems(cls, data, handler, problems)

    def event_types(self) -> frozenset[EventType]:
        """The event types checked for compromised credentials (absent filter = all three)."""
        values = self.EventFilter if self.EventFilter is not None else list(EventFilterType)
        return frozenset(EVENT_FILTER_EVENT_TYPES[v] for v in values)


class RiskExceptionConfigurationType(_Shape):
    BlockedIPRangeList: list[Cidr] | None = None
    SkippedIPRangeList: list[Cidr] | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _at_most_200(cls, data: Any, handler):
        """Count problems are reported together with the bad entries (pydantic would stop at the count)."""
        too_many = []
        if isinstance(data, Mapping):
            for name in ("BlockedIPRangeList", "SkippedIPRangeList"):
                value = data.get(name)
                if isinstance(value, list) and len(value) > MAX_IP_RANGES:
                    too_many.append(
                        InitErrorDetails(
                            type=_custom(f"{len(value)} ranges, at most {MAX_IP_RANGES} allowed"),
                            loc=(name,),
                            input=f"<list of {len(value)}>",
                        )
                    )
        return _with_problems(cls, data, handler, too_many)


class RiskConfiguration(_Shape):
    """RiskConfigurationType, without the output-only LastModifiedDate."""

    UserPoolId: UserPoolIdStr | None = None
    ClientId: ClientIdStr | None = None
    CompromisedCredentialsRiskConfiguration: CompromisedCredentialsRiskConfigurationType | None = None
    AccountTakeoverRiskConfiguration: AccountTakeoverRiskConfigurationType | None = None
    RiskExceptionConfiguration: RiskExceptionConfigurationType | None = None

    @property
    def is_reset(self) -> bool:
        """Only ids and nothing else: Cognito's way of resetting (pool) or un-setting (client)."""
        return (
            self.CompromisedCredentialsRiskConfiguration is None
            and self.AccountTakeoverRiskConfiguration is None
            and self.RiskExceptionConfiguration is None
        )

    def action_for(self, level: RiskLevel) -> AccountTakeoverActionType | None:
        ato = self.AccountTakeoverRiskConfiguration
        return ato.Actions.for_level(level) if ato else None

    def to_document(self) -> dict:
        """The Cognito-shaped document (PascalCase, absent fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)

    def with_scope(self, user_pool_id: str | None, client_id: str | None) -> RiskConfiguration:
        return self.model_copy(update={"UserPoolId": user_pool_id, "ClientId": client_id})


def _reraise_details(exc: ValidationError) -> list[InitErrorDetails]:
    out: list[InitErrorDetails] = []
    for e in exc.errors():
        if e["type"] == "riskgate":
            err_type: Any = _custom(e["ctx"]["message"])
            out.append(InitErrorDetails(type=err_type, loc=e["loc"], input=e["input"]))
        else:
            details = InitErrorDetails(type=e["type"], loc=e["loc"], input=e["input"])
            if "ctx" in e:
                details["ctx"] = e["ctx"]
            out.append(details)
    return out


# -- problems and the error -----------------------------------------------------


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a document: where (field path, line) and what."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"


class RiskConfigurationError(ConfigurationError):
    """A risk configuration document is invalid; every problem is listed and nothing was changed."""

    def __init__(self, problems: Sequence[ConfigProblem], *, source: str | None = None):
        self.problems = list(problems)
        n = len(self.problems)
        head = f"invalid risk configuration ({n} problem{'s' if n != 1 else ''}):"
        super().__init__(head + "".join(f"\n  {p}" for p in self.problems), source=source)


def format_path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _preview(value: Any, limit: int = 60) -> str:
    if isinstance(value, str):
        if len(value) > limit:
            return repr(value[:limit] + "…") + f" ({len(value)} characters)"
        return repr(value)
    if isinstance(value, (dict, list)):
        text = json.dumps(value, default=str)
        return text if len(text) <= limit else text[:limit] + "…"
    if value is True or value is False:
        return "true" if value else "false"
    if value is None:
        return "null"
    return repr(value)


def _type_name(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _unwrap(tp: Any) -> Any:
    """The model class or list behind an annotation (Optional / Annotated / list peeled)."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin is list:
            return tp
        elif origin is not None:  # a Union with None
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _model_at(loc: Sequence[Any]) -> type[BaseModel] | None:
    tp: Any = RiskConfiguration
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(part, int):
            if get_origin(tp) is not list:
                return None
            tp = get_args(tp)[0]
            continue
        if not (isinstance(tp, type) and issubclass(tp, BaseModel)) or part not in tp.model_fields:
            return None
        tp = tp.model_fields[part].annotation
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _problem_message(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "riskgate":
        return ctx["message"]
    if kind == "missing":
        return "required field missing"
    if kind == "extra_forbidden":
        model = _model_at(err["loc"][:-1])
        allowed = f" (allowed here: {', '.join(model.model_fields)})" if model else ""
        return f"unknown field{allowed}"
    if kind == "enum":
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"{_preview(value)} is not one of {', '.join(options)}"
    if kind == "string_too_short":
        n = len(value) if isinstance(value, str) else 0
        return f"{_preview(value)} is too short: {n} characters, at least {ctx.get('min_length')} required"
    if kind == "string_too_long":
        return f"{_preview(value)} is too long: at most {ctx.get('max_length')} characters allowed"
    if kind == "string_type":
        return f"expected a string, got {_type_name(value)} {_preview(value)}"
    if kind == "bool_type":
        return f"expected true or false, got {_type_name(value)} {_preview(value)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected an object, got {_type_name(value)} {_preview(value)}"
    if kind == "list_type":
        return f"expected a list, got {_type_name(value)} {_preview(value)}"
    return f"{_preview(value)}: {err.get('msg', kind)}"


def problems_from_validation(
    exc: ValidationError, *, prefix: Sequence[Any] = (), lines: Mapping[tuple, int] | None = None,
    data: Any = None,
) -> list[ConfigProblem]:
    """The problems of a validation, in the order of the document ``data`` when given (else validation's)."""
    out = []
    seen = set()
    errors = exc.errors()
    if data is not None:
        errors = sorted(errors, key=lambda e: _document_order(data, e["loc"]))
    for err in errors:
        loc = tuple(err["loc"])
        problem = ConfigProblem(format_path(loc), _problem_message(err), _line_for(lines, tuple(prefix) + loc))
        if (problem.path, problem.message) not in seen:
            seen.add((problem.path, problem.message))
            out.append(problem)
    return out


def _line_for(lines: Mapping[tuple, int] | None, loc: tuple) -> int | None:
    if not lines:
        return None
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


# -- reading documents --------------------------------------------------------------


def _line_index(text: str) -> dict[tuple, int]:
    """Field path -> 1-based line of its value, for messages (best effort; empty when the text does not parse).

    Read from the YAML parser's events (JSON is read as YAML), which does not recurse: a document nesting
    hundreds of levels (up to ``MAX_JSON_DEPTH``, what :func:`parse_text` takes) is indexed like any other."""
    index: dict[tuple, int] = {}
    # one frame per open sequence or mapping: [path (None: under a complex key, not indexed), next item number,
    # whether a mapping's key comes next, the key of the value that comes next]
    stack: list[list] = []
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                stack.pop()
                continue
            if not isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent, yaml.SequenceStartEvent,
                                      yaml.MappingStartEvent)):
                continue
            line = event.start_mark.line + 1
            path: tuple | None = ()
            if stack:
                top = stack[-1]
                if top[0] is None:
                    path = None
                elif isinstance(top[1], int):  # a sequence's item
                    path = top[0] + (top[1],)
                    top[1] += 1
                elif top[2]:  # a mapping's key: its line stands for its value's
                    top[2] = False
                    top[3] = event.value if isinstance(event, yaml.ScalarEvent) else None
                    if top[3] is not None:
                        index.setdefault(top[0] + (top[3],), line)
                    path = None
                else:
                    top[2] = True
                    path = top[0] + (top[3],) if top[3] is not None else None
            if path is not None:
                index.setdefault(path, line)
            if isinstance(event, yaml.SequenceStartEvent):
                stack.append([path, 0, False, None])
            elif isinstance(event, yaml.MappingStartEvent):
                stack.append([path, None, True, None])
    except yaml.YAMLError:
        return {}
    return index


def parse_text(text: str, *, source: str | None = None, fmt: str | None = None) -> Any:
    """JSON or YAML text -> plain data. ``fmt`` is ``json``, ``yaml`` or None (JSON when it starts with '{').

    A document nesting more than ``MAX_JSON_DEPTH`` levels is refused, naming where (``ingest.documents``)."""
    if fmt is None:
        fmt = "json" if text.lstrip().startswith("{") else "yaml"
    if fmt == "json":
        try:
            return load_json(text, source=source, object_pairs_hook=strict_json_pairs)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"not valid JSON: {exc.msg} (column {exc.colno})", source=source, line=exc.lineno) from None
        except RepeatedKeyError as exc:  # JSON's parser gives no position, YAML's reader does
            problem, line = repeated_key(text=text) or (str(exc), None)
            raise ConfigurationError(problem, source=source, line=line) from None
    try:
        return load_yaml(text, loader=StrictYamlLoader, source=source)
    except yaml.YAMLError as exc:
        problem, line, repeated = yaml_refusal(exc)
        raise ConfigurationError(problem if repeated else f"not valid YAML: {problem}", source=source,
                                 line=line) from None


def validate_document(
    data: Any, *, source: str | None = None, lines: Mapping[tuple, int] | None = None
) -> RiskConfiguration:
    """Plain data (as read from a file) -> RiskConfiguration, or one RiskConfigurationError listing every problem.

    Accepts the set-risk-configuration input shape and the describe output shape
    (``{"RiskConfiguration": {...}}``); ``LastModifiedDate`` is ignored.
    """
    prefix: tuple = ()
    problems: list[ConfigProblem] = []
    if isinstance(data, Mapping) and "RiskConfiguration" in data:
        problems = [  # reported with the document's own problems, all at once
            ConfigProblem(
                str(k),
                "unknown field beside the RiskConfiguration wrapper (put every field inside it)",
                _line_for(lines, (k,)),
            )
            for k in data
            if k != "RiskConfiguration"
        ]
        data, prefix = data["RiskConfiguration"], ("RiskConfiguration",)
    if data is None:
        raise RiskConfigurationError(
            [*problems, ConfigProblem(format_path(prefix), "the document is empty", _line_for(lines, prefix))],
            source=source)
    if not isinstance(data, Mapping):
        raise RiskConfigurationError(
            [*problems, ConfigProblem(format_path(prefix),
                                      f"expected an object (mapping), got {_type_name(data)} {_preview(data)}")],
            source=source,
        )
    data = {k: v for k, v in data.items() if k not in OUTPUT_ONLY_KEYS}
    try:
        config = RiskConfiguration.model_validate(data)
    except ValidationError as exc:
        problems += problems_from_validation(exc, prefix=prefix, lines=lines, data=data)
    if problems:
        raise RiskConfigurationError(problems, source=source)
    return config


def load_text(text: str, *, source: str | None = None, fmt: str | None = None) -> RiskConfiguration:
    data = parse_text(text, source=source, fmt=fmt)
    lines = _line_index(text)
    return validate_document(data, source=source, lines=lines)


def load_file(path: str | os.PathLike) -> RiskConfiguration:
    """Read a JSON or YAML document (``file://`` prefix as the AWS CLI takes it is accepted)."""
    name = str(path)
    if name.startswith("file://"):
        name = name[len("file://") :]
    p = Path(name)
    try:
        text = p.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is not an error
    except FileNotFoundError:
        raise ConfigurationError("file not found", source=name) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read the file: {exc}", source=name) from None
    suffix = p.suffix.lower()
    fmt = "json" if suffix == ".json" else "yaml" if suffix in (".yaml", ".yml") else None
    return load_text(text, source=name, fmt=fmt)


def lint(config: RiskConfiguration) -> list[str]:
    """Warnings about a valid document: things Cognito accepts that are probably not what was meant."""
    out = []
    ato = config.AccountTakeoverRiskConfiguration
    if ato is not None:
        notifying = ato.Actions.notifying()
        if notifying and ato.NotifyConfiguration is None:
            out.append(
                "AccountTakeoverRiskConfiguration: Notify is true for "
                + ", ".join(notifying)
                + " but there is no NotifyConfiguration; the default templates and the notifier's own sender are used"
            )
        if ato.NotifyConfiguration is not None:
            from risk.notify import NOTIFY_FROM_ENV

            for field_name, fallback in (("From", f"the sender is ${NOTIFY_FROM_ENV}"), ("ReplyTo", "no Reply-To")):
                if getattr(ato.NotifyConfiguration, field_name) == "":
                    out.append(f"AccountTakeoverRiskConfiguration.NotifyConfiguration.{field_name} is empty: taken "
                               f"as not set ({fallback}); leave it out to say so")
            for tname in ("BlockEmail", "NoActionEmail", "MfaEmail"):
                tmpl = getattr(ato.NotifyConfiguration, tname)
                if tmpl is None:
                    continue
                if tmpl.HtmlBody is None and tmpl.TextBody is None:
                    out.append(f"AccountTakeoverRiskConfiguration.NotifyConfiguration.{tname}: neither HtmlBody nor "
                               "TextBody: every email with this template would fail to send")
                for part in ("Subject", "HtmlBody", "TextBody"):
                    text = getattr(tmpl, part) or ""
                    unknown = sorted(set(_PLACEHOLDER_RE.findall(text)) - set(TEMPLATE_PLACEHOLDERS))
                    if unknown:
                        out.append(
                            f"AccountTakeoverRiskConfiguration.NotifyConfiguration.{tname}.{part}: "
                            f"unknown placeholder(s) {', '.join(unknown)} will be sent as written "
                            f"(known: {', '.join(TEMPLATE_PLACEHOLDERS)})"
                        )
    rec = config.RiskExceptionConfiguration
    if rec is not None and rec.BlockedIPRangeList and rec.SkippedIPRangeList:
        from ingest.context import unmapped  # an IPv4-mapped range matches as the IPv4 one (risk.exceptions)

        blocked = [(c, unmapped(ipaddress.ip_network(c))) for c in rec.BlockedIPRangeList]
        for c in rec.SkippedIPRangeList:
            net = unmapped(ipaddress.ip_network(c))
            hits = [b for b, bnet in blocked if bnet.version == net.version and bnet.overlaps(net)]
            if hits:
                out.append(
                    f"RiskExceptionConfiguration.SkippedIPRangeList: '{c}' overlaps blocked {', '.join(hits)}; "
                    "blocked wins for addresses in both"
                )
    return out


def summarize(config: RiskConfiguration) -> str:
    """One line saying what a document does (for history)."""
    parts = []
    ato = config.AccountTakeoverRiskConfiguration
    if ato is None:
        parts.append("account takeover: not configured (NO_ACTION)")
    else:
        levels = []
        for level, name in LEVEL_FIELDS.items():
            a = getattr(ato.Actions, name)
            levels.append(f"{level}={a.EventAction}{'+notify' if a.Notify else ''}" if a else f"{level}=(none)")
        parts.append("account takeover: " + " ".join(levels))
    cc = config.CompromisedCredentialsRiskConfiguration
    if cc is None:
        parts.append("compromised credentials: not configured (NO_ACTION)")
    else:
        events = ",".join(cc.EventFilter) if cc.EventFilter else "all events"
        parts.append(f"compromised credentials: {cc.Actions.EventAction} on {events}")
    rec = config.RiskExceptionConfiguration
    nb = len(rec.BlockedIPRangeList or []) if rec else 0
    ns = len(rec.SkippedIPRangeList or []) if rec else 0
    parts.append(f"IP ranges: {nb} blocked, {ns} skipped")
    return "; ".join(parts)


# -- defaults -------------------------------------------------------------------------

DEFAULT_CONFIG_RESOURCE = "default_risk_configuration.json"


@functools.cache
def default_configuration() -> RiskConfiguration:
    """The shipped defaults (risk/data/default_risk_configuration.json), read on first use."""
    text = resources.files("risk").joinpath("data", DEFAULT_CONFIG_RESOURCE).read_text(encoding="utf-8")
    return load_text(text, source=f"risk/data/{DEFAULT_CONFIG_RESOURCE}", fmt="json")


def default_template(name: str) -> NotifyEmailType:
    """The default NotifyEmail for BlockEmail / NoActionEmail / MfaEmail."""
    nc = default_configuration().AccountTakeoverRiskConfiguration.NotifyConfiguration  # type: ignore[union-attr]
    tmpl = getattr(nc, name, None) if name in ("BlockEmail", "NoActionEmail", "MfaEmail") else None
    if tmpl is None:
        raise ConfigurationError(f"no notification template {name!r} (expected BlockEmail, NoActionEmail or MfaEmail)")
    return tmpl


def template_for(config: RiskConfiguration, name: str) -> NotifyEmailType:
    """The configuration's template ``name``, or the default one when the configuration has none."""
    ato = config.AccountTakeoverRiskConfiguration
    nc = ato.NotifyConfiguration if ato else None
    tmpl = getattr(nc, name, None) if nc is not None else None
    return tmpl if tmpl is not None else default_template(name)


# -- the store: versioned documents, resets and modes ----------------------------------

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "risk_config_0001_versions",
        (
            """CREATE TABLE IF NOT EXISTS risk_config_versions (
                 version BIGINT PRIMARY KEY,
                 changed_at TIMESTAMPTZ NOT NULL,
                 user_pool_id VARCHAR NOT NULL,
                 client_id VARCHAR,
                 kind VARCHAR NOT NULL,
                 document VARCHAR,
                 mode VARCHAR,
                 summary VARCHAR NOT NULL,
                 source VARCHAR
               )""",
        ),
    ),
)

KIND_SET = "set"
KIND_RESET = "reset"
KIND_MODE = "mode"


@dataclass(frozen=True)
class ConfigVersion:
    """One row of the history: a set, a reset or a mode change."""

    version: int
    changed_at: datetime
    user_pool_id: str
    client_id: str | None
    kind: str
    summary: str
    mode: AdvancedSecurityMode | None = None
    source: str | None = None

    @property
    def scope(self) -> str:
        if self.client_id is None:
            return f"pool {self.user_pool_id}"
        return f"client {self.client_id} of pool {self.user_pool_id}"

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "changed_at": self.changed_at.isoformat(),
            "user_pool_id": self.user_pool_id,
            "client_id": self.client_id,
            "scope": self.scope,
            "kind": self.kind,
            "mode": str(self.mode) if self.mode else None,
            "summary": self.summary,
            "source": self.source,
        }


_VERSION_COLS = "version, changed_at, user_pool_id, client_id, kind, summary, mode, source"


def _row_to_version(row: Sequence[Any]) -> ConfigVersion:
    changed_at = row[1]
    if changed_at.tzinfo is None:
        changed_at = changed_at.replace(tzinfo=timezone.utc)
    return ConfigVersion(
        version=int(row[0]),
        changed_at=changed_at.astimezone(timezone.utc),
        user_pool_id=row[2],
        client_id=row[3],
        kind=row[4],
        summary=row[5],
        mode=AdvancedSecurityMode(row[6]) if row[6] else None,
        source=row[7],
    )


def _record(
    con: duckdb.DuckDBPyConnection,
    *,
    user_pool_id: str,
    client_id: str | None,
    kind: str,
    summary: str,
    document: str | None = None,
    mode: str | None = None,
    source: str | None = None,
    now: datetime | None = None,
) -> ConfigVersion:
    """Append one version (number = previous maximum + 1, in the same statement)."""
    when = now or datetime.now(timezone.utc)
    rows = con.execute(
        f"""INSERT INTO risk_config_versions
              (version, changed_at, user_pool_id, client_id, kind, document, mode, summary, source)
            SELECT coalesce(max(version), 0) + 1, ?, ?, ?, ?, ?, ?, ?, ? FROM risk_config_versions
            RETURNING {_VERSION_COLS}""",
        [when, user_pool_id, client_id, kind, document, mode, summary, source],
    ).fetchall()
    return _row_to_version(rows[0])


def known_pools(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Pools the store knows: any configuration or mode version, any stored event's UserPoolId, or any loaded
    user's."""
    configured = has_table(con, "risk_config_versions")  # none in a store only ingest opened
    return [r[0] for r in con.execute(
        ("SELECT user_pool_id FROM risk_config_versions UNION " if configured else "")
        + """SELECT user_pool_id FROM events WHERE user_pool_id IS NOT NULL
             UNION SELECT user_pool_id FROM users WHERE user_pool_id IS NOT NULL ORDER BY 1"""
    ).fetchall()]


def choose_pool(
    con: duckdb.DuckDBPyConnection | None, explicit: str | None = None, document: str | None = None
) -> str:
    """The pool a command means (see the module docstring for the order)."""
    if explicit and document and explicit != document:
        raise ConfigurationError(
            f"--user-pool-id {explicit!r} contradicts the document's UserPoolId {document!r}; "
            "remove one of them or make them agree"
        )
    if explicit is not None and not explicit.strip():  # an unset shell variable: never "whichever pool"
        raise ConfigurationError(
            f"--user-pool-id {explicit!r} is empty: give a pool id of 1..{MAX_USER_POOL_ID} characters")
    for what, chosen in (("--user-pool-id", explicit), ("UserPoolId", document), (f"${POOL_ENV}", os.environ.get(POOL_ENV))):
        if chosen:
            check_pool_arg(chosen, what)
            return chosen
    pools = known_pools(con) if con is not None else []
    pool = unpooled_of(pools)  # the one rule for a pool nobody named (the variable is unset here)
    if pool is not None:
        return pool
    raise ConfigurationError(
        f"the store knows several pools ({', '.join(pools)}), from its events, users and configuration; "
        f"choose one with --user-pool-id or ${POOL_ENV}"
    )


def unknown_pool_warning(con: duckdb.DuckDBPyConnection, pool: str) -> str | None:
    """What to say before a configuration, reset or mode is recorded for ``pool`` when the store has never seen it
    (no event, user or configuration of it: a typo, as the HTTP service's ResourceNotFoundException would say),
    naming the pools it knows and, when the new pool makes rows without a pool id belong to no pool, that too;
    None when the pool is known, or is ``default`` in a store that knows none."""
    pools = known_pools(con)
    if pool in pools or (not pools and pool == DEFAULT_POOL_ID):
        return None
    if not pools:
        return (f"the store knows no pool yet (no events, users or configuration): {pool!r} is recorded as its "
                "first; check it is your user pool's id")
    text = (f"the store has never seen pool {pool!r} (no events, users or configuration of it); it knows "
            f"{', '.join(pools)}; recorded all the same: check the id")
    if unpooled_of(pools) is not None and unpooled_of([*pools, pool]) is None:
        text += (f". The store now knows {len(pools) + 1} pools: its events and users without a pool id belong to "
                 f"none of them (set ${POOL_ENV} to their pool)")
    return text


def served_pool_problem(pools: Iterable[str], pool: str) -> str | None:
    """Why the HTTP service refuses ``pool`` (an event's UserPoolId, a SetRiskConfiguration's) in a store that
    knows ``pools``, or None: a service has no one to warn, and one request naming a pool the store has never seen
    (a typo) would make it know two, so that its events and users without a pool id belong to none (their MFA
    then counts for nobody). Known: the store's pools and ``$RISKGATE_USER_POOL_ID``; a store that knows no pool
    takes its first. A new pool is added by the CLI (``riskgate config set``, ``mode``, ``ingest``), which warns."""
    known = set(pools)
    chosen = os.environ.get(POOL_ENV)
    if chosen:
        known.add(chosen)
    if not known or pool in known:
        return None
    return (f"User pool {pool} does not exist in this store (it knows {', '.join(sorted(known))}); a new pool is "
            "added with `riskgate config set --user-pool-id` (or `riskgate mode`, `riskgate ingest` of its events)")


def unpooled_pool(con: duckdb.DuckDBPyConnection) -> str | None:
    """The pool an event (or a loaded user) without a UserPoolId belongs to: the one scoring decides such an
    event under (:func:`choose_pool`: ``$RISKGATE_USER_POOL_ID``, else the store's only pool, else ``default``);
    None when the store knows several pools and the variable is unset (they are then users of no pool, apart
    from every pool's: ``risk.features``)."""
    return unpooled_of(known_pools(con))


def unpooled_of(pools: Iterable[str]) -> str | None:
    """:func:`unpooled_pool` for a store that knows ``pools`` (to tell whether events of a new pool change it)."""
    chosen = os.environ.get(POOL_ENV)
    if chosen:
        return chosen if user_pool_id_problem(chosen) is None else None
    pools = set(pools)
    if len(pools) == 1:
        return next(iter(pools))
    return DEFAULT_POOL_ID if not pools else None


def unpooled_users_problem(con: duckdb.DuckDBPyConnection) -> str | None:
    """Why users loaded without a pool id count for no user, or None: the store knows several pools and
    ``$RISKGATE_USER_POOL_ID`` is unset, so they belong to none (their MFA settings, email and status unused)."""
    pools = known_pools(con)
    if unpooled_of(pools) is not None:
        return None
    n = con.execute("SELECT count(*) FROM users WHERE pool_key = ''").fetchall()[0][0]
    if not n:
        return None
    return (f"{n:,} user(s) loaded without a pool id belong to no pool: the store knows several "
            f"({', '.join(pools)}), so their MFA settings, email and status apply to nobody (no notification email "
            f"reaches them: each fails with 'no email address for user'); load them again with `riskgate users load "
            f"FILE --user-pool-id POOL`, or set ${POOL_ENV} to their pool")


def check_pool_arg(user_pool_id: str | None, what: str = "user pool id") -> None:
    """A pool id given on the command line (``what``: "--user-pool-id") or by ``$RISKGATE_USER_POOL_ID``:
    ConfigurationError when the configuration's UserPoolId rule refuses it (``ingest.schema.user_pool_id_problem``)."""
    if user_pool_id is None:
        return
    problem = user_pool_id_problem(user_pool_id)
    if problem:
        raise ConfigurationError(f"{what} {_preview(user_pool_id)} {problem}")


def check_client_arg(client_id: str | None) -> None:
    if client_id is None:
        return
    if not (1 <= len(client_id) <= 128) or not _CLIENT_ID_RE.fullmatch(client_id):
        raise ConfigurationError(f"client id {client_id!r} must be 1..128 characters matching [\\w+]+")


def set_configuration(
    con: duckdb.DuckDBPyConnection,
    config: RiskConfiguration,
    *,
    user_pool_id: str | None = None,
    client_id: str | None = None,
    source: str | None = None,
    now: datetime | None = None,
) -> ConfigVersion:
    """Store ``config`` as a new version (a reset when it holds only ids); the caller validated it already."""
    if client_id is not None and config.ClientId is not None and client_id != config.ClientId:
        raise ConfigurationError(
            f"--client-id {client_id!r} contradicts the document's ClientId {config.ClientId!r}; "
            "remove one of them or make them agree"
        )
    check_client_arg(client_id)
    pool = choose_pool(con, user_pool_id, config.UserPoolId)
    client = client_id or config.ClientId
    if config.is_reset:
        return reset_configuration(con, pool, client, source=source, now=now)
    scoped = config.with_scope(pool, client)
    return _record(
        con,
        user_pool_id=pool,
        client_id=client,
        kind=KIND_SET,
        summary=summarize(scoped),
        document=json.dumps(scoped.to_document(), sort_keys=False),
        source=source,
        now=now,
    )


def reset_configuration(
    con: duckdb.DuckDBPyConnection,
    user_pool_id: str | None = None,
    client_id: str | None = None,
    *,
    source: str | None = None,
    now: datetime | None = None,
) -> ConfigVersion:
    """Pool: back to the defaults. Client: back to inheriting the pool's configuration. Recorded as a version."""
    check_client_arg(client_id)
    pool = choose_pool(con, user_pool_id)
    summary = (
        "reset: the pool uses the default configuration"
        if client_id is None
        else "reset: the client inherits the pool's configuration"
    )
    return _record(con, user_pool_id=pool, client_id=client_id, kind=KIND_RESET, summary=summary, source=source, now=now)


def _latest_document(
    con: duckdb.DuckDBPyConnection, user_pool_id: str, client_id: str | None
) -> tuple[str, str | None, int, datetime] | None:
    rows = con.execute(
        """SELECT kind, document, version, changed_at FROM risk_config_versions
           WHERE user_pool_id = ? AND client_id IS NOT DISTINCT FROM ? AND kind IN ('set', 'reset')
           ORDER BY version DESC LIMIT 1""",
        [user_pool_id, client_id],
    ).fetchall()
    return tuple(rows[0]) if rows else None  # type: ignore[return-value]


@dataclass(frozen=True)
class Resolved:
    """What applies to a (pool, client): the document, its version, its time and where it comes from."""

    configuration: RiskConfiguration
    version: int
    last_modified: datetime | None
    origin: str  # client | pool | defaults


def resolve_detail(
    con: duckdb.DuckDBPyConnection, user_pool_id: str | None, client_id: str | None = None
) -> Resolved:
    pool = choose_pool(con, user_pool_id)
    if client_id is not None:
        row = _latest_document(con, pool, client_id)
        if row is not None and row[0] == KIND_SET:
            cfg = RiskConfiguration.model_validate_json(row[1])
            return Resolved(cfg, int(row[2]), row[3], "client")
    row = _latest_document(con, pool, None)
    if row is not None and row[0] == KIND_SET:
        return Resolved(RiskConfiguration.model_validate_json(row[1]), int(row[2]), row[3], "pool")
    defaults = default_configuration().with_scope(pool, None)
    if row is not None:  # the pool was reset: the defaults, as of that version
        return Resolved(defaults, int(row[2]), row[3], "defaults")
    return Resolved(defaults, 0, None, "defaults")


def resolve(
    con: duckdb.DuckDBPyConnection, user_pool_id: str | None, client_id: str | None = None
) -> tuple[RiskConfiguration, int]:
    """The configuration that applies to (pool, client) and its version (0: shipped defaults, never set)."""
    r = resolve_detail(con, user_pool_id, client_id)
    return r.configuration, r.version


def resolve_proposed(
    con: duckdb.DuckDBPyConnection, user_pool_id: str | None, client_id: str | None, proposal: RiskConfiguration
) -> RiskConfiguration:
    """What would apply to (pool, client) once ``proposal`` were set as ``riskgate config set`` sets it.

    The proposal concerns the pool it names (every pool when it names none) and, with a ClientId, only that
    client. The precedence of the store holds: a client with a configuration of its own keeps it when a
    pool-level proposal changes the pool, and a proposal of ids only is a reset (the pool's defaults; a client
    inheriting the pool's configuration again).
    """
    current = resolve_detail(con, user_pool_id, client_id)
    pool = choose_pool(con, user_pool_id)
    if proposal.UserPoolId not in (None, pool):
        return current.configuration
    if proposal.ClientId is not None:
        if proposal.ClientId != client_id:
            return current.configuration
        if proposal.is_reset:
            return resolve(con, pool, None)[0]
        return proposal.with_scope(pool, client_id)
    if current.origin == "client":
        return current.configuration
    if proposal.is_reset:
        return default_configuration().with_scope(pool, None)
    return proposal.with_scope(pool, None)


def describe(con: duckdb.DuckDBPyConnection, user_pool_id: str | None, client_id: str | None = None) -> dict:
    """What DescribeRiskConfiguration returns: ``{"RiskConfiguration": {..., "LastModifiedDate": ...}}``."""
    check_client_arg(client_id)  # as set and reset do (not in resolve: stored events' client ids are not checked)
    return describe_resolved(resolve_detail(con, user_pool_id, client_id))


def describe_resolved(r: Resolved) -> dict:
    """The DescribeRiskConfiguration shape of a :class:`Resolved`."""
    doc = r.configuration.to_document()
    if r.last_modified is not None:
        doc["LastModifiedDate"] = r.last_modified.astimezone(timezone.utc).isoformat()
    return {"RiskConfiguration": doc}


def configuration_at(con: duckdb.DuckDBPyConnection, version: int) -> RiskConfiguration:
    """The document a version number stands for (as stored with an assessment); 0 = the defaults."""
    if version == 0:
        return default_configuration()
    rows = con.execute(
        "SELECT kind, document, user_pool_id, client_id FROM risk_config_versions WHERE version = ?", [version]
    ).fetchall()
    if not rows:
        raise ConfigurationError(f"no risk configuration version {version}")
    kind, document, pool, client = rows[0]
    if kind == KIND_SET:
        return RiskConfiguration.model_validate_json(document)
    if kind == KIND_RESET and client is None:
        return default_configuration().with_scope(pool, None)
    raise ConfigurationError(f"version {version} is a {kind} of {client or pool}, not a configuration document")


def set_mode(
    con: duckdb.DuckDBPyConnection,
    mode: AdvancedSecurityMode | str,
    user_pool_id: str | None = None,
    *,
    now: datetime | None = None,
) -> ConfigVersion:
    """Set a pool's AdvancedSecurityMode (OFF / AUDIT / ENFORCED) as a new version."""
    try:
        new = AdvancedSecurityMode(str(mode).upper())
    except ValueError:
        raise ConfigurationError(
            f"AdvancedSecurityMode: {mode!r} is not one of {', '.join(m.value for m in AdvancedSecurityMode)}"
        ) from None
    pool = choose_pool(con, user_pool_id)
    old, _ = get_mode(con, pool)
    return _record(
        con, user_pool_id=pool, client_id=None, kind=KIND_MODE, summary=f"AdvancedSecurityMode {old} -> {new}", mode=new, now=now
    )


def get_mode(con: duckdb.DuckDBPyConnection, user_pool_id: str | None = None) -> tuple[AdvancedSecurityMode, int]:
    """A pool's AdvancedSecurityMode and the version that set it (AUDIT and 0 when never set)."""
    pool = choose_pool(con, user_pool_id)
    rows = con.execute(
        """SELECT mode, version FROM risk_config_versions WHERE user_pool_id = ? AND kind = 'mode'
           ORDER BY version DESC LIMIT 1""",
        [pool],
    ).fetchall()
    if not rows:
        return DEFAULT_MODE, 0
    return AdvancedSecurityMode(rows[0][0]), int(rows[0][1])


def history(
    con: duckdb.DuckDBPyConnection,
    user_pool_id: str | None = None,
    client_id: str | None = None,
    *,
    limit: int | None = None,
) -> list[ConfigVersion]:
    """Every version, newest first; optionally one pool's (and one client's)."""
    where, params = [], []
    if user_pool_id is not None:
        where.append("user_pool_id = ?")
        params.append(user_pool_id)
    if client_id is not None:
        where.append("client_id = ?")
        params.append(client_id)
    sql = f"SELECT {_VERSION_COLS} FROM risk_config_versions"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY version DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    return [_row_to_version(r) for r in con.execute(sql, params).fetchall()]


def version_count(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.execute("SELECT count(*) FROM risk_config_versions").fetchall()[0][0])
