"""Maintainer script: rebuild ``country_names.csv``, the English country names riskgate maps to ISO codes.

Not imported by riskgate. Run it when the bundled GeoIP database or tzdata changes::

    python ingest/data/build_country_names.py ingest/data/country_names.csv

Why: a source may give its country as a name (Cognito's user-activity export:
``"country": "United States"``), while riskgate's features and reports key on
the ISO code. The names come from

* the default GeoIP city database (DB-IP IP to City Lite, CC BY 4.0: the
  English name of every country one of its networks resolves to, probed
  every /16 of IPv4 and every /20 of 2000::/4; the names Cognito's export uses
  follow the same GeoIP naming), and
* tzdata's ``iso3166.tab`` (public domain: every ISO 3166-1 code with a
  name), for the codes no probe reached and as an alternative spelling,
* plus the few official long forms below that exports also write.

One ``iso,name`` row per distinct name (a code may have several names; a name
names one code). Lookups compare names case-insensitively.
"""

from __future__ import annotations

import csv
import ipaddress
import sys
from pathlib import Path

ISO3166_TAB = Path("/usr/share/zoneinfo/iso3166.tab")
#: long or older forms some exports write (code, name)
EXTRA = (
    ("US", "United States of America"), ("GB", "Great Britain"), ("RU", "Russian Federation"),
    ("KR", "Korea, Republic of"), ("KR", "Republic of Korea"), ("KP", "North Korea"),
    ("KP", "Korea, Democratic People's Republic of"), ("VN", "Viet Nam"), ("CZ", "Czech Republic"),
    ("TR", "Turkey"), ("TR", "Türkiye"), ("IR", "Iran, Islamic Republic of"), ("SY", "Syrian Arab Republic"),
    ("LA", "Lao People's Democratic Republic"), ("MD", "Moldova, Republic of"), ("TZ", "Tanzania, United Republic of"),
    ("BO", "Bolivia, Plurinational State of"), ("VE", "Venezuela, Bolivarian Republic of"), ("TW", "Taiwan, Province of China"),
    ("CD", "Congo, The Democratic Republic of the"), ("CD", "DR Congo"), ("CG", "Republic of the Congo"),
    ("CI", "Côte d'Ivoire"), ("CI", "Cote d'Ivoire"), ("MK", "North Macedonia"), ("SZ", "Eswatini"),
    ("PS", "Palestine, State of"), ("FM", "Micronesia, Federated States of"), ("HK", "Hong Kong SAR"),
    ("MO", "Macao"), ("MO", "Macau"), ("NL", "The Netherlands"), ("AE", "UAE"), ("US", "USA"), ("GB", "UK"),
)


def geoip_names() -> dict[str, str]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import maxminddb

    from ingest.geo import resolve_paths

    city, _asn = resolve_paths(None, None)
    out: dict[str, str] = {}
    with maxminddb.open_database(city) as reader:
        probes = [ipaddress.IPv4Address(a + 1) for a in range(0, 2**32, 2**16)]
        probes += [ipaddress.IPv6Address((0x2000 << 112) + (k << 108) + 1) for k in range(2**12)]
        for ip in probes:
            rec = reader.get(str(ip))
            country = (rec or {}).get("country") or {}
            iso, name = country.get("iso_code"), (country.get("names") or {}).get("en")
            if iso and name:
                out.setdefault(iso, name)
    return out


def tz_names() -> dict[str, str]:
    out = {}
    for line in ISO3166_TAB.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            code, name = line.split("\t", 1)
            out[code] = name.strip()
    return out


def main(dest: str) -> None:
    rows: dict[str, str] = {}  # lower-case name -> (code, name)
    pairs = [*sorted(geoip_names().items()), *sorted(tz_names().items()), *EXTRA]
    for code, name in pairs:
        key = name.casefold()
        if key in rows and rows[key][0] != code:
            raise SystemExit(f"{name!r} names both {rows[key][0]} and {code}")
        rows.setdefault(key, (code, name))
    with open(dest, "w", encoding="utf-8", newline="") as fh:
        fh.write("# English country names -> ISO 3166-1 alpha-2 (ingest/data/build_country_names.py builds it:\n"
                 "# DB-IP Lite names, CC BY 4.0, https://db-ip.com; tzdata iso3166.tab, public domain)\n")
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["iso", "name"])
        for code, name in sorted(rows.values()):
            w.writerow([code, name])
    print(f"wrote {len(rows)} names of {len({c for c, _ in rows.values()})} codes to {dest}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
