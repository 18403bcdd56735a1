"""risk.inline's shortcuts (state in memory; global counts in memory) give the features of the full computation."""

from __future__ import annotations

import json
import math

import pytest

from tests.service_support import copy_store, rest_events, trained_base


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return trained_base(tmp_path_factory)


def _same(a: list[dict], b: list[dict]) -> list:
    diffs = []
    for r1, r2 in zip(a, b, strict=True):
        for k in r1:
            x, y = r1[k], r2[k]
            if not (x == y or (x is None and y is None) or (isinstance(x, float) and isinstance(y, float)
                                                            and math.isnan(x) and math.isnan(y))):
                diffs.append((r1["event_id"], k, x, y))
    return diffs


@pytest.fixture
def inline(base, tmp_path):
    """(store connection, InlineScorer) on a copy of the trained base store; closed after the test."""
    from ingest.enrich import Enricher
    from ingest.geo import GeoResolver
    from risk import store as rstore
    from risk.inline import InlineScorer

    con = rstore.connect(copy_store(base, tmp_path / "inline.duckdb"))
    scorer = InlineScorer(con, enricher=Enricher(geo=GeoResolver.from_settings(None, None)))
    try:
        yield con, scorer
    finally:
        scorer.close()
        con.close()


def _features_of(results) -> dict[str, dict]:
    return {r.assessment["event_id"]: r.features for r in results}


def test_online_and_global_count_paths_stay_exact_through_feedback_and_other_writers(base, inline):
    from risk.feedback import set_feedback
    from risk.features import GlobalCounts, compute_features
    from risk.inline import InlineRequest

    con, scorer = inline
    events = rest_events(base)

    def evaluate(batch):
        results, _ = scorer.evaluate([InlineRequest(dict(e), want_features=True) for e in batch])
        assert all(not isinstance(r, Exception) for r in results)
        scorer.flush()
        return _features_of(results)

    def sql(ids):
        return {r["event_id"]: {k: v for k, v in r.items() if k in got[r["event_id"]]}
                for r in compute_features(con, event_ids=ids).to_pylist()}

    # new events in time order, a batch spanning days: features from memory, equal to the SQL's
    got = evaluate(events[:20])
    assert scorer.online_events == 20 and scorer.online.loads == 1
    assert _same(list(got.values()), list(sql(list(got)).values())) == []
    # feedback written by others (the service's calls say so with store_changed): reloaded, still exact
    old = [r[0] for r in con.execute(
        "SELECT event_id FROM events WHERE event_response = 'Pass' ORDER BY creation_date LIMIT 50").fetchall()]
    for eid in old:
        set_feedback(con, eid, "Invalid", "Admin")
    scorer.store_changed()
    got = evaluate(events[20:30])
    assert scorer.online.loads == 2 and scorer.online_events == 30
    assert _same(list(got.values()), list(sql(list(got)).values())) == []
    # an event older than the stored ones cannot come from memory: the SQL path with the global counts
    gc = scorer.global_counts
    late = dict(events[30], EventId="late-0001", CreationDate=events[0]["CreationDate"])
    got = evaluate([late])
    assert scorer.online_events == 30 and gc.builds == 1
    assert _same(list(got.values()), list(sql(list(got)).values())) == []
    ids = [e["EventId"] for e in events[:30]] + ["late-0001"]
    assert _same(compute_features(con, event_ids=ids, global_counts=gc).to_pylist(),
                 compute_features(con, event_ids=ids).to_pylist()) == []
    fresh = GlobalCounts()
    fresh.ensure(con)
    assert _same(compute_features(con, event_ids=ids, global_counts=fresh).to_pylist(),
                 compute_features(con, event_ids=ids, global_counts=gc).to_pylist()) == []
    # the next in-order event: the state reloads (the late event was written behind it) and serves again
    got = evaluate(events[31:33])
    assert scorer.online_events == 32 and scorer.online.loads == 3
    assert _same(list(got.values()), list(sql(list(got)).values())) == []


def test_write_behind_answers_first_then_stores_each_event_once(base, inline):
    from risk.inline import InlineRequest

    con, scorer = inline
    events = rest_events(base)
    before = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
    first, _ = scorer.evaluate([InlineRequest(dict(events[0]))])
    # answered, not yet written
    assert scorer.pending() == 1
    assert con.execute("SELECT count(*) FROM events").fetchall()[0][0] == before
    # a retry before the write: written first, then answered from the store, the same answer
    again, _ = scorer.evaluate([InlineRequest(dict(events[0]))])
    assert again[0].duplicate and again[0].assessment["score"] == first[0].assessment["score"]
    assert con.execute("SELECT count(*) FROM events").fetchall()[0][0] == before + 1
    # through the writer thread: handed over without waiting, then waited for
    for e in events[1:6]:
        scorer.evaluate([InlineRequest(dict(e))])
    assert scorer.flush(wait=False) == 5 and scorer.pending() == 0
    scorer.flush(wait=True)
    ids = [e["EventId"] for e in events[:6]]
    marks = ", ".join("?" * len(ids))
    assert con.execute(f"SELECT count(*) FROM events WHERE event_id IN ({marks})", ids).fetchall()[0][0] == 6
    assert con.execute(f"SELECT count(*) FROM assessments WHERE event_id IN ({marks})", ids).fetchall()[0][0] == 6
    assert scorer.write_errors == 0 and scorer.online_events == 6


def test_an_event_id_reused_for_another_sign_in_is_refused_not_answered_with_the_first_ones_assessment(base, inline):
    """A retry (the same user, pool, event type and response under its EventId) gets the stored answer; the same
    EventId for another sign-in -- another user, or a failure reported under a success's id -- is refused with
    the reason and stores nothing, whether the first is still waiting to be written, stored, or earlier in the
    same batch."""
    from risk.inline import InlineEventError, InlineRequest

    con, scorer = inline
    events = rest_events(base)
    a, b = dict(events[0]), dict(events[1])
    assert a["Username"] != b["Username"]
    first, _ = scorer.evaluate([InlineRequest(dict(a))])
    assert scorer.pending() == 1  # answered, not yet written
    other_user = {**b, "EventId": a["EventId"]}
    other_response = {**a, "EventResponse": "Fail" if a["EventResponse"] == "Pass" else "Pass"}
    got, _ = scorer.evaluate([InlineRequest(dict(other_user)), InlineRequest(dict(a)),
                              InlineRequest(dict(other_response))])
    assert isinstance(got[0], InlineEventError) and isinstance(got[2], InlineEventError)
    assert f"EventId {a['EventId']!r} already stands for another sign-in (username {a['Username']!r}" in str(got[0])
    assert got[1].duplicate and got[1].assessment == first[0].assessment
    # in one batch, neither stored: the first is assessed, the other refused
    c = dict(events[2])
    got, _ = scorer.evaluate([InlineRequest(dict(c)), InlineRequest({**b, "EventId": c["EventId"]})])
    assert not got[0].duplicate and isinstance(got[1], InlineEventError)
    scorer.flush(wait=True)
    rows = con.execute("SELECT event_id, username, event_response FROM events WHERE event_id IN (?, ?)",
                       [a["EventId"], c["EventId"]]).fetchall()
    assert sorted(rows) == sorted([(a["EventId"], a["Username"], a["EventResponse"]),
                                   (c["EventId"], c["Username"], c["EventResponse"])])


def test_no_password_is_checked_where_no_risk_is_evaluated(base, tmp_path):
    """A skipped or blocked IP range means no risk detection, compromised credentials included (decide()): the
    password is not checked and no check is recorded -- it used to be recorded as blocked while the answer
    allowed the sign-in. Elsewhere the check counts and blocks (ENFORCED, BLOCK)."""
    from ingest.enrich import Enricher
    from ingest.geo import GeoResolver
    from risk import config as rc
    from risk import store as rstore
    from risk.credentials import CredentialChecker
    from risk.inline import InlineRequest, InlineScorer

    con = rstore.connect(copy_store(base, tmp_path / "cc.duckdb"))
    events = rest_events(base)[:3]
    pool = events[0]["UserPoolId"]
    rc.set_configuration(con, rc.RiskConfiguration.model_validate({
        "UserPoolId": pool, "CompromisedCredentialsRiskConfiguration": {"Actions": {"EventAction": "BLOCK"}},
        "RiskExceptionConfiguration": {"SkippedIPRangeList": ["203.0.113.0/24"],
                                       "BlockedIPRangeList": ["198.51.100.0/24"]}}))
    rc.set_mode(con, "ENFORCED", pool)
    ips = ["203.0.113.9", "198.51.100.7", None]  # skipped, blocked, the event's own
    bodies = []
    for e, ip in zip(events, ips):
        e = json.loads(json.dumps(e))
        assert e["UserPoolId"] == pool and e["EventType"] == "SignIn"
        if ip:
            e["ContextData"]["IpAddress"] = ip
        bodies.append(e)
    scorer = InlineScorer(con, enricher=Enricher(geo=GeoResolver.from_settings(None, None)),
                          checker=CredentialChecker.from_env().open())
    try:
        got, _ = scorer.evaluate([InlineRequest(b, "RISKGATE-TEST-" + b["EventId"]) for b in bodies])
        scorer.flush(wait=True)
        assert got[0].assessment["outcome"] in ("Allow", "MfaChallenge")  # skipped: challenged only for own MFA
        assert [r.assessment["outcome"] for r in got[1:]] == ["Block", "Block"]
        assert [r.assessment["compromised_credentials_detected"] for r in got] == [False, False, True]
        ids = [b["EventId"] for b in bodies]
        checks = con.execute("SELECT event_id, compromised, blocked FROM credential_checks WHERE event_id IN "
                             "(?, ?, ?)", ids).fetchall()
        assert checks == [(ids[2], True, True)]
    finally:
        scorer.close()
        con.close()


def test_the_first_events_of_a_pool_in_a_store_of_pool_less_history_get_what_batch_scoring_gives(base, inline):
    """A history without pool ids (an RBA CSV, say) and users loaded without one, then the service's sign-ins of
    pool P: once P is stored, the history and the users are P's (the store's only pool). The service must
    assess P's first events against them, as ``riskgate score --rescore`` of the same store does."""
    from risk import score as rs
    from risk.inline import InlineRequest

    con, scorer = inline
    con.execute("UPDATE events SET user_pool_id = NULL")
    con.execute("UPDATE users SET user_pool_id = NULL, pool_key = ''")
    con.execute("UPDATE users SET mfa_settings = ['SOFTWARE_TOKEN_MFA']")  # everyone: decisions depend on it
    events = rest_events(base)
    assert len({e["UserPoolId"] for e in events}) == 1
    scorer.store_changed()
    answered = {}
    for batch in (events[:10], events[10:30]):
        results, _ = scorer.evaluate([InlineRequest(dict(e), want_features=True) for e in batch])
        assert all(not isinstance(r, Exception) for r in results)
        answered.update({r.assessment["event_id"]: r for r in results})
    scorer.flush()
    assert scorer.online_events >= 20  # the second batch came from memory, with the store's new pool
    fields = ("score", "risk_level", "risk_decision", "outcome", "mfa_challenge", "would_notify")
    served = {e: {f: answered[e].assessment[f] for f in fields} for e in answered}
    rs.score_events(con, rescore=True)
    batch = {r[0]: dict(zip(fields, r[1:])) for r in con.execute(
        f"SELECT event_id, {', '.join(fields)} FROM assessments WHERE event_id IN "
        f"({', '.join('?' * len(served))})", list(served)).fetchall()}
    assert served == batch
    sizes = [answered[e].features["history_size"] for e in answered]
    assert max(sizes) > 5  # the pool-less history counted for P's users
