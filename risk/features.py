"""Point-in-time risk features, set-wise in DuckDB SQL.

``compute_features(con, since=, until=, event_ids=, usernames=)`` returns one
row per selected event: ``event_id, username, creation_date, event_type,
event_response`` and then exactly ``risk.signals.FEATURE_COLUMNS`` (float64,
NULL when a signal cannot be computed -- the model must treat NULL as
"unknown", never as "safe").

What "before" means
    Every feature of an event uses only events strictly before it in the
    order (creation_date, event_id): counts use ROWS frames ending at
    ``1 PRECEDING`` over that order, so neither the event itself nor a later
    one (nor one at the same instant with a greater event_id) ever counts.
    The sliding windows (1 h, 24 h) are RANGE frames over creation_date from
    ``t - 1 h`` (or 24 h) to ``t - 1 microsecond``: the event's whole peer
    group is left out, so events at the very same microsecond (the store's
    resolution) never count each other there.

Known history
    The user's known history is their successful events (``event_response =
    'Pass'``, any event type: each one needed the user's credentials or a code
    sent to them) whose feedback in force (``risk.feedback``) is not
    ``Invalid`` and that the inline service did not prevent (answered
    ``Block``; unless the feedback in force is ``Valid``). Novelty, history
    size, travel, the hour of week and the Freeman user frequencies use it.
    Failures (``Fail``, and the prevented sign-ins) count for the failure
    windows; every event counts for "distinct users tried from an IP"
    (``risk.feedback.known_sql`` / ``failed_sql``).
    Feedback is read as it is now: marking an old event Invalid changes the
    features of the events after it the next time they are computed.

Who is a user
    A username in its user pool, as in Cognito: ``alice`` of one pool and
    ``alice`` of another have separate histories, and count as two users
    from an address. An event without a UserPoolId belongs to the pool
    scoring decides it under (``risk.config.unpooled_pool``: ``$RISKGATE_USER_POOL_ID``,
    else the store's only pool), so a store of one pool may mix events with
    and without the id; in a store of several pools without that variable
    they are users of no pool.

Freeman et al. (NDSS 2016), per hierarchy level
    For the hierarchies country -> ASN -> IP and device type -> OS -> browser
    -> user agent, with levels L1 (top) .. Lk, user counts c_u, the user's
    history size n_u (both strictly before the event), and global counts c_g
    over all users' known history *before the start of the event's UTC day*
    (a daily point-in-time snapshot: never the event itself nor anything
    after it, and cheap -- aggregates instead of a window per level),
    N = the global history size at that instant:

    * global:  pg_1 = (c_g(L1) + 1) / (N + 1);  pg_i = min(1, (c_g(Li) + 1) / (c_g(Li-1) + 1))
    * user, smoothed towards the level above times the global conditional
      (Dirichlet prior of weight m = ``FREEMAN_PRIOR``):
      pu_1 = (c_u(L1) + m pg_1) / (n_u + m);  pu_i = (c_u(Li) + m pu_i-1 pg_i) / (n_u + m)
    * column freeman_<level> = log pg_i - log(pu_i / pu_i-1)   (pu_0 = 1)

    The columns of a hierarchy add up to log p(x)/p(x|u), the paper's
    likelihood ratio with the attacker modelled by the global distribution;
    the seven columns add up to the log of its score. A user with no history
    gets 0 everywhere (pu = pg); a value new to the user adds
    log((n_u + m) / m) at its level; a value familiar to the user but rare
    overall is negative (evidence for the user). Keys of lower levels include
    the levels above (``Desktop/Windows/Chrome``); a missing middle value is
    the value ``?``. The IP hierarchy is NULL without a client IP, the agent
    hierarchy NULL without a user agent.

Keys are compared as 64-bit hashes (``hash()``) so that the window functions
sort integers: with a million distinct values of one key the chance that any
two collide is about 3 in 10^8, and a collision would only merge two values' counts.

The hour of week is taken in UTC: the event's time zone comes from the IP's
geolocation, which an attacker chooses, and the user's own zone is not
stored; a user's habits are as regular in UTC as long as they stay home.

Windows and consistency
    A call reads history from the whole store, not only from the requested
    events: events before ``lo - 24 h`` (lo = the earliest selected event)
    are aggregated per user / per value, those from there on go through the
    window functions, and the two are added; novelty of the prefix, city and
    device compares the event with the first known (user, value) event of
    the whole store, and the global counts are daily snapshots. So an event
    gets exactly the same features whether computed in one call over
    everything or in several calls over consecutive time windows
    (``tests/test_features.py`` checks it). The cost of a call is the
    windows over its own rows plus hash aggregates over the history before
    them (``bench/features.py``); the calls of one run over many windows
    compute the aggregates that do not depend on the window once
    (:class:`SharedHistory`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from importlib import resources

import duckdb
import pyarrow as pa

from ingest.errors import RiskgateError
from risk import feedback
from risk.config import known_pools, unpooled_of
from risk.score import check_period
from risk.signals import FEATURE_COLUMNS

#: Weight m of the Freeman smoothing prior (pseudo-events drawn from the level above).
FREEMAN_PRIOR = 1.0
#: The longest sliding window: how far before the first selected event the window functions start.
MAX_WINDOW = timedelta(hours=24)
HOSTING_FILE = "hosting_asns.csv"

ID_COLUMNS = ("event_id", "username", "creation_date", "event_type", "event_response")
#: The DuckDB variable holding, for a call, the pool of the events without a UserPoolId (:func:`bind_unpooled`).
UNPOOLED_VAR = "rg_unpooled"


class FeatureError(RiskgateError):
    """Features that cannot be computed for the request as given."""


@lru_cache(maxsize=1)
def hosting_asns() -> tuple[tuple[int, str, str], ...]:
    """(asn, provider, kind) of the shipped hosting/VPN list ``risk/data/hosting_asns.csv``."""
    text = resources.files("risk.data").joinpath(HOSTING_FILE).read_text(encoding="utf-8")
    out = []
    header_seen = False
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not header_seen:
            header_seen = True
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3 or not parts[0].isdigit() or parts[2] not in ("hosting", "vpn"):
            raise FeatureError(f"expected 'asn,provider,hosting|vpn', got {line!r}", source=HOSTING_FILE, line=lineno)
        out.append((int(parts[0]), parts[1], parts[2]))
    return tuple(out)


def bind_unpooled(con, pools=None) -> str | None:
    """Set :data:`UNPOOLED_VAR` on ``con`` (a connection or cursor: each has its own) for the feature SQL and
    return it: ``risk.config.unpooled_pool``, from ``pools`` when the caller has read the store's already. A
    user is a username in a pool, as in Cognito: ``alice`` of one pool never shares history, windows or counts
    with ``alice`` of another; events without a pool are the user of that pool."""
    pool = unpooled_of(known_pools(con) if pools is None else pools)
    con.execute(f"SET VARIABLE {UNPOOLED_VAR} = ?", [pool])
    return pool


# -- the keys counted in the user's and everyone's known history ------------------------------

_DT = "coalesce(device_type, '?')"
_OS = f"{_DT} || '/' || coalesce(os_family, '?')"
_BR = f"{_OS} || '/' || coalesce(browser_family, '?')"

#: key name -> SQL expression over the events table (NULL: the event has no such value).
KEYS = {
    "ip": "client_ip",
    "prefix": "ip_prefix",
    "asn": "coalesce(CAST(asn AS VARCHAR), '?')",
    "country": "coalesce(country_iso, '?')",
    "city": "CASE WHEN city IS NULL THEN NULL ELSE concat_ws('/', country_iso, region, city) END",
    "device": "device_fingerprint",
    "dtype": _DT,
    "os": _OS,
    "browser": _BR,
    "ua": "user_agent",
    "how": "CAST((isodow(creation_date AT TIME ZONE 'UTC') - 1) * 24 + hour(creation_date AT TIME ZONE 'UTC') AS VARCHAR)",
}
#: keys whose running count in the user's history is needed (Freeman levels, hour of week)
USER_KEYS = ("ip", "asn", "country", "dtype", "os", "browser", "ua", "how")
#: keys whose novelty alone is needed: "was there a known event with it before?"
NOVELTY_KEYS = ("prefix", "city", "device")
#: keys counted over everyone (Freeman's p(x)), as of the start of the event's UTC day
GLOBAL_KEYS = ("ip", "asn", "country", "dtype", "os", "browser", "ua")
#: Freeman hierarchies: (column, key), top level first
FREEMAN_HIERARCHIES = (
    (("freeman_country", "country"), ("freeman_asn", "asn"), ("freeman_ip", "ip")),
    (("freeman_device_type", "dtype"), ("freeman_os", "os"), ("freeman_browser", "browser"), ("freeman_ua", "ua")),
)
_FREEMAN_PRESENT = {"freeman_country": "client_ip", "freeman_device_type": "user_agent"}

_ORDER = "ORDER BY rk ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING"  # rk: (creation_date, event_id)
_CUM = "ORDER BY rk ROWS UNBOUNDED PRECEDING) - known::INT"  # running count of known rows before this one
_DAY = "(epoch_us(creation_date) // 86400000000)"  # UTC day number (integers: a DOUBLE // would not floor)


def _range(hours: int) -> str:
    # [t - hours, t - 1 us]: the event's peers (the same microsecond, the store's resolution) are left out
    # without EXCLUDE GROUP, which made DuckDB's framing about a fifth slower (identical results)
    return f"ORDER BY creation_date RANGE BETWEEN INTERVAL {int(hours)} HOUR PRECEDING AND INTERVAL 1 MICROSECOND PRECEDING"


def _h(expr: str) -> str:
    """A 64-bit hash of a key (NULL stays NULL): windows then sort narrow integers, not strings."""
    return f"CASE WHEN ({expr}) IS NULL THEN NULL ELSE hash({expr}) END"


def _window_ctes() -> tuple[str, list[str]]:
    """Narrow CTEs of window functions over ``n``, joined back on rk (one CTE per partitioning)."""
    specs: list[tuple[str, str]] = [
        ("wu_keys", ",\n              ".join(
            f"sum(known::INT) OVER (PARTITION BY uid, k_{k} {_CUM} AS wu_{k}" for k in USER_KEYS)),
    ]
    specs += [
        ("wu_total", f"""sum(known::INT) OVER (PARTITION BY uid {_CUM} AS wu_total,
              last_value(CASE WHEN known THEN {{'t': creation_date, 'lat': latitude, 'lon': longitude}} END IGNORE NULLS)
                OVER (PARTITION BY uid {_ORDER}) AS w_prev"""),
        ("wu_fail", f"""coalesce(sum(failed::INT) OVER (PARTITION BY uid {_range(1)}), 0) AS user_failures_1h,
              coalesce(sum(failed::INT) OVER (PARTITION BY uid {_range(24)}), 0) AS user_failures_24h"""),
        ("wip", f"""coalesce(sum(failed::INT) OVER (PARTITION BY k_ip {_range(1)}), 0) AS ip_failures_1h,
              coalesce(sum(failed::INT) OVER (PARTITION BY k_ip {_range(24)}), 0) AS ip_failures_24h,
              count(DISTINCT uid) OVER (PARTITION BY k_ip {_range(1)}) AS ip_users_1h,
              count(DISTINCT uid) OVER (PARTITION BY k_ip {_range(24)}) AS ip_users_24h"""),
        ("wpfx", f"""coalesce(sum(failed::INT) OVER (PARTITION BY k_prefix {_range(24)}), 0) AS prefix_failures_24h,
              count(DISTINCT uid) OVER (PARTITION BY k_prefix {_range(24)}) AS prefix_users_24h"""),
    ]
    ctes = [f"{name} AS (SELECT rk, {expr} FROM n)" for name, expr in specs]
    joins = " ".join(f"JOIN {name} USING (rk)" for name, _ in specs[1:])
    ctes.append(f"win AS (SELECT * FROM {specs[0][0]} {joins})")
    return ",\n".join(ctes), [name for name, _ in specs]


def _freeman_sql() -> tuple[str, dict[str, str]]:
    """Per-level global conditionals and smoothed user joints, then the output expression per column."""
    m = float(FREEMAN_PRIOR)
    inner, out = [], {}
    for hierarchy in FREEMAN_HIERARCHIES:
        present = _FREEMAN_PRESENT[hierarchy[0][0]]
        parent = None
        for col, key in hierarchy:
            if parent is None:
                pg = f"((cg_{key} + 1) / (n_g + 1))"
                pu_prev = "1.0"
            else:
                pg = f"least(1.0, (cg_{key} + 1) / (cg_{parent[1]} + 1))"
                pu_prev = f"pu_{parent[0]}"
            inner.append(f"{pg} AS pg_{col}")
            inner.append(f"(cu_{key} + {m} * {pu_prev} * {pg}) / (n_u + {m}) AS pu_{col}")
            cond = f"pu_{col}" if parent is None else f"(pu_{col} / pu_{parent[0]})"
            out[col] = f"CASE WHEN {present} IS NULL THEN NULL ELSE ln(pg_{col}) - ln({cond}) END"
            parent = (col, key)
    return ",\n      ".join(inner), out


def _ev_sql(source: str) -> str:
    """The events with the columns features need: known, failed, user and key hashes, UTC day (CTE body).
    The user (``uid``) is the username in its pool (:func:`bind_unpooled` must have run on the connection)."""
    key_cols = ",\n      ".join(f"{_h(expr)} AS k_{name}" for name, expr in KEYS.items())
    return f"""
  SELECT e.event_id, e.username, e.creation_date, e.event_type, e.event_response,
      e.client_ip, e.ip_prefix, e.asn, e.country_iso, e.city, e.device_fingerprint, e.user_agent,
      e.latitude, e.longitude, e.has_context_data,
      {feedback.known_sql("e", "fl")} AS known,
      {feedback.failed_sql("e", "fl")} AS failed,
      hash(e.username, coalesce(e.user_pool_id, getvariable('{UNPOOLED_VAR}'))) AS uid,
      {_DAY} AS d,
      {key_cols}
  FROM {source} e LEFT JOIN fl ON fl.event_id = e.event_id
"""


#: The rows a call with cached global counts needs: the selected events' users' whole history, and
#: every event in the window span (other users' events from the same IP or network).
_SCOPED_SOURCE = """(SELECT * FROM events
    WHERE username IN (SELECT username FROM _rg_feat_scope) OR (creation_date >= ? AND creation_date <= ?))"""


def _build_sql(filters: str, cached_globals: bool = False, shared: bool = False) -> str:
    """The one statement. Parameters: cut, hi (window rows), cut (history before them), hi (novelty
    and global history), then the filter's. With ``cached_globals`` the events are only the scoped
    ones (``_SCOPED_SOURCE``, two more parameters first: cut, hi) and everyone's counts come from
    ``_rg_feat_global`` (:class:`GlobalCounts`) instead of the whole history. With ``shared`` everyone's
    counts come from ``_rg_feat_global`` and the first known (user, value) events from ``_rg_feat_first``
    (:class:`SharedHistory`: the whole store's, the same values)."""
    windows, _ = _window_ctes()

    ctes, joins = [], []
    for k in USER_KEYS:  # the user's counts before the window rows
        ctes.append(f"bu_{k} AS (SELECT uid, k_{k} AS k, count(*) AS c FROM pre "
                    f"WHERE k_{k} IS NOT NULL AND uid IN (SELECT uid FROM tu) GROUP BY ALL)")
        joins.append(f"LEFT JOIN bu_{k} ON bu_{k}.uid = t.uid AND bu_{k}.k = t.k_{k}")
    for k in NOVELTY_KEYS:  # the first known event of each (user, value), over all history
        if shared:
            ctes.append(f"fk_{k} AS (SELECT uid, k, first FROM _rg_feat_first WHERE name = '{k}')")
        else:
            ctes.append(f"fk_{k} AS (SELECT uid, k_{k} AS k, min({{'t': creation_date, 'id': event_id}}) AS first "
                        f"FROM hist WHERE known AND k_{k} IS NOT NULL AND uid IN (SELECT uid FROM tu) GROUP BY ALL)")
        joins.append(f"LEFT JOIN fk_{k} ON fk_{k}.uid = t.uid AND fk_{k}.k = t.k_{k}")
    for k in GLOBAL_KEYS:  # everyone's counts before the event's day
        if cached_globals or shared:
            ctes.append(f"g_{k} AS (SELECT k, d, c FROM _rg_feat_global WHERE name = '{k}')")
        else:
            ctes.append(f"""g_{k} AS (SELECT k, d, sum(c) OVER (PARTITION BY k ORDER BY d ROWS UNBOUNDED PRECEDING) - c AS c
              FROM (SELECT k_{k} AS k, d, count(*) FILTER (WHERE known) AS c FROM hist
                    WHERE k_{k} IN (SELECT k_{k} FROM t) GROUP BY ALL))""")
        joins.append(f"LEFT JOIN g_{k} ON g_{k}.k = t.k_{k} AND g_{k}.d = t.d")
    if cached_globals or shared:
        ctes.append("g_total AS (SELECT d, c FROM _rg_feat_global WHERE name = 'total')")
    else:
        ctes.append("""g_total AS (SELECT d, sum(c) OVER (ORDER BY d ROWS UNBOUNDED PRECEDING) - c AS c
              FROM (SELECT d, count(*) FILTER (WHERE known) AS c FROM hist GROUP BY d))""")
    joins.append("LEFT JOIN g_total ON g_total.d = t.d")

    counts = ",\n      ".join(
        [f"(win.wu_{k} + coalesce(bu_{k}.c, 0))::DOUBLE AS cu_{k}" for k in USER_KEYS]
        + [f"coalesce(g_{k}.c, 0)::DOUBLE AS cg_{k}" for k in GLOBAL_KEYS]
        + [f"CASE WHEN fk_{k}.first < {{'t': t.creation_date, 'id': t.event_id}} THEN 0.0 ELSE 1.0 END AS seen_new_{k}"
           for k in NOVELTY_KEYS]
    )
    free_inner, freeman_cols = _freeman_sql()
    history_ctes = ",\n".join(ctes)

    def novelty(key: str, present: str) -> str:
        return f"CASE WHEN {present} IS NULL THEN NULL WHEN cu_{key} > 0 THEN 0.0 ELSE 1.0 END"

    hav = (
        "2 * 6371.0088 * asin(sqrt(pow(sin(radians(latitude - prev.lat) / 2), 2) + "
        "cos(radians(prev.lat)) * cos(radians(latitude)) * pow(sin(radians(longitude - prev.lon) / 2), 2)))"
    )
    no_geo = "prev IS NULL OR latitude IS NULL OR longitude IS NULL OR prev.lat IS NULL OR prev.lon IS NULL"
    # exact microseconds, then seconds and hours as risk.online computes them (epoch() rounds differently)
    hours_prev = "((epoch_us(creation_date) - epoch_us(prev.t)) / 1000000) / 3600.0"
    cols = {
        "history_size": "n_u",
        "new_ip": novelty("ip", "client_ip"),
        "new_ip_prefix": "CASE WHEN ip_prefix IS NULL THEN NULL ELSE seen_new_prefix END",
        "new_asn": novelty("asn", "asn"),
        "new_country": novelty("country", "country_iso"),
        "new_city": "CASE WHEN city IS NULL THEN NULL ELSE seen_new_city END",
        "new_device": "CASE WHEN device_fingerprint IS NULL THEN NULL ELSE seen_new_device END",
        "travel_speed_kmh": f"CASE WHEN {no_geo} THEN NULL ELSE {hav} / greatest({hours_prev}, 1.0 / 60) END",
        "travel_distance_km": f"CASE WHEN {no_geo} THEN NULL ELSE {hav} END",
        "hours_since_last_success": f"CASE WHEN prev IS NULL THEN NULL ELSE {hours_prev} END",
        "unusual_hour": "ln((n_u + 168) / (168 * (cu_how + 1)))",
        "user_failures_1h": "user_failures_1h",
        "user_failures_24h": "user_failures_24h",
        "ip_failures_1h": "CASE WHEN client_ip IS NULL THEN NULL ELSE ip_failures_1h END",
        "ip_failures_24h": "CASE WHEN client_ip IS NULL THEN NULL ELSE ip_failures_24h END",
        "prefix_failures_24h": "CASE WHEN ip_prefix IS NULL THEN NULL ELSE prefix_failures_24h END",
        "ip_users_1h": "CASE WHEN client_ip IS NULL THEN NULL ELSE ip_users_1h END",
        "ip_users_24h": "CASE WHEN client_ip IS NULL THEN NULL ELSE ip_users_24h END",
        "prefix_users_24h": "CASE WHEN ip_prefix IS NULL THEN NULL ELSE prefix_users_24h END",
        "hosting_network": "CASE WHEN asn IS NULL THEN NULL WHEN is_hosting THEN 1.0 ELSE 0.0 END",
        "no_context_data": "CASE WHEN has_context_data IS NULL THEN NULL WHEN has_context_data THEN 0.0 ELSE 1.0 END",
        **freeman_cols,
    }
    missing = [c for c in FEATURE_COLUMNS if c not in cols]
    if missing:  # a signal registered without SQL: a programming error, caught by the tests
        raise FeatureError(f"no SQL for the feature columns {missing}")
    out_cols = ",\n      ".join(f"CAST({cols[c]} AS DOUBLE) AS {c}" for c in FEATURE_COLUMNS)

    return f"""
WITH fl AS ({feedback.HISTORY_FLAGS_SQL}),
ev AS ({_ev_sql(_SCOPED_SOURCE if cached_globals else "events")}),
w AS (SELECT *, row_number() OVER (ORDER BY creation_date, event_id) AS rk
      FROM ev WHERE creation_date >= ? AND creation_date <= ?),
pre AS (SELECT * FROM ev WHERE known AND creation_date < ?),
hist AS (SELECT * FROM ev WHERE creation_date <= ?),
n AS (SELECT rk, uid, known, failed, creation_date, latitude, longitude, {", ".join("k_" + k for k in KEYS)} FROM w),
{windows},
t AS (SELECT * FROM w WHERE {filters}),
tu AS (SELECT DISTINCT uid FROM t),
{history_ctes},
bu_total AS (SELECT uid, count(*) AS c, last({{'t': creation_date, 'lat': latitude, 'lon': longitude}}
                 ORDER BY creation_date, event_id) AS prev
             FROM pre WHERE uid IN (SELECT uid FROM tu) GROUP BY uid),
hosting AS (SELECT DISTINCT asn FROM _rg_feat_hosting),
joined AS (
  SELECT t.*, win.* EXCLUDE (rk), coalesce(win.w_prev, bu_total.prev) AS prev,
      (win.wu_total + coalesce(bu_total.c, 0))::DOUBLE AS n_u,
      coalesce(g_total.c, 0)::DOUBLE AS n_g,
      hosting.asn IS NOT NULL AS is_hosting,
      {counts}
  FROM t
  JOIN win ON win.rk = t.rk
  {" ".join(joins)}
  LEFT JOIN bu_total ON bu_total.uid = t.uid
  LEFT JOIN hosting ON hosting.asn = t.asn
),
fr AS (
  SELECT *,
      {free_inner}
  FROM joined
)
SELECT event_id, username, creation_date, event_type, event_response,
      {out_cols}
FROM fr
ORDER BY rk
"""


def _output_schema() -> pa.Schema:
    return pa.schema(
        [
            pa.field("event_id", pa.string()),
            pa.field("username", pa.string()),
            pa.field("creation_date", pa.timestamp("us", tz="UTC")),
            pa.field("event_type", pa.string()),
            pa.field("event_response", pa.string()),
        ]
        + [pa.field(c, pa.float64()) for c in FEATURE_COLUMNS]
    )


def store_signature(con) -> tuple:
    """(events, feedback rows, prevented events) stored: what state kept beside the store compares to notice that
    the store changed."""
    return tuple(con.execute("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM feedback), "
                             "(SELECT count(*) FROM prevented_events)").fetchall()[0])


class GlobalCounts:
    """Everyone's known-history counts per Freeman key and UTC day, kept in memory for calls on few events.

    The features of a handful of events need, besides their users' history
    and the events around them, the global frequencies of their key values
    before their day -- which, computed from the store, means reading all of
    it each time. This object reads them once (the same ``ev`` definition as
    the feature SQL: same keys, hashes, days and "known") and is then kept
    exact: :meth:`ensure` (before writing) rebuilds it when the store changed
    behind it (events or feedback added by anyone), and :meth:`add` (after
    writing new events) counts them in. ``compute_features(...,
    global_counts=gc)`` then gives the same result as without it.
    """

    #: Rows added since the last build after which the next ``ensure`` rebuilds (keeps lookups fast).
    REBUILD_AFTER = 50_000

    def __init__(self):
        self.signature: tuple | None = None
        self._keys: dict[str, tuple] = {}
        self._overlay: dict[tuple[str, int], dict[int, int]] = {}
        self._added = 0
        self.builds = 0

    def ensure(self, con) -> None:
        """Rebuild from the store when it holds events or feedback this object has not counted."""
        sig = store_signature(con)
        if sig != self.signature or self._added > self.REBUILD_AFTER:
            self._build(con)
            self.signature = sig

    def _build(self, con) -> None:
        import numpy as np

        keys = {}
        for name in (*GLOBAL_KEYS, "total"):
            col = "0::UBIGINT" if name == "total" else f"k_{name}"
            h, d, c = (np.asarray(a) for a in con.execute(
                f"""WITH fl AS ({feedback.HISTORY_FLAGS_SQL}), ev AS ({_ev_sql("events")})
                    SELECT h, d, sum(c) OVER (PARTITION BY h ORDER BY d ROWS UNBOUNDED PRECEDING) AS cum
                    FROM (SELECT {col} AS h, d, count(*) FILTER (WHERE known) AS c FROM ev
                          WHERE {col} IS NOT NULL GROUP BY ALL)
                    ORDER BY h, d""").fetchnumpy().values())
            keys[name] = (h.astype(np.uint64), d.astype(np.int64), c.astype(np.int64))
        self._keys = keys
        self._overlay = {}
        self._added = 0
        self.builds += 1

    def _before(self, name: str, h: int, d: int) -> int:
        import numpy as np

        hs, ds, cum = self._keys[name]
        lo = int(np.searchsorted(hs, np.uint64(h), "left"))
        hi = int(np.searchsorted(hs, np.uint64(h), "right"))
        j = lo + int(np.searchsorted(ds[lo:hi], d, "left"))
        n = int(cum[j - 1]) if j > lo else 0
        extra = self._overlay.get((name, h))
        if extra:
            n += sum(c for day, c in extra.items() if day < d)
        return n

    def _target_keys(self, con, event_ids: Sequence[str]) -> list[dict]:
        con.register("_rg_feat_gk", pa.table({"event_id": pa.array(list(dict.fromkeys(event_ids)), pa.string())}))
        try:
            cur = con.execute(
                f"""WITH fl AS ({feedback.HISTORY_FLAGS_SQL}),
                    ev AS ({_ev_sql("(SELECT * FROM events SEMI JOIN _rg_feat_gk USING (event_id))")})
                    SELECT event_id, d, known, {", ".join("k_" + k for k in GLOBAL_KEYS)} FROM ev""")
            names = [c[0] for c in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]
        finally:
            con.unregister("_rg_feat_gk")

    def add(self, con, event_ids: Sequence[str]) -> None:
        """Count in events just written (each at most once), then remember the store's new state."""
        for row in self._target_keys(con, event_ids):
            if not row["known"]:
                continue
            for name in (*GLOBAL_KEYS, "total"):
                h = 0 if name == "total" else row["k_" + name]
                if h is None:
                    continue
                days = self._overlay.setdefault((name, int(h)), {})
                days[row["d"]] = days.get(row["d"], 0) + 1
                self._added += 1
        self.signature = store_signature(con)

    def uncount(self, con, event_ids: Sequence[str]) -> None:
        """Take back events :meth:`add` counted as known that no longer are (the service prevented them:
        ``risk.feedback``), then remember the store's new state."""
        for row in self._target_keys(con, event_ids):
            for name in (*GLOBAL_KEYS, "total"):
                h = 0 if name == "total" else row["k_" + name]
                if h is None:
                    continue
                days = self._overlay.setdefault((name, int(h)), {})
                days[row["d"]] = days.get(row["d"], 0) - 1
        self.signature = store_signature(con)

    def table_for(self, con, event_ids: Sequence[str]) -> pa.Table:
        """``_rg_feat_global`` rows (name, k, d, c = count before day d) for the keys of these events."""
        names, ks, ds, cs = [], [], [], []
        seen = set()
        for row in self._target_keys(con, event_ids):
            d = int(row["d"])
            for name in (*GLOBAL_KEYS, "total"):
                h = 0 if name == "total" else row["k_" + name]
                if h is None or (name, h, d) in seen:
                    continue
                seen.add((name, h, d))
                names.append(name)
                ks.append(None if name == "total" else int(h))
                ds.append(d)
                cs.append(self._before(name, int(h), d))
        return pa.table({"name": pa.array(names, pa.string()), "k": pa.array(ks, pa.uint64()),
                         "d": pa.array(ds, pa.int64()), "c": pa.array(cs, pa.int64())})


class SharedHistory:
    """The parts of every call's history that do not depend on the call, over the whole store, for the
    calls of one run over consecutive windows (a backfill's chunks, training's windows).

    Each call reads the history before its window again. Two parts of that are the same for every window
    when taken over the whole store: everyone's known counts per Freeman key and UTC day, as running sums
    before each day (an event's count looks only at the days before its own, all of them before the
    event), and each user's first known event per novelty key and value (one after the event compares as
    not before it, as none would). This object computes them once; ``compute_features(...,
    shared=sh)`` then reads them instead of aggregating the history again, with the same result. It
    remembers the store's signature (:func:`store_signature`) and is not used once the store has
    changed (a call then computes everything itself).
    """

    def __init__(self, con):
        self.signature = store_signature(con)
        self.unpooled = bind_unpooled(con)  # whose user pool-less events are: part of what "the same" means
        head = f"WITH fl AS ({feedback.HISTORY_FLAGS_SQL}), ev AS ({_ev_sql('events')})"
        per_day = " UNION ALL ".join(
            [f"SELECT '{k}' AS name, k_{k} AS k, d, count(*) FILTER (WHERE known) AS c FROM ev "
             f"WHERE k_{k} IS NOT NULL GROUP BY ALL" for k in GLOBAL_KEYS]
            + ["SELECT 'total' AS name, 0::UBIGINT AS k, d, count(*) FILTER (WHERE known) AS c FROM ev GROUP BY ALL"])
        self.globals = con.sql(
            f"""{head}, per_day AS ({per_day})
                SELECT name, k, d,
                       CAST(sum(c) OVER (PARTITION BY name, k ORDER BY d ROWS UNBOUNDED PRECEDING) - c AS BIGINT) AS c
                FROM per_day""").to_arrow_table()
        first = " UNION ALL ".join(
            f"SELECT '{k}' AS name, uid, k_{k} AS k, min({{'t': creation_date, 'id': event_id}}) AS first FROM ev "
            f"WHERE known AND k_{k} IS NOT NULL GROUP BY ALL" for k in NOVELTY_KEYS)
        self.first = con.sql(f"{head} {first}").to_arrow_table()

    def current(self, con) -> bool:
        """Whether the store is still as it was when this was computed."""
        return store_signature(con) == self.signature


#: Calls over consecutive windows share their history (:class:`SharedHistory`) when, together, they would
#: read the history before them at least this many times over the store's events: computing it once costs
#: about one such reading. On 5,000,000 events in 20 windows a late window took 6.55 s instead of 9.02 s.
SHARE_HISTORY_READS = 2.0


def worth_sharing(con, starts: Sequence[datetime]) -> bool:
    """Whether calls over windows starting at ``starts`` read enough history before them to share it."""
    if len(starts) < 2:
        return False
    total = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
    before = sum(con.execute("SELECT count(*) FROM events WHERE creation_date < ?", [start]).fetchall()[0][0]
                 for start in starts)
    return total > 0 and before >= SHARE_HISTORY_READS * total


def compute_features(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    event_ids: Sequence[str] | None = None,
    usernames: Sequence[str] | None = None,
    global_counts: GlobalCounts | None = None,
    shared: SharedHistory | None = None,
) -> pa.Table:
    """Features of the stored events with ``since <= creation_date < until`` (and in ``event_ids`` /
    of ``usernames`` when given), ordered by (creation_date, event_id).

    History comes from the whole store (see the module docstring), so the
    result for an event does not depend on which other events were selected.
    With ``global_counts`` (only together with ``event_ids``) everyone's
    counts come from that object and only the selected events' users and
    the events around them are read: the same result for a few events,
    without reading the whole store.
    """
    if global_counts is not None and event_ids is None:
        raise FeatureError("global_counts needs event_ids (it is for a few events at a time)")
    if global_counts is not None and shared is not None:
        raise FeatureError("give global_counts (a few events) or shared (a run's windows), not both")
    for name, value in (("since", since), ("until", until)):
        if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
            raise FeatureError(f"{name} must be a timezone-aware datetime, got {value!r}")
    check_period(since, until)
    for name, value in (("event_ids", event_ids), ("usernames", usernames)):
        if isinstance(value, str):
            raise FeatureError(f"{name} must be a list of strings, got the single string {value!r}")

    conds = ["TRUE"]
    params: list = []
    if since is not None:
        conds.append("creation_date >= ?")
        params.append(since)
    if until is not None:
        conds.append("creation_date < ?")
        params.append(until)
    registered = []
    try:
        if event_ids is not None:
            con.register("_rg_feat_ids", pa.table({"event_id": pa.array(list(event_ids), pa.string())}))
            registered.append("_rg_feat_ids")
            conds.append("event_id IN (SELECT event_id FROM _rg_feat_ids)")
        if usernames is not None:
            con.register("_rg_feat_users", pa.table({"username": pa.array(list(usernames), pa.string())}))
            registered.append("_rg_feat_users")
            conds.append("username IN (SELECT username FROM _rg_feat_users)")
        filters = " AND ".join(conds)

        bounds = con.execute(
            f"SELECT min(creation_date), max(creation_date) FROM events WHERE {filters}", params
        ).fetchall()
        lo, hi = bounds[0]
        if lo is None:
            return _output_schema().empty_table()
        cut = lo - MAX_WINDOW

        con.register("_rg_feat_hosting", pa.table({"asn": pa.array([a for a, _, _ in hosting_asns()], pa.int64())}))
        registered.append("_rg_feat_hosting")
        scope_params: list = []
        if global_counts is not None:
            con.register("_rg_feat_global", global_counts.table_for(con, list(event_ids)))
            registered.append("_rg_feat_global")
            users = [r[0] for r in con.execute(
                "SELECT DISTINCT username FROM events WHERE event_id IN (SELECT event_id FROM _rg_feat_ids)").fetchall()]
            con.register("_rg_feat_scope", pa.table({"username": pa.array(users, pa.string())}))
            registered.append("_rg_feat_scope")
            scope_params = [cut, hi]
        unpooled = bind_unpooled(con)
        use_shared = shared is not None and shared.current(con) and shared.unpooled == unpooled
        if use_shared:
            con.register("_rg_feat_global", shared.globals)
            con.register("_rg_feat_first", shared.first)
            registered += ["_rg_feat_global", "_rg_feat_first"]
        sql = _build_sql(filters, cached_globals=global_counts is not None, shared=use_shared)
        table = con.sql(sql, params=[*scope_params, cut, hi, cut, hi, *params]).to_arrow_table()
    except duckdb.Error as exc:
        raise FeatureError(f"computing features failed: {exc}") from exc
    finally:
        for name in registered:
            con.unregister(name)
    return table.cast(_output_schema())
