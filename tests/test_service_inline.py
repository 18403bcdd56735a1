"""risk.inline's shortcut: features of a few events with everyone's counts kept in memory equal the full computation."""

from __future__ import annotations

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


def test_global_counts_stay_exact_through_new_events_feedback_and_other_writers(base, tmp_path):
    from ingest.enrich import Enricher
    from ingest.geo import GeoResolver
    from risk import store as rstore
    from risk.feedback import set_feedback
    from risk.features import GlobalCounts, compute_features
    from risk.inline import InlineRequest, InlineScorer

    db = copy_store(base, tmp_path / "g.duckdb")
    con = rstore.connect(db)
    try:
        scorer = InlineScorer(con, enricher=Enricher(geo=GeoResolver.from_settings(None, None)))
        events = rest_events(base)
        # a batch spanning days: later events count the earlier ones of the same batch
        results, _ = scorer.evaluate([InlineRequest(dict(e)) for e in events[:20]])
        assert all(not isinstance(r, Exception) for r in results)
        ids = [e["EventId"] for e in events[:20]]
        gc = scorer.global_counts
        assert _same(compute_features(con, event_ids=ids, global_counts=gc).to_pylist(),
                     compute_features(con, event_ids=ids).to_pylist()) == []
        builds = gc.builds
        # feedback (anyone's) and events written behind the scorer's back: rebuilt before the next batch
        old = [r[0] for r in con.execute(
            "SELECT event_id FROM events WHERE event_response = 'Pass' ORDER BY creation_date LIMIT 50").fetchall()]
        for eid in old:
            set_feedback(con, eid, "Invalid", "Admin")
        results, _ = scorer.evaluate([InlineRequest(dict(e)) for e in events[20:30]])
        assert gc.builds == builds + 1
        ids = [e["EventId"] for e in events[:30]]
        assert _same(compute_features(con, event_ids=ids, global_counts=gc).to_pylist(),
                     compute_features(con, event_ids=ids).to_pylist()) == []
        # a fresh object agrees with the one kept up to date
        fresh = GlobalCounts()
        fresh.ensure(con)
        assert _same(compute_features(con, event_ids=ids, global_counts=fresh).to_pylist(),
                     compute_features(con, event_ids=ids, global_counts=gc).to_pylist()) == []
        scorer.close()
    finally:
        con.close()
