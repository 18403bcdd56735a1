"""Named read queries for the dashboard (and notebooks): what happened, to whom, from where, and why.

Every function takes an open connection first and returns plain Python or a
pandas DataFrame; values are bound parameters, never formatted into SQL
(STYLE.md, habit 7). ``dashboards/`` holds no SQL: its pages call these, and
the writing functions of their owners (``risk.feedback.set_feedback``,
``risk.levels.set_thresholds``, ``risk.config.set_configuration`` /
``set_mode``).

The common scope of the overview queries is a period ``[since, until)`` and
optionally one pool and one app client (``pool`` / ``client``; None = all).

Cognito's metrics (COGNITO_REFERENCE.md, "Metrics") are counted from the
assessments as follows: ``AccountTakeoverRisk`` = events given a risk level,
``CompromisedCredentialRisk`` = compromised credentials detected,
``OverrideBlock`` = blocked by a BlockedIPRangeList, ``Risk`` = any of the
three, ``NoRisk`` = assessed events with none of them.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
from dataclasses import dataclass, fields
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from ingest.enrich import ipv4_number_sql
from ingest.errors import RiskgateError
from ingest.store import users_counted
from risk.config import unpooled_pool
from risk.feedback import shown_response_sql

LEVEL_ORDER = ("High", "Medium", "Low")
NO_RISK = "No risk"
NO_LEVEL = "No level"
NOT_ASSESSED = "Not assessed"
#: assessed in a pool whose AdvancedSecurityMode was OFF: no risk evaluation, so no level (not "no risk")
NOT_EVALUATED = "Not evaluated"
DECISIONS = ("NoRisk", "AccountTakeover", "Block")
OUTCOMES = ("Allow", "MfaChallenge", "Block")
METRICS = ("AccountTakeoverRisk", "CompromisedCredentialRisk", "OverrideBlock", "Risk", "NoRisk")
BUCKETS = ("hour", "day", "week")
TOP_BY = ("user", "ip", "network", "asn")


class InsightsError(RiskgateError):
    """A query argument that cannot be used (an unknown choice, a malformed IP or CIDR)."""


# -- the common scope -------------------------------------------------------------------------

_SCOPE = """($since::TIMESTAMPTZ IS NULL OR e.creation_date >= $since::TIMESTAMPTZ)
        AND ($until::TIMESTAMPTZ IS NULL OR e.creation_date < $until::TIMESTAMPTZ)
        AND ($pool::VARCHAR IS NULL OR coalesce(e.user_pool_id, $unpooled::VARCHAR) = $pool::VARCHAR)
        AND ($client::VARCHAR IS NULL OR e.client_id = $client::VARCHAR)"""


def _scope(con, since, until, pool, client) -> dict:
    """The parameters of ``_SCOPE``: an event without a pool id is in the pool it belongs to
    (``risk.config.unpooled_pool``)."""
    return {"since": since, "until": until, "pool": pool or None, "client": client or None,
            "unpooled": unpooled_pool(con)}


def _df(con, sql: str, params: dict | list | None = None) -> pd.DataFrame:
    return con.execute(sql, params if params is not None else []).df()


def store_bounds(con: duckdb.DuckDBPyConnection) -> dict:
    """What the filters can offer: first and last event time, event count, pools and app clients."""
    first, last, n = con.execute("SELECT min(creation_date), max(creation_date), count(*) FROM events").fetchall()[0]
    pools = [r[0] for r in con.execute(
        """SELECT user_pool_id FROM events WHERE user_pool_id IS NOT NULL
           UNION SELECT user_pool_id FROM risk_config_versions ORDER BY 1"""
    ).fetchall()]
    clients = [r[0] for r in con.execute(
        """SELECT client_id FROM events WHERE client_id IS NOT NULL
           UNION SELECT client_id FROM risk_config_versions WHERE client_id IS NOT NULL ORDER BY 1 LIMIT 1000"""
    ).fetchall()]
    return {"first": first, "last": last, "events": int(n), "pools": pools, "clients": clients}


# -- overview -----------------------------------------------------------------------------------


def overview_metrics(
    con: duckdb.DuckDBPyConnection, *, since=None, until=None, pool=None, client=None
) -> dict:
    """Counts of the period: events, sign-ins, levels, decisions, outcomes, OverrideBlock, compromised credentials.

    ``by_level`` counts every event once: High / Medium / Low, ``No risk`` (assessed
    without a level), ``Not evaluated`` (assessed in mode OFF: no risk evaluation) and ``Not assessed`` (no
    assessment yet).
    """
    row = con.execute(
        f"""SELECT count(*) AS events,
                   count(*) FILTER (WHERE e.event_type = 'SignIn') AS sign_ins,
                   count(*) FILTER (WHERE e.event_type = 'SignIn' AND {shown_response_sql('e')} = 'Pass') AS sign_ins_passed,
                   {users_counted("$unpooled", "e.")} AS users,
                   count(a.event_id) AS assessed,
                   count(*) FILTER (WHERE a.risk_level = 'High') AS high,
                   count(*) FILTER (WHERE a.risk_level = 'Medium') AS medium,
                   count(*) FILTER (WHERE a.risk_level = 'Low') AS low,
                   count(*) FILTER (WHERE a.event_id IS NOT NULL AND a.risk_level IS NULL
                                      AND a.mode IS DISTINCT FROM 'OFF') AS no_risk,
                   count(*) FILTER (WHERE a.mode = 'OFF') AS not_evaluated,
                   count(*) FILTER (WHERE a.risk_decision = 'NoRisk') AS d_norisk,
                   count(*) FILTER (WHERE a.risk_decision = 'AccountTakeover') AS d_ato,
                   count(*) FILTER (WHERE a.risk_decision = 'Block') AS d_block,
                   count(*) FILTER (WHERE a.outcome = 'Allow') AS o_allow,
                   count(*) FILTER (WHERE a.outcome = 'MfaChallenge') AS o_mfa,
                   count(*) FILTER (WHERE a.outcome = 'Block') AS o_block,
                   count(*) FILTER (WHERE a.override_block) AS override_block,
                   count(*) FILTER (WHERE a.compromised_credentials_detected) AS compromised
            FROM events e LEFT JOIN assessments a ON a.event_id = e.event_id
            WHERE {_SCOPE}""",
        _scope(con, since, until, pool, client),
    ).fetchall()[0]
    (events, sign_ins, passed, users, assessed, high, medium, low, no_risk, not_evaluated, d_nr, d_ato, d_bl, o_al,
     o_mfa, o_bl, override, compromised) = (int(x) for x in row)
    return {
        "events": events,
        "sign_ins": sign_ins,
        "sign_ins_passed": passed,
        "users": users,
        "assessed": assessed,
        "risky": high + medium + low,
        "by_level": {"High": high, "Medium": medium, "Low": low, NO_RISK: no_risk,
                     NOT_EVALUATED: not_evaluated, NOT_ASSESSED: events - assessed},
        "by_decision": {"NoRisk": d_nr, "AccountTakeover": d_ato, "Block": d_bl},
        "by_outcome": {"Allow": o_al, "MfaChallenge": o_mfa, "Block": o_bl},
        "override_block": override,
        "compromised_credentials": compromised,
    }


_METRIC_SQL = {
    "AccountTakeoverRisk": "a.risk_level IS NOT NULL",
    "CompromisedCredentialRisk": "coalesce(a.compromised_credentials_detected, false)",
    "OverrideBlock": "coalesce(a.override_block, false)",
    "Risk": "(a.risk_level IS NOT NULL OR coalesce(a.compromised_credentials_detected, false) "
            "OR coalesce(a.override_block, false))",
    "NoRisk": "(a.event_id IS NOT NULL AND a.risk_level IS NULL AND NOT coalesce(a.compromised_credentials_detected, "
              "false) AND NOT coalesce(a.override_block, false))",
}


def metric_series(
    con: duckdb.DuckDBPyConnection,
    metric: str = "Risk",
    *,
    by: str = "risk_level",
    bucket: str = "day",
    since=None,
    until=None,
    pool=None,
    client=None,
) -> pd.DataFrame:
    """One Cognito metric over time: columns ``time``, ``group`` (the risk level or the event type), ``count``.

    ``by`` is ``risk_level`` (``No level`` for events without one) or ``event_type`` (Cognito's Operation).
    Events assessed in mode OFF count in no metric: no risk evaluation took place (Cognito produces metrics in
    AUDIT and ENFORCED).
    """
    if metric not in _METRIC_SQL:
        raise InsightsError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if bucket not in BUCKETS:
        raise InsightsError(f"bucket must be one of {', '.join(BUCKETS)}, got {bucket!r}")
    group = {"risk_level": f"coalesce(a.risk_level, '{NO_LEVEL}')", "event_type": "e.event_type"}.get(by)
    if group is None:
        raise InsightsError(f"by must be risk_level or event_type, got {by!r}")
    return _df(
        con,
        f"""SELECT date_trunc($bucket, e.creation_date) AS time, {group} AS "group", count(*) AS count
            FROM events e JOIN assessments a ON a.event_id = e.event_id
            WHERE {_SCOPE} AND a.mode IS DISTINCT FROM 'OFF' AND {_METRIC_SQL[metric]}
            GROUP BY ALL ORDER BY 1, 2""",
        {**_scope(con, since, until, pool, client), "bucket": bucket},
    )


def locations(
    con: duckdb.DuckDBPyConnection, *, since=None, until=None, pool=None, client=None, limit: int = 2000
) -> pd.DataFrame:
    """Sign-in places of the period (by country and city, with coordinates) and their risk.

    Columns: country_iso, country, city, latitude, longitude, events, risky, high, medium, low,
    blocked, top_level (the highest level seen there; when none: ``No risk`` if an event there was evaluated,
    else ``Not evaluated`` if one was assessed in mode OFF, else ``Not assessed``), risky_share.
    Places without coordinates are left out; the busiest ``limit`` places are returned.
    """
    return _df(
        con,
        f"""SELECT e.country_iso, any_value(e.country_name) AS country, e.city,
                   avg(e.latitude) AS latitude, avg(e.longitude) AS longitude,
                   count(*) AS events,
                   count(a.risk_level) AS risky,
                   count(*) FILTER (WHERE a.risk_level = 'High') AS high,
                   count(*) FILTER (WHERE a.risk_level = 'Medium') AS medium,
                   count(*) FILTER (WHERE a.risk_level = 'Low') AS low,
                   count(*) FILTER (WHERE a.outcome = 'Block') AS blocked,
                   CASE WHEN count(*) FILTER (WHERE a.risk_level = 'High') > 0 THEN 'High'
                        WHEN count(*) FILTER (WHERE a.risk_level = 'Medium') > 0 THEN 'Medium'
                        WHEN count(*) FILTER (WHERE a.risk_level = 'Low') > 0 THEN 'Low'
                        WHEN count(*) FILTER (WHERE a.event_id IS NOT NULL AND a.mode IS DISTINCT FROM 'OFF') > 0
                        THEN '{NO_RISK}'
                        WHEN count(a.event_id) > 0 THEN '{NOT_EVALUATED}'
                        ELSE '{NOT_ASSESSED}' END AS top_level,
                   count(a.risk_level) / count(*) AS risky_share
            FROM events e LEFT JOIN assessments a ON a.event_id = e.event_id
            WHERE {_SCOPE} AND e.latitude IS NOT NULL AND e.longitude IS NOT NULL
            GROUP BY e.country_iso, e.city
            ORDER BY events DESC, e.country_iso, e.city
            LIMIT $limit""",
        {**_scope(con, since, until, pool, client), "limit": int(limit)},
    )


_TOP_KEYS = {
    "user": ("e.username", "username"),
    "ip": ("e.client_ip", "ip"),
    "network": ("e.ip_prefix", "network"),
    "asn": ("e.asn", "asn"),
}


def top_risky(
    con: duckdb.DuckDBPyConnection,
    by: str = "user",
    *,
    n: int = 10,
    since=None,
    until=None,
    pool=None,
    client=None,
) -> pd.DataFrame:
    """The ``n`` users, IPs, networks (/24 or /48) or ASNs with the most risky events in the period.

    Ranked by High, then Medium, then Low events, then the highest score. Columns: the key
    (username / ip / network / asn), then for users their user_pool_id (a user is a username in
    its pool: ``alice`` of two pools is two rows; a pool-less event is its pool's as in the
    features, ``None`` when the store has several pools) and for the others as_org, then events,
    risky, high, medium, low, blocked, max_score, users (distinct users; for a user, 1),
    countries, last_seen.
    """
    if by not in _TOP_KEYS:
        raise InsightsError(f"by must be one of {', '.join(TOP_BY)}, got {by!r}")
    expr, name = _TOP_KEYS[by]
    key = "k, pool" if by == "user" else "k"  # a user is a username in its pool
    second = "pool AS user_pool_id" if by == "user" else "mode(as_org) AS as_org"
    return _df(
        con,
        f"""WITH scoped AS (
              SELECT {expr} AS k, e.username, coalesce(e.user_pool_id, $unpooled::VARCHAR) AS pool,
                     CASE WHEN e.username IS NOT NULL
                          THEN hash(e.username, coalesce(e.user_pool_id, $unpooled::VARCHAR)) END AS uid,
                     e.country_iso, e.creation_date, e.as_org,
                     a.risk_level, a.outcome, a.score
              FROM events e JOIN assessments a ON a.event_id = e.event_id
              WHERE {_SCOPE} AND {expr} IS NOT NULL),
            risky AS (SELECT DISTINCT {key} FROM scoped WHERE risk_level IS NOT NULL)
            SELECT k AS {name}, {second}, count(*) AS events, count(risk_level) AS risky,
                   count(*) FILTER (WHERE risk_level = 'High') AS high,
                   count(*) FILTER (WHERE risk_level = 'Medium') AS medium,
                   count(*) FILTER (WHERE risk_level = 'Low') AS low,
                   count(*) FILTER (WHERE outcome = 'Block') AS blocked,
                   max(score) AS max_score, count(DISTINCT uid) AS users,
                   count(DISTINCT country_iso) AS countries, max(creation_date) AS last_seen
            FROM scoped SEMI JOIN risky USING ({key})
            GROUP BY {key}
            ORDER BY high DESC, medium DESC, low DESC, max_score DESC, 1, 2
            LIMIT $n""",
        {**_scope(con, since, until, pool, client), "n": int(n)},
    )


# -- events: search, detail, the user's previous sign-ins -------------------------------------


@dataclass(frozen=True)
class EventFilters:
    """What the Events page filters on; None (or empty) = no filter.

    ``username`` is exact, or a prefix when it ends with ``*``; ``ip`` is an address or a
    CIDR (IPv4 or IPv6); ``country`` an ISO code or a country name (either case); ``level``
    is High / Medium / Low / ``No risk`` / ``Not evaluated`` (mode OFF) / ``Not assessed``; ``decision`` a
    RiskDecision; ``outcome`` Allow / MfaChallenge / Block.
    """

    username: str | None = None
    ip: str | None = None
    country: str | None = None
    asn: int | None = None
    level: str | None = None
    decision: str | None = None
    outcome: str | None = None
    event_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    pool: str | None = None
    client: str | None = None

    def cleaned(self) -> EventFilters:
        """Blank strings as None, surrounding spaces removed."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, str):
                v = v.strip() or None
            out[f.name] = v
        return EventFilters(**out)


def parse_ip_filter(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or CIDR typed by a person -> a network (an address is a /32 or /128).

    Host bits are ignored (``10.0.0.7/24`` means ``10.0.0.0/24``); an IPv4-mapped IPv6
    network (``::ffff:10.0.0.0/120``) becomes the IPv4 one, as the store keeps such
    addresses as IPv4.
    """
    value = text.strip().strip("[]")
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise InsightsError(f"{text!r} is not an IP address or a CIDR such as 203.0.113.0/24 or 2001:db8::/32 "
                            f"({exc})") from None
    from ingest.context import unmapped

    return unmapped(net)


_IPV4_NUMBER = f"({ipv4_number_sql('e.client_ip')})"


def _event_where(con, f: EventFilters) -> tuple[str, dict, pa.Table | None]:
    """WHERE clause, parameters, and (for an IPv6 CIDR) the matching addresses to semi-join."""
    f = f.cleaned()
    where = [_SCOPE]
    params = _scope(con, f.since, f.until, f.pool, f.client)
    ips: pa.Table | None = None
    if f.username:
        if f.username.endswith("*"):
            where.append("starts_with(e.username, $user_prefix)")
            params["user_prefix"] = f.username[:-1]
        else:
            where.append("e.username = $username")
            params["username"] = f.username
    if f.ip:
        net = parse_ip_filter(f.ip)
        if net.num_addresses == 1:
            where.append("e.client_ip = $ip")
            params["ip"] = str(net.network_address)
        elif net.version == 4:
            where.append(f"e.ip_version = 4 AND {_IPV4_NUMBER} BETWEEN $ip_lo AND $ip_hi")
            params["ip_lo"] = int(net.network_address)
            params["ip_hi"] = int(net.broadcast_address)
        else:
            # IPv6 text is compressed and has no numeric column: test each distinct address once
            candidates = con.execute(
                f"SELECT DISTINCT e.client_ip FROM events e WHERE {_SCOPE} AND e.ip_version = 6",
                _scope(con, f.since, f.until, f.pool, f.client),
            ).fetchall()
            hits = []
            for (addr,) in candidates:
                try:
                    if ipaddress.IPv6Address(addr) in net:
                        hits.append(addr)
                except ValueError:
                    continue
            ips = pa.table({"client_ip": pa.array(hits, pa.string())})
            where.append("e.client_ip IN (SELECT client_ip FROM _rg_insights_ips)")
    if f.country:
        where.append("(upper(e.country_iso) = upper($country) OR lower(e.country_name) = lower($country))")
        params["country"] = f.country
    if f.asn is not None:
        where.append("e.asn = $asn")
        params["asn"] = int(f.asn)
    if f.level:
        if f.level == NO_RISK:
            where.append("a.event_id IS NOT NULL AND a.risk_level IS NULL AND a.mode IS DISTINCT FROM 'OFF'")
        elif f.level == NOT_EVALUATED:
            where.append("a.mode = 'OFF'")
        elif f.level == NOT_ASSESSED:
            where.append("a.event_id IS NULL")
        elif f.level in LEVEL_ORDER:
            where.append("a.risk_level = $level")
            params["level"] = f.level
        else:
            raise InsightsError(f"level must be one of High, Medium, Low, {NO_RISK}, {NOT_EVALUATED}, {NOT_ASSESSED}; "
                                f"got {f.level!r}")
    if f.decision:
        where.append("a.risk_decision = $decision")
        params["decision"] = f.decision
    if f.outcome:
        where.append("a.outcome = $outcome")
        params["outcome"] = f.outcome
    if f.event_type:
        where.append("e.event_type = $event_type")
        params["event_type"] = f.event_type
    return " AND ".join(where), params, ips


_EVENT_LIST_COLS = f"""e.event_id, e.creation_date AS time, e.username, e.event_type, {shown_response_sql('e')} AS response,
       e.client_ip AS ip, e.country_iso AS country, e.city, e.asn, e.as_org, e.device_name,
       a.score, coalesce(a.risk_level, CASE WHEN a.event_id IS NULL THEN NULL WHEN a.mode = 'OFF' THEN '{NOT_EVALUATED}'
                                            ELSE '{NO_RISK}' END) AS level,
       a.risk_decision AS decision, a.outcome"""


def search_events(
    con: duckdb.DuckDBPyConnection, filters: EventFilters | None = None, *, limit: int = 200, offset: int = 0
) -> tuple[pd.DataFrame, int]:
    """The events matching ``filters``, newest first (``limit`` from ``offset``), and how many match in all."""
    where, params, ips = _event_where(con, filters or EventFilters())
    if ips is not None:
        con.register("_rg_insights_ips", ips)
    try:
        total = con.execute(
            f"SELECT count(*) FROM events e LEFT JOIN assessments a ON a.event_id = e.event_id WHERE {where}", params
        ).fetchall()[0][0]
        rows = _df(
            con,
            f"""SELECT {_EVENT_LIST_COLS}
                FROM events e LEFT JOIN assessments a ON a.event_id = e.event_id
                WHERE {where}
                ORDER BY e.creation_date DESC, e.event_id DESC
                LIMIT $limit OFFSET $offset""",
            {**params, "limit": int(limit), "offset": int(offset)},
        )
    finally:
        if ips is not None:
            con.unregister("_rg_insights_ips")
    return rows, int(total)


def _fmt_value(value, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "could not be computed (counted as suspicious: fail secure)"
    if unit == "" and value in (0, 1):
        return "yes" if value == 1 else "no"
    text = f"{value:,.0f}" if abs(value) >= 100 or float(value).is_integer() else f"{value:,.2f}"
    return f"{text} {unit}".strip()


def reason_in_words(code: str, value, contribution) -> str:
    """One reason (signal code, value, contribution to the log odds) as a sentence."""
    from risk import signals

    try:
        s = signals.get(code)
        what, unit = s.description, s.unit
    except signals.UnknownSignalError:
        what, unit = f"signal {code}", ""
    weight = "" if contribution is None else f"; adds {contribution:+.2f} to the log odds of an attack"
    return f"{what}: {_fmt_value(value, unit)}{weight}"


def event_detail(con: duckdb.DuckDBPyConnection, event_id: str) -> dict | None:
    """One event with its context data, its assessment, its reasons in words, feedback and labels (None if unknown)."""
    cur = con.execute(
        f"""SELECT e.event_id, e.user_pool_id, e.client_id, e.username, e.user_sub, e.event_type,
                  {shown_response_sql('e')} AS event_response,
                  e.creation_date, e.challenge_responses, e.ip_address, e.client_ip, e.client_ip_source, e.ip_prefix,
                  e.server_name, e.server_path, e.http_headers, e.encoded_data IS NOT NULL AS has_encoded_data,
                  e.has_context_data, e.user_agent, e.browser_family, e.browser_version, e.os_family, e.os_version,
                  e.device_type, e.device_name, e.device_fingerprint, e.device_fingerprint_source,
                  e.country_iso, e.country_name, e.region, e.city, e.latitude, e.longitude, e.time_zone,
                  e.asn, e.as_org, e.geo_source, e.compromised_credentials, e.source_format, e.source_file,
                  e.source_line,
                  a.event_id IS NOT NULL AS assessed, a.score, a.risk_level, a.risk_decision, a.outcome,
                  a.event_action, a.mode, a.enforced, a.mfa_challenge, a.blocked, a.override_block, a.ip_exception,
                  a.compromised_credentials_detected, a.reset_required, a.notification, a.would_notify,
                  a.reasons, a.decision_reasons, a.model_version, a.thresholds_version, a.config_version,
                  a.mode_version, a.scored_at
           FROM events e LEFT JOIN assessments a ON a.event_id = e.event_id
           WHERE e.event_id = ?
           LIMIT 1""",
        [event_id],
    )
    names = [d[0] for d in cur.description]
    rows = cur.fetchall()
    if not rows:
        return None
    d = dict(zip(names, rows[0]))
    d["reasons"] = [
        {**r, "words": reason_in_words(r["code"], r["value"], r["contribution"])} for r in (d["reasons"] or [])
    ]
    d["decision_reasons"] = list(d["decision_reasons"] or [])
    d["http_headers"] = [(h["header_name"], h["header_value"]) for h in (d["http_headers"] or [])]
    d["challenge_responses"] = [
        (c["challenge_name"], c["challenge_response"]) for c in (d["challenge_responses"] or [])
    ]
    from risk.feedback import latest_feedback

    fb = latest_feedback(con, [event_id]).to_pylist()  # the feedback in force, by risk.feedback's own rule
    d["feedback"] = ({"value": fb[0]["feedback_value"], "provider": fb[0]["provider"], "date": fb[0]["feedback_date"]}
                     if fb else None)
    d["labels"] = [tuple(r) for r in con.execute(
        "SELECT label, value, source FROM labels WHERE event_id = ? ORDER BY label, source", [event_id]
    ).fetchall()]
    return d


def previous_signins(con: duckdb.DuckDBPyConnection, event_id: str, n: int = 10) -> pd.DataFrame:
    """The same user's ``n`` events just before this one (newest first), to compare place, network and device.

    The user is the username in its pool, as in Cognito (and ``risk.features``): an event without a
    UserPoolId belongs to ``risk.config.unpooled_pool`` (none when the store knows several pools and
    ``$RISKGATE_USER_POOL_ID`` is unset: the pool-less events of a username are then a user of their own).
    """
    return _df(
        con,
        f"""WITH this AS (SELECT username, coalesce(user_pool_id, $unpooled::VARCHAR) AS pool, creation_date, event_id
                          FROM events WHERE event_id = $id LIMIT 1)
            SELECT {_EVENT_LIST_COLS}
            FROM events e JOIN this t ON e.username = t.username
                 AND coalesce(e.user_pool_id, $unpooled::VARCHAR) IS NOT DISTINCT FROM t.pool
                 AND (e.creation_date, e.event_id) < (t.creation_date, t.event_id)
            LEFT JOIN assessments a ON a.event_id = e.event_id
            ORDER BY e.creation_date DESC, e.event_id DESC
            LIMIT $n""",
        {"id": event_id, "n": int(n), "unpooled": unpooled_pool(con)},
    )


def known_users(con: duckdb.DuckDBPyConnection, prefix: str = "", limit: int = 50) -> list[str]:
    """Usernames starting with ``prefix`` (from events and the users table), sorted, at most ``limit``."""
    return [r[0] for r in con.execute(
        """SELECT username FROM (SELECT DISTINCT username FROM events WHERE starts_with(username, $p)
                                 UNION SELECT username FROM users WHERE starts_with(username, $p))
           ORDER BY 1 LIMIT $limit""",
        {"p": prefix or "", "limit": int(limit)},
    ).fetchall()]


# -- jobs ---------------------------------------------------------------------------------------


def ingest_runs(con: duckdb.DuckDBPyConnection, limit: int = 20) -> pd.DataFrame:
    """Recent ingests with their counts (``ingest.store.recent_runs``) as a table."""
    from ingest.store import recent_runs

    runs = recent_runs(con, limit)
    cols = ["run_id", "started_at", "finished_at", "status", "inputs", "source_format", "rows_read",
            "events_added", "duplicates", "quarantined", "reasons"]
    return pd.DataFrame(runs, columns=cols)


def score_runs(con: duckdb.DuckDBPyConnection, limit: int = 20) -> pd.DataFrame:
    """Recent scoring runs, newest first, with the events each scored and the versions it used."""
    return _df(
        con,
        """SELECT run_id, started_at, finished_at, status, events_scored, since, until, rescore,
                  model_version, thresholds_version,
                  epoch(finished_at) - epoch(started_at) AS seconds
           FROM score_runs ORDER BY started_at DESC LIMIT ?""",
        [int(limit)],
    )


def quarantine_reasons(con: duckdb.DuckDBPyConnection, limit: int = 50) -> pd.DataFrame:
    """Why rows were quarantined: reason, rows, files, first and last time seen (most frequent first)."""
    return _df(
        con,
        """SELECT reason, count(*) AS rows, count(DISTINCT source_file) AS files,
                  min(quarantined_at) AS first_seen, max(quarantined_at) AS last_seen
           FROM quarantine GROUP BY reason ORDER BY rows DESC, reason LIMIT ?""",
        [int(limit)],
    )


def quarantine_totals(con: duckdb.DuckDBPyConnection) -> dict:
    """The whole quarantine: ``{"rows": rows quarantined, "reasons": distinct reasons}``."""
    rows, reasons = con.execute("SELECT count(*), count(DISTINCT reason) FROM quarantine").fetchall()[0]
    return {"rows": int(rows), "reasons": int(reasons)}


def quarantine_examples(con: duckdb.DuckDBPyConnection, reason: str, n: int = 5, raw_chars: int = 500) -> pd.DataFrame:
    """Example rows quarantined for ``reason``: file, line, format and the raw text (cut at ``raw_chars``)."""
    return _df(
        con,
        """SELECT source_file AS file, source_line AS line, source_format AS format,
                  left(raw, ?) AS raw, quarantined_at
           FROM quarantine WHERE reason = ? ORDER BY source_file, source_line LIMIT ?""",
        [int(raw_chars), reason, int(n)],
    )


# -- configuration: versions as text and their differences -------------------------------------


def version_text(con: duckdb.DuckDBPyConnection, version: int) -> str:
    """A configuration version as indented JSON, or a sentence for versions that are not a document."""
    from risk import config as rc

    if version == 0:
        return json.dumps(rc.default_configuration().to_document(), indent=2)
    rows = con.execute(
        "SELECT kind, client_id, mode, summary FROM risk_config_versions WHERE version = ?", [int(version)]
    ).fetchall()
    if not rows:
        raise InsightsError(f"no risk configuration version {version}")
    kind, client, mode, summary = rows[0]
    if kind == rc.KIND_MODE:
        return f"(mode change: {summary})"
    if kind == rc.KIND_RESET and client is not None:
        return "(reset: the client inherits the pool's configuration)"
    return json.dumps(rc.configuration_at(con, int(version)).to_document(), indent=2)


def config_diff(con: duckdb.DuckDBPyConnection, old: int, new: int) -> str:
    """A unified diff between two configuration versions (empty when they say the same)."""
    a = version_text(con, old).splitlines(keepends=True)
    b = version_text(con, new).splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, fromfile=f"version {old}", tofile=f"version {new}"))


# -- configuration: the dashboard's form over a document ----------------------------------------

#: Form fields of the configuration page and the document paths whose problems they show.
CONFIG_FIELDS = {
    "ato_Low": "AccountTakeoverRiskConfiguration.Actions.LowAction",
    "ato_Medium": "AccountTakeoverRiskConfiguration.Actions.MediumAction",
    "ato_High": "AccountTakeoverRiskConfiguration.Actions.HighAction",
    "source_arn": "AccountTakeoverRiskConfiguration.NotifyConfiguration.SourceArn",
    "from": "AccountTakeoverRiskConfiguration.NotifyConfiguration.From",
    "reply_to": "AccountTakeoverRiskConfiguration.NotifyConfiguration.ReplyTo",
    "cc_action": "CompromisedCredentialsRiskConfiguration.Actions",
    "cc_filter": "CompromisedCredentialsRiskConfiguration.EventFilter",
    "blocked": "RiskExceptionConfiguration.BlockedIPRangeList",
    "skipped": "RiskExceptionConfiguration.SkippedIPRangeList",
}


def problem_field(path: str) -> str:
    """The form field (a key of ``CONFIG_FIELDS``) a problem's path belongs to, else ``general``."""
    best, best_len = "general", -1
    for name, prefix in CONFIG_FIELDS.items():
        if (path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "[")) and len(prefix) > best_len:
            best, best_len = name, len(prefix)
    return best


def form_document(
    base: dict,
    *,
    actions: dict[str, tuple[str, bool]],
    cc_action: str,
    cc_filter: list[str] | None,
    blocked: list[str],
    skipped: list[str],
    notify_from: str | None = None,
    reply_to: str | None = None,
    source_arn: str | None = None,
) -> dict:
    """A document: ``base`` (a Cognito-shaped configuration) with the form's fields put in.

    ``actions`` maps Low / Medium / High to (EventAction, Notify); ``cc_filter`` None means
    all events (EventFilter left out); empty IP lists leave the list out. The sender fields
    (None: as in ``base``; blank: removed) go into NotifyConfiguration, which is created only
    when one of them is given; the templates of ``base`` are kept. Nothing is validated here:
    ``risk.config.validate_document`` does that.
    """
    doc = json.loads(json.dumps({k: v for k, v in base.items() if k != "LastModifiedDate"}))
    ato = doc.setdefault("AccountTakeoverRiskConfiguration", {})
    ato["Actions"] = {f"{level}Action": {"Notify": bool(notify), "EventAction": action}
                      for level, (action, notify) in actions.items()}
    sender = {k: v.strip() for k, v in (("From", notify_from), ("ReplyTo", reply_to), ("SourceArn", source_arn))
              if v is not None}
    nc = ato.get("NotifyConfiguration")
    if nc is not None or any(sender.values()):
        nc = dict(nc or {})
        for key, value in sender.items():
            if value:
                nc[key] = value
            else:
                nc.pop(key, None)
        ato["NotifyConfiguration"] = nc
    cc: dict = {"Actions": {"EventAction": cc_action}}
    if cc_filter is not None:
        cc["EventFilter"] = list(cc_filter)
    doc["CompromisedCredentialsRiskConfiguration"] = cc
    rec = {}
    if blocked:
        rec["BlockedIPRangeList"] = list(blocked)
    if skipped:
        rec["SkippedIPRangeList"] = list(skipped)
    if rec:
        doc["RiskExceptionConfiguration"] = rec
    else:
        doc.pop("RiskExceptionConfiguration", None)
    return doc


def config_scope_problems(config, pool: str, client: str | None) -> list[str]:
    """Why a valid document cannot be saved where the Configuration page edits it (the pool ``pool``, or its app
    client ``client``): the ids it names must be those of the page, or absent. Empty when it can."""
    out = []
    if config.UserPoolId is not None and config.UserPoolId != pool:
        out.append(f"UserPoolId {config.UserPoolId!r} is not the pool this page edits ({pool!r}): choose that pool "
                   "above, or remove UserPoolId from the document")
    if config.ClientId is not None and config.ClientId != client:
        if client is None:
            out.append(f"ClientId {config.ClientId!r}: this page edits the pool's own configuration; to edit that "
                       "client's, choose it as the app client above, or remove ClientId from the document")
        else:
            out.append(f"ClientId {config.ClientId!r} is not the app client this page edits ({client!r}): choose "
                       "that client above, or remove ClientId from the document")
    return out


def config_save_plan(con: duckdb.DuckDBPyConnection, config, pool: str, client: str | None) -> dict:
    """What saving ``config`` for the pool ``pool`` (``client`` None) or its app client ``client`` does, as
    ``risk.config.set_configuration(con, config, user_pool_id=pool, client_id=client)`` does it (call
    ``config_scope_problems`` first).

    Returns ``{"reset": bool, "applies": str}``: whether it is a reset (a document of ids only, or none: the pool
    goes back to the shipped defaults, a client back to the pool's configuration), and ``risk.config.summarize``
    of what will then apply there.
    """
    from risk import config as rc

    applies = rc.resolve_proposed(con, pool, client, config.with_scope(pool, client))
    return {"reset": config.is_reset, "applies": rc.summarize(applies)}


# -- tuning: the history prepared once, thresholds evaluated many times ------------------------


@dataclass
class TuningSnapshot:
    """The assessed, labelled history of a period with each event's outcome at every level (``risk.tuning``).

    Preparing it reads the store and runs the decision once per distinct case; evaluating
    thresholds on it is then vectorised and needs no store, which is what lets the Tuning
    page follow its sliders on a large store. ``tradeoff_from`` and ``whatif_from`` give
    what ``risk.tuning.tradeoff`` and ``whatif`` (with the configuration in force) give for
    the same store.
    """

    history: object  # risk.tuning.History
    outcomes: object  # risk.tuning.Outcomes: each event's outcome at no risk / Low / Medium / High
    current: object  # the thresholds in force (risk.levels.Thresholds)
    now: np.ndarray  # each event's outcome at the thresholds in force
    modes: list[str]

    def outcome_at(self, t) -> np.ndarray:
        return self.outcomes.at(self.history.scores, t)


def tuning_snapshot(con: duckdb.DuckDBPyConnection, *, since=None, until=None) -> TuningSnapshot:
    """Prepare the history of [since, until) for ``tradeoff_from``, ``whatif_from`` and ``curves_from``.

    Raises ``risk.tuning.TuningError`` when nothing is assessed in the period.
    """
    from risk import levels, tuning

    h = tuning.history(con, since, until)
    oc = tuning.Outcomes(con, h.df)
    current, _version = levels.current_thresholds(con)
    return TuningSnapshot(h, oc, current, oc.at(h.scores, current), tuning.modes_of(con, oc.configs))


def _now(snap: TuningSnapshot, current) -> np.ndarray:
    """Each event's outcome at the thresholds in force: ``current`` when given (thresholds read after the snapshot
    was prepared may differ from its own), else the snapshot's."""
    return snap.now if current is None or current == snap.current else snap.outcome_at(current)


def tradeoff_from(snap: TuningSnapshot, t, current=None) -> dict:
    """``risk.tuning.tradeoff(con, t)`` on a prepared snapshot, plus ``current_outcomes`` at the thresholds in force
    (``current``, default: those of the snapshot)."""
    from risk import tuning

    out = tuning.tradeoff_of(snap.history, snap.outcomes, t, snap.outcome_at(t))
    out["current_outcomes"] = tuning.outcome_summary(snap.history, _now(snap, current), snap.outcomes.baseline)
    return out


def whatif_from(snap: TuningSnapshot, t, current=None) -> dict:
    """Allowed / challenged / blocked at ``t`` and at the thresholds in force (configuration in force), by label.

    The same counts as ``risk.tuning.whatif(con, None, t)``'s ``outcomes``, ``current``,
    ``changed`` and ``by_label``; the thresholds in force are ``current`` (default: those of the snapshot).
    """
    from risk import tuning

    new, now = snap.outcome_at(t), _now(snap, current)
    every = np.ones(len(new), dtype=bool)
    return {"outcomes": tuning.outcome_counts(new, every), "current": tuning.outcome_counts(now, every),
            "changed": int((new != now).sum()), "by_label": tuning.by_label(snap.history, new), "modes": snap.modes}


def _thin(x, y, thresholds, max_points: int):
    n = len(x)
    if n <= max_points:
        keep = np.arange(n)
    else:
        keep = np.unique(np.concatenate([np.linspace(0, n - 1, max_points).round().astype(int), [0, n - 1]]))
    th = np.append(thresholds, np.nan)[: n] if len(thresholds) < n else thresholds
    return [float(v) for v in x[keep]], [float(v) for v in y[keep]], [float(v) for v in th[keep]]


def curves_from(snap: TuningSnapshot, max_points: int = 400) -> dict:
    """ROC and precision-recall curves (as ``risk.tuning.curves``), thinned to about ``max_points`` points each.

    Returns ``{"roc": {"fpr", "tpr", "threshold"}, "pr": {"recall", "precision", "threshold"}, "roc_auc",
    "average_precision", "legitimate", "attacks"}``; raises ``risk.tuning.TuningError`` without both classes.
    """
    from risk.tuning import curves_of

    c = curves_of(snap.history)
    rx, ry, rth = _thin(c.fpr, c.tpr, c.roc_thresholds, max_points)
    px_, py_, pth = _thin(c.recall, c.precision, c.pr_thresholds, max_points)
    return {"roc": {"fpr": rx, "tpr": ry, "threshold": rth}, "pr": {"recall": px_, "precision": py_, "threshold": pth},
            "roc_auc": c.roc_auc, "average_precision": c.average_precision,
            "legitimate": c.legitimate, "attacks": c.attacks}
