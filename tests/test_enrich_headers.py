"""The header columns and device fingerprints of a batch (``ingest.enrich.with_header_columns`` and
``with_fingerprints``), vectorised in Arrow and numpy, against the DuckDB SQL that computed them before (kept
here as the reference), on random and edge-case header lists."""

from __future__ import annotations

import hashlib
import random

import duckdb
import pyarrow as pa
import pytest

from ingest.context import ClientIP, ProxyPolicy, resolve_client_ip
from ingest.enrich import (
    FORWARDING_HEADERS,
    MAX_HEADER_VALUE,
    STABLE_HEADERS,
    _stable_column,
    ipv4_number_sql,
    with_fingerprints,
    with_header_columns,
)
from ingest.schema import BLANK_SQL, SOURCE_SCHEMA, conform

_V4 = r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"


def _all_values(name: str) -> str:
    return (
        f"CASE WHEN list_contains(_hn, '{name}') THEN array_to_string(list_transform(list_filter("
        f"http_headers, lambda h: lower(h.header_name) = '{name}'), lambda h: h.header_value), ', ') END"
    )


def _first_value(name: str) -> str:
    return f"http_headers[list_position(_hn, '{name}')].header_value"


def _columns(header: str) -> str:
    return ",\n  ".join(
        [f"{_all_values(h)} AS {col}" for h, col in FORWARDING_HEADERS.items()]
        + [f"{_all_values(header.lower())} AS h_fwd"]  # the one the proxies write (the policy's header)
        # a blank User-Agent is none
        + [f"coalesce(CASE WHEN regexp_full_match({_first_value('user-agent')}, '{BLANK_SQL}') THEN NULL "
           f"ELSE {_first_value('user-agent')} END, user_agent_source) AS user_agent"]
        + [f"{_first_value(h)} AS {_stable_column(h)}" for h in STABLE_HEADERS])


def reference_sql(header: str) -> str:
    """The SQL the header columns were computed with, and whether IpAddress is the client for sure (``_fast``:
    an IPv4 IpAddress without the policy's header, or one that is not a trusted proxy)."""
    return f"""
WITH n AS (
  SELECT *, list_transform(http_headers, lambda h: lower(h.header_name)) AS _hn,
            list_transform(http_headers, lambda h: strlen(coalesce(h.header_value, ''))) AS _hl
  FROM base_
), h AS (
SELECT * EXCLUDE (_hn, _hl),
  {_columns(header)},
  coalesce(len(http_headers), 0) AS h_count,
  coalesce(list_max(_hl), 0) AS h_max_len,
  coalesce(list_sum(_hl), 0) + coalesce(list_sum(list_transform(_hn, lambda x: strlen(coalesce(x, '')))), 0) AS h_total,
  CASE WHEN list_max(_hl) > {MAX_HEADER_VALUE}
       THEN http_headers[list_position(_hl, list_max(_hl))].header_name END AS h_long_name
FROM n
), v AS (
  SELECT *, coalesce(regexp_full_match(ip_address, '{_V4}'), false) AS _v4,
         h_fwd IS NULL AS _no_fwd
  FROM h
)
SELECT * EXCLUDE (_v4, _no_fwd),
  CASE WHEN NOT _v4 THEN false WHEN _no_fwd THEN true
       ELSE NOT list_bool_or(list_transform($v4_trusted, lambda r:
         ({ipv4_number_sql("ip_address")}) BETWEEN r[1] AND r[2])) END
    AS _fast
FROM v
"""

NAMES = ["User-Agent", "user-agent", "USER-AGENT", "Accept-Language", "accept", "Accept-Encoding", "Sec-CH-UA",
         "sec-ch-ua-platform", "Sec-Ch-Ua-Mobile", "X-Forwarded-For", "x-forwarded-for", "Forwarded", "X-Real-IP",
         "x-real-ip", "FORWARDED", "Host", "Cookie", "X-Forwarded-Proto", "", None]
HEADERS = ["X-Forwarded-For", "Forwarded", "X-Real-IP"]
#: what a client may type in a forwarding header its proxy does not write (passed through untouched)
SPOOFS = {"Forwarded": ["for=203.0.113.77", "for=10.0.0.1", "for=unknown"],
          "X-Forwarded-For": ["203.0.113.77", "1.2.3.4, 203.0.113.77"],
          "X-Real-IP": ["203.0.113.77", "garbage"]}
ADDRESSES = ["81.2.69.160", "10.1.2.3", "10.255.255.255", "192.168.0.7", "1.2.3.4", "255.255.255.255", "0.0.0.0",
             "01.2.3.4", "1.2.3", "256.1.1.1", " 1.2.3.4", "2001:db8::1", "::ffff:1.2.3.4", "garbage", "", None]


def _value(rng: random.Random) -> str | None:
    r = rng.random()
    if r < 0.08:
        return None
    if r < 0.12:
        return ""
    if r < 0.14:
        return "v" * (MAX_HEADER_VALUE + rng.randint(-1, 3))
    if r < 0.18:
        return "é✓ " + str(rng.randint(0, 9))
    return rng.choice(["Mozilla/5.0", "1.2.3.4", "10.0.0.1, 81.2.69.160", "for=192.0.2.60", "en-GB", "*/*",
                       "10.0.0.2", "for=81.2.69.160, for=10.0.0.3"])


def _headers(rng: random.Random):
    r = rng.random()
    if r < 0.08:
        return None
    if r < 0.12:
        return []
    if r < 0.3:  # the usual proxied request: one forwarded client (proxies trusted or not, clients too)
        name = rng.choice(["X-Forwarded-For", "x-forwarded-for", "X-Real-IP", "x-real-ip", "Forwarded"])
        if name == "Forwarded":
            value = rng.choice(["for=81.2.69.160", "for=81.2.69.160, for=10.0.0.2", 'for="[2001:db8::5]:443"',
                                "for=10.0.0.3", "for=unknown", "for=81.2.69.160;proto=https", ""])
        else:
            value = rng.choice(["81.2.69.160", "10.9.8.7", "192.168.1.1", "01.2.3.4", "2001:db8::5",
                                "81.2.69.160, 10.0.0.2", "81.2.69.160,10.0.0.2 ,  10.1.1.1",
                                "1.2.3.4, 81.2.69.160, 10.0.0.2", "10.0.0.3, 10.0.0.2", " 81.2.69.160 ",
                                "garbage, 81.2.69.160", "81.2.69.160, garbage", "1.2.3.4,,10.0.0.2",
                                "\t81.2.69.160", "81.2.69.160:443, 10.0.0.2", ""])
        out = [{"header_name": "User-Agent", "header_value": "Mozilla/5.0"},
               {"header_name": name, "header_value": value}]
        if rng.random() < 0.4:  # and a forwarding header of another kind, typed by the client
            other = rng.choice([h for h in HEADERS if h.lower() != name.lower()])
            out.insert(rng.randint(0, 2), {"header_name": other, "header_value": rng.choice(SPOOFS[other])})
        return out
    out = []
    for _ in range(rng.randint(1, 9)):
        if rng.random() < 0.04:
            out.append(None)
        else:
            out.append({"header_name": rng.choice(NAMES), "header_value": _value(rng)})
    return out


def _batch(rows: int, seed: int) -> pa.Table:
    rng = random.Random(seed)
    t = pa.table({
        "event_id": [f"e{i}" for i in range(rows)],
        "ip_address": [rng.choice(ADDRESSES) for _ in range(rows)],
        "http_headers": pa.array([_headers(rng) for _ in range(rows)], SOURCE_SCHEMA.field("http_headers").type),
        "user_agent_source": [rng.choice([None, None, "Source-Agent/1.0"]) for _ in range(rows)],
    })
    return conform(t, SOURCE_SCHEMA)


def _reference(base: pa.Table, policy: ProxyPolicy) -> pa.Table:
    con = duckdb.connect()
    con.register("base_", base)
    return con.sql(reference_sql(policy.header), params={"v4_trusted": policy.v4_ranges()}).to_arrow_table()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("proxies", [[], ["10.0.0.0/8"], ["0.0.0.0/0"], ["192.168.0.0/16", "255.255.255.255/32"]])
@pytest.mark.parametrize("header", HEADERS)
def test_same_columns_as_the_sql_they_replace(seed, proxies, header):
    base = _batch(1500, seed)
    policy = ProxyPolicy.from_cidrs(proxies, header=header)
    ours, ref = with_header_columns(base, policy), _reference(base, policy)
    assert ours.column_names == ref.column_names[:-1] + ["_fast_ip", "_fast_source", "_fast_version",
                                                          "_fast_prefix"]
    for name in ref.column_names[:-1]:
        got, want = ours.column(name).to_pylist(), ref.column(name).to_pylist()
        assert got == want, name
    # the address resolved without Python: IpAddress where the SQL had it, and always what Python gives
    rows = ours.to_pylist()
    for row, ref_fast in zip(rows, ref.column("_fast").to_pylist()):
        if ref_fast:
            assert (row["_fast_ip"], row["_fast_source"]) == (row["ip_address"], "IpAddress")
        if row["_fast_ip"] is not None:
            got = resolve_client_ip(row["ip_address"], row["h_forwarded"], row["h_xff"], row["h_xri"], policy)
            assert got == ClientIP(row["_fast_ip"], row["_fast_source"], row["_fast_version"], row["_fast_prefix"],
                                   True), row
        else:
            assert row["_fast_source"] is row["_fast_version"] is row["_fast_prefix"] is None
    # the batch exercises every branch (a test that could not fail otherwise)
    sources = [r["_fast_source"] for r in rows]
    assert "IpAddress" in sources and None in sources
    assert {r["_fast_version"] for r in rows} == {4, 6, None}
    assert set(sources) <= {"IpAddress", header, None}
    assert ours.column("h_fwd").to_pylist() == ours.column(FORWARDING_HEADERS[header.lower()]).to_pylist()
    if proxies and "0.0.0.0/0" not in proxies and header != "Forwarded":  # (every address trusted: no client)
        assert header in sources
        if header == "X-Forwarded-For":  # a chain walked
            assert any(r["_fast_source"] == header and "," in r["h_xff"] for r in rows)
        # a forwarding header the proxies do not write, beside theirs, changes nothing (never read)
        assert any(r["_fast_source"] == header and (r["h_forwarded"] or r["h_xri" if header != "X-Real-IP"
                                                                             else "h_xff"]) for r in rows)
    # an IpAddress behind a trusted proxy with only the other headers: the address as it is, without Python
    if proxies:
        others = [r for r in rows if r["_fast_source"] == "IpAddress" and r["h_fwd"] is None
                  and (r["h_forwarded"] or r["h_xff"] or r["h_xri"]) and r["ip_address"].startswith(("10.", "192."))]
        assert others
    assert any(x is not None for x in ours.column("h_long_name").to_pylist())
    assert any(x is not None and ", " in x for x in ours.column("h_xff").to_pylist())


def test_known_answers():
    base = conform(pa.table({
        "event_id": ["a", "b", "c", "d", "e", "f", "g"],
        "ip_address": ["10.0.0.5", "10.0.0.5", "81.2.69.160", "10.0.0.5", "10.0.0.5", "10.0.0.5", "10.0.0.5"],
        "http_headers": pa.array([
            [{"header_name": "X-Forwarded-For", "header_value": "81.2.69.160"},
             {"header_name": "user-agent", "header_value": "UA-1"},
             {"header_name": "x-forwarded-for", "header_value": None},
             {"header_name": "X-FORWARDED-FOR", "header_value": "10.0.0.9"},
             {"header_name": "User-Agent", "header_value": "UA-2"}],
            None,
            [{"header_name": "X-Real-İP", "header_value": "1.1.1.1"},  # not an ASCII name: not X-Real-IP
             {"header_name": "Accept-Language", "header_value": "x" * (MAX_HEADER_VALUE + 1)}],
            [{"header_name": "X-Forwarded-For", "header_value": "81.2.69.160"}],  # one untrusted client
            [{"header_name": "X-Forwarded-For", "header_value": "10.0.0.7"}],  # a trusted one: Python walks on
            [{"header_name": "Forwarded", "header_value": "for=192.0.2.1"},  # the client's own, passed through
             {"header_name": "X-Forwarded-For", "header_value": "81.2.69.160"}],
            [{"header_name": "X-Real-IP", "header_value": "192.0.2.2"},  # only headers the proxy does not write
             {"header_name": "forwarded", "header_value": "for=192.0.2.3"}],
        ], SOURCE_SCHEMA.field("http_headers").type),
        "user_agent_source": [None, "Src", None, None, None, None, None],
    }), SOURCE_SCHEMA)
    out = with_header_columns(base, ProxyPolicy.from_cidrs(["10.0.0.0/8"])).to_pydict()
    assert out["h_xff"] == ["81.2.69.160, 10.0.0.9", None, None, "81.2.69.160", "10.0.0.7", "81.2.69.160", None]
    assert out["h_xri"] == [None] * 6 + ["192.0.2.2"]
    assert out["h_forwarded"] == [None] * 5 + ["for=192.0.2.1", "for=192.0.2.3"]
    assert out["h_fwd"] == out["h_xff"]
    assert out["user_agent"] == ["UA-1", "Src", None, None, None, None, None]
    assert out["h_count"] == [5, 0, 2, 1, 1, 2, 2]
    assert out["h_max_len"][:3] == [11, 0, MAX_HEADER_VALUE + 1]
    assert out["h_long_name"] == [None, None, "Accept-Language", None, None, None, None]
    assert out["h_total"][1] == 0 and out["h_total"][0] == sum(len(x) for x in (
        "X-Forwarded-For", "81.2.69.160", "user-agent", "UA-1", "x-forwarded-for", "X-FORWARDED-FOR", "10.0.0.9",
        "User-Agent", "UA-2"))
    # behind a trusted proxy, Python resolves the address; without a forwarding header it is IpAddress as it is
    # a chain walked from the right past the trusted 10.0.0.9; one client; all trusted (Python keeps IpAddress);
    # X-Forwarded-For, the client's Forwarded ignored; no X-Forwarded-For: IpAddress, whatever the others say
    assert out["_fast_ip"] == ["81.2.69.160", "10.0.0.5", "81.2.69.160", "81.2.69.160", None, "81.2.69.160",
                               "10.0.0.5"]
    assert out["_fast_source"] == ["X-Forwarded-For", "IpAddress", "IpAddress", "X-Forwarded-For", None,
                                   "X-Forwarded-For", "IpAddress"]
    # proxies that write Forwarded: X-Forwarded-For is never read (Python reads Forwarded)
    out = with_header_columns(base, ProxyPolicy.from_cidrs(["10.0.0.0/8"], header="forwarded")).to_pydict()
    assert out["h_fwd"] == out["h_forwarded"]
    assert out["_fast_ip"] == ["10.0.0.5", "10.0.0.5", "81.2.69.160", "10.0.0.5", "10.0.0.5", None, None]
    assert out["_fast_source"][:5] == ["IpAddress"] * 5
    # proxies that write X-Real-IP: one address, read without Python
    out = with_header_columns(base, ProxyPolicy.from_cidrs(["10.0.0.0/8"], header="X-Real-IP")).to_pydict()
    assert out["_fast_ip"] == ["10.0.0.5", "10.0.0.5", "81.2.69.160", "10.0.0.5", "10.0.0.5", "10.0.0.5",
                               "192.0.2.2"]
    assert out["_fast_source"] == ["IpAddress"] * 6 + ["X-Real-IP"]


def test_empty_batch():
    out = with_header_columns(conform(pa.table({"event_id": pa.array([], pa.string())}), SOURCE_SCHEMA),
                              ProxyPolicy.from_cidrs([]))
    assert out.num_rows == 0 and "_fast_ip" in out.column_names


FINGERPRINT_SQL = """
SELECT
  CASE WHEN encoded_data IS NOT NULL AND encoded_data <> '' THEN 'ed-' || substr(sha256(encoded_data), 1, 32)
       WHEN user_agent IS NOT NULL THEN 'hd-' || substr(sha256(concat_ws(chr(31), user_agent,
            """ + ", ".join(f"coalesce({_stable_column(h)}, '')" for h in STABLE_HEADERS) + """)), 1, 32)
  END AS device_fingerprint,
  CASE WHEN encoded_data IS NOT NULL AND encoded_data <> '' THEN 'EncodedData'
       WHEN user_agent IS NOT NULL THEN 'headers' END AS device_fingerprint_source
FROM hdr_
"""


@pytest.mark.parametrize("seed", range(3))
def test_fingerprints_as_the_sql_that_computed_them(seed):
    rng = random.Random(seed)
    base = _batch(500, seed)
    encoded = [rng.choice([None, "", "blob-1", "blob-2", "blöb-✓"]) for _ in range(base.num_rows)]
    base = base.set_column(base.schema.get_field_index("encoded_data"), "encoded_data", pa.array(encoded, pa.string()))
    hdr = with_fingerprints(with_header_columns(base, ProxyPolicy.from_cidrs([])))
    con = duckdb.connect()
    con.register("hdr_", hdr.drop_columns(["device_fingerprint", "device_fingerprint_source"]))
    want = con.sql(FINGERPRINT_SQL).to_arrow_table()
    for name in ("device_fingerprint", "device_fingerprint_source"):
        assert hdr.column(name).to_pylist() == want.column(name).to_pylist(), name
    sources = set(hdr.column("device_fingerprint_source").to_pylist())
    assert sources == {"EncodedData", "headers", None}
    assert hashlib.sha256(b"blob-1").hexdigest()[:32] in {
        (f or "")[3:] for f in hdr.column("device_fingerprint").to_pylist()}


def _ipv6_texts(seed: int, count: int) -> list[str]:
    """Random IPv6 addresses written canonically and in every other way (and some that are not addresses)."""
    import ipaddress

    rng = random.Random(seed)
    out = []
    for _ in range(count):
        groups = [rng.choice([0, 0, 0, 1, 0xFFFF, 0xDB8, 0x2001, rng.randrange(16), rng.randrange(65536)])
                  for _ in range(8)]
        a = ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups))
        text, r = str(a), rng.random()
        if r < 0.5:
            out.append(text)
        elif r < 0.6:
            out.append(a.exploded)
        elif r < 0.65:
            out.append(text.upper())
        elif r < 0.7:
            out.append(":".join(g.lstrip("0") or "0" for g in a.exploded.split(":")))  # no :: at all
        elif r < 0.75:
            out.append(rng.choice(["::ffff:1.2.3.4", "::ffff:102:304", "::ffff:0:0", "::1.2.3.4"]))
        elif r < 0.8:
            out.append(text + "%eth0" if rng.random() < 0.5 else "[" + text + "]")
        elif r < 0.9:
            out.append(rng.choice([":::", "::::", "1::2::3", "::", "::1", "1::", "0::", "::0", "1:0::", "::0:1",
                                   "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9", "g::1", "12345::",
                                   "01::", "1:0:0:2::3", "1::0:0:2:3", "1:0:2::3:0:4", "0:0:1::2", ":1::", "1::2:"]))
        else:  # a single group or a shorter run compressed by hand
            parts = [g.lstrip("0") or "0" for g in a.exploded.split(":")]
            at = rng.randrange(7)
            out.append(":".join(parts[:at]) + "::" + ":".join(parts[at + 1:]))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_ipv6_written_canonically_is_resolved_without_python_as_python_resolves_it(seed):
    from ingest.enrich import _canonical_ipv6

    texts = _ipv6_texts(seed, 4000)
    canonical, prefixes = _canonical_ipv6(pa.array(texts, pa.string()))
    policy = ProxyPolicy.from_cidrs([])
    for text, ok, prefix in zip(texts, canonical.tolist(), prefixes.to_pylist()):
        if ok:
            assert resolve_client_ip(text, None, None, None, policy) == ClientIP(text, "IpAddress", 6, prefix, True)
        else:
            assert prefix is None
    assert canonical.sum() > 1500  # the canonical half of them, less ties between two equal runs of zeros
    # in a batch: only without the policy's forwarding header (another one is never read)
    base = conform(pa.table({
        "event_id": ["a", "b", "c", "d"],
        "ip_address": ["2001:db8:0:1::5", "2001:DB8::5", "2001:db8::5", "2001:db8::6"],
        "http_headers": pa.array([None, None, [{"header_name": "X-Real-IP", "header_value": "1.2.3.4"}],
                                  [{"header_name": "X-Forwarded-For", "header_value": "1.2.3.4"}]],
                                 SOURCE_SCHEMA.field("http_headers").type)}), SOURCE_SCHEMA)
    out = with_header_columns(base, ProxyPolicy.from_cidrs([])).to_pydict()
    assert out["_fast_ip"] == ["2001:db8:0:1::5", None, "2001:db8::5", None]
    assert out["_fast_prefix"] == ["2001:db8::/48", None, "2001:db8::/48", None]
    assert out["_fast_version"] == [6, None, 6, None]
    out = with_header_columns(base, ProxyPolicy.from_cidrs([], header="X-Real-IP")).to_pydict()
    assert out["_fast_ip"] == ["2001:db8:0:1::5", None, None, "2001:db8::6"]


def test_the_warm_up_is_done_before_the_first_batch_is_enriched_and_its_failures_are_left_to_the_real_use():
    from ingest import enrich

    class Broken:
        def warm_up(self):
            raise OSError("unreadable database")

    enrich._warm_up(Broken())  # nothing raised: the lookups report it, with their context
    e = enrich.Enricher(geo=None)
    assert e._warming is not None
    good, bad = e.run(_batch(50, 0), "riskgate-jsonl", "f")  # (no usernames: every row quarantined)
    assert e._warming is None and good.num_rows + bad.num_rows == 50
    # the inline path (one record, no batch) waits for it too before it parses an agent
    from ingest.one import canonical
    from tests.events_gen import event

    e = enrich.Enricher(geo=None)
    row = canonical(event(1), e, source_format="riskgate-jsonl", source_file="f", source_line=1)
    assert e._warming is None and row["browser_family"] == "Chrome"


def _signins(rows: int, seed: int) -> pa.Table:
    """:func:`_batch` as sign-ins the checks accept (but for their headers and addresses)."""
    from datetime import datetime, timezone

    base = _batch(rows, seed)
    n = base.num_rows
    for name, value in (("username", pa.array([f"u{i % 7}" for i in range(n)], pa.string())),
                        ("event_type", pa.array(["SignIn"] * n, pa.string())),
                        ("event_response", pa.array(["Pass"] * n, pa.string())),
                        ("creation_date", pa.array([datetime(2026, 3, 1, tzinfo=timezone.utc)] * n,
                                                   pa.timestamp("us", tz="UTC")))):
        base = base.set_column(base.schema.get_field_index(name), name, value)
    return base


@pytest.mark.parametrize("header", HEADERS)
def test_every_enriched_row_has_the_address_python_resolves_with_the_one_header_the_policy_names(header):
    """The whole batch path (vectorised rows, and Python once per distinct address and value for the rest) gives
    each row what resolve_client_ip gives; the Enricher's cache of resolutions follows a change of policy."""
    from ingest.enrich import Enricher

    policy = ProxyPolicy.from_cidrs(["10.0.0.0/8", "192.168.0.0/16"], header=header)
    other = ProxyPolicy.from_cidrs(["10.0.0.0/8", "192.168.0.0/16"],
                                   header="Forwarded" if header != "Forwarded" else "X-Forwarded-For")
    e = Enricher(geo=None, proxies=policy)
    batch = _signins(1500, 3)
    headers = {r["event_id"]: r for r in with_header_columns(batch, policy).to_pylist()}
    for p in (policy, other, policy):
        e.proxies = p
        good, _ = e.run(batch, "riskgate-jsonl", "f")
        assert good.num_rows > 1000
        for row in good.select(["event_id", "client_ip", "client_ip_source", "ip_version", "ip_prefix"]).to_pylist():
            h = headers[row["event_id"]]
            want = resolve_client_ip(h["ip_address"], h["h_forwarded"], h["h_xff"], h["h_xri"], p)
            assert (row["client_ip"], row["client_ip_source"], row["ip_version"], row["ip_prefix"]) == (
                want.ip, want.source, want.version, want.prefix), (p.header, h)
        assert p.header in good.column("client_ip_source").to_pylist()
