"""riskgate synth: reproducible, parseable in every format, fully labelled, realistic, resolvable."""

from __future__ import annotations

import bisect
import csv
import gzip
import ipaddress
import json
import math
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import date, datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from typer.testing import CliRunner

import risk.store
from cli import app
from ingest.errors import ConfigurationError
from ingest.synth import ATTACK_TYPES, SynthConfig, agents, catalogue, synthesize, users_for_events
from ingest.synth.writers import RBA_HEADER, TABULAR_COLUMNS

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
JAVA_DATE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d UTC \d{4}$")
EVENT_TYPES = {"SignIn", "SignUp", "ForgotPassword", "PasswordChange", "ResendCode"}
PRIVATE = ipaddress.ip_network("10.0.0.0/8")


def geo_paths() -> tuple[str, str] | None:
    try:
        from ingest.geo import default_database_paths

        city, asn = default_database_paths()
        return str(city), str(asn)
    except Exception:  # noqa: BLE001 - fall back to the decompressed copies, else skip
        if os.path.exists("/tmp/geo/dbip-city-lite.mmdb") and os.path.exists("/tmp/geo/dbip-asn-lite.mmdb"):
            return "/tmp/geo/dbip-city-lite.mmdb", "/tmp/geo/dbip-asn-lite.mmdb"
    return None


@pytest.fixture(scope="module")
def readers():
    paths = geo_paths()
    if paths is None:
        pytest.skip("the default GeoIP databases are not available")
    import maxminddb

    city, asn = maxminddb.open_database(paths[0]), maxminddb.open_database(paths[1])
    yield city, asn
    city.close()
    asn.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """One riskgate-jsonl data set of 250 users over 21 days, parsed."""
    d = tmp_path_factory.mktemp("synth")
    out = d / "synth.jsonl"
    report = synthesize(SynthConfig(users=250, days=21, seed=11), "riskgate-jsonl", out)
    events = [json.loads(line) for line in out.read_text().splitlines()]
    labels = list(csv.DictReader(open(d / "synth.labels.csv", newline="")))
    users = json.loads((d / "synth.users.json").read_text())["Users"]
    return {"dir": d, "report": report, "events": events, "labels": labels, "users": users}


def client_ip(e: dict) -> str:
    """The end user's address: IpAddress, or X-Forwarded-For's first entry when IpAddress is the proxy's."""
    ctx = e["ContextData"]
    ip = ctx["IpAddress"]
    if ipaddress.ip_address(ip) in PRIVATE:
        xff = next(h["headerValue"] for h in ctx["HttpHeaders"] if h["headerName"] == "X-Forwarded-For")
        ip = xff.split(",")[0].strip()
    return ip


def label_map(labels) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for r in labels:
        assert r["source"] == "synth"
        out[r["event_id"]][r["label"]] = r["value"]
    return out


def km(a, b) -> float:
    p1, p2 = math.radians(a[0]), math.radians(b[0])
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(b[1] - a[1]) / 2) ** 2
    return 12742 * math.asin(math.sqrt(h))


# -- reproducibility ------------------------------------------------------------------


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def test_same_seed_writes_the_same_bytes_and_another_seed_does_not(tmp_path):
    cfg = SynthConfig(users=80, days=6, seed=3)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        synthesize(cfg, "riskgate-jsonl", tmp_path / name / "s.jsonl.gz")
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert set(a) == {"s.jsonl.gz", "s.users.json", "s.labels.csv"}
    assert a == b
    (tmp_path / "c").mkdir()
    synthesize(SynthConfig(users=80, days=6, seed=4), "riskgate-jsonl", tmp_path / "c" / "s.jsonl.gz")
    assert _files(tmp_path / "c")["s.jsonl.gz"] != a["s.jsonl.gz"]
    assert gzip.decompress(a["s.jsonl.gz"]).decode().count("\n") > 100


def test_same_seed_same_bytes_in_another_process(tmp_path):
    """No dependence on Python's per-process hash seed (set/dict iteration of strings)."""
    here = tmp_path / "here.jsonl"
    synthesize(SynthConfig(users=60, days=4, seed=9), "cognito-user-activity", here)
    there = tmp_path / "there.jsonl"
    env = dict(os.environ, PYTHONHASHSEED="12345")
    code = (
        "from ingest.synth import SynthConfig, synthesize;"
        f"synthesize(SynthConfig(users=60, days=4, seed=9), 'cognito-user-activity', {str(there)!r})"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=120)
    assert here.read_bytes() == there.read_bytes()
    assert (tmp_path / "here.labels.csv").read_bytes().replace(b"here", b"") == \
        (tmp_path / "there.labels.csv").read_bytes().replace(b"there", b"")


# -- the riskgate-jsonl shape -------------------------------------------------------------


def test_jsonl_events_have_the_documented_shape(data):
    events = data["events"]
    assert len(events) == data["report"].events > 2000
    times = [e["CreationDate"] for e in events]
    assert times == sorted(times), "events are written in time order"
    assert len({e["EventId"] for e in events}) == len(events)
    proxied = sdk = 0
    for e in events:
        assert re.fullmatch(r"[\w+-]{1,50}", e["EventId"])
        assert ISO_MS.match(e["CreationDate"])
        assert e["EventType"] in EVENT_TYPES
        assert e["EventResponse"] in ("Pass", "Fail")
        assert e["UserPoolId"] == "us-east-1_Rg5ynTh01"
        for c in e.get("ChallengeResponses", []):
            assert c["ChallengeName"] in ("Password", "Mfa") and c["ChallengeResponse"] in ("Success", "Failure")
        ctx = e["ContextData"]
        assert ctx["ServerName"].endswith(".example.com") and ctx["ServerPath"].startswith("/")
        names = [h["headerName"] for h in ctx["HttpHeaders"]]
        assert "User-Agent" in names and "Accept" in names
        ua = next(h["headerValue"] for h in ctx["HttpHeaders"] if h["headerName"] == "User-Agent")
        if ua.startswith("Mozilla/5.0") and "compatible; MSIE" not in ua:
            assert "Accept-Language" in names and "Accept-Encoding" in names
        if ipaddress.ip_address(ctx["IpAddress"]) in PRIVATE:
            proxied += 1
            assert names[-2:] == ["X-Forwarded-For", "X-Forwarded-Proto"]
            assert ctx["ServerName"] == "portal.example.com"
        else:
            assert "X-Forwarded-For" not in names
        if "EncodedData" in ctx:
            sdk += 1
            assert ctx["ServerName"] in ("app.example.com", "api.example.com")
        assert isinstance(e["RoundTripTimeMs"], int) and 0 < e["RoundTripTimeMs"] < 5000
        assert "Labels" not in e
    assert 0.01 < proxied / len(events) < 0.2
    assert 0.2 < sdk / len(events) < 0.8


def test_a_device_keeps_its_agent_language_and_fingerprint(data):
    by_fp = defaultdict(set)
    for e in data["events"]:
        ctx = e["ContextData"]
        if "EncodedData" in ctx:
            h = {x["headerName"]: x["headerValue"] for x in ctx["HttpHeaders"]}
            # the browser version moves with the calendar; family and platform do not
            ua = re.sub(r"\d+(\.\d+)*", "N", h["User-Agent"])
            by_fp[ctx["EncodedData"]].add((e["Username"], ua, h.get("Accept-Language")))
    legit = [v for v in by_fp.values() if len(v) == 1]
    assert len(legit) >= 0.97 * len(by_fp)


def test_inline_labels_match_the_labels_file(tmp_path):
    out = tmp_path / "i.jsonl"
    synthesize(SynthConfig(users=220, days=3, seed=2, inline_labels=True), "riskgate-jsonl", out)
    lm = label_map(csv.DictReader(open(tmp_path / "i.labels.csv", newline="")))
    for line in out.read_text().splitlines():
        e = json.loads(line)
        inline = {k: (json.dumps(v) if isinstance(v, bool) else v) for k, v in e["Labels"].items()}
        assert inline == lm[e["EventId"]]


# -- labels ---------------------------------------------------------------------------------------


def test_labels_cover_every_event_and_only_attacks_have_a_type(data):
    lm = label_map(data["labels"])
    ids = {e["EventId"] for e in data["events"]}
    assert set(lm) == ids
    for e in data["events"]:
        lab = lm[e["EventId"]]
        assert lab["is_account_takeover"] in ("true", "false")
        assert lab["is_attack_ip"] in ("true", "false")
        if "attack_type" in lab:
            assert lab["attack_type"] in ATTACK_TYPES
            assert lab["is_attack_ip"] == "true"
        else:
            assert lab["is_account_takeover"] == "false"
        if lab["is_account_takeover"] == "true":
            assert e["EventResponse"] == "Pass" and e["EventType"] == "SignIn"
    assert len(data["labels"]) == data["report"].labels


def test_every_attack_type_occurs_and_attacks_are_a_few_percent(data):
    lm = label_map(data["labels"])
    types = Counter(v["attack_type"] for v in lm.values() if "attack_type" in v)
    assert set(types) == set(ATTACK_TYPES)
    share = sum(types.values()) / len(data["events"])
    assert 0.005 < share < 0.08
    takeovers = Counter(v["attack_type"] for v in lm.values() if v["is_account_takeover"] == "true")
    for t in ("naive_takeover", "vpn_takeover", "targeted_takeover", "impossible_travel"):
        assert takeovers[t] >= 1
    assert data["report"].attacks["credential_stuffing"]["events"] == types["credential_stuffing"]


def test_no_attacks_means_no_attack_labels(tmp_path):
    r = synthesize(SynthConfig(users=50, days=3, seed=1, attacks=False), "riskgate-jsonl", tmp_path / "n.jsonl")
    labels = list(csv.DictReader(open(tmp_path / "n.labels.csv", newline="")))
    assert r.attacks == {} and r.events > 0
    assert {x["label"] for x in labels} == {"is_account_takeover", "is_attack_ip"}
    assert {x["value"] for x in labels} == {"false"}


# -- addresses --------------------------------------------------------------------------------------


def test_every_address_resolves_in_the_default_geoip_databases(data, readers):
    city, asn = readers
    ips = {client_ip(e) for e in data["events"]}
    assert any(":" in ip for ip in ips), "some users are on IPv6"
    for ip in ips:
        c, a = city.get(ip), asn.get(ip)
        assert c and c.get("country", {}).get("iso_code"), ip
        assert a and a.get("autonomous_system_number"), ip


def test_every_catalogue_block_resolves_to_its_recorded_city_and_asn(readers):
    city, asn = readers
    cat = catalogue.load()
    assert len({c.country for c in cat.cities if c.weight > 0}) >= 25
    assert len([c for c in cat.cities if c.weight > 0]) >= 60
    for i, block in enumerate(cat.cidr):
        net = ipaddress.ip_network(block)
        for addr in (net.network_address, net.network_address + net.num_addresses // 2, net.broadcast_address):
            a = asn.get(addr)
            c = city.get(addr)
            assert a["autonomous_system_number"] == int(cat.asn[i]), block
            assert c["country"]["iso_code"] == cat.country[i], block
            assert c["city"]["names"]["en"] == cat.city_name[i], block


def test_attacks_look_like_their_type(data, readers):
    city_db, asn_db = readers
    cat = catalogue.load()
    hosting_asns = {int(cat.asn[i]) for i in range(cat.n) if cat.kind[i] > 0}
    lm = label_map(data["labels"])
    events = data["events"]
    by_type = defaultdict(list)
    for e in events:
        t = lm[e["EventId"]].get("attack_type")
        if t:
            by_type[t].append(e)
    home = {}  # the user's most common country in legitimate sign-ins
    per_user = defaultdict(Counter)
    for e in events:
        if "attack_type" not in lm[e["EventId"]]:
            per_user[e["Username"]][city_db.get(client_ip(e))["country"]["iso_code"]] += 1
    for u, c in per_user.items():
        home[u] = c.most_common(1)[0][0]

    stuffing = by_type["credential_stuffing"]
    assert len({e["Username"] for e in stuffing}) >= 10
    assert len({client_ip(e) for e in stuffing}) <= 12
    assert sum(e["EventResponse"] == "Fail" for e in stuffing) >= 0.9 * len(stuffing)

    spray = by_type["password_spray"]
    assert len({client_ip(e) for e in spray}) <= 3 and len({e["Username"] for e in spray}) >= 5

    brute = by_type["brute_force"]
    assert len({e["Username"] for e in brute}) == data["report"].attacks["brute_force"]["incidents"]

    def ato(t):
        return [e for e in by_type[t] if lm[e["EventId"]]["is_account_takeover"] == "true"]

    for e in ato("vpn_takeover"):
        assert asn_db.get(client_ip(e))["autonomous_system_number"] in hosting_asns
    for e in ato("targeted_takeover"):
        ip = client_ip(e)
        assert asn_db.get(ip)["autonomous_system_number"] not in hosting_asns
        assert city_db.get(ip)["country"]["iso_code"] == home.get(e["Username"], city_db.get(ip)["country"]["iso_code"])
    for e in ato("naive_takeover"):
        ua = next(h["headerValue"] for h in e["ContextData"]["HttpHeaders"] if h["headerName"] == "User-Agent")
        assert any(k in ua for k in ("python-requests", "curl", "Go-http", "okhttp", "MSIE", "Trident", "Headless",
                                     "Chrome/74"))
    for e in ato("impossible_travel"):
        t1 = datetime.fromisoformat(e["CreationDate"].replace("Z", "+00:00"))
        earlier = [x for x in events if x["Username"] == e["Username"] and x["EventResponse"] == "Pass"
                   and x["CreationDate"] < e["CreationDate"]]
        prev = earlier[-1]
        t0 = datetime.fromisoformat(prev["CreationDate"].replace("Z", "+00:00"))
        loc0 = city_db.get(client_ip(prev))["location"]
        loc1 = city_db.get(client_ip(e))["location"]
        dist = km((loc0["latitude"], loc0["longitude"]), (loc1["latitude"], loc1["longitude"]))
        hours = (t1 - t0).total_seconds() / 3600
        assert dist > 4000 and dist / max(hours, 1e-6) > 1000, (dist, hours)


# -- behaviour --------------------------------------------------------------------------------------------


def _block_index(cat):
    """Sorted IPv4/IPv6 block ranges of the catalogue, for finding an address's block."""
    ranges = []
    for i, b in enumerate(cat.cidr):
        n = ipaddress.ip_network(b)
        ranges.append((n.version, int(n.network_address), int(n.broadcast_address), i))
    ranges.sort()
    return ranges, [(r[0], r[1]) for r in ranges]


def test_legitimate_sign_ins_happen_in_the_day_of_the_users_time_zone(data):
    cat = catalogue.load()
    ranges, starts = _block_index(cat)
    lm = label_map(data["labels"])
    hours = Counter()
    for e in data["events"]:
        if e["EventType"] != "SignIn" or "attack_type" in lm[e["EventId"]]:
            continue
        ip = ipaddress.ip_address(client_ip(e))
        k = bisect.bisect_right(starts, (ip.version, int(ip))) - 1
        v, lo, hi, i = ranges[k]
        assert v == ip.version and lo <= int(ip) <= hi
        t = datetime.fromisoformat(e["CreationDate"].replace("Z", "+00:00"))
        hours[t.astimezone(ZoneInfo(cat.tz[i])).hour] += 1
    total = sum(hours.values())
    day = sum(n for h, n in hours.items() if 7 <= h < 23)
    assert day / total > 0.85
    assert hours[3] < hours[20] / 5


def test_users_differ_in_cadence(data):
    lm = label_map(data["labels"])
    days = defaultdict(set)
    for e in data["events"]:
        if e["EventType"] == "SignIn" and "attack_type" not in lm[e["EventId"]]:
            days[e["Username"]].add(e["CreationDate"][:10])
    counts = [len(v) for v in days.values()]
    assert sum(c >= 11 for c in counts) >= 0.15 * len(counts), "some users sign in most days"
    assert sum(c <= 4 for c in counts) >= 0.15 * len(counts), "some users rarely"


def test_typos_are_followed_by_a_success_shortly_after(data):
    lm = label_map(data["labels"])
    by_user = defaultdict(list)
    for e in data["events"]:
        if "attack_type" not in lm[e["EventId"]]:
            by_user[e["Username"]].append(e)
    fails = followed = 0
    for evs in by_user.values():
        for a, b in zip(evs, evs[1:]):
            if a["EventType"] == "SignIn" and a["EventResponse"] == "Fail":
                fails += 1
                ta = datetime.fromisoformat(a["CreationDate"].replace("Z", "+00:00"))
                tb = datetime.fromisoformat(b["CreationDate"].replace("Z", "+00:00"))
                followed += (tb - ta).total_seconds() < 20 * 60
    assert fails > 30 and followed / fails > 0.9


def test_mfa_share_is_near_thirty_percent_and_mfa_users_answer_mfa(tmp_path, data):
    synthesize(SynthConfig(users=3000, days=1, seed=5), "riskgate-jsonl", tmp_path / "m.jsonl")
    users = json.loads((tmp_path / "m.users.json").read_text())["Users"]
    share = sum(bool(u["UserMFASettingList"]) for u in users) / len(users)
    assert 0.26 < share < 0.34
    kinds = Counter(m for u in users for m in u["UserMFASettingList"])
    assert kinds["SOFTWARE_TOKEN_MFA"] > kinds["SMS_MFA"] > 0
    for u in users:
        if "SMS_MFA" in u["UserMFASettingList"]:
            assert u["MFAOptions"] == [{"DeliveryMedium": "SMS", "AttributeName": "phone_number"}]
    mfa = {u["Username"] for u in data["users"] if u["UserMFASettingList"]}
    lm = label_map(data["labels"])
    for e in data["events"]:
        if e["EventType"] == "SignIn" and e["EventResponse"] == "Pass" and "attack_type" not in lm[e["EventId"]]:
            names = [c["ChallengeName"] for c in e["ChallengeResponses"]]
            first_sign_in = names == ["Password"] and e["Username"] in mfa  # right after sign-up, before enrolment
            assert ("Mfa" in names) == (e["Username"] in mfa) or first_sign_in


def test_users_file_is_list_users_output(data):
    users = data["users"]
    assert len(users) == 250
    statuses = Counter(u["UserStatus"] for u in users)
    assert statuses["CONFIRMED"] > 200
    in_events = {e["Username"] for e in data["events"]}
    names = {u["Username"] for u in users}
    assert in_events <= names
    for u in users:
        attrs = {a["Name"]: a["Value"] for a in u["Attributes"]}
        assert re.fullmatch(r"[0-9a-f-]{36}", attrs["sub"]) and attrs["email"].endswith(
            ("@example.com", "@example.org", "@example.net"))
        datetime.fromisoformat(u["UserCreateDate"])
        assert isinstance(u["Enabled"], bool)
        if u["UserMFASettingList"]:
            assert u["PreferredMfaSetting"] in u["UserMFASettingList"]
    subs = {e["Username"]: e["UserSub"] for e in data["events"]}
    by_name = {u["Username"]: {a["Name"]: a["Value"] for a in u["Attributes"]}["sub"] for u in users}
    assert all(by_name[n] == s for n, s in subs.items())


def test_browser_versions_follow_the_calendar():
    def day(y, m, d):
        return (date(y, m, d) - date(1970, 1, 1)).days

    assert agents.chrome_major(day(2025, 1, 20)) == 132
    assert agents.chrome_major(day(2025, 6, 1)) == 137
    assert agents.safari_version(day(2024, 10, 1))[0] == 18
    assert agents.safari_version(day(2025, 10, 1))[0] == 26
    chrome = agents.TEMPLATES[agents.TEMPLATE_INDEX["chrome-win"]]
    assert "Chrome/137.0.0.0" in chrome.render(day(2025, 6, 1))
    assert "Chrome/136.0.0.0" in chrome.render(day(2025, 6, 1), lag=1)
    assert agents.device_name(chrome.render(day(2025, 6, 1))) == "Chrome 137, Windows 10"


# -- every format ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["riskgate-jsonl", "cognito-user-activity", "cognito-auth-events", "rba-csv", "csv",
                                 "parquet"])
def test_every_format_is_written_parseable_and_labelled(tmp_path, fmt):
    out = tmp_path / {"cognito-auth-events": "ae", "rba-csv": "r.csv", "csv": "g.csv", "parquet": "p.parquet",
                      "cognito-user-activity": "ua.jsonl"}.get(fmt, "a.jsonl")
    r = synthesize(SynthConfig(users=60, days=4, seed=8), fmt, out)
    stem = out if fmt == "cognito-auth-events" else out.with_suffix("")
    labels = label_map(csv.DictReader(open(f"{stem}.labels.csv", newline="")))
    users = json.loads(Path(f"{stem}.users.json").read_text())["Users"]
    assert len(users) == 60
    ids: list[str] = []
    if fmt == "riskgate-jsonl":
        ids = [json.loads(x)["EventId"] for x in out.read_text().splitlines()]
    elif fmt == "cognito-user-activity":
        for line in out.read_text().splitlines():
            d = json.loads(line)
            assert d["eventSource"] == "USER_ACTIVITY" and d["eventTimestamp"].isdigit()
            m = d["message"]
            assert all(isinstance(v, str) for k, v in m.items() if k != "challenges")
            assert JAVA_DATE.match(m["creationDate"])
            when = datetime.strptime(m["creationDate"], "%a %b %d %H:%M:%S UTC %Y").replace(tzinfo=timezone.utc)
            assert abs(when.timestamp() * 1000 - int(d["eventTimestamp"])) < 1000
            assert m["hasContextData"] == "true" and m["country"] and re.match(r".+ \d+|Other", m["deviceName"])
            ids.append(m["eventId"])
    elif fmt == "cognito-auth-events":
        files = sorted(out.iterdir())
        assert files and all(f.suffix == ".json" for f in files)
        names = {u["Username"] for u in users}
        for f in files:
            assert f.stem in names
            doc = json.loads(f.read_text())
            evs = doc["AuthEvents"]
            dates = [datetime.fromisoformat(e["CreationDate"]) for e in evs]
            assert dates == sorted(dates, reverse=True), "newest first"
            for e in evs:
                assert set(e["EventContextData"]) == {"IpAddress", "DeviceName", "Timezone", "City", "Country"}
                assert re.fullmatch(r"[+-]\d\d:\d\d", e["EventContextData"]["Timezone"])
                assert e["EventRisk"]["RiskDecision"] == "NoRisk"
                ids.append(e["EventId"])
    elif fmt == "rba-csv":
        with open(out, newline="") as fh:
            assert fh.readline().strip() == RBA_HEADER
        rows = list(csv.DictReader(open(out, newline="")))
        assert [int(x["index"]) for x in rows] == list(range(len(rows)))
        rba_names = {u["Username"] for u in users}
        for x in rows:
            assert x["User ID"] in rba_names and int(x["User ID"])
            assert re.fullmatch(r"[A-Z]{2}", x["Country"]) and int(x["ASN"]) > 0
            for k in ("Login Successful", "Is Attack IP", "Is Account Takeover"):
                assert x[k] in ("True", "False")
            assert x["Device Type"] in ("desktop", "mobile", "tablet", "bot", "unknown")
            datetime.strptime(x["Login Timestamp"], "%Y-%m-%d %H:%M:%S.%f")
            lab = labels[x["index"]]
            assert (x["Is Account Takeover"] == "True") == (lab["is_account_takeover"] == "true")
            assert (x["Is Attack IP"] == "True") == (lab["is_attack_ip"] == "true")
        ids = [x["index"] for x in rows]
    elif fmt in ("csv", "parquet"):
        mapping = yaml.safe_load(Path(f"{stem}.mapping.yaml").read_text())
        assert mapping["columns"]["user_agent_source"] == "user_agent"
        assert set(mapping["columns"].values()) == set(TABULAR_COLUMNS)
        if fmt == "csv":
            rows = list(csv.DictReader(open(out, newline="")))
        else:
            import pyarrow.parquet as pq

            rows = pq.read_table(out).to_pylist()
        assert list(rows[0]) == list(TABULAR_COLUMNS)
        for x in rows:
            assert ISO_MS.match(x["creation_date"]) and x["event_type"] in EVENT_TYPES
            ipaddress.ip_address(x["ip_address"])
        ids = [x["event_id"] for x in rows]
    assert len(ids) == r.events > 100
    assert set(ids) == set(labels)


# -- options, sizes and the command line -----------------------------------------------------------------


def test_users_for_events_gives_about_the_size_asked_for(tmp_path):
    n = users_for_events(20_000, 10)
    r = synthesize(SynthConfig(users=n, days=10, seed=1), "csv", tmp_path / "s.csv")
    assert 15_000 < r.events < 25_000


def test_bad_options_are_refused_with_the_option_named(tmp_path):
    with pytest.raises(ConfigurationError, match="--users"):
        SynthConfig(users=0)
    with pytest.raises(ConfigurationError, match="--days"):
        SynthConfig(days=-1)
    with pytest.raises(ConfigurationError, match="--format"):
        synthesize(SynthConfig(users=5, days=1), "xml", tmp_path / "x")
    with pytest.raises(ConfigurationError, match="does not exist"):
        synthesize(SynthConfig(users=5, days=1), "csv", tmp_path / "nope" / "x.csv")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "other.txt").write_text("x")
    with pytest.raises(ConfigurationError, match="not empty"):
        synthesize(SynthConfig(users=5, days=1), "cognito-auth-events", tmp_path / "full")


def test_cli_prints_what_it_wrote(tmp_path):
    out = tmp_path / "c.jsonl"
    res = runner.invoke(app, ["synth", "--users", "200", "--days", "3", "--seed", "4", "--start", "2025-03-03",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.stdout and "events of 200 users over 3 days" in res.stdout
    assert re.search(r"^  attack type +incidents +events +takeovers$", res.stdout, re.M)
    for t in ATTACK_TYPES:
        assert re.search(rf"^  {t} +[\d,]+ +[\d,]+ +[\d,]+$", res.stdout, re.M), t
    first = json.loads(out.read_text().splitlines()[0])
    assert first["CreationDate"] < "2025-03-04"
    res = runner.invoke(app, ["synth", "--users", "20", "--days", "2", "--out", str(tmp_path / "j.csv"), "--format",
                              "csv", "--no-attacks", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["format"] == "csv" and doc["attacks"] == {} and doc["events"] > 0
    res = runner.invoke(app, ["synth", "--out", str(tmp_path / "k"), "--start", "2025-13-01"])
    assert res.exit_code == 2 and "--start" in res.output


def test_synth_output_ingests_with_users_and_labels(tmp_path, monkeypatch):
    """The whole way a user takes: synth, ingest, users load, labels load (nothing quarantined, nothing unknown)."""
    monkeypatch.setenv("RISKGATE_DB", str(tmp_path / "s.duckdb"))
    out = tmp_path / "s.jsonl"
    assert runner.invoke(app, ["synth", "--users", "40", "--days", "3", "--out", str(out)]).exit_code == 0
    res = runner.invoke(app, ["ingest", str(out), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["quarantined"] == 0 and got["events_added"] == got["rows_read"] > 0
    res = runner.invoke(app, ["users", "load", str(tmp_path / "s.users.json"), "--json"])
    assert json.loads(res.stdout)["added"] == 40
    res = runner.invoke(app, ["labels", "load", str(tmp_path / "s.labels.csv"), "--json"])
    doc = json.loads(res.stdout)
    assert doc["unknown_events"] == 0 and doc["rejected"] == 0 and doc["added"] == doc["read"]


def test_synth_auth_events_folder_ingests_with_usernames_from_the_file_names(tmp_path, monkeypatch):
    """`riskgate synth --format cognito-auth-events` writes <username>.json per user; `riskgate ingest FOLDER
    --username-from-file-name` takes them all in one command, and the labels then all match."""
    monkeypatch.setenv("RISKGATE_DB", str(tmp_path / "s.duckdb"))
    out = tmp_path / "ae"
    res = runner.invoke(app, ["synth", "--users", "30", "--days", "3", "--format", "cognito-auth-events",
                              "--out", str(out), "--json"])
    written = json.loads(res.stdout)["events"]
    files = sorted(str(f) for f in out.iterdir())
    res = runner.invoke(app, ["ingest", *files, "--username", "x", "--username-from-file-name"])
    assert res.exit_code == 2 and "give --username or --username-from-file-name, not both" in res.output
    res = runner.invoke(app, ["ingest", str(out), "--username-from-file-name", "--json"])  # the folder itself
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["events_added"] == got["rows_read"] == written and got["quarantined"] == 0
    with risk.store.connect(tmp_path / "s.duckdb", read_only=True) as con:
        per_user = dict(con.execute("SELECT username, count(*) FROM events GROUP BY username").fetchall())
    assert per_user == {Path(f).stem: len(json.loads(Path(f).read_text())["AuthEvents"]) for f in files}
    doc = json.loads(runner.invoke(app, ["labels", "load", f"{out}.labels.csv", "--json"]).stdout)
    assert doc["unknown_events"] == 0 and doc["added"] == doc["read"] > 0


# -- outputs: a .gz name compresses or is refused ---------------------------------------------------------------


@pytest.mark.parametrize("fmt, out", [("parquet", "x.parquet.gz"), ("cognito-auth-events", "events.gz")])
def test_a_gz_name_the_format_would_not_compress_is_refused_before_anything_is_written(tmp_path, fmt, out):
    """``--format parquet --out x.parquet.gz`` wrote plain Parquet under the .gz name (which `ingest` takes for
    gzip), and ``cognito-auth-events`` a folder named ``events.gz``; ``--out``'s help says a .gz name compresses."""
    res = runner.invoke(app, ["synth", "--users", "20", "--days", "2", "--format", fmt, "--out",
                              str(tmp_path / out)])
    assert res.exit_code == 2, res.output
    assert res.stderr.count("\n") == 1 and "cannot be gzip-compressed" in res.stderr and "without .gz" in res.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["riskgate-jsonl", "cognito-user-activity", "rba-csv", "csv"])
def test_a_gz_name_compresses_every_format_that_writes_lines(tmp_path, fmt):
    out = tmp_path / "x.gz"
    res = runner.invoke(app, ["synth", "--users", "20", "--days", "2", "--format", fmt, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert gzip.decompress(out.read_bytes()).count(b"\n") > 10


def test_an_existing_folder_is_refused_as_the_out_of_a_format_that_writes_a_file(tmp_path):
    (tmp_path / "d").mkdir()
    res = runner.invoke(app, ["synth", "--users", "20", "--days", "2", "--out", str(tmp_path / "d")])
    assert res.exit_code == 2 and "is a folder" in res.stderr, res.output
    assert [p.name for p in tmp_path.iterdir()] == ["d"] and list((tmp_path / "d").iterdir()) == []


# -- outputs: each file appears at its name only when the whole run is done ----------------------------------------


def test_an_interrupted_synth_leaves_no_file_at_its_names(tmp_path):
    """Ctrl-C a few seconds into a big run ended with "interrupted" and 130 but left the truncated events file, the
    labels of what it had written and the users at their names, looking finished: a later ingest took them.
    Each is written as <name>.partial and renamed when the whole run is done; Ctrl-C removes them."""
    keep = tmp_path / "old.labels.csv"  # a finished data set's file beside it stays as it was
    keep.write_text("event_id,label,value,source\n")
    out = tmp_path / "big.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "cli", "synth", "--users", "5000", "--days", "30", "--out",
                             str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        # the events file, by either name, holds a megabyte: the run is writing
        while not any(p.stat().st_size > 1 << 20 for p in tmp_path.glob("big.jsonl*")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        seen = sorted(p.name for p in tmp_path.iterdir())
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, stderr, stdout) == (130, "interrupted\n", ""), seen
    assert "big.jsonl.partial" in seen and "big.jsonl" not in seen  # it was writing the partial file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.labels.csv"]
    assert keep.read_text() == "event_id,label,value,source\n"


@pytest.mark.parametrize("fmt, out", [("riskgate-jsonl", "s.jsonl.gz"), ("parquet", "s.parquet"),
                                      ("csv", "s.csv"), ("cognito-auth-events", "s")])
def test_a_synth_that_fails_half_way_says_so_in_one_line_and_leaves_no_file_at_its_names(tmp_path, fmt, out):
    """A file-size limit (as a full disk would) stops the run half-way: it used to end in a traceback with every
    file so far at its name, the last truncated."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))

    res = subprocess.run([sys.executable, "-m", "cli", "synth", "--users", "40", "--days", "60", "--format", fmt,
                          "--out", str(tmp_path / out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         preexec_fn=limit)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and "cannot write the data set: File too large" in res.stderr, res.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_partial_file_left_by_a_killed_run_is_replaced_and_the_same_seed_writes_the_same_bytes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "s.jsonl.partial").write_text("left by a run that was killed\n")
    (tmp_path / "b" / "s.users.json.partial").symlink_to(tmp_path / "elsewhere")  # never written through
    for name in ("a", "b"):
        synthesize(SynthConfig(users=40, days=3, seed=6), "riskgate-jsonl", tmp_path / name / "s.jsonl")
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert sorted(os.listdir(tmp_path / "b")) == ["s.jsonl", "s.labels.csv", "s.users.json"]
    assert not (tmp_path / "elsewhere").exists()


def test_an_out_that_is_a_symbolic_link_writes_its_target_and_keeps_the_link(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "s.jsonl").symlink_to(tmp_path / "data" / "s.jsonl")
    synthesize(SynthConfig(users=20, days=2, seed=1), "riskgate-jsonl", tmp_path / "s.jsonl")
    assert (tmp_path / "s.jsonl").is_symlink() and (tmp_path / "data" / "s.jsonl").read_text().count("\n") > 10
    assert sorted(os.listdir(tmp_path / "data")) == ["s.jsonl"]


def test_a_partial_folder_holding_files_is_refused_and_left_as_it_was(tmp_path):
    """The cognito-auth-events folder is written as <folder>.partial too: one holding files is not this run's to
    delete."""
    (tmp_path / "ae.partial").mkdir()
    (tmp_path / "ae.partial" / "mine.txt").write_text("x")
    res = runner.invoke(app, ["synth", "--users", "20", "--days", "2", "--format", "cognito-auth-events", "--out",
                              str(tmp_path / "ae")])
    assert res.exit_code == 2 and "is written as" in res.stderr and "remove it" in res.stderr, res.output
    assert sorted(os.listdir(tmp_path)) == ["ae.partial"] and os.listdir(tmp_path / "ae.partial") == ["mine.txt"]


def test_a_second_run_writing_the_same_out_is_refused_while_the_first_writes_it(tmp_path):
    """Each run removed the other's partial file as a killed run's and renamed a half-written one into place (two
    `synth --out c.jsonl` at once: a truncated c.jsonl, an empty labels file, and the successful run said so). A
    partial output is locked while its run writes it; a second run is refused, the first completes."""
    from ingest.outputs import PartialOutputs

    with PartialOutputs() as first:
        tmp = first.path(tmp_path / "c.jsonl")
        with open(tmp, "w") as f:
            f.write("half\n")
        res = runner.invoke(app, ["synth", "--users", "5", "--days", "1", "--out", str(tmp_path / "c.jsonl")])
        assert res.exit_code == 2 and "another run is writing it now" in res.stderr, res.output
        assert open(tmp).read() == "half\n"  # untouched
        with open(tmp, "a") as f:
            f.write("done\n")
        first.commit()
    assert (tmp_path / "c.jsonl").read_text() == "half\ndone\n"
    assert sorted(os.listdir(tmp_path)) == ["c.jsonl"]  # the refused run left nothing
    synthesize(SynthConfig(users=5, days=1, seed=1), "riskgate-jsonl", tmp_path / "c.jsonl")  # unlocked: it may


def test_an_out_that_is_a_fifo_is_written_in_place(tmp_path):
    """`synth --out FIFO` replaced the FIFO with a regular file (written as FIFO.partial, renamed over it), and its
    reader got nothing: written in place, as export writes one."""
    import threading

    fifo = tmp_path / "ff"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo).read()), daemon=True)
    reader.start()
    synthesize(SynthConfig(users=10, days=2, seed=1), "riskgate-jsonl", fifo)
    reader.join(timeout=10)
    if reader.is_alive():  # nothing was written to the FIFO: let the reader go
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=10)
    assert got and got[0].count("\n") > 10 and all(json.loads(x)["Username"] for x in got[0].splitlines())
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
