"""Small real MaxMind DB files, built with mmdb-writer, with known answers (IPv4 and IPv6)."""

from __future__ import annotations

from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet

# network -> (country iso, country name, region, city, lat, lon, time zone or None, asn, org)
NETWORKS = {
    "81.2.69.0/24": ("GB", "United Kingdom", "England", "London", 51.5142, -0.0931, "Europe/London", 20712, "Andrews & Arnold Ltd"),
    "203.0.113.0/24": ("AU", "Australia", "New South Wales", "Sydney", -33.8688, 151.209, None, 64500, "Example AU Net"),
    "198.51.100.0/24": ("US", "United States", "Washington", "Seattle", 47.6062, -122.3321, "America/Los_Angeles", 64501, "Example Hosting Inc"),
    "2001:db8:1::/48": ("DE", "Germany", "Berlin", "Berlin", 52.52, 13.405, "Europe/Berlin", 64502, "Example DE v6"),
}


def build(tmp: Path, *, city_type: str = "GeoLite2-City", asn_type: str = "GeoLite2-ASN") -> tuple[Path, Path]:
    city = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=city_type, languages=["en"],
                      description="riskgate test city")
    asn = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=asn_type, languages=["en"],
                     description="riskgate test asn")
    for net, (iso, cname, region, cityname, lat, lon, tz, num, org) in NETWORKS.items():
        loc = {"latitude": lat, "longitude": lon}
        if tz:
            loc["time_zone"] = tz
        city.insert_network(IPSet([net]), {
            "country": {"iso_code": iso, "names": {"en": cname}},
            "subdivisions": [{"names": {"en": region}}],
            "city": {"names": {"en": cityname}},
            "location": loc,
        })
        asn.insert_network(IPSet([net]), {"autonomous_system_number": num, "autonomous_system_organization": org})
    city_path, asn_path = tmp / "test-city.mmdb", tmp / "test-asn.mmdb"
    city.to_db_file(str(city_path))
    asn.to_db_file(str(asn_path))
    return city_path, asn_path
