"""Sign-ins the inline service blocked (its answer's Action was Block) did not happen: they join no user's known
history and count as failed attempts (risk.feedback), in memory, from the store and in batch alike.

Before, a blocked sign-in that the application reported as ``Pass`` (it asks once the password is right) became
the user's history: the attacker's next try from the same IP and device was new to nobody and passed."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from tests.service_support import Service, copy_store, headers, rest_events, rg, trained_base
from tests.storedb import q


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return trained_base(tmp_path_factory)


def _enforced_store(base, path, thresholds=(0.0, 0.0, 0.0)):
    """A copy of the trained store in ENFORCED with every event High (a user without MFA is blocked)."""
    from risk import config as rc
    from risk import levels
    from risk import store as rstore

    db = copy_store(base, path)
    con = rstore.connect(db)
    try:
        rc.set_mode(con, "ENFORCED")
        levels.set_thresholds(con, levels.Thresholds(*thresholds))
        user, pool, last = con.execute(
            """SELECT e.username, any_value(e.user_pool_id), (SELECT max(creation_date) FROM events)
               FROM events e JOIN users u USING (username)
               WHERE coalesce(len(u.mfa_settings), 0) = 0 AND u.preferred_mfa IS NULL AND e.event_response = 'Pass'
               GROUP BY e.username ORDER BY e.username LIMIT 1""").fetchall()[0]
    finally:
        con.close()
    return db, user, pool, last


def _event(template: dict, eid: str, user: str, pool, when: datetime, ip: str) -> dict:
    ev = {k: v for k, v in template.items() if k not in ("Labels",)}
    ev.update(EventId=eid, Username=user, UserPoolId=pool, EventResponse="Pass",
              CreationDate=when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"))
    ev["ContextData"] = {**ev["ContextData"], "IpAddress": ip}
    return ev


def _same(a, b) -> bool:
    return a == b or (a is None and b is None) or (isinstance(a, float) and isinstance(b, float)
                                                   and math.isnan(a) and math.isnan(b))


def _sql_features(db, ids):
    from risk import store as rstore
    from risk.features import compute_features

    con = rstore.connect(db, read_only=True)
    try:
        return {r["event_id"]: r for r in compute_features(con, event_ids=ids).to_pylist()}
    finally:
        con.close()


def test_a_blocked_sign_in_is_no_history_and_a_failure_for_the_retry_over_http(base, tmp_path):
    from risk import store as rstore
    from risk.feedback import set_feedback
    from risk.signals import FEATURE_COLUMNS

    db, user, pool, last = _enforced_store(base, tmp_path / "s.duckdb")
    tpl = rest_events(base)[0]
    t = last + timedelta(days=1)
    ip = "45.33.32.157"
    e1, e2, e3 = (_event(tpl, f"blk-{i}", user, pool, t + timedelta(minutes=i), ip) for i in (1, 2, 3))
    with Service(db) as svc, httpx.Client(timeout=30) as client:
        out = [client.post(svc.url + "/v1/evaluate?features=true", json=e, headers=headers()).json() for e in (e1, e2)]
    assert [o["Action"] for o in out] == ["Block", "Block"], out
    f1, f2 = out[0]["Features"], out[1]["Features"]
    # the retry: the address, network and device are as new as before, the history no longer, one failure more
    assert (f2["new_ip"], f2["new_device"], f2["history_size"]) == (1.0, f1["new_device"], f1["history_size"])
    assert (f2["user_failures_1h"], f2["ip_failures_1h"]) == (f1["user_failures_1h"] + 1, f1["ip_failures_1h"] + 1)
    assert q(db, "SELECT event_id FROM prevented_events ORDER BY 1") == [("blk-1",), ("blk-2",)]
    # AdminListUserAuthEvents lists them as the failed attempts they were (the application reported Pass)
    from risk.auth_events import list_user_auth_events

    from risk import insights

    con = rstore.connect(db, read_only=True)
    try:
        listed = {e["EventId"]: e for e in list_user_auth_events(con, user, user_pool_id=pool)["AuthEvents"]}
        # the dashboard's views say the same: its event list and detail, and "sign-ins passed" leaves them out
        found, _ = insights.search_events(con, insights.EventFilters(username=user), limit=10_000)
        shown = dict(zip(found["event_id"], found["response"]))
        detail = insights.event_detail(con, "blk-1")["event_response"]
        passed = insights.overview_metrics(con)["sign_ins_passed"]
        all_passed = q(db, "SELECT count(*) FROM events WHERE event_type = 'SignIn' AND event_response = 'Pass'")[0][0]
    finally:
        con.close()
    assert [(listed[i]["EventResponse"], listed[i]["EventRisk"]["RiskDecision"]) for i in ("blk-1", "blk-2")] == [
        ("Fail", "Block")] * 2
    assert (shown["blk-1"], shown["blk-2"], detail, passed) == ("Fail", "Fail", "Fail", all_passed - 2)
    assert q(db, "SELECT DISTINCT event_response FROM events WHERE event_id LIKE 'blk-%'") == [("Pass",)]  # as sent
    # the store says the same (batch rescoring reads it): every feature equal to the service's
    sql = _sql_features(db, ["blk-1", "blk-2"])
    for o, eid in zip(out, ("blk-1", "blk-2")):
        bad = [c for c in FEATURE_COLUMNS if not _same(o["Features"][c], sql[eid][c])]
        assert bad == [], [(c, o["Features"][c], sql[eid][c]) for c in bad]
    # "this was me" on the first: it is the user's sign-in after all; the second is still a failed attempt
    con = rstore.connect(db)
    try:
        set_feedback(con, "blk-1", "Valid", "User")
    finally:
        con.close()
    with Service(db) as svc, httpx.Client(timeout=30) as client:
        o3 = client.post(svc.url + "/v1/evaluate?features=true", json=e3, headers=headers()).json()
    f3 = o3["Features"]
    assert (f3["new_ip"], f3["history_size"], f3["user_failures_1h"]) == (0.0, f1["history_size"] + 1,
                                                                           f1["user_failures_1h"] + 1)
    assert all(_same(f3[c], v) for c, v in
               {c: _sql_features(db, ["blk-3"])["blk-3"][c] for c in FEATURE_COLUMNS}.items())


@pytest.fixture
def inline(base, tmp_path):
    from ingest.enrich import Enricher
    from ingest.geo import GeoResolver
    from risk import store as rstore
    from risk.inline import InlineScorer

    db, user, pool, last = _enforced_store(base, tmp_path / "inline.duckdb")
    con = rstore.connect(db)
    scorer = InlineScorer(con, enricher=Enricher(geo=GeoResolver.from_settings(None, None)))
    try:
        yield con, scorer, user, pool, last
    finally:
        scorer.close()
        con.close()


def _evaluate(scorer, events):
    from risk.inline import InlineRequest

    results, _ = scorer.evaluate([InlineRequest(dict(e), want_features=True) for e in events])
    assert not [r for r in results if isinstance(r, Exception)], results
    scorer.flush()
    return {r.assessment["event_id"]: r for r in results}


def _check_against_sql(con, got: dict) -> None:
    from risk.features import compute_features
    from risk.signals import FEATURE_COLUMNS

    sql = {r["event_id"]: r for r in compute_features(con, event_ids=list(got)).to_pylist()}
    for eid, r in got.items():
        bad = [c for c in FEATURE_COLUMNS if not _same(r.features[c], sql[eid][c])]
        assert bad == [], (eid, [(c, r.features[c], sql[eid][c]) for c in bad])


@pytest.mark.parametrize("gap", [timedelta(minutes=1), timedelta(hours=2)], ids=["a-minute-apart", "hours-apart"])
def test_a_batch_decides_each_event_on_what_was_decided_before_it(base, inline, gap):
    """Two sign-ins of the user in one batch: the second is assessed knowing that the first was blocked, from
    memory also when they are further apart than risk.online.REORDER_US (the batch's events are kept until it is
    decided: it fell back to the store, which reloaded the whole state for the next request)."""
    con, scorer, user, pool, last = inline
    tpl = rest_events(base)[0]
    t = last + timedelta(days=1)
    other = rest_events(base)[1]
    e1 = _event(tpl, "b-1", user, pool, t, "45.33.32.157")
    e2 = _event(tpl, "b-2", user, pool, t + gap, "45.33.32.157")
    bystander = dict(other, EventId="b-3", CreationDate=(t + gap / 2).isoformat().replace("+00:00", "Z"))
    got = _evaluate(scorer, [e1, bystander, e2])
    assert got["b-1"].assessment["blocked"] and got["b-2"].assessment["blocked"]
    f1, f2 = got["b-1"].features, got["b-2"].features
    assert (f2["new_ip"], f2["history_size"], f2["user_failures_24h"]) == (1.0, f1["history_size"],
                                                                           f1["user_failures_24h"] + 1)
    assert q_con(con, "SELECT count(*) FROM prevented_events WHERE event_id IN ('b-1', 'b-2')") == 2
    _check_against_sql(con, got)
    assert scorer.online_events == 3 and scorer.online.loads == 1  # from memory, recounted there


def q_con(con, sql):
    return con.execute(sql).fetchall()[0][0]


def test_a_retry_in_a_batch_with_new_events_goes_through_the_store_and_is_exact(base, inline):
    con, scorer, user, pool, last = inline
    tpl = rest_events(base)[0]
    t = last + timedelta(days=1)
    first = _evaluate(scorer, [_event(tpl, "r-0", user, pool, t, "81.2.69.160")])
    assert first["r-0"].assessment["blocked"]
    e1 = _event(tpl, "r-1", user, pool, t + timedelta(minutes=1), "45.33.32.157")
    e2 = _event(tpl, "r-2", user, pool, t + timedelta(minutes=2), "45.33.32.157")
    e3 = _event(tpl, "r-3", user, pool, t + timedelta(days=1), "45.33.32.157")  # everyone's counts before its day
    builds = scorer.global_counts.builds
    got = _evaluate(scorer, [_event(tpl, "r-0", user, pool, t, "81.2.69.160"), e1, e2, e3])
    assert got["r-0"].duplicate and got["r-2"].assessment["blocked"] and got["r-3"].assessment["blocked"]
    # everyone's counts in memory were corrected for each prevented event, not built again from the store
    assert scorer.global_counts.builds <= builds + 1
    f1, f2 = got["r-1"].features, got["r-2"].features
    assert (f2["new_ip"], f2["history_size"], f2["user_failures_1h"]) == (1.0, f1["history_size"],
                                                                          f1["user_failures_1h"] + 1)
    del got["r-0"]  # a retry: its stored answer, no features computed now
    _check_against_sql(con, got)


def test_batch_scoring_records_nothing_prevented(base, tmp_path):
    """`riskgate score` assesses stored sign-ins, which have happened: its blocks prevent nothing."""
    db, *_ = _enforced_store(base, tmp_path / "b.duckdb")
    rg("score", db=db)
    assert q(db, "SELECT count(*) FROM assessments WHERE blocked")[0][0] > 0
    assert q(db, "SELECT count(*) FROM prevented_events") == [(0,)]
