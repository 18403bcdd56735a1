"""What every reader shares: opening inputs (gzip too), lines with numbers, batches, quarantine rows.

A reader is a module in ``ingest/sources/`` exposing a :class:`Reader`. It
streams its input in batches of bounded size and yields :class:`ReadBatch`
objects: rows it could turn into canonical source columns, and rows it could
not (quarantine, with file, line, reason and raw text). Readers check their
own format; checks common to every format (enumerations, time range, IPs)
happen afterwards in ``ingest.enrich``.
"""

from __future__ import annotations

import contextvars
import gzip
import hashlib
import io
import json
import os
import re
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from ingest.errors import InputFormatError
from ingest.schema import QUARANTINE_SCHEMA, SOURCE_SCHEMA

GZIP_MAGIC = b"\x1f\x8b"
#: The most one read asks for (a block is filled in such pieces).
READ_PIECE_BYTES = 1 << 16
#: A UTF-8 byte-order mark (Windows editors write one at the start of a text file): not part of the first line.
UTF8_BOM = b"\xef\xbb\xbf"
DEFAULT_BATCH_ROWS = 122_880  # one DuckDB row group: each batch is written as whole row groups
#: A raw row longer than this is stored truncated in quarantine (the reason says so).
MAX_RAW_CHARS = 4096
#: The column carrying each row's raw text beside the canonical columns (dropped before storing).
RAW_COLUMN = "_raw"
#: The longest line (or CSV record) a reader takes, in bytes. A longer line is quarantined with its line number and
#: length, only its first MAX_RAW_CHARS bytes kept as raw text, and reading resumes after it: it is never held
#: whole (a small gzip file can hold a line of gigabytes).
MAX_RECORD_BYTES = 64 << 20
#: The deepest nesting of arrays and objects a row may have where riskgate reads its JSON in Python (unknown fields
#: kept in ``extra``, ``Labels``, AuthEvents items): Python's parser, ``json.dumps`` and ``repr`` recurse, and fail
#: at about 1,000 levels (a RecursionError, which ended the whole run), sooner in a deeper call. A deeper row is
#: quarantined ("nested too deeply").
MAX_JSON_DEPTH = 512


@dataclass
class ReaderOptions:
    """Options a user may give to ``riskgate ingest``; each reader uses those it needs."""

    batch_rows: int = DEFAULT_BATCH_ROWS
    username: str | None = None  # AdminListUserAuthEvents output carries no username
    username_from_file_name: bool = False  # ... or each file is named after its user: alice.json, alice.json.gz
    user_pool_id: str | None = None  # default pool id when a source has none
    mapping: str | None = None  # column-mapping file for generic CSV / Parquet
    extra: dict = field(default_factory=dict)


@dataclass
class ReadBatch:
    """One bounded slice of an input."""

    events: pa.Table  # canonical source columns (a subset is fine) + optional RAW_COLUMN
    quarantine: pa.Table  # QUARANTINE_SCHEMA
    labels: pa.Table | None = None  # LABEL_SCHEMA
    #: the input row (``source_line``) each label came with, when the reader knows it: a label is stored only
    #: when its row became the event (``ingest.store.insert_labels``). A reader may give ``labels`` with a
    #: ``source_line`` column instead: it is moved here.
    label_lines: pa.ChunkedArray | pa.Array | None = None
    #: the feedback each row of ``events`` carries (SOURCE_FEEDBACK_SCHEMA), row for row: null where a row carries
    #: none; None when no row does (a format without feedback). The reader checks it: a row whose feedback cannot
    #: be read is quarantined, as for any other field.
    feedback: pa.Table | None = None

    def __post_init__(self) -> None:
        if self.labels is not None and "source_line" in self.labels.column_names:
            self.label_lines = self.labels.column("source_line")
            self.labels = self.labels.drop_columns(["source_line"])

    @property
    def rows_read(self) -> int:
        return self.events.num_rows + self.quarantine.num_rows

    def labels_with_lines(self) -> pa.Table | None:
        """``labels`` with their ``source_line`` column, when known."""
        if self.labels is None or self.label_lines is None:
            return self.labels
        return self.labels.append_column("source_line", self.label_lines)


class Reader(Protocol):
    name: str
    description: str

    def sniff(self, head: bytes) -> bool:
        """True when the first bytes (decompressed) look like this format."""

    def read(self, path: str, options: ReaderOptions) -> Iterator[ReadBatch]:
        """Yield the input's rows in batches."""


#: A part of an input: parses into one batch on the scratch connection it is given (``ingest.store.scratch``).
Part = Callable[[Any], ReadBatch]


@runtime_checkable
class PartReader(Reader, Protocol):
    """A reader whose batches can be parsed apart from each other, in several threads at once: only the
    reading of the input is in order (``ingest.pipeline`` uses two threads for these)."""

    def read_parts(self, path: str, options: ReaderOptions) -> Iterator[Part]:
        """Yield the input's batches as parts, in order; reading the next part is the only work done here.
        The errors of the whole input (it is not this format, it is empty) may come from a part or from here."""


def parsed_in_turn(parts: Iterator[Part]) -> Iterator[ReadBatch]:
    """A :class:`PartReader`'s ``read``: its parts parsed one after another on one scratch connection."""
    from ingest.store import scratch

    con = scratch()
    try:
        for part in parts:
            batch = part(con)
            del part
            yield batch
            del batch  # not kept alive while the next batch is read (memory)
    finally:
        con.close()


#: Set by the pipeline while it reads: called with the number of (compressed) bytes read so far.
BYTES_READ_OBSERVER: contextvars.ContextVar[Callable[[int], None] | None] = contextvars.ContextVar(
    "riskgate_bytes_read_observer", default=None
)


class _CountingFile(io.RawIOBase):
    """A raw file that tells the observer how far it has read (for progress bars)."""

    def __init__(self, fh: BinaryIO, observer: Callable[[int], None]):
        self._fh = fh
        self._observer = observer

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._fh.seekable()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def readinto(self, b) -> int:
        n = self._fh.readinto(b)
        self._observer(self._fh.tell())
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def open_binary(path: str | os.PathLike) -> BinaryIO:
    """Open ``path`` for reading bytes, transparently decompressing gzip."""
    p = Path(path)
    if not p.exists():
        raise InputFormatError("no such file", source=str(path))
    if p.is_dir():
        raise InputFormatError("is a folder, not a file", source=str(path))
    fh: BinaryIO = open(p, "rb", buffering=0)  # type: ignore[assignment]
    observer = BYTES_READ_OBSERVER.get()
    if observer is not None:
        fh = _CountingFile(fh, observer)  # type: ignore[assignment]
    fh = io.BufferedReader(fh, buffer_size=1 << 20)  # type: ignore[arg-type]
    magic = fh.peek(2)[:2]
    if magic == GZIP_MAGIC:
        return _GzipOwning(fh)  # type: ignore[return-value]
    return fh


class _GzipOwning(gzip.GzipFile):
    """A GzipFile that also closes the file it reads from, and that gives every byte decompressed before a break
    in the stream (a file cut short, damaged data) before raising the error: the ``read`` or ``readinto`` that
    reaches the break returns what it got, and the next one raises the error.

    ``GzipFile.read`` and ``readinto`` fill a large request with several reads of the decompressor (one
    compressed piece each), and one that raises loses what the others had decompressed: up to a whole request of
    whole lines before the break. Here each read of the decompressor is one call (it raises only when it has
    nothing to give), and what the calls before it gave is kept. (For damaged data, what zlib decompressed in the
    one call that met the damage is lost: it gives nothing with its error.) zlib's error is an OSError here.
    """

    def __init__(self, fh: BinaryIO):
        super().__init__(fileobj=fh, mode="rb")
        self._owned = fh
        self._broken: BaseException | None = None  # the error met after bytes were read: raised by the next read

    def _waiting(self) -> int:
        """Bytes decompressed already and waiting in GzipFile's buffer (left by ``peek``, ``readline``, ``read1``)."""
        return self._buffer.raw.tell() - self._buffer.tell()

    def readinto(self, b) -> int:
        self._check_not_closed()
        if self._broken is not None:
            raise self._broken
        view = memoryview(b).cast("B")
        want = len(view)
        waiting = self._waiting()
        size = self._buffer.readinto(view[:min(waiting, want)]) if waiting else 0  # (no read of the decompressor)
        readinto = self._buffer.raw.readinto
        try:
            while size < want:
                got = readinto(view[size:])
                if not got:
                    break
                size += got
        except (OSError, EOFError, zlib.error) as exc:
            self._break(exc, size)
        return size

    def _break(self, exc: BaseException, got: int) -> None:
        """The stream broke after ``got`` bytes of this call: raise at once when it gave none, else keep the error
        for the next call (what was read before the break is returned first)."""
        if not got:
            if isinstance(exc, zlib.error):
                raise _damaged(exc) from exc
            raise exc
        self._broken = _damaged(exc)

    def read(self, size: int | None = -1) -> bytes:
        self._check_not_closed()
        if self._broken is not None:
            raise self._broken
        if size is None or size < 0:
            size = sys.maxsize
        waiting = self._waiting()
        chunks = [self._buffer.read(min(waiting, size))] if waiting else []  # (no read of the decompressor)
        got = len(chunks[0]) if chunks else 0
        read = self._buffer.raw.read
        try:
            while got < size:
                chunk = read(min(size - got, 1 << 20))  # (one compressed piece gives far less)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
        except (OSError, EOFError, zlib.error) as exc:
            self._break(exc, got)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def read1(self, size: int = -1) -> bytes:
        try:
            return super().read1(size)
        except zlib.error as exc:
            raise _damaged(exc) from exc

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._owned.close()


def _damaged(exc: BaseException) -> BaseException:
    """zlib's error for damaged compressed data as the OSError the readers report as a damaged input (it ended
    the whole run, with a traceback); any other error as it is."""
    if isinstance(exc, zlib.error):
        return gzip.BadGzipFile(f"damaged compressed data: {exc}")
    return exc


#: Epoch seconds of larger magnitude are no time a TIMESTAMPTZ can hold (DuckDB's end in the year 294,247).
MAX_EPOCH_SECONDS = 9.2e12


def epoch_sql(seconds: str) -> str:
    """SQL for a TIMESTAMPTZ from epoch seconds (``seconds``: a DOUBLE SQL expression), for every reader that
    reads epoch numbers. Seconds beyond what a TIMESTAMPTZ holds (``1e20``) give ``'infinity'`` (or
    ``'-infinity'``) instead of failing the whole batch's statement, so that the row alone is quarantined by the
    time check (``ingest.enrich``: in the future, before 2000-01-01); NaN gives NULL (not a time)."""
    return (f"CASE WHEN {seconds} BETWEEN {-MAX_EPOCH_SECONDS} AND {MAX_EPOCH_SECONDS} THEN to_timestamp({seconds}) "
            f"WHEN {seconds} > 0 AND NOT isnan({seconds}) THEN 'infinity'::TIMESTAMPTZ "
            f"WHEN {seconds} < 0 THEN '-infinity'::TIMESTAMPTZ END")


#: The end of a time whose UTC offset is out of range, after the time's last ``:NN`` (and fraction): hours over
#: 23, minutes or seconds over 59 (``+24:00``, ``-2400``, ``+05:60``, ``+00:99``). DuckDB's cast to TIMESTAMPTZ
#: reads such an offset as it adds up (``2026-06-01T08:30:09+24:00`` was stored as 08:30 the day before);
#: Python's ``datetime.fromisoformat`` refuses it (at most ±23:59:59), as the readers that parse in Python do.
BAD_OFFSET_PATTERN = (r":[0-9]{2}([.,][0-9]*)?\s*[+-]((2[4-9]|[3-9][0-9])(:?[0-9]{2}){0,2}"
                      r"|[0-9]{2}:?[6-9][0-9](:?[0-9]{2})?|[0-9]{2}:?[0-9]{2}:?[6-9][0-9])\s*$")


def bad_offset_sql(text: str) -> str:
    """SQL: whether the time ``text`` (a VARCHAR SQL expression) ends in a UTC offset beyond ±23:59
    (:data:`BAD_OFFSET_PATTERN`); such a text is no time, for every reader that casts text to TIMESTAMPTZ."""
    return f"coalesce(regexp_matches({text}, '{BAD_OFFSET_PATTERN}'), false)"


#: How far :func:`read_head` reads on to finish the first line with content (an event with large headers).
MAX_HEAD_LINE = 16 * 1024 * 1024


_CONTENT = re.compile(rb"\S")


def read_head(path: str | os.PathLike, n: int = 65536) -> bytes:
    """The first ``n`` bytes of the (decompressed) input, read on to the end of its first line with content
    (at most :data:`MAX_HEAD_LINE` bytes) so that a format's sniff sees a whole first record even when it is
    longer than ``n`` (one sign-in with many large HTTP headers). Each byte is looked at once."""
    with open_binary(path) as fh:
        try:
            head = bytearray(fh.read(n))
            checked, start = 0, -1  # bytes already searched; the first byte with content (-1: none yet)
            while True:
                if start < 0:
                    m = _CONTENT.search(head, checked)
                    start = m.start() if m else -1
                if start >= 0 and head.find(b"\n", max(start, checked)) >= 0:
                    break
                checked = len(head)
                if len(head) >= MAX_HEAD_LINE:
                    break
                more = fh.read(n)
                if not more:
                    break
                head += more
            return bytes(head)
        except (OSError, EOFError) as exc:
            raise InputFormatError(f"cannot read: {exc}", source=str(path)) from exc


def quarantine_id(source_format: str, source_file: str, line: int, raw: str, occurrence: int = 0) -> str:
    """Stable id of a quarantined row: the same row of the same input (by file name, gzip or not) is recorded once.
    ``occurrence``: how many rows of the input with the same line and raw text come before this one (two equal bad
    AuthEvents items on one line, CloudWatch envelopes on one line holding the same bad log event): each is a row
    of its own. The first one's id is the id riskgate gave such a row before it counted them."""
    h = hashlib.sha256()
    name = os.path.basename(source_file)
    name = name[:-3] if name.endswith(".gz") else name
    for part in (source_format, name, str(line), raw) + ((str(occurrence),) if occurrence else ()):
        h.update(part.encode("utf-8", "surrogateescape"))
        h.update(b"\x00")
    return h.hexdigest()[:32]


#: a JSON string, also one cut off by the end of the text (a trailing backslash included), or a bracket: the tokens
#: the password scanner steps over (a string whole, so its escaped quotes are never taken for the start of another)
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)|[{}\[\]]', re.S)
_COLON = re.compile(r"\s*:\s*")
_SCALAR_VALUE = re.compile(r'[^,}\]\s]+')
REDACTED = "[redacted]"


def is_password_key(name: object) -> bool:
    """Whether a field is a password (``Password``, any case): never stored, in ``extra`` or anywhere else."""
    return isinstance(name, str) and name.strip().lower() == "password"


def without_passwords(value: Any) -> Any:
    """A JSON value with every member named password (:func:`is_password_key`) left out, at any depth: an event's
    ``extra`` (``ingest.pipeline``), a label's value (``riskgate_jsonl.label_values``). A string that is itself a
    JSON object or array (a logged request body: ``"{\"password\":\"…\"}"``), as a value or as a member's name,
    is read as one and written again without them (compactly, and only when it held one: :func:`_text_without`)."""
    if isinstance(value, dict):
        return {_text_without(k): without_passwords(v) for k, v in value.items() if not is_password_key(k)}
    if isinstance(value, list):
        return [without_passwords(v) for v in value]
    return _text_without(value) if isinstance(value, str) else value


def _dumps(value: Any, **kw) -> str:
    """``json.dumps`` keeping characters as they are, but a lone surrogate (``\ud800``, which UTF-8 cannot
    hold) escaped."""
    out = json.dumps(value, ensure_ascii=False, **kw)
    try:
        out.encode("utf-8")
    except UnicodeEncodeError:
        out = json.dumps(value, **kw)
    return out


def _text_without(text: str) -> str:
    """``text``, or, when it is JSON text (an object or array) with a member named password, that JSON written again
    without it. JSON text nested too deep to read (Python's parser recurses) that mentions a password is
    :data:`REDACTED` whole: what cannot be looked into is not kept."""
    if text.lstrip()[:1] not in ("{", "[") or not _MAY_NAME_PASSWORD.search(text):
        return text
    try:
        inner = json.loads(text)
        kept = without_passwords(inner)
    except ValueError:
        return text
    except RecursionError:
        return REDACTED
    return text if kept == inner else _dumps(kept, separators=(",", ":"))


#: text that may hold a member named password: the word in any case, or a JSON escape (``\u0070assword``)
_MAY_NAME_PASSWORD = re.compile(r"(?i)password|\\u")


def _member_key(token: str) -> str | None:
    """A member's name as JSON reads it (``"Pass\\u0077ord"`` is ``Password``); None when it is not valid JSON."""
    if "\\" not in token:
        return token[1:-1]
    try:
        return json.loads(token)
    except ValueError:
        return None


def _value_end(text: str, start: int) -> int:
    """Where the JSON value starting at ``start`` ends: a string, an object or array (to its closing bracket, the
    strings inside stepped over whole), or a scalar; the end of the text when it is cut off first. Linear."""
    if start >= len(text):
        return start
    if text[start] == '"':
        return _TOKEN.match(text, start).end()
    if text[start] in "{[":
        depth = 0
        for m in _TOKEN.finditer(text, start):
            c = m.group()
            if c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1
                if depth == 0:
                    return m.end()
        return len(text)
    m = _SCALAR_VALUE.match(text, start)
    return m.end() if m else start


def redact_passwords(text: str) -> str:
    """``text`` with the value of every JSON member named password replaced by ``"[redacted]"`` (a row kept as
    raw text, in quarantine: an input shaped like ``/v1/evaluate``'s body may carry the user's password): the name
    in any case and as JSON reads it (escapes such as ``\\u0077`` decoded), the value whatever it is (a string, a
    number, an object or array whole), also in text that is not valid JSON or is cut off. One pass over the text,
    string by string (a hostile line of escaped quotes costs no more than any other of its length)."""
    if '"' not in text:
        return text
    out, kept, pos = [], 0, 0
    while (m := _TOKEN.search(text, pos)) is not None:
        pos = m.end()
        token = m.group()
        if token[0] != '"':
            continue
        colon = _COLON.match(text, pos) if token.endswith('"') and len(token) >= 2 else None
        if colon is None or not is_password_key(_member_key(token)):
            # a string value (maybe cut off) or another member's name: itself JSON text with a password member?
            inner = _json_text_redacted(token)
            if inner is not None:
                out += [text[kept:m.start()], inner]
                kept = pos
            continue
        end = _value_end(text, colon.end())
        out += [text[kept:colon.end()], f'"{REDACTED}"']
        kept = pos = end
    return "".join(out) + text[kept:] if out else text


def _json_text_redacted(token: str) -> str | None:
    """A string token (quotes included, maybe cut off) whose text is JSON with a password member, that member's value
    redacted (:func:`redact_passwords`, at any depth of such strings), as a JSON string again; None when it holds
    none. Linear in the token: only a token with an escape and the word password (or a ``\\u`` escape, which may
    spell it) is decoded, and each level of such strings inside it is shorter."""
    if "\\" not in token or not _MAY_NAME_PASSWORD.search(token):
        return None
    text, cut = None, False
    if token.endswith('"') and len(token) >= 2:
        try:
            text = json.loads(token)
        except ValueError:
            pass
    if text is None:  # cut off with the raw text, maybe inside an escape (``\\``, ``\\u00``): what decodes
        cut = True
        for drop in range(6):
            try:
                text = json.loads(token[:len(token) - drop] + '"')
                break
            except ValueError:
                continue
        else:
            return None
    redacted = redact_passwords(text)
    if redacted == text:
        return None
    out = _dumps(redacted)
    return out[:-1] if cut else out  # a token cut off stays cut off


def clip_raw(raw: str, length: int | None = None) -> str:
    """``raw`` (passwords redacted: :func:`redact_passwords`) cut to MAX_RAW_CHARS characters, saying how many
    more there were (``length``: the whole text's, when ``raw`` is only its start)."""
    raw = redact_passwords(raw)
    length = len(raw) if length is None else length
    if length <= MAX_RAW_CHARS:
        return raw
    return raw[:MAX_RAW_CHARS] + f"... [{length - MAX_RAW_CHARS} more characters]"


def long_line_reason(line: int, length: int, kept: int) -> str:
    """The quarantine reason of a line longer than :data:`MAX_RECORD_BYTES` (``kept``: the bytes kept as raw)."""
    return (f"line {line} is too long: {length:,} bytes, more than {MAX_RECORD_BYTES:,}"
            + (f" (only its first {kept:,} bytes are kept)" if kept < length else ""))


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_JSON_TOKENS = re.compile(_JSON_STRING.pattern + r"|[\[{]+|[\]}]+", re.S)  # a string, a run of openers or closers


def json_nesting(text: str) -> int:
    """How deeply the arrays and objects of the JSON ``text`` nest (brackets inside strings do not count), without
    parsing it: C-speed passes over the text (regular expressions, numpy), no recursion."""
    if "[" not in text and "{" not in text:
        return 0
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if not brackets:
        return 0
    codes = np.frombuffer(brackets.encode("ascii"), dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def _bracket_runs(text: str, start: int) -> Iterator[tuple[int, int, int]]:
    """(index, depth before, depth after) of each run of opening or of closing brackets of the JSON value at
    ``text[start]`` (strings skipped), up to and with the run that closes it; never recursing."""
    depth = 0
    for m in _JSON_TOKENS.finditer(text, start):
        tok = m.group()
        if tok[0] == '"':
            continue
        after = depth + len(tok) if tok[0] in "[{" else depth - len(tok)
        yield m.start(), depth, after
        if after <= 0:
            return
        depth = after


def too_deep_at(text: str, start: int = 0, limit: int | None = None) -> int | None:
    """Where the JSON value at ``text[start]`` first nests deeper than ``limit`` (default :data:`MAX_JSON_DEPTH`)
    levels: the index of the bracket that opens level ``limit + 1``; None when it never does. Reads only as far as
    that bracket (or the end of the text), so it can look into a value that is too deep to parse."""
    limit = MAX_JSON_DEPTH if limit is None else limit
    for at, before, after in _bracket_runs(text, start):
        if after > limit:
            return at + limit - before
    return None


def json_value_end(text: str, start: int) -> int | None:
    """The end of the array or object at ``text[start]``, found by its brackets alone (strings skipped), without
    parsing it (a value too deep to parse); None when it does not end in ``text``."""
    for at, before, after in _bracket_runs(text, start):
        if after <= 0:
            return at + before
    return None


def deeper_than(text: str, limit: int | None = None) -> int | None:
    """Where the JSON ``text`` first nests arrays and objects more than ``limit`` (:data:`MAX_JSON_DEPTH`) levels
    deep (the index of the bracket that opens one level more), or None. Counting its brackets is all it costs
    when there are no more of them than ``limit`` (the usual row)."""
    limit = MAX_JSON_DEPTH if limit is None else limit
    if text.count("[") + text.count("{") <= limit or json_nesting(text) <= limit:
        return None
    at = too_deep_at(text, 0, limit)
    return 0 if at is None else at


def nested_too_deeply(where: str, limit: int | None = None) -> str:
    """The quarantine reason of a row whose JSON nests more than ``limit`` levels deep at ``where`` (a column)."""
    limit = MAX_JSON_DEPTH if limit is None else limit
    return f"nested too deeply: more than {limit:,} levels of arrays and objects (at {where})"


def line_column(text: str, at: int) -> tuple[int, int]:
    """The 1-based line and column of ``text[at]``."""
    return text.count("\n", 0, at) + 1, at - (text.rfind("\n", 0, at) + 1) + 1


class QuarantineBuilder:
    """Collects quarantined rows of one batch."""

    def __init__(self, source_format: str, source_file: str):
        self.source_format = source_format
        self.source_file = source_file
        self.lines: list[int] = []
        self.reasons: list[str] = []
        self.raws: list[str] = []

    def add(self, line: int, reason: str, raw: str | bytes, length: int | None = None) -> None:
        """``length``: the length of the row's whole text when ``raw`` is only its start."""
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "backslashreplace")
        self.lines.append(line)
        self.reasons.append(reason)
        self.raws.append(clip_raw(raw, length))

    def __len__(self) -> int:
        return len(self.lines)

    def table(self) -> pa.Table:
        """The rows in line order (different checks find them in different orders)."""
        t = quarantine_table(self.source_format, self.source_file, self.lines, self.reasons, self.raws)
        return t.sort_by("source_line") if t.num_rows > 1 else t


_SOURCE_TYPES = {f.name: f.type for f in SOURCE_SCHEMA}


def as_source_types(t: pa.Table) -> pa.Table:
    """Cast the canonical columns of ``t`` to exactly ``ingest.schema``'s types (e.g. DuckDB's
    ``timestamp[us, tz=Etc/UTC]`` to ``timestamp[us, tz=UTC]``, list item names); others untouched."""
    for i, name in enumerate(t.column_names):
        want = _SOURCE_TYPES.get(name)
        if want is not None and str(t.schema.field(i).type) != str(want):
            t = t.set_column(i, pa.field(name, want), t.column(i).cast(want))
    return t


def quarantine_table(
    source_format: str, source_file: str, lines: list[int], reasons: list[str], raws: list[str]
) -> pa.Table:
    n = len(lines)
    t = pa.table(
        {
            "source_format": pa.array([source_format] * n, pa.string()),
            "source_file": pa.array([source_file] * n, pa.string()),
            "source_line": pa.array(lines, pa.int64()),
            "reason": pa.array(reasons, pa.string()),
            "raw": pa.array(raws, pa.string()),
        },
        schema=QUARANTINE_SCHEMA,
    )
    return t


def with_quarantine_ids(t: pa.Table, seen: dict[tuple, int] | None = None) -> pa.Table:
    """``t`` (QUARANTINE_SCHEMA) with each row's :func:`quarantine_id`: rows of the same file, line and raw text
    are told apart by their order. ``seen`` counts such rows given ids before ``t`` (and is updated), for an
    input whose line continues from one batch into the next (:class:`QuarantineIds`)."""
    seen = {} if seen is None else seen
    ids = []
    for key in zip(
        t.column("source_format").to_pylist(),
        t.column("source_file").to_pylist(),
        t.column("source_line").to_pylist(),
        t.column("raw").to_pylist(),
    ):
        occurrence = seen.get(key, 0)
        seen[key] = occurrence + 1
        ids.append(quarantine_id(*key, occurrence))
    return t.append_column("quarantine_id", pa.array(ids, pa.string()))


class QuarantineIds:
    """Gives the quarantined rows of one input their ids, batch after batch in the input's order
    (:func:`with_quarantine_ids`): the n-th row of a line with a given raw text gets the same id whatever the
    batches (``--batch-rows``), so that ingesting the input again adds none of them twice. Only the counts of
    the last line given ids are kept (a batch ends within a line at most: an AuthEvents page on one line)."""

    def __init__(self) -> None:
        self.seen: dict[tuple, int] = {}

    def __call__(self, t: pa.Table) -> pa.Table:
        out = with_quarantine_ids(t, self.seen)
        if self.seen:
            last = max(key[2] for key in self.seen)
            self.seen = {key: n for key, n in self.seen.items() if key[2] == last}
        return out


#: read blocks of 16 MiB: small enough that the allocator reuses freed blocks (fewer fresh pages to fault in:
#: 1,000,000 events, three runs each: 0.3-0.9 s less system time and 40-120 MiB less peak than 64 MiB blocks)
LINE_BLOCK_BYTES = 16 * 1024 * 1024


@dataclass
class LineBatch:
    """Up to ``batch_rows`` non-blank, valid UTF-8 lines as Arrow arrays (zero-copy over the read blocks;
    chunked when a batch spans blocks).

    Each string keeps its line terminator (JSON parsers ignore it).
    Lines that are not UTF-8 are already in ``quarantine`` (as (line, reason, raw bytes)).
    """

    lines: pa.Array | pa.ChunkedArray  # int64 line numbers
    texts: pa.Array | pa.ChunkedArray  # string
    quarantine: list[tuple[int, str, bytes]]


def iter_line_arrays(path: str | os.PathLike, batch_rows: int = DEFAULT_BATCH_ROWS,
                     expected: str = "one record per line") -> Iterator[LineBatch]:
    """Stream a text file as batches of exactly ``batch_rows`` lines (the last may be shorter),
    with 1-based physical line numbers.

    A file without a line to read (empty, blank lines only, or only a byte-order mark) cannot be read as
    any line format: :class:`InputFormatError` "is empty: expected ``expected``", naming the file.

    A batch may span several read blocks (its arrays are then chunked, still without copying):
    batches as large as asked keep the store's writes in whole row groups, which is much cheaper
    than many small appends. Bad (not UTF-8) lines travel with the batch being filled when their
    block was read, so each is counted once.
    """
    lines: list[pa.Array] = []
    texts: list[pa.Array] = []
    bad: list[tuple[int, str, bytes]] = []
    n = 0
    empty = True
    broken: InputFormatError | None = None
    blocks = _iter_block_line_arrays(path)
    while True:
        try:
            lb = next(blocks)
        except StopIteration:
            break
        except InputFormatError as exc:  # damaged past some line: the whole lines before it are still read
            broken = exc
            break
        empty = False
        bad.extend(lb.quarantine)
        at, size = 0, len(lb.texts)
        while at < size:
            take = min(batch_rows - n, size - at)
            lines.append(lb.lines.slice(at, take))
            texts.append(lb.texts.slice(at, take))
            n += take
            at += take
            if n == batch_rows:
                yield _line_batch(lines, texts, bad)
                lines, texts, bad, n = [], [], [], 0
    if n or bad:
        yield _line_batch(lines, texts, bad)
    if broken is not None:
        raise broken
    if empty:
        raise InputFormatError(f"is empty: expected {expected}", source=str(path))


def _line_batch(lines: list[pa.Array], texts: list[pa.Array], bad: list[tuple[int, str, bytes]]) -> LineBatch:
    if len(texts) == 1:
        return LineBatch(lines[0], texts[0], bad)
    if not texts:
        return LineBatch(pa.array([], pa.int64()), pa.array([], pa.string()), bad)
    return LineBatch(pa.chunked_array(lines, pa.int64()), pa.chunked_array(texts, texts[0].type), bad)


def _iter_block_line_arrays(path: str | os.PathLike) -> Iterator[LineBatch]:
    """The lines of each read block (of LINE_BLOCK_BYTES), one LineBatch a block (``iter_line_arrays`` cuts them).

    Splits blocks on newlines with numpy and wraps the bytes in Arrow arrays without copying;
    memory stays bounded by the block and batch sizes. A UTF-8 byte-order mark at the start of the
    (decompressed) input is not part of its first line. A line longer than :data:`MAX_RECORD_BYTES` is a
    quarantine entry (its number, its length, its first bytes): it is read past in pieces, never held whole.
    """
    with open_binary(path) as fh:
        line_no = 1
        try:
            carry = fh.read(len(UTF8_BOM))
        except (OSError, EOFError) as exc:
            raise InputFormatError(f"cannot read: {exc}", source=str(path)) from exc
        carry = carry.removeprefix(UTF8_BOM)
        while True:
            # each block is read into its own buffer (the arrays of its lines keep it alive): no copies
            block = bytearray(len(carry) + LINE_BLOCK_BYTES)
            block[: len(carry)] = carry
            view = memoryview(block)
            size = len(carry)
            try:
                while size < len(block):
                    # in pieces; a damaged gzip stream gives all it had decompressed before the break, and
                    # raises in the next call (_GzipOwning)
                    got = fh.readinto(view[size:size + READ_PIECE_BYTES])
                    if not got:
                        break
                    size += got
            except (OSError, EOFError) as exc:  # a truncated or damaged file: its whole lines before the break count
                cut = block.rfind(b"\n", 0, size)
                if cut >= 0:
                    line_no += yield from _split_block(block, cut + 1, line_no)
                raise _cannot_read(path, line_no, exc) from exc
            if size == len(carry):  # end of input
                if carry:
                    last = carry + b"\n"
                    yield from _split_block(last, len(last), line_no)
                return
            cut = block.rfind(b"\n", 0, size)
            if cut < 0:
                if size > MAX_RECORD_BYTES:  # a line longer than any record: read past it, keeping its start
                    head, end = bytes(view[:min(size, MAX_RAW_CHARS)]), block[size - 1]
                    del view, block
                    length, carry = read_past_line(fh, path, line_no, size, end)
                    yield LineBatch(pa.array([], pa.int64()), pa.array([], pa.large_string()),
                                    [(line_no, long_line_reason(line_no, length, len(head)), head)])
                    line_no += 1
                    if carry is None:  # it was the last line
                        return
                    continue
                carry = bytes(view[:size])
                continue
            carry = bytes(view[cut + 1 : size])
            line_no += yield from _split_block(block, cut + 1, line_no)


def _cannot_read(path: str | os.PathLike, line_no: int, exc: Exception) -> InputFormatError:
    where = f"past line {line_no - 1}" if line_no > 1 else "its first line"
    return InputFormatError(f"cannot read {where}: {exc}", source=str(path))


def read_past_line(fh: BinaryIO, path: str | os.PathLike, line_no: int, length: int,
                   last: int) -> tuple[int, bytes | None]:
    """Read on to the end of the line whose first ``length`` bytes (no newline among them, the last one ``last``)
    are read already, in pieces of READ_PIECE_BYTES: (the line's length without its line end, the bytes read after
    its newline; None at the end of the input)."""
    piece = bytearray(READ_PIECE_BYTES)
    while True:
        try:
            got = fh.readinto(piece)
        except (OSError, EOFError) as exc:
            raise _cannot_read(path, line_no, exc) from exc
        if not got:
            return length - (last == 13), None
        nl = piece.find(b"\n", 0, got)
        if nl >= 0:
            before = piece[nl - 1] if nl else last
            return length + nl - (before == 13), bytes(piece[nl + 1 : got])
        length += got
        last = piece[got - 1]


def _newlines(data: bytes | bytearray, size: int) -> np.ndarray:
    """The index of each newline in ``data[:size]``.

    For lines of events (hundreds of bytes), a ``find`` per line (memchr) is four times as fast as a
    numpy comparison over the whole block, which also allocates a mask as large as the block; for
    very short lines (a file of blank lines) the per-line Python call would cost more than the mask.
    """
    out: list[int] = []
    find, append = data.find, out.append
    limit = size // 64  # more lines than this: short ones, the mask is cheaper
    i = find(b"\n", 0, size)
    while i >= 0:
        append(i)
        if len(out) > limit:
            return np.flatnonzero(np.frombuffer(memoryview(data)[:size], dtype=np.uint8) == 10)
        i = find(b"\n", i + 1, size)
    return np.array(out, dtype=np.int64)


def _split_block(data: bytes | bytearray, size: int, first_line: int) -> Iterator[LineBatch]:
    """The lines of ``data[:size]`` (which ends with a newline); returns how many lines it had."""
    body = memoryview(data)[:size]
    buf = np.frombuffer(body, dtype=np.uint8)
    ends = _newlines(data, size)  # index of each '\n'
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    content = ends - starts  # length without '\n'
    has_cr = np.zeros(len(ends), dtype=bool)
    nz = content > 0
    has_cr[nz] = buf[ends[nz] - 1] == 13
    content = content - has_cr
    line_numbers = np.arange(first_line, first_line + len(ends), dtype=np.int64)
    bad: list[tuple[int, str, bytes]] = []
    keep = content > 0
    for i in np.flatnonzero(content > MAX_RECORD_BYTES):  # whole in this block, but longer than any record
        head = bytes(body[starts[i] : starts[i] + min(int(content[i]), MAX_RAW_CHARS)])
        bad.append((int(line_numbers[i]), long_line_reason(int(line_numbers[i]), int(content[i]), len(head)), head))
        keep[i] = False
    short = np.flatnonzero(keep & (content < 8))
    for i in short:  # whitespace-only lines are blank too
        if not bytes(body[starts[i] : starts[i] + content[i]]).strip():
            keep[i] = False
    offsets = np.empty(len(ends) + 1, dtype=np.int64)
    offsets[:-1] = starts
    offsets[-1] = len(body)
    all_texts = pa.LargeStringArray.from_buffers(len(ends), pa.py_buffer(offsets), pa.py_buffer(body))
    try:
        all_texts.validate(full=True)  # UTF-8 of the whole block (lines split at ASCII newlines)
    except pa.ArrowInvalid:
        for i in np.flatnonzero(keep):
            raw = bytes(body[starts[i] : starts[i] + content[i]])
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad.append((int(line_numbers[i]), f"not UTF-8: invalid byte at position {exc.start}", raw))
                keep[i] = False
    # from the buffer: pa.array() of a numpy array would import pandas here, before the warm-up thread has
    # (ingest.enrich._warm_up), and make this thread wait for it
    all_lines = pa.Array.from_buffers(pa.int64(), len(line_numbers), [None, pa.py_buffer(line_numbers)])
    if not keep.all():
        taken = pa.array(np.flatnonzero(keep), pa.int64())
        all_texts, all_lines = all_texts.take(taken), all_lines.take(taken)
    if len(all_texts) or bad:
        yield LineBatch(all_lines, all_texts, bad)
    return len(ends)
