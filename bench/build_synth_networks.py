"""Build ``ingest/data/synth_networks.json.gz``: the network catalogue of ``riskgate synth``.

The synthetic population needs addresses that resolve, in the default GeoIP
databases, to the city and network the generator meant. Scanning the whole
City database at synth time would take minutes, so this script does it once
and keeps a small catalogue:

* for each city below (about 60 cities in 26 countries where users live, plus a
  few cities used only as sources of foreign attacks): its largest residential
  networks (ISPs ranked by address count in the city, hosting/transit/research
  networks left out), each with a handful of IPv4 and IPv6 blocks;
* for hosting and VPN providers (AWS, Google Cloud, Microsoft, DigitalOcean,
  OVH, Hetzner, M247, Linode, Vultr, Datacamp, ...): blocks per country served.

Every block is the intersection of one City-database network and one
ASN-database network, so *every* address inside it resolves to the recorded
city and ASN. The script checks that again before writing.

Data: DB-IP "IP to City Lite" and "IP to ASN Lite" (https://db-ip.com),
licensed CC BY 4.0. The catalogue is derived from them and carries the same
licence and attribution.

Usage::

    .venv/bin/python bench/build_synth_networks.py [--city CITY.mmdb --asn ASN.mmdb] [--out PATH]

Without ``--city/--asn`` it uses ``ingest.geo.default_database_paths()``.
It takes two to four minutes (one pass over the City database).
"""

from __future__ import annotations

import argparse
import gzip
import ipaddress
import json
import math
import random
import re
import sys
from collections import defaultdict
from pathlib import Path

import maxminddb

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "ingest" / "data" / "synth_networks.json.gz"

# key, name, ISO country, latitude, longitude, IANA zone, population weight, Accept-Language
# weight 0: no users live there (sources of foreign attacks only)
CITIES = [
    ("us-new-york", "New York", "US", 40.7128, -74.0060, "America/New_York", 3.0, "en-US,en;q=0.9"),
    ("us-los-angeles", "Los Angeles", "US", 34.0522, -118.2437, "America/Los_Angeles", 2.5, "en-US,en;q=0.9"),
    ("us-chicago", "Chicago", "US", 41.8781, -87.6298, "America/Chicago", 2.0, "en-US,en;q=0.9"),
    ("us-houston", "Houston", "US", 29.7604, -95.3698, "America/Chicago", 1.5, "en-US,en;q=0.9"),
    ("us-phoenix", "Phoenix", "US", 33.4484, -112.0740, "America/Phoenix", 1.0, "en-US,en;q=0.9"),
    ("us-philadelphia", "Philadelphia", "US", 39.9526, -75.1652, "America/New_York", 1.0, "en-US,en;q=0.9"),
    ("us-dallas", "Dallas", "US", 32.7767, -96.7970, "America/Chicago", 1.5, "en-US,en;q=0.9"),
    ("us-seattle", "Seattle", "US", 47.6062, -122.3321, "America/Los_Angeles", 1.0, "en-US,en;q=0.9"),
    ("us-miami", "Miami", "US", 25.7617, -80.1918, "America/New_York", 1.0, "en-US,en;q=0.9,es;q=0.8"),
    ("us-denver", "Denver", "US", 39.7392, -104.9903, "America/Denver", 0.8, "en-US,en;q=0.9"),
    ("us-atlanta", "Atlanta", "US", 33.7490, -84.3880, "America/New_York", 1.0, "en-US,en;q=0.9"),
    ("us-boston", "Boston", "US", 42.3601, -71.0589, "America/New_York", 0.8, "en-US,en;q=0.9"),
    ("us-san-francisco", "San Francisco", "US", 37.7749, -122.4194, "America/Los_Angeles", 1.0, "en-US,en;q=0.9"),
    ("ca-toronto", "Toronto", "CA", 43.6532, -79.3832, "America/Toronto", 1.5, "en-CA,en;q=0.9"),
    ("ca-montreal", "Montreal", "CA", 45.5017, -73.5673, "America/Toronto", 0.8, "fr-CA,fr;q=0.9,en-CA;q=0.8,en;q=0.7"),
    ("ca-vancouver", "Vancouver", "CA", 49.2827, -123.1207, "America/Vancouver", 0.7, "en-CA,en;q=0.9"),
    ("mx-mexico-city", "Mexico City", "MX", 19.4326, -99.1332, "America/Mexico_City", 1.2, "es-MX,es;q=0.9,en;q=0.8"),
    ("mx-guadalajara", "Guadalajara", "MX", 20.6597, -103.3496, "America/Mexico_City", 0.5, "es-MX,es;q=0.9,en;q=0.8"),
    ("br-sao-paulo", "São Paulo", "BR", -23.5505, -46.6333, "America/Sao_Paulo", 2.0, "pt-BR,pt;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("br-rio", "Rio de Janeiro", "BR", -22.9068, -43.1729, "America/Sao_Paulo", 1.0, "pt-BR,pt;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("ar-buenos-aires", "Buenos Aires", "AR", -34.6037, -58.3816, "America/Argentina/Buenos_Aires", 0.8, "es-AR,es;q=0.9,en;q=0.8"),
    ("gb-london", "London", "GB", 51.5074, -0.1278, "Europe/London", 3.0, "en-GB,en;q=0.9"),
    ("gb-manchester", "Manchester", "GB", 53.4808, -2.2426, "Europe/London", 1.0, "en-GB,en;q=0.9"),
    ("gb-birmingham", "Birmingham", "GB", 52.4862, -1.8904, "Europe/London", 0.8, "en-GB,en;q=0.9"),
    ("gb-edinburgh", "Edinburgh", "GB", 55.9533, -3.1883, "Europe/London", 0.5, "en-GB,en;q=0.9"),
    ("ie-dublin", "Dublin", "IE", 53.3498, -6.2603, "Europe/Dublin", 0.6, "en-IE,en;q=0.9"),
    ("fr-paris", "Paris", "FR", 48.8566, 2.3522, "Europe/Paris", 2.5, "fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("fr-lyon", "Lyon", "FR", 45.7640, 4.8357, "Europe/Paris", 0.8, "fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("fr-marseille", "Marseille", "FR", 43.2965, 5.3698, "Europe/Paris", 0.6, "fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("fr-toulouse", "Toulouse", "FR", 43.6047, 1.4442, "Europe/Paris", 0.5, "fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("de-berlin", "Berlin", "DE", 52.5200, 13.4050, "Europe/Berlin", 1.5, "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("de-munich", "Munich", "DE", 48.1351, 11.5820, "Europe/Berlin", 1.0, "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("de-hamburg", "Hamburg", "DE", 53.5511, 9.9937, "Europe/Berlin", 1.0, "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("de-frankfurt", "Frankfurt am Main", "DE", 50.1109, 8.6821, "Europe/Berlin", 0.8, "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("de-cologne", "Cologne", "DE", 50.9375, 6.9603, "Europe/Berlin", 0.7, "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("nl-amsterdam", "Amsterdam", "NL", 52.3676, 4.9041, "Europe/Amsterdam", 1.0, "nl-NL,nl;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("nl-rotterdam", "Rotterdam", "NL", 51.9244, 4.4777, "Europe/Amsterdam", 0.5, "nl-NL,nl;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("be-brussels", "Brussels", "BE", 50.8503, 4.3517, "Europe/Brussels", 0.6, "fr-BE,fr;q=0.9,nl;q=0.8,en;q=0.7"),
    ("es-madrid", "Madrid", "ES", 40.4168, -3.7038, "Europe/Madrid", 1.3, "es-ES,es;q=0.9"),
    ("es-barcelona", "Barcelona", "ES", 41.3874, 2.1686, "Europe/Madrid", 1.0, "es-ES,es;q=0.9,ca;q=0.8"),
    ("es-valencia", "Valencia", "ES", 39.4699, -0.3763, "Europe/Madrid", 0.4, "es-ES,es;q=0.9"),
    ("it-rome", "Rome", "IT", 41.9028, 12.4964, "Europe/Rome", 1.0, "it-IT,it;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("it-milan", "Milan", "IT", 45.4642, 9.1900, "Europe/Rome", 1.0, "it-IT,it;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("it-naples", "Naples", "IT", 40.8518, 14.2681, "Europe/Rome", 0.4, "it-IT,it;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("pt-lisbon", "Lisbon", "PT", 38.7223, -9.1393, "Europe/Lisbon", 0.5, "pt-PT,pt;q=0.9,en;q=0.8"),
    ("ch-zurich", "Zurich", "CH", 47.3769, 8.5417, "Europe/Zurich", 0.5, "de-CH,de;q=0.9,en;q=0.8"),
    ("ch-geneva", "Geneva", "CH", 46.2044, 6.1432, "Europe/Zurich", 0.3, "fr-CH,fr;q=0.9,en;q=0.8"),
    ("at-vienna", "Vienna", "AT", 48.2082, 16.3738, "Europe/Vienna", 0.5, "de-AT,de;q=0.9,en;q=0.8"),
    ("se-stockholm", "Stockholm", "SE", 59.3293, 18.0686, "Europe/Stockholm", 0.6, "sv-SE,sv;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("pl-warsaw", "Warsaw", "PL", 52.2297, 21.0122, "Europe/Warsaw", 0.8, "pl-PL,pl;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("pl-krakow", "Kraków", "PL", 50.0647, 19.9450, "Europe/Warsaw", 0.4, "pl-PL,pl;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("in-mumbai", "Mumbai", "IN", 19.0760, 72.8777, "Asia/Kolkata", 1.2, "en-IN,en;q=0.9,hi;q=0.8"),
    ("in-delhi", "Delhi", "IN", 28.6139, 77.2090, "Asia/Kolkata", 1.2, "en-IN,en;q=0.9,hi;q=0.8"),
    ("in-bengaluru", "Bengaluru", "IN", 12.9716, 77.5946, "Asia/Kolkata", 1.0, "en-IN,en;q=0.9,kn;q=0.8"),
    ("jp-tokyo", "Tokyo", "JP", 35.6762, 139.6503, "Asia/Tokyo", 1.5, "ja-JP,ja;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("jp-osaka", "Osaka", "JP", 34.6937, 135.5023, "Asia/Tokyo", 0.6, "ja-JP,ja;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("kr-seoul", "Seoul", "KR", 37.5665, 126.9780, "Asia/Seoul", 0.8, "ko-KR,ko;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("sg-singapore", "Singapore", "SG", 1.3521, 103.8198, "Asia/Singapore", 0.6, "en-SG,en;q=0.9,zh-CN;q=0.8"),
    ("au-sydney", "Sydney", "AU", -33.8688, 151.2093, "Australia/Sydney", 1.0, "en-AU,en;q=0.9"),
    ("au-melbourne", "Melbourne", "AU", -37.8136, 144.9631, "Australia/Melbourne", 0.9, "en-AU,en;q=0.9"),
    ("au-brisbane", "Brisbane", "AU", -27.4698, 153.0251, "Australia/Brisbane", 0.4, "en-AU,en;q=0.9"),
    ("za-johannesburg", "Johannesburg", "ZA", -26.2041, 28.0473, "Africa/Johannesburg", 0.5, "en-ZA,en;q=0.9"),
    ("za-cape-town", "Cape Town", "ZA", -33.9249, 18.4241, "Africa/Johannesburg", 0.3, "en-ZA,en;q=0.9,af;q=0.8"),
    ("ng-lagos", "Lagos", "NG", 6.5244, 3.3792, "Africa/Lagos", 0.4, "en-NG,en;q=0.9"),
    # sources of foreign attacks only
    ("ru-moscow", "Moscow", "RU", 55.7558, 37.6173, "Europe/Moscow", 0.0, "ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("cn-beijing", "Beijing", "CN", 39.9042, 116.4074, "Asia/Shanghai", 0.0, "zh-CN,zh;q=0.9"),
    ("vn-hanoi", "Hanoi", "VN", 21.0278, 105.8342, "Asia/Ho_Chi_Minh", 0.0, "vi-VN,vi;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("id-jakarta", "Jakarta", "ID", -6.2088, 106.8456, "Asia/Jakarta", 0.0, "id-ID,id;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("ua-kyiv", "Kyiv", "UA", 50.4501, 30.5234, "Europe/Kyiv", 0.0, "uk-UA,uk;q=0.9,ru;q=0.8,en;q=0.7"),
    ("tr-istanbul", "Istanbul", "TR", 41.0082, 28.9784, "Europe/Istanbul", 0.0, "tr-TR,tr;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("ro-bucharest", "Bucharest", "RO", 44.4268, 26.1025, "Europe/Bucharest", 0.0, "ro-RO,ro;q=0.9,en-US;q=0.8,en;q=0.7"),
    ("eg-cairo", "Cairo", "EG", 30.0444, 31.2357, "Africa/Cairo", 0.0, "ar-EG,ar;q=0.9,en-US;q=0.8,en;q=0.7"),
]

# ASN -> (provider, kind); kind "vpn" marks networks best known as commercial VPN exits
HOSTING = {
    16509: ("AWS", "hosting"),
    14618: ("AWS", "hosting"),
    8987: ("AWS", "hosting"),
    396982: ("Google Cloud", "hosting"),
    8075: ("Microsoft Azure", "hosting"),
    14061: ("DigitalOcean", "hosting"),
    16276: ("OVH", "hosting"),
    24940: ("Hetzner", "hosting"),
    213230: ("Hetzner", "hosting"),
    63949: ("Linode", "hosting"),
    20473: ("Vultr", "hosting"),
    31898: ("Oracle Cloud", "hosting"),
    51167: ("Contabo", "hosting"),
    60781: ("Leaseweb", "hosting"),
    28753: ("Leaseweb", "hosting"),
    395954: ("Leaseweb", "hosting"),
    45102: ("Alibaba Cloud", "hosting"),
    9009: ("M247", "vpn"),
    16247: ("M247", "vpn"),
    42973: ("M247", "vpn"),
    212238: ("Datacamp", "vpn"),
    60068: ("Datacamp", "vpn"),
    136787: ("PacketHub", "vpn"),
    62240: ("Clouvider", "vpn"),
}

# never "residential": transit carriers, research, government, big content/cloud networks
NOT_RESIDENTIAL_ASNS = {
    56, 174, 714, 721, 749, 1239, 1299, 2828, 2906, 2914, 3257, 3356, 3491, 3549, 3561, 4323, 5511, 5650,
    6453, 6461, 6762, 6830, 6939, 8220, 12956, 13335, 15169, 16591, 16625, 20940, 32787, 32934, 35994,
    36183, 54113,
}
# consumer ISPs whose registered names would trip NOT_RESIDENTIAL_ORG ("AT&T Enterprises", "Verizon Business")
RESIDENTIAL_ASNS = {209, 701, 6167, 7018, 22394}
NOT_RESIDENTIAL_ORG = re.compile(
    r"universit|college|school|academ|research|education|government|ministry|department|defen[cs]e|"
    r"bank|hosting|host|cloud|data ?cent|datacent|server|colo|amazon|google|microsoft|akamai|cloudflare|"
    r"apple|oracle|ibm|facebook|meta platforms|fastly|zscaler|level 3|cogent|zayo|lumen|hurricane|"
    r"gtt|tata|ntt america|telia carrier|arelion|sparkle|telxius|internet exchange|verisign|salesforce|"
    r"enterprises|business|wholesale|global|backbone|carrier|transit|network information|dod|nic\b|"
    # research and education networks, public bodies, companies and hosters met in the target cities
    r"univers|institut|iteso|fundac|fundaç|ciencia|jisc|surf b\.v|belnet|red\.es|garr|\bswitch\b|forschungsnetz|"
    r"renater|risq|bcnet|asiera|state of|etat de|technology authority|citec|infomaniak|ericsson|nazwa|cyber_folks|"
    r"dimension data|alibaba|inter-exchange|inteliquent|schlumberger|ncr corp|datapipe|gonet|v tal|pulsant|"
    r"wavenet|airbus|wholesail|main one|gateway communications|godaddy|leaseweb|cipherkey|ionos|tencent|"
    r"sita pty|migros|at&t corp|free pro|ims networks|ip worldcom|unified layer|sendgrid|minister|goco tech",
    re.I,
)

RADIUS_KM = 35.0
MAX_NETS_PER_CITY_SCAN = 60000  # reservoir per city and IP version
ISPS_PER_CITY = 3
V4_PER_ISP = 8
V6_PER_ISP = 3
HOSTING_V4_PER_COUNTRY = 4
HOSTING_V6_PER_COUNTRY = 2


def km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 6371.0 * 2 * math.asin(min(1.0, math.sqrt(a)))


def name_of(rec: dict | None, key: str) -> str | None:
    if not rec:
        return None
    v = rec.get(key)
    if isinstance(v, list):
        v = v[0] if v else None
    if not v:
        return None
    return (v.get("names") or {}).get("en")


def scan_cities(city_db: maxminddb.Reader, rng: random.Random) -> dict[str, dict[int, list]]:
    """One pass over the City database: networks within RADIUS_KM of each target city (reservoir-sampled)."""
    by_country: dict[str, list] = defaultdict(list)
    for c in CITIES:
        by_country[c[2]].append(c)
    near_cache: dict[tuple, str | None] = {}
    found: dict[str, dict[int, list]] = {c[0]: {4: [], 6: []} for c in CITIES}
    seen: dict[tuple[str, int], int] = defaultdict(int)
    n = 0
    for net, rec in city_db:
        n += 1
        if n % 2_000_000 == 0:
            print(f"  ... {n:,} City networks scanned", file=sys.stderr)
        cc = (rec.get("country") or {}).get("iso_code")
        targets = by_country.get(cc)
        if not targets:
            continue
        loc = rec.get("location") or {}
        lat, lon = loc.get("latitude"), loc.get("longitude")
        if lat is None or lon is None:
            continue
        key = (cc, lat, lon)
        if key not in near_cache:
            best = None
            for c in targets:
                d = km(lat, lon, c[3], c[4])
                if d <= RADIUS_KM and (best is None or d < best[0]):
                    best = (d, c[0])
            near_cache[key] = best[1] if best else None
        city_key = near_cache[key]
        if city_key is None:
            continue
        v = net.version
        if v == 6 and net.prefixlen > 64:
            continue
        item = (int(net.network_address), net.prefixlen, name_of(rec, "city"), name_of(rec, "subdivisions"))
        k = (city_key, v)
        seen[k] += 1
        bucket = found[city_key][v]
        if len(bucket) < MAX_NETS_PER_CITY_SCAN:
            bucket.append(item)
        else:
            j = rng.randrange(seen[k])
            if j < MAX_NETS_PER_CITY_SCAN:
                bucket[j] = item
    print(f"  {n:,} City networks scanned", file=sys.stderr)
    return found


_tzf = None


def timezone_at(lat: float | None, lon: float | None) -> str:
    """IANA zone at a point (``timezonefinder``, offline); "UTC" when unknown."""
    global _tzf
    if lat is None or lon is None:
        return "UTC"
    if _tzf is None:
        from timezonefinder import TimezoneFinder

        _tzf = TimezoneFinder()
    return _tzf.timezone_at(lat=lat, lng=lon) or "UTC"


def intersect(asn_db: maxminddb.Reader, version: int, start: int, plen: int):
    """(block start, block prefix, asn, org) of the City network starting at ``start`` and its ASN network."""
    addr = ipaddress.IPv4Address(start) if version == 4 else ipaddress.IPv6Address(start)
    rec, aplen = asn_db.get_with_prefix_len(addr)
    if not rec or not rec.get("autonomous_system_number"):
        return None
    return start, max(plen, aplen), int(rec["autonomous_system_number"]), rec.get("autonomous_system_organization") or ""


def cidr(version: int, start: int, plen: int) -> str:
    net = ipaddress.ip_network((start, plen)) if version == 4 else ipaddress.IPv6Network((start, plen))
    return str(net)


def pick_spread(items: list, k: int, rng: random.Random, key) -> list:
    """Up to ``k`` items, preferring distinct ``key`` values (e.g. distinct /16s), deterministically."""
    items = sorted(items)
    rng.shuffle(items)
    out, used = [], set()
    for it in items:
        if key(it) not in used:
            out.append(it)
            used.add(key(it))
        if len(out) == k:
            return sorted(out)
    for it in items:
        if it not in out:
            out.append(it)
        if len(out) == k:
            break
    return sorted(out)


def residential(found, asn_db, rng: random.Random) -> dict[str, list]:
    out = {}
    for c in CITIES:
        key = c[0]
        per_asn: dict[int, dict] = {}
        for v in (4, 6):
            for start, plen, cname, region in found[key][v]:
                hit = intersect(asn_db, v, start, plen)
                if hit is None:
                    continue
                bstart, bplen, asn, org = hit
                if asn in HOSTING or asn in NOT_RESIDENTIAL_ASNS:
                    continue
                if asn not in RESIDENTIAL_ASNS and NOT_RESIDENTIAL_ORG.search(org):
                    continue
                if v == 4 and bplen > 29:  # too small to pick several addresses from
                    continue
                if v == 6 and bplen > 64:
                    continue
                a = per_asn.setdefault(asn, {"asn": asn, "org": org, "addresses": 0, 4: [], 6: []})
                if v == 4:
                    a["addresses"] += 1 << (32 - bplen)
                a[v].append((bstart, bplen, cname or c[1], region or ""))
        ranked = sorted(per_asn.values(), key=lambda a: (-a["addresses"], a["asn"]))
        isps = []
        for a in ranked:
            if len(a[4]) < 3:
                continue
            v4 = pick_spread(a[4], V4_PER_ISP, rng, key=lambda it: it[0] >> 16)
            v6 = pick_spread(a[6], V6_PER_ISP, rng, key=lambda it: it[0] >> 96) if a[6] else []
            isps.append(
                {
                    "asn": a["asn"],
                    "org": a["org"],
                    "v4": [[cidr(4, s, p), cn, rg] for s, p, cn, rg in v4],
                    "v6": [[cidr(6, s, p), cn, rg] for s, p, cn, rg in v6],
                }
            )
            if len(isps) == ISPS_PER_CITY:
                break
        out[key] = isps
        print(f"  {key}: " + ", ".join(f"AS{i['asn']} {i['org']} ({len(i['v4'])}+{len(i['v6'])})" for i in isps), file=sys.stderr)
    return out


def hosting(asn_db, city_db, rng: random.Random) -> list[dict]:
    groups: dict[tuple, dict] = {}
    for net, rec in asn_db:
        asn = rec.get("autonomous_system_number")
        if asn not in HOSTING:
            continue
        if net.version == 6 and net.prefixlen > 64:
            continue
        crec, cplen = city_db.get_with_prefix_len(net.network_address)
        if not crec:
            continue
        cc = (crec.get("country") or {}).get("iso_code")
        if not cc:
            continue
        plen = max(net.prefixlen, cplen)
        if net.version == 4 and plen > 29:
            continue
        if net.version == 6 and plen > 64:
            continue
        provider, kind = HOSTING[asn]
        loc = crec.get("location") or {}
        g = groups.setdefault(
            (provider, cc),
            {
                "provider": provider,
                "kind": kind,
                "country": cc,
                "country_name": name_of(crec, "country"),
                "tz": timezone_at(loc.get("latitude"), loc.get("longitude")),
                4: [],
                6: [],
            },
        )
        g[net.version].append(
            (int(net.network_address), plen, asn, rec.get("autonomous_system_organization") or "",
             name_of(crec, "city") or "", name_of(crec, "subdivisions") or "")
        )
    out = []
    for (provider, cc), g in sorted(groups.items()):
        if len(g[4]) < 2:
            continue
        v4 = pick_spread(g[4], HOSTING_V4_PER_COUNTRY, rng, key=lambda it: it[0] >> 16)
        v6 = pick_spread(g[6], HOSTING_V6_PER_COUNTRY, rng, key=lambda it: it[0] >> 96) if g[6] else []
        out.append(
            {
                "provider": provider,
                "kind": g["kind"],
                "country": cc,
                "country_name": g["country_name"],
                "tz": g["tz"],
                "v4": [[cidr(4, s, p), asn, org, cn, rg] for s, p, asn, org, cn, rg in v4],
                "v6": [[cidr(6, s, p), asn, org, cn, rg] for s, p, asn, org, cn, rg in v6],
            }
        )
    print(f"  hosting: {len(out)} provider/country groups", file=sys.stderr)
    return out


def verify(catalogue: dict, city_db, asn_db, rng: random.Random) -> None:
    """Every block: random addresses inside resolve to the recorded city name and ASN."""
    bad = 0

    def check(block: str, asn: int, city: str) -> None:
        nonlocal bad
        net = ipaddress.ip_network(block)
        for _ in range(3):
            addr = net.network_address + rng.randrange(net.num_addresses)
            crec = city_db.get(addr)
            arec = asn_db.get(addr)
            if (
                not crec
                or not arec
                or arec.get("autonomous_system_number") != asn
                or (name_of(crec, "city") or "") != city
            ):
                bad += 1
                print(f"  MISMATCH {block} {addr}: {crec and name_of(crec, 'city')} AS{arec and arec.get('autonomous_system_number')}", file=sys.stderr)
                return

    for c in catalogue["cities"]:
        for isp in c["isps"]:
            for block, cname, _ in isp["v4"] + isp["v6"]:
                check(block, isp["asn"], cname)
    for h in catalogue["hosting"]:
        for block, asn, _, cname, _ in h["v4"] + h["v6"]:
            check(block, asn, cname)
    if bad:
        raise SystemExit(f"{bad} blocks do not resolve as recorded")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--city", help="DB-IP City Lite (or GeoLite2-City) .mmdb")
    ap.add_argument("--asn", help="DB-IP ASN Lite (or GeoLite2-ASN) .mmdb")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--seed", type=int, default=20260901)
    args = ap.parse_args(argv)
    if not (args.city and args.asn):
        sys.path.insert(0, str(ROOT))
        from ingest.geo import default_database_paths

        city_path, asn_path = default_database_paths()
        args.city, args.asn = args.city or str(city_path), args.asn or str(asn_path)
    city_db = maxminddb.open_database(args.city)
    asn_db = maxminddb.open_database(args.asn)
    rng = random.Random(args.seed)
    print("scanning the City database ...", file=sys.stderr)
    found = scan_cities(city_db, rng)
    print("choosing residential networks ...", file=sys.stderr)
    isps = residential(found, asn_db, rng)
    print("choosing hosting and VPN networks ...", file=sys.stderr)
    host = hosting(asn_db, city_db, rng)
    cities = []
    for key, name, cc, lat, lon, tz, weight, lang in CITIES:
        if not isps[key]:
            print(f"  {key}: no residential network found; left out", file=sys.stderr)
            continue
        first = isps[key][0]["v4"][0][0]
        crec = city_db.get(ipaddress.ip_network(first).network_address)
        cities.append(
            {
                "key": key,
                "name": name,
                "country": cc,
                "country_name": name_of(crec, "country"),
                "lat": lat,
                "lon": lon,
                "tz": tz,
                "weight": weight,
                "lang": lang,
                "isps": isps[key],
            }
        )
    cm, am = city_db.metadata(), asn_db.metadata()
    catalogue = {
        "about": (
            "Network catalogue of riskgate synth, derived from DB-IP IP to City Lite and IP to ASN Lite "
            "(https://db-ip.com), licensed CC BY 4.0. Rebuild with bench/build_synth_networks.py."
        ),
        "attribution": "IP Geolocation by DB-IP (https://db-ip.com), CC BY 4.0",
        "databases": {
            "city": {"type": cm.database_type, "build_epoch": cm.build_epoch},
            "asn": {"type": am.database_type, "build_epoch": am.build_epoch},
        },
        "cities": cities,
        "hosting": host,
    }
    print("verifying ...", file=sys.stderr)
    verify(catalogue, city_db, asn_db, rng)
    data = json.dumps(catalogue, ensure_ascii=False, separators=(",", ":"), sort_keys=False).encode("utf-8")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, compresslevel=9, filename="") as gz:
        gz.write(data)
    print(
        f"wrote {out}: {len(cities)} cities in {len({c['country'] for c in cities})} countries, "
        f"{len(host)} hosting groups, {out.stat().st_size:,} bytes",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
