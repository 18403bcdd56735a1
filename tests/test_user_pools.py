"""A user is a username in its pool: features (SQL and the service's in-memory state) never mix two pools' users."""

from __future__ import annotations

import pytest

import risk.store
from risk import config as rc
from risk.features import compute_features, unpooled_pool
from risk.online import OnlineFeatures
from tests.test_features import SYDNEY, add, ev
from tests.test_online import _assert_equal, _serve, _sql, _stream

NOVELTY = ["new_ip", "new_ip_prefix", "new_asn", "new_country", "new_city", "new_device"]


@pytest.fixture
def con(tmp_path, monkeypatch):
    monkeypatch.delenv(rc.POOL_ENV, raising=False)
    c = risk.store.connect(tmp_path / "s.duckdb")
    yield c
    c.close()


def feats(con, **kw) -> dict[str, dict]:
    return {r["event_id"]: r for r in compute_features(con, **kw).to_pylist()}


def test_the_same_username_in_another_pool_is_another_user(con):
    # alice of P1 signs in three times from London; alice of P2 then signs in from the same address and device
    add(con, [ev("a1", "alice", 0, user_pool_id="P1"), ev("a2", "alice", 60, user_pool_id="P1"),
              ev("a3", "alice", 120, user_pool_id="P1"),
              ev("b1", "alice", 180, user_pool_id="P2"), ev("a4", "alice", 240, user_pool_id="P1")])
    f = feats(con)
    # a brand-new user of P2: no history, everything new, nothing since a last sign-in
    assert f["b1"]["history_size"] == 0.0
    assert [f["b1"][c] for c in NOVELTY] == [1.0] * 6
    assert f["b1"]["hours_since_last_success"] is None
    # and P1's alice is not disturbed by her: three earlier sign-ins, the last one two hours before
    assert f["a4"]["history_size"] == 3.0 and f["a4"]["hours_since_last_success"] == pytest.approx(2.0)
    assert [f["a4"][c] for c in NOVELTY] == [0.0] * 6


def test_two_pools_users_of_one_name_count_as_two_users_from_an_address(con):
    add(con, [ev("a1", "alice", 0, response="Fail", user_pool_id="P1"),
              ev("b1", "alice", 5, response="Fail", user_pool_id="P2"),
              ev("c1", "carol", 10, user_pool_id="P1")])
    f = feats(con)
    assert f["c1"]["ip_users_1h"] == 2.0 and f["c1"]["ip_failures_1h"] == 2.0
    # each alice has one failure of her own
    add(con, [ev("a2", "alice", 20, user_pool_id="P1")])
    assert feats(con)["a2"]["user_failures_1h"] == 1.0


def test_events_without_a_pool_belong_to_the_stores_only_pool(con):
    # history ingested without a UserPoolId (an RBA CSV, say), then sign-ins of pool P1: one user
    add(con, [ev("h1", "alice", 0, user_pool_id=None), ev("h2", "alice", 60, user_pool_id=None),
              ev("p1", "alice", 120, user_pool_id="P1")])
    assert unpooled_pool(con) == "P1"
    f = feats(con)
    assert f["p1"]["history_size"] == 2.0 and f["p1"]["new_ip"] == 0.0


def test_in_a_store_of_several_pools_events_without_one_follow_the_variable(con, monkeypatch):
    add(con, [ev("h1", "alice", 0, user_pool_id="P1"), ev("h2", "alice", 60, user_pool_id="P2"),
              ev("h3", "alice", 90, user_pool_id="P2"), ev("x1", "alice", 120)])
    assert unpooled_pool(con) is None
    assert feats(con)["x1"]["history_size"] == 0.0  # a user of no pool: neither alice
    monkeypatch.setenv(rc.POOL_ENV, "P2")
    assert feats(con)["x1"]["history_size"] == 2.0  # P2's alice
    monkeypatch.setenv(rc.POOL_ENV, "P1")
    assert feats(con)["x1"]["history_size"] == 1.0


def test_windows_over_history_give_the_same_features_as_one_call(con):
    # the history before a call's rows is aggregated per user: it must keep the pools apart too
    rows = [ev(f"e{i:03d}", f"u{i % 3}", i * 50.0, user_pool_id=("P1", "P2", None)[i % 4 % 3],
               ip=("81.2.69.160", "1.120.0.9")[i % 2], **(SYDNEY if i % 5 == 0 else {}))
            for i in range(120)]
    add(con, rows)
    whole = feats(con)
    mid = rows[70]["creation_date"]
    parts = {**feats(con, until=mid), **feats(con, since=mid)}
    assert parts == whole
    assert len({r["history_size"] for r in whole.values()}) > 10


def test_the_services_state_keeps_pools_apart_exactly_as_the_sql(con):
    rows = _stream(900, seed=11)
    for k, r in enumerate(rows):  # a store of two pools, some events without one
        r["user_pool_id"] = ("P1", "P2", None)[k % 3]
    add(con, rows[:500])
    state = OnlineFeatures()
    state.ensure(con)
    assert state.unpooled is None
    online = _serve(state, con, rows[500:])
    add(con, rows[500:])
    sql = _sql(con, [r["event_id"] for r in rows[500:]])
    assert _assert_equal(online, sql) > 0
    # the pools made a difference: the same username had different histories in P1 and P2
    sizes = {}
    for r in rows[500:]:
        sizes.setdefault(r["username"], set()).add(sql[r["event_id"]]["history_size"])
    assert all(len(s) > 1 for s in sizes.values())


def test_the_services_state_reloads_when_a_pool_gets_configured(con):
    # one pool known from the events: pool-less events are its users; a configuration for a second pool
    # makes them users of no pool, and the state must notice it although no event or feedback changed
    add(con, [ev("h1", "alice", 0, user_pool_id="P1"), ev("h2", "alice", 60)])
    state = OnlineFeatures()
    state.ensure(con)
    assert state.unpooled == "P1"
    rc.set_mode(con, "ENFORCED", "P2")
    state.ensure(con)
    assert state.loads == 2 and state.unpooled is None
    new = [ev("n1", "alice", 120)]
    online = _serve(state, con, new)
    add(con, new)
    _assert_equal(online, _sql(con, ["n1"]))
    assert online["n1"]["history_size"] == 1.0  # h2 only, another user of no pool; P1's h1 no longer counts
