"""The network catalogue: cities, their residential networks, hosting and VPN networks.

``ingest/data/synth_networks.json.gz`` is built by ``bench/build_synth_networks.py``
from DB-IP Lite (CC BY 4.0). Every block in it resolves, in those databases,
to the recorded city and ASN, so any address picked inside a block does too.

Networks are numbered; events carry a network number and an offset inside it
(IPv4: the host number; IPv6: the /64 number and the interface id), and
addresses are formatted once per distinct (network, offset).
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from ingest.errors import InputFormatError

DATA_FILE = "synth_networks.json.gz"
KINDS = ("residential", "hosting", "vpn")


@dataclass(frozen=True)
class City:
    index: int
    key: str
    name: str
    country: str
    country_name: str
    lat: float
    lon: float
    tz: str
    weight: float
    lang: str
    isps: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]  # per ISP: (IPv4 network numbers, IPv6 network numbers)


@dataclass
class Catalogue:
    cities: list[City]
    attribution: str
    # one entry per network (block), as parallel arrays / lists
    cidr: list[str]
    version: np.ndarray  # int8
    base: list[int]  # network address as int (IPv6 needs Python ints)
    base4: np.ndarray  # int64 network address of IPv4 blocks (0 for IPv6)
    host_bits: np.ndarray  # int16: IPv4 32-prefix; IPv6 64-prefix (bits of the /64 number)
    asn: np.ndarray  # int64
    org: list[str]
    country: list[str]
    country_name: list[str]
    city_name: list[str]
    region: list[str]
    kind: np.ndarray  # int8 index into KINDS
    provider: list[str]
    home_city: np.ndarray  # int32 catalogue city of a residential block, -1 otherwise
    tz: list[str]
    #: country -> network numbers of hosting (kind 1) and VPN (kind 2) blocks, IPv4 first
    hosting_by_country: dict[str, list[int]]
    vpn_by_country: dict[str, list[int]]

    @property
    def n(self) -> int:
        return len(self.cidr)

    def user_cities(self) -> list[City]:
        return [c for c in self.cities if c.weight > 0]

    def distance_km(self, a: int, b: int) -> float:
        ca, cb = self.cities[a], self.cities[b]
        return haversine_km(ca.lat, ca.lon, cb.lat, cb.lon)


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 6371.0 * 2 * math.asin(min(1.0, math.sqrt(a)))


def default_path() -> Path:
    return Path(str(resources.files("ingest").joinpath("data", DATA_FILE)))


@lru_cache(maxsize=4)
def load(path: str | None = None) -> Catalogue:
    """Read the catalogue (the packaged one unless ``path`` is given); cached per path."""
    p = Path(path) if path else default_path()
    try:
        with gzip.open(p, "rt", encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        raise InputFormatError(f"cannot read the synth network catalogue: {exc}", source=str(p)) from exc
    return _build(doc)


def _build(doc: dict) -> Catalogue:
    cidr, version, base, host_bits, asn, org = [], [], [], [], [], []
    country, country_name, city_name, region, kind, provider, home_city, tz = [], [], [], [], [], [], [], []

    def add(block: str, a: int, o: str, cc: str, ccn: str, cn: str, rg: str, k: int, prov: str, hc: int, z: str) -> int:
        net = ipaddress.ip_network(block)
        cidr.append(block)
        version.append(net.version)
        base.append(int(net.network_address))
        host_bits.append(32 - net.prefixlen if net.version == 4 else 64 - net.prefixlen)
        asn.append(a)
        org.append(o)
        country.append(cc)
        country_name.append(ccn)
        city_name.append(cn)
        region.append(rg)
        kind.append(k)
        provider.append(prov)
        home_city.append(hc)
        tz.append(z)
        return len(cidr) - 1

    cities = []
    for i, c in enumerate(doc["cities"]):
        isps = []
        for isp in c["isps"]:
            v4 = tuple(add(b, isp["asn"], isp["org"], c["country"], c["country_name"], cn, rg, 0, isp["org"], i, c["tz"])
                       for b, cn, rg in isp["v4"])
            v6 = tuple(add(b, isp["asn"], isp["org"], c["country"], c["country_name"], cn, rg, 0, isp["org"], i, c["tz"])
                       for b, cn, rg in isp["v6"])
            isps.append((v4, v6))
        cities.append(
            City(i, c["key"], c["name"], c["country"], c["country_name"], c["lat"], c["lon"], c["tz"],
                 float(c["weight"]), c["lang"], tuple(isps))
        )
    hosting_by_country: dict[str, list[int]] = {}
    vpn_by_country: dict[str, list[int]] = {}
    for h in doc["hosting"]:
        k = KINDS.index(h["kind"])
        target = vpn_by_country if k == 2 else hosting_by_country
        nums = [add(b, a, o, h["country"], h["country_name"], cn, rg, k, h["provider"], -1, h.get("tz") or "UTC")
                for b, a, o, cn, rg in h["v4"] + h["v6"]]
        target.setdefault(h["country"], []).extend(nums)
    return Catalogue(
        cities=cities,
        attribution=doc.get("attribution", ""),
        cidr=cidr,
        version=np.array(version, np.int8),
        base=base,
        base4=np.array([b if v == 4 else 0 for b, v in zip(base, version)], np.int64),
        host_bits=np.array(host_bits, np.int16),
        asn=np.array(asn, np.int64),
        org=org,
        country=country,
        country_name=country_name,
        city_name=city_name,
        region=region,
        kind=np.array(kind, np.int8),
        provider=provider,
        home_city=np.array(home_city, np.int32),
        tz=tz,
        hosting_by_country=hosting_by_country,
        vpn_by_country=vpn_by_country,
    )


def pick_offsets(cat: Catalogue, nets: np.ndarray, r1: np.ndarray, r2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets inside ``nets`` from non-negative random int64s ``r1``/``r2``.

    IPv4: ``hi`` is 0 and ``lo`` a host number avoiding the network and broadcast
    addresses. IPv6: ``hi`` is the /64 number inside the block, ``lo`` an interface id.
    """
    bits = cat.host_bits[nets].astype(np.int64)
    v4 = cat.version[nets] == 4
    size = np.left_shift(np.int64(1), np.minimum(bits, 62))
    usable = np.where(v4 & (size >= 4), size - 2, size)
    first = np.where(v4 & (size >= 4), 1, 0)
    lo4 = first + r1 % np.maximum(usable, 1)
    hi6 = r1 % np.maximum(size, 1)
    lo6 = (r2 % (np.int64(1) << 62)) | 1
    hi = np.where(v4, 0, hi6)
    lo = np.where(v4, lo4, lo6)
    return hi.astype(np.int64), lo.astype(np.int64)


def format_ips(cat: Catalogue, nets: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Address strings (object array) for each (network, hi, lo), formatting each distinct one once."""
    out = np.empty(len(nets), dtype=object)
    if len(nets) == 0:
        return out
    v4 = cat.version[nets] == 4
    i4 = np.nonzero(v4)[0]
    if len(i4):
        x = cat.base4[nets[i4]] + lo[i4]
        uniq, inv = np.unique(x, return_inverse=True)
        strs = np.array([f"{a >> 24 & 255}.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}" for a in uniq.tolist()],
                        dtype=object)
        out[i4] = strs[inv]
    i6 = np.nonzero(~v4)[0]
    if len(i6):
        key = np.stack([nets[i6].astype(np.int64), hi[i6], lo[i6]], axis=1)
        uniq6, inv6 = np.unique(key, axis=0, return_inverse=True)
        base = cat.base
        strs6 = np.array([ipaddress.IPv6Address(base[n] + (h << 64) + l).compressed for n, h, l in uniq6.tolist()],
                         dtype=object)
        out[i6] = strs6[inv6.reshape(-1)]
    return out
