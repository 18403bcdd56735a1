"""Normalise and enrich a batch of events: the checks every format shares, then the derived columns.

Set-wise over a whole batch: the header columns and fingerprints in Arrow
compute and numpy on the flattened header lists (:func:`with_header_columns`,
:func:`with_fingerprints`), the checks and joins in DuckDB SQL on Arrow tables;
Python runs only once per *distinct* value (client-IP resolution per distinct
address and value of the one forwarding header believed, where Arrow compute
cannot resolve it; agent parsing per distinct agent, GeoIP per distinct address
block or network, SHA-256 per distinct fingerprint source). The checks run on
the headers and resolved addresses alone (``_CHECKED_SQL``); the joins with the
per-distinct-value tables only in the final projection (``_FINAL_SQL``).

Checks (a row failing any goes to quarantine with every reason found):

* event_id matches Cognito's ``[\\w+-]{1,50}``; username 1..128 characters; UserPoolId, when given,
  1..55 characters (``ingest.schema.user_pool_id_problem``, the risk configuration's rule);
* EventType is one of Cognito's five; EventResponse one of Pass/Fail/InProgress
  (``Success``/``Failure`` accepted and mapped to Pass/Fail);
* creation time between 2000-01-01 and one day after now (UTC);
* each ChallengeResponses item's ChallengeName is Password or Mfa and its ChallengeResponse Success or Failure
  (the reason names the item's position and the value);
* ContextData.IpAddress, when given, is an IPv4 or IPv6 address;
* no header value over 16 KiB, at most 100 headers and 64 KiB in all.

Device fingerprint: ``ed-`` + SHA-256 (first 32 hex) of EncodedData when the
client library sent it; otherwise ``hd-`` + SHA-256 of the stable headers
(User-Agent, Accept-Language, Accept, Accept-Encoding, Sec-CH-UA,
Sec-CH-UA-Platform, Sec-CH-UA-Mobile, joined by U+001F); none without a
user agent.

Geo: a source's own columns (RBA: Country, Region, City, ASN; Cognito's
export: city, country) win field by field; the GeoIP lookup fills the rest.
``geo_source`` says which: ``lookup``, ``source``, ``source+lookup`` or ``none``.
"""

from __future__ import annotations

import functools
import json
import operator
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.agent import AgentParser, parse_agent
from ingest.context import ClientIP, ProxyPolicy, default_policy, resolve_client_ip_from
from ingest.geo import GeoResolver
from ingest.store import SESSION_SETTINGS, scratch
from ingest.schema import (
    CHALLENGE_NAMES,
    CHALLENGE_RESPONSES,
    EVENT_COLUMNS,
    EVENT_ID_PATTERN,
    EVENT_ID_RULE,
    EVENT_SCHEMA,
    EVENT_TYPES,
    MAX_FUTURE,
    MIN_TIME,
    BLANK,
    BLANK_SQL,
    MAX_USERNAME,
    SOURCE_SCHEMA,
    conform,
    short_digest,
    user_pool_id_problem,
)
from ingest.sources.base import RAW_COLUMN

MAX_HEADER_VALUE = 16 * 1024
MAX_HEADERS = 100
MAX_HEADERS_TOTAL = 64 * 1024
#: the forwarding headers a proxy may write (every value of each, in order), and their columns; only the one the
#: proxy policy names (``ProxyPolicy.header``) is consulted for the client address (its values also in ``h_fwd``)
FORWARDING_HEADERS = {"forwarded": "h_forwarded", "x-forwarded-for": "h_xff", "x-real-ip": "h_xri"}
#: the stable headers that, after the user agent, make a device fingerprint without EncodedData
STABLE_HEADERS = ("accept-language", "accept", "accept-encoding", "sec-ch-ua", "sec-ch-ua-platform",
                  "sec-ch-ua-mobile")
_OUT_SCHEMA = pa.schema([f.with_nullable(True) for f in EVENT_SCHEMA])


@contextmanager
def _registered(con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table]):
    """``tables`` registered on ``con`` under their names for the block (unregistered after, whatever happens)."""
    try:
        for name, table in tables.items():
            con.register(name, table)
        yield con
    finally:
        for name in tables:
            try:
                con.unregister(name)
            except duckdb.Error:
                pass


def _quarantined(bad: pa.Table, raw: pa.Array) -> pa.Table:
    """Bad rows (source_line, reason, _i) with their raw text instead of _i (``source_line``, ``reason``, ``_raw``)."""
    bad_raw = raw.take(bad.column("_i")) if bad.num_rows else pa.array([], pa.string())
    return bad.drop_columns(["_i"]).append_column(RAW_COLUMN, bad_raw.cast(pa.string()))


@dataclass
class Staged:
    """A batch checked and enriched up to its last step: the tables the final projection reads (``_FINAL_SQL``),
    its parameters, the rows to quarantine, and the event ids of the good rows."""

    tables: dict[str, pa.Table]  # hdr_, ips_, agents_, geo_, countries_
    params: dict
    bad: pa.Table  # source_line, reason, _raw
    bad_i: pa.Table | None  # the bad rows' _i (None when there are none)
    event_ids: pa.ChunkedArray  # of the good rows, in order

    @property
    def good_rows(self) -> int:
        return len(self.event_ids)

    def registered(self, con: duckdb.DuckDBPyConnection):
        """The tables :meth:`select_sql` reads, registered on ``con`` for a ``with`` block."""
        return _registered(con, dict(self.tables, **({"bad_i_": self.bad_i} if self.bad_i is not None else {})))

    def select_sql(self) -> str:
        """The good rows' EVENT_COLUMNS (named parameters: :attr:`params`)."""
        where = "WHERE _i NOT IN (SELECT _i FROM bad_i_)" if self.bad_i is not None else ""
        return f"SELECT {', '.join(EVENT_COLUMNS)} FROM ({_FINAL_SQL}) {where}"


COUNTRY_NAMES_FILE = "country_names.csv"


@functools.lru_cache(maxsize=1)
def country_names() -> pa.Table:
    """(name_key, iso): English country names, lower-cased, to ISO 3166-1 codes (``ingest/data/country_names.csv``,
    built by ``build_country_names.py`` beside it): a source that names its country (Cognito's user-activity
    export) gets the code the features and reports key on."""
    import csv
    from importlib import resources

    text = resources.files("ingest.data").joinpath(COUNTRY_NAMES_FILE).read_text(encoding="utf-8")
    rows = list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))
    return pa.table({"name_key": pa.array([r["name"].strip().lower() for r in rows], pa.string()),
                     "iso": pa.array([r["iso"] for r in rows], pa.string())})


#: the GeoIP columns (``g_<name>``) and their types, in GeoRecord's order
_GEO_FIELDS = {"country_iso": pa.string(), "country_name": pa.string(), "region": pa.string(), "city": pa.string(),
               "latitude": pa.float64(), "longitude": pa.float64(), "time_zone": pa.string(), "asn": pa.int64(),
               "as_org": pa.string()}
_geo_values = operator.attrgetter(*_GEO_FIELDS)


#: a common agent string, parsed once ahead so that ua-parser has loaded its rules before the first batch
_WARM_AGENT = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
               "Chrome/126.0.0.0 Safari/537.36")


def _warm_up(geo: GeoResolver | None) -> None:
    """What the first batch would otherwise wait for, done ahead in a thread of its own: pyarrow's first
    conversion of a numpy array imports pandas (0.2-0.3 s), ua-parser loads its rules on its first parse (0.1 s),
    and the time-zone finder opens its data on first use (with a city database without zones, DB-IP Lite).
    A failure here is left to the real use to report."""
    try:
        pa.array(np.zeros(1, np.int64))
        parse_agent(_WARM_AGENT)
        if geo is not None:
            geo.warm_up()
    except Exception:  # noqa: BLE001 -- the same call fails again where it matters, with its context
        pass


@dataclass
class Enricher:
    """Holds what lives across batches: the proxy policy, agent parser and GeoIP resolver."""

    geo: GeoResolver | None
    proxies: ProxyPolicy = field(default_factory=default_policy)
    agents: AgentParser = field(default_factory=AgentParser)
    con: duckdb.DuckDBPyConnection = field(default_factory=scratch)
    #: client-IP resolutions kept across batches (addresses recur), by (IpAddress, the policy's header's values),
    #: for the one policy they were made with (another policy, another cache)
    max_ip_cache: int = 100_000

    def __post_init__(self) -> None:
        self.con.execute("SET TimeZone='UTC'")
        self._owner = threading.get_ident()
        self._local = threading.local()  # the other threads' connections (cursors of ``con``)
        self._cursor_lock = threading.Lock()
        self._ip_cache: tuple[ProxyPolicy | None, dict[tuple, ClientIP]] = (None, {})
        # first-use costs paid beside the reading of the first batch (which releases the GIL while it parses)
        self._warming: threading.Thread | None = threading.Thread(
            target=_warm_up, args=(self.geo,), name="riskgate-warm-up", daemon=True)
        self._warming.start()

    def ready(self) -> None:
        """Wait for the warm-up (at once after the first batch): nothing is set up by two threads at a time.
        Whatever uses the agent parser or the GeoIP resolver calls this first (:meth:`run`, :meth:`stage`,
        ``ingest.one.canonical``)."""
        warming = self._warming  # (read once: two threads may get here at once)
        if warming is not None:
            warming.join()
            self._warming = None

    def connection(self) -> duckdb.DuckDBPyConnection:
        """This thread's connection to the enricher's scratch database (``con`` in the thread that made the
        enricher, a cursor of it in any other): :meth:`stage` may run in several threads at once
        (``ingest.pipeline``), and each registers its batch's tables on its own connection; ingest's
        readers parse on it too."""
        if threading.get_ident() == self._owner:
            return self.con
        con = getattr(self._local, "con", None)
        if con is None:
            with self._cursor_lock:
                con = self.con.cursor()
            for stmt in SESSION_SETTINGS:
                con.execute(stmt)
            self._local.con = con
        return con

    def run(self, events: pa.Table, source_format: str, source_file: str) -> tuple[pa.Table, pa.Table]:
        """Return (good rows in EVENT_SCHEMA, bad rows with ``source_line``, ``reason``, ``_raw``)."""
        tables, params, raw = self._tables(events, source_format, source_file)
        con = self.connection()
        with _registered(con, tables):
            out = con.sql(f"SELECT {', '.join(EVENT_COLUMNS)}, reason, _i FROM ({_FINAL_SQL})",
                          params=params).to_arrow_table()
        if out.column("reason").null_count == out.num_rows:  # the usual batch: nothing to filter out
            good, bad = out, out.slice(0, 0)
        else:
            bad_mask = pc.is_valid(out.column("reason"))
            good, bad = out.filter(pc.invert(bad_mask)), out.filter(bad_mask).sort_by("_i")
        bad = bad.select(["source_line", "reason", "_i"])
        return good.select(EVENT_COLUMNS).cast(_OUT_SCHEMA), _quarantined(bad, raw)

    def stage(self, events: pa.Table, source_format: str, source_file: str) -> Staged:
        """Everything of :meth:`run` but the final projection of the good rows, which the caller runs where the
        rows go (``ingest.store.insert_events_from``: straight into the store, never out as Arrow)."""
        tables, params, raw = self._tables(events, source_format, source_file)
        con = self.connection()
        with _registered(con, tables):
            # the rows to quarantine, with every reason (only the columns the reasons read are computed)
            bad = con.sql(f"SELECT source_line, reason, _i FROM ({_CHECKED_SQL}) WHERE reason IS NOT NULL "
                          "ORDER BY _i", params=params).to_arrow_table()
        hdr = tables["hdr_"]
        ids = hdr.column("event_id")
        bad_i = None
        if bad.num_rows:
            bad_i = pa.table({"_i": bad.column("_i")})
            ids = ids.filter(pc.invert(pc.is_in(hdr.column("_i"), value_set=bad.column("_i").combine_chunks())))
        return Staged(tables, params, _quarantined(bad, raw), bad_i, ids)

    def _tables(self, events: pa.Table, source_format: str, source_file: str) -> tuple[dict, dict, pa.Array]:
        """The tables ``_FINAL_SQL`` reads (hdr_, ips_, agents_, geo_), its parameters, and the rows' raw text."""
        self.ready()
        n = events.num_rows
        raw = events.column(RAW_COLUMN) if RAW_COLUMN in events.column_names else pa.nulls(n, pa.string())
        base = conform(events, SOURCE_SCHEMA)
        base = base.set_column(base.schema.get_field_index("source_format"), "source_format",
                               pa.array([source_format] * n, pa.string()))
        base = base.set_column(base.schema.get_field_index("source_file"), "source_file",
                               pa.array([source_file] * n, pa.string()))
        base = base.append_column("_i", pa.array(range(n), pa.int64()))
        con = self.connection()
        policy = self.proxies  # (one policy for the whole batch)
        hdr = with_fingerprints(with_header_columns(base, policy))
        del base
        with _registered(con, {"hdr_": hdr}):
            ips = self._client_ips(con, policy)
            agents = self._agents(con)
            geo = self._geo(hdr, ips)
        params = {
            "types": list(EVENT_TYPES),
            "min_time": MIN_TIME,
            "max_time": datetime.now(timezone.utc) + MAX_FUTURE,
            "max_value": MAX_HEADER_VALUE,
            "max_headers": MAX_HEADERS,
            "max_total": MAX_HEADERS_TOTAL,
            **_pool_problems(hdr.column("user_pool_id")),
        }
        return {"hdr_": hdr, "ips_": ips, "agents_": agents, "geo_": geo, "countries_": country_names()}, params, raw

    # -- per distinct value ------------------------------------------------------

    def _client_ips(self, con, policy: ProxyPolicy) -> pa.Table:
        # rows whose address was resolved without Python (with_header_columns: _fast_ip) never reach it; the others
        # once per distinct IpAddress and value of the one forwarding header the policy believes (h_fwd)
        rows = con.sql("SELECT DISTINCT ip_address, h_fwd FROM hdr_ WHERE _fast_ip IS NULL").fetchall()
        keys: dict[str, list] = {"ip_address": [], "h_fwd": []}
        vals: dict[str, list] = {"client_ip": [], "client_ip_source": [], "ip_version": [], "ip_prefix": [],
                                 "ip_valid": []}
        owner, cache = self._ip_cache
        if owner is not policy:  # resolutions made under another policy (trusted networks or header) do not hold
            cache = {}
            self._ip_cache = (policy, cache)
        for key in rows:
            ip, value = key
            r = cache.get(key)
            if r is None:
                r = resolve_client_ip_from(ip, value, policy)
                if len(cache) >= self.max_ip_cache:
                    cache.clear()  # bounded: start again rather than grow
                cache[key] = r
            keys["ip_address"].append(ip)
            keys["h_fwd"].append(value)
            vals["client_ip"].append(r.ip)
            vals["client_ip_source"].append(r.source)
            vals["ip_version"].append(r.version)
            vals["ip_prefix"].append(r.prefix)
            vals["ip_valid"].append(r.ip_address_valid)
        return pa.table(
            {**{k: pa.array(v, pa.string()) for k, v in keys.items()},
             "client_ip": pa.array(vals["client_ip"], pa.string()),
             "client_ip_source": pa.array(vals["client_ip_source"], pa.string()),
             "ip_version": pa.array(vals["ip_version"], pa.int8()),
             "ip_prefix": pa.array(vals["ip_prefix"], pa.string()),
             "ip_valid": pa.array(vals["ip_valid"], pa.bool_())}
        )

    def _agents(self, con) -> pa.Table:
        uas = [r[0] for r in con.sql("SELECT DISTINCT user_agent FROM hdr_").fetchall()]
        parsed = self.agents.parse_many(uas)
        return pa.table(
            {
                "user_agent": pa.array(uas, pa.string()),
                "browser_family": pa.array([p.browser_family for p in parsed], pa.string()),
                "browser_version": pa.array([p.browser_version for p in parsed], pa.string()),
                "os_family": pa.array([p.os_family for p in parsed], pa.string()),
                "os_version": pa.array([p.os_version for p in parsed], pa.string()),
                "device_type": pa.array([p.device_type for p in parsed], pa.string()),
                "device_name": pa.array([p.device_name for p in parsed], pa.string()),
            }
        )

    def _geo(self, hdr: pa.Table, resolved: pa.Table) -> pa.Table:
        """GeoIP columns (``g_*``) per distinct client address, looked up once per /24 (IPv4) or /48 (IPv6)
        block where one network of each database covers the block (``GeoResolver.lookup_network``), else
        per address. The per-row values are taken from the per-record ones by index (no per-row Python).

        The distinct addresses (with their /24 or /48) are those resolved without Python (``hdr``'s
        ``_fast_ip``) and those Python resolved (``resolved``, the table ips_): every row's, as
        ``_CLIENT_IP_COLUMNS`` give them, found with one hash pass."""
        every_ip = pa.concat_arrays([hdr.column("_fast_ip").combine_chunks().cast(pa.string()),
                                     resolved.column("client_ip").combine_chunks().cast(pa.string())])
        every_prefix = pa.concat_arrays([hdr.column("_fast_prefix").combine_chunks().cast(pa.string()),
                                         resolved.column("ip_prefix").combine_chunks().cast(pa.string())])
        codes = pc.fill_null(pc.dictionary_encode(every_ip).indices, -1).to_numpy(zero_copy_only=False)
        _, first = np.unique(codes, return_index=True)
        first = first[codes[first] >= 0]  # (no NULL address)
        ips, prefixes = every_ip.take(pa.array(first)), every_prefix.take(pa.array(first))
        n = len(ips)
        records: list = []
        which = np.full(n, -1, np.int64)  # each address's record, by position in ``records``
        if self.geo is not None and n:
            # an address groups with its block when the block is of its own family (/48 for IPv6 text)
            same_family = pc.equal(pc.match_substring(ips, ":"), pc.ends_with(prefixes, "/48"))
            usable = pc.fill_null(pc.and_(same_family, pc.is_valid(prefixes)), False).to_numpy(zero_copy_only=False)
            codes = pc.fill_null(pc.dictionary_encode(prefixes).indices, -1).to_numpy(zero_copy_only=False)
            codes = np.where(usable, codes, -1)
            blocks, first = np.unique(codes, return_index=True)
            block_record = {}
            for code, at in zip(blocks.tolist(), first.tolist()):
                if code < 0:
                    continue
                rec, whole = self.geo.lookup_network(ips[at].as_py())
                if whole:
                    block_record[code] = len(records)
                    records.append(rec)
            if block_record:
                known = np.full(int(codes.max()) + 1, -1, np.int64)
                known[list(block_record)] = list(block_record.values())
                which = np.where(codes >= 0, known[np.maximum(codes, 0)], -1)
            rest = np.flatnonzero(which < 0)
            if len(rest):
                which[rest] = np.arange(len(records), len(records) + len(rest))
                records.extend(self.geo.lookup_many(ips.take(pa.array(rest)).to_pylist()))
        take = pa.array(which, mask=which < 0)
        data = {"client_ip": ips}
        columns = dict(zip(_GEO_FIELDS, zip(*map(_geo_values, records)))) if records else {}
        for c, typ in _GEO_FIELDS.items():
            data["g_" + c] = pa.array(columns.get(c, []), typ).take(take)
        return pa.table(data)


def _pool_problems(pools: pa.ChunkedArray) -> dict[str, list[str]]:
    """The batch's pool ids a configuration would refuse (``ingest.schema.user_pool_id_problem``, checked once per
    distinct id) and the reason of each, as ``_CHECKED_SQL``'s parameters ``bad_pools`` and ``pool_reasons``."""
    bad: dict[str, str] = {}
    for pool in pc.unique(pools).drop_null().to_pylist():
        problem = user_pool_id_problem(pool)
        if problem:
            shown = json.dumps(pool, ensure_ascii=False) if len(pool) <= 80 else (
                json.dumps(pool[:80] + "…", ensure_ascii=False) + f" ({len(pool):,} characters)")
            bad[pool] = f"UserPoolId {shown} {problem}"
    return {"bad_pools": list(bad), "pool_reasons": list(bad.values())}


def ipv4_number_sql(column: str) -> str:
    """SQL for the number of the dotted-quad IPv4 address in ``column`` (NULL when it is not one)."""
    octets = [f"TRY_CAST(split_part({column}, '.', {k}) AS BIGINT)" for k in (1, 2, 3, 4)]
    return " + ".join(f"{o} * {256 ** (3 - k)}" if k < 3 else o for k, o in enumerate(octets))


def _stable_column(name: str) -> str:
    return "h_" + name.replace("-", "_")


# canonical dotted-quad IPv4 (no leading zeros): the addresses resolved without Python (with_header_columns)
_V4 = r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_V4_TEXT = "^" + _V4 + "$"  # a whole text that is one


def _trusted_v4(quads: pa.Array, v4_trusted: list[list[int]]) -> np.ndarray:
    """Whether each canonical dotted quad of ``quads`` lies in one of the trusted [first, last] ranges."""
    octets = pc.list_flatten(pc.split_pattern(quads, ".")).cast(pa.int64()).to_numpy()
    number = octets.reshape(-1, 4) @ np.array([1 << 24, 1 << 16, 1 << 8, 1], np.int64)
    trusted = np.zeros(len(number), bool)
    for lo, hi in v4_trusted:
        trusted |= (number >= lo) & (number <= hi)
    return trusted


_HEX_GROUP = "^(?:0|[1-9a-f][0-9a-f]{0,3})$"  # a group of an address written as RFC 5952 says


def _canonical_ipv6(texts: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Which of ``texts`` are IPv6 addresses already written as RFC 5952 says (lower case, no leading zeros,
    the one longest run of two or more zero groups as ``::``), other than IPv4-mapped ones, and the text of
    each one's /48 network (``2001:db8:1::/48``; NULL for the others): exactly the text and prefix
    ``ingest.context.resolve_client_ip`` gives them, without Python per address.

    Canonical here: at most one ``::``, standing for at least two groups; no two zero groups side by side and
    none next to the ``::`` (so the ``::`` is the longest run, or there is no run of two to compress); eight
    groups without ``::``. Anything else (upper case, leading zeros, an embedded IPv4, a zone, brackets) is
    left to Python.
    """
    m = len(texts)
    flat = pc.fill_null(texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts, "")
    n_halves = pc.list_value_length(pc.split_pattern(flat, "::")).to_numpy(zero_copy_only=False)
    compressed = n_halves == 2
    left = pc.replace_substring_regex(flat, "::.*$", "")
    right = pc.if_else(pa.array(compressed), pc.replace_substring_regex(flat, "^.*?::", ""), pa.scalar(""))
    ok = (n_halves <= 2) & ~pc.starts_with(flat, "::ffff:").to_numpy(zero_copy_only=False)
    ok &= pc.is_valid(texts).to_numpy(zero_copy_only=False)

    def groups(half: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray]:
        """The groups of each half (none for ""), their owners, each half's count, and which are zero."""
        lists = pc.if_else(pc.equal(half, ""), pa.scalar([], pa.list_(pa.string())), pc.split_pattern(half, ":"))
        g = pc.list_flatten(lists)
        return (g, pc.list_parent_indices(lists).to_numpy(), pc.list_value_length(lists).to_numpy(
            zero_copy_only=False), pc.equal(g, "0").to_numpy(zero_copy_only=False))

    lg, l_owner, nl, l_zero = groups(left)
    rg, r_owner, nr, r_zero = groups(right)
    for g, owner, zero in ((lg, l_owner, l_zero), (rg, r_owner, r_zero)):
        good = pc.fill_null(pc.match_substring_regex(g, _HEX_GROUP), False).to_numpy(zero_copy_only=False)
        ok &= np.bincount(owner, weights=~good, minlength=m) == 0
        side_by_side = zero[1:] & zero[:-1] & (owner[1:] == owner[:-1])
        ok &= np.bincount(owner[1:][side_by_side], minlength=m) == 0
    ok &= np.where(compressed, nl + nr <= 6, nl == 8)
    l_start, r_start = np.cumsum(nl) - nl, np.cumsum(nr) - nr
    if len(lg):  # a zero group just before the ::, or just after it: the run is longer than written
        ok &= ~(compressed & (nl > 0) & l_zero[np.clip(l_start + nl - 1, 0, len(lg) - 1)])
    if len(rg):
        ok &= ~(compressed & (nr > 0) & r_zero[np.clip(r_start, 0, len(rg) - 1)])
    # the first three groups: from the left half, zeros where the :: stands, or from the right half
    run = np.where(compressed, 8 - nl - nr, 0)
    firsts = []
    for j in range(3):
        g = pa.array(["0"] * m, pa.string())
        from_left = ok & (j < nl)
        if len(lg):
            g = pc.if_else(pa.array(from_left), lg.take(pa.array(np.where(from_left, l_start + j, 0))), g)
        from_right = ok & (j >= nl + run)
        if len(rg):
            at = np.clip(np.where(from_right, r_start + j - nl - run, 0), 0, len(rg) - 1)
            g = pc.if_else(pa.array(from_right), rg.take(pa.array(at)), g)
        firsts.append(g)
    g1, g2, g3 = firsts
    keep = np.select([pc.not_equal(g3, "0").to_numpy(zero_copy_only=False),
                      pc.not_equal(g2, "0").to_numpy(zero_copy_only=False),
                      pc.not_equal(g1, "0").to_numpy(zero_copy_only=False)], [3, 2, 1], 0)
    head = pc.if_else(pa.array(keep == 3), pc.binary_join_element_wise(g1, g2, g3, ":"), pc.if_else(
        pa.array(keep == 2), pc.binary_join_element_wise(g1, g2, ":"), pc.if_else(
            pa.array(keep == 1), g1, pa.scalar(""))))
    prefix = pc.if_else(pa.array(ok), pc.binary_join_element_wise(head, pa.scalar("::/48"), ""),
                        pa.scalar(None, pa.string()))
    return ok, prefix


def with_header_columns(base: pa.Table, policy: ProxyPolicy) -> pa.Table:
    """``base`` (SOURCE_SCHEMA) with the columns read from its headers appended (the table ``hdr_``).

    * ``h_forwarded``, ``h_xff``, ``h_xri``: every non-null value of that header, in the order received,
      joined by ", " (NULL when the header is absent or has no value); ``h_fwd``: the one of them that
      ``policy.header`` names, the only one the client address is read from;
    * ``user_agent``: the first User-Agent value, else the source's own agent column;
    * one ``h_<name>`` per stable header (:data:`STABLE_HEADERS`): its first value;
    * ``h_count``, ``h_max_len`` (the longest value, bytes), ``h_total`` (names and values, bytes),
      ``h_long_name`` (the first header whose value is longer than MAX_HEADER_VALUE);
    * ``_fast_ip``, ``_fast_source``, ``_fast_version``, ``_fast_prefix``: the client address, where it came
      from, its IP version and its /24 or /48, for the common cases that need no Python (NULL otherwise;
      ``ingest.context.resolve_client_ip`` gives the same): a canonical dotted quad ``IpAddress`` the
      policy's header cannot apply to (none, or ``IpAddress`` is not a trusted proxy); a trusted dotted-quad
      proxy whose ``X-Forwarded-For`` (when that is the policy's header) is a chain of canonical dotted quads
      with an untrusted one (the client: the last untrusted one), or whose ``X-Real-IP`` (when that is) is one
      untrusted canonical dotted quad; and an IPv6 ``IpAddress`` written as RFC 5952 says, without the
      policy's header (:func:`_canonical_ipv6`). The other forwarding headers change nothing.

    Header names compare case-insensitively in ASCII (RFC 9110 field names are ASCII tokens).
    Vectorised over the batch's flattened header list (Arrow compute and numpy): no per-row Python, and no
    round trip of the whole batch through SQL.
    """
    n = base.num_rows
    hh = base.column("http_headers").combine_chunks() if n else pa.array([], base.schema.field("http_headers").type)
    count = pc.fill_null(pc.list_value_length(hh), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    parent = pc.list_parent_indices(hh).to_numpy()
    items = pc.list_flatten(hh)
    fields = dict(zip((items.type.field(i).name for i in range(items.type.num_fields)), items.flatten()))
    names, values = fields["header_name"], fields["header_value"]
    vlen = pc.fill_null(pc.binary_length(values), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    nlen = pc.fill_null(pc.binary_length(names), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    total = np.bincount(parent, weights=vlen + nlen, minlength=n).astype(np.int64)
    max_len = np.zeros(n, np.int64)
    filled = np.flatnonzero(count > 0)
    if len(filled):
        starts = np.concatenate([[0], np.cumsum(count)[:-1]])
        max_len[filled] = np.maximum.reduceat(vlen, starts[filled])

    def first_of(at: np.ndarray, column: pa.Array) -> pa.Array:
        """Each row's value of ``column`` at the first of the entries ``at`` (ascending) it owns; NULL without."""
        rows, first = np.unique(parent[at], return_index=True)
        take = np.zeros(n, np.int64)
        take[rows] = at[first]
        has = np.zeros(n, bool)
        has[rows] = True
        return column.take(pa.array(take, mask=~has))

    # the name of each row's first longest header, where that is over the limit
    long_name = first_of(np.flatnonzero((vlen > MAX_HEADER_VALUE) & (vlen == max_len[parent])), names)
    # each entry's lower-case name as a code into a small dictionary: one hash pass, then numpy comparisons
    coded = pc.dictionary_encode(pc.ascii_lower(names)) if len(names) else None
    codes = pc.fill_null(coded.indices, -1).to_numpy(zero_copy_only=False) if coded is not None else np.zeros(0, int)
    lookup = {v: i for i, v in enumerate(coded.dictionary.to_pylist())} if coded is not None else {}

    def entries(name: str) -> np.ndarray:
        code = lookup.get(name)
        return np.flatnonzero(codes == code) if code is not None else np.zeros(0, np.int64)

    def first_value(name: str) -> pa.Array:
        return first_of(entries(name), values)

    def all_values(name: str) -> pa.Array:
        at = entries(name)
        rows = parent[at]
        if len(np.unique(rows)) == len(rows):  # the usual case: at most one such header a row
            return first_value(name)
        joined: dict[int, list[str]] = {}
        for row, value in zip(rows.tolist(), values.take(pa.array(at)).to_pylist()):
            joined.setdefault(row, [])
            if value is not None:
                joined[row].append(value)
        out = [None] * n
        for row, vs in joined.items():
            out[row] = ", ".join(vs) if vs else None
        return pa.array(out, pa.string())

    cols: dict[str, pa.Array] = {col: all_values(h) for h, col in FORWARDING_HEADERS.items()}
    header = policy.header
    cols["h_fwd"] = fwd = cols[FORWARDING_HEADERS[header.lower()]]
    source_agent = base.column("user_agent_source").combine_chunks() if n else pa.array([], pa.string())
    header_agent = first_value("user-agent")
    # a blank User-Agent is none: no agent to parse, and no fingerprint every such sign-in of anyone would share
    header_agent = pc.if_else(pc.equal(pc.utf8_trim(header_agent, BLANK), ""), pa.scalar(None, pa.string()),
                              header_agent)
    cols["user_agent"] = pc.coalesce(header_agent, source_agent)
    for h in STABLE_HEADERS:
        cols[_stable_column(h)] = first_value(h)
    cols["h_count"] = pa.array(count, pa.int64())
    cols["h_max_len"] = pa.array(max_len, pa.int64())
    cols["h_total"] = pa.array(total, pa.int64())
    cols["h_long_name"] = long_name
    ip = base.column("ip_address")
    v4 = pc.fill_null(pc.match_substring_regex(ip, _V4_TEXT), False).to_numpy(zero_copy_only=False)
    # the header the trusted proxies write, the only one read (an empty value counts as none, as in Python)
    no_fwd = pc.fill_null(pc.equal(fwd, ""), True).to_numpy(zero_copy_only=False)
    fast = v4 & no_fwd
    from_fwd = np.zeros(n, bool)
    check = np.flatnonzero(v4 & ~no_fwd)  # behind a proxy? only a trusted one's header counts
    if len(check):
        v4_trusted = policy.v4_ranges()
        proxy_trusted = _trusted_v4(ip.take(pa.array(check)), v4_trusted)
        fast[check] = ~proxy_trusted
        # the usual proxied request: an X-Forwarded-For chain of canonical dotted quads (as many as there are
        # hops), walked from the right past trusted proxies to the first untrusted address, the client; an
        # X-Real-IP is a chain of one (a comma in it: not an address, left to Python)
        chain_text = fwd.take(pa.array(check))
        walk = proxy_trusted
        if header == "X-Real-IP":
            walk = walk & ~pc.fill_null(pc.match_substring(chain_text, ","), True).to_numpy(zero_copy_only=False)
        elif header != "X-Forwarded-For":  # (Forwarded: Python reads it)
            walk = np.zeros(len(check), bool)
        at = np.flatnonzero(walk)
        if len(at):
            chains = pc.split_pattern(chain_text.take(pa.array(at)), ",")
            hops = pc.utf8_trim(pc.list_flatten(chains), " ")
            owner = pc.list_parent_indices(chains).to_numpy()
            canonical = pc.fill_null(pc.match_substring_regex(hops, _V4_TEXT), False).to_numpy(
                zero_copy_only=False)
            untrusted = np.zeros(len(hops), bool)
            canon_at = np.flatnonzero(canonical)
            untrusted[canon_at] = ~_trusted_v4(hops.take(pa.array(canon_at)), v4_trusted)
            all_canonical = np.bincount(owner, weights=~canonical, minlength=len(at)) == 0
            lengths = pc.list_value_length(chains).to_numpy(zero_copy_only=False)  # one hop at least each
            last = np.maximum.reduceat(np.where(untrusted, np.arange(len(hops)), -1), lengths.cumsum() - lengths)
            ok = all_canonical & (last >= 0)
            from_fwd[check[at[ok]]] = True
            client = np.zeros(n, np.int64)
            client[check[at[ok]]] = last[ok]
            fwd_client = hops.take(pa.array(client, mask=~from_fwd))
        else:
            fwd_client = pa.nulls(n, pa.string())
    else:
        fwd_client = pa.nulls(n, pa.string())
    fast_v4 = pc.if_else(pa.array(fast), ip, fwd_client)
    # an IPv6 IpAddress without the policy's header, written canonically: the client address as it is
    v6 = np.flatnonzero(no_fwd & ~v4 & pc.fill_null(pc.match_substring(ip, ":"), False).to_numpy(
        zero_copy_only=False))
    v6_prefix = pa.nulls(n, pa.string())
    from_v6 = np.zeros(n, bool)
    if len(v6):
        canonical, prefixes = _canonical_ipv6(ip.take(pa.array(v6)))
        from_v6[v6[canonical]] = True
        where = np.zeros(n, np.int64)
        where[v6] = np.arange(len(v6))
        v6_prefix = prefixes.take(pa.array(where, mask=~from_v6))
    cols["_fast_ip"] = pc.if_else(pa.array(from_v6), ip, fast_v4)
    cols["_fast_source"] = pc.if_else(pa.array(fast | from_v6), pa.scalar("IpAddress"), pc.if_else(
        pa.array(from_fwd), pa.scalar(header), pa.scalar(None, pa.string())))
    cols["_fast_version"] = pc.if_else(pa.array(from_v6), pa.scalar(6, pa.int8()), pc.if_else(
        pa.array(fast | from_fwd), pa.scalar(4, pa.int8()), pa.scalar(None, pa.int8())))
    cols["_fast_prefix"] = pc.if_else(pa.array(from_v6), v6_prefix,
                                      pc.replace_substring_regex(fast_v4, "[.][0-9]+$", ".0/24"))
    out = base
    for name, col in cols.items():
        out = out.append_column(name, col)
    return out


def _digests(keys: pa.Array, prefix: str) -> pa.Array:
    """``prefix`` + the first 32 hex digits of the SHA-256 of each key's UTF-8 (hashed once per distinct key)."""
    coded = pc.dictionary_encode(keys)
    digests = [prefix + short_digest(k) for k in coded.dictionary.to_pylist()]
    return pa.array(digests, pa.string()).take(coded.indices)


def with_fingerprints(hdr: pa.Table) -> pa.Table:
    """``hdr`` (from :func:`with_header_columns`) with ``device_fingerprint`` and ``device_fingerprint_source``
    (see the module's docstring), hashed once per distinct EncodedData or stable-header set of the batch."""
    if hdr.num_rows == 0:
        return hdr.append_column("device_fingerprint", pa.array([], pa.string())).append_column(
            "device_fingerprint_source", pa.array([], pa.string()))
    enc = hdr.column("encoded_data").combine_chunks()
    agent = hdr.column("user_agent").combine_chunks()
    has_enc = pc.fill_null(pc.not_equal(enc, ""), False)
    stable = [pc.fill_null(hdr.column(_stable_column(h)).combine_chunks(), "") for h in STABLE_HEADERS]
    headers_key = pc.binary_join_element_wise(agent, *stable, "\x1f")  # NULL without an agent
    fingerprint = pc.if_else(has_enc, _digests(enc, "ed-"), _digests(headers_key, "hd-"))
    source = pc.if_else(has_enc, pa.scalar("EncodedData"),
                        pc.if_else(pc.is_valid(agent), pa.scalar("headers"), pa.scalar(None, pa.string())))
    return hdr.append_column("device_fingerprint", fingerprint).append_column("device_fingerprint_source", source)


# every row's resolved client address: the vectorised one (_fast_ip) where there is one, Python's (ips_) for the rest
_CLIENT_IP_COLUMNS = """
  CASE WHEN h._fast_ip IS NOT NULL THEN h._fast_ip ELSE i.client_ip END AS client_ip,
  CASE WHEN h._fast_ip IS NOT NULL THEN h._fast_source ELSE i.client_ip_source END AS client_ip_source,
  CASE WHEN h._fast_ip IS NOT NULL THEN h._fast_version ELSE i.ip_version END AS ip_version,
  CASE WHEN h._fast_ip IS NOT NULL THEN h._fast_prefix ELSE i.ip_prefix END AS ip_prefix,
  CASE WHEN h._fast_ip IS NOT NULL THEN true ELSE i.ip_valid END AS ip_valid
"""
_CLIENT_IP_JOIN = """
LEFT JOIN ips_ i ON h._fast_ip IS NULL
                AND i.ip_address IS NOT DISTINCT FROM h.ip_address
                AND i.h_fwd IS NOT DISTINCT FROM h.h_fwd
"""

# the checks of every row (``reason``: NULL when the row is good): on the headers and the resolved address only,
# so the rows to quarantine are found without the joins of the final projection
def _one_of(column: str, values: tuple[str, ...], where: str) -> str:
    """SQL: the reason when ``column`` (of a ChallengeResponses item ``x``, at 1-based index ``i``) is not one of
    ``values`` (NULL when it is)."""
    listed = ", ".join(values)
    sql_list = "[" + ", ".join(f"'{v}'" for v in values) + "]"
    at = f"'ChallengeResponses[' || (i - 1) || '].{where}'"
    return (f"CASE WHEN x.{column} IS NULL THEN {at} || ' is missing' "
            f"WHEN NOT list_contains({sql_list}, x.{column}) "
            f"THEN {at} || ' ' || to_json(left(x.{column}, 80))::VARCHAR || ' is not one of {listed}' END")


#: every ChallengeResponses item's ChallengeName and ChallengeResponse is one of Cognito's (COGNITO_REFERENCE.md)
_CHALLENGES_CHECK = (
    "nullif(array_to_string(flatten(list_transform(challenge_responses, lambda x, i: ["
    + _one_of("challenge_name", CHALLENGE_NAMES, "ChallengeName") + ", "
    + _one_of("challenge_response", CHALLENGE_RESPONSES, "ChallengeResponse") + "])), '; '), '')")

_CHECKED_SQL = f"""
WITH c AS (SELECT h.*, {_CLIENT_IP_COLUMNS} FROM hdr_ h {_CLIENT_IP_JOIN}),
r AS (
  SELECT c.*,
         CASE WHEN c.event_response IN ('Success') THEN 'Pass'
              WHEN c.event_response IN ('Failure') THEN 'Fail'
              ELSE c.event_response END AS resp
  FROM c
)
SELECT *,
  nullif(concat_ws('; ',
    CASE WHEN event_id IS NULL THEN 'EventId is missing'
         WHEN NOT regexp_full_match(event_id, '{EVENT_ID_PATTERN}')
         THEN 'EventId ' || to_json(left(event_id, 80))::VARCHAR || ' {EVENT_ID_RULE}' END,
    CASE WHEN username IS NULL OR regexp_full_match(username, '{BLANK_SQL}') THEN 'Username is missing or empty'
         WHEN length(username) > {MAX_USERNAME} THEN 'Username is longer than {MAX_USERNAME} characters (' || length(username) || ')' END,
    CASE WHEN list_contains($bad_pools::VARCHAR[], user_pool_id)
         THEN ($pool_reasons::VARCHAR[])[list_position($bad_pools::VARCHAR[], user_pool_id)] END,
    CASE WHEN event_type IS NULL THEN 'EventType is missing'
         WHEN NOT list_contains($types, event_type)
         THEN 'EventType ' || to_json(left(event_type, 80))::VARCHAR || ' is not one of ' || array_to_string($types, ', ') END,
    CASE WHEN event_response IS NULL THEN 'EventResponse is missing'
         WHEN resp NOT IN ('Pass', 'Fail', 'InProgress')
         THEN 'EventResponse ' || to_json(left(event_response, 80))::VARCHAR || ' is not one of Pass, Fail, InProgress (or Success, Failure)' END,
    CASE WHEN creation_date IS NULL THEN 'CreationDate is missing or not a time'
         WHEN isinf(creation_date) THEN 'CreationDate is '
              || CASE WHEN creation_date > $max_time THEN 'in the future' ELSE 'before 2000-01-01' END
              || ' (an epoch number out of the range of times)'
         WHEN creation_date < $min_time THEN 'CreationDate ' || strftime(creation_date, '%Y-%m-%dT%H:%M:%SZ') || ' is before 2000-01-01'
         WHEN creation_date > $max_time THEN 'CreationDate ' || strftime(creation_date, '%Y-%m-%dT%H:%M:%SZ') || ' is in the future' END,
    {_CHALLENGES_CHECK},
    CASE WHEN NOT ip_valid THEN 'IpAddress ' || to_json(left(ip_address, 80))::VARCHAR || ' is not an IPv4 or IPv6 address' END,
    CASE WHEN h_long_name IS NOT NULL THEN 'header ' || to_json(left(h_long_name, 80))::VARCHAR || ' is ' || h_max_len || ' bytes, more than ' || $max_value END,
    CASE WHEN h_count > $max_headers THEN 'ContextData.HttpHeaders has ' || h_count || ' headers, more than ' || $max_headers END,
    CASE WHEN h_total > $max_total AND h_long_name IS NULL THEN 'ContextData.HttpHeaders total ' || h_total || ' bytes, more than ' || $max_total END
  ), '') AS reason
FROM r
"""

_FINAL_SQL = f"""
WITH j AS (
  SELECT k.*,
         a.browser_family, a.browser_version, a.os_family, a.os_version, a.device_type, a.device_name,
         g.* EXCLUDE (client_ip)
  FROM ({_CHECKED_SQL}) k
  LEFT JOIN agents_ a ON a.user_agent IS NOT DISTINCT FROM k.user_agent
  LEFT JOIN geo_ g ON g.client_ip = k.client_ip
),
-- the source's country as an ISO code: given as one, or a name (Cognito's export) known to countries_ or the lookup's
-- own; and whether the lookup's place is in that country (else its region, city, coordinates and zone are not used)
s AS (
  SELECT j.*, src_iso, source_country IS NULL OR src_iso IS NOT DISTINCT FROM g_country_iso AS geo_agrees
  FROM (SELECT j.*,
               CASE WHEN length(j.source_country) = 2 THEN upper(j.source_country)
                    WHEN j.source_country IS NOT NULL
                    THEN coalesce(cn.iso, CASE WHEN lower(trim(j.source_country)) = lower(j.g_country_name)
                                               THEN j.g_country_iso END) END AS src_iso
        FROM j LEFT JOIN countries_ cn ON cn.name_key = lower(trim(j.source_country))) j
)
SELECT
  event_id, user_pool_id, client_id, username, user_sub, event_type,
  resp AS event_response, creation_date, challenge_responses,
  ip_address, server_name, server_path, http_headers, encoded_data,
  coalesce(has_context_data, ip_address IS NOT NULL) AS has_context_data,
  user_agent_source, rtt_ms, compromised_credentials,
  source_country, source_region, source_city, source_asn, source_device_name, extra,
  source_format, source_file, source_line,
  client_ip, client_ip_source, ip_version, ip_prefix, user_agent,
  browser_family, browser_version, os_family, os_version, device_type,
  coalesce(CASE WHEN user_agent IS NULL THEN source_device_name END, device_name) AS device_name,
  device_fingerprint, device_fingerprint_source,
  CASE WHEN source_country IS NULL THEN g_country_iso ELSE src_iso END AS country_iso,
  coalesce(CASE WHEN length(source_country) > 2 THEN source_country END,
           CASE WHEN geo_agrees THEN g_country_name END)
    AS country_name,
  coalesce(source_region, CASE WHEN geo_agrees THEN g_region END) AS region,
  coalesce(source_city, CASE WHEN geo_agrees THEN g_city END) AS city,
  CASE WHEN geo_agrees THEN g_latitude END AS latitude, CASE WHEN geo_agrees THEN g_longitude END AS longitude,
  CASE WHEN geo_agrees THEN g_time_zone END AS time_zone,
  coalesce(source_asn, g_asn) AS asn,
  CASE WHEN source_asn IS NULL OR source_asn = g_asn THEN g_as_org END AS as_org,
  CASE WHEN coalesce(source_country, source_city, source_region, source_asn::VARCHAR) IS NOT NULL
            AND coalesce(g_country_iso, g_asn::VARCHAR) IS NOT NULL THEN 'source+lookup'
       WHEN coalesce(source_country, source_city, source_region, source_asn::VARCHAR) IS NOT NULL THEN 'source'
       WHEN coalesce(g_country_iso, g_asn::VARCHAR) IS NOT NULL THEN 'lookup'
       ELSE 'none' END AS geo_source,
  _i, reason
FROM s
"""
