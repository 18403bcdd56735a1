"""Loading ground-truth labels from a CSV ``event_id,label,value,source`` (``riskgate labels load``).

Labels live apart from events and are never a model input (ARCHITECTURE.md).
They may arrive before the events they describe: rows whose event id is not in
the store yet are loaded all the same, and counted. Loading the same file
again adds nothing (``ingest.store.insert_labels`` skips a label already
present for the same event, label and source). A bad row (wrong number of
fields, empty event_id or label, an ``is_account_takeover`` value that is not
a yes or a no, a line longer than ``ingest.sources.base.MAX_RECORD_BYTES``
characters) is reported with its line and skipped. Lines are read with that
limit (:class:`BoundedLines`): a longer one is read past in pieces, never held
whole (a small gzip file can hold a line of gigabytes).

``is_account_takeover`` is stored as ``true`` / ``false`` whichever common
spelling the file uses (``TRUE_VALUES`` / ``FALSE_VALUES``: 1/0, yes/no, t/f, any case,
blanks around): training and tuning read only those two words
(``risk.feedback.LABELS_IN_FORCE_SQL``). Other labels are kept as written.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from ingest import store
from ingest.errors import InputFormatError
from ingest.schema import LABEL_SCHEMA
from ingest.sources import base
from ingest.sources.base import open_binary

HEADER = ("event_id", "label", "value", "source")
#: labels whose value is a yes or a no, stored as ``true`` / ``false``
BOOLEAN_LABELS = ("is_account_takeover",)
#: the spellings of a yes / a no that a boolean label may use (compared stripped and lower-cased)
TRUE_VALUES = ("true", "1", "yes", "t")
FALSE_VALUES = ("false", "0", "no", "f")
BATCH_ROWS = 100_000
MAX_LISTED_REJECTIONS = 1000  # the count is always complete; only the first ones are listed


@dataclass(frozen=True)
class RejectedLabel:
    line: int
    reason: str


@dataclass
class LabelsLoadResult:
    source: str
    read: int = 0
    added: int = 0
    rejected: int = 0
    unknown_events: int = 0  # distinct event ids of the file not (yet) in the events table
    rejections: list[RejectedLabel] = field(default_factory=list)

    @property
    def already_present(self) -> int:
        return self.read - self.rejected - self.added

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "read": self.read,
            "added": self.added,
            "already_present": self.already_present,
            "rejected": self.rejected,
            "unknown_events": self.unknown_events,
            "rejections": [{"line": r.line, "reason": r.reason} for r in self.rejections],
        }


def _text_lines(path: str | Path) -> io.TextIOWrapper:
    fh = open_binary(path)
    return io.TextIOWrapper(fh, encoding="utf-8-sig", newline="")


class LongLine(Exception):
    """A line longer than the limit of :class:`BoundedLines`, read past (never held whole)."""

    def __init__(self, length: int, limit: int):
        super().__init__(f"{length:,} characters, more than {limit:,}")
        self.length = length


class BoundedLines:
    """The lines of a text file (``newline=""``: line ends kept) for :func:`csv.reader`, each read with a limit:
    a line longer than ``limit`` characters raises :class:`LongLine` once it has been read past in pieces, and
    the next line follows (the csv reader starts a new row when asked again). ``skipped`` counts those lines
    (the csv reader's ``line_num`` counts the others)."""

    __slots__ = ("limit", "skipped", "_readline", "_size", "_usual")
    PIECE = 1 << 20

    def __init__(self, fh: io.TextIOBase, limit: int):
        self.limit = limit
        self.skipped = 0
        self._readline = fh.readline
        self._size = limit + 2  # (a line of ``limit`` characters and "\r\n" is not too long)
        self._usual = limit  # the longest text taken without a second look (-1 after a piece cut after "\r")

    def __iter__(self) -> BoundedLines:
        return self

    def __next__(self) -> str:
        text = self._readline(self._size)
        if len(text) <= self._usual:
            if text:
                return text
            raise StopIteration
        return self._unusual(text)

    def _unusual(self, text: str) -> str:
        if self._usual < 0:  # the line before was read past up to a "\r": a "\n" right after it is its end
            self._usual = self.limit
            if text == "\n":
                return self.__next__()
            if not text:
                raise StopIteration
            if len(text) <= self.limit:
                return text
        length = len(text.rstrip("\r\n"))
        if length <= self.limit:
            return text
        self.skipped += 1
        cut_at_cr = len(text) == self._size and text.endswith("\r")
        while not text.endswith(("\n", "\r")):  # read past the rest of the line, a piece at a time
            text = self._readline(self.PIECE)
            if not text:
                break
            length += len(text.rstrip("\r\n"))
            cut_at_cr = len(text) == self.PIECE and text.endswith("\r")
        if cut_at_cr:
            self._usual = -1
        raise LongLine(length, self.limit)


def read_label_batches(path: str | Path, result: LabelsLoadResult, batch_rows: int = BATCH_ROWS) -> Iterator[pa.Table]:
    """Yield LABEL_SCHEMA tables of the good rows; count and record bad ones in ``result``."""
    source = str(path)
    with _text_lines(path) as fh:
        lines = BoundedLines(fh, base.MAX_RECORD_BYTES)
        reader = csv.reader(lines)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise InputFormatError("is empty: expected the header " + ",".join(HEADER), source=source) from None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise InputFormatError(f"cannot read the header: {exc}", source=source, line=1) from None
        except LongLine as exc:
            raise InputFormatError(f"cannot read the header: line 1 is too long: {exc}", source=source,
                                   line=1) from None
        if tuple(header) != HEADER:
            raise InputFormatError(
                f"the header must be {','.join(HEADER)}; found {','.join(header)}", source=source, line=1
            )
        cols: list[list] = [[], [], [], []]
        prev = reader.line_num  # the header's last line
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except UnicodeDecodeError as exc:
                raise InputFormatError(f"not UTF-8 after line {prev}: {exc.reason}", source=source) from None
            except csv.Error as exc:
                raise InputFormatError(f"malformed CSV after line {prev}: {exc}", source=source) from None
            except LongLine as exc:  # a bad row like the others: reading goes on at the next line
                row, too_long = None, exc
            else:
                too_long = None
            line = prev + 1
            prev = reader.line_num + lines.skipped
            if row is not None and not any(x.strip() for x in row):
                continue
            result.read += 1
            reason = None
            if too_long is not None:
                reason = (f"line {prev} is too long: {too_long}; skipped"
                          + ("" if prev == line else f" with its row from line {line}"))
            elif len(row) != 4:
                reason = f"expected 4 fields (event_id,label,value,source), found {len(row)}"
            elif not row[0].strip():
                reason = "event_id is empty"
            elif not row[1].strip():
                reason = "label is empty"
            elif row[1].strip() in BOOLEAN_LABELS:
                value = boolean_label_value(row[2])
                if value is None:
                    reason = f"{row[1].strip()} must be true or false (or 1/0, yes/no, t/f), got {row[2]!r}"
                else:
                    row[2] = value
            if reason:
                result.rejected += 1
                if len(result.rejections) < MAX_LISTED_REJECTIONS:
                    result.rejections.append(RejectedLabel(line, reason))
                continue
            cols[0].append(row[0].strip())
            cols[1].append(row[1].strip())
            cols[2].append(row[2] if row[2] != "" else None)
            cols[3].append(row[3].strip() or None)
            if len(cols[0]) >= batch_rows:
                yield _table(cols)
                cols = [[], [], [], []]
        if cols[0]:
            yield _table(cols)


def boolean_label_value(text: str | None) -> str | None:
    """``"true"`` / ``"false"`` for a spelling of yes / no in ``TRUE_VALUES`` / ``FALSE_VALUES``, else None."""
    v = (text or "").strip().lower()
    return "true" if v in TRUE_VALUES else "false" if v in FALSE_VALUES else None


def _table(cols: list[list]) -> pa.Table:
    return pa.table(dict(zip(HEADER, cols)), schema=pa.schema([f.with_nullable(True) for f in LABEL_SCHEMA]))


def load_labels(con: duckdb.DuckDBPyConnection, path: str | Path, batch_rows: int = BATCH_ROWS) -> LabelsLoadResult:
    """Load a labels CSV into the labels table, in one transaction; count event ids the store does not know."""
    result = LabelsLoadResult(source=str(path))
    con.execute("CREATE OR REPLACE TEMP TABLE _rg_label_ids (event_id VARCHAR)")
    con.execute("BEGIN TRANSACTION")
    try:
        for t in read_label_batches(path, result, batch_rows):
            result.added += store.insert_labels(con, t)
            con.register("_rg_label_batch", t)
            try:
                con.execute("INSERT INTO _rg_label_ids SELECT DISTINCT event_id FROM _rg_label_batch").fetchall()
            finally:
                con.unregister("_rg_label_batch")
        result.unknown_events = int(con.execute(
            """SELECT count(*) FROM (SELECT DISTINCT event_id FROM _rg_label_ids) i
               WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = i.event_id)"""
        ).fetchall()[0][0])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.execute("DROP TABLE IF EXISTS _rg_label_ids")
    return result
