"""Loading ground-truth labels from a CSV ``event_id,label,value,source`` (``riskgate labels load``).

Labels live apart from events and are never a model input (ARCHITECTURE.md).
They may arrive before the events they describe: rows whose event id is not in
the store yet are loaded all the same, and counted. A label is one value per
(event, label, source): loading the same file again adds nothing, and a row
giving a stored label another value replaces it (counted as updated), so that
a wrong label is corrected by loading the right one. A file that gives one
label two values has all of those rows rejected, each with its line and the
lines of the others. A row with an empty value is no label (nothing stored or
replaced: a blank spreadsheet cell must not erase a label), counted as blank. A bad row (wrong number of
fields, empty event_id or label, a label named password, an ``is_account_takeover`` value that is not
a yes or a no, a byte that is not UTF-8, a line longer than ``ingest.sources.base.MAX_RECORD_BYTES``
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
import re
from collections.abc import Callable, Iterator
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
    updated: int = 0  # stored labels given another value (each counted once)
    blank: int = 0  # rows with an empty value: no label, nothing stored or replaced
    rejected: int = 0
    unknown_events: int = 0  # distinct event ids of the file not (yet) in the events table
    rejections: list[RejectedLabel] = field(default_factory=list)

    @property
    def already_present(self) -> int:
        return self.read - self.rejected - self.added - self.updated - self.blank

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "read": self.read,
            "added": self.added,
            "updated": self.updated,
            "blank": self.blank,
            "already_present": self.already_present,
            "rejected": self.rejected,
            "unknown_events": self.unknown_events,
            "rejections": [{"line": r.line, "reason": r.reason} for r in self.rejections],
        }


def _text_lines(path: str | Path) -> io.TextIOWrapper:
    """The file as text; a byte that is not UTF-8 is read as a lone surrogate (``surrogateescape``), for
    :class:`BoundedLines` to find on its line: the decoder works ahead of the lines, in blocks, and failing there
    refused the whole file naming a line before the bad one (the header, for a file of a few lines)."""
    fh = open_binary(path)
    return io.TextIOWrapper(fh, encoding="utf-8-sig", errors="surrogateescape", newline="")


#: a byte that is not UTF-8, as ``surrogateescape`` decodes it
_UNDECODED = re.compile("[\udc80-\udcff]")


class LongLine(Exception):
    """A line longer than the limit of :class:`BoundedLines`, read past (never held whole)."""

    def __init__(self, length: int, limit: int):
        super().__init__(f"{length:,} characters, more than {limit:,}")
        self.length = length


class BoundedLines:
    """The lines of a text file (``newline=""``: line ends kept) for :func:`csv.reader`, each read with a limit:
    a line longer than ``limit`` characters raises :class:`LongLine` once it has been read past in pieces, and
    the next line follows (the csv reader starts a new row when asked again). ``skipped`` counts those lines
    (the csv reader's ``line_num`` counts the others).

    ``invalid`` is (line, position) of the first byte that is not UTF-8 (:func:`_text_lines`) on the lines
    given since it was last set to None: the line's number in the file and the byte's position on it (from 0, as
    ingest's "invalid byte at position N"); ``line_num`` (the csv reader's, set by the caller) counts the lines
    given before."""

    __slots__ = ("limit", "skipped", "invalid", "line_num", "_readline", "_size", "_usual")
    PIECE = 1 << 20

    def __init__(self, fh: io.TextIOBase, limit: int):
        self.limit = limit
        self.skipped = 0
        self.invalid: tuple[int, int] | None = None
        self.line_num: Callable[[], int] = lambda: 0
        self._readline = fh.readline
        self._size = limit + 2  # (a line of ``limit`` characters and "\r\n" is not too long)
        self._usual = limit  # the longest text taken without a second look (-1 after a piece cut after "\r")

    def __iter__(self) -> BoundedLines:
        return self

    def __next__(self) -> str:
        text = self._readline(self._size)
        if len(text) <= self._usual:
            if text:
                return text if text.isascii() else self._look(text)
            raise StopIteration
        return self._unusual(text)

    def _look(self, text: str) -> str:
        """``text``, the line about to be given, noting where its first byte that is not UTF-8 is (``invalid``)."""
        if self.invalid is None and (bad := _UNDECODED.search(text)) is not None:
            self.invalid = (self.line_num() + 1 + self.skipped,
                            len(text[:bad.start()].encode("utf-8", "surrogateescape")))
        return text

    def _unusual(self, text: str) -> str:
        if self._usual < 0:  # the line before was read past up to a "\r": a "\n" right after it is its end
            self._usual = self.limit
            if text == "\n":
                return self.__next__()
            if not text:
                raise StopIteration
            if len(text) <= self.limit:
                return text if text.isascii() else self._look(text)
        length = len(text.rstrip("\r\n"))
        if length <= self.limit:
            return text if text.isascii() else self._look(text)
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
        lines.line_num = lambda: reader.line_num  # (where a byte that is not UTF-8 is)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise InputFormatError("is empty: expected the header " + ",".join(HEADER), source=source) from None
        except csv.Error as exc:
            raise InputFormatError(f"cannot read the header: {exc}", source=source, line=1) from None
        except LongLine as exc:
            raise InputFormatError(f"cannot read the header: line 1 is too long: {exc}", source=source,
                                   line=1) from None
        if lines.invalid is not None:
            at, position = lines.invalid
            raise InputFormatError(f"cannot read the header: not UTF-8: invalid byte at position {position}",
                                   source=source, line=at)
        if tuple(header) != HEADER:
            raise InputFormatError(
                f"the header must be {','.join(HEADER)}; found {','.join(header)}", source=source, line=1
            )
        cols: list[list] = [[], [], [], [], []]
        prev = reader.line_num  # the header's last line
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise InputFormatError(f"malformed CSV after line {prev}: {exc}", source=source) from None
            except LongLine as exc:  # a bad row like the others: reading goes on at the next line
                row, too_long = None, exc
            else:
                too_long = None
            line = prev + 1
            prev = reader.line_num + lines.skipped
            invalid = lines.invalid
            if invalid is not None:
                lines.invalid = None
            elif row is not None and not any(x.strip() for x in row):
                continue
            result.read += 1
            reason = None
            if too_long is not None:
                reason = (f"line {prev} is too long: {too_long}; skipped"
                          + ("" if prev == line else f" with its row from line {line}"))
            elif invalid is not None:  # as ingest quarantines such a row; the rest is read
                reason = f"not UTF-8: invalid byte at position {invalid[1]}" + (
                    "" if invalid[0] == line else f" of line {invalid[0]}")
            elif len(row) != 4:
                reason = f"expected 4 fields (event_id,label,value,source), found {len(row)}"
            elif not row[0].strip():
                reason = "event_id is empty"
            elif not row[1].strip():
                reason = "label is empty"
            elif base.is_password_key(row[1]):  # never stored (README: a password is never stored by ingest)
                reason = f"a label named {row[1].strip()!r} is not stored: a password is never stored"
            elif not row[2].strip():  # a blank cell is no label, as a JSON null is: nothing stored or replaced
                result.blank += 1
                continue
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
            cols[2].append(row[2])
            cols[3].append(row[3].strip() or None)
            cols[4].append(line)
            if len(cols[0]) >= batch_rows:
                yield _table(cols)
                cols = [[], [], [], [], []]
        if cols[0]:
            yield _table(cols)


def boolean_label_value(text: str | None) -> str | None:
    """``"true"`` / ``"false"`` for a spelling of yes / no in ``TRUE_VALUES`` / ``FALSE_VALUES``, else None."""
    v = (text or "").strip().lower()
    return "true" if v in TRUE_VALUES else "false" if v in FALSE_VALUES else None


def _table(cols: list[list]) -> pa.Table:
    """LABEL_SCHEMA's columns and ``source_line``, the row's line in the file."""
    return pa.table(dict(zip((*HEADER, "source_line"), cols)),
                    schema=pa.schema([*(f.with_nullable(True) for f in LABEL_SCHEMA), ("source_line", pa.int64())]))


_KEY = "event_id, label, source"
#: how many lines of how many other values a rejection of a label given several values can name (it names 10)
_SHOWN_LINES = 11
#: a label of the file (``r``) and a stored one (``l``) are the same label
_SAME = "l.event_id = r.event_id AND l.label = r.label AND l.source IS NOT DISTINCT FROM r.source"


def load_labels(con: duckdb.DuckDBPyConnection, path: str | Path, batch_rows: int = BATCH_ROWS) -> LabelsLoadResult:
    """Load a labels CSV into the labels table, in one transaction; count event ids the store does not know."""
    result = LabelsLoadResult(source=str(path))
    con.execute("""CREATE OR REPLACE TEMP TABLE _rg_label_rows
                   (event_id VARCHAR, label VARCHAR, value VARCHAR, source VARCHAR, source_line BIGINT)""")
    con.execute("BEGIN TRANSACTION")
    try:
        for t in read_label_batches(path, result, batch_rows):
            con.register("_rg_label_batch", t)
            try:
                con.execute("INSERT INTO _rg_label_rows SELECT * FROM _rg_label_batch").fetchall()
            finally:
                con.unregister("_rg_label_batch")
        _reject_contradictions(con, result)
        # a stored label the file gives another value: replaced (every stored row of it, one value again)
        con.execute(f"""CREATE OR REPLACE TEMP TABLE _rg_label_changed AS
                        SELECT DISTINCT {_KEY} FROM _rg_label_rows r
                        WHERE EXISTS (SELECT 1 FROM labels l WHERE {_SAME} AND l.value IS DISTINCT FROM r.value)""")
        result.updated = int(con.execute("SELECT count(*) FROM _rg_label_changed").fetchall()[0][0])
        con.execute(f"DELETE FROM labels l USING _rg_label_changed r WHERE {_SAME}").fetchall()
        inserted = con.execute(
            f"""INSERT INTO labels SELECT DISTINCT event_id, label, value, source FROM _rg_label_rows r
                WHERE NOT EXISTS (SELECT 1 FROM labels l WHERE {_SAME})""").fetchall()
        result.added = (int(inserted[0][0]) if inserted else 0) - result.updated
        result.unknown_events = int(con.execute(
            """SELECT count(DISTINCT event_id) FROM _rg_label_rows i
               WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = i.event_id)"""
        ).fetchall()[0][0])
        con.execute("COMMIT")
    except BaseException:
        store.rollback(con)
        raise
    finally:
        con.execute("DROP TABLE IF EXISTS _rg_label_rows")
        con.execute("DROP TABLE IF EXISTS _rg_label_changed")
    result.rejections.sort(key=lambda r: r.line)
    return result


def _reject_contradictions(con: duckdb.DuckDBPyConnection, result: LabelsLoadResult) -> None:
    """Reject (and drop from ``_rg_label_rows``) every row of a label the file gives more than one value.

    Linear in the rows (a file repeating one label 40,000 times with two values must not join each row with every
    other): the rows of such labels are numbered by window functions, and each rejected row names the first lines
    of the label's other values from a short list kept per label (the first ``_SHOWN_LINES`` lines of each of its
    first ``_SHOWN_LINES`` values)."""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _rg_label_bad_rows AS
        SELECT *, count(*) OVER (PARTITION BY {_KEY}) - count(*) OVER (PARTITION BY {_KEY}, value) AS others,
               row_number() OVER (PARTITION BY {_KEY}, value ORDER BY source_line) AS k,
               dense_rank() OVER (PARTITION BY {_KEY} ORDER BY first_line) AS value_rank
        FROM (SELECT *, min(source_line) OVER (PARTITION BY {_KEY}, value) AS first_line
              FROM _rg_label_rows r SEMI JOIN (SELECT {_KEY} FROM _rg_label_rows GROUP BY ALL
                                               HAVING count(DISTINCT coalesce(value, chr(0))) > 1) l ON {_SAME})""")
    try:
        n = int(con.execute("SELECT count(*) FROM _rg_label_bad_rows").fetchall()[0][0])
        if not n:
            return
        result.rejected += n
        room = max(0, MAX_LISTED_REJECTIONS - len(result.rejections))
        rows = con.execute(
            f"""WITH shown AS (SELECT {_KEY}, list({{'v': value, 'line': source_line}} ORDER BY source_line) AS firsts
                               FROM _rg_label_bad_rows WHERE k <= {_SHOWN_LINES} AND value_rank <= {_SHOWN_LINES}
                               GROUP BY ALL)
                SELECT r.source_line, r.event_id, r.label, r.value, r.others,
                       list_transform(list_filter(l.firsts, lambda x: x.v IS DISTINCT FROM r.value), lambda x: x.line)
                FROM (SELECT * FROM _rg_label_bad_rows ORDER BY source_line LIMIT ?) r
                JOIN shown l ON {_SAME} ORDER BY r.source_line""", [room]).fetchall()
        for line, event_id, label, value, others, lines in rows:
            where = ", ".join(map(str, lines[:10])) + (", ..." if others > min(len(lines), 10) else "")
            result.rejections.append(RejectedLabel(line, f"{label} of event {event_id} is {value!r} here and another "
                                                         f"value on line{'s' if others > 1 else ''} {where}: "
                                                         "none of them loaded"))
        con.execute(f"DELETE FROM _rg_label_rows r USING (SELECT DISTINCT {_KEY} FROM _rg_label_bad_rows) l "
                    f"WHERE {_SAME}").fetchall()  # (each row joined with its label once, not with its every row)
    finally:
        con.execute("DROP TABLE IF EXISTS _rg_label_bad_rows")
