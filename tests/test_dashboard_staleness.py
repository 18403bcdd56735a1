"""The dashboard follows the store: a page drawn after another process wrote it (``riskgate ingest``,
``riskgate feedback`` through the CLI, or another connection) shows what was written, while pages drawn again
with nothing written reuse the cached results (``dashboards.common.store_signature``).

Built on the known store of ``tests/dashboard_store.py`` (10 assessed events: 6 labelled legitimate, 3 attacks).
"""

from __future__ import annotations

import functools
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

import risk.store
from dashboards import common
from ingest.store import insert_labels
from ingest.users import set_user_status
from risk import config as rc
from risk import feedback, insights, levels
from risk.model import registry
from tests import dashboard_store as known
from tests import events_gen
from tests.test_dashboard import app, base_store, db, metrics, texts  # noqa: F401 (base_store, db: fixtures)
from tests.test_dashboard_fixes import _event, add_rows

ROOT = Path(__file__).resolve().parent.parent


def riskgate(*args) -> str:
    """`riskgate ARGS` in its own process (as a person at a shell would run it)."""
    res = subprocess.run([sys.executable, "-m", "cli", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def count_calls(monkeypatch, module, *names) -> dict:
    """Count the calls of ``module.name`` (the cached queries look the function up by name on a miss)."""
    calls = dict.fromkeys(names, 0)
    for name in names:
        fn = getattr(module, name)

        def counted(*a, _fn=fn, _name=name, **k):
            calls[_name] += 1
            return _fn(*a, **k)

        monkeypatch.setattr(module, name, functools.wraps(fn)(counted))
    return calls


def sidebar(at) -> str:
    return "\n".join(c.value for c in at.sidebar.caption)


def test_pages_show_what_riskgate_ingest_added_and_reuse_the_cache_while_nothing_changes(db, tmp_path, monkeypatch):
    calls = count_calls(monkeypatch, insights, "store_bounds", "overview_metrics")
    at = app()
    assert metrics(at)["Sign-ins"] == "9" and "· 11 events" in sidebar(at)
    assert calls == {"store_bounds": 1, "overview_metrics": 1}

    at.run()  # drawn again, nothing written: every query from the cache
    assert not at.exception
    assert metrics(at)["Sign-ins"] == "9" and "· 11 events" in sidebar(at)
    assert calls == {"store_bounds": 1, "overview_metrics": 1}

    new = tmp_path / "new.jsonl"
    events_gen.write_jsonl(new, [events_gen.event(i, UserPoolId=known.POOL, CreationDate=f"2026-03-05T13:0{i}:00Z")
                                 for i in range(2)])
    assert "events added 2" in riskgate("ingest", new, "--db", db)
    at.run()  # within CACHE_TTL_S of the first draw
    assert not at.exception
    assert metrics(at)["Sign-ins"] == "11" and "· 13 events" in sidebar(at)
    assert calls == {"store_bounds": 2, "overview_metrics": 2}


def test_the_tuning_page_shows_feedback_riskgate_feedback_recorded(db, monkeypatch):
    calls = count_calls(monkeypatch, insights, "tuning_snapshot")
    at = app("tuning")
    assert "10 assessed events (every event type): 6 legitimate, 3 attacks" in texts(at)
    at.run()
    assert not at.exception and calls == {"tuning_snapshot": 1}  # the prepared history reused

    out = riskgate("feedback", "e06", "invalid", "--db", db)  # e06, not labelled: now an attack
    assert "Invalid" in out
    at.run()  # long before the history's 5 minutes are over
    assert not at.exception
    assert "10 assessed events (every event type): 6 legitimate, 4 attacks" in texts(at)
    assert calls == {"tuning_snapshot": 2}


def _prefetchers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "riskgate-tuning-prefetch"]


def _settle() -> None:
    """Wait for the background preparations under way."""
    for t in _prefetchers():
        t.join(timeout=30)


def _feedback(db, value: str) -> None:
    """Feedback on e06 from another connection, as `riskgate feedback` records it."""
    con = risk.store.connect(db)
    try:
        feedback.set_feedback(con, "e06", value)
    finally:
        con.close()


def _overview_prefetched(monkeypatch, every_s: float):
    """The overview drawn with the background preparation on (at most one every ``every_s`` seconds) and settled:
    (the calls of ``insights.tuning_snapshot`` counted, the app test)."""
    monkeypatch.setattr(common, "PREFETCH", True)
    monkeypatch.setattr(common, "_prefetched", {})
    monkeypatch.setattr(common, "PREFETCH_EVERY_S", every_s)
    _settle()
    calls = count_calls(monkeypatch, insights, "tuning_snapshot")
    at = app()  # the overview; once drawn, the history is prepared in the background
    _settle()
    assert calls == {"tuning_snapshot": 1}
    return calls, at


def test_the_history_prepared_in_the_background_follows_the_store(db, monkeypatch):
    calls, at = _overview_prefetched(monkeypatch, 0.0)
    at.run()
    _settle()
    assert calls == {"tuning_snapshot": 1}  # the store unchanged: not prepared again

    _feedback(db, "Invalid")
    at.run()
    workers = _prefetchers()
    assert workers, "the store changed: its history should be prepared again after the page"
    _settle()
    assert calls == {"tuning_snapshot": 2}

    def not_again(*a, **k):
        raise AssertionError("the history should have been prepared in the background")

    monkeypatch.setattr(insights, "tuning_snapshot", not_again)
    at.switch_page("views/tuning.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "10 assessed events (every event type): 6 legitimate, 4 attacks" in texts(at)


def test_a_store_written_all_the_time_is_prepared_in_the_background_at_most_every_so_often(db, monkeypatch):
    """With the service beside it the store changes at every sign-in: a page drawn after each change used to start
    preparing the (seconds-long) Tuning history again each time."""
    calls, at = _overview_prefetched(monkeypatch, 3600.0)
    for value in ("Invalid", "Valid"):
        _feedback(db, value)
        at.run()
        assert not _prefetchers()
    assert calls == {"tuning_snapshot": 1}  # the store changed twice: not prepared again within the hour
    monkeypatch.setattr(common, "PREFETCH_EVERY_S", 0.0)
    at.run()
    _settle()
    assert calls == {"tuning_snapshot": 2}


# -- the signature itself: each kind of write moves it, reading does not -----------------------------------------

NOW = datetime(2026, 3, 7, tzinfo=timezone.utc)


def _ingest(con, path):
    con.close()
    add_rows(path, events=[_event("n1", datetime(2026, 3, 5, 14, tzinfo=timezone.utc))])


def _rescore(con, path):  # as `riskgate score --rescore`: the event's assessment replaced (same count)
    con.execute("CREATE TEMP TABLE again AS SELECT * FROM assessments WHERE event_id = ?", ["e01"])
    con.execute("UPDATE again SET scored_at = ?, run_id = ?", [NOW, "score-2"])
    con.execute("DELETE FROM assessments WHERE event_id = ?", ["e01"])
    con.execute("INSERT INTO assessments SELECT * FROM again")


WRITES = {
    "events ingested": _ingest,
    "assessment rescored": _rescore,
    "feedback": lambda con, path: feedback.set_feedback(con, "e06", "Invalid"),
    "label": lambda con, path: insert_labels(con, pa.table(
        {"event_id": ["e06"], "label": ["attack_type"], "value": ["x"], "source": ["test"]})),
    "thresholds": lambda con, path: levels.set_thresholds(con, levels.Thresholds(0.1, 0.2, 0.3), source="cli"),
    "mode": lambda con, path: rc.set_mode(con, "ENFORCED", known.POOL),
    "score run ended": lambda con, path: con.execute(
        "UPDATE score_runs SET status = ?, finished_at = ? WHERE run_id = ?", ["interrupted", NOW, "score-1"]),
    "ingest run ended": lambda con, path: con.execute(
        "UPDATE ingest_runs SET events_added = ? WHERE run_id = ?", [10, "ingest-1"]),
    "model activated": lambda con, path: registry.activate(con, 2),  # as `riskgate models --activate 2`
    "user status": lambda con, path: set_user_status(con, "alice", "RESET_REQUIRED", known.POOL),
}


def _signature(path) -> tuple:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return common.store_signature(con, str(path))
    finally:
        con.close()


@pytest.mark.parametrize("write", WRITES)
def test_the_signature_moves_with_every_kind_of_write_and_only_then(db, write):
    con = risk.store.connect(db)
    try:  # a model in force and a user, for the writes that change them in place
        con.execute("INSERT INTO models (version, created_at, kind, features, sha256, model, active) "
                    "VALUES (1, $t, 'test', '[]', 'x', $m, true), (2, $t, 'test', '[]', 'y', $m, false)",
                    {"t": NOW, "m": b""})
        set_user_status(con, "alice", "CONFIRMED", known.POOL)
    finally:
        con.close()
    before = _signature(db)
    assert _signature(db) == before  # read again (another connection), nothing written
    con = risk.store.connect(db)
    try:
        WRITES[write](con, db)
    finally:
        con.close()
    after = _signature(db)
    assert after != before
    rows = len(before) - len(common._file_stamp(str(db)))
    assert after[:rows] != before[:rows]  # what the store holds tells it, not only the file's time
