"""Ctrl-C that reaches a batch's COMMIT after it went through, or a query scanning a registered Arrow table.

An exploratory tester sent SIGINT to `riskgate ingest` at random moments: 7 runs in 10 exited 1 with "cannot
rollback - no transaction is active" or "counting the rows of the object registered as 'agents_' failed:
KeyboardInterrupt" blamed on the input file ("while reading as riskgate-jsonl"), and the printed counts and the
run's row were one batch short of what was stored."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import duckdb
import pytest

from ingest import pipeline, store
from ingest.enrich import Enricher
from ingest.errors import interrupted
from ingest.geo import GeoResolver
from ingest.sources.base import ReaderOptions


def _events(n: int) -> bytes:
    t0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
    return "".join(json.dumps({
        "EventId": f"e{i:04d}", "Username": f"u{i % 7}", "EventType": "SignIn", "EventResponse": "Pass",
        "CreationDate": (t0 + timedelta(minutes=i)).isoformat(),
        "ContextData": {"IpAddress": f"81.2.69.{i % 200}", "ServerName": "a", "ServerPath": "/",
                        "HttpHeaders": [{"headerName": "User-Agent", "headerValue": "Mozilla/5.0"}]}}) + "\n"
        for i in range(n)).encode()


class _RefusedCommit:
    """The store's connection, but DuckDB refuses the ``nth`` COMMIT (a constraint another writer broke): the
    transaction ends without committing and the COMMIT raises."""

    def __init__(self, con, nth: int):
        self._con, self._left = con, nth

    def __getattr__(self, name):
        return getattr(self._con, name)

    def execute(self, sql, *args, **kwargs):
        if isinstance(sql, str) and sql.strip() == "COMMIT":
            self._left -= 1
            if self._left == 0:
                self._con.execute("ROLLBACK")
                raise duckdb.TransactionException("TransactionContext Error: Failed to commit: PRIMARY KEY or "
                                                  "UNIQUE constraint violation")
        return self._con.execute(sql, *args, **kwargs)


class _Interrupting:
    """The store's connection, but the ``nth`` statement matching ``when`` runs and then Ctrl-C arrives (or
    ``error`` is raised in its place, before it runs)."""

    def __init__(self, con, when, nth: int, error: BaseException | None = None):
        self._con, self._when, self._left, self._error = con, when, nth, error

    def __getattr__(self, name):
        return getattr(self._con, name)

    def execute(self, sql, *args, **kwargs):
        if isinstance(sql, str) and self._when(sql):
            self._left -= 1
            if self._left == 0:
                if self._error is not None:
                    raise self._error
                self._con.execute(sql, *args, **kwargs)
                raise KeyboardInterrupt
        return self._con.execute(sql, *args, **kwargs)


def _run(tmp_path, when, nth, error=None):
    src = tmp_path / "ev.jsonl"
    src.write_bytes(_events(50))
    con = store.connect(tmp_path / "s.duckdb")
    try:
        with pytest.raises(BaseException) as caught:
            pipeline.ingest_paths(_Interrupting(con, when, nth, error), [str(src)],
                                  options=ReaderOptions(batch_rows=10),
                                  enricher=Enricher(geo=GeoResolver.from_settings(None, None)))
        stored = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
        run = con.execute("SELECT status, rows_read, events_added FROM ingest_runs").fetchall()
    finally:
        con.close()
    return caught.value, stored, run


def test_an_interrupt_after_the_commit_went_through_counts_the_batch_and_stays_an_interrupt(tmp_path):
    exc, stored, run = _run(tmp_path, lambda sql: sql.strip() == "COMMIT", 3)
    assert isinstance(exc, KeyboardInterrupt), repr(exc)  # not "cannot rollback - no transaction is active"
    assert stored == 30 and run == [("interrupted", 30, 30)]  # the third batch is stored, and counted


def test_duckdb_reporting_a_keyboard_interrupt_in_a_scan_is_an_interrupt_not_a_bad_input(tmp_path):
    report = duckdb.InvalidInputException(
        "Invalid Input Error: counting the rows of the object registered as 'agents_' failed: KeyboardInterrupt: ")
    assert interrupted(report)
    exc, stored, run = _run(tmp_path, lambda sql: "INSERT INTO events" in sql, 2, report)
    assert exc is report and stored == 10 and run == [("interrupted", 10, 10)]


def test_rollback_says_whether_a_transaction_was_there(tmp_path):
    con = duckdb.connect()
    con.execute("CREATE TABLE t (x INT)")
    con.execute("BEGIN TRANSACTION")
    con.execute("INSERT INTO t VALUES (1)")
    assert store.rollback(con) is True and con.execute("SELECT count(*) FROM t").fetchall() == [(0,)]
    assert store.rollback(con) is False  # nothing to roll back (a COMMIT that went through)


def test_a_commit_duckdb_refuses_is_not_counted(tmp_path):
    """A review found the first version of the fix counting a batch whose COMMIT failed (no transaction is left
    to roll back then either): the run's rows read, kept in each batch's transaction, tell the two apart."""
    src = tmp_path / "ev.jsonl"
    src.write_bytes(_events(50))
    con = store.connect(tmp_path / "s.duckdb")
    try:
        result = pipeline.ingest_paths(_RefusedCommit(con, 3), [str(src)], options=ReaderOptions(batch_rows=10),
                                       enricher=Enricher(geo=GeoResolver.from_settings(None, None)))
        stored = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
        run = con.execute("SELECT status, rows_read, events_added FROM ingest_runs").fetchall()
    finally:
        con.close()
    assert (result.rows_read, result.events_added, stored) == (20, 20, 20)
    assert run == [("completed_with_errors", 20, 20)] and "Failed to commit" in result.errors[0]
