"""Inline decisions: assess sign-in events as an application server presents them, in milliseconds.

An inline event is a riskgate JSON-lines record (``ingest.sources.riskgate_jsonl``)
handed over in a request instead of a file. :class:`InlineScorer` takes a
handful of them at a time (the HTTP service coalesces the requests that arrive
while the previous handful is being assessed) and does what ``riskgate
ingest`` + ``riskgate score`` do:

1. reading and enrichment: a well-formed record in plain Python
   (``ingest.one``, the same client-IP, agent and GeoIP code); any other by
   the riskgate-jsonl reader's SQL and ``ingest.enrich.Enricher`` -- a record
   that ingest would quarantine is refused with the same reasons instead;
2. a presented password is checked against breach data at once
   (``risk.credentials``) and forgotten; only the outcome is kept (the event's
   ``compromised_credentials`` and a ``credential_checks`` row);
3. features: new events, in time order or up to ``risk.online.REORDER_US``
   late, from the in-memory state of ``risk.online.OnlineFeatures`` (read
   from the store once, updated with each event); anything else -- an
   EventId already stored (a retry: it gets the stored answer), an older
   late event -- is stored first and computed by
   ``risk.features.compute_features`` from the store, with everyone's counts
   kept in memory by ``risk.features.GlobalCounts``;
4. the model, levels, exceptions and decision (``risk.score.assess_chunk``).

Events served from memory are answered before they are written: :meth:`InlineScorer.flush`
writes them (events, assessments, checks, resets) in one transaction, from a
writer thread with its own cursor when asked not to wait. Everything that
reads the store for them (the SQL path, the service's calls, a hand-over,
closing) flushes and waits first.

Both feature paths are tested against batch scoring: every feature equal to
the SQL's to the last bit (``tests/test_online.py``), the Python rows equal
to the reader's (``tests/test_inline_one.py``), and a stream replayed through
the service and through ``riskgate ingest`` + ``riskgate score`` gives the same
features and scores (``tests/test_service.py``). Features are point in time:
an event is scored against what was seen before it when it arrives.

Notifications the decisions make due are returned as :class:`DueNotification`
objects for the caller to deliver off the request path; :func:`deliver`
renders and sends one without touching the store, and the caller records it.

One thread drives the scorer (the service's store thread); the only other
thread is its writer. Whoever else writes to the store through this process
must say so (:meth:`InlineScorer.store_changed`) so that the in-memory state
is checked against the store before its next use; other processes' writes
are noticed after a hand-over (:meth:`InlineScorer.refresh`).
"""

from __future__ import annotations

import gc
import json
import logging
import queue
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ingest import store as ingest_store
from ingest.enrich import Enricher
from ingest.errors import RiskgateError
from ingest.schema import EVENT_SCHEMA
from ingest.sources import riskgate_jsonl
from ingest.sources.base import LineBatch, ReaderOptions
from ingest.store import scratch

log = logging.getLogger("riskgate.inline")

SOURCE_FORMAT = riskgate_jsonl.NAME
SOURCE_FILE = "POST /v1/evaluate"
#: the enrichment's output schema (EVENT_SCHEMA, every field nullable)
_NULLABLE_EVENT_SCHEMA = pa.schema([f.with_nullable(True) for f in EVENT_SCHEMA])


class InlineEventError(RiskgateError):
    """An inline event that ingest would quarantine; the message gives every reason."""


@dataclass
class InlineRequest:
    """One event as presented: a riskgate JSON-lines record (dict) and, optionally, the password."""

    record: dict
    password: str | None = field(default=None, repr=False)
    want_features: bool = False


@dataclass(frozen=True)
class DueNotification:
    """A notification a decision made due: what to render and to whom (delivered off the request path)."""

    event: dict
    template_name: str
    template: Any
    notify_config: Any
    recipient: str | None


@dataclass
class Prepared:
    """A batch after the steps that need no store: canonical rows (source_line = index + 1) and refusals."""

    requests: list[InlineRequest]
    good: pa.Table | None
    refused: dict[int, str]


@dataclass
class InlineResult:
    assessment: dict
    duplicate: bool = False
    features: dict | None = None  # the event's features, when asked for and computed now


class InlineScorer:
    """Assesses inline events on one connection (see the module docstring)."""

    def __init__(self, con, *, enricher: Enricher, checker=None, run_id: str | None = None):
        self.con = con
        self.enricher = enricher
        self.checker = checker
        self.run_id = run_id or "inline-" + uuid.uuid4().hex
        self._scratch = scratch()
        self._ctx = None
        from risk.features import GlobalCounts
        from risk.online import OnlineFeatures

        self.global_counts = GlobalCounts()
        self.online = OnlineFeatures()
        self._online_checked = False  # the state was compared with the store since it last changed by others
        self._pending: list[tuple[pa.Table, list, pa.Table]] = []  # answered, to write: (events, checks, assessments)
        self._pending_ids: set[str] = set()
        self._inflight_ids: set[str] = set()  # handed to the writer, not committed yet
        self._ids_lock = threading.Lock()
        self._writes: queue.Queue = queue.Queue()
        self._writer: threading.Thread | None = None
        self.write_errors = 0
        self.write_seconds: deque = deque(maxlen=10_000)  # how long the last writes took
        self.fast_rows = 0  # records canonicalised in Python (the rest by the reader's SQL)
        self.online_events = 0  # events whose features came from the in-memory state (the rest from SQL)

    # -- what a run reads once --------------------------------------------------------------

    def refresh(self) -> None:
        """Forget the model, thresholds, configurations and modes read so far (read again on next use)."""
        self._ctx = None
        self._online_checked = False

    def warm(self) -> None:
        """Do what the first request would otherwise wait for (a quarter of a second): read the model, settings
        and in-memory state, import the modules of the path, and read, enrich and score a made-up event
        (neither stored nor counted)."""
        from risk import credentials, decide, notify, score  # noqa: F401 - imported now, not on a request
        from risk.features import _output_schema

        ctx = self.context
        ctx.preload_users()
        self._online_features(pa.Table.from_pylist([], schema=_NULLABLE_EVENT_SCHEMA))
        sample = {"EventId": "warm-up", "Username": "warm-up", "EventType": "SignIn", "EventResponse": "Pass",
                  "CreationDate": datetime.now(timezone.utc).isoformat(),
                  "ContextData": {"IpAddress": "81.2.69.160", "ServerName": "riskgate", "ServerPath": "/",
                                  "HttpHeaders": [{"headerName": "User-Agent", "headerValue": "Mozilla/5.0"}]}}
        self.prepare([InlineRequest(sample)])
        ctx.model.score_samples(pa.Table.from_pylist([{}], schema=_output_schema()))

    def store_changed(self) -> None:
        """Something else in this process wrote to the store: check the in-memory state against it before use."""
        self._online_checked = False
        if self._ctx is not None:
            self._ctx.forget_users()

    @property
    def context(self):
        from risk.score import _Context

        if self._ctx is None:
            self._ctx = _Context(self.con)
        return self._ctx

    # -- the steps --------------------------------------------------------------------------

    def _canonical(self, requests: list[InlineRequest]) -> tuple[pa.Table, dict[int, str]]:
        """(good rows in EVENT_SCHEMA with source_line = request index + 1, {index: reasons} of refused ones)."""
        texts = [json.dumps(r.record, separators=(",", ":"), ensure_ascii=False) for r in requests]
        lb = LineBatch(pa.array(range(1, len(texts) + 1), pa.int64()), pa.array(texts, pa.string()), [])
        batch = riskgate_jsonl.READER._batch(self._scratch, SOURCE_FILE, lb, ReaderOptions())
        refused: dict[int, str] = {}
        for line, reason in zip(batch.quarantine.column("source_line").to_pylist(),
                                batch.quarantine.column("reason").to_pylist()):
            refused[line - 1] = reason
        if batch.events.num_rows == 0:
            return None, refused
        good, bad = self.enricher.run(batch.events, SOURCE_FORMAT, SOURCE_FILE)
        for line, reason in zip(bad.column("source_line").to_pylist(), bad.column("reason").to_pylist()):
            refused[line - 1] = reason
        return good, refused

    def _check_passwords(self, good: pa.Table, requests: list[InlineRequest]) -> tuple[pa.Table, list]:
        """Set ``compromised_credentials`` from the presented passwords; return the outcomes to record."""
        from risk import config as rc
        from risk import credentials as cr
        from risk.score import _pool_of

        lines = good.column("source_line").to_pylist()
        if self.checker is None or not any(requests[i - 1].password is not None for i in lines):
            return good, []
        flags = good.column("compromised_credentials").to_pylist()
        types = good.column("event_type").to_pylist()
        pools = good.column("user_pool_id").to_pylist()
        clients = good.column("client_id").to_pylist()
        outcomes = []
        for k, line in enumerate(lines):
            req = requests[line - 1]
            if req.password is None:
                continue
            cfg, _ = self.context.config(_pool_of(self.con, pools[k]), clients[k])
            mode, _ = self.context.mode(_pool_of(self.con, pools[k]))
            ccc = cfg.CompromisedCredentialsRiskConfiguration
            event_filter = [str(f) for f in ccc.EventFilter] if ccc is not None and ccc.EventFilter else None
            action = str(ccc.Actions.EventAction) if ccc is not None else "NO_ACTION"
            result = self.checker.check(req.password) if cr.applies(types[k], event_filter) else None
            req.password = None  # checked: forgotten
            outcome = cr.evaluate(types[k], event_filter, action, result)
            if result is not None:
                flags[k] = bool(result.compromised)
            outcomes.append((k, outcome, mode == rc.AdvancedSecurityMode.ENFORCED))
        idx = good.column_names.index("compromised_credentials")
        good = good.set_column(idx, "compromised_credentials", pa.array(flags, pa.bool_()))
        return good, outcomes

    def prepare(self, requests: list[InlineRequest]) -> Prepared:
        """The steps that need no store (ids, times, the reader and the enrichment).

        A well-formed record takes the plain-Python path (``ingest.one``);
        the others go through the reader and enrichment SQL, which gives every
        refusal its reasons. It uses only the scorer's own scratch
        connections, never the store.
        """
        from ingest.one import canonical

        for r in requests:  # Cognito generates event ids and times; a request without them gets fresh ones
            if r.record.get("EventId") is None:
                r.record["EventId"] = uuid.uuid4().hex
            if r.record.get("CreationDate") is None:
                r.record["CreationDate"] = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        try:
            now = datetime.now(timezone.utc)
            rows, slow = [], []
            for i, r in enumerate(requests):
                row = canonical(r.record, self.enricher, source_format=SOURCE_FORMAT, source_file=SOURCE_FILE,
                                source_line=i + 1, now=now)
                (rows.append(row) if row is not None else slow.append(i))
            self.fast_rows += len(rows)
            good = pa.Table.from_pylist(rows, schema=_NULLABLE_EVENT_SCHEMA) if rows else None
            refused: dict[int, str] = {}
            if slow:
                sub = [requests[i] for i in slow]
                slow_good, slow_refused = self._canonical(sub)
                refused = {slow[i]: reason for i, reason in slow_refused.items()}
                if slow_good is not None and slow_good.num_rows:
                    k = slow_good.column_names.index("source_line")
                    lines = pa.array([slow[x - 1] + 1 for x in slow_good.column(k).to_pylist()], pa.int64())
                    slow_good = slow_good.set_column(k, "source_line", lines).cast(_NULLABLE_EVENT_SCHEMA)
                    good = slow_good if good is None else pa.concat_tables([good, slow_good])
        except BaseException:
            for r in requests:
                r.password = None
            raise
        return Prepared(requests, good, refused)

    def evaluate(self, requests: list[InlineRequest]) -> tuple[list[InlineResult | RiskgateError], list[DueNotification]]:
        """Assess the events; one result (or the error refusing it) per request, in order, and the notifications due."""
        results, due = self.finish([self.prepare(requests)])
        return results[0], due

    def finish(self, batches: list[Prepared]) -> tuple[list[list[InlineResult | RiskgateError]], list[DueNotification]]:
        """Assess prepared batches together (and store them, or have them written behind the answer); per batch,
        one result (or error) per request, in order."""
        requests = [r for b in batches for r in b.requests]
        out: list[InlineResult | RiskgateError | None] = [None] * len(requests)
        tables, offset = [], 0
        for b in batches:
            for i, reason in b.refused.items():
                out[offset + i] = InlineEventError(reason)
            if b.good is not None and b.good.num_rows:
                t = b.good
                k = t.column_names.index("source_line")
                tables.append(t.set_column(k, "source_line", pc.add(t.column(k), pa.scalar(offset, pa.int64()))))
            offset += len(b.requests)

        def split(flat: list) -> list[list]:
            res, i = [], 0
            for b in batches:
                res.append(flat[i:i + len(b.requests)])
                i += len(b.requests)
            return res

        try:
            if not tables:
                return split(out), []
            good = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
            good, outcomes = self._check_passwords(good, requests)
        finally:
            for r in requests:
                r.password = None
        ids = good.column("event_id").to_pylist()
        existing = self._existing(ids)
        online = self._online_features(good) if not existing and len(set(ids)) == len(ids) else None
        if online is not None:
            rows, feature_rows, due = self._assess_online(good, online, outcomes, requests)
        else:
            rows, feature_rows, due = self._assess_stored(good, existing, outcomes, requests)
        for k, line in enumerate(good.column("source_line").to_pylist()):
            out[line - 1] = InlineResult(rows[ids[k]], duplicate=ids[k] in existing,
                                         features=feature_rows.get(ids[k]) if requests[line - 1].want_features else None)
        return split(out), due

    def _existing(self, ids: list[str]) -> set[str]:
        """Which of ``ids`` are stored or waiting to be written (the store asked only when they may be)."""
        with self._ids_lock:
            pending = (self._pending_ids | self._inflight_ids) & set(ids)
        if self._online_checked and not pending and not self.online.may_hold(ids):
            return set()
        return ingest_store.existing_event_ids(self.con, ids) | pending

    def _assessed(self, ctx, feats: pa.Table, events: pa.Table, requests) -> tuple[pa.Table, dict]:
        from risk import score as rs

        table = rs.assess_chunk(ctx, feats, events)
        table = table.append_column("run_id", pa.array([self.run_id] * table.num_rows, pa.string()))
        table = table.append_column(
            "scored_at", pa.array([datetime.now(timezone.utc)] * table.num_rows, pa.timestamp("us", tz="UTC")))
        feature_rows = {}
        if any(r.want_features for r in requests):
            from risk.signals import FEATURE_COLUMNS

            feature_rows = {row["event_id"]: {c: row[c] for c in FEATURE_COLUMNS}
                            for row in feats.select(["event_id", *FEATURE_COLUMNS]).to_pylist()}
        return table, feature_rows

    def _due(self, ctx, table: pa.Table, events: pa.Table | None) -> list[DueNotification]:
        from risk import notify as rn
        from risk import score as rs

        return [DueNotification(ev, name, template, notify_config,
                                rn.user_email(self.con, ev["username"]) if ev["username"] else None)
                for ev, name, template, notify_config in rs.due_notifications(ctx, table, events)]

    def _assess_online(self, good, feats, outcomes, requests):
        """New events in order, features from memory: assessed now, written by :meth:`flush` (write-behind)."""
        from risk import score as rs

        ctx = self.context
        self.online_events += good.num_rows
        try:
            table, feature_rows = self._assessed(ctx, feats, good.select(list(rs.EVENT_COLUMNS_TO_ASSESS)), requests)
            due = self._due(ctx, table, good)
        except BaseException:
            self.online.invalidate()  # it counted events that will not be stored
            self._online_checked = False
            raise
        ids = good.column("event_id").to_pylist()
        self._pending.append((good, outcomes, table))
        self._pending_ids.update(ids)
        rows = {r["event_id"]: r for r in table.select(list(rs.ASSESSMENT_COLUMNS)).to_pylist()}
        return rows, feature_rows, due

    def _assess_stored(self, good, existing, outcomes, requests):
        """Any other batch: stored first, then features from the store (SQL), assessed and written."""
        from risk import score as rs
        from risk.features import compute_features

        self.flush()
        self._online_checked = False  # this path writes to the store behind the state
        con = self.con
        ids = good.column("event_id").to_pylist()
        self.global_counts.ensure(con)  # up to date with the store before this batch is written
        con.execute("BEGIN TRANSACTION")
        try:
            ingest_store.insert_events(con, good, self.run_id)
            _record_checks(con, good, outcomes, skip=existing)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        self.global_counts.add(con, [i for i in dict.fromkeys(ids) if i not in existing])
        ctx = self.context
        assessed = rs.assessments_for(con, ids)
        todo = [i for i in dict.fromkeys(ids) if i not in assessed]
        feature_rows, due = {}, []
        if todo:
            feats = compute_features(con, event_ids=todo, global_counts=self.global_counts)
            events = rs.events_to_assess(con, feats)
            table, feature_rows = self._assessed(ctx, feats, events, requests)
            rs._write(con, table)
            rs._apply_resets(con, table, events)
            due = self._due(ctx, table, None)
        return rs.assessments_for(con, ids), feature_rows, due

    def pending(self) -> int:
        """Events answered and not yet handed to the writer."""
        return len(self._pending_ids)

    def flush(self, wait: bool = True) -> int:
        """Write the events answered from memory, with their assessments and checks, in one transaction.

        Returns how many were handed over. ``wait=False`` hands them to the
        writer thread (its own cursor on the store: DuckDB works while this
        thread goes on assessing) and returns at once; ``wait=True`` returns
        when everything answered is written, and raises a failure of its own
        write. A failure invalidates the in-memory state (the events it
        counted are not stored) and is counted in ``write_errors``.
        """
        n = 0
        if self._pending:
            batches, self._pending = self._pending, []
            with self._ids_lock:
                self._inflight_ids |= self._pending_ids
                self._pending_ids = set()
            n = sum(g.num_rows for g, _, _ in batches)
            if wait and self._writes.unfinished_tasks == 0:
                self._write(self.con, batches, raise_errors=True)
            else:
                if self._writer is None or not self._writer.is_alive():
                    self._writer = threading.Thread(target=self._write_loop, name="riskgate-writer", daemon=True)
                    self._writer.start()
                self._writes.put(batches)
        if wait:
            self._writes.join()
        return n

    def _write_loop(self) -> None:
        while True:
            batches = self._writes.get()
            try:
                if batches is None:
                    return
                cur = self.con.cursor()
                try:
                    self._write(cur, batches, raise_errors=False)
                finally:
                    cur.close()
            finally:
                self._writes.task_done()

    def _write(self, con, batches: list, raise_errors: bool) -> None:
        from risk import score as rs

        t0 = time.perf_counter()
        # one chunk each: DuckDB scans an Arrow table chunk by chunk, and a write of 50 one-row chunks took
        # four times as long as the same rows in one
        good = pa.concat_tables([g for g, _, _ in batches]).combine_chunks()
        table = pa.concat_tables([t for _, _, t in batches]).combine_chunks()
        ids = set(good.column("event_id").to_pylist())
        try:
            con.execute("BEGIN TRANSACTION")
            try:
                ingest_store.insert_events(con, good, self.run_id, known_new=True)
                for g, outcomes, _ in batches:
                    _record_checks(con, g, outcomes)
                rs._write(con, table, replace=False, transaction=False)
                rs._apply_resets(con, table, good)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            self.online.noted(con)
            self.write_seconds.append(time.perf_counter() - t0)
        except Exception:
            self.online.invalidate()
            self._online_checked = False
            self.write_errors += 1
            if raise_errors:
                raise
            log.exception("writing %d answered events to the store failed", good.num_rows)
        finally:
            with self._ids_lock:
                self._inflight_ids -= ids

    def close(self) -> None:
        self.flush(wait=True)
        if self._writer is not None and self._writer.is_alive():
            self._writes.put(None)
            self._writer.join(10)
        self._scratch.close()

    def _online_features(self, good: pa.Table) -> pa.Table | None:
        """The features of new events from the in-memory state (``risk.online``), or None when it cannot serve them.

        Counts the events in: the caller must store them (or invalidate the state).
        """
        from risk.features import _output_schema

        if not self._online_checked:
            loads = self.online.loads
            self.online.ensure(self.con)
            self._online_checked = True
            if self.online.loads != loads:
                # the state is many long-lived objects: leave them out of the collector's full passes, which
                # would otherwise walk them all, stopping every request for as long (a p99 of 100s of ms)
                gc.collect()
                gc.freeze()
        from risk.online import ONLINE_COLUMNS

        rows = good.select(list(ONLINE_COLUMNS)).to_pylist()
        rows.sort(key=lambda r: (r["creation_date"], r["event_id"]))
        if not self.online.can_serve(rows):
            return None
        out = []
        for r in rows:
            f = self.online.features(r, r["event_response"] == "Pass")
            f.update(event_id=r["event_id"], username=r["username"], creation_date=r["creation_date"],
                     event_type=r["event_type"], event_response=r["event_response"])
            out.append(f)
        return pa.Table.from_pylist(out, schema=_output_schema())


def _record_checks(con, good: pa.Table, outcomes: list, skip=frozenset()) -> None:
    """Record the credential-check outcomes (row index in ``good``, outcome, enforced), but for events in ``skip``."""
    if not outcomes:
        return
    from risk import credentials as cr

    ids, users = good.column("event_id").to_pylist(), good.column("username").to_pylist()
    for k, outcome, enforced in outcomes:
        if ids[k] not in skip:
            cr.record_check(con, outcome, event_id=ids[k], username=users[k], enforced=enforced)


def deliver(n: DueNotification, *, transport=None):
    """Render and send one due notification without the store; returns the record for the caller to store."""
    from risk import notify as rn

    return rn.notify(None, n.event, n.template_name, n.template, n.notify_config, n.recipient or "",
                     transport=transport, record=False)
