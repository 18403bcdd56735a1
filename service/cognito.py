"""Cognito's JSON protocol for the five risk operations, translated onto riskgate's functions.

A request is ``POST /`` with ``X-Amz-Target: AWSCognitoIdentityProviderService.<Operation>``,
content type ``application/x-amz-json-1.1`` and a JSON body of the operation's
input shape; the answer is the output shape, or an error as Cognito gives it:
HTTP 400 with ``{"__type": "<Code>", "message": "..."}`` (and the
``x-amzn-ErrorType`` header), which botocore turns into a ``ClientError``
with that code.

Operations: SetRiskConfiguration, DescribeRiskConfiguration,
AdminListUserAuthEvents, AdminUpdateAuthEventFeedback, UpdateAuthEventFeedback.
Times are epoch seconds (the protocol's timestamp format).

Authentication: AWS Signature Version 4 as the SDKs and the CLI sign, with
access key id ``$RISKGATE_AWS_ACCESS_KEY_ID`` (default ``riskgate``) and the
service's API key as the secret access key (:func:`verify_sigv4`); the
``X-Api-Key`` header is accepted too. UpdateAuthEventFeedback is the end
user's call, authorised by the FeedbackToken from the email, and needs neither.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

TARGET_PREFIX = "AWSCognitoIdentityProviderService."
CONTENT_TYPE = "application/x-amz-json-1.1"
ACCESS_KEY_ENV = "RISKGATE_AWS_ACCESS_KEY_ID"
DEFAULT_ACCESS_KEY_ID = "riskgate"
#: the service name of a Cognito request's SigV4 credential scope (``.../us-east-1/cognito-idp/aws4_request``)
SERVICE = "cognito-idp"
#: How far a request's X-Amz-Date may be from now (as AWS allows).
MAX_CLOCK_SKEW = timedelta(minutes=15)
PUBLIC_OPERATIONS = frozenset({"UpdateAuthEventFeedback"})


class CognitoError(Exception):
    """An error in Cognito's shape: the code (``__type``), the message and the HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def body(self) -> dict:
        return {"__type": self.code, "message": self.message}


def invalid(message: str) -> CognitoError:
    return CognitoError("InvalidParameterException", message)


# -- SigV4 ---------------------------------------------------------------------------------------

_AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<sig>[0-9a-f]{64})\s*$"
)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def verify_sigv4(method: str, path: str, query: str, headers: dict[str, str], body: bytes, *,
                 access_key_id: str, secret: str, now: datetime | None = None) -> None:
    """Check an AWS Signature Version 4 ``Authorization`` header; raise CognitoError when it does not hold.

    ``headers`` maps lower-case names to values as received. Only the signed
    headers take part, as the SDKs sign them; the payload hash is computed
    from ``body``.
    """
    auth = headers.get("authorization", "")
    m = _AUTH_RE.match(auth)
    if not m:
        raise CognitoError("MissingAuthenticationTokenException",
                           "the request is not signed (AWS Signature Version 4) and carries no X-Api-Key", 403)
    parts = m.group("cred").split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise CognitoError("IncompleteSignatureException", "the Credential of the Authorization header is malformed", 403)
    key_id, date, region, service, _ = parts
    if service != SERVICE:  # as AWS: a signature scoped to another service (s3, ...) is not this one's
        raise CognitoError("InvalidSignatureException", f"the credential scope's service is {service!r}; this "
                                                        f"service signs as {SERVICE!r}", 403)
    if not hmac.compare_digest(key_id.encode(), access_key_id.encode()):
        raise CognitoError("UnrecognizedClientException",
                           f"the security token included in the request is invalid (unknown access key id; "
                           f"this service's is set by {ACCESS_KEY_ENV})", 403)
    amz_date = headers.get("x-amz-date", "")
    try:
        when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        raise CognitoError("IncompleteSignatureException", "X-Amz-Date is missing or malformed", 403) from None
    if not amz_date.startswith(date):
        raise CognitoError("InvalidSignatureException", "the credential date does not match X-Amz-Date", 403)
    if abs((now or datetime.now(timezone.utc)) - when) > MAX_CLOCK_SKEW:
        raise CognitoError("InvalidSignatureException", "signature expired: X-Amz-Date is more than 15 minutes from now", 403)
    signed = m.group("signed").split(";")
    if "host" not in signed or any(h not in headers for h in signed):
        raise CognitoError("IncompleteSignatureException", "a signed header is missing from the request", 403)
    canonical_headers = "".join(f"{h}:{' '.join(headers[h].split())}\n" for h in signed)
    canonical_query = "&".join(sorted(query.split("&"))) if query else ""
    canonical = "\n".join([method, path or "/", canonical_query, canonical_headers, ";".join(signed),
                           hashlib.sha256(body).hexdigest()])
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode("utf-8"), date), region), service), "aws4_request")
    expected = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, m.group("sig")):
        raise CognitoError("InvalidSignatureException",
                           "the request signature we calculated does not match the signature you provided "
                           "(check the secret access key: it is the service's API key)", 403)


# -- parameters ---------------------------------------------------------------------------------


def _str(params: dict, name: str, *, required: bool = True, max_len: int | None = None) -> str | None:
    value = params.get(name)
    if value is None:
        if required:
            raise invalid(f"1 validation error detected: Value null at '{_lower(name)}' failed to satisfy "
                          "constraint: Member must not be null")
        return None
    if not isinstance(value, str):
        raise invalid(f"{name} must be a string, got {type(value).__name__}")
    if max_len is not None and not 1 <= len(value) <= max_len:
        raise invalid(f"{name} must be 1 to {max_len} characters, got {len(value)}")
    return value


def _lower(name: str) -> str:
    return name[:1].lower() + name[1:]


def _pool(params: dict) -> str:
    """The request's UserPoolId, by the rule of every other way in (``ingest.schema.user_pool_id_problem``:
    1..55 characters, not blank). AWS's own pattern (``region_id``) is not asked for: a pool the CLI configured,
    or that events brought in (``mypool``), was refused here though the store knew it."""
    from ingest.schema import user_pool_id_problem

    pool = _str(params, "UserPoolId", max_len=55)
    problem = user_pool_id_problem(pool)
    if problem:
        raise invalid(f"UserPoolId {pool!r} {problem}")
    return pool


def _event_id(params: dict) -> str:
    """The request's EventId, by the rule ingest and ``/v1/evaluate`` hold every event id to
    (``ingest.schema.event_id_problem``: Cognito's 1..50 characters of ``[\\w+-]``): an id no stored event can have
    is a bad parameter, not an event not found."""
    from ingest.schema import event_id_problem

    event_id = _str(params, "EventId", max_len=50)
    problem = event_id_problem(event_id)
    if problem:
        raise invalid(problem)
    return event_id


def _only(params: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise invalid(f"unknown parameter(s) {', '.join(unknown)}; expected: {', '.join(allowed)}")


def _epoch(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        return datetime.fromisoformat(value).timestamp()
    return value


def _require_pool(con, pool: str) -> None:
    from risk.config import known_pools

    if pool not in known_pools(con):
        raise CognitoError("ResourceNotFoundException",
                           f"User pool {pool} does not exist (no events and no risk configuration in this store)")


def _require_user(con, username: str, pool: str) -> None:
    from risk.auth_events import user_known

    if not user_known(con, username, pool):
        raise CognitoError("UserNotFoundException", "User does not exist.")


def _require_event(con, username: str, event_id: str, pool: str) -> None:
    """The event must be the user's in this pool (one stored without a pool id: if it belongs to this pool,
    ``risk.config.unpooled_pool``): a username is one user per pool."""
    from ingest.store import event_owner
    from risk.config import unpooled_pool

    owner = event_owner(con, event_id)
    if owner is None or owner[0] != username or (owner[1] if owner[1] is not None else unpooled_pool(con)) != pool:
        raise CognitoError("ResourceNotFoundException", f"Event {event_id} of user {username} not found.")


# -- the operations (each runs on the store thread with the store as ``con``) -------------------------


def _describe(con, pool: str, client: str | None) -> dict:
    from risk.config import describe

    out = describe(con, pool, client)
    doc = out["RiskConfiguration"]
    if client is not None:
        doc["ClientId"] = client
    if "LastModifiedDate" in doc:
        doc["LastModifiedDate"] = _epoch(doc["LastModifiedDate"])
    return {"RiskConfiguration": doc}


def set_risk_configuration(con, params: dict) -> dict:
    from ingest.errors import ConfigurationError
    from risk.config import known_pools, served_pool_problem, set_configuration, validate_document

    _only(params, ("UserPoolId", "ClientId", "CompromisedCredentialsRiskConfiguration",
                   "AccountTakeoverRiskConfiguration", "RiskExceptionConfiguration"))
    pool = _pool(params)
    client = _str(params, "ClientId", required=False)
    problem = served_pool_problem(known_pools(con), pool)
    if problem:
        raise CognitoError("ResourceNotFoundException", problem)
    try:
        cfg = validate_document(params, source="SetRiskConfiguration")
        set_configuration(con, cfg, user_pool_id=pool, client_id=client, source="SetRiskConfiguration (HTTP)")
    except ConfigurationError as exc:
        raise invalid(str(exc).removeprefix("SetRiskConfiguration: ")) from None
    return _describe(con, pool, client)


def describe_risk_configuration(con, params: dict) -> dict:
    from ingest.errors import ConfigurationError

    _only(params, ("UserPoolId", "ClientId"))
    pool = _pool(params)
    client = _str(params, "ClientId", required=False, max_len=128)
    _require_pool(con, pool)
    try:
        return _describe(con, pool, client)
    except ConfigurationError as exc:
        raise invalid(str(exc)) from None


def admin_list_user_auth_events(con, params: dict) -> dict:
    from risk.auth_events import InvalidParameterError, UserNotFoundError, list_user_auth_events

    _only(params, ("UserPoolId", "Username", "MaxResults", "NextToken"))
    pool = _pool(params)
    username = _str(params, "Username", max_len=128)
    max_results = params.get("MaxResults")
    if max_results is not None and (not isinstance(max_results, int) or isinstance(max_results, bool)):
        raise invalid(f"MaxResults must be an integer, got {max_results!r}")
    token = _str(params, "NextToken", required=False)
    _require_pool(con, pool)
    try:
        out = list_user_auth_events(con, username, max_results=max_results, next_token=token, user_pool_id=pool)
    except UserNotFoundError:
        raise CognitoError("UserNotFoundException", "User does not exist.") from None
    except InvalidParameterError as exc:
        raise invalid(str(exc)) from None
    for ev in out["AuthEvents"]:
        ev["CreationDate"] = _epoch(ev["CreationDate"])
        if "EventFeedback" in ev:
            ev["EventFeedback"]["FeedbackDate"] = _epoch(ev["EventFeedback"]["FeedbackDate"])
    return out


def _feedback_value(params: dict) -> str:
    value = _str(params, "FeedbackValue")
    if value not in ("Valid", "Invalid"):
        raise invalid(f"FeedbackValue must be Valid or Invalid, got {value!r}")
    return value


def admin_update_auth_event_feedback(con, params: dict) -> dict:
    from risk.feedback import set_feedback

    _only(params, ("UserPoolId", "Username", "EventId", "FeedbackValue"))
    pool = _pool(params)
    username = _str(params, "Username", max_len=128)
    event_id = _event_id(params)
    value = _feedback_value(params)
    _require_pool(con, pool)
    _require_user(con, username, pool)
    _require_event(con, username, event_id, pool)
    set_feedback(con, event_id, value, "Admin")
    return {}


def update_auth_event_feedback(con, params: dict) -> dict:
    from ingest.errors import ConfigurationError
    from risk.feedback import feedback_from_token
    from risk.notify import FeedbackTokenError, verify_token

    _only(params, ("UserPoolId", "Username", "EventId", "FeedbackToken", "FeedbackValue"))
    pool = _pool(params)
    username = _str(params, "Username", max_len=128)
    event_id = _event_id(params)
    token = _str(params, "FeedbackToken")
    value = _feedback_value(params)
    try:  # the token is the authorisation: checked before anything about the store is told
        claims = verify_token(token)
    except FeedbackTokenError as exc:
        raise CognitoError("NotAuthorizedException", f"FeedbackToken refused: {exc}") from None
    except ConfigurationError as exc:  # no secret to check tokens with: refused, not a fault (500) told to anyone
        import logging

        logging.getLogger("riskgate.service").warning("UpdateAuthEventFeedback refused: %s", exc)
        raise CognitoError("NotAuthorizedException", "FeedbackToken refused: this service does not accept "
                                                     "feedback tokens (its feedback secret is not set)") from None
    if claims.event_id != event_id or claims.username != username:
        raise CognitoError("NotAuthorizedException", "FeedbackToken was issued for another event or user")
    _require_pool(con, pool)
    _require_user(con, username, pool)
    _require_event(con, username, event_id, pool)
    feedback_from_token(con, token, value, username=username, event_id=event_id)
    return {}


OPERATIONS: dict[str, Callable[[Any, dict], dict]] = {
    "SetRiskConfiguration": set_risk_configuration,
    "DescribeRiskConfiguration": describe_risk_configuration,
    "AdminListUserAuthEvents": admin_list_user_auth_events,
    "AdminUpdateAuthEventFeedback": admin_update_auth_event_feedback,
    "UpdateAuthEventFeedback": update_auth_event_feedback,
}
#: Operations after which the inline scorer must read the configuration again.
CHANGES_CONFIGURATION = frozenset({"SetRiskConfiguration"})


def operation_for(target: str | None) -> str:
    """The operation named by ``X-Amz-Target``; a CognitoError for a missing or unknown one."""
    if not target:
        raise CognitoError("MissingAction", "X-Amz-Target is missing: expected AWSCognitoIdentityProviderService.<Operation>")
    if not target.startswith(TARGET_PREFIX) or target[len(TARGET_PREFIX):] not in OPERATIONS:
        raise CognitoError("UnknownOperationException",
                           f"operation {target!r} is not supported; riskgate speaks {', '.join(sorted(OPERATIONS))}")
    return target[len(TARGET_PREFIX):]
