"""risk.online: features of new events from in-memory state equal the SQL's, value for value."""

from __future__ import annotations

import math
import random

import pytest

from risk import feedback
from risk.features import compute_features
from risk.online import OnlineFeatures, keys_of
from risk.signals import FEATURE_COLUMNS
import risk.store
from tests.test_features import LONDON, SAFARI_IOS, SYDNEY, add, ev


@pytest.fixture
def con(tmp_path):
    c = risk.store.connect(tmp_path / "s.duckdb")
    yield c
    c.close()

PARIS = {"country_iso": "FR", "region": None, "city": "Paris", "latitude": 48.85, "longitude": 2.35,
         "asn": None, "as_org": None}
HOSTED = {"country_iso": "US", "region": "Virginia", "city": "Ashburn", "latitude": 39.04, "longitude": -77.49,
          "asn": 14618, "as_org": "Amazon"}


def _stream(n: int, seed: int) -> list[dict]:
    """Random events over a few days: ties at one instant, failures, IPv6, no IP, no agent, gaps in geo."""
    rnd = random.Random(seed)
    places = [LONDON, SYDNEY, PARIS, HOSTED, {"country_iso": None, "region": None, "city": None,
                                              "latitude": None, "longitude": None, "asn": None, "as_org": None}]
    agents = [{}, SAFARI_IOS, {"user_agent": None, "browser_family": None, "os_family": None,
                               "device_type": None, "device_fingerprint": None}]
    ips = ["81.2.69.160", "81.2.69.161", "1.120.0.9", "90.0.0.1", "2001:db8:1::5", "2001:db8:1::6", None]
    rows, t = [], 0.0
    for i in range(n):
        t += rnd.choice([0, 0, 0.5, 3, 20, 61, 400, 900])  # ties, and steps across the hour and the day
        if rnd.random() < 0.3:  # and times to the microsecond, as the service's own clock gives them
            t += rnd.randrange(1, 60_000_000) / 60_000_000
        rows.append(ev(f"r{i:05d}", f"u{rnd.randrange(12)}", t, ip=rnd.choice(ips),
                       response=rnd.choice(["Pass", "Pass", "Pass", "Fail", "InProgress"]),
                       event_type=rnd.choice(["SignIn", "SignIn", "PasswordChange"]),
                       **rnd.choice(places), **rnd.choice(agents)))
    return rows


def _sql(con, ids) -> dict[str, dict]:
    return {r["event_id"]: r for r in compute_features(con, event_ids=ids).to_pylist()}


def _serve(state: OnlineFeatures, con, rows: list[dict]) -> dict[str, dict]:
    assert state.can_serve(rows)
    return {r["event_id"]: state.features(r, r["event_response"] == "Pass") for r in rows}


def _assert_equal(online: dict, sql: dict) -> int:
    assert online.keys() == sql.keys()
    compared = 0
    for eid, row in sql.items():
        for c in FEATURE_COLUMNS:
            # the same formulas in the same order of operations: equal to the last bit
            assert online[eid][c] == row[c], (eid, c, online[eid][c], row[c])
            compared += 1
    return compared


def test_new_events_get_exactly_the_features_sql_computes(con):
    rows = _stream(1200, seed=3)
    history, new = rows[:700], rows[700:]
    add(con, history)
    feedback.set_feedback(con, history[650]["event_id"], "Invalid", "Admin")  # out of known history
    state = OnlineFeatures()
    state.ensure(con)
    assert state.loads == 1
    online = _serve(state, con, new)
    add(con, new)
    assert _assert_equal(online, _sql(con, [r["event_id"] for r in new])) == 500 * len(FEATURE_COLUMNS)
    # the stream exercised what it should: ties, windows, travel and unknowns all present
    values = {c: [online[r["event_id"]][c] for r in new] for c in FEATURE_COLUMNS}
    assert any(v and v > 0 for v in values["ip_users_24h"]) and any(v and v > 0 for v in values["user_failures_1h"])
    assert any(v is None for v in values["freeman_ua"]) and any(v is None for v in values["new_ip"])
    assert any(v and v > 100 for v in values["travel_distance_km"])


def test_state_loaded_from_an_empty_store_serves_from_the_first_event(con):
    state = OnlineFeatures()
    state.ensure(con)
    rows = _stream(300, seed=5)
    online = _serve(state, con, rows)
    add(con, rows)
    _assert_equal(online, _sql(con, [r["event_id"] for r in rows]))


def test_global_counts_are_before_the_events_utc_day(con):
    # the day before: bob in London, cat in Sydney; the day: amy in Sydney at 11:00 UTC, ann at 13:00,
    # bob in London again at 23:00. Only the day before counts for bob's Freeman p_g (T0 is 09:00 UTC).
    add(con, [ev("b0", "bob", -24 * 60), ev("c0", "cat", -24 * 60 + 5, ip="1.120.0.9", **SYDNEY),
              ev("a1", "amy", 2 * 60, ip="1.120.0.9", **SYDNEY)])
    state = OnlineFeatures()
    state.ensure(con)
    later = [ev("a2", "ann", 4 * 60, ip="1.120.0.9", **SYDNEY), ev("a3", "bob", 14 * 60)]
    online = _serve(state, con, later)
    add(con, later)
    sql = _sql(con, ["a2", "a3"])
    _assert_equal(online, sql)
    pg = (1 + 1) / (2 + 1)  # London: 1 of the 2 known events before the day
    pu = (1 + 1.0 * pg) / (1 + 1.0)  # bob: 1 of 1
    assert sql["a3"]["freeman_country"] == pytest.approx(math.log(pg) - math.log(pu))


def test_state_reloads_when_the_store_changes_behind_it(con):
    rows = _stream(600, seed=9)
    add(con, rows[:200])
    state = OnlineFeatures()
    state.ensure(con)
    add(con, rows[200:400])  # another process wrote events
    state.ensure(con)
    assert state.loads == 2
    online = _serve(state, con, rows[400:500])
    add(con, rows[400:500])
    state.noted(con)
    feedback.set_feedback(con, rows[450]["event_id"], "Invalid", "User")  # feedback changes known history
    state.ensure(con)
    assert state.loads == 3
    more = _serve(state, con, rows[500:])
    add(con, rows[500:])
    state.noted(con)
    state.ensure(con)
    assert state.loads == 3  # nothing changed behind it: no reload
    _assert_equal(more, _sql(con, [r["event_id"] for r in rows[500:]]))
    assert online  # served before the feedback


def test_events_the_state_cannot_serve_exactly_are_refused(con):
    rows = _stream(50, seed=1)
    add(con, rows[:40])
    state = OnlineFeatures()
    assert not state.can_serve(rows[40:])  # not loaded
    state.ensure(con)
    assert state.can_serve(rows[40:])
    assert not state.can_serve([rows[10]])  # before the latest stored event
    assert not state.can_serve([rows[45], rows[44]])  # out of order among themselves
    assert not state.can_serve([{**rows[45], "username": None}])
    tie = {**rows[39], "event_id": rows[39]["event_id"] + "z"}  # same instant, greater id: after it
    assert state.can_serve([tie])


def test_keys_match_the_sql_definitions(con):
    rows = _stream(200, seed=4)
    add(con, rows)
    from risk.features import KEYS

    exprs = ", ".join(f"{e} AS {k}" for k, e in KEYS.items())
    got = con.execute(f"SELECT event_id, {exprs} FROM events ORDER BY event_id").fetchall()
    by_id = {r["event_id"]: r for r in rows}
    names = list(KEYS)
    for eid, *vals in got:
        assert keys_of(by_id[eid]) == dict(zip(names, vals)), eid


def test_events_arriving_after_later_ones_get_their_time_order_features(con):
    rows = _stream(700, seed=12)
    add(con, rows[:300])
    state = OnlineFeatures()
    state.ensure(con)
    # requests overtaking each other: swap neighbours less than a minute apart
    middle = rows[300:600]
    arrival, late = list(middle), set()
    i = 0
    while i + 1 < len(arrival):
        a, b = arrival[i], arrival[i + 1]
        if (b["creation_date"] - a["creation_date"]).total_seconds() < 60:
            arrival[i], arrival[i + 1] = b, a
            late.add(a["event_id"])
            i += 2
        else:
            i += 1
    assert len(late) > 30
    online = {}
    for r in arrival:
        assert state.can_serve([r])
        online[r["event_id"]] = state.features(r, r["event_response"] == "Pass")
    add(con, middle)
    sql = _sql(con, sorted(late))
    _assert_equal({k: online[k] for k in late}, sql)  # the late ones: as if they had come in time
    # the state after them is the time-ordered one: the next events, in order, are exact too
    rest = rows[600:]
    more = _serve(state, con, rest)
    add(con, rest)
    _assert_equal(more, _sql(con, [r["event_id"] for r in rest]))
    # an event from before the last minute of event time cannot be served from memory
    assert not state.can_serve([{**rows[500], "event_id": "old-1"}])


def test_the_state_reads_only_the_columns_it_declares(con):
    from risk.online import ONLINE_COLUMNS

    class Strict(dict):
        def get(self, k, default=None):
            assert k in ONLINE_COLUMNS, k
            return super().get(k, default)

        def __getitem__(self, k):
            assert k in ONLINE_COLUMNS, k
            return super().__getitem__(k)

    rows = _stream(120, seed=8)
    add(con, rows[:60])
    state = OnlineFeatures()
    state.ensure(con)
    for r in rows[60:]:
        state.features(Strict({k: v for k, v in r.items() if k in ONLINE_COLUMNS}), r["event_response"] == "Pass")
