"""Notifications: render a NotifyEmail template, sign feedback links, deliver, record.

* :func:`render` fills every placeholder Cognito documents (``{username}``,
  ``{ip-address}``, ``{city}``, ``{country}``, ``{login-time}``,
  ``{device-name}``, ``{one-click-link-valid}``, ``{one-click-link-invalid}``,
  ``{event-id}``, ``{feedback-token}``) in one pass; values are HTML-escaped in
  HtmlBody only; other ``{...}`` text is left as it is. No value can break a
  line: control characters become spaces, so nothing can inject a mail header.
* Feedback tokens (:func:`make_token`, :func:`verify_token`) are HMAC-SHA256
  over (event id, username, expiry) with the secret in
  ``RISKGATE_FEEDBACK_SECRET``; the one-click links are
  ``$RISKGATE_PUBLIC_URL/v1/feedback?token=...&value=valid|invalid``.
* Delivery (:class:`SmtpTransport`, :class:`OutboxTransport`): SMTP when
  ``RISKGATE_SMTP_HOST`` is set, else ``.eml`` files in ``RISKGATE_OUTBOX``
  (default ``./outbox``).
* :func:`notify` does all of it for one event and records the outcome in the
  ``notifications`` table as ``sent``, ``outbox`` or ``failed`` with the
  reason. A delivery failure never raises.
* A notification that scoring makes due is a ``pending`` row from the start
  (:func:`reserve`, in the transaction of its assessment), claimed by the run
  that delivers it; delivery completes it (:func:`complete`). What a run
  killed or stopped leaves pending, and notifications that failed, are
  claimed by a later run (:func:`claim_owed`; the service also every few
  minutes while it runs). So nothing due is lost, and nothing is sent twice
  about one event. :func:`unsent` counts what is still to be sent.

Templates and configurations are taken as plain objects or mappings with the
Cognito field names (``Subject``/``HtmlBody``/``TextBody``;
``From``/``ReplyTo``/``SourceArn``), so any model of them fits.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import os
import re
import smtplib
import socket
import ssl
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, getaddresses, make_msgid
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlencode, urlsplit

import duckdb

from ingest.errors import ConfigurationError, RiskgateError
from ingest.store import Migration, rollback
from risk.config import CONTROL_CHARS_RE

# -- names and settings ----------------------------------------------------------------------

PLACEHOLDERS = (
    "username",
    "ip-address",
    "city",
    "country",
    "login-time",
    "device-name",
    "one-click-link-valid",
    "one-click-link-invalid",
    "event-id",
    "feedback-token",
)
LINK_PLACEHOLDERS = ("one-click-link-valid", "one-click-link-invalid", "feedback-token")
TEMPLATE_NAMES = ("BlockEmail", "NoActionEmail", "MfaEmail")
STATUSES = ("pending", "sent", "outbox", "failed")

FEEDBACK_SECRET_ENV = "RISKGATE_FEEDBACK_SECRET"
FEEDBACK_TTL_ENV = "RISKGATE_FEEDBACK_TTL"  # seconds
PUBLIC_URL_ENV = "RISKGATE_PUBLIC_URL"
NOTIFY_FROM_ENV = "RISKGATE_NOTIFY_FROM"
OUTBOX_ENV = "RISKGATE_OUTBOX"
SMTP_HOST_ENV = "RISKGATE_SMTP_HOST"
SMTP_PORT_ENV = "RISKGATE_SMTP_PORT"
SMTP_STARTTLS_ENV = "RISKGATE_SMTP_STARTTLS"
SMTP_SSL_ENV = "RISKGATE_SMTP_SSL"
SMTP_USER_ENV = "RISKGATE_SMTP_USER"
SMTP_PASSWORD_ENV = "RISKGATE_SMTP_PASSWORD"
SMTP_TIMEOUT_ENV = "RISKGATE_SMTP_TIMEOUT"
SMTP_CA_FILE_ENV = "RISKGATE_SMTP_CA_FILE"

DEFAULT_FEEDBACK_TTL = timedelta(days=7)
#: the longest lifetime ``RISKGATE_FEEDBACK_TTL`` may give a feedback token: a link in an email about a sign-in is
#: of no use a year on, and a lifetime must leave the expiry a date
MAX_FEEDBACK_TTL = timedelta(days=365)
DEFAULT_OUTBOX = "outbox"
DEFAULT_SMTP_TIMEOUT = 10.0
MIN_SECRET_CHARS = 16
FEEDBACK_PATH = "/v1/feedback"
UNKNOWN = "unknown"
#: the reason of a notification whose user has no email address in the users table
NO_ADDRESS = "no email address for user"
_TOKEN_CONTEXT = b"riskgate-feedback-v1."

_PLACEHOLDER_RE = re.compile(r"\{(" + "|".join(re.escape(p) for p in PLACEHOLDERS) + r")\}")


class NotifyError(RiskgateError):
    """A notification could not be rendered or delivered (recorded as failed; never stops scoring)."""


class FeedbackTokenError(RiskgateError):
    """A feedback token is malformed, tampered with, signed with another secret, or expired."""


def _secret(secret: str | bytes | None) -> bytes:
    if secret is None:
        secret = os.environ.get(FEEDBACK_SECRET_ENV, "")
    text = secret.decode("utf-8", errors="replace") if isinstance(secret, bytes) else secret
    # characters, not bytes (8 'é' are 16 bytes); blanks do not count, wherever they are
    if sum(not c.isspace() for c in text) < MIN_SECRET_CHARS:
        raise ConfigurationError(
            f"{FEEDBACK_SECRET_ENV} is not set (or shorter than {MIN_SECRET_CHARS} characters): it signs the "
            "feedback links in notification emails; set it to a long random value, e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def _clean(value: Any) -> str:
    """One line of text: control characters (CR, LF, ...) become a space; surrounding blanks go."""
    return CONTROL_CHARS_RE.sub(" ", "" if value is None else str(value)).strip()


def _field(obj: Any, *names: str) -> Any:
    """The first of ``names`` present in a mapping or as an attribute (Cognito names first, then snake_case)."""
    for name in names:
        if isinstance(obj, Mapping):
            if name in obj and obj[name] is not None:
                return obj[name]
        else:
            value = getattr(obj, name, None)
            if value is not None:
                return value
    return None


# -- feedback tokens ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedbackClaims:
    """What a valid feedback token says: which event, whose, and until when."""

    event_id: str
    username: str
    expires_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def feedback_ttl_from_env() -> timedelta:
    """The feedback tokens' lifetime: ``$RISKGATE_FEEDBACK_TTL`` seconds (1 to :data:`MAX_FEEDBACK_TTL`, 365
    days), else :data:`DEFAULT_FEEDBACK_TTL`. A bad value is refused naming the variable (a token's expiry must
    be a date: 99999999999999 s had made every run with notifications end in an OverflowError)."""
    raw = os.environ.get(FEEDBACK_TTL_ENV, "").strip()
    if not raw:
        return DEFAULT_FEEDBACK_TTL
    limit = int(MAX_FEEDBACK_TTL.total_seconds())
    seconds = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 20 else 0
    if not 0 < seconds <= limit:
        raise ConfigurationError(f"{FEEDBACK_TTL_ENV} must be a whole number of seconds from 1 to {limit} "
                                 f"({MAX_FEEDBACK_TTL.days} days), got {raw!r}")
    return timedelta(seconds=seconds)


def check_settings(con: duckdb.DuckDBPyConnection | None = None) -> None:
    """Refuse, naming the variable, a bad setting that every notification would need: ``$RISKGATE_FEEDBACK_TTL``,
    ``$RISKGATE_NOTIFY_RETRY_AFTER``, the SMTP server's (``$RISKGATE_SMTP_PORT``, ``$RISKGATE_SMTP_TIMEOUT``,
    both ``$RISKGATE_SMTP_SSL`` and ``$RISKGATE_SMTP_STARTTLS``, a login with neither but to a loopback relay) and
    ``$RISKGATE_PUBLIC_URL`` when set (:func:`public_url`); with the store ``con``, also what the
    configurations in effect need (:func:`delivery_problems`: a sender, the feedback links' secret and URL).
    ``riskgate score --notify`` and ``riskgate serve`` call it before they start, so that no run is refused
    halfway through its notifications."""
    feedback_ttl_from_env()
    retry_after_from_env()
    SmtpSettings.from_env()
    if os.environ.get(PUBLIC_URL_ENV):  # set and bad: every link would be dead, whichever configuration needs one
        public_url()
    if con is not None and (problems := delivery_problems(con)):
        raise ConfigurationError("; ".join(problems))


def delivery_problems(con: duckdb.DuckDBPyConnection) -> list[str]:
    """What would make every email of the configurations in effect fail, whoever it is for: for each pool in
    ENFORCED mode (the only one that notifies) and each of its configurations (the pool's, and each client's of its
    own) with ``Notify`` true for some level, a sender (``NotifyConfiguration.From``, else ``$RISKGATE_NOTIFY_FROM``)
    and, when one of its templates has feedback links (its own or the default ones), ``$RISKGATE_FEEDBACK_SECRET``
    and ``$RISKGATE_PUBLIC_URL``. An empty list when nothing is missing. (Such a failure used up one of the
    MAX_ATTEMPTS of each email due in every run, so that, once the setting was fixed, none was ever sent.)"""
    from ingest.store import has_table
    from risk.config import (AdvancedSecurityMode, address_problem, get_mode, known_pools, resolve, template_for,
                             unpooled_of)

    pools = known_pools(con)
    unpooled = unpooled_of(pools)
    if unpooled is not None and unpooled not in pools:
        pools.append(unpooled)
    configured = has_table(con, "risk_config_versions")
    no_sender: list[str] = []
    env_sender: list[str] = []  # the notifying configurations whose sender is $RISKGATE_NOTIFY_FROM
    with_links: list[str] = []
    for pool in pools:
        if get_mode(con, pool)[0] != AdvancedSecurityMode.ENFORCED:
            continue
        clients = [r[0] for r in con.execute(
            "SELECT DISTINCT client_id FROM risk_config_versions WHERE user_pool_id = ? AND client_id IS NOT NULL "
            "ORDER BY 1", [pool]).fetchall()] if configured else []
        for client in (None, *clients):
            config = resolve(con, pool, client)[0]
            ato = config.AccountTakeoverRiskConfiguration
            if ato is None or not ato.Actions.notifying():
                continue
            scope = f"pool {pool}" + (f" client {client}" if client else "")
            if not _configured_sender(ato.NotifyConfiguration):
                (env_sender if os.environ.get(NOTIFY_FROM_ENV, "").strip() else no_sender).append(scope)
            if any(uses_links(template_for(config, name)) for name in TEMPLATE_NAMES):
                with_links.append(scope)
    problems = []
    if no_sender:
        problems.append(f"the configuration of {', '.join(no_sender)} notifies (ENFORCED) but its "
                        f"NotifyConfiguration has no From and ${NOTIFY_FROM_ENV} is not set: set one of them")
    if env_sender and (problem := address_problem(sender := os.environ.get(NOTIFY_FROM_ENV, "").strip())):
        problems.append(f"${NOTIFY_FROM_ENV} {sender!r} {problem} (the sender of {', '.join(env_sender)})")
    if with_links:
        for check in (lambda: _secret(None), public_url):
            try:
                check()
            except ConfigurationError as exc:
                problems.append(f"{exc} (the emails of {', '.join(with_links)} carry feedback links)")
    return problems


def _configured_sender(notify_config: Any) -> str | None:
    """The NotifyConfiguration's From (an object or a mapping; None or empty: none, ``$RISKGATE_NOTIFY_FROM`` then)."""
    return _field(notify_config, "From", "from_", "from_address") if notify_config is not None else None


def _sign(payload: str, secret: bytes) -> str:
    return _b64(hmac.new(secret, _TOKEN_CONTEXT + payload.encode("ascii"), hashlib.sha256).digest())


def make_token(event_id: str, username: str, *, ttl: timedelta | None = None, now: datetime | None = None,
               secret: str | bytes | None = None) -> str:
    """A URL-safe token naming (event, user), valid for ``ttl`` (default ``RISKGATE_FEEDBACK_TTL`` or 7 days)."""
    key = _secret(secret)
    if not event_id or not username:
        raise ConfigurationError("a feedback token needs an event id and a username")
    ttl = ttl if ttl is not None else feedback_ttl_from_env()
    now = now or datetime.now(timezone.utc)
    expires = int((now + ttl).timestamp())
    body = json.dumps({"e": str(event_id), "u": str(username), "x": expires}, separators=(",", ":"), sort_keys=True)
    payload = _b64(body.encode("utf-8"))
    return f"{payload}.{_sign(payload, key)}"


def verify_token(token: str, *, now: datetime | None = None, secret: str | bytes | None = None) -> FeedbackClaims:
    """The claims of a token this installation signed; raises FeedbackTokenError otherwise."""
    key = _secret(secret)
    if not isinstance(token, str) or token.count(".") != 1:
        raise FeedbackTokenError("feedback token is malformed (expected PAYLOAD.SIGNATURE)")
    payload, sig = token.split(".")
    try:
        payload.encode("ascii")
        sig.encode("ascii")
    except UnicodeEncodeError:
        raise FeedbackTokenError("feedback token is malformed (not URL-safe base64)") from None
    if not hmac.compare_digest(_sign(payload, key), sig):
        raise FeedbackTokenError("feedback token signature does not match: it was altered or signed with another secret")
    try:
        claims = json.loads(_unb64(payload))
        event_id, username, expires = claims["e"], claims["u"], claims["x"]
    except (ValueError, KeyError, TypeError):
        raise FeedbackTokenError("feedback token is malformed (bad payload)") from None
    if not isinstance(event_id, str) or not isinstance(username, str) or not isinstance(expires, int):
        raise FeedbackTokenError("feedback token is malformed (bad claims)")
    expires_at = datetime.fromtimestamp(expires, timezone.utc)
    if (now or datetime.now(timezone.utc)) >= expires_at:
        raise FeedbackTokenError(f"feedback token expired at {expires_at.isoformat()}")
    return FeedbackClaims(event_id, username, expires_at)


#: what a URL may not hold (RFC 3986): blanks, quotes, angle brackets and the like
_NOT_IN_URL_RE = re.compile(r'[\s"<>\\^`{|}]')


def public_url(base_url: str | None = None) -> str:
    """The public base URL of the service (``$RISKGATE_PUBLIC_URL`` unless ``base_url``), without its trailing
    slash: an http(s) URL with a host and nothing after its path, since the feedback route (``/v1/feedback?...``)
    is appended to it. A query or fragment (the route would end up inside it: every link dead), user info, a bad
    port or characters no URL holds are refused naming the variable."""
    base = base_url if base_url is not None else os.environ.get(PUBLIC_URL_ENV, "")
    try:
        parts = urlsplit(base)
    except ValueError:  # an unbalanced IPv6 bracket (``http://[::1``)
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or CONTROL_CHARS_RE.search(base):
        if not base:
            raise ConfigurationError(
                f"{PUBLIC_URL_ENV} is not set: the one-click links need the public base URL of the riskgate "
                "service, e.g. https://risk.example.com"
            )
        shown = "" if "@" in base else f", got {base!r}"  # (user info may hold a password: not echoed)
        raise ConfigurationError(f"{PUBLIC_URL_ENV} must be an http(s) URL with a host{shown}")
    if "@" in parts.netloc:  # (not echoed: it may hold a password)
        raise ConfigurationError(f"{PUBLIC_URL_ENV} must not hold user info (user@ or user:password@ before the "
                                 "host): the links are sent to every user; give the service's public base URL only")
    if "?" in base or "#" in base:
        raise ConfigurationError(f"{PUBLIC_URL_ENV} must not have a query (?...) or fragment (#...): the links "
                                 f"append {FEEDBACK_PATH}?token=... to it, which would end up inside it; give the "
                                 f"base URL only, e.g. https://risk.example.com/riskgate, got {base!r}")
    if _NOT_IN_URL_RE.search(base):
        raise ConfigurationError(f"{PUBLIC_URL_ENV} holds characters a URL may not (blanks, quotes, <, >, \\, ^, `, "
                                 f"{{, |, }}; percent-encode them), got {base!r}")
    try:
        parts.port  # noqa: B018 - ValueError for a port that is not one
    except ValueError:
        raise ConfigurationError(f"{PUBLIC_URL_ENV} has a bad port, got {base!r}") from None
    return base.rstrip("/")


def feedback_links(token: str, base_url: str | None = None) -> tuple[str, str]:
    """The (valid, invalid) one-click links carrying ``token``."""
    base = public_url(base_url) + FEEDBACK_PATH
    return (
        f"{base}?{urlencode({'token': token, 'value': 'valid'})}",
        f"{base}?{urlencode({'token': token, 'value': 'invalid'})}",
    )


# -- rendering ---------------------------------------------------------------------------------------


class RenderedEmail(NamedTuple):
    subject: str
    html: str | None
    text: str | None


def template_parts(template: Any) -> tuple[str, str | None, str | None]:
    """(Subject, HtmlBody, TextBody) of a NotifyEmail given as an object or a mapping."""
    subject = _field(template, "Subject", "subject")
    html_body = _field(template, "HtmlBody", "html_body")
    text_body = _field(template, "TextBody", "text_body")
    if not subject:
        raise ConfigurationError("NotifyEmail.Subject is required")
    if not html_body and not text_body:
        raise ConfigurationError("NotifyEmail needs an HtmlBody or a TextBody")
    return str(subject), html_body and str(html_body), text_body and str(text_body)


def uses_links(template: Any) -> bool:
    """Whether the template asks for a feedback token or link (so a token must be made)."""
    text = " ".join(p or "" for p in template_parts(template))
    return any("{" + p + "}" in text for p in LINK_PLACEHOLDERS)


def render(template: Any, values: Mapping[str, Any]) -> RenderedEmail:
    """Fill the placeholders of a NotifyEmail; returns (subject, html, text).

    ``values`` maps placeholder names (``"ip-address"``, ...) to values; a
    placeholder with no value renders as ``unknown``. Substitution is a single
    pass, so a value that itself looks like ``{username}`` stays literal.
    """
    subject, html_body, text_body = template_parts(template)
    clean = {name: _clean(values.get(name)) or UNKNOWN for name in PLACEHOLDERS}

    def fill(body: str | None, escape: bool) -> str | None:
        if body is None:
            return None
        if escape:
            return _PLACEHOLDER_RE.sub(lambda m: html.escape(clean[m.group(1)], quote=True), body)
        return _PLACEHOLDER_RE.sub(lambda m: clean[m.group(1)], body)

    return RenderedEmail(_clean(fill(subject, False)), fill(html_body, True), fill(text_body, False))


def _fmt_time(value: Any) -> str | None:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return None if value is None else str(value)


def placeholder_values(event: Any, *, links: bool = True, base_url: str | None = None,
                       ttl: timedelta | None = None, now: datetime | None = None,
                       secret: str | bytes | None = None) -> dict[str, str | None]:
    """Placeholder values for an event (a mapping or object with the events table's column names).

    With ``links`` a feedback token is signed and the two one-click links are
    made (needs ``RISKGATE_FEEDBACK_SECRET`` and ``RISKGATE_PUBLIC_URL``).
    """
    event_id = _field(event, "event_id", "EventId")
    username = _field(event, "username", "UserName")
    values: dict[str, str | None] = {
        "username": username,
        "ip-address": _field(event, "client_ip", "ip_address", "IpAddress"),
        "city": _field(event, "city", "source_city", "City"),
        "country": _field(event, "country_name", "source_country", "country_iso", "Country"),
        "login-time": _fmt_time(_field(event, "creation_date", "CreationDate")),
        "device-name": _field(event, "device_name", "source_device_name", "DeviceName"),
        "event-id": event_id,
    }
    if links:
        token = make_token(str(event_id or ""), str(username or ""), ttl=ttl, now=now, secret=secret)
        valid, invalid = feedback_links(token, base_url)
        values.update({"feedback-token": token, "one-click-link-valid": valid, "one-click-link-invalid": invalid})
    return values


# -- the message -------------------------------------------------------------------------------------


def single_address(value: Any, what: str) -> str:
    """A header-safe single mail address ("Name <addr>" allowed); raises NotifyError naming ``what``."""
    from risk.config import address_problem  # the configuration's own rule: what validates can be sent

    text = "" if value is None else str(value)
    problem = address_problem(text)
    if problem:
        raise NotifyError(f"{what} {text!r} {problem}")
    return wire_address(text.strip())


def wire_address(text: str) -> str:
    """``text`` (one valid address, :func:`single_address`) with an internationalised domain in its ASCII form
    (IDNA, as DNS has it: ``exämple.com`` -> ``xn--exmple-cua.com``), so that only a non-ASCII local part needs
    a server that offers SMTPUTF8 (RFC 6531; ``smtplib`` then asks for it)."""
    domain = getaddresses([text])[0][1].rpartition("@")[2]
    at = text.rfind("@" + domain)
    if domain.isascii() or at < 0:
        return text
    return text[:at + 1] + domain.encode("idna").decode("ascii") + text[at + 1 + len(domain):]


def needs_smtputf8(msg: EmailMessage) -> bool:
    """Whether an address of ``msg`` has a non-ASCII local part (the message must then travel as UTF-8)."""
    return _utf8_address(msg) is not None


def _utf8_address(msg: EmailMessage) -> str | None:
    """The first address of ``msg`` (From, To, Reply-To) with a non-ASCII local part, if any."""
    return next((addr for h in ("From", "To", "Reply-To") for _name, addr in getaddresses(msg.get_all(h, []))
                 if not addr.isascii()), None)


def build_message(rendered: RenderedEmail, *, sender: str, recipient: str, reply_to: str | None = None,
                  event_id: str | None = None) -> EmailMessage:
    """A multipart (text + HTML) message; header values are single lines by construction."""
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["Subject"] = _clean(rendered.subject)
    msg["From"] = single_address(sender, "From")
    msg["To"] = single_address(recipient, "recipient")
    if reply_to:
        msg["Reply-To"] = single_address(reply_to, "ReplyTo")
    msg["Date"] = format_datetime(datetime.now(timezone.utc))
    # the sender's domain as the wire has it (IDNA: exämple.com -> xn--exmple-cua.com); a header must be ASCII
    domain = getaddresses([msg["From"]])[0][1].rpartition("@")[2] or None
    msg["Message-ID"] = make_msgid(domain=domain)
    if event_id:
        msg["X-Riskgate-Event-Id"] = _clean(event_id)
    if rendered.text is not None:
        msg.set_content(rendered.text)
        if rendered.html is not None:
            msg.add_alternative(rendered.html, subtype="html")
    else:
        msg.set_content(rendered.html, subtype="html")
    return msg


# -- delivery --------------------------------------------------------------------------------------


class Transport(Protocol):
    name: str

    def send(self, msg: EmailMessage, notification_id: str) -> tuple[str, str]:
        """Deliver; return (status, location). Raise NotifyError, smtplib.SMTPException or OSError on failure."""


def _env_bool(name: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigurationError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to send. The password is never shown in a repr."""

    host: str
    port: int | None = None  # default: 465 with ssl, 587 with starttls, else 25
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_SMTP_TIMEOUT
    ca_file: str | None = None  # extra CA bundle to trust (a private relay's certificate)

    @property
    def effective_port(self) -> int:
        return self.port or (465 if self.ssl else 587 if self.starttls else 25)

    @classmethod
    def from_env(cls, **overrides) -> SmtpSettings | None:
        """Settings from ``RISKGATE_SMTP_*`` (values in ``overrides`` win); None when no host is set."""
        host = overrides.pop("host", None) or os.environ.get(SMTP_HOST_ENV, "").strip()
        if not host:
            return None
        values: dict[str, Any] = {}
        raw_port = os.environ.get(SMTP_PORT_ENV, "").strip()
        if raw_port:
            if not (raw_port.isascii() and raw_port.isdigit()) or not 0 < int(raw_port) < 65536:
                raise ConfigurationError(f"{SMTP_PORT_ENV} must be a port number, got {raw_port!r}")
            values["port"] = int(raw_port)
        values["starttls"] = _env_bool(SMTP_STARTTLS_ENV)
        values["ssl"] = _env_bool(SMTP_SSL_ENV)
        values["username"] = os.environ.get(SMTP_USER_ENV) or None
        values["password"] = os.environ.get(SMTP_PASSWORD_ENV) or None
        raw_timeout = os.environ.get(SMTP_TIMEOUT_ENV, "").strip()
        if raw_timeout:
            try:
                values["timeout"] = float(raw_timeout)
            except ValueError:
                values["timeout"] = float("nan")
            if not 0 < values["timeout"] < float("inf"):  # (NaN too) a socket timeout must be positive and finite
                raise ConfigurationError(f"{SMTP_TIMEOUT_ENV} must be seconds, got {raw_timeout!r}") from None
        values["ca_file"] = os.environ.get(SMTP_CA_FILE_ENV) or None
        values.update(overrides)
        settings = cls(host=host, **values)
        if settings.ssl and settings.starttls:
            raise ConfigurationError(f"set {SMTP_SSL_ENV} or {SMTP_STARTTLS_ENV}, not both")
        if settings.username and not (settings.ssl or settings.starttls) and not is_loopback_host(settings.host):
            raise ConfigurationError(
                f"{SMTP_USER_ENV} is set and neither {SMTP_SSL_ENV} nor {SMTP_STARTTLS_ENV}: the SMTP login "
                f"(user and password) would travel unencrypted to {settings.host!r}; set {SMTP_SSL_ENV}=true or "
                f"{SMTP_STARTTLS_ENV}=true (only a relay on a loopback address, such as 127.0.0.1, may go without)")
        return settings


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` names this machine without a lookup: a loopback address (127.0.0.0/8, ::1, also in
    brackets) or ``localhost`` (RFC 6761: ``*.localhost`` too). A name that may resolve elsewhere is not."""
    import ipaddress

    name = host.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return name == "localhost" or name.endswith(".localhost")


class SmtpTransport:
    name = "smtp"

    def __init__(self, settings: SmtpSettings):
        self.settings = settings

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.settings.ca_file)

    def send(self, msg: EmailMessage, notification_id: str) -> tuple[str, str]:
        s = self.settings
        port = s.effective_port
        where = f"{s.host}:{port}"
        try:
            if s.ssl:
                client = smtplib.SMTP_SSL(s.host, port, timeout=s.timeout, context=self._context())
            else:
                client = smtplib.SMTP(s.host, port, timeout=s.timeout)
        except (OSError, smtplib.SMTPException) as exc:
            raise NotifyError(f"cannot connect to SMTP server {where}: {_why(exc)}") from exc
        try:
            try:
                if s.starttls:
                    try:
                        client.starttls(context=self._context())
                    except smtplib.SMTPNotSupportedError as exc:
                        raise NotifyError(f"SMTP server {where} does not offer STARTTLS, which "
                                          f"{SMTP_STARTTLS_ENV}=true asks for: {_why(exc)}") from exc
                if s.username:
                    try:
                        client.login(s.username, s.password or "")
                    except smtplib.SMTPNotSupportedError as exc:
                        raise NotifyError(f"SMTP server {where} does not offer AUTH (login), which {SMTP_USER_ENV} "
                                          f"asks for: {_why(exc)}") from exc
                try:
                    client.send_message(msg)  # with SMTPUTF8 when an address needs it
                except smtplib.SMTPNotSupportedError as exc:
                    wide = _utf8_address(msg)
                    if wide:
                        raise NotifyError(f"SMTP server {where} does not offer SMTPUTF8, which the non-ASCII address "
                                          f"{wide} needs: {_why(exc)}") from exc
                    raise NotifyError(f"SMTP server {where} does not support what sending needs: {_why(exc)}") from exc
            finally:
                _quit_quietly(client)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()), (0, b""))
            raise NotifyError(f"SMTP server {where} refused the recipient: {code} {_text(text)}") from exc
        except smtplib.SMTPResponseException as exc:
            raise NotifyError(f"SMTP server {where} refused: {exc.smtp_code} {_text(exc.smtp_error)}") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise NotifyError(f"sending through SMTP server {where} failed: {_why(exc)}") from exc
        return "sent", str(msg["Message-ID"])


def _quit_quietly(client: smtplib.SMTP) -> None:
    """Say QUIT and close, whatever the answer. Once the server has answered 250 to the message's DATA it has
    taken the message: a QUIT answered otherwise than 221, or a connection dropped or timed out meanwhile, must
    not make it a failure (the next run would send it again: a second email). ``smtplib.SMTP.__exit__`` raises
    then."""
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        pass
    finally:
        client.close()


def _text(value: bytes | str) -> str:
    return _clean(value.decode("utf-8", "replace") if isinstance(value, bytes) else value)


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return _clean(text)


class OutboxTransport:
    """Writes each message as ``<time>-<notification id>.eml`` into a folder (created when missing, mode 0700).
    A message holds a feedback token (replayable until it expires): its file is readable by its owner only
    (mode 0600)."""

    name = "outbox"

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def send(self, msg: EmailMessage, notification_id: str) -> tuple[str, str]:
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # an existing folder is left as it is
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            path = self.folder / f"{stamp}-{notification_id}.eml"
            tmp = path.with_suffix(".eml.tmp")
            policy = SMTP_POLICY.clone(utf8=True) if needs_smtputf8(msg) else SMTP_POLICY  # as SMTPUTF8 would
            data = msg.as_bytes(policy=policy)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), 0o600)  # also a file left by an earlier attempt
                fh.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            raise NotifyError(f"cannot write to outbox {self.folder}: {exc.strerror or exc}") from exc
        return "outbox", str(path)


def default_transport() -> Transport:
    """SMTP when ``RISKGATE_SMTP_HOST`` is set, else the outbox folder (``RISKGATE_OUTBOX`` or ./outbox)."""
    settings = SmtpSettings.from_env()
    if settings is not None:
        return SmtpTransport(settings)
    return OutboxTransport(os.environ.get(OUTBOX_ENV) or DEFAULT_OUTBOX)


# -- the store -----------------------------------------------------------------------------------

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "risk_notify_0001_notifications",
        (
            """CREATE TABLE IF NOT EXISTS notifications (
                 notification_id VARCHAR PRIMARY KEY,
                 event_id VARCHAR,
                 username VARCHAR,
                 recipient VARCHAR,
                 template VARCHAR,
                 subject VARCHAR,
                 status VARCHAR,
                 reason VARCHAR,
                 transport VARCHAR,
                 location VARCHAR,
                 created_at TIMESTAMPTZ
               )""",
        ),
    ),
    # A notification is a row from the moment it is due (status 'pending', in the transaction of the assessment
    # that made it due), claimed by whoever will deliver it; delivery turns it into sent, outbox or failed.
    Migration(
        "risk_notify_0002_pending",
        ("ALTER TABLE notifications ADD COLUMN IF NOT EXISTS claimed_by VARCHAR",),
    ),
    # When a notification's delivery was attempted (its outcome recorded), apart from when it became due
    # (``created_at``, a pending row's): the waits between the attempts of a failed one count from the attempt.
    Migration(
        "risk_notify_0003_attempted_at",
        ("ALTER TABLE notifications ADD COLUMN IF NOT EXISTS attempted_at TIMESTAMPTZ",),
    ),
    # When a pending row was last claimed (reserved, or taken over from a claimant that is gone): the claimant of
    # another host (whose process cannot be looked at from here: a container has a hostname of its own, a new one
    # when it is started again) is gone once its newest claim is older than OTHER_HOST_STALE_AFTER.
    Migration(
        "risk_notify_0004_claimed_at",
        ("ALTER TABLE notifications ADD COLUMN IF NOT EXISTS claimed_at TIMESTAMPTZ",),
    ),
)


@dataclass(frozen=True)
class NotificationRecord:
    notification_id: str
    event_id: str | None
    username: str | None
    recipient: str | None
    template: str
    subject: str | None
    status: str  # pending | sent | outbox | failed
    reason: str | None
    transport: str | None
    location: str | None  # Message-ID (smtp) or .eml path (outbox)
    created_at: datetime

    def as_json(self) -> dict:
        d = dict(self.__dict__)
        d["created_at"] = self.created_at.isoformat()
        return d


_RECORD_COLUMNS = tuple(NotificationRecord.__dataclass_fields__)


def record_notification(con: duckdb.DuckDBPyConnection, rec: NotificationRecord) -> None:
    """Store ``rec`` as a row of its own (a delivery attempted: ``attempted_at`` is its ``created_at``)."""
    con.execute(
        f"INSERT INTO notifications ({', '.join(_RECORD_COLUMNS)}, attempted_at) "
        f"VALUES ({', '.join('?' * len(_RECORD_COLUMNS))}, ?)",
        [*(getattr(rec, c) for c in _RECORD_COLUMNS), rec.created_at if rec.status != "pending" else None],
    )


def notifications_for_event(con: duckdb.DuckDBPyConnection, event_id: str) -> list[NotificationRecord]:
    rows = con.execute(
        f"SELECT {', '.join(_RECORD_COLUMNS)} FROM notifications WHERE event_id = ? ORDER BY created_at",
        [event_id],
    ).fetchall()
    return [NotificationRecord(*row) for row in rows]


def failed_attempts(con: duckdb.DuckDBPyConnection, event_id: str) -> int:
    """How many attempts to send an email about this event failed (its ``failed`` rows)."""
    return int(con.execute("SELECT count(*) FROM notifications WHERE event_id = ? AND status = 'failed'",
                           [event_id]).fetchall()[0][0])


def reason_for_log(rec: NotificationRecord) -> str:
    """``rec``'s reason fit for a log line: the recipient's address (personal data; a server's refusal or an
    address check may quote it) is replaced by ``[recipient]``. Nothing else of the message is in a reason: no
    token, link or secret."""
    reason = rec.reason or ""
    if rec.recipient:
        forms = {rec.recipient, *(addr for _name, addr in getaddresses([rec.recipient]) if addr)}
        for form in list(forms):
            try:
                forms.add(wire_address(form))  # (a server quotes the domain as the wire has it)
            except (ValueError, UnicodeError):
                pass
        # as an address check quotes it ({text!r}: a tab or line break escaped), without its quotes
        forms |= {repr(form)[1:-1] for form in forms}
        for form in sorted((f for f in forms if f.strip()), key=len, reverse=True):
            reason = re.sub(re.escape(form), "[recipient]", reason, flags=re.IGNORECASE)
    return reason


def already_notified(con: duckdb.DuckDBPyConnection, event_id: str) -> bool:
    """Whether an email about this event was sent, written to the outbox, or is pending (reserved, to be sent by
    whoever claimed it), whatever its template: a user hears about a sign-in at most once, also when rescoring it
    under another configuration decides anew."""
    rows = con.execute(
        f"SELECT count(*) FROM notifications WHERE event_id = ? AND status IN {_HELD_SQL}", [event_id],
    ).fetchall()
    return bool(rows[0][0])


# -- pending notifications: reserved when due, delivered by whoever claimed them ----------------------------------
#
# A notification is a ``pending`` row from the moment it is due, written in the transaction of the assessment that
# made it due, and ``claimed_by`` the delivering run: ``host:pid:start/name`` (start: the process's start time from
# /proc, so that a reused pid is not mistaken for it). Nothing is reserved for an event that has a pending, sent or
# outbox row: that is what keeps it to one email per event, also while another process's send is in flight.
# A later run (``riskgate score --notify``, the service at start and then every few minutes) claims what is owed:
# pending rows whose claimant is gone (a run killed, a service stopped with notifications still queued) and events
# whose notifications all failed, fewer than MAX_ATTEMPTS times, that their current assessment still makes due.
# :func:`unsent` counts what is pending and what is to be tried again (the service's /healthz).

#: failed attempts after which an event's notification is no longer tried again by later runs
MAX_ATTEMPTS = 3
#: how long after its first failed attempt a notification is still tried again: an email about a sign-in days
#: old helps nobody (and an upgrade must not send a store's old failures)
RETRY_WITHIN = timedelta(hours=24)
#: how long after an event's k-th failed attempt the next one may be made (the last value for any later one): a
#: run that claims what is owed every few minutes (the service) would otherwise spend every attempt within a short
#: outage of the mail server
RETRY_AFTER = (timedelta(minutes=5), timedelta(hours=1))
#: the environment variable that sets those waits: seconds, comma-separated (``300,3600``; ``0``: none)
RETRY_AFTER_ENV = "RISKGATE_NOTIFY_RETRY_AFTER"


def retry_after_from_env() -> tuple[timedelta, ...]:
    """The waits between the attempts of a failed notification: ``$RISKGATE_NOTIFY_RETRY_AFTER``, else
    :data:`RETRY_AFTER`. A bad value is refused naming the variable."""
    raw = os.environ.get(RETRY_AFTER_ENV, "").strip()
    if not raw:
        return RETRY_AFTER
    waits = []
    for part in raw.split(","):
        try:
            value = float(part)
        except ValueError:
            value = float("nan")
        if not (value >= 0 and value != float("inf")):
            raise NotifyError(f"{RETRY_AFTER_ENV} must be seconds, comma-separated (e.g. 300,3600), got {raw!r}")
        waits.append(timedelta(seconds=value))
    return tuple(waits)


_HELD_SQL = "('pending', 'sent', 'outbox')"
#: the assessments ``a`` of events whose notifications all failed, fewer than N times (parameter: N - 1), the
#: first of them since a cutoff (parameters: the cutoff, before and after N - 1), and that still have a notification
#: due: what :func:`claim_owed` tries again. Only events with a failed row since the cutoff are grouped (their
#: other rows included), so the scan is bounded by the recent failures, not by the table's history.
_RETRYABLE_FROM = f"""assessments a
    JOIN (SELECT event_id, count(*) FILTER (WHERE status = 'failed') AS failed,
                 count(*) FILTER (WHERE status IN {_HELD_SQL}) AS held,
                 min(coalesce(attempted_at, created_at)) FILTER (WHERE status = 'failed') AS first_failed,
                 max(coalesce(attempted_at, created_at)) FILTER (WHERE status = 'failed') AS last_failed
          FROM notifications
          WHERE event_id IN (SELECT event_id FROM notifications
                             WHERE status = 'failed' AND coalesce(attempted_at, created_at) >= ?)
          GROUP BY event_id) n USING (event_id)
    WHERE a.notification IS NOT NULL AND n.held = 0 AND n.failed BETWEEN 1 AND ? AND n.first_failed >= ?"""
#: appended to :data:`_RETRYABLE_FROM` by a claim: the event's last failed attempt is old enough for the next one
#: (parameter: the latest time allowed after 1, 2, ... failures, as a list; ``n.last_failed`` is that attempt's)
_RETRY_DUE = " AND n.last_failed <= list_extract(CAST(? AS TIMESTAMPTZ[]), least(n.failed, ?))"
#: a pending row (parameters: created_at, claimed_by, claimed_at) for each assessment ``a`` of the table named after it
_PENDING_FROM = """INSERT INTO notifications (notification_id, event_id, template, status, created_at, claimed_by,
                                           claimed_at)
    SELECT replace(CAST(gen_random_uuid() AS VARCHAR), '-', ''), a.event_id, a.notification, 'pending', ?, ?, ?
    FROM"""
_live: dict[str, int] = {}  # claimants of this process that are still going to deliver what they claimed
_live_lock = threading.Lock()


def _start_time(pid: int) -> str:
    """The start time of process ``pid`` (clock ticks since boot, /proc/PID/stat field 22); '' when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold blanks and parentheses
    return fields[19] if len(fields) > 19 else ""


_process: tuple[int, str] | None = None


def this_process() -> str:
    """``host:pid:start`` of this process (read once per process), as :func:`process_alive` checks it."""
    global _process
    pid = os.getpid()
    if _process is None or _process[0] != pid:  # a forked child is a process of its own
        _process = (pid, f"{socket.gethostname()}:{pid}:{_start_time(pid)}")
    return _process[1]


def new_claimant(name: str) -> str:
    """A claimant name of this process for one run (``name`` says what it is, e.g. ``score``)."""
    return f"{this_process()}/{name}-{uuid.uuid4().hex[:12]}"


def service_claimant() -> str:
    """The claimant of the service's notifications in this process (the inline scorer's writes reserve for it)."""
    return f"{this_process()}/service"


def hold(claimant: str) -> None:
    """Say that ``claimant`` (of this process) delivers what it claims until :func:`release`."""
    with _live_lock:
        _live[claimant] = _live.get(claimant, 0) + 1


def release(claimant: str) -> None:
    """``claimant`` delivers nothing more: what it still has pending is owed, for the next run to claim."""
    with _live_lock:
        n = _live.get(claimant, 0) - 1
        if n > 0:
            _live[claimant] = n
        else:
            _live.pop(claimant, None)


def claimant_alive(claimant: str | None, seen_at: datetime | None = None) -> bool:
    """Whether ``claimant`` may still deliver what it claimed: in this process, while it holds it; else while its
    process runs (another host's: :func:`process_alive`, by ``seen_at``, its newest claim)."""
    if not claimant:
        return False
    proc, _, _name = claimant.partition("/")
    if proc == this_process():
        with _live_lock:
            return claimant in _live
    return process_alive(proc, seen_at)


#: How long a process of another host may show no sign of life (a score run's progress, a notification claimed)
#: before it is taken as gone: it cannot be looked at from here, and a container has a hostname of its own (a new
#: one each time it is started again), so a killed one would otherwise hold what it held for good.
OTHER_HOST_STALE_AFTER = timedelta(hours=1)


def process_alive(proc: str | None, seen_at: datetime | None = None) -> bool:
    """Whether the process ``host:pid:start`` (:func:`this_process` of it) still runs: a process of this host
    runs while its pid does with the same start time (a pid used again is another process); another host's, which
    cannot be looked at, while its last sign of life ``seen_at`` is less than :data:`OTHER_HOST_STALE_AFTER` old
    (always, when ``seen_at`` is not known)."""
    if not proc:
        return False
    host, _, rest = proc.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname():
        return seen_at is None or seen_at >= datetime.now(timezone.utc) - OTHER_HOST_STALE_AFTER
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except (ValueError, OverflowError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process: it runs
        pass
    except OSError:
        return False
    return not start or _start_time(pid) in ("", start)


def reserve(con: duckdb.DuckDBPyConnection, assessments: str, claimant: str) -> None:
    """Make a ``pending`` row, claimed by ``claimant``, for each row of the table or view ``assessments`` (columns
    ``event_id``, ``notification``) with a notification due, unless its event has a pending, sent or outbox row,
    or ``claimant`` tried it already (a run tries an event once). Meant for the transaction that writes those
    assessments (``risk.score._write``, which gives it the first assessments only: a rescore makes nothing due)."""
    from ingest.store import quote_ident

    con.execute(
        f"""{_PENDING_FROM} {quote_ident(assessments)} a
            WHERE a.notification IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM notifications n
                              WHERE n.event_id = a.event_id AND (n.status IN {_HELD_SQL} OR n.claimed_by = ?))""",
        [now := datetime.now(timezone.utc), claimant, now, claimant],
    ).fetchall()


def claim_owed(con: duckdb.DuckDBPyConnection, claimant: str, *, max_attempts: int = MAX_ATTEMPTS,
               retry_within: timedelta = RETRY_WITHIN, retry_after: Sequence[timedelta] | None = None) -> int:
    """Claim for ``claimant`` what earlier runs owe: pending rows whose claimant is gone, and a new pending row
    for each event whose notifications all failed, fewer than ``max_attempts`` times, the first of them less
    than ``retry_within`` ago, the last of them at least ``retry_after[k - 1]`` ago after k failures (the last
    value for more; default :func:`retry_after_from_env`), and whose assessment still has a notification due
    (with that template). Returns how many rows it claimed."""
    retry_after = retry_after_from_env() if retry_after is None else tuple(retry_after)
    if not retry_after:
        raise ValueError("retry_after needs at least one wait")
    claimants = con.execute(
        "SELECT claimed_by, max(coalesce(claimed_at, created_at)) FROM notifications WHERE status = 'pending' "
        "GROUP BY claimed_by").fetchall()
    gone = [c for c, seen in claimants if c is not None and c != claimant and not claimant_alive(c, seen)]
    now = datetime.now(timezone.utc)
    with _live_lock:
        mine = list(_live)  # this process's claimants that still deliver: a sign of life for other hosts to see
    con.execute("BEGIN TRANSACTION")
    try:
        if mine:  # (the service claims what is owed every few minutes: its queued rows never look abandoned)
            con.execute("UPDATE notifications SET claimed_at = ? WHERE status = 'pending' "
                        "AND list_contains(CAST(? AS VARCHAR[]), claimed_by)", [now, mine]).fetchall()
        taken = con.execute(
            "UPDATE notifications SET claimed_by = ?, claimed_at = ? WHERE status = 'pending' "
            "AND (claimed_by IS NULL OR list_contains(CAST(? AS VARCHAR[]), claimed_by))",
            [claimant, now, gone],
        ).fetchall()[0][0]
        cutoff = now - retry_within
        retried = con.execute(f"{_PENDING_FROM} {_RETRYABLE_FROM} {_RETRY_DUE}",
                              [now, claimant, now, cutoff, max_attempts - 1, cutoff,
                               [now - wait for wait in retry_after], len(retry_after)]).fetchall()[0][0]
        con.execute("COMMIT")
    except BaseException:
        rollback(con)
        raise
    return int(taken) + int(retried)


def unsent(con: duckdb.DuckDBPyConnection, *, max_attempts: int = MAX_ATTEMPTS,
           retry_within: timedelta = RETRY_WITHIN) -> dict[str, int]:
    """The notifications the store holds unsent, in one query: ``pending``, the pending rows (reserved or claimed
    and not delivered yet: queued, in flight, or left by a run that is gone), and ``to_retry``, the events whose
    notifications all failed and that :func:`claim_owed` (with the same limits) will try again, now or once the
    wait after their last attempt (``RETRY_AFTER``) is over."""
    cutoff = datetime.now(timezone.utc) - retry_within
    pending, to_retry = con.execute(
        f"""SELECT (SELECT count(*) FROM notifications WHERE status = 'pending'),
                   (SELECT count(*) FROM {_RETRYABLE_FROM})""",
        [cutoff, max_attempts - 1, cutoff],
    ).fetchall()[0]
    return {"pending": int(pending), "to_retry": int(to_retry)}


def claimed(con: duckdb.DuckDBPyConnection, claimant: str) -> list[tuple[str, str, str]]:
    """(notification id, event id, template) of the pending rows ``claimant`` holds, oldest first."""
    return [tuple(r) for r in con.execute(
        "SELECT notification_id, event_id, template FROM notifications WHERE status = 'pending' AND claimed_by = ? "
        "ORDER BY created_at, event_id", [claimant]).fetchall()]


def complete(con: duckdb.DuckDBPyConnection, rec: NotificationRecord, claimant: str) -> None:
    """Turn the pending row ``claimant`` holds for ``rec``'s event into ``rec``'s outcome (sent, outbox or failed);
    record ``rec`` as a row of its own when there is none (e.g. its reservation was not written)."""
    updated = con.execute(
        """UPDATE notifications SET username = ?, recipient = ?, template = ?, subject = ?, status = ?, reason = ?,
                  transport = ?, location = ?, attempted_at = ?
           WHERE status = 'pending' AND claimed_by = ? AND event_id = ?""",
        [rec.username, rec.recipient, rec.template, rec.subject, rec.status, rec.reason, rec.transport, rec.location,
         rec.created_at, claimant, rec.event_id],
    ).fetchall()[0][0]
    if not updated:
        record_notification(con, rec)


def user_email(con: duckdb.DuckDBPyConnection, username: str, user_pool_id: str | None = None) -> str | None:
    """The email of the user ``username`` of ``user_pool_id`` (None: the pool of events without one) from the
    users table (None when the user or the address is unknown). A username is one user per pool."""
    from ingest.users import get_user
    from risk.config import unpooled_pool

    user = get_user(con, username, user_pool_id, unpooled=unpooled_pool(con))
    return (user or {}).get("email") or None


# -- the whole step ---------------------------------------------------------------------------------


def notify(con: duckdb.DuckDBPyConnection, event: Any, template_name: str, template: Any | None, notify_config: Any,
           recipient: str | None = None, *, transport: Transport | None = None, base_url: str | None = None,
           ttl: timedelta | None = None, record: bool = True, notification_id: str | None = None
           ) -> NotificationRecord:
    """Render ``template`` for ``event``, deliver it, and record the outcome. Never raises on a failed delivery.

    ``template_name`` is BlockEmail, NoActionEmail or MfaEmail; ``template`` None
    takes that template from ``notify_config``, which also gives From (else
    ``RISKGATE_NOTIFY_FROM``) and ReplyTo (SourceArn is not used: delivery is by
    SMTP or the outbox). The recipient is
    ``recipient`` or else the user's email in the users table. With ``record=False`` the
    outcome is only returned (the caller records it with :func:`record_notification`), and
    ``con`` is not used when ``recipient`` is given (``""``: no address known). ``notification_id`` names the
    record (the id of the pending row it completes: :func:`complete`); default a new one.
    """
    nid = notification_id or uuid.uuid4().hex
    event_id = _field(event, "event_id", "EventId")
    username = _field(event, "username", "UserName")
    subject: str | None = None
    status, reason, where, used = "failed", None, None, None
    try:
        if template_name not in TEMPLATE_NAMES:
            raise ConfigurationError(f"template {template_name!r} is not one of {', '.join(TEMPLATE_NAMES)}")
        if template is None:
            template = _field(notify_config, template_name) if notify_config is not None else None
            if template is None:
                raise NotifyError(f"NotifyConfiguration has no {template_name} template")
        subject = _clean(template_parts(template)[0])
        if recipient is None and username and con is not None:
            recipient = user_email(con, str(username), _field(event, "user_pool_id", "UserPoolId"))
        if not recipient:
            raise NotifyError(NO_ADDRESS)
        sender = _configured_sender(notify_config) or os.environ.get(NOTIFY_FROM_ENV)
        if not sender:
            raise NotifyError(f"NotifyConfiguration has no From address (nor is {NOTIFY_FROM_ENV} set)")
        reply_to = _field(notify_config, "ReplyTo", "reply_to") if notify_config is not None else None
        values = placeholder_values(event, links=uses_links(template), base_url=base_url, ttl=ttl)
        rendered = render(template, values)
        subject = rendered.subject
        msg = build_message(rendered, sender=sender, recipient=recipient, reply_to=reply_to,
                            event_id=event_id and str(event_id))
        transport = transport or default_transport()
        used = transport.name
        status, where = transport.send(msg, nid)
    except RiskgateError as exc:
        reason = str(exc)
    except (smtplib.SMTPException, OSError, ValueError) as exc:  # a transport outside this module
        reason = f"delivery failed: {_why(exc)}"
    rec = NotificationRecord(
        notification_id=nid,
        event_id=None if event_id is None else str(event_id),
        username=None if username is None else str(username),
        recipient=recipient,
        template=str(template_name),
        subject=subject,
        status=status,
        reason=reason,
        transport=used,
        location=where,
        created_at=datetime.now(timezone.utc),
    )
    if record:
        record_notification(con, rec)
    return rec
