"""One well-formed riskgate JSON-lines record to a canonical, enriched event, in plain Python.

The readers and ``ingest.enrich`` work set-wise in DuckDB SQL: right for a
file of a million lines, but each statement costs milliseconds to plan, too
much for a sign-in waiting for its answer (``risk.inline``). :func:`canonical`
does the same for one record as ``riskgate ingest`` does for one line of a
riskgate JSON-lines file, through the same Python pieces (client IP
resolution, agent parsing, GeoIP lookup, of the same :class:`Enricher`).

It only takes records it is sure about: every field of the expected JSON
type, no unknown or null field, no labels, a time in plain ISO 8601 form,
headers within the limits, a valid address. For anything else it returns
None, and the caller takes the SQL path, which gives every refusal its
precise reason. ``tests/test_inline_one.py`` checks that the rows equal the
SQL path's, column for column.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone

from ingest.context import resolve_client_ip_from
from ingest.enrich import (
    MAX_FUTURE,
    MAX_HEADER_VALUE,
    MAX_HEADERS,
    MAX_HEADERS_TOTAL,
    MIN_TIME,
    STABLE_HEADERS,
    Enricher,
)
from ingest.geo import EMPTY
from ingest.schema import (
    BLANK,
    CHALLENGE_NAMES,
    CHALLENGE_RESPONSES,
    EVENT_COLUMNS,
    EVENT_ID_PATTERN,
    EVENT_RESPONSE_ALIASES,
    EVENT_TYPES,
    short_digest,
    user_pool_id_problem,
    username_problem,
)
from ingest.sources.riskgate_jsonl import FIELDS, KNOWN_KEYS

_EVENT_ID = re.compile(EVENT_ID_PATTERN, re.ASCII)
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")
# the reader's fields (riskgate_jsonl.FIELDS): records with labels take the reader's path
_TOP = set(KNOWN_KEYS) - {"Labels"}
_STRINGS = tuple(f.name for f in FIELDS if "." not in f.name and f.kind == "string")
_CONTEXT = {f.name.split(".", 1)[1] for f in FIELDS if f.name.startswith("ContextData.")}
_CONTEXT_REQUIRED = {f.name.split(".", 1)[1] for f in FIELDS if f.required_if == "ContextData"}


def _pairs(value, a: str, b: str) -> list[tuple[str, str]] | None:
    """A list of {a: str, b: str} objects as pairs; None when it is anything else."""
    if not isinstance(value, list):
        return None
    out = []
    for item in value:
        if not isinstance(item, dict) or set(item) != {a, b}:
            return None
        x, y = item[a], item[b]
        if not isinstance(x, str) or not isinstance(y, str):
            return None
        out.append((x, y))
    return out


def _time(value) -> datetime | None:
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t.astimezone(timezone.utc)


def canonical(record: dict, enricher: Enricher, *, source_format: str, source_file: str, source_line: int,
              now: datetime | None = None) -> dict | None:
    """The event row (``EVENT_COLUMNS``) ``riskgate ingest`` would store for ``record``; None if not sure."""
    if not isinstance(record, dict) or not set(record) <= _TOP or any(v is None for v in record.values()):
        return None
    for name in _STRINGS:
        if name in record and not isinstance(record[name], str):
            return None
    event_id, username = record.get("EventId"), record.get("Username")
    if event_id is None or not _EVENT_ID.fullmatch(event_id):
        return None
    if username_problem(username):  # the batch's rule (ingest.enrich)
        return None
    if record.get("UserPoolId") and user_pool_id_problem(record["UserPoolId"]):  # "" is no pool, as in a batch
        return None
    if record.get("EventType") not in EVENT_TYPES or record.get("EventResponse") not in EVENT_RESPONSE_ALIASES:
        return None
    created = _time(record.get("CreationDate"))
    now = now or datetime.now(timezone.utc)
    if created is None or created < MIN_TIME or created > now + MAX_FUTURE:
        return None
    challenges = None
    if "ChallengeResponses" in record:
        challenges = _pairs(record["ChallengeResponses"], "ChallengeName", "ChallengeResponse")
        if challenges is None or any(a not in CHALLENGE_NAMES or b not in CHALLENGE_RESPONSES for a, b in challenges):
            # (a value out of Cognito's: the batch's "ChallengeResponses[0].ChallengeName ... is not one of")
            return None
    rtt = record.get("RoundTripTimeMs")
    if rtt is not None and (isinstance(rtt, bool) or not isinstance(rtt, (int, float)) or not math.isfinite(rtt)):
        return None  # (NaN, Infinity, 1e400: the reader's "RoundTripTimeMs must be a finite number")
    compromised = record.get("CompromisedCredentialsDetected")
    if compromised is not None and not isinstance(compromised, bool):
        return None

    ctx = record.get("ContextData")
    ip_address = server_name = server_path = encoded = None
    headers: list[tuple[str, str]] | None = None
    if ctx is not None:
        if not isinstance(ctx, dict) or not set(ctx) <= _CONTEXT or not _CONTEXT_REQUIRED <= set(ctx):
            return None
        ip_address, server_name, server_path = ctx["IpAddress"], ctx["ServerName"], ctx["ServerPath"]
        encoded = ctx.get("EncodedData")
        if not all(isinstance(v, str) for v in (ip_address, server_name, server_path)) or not ip_address.strip(BLANK):
            return None  # (a blank IpAddress: the reader's "is required when ContextData is present")
        if encoded is not None and not isinstance(encoded, str):
            return None
        headers = _pairs(ctx["HttpHeaders"], "headerName", "headerValue")
        if headers is None or len(headers) > MAX_HEADERS:
            return None
        lengths = [len(v.encode("utf-8")) for _, v in headers]
        if (lengths and max(lengths) > MAX_HEADER_VALUE) or (
                sum(lengths) + sum(len(n.encode("utf-8")) for n, _ in headers) > MAX_HEADERS_TOTAL):
            return None

    lower = [(n.lower(), v) for n, v in headers or ()]

    def first(name: str) -> str | None:
        return next((v for n, v in lower if n == name), None)

    def every(name: str) -> str | None:
        vals = [v for n, v in lower if n == name]
        return ", ".join(vals) if vals else None

    policy = enricher.proxies  # only the forwarding header it names is read, as in ingest.enrich
    ip = resolve_client_ip_from(ip_address, every(policy.header.lower()), policy)
    if not ip.ip_address_valid:
        return None
    user_agent = first("user-agent")
    if user_agent is not None and not user_agent.strip(BLANK):
        user_agent = None  # blank is none, as ingest.enrich has it
    enricher.ready()  # (its warm-up thread sets up the agent parser and time-zone finder too)
    agent = enricher.agents.parse_many([user_agent])[0]
    g = enricher.geo.lookup(ip.ip) if enricher.geo is not None else EMPTY
    if encoded:
        fingerprint, fp_source = "ed-" + short_digest(encoded), "EncodedData"
    elif user_agent is not None:
        stable = "\x1f".join([user_agent] + [first(h) or "" for h in STABLE_HEADERS])
        fingerprint, fp_source = "hd-" + short_digest(stable), "headers"
    else:
        fingerprint = fp_source = None
    row = {
        "event_id": event_id,
        "user_pool_id": record.get("UserPoolId") or None,
        "client_id": record.get("ClientId"),
        "username": username,
        "user_sub": record.get("UserSub"),
        "event_type": record["EventType"],
        "event_response": EVENT_RESPONSE_ALIASES[record["EventResponse"]],
        "creation_date": created,
        "challenge_responses": None if challenges is None else [
            {"challenge_name": a, "challenge_response": b} for a, b in challenges],
        "ip_address": ip_address,
        "server_name": server_name,
        "server_path": server_path,
        "http_headers": None if headers is None else [{"header_name": a, "header_value": b} for a, b in headers],
        "encoded_data": encoded,
        "has_context_data": ctx is not None,
        "user_agent_source": None,
        "rtt_ms": None if rtt is None else float(rtt),
        "compromised_credentials": compromised,
        "source_country": None, "source_region": None, "source_city": None, "source_asn": None,
        "source_device_name": None,
        "extra": None,
        "source_format": source_format,
        "source_file": source_file,
        "source_line": source_line,
        "client_ip": ip.ip,
        "client_ip_source": ip.source,
        "ip_version": ip.version,
        "ip_prefix": ip.prefix,
        "user_agent": user_agent,
        "browser_family": agent.browser_family,
        "browser_version": agent.browser_version,
        "os_family": agent.os_family,
        "os_version": agent.os_version,
        "device_type": agent.device_type,
        "device_name": agent.device_name,
        "device_fingerprint": fingerprint,
        "device_fingerprint_source": fp_source,
        "country_iso": g.country_iso,
        "country_name": g.country_name,
        "region": g.region,
        "city": g.city,
        "latitude": g.latitude,
        "longitude": g.longitude,
        "time_zone": g.time_zone,
        "asn": g.asn,
        "as_org": g.as_org,
        "geo_source": "lookup" if g.found else "none",
    }
    assert list(row) == EVENT_COLUMNS, "ingest.one is out of step with EVENT_SCHEMA"
    return row
