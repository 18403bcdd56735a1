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


#: What makes a request with a stored EventId a retry of that event rather than another sign-in under its id.
_IDENTITY = ("username", "user_pool_id", "event_type", "event_response")


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
    """A batch after the steps that need no store: canonical rows as dicts (source_line = index + 1) and refusals."""

    requests: list[InlineRequest]
    rows: list[dict]
    refused: dict[int, str]

    @property
    def good(self) -> pa.Table:
        """The rows as the table ingest would store (EVENT_SCHEMA, every field nullable)."""
        return _events_table(self.rows)


def _events_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=_NULLABLE_EVENT_SCHEMA)


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
        self._pending: list[tuple[list, list, list]] = []  # answered, to write: (event rows, checks, assessment rows)
        self._pending_ids: set[str] = set()
        self._inflight_ids: set[str] = set()  # handed to the writer, not committed yet
        self._unanswered: set[str] = set()  # stored by a call that then failed: not retries when they come again
        self._ids_lock = threading.Lock()
        self._writes: queue.Queue = queue.Queue()
        self._writer: threading.Thread | None = None
        self.write_errors = 0
        self.write_seconds: deque = deque(maxlen=10_000)  # how long the last writes took
        self.fast_rows = 0  # records canonicalised in Python (the rest by the reader's SQL)
        self.online_events = 0  # events whose features came from the in-memory state (the rest from SQL)
        self._pools: set[str] = set()  # pools the store was seen to know (read again for a pool not among them)

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
        self._online_features([])
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

    def _check_passwords(self, rows: list[dict], requests: list[InlineRequest]) -> list:
        """Set each row's ``compromised_credentials`` from the presented password; return the outcomes to record
        as (row index, outcome, enforced)."""
        from risk import config as rc
        from risk import credentials as cr
        from risk.exceptions import ExceptionResult
        from risk.score import _pool_of

        if self.checker is None or not any(requests[r["source_line"] - 1].password is not None for r in rows):
            return []
        outcomes = []
        for k, row in enumerate(rows):
            req = requests[row["source_line"] - 1]
            if req.password is None:
                continue
            pool = _pool_of(self.con, row["user_pool_id"])
            cfg, _ = self.context.config(pool, row["client_id"])
            mode, _ = self.context.mode(pool)
            if mode == rc.AdvancedSecurityMode.OFF or self.context.exceptions(pool, row["client_id"]).check(
                    row.get("client_ip")) is not ExceptionResult.NONE:
                req.password = None  # no risk evaluation (mode OFF, a skipped or blocked range): no check (decide())
                continue
            ccc = cfg.CompromisedCredentialsRiskConfiguration
            event_filter = [str(f) for f in ccc.EventFilter] if ccc is not None and ccc.EventFilter else None
            action = str(ccc.Actions.EventAction) if ccc is not None else "NO_ACTION"
            result = self.checker.check(req.password) if cr.applies(row["event_type"], event_filter) else None
            req.password = None  # checked: forgotten
            outcome = cr.evaluate(row["event_type"], event_filter, action, result)
            if result is not None:
                row["compromised_credentials"] = bool(result.compromised)
            outcomes.append((k, outcome, mode == rc.AdvancedSecurityMode.ENFORCED))
        return outcomes

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
            refused: dict[int, str] = {}
            if slow:
                sub = [requests[i] for i in slow]
                slow_good, slow_refused = self._canonical(sub)
                refused = {slow[i]: reason for i, reason in slow_refused.items()}
                if slow_good is not None and slow_good.num_rows:
                    for row in slow_good.cast(_NULLABLE_EVENT_SCHEMA).to_pylist():
                        row["source_line"] = slow[row["source_line"] - 1] + 1
                        rows.append(row)
        except BaseException:
            for r in requests:
                r.password = None
            raise
        return Prepared(requests, rows, refused)

    def evaluate(self, requests: list[InlineRequest]) -> tuple[list[InlineResult | RiskgateError], list[DueNotification]]:
        """Assess the events; one result (or the error refusing it) per request, in order, and the notifications due.

        The passwords are forgotten once checked. When the call raises, the requests are left to be assessed
        again (e.g. each on its own, as the service does, so that one bad request does not fail the others):
        their passwords are given back, and the EventIds and times given to them are kept.
        """
        passwords = [r.password for r in requests]
        try:
            results, due = self.finish([self.prepare(requests)])
        except BaseException:
            for r, password in zip(requests, passwords):
                r.password = password
            raise
        finally:
            del passwords
        return results[0], due

    def finish(self, batches: list[Prepared]) -> tuple[list[list[InlineResult | RiskgateError]], list[DueNotification]]:
        """Assess prepared batches together (and store them, or have them written behind the answer); per batch,
        one result (or error) per request, in order."""
        requests = [r for b in batches for r in b.requests]
        out: list[InlineResult | RiskgateError | None] = [None] * len(requests)
        rows: list[dict] = []
        offset = 0
        for b in batches:
            for i, reason in b.refused.items():
                out[offset + i] = InlineEventError(reason)
            for row in b.rows:
                row["source_line"] += offset
                rows.append(row)
            offset += len(b.requests)

        def split(flat: list) -> list[list]:
            res, i = [], 0
            for b in batches:
                res.append(flat[i:i + len(b.requests)])
                i += len(b.requests)
            return res

        try:
            if not rows:
                return split(out), []
            ids = [r["event_id"] for r in rows]
            existing = self._existing(ids)
            refused = {**self._unknown_pools(rows), **self._reused_ids(rows, existing)}
            if refused:  # an EventId that stands for another sign-in: refused, never answered with its assessment
                for row in rows:
                    if row["source_line"] in refused:
                        out[row["source_line"] - 1] = InlineEventError(refused[row["source_line"]])
                rows = [row for row in rows if row["source_line"] not in refused]
                if not rows:
                    return split(out), []
                ids = [r["event_id"] for r in rows]
                existing &= set(ids)
            outcomes = self._check_passwords(rows, requests)
        finally:
            for r in requests:
                r.password = None
        try:
            try:
                online = self._online_features(rows) if not existing and len(set(ids)) == len(ids) else None
            except BaseException:
                self.online.invalidate()  # it may have counted some of the events, which will not be stored
                self._online_checked = False
                raise
            done = self._assess_online(rows, online, outcomes, requests) if online is not None else None
        finally:
            self.online.unpin()
        # (None from memory: a prevented event the state could not count again; the store then says it all)
        assessed, feature_rows, due = done or self._assess_stored(rows, existing, outcomes, requests)
        for row in rows:
            i, line = row["event_id"], row["source_line"]
            out[line - 1] = InlineResult(assessed[i], duplicate=i in existing and i not in self._unanswered,
                                         features=feature_rows.get(i) if requests[line - 1].want_features else None)
        if self._unanswered:
            self._unanswered.difference_update(r["event_id"] for r in rows)
        return split(out), due

    def _unknown_pools(self, rows: list[dict]) -> dict[int, str]:
        """Requests (by line) naming a pool the store does not know, with the reason (``risk.config.
        served_pool_problem``: one request must not make users without a pool id belong to none), and requests
        naming none in a store of several pools (``$RISKGATE_USER_POOL_ID`` unset: no pool to decide under). In a
        store that knows no pool, the first request's pool is taken, and another one in the same batch refused."""
        from risk.config import known_pools, served_pool_problem

        refused: dict[int, str] = {}
        if any(r["user_pool_id"] is None for r in rows):  # a store of several pools cannot say which one is meant
            from ingest.errors import ConfigurationError
            from risk.score import _pool_of

            try:
                _pool_of(self.con, None)
            except ConfigurationError as exc:
                refused = {r["source_line"]: str(exc) for r in rows if r["user_pool_id"] is None}
        named = {r["user_pool_id"] for r in rows if r["user_pool_id"] is not None}
        if named <= self._pools:
            return refused
        self._pools = set(known_pools(self.con))  # another process may have added one
        taken = set(self._pools)
        for row in rows:
            pool = row["user_pool_id"]
            problem = None if pool is None else served_pool_problem(taken, pool)
            if problem:
                refused[row["source_line"]] = problem
            elif pool is not None:
                taken.add(pool)
        self._pools = taken  # a pool taken here is known from now on, though its events may not be written yet
        return refused

    def _reused_ids(self, rows: list[dict], existing: set[str]) -> dict[int, str]:
        """Requests (by line) whose EventId is stored, waiting to be written or earlier in the batch for a different
        sign-in (another user, pool, event type or response), with the reason: a retry repeats its event, and
        an EventId that names another one must not be answered with that one's assessment."""
        first: dict[str, tuple] = {}
        if existing:
            with self._ids_lock:
                unwritten = bool((self._pending_ids | self._inflight_ids) & existing)
            if unwritten:
                self.flush(wait=True)  # rare (a retry soon after its first answer): then the store holds them all
            first = {r[0]: tuple(r[1:]) for r in ingest_store.rows_where_in(
                self.con, f"SELECT event_id, {', '.join(_IDENTITY)} FROM events", "event_id", sorted(existing))}
        refused = {}
        for row in rows:
            eid, ident = row["event_id"], tuple(row[c] for c in _IDENTITY)
            seen = first.setdefault(eid, ident)
            if seen != ident:
                refused[row["source_line"]] = (
                    f"EventId {eid!r} already stands for another sign-in ({', '.join(f'{c} {v!r}' for c, v in zip(_IDENTITY, seen))}): "
                    "a retry repeats its event; a new sign-in needs a new EventId (or none)")
        return refused

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
            feature_rows = _feature_rows(feats.to_pylist())
        return table, feature_rows

    def due(self, due_rows: list) -> list[DueNotification]:
        """:class:`DueNotification` of each (event, template name, template, NotifyConfiguration), with the user's
        email from the store."""
        from risk import notify as rn

        return [DueNotification(ev, name, template, notify_config,
                                rn.user_email(self.con, ev["username"], ev["user_pool_id"]) if ev["username"] else None)
                for ev, name, template, notify_config in due_rows]

    def _assess_online(self, rows: list[dict], feats: list[dict], outcomes, requests):
        """New events in order, features from memory: assessed now (as dicts, no Arrow on the request's way),
        written by :meth:`flush` (write-behind)."""
        from risk import score as rs

        ctx = self.context
        try:
            assessed = rs.assess_rows(ctx, feats, rows)
            if any(a["blocked"] for a in assessed) and not self._prevented_online(ctx, feats, assessed, rows):
                self.online.invalidate()  # it counted the events as their responses say: not what is stored
                self._online_checked = False
                return None
            scored_at = datetime.now(timezone.utc)
            for a in assessed:
                a["run_id"], a["scored_at"] = self.run_id, scored_at
            due = self.due(rs.due_notifications_rows(ctx, assessed, rows))
        except BaseException:
            self.online.invalidate()  # it counted events that will not be stored
            self._online_checked = False
            raise
        self.online_events += len(rows)
        feature_rows = _feature_rows(feats) if any(r.want_features for r in requests) else {}
        self._pending.append((rows, outcomes, assessed))
        self._pending_ids.update(a["event_id"] for a in assessed)
        # the caller gets its own copies: these rows wait in _pending for the writer thread
        return {a["event_id"]: dict(a) for a in assessed}, feature_rows, due

    def _assess_stored(self, rows: list[dict], existing, outcomes, requests):
        """Any other batch: stored first, then features from the store (SQL), assessed and written."""
        from risk import feedback
        from risk import score as rs
        from risk.config import unpooled_pool
        from risk.features import compute_features

        self.flush()
        self._online_checked = False  # this path writes to the store behind the state
        con = self.con
        good = _events_table(rows)
        ids = [r["event_id"] for r in rows]
        self.global_counts.ensure(con)  # up to date with the store before this batch is written
        con.execute("BEGIN TRANSACTION")
        try:
            ingest_store.insert_events(con, good, self.run_id)
            _record_checks(con, rows, outcomes, skip=existing)
            con.execute("COMMIT")
        except BaseException:
            ingest_store.rollback(con)
            raise
        new = [i for i in dict.fromkeys(ids) if i not in existing]
        try:
            self.global_counts.add(con, new)
            ctx = self.context
            if ctx.unpooled != unpooled_pool(con):  # these events brought a pool: users without one may move
                ctx.forget_users()
            assessed = rs.assessments_for(con, ids)
            todo = [i for i in dict.fromkeys(ids) if i not in assessed]
            feature_rows, due = {}, []
            by_id = {r["event_id"]: r for r in rows}
            while todo:  # in time order: each event assessed on what was decided before it (prevented events)
                feats = compute_features(con, event_ids=todo, global_counts=self.global_counts)
                events = rs.events_to_assess(con, feats)
                table, computed = self._assessed(ctx, feats, events, requests)
                order = table.column("event_id").to_pylist()
                blocked = table.column("blocked").to_pylist()
                k = next((j for j in range(len(order)) if blocked[j] and _counted_otherwise(by_id[order[j]])
                          and any(_depends_on(by_id[e], by_id[order[j]]) for e in order[j + 1:])), None)
                todo = [] if k is None else order[k + 1:]
                table = table if k is None else table.slice(0, k + 1)
                # the resets, notifications due and prevented events, in its transaction
                # (an email is due from an event's first assessment only: what _write says was one)
                first = rs._write(con, table, reserve=True, prevented=True)
                due += self.due(rs.due_notifications(ctx, first))
                feature_rows.update({i: f for i, f in computed.items() if i not in todo})
                if todo:  # everyone's counts without the prevented event, which add() counted as known
                    if order[k] in new and feedback.is_known(by_id[order[k]]["event_response"]):
                        self.global_counts.uncount(con, [order[k]])
                    else:
                        self.global_counts.ensure(con)
        except BaseException:
            # the events are stored, not answered: assessed again (each on its own, say), they are no retries
            self._unanswered.update(new)
            raise
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
            n = sum(len(rows) for rows, _, _ in batches)
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
        # the rows of every batch in one table each (one chunk: DuckDB scans an Arrow table chunk by chunk, and
        # a write of 50 one-row chunks took four times as long as the same rows in one)
        ids = {r["event_id"] for rows, _, _ in batches for r in rows}
        try:
            good = _events_table([r for rows, _, _ in batches for r in rows])
            table = pa.Table.from_pylist([a for _, _, assessed in batches for a in assessed], schema=rs.ASSESSMENT_SCHEMA)
            con.execute("BEGIN TRANSACTION")
            try:
                ingest_store.insert_events(con, good, self.run_id, known_new=True)
                for rows, outcomes, _ in batches:
                    _record_checks(con, rows, outcomes)
                rs._write(con, table, replace=False, transaction=False, reserve=True, prevented=True)
                con.execute("COMMIT")
            except BaseException:
                ingest_store.rollback(con)
                raise
            self.online.noted(con)
            self.write_seconds.append(time.perf_counter() - t0)
        except Exception:
            self.online.invalidate()
            self._online_checked = False
            self.write_errors += 1
            if raise_errors:
                raise
            log.exception("writing %d answered events to the store failed", len(ids))
        finally:
            with self._ids_lock:
                self._inflight_ids -= ids

    def close(self) -> None:
        self.flush(wait=True)
        if self._writer is not None and self._writer.is_alive():
            self._writes.put(None)
            self._writer.join(10)
        self._scratch.close()

    def _online_features(self, rows: list[dict]) -> list[dict] | None:
        """The features of new events (rows of ``prepare``) from the in-memory state (``risk.online``), in time
        order, each with its event's id, username, time, type and response; None when the state cannot serve them.

        Counts the events in: the caller must store them (or invalidate the state).
        """
        if not self._online_checked:
            loads = self.online.loads
            self.online.ensure(self.con)
            self._online_checked = True
            if self.context.unpooled != self.online.unpooled:  # the store's pools changed: whose users are whose
                self.context.forget_users()
            if self.online.loads != loads:
                # the state is many long-lived objects: leave them out of the collector's full passes, which
                # would otherwise walk them all, stopping every request for as long (a p99 of 100s of ms)
                gc.collect()
                gc.freeze()
        events = sorted(rows, key=lambda r: (r["creation_date"], r["event_id"]))
        if not self.online.can_serve(events):
            return None
        if events:  # kept until the batch is decided (finish unpins): a prevented event is counted again
            from risk.online import epoch_us

            self.online.pin((epoch_us(events[0]["creation_date"]), events[0]["event_id"]))
        out = []
        for r in events:
            out.append(_with_ids(self.online.features(r), r))  # counted in as a new event (risk.feedback.is_known)
        return out

    def _prevented_online(self, ctx, feats: list[dict], assessed: list[dict], rows: list[dict]) -> bool:
        """Count the events answered Block as prevented (``risk.feedback``: no known history, a failed attempt) in
        the in-memory state, which counted them as their response said, and compute again (features and
        assessment, in place) the later events of the batch that depend on them; in time order, so that each
        event is assessed on what was decided before it. False when the state no longer remembers such an event
        (it keeps the batch's events until it is decided, ``OnlineFeatures.pin``: not expected): the caller
        assesses the batch from the store instead."""
        from risk import feedback
        from risk import score as rs

        by_id = {r["event_id"]: r for r in rows}
        k = 0
        while True:
            k = next((j for j in range(k, len(assessed)) if assessed[j]["blocked"]
                      and _counted_otherwise(by_id[assessed[j]["event_id"]])), None)
            if k is None:
                return True
            ev = by_id[assessed[k]["event_id"]]
            later = [by_id[f["event_id"]] for f in feats[k + 1:]]
            compute = {e["event_id"] for e in later if _depends_on(e, ev)}
            fresh = self.online.recount(ev, known=feedback.is_known(ev["event_response"], prevented=True),
                                        failed=feedback.is_failed(ev["event_response"], prevented=True),
                                        compute=compute)
            if fresh is None:
                return False
            idx = [j for j in range(k + 1, len(feats)) if feats[j]["event_id"] in compute]
            if idx:
                for j in idx:
                    feats[j] = _with_ids(fresh[feats[j]["event_id"]], by_id[feats[j]["event_id"]])
                for j, a in zip(idx, rs.assess_rows(ctx, [feats[j] for j in idx], rows)):
                    assessed[j] = a
            k += 1


def _with_ids(features: dict, row: dict) -> dict:
    """An event's features with the event columns the assessment reads beside them."""
    features.update(event_id=row["event_id"], username=row["username"], creation_date=row["creation_date"],
                    event_type=row["event_type"], event_response=row["event_response"])
    return features


def _counted_otherwise(row: dict) -> bool:
    """Whether a new event, once prevented, counts otherwise in the history than its response alone says."""
    from risk import feedback

    r = row["event_response"]
    return (feedback.is_known(r), feedback.is_failed(r)) != (feedback.is_known(r, True), feedback.is_failed(r, True))


def _depends_on(later: dict, ev: dict) -> bool:
    """Whether the features of ``later`` (an event after ``ev``) can depend on whether ``ev`` is known or failed:
    the same user (their history and failures), IP or prefix (the failure windows), or a later UTC day
    (everyone's counts before the day)."""
    from risk.online import epoch_us

    day = epoch_us(ev["creation_date"]) // 86_400_000_000
    return (later["username"] == ev["username"]  # (in any pool: one without a pool id may be the same user)
            or (ev["client_ip"] is not None and later["client_ip"] == ev["client_ip"])
            or (ev["ip_prefix"] is not None and later["ip_prefix"] == ev["ip_prefix"])
            or epoch_us(later["creation_date"]) // 86_400_000_000 > day)


def _record_checks(con, rows: list[dict], outcomes: list, skip=frozenset()) -> None:
    """Record the credential-check outcomes (row index in ``rows``, outcome, enforced), but for events in ``skip``."""
    if not outcomes:
        return
    from risk import credentials as cr

    for k, outcome, enforced in outcomes:
        if rows[k]["event_id"] not in skip:
            cr.record_check(con, outcome, event_id=rows[k]["event_id"], username=rows[k]["username"], enforced=enforced)


def _feature_rows(feats: list[dict]) -> dict[str, dict]:
    """The signal columns of each event's features, by event id (for a caller that asked for them)."""
    from risk.signals import FEATURE_COLUMNS

    return {f["event_id"]: {c: f.get(c) for c in FEATURE_COLUMNS} for f in feats}


def deliver(n: DueNotification, *, transport=None):
    """Render and send one due notification without the store; returns the record for the caller to store."""
    from risk import notify as rn

    return rn.notify(None, n.event, n.template_name, n.template, n.notify_config, n.recipient or "",
                     transport=transport, record=False)
