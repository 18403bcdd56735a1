"""``riskgate ingest``: read inputs, normalise and enrich, store; nothing lost, nothing twice.

Every input row ends as exactly one of: an event added, a duplicate of an
event already stored (or earlier in the same run), or a quarantine row with
file, line and reason. ``rows_read == events_added + duplicates + quarantined``.

Each batch is written in one transaction (events, quarantine, labels), so a
run killed at any moment leaves the store consistent; running it again skips
what was committed (as duplicates) and completes the rest. A file that cannot
be read at all gives one error naming it, and the run goes on with the others.

Reading and writing overlap: while batch n is written into the store, a
second thread reads and enriches batch n+1 (on its own in-memory DuckDB
connections; DuckDB releases the GIL while it works). For a reader whose
batches parse apart from each other (``ingest.sources.base.PartReader``:
riskgate JSON lines, Cognito user-activity exports) two threads do that
(:func:`in_pool`): one reads the next batch's lines while the other parses
and enriches, and both work on batches n+1 and n+2 while n is written, so
that neither core waits at the start (the first two batches at once) or
while the writer sets the pace; they run a few nice steps below the writer
(``POOL_NICE``), which keeps them from running ahead into memory. Batches
are still written one at a time, in input order, each in its own
transaction, and the store is handed over between them
(``store.yield_turn``). Each of the two stages' DuckDB databases runs on
half of DuckDB's threads for the run (``store.halve_threads``; the store
gets its own number back at the end). An error while reading or enriching
surfaces in the main thread at the batch where it happened, after every
earlier batch was written, just as without a thread.

Feedback a source carries (Cognito's EventFeedback in AdminListUserAuthEvents
output, the user-activity export's ``eventFeedback*``: ``ReadBatch.feedback``)
is the feedback given on the event. Ingest owns no feedback table (``risk``
does, and ingest knows nothing of ``risk``): the caller passes a
:data:`FeedbackSink` (``riskgate ingest`` passes
``risk.feedback.record_imported``), which each batch's transaction calls with
the feedback of the batch's rows that are stored -- added, or duplicates of a
stored event (a page listed again after the feedback changed says so) --, so
that an event and its feedback are committed together. Without a sink the
feedback stays only in the events' ``extra``, as the source wrote it.

The last step of the enrichment (``ingest.enrich.Staged.select_sql``: the
joins with the per-distinct-value tables, fingerprints, geo columns) runs
inside the store's INSERT, in the writing thread: the wide rows never come
out as Arrow, and the reading thread, the one that sets the pace, does less
(1,000,000 events: 16.7 s and 1,423 MiB peak, against 18.5-21.8 s and
1,600-1,670 MiB with the rows materialised). A third thread, reading n+2
while n+1 is enriched, then gave 15.6 s but 1,921 MiB peak, too close to the
2 GB budget; the pool of two (three batches alive) peaked at 1.81-1.87 GiB
at the writer's priority, 1.64-1.72 GiB niced (both with Arrow's jemalloc
keeping its memory; as shipped, without that, 1,580-1,755 MiB; 2026-11-27).
"""

from __future__ import annotations

import contextvars
import functools
import os
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ingest import store
from ingest.enrich import Enricher, Staged
from ingest.errors import InputFormatError, RiskgateError, interrupted
from ingest.schema import FEEDBACK_SCHEMA
from ingest.sources import detect_format, get_reader
from ingest.sources.base import (
    BYTES_READ_OBSERVER,
    RAW_COLUMN,
    PartReader,
    QuarantineIds,
    ReaderOptions,
    clip_raw,
    is_password_key,
    quarantine_table,
    redact_passwords,
    without_passwords,
)


@dataclass
class IngestResult:
    run_id: str
    rows_read: int = 0
    events_added: int = 0
    duplicates: int = 0
    quarantined: int = 0
    labels_added: int = 0
    feedback_added: int = 0  # rows recorded by the FeedbackSink
    reasons: Counter = field(default_factory=Counter)
    files: list[dict] = field(default_factory=list)  # per file: path, format, counts, error
    errors: list[str] = field(default_factory=list)  # files that could not be read

    def as_json(self, top_reasons: int = 10) -> dict:
        return {
            "rows_read": self.rows_read,
            "events_added": self.events_added,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "reasons": dict(self.reasons.most_common(top_reasons)),
            "labels_added": self.labels_added,
            "feedback_added": self.feedback_added,
            "run_id": self.run_id,
            "files": self.files,
            "errors": self.errors,
        }


def reason_key(reason: str) -> str:
    """Group quarantine reasons for counting: the reason with quoted values and numbers taken out."""
    import re

    s = re.sub(r'"(?:[^"\\]|\\.)*"', '"…"', reason)
    s = re.sub(r"(?<![\w-])\d[\d:.TZ-]*\b", "N", s)
    return s


ProgressFn = Callable[[str, int, int], None]  # (file, bytes done, rows so far)
#: Records a batch's feedback (FEEDBACK_SCHEMA: the stored rows' event ids and the feedback they carry) on the
#: store's connection, inside the batch's transaction; returns how many feedback rows it recorded.
FeedbackSink = Callable[[duckdb.DuckDBPyConnection, pa.Table], int]

#: the environment variable with which Arrow's user chooses its memory pool (then left as it is)
ARROW_POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"


def prefer_jemalloc() -> str:
    """Make Arrow's jemalloc pool this process's default (where pyarrow has it and ``ARROW_DEFAULT_MEMORY_POOL``
    does not choose another); return the name of the default pool now.

    Ingest allocates and frees a few hundred MB of Arrow buffers a batch. pyarrow's default pool (mimalloc)
    gave much of it back to the system and faulted it in again as fresh, zeroed pages; jemalloc keeps it a
    second longer (Arrow's decay time). 1,000,000 events, six alternating pairs: 11.38-12.21 s against
    11.91-12.79 s, 0.7 s less system time, about 90 MiB lower peak. Buffers remember the pool they came from,
    so switching after some were allocated is safe. For ``riskgate ingest``'s process, not for a library
    caller's (a process-wide setting).
    """
    import pyarrow as pa

    if not os.environ.get(ARROW_POOL_ENV):
        try:
            pa.set_memory_pool(pa.jemalloc_memory_pool())
        except NotImplementedError:
            pass  # a pyarrow built without jemalloc: its default stays
    return pa.default_memory_pool().backend_name


#: For ``riskgate ingest``'s store (``ingest.store.connect(settings=...)``, so that it holds again after a
#: hand-over of the file): DuckDB gives a thread's cached allocations back after a task whose peak passed
#: ``allocator_flush_threshold`` (128 MiB by default); each batch's insert passed it, and the next batch faulted
#: the memory in again. 1,000,000 events, seven alternating pairs: 10.26-12.50 s (mean 11.09) against
#: 10.78-13.34 s (mean 11.69), less system time in six; peak memory unchanged.
BULK_ALLOCATION = "SET allocator_flush_threshold = '4GB'"
#: DuckDB's blocks (the table's new row groups: a third of the run's page faults) come from memory it keeps
#: and reuses instead of fresh pages.
BLOCK_ALLOCATOR = "SET block_allocator_memory = '512MiB'"
#: The settings ``riskgate ingest`` opens its store with.
BULK_SETTINGS = (BULK_ALLOCATION, BLOCK_ALLOCATOR)


def ingest_paths(
    con: duckdb.DuckDBPyConnection,
    paths: Sequence[str],
    *,
    fmt: str = "auto",
    options: ReaderOptions | None = None,
    enricher: Enricher,
    progress: ProgressFn | None = None,
    record_feedback: FeedbackSink | None = None,
) -> IngestResult:
    """Ingest ``paths`` into the store ``con`` (the module docstring); ``record_feedback`` records the feedback
    the inputs carry (none: it is not recorded)."""
    options = options or ReaderOptions()
    run_id = uuid.uuid4().hex
    result = IngestResult(run_id=run_id)
    store.mark_interrupted_runs(con)
    id_key = store.store_key(con, EVENT_ID_KEY)  # (made on first use: before the run, in its own statement)
    store.start_run(con, run_id, [str(p) for p in paths], fmt)
    status = "failed"
    # the writer's share of the cores while the reading thread (its own DuckDB databases, ``store.scratch``)
    # has the rest; given back at the end
    with store.halved_threads(con) as writer_threads:
        try:
            for path in paths:
                _ingest_file(con, str(path), fmt, options, enricher, result, progress, writer_threads, id_key,
                             record_feedback)
            status = "completed" if not result.errors else "completed_with_errors"
        except BaseException as exc:
            if interrupted(exc):
                status = "interrupted"
            raise
        finally:
            store.finish_run(
                con,
                run_id,
                status=status,
                rows_read=result.rows_read,
                events_added=result.events_added,
                duplicates=result.duplicates,
                quarantined=result.quarantined,
                reasons=dict(result.reasons.most_common(50)),
            )
    return result


def _ingest_file(
    con: duckdb.DuckDBPyConnection,
    path: str,
    fmt: str,
    options: ReaderOptions,
    enricher: Enricher,
    result: IngestResult,
    progress: ProgressFn | None,
    writer_threads: int,
    id_key: bytes,
    record_feedback: FeedbackSink | None = None,
) -> None:
    entry = {"path": path, "format": None, "rows_read": 0, "events_added": 0, "duplicates": 0,
             "quarantined": 0, "error": None}
    result.files.append(entry)
    try:
        name = detect_format(path) if fmt == "auto" else fmt
        entry["format"] = name
        reader = get_reader(name)
        rows = 0
        token = BYTES_READ_OBSERVER.set((lambda done: progress(path, done, rows)) if progress else None)
        try:
            prepared = _preparing(reader, path, name, options, enricher, id_key)
            quarantine_ids = QuarantineIds()
            try:
                def stored(counts: dict) -> None:  # a batch's counts, once it is committed
                    nonlocal rows
                    rows += counts["rows_read"]
                    for k in ("rows_read", "events_added", "duplicates", "quarantined"):
                        entry[k] += counts[k]
                        setattr(result, k, getattr(result, k) + counts[k])
                    result.labels_added += counts["labels_added"]
                    result.feedback_added += counts["feedback_added"]
                    result.reasons.update(counts["reasons"])

                for batch in prepared:
                    # the ids of an input's quarantined rows depend on the rows before them: given in order here
                    batch.quarantine = quarantine_ids(batch.quarantine)
                    _write_batch(con, batch, result.run_id, stored, result.rows_read, record_feedback)
                    if progress:
                        progress(path, -1, rows)
                    del batch  # not kept alive while the next one is awaited (memory)
                    if store.yield_turn(con):  # the file was opened again after another process's turn
                        store.set_threads(con, writer_threads)
            finally:
                prepared.close()  # stops the threads still working ahead (after an error)
        finally:
            BYTES_READ_OBSERVER.reset(token)
    except InputFormatError as exc:
        entry["error"] = str(exc)
        result.errors.append(str(exc))
    except RiskgateError:
        raise
    except (OSError, EOFError, UnicodeError, ValueError, pa.ArrowException, duckdb.Error) as exc:
        if interrupted(exc):  # Ctrl-C, as DuckDB reports it: the run is interrupted, the input is not at fault
            raise
        msg = f"{path}: while reading as {entry['format'] or fmt}: {type(exc).__name__}: {exc}"
        entry["error"] = msg
        result.errors.append(msg)


@dataclass
class PreparedBatch:
    """A batch ready to be written: staged events (enriched but for the final projection, which runs inside
    the insert), quarantine rows with ids, labels."""

    staged: Staged | None
    quarantine: pa.Table  # QUARANTINE_SCHEMA (+ quarantine_id, given by the writer's loop in the input's order)
    labels: pa.Table | None  # LABEL_SCHEMA (+ source_line): stored only for the events the batch adds
    source_file: str = ""
    feedback: pa.Table | None = None  # FEEDBACK_SCHEMA: of the rows that are stored (added or duplicates)


def _prepare_batch(batch, fmt: str, path: str, enricher: Enricher, default_pool: str | None = None,
                   id_key: bytes | None = None) -> PreparedBatch:
    """Everything of a batch that does not touch the store (runs ahead of the writer). ``default_pool``
    (``--user-pool-id``) is the pool of the events whose source gives none (or an empty one), whatever the format;
    ``id_key`` the store's key for the ids derived from rows that carry a password (:func:`_keyed_ids`)."""
    events, with_password = _without_passwords(_with_pools(batch.events, default_pool))
    labels = _without_password_labels(batch.labels_with_lines())
    if id_key is not None:
        events, renamed = _keyed_ids(events, with_password, id_key)
        if renamed and labels is not None and labels.num_rows:  # a row's labels follow its id
            j = labels.column_names.index("event_id")
            labels = labels.set_column(j, labels.field(j), pa.array(
                [renamed.get(i, i) for i in labels.column(j).to_pylist()], labels.field(j).type))
    staged = enricher.stage(events, fmt, path) if events.num_rows else None
    bad = staged.bad if staged is not None else None
    q = batch.quarantine
    if bad is not None and bad.num_rows:
        lines = bad.column("source_line").to_pylist()
        reasons = bad.column("reason").to_pylist()
        raws = [clip_raw((r or "").rstrip("\r\n")) for r in bad.column(RAW_COLUMN).to_pylist()]
        q = pa.concat_tables([q, quarantine_table(fmt, path, lines, reasons, raws)])
    if q.num_rows:
        q = q.set_column(0, "source_format", pa.array([fmt] * q.num_rows, pa.string()))
        q = q.set_column(1, "source_file", pa.array([path] * q.num_rows, pa.string()))
    feedback = _stored_feedback(events, batch.feedback, staged.bad_i if staged is not None else None)
    return PreparedBatch(staged if staged is not None and staged.good_rows else None, q, labels, path, feedback)


def _stored_feedback(events: pa.Table, feedback: pa.Table | None, bad_i: pa.Table | None) -> pa.Table | None:
    """FEEDBACK_SCHEMA: the feedback (``ReadBatch.feedback``, row for row with ``events``) of the rows that carry
    one and are not quarantined by the enrichment (``bad_i``: their row numbers), with the rows' final event ids
    (``_keyed_ids``); None when there is none."""
    if feedback is None or not events.num_rows:
        return None
    if feedback.num_rows != events.num_rows:
        raise ValueError(f"a reader gave feedback for {feedback.num_rows} rows with {events.num_rows} events")
    keep = pc.is_valid(feedback.column("feedback_value"))
    if bad_i is not None and bad_i.num_rows:
        rows = pa.array(range(events.num_rows), pa.int64())
        keep = pc.and_(keep, pc.invert(pc.is_in(rows, value_set=bad_i.column("_i").combine_chunks())))
    if not pc.any(keep).as_py():
        return None
    out = pa.table([events.column("event_id").cast(pa.string()),
                    *(feedback.column(name) for name in FEEDBACK_SCHEMA.names[1:])], schema=FEEDBACK_SCHEMA)
    return out.filter(keep)


def _with_pools(events: pa.Table, default_pool: str | None) -> pa.Table:
    """``events`` with an empty pool id as none, in every format, and ``default_pool`` (``--user-pool-id``) as the
    pool of those whose source gives none (also a format without pools: rba-csv, csv/parquet unmapped)."""
    if not events.num_rows:
        return events
    if "user_pool_id" not in events.column_names:
        if not default_pool:
            return events
        return events.append_column("user_pool_id", pa.repeat(pa.scalar(default_pool, pa.string()), events.num_rows))
    i = events.column_names.index("user_pool_id")
    col = pool = events.column(i)
    empty = pc.equal(pool, "")
    if pc.any(empty).as_py():
        pool = pc.if_else(empty, None, pool)
    if default_pool and pool.null_count:
        pool = pc.fill_null(pool, default_pool)
    return events if pool is col else events.set_column(i, events.field(i), pool)


def _without_passwords(events: pa.Table) -> tuple[pa.Table, set[int]]:
    """``events`` with every member named password (any case, at any depth) left out of their ``extra`` JSON: an
    input shaped like ``/v1/evaluate``'s body (or an export with such a column) may carry the user's password,
    and an unknown field is otherwise kept. Only rows whose extra mentions one are parsed. Also the rows whose
    extra held one."""
    import json

    if "extra" not in events.column_names or not events.num_rows:
        return events, set()
    extra = events.column("extra")
    # the word, or a JSON escape that may spell it inside a string of JSON text (``\\u0070assword``)
    hits = pc.match_substring_regex(extra, r"(?i)password|\\u")
    if not pc.any(hits).as_py():
        return events, set()

    texts = extra.to_pylist()
    held = set()
    for i in pc.indices_nonzero(pc.fill_null(hits, False)).to_pylist():
        value = json.loads(texts[i])
        kept = without_passwords(value)
        if kept != value:
            held.add(i)
        texts[i] = json.dumps(kept, ensure_ascii=False, separators=(",", ":")) if kept else None
    j = events.column_names.index("extra")
    return events.set_column(j, events.field(j), pa.array(texts, events.field(j).type)), held


def _without_password_labels(labels: pa.Table | None) -> pa.Table | None:
    """``labels`` but those named password (any case, blanks around: ``is_password_key``), whichever reader made
    them (riskgate JSON lines' ``"Labels": {"password": …}``): a password is never stored, in the labels table
    either. The label is left out as such a member of ``extra`` is; its event is stored."""
    if labels is None or not labels.num_rows:
        return labels
    names = labels.column("label")
    hits = pc.fill_null(pc.match_substring(names, "password", ignore_case=True), False)
    if not pc.any(hits).as_py():
        return labels
    texts = names.to_pylist()
    keep = [not (hit and is_password_key(texts[i])) for i, hit in enumerate(hits.to_pylist())]
    return labels.filter(pa.array(keep, pa.bool_()))


#: the name of the store's key for derived event ids (``ingest.store.store_key``)
EVENT_ID_KEY = "event-ids"
#: an id a reader derived from a row's content: its prefix, and the first 32 hex digits of a SHA-256
_DERIVED_ID = r"^(rg|ae|ua|row)-[0-9a-f]{32}$"
#: a JSON member named password (blanks around it, any case) or whose name has an escape (``Pass\u0077ord``), also
#: inside a string that is JSON text (``"{\\"password\\":…}"``): the raw texts worth scanning for one (``redact_passwords``)
_PASSWORD_NAME = r'(?i)"\s*password\s*"\s*:|"[^"]*\\u[^"]*"\s*:|\\"\s*password|\\u0022\s*password'


def _keyed_ids(events: pa.Table, with_password: set[int], key: bytes) -> tuple[pa.Table, dict[str, str]]:
    """``events`` with the id a reader derived (a row without EventId: ``rg-``, ``ae-``, ``ua-``, ``row-`` and a
    SHA-256 of the row's content) replaced by an HMAC of it under the store's ``key`` when the row carries a
    password (in its extra, ``with_password``, or as a JSON member of its raw text, escaped name included).

    The SHA-256 of a line holding the password was an offline oracle for it: whoever saw the id (``riskgate
    events``, an export, a notification's ``{event-id}``) and knew the rest of the line could test guesses. Keyed,
    the id stays one per row in this store (ingesting the row again adds nothing; attempts that differ only in
    the password stay apart: brute force is counted) and tells nothing without the store's key. An EventId given
    in that very shape on a row with a password is taken for a derived one. Also the ids replaced (old -> new), for
    the row's labels."""
    import hashlib
    import hmac

    if "event_id" not in events.column_names or not events.num_rows:
        return events, {}
    ids = events.column("event_id")
    derived = pc.fill_null(pc.match_substring_regex(ids, _DERIVED_ID), False)
    if not pc.any(derived).as_py():
        return events, {}
    rows = set(with_password)
    if RAW_COLUMN in events.column_names:  # a password member of the raw JSON (the extras may not hold it all)
        # only rows with a member named password (or a name with an escape) are scanned: a Cognito-shaped row's
        # "ChallengeName":"Password" is a value, and scanning every row cost 3.6 times the whole ingest
        maybe = pc.and_(derived, pc.fill_null(pc.match_substring_regex(events.column(RAW_COLUMN), _PASSWORD_NAME),
                                              False))
        if pc.any(maybe).as_py():
            texts = events.column(RAW_COLUMN).to_pylist()
            rows.update(i for i in pc.indices_nonzero(maybe).to_pylist()
                        if texts[i] and redact_passwords(texts[i]) != texts[i])
    flags = derived.to_pylist()
    rows = sorted(i for i in rows if flags[i])
    if not rows:
        return events, {}
    out = ids.to_pylist()
    renamed = {}
    for i in rows:
        prefix, _, digest = out[i].partition("-")
        new = prefix + "-" + hmac.new(key, b"riskgate-event-id\x00" + digest.encode("ascii"),
                                      hashlib.sha256).hexdigest()[:32]
        renamed[out[i]], out[i] = new, new
    j = events.column_names.index("event_id")
    return events.set_column(j, events.field(j), pa.array(out, events.field(j).type)), renamed


def _preparing(reader, path: str, fmt: str, options: ReaderOptions, enricher: Enricher,
               id_key: bytes | None = None) -> Iterator[PreparedBatch]:
    """The prepared batches of ``path`` in order, computed ahead of the writer (:func:`in_pool`): by two
    threads for a :class:`~ingest.sources.base.PartReader` (each parses the parts it takes, on its own
    connection to the enricher's database), by one thread for other readers (reading and preparing each
    batch in turn, one ahead at most)."""
    if isinstance(reader, PartReader):
        def parse_and_prepare(part) -> PreparedBatch:
            return _prepare_batch(part(enricher.connection()), fmt, path, enricher, options.user_pool_id, id_key)

        return in_pool(_jobs(reader.read_parts(path, options), parse_and_prepare), "read")

    def prepare(batch) -> PreparedBatch:
        return _prepare_batch(batch, fmt, path, enricher, options.user_pool_id, id_key)

    return in_pool(_jobs(reader.read(path, options), prepare), "read", workers=1, ahead=1, nice=0)


def _jobs(items: Iterator, work: Callable) -> Iterator[Callable[[], object]]:
    """``work`` on each of ``items``, as jobs for :func:`in_pool` (taking a job takes the next item from
    ``items``: reading the input); closing the jobs closes ``items``."""
    try:
        for item in items:
            yield functools.partial(work, item)
            del item  # handed over: not kept alive here
    finally:
        _close(items)


def _close(it) -> None:
    """Close an iterator that can be closed (a generator: its ``finally`` runs, its input is closed)."""
    close = getattr(it, "close", None)
    if close is not None:
        close()


def _write_batch(con, batch: PreparedBatch, run_id: str, stored: Callable[[dict], None], read_before: int,
                 record_feedback: FeedbackSink | None = None) -> None:
    """Write one prepared batch (its quarantine rows with their ids; its feedback through ``record_feedback``, once
    its rows are in ``events``) in one transaction, with the run's count of rows read so far
    (``ingest_runs.rows_read``), then hand its counts to ``stored`` -- also when an interrupt reaches the COMMIT
    after it went through, so that the run's counts say what is stored. ``read_before``: the
    run's rows read before this batch (when no transaction is left to roll back, the count in the store tells
    whether the COMMIT went through or failed: DuckDB ends the transaction of a COMMIT it refuses too)."""
    staged, q = batch.staged, batch.quarantine
    good_rows = staged.good_rows if staged is not None else 0
    counts = None
    con.execute("BEGIN TRANSACTION")
    try:
        added = 0
        if good_rows:
            # the final enrichment runs inside the insert: the wide rows never come out as Arrow
            with staged.registered(con):
                added = store.insert_events_from(con, staged.select_sql(), staged.params, staged.event_ids, run_id)
        if q.num_rows:
            store.insert_quarantine(con, q, run_id)
        # a row that did not become an event here (quarantined, a duplicate) adds no label
        labels = (store.insert_labels(con, batch.labels, added_by_run=run_id, source_file=batch.source_file)
                  if batch.labels is not None and added else 0)
        feedback = (record_feedback(con, batch.feedback)
                    if record_feedback is not None and batch.feedback is not None and good_rows else 0)
        counts = {
            "rows_read": good_rows + q.num_rows,
            "events_added": added,
            "duplicates": good_rows - added,
            "quarantined": q.num_rows,
            "labels_added": labels,
            "feedback_added": feedback,
            "reasons": Counter(reason_key(r) for r in q.column("reason").to_pylist()),
        }
        con.execute("UPDATE ingest_runs SET rows_read = ? WHERE run_id = ?",
                    [read_before + counts["rows_read"], run_id]).fetchall()
        con.execute("COMMIT")
    except BaseException:
        if not store.rollback(con) and counts is not None and _rows_read(con, run_id) == read_before + counts["rows_read"]:
            stored(counts)  # committed after all
        raise
    stored(counts)


def _rows_read(con, run_id: str) -> int | None:
    """The run's rows read as its committed batches counted them."""
    rows = con.execute("SELECT rows_read FROM ingest_runs WHERE run_id = ?", [run_id]).fetchall()
    return rows[0][0] if rows else None


_DONE = object()


#: How much less of the CPU the preparing threads of :func:`in_pool` ask for than the writer (Linux nice
#: steps): the writer sets the pace, and batches prepared far ahead only hold memory.
POOL_NICE = 5


def in_pool(jobs: Iterator[Callable[[], object]], name: str, workers: int = 2, ahead: int = 2,
            nice: int = POOL_NICE) -> Iterator:
    """Yield the results of ``jobs`` (an iterator of callables) in order, computed by ``workers`` threads.

    One thread at a time takes the next job from ``jobs`` (reading the input is in order); the callables
    run at once. At most ``ahead`` results are computed or waiting beyond the one the caller holds (memory).
    On Linux the workers run ``nice`` steps below the caller. Each worker runs in its own copy of the
    caller's context. An exception raised by ``jobs`` or a job is raised in the caller's thread in that
    job's place, after every result before it. Closing the returned generator (or an error in the caller)
    stops the workers and closes ``jobs``.
    """
    cond = threading.Condition()
    taking = threading.Lock()  # one worker at a time takes a job from ``jobs``
    results: dict[int, tuple] = {}
    # taken: jobs taken from ``jobs``; held: results the caller has taken (it holds the last one)
    state = {"taken": 0, "held": 0, "ended": False, "stop": False}

    def work() -> None:
        if nice and sys.platform == "linux":  # (elsewhere a priority is the whole process's)
            me = threading.get_native_id()
            try:
                os.setpriority(os.PRIO_PROCESS, me, min(19, os.getpriority(os.PRIO_PROCESS, me) + nice))
            except OSError:
                pass
        while True:
            with taking:
                with cond:
                    while not (state["stop"] or state["ended"]) and state["taken"] >= state["held"] + ahead:
                        cond.wait()
                    if state["stop"] or state["ended"]:
                        return
                    i = state["taken"]
                try:
                    job = next(jobs)
                except BaseException as exc:  # the end of the jobs, or an error reading them
                    with cond:
                        state["ended"] = True
                        results[i] = (_DONE, None) if isinstance(exc, StopIteration) else (None, exc)
                        cond.notify_all()
                    return
                with cond:
                    state["taken"] = i + 1
            try:
                out = (job(), None)
            except BaseException as exc:
                out = (None, exc)
            del job
            with cond:
                results[i] = out
                cond.notify_all()
            del out

    names = [f"riskgate-ingest-{name}"] if workers == 1 else [f"riskgate-ingest-{name}-{k}" for k in range(workers)]
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(work,), name=n, daemon=True)
               for n in names]
    for t in threads:
        t.start()
    try:
        i = 0
        while True:
            with cond:
                while i not in results:
                    if not any(t.is_alive() for t in threads):
                        raise RuntimeError(f"the ingest {name} threads ended without a result")
                    cond.wait(0.5)
                item, exc = results.pop(i)
                state["held"] = i + 1
                cond.notify_all()
            if exc is not None:
                raise exc
            if item is _DONE:
                return
            yield item
            del item  # not kept alive here while the next one is awaited
            i += 1
    finally:
        with cond:
            state["stop"] = True
            cond.notify_all()
        for t in threads:
            t.join()
        results.clear()
        _close(jobs)


def expand_folders(paths: Sequence[str]) -> list[str]:
    """``paths`` with each folder replaced by the files directly in it, by name (hidden files and subfolders
    are left out), so that ``riskgate ingest exports/`` reads a folder of exports. A folder with no such
    file is refused before anything is read: nothing in it would be ingested, and the user meant something."""
    out = []
    for p in paths:
        if not os.path.isdir(p):
            out.append(p)
            continue
        files = sorted(os.path.join(p, n) for n in os.listdir(p)
                       if not n.startswith(".") and os.path.isfile(os.path.join(p, n)))
        if not files:
            raise InputFormatError("the folder holds no file to ingest (files directly in it are read; "
                                   "hidden files and subfolders are not)", source=str(p))
        out.extend(files)
    return out


def total_size(paths: Sequence[str]) -> int:
    out = 0
    for p in paths:
        try:
            out += os.path.getsize(p)
        except OSError:
            pass
    return out
