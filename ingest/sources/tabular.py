"""Generic CSV and Parquet inputs, described by a column-mapping file; and the CSV record reader.

A generic input says nothing about which of its columns is the user, the time
or the outcome: a *column mapping* (YAML or JSON, ``--mapping FILE``) says it.
Example::

    # mapping.yaml
    columns:                    # canonical field -> the file's column
      username: user
      creation_date: ts
      ip_address: client_ip
      user_agent_source: ua
      event_response: ok
    constants:                  # canonical field -> one value for every row
      event_type: SignIn
    values:                     # canonical field -> {value in the file: value to use}
      event_response: {"1": Pass, "0": Fail}
    time_format: "%Y-%m-%d %H:%M:%S"   # strptime format of creation_date text
    time_zone: UTC              # zone of times written without an offset
    headers:                    # HTTP header name -> column; becomes http_headers
      User-Agent: ua
    labels:                     # label name -> column; only ever the labels table
      is_account_takeover: label_col
    label_source: my-dataset
    keep_unmapped: true         # other columns -> the event's extra JSON
    csv: {delimiter: ",", quote_char: '"'}

Required after mapping: ``username``, ``event_type``, ``event_response`` and
``creation_date``, each from a column or a constant. ``event_id`` is optional:
without it (or where its cell is empty) the id is ``row-`` + the first 32 hex
digits of SHA-256 over the row's canonical values, so ingesting the same rows
again adds nothing.

The CSV record reader (:func:`iter_csv_records`) is shared with ``rba-csv``:
it splits the bytes into records itself (numpy over each block: a line end --
LF, CRLF or a lone CR, as old Mac files end their lines -- ends a record when
it is outside a quoted field; a quote opens one only at the start of a field,
as in RFC 4180, Python's csv module, pyarrow and DuckDB: :class:`_Quotes`), so
every row keeps its physical line number and raw text even when quoted fields
hold newlines; pyarrow then parses the well-formed records in bulk. Rows with
the wrong number of fields or bytes that are not UTF-8 go to quarantine with
their line; so does a line whose quoted field is never closed as a row's, alone,
the lines after it read again (:func:`_split`).
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ingest.documents import StrictYamlLoader, load_yaml, yaml_refusal
from ingest.errors import ConfigurationError, InputFormatError
from ingest.labels import BOOLEAN_LABELS, FALSE_VALUES, TRUE_VALUES
from ingest.schema import EVENT_RESPONSE_ALIASES, EVENT_RESPONSES, EVENT_TYPES, LABEL_SCHEMA, SOURCE_SCHEMA
from ingest.schema import MAX_ASN, as_number_sql
from ingest.store import scratch
from ingest.sources import base
from ingest.sources.base import (
    as_source_types,
    epoch_sql,
    GZIP_MAGIC,
    RAW_COLUMN,
    REDACTED,
    QuarantineBuilder,
    ReadBatch,
    ReaderOptions,
    is_password_key,
    long_line_reason,
    open_binary,
    read_past_line,
)

# ---------------------------------------------------------------------------
# CSV records with physical line numbers
# ---------------------------------------------------------------------------

# A single record may not grow beyond ``base.MAX_RECORD_BYTES`` (an unclosed quote otherwise swallows the file).
_FIRST_BLOCK = 1 << 20
_MIN_BLOCK = 1 << 16
_MAX_BLOCK = 32 << 20


@dataclass
class CsvRecords:
    """A slice of a CSV file's data rows (the header excluded)."""

    rows: pa.Table  # one string column per header column, named c0, c1, ... ("" for empty cells)
    lines: pa.Array  # int64: the physical line where each row starts
    raws: pa.Array  # string: each row's text as it is in the file
    bad: list[tuple[int, str, bytes]]  # (line, reason, raw bytes) of records that are not rows of this file


def csv_header(path: str | os.PathLike, *, delimiter: str = ",", quotechar: str | None = '"') -> list[str]:
    """The column names in ``path``'s first record; InputFormatError when there is none."""
    with open_binary(path) as fh:
        try:
            head = fh.read(1 << 20)
        except (OSError, EOFError) as exc:
            raise InputFormatError(f"cannot read: {exc}", source=str(path)) from exc
    if not head.strip():
        raise InputFormatError("is empty: expected a CSV header line naming the columns", source=str(path))
    end = _first_record_end(head, quotechar, delimiter)
    try:
        text = head[:end].decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputFormatError(
            f"the header line is not UTF-8 (invalid byte at position {exc.start}); expected a CSV header",
            source=str(path),
            line=1,
        ) from exc
    if "\x00" in text:
        raise InputFormatError("is binary, not CSV text", source=str(path))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar=quotechar or '"',
                        quoting=csv.QUOTE_MINIMAL if quotechar else csv.QUOTE_NONE)
    names = next(reader, [])
    if not names or names == [""]:
        raise InputFormatError("the first line is blank: expected a CSV header line naming the columns",
                               source=str(path), line=1)
    names = name_unnamed_columns(names)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputFormatError("the header names a column more than once: " + ", ".join(repr(d) for d in dup),
                               source=str(path), line=1)
    return names


def name_unnamed_columns(names: list[str]) -> list[str]:
    """``names`` with each empty one (``user,ts,,note``, a header ending in a delimiter) named as DuckDB's
    ``read_csv`` names it: ``column`` + its position counted from 0 (``column2``), ``_1``, ``_2``, ... added while
    that name is taken. A column without a name went to ``extra`` as ``["x"]``, a JSON array, not an object."""
    taken = set(names)
    out = []
    for i, name in enumerate(names):
        if name == "":
            name = base_name = f"column{i}"
            k = 0
            while name in taken:
                k += 1
                name = f"{base_name}_{k}"
            taken.add(name)
        out.append(name)
    return out


def _first_record_end(head: bytes, quotechar: str | None, delimiter: str) -> int:
    """Where the first record of ``head`` ends (its line end outside a quoted field), quotes read as the record
    reader reads them (:class:`_Quotes`)."""
    arr = np.frombuffer(head, dtype=np.uint8)
    nl = line_ends(arr, True)
    if quotechar is not None:
        toggles = _Quotes(arr, np.flatnonzero(arr == ord(quotechar)), ord(delimiter), _bom_end(head)).toggling()
        nl = nl[(np.searchsorted(toggles, nl) & 1) == 0]
    if not len(nl):
        return len(head)
    end = int(nl[0])
    return end - 1 if end and head[end - 1] == 13 else end  # (a CRLF: before its CR)


def _bom_end(buf: bytes) -> int:
    """3 when ``buf`` starts with a UTF-8 byte-order mark (the first field starts after it), else -1."""
    return 3 if buf.startswith(b"\xef\xbb\xbf") else -1


def first_line(head: bytes) -> bytes:
    """The first line of ``head`` (a byte-order mark left out), whatever ends it: LF, CRLF or a lone CR."""
    return re.split(rb"\r\n?|\n", head.removeprefix(b"\xef\xbb\xbf"), maxsplit=1)[0]


def line_ends(arr: np.ndarray, eof: bool) -> np.ndarray:
    """The index of every line end in ``arr`` (bytes), in order: each LF, and each CR not followed by an LF (old
    Mac files end their lines with CR alone; a CRLF's line end is its LF). A CR that is the last byte of ``arr`` is
    a line end only at the end of the input (``eof``): otherwise the next read says whether an LF follows it."""
    nl = np.flatnonzero(arr == 10)
    cr = np.flatnonzero(arr == 13)
    if not len(cr):
        return nl
    after = cr + 1
    lone = np.full(len(cr), eof)
    inside = after < len(arr)
    lone[inside] = arr[after[inside]] != 10
    if not lone.any():  # CRLF line ends (or none at all)
        return nl
    return np.union1d(nl, cr[lone])


class _Quotes:
    """Which quote characters of a buffer open or close a quoted field, read as Python's csv module, pyarrow and
    DuckDB's read_csv read them (RFC 4180): a quote opens a quoted field only at the start of a field (of a record,
    or after a delimiter); inside one, two quotes in a row are a quote character and a single quote closes it (any
    characters after the closing quote belong to the field, up to the next delimiter or line end, quotes among them:
    ``"ab"c"d`` is ``abc"d``); a quote anywhere else is a character of its field (``5" screen``, ``Kyiv"``).

    Each quote read that way as opening or closing a field *toggles* "inside a quoted field": a record separator is
    a line end with an even number of toggles before it. In a file that quotes whole fields only, every quote
    toggles (a doubled quote closes and opens again); the quotes are checked for that all at once (numpy), and only
    from a quote that breaks it (``5"``) is the buffer read quote by quote, to the next one that breaks it: a
    well-quoted buffer costs a few array operations over its quote characters, not a pass over its bytes."""

    def __init__(self, arr: np.ndarray, qpos: np.ndarray, d: int, field_start: int = -1):
        """``arr``: the buffer's bytes, starting at the start of a record; ``qpos``: the positions of its quote
        characters; ``d``: the delimiter; ``field_start``: another position where a field starts (after a UTF-8
        byte-order mark)."""
        self.arr, self.qpos, self.d = arr, qpos, d
        n = self.n = len(qpos)
        self._stops: np.ndarray | None = None
        self._breaks: tuple[np.ndarray, np.ndarray] | None = None
        if not n:
            return
        ends_field = np.zeros(256, dtype=bool)  # the bytes that end a field: the delimiter, LF, CR
        ends_field[[b for b in (d, 10, 13) if b < 256]] = True  # (a delimiter beyond ASCII is never one byte)
        at_start = ends_field[arr[qpos - 1]]  # (quote 0 at position 0 reads the last byte: set below)
        last = int(qpos[-1]) == len(arr) - 1
        at_end = ends_field[arr[qpos[:-1] + 1] if last else arr[qpos + 1]]
        if last:
            at_end = np.append(at_end, True)
        if qpos[0] == 0:
            at_start[0] = True
        i = int(np.searchsorted(qpos, field_start)) if field_start >= 0 else n
        if i < n and qpos[i] == field_start:
            at_start[i] = True
        self.pair = np.diff(qpos) == 1  # pair[k]: quote k+1 follows quote k at once ("" inside a field: one quote)
        self.opens, self.closes = at_start.copy(), at_end
        self.opens[1:] |= self.pair
        self.closes[:-1] |= self.pair
        self.at_start = at_start

    def regular(self) -> bool:
        """Whether every quote toggles, read from the first (as in a file that quotes whole fields only)."""
        return not self.n or bool(self.at_start[0] and self.opens[2::2].all() and self.closes[1::2].all())

    def _prepare(self) -> None:
        """What reading quote by quote needs (not a regular buffer's reading)."""
        if self._breaks is not None or not self.n:
            return
        even = (np.arange(self.n) & 1) == 0
        # reading from an even (odd) quote outside a quoted field, the quotes that do not toggle as they alternate:
        # one there to open a field that cannot, or there to close one that cannot
        self._breaks = (np.flatnonzero(np.where(even, ~self.opens, ~self.closes)),
                        np.flatnonzero(np.where(even, ~self.closes, ~self.opens)))
        self.field_starts = np.flatnonzero(self.at_start)
        self._paired = np.concatenate(([False], self.pair))

    @property
    def paired(self) -> np.ndarray:
        """Whether each quote follows another at once: whether it toggles depends on that one."""
        self._prepare()
        return self._paired

    def toggles(self, k: int = 0, agree: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
                ) -> tuple[list[tuple[int, int]], int]:
        """The quotes that toggle, reading from quote ``k`` outside a quoted field: ranges [lo, hi) of quote
        indices, and the index where reading stopped (``n``: at the end). With ``agree`` (the indices of the
        quotes another reading reaches outside a quoted field: all, even, odd), reading stops at the first quote
        this one too reaches outside a quoted field, and not right after another quote (whether it opens a field
        depends on that one): from there on the two readings are the same."""
        n, qpos = self.n, self.qpos
        self._prepare()
        breaks = self._breaks
        runs: list[tuple[int, int]] = []
        while k < n:  # outside a quoted field, the next quote is k
            if not self.at_start[k]:  # quotes inside an unquoted field: characters of it, up to the next field start
                i = int(self.field_starts.searchsorted(k))
                nk = int(self.field_starts[i]) if i < len(self.field_starts) else n
                if agree is not None and (r := _first_in(agree[0], k, nk)) is not None:
                    return runs, r
                k = nk
                continue
            i = int(breaks[k & 1].searchsorted(k))
            j = int(breaks[k & 1][i]) if i < len(breaks[k & 1]) else n  # quotes k .. j-1 toggle
            if agree is not None and (r := _first_in(agree[1 + (k & 1)], k, min(j + 1, n))) is not None:
                runs.append((k, r))  # (outside at k, k+2, ...: the quotes of k's parity)
                return runs, r
            runs.append((k, j))
            if j == n:
                break
            if (j - k) & 1 == 0:  # outside a quoted field, a quote in the middle of one: a character
                k = j + 1
            else:  # a quote that closes a quoted field with more characters after it (`"ab"c`): they are the
                runs.append((j, j + 1))  # field's, up to its end, quotes among them
                nk = int(qpos.searchsorted(self._field_end(int(qpos[j]))))
                if agree is not None and (r := _first_in(agree[0], j + 1, nk)) is not None:
                    return runs, r
                k = nk
        return runs, n

    def _field_end(self, p: int) -> int:
        """The position of the first delimiter or line end after ``p`` (the buffer's size if none)."""
        if self._stops is None:
            a = self.arr
            self._stops = np.flatnonzero((a == self.d) | (a == 10) | (a == 13))
        i = int(self._stops.searchsorted(p, "right"))
        return int(self._stops[i]) if i < len(self._stops) else len(self.arr)

    def toggling(self) -> np.ndarray:
        """The positions of the quotes that toggle, reading the whole buffer."""
        return self.qpos if self.regular() else self.qpos[self.mask(self.toggles()[0])]

    def mask(self, runs: list[tuple[int, int]]) -> np.ndarray:
        m = np.zeros(self.n, dtype=bool)
        for lo, hi in runs:
            m[lo:hi] = True
        return m


def _first_in(sorted_idx: np.ndarray, lo: int, hi: int) -> int | None:
    """The first value of ``sorted_idx`` in [lo, hi), or None."""
    i = int(sorted_idx.searchsorted(lo))
    return int(sorted_idx[i]) if i < len(sorted_idx) and sorted_idx[i] < hi else None


@dataclass
class _Split:
    """How a buffer's bytes split into records."""

    toggles: np.ndarray  # the positions of the quotes that open or close a quoted field
    seps: np.ndarray  # the line ends that end a record (outside a quoted field)
    forced: dict[int, str]  # start -> reason of the lines read as bad records of their own (see _split)
    open_end: bool  # whether the buffer ends inside a quoted field
    dpos: np.ndarray | None  # the delimiters' positions, when they were needed


def _unclosed_reason(columns: int, ncols: int) -> str:
    return (f"a quoted field is not closed on this line (read on to its closing quote, the row has {columns} "
            f"columns, expected {ncols})")


UNCLOSED_AT_END = "a quoted field is not closed before the end of the file"


def _split(arr: np.ndarray, nl: np.ndarray, qpos: np.ndarray, d: int, ncols: int, *, eof: bool,
           header: bool = False, field_start: int = -1) -> _Split:
    """Split ``arr`` (whole records from its start; ``nl`` its line ends, ``qpos`` its quotes) into records.

    A record whose quoted field runs past a line end must make a row of ``ncols`` columns, and no quoted field may
    be open at the end of the file: otherwise the quote that opened it was no quote of a field but a stray ``"``
    at the start of a value, and reading it as one would swallow the lines after it into a row that is none (or,
    at the end of the file, into nothing). Such a record's first line becomes a bad record of its own
    (``forced``), and the next line is read as the start of a new record, so each line after it ends up in a row
    or a bad record. Only records whole in the buffer are checked (all at ``eof``); with ``header``, the first
    record is the header, never such a record.

    Reading again from the next line, only as far as it differs: to a quote both readings reach outside a quoted
    field (:meth:`_Quotes.toggles`). Bad records inside a part read again wait for the next pass."""
    quotes = _Quotes(arr, qpos, d, field_start)
    mask = None if quotes.regular() else quotes.mask(quotes.toggles()[0])
    forced: dict[int, str] = {}
    dpos = None
    while True:
        toggles = qpos if mask is None else qpos[mask]
        if len(toggles):
            inside = (np.searchsorted(toggles, nl) & 1) == 1
            seps, inside_nl = nl[~inside], nl[inside]
        else:
            seps, inside_nl = nl, nl[:0]
        open_end = bool(len(toggles) & 1)
        if not len(inside_nl) and not (eof and open_end):
            break
        # the records holding a line end inside a quoted field; record i ends at seps[i], record len(seps) is the
        # rest of the buffer (whole only at the end of the file)
        rec = np.unique(np.searchsorted(seps, inside_nl))
        if not eof:
            rec = rec[rec < len(seps)]
        elif open_end and (not len(rec) or rec[-1] != len(seps)):
            rec = np.append(rec, len(seps))
        starts = np.concatenate(([0], seps + 1))[rec]
        ends = np.append(seps, len(arr))[rec]
        if dpos is None:
            dpos = np.flatnonzero(arr == d)
        outside = dpos[(np.searchsorted(toggles, dpos) & 1) == 0] if len(toggles) else dpos
        counts = np.searchsorted(outside, ends) - np.searchsorted(outside, starts) + 1
        unclosed = (rec == len(seps)) & eof & open_end
        bad = (counts != ncols) | unclosed
        if header:
            bad &= starts > 0
        if not bad.any():
            break
        if mask is None:
            mask = np.ones(len(qpos), dtype=bool)
        # the quotes this reading reaches outside a quoted field, where another reading that reaches them so too
        # reads on the same: not right after another quote (_Quotes.toggles), nor on a line read alone but its first
        # quote (reached outside a quoted field, the line starts a record there too: read alone again)
        before = np.cumsum(mask) - mask
        same = ((before & 1) == 0) & ~quotes.paired
        prior = np.array(sorted(forced), dtype=np.int64)
        prior_q = qpos.searchsorted(prior)  # the index of each such line's first quote
        if len(prior):
            line_end = nl.searchsorted(prior)
            end_q = qpos.searchsorted(np.append(nl, len(arr))[line_end])
            edges = np.zeros(len(qpos) + 1, dtype=np.int64)
            first = np.minimum(prior_q + 1, len(qpos))
            np.add.at(edges, first, 1)
            np.add.at(edges, np.maximum(end_q, first), -1)
            same &= np.cumsum(edges[:-1]) == 0
        agree_all = np.flatnonzero(same)
        agree = (agree_all, agree_all[(agree_all & 1) == 0], agree_all[(agree_all & 1) == 1])
        bs, be = starts[bad], ends[bad]
        line_end = np.append(nl, len(arr))[nl.searchsorted(bs)]  # the end of each bad record's first line
        reasons = [UNCLOSED_AT_END if u else _unclosed_reason(c, ncols) for c, u in zip(counts[bad].tolist(),
                                                                                        unclosed[bad].tolist())]
        done = -1  # this pass read again up to here: a bad record before it waits for the next pass
        for s, e, why, lo, stop, k0 in zip(bs.tolist(), be.tolist(), reasons, qpos.searchsorted(bs).tolist(),
                                           line_end.tolist(), qpos.searchsorted(line_end + 1).tolist()):
            if s < done:
                continue
            forced[s] = why
            if stop >= e:  # one line, the file's last: no line after it to read again
                mask[lo:int(qpos.searchsorted(e))] = False
                done = e
                continue
            runs, r = quotes.toggles(k0, agree)
            mask[lo:r] = False  # (the bad line's quotes toggle nothing: its line end ends it)
            for a, b in runs:
                mask[a:b] = True
            done = int(qpos[r]) if r < len(qpos) else len(arr) + 1
            # lines read alone by an earlier pass whose quotes this one read again: the next pass says which still are
            for f in prior[int(prior.searchsorted(s, "right")):int(prior_q.searchsorted(r))].tolist():
                del forced[f]
    return _Split(toggles=toggles, seps=seps, forced=forced, open_end=open_end, dpos=dpos)


def iter_csv_records(
    path: str | os.PathLike,
    ncols: int,
    batch_rows: int,
    *,
    delimiter: str = ",",
    quotechar: str | None = '"',
) -> Iterator[CsvRecords]:
    """Yield the data rows of a CSV file (header skipped) in slices of at most ``batch_rows`` records.

    Blank lines are not rows. Every other record becomes either a row or a ``bad`` entry.
    """
    d = ord(delimiter)
    qc = ord(quotechar) if quotechar else None
    names = [f"c{i}" for i in range(ncols)]
    block_bytes = _FIRST_BLOCK
    with open_binary(path) as fh:
        carry = b""
        line_base = 1  # the line number of carry's first byte
        header_pending = True
        eof = False
        while not eof:
            try:
                data = fh.read(block_bytes)
            except (OSError, EOFError) as exc:
                raise base._cannot_read(path, line_base, exc) from exc  # (line_base: the first line not read whole)
            eof = not data
            buf = carry + data if carry else data
            if not buf:
                break
            arr = np.frombuffer(buf, dtype=np.uint8)
            nl = line_ends(arr, eof)
            qpos = np.flatnonzero(arr == qc) if qc is not None else np.empty(0, np.int64)
            split = _split(arr, nl, qpos, d, ncols, eof=eof, header=header_pending,
                           field_start=_bom_end(buf) if line_base == 1 else -1)
            seps = split.seps
            if not eof:
                if not len(seps):
                    if len(buf) > base.MAX_RECORD_BYTES and (split.open_end or header_pending):
                        raise InputFormatError(
                            (f"a quoted field opened on line {line_base} is not closed within "
                             if split.open_end else f"line {line_base} has no end within ")
                            + f"{base.MAX_RECORD_BYTES:,} bytes", source=str(path))
                    if len(buf) > base.MAX_RECORD_BYTES:  # one line (no quote open) longer than any record
                        head, size, last = bytes(buf[:min(len(buf), base.MAX_RAW_CHARS)]), len(buf), buf[-1]
                        del buf, arr, data
                        carry = b""
                        length, rest = read_past_line(fh, path, line_base, size, last)
                        yield CsvRecords(rows=pa.table({n: pa.array([], pa.string()) for n in names}),
                                         lines=pa.array([], pa.int64()), raws=pa.array([], pa.string()),
                                         bad=[(line_base, long_line_reason(line_base, length, len(head)), head)])
                        line_base += 1
                        carry, eof = rest or b"", rest is None
                        continue
                    carry = buf
                    block_bytes = min(block_bytes * 2, _MAX_BLOCK)
                    continue
                cut = int(seps[-1]) + 1
            else:
                cut = len(buf)
            carry = buf[cut:]
            block = buf[:cut] if cut < len(buf) else buf
            nl_b = nl[nl < cut]
            seps_b = seps[seps < cut]
            toggles = split.toggles[split.toggles < cut]
            dpos = split.dpos[split.dpos < cut] if split.dpos is not None else None
            recs = _Block(block, arr[:cut], seps_b, nl_b, toggles, dpos, split.forced, line_base, ncols, d)
            line_base += len(nl_b)
            if header_pending:
                recs.drop_first()
                header_pending = False
            if recs.n:
                avg = max(1, cut // max(recs.n, 1))
                block_bytes = int(min(max(avg * batch_rows, _MIN_BLOCK), _MAX_BLOCK))
            yield from recs.slices(names, batch_rows, delimiter, quotechar)


class _Block:
    """The records of one block of whole records."""

    def __init__(self, block: bytes, arr: np.ndarray, seps: np.ndarray, nl: np.ndarray, toggles: np.ndarray,
                 dpos: np.ndarray | None, forced: dict[int, str], line_base: int, ncols: int, d: int):
        cut = len(block)
        self.block = block
        self.cut = cut
        starts = np.concatenate(([0], seps + 1)).astype(np.int64)
        if starts[-1] >= cut:  # the block ends with a record separator: no record after it
            starts = starts[:-1]
        n = len(starts)
        nexts = np.concatenate((starts[1:], [cut])).astype(np.int64)
        ends = nexts.copy()
        # a record's content ends before its line end (an LF and a carriage return before it, or a lone CR)
        has_nl = np.zeros(n, dtype=bool)
        if n:
            has_nl[:-1] = True
            has_nl[-1] = cut > 0 and block[cut - 1] in (10, 13)
        ends[has_nl] -= 1
        cr = (ends > starts) & (arr[np.maximum(ends - 1, 0)] == 13)
        ends[cr] -= 1
        self.starts, self.nexts, self.ends = starts, nexts, ends
        self.lines = line_base + np.searchsorted(nl, starts)
        blank = ends == starts
        if dpos is None:
            dpos = np.flatnonzero(arr == d)
        if len(toggles) and len(dpos):
            dpos = dpos[(np.searchsorted(toggles, dpos) & 1) == 0]
        counts = np.bincount(np.searchsorted(starts, dpos, "right") - 1, minlength=n) + 1 if n else np.zeros(0, int)
        self.reason: dict[int, str] = {}
        wrong = np.flatnonzero(~blank & (counts != ncols))
        for i in wrong.tolist():
            self.reason[i] = f"expected {ncols} columns, found {int(counts[i])}"
        if forced and n:  # a line that opens a quoted field never closed as a row's (_split)
            at = np.fromiter(forced, dtype=np.int64, count=len(forced))
            idx = starts.searchsorted(at)
            here = idx < n
            here[here] = starts[idx[here]] == at[here]
            for i, start in zip(idx[here].tolist(), at[here].tolist()):
                self.reason[i] = forced[start]
        for i in np.flatnonzero(ends - starts > base.MAX_RECORD_BYTES).tolist():  # whole here, longer than any record
            length = int(ends[i] - starts[i])
            self.reason[i] = long_line_reason(int(self.lines[i]), length, min(length, base.MAX_RAW_CHARS))
        self.keep = ~blank
        self.multiline = len(nl) != len(seps)
        if not _utf8_ok(block):
            for i in np.flatnonzero(self.keep).tolist():
                try:
                    block[starts[i]:ends[i]].decode("utf-8")
                except UnicodeDecodeError as exc:
                    self.reason.setdefault(i, f"not UTF-8: invalid byte at position {exc.start}")
        self.offset = 0  # records before this index are dropped (the header)

    @property
    def n(self) -> int:
        return len(self.starts) - self.offset

    def drop_first(self) -> None:
        if len(self.starts):
            self.offset = 1

    def slices(self, names: list[str], batch_rows: int, delimiter: str, quotechar: str | None) -> Iterator[CsvRecords]:
        total = len(self.starts)
        for lo in range(self.offset, total, batch_rows):
            hi = min(lo + batch_rows, total)
            idx = np.arange(lo, hi)
            keep = self.keep[lo:hi]
            bad_idx = [i for i in range(lo, hi) if i in self.reason] if self.reason else []
            bad_set = set(bad_idx)
            good = idx[keep] if not bad_set else np.array([i for i in idx[keep].tolist() if i not in bad_set], np.int64)
            bad = [(int(self.lines[i]), self.reason[i], self.block[self.starts[i]:self.ends[i]]) for i in bad_idx]
            rows, good, more_bad = self._parse(good, names, delimiter, quotechar)
            bad.extend(more_bad)
            bad.sort(key=lambda b: b[0])
            yield CsvRecords(rows=rows, lines=pa.array(self.lines[good], pa.int64()), raws=self._raws(good), bad=bad)

    def _raws(self, good: np.ndarray) -> pa.Array:
        if not len(good):
            return pa.array([], pa.string())
        offsets = np.concatenate((self.starts, [self.cut])).astype(np.int32 if self.cut < 2**31 else np.int64)
        typ = pa.string() if offsets.dtype == np.int32 else pa.large_string()
        allrecs = pa.Array.from_buffers(typ, len(self.starts), [None, pa.py_buffer(offsets), pa.py_buffer(self.block)])
        return pc.utf8_rtrim(allrecs.take(pa.array(good)), characters="\r\n").cast(pa.string())

    def _payload(self, good: np.ndarray) -> bytes:
        if len(good) == len(self.starts):
            return self.block
        parts = []
        breaks = np.flatnonzero(np.diff(good) != 1)
        run_lo = np.concatenate(([0], breaks + 1))
        run_hi = np.concatenate((breaks, [len(good) - 1]))
        for a, b in zip(good[run_lo].tolist(), good[run_hi].tolist()):
            piece = self.block[self.starts[a]:self.nexts[b]]
            parts.append(piece if piece.endswith(b"\n") else piece + b"\n")
        return b"".join(parts)

    def _parse(self, good: np.ndarray, names: list[str], delimiter: str, quotechar: str | None):
        if not len(good):
            return pa.table({n: pa.array([], pa.string()) for n in names}), good, []
        payload = self._payload(good)
        try:
            table = pacsv.read_csv(
                pa.py_buffer(payload),
                read_options=pacsv.ReadOptions(column_names=names, block_size=max(len(payload) + 1, 1 << 20)),
                parse_options=pacsv.ParseOptions(
                    delimiter=delimiter, quote_char=quotechar or False, double_quote=True, escape_char=False,
                    newlines_in_values=self.multiline, ignore_empty_lines=True),
                convert_options=pacsv.ConvertOptions(
                    column_types={n: pa.string() for n in names}, check_utf8=False, null_values=[],
                    strings_can_be_null=False, quoted_strings_can_be_null=False),
            )
            if table.num_rows == len(good):
                return table, good, []
        except pa.ArrowInvalid:
            pass
        return self._parse_slowly(good, names, delimiter, quotechar)

    def _parse_slowly(self, good: np.ndarray, names: list[str], delimiter: str, quotechar: str | None):
        """Record by record with Python's csv module: only for blocks pyarrow read differently than we split. A record
        that does not read as exactly one row of the file's columns is a bad record whole (never its first row kept
        and the others dropped)."""
        cols: list[list[str]] = [[] for _ in names]
        kept, bad = [], []
        for i in good.tolist():
            raw = self.block[self.starts[i]:self.ends[i]]
            line = int(self.lines[i])
            try:
                rows = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline=""), delimiter=delimiter,
                                       quotechar=quotechar or '"',
                                       quoting=csv.QUOTE_MINIMAL if quotechar else csv.QUOTE_NONE))
            except csv.Error as exc:
                bad.append((line, f"not CSV: {exc}", raw))
                continue
            if len(rows) != 1:
                bad.append((line, f"reads as {len(rows)} rows, not one", raw))
                continue
            fields = rows[0]
            if len(fields) != len(names):
                bad.append((line, f"expected {len(names)} columns, found {len(fields)}", raw))
                continue
            kept.append(i)
            for c, v in zip(cols, fields):
                c.append(v)
        table = pa.table({n: pa.array(c, pa.string()) for n, c in zip(names, cols)})
        return table, np.array(kept, np.int64), bad


def _utf8_ok(block: bytes) -> bool:
    offsets = np.array([0, len(block)], np.int64)
    arr = pa.Array.from_buffers(pa.large_string(), 1, [None, pa.py_buffer(offsets), pa.py_buffer(block)])
    try:
        arr.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def empty_to_null(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Empty strings as nulls (a CSV cell that says nothing)."""
    return pc.if_else(pc.equal(col, ""), pa.scalar(None, col.type), col)


def _as_text(col: pa.Array) -> pa.Array:
    """A typed column as the text a CSV of it says (5, 1.5, true: Arrow's own CSV writing); other types (lists,
    structs) as they are."""
    if _kind(col.type) == "string":
        return col
    try:
        return col.cast(pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return col


# ---------------------------------------------------------------------------
# The column mapping
# ---------------------------------------------------------------------------

#: Canonical fields a mapping may fill from a column or a constant.
MAPPABLE = tuple(
    f.name for f in SOURCE_SCHEMA
    if f.name not in ("source_format", "source_file", "source_line", "extra", "http_headers", "challenge_responses")
)
MAPPING_REQUIRED = ("username", "event_type", "event_response", "creation_date")
_NO_CONSTANT = ("event_id", "creation_date")
_BOOL_FIELDS = ("has_context_data", "compromised_credentials")
_TRUE = ("true", "1", "yes", "y", "t")
_FALSE = ("false", "0", "no", "n", "f")
Scalar = str | int | float | bool
#: fields whose constant (or value to use) must be one of a set: (the set, how messages list it), as the checks
#: every format shares want them (``ingest.enrich``)
_ENUMERATED = {
    "event_type": (EVENT_TYPES, ", ".join(EVENT_TYPES)),
    "event_response": (tuple(EVENT_RESPONSE_ALIASES), ", ".join(EVENT_RESPONSES) + " (or Success, Failure)"),
}


def strptime_format_problem(fmt: str) -> str | None:
    """Why DuckDB's strptime refuses the format ``fmt`` (e.g. "Unrecognized format for strftime/strptime: %Q"),
    or None: it is tried on an in-memory connection, so a mapping names a bad format before any row is read."""
    con = duckdb.connect()
    try:
        con.execute("SELECT try_strptime('', $fmt)", {"fmt": fmt})
    except duckdb.InvalidInputException as exc:
        msg = str(exc).removeprefix("Invalid Input Error: ")
        return msg.split(f"specifier {fmt}: ", 1)[-1]
    finally:
        con.close()
    return None


def _number(v: object) -> float | None:
    """``v`` as a number (a number, or text that is one, blanks around it allowed; NaN and infinities included),
    else None (a boolean is no number)."""
    if isinstance(v, bool):
        return None
    try:
        return float(v.strip() if isinstance(v, str) else v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _scalar_text(v: Scalar) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class CsvDialect(BaseModel):
    """How a generic CSV file is written."""

    model_config = ConfigDict(extra="forbid")
    delimiter: str = ","
    quote_char: str | None = '"'

    @field_validator("delimiter", "quote_char")
    @classmethod
    def _one_char(cls, v: str | None) -> str | None:
        if v is not None and (len(v) != 1 or v in "\r\n"):
            raise ValueError(f"must be a single character other than a newline, got {v!r}")
        if v is not None and not v.isascii():  # the reader splits bytes: such a character is several of them
            raise ValueError(f"must be an ASCII character (one byte in UTF-8), got {v!r}")
        return v

    @model_validator(mode="after")
    def _distinct(self) -> CsvDialect:
        if self.delimiter == self.quote_char:
            raise ValueError(f"delimiter and quote_char must differ, both are {self.delimiter!r}")
        return self


class ColumnMapping(BaseModel):
    """Which of a generic file's columns fills which canonical field (README: "Generic CSV and Parquet … and the column mapping")."""

    model_config = ConfigDict(extra="forbid")
    columns: dict[str, str] = Field(default_factory=dict)
    constants: dict[str, Scalar] = Field(default_factory=dict)
    values: dict[str, dict[str, Scalar]] = Field(default_factory=dict)
    time_format: str | None = None
    time_zone: str = "UTC"
    headers: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    label_source: str | None = None
    keep_unmapped: bool = True
    csv: CsvDialect = Field(default_factory=CsvDialect)

    @field_validator("values", mode="before")
    @classmethod
    def _value_keys_as_text(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {f: ({_scalar_text(k): x for k, x in m.items()} if isinstance(m, dict) else m) for f, m in v.items()}
        return v

    @field_validator("columns", "constants", "values")
    @classmethod
    def _canonical_names(cls, v: dict) -> dict:
        unknown = [k for k in v if k not in MAPPABLE]
        if unknown:
            raise ValueError(
                "unknown canonical field" + ("s " if len(unknown) > 1 else " ") + ", ".join(repr(k) for k in unknown)
                + "; expected one of: " + ", ".join(MAPPABLE))
        return v

    @field_validator("columns", "headers", "labels")
    @classmethod
    def _nonempty(cls, v: dict[str, str]) -> dict[str, str]:
        for k, col in v.items():
            if not k:
                raise ValueError("an empty name is not allowed")
            if not isinstance(col, str):
                raise ValueError(f"{k}: the column name must be text, got {col!r}")
        return v

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}; expected an IANA name such as UTC or Europe/Paris") from exc
        return v

    @field_validator("time_format")
    @classmethod
    def _format(cls, v: str | None) -> str | None:
        if v is not None and "%" not in v:
            raise ValueError(f"must be a strptime format such as '%Y-%m-%d %H:%M:%S', got {v!r}")
        if v is not None:
            problem = strptime_format_problem(v)
            if problem:
                raise ValueError(f"{v!r} is not a strptime format DuckDB reads: {problem}")
        return v

    @model_validator(mode="after")
    def _complete(self) -> ColumnMapping:
        # a password is never stored (README): not as a label of that name, nor a password column read for a field,
        # a header or a label (a column named password is otherwise left out, even of a quarantined row's text)
        named = [f"labels.{k}" for k in self.labels if is_password_key(k)]
        if named:
            raise ValueError(", ".join(named) + ": a label named password is never stored")
        reading = [f"{part}.{k} ({c!r})" for part, table in (("columns", self.columns), ("headers", self.headers),
                                                               ("labels", self.labels))
                   for k, c in table.items() if is_password_key(c)]
        if reading:
            raise ValueError("a password column is never stored, not read for " + ", ".join(reading))
        both = sorted(set(self.columns) & set(self.constants))
        if both:
            raise ValueError("mapped both to a column and to a constant: " + ", ".join(both))
        fixed = [k for k in self.constants if k in _NO_CONSTANT]
        if fixed:
            raise ValueError("must come from a column, not a constant: " + ", ".join(fixed))
        for k, v in self.constants.items():
            if k in _BOOL_FIELDS and _scalar_text(v).lower() not in _TRUE + _FALSE:
                raise ValueError(f"constants.{k} must be true or false, got {v!r}")
            if k == "rtt_ms" and ((x := _number(v)) is None or not math.isfinite(x)):
                raise ValueError(f"constants.{k} must be a finite number, got {v!r}")
            if k == "source_asn" and not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_ASN
                                          or isinstance(v, str) and v.strip().isascii() and v.strip().isdigit()
                                          and len(v.strip()) <= 10 and int(v.strip()) <= MAX_ASN):
                raise ValueError(f"constants.{k} must be an integer (AS number), got {v!r}")
            if k in _ENUMERATED and v not in _ENUMERATED[k][0]:
                raise ValueError(f"constants.{k} must be one of {_ENUMERATED[k][1]}, got {v!r}")
        loose = [k for k in self.values if k not in self.columns]
        if loose:
            raise ValueError("values given for fields not mapped to a column: " + ", ".join(loose))
        for k, table in self.values.items():  # a value to use outside the enumeration would refuse every such row
            bad = {x: y for x, y in table.items() if k in _ENUMERATED and y not in _ENUMERATED[k][0]}
            if bad:
                x, y = next(iter(bad.items()))
                raise ValueError(f"values.{k}.{x} must be one of {_ENUMERATED[k][1]}, got {y!r}")
        missing = [k for k in MAPPING_REQUIRED if k not in self.columns and k not in self.constants]
        if missing:
            raise ValueError(
                "required field" + ("s " if len(missing) > 1 else " ") + ", ".join(missing)
                + " not mapped: give each under columns (or under constants)")
        return self

    def file_columns(self) -> dict[str, str]:
        """Every column the mapping reads -> what it is read for (for messages)."""
        used: dict[str, str] = {}
        for f, c in self.columns.items():
            used.setdefault(c, f)
        for h, c in self.headers.items():
            used.setdefault(c, f"header {h}")
        for lab, c in self.labels.items():
            used.setdefault(c, f"label {lab}")
        return used


class MappingLoader(StrictYamlLoader):
    """A mapping file as its writer means it: every plain scalar is text but null (``~``, ``null``, nothing).
    YAML 1.1, PyYAML's, reads ``NO``, ``yes``, ``on``, ``off`` as booleans and ``0123`` as the octal number 83:
    Norway's country code became ``false``, a server name ``0123`` became ``83``, and the value keys ``yes``/``no``
    of a column holding yes/no never matched. A number or boolean setting (``keep_unmapped``, a constant's
    ``source_asn``) is read from its text by the mapping's validation.

    A key given twice in one object (a field mapped twice, two ``constants:`` blocks; JSON too, read as YAML) is
    refused naming it and its line, as in risk configurations (``ingest.documents.StrictYamlLoader``): the last
    one had been taken in silence."""


MappingLoader.yaml_implicit_resolvers = {
    first: kept for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    if (kept := [(tag, rx) for tag, rx in resolvers if tag in ("tag:yaml.org,2002:null", "tag:yaml.org,2002:merge")])
}


def load_mapping(path: str | None, fmt: str) -> ColumnMapping:
    """Read and validate a mapping file (YAML or JSON); ConfigurationError saying what is wrong and where."""
    if not path:
        raise ConfigurationError(
            f"the {fmt} format needs a column-mapping file: pass --mapping FILE (YAML or JSON) naming which "
            "column holds username, event_type, event_response and creation_date (README: 'Generic CSV and Parquet … and the column mapping')")
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read the mapping file: {exc}", source=str(path)) from exc
    try:
        # nesting too deep: one error naming where
        doc = load_yaml(text, loader=MappingLoader, source=str(path), what="the mapping file")
    except yaml.YAMLError as exc:
        problem, line, repeated = yaml_refusal(exc)
        raise ConfigurationError(f"invalid column mapping: {problem}" if repeated
                                 else f"not valid YAML or JSON: {problem}", source=str(path), line=line) from None
    if not isinstance(doc, dict):
        raise ConfigurationError("a mapping file must be an object with at least 'columns'", source=str(path))
    try:
        return ColumnMapping.model_validate(doc)
    except ValidationError as exc:
        parts = []
        for e in exc.errors():
            loc = ".".join(str(x) for x in e["loc"])
            msg = e["msg"].removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}" if loc else msg)
        raise ConfigurationError("invalid column mapping: " + "; ".join(parts), source=str(path)) from exc


# ---------------------------------------------------------------------------
# Converting mapped columns to canonical ones (set-wise, in DuckDB)
# ---------------------------------------------------------------------------

_STRING_FIELDS = tuple(f for f in MAPPABLE if SOURCE_SCHEMA.field(f).type == pa.string())
_EXPECT = {
    "creation_date": "is not a time",
    "has_context_data": "must be true or false",
    "compromised_credentials": "must be true or false",
    "rtt_ms": "must be a number",
    "source_asn": "must be an integer (AS number)",
}


def _kind(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_dictionary(t):
        return _kind(t.value_type)
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_null(t):
        return "null"
    return "other"


_EPOCH = f"CASE WHEN abs({{v}}) > 1e11 THEN {epoch_sql('({v} / 1000.0)')} ELSE {epoch_sql('{v}')} END"


def _field_sql(field: str, kind: str, v: str, mapping: ColumnMapping) -> tuple[str, str]:
    """(value expression, "unparsable" condition) for one mapped field whose input column is ``v``."""
    s = f"nullif({v}, '')" if kind == "string" else v
    if field in _STRING_FIELDS:
        return (s if kind in ("string", "null") else f"CAST({v} AS VARCHAR)"), "false"
    if field == "creation_date":
        if kind == "string":
            if mapping.time_format:
                fmt_tz = "%z" in mapping.time_format or "%Z" in mapping.time_format
                x = f"try_strptime(trim({s}), $fmt)"
                # (an offset beyond ±23:59 is no time: base.bad_offset_sql)
                expr = (f"CASE WHEN NOT {base.bad_offset_sql(f'trim({s})')} THEN CAST({x} AS TIMESTAMPTZ) END"
                        if fmt_tz else f"timezone($tz, {x})")
            else:
                t = f"trim({s})"
                expr = (f"CASE WHEN regexp_full_match({t}, '-?\\d{{9,16}}(\\.\\d+)?') "
                        f"THEN {_EPOCH.format(v=f'TRY_CAST({t} AS DOUBLE)')} "
                        f"WHEN regexp_matches({t}, ':\\d{{2}}(\\.\\d+)?\\s*(Z|z|[+-]\\d{{2}}(:?\\d{{2}})?)$') "
                        f"THEN CASE WHEN NOT {base.bad_offset_sql(t)} THEN TRY_CAST({t} AS TIMESTAMPTZ) END "
                        f"ELSE timezone($tz, TRY_CAST({t} AS TIMESTAMP)) END")
        elif kind in ("int", "float"):
            expr = _EPOCH.format(v=f"CAST({v} AS DOUBLE)")
        elif kind == "timestamp":
            expr = f"timezone($tz, {v})"
        elif kind == "timestamptz":
            expr = f"CAST({v} AS TIMESTAMPTZ)"
        elif kind == "date":
            expr = f"timezone($tz, CAST({v} AS TIMESTAMP))"
        else:
            expr = "CAST(NULL AS TIMESTAMPTZ)"
        return expr, f"({s} IS NOT NULL AND ({expr}) IS NULL)"
    if field in _BOOL_FIELDS:
        if kind == "bool":
            expr = v
        elif kind in ("int", "float"):
            expr = f"CASE WHEN {v} = 1 THEN true WHEN {v} = 0 THEN false END"
        else:
            t = f"lower(trim(CAST({s} AS VARCHAR)))"
            expr = (f"CASE WHEN {t} IN ({', '.join(repr(x) for x in _TRUE)}) THEN true "
                    f"WHEN {t} IN ({', '.join(repr(x) for x in _FALSE)}) THEN false END")
        return expr, f"({s} IS NOT NULL AND ({expr}) IS NULL)"
    if field == "source_asn":
        if kind == "int":
            expr = f"CAST({v} AS BIGINT)"
        elif kind == "float":
            expr = f"CASE WHEN {v} = trunc({v}) THEN CAST({v} AS BIGINT) END"
        else:
            expr = f"TRY_CAST(regexp_replace(trim(CAST({s} AS VARCHAR)), '^(AS|as)', '') AS BIGINT)"
        expr = as_number_sql(f"({expr})")  # 0..MAX_ASN, as a constant's (-5 had overridden the lookup's ASN)
        return expr, f"({s} IS NOT NULL AND ({expr}) IS NULL)"
    if field == "rtt_ms":  # NaN, Infinity and 1e400 (read as infinity) too are no round-trip time
        expr = f"CAST({v} AS DOUBLE)" if kind in ("int", "float") else f"TRY_CAST(trim(CAST({s} AS VARCHAR)) AS DOUBLE)"
        return expr, f"({s} IS NOT NULL AND coalesce(NOT isfinite({expr}), true))"
    raise AssertionError(field)


@dataclass
class _Plan:
    """The conversion SQL for one shape of input batch, with the values it binds."""

    sql: str
    params: dict[str, str]


class MappedConverter:
    """Turns batches of a generic file's columns into canonical columns, set-wise, with precise reasons."""

    def __init__(self, mapping: ColumnMapping, schema: pa.Schema, fmt: str, path: str):
        self.mapping = mapping
        self.fmt = fmt
        self.path = path
        have = set(schema.names)
        used = mapping.file_columns()
        missing = [c for c in used if c not in have]
        if missing:
            raise InputFormatError(
                "the mapping names columns the file does not have: "
                + ", ".join(f"{c!r} (for {used[c]})" for c in missing)
                + "; the file's columns are: " + ", ".join(repr(n) for n in schema.names),
                source=path)
        for f, c in mapping.columns.items():
            k = _kind(schema.field(c).type)
            if k == "other" or (k in ("timestamp", "timestamptz", "date") and f != "creation_date"
                                and f not in _STRING_FIELDS):
                raise InputFormatError(
                    f"column {c!r} (for {f}) has type {schema.field(c).type}, which cannot be read as {SOURCE_SCHEMA.field(f).type}",
                    source=path)
        self.extra_columns = [n for n in schema.names if n not in used] if mapping.keep_unmapped else []
        self.schema = schema
        self._plans: dict[tuple, _Plan] = {}

    def _inputs(self, batch: pa.Table) -> tuple[pa.Table, list[str], list[str | None]]:
        m = self.mapping
        n = batch.num_rows
        cols: dict[str, pa.ChunkedArray | pa.Array] = {}
        fields: list[str] = []
        sources: list[str | None] = []
        for f, c in m.columns.items():
            col = batch.column(c)
            if pa.types.is_dictionary(col.type):
                col = col.cast(col.type.value_type)
            if f == "creation_date" and pa.types.is_timestamp(col.type) and col.type.unit == "ns":
                col = _microseconds(col)
            if f in m.values:
                col = _map_values(col, m.values[f])
            cols[f"f{len(fields)}"] = col
            fields.append(f)
            sources.append(c)
        for f, v in m.constants.items():
            cols[f"f{len(fields)}"] = pa.array([_scalar_text(v)] * n, pa.string())
            fields.append(f)
            sources.append(None)
        for i, (_, c) in enumerate(m.headers.items()):
            col = batch.column(c)
            cols[f"h{i}"] = col if _kind(col.type) == "string" else col.cast(pa.string())
        for i, (_, c) in enumerate(m.labels.items()):
            cols[f"l{i}"] = _label_text(batch.column(c))
        if self.extra_columns:
            arrays = []
            for c in self.extra_columns:
                col = batch.column(c)
                if _kind(col.type) == "string":
                    col = empty_to_null(col.cast(pa.string()) if pa.types.is_dictionary(col.type) else col)
                arrays.append(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
            cols["_x"] = pa.StructArray.from_arrays(arrays, names=self.extra_columns)
            # the derived id hashes the extras as text: a Parquet file's typed 5 / 1.5 / true and the same rows
            # written as CSV ("5", "1.5", "true") are the same events (a CSV's extras are text already)
            if any(_kind(a.type) != "string" for a in arrays):
                cols["_xt"] = pa.StructArray.from_arrays([_as_text(a) for a in arrays], names=self.extra_columns)
        return pa.table(cols) if cols else pa.table({"_n": pa.nulls(n)}), fields, sources

    def _plan(self, inputs: pa.Table, fields: list[str]) -> _Plan:
        key = tuple((name, str(inputs.schema.field(name).type)) for name in inputs.column_names)
        if key in self._plans:
            return self._plans[key]
        m = self.mapping
        conv = ["_line", "_raw"]
        out = []
        for i, f in enumerate(fields):
            kind = _kind(inputs.schema.field(f"f{i}").type)
            expr, bad = _field_sql(f, kind, f"f{i}", m)
            required = f in MAPPING_REQUIRED
            conv.append(f"{expr} AS {f}")
            conv.append(f"CASE WHEN {bad} THEN 1 WHEN {'true' if required else 'false'} AND ({expr}) IS NULL "
                        f"THEN 2 ELSE 0 END AS _e{i}")
            out += ([f] if f != "event_id" else []) + [f"_e{i}"]
        params: dict[str, str] = {"tz": m.time_zone}
        if m.time_format:
            params["fmt"] = m.time_format
        content = [f for f in fields if f != "event_id"]
        if m.headers:
            items = []
            for i, h in enumerate(m.headers):
                params[f"hn{i}"] = h
                items.append(f"{{'header_name': $hn{i}, 'header_value': nullif(h{i}, '')}}")
            conv.append(f"list_filter([{', '.join(items)}], lambda x: x.header_value IS NOT NULL) AS http_headers")
            out.append("http_headers")
            content.append("http_headers")
        if "has_context_data" not in fields and "ip_address" in fields:
            out.append("ip_address IS NOT NULL AS has_context_data")
        structs = [(x, name) for x, name in (("_x", "extra"), ("_xt", "_extra_text")) if x in inputs.column_names]
        for struct, name in structs or [(None, "extra")]:
            extra = f"nullif(json_merge_patch('{{}}', to_json({struct})), '{{}}')" if struct else "NULL"
            conv.append(f"CAST({extra} AS VARCHAR) AS {name}")
        extra_text = structs[-1][1] if structs else "extra"  # the extras as text: the typed ones' text, if any
        conv += [f"l{i}" for i in range(len(m.labels))]
        out += ["extra", "_raw"] + [f"l{i}" for i in range(len(m.labels))]
        derived = ("'row-' || left(sha256(to_json({" + ", ".join([f"'{f}': {f}" for f in content]
                                                                + [f"'extra': {extra_text}"]) + "})), 32)")
        out.append(f"coalesce(event_id, {derived}) AS event_id" if "event_id" in fields else f"{derived} AS event_id")
        out.append("_line AS source_line")
        sql = f"WITH conv AS (SELECT {', '.join(conv)} FROM inputs_) SELECT {', '.join(out)} FROM conv"
        params = {k: v for k, v in params.items() if f"${k}" in sql}  # DuckDB refuses unused parameters
        plan = _Plan(sql=sql, params=params)
        self._plans[key] = plan
        return plan

    def convert(self, con: duckdb.DuckDBPyConnection, batch: pa.Table, lines: pa.Array, raws: pa.Array,
                q: QuarantineBuilder) -> ReadBatch:
        inputs, fields, sources = self._inputs(batch)
        inputs = inputs.append_column("_line", lines).append_column("_raw", raws)
        plan = self._plan(inputs, fields)
        con.register("inputs_", inputs)
        try:
            out = (con.sql(plan.sql, params=plan.params) if plan.params else con.sql(plan.sql)).to_arrow_table()
        finally:
            con.unregister("inputs_")
        err_cols = [f"_e{i}" for i in range(len(fields))]
        bad_mask = None
        for c in err_cols:
            m = pc.not_equal(out.column(c), 0)
            bad_mask = m if bad_mask is None else pc.or_(bad_mask, m)
        if bad_mask is not None and pc.any(bad_mask).as_py():
            bad_rows = pc.indices_nonzero(bad_mask).to_pylist()
            for r in bad_rows:
                parts = []
                for i, f in enumerate(fields):
                    e = out.column(f"_e{i}")[r].as_py()
                    if not e:
                        continue
                    where = f"{f} (column {sources[i]!r})" if sources[i] is not None else f"{f} (constant)"
                    value = inputs.column(f"f{i}")[r].as_py()
                    if e == 2:
                        parts.append(f"{where} is required but empty")
                    elif f == "creation_date" and self.mapping.time_format:
                        parts.append(f"{where} is not a time in format {self.mapping.time_format!r}: got {value!r}")
                    elif f == "rtt_ms" and (x := _number(value)) is not None and not math.isfinite(x):
                        parts.append(f"{where} must be a finite number: got {value!r}")
                    elif f == "creation_date":
                        parts.append(f"{where} is not an ISO 8601 time or epoch seconds/milliseconds: got {value!r}")
                    else:
                        parts.append(f"{where} {_EXPECT[f]}: got {value!r}")
                q.add(out.column("source_line")[r].as_py(), "; ".join(parts), out.column(RAW_COLUMN)[r].as_py() or "")
            out = out.filter(pc.invert(bad_mask))
        out = self._check_boolean_labels(out, q)
        labels = self._labels(out)
        out = out.drop_columns(err_cols + [f"l{i}" for i in range(len(self.mapping.labels))])
        return ReadBatch(events=as_source_types(out), quarantine=q.table(), labels=labels)

    def _check_boolean_labels(self, out: pa.Table, q: QuarantineBuilder) -> pa.Table:
        """A boolean label (``is_account_takeover``) stored as ``true`` / ``false`` from any spelling ``riskgate labels
        load`` accepts (``ingest.labels.boolean_label_value``); a row with any other value is quarantined naming
        the label and its column (it was stored as written, and "maybe" is neither a takeover nor not one)."""
        for i, (name, column) in enumerate(self.mapping.labels.items()):
            if name not in BOOLEAN_LABELS or not out.num_rows:
                continue
            norm = pc.utf8_lower(pc.utf8_trim_whitespace(out.column(f"l{i}")))
            text = pc.if_else(pc.equal(norm, ""), None, out.column(f"l{i}"))  # blanks are no label, as an empty cell
            out = out.set_column(out.column_names.index(f"l{i}"), f"l{i}", text)
            is_true, is_false = pc.is_in(norm, pa.array(TRUE_VALUES)), pc.is_in(norm, pa.array(FALSE_VALUES))
            bad = pc.and_(pc.is_valid(text), pc.invert(pc.or_(is_true, is_false)))
            if pc.any(bad).as_py():
                for r in pc.indices_nonzero(bad).to_pylist():
                    q.add(out.column("source_line")[r].as_py(),
                          f"label {name} (column {column!r}) must be true or false (or 1/0, yes/no, t/f): "
                          f"got {text[r].as_py()!r}", out.column(RAW_COLUMN)[r].as_py() or "")
                out = out.filter(pc.invert(bad))
                is_true, text = pc.filter(is_true, pc.invert(bad)), out.column(f"l{i}")
            out = out.set_column(out.column_names.index(f"l{i}"), f"l{i}",
                                 pc.if_else(pc.is_valid(text), pc.if_else(is_true, "true", "false"), text))
        return out

    def _labels(self, out: pa.Table) -> pa.Table | None:
        if not self.mapping.labels or not out.num_rows:
            return None
        source = self.mapping.label_source or self.fmt
        parts = []
        for i, name in enumerate(self.mapping.labels):
            part = pa.table({"event_id": out.column("event_id"), "value": out.column(f"l{i}"),
                             "source_line": out.column("source_line")})
            part = part.filter(pc.is_valid(part.column("value")))
            n = part.num_rows
            parts.append(pa.table({
                "event_id": part.column("event_id"),
                "label": pa.array([name] * n, pa.string()),
                "value": part.column("value"),
                "source": pa.array([source] * n, pa.string()),
                "source_line": part.column("source_line").cast(pa.int64()),  # the row the label came with
            }, schema=LABEL_SCHEMA.append(pa.field("source_line", pa.int64()))))
        t = pa.concat_tables(parts)
        return t if t.num_rows else None


def _microseconds(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A nanosecond timestamp column (pandas writes them) in microseconds, the store's precision, any finer part
    dropped: .123456789 is .123456, as a time written as text with nine digits is read (DuckDB's, riskgate JSON
    lines'); a strict cast refused the whole file for one such value."""
    return pc.cast(col, options=pc.CastOptions(pa.timestamp("us", col.type.tz), allow_time_truncate=True))


def _map_values(col: pa.ChunkedArray, table: dict[str, Scalar]) -> pa.ChunkedArray:
    """Replace values found in ``table`` (compared as text); other values pass through unchanged."""
    text = col if _kind(col.type) == "string" else col.cast(pa.string())
    if pa.types.is_boolean(col.type):
        text = pc.utf8_lower(text)
    keys = pa.array(list(table), pa.string())
    vals = pa.array([_scalar_text(v) for v in table.values()], pa.string())
    idx = pc.index_in(text, value_set=keys)
    return pc.if_else(pc.is_valid(idx), pc.take(vals, idx), text)


def _label_text(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if _kind(col.type) != "string":
        col = col.cast(pa.string())
    return empty_to_null(col)


# ---------------------------------------------------------------------------
# The readers
# ---------------------------------------------------------------------------


class GenericCsv:
    name = "csv"
    description = "CSV with a header line, read through a column-mapping file (--mapping)"

    def sniff(self, head: bytes) -> bool:
        if not head.strip() or b"\x00" in head or head[:2] == GZIP_MAGIC:
            return False
        line = first_line(head)
        if line.lstrip()[:1] in (b"{", b"[", b"<"):
            return False
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return any(d in line for d in (b",", b";", b"\t", b"|"))

    def read(self, path: str, options: ReaderOptions) -> Iterator[ReadBatch]:
        mapping = load_mapping(options.mapping, self.name)
        dialect = mapping.csv
        names = csv_header(path, delimiter=dialect.delimiter, quotechar=dialect.quote_char)
        conv = MappedConverter(mapping, pa.schema([(n, pa.string()) for n in names]), self.name, path)
        secret = [i for i, n in enumerate(names) if is_password_key(n)]  # never kept, not even as raw text
        con = scratch()
        try:
            for chunk in iter_csv_records(path, len(names), options.batch_rows, delimiter=dialect.delimiter,
                                          quotechar=dialect.quote_char):
                q = QuarantineBuilder(self.name, path)
                raws = chunk.raws
                if secret:
                    raws = pa.array([_redact_fields(r, secret, dialect) for r in raws.to_pylist()], pa.string())
                for line, reason, raw in chunk.bad:
                    q.add(line, reason, _redact_fields(raw, secret, dialect) if secret else raw)
                rows = chunk.rows.rename_columns(names)
                yield conv.convert(con, rows, chunk.lines, raws, q)
        finally:
            con.close()


def _redact_fields(raw, positions: list[int], dialect) -> str:
    """A CSV line with the fields at ``positions`` (password columns) replaced by ``[redacted]``; a line that does
    not parse as CSV is withheld whole."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "backslashreplace")
    if raw is None:
        return raw
    try:
        fields = next(csv.reader([raw], delimiter=dialect.delimiter, quotechar=dialect.quote_char or '"'))
    except (csv.Error, StopIteration):
        return "[withheld: the file has a password column]"
    for i in positions:
        if i < len(fields):
            fields[i] = REDACTED
    out = io.StringIO()
    csv.writer(out, delimiter=dialect.delimiter, quotechar=dialect.quote_char or '"', lineterminator="").writerow(fields)
    return out.getvalue()


class GenericParquet:
    name = "parquet"
    description = "Parquet, read through a column-mapping file (--mapping); source_line is the row number"

    def sniff(self, head: bytes) -> bool:
        return head[:4] == b"PAR1"

    def read(self, path: str, options: ReaderOptions) -> Iterator[ReadBatch]:
        import pyarrow.parquet as pq

        mapping = load_mapping(options.mapping, self.name)
        p = Path(path)
        if not p.is_file():
            raise InputFormatError("no such file" if not p.exists() else "is a folder, not a file", source=path)
        with open(p, "rb") as fh:
            magic = fh.read(4)
        if magic[:2] == GZIP_MAGIC:
            raise InputFormatError("is gzip-compressed; Parquet must be read uncompressed (its pages are "
                                   "compressed already): gunzip it first", source=path)
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputFormatError(f"is not a Parquet file ({exc})", source=path) from exc
        schema = pf.schema_arrow
        names = name_unnamed_columns(schema.names)
        renamed = names != schema.names
        if renamed:
            schema = pa.schema([f.with_name(n) for f, n in zip(schema, names)], metadata=schema.metadata)
        conv = MappedConverter(mapping, schema, self.name, path)
        con = scratch()
        try:
            row = 1
            for rb in pf.iter_batches(batch_size=options.batch_rows):
                batch = pa.Table.from_batches([rb])
                if renamed:
                    batch = batch.rename_columns(names)
                n = batch.num_rows
                lines = pa.array(np.arange(row, row + n, dtype=np.int64))
                row += n
                con.register("orig_", batch)
                try:
                    raws = con.sql("SELECT CAST(to_json(o) AS VARCHAR) AS r FROM orig_ AS o").to_arrow_table().column(0)
                finally:
                    con.unregister("orig_")
                yield conv.convert(con, batch, lines, raws, QuarantineBuilder(self.name, path))
        finally:
            con.close()


CSV_READER = GenericCsv()
PARQUET_READER = GenericParquet()
