"""A user's sign-in history as Cognito's AdminListUserAuthEvents returns it, from the store.

Newest first; ``MaxResults`` 0..60 where 0 (or absent) means 60; ``NextToken``
is an opaque, URL-safe token naming the position after the last event
returned, bound to the user: the username in its user pool (a token of another user, or of the same username
in another pool, is refused).
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

import duckdb

from ingest.errors import RiskgateError
from ingest.schema import offset_text
from risk.feedback import LATEST_FEEDBACK_SQL, shown_response_sql

MAX_RESULTS = 60
#: The longest ``NextToken`` accepted, far above the longest this module writes (base64 of the user pool id -- at
#: most 55 characters --, the username -- at most 128 characters, ingest's limit, each written by ``json.dumps`` as
#: at most 12 ASCII characters --, the time and an event id of at most 50): a longer one is refused before it is
#: decoded.
MAX_TOKEN_CHARS = 4096


class UserNotFoundError(RiskgateError):
    """The user has no events and is not in the users table."""


class InvalidParameterError(RiskgateError):
    """A parameter is out of range or a token is not one of ours."""


def _encode_token(pool: str | None, username: str, created: datetime, event_id: str) -> str:
    """The position after (created, event_id) in the listing of ``username`` of ``pool`` (None: the listing of
    every pool's, the CLI's): a username is one user per pool, as in Cognito."""
    raw = json.dumps([pool or "", username, created.astimezone(timezone.utc).isoformat(), event_id],
                     separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_token(token: str, pool: str | None, username: str) -> tuple[datetime, str]:
    """(time, event id) of the position a token of :func:`_encode_token` names; InvalidParameterError for anything
    else (every part is checked: a forged token must not reach the query). A hostile token is refused the same way,
    never an exception of its own: one over :data:`MAX_TOKEN_CHARS` before it is decoded, and one whose JSON nests
    too deep for the parser (``json.loads`` raises RecursionError for ``[[[[...``)."""
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidParameterError(f"NextToken {token[:40]!r}... is not a valid token: it is {len(token):,} "
                                    f"characters long, more than {MAX_TOKEN_CHARS:,}")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        parts = json.loads(raw)
        if not (isinstance(parts, list) and len(parts) == 4 and all(isinstance(p, str) for p in parts)):
            raise ValueError("not four strings")
        token_pool, user, created, event_id = parts
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError("a time without its offset")
        when.astimezone(timezone.utc)  # within the range of times (0001-01-01T00:00+01:00 is not)
    except (ValueError, TypeError, OverflowError, RecursionError):  # ValueError: base64, UTF-8, JSON and time errors
        raise InvalidParameterError(f"NextToken {token[:40]!r} is not a valid token") from None
    if user != username or token_pool != (pool or ""):
        raise InvalidParameterError("NextToken belongs to another user's listing")
    return when, event_id


def iso(ts: datetime) -> str:
    """A time as the AWS CLI prints it: ISO 8601 with microseconds and +00:00."""
    return ts.astimezone(timezone.utc).isoformat(timespec="microseconds")


#: rows of a pool (bound parameters: the pool, NULL for every pool; the pool of rows without a pool id,
#: ``risk.config.unpooled_pool``; the pool again): a Cognito username is one user per pool
_IN_POOL = "(CAST(? AS VARCHAR) IS NULL OR coalesce(user_pool_id, CAST(? AS VARCHAR)) = ?)"


def _in_pool_params(con, user_pool_id: str | None) -> list:
    from risk.config import unpooled_pool

    return [user_pool_id, None if user_pool_id is None else unpooled_pool(con), user_pool_id]


def user_known(con: duckdb.DuckDBPyConnection, username: str, user_pool_id: str | None = None) -> bool:
    """Whether the user has events or is in the users table (of ``user_pool_id``, when given)."""
    pool = _in_pool_params(con, user_pool_id)
    return bool(con.execute(
        f"SELECT (SELECT count(*) FROM events WHERE username = ? AND {_IN_POOL})"
        f" + (SELECT count(*) FROM users WHERE username = ? AND {_IN_POOL})",
        [username, *pool, username, *pool],
    ).fetchall()[0][0])


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):  # not a zone name this machine knows (ZoneInfoNotFoundError: a KeyError)
        return None


def utc_offset(zone: str | None, when: datetime) -> str | None:
    """The event's ``Timezone`` as Cognito gives it, the UTC offset at that moment (``-07:00``; the
    developer guide's AdminListUserAuthEvents example), from the store's IANA zone of the address
    (``Europe/London`` -> ``+01:00`` in July, ``+00:00`` in January); None when the zone is unknown."""
    z = _zone(zone) if zone else None
    if z is None or when is None:
        return None
    return offset_text(int(when.astimezone(z).utcoffset().total_seconds()) // 60)


def list_user_auth_events(
    con: duckdb.DuckDBPyConnection, username: str, *, max_results: int | None = None, next_token: str | None = None,
    user_pool_id: str | None = None,
) -> dict:
    """AdminListUserAuthEvents: the user's events, newest first, a page at a time; only those of ``user_pool_id``
    when given (with those without a pool id when they belong to it: ``risk.config.unpooled_pool``), as Cognito's
    usernames are unique within a pool. A sign-in the service prevented (answered ``Block``: ``risk.feedback``) is
    listed with EventResponse ``Fail``, whatever the application reported: it did not happen."""
    if max_results is None or max_results == 0:
        limit = MAX_RESULTS
    elif not 0 <= max_results <= MAX_RESULTS:
        raise InvalidParameterError(f"MaxResults must be between 0 and {MAX_RESULTS}, got {max_results}")
    else:
        limit = max_results
    if not user_known(con, username, user_pool_id):
        raise UserNotFoundError(f"user {username!r} not found: no events and not in the users table")
    after_date, after_id = (None, None)
    if next_token is not None:  # an empty one is no token (Cognito's are at least 1 character), not "from the top"
        if not next_token:
            raise InvalidParameterError("NextToken is empty: give the NextToken of the previous page, or none")
        after_date, after_id = _decode_token(next_token, user_pool_id, username)
    rows = con.execute(
        """
        WITH fb AS ({latest_feedback})
        SELECT e.event_id, e.event_type, e.creation_date,
               {shown_response}, e.challenge_responses,
               a.risk_decision, a.risk_level, coalesce(a.compromised_credentials_detected, e.compromised_credentials),
               a.event_id IS NOT NULL AS assessed,
               e.client_ip, e.device_name, e.time_zone, e.city, e.country_name, e.has_context_data,
               f.feedback_value, f.provider, f.feedback_date
        FROM events e
        LEFT JOIN assessments a ON a.event_id = e.event_id
        LEFT JOIN fb f ON f.event_id = e.event_id
        WHERE e.username = ? AND {in_pool}
          AND (CAST(? AS TIMESTAMPTZ) IS NULL OR (e.creation_date, e.event_id) < (CAST(? AS TIMESTAMPTZ), ?))
        ORDER BY e.creation_date DESC, e.event_id DESC
        LIMIT ?
        """.format(latest_feedback=LATEST_FEEDBACK_SQL, in_pool=_IN_POOL.replace("user_pool_id", "e.user_pool_id"),
                   shown_response=shown_response_sql("e")),
        [username, *_in_pool_params(con, user_pool_id), after_date, after_date, after_id, limit + 1],
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    events = []
    for (eid, etype, created, resp, challenges, decision, level, compromised, assessed, ip, device, tz, city,
         country, has_ctx, fb_value, fb_provider, fb_date) in rows:
        ev: dict = {"EventId": eid, "EventType": etype, "CreationDate": iso(created), "EventResponse": resp}
        if assessed:
            risk = {"RiskDecision": decision} if decision else {}
            if level:
                risk["RiskLevel"] = level
            risk["CompromisedCredentialsDetected"] = bool(compromised)
            ev["EventRisk"] = risk
        ev["ChallengeResponses"] = [
            {"ChallengeName": c["challenge_name"], "ChallengeResponse": c["challenge_response"]}
            for c in (challenges or [])
        ]
        ctx = {k: v for k, v in (("IpAddress", ip), ("DeviceName", device), ("Timezone", utc_offset(tz, created)),
                                 ("City", city), ("Country", country)) if v is not None}
        if ctx:
            ev["EventContextData"] = ctx
        if fb_value:
            ev["EventFeedback"] = {"FeedbackValue": fb_value, "Provider": fb_provider, "FeedbackDate": iso(fb_date)}
        events.append(ev)
    out: dict = {"AuthEvents": events}
    if more and rows:
        out["NextToken"] = _encode_token(user_pool_id, username, rows[-1][2], rows[-1][0])
    return out
