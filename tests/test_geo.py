import hashlib
import json
import struct

import pytest
import zstandard

from ingest import geo
from ingest.errors import GeoIPError
from tests.geo_fixtures import build


@pytest.fixture
def dbs(tmp_path):
    return build(tmp_path)


def test_lookup_ipv4_and_ipv6_with_known_answers(dbs):
    r = geo.GeoResolver(str(dbs[0]), str(dbs[1]))
    london = r.lookup("81.2.69.160")
    assert (london.country_iso, london.country_name, london.region, london.city) == (
        "GB", "United Kingdom", "England", "London")
    assert (london.asn, london.as_org, london.time_zone) == (20712, "Andrews & Arnold Ltd", "Europe/London")
    berlin = r.lookup("2001:db8:1:42::1")
    assert (berlin.country_iso, berlin.city, berlin.asn) == ("DE", "Berlin", 64502)
    assert r.lookup("192.0.2.1") == geo.EMPTY  # not in the database
    assert r.lookup(None) == geo.EMPTY


def test_time_zone_from_coordinates_when_the_database_has_none(dbs):
    r = geo.GeoResolver(str(dbs[0]), str(dbs[1]))
    assert r.lookup("203.0.113.9").time_zone == "Australia/Sydney"


def test_reader_opened_once_per_process(dbs):
    a = geo.GeoResolver(str(dbs[0]), str(dbs[1]))
    b = geo.GeoResolver(str(dbs[0]), str(dbs[1]))
    assert a._city is b._city and a._asn is b._asn


def test_wrong_kind_of_database_is_refused(tmp_path):
    city, asn = build(tmp_path)
    with pytest.raises(GeoIPError, match="expected a City database"):
        geo.GeoResolver(str(asn), None)
    # also once the file is open as the other kind: the check ran only when a file was first opened, so a City
    # database given as the ASN one too was taken (every ASN lost, exit 0)
    geo.GeoResolver(str(city), None)
    with pytest.raises(GeoIPError, match=r"is a \S*City\S* database, expected an ASN database"):
        geo.GeoResolver(str(city), str(city))
    geo.GeoResolver(None, str(asn))
    with pytest.raises(GeoIPError, match="expected a City database"):
        geo.GeoResolver(str(asn), str(asn))


def test_missing_and_corrupt_files_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(GeoIPError, match="does not exist"):
        geo.resolve_paths(str(tmp_path / "nope.mmdb"), None)
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(b"this is not a MaxMind DB file" * 10)
    with pytest.raises(GeoIPError, match="not a readable MaxMind DB"):
        geo.open_reader(str(bad), "city")


def test_environment_selects_the_users_files_and_none_disables(dbs, monkeypatch):
    monkeypatch.setenv(geo.CITY_ENV, str(dbs[0]))
    monkeypatch.setenv(geo.ASN_ENV, "none")
    assert geo.resolve_paths() == (str(dbs[0]), None)
    # an option beats the environment
    assert geo.resolve_paths(None, str(dbs[1])) == (str(dbs[0]), str(dbs[1]))


def test_default_database_is_bundled_extracted_verified_and_works_offline(tmp_path, monkeypatch):
    monkeypatch.setenv(geo.CACHE_ENV, str(tmp_path / "cache"))
    city, asn = geo.default_database_paths()
    assert city.exists() and asn.exists()
    manifest = json.loads((geo._detector_data_dir() / "MANIFEST.json").read_text())
    want = {d["key"]: d["sha256"] for d in manifest["datasets"]}
    assert hashlib.sha256(asn.read_bytes()).hexdigest() == want["dbip-asn"]
    r = geo.GeoResolver(str(city), str(asn))
    rec = r.lookup("81.2.69.160")  # MaxMind's documentation address: London, Andrews & Arnold
    assert rec.country_iso == "GB" and rec.asn == 20712 and rec.time_zone == "Europe/London"
    v6 = r.lookup("2001:4860:4860::8888")
    assert v6.asn == 15169  # Google
    mtime = city.stat().st_mtime_ns
    assert geo.default_database_path("city") == city and city.stat().st_mtime_ns == mtime  # extracted once


def test_extraction_refuses_a_container_whose_hash_does_not_match(tmp_path):
    payload = b"not really a database" * 100
    blob = zstandard.ZstdCompressor().compress(payload)
    src = tmp_path / "x.mmdb.bz"
    src.write_bytes(struct.pack(">8sIII", b"DETBLK01", 262144, 1, len(payload)) + struct.pack(">I", len(blob)) + blob)
    good = hashlib.sha256(payload).hexdigest()
    out = geo.extract_block_container(src, tmp_path / "ok.mmdb", good)
    assert out.read_bytes() == payload
    with pytest.raises(GeoIPError, match="does not match the manifest"):
        geo.extract_block_container(src, tmp_path / "bad.mmdb", "0" * 64)
    assert not (tmp_path / "bad.mmdb").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


def _french_cities(path, networks: dict[str, str]) -> str:
    """An mmdb City database (built with mmdb-writer) of the given networks, each a French city: its path."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    fr = {"iso_code": "FR", "names": {"en": "France"}}
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-City", languages=["en"], description="t")
    for net, city in networks.items():
        w.insert_network(IPSet([net]), {"country": fr, "city": {"names": {"en": city}}})
    w.to_db_file(str(path))
    return str(path)


def _counted_lookups(monkeypatch, resolver: geo.GeoResolver) -> list[str]:
    """The addresses ``resolver`` looks up in its databases from now on (filled as it does)."""
    calls: list[str] = []
    real = resolver._lookup
    monkeypatch.setattr(resolver, "_lookup", lambda ip: calls.append(ip) or real(ip))
    return calls


def test_a_slash_24_covered_by_one_network_is_looked_up_once_but_smaller_networks_are_not_shared(tmp_path, monkeypatch):
    city_path, asn_path = build(tmp_path)
    r = geo.GeoResolver(str(city_path), str(asn_path))
    calls = _counted_lookups(monkeypatch, r)
    assert r.lookup("81.2.69.1").city == "London" and r.lookup("81.2.69.2").city == "London"
    assert calls == ["81.2.69.1"]
    # two /25 halves of one /24 with different cities: each address is looked up
    split = _french_cities(tmp_path / "split.mmdb", {"192.0.2.0/25": "Paris", "192.0.2.128/25": "Lyon"})
    r2 = geo.GeoResolver(split, None)
    assert [r2.lookup(ip).city for ip in ("192.0.2.1", "192.0.2.200", "192.0.2.2")] == ["Paris", "Lyon", "Paris"]


def test_an_ipv6_slash_48_covered_by_one_network_is_looked_up_once_but_smaller_networks_are_not_shared(
        tmp_path, monkeypatch):
    path = _french_cities(tmp_path / "v6.mmdb", {"2001:db8:1::/48": "Nantes", "2001:db8:2::/49": "Paris",
                                                 "2001:db8:2:8000::/49": "Lyon"})
    r = geo.GeoResolver(path, None)
    calls = _counted_lookups(monkeypatch, r)
    assert [r.lookup(ip).city for ip in ("2001:db8:1::1", "2001:db8:1:ffff::2", "2001:db8:1:1:2:3:4:5")] \
        == ["Nantes"] * 3
    assert calls == ["2001:db8:1::1"]  # one /48, one network: looked up once
    # two /49 halves of one /48 with different cities: each half is looked up once, each address gets its city
    assert [r.lookup(ip).city for ip in ("2001:db8:2::1", "2001:db8:2:8000::1", "2001:db8:2::2")] \
        == ["Paris", "Lyon", "Paris"]
    assert calls[1:] == ["2001:db8:2::1", "2001:db8:2:8000::1"]


def test_a_batch_is_looked_up_once_per_block_one_network_covers_and_per_address_elsewhere(tmp_path, monkeypatch):
    """Enrichment of a batch: addresses of a /24 or /48 that one network covers share one lookup; addresses of
    split blocks each get their own; every row's geo is what a lookup of its own address gives."""
    import pyarrow as pa

    from ingest.enrich import Enricher
    from ingest.schema import SOURCE_SCHEMA, conform

    path = _french_cities(tmp_path / "blocks.mmdb", {
        "192.0.2.0/24": "Nantes", "198.51.100.0/25": "Paris", "198.51.100.128/25": "Lyon",
        "2001:db8:1::/48": "Lille", "2001:db8:2::/49": "Nice", "2001:db8:2:8000::/49": "Metz"})
    ips = ([f"192.0.2.{i}" for i in range(1, 60)] + ["198.51.100.5", "198.51.100.200", "198.51.100.6"]
           + [f"2001:db8:1::{i:x}" for i in range(1, 40)] + ["2001:db8:2::1", "2001:db8:2:8000::1", "203.0.113.9"])
    batch = conform(pa.table({
        "event_id": [f"e{i}" for i in range(len(ips))], "username": ["u"] * len(ips),
        "event_type": ["SignIn"] * len(ips), "event_response": ["Pass"] * len(ips),
        "creation_date": pa.array([1_780_000_000_000_000] * len(ips), pa.timestamp("us", tz="UTC")),
        "ip_address": ips,
    }), SOURCE_SCHEMA)
    enricher = Enricher(geo=geo.GeoResolver(path, None))
    calls = _counted_lookups(monkeypatch, enricher.geo)
    good, bad = enricher.run(batch, "test", "t.jsonl")
    assert bad.num_rows == 0
    got = dict(zip(good.column("ip_address").to_pylist(), good.column("city").to_pylist()))
    reference = geo.GeoResolver(path, None)
    assert got == {ip: reference.lookup(ip).city for ip in ips}
    assert got["198.51.100.200"] == "Lyon" and got["2001:db8:2:8000::1"] == "Metz" and got["203.0.113.9"] is None
    # one lookup for each whole block (59 and 39 addresses), one per network of the split ones, and the unknown one
    whole = [ip for ip in calls if ip.startswith(("192.0.2.", "2001:db8:1:"))]
    assert len(whole) == 2
    rest = [ip for ip in calls if ip not in whole]
    assert len(rest) == 5 and set(rest) >= {"198.51.100.200", "2001:db8:2::1", "2001:db8:2:8000::1", "203.0.113.9"}
    assert len({"198.51.100.5", "198.51.100.6"} & set(rest)) == 1  # one /25: one of its two addresses looked up


def test_networks_smaller_than_a_slash_24_are_looked_up_once_each(tmp_path, monkeypatch):
    path = _french_cities(tmp_path / "small.mmdb", {"192.0.2.0/26": "Paris", "192.0.2.64/26": "Lyon",
                                                    "192.0.2.128/25": "Lille", "192.0.2.8/30": "Metz"})
    r = geo.GeoResolver(path, None)
    calls = _counted_lookups(monkeypatch, r)
    addresses = [f"192.0.2.{i}" for i in range(256)]
    got = [r.lookup(ip).city for ip in addresses]
    fresh = geo.GeoResolver(path, None)
    assert got == [fresh._lookup(ip)[0].city for ip in addresses]
    assert got[9] == "Metz" and got[7] == "Paris" and got[12] == "Paris" and got[70] == "Lyon" and got[255] == "Lille"
    # the mmdb-writer splits 192.0.2.0/26 around the /30 into /29, /30, /28 and /27 pieces: one lookup each,
    # one for the /26 and one for the /25; 250 of the 256 addresses need none
    assert len(calls) == 7


def _google_dns_city(path, location: dict) -> str:
    """An mmdb City database holding 8.8.8.0/24 with ``location``: its path."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-City", languages=["en"], description="t")
    w.insert_network(IPSet(["8.8.8.0/24"]), {"country": {"iso_code": "US", "names": {"en": "United States"}},
                                              "location": location})
    w.to_db_file(str(path))
    return str(path)


def test_warm_up_opens_the_time_zone_finder_only_for_a_database_without_zones_and_caches_nothing(tmp_path, monkeypatch):
    asked: list[tuple[float, float]] = []  # the points whose zone the finder was asked for
    real = geo._timezone_at
    monkeypatch.setattr(geo, "_timezone_at", lambda lat, lon: asked.append((lat, lon)) or real(lat, lon))
    point = {"latitude": 37.386, "longitude": -122.0838}
    zoned = geo.GeoResolver(_google_dns_city(tmp_path / "z.mmdb", {**point, "time_zone": "America/Chicago"}), None)
    calls = _counted_lookups(monkeypatch, zoned)
    zoned.warm_up()
    assert asked == []  # the database has zones: the finder is never needed
    assert calls == [] and not zoned._cache and not zoned._smaller
    assert zoned.lookup("8.8.8.8").time_zone == "America/Chicago"

    bare = geo.GeoResolver(_google_dns_city(tmp_path / "b.mmdb", point), None)
    calls = _counted_lookups(monkeypatch, bare)
    bare.warm_up()
    assert asked == [(37.386, -122.0838)]  # DB-IP Lite's case: the finder is opened ahead
    assert calls == [] and not bare._cache
    assert bare.lookup("8.8.8.8").time_zone == "America/Los_Angeles"  # from the coordinates
    geo.GeoResolver(None, None).warm_up()  # nothing to open
