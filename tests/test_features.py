"""risk.features: point-in-time features over tiny hand-made event sets with known answers."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

import risk.store
from ingest.schema import EVENT_SCHEMA, conform
from ingest.store import insert_events
from risk import feedback
from risk.features import FeatureError, compute_features, hosting_asns
from risk.signals import FEATURE_COLUMNS, FREEMAN_IP_LEVELS, FREEMAN_UA_LEVELS

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)  # a Monday
LONDON = {"country_iso": "GB", "region": "England", "city": "London", "latitude": 51.5074, "longitude": -0.1278,
          "asn": 2856, "as_org": "British Telecommunications"}
SYDNEY = {"country_iso": "AU", "region": "New South Wales", "city": "Sydney", "latitude": -33.8688,
          "longitude": 151.2093, "asn": 1221, "as_org": "Telstra"}
CHROME_WIN = {"user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0", "browser_family": "Chrome",
              "os_family": "Windows", "device_type": "Desktop", "device_fingerprint": "fp-win"}
SAFARI_IOS = {"user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5) Safari/604.1", "browser_family": "Mobile Safari",
              "os_family": "iOS", "device_type": "Mobile", "device_fingerprint": "fp-iphone"}


def ev(eid: str, user: str, minutes: float, ip: str = "81.2.69.160", response: str = "Pass", **over) -> dict:
    row = {
        "event_id": eid, "username": user, "event_type": "SignIn", "event_response": response,
        "creation_date": T0 + timedelta(minutes=minutes), "client_ip": ip, "ip_version": 6 if ":" in (ip or "") else 4,
        "ip_prefix": None if ip is None else (ip.rsplit(".", 1)[0] + ".0/24" if "." in ip else ":".join(ip.split(":")[:3]) + "::/48"),
        "has_context_data": ip is not None, "source_format": "test", "source_file": "test", "source_line": 1,
        **LONDON, **CHROME_WIN,
    }
    row.update(over)
    return row


def add(con, rows: list[dict]) -> None:
    insert_events(con, conform(pa.Table.from_pylist(rows), EVENT_SCHEMA), "test-run")


@pytest.fixture
def con(tmp_path):
    c = risk.store.connect(tmp_path / "s.duckdb")
    yield c
    c.close()


def feats(con, **kw) -> dict[str, dict]:
    t = compute_features(con, **kw)
    return {r["event_id"]: r for r in t.to_pylist()}


def test_output_columns_types_and_order(con):
    add(con, [ev("e1", "alice", 0), ev("e2", "alice", 5)])
    t = compute_features(con)
    assert t.column_names == ["event_id", "username", "creation_date", "event_type", "event_response", *FEATURE_COLUMNS]
    for c in FEATURE_COLUMNS:
        assert t.schema.field(c).type == pa.float64(), c
    assert t.column("event_id").to_pylist() == ["e1", "e2"]


def test_first_sign_in_is_all_novel_and_the_second_from_the_same_ip_is_not(con):
    add(con, [ev("e1", "alice", 0), ev("e2", "alice", 30)])
    f = feats(con)
    novelty = ["new_ip", "new_ip_prefix", "new_asn", "new_country", "new_city", "new_device"]
    assert [f["e1"][c] for c in novelty] == [1.0] * 6
    assert [f["e2"][c] for c in novelty] == [0.0] * 6
    assert f["e1"]["history_size"] == 0.0 and f["e2"]["history_size"] == 1.0
    assert f["e1"]["hours_since_last_success"] is None and f["e2"]["hours_since_last_success"] == pytest.approx(0.5)
    assert f["e1"]["travel_speed_kmh"] is None
    assert f["e2"]["travel_distance_km"] == pytest.approx(0.0)
    # no history: the Freeman ratios are 1 (log 0), the hour is not unusual yet
    for c in FREEMAN_IP_LEVELS + FREEMAN_UA_LEVELS:
        assert f["e1"][c] == pytest.approx(0.0), c
    assert f["e1"]["unusual_hour"] == pytest.approx(0.0)


def test_same_prefix_other_ip_is_new_ip_but_known_network(con):
    add(con, [ev("e1", "alice", 0, ip="81.2.69.160"), ev("e2", "alice", 10, ip="81.2.69.7")])
    f = feats(con)["e2"]
    assert (f["new_ip"], f["new_ip_prefix"], f["new_asn"], f["new_country"]) == (1.0, 0.0, 0.0, 0.0)


def test_ipv6_prefix_and_missing_values_are_null_not_safe(con):
    add(con, [
        ev("e1", "alice", 0, ip="2001:db8:1::5"),
        ev("e2", "alice", 10, ip="2001:db8:1::9"),
        ev("e3", "alice", 20, ip=None, asn=None, country_iso=None, city=None, region=None, latitude=None,
           longitude=None, user_agent=None, device_fingerprint=None, has_context_data=False),
    ])
    f = feats(con)
    assert (f["e2"]["new_ip"], f["e2"]["new_ip_prefix"]) == (1.0, 0.0)
    e3 = f["e3"]
    for c in ("new_ip", "new_ip_prefix", "new_asn", "new_country", "new_city", "new_device", "travel_speed_kmh",
              "travel_distance_km", "ip_failures_1h", "ip_users_24h", "prefix_users_24h", "hosting_network",
              *FREEMAN_IP_LEVELS, *FREEMAN_UA_LEVELS):
        assert e3[c] is None, c
    assert e3["no_context_data"] == 1.0 and f["e1"]["no_context_data"] == 0.0
    assert e3["history_size"] == 2.0 and e3["hours_since_last_success"] == pytest.approx(10 / 60)


def test_impossible_travel_london_to_sydney_in_one_hour(con):
    add(con, [ev("e1", "alice", 0), ev("e2", "alice", 60, ip="1.120.0.9", **SYDNEY)])
    f = feats(con)["e2"]
    # haversine, mean Earth radius 6371.0088 km: London -> Sydney is about 16,994 km
    assert f["travel_distance_km"] == pytest.approx(16994, rel=0.002)
    assert f["travel_speed_kmh"] == pytest.approx(f["travel_distance_km"], rel=1e-9)  # in exactly one hour
    assert f["hours_since_last_success"] == pytest.approx(1.0)
    assert f["new_country"] == 1.0 and f["new_city"] == 1.0


def test_travel_is_measured_from_the_previous_success_not_a_failure(con):
    add(con, [
        ev("e1", "alice", 0),
        ev("e2", "alice", 30, ip="1.120.0.9", response="Fail", **SYDNEY),
        ev("e3", "alice", 120),
    ])
    f = feats(con)["e3"]
    assert f["travel_distance_km"] == pytest.approx(0.0)
    assert f["hours_since_last_success"] == pytest.approx(2.0)
    assert f["user_failures_1h"] == 0.0 and f["user_failures_24h"] == 1.0


def test_failures_from_one_ip_across_30_users_give_the_distinct_users_count(con):
    rows = [ev(f"s{i:02d}", f"victim{i}", i, ip="198.51.100.7", response="Fail", asn=16509, as_org="AMAZON-02")
            for i in range(30)]
    rows.append(ev("s30", "victim30", 30, ip="198.51.100.7", asn=16509, as_org="AMAZON-02"))
    rows.append(ev("n01", "bystander", 31, ip="198.51.100.99", asn=16509))  # same /24, other IP
    rows.append(ev("late", "victim0", 24 * 60 + 30, ip="198.51.100.7", asn=16509))  # a day later
    add(con, rows)
    f = feats(con)
    s = f["s30"]
    assert s["ip_users_1h"] == 30.0 and s["ip_users_24h"] == 30.0
    assert s["ip_failures_1h"] == 30.0 and s["ip_failures_24h"] == 30.0
    assert s["user_failures_24h"] == 0.0  # victim30 itself never failed
    assert s["hosting_network"] == 1.0
    n = f["n01"]
    assert n["ip_users_24h"] == 0.0 and n["prefix_users_24h"] == 31.0 and n["prefix_failures_24h"] == 30.0
    # the first attempt saw nothing before it; a day later only s30 (exactly 24 h before) is still in the window
    assert f["s00"]["ip_users_24h"] == 0.0 and f["s00"]["ip_failures_1h"] == 0.0
    assert f["s05"]["ip_users_1h"] == 5.0 and f["s05"]["ip_failures_1h"] == 5.0
    assert f["late"]["ip_failures_24h"] == 0.0 and f["late"]["ip_users_24h"] == 1.0  # s30 at exactly -24 h counts


def test_events_at_the_same_instant_never_count_each_other(con):
    add(con, [ev("b", "alice", 0), ev("a", "bob", 0, response="Fail"), ev("c", "carol", 0)])
    f = feats(con)
    assert all(f[k]["ip_users_1h"] == 0.0 and f[k]["ip_failures_1h"] == 0.0 for k in "abc")
    # global order (creation_date, event_id): only the known events ordered before count in p(x)
    assert [r for r in compute_features(con).column("event_id").to_pylist()] == ["a", "b", "c"]


def test_hosting_flag_uses_the_shipped_list(con):
    add(con, [ev("h", "alice", 0, asn=14061), ev("r", "bob", 0, asn=2856)])
    f = feats(con)
    assert f["h"]["hosting_network"] == 1.0 and f["r"]["hosting_network"] == 0.0
    listed = {a for a, _, _ in hosting_asns()}
    assert {16509, 14061, 24940, 9009, 212238} <= listed


def test_shipped_hosting_list_covers_the_synthetic_catalogues_providers():
    path = Path(__file__).resolve().parent.parent / "bench" / "build_synth_networks.py"
    if not path.exists():
        pytest.skip("bench/build_synth_networks.py is not in this tree")
    ns: dict = {}
    src = path.read_text(encoding="utf-8")
    start = src.index("HOSTING = {")
    exec(src[start:src.index("}\n", start) + 2], ns)  # just the literal dict
    listed = {a for a, _, _ in hosting_asns()}
    assert set(ns["HOSTING"]) <= listed


def test_a_future_event_never_changes_a_past_events_features(con):
    rows = _random_events(120, seed=7)
    past, future = rows[:80], rows[80:]
    add(con, past)
    before = compute_features(con)
    add(con, future)
    after = compute_features(con).slice(0, before.num_rows)
    assert after.column("event_id").to_pylist() == before.column("event_id").to_pylist()
    _assert_same(before, after)


def test_invalid_feedback_removes_the_event_from_known_history(con):
    add(con, [ev("e1", "alice", 0), ev("e2", "alice", 60, ip="1.120.0.9", **SYDNEY, **SAFARI_IOS),
              ev("e3", "alice", 120, ip="1.120.0.9", **SYDNEY, **SAFARI_IOS)])
    f = feats(con)["e3"]
    assert (f["new_ip"], f["new_country"], f["new_device"], f["history_size"]) == (0.0, 0.0, 0.0, 2.0)
    feedback.set_feedback(con, "e2", "Invalid", "Admin")
    f = feats(con)["e3"]
    assert (f["new_ip"], f["new_country"], f["new_device"], f["history_size"]) == (1.0, 1.0, 1.0, 1.0)
    assert f["travel_distance_km"] == pytest.approx(16994, rel=0.002)  # measured from e1 again
    assert f["freeman_ip"] > 0
    # the latest feedback wins: Valid again restores it
    feedback.set_feedback(con, "e2", "Valid", "User")
    assert feats(con)["e3"]["new_ip"] == 0.0


def test_freeman_levels_add_up_to_the_smoothed_likelihood_ratio(con):
    # day 0: bob signs in from London on Windows twice, six others from Sydney on iPhones;
    # day 1: bob from Sydney on an iPhone (b3), then from London again (b4)
    day = 24 * 60
    rows = [ev("b1", "bob", 0), ev("b2", "bob", 10)]
    rows += [ev(f"o{i}", f"other{i}", 20 + i, ip="1.120.0.9", **SYDNEY, **SAFARI_IOS) for i in range(6)]
    rows += [ev("b3", "bob", day + 30, ip="1.120.0.9", **SYDNEY, **SAFARI_IOS), ev("b4", "bob", day + 40)]
    add(con, rows)
    f = feats(con)
    m = 1.0
    # b3: every level is new to bob (n_u = 2): each adds log((n_u + m) / m) = log 3, whatever the global counts
    b3 = f["b3"]
    assert [b3[c] for c in FREEMAN_IP_LEVELS] == pytest.approx([math.log(3.0)] * 3)
    assert [b3[c] for c in FREEMAN_UA_LEVELS] == pytest.approx([math.log(3.0)] * 4)
    # b4: London is familiar to bob (2 of his 3 known events) but rare overall (2 of the 8 known before day 1)
    b4 = f["b4"]
    n_u, N, c_gb = 3, 8, 2
    pg_c = (c_gb + 1) / (N + 1)
    pu_c = (2 + m * pg_c) / (n_u + m)
    assert b4["freeman_country"] == pytest.approx(math.log(pg_c) - math.log(pu_c))
    assert b4["freeman_country"] < 0  # evidence *for* the user
    pg_a = min(1.0, (2 + 1) / (c_gb + 1))  # ASN 2856: 2 events, all in GB
    pu_a = (2 + m * pu_c * pg_a) / (n_u + m)
    assert b4["freeman_asn"] == pytest.approx(math.log(pg_a) - math.log(pu_a / pu_c))
    pu_i = (2 + m * pu_a * 1.0) / (n_u + m)
    assert b4["freeman_ip"] == pytest.approx(-math.log(pu_i / pu_a))
    # the levels telescope: their sum is log p(x) / p(x | bob) of the whole hierarchy
    assert sum(b4[c] for c in FREEMAN_IP_LEVELS) == pytest.approx(math.log(pg_c * pg_a * 1.0) - math.log(pu_i))
    # global counts are as of the start of the event's UTC day: on day 0 nobody is counted yet
    assert f["o5"]["freeman_country"] == pytest.approx(0.0) and f["b2"]["freeman_ip"] == pytest.approx(
        math.log(1.0) - math.log((1 + m * 1.0) / (1 + m)))


def test_hour_of_week_is_unusual_only_against_the_users_habits(con):
    # alice signs in on Mondays at 09:00 UTC for five weeks, then on a Sunday at 03:00
    rows = [ev(f"m{w}", "alice", w * 7 * 24 * 60) for w in range(5)]
    rows.append(ev("odd", "alice", 5 * 7 * 24 * 60 - 30 * 60))  # Monday 09:00 - 30 h = Sunday 03:00
    rows.append(ev("usual", "alice", 5 * 7 * 24 * 60 + 1))
    add(con, rows)
    f = feats(con)
    assert f["odd"]["unusual_hour"] == pytest.approx(math.log((5 + 168) / 168))
    assert f["usual"]["unusual_hour"] == pytest.approx(math.log((6 + 168) / (168 * 6)))
    assert f["odd"]["unusual_hour"] > 0 > f["usual"]["unusual_hour"]


def test_whole_store_and_consecutive_windows_give_identical_features(con):
    rows = _random_events(400, seed=11)
    add(con, rows)
    feedback.set_feedback(con, rows[40]["event_id"], "Invalid", "Admin")
    whole = compute_features(con)
    edges = [T0 + timedelta(hours=h) for h in (0, 7, 7.5, 30, 31, 55)] + [None]
    parts = [compute_features(con, since=a, until=b) for a, b in zip(edges[:-1], edges[1:])]
    joined = pa.concat_tables([p for p in parts if p.num_rows])
    assert joined.num_rows == whole.num_rows
    _assert_same(whole, joined)
    # and per user / per event id
    some = [r["event_id"] for r in rows[::17]]
    sub = compute_features(con, event_ids=some)
    assert sorted(sub.column("event_id").to_pylist()) == sorted(some)
    _assert_same(whole.filter(pa.compute.is_in(whole.column("event_id"), pa.array(some))), sub)
    users = compute_features(con, usernames=["u3", "u5"])
    assert set(users.column("username").to_pylist()) == {"u3", "u5"}
    _assert_same(whole.filter(pa.compute.is_in(whole.column("username"), pa.array(["u3", "u5"]))), users)


def test_windows_sharing_their_history_give_exactly_the_features_they_compute_themselves(con):
    """``SharedHistory``: everyone's daily counts and the first known (user, value) events over the whole store,
    computed once for a run's windows; each window gets the very same features, to the last bit; once the
    store has changed it is not used."""
    from risk.features import SharedHistory, worth_sharing

    rows = _random_events(400, seed=5)
    rows += [ev("late", "u1", 10, ip="1.120.0.9", **SYDNEY)]  # a new value for u1, known only later
    add(con, rows)
    feedback.set_feedback(con, rows[30]["event_id"], "Invalid", "Admin")
    shared = SharedHistory(con)
    edges = [T0 + timedelta(hours=h) for h in (0, 7, 7.5, 30, 31, 55)] + [None]
    for a, b in zip(edges[:-1], edges[1:]):
        own = compute_features(con, since=a, until=b)
        assert compute_features(con, since=a, until=b, shared=shared).equals(own)
    assert shared.globals.num_rows and shared.first.num_rows
    # the store changes (feedback): the shared history is stale and not used, the features follow the store
    before = compute_features(con, since=edges[1])
    passed = next(r for r in rows[10:] if r["event_response"] == "Pass")  # in its user's known history
    feedback.set_feedback(con, passed["event_id"], "Invalid", "Admin")
    after = compute_features(con, since=edges[1])
    assert not shared.current(con) and not after.equals(before)
    assert compute_features(con, since=edges[1], shared=shared).equals(after)
    # windows share when, together, they read the history often enough: twice the store's events
    starts = sorted(r["creation_date"] for r in rows)[::40]  # 0, 40, ..., 400 events before each
    assert worth_sharing(con, starts) and not worth_sharing(con, starts[:2]) and not worth_sharing(con, starts[:1])
    with pytest.raises(FeatureError, match="not both"):
        compute_features(con, event_ids=["late"], global_counts=object(), shared=shared)


def test_empty_selection_and_bad_arguments(con):
    t = compute_features(con)
    assert t.num_rows == 0 and t.column_names[5:] == FEATURE_COLUMNS
    with pytest.raises(FeatureError, match="since must be a timezone-aware datetime"):
        compute_features(con, since=datetime(2026, 1, 1))
    with pytest.raises(FeatureError, match="usernames must be a list"):
        compute_features(con, usernames="alice")


# -- helpers ---------------------------------------------------------------------------------

def _random_events(n: int, seed: int) -> list[dict]:
    rnd = random.Random(seed)
    places = [LONDON, SYDNEY, {"country_iso": "FR", "region": "IDF", "city": "Paris", "latitude": 48.85,
                               "longitude": 2.35, "asn": 3215, "as_org": "Orange"}]
    agents = [CHROME_WIN, SAFARI_IOS]
    ips = ["81.2.69.160", "81.2.69.161", "1.120.0.9", "90.0.0.1", "2001:db8:1::5", "198.51.100.7"]
    rows = []
    t = 0.0
    for i in range(n):
        t += rnd.choice([0, 0.5, 3, 20, 90, 400])  # some ties at the same instant
        rows.append(ev(f"r{i:04d}", f"u{rnd.randrange(8)}", t, ip=rnd.choice(ips),
                       response=rnd.choice(["Pass", "Pass", "Pass", "Fail"]), **rnd.choice(places),
                       **rnd.choice(agents)))
    return rows


def _assert_same(a: pa.Table, b: pa.Table) -> None:
    a = a.sort_by([("creation_date", "ascending"), ("event_id", "ascending")]).to_pylist()
    b = b.sort_by([("creation_date", "ascending"), ("event_id", "ascending")]).to_pylist()
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        for k in ra:
            if isinstance(ra[k], float) and rb[k] is not None:
                assert ra[k] == pytest.approx(rb[k], rel=1e-12, abs=1e-12), (ra["event_id"], k)
            else:
                assert ra[k] == rb[k], (ra["event_id"], k)
