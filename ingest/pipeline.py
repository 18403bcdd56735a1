"""``riskgate ingest``: read inputs, normalise and enrich, store; nothing lost, nothing twice.

Every input row ends as exactly one of: an event added, a duplicate of an
event already stored (or earlier in the same run), or a quarantine row with
file, line and reason. ``rows_read == events_added + duplicates + quarantined``.

Each batch is written in one transaction (events, quarantine, labels), so a
run killed at any moment leaves the store consistent; running it again skips
what was committed (as duplicates) and completes the rest. A file that cannot
be read at all gives one error naming it, and the run goes on with the others.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from ingest import store
from ingest.enrich import Enricher
from ingest.errors import InputFormatError, RiskgateError
from ingest.sources import detect_format, get_reader
from ingest.sources.base import (
    BYTES_READ_OBSERVER,
    RAW_COLUMN,
    ReaderOptions,
    clip_raw,
    quarantine_table,
    with_quarantine_ids,
)


@dataclass
class IngestResult:
    run_id: str
    rows_read: int = 0
    events_added: int = 0
    duplicates: int = 0
    quarantined: int = 0
    labels_added: int = 0
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


def ingest_paths(
    con: duckdb.DuckDBPyConnection,
    paths: Sequence[str],
    *,
    fmt: str = "auto",
    options: ReaderOptions | None = None,
    enricher: Enricher,
    progress: ProgressFn | None = None,
) -> IngestResult:
    options = options or ReaderOptions()
    run_id = uuid.uuid4().hex
    result = IngestResult(run_id=run_id)
    store.mark_interrupted_runs(con)
    store.start_run(con, run_id, [str(p) for p in paths], fmt)
    status = "failed"
    try:
        for path in paths:
            _ingest_file(con, str(path), fmt, options, enricher, result, progress)
        status = "completed" if not result.errors else "completed_with_errors"
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
            for batch in reader.read(path, options):
                counts = _store_batch(con, batch, name, path, enricher, result.run_id)
                rows += counts["rows_read"]
                for k in ("rows_read", "events_added", "duplicates", "quarantined"):
                    entry[k] += counts[k]
                    setattr(result, k, getattr(result, k) + counts[k])
                result.labels_added += counts["labels_added"]
                result.reasons.update(counts["reasons"])
                if progress:
                    progress(path, -1, rows)
                store.yield_turn(con)
        finally:
            BYTES_READ_OBSERVER.reset(token)
    except InputFormatError as exc:
        entry["error"] = str(exc)
        result.errors.append(str(exc))
    except RiskgateError:
        raise
    except (OSError, EOFError, UnicodeError, ValueError, pa.ArrowException, duckdb.Error) as exc:
        msg = f"{path}: while reading as {entry['format'] or fmt}: {type(exc).__name__}: {exc}"
        entry["error"] = msg
        result.errors.append(msg)


def _store_batch(con, batch, fmt: str, path: str, enricher: Enricher, run_id: str) -> dict:
    good, bad = enricher.run(batch.events, fmt, path) if batch.events.num_rows else (None, None)
    q = batch.quarantine
    if bad is not None and bad.num_rows:
        lines = bad.column("source_line").to_pylist()
        reasons = bad.column("reason").to_pylist()
        raws = [clip_raw((r or "").rstrip("\r\n")) for r in bad.column(RAW_COLUMN).to_pylist()]
        q = pa.concat_tables([q, quarantine_table(fmt, path, lines, reasons, raws)])
    if q.num_rows:
        q = q.set_column(0, "source_format", pa.array([fmt] * q.num_rows, pa.string()))
        q = q.set_column(1, "source_file", pa.array([path] * q.num_rows, pa.string()))
        q = with_quarantine_ids(q)
    good_rows = good.num_rows if good is not None else 0
    con.execute("BEGIN TRANSACTION")
    try:
        added = store.insert_events(con, good, run_id) if good_rows else 0
        if q.num_rows:
            store.insert_quarantine(con, q, run_id)
        labels = store.insert_labels(con, batch.labels) if batch.labels is not None else 0
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return {
        "rows_read": good_rows + q.num_rows,
        "events_added": added,
        "duplicates": good_rows - added,
        "quarantined": q.num_rows,
        "labels_added": labels,
        "reasons": Counter(reason_key(r) for r in q.column("reason").to_pylist()),
    }


def total_size(paths: Sequence[str]) -> int:
    out = 0
    for p in paths:
        try:
            out += os.path.getsize(p)
        except OSError:
            pass
    return out
