"""Compromised credentials: is a presented password known from breach data?

A password is hashed (SHA-1, as Have I Been Pwned publishes it) the moment it
arrives and is then forgotten: nothing here stores, logs or returns it. The
answer is a :class:`CheckResult` holding only ``(compromised, count, source)``.

Where the answer comes from, in this order:

1. the test hook: a password starting ``RISKGATE-TEST-`` is always compromised
   (like Auth0's ``AUTH0-TEST-``);
2. the user's Pwned Passwords data, when configured (``RISKGATE_PWNED_PATH`` or
   ``pwned=``), in any of three forms: the single download sorted by hash
   (``SHA1:COUNT`` lines, searched by binary search over byte offsets, never
   loaded), a folder of per-prefix range files (``00000.txt`` ... ``FFFFF.txt``,
   ``SUFFIX:COUNT`` lines), or the compact index ``riskgate credentials build``
   makes from either. The password is compromised when its count here reaches
   ``min_count`` (like Ory Kratos' ``max_breaches``);
3. the list of common leaked passwords that ships with riskgate
   (``risk/data/common-passwords.txt.gz``, compared case-insensitively). It has
   no counts: a hit there reports ``count=None`` and counts as compromised
   whatever ``min_count`` is, also when the Pwned data has the password below
   ``min_count``; turn it off (``use_common_list=False``) to apply the
   threshold strictly to counted data only.

Damaged or incomplete data is refused with an error rather than used to answer
"not found": an index whose structure is inconsistent, a text file not sorted
by hash, a range folder missing files (unless ``allow_partial``).

Then :func:`evaluate` applies a CompromisedCredentialsRiskConfiguration's
``EventFilter`` and ``EventAction``; ``BLOCK`` makes the user ``RESET_REQUIRED``
(:func:`apply_block`). :func:`check_event` does all of it for one event and
records the outcome (never the password) in the ``credential_checks`` table.

The compact index (``RGPWIDX1``) is a flat file: a 64-byte header, an index of
65,537 record numbers (one per 2-byte hash prefix, plus the end), then one
10-byte record per hash: bytes 2..8 of the SHA-1 digest and a little-endian
uint32 count. Keys are the first 64 bits of SHA-1: about 10 bytes a hash
(10 GB for a billion hashes, against ~40 GB of text or 24 GB for full digests),
with a false-match chance per lookup of n / 2**64 (5e-11 at a billion hashes).
It is searched through ``mmap`` with a binary search inside one prefix bucket.
The header also holds BLAKE2b checksums of the bucket table (checked, with the
table's consistency and the file size, on opening) and of the records (checked
by ``verify``, which reads every record).
"""

from __future__ import annotations

import bisect
import gzip
import hashlib
import mmap
import operator
import os
import re
import struct
import sys
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from pathlib import Path

import duckdb

from ingest.errors import ConfigurationError, InputFormatError, check_output_folder
from ingest.schema import EVENT_TYPES
from ingest.store import Migration

# -- names and settings --------------------------------------------------------

TEST_PREFIX = "RISKGATE-TEST-"
PWNED_PATH_ENV = "RISKGATE_PWNED_PATH"
MIN_COUNT_ENV = "RISKGATE_PWNED_MIN_COUNT"
DEFAULT_MIN_COUNT = 1

SOURCE_TEST_HOOK = "test-hook"
SOURCE_PWNED = "pwned-passwords"
SOURCE_COMMON = "common-passwords"

#: CompromisedCredentialsRiskConfiguration enumerations (COGNITO_REFERENCE.md).
EVENT_FILTERS = ("SIGN_IN", "PASSWORD_CHANGE", "SIGN_UP")
EVENT_ACTIONS = ("BLOCK", "NO_ACTION")
#: The EventFilter value that covers each event type; other types present no password.
FILTER_FOR_EVENT_TYPE = {"SignIn": "SIGN_IN", "PasswordChange": "PASSWORD_CHANGE", "SignUp": "SIGN_UP"}
RESET_REQUIRED = "RESET_REQUIRED"

COMMON_LIST_RESOURCE = "common-passwords.txt.gz"

# -- the compact index format ----------------------------------------------------

INDEX_MAGIC = b"RGPWIDX1"
INDEX_VERSION = 1
KEY_BYTES = 8  # SHA-1 digest bytes kept as the key
PREFIX_BYTES = 2  # of which this many are implied by the bucket index
SUFFIX_BYTES = KEY_BYTES - PREFIX_BYTES
RECORD_BYTES = SUFFIX_BYTES + 4
BUCKETS = 1 << (8 * PREFIX_BYTES)
#: magic, version, key bytes, records, source lines, source issues, bucket-table and records checksums
#: (BLAKE2b, 8 bytes; all zero in indexes built before they were added: then not checked)
_HEADER = struct.Struct("<8sIIQQQ8s8s")
_RECORD = struct.Struct(f"<{SUFFIX_BYTES}sI")
HEADER_BYTES = 64
INDEX_BYTES = (BUCKETS + 1) * 8
DATA_OFFSET = HEADER_BYTES + INDEX_BYTES
MAX_COUNT = 0xFFFFFFFF

#: A build gives up when this many lines are out of hash order (the input is not sorted by hash).
MAX_OUT_OF_ORDER = 1000
#: How many issues a report keeps (all are counted).
MAX_ISSUES_KEPT = 1000

RANGE_FILES = 1 << 20
_RANGE_NAME = re.compile(r"^([0-9A-Fa-f]{5})\.txt$")
_GZIP_MAGIC = b"\x1f\x8b"
_7Z_MAGIC = b"7z\xbc\xaf\x27\x1c"
_ZIP_MAGIC = b"PK\x03\x04"
_MAX_LINE = 65536
_HEX = re.compile(rb"[0-9A-Fa-f]+")


# -- results -----------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """What a check found. Never holds the password or its hash.

    ``count`` is how often the password was seen (``None``: on a list without
    counts, or the test hook; ``0``: not found). ``source`` names the data that
    answered, or, when nothing did, the sources checked joined by ``+``.
    """

    compromised: bool
    count: int | None
    source: str

    def describe(self) -> str:
        if self.compromised:
            seen = f"seen {self.count} times" if self.count is not None else "seen (count unknown)"
            return f"compromised: {seen} in {self.source}"
        if self.count:
            return f"seen {self.count} times in {self.source}, below the minimum breach count: not counted as compromised"
        return "not found in breach data"

    def as_json(self) -> dict:
        return {"compromised": self.compromised, "count": self.count, "source": self.source}


@dataclass(frozen=True)
class PwnedIssue:
    """A line (or file) of Pwned Passwords data that could not be used."""

    source: str
    line: int | None
    reason: str
    text: str = ""

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        shown = f" ({self.text!r})" if self.text else ""
        return f"{where}: {self.reason}{shown}"


@dataclass
class ScanReport:
    """What a scan (``verify``) or a ``build`` of Pwned Passwords data found."""

    source: str
    layout: str = ""  # sorted-file | range-folder
    lines_read: int = 0
    hashes: int = 0  # usable SHA1:COUNT lines (count > 0)
    padding_skipped: int = 0  # count-0 lines
    records: int = 0  # records written (build only): hashes less merged keys
    merged: int = 0  # lines sharing a 64-bit key with the line before (duplicates), merged
    range_files: int = 0
    issue_count: int = 0  # every problem, those of a line and those of the whole (an incomplete range folder)
    unusable_lines: int = 0  # the problems of a line: lines skipped
    issues: list[PwnedIssue] = field(default_factory=list)
    #: of a built index (``verify``): the lines of its source its build could not use (the header keeps their
    #: number, not the lines: verifying the source lists them). Information, not a defect of the index.
    skipped_at_build: int = 0
    out: str | None = None
    seconds: float = 0.0

    def add_issue(self, issue: PwnedIssue) -> None:
        self.issue_count += 1
        if issue.line is not None:
            self.unusable_lines += 1
        if len(self.issues) < MAX_ISSUES_KEPT:
            self.issues.append(issue)

    def as_json(self) -> dict:
        return {
            "source": self.source,
            "layout": self.layout,
            "lines_read": self.lines_read,
            "hashes": self.hashes,
            "padding_skipped": self.padding_skipped,
            "records": self.records,
            "merged": self.merged,
            "range_files": self.range_files,
            "issue_count": self.issue_count,
            "unusable_lines": self.unusable_lines,
            "issues": [
                {"source": i.source, "line": i.line, "reason": i.reason, "text": i.text} for i in self.issues
            ],
            "skipped_at_build": self.skipped_at_build,
            "out": self.out,
            "seconds": round(self.seconds, 3),
        }


# -- parsing Pwned Passwords lines ---------------------------------------------------


def _parse(line: bytes, hex_len: int) -> tuple[bytes, int] | str:
    """``HEX:COUNT`` (``\\r`` and ``\\n`` tolerated at the end) -> (hex bytes uppercased, count), or a reason."""
    line = line.rstrip(b"\r\n")
    h, sep, c = line.partition(b":")
    if not sep:
        return "expected HASH:COUNT, found no ':'" if line.strip() else "empty line"
    if len(h) != hex_len:
        return f"expected {hex_len} hex digits before ':', found {len(h)} characters"
    c = c.strip()
    if not c.isdigit():
        return "count is not a whole number"
    if not _HEX.fullmatch(h):
        return "hash is not hexadecimal"
    return h.upper(), int(c)


def _shown(line: bytes) -> str:
    text = line.rstrip(b"\r\n").decode("utf-8", "replace")
    return text if len(text) <= 80 else text[:77] + "..."


def _sniff_file(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(_GZIP_MAGIC) or head.startswith(_7Z_MAGIC) or head.startswith(_ZIP_MAGIC):
        raise InputFormatError(
            "is compressed (gzip, 7-Zip or zip): extract the .txt file first, it is searched in place",
            source=str(path),
        )
    return head


def _range_files(folder: Path, report: ScanReport | None = None) -> list[tuple[str, Path]]:
    """The folder's range files in prefix order; other files are reported and skipped."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        m = _RANGE_NAME.match(p.name)
        if not m or not p.is_file():
            if report is not None:
                report.add_issue(PwnedIssue(str(p), None, "not a range file (expected 5 hex digits + .txt), skipped"))
            continue
        prefix = m.group(1).upper()
        if prefix in found:
            if report is not None:
                report.add_issue(PwnedIssue(str(p), None, f"second range file for prefix {prefix}, skipped"))
            continue
        found[prefix] = p
    return sorted(found.items())


def _missing_ranges(prefixes: list[str]) -> tuple[int, str | None]:
    """How many of ``00000.txt`` ... ``FFFFF.txt`` a folder lacks, and the first missing name.

    ``prefixes``: the folder's prefixes, sorted, unique, uppercase (as :func:`_range_files` gives them).
    """
    wanted = bisect.bisect_left(prefixes, f"{RANGE_FILES:05X}") if RANGE_FILES < 16**5 else len(prefixes)
    missing = RANGE_FILES - wanted
    if not missing:
        return 0, None
    lo, hi = 0, wanted  # the first position whose prefix is not its own number is the first gap
    while lo < hi:
        mid = (lo + hi) // 2
        if int(prefixes[mid], 16) == mid:
            lo = mid + 1
        else:
            hi = mid
    return missing, f"{lo:05X}.txt"


def _partial_message(missing: int, first: str | None) -> str:
    return f"incomplete range folder: {missing:,} of {RANGE_FILES:,} range files missing (first missing: {first})"


def _in_order(items: Iterator[tuple[bytes, int, str, int, bytes]], report: ScanReport,
              issue: Callable[..., None], refuse_unsorted: bool = False,
              refused: str = "no index written") -> Iterator[tuple[bytes, int]]:
    """Put parsed lines ``(hash, count, source, line, raw)`` through the hash-order checks; yield ``(hash, count)``.

    Each line is judged with the last line kept before it and the two lines after it. A line out of
    order while its neighbours are in order with each other is an isolated damaged line: reported
    (with its line number) and skipped, and the lines around it are kept. Lines out of order with
    their neighbours too are evidence that the data is not sorted by hash: after MAX_OUT_OF_ORDER
    of them it is refused, and at the first one with ``refuse_unsorted`` (a build, a check: the lines
    skipped would be answered "not found"; ``refused`` ends the message). Duplicates of a hash count as the
    largest of their counts (a count-0 padding line never hides a real count); each is reported. Count-0
    lines are then skipped.
    """
    prev = None  # the hash of the last line kept
    held = None  # [hash, count, source, line] of the last line kept, yielded once the next hash differs
    out_of_order = 0
    pending: list[tuple[bytes, int, str, int, bytes]] = []

    def judge(b: bytes, c: bytes | None, d: bytes | None) -> int:
        """0: keep b; 1: b is an isolated out-of-order line; 2: b is out of order with its neighbours too."""
        if (prev is None or prev <= b) and (c is None or b <= c):
            return 0
        if (prev is None or prev <= b) and (d is None or b <= d):
            return 0  # the next line is the odd one: it is judged next
        if (prev is None or c is None or prev <= c) and (c is None or d is None or c <= d):
            return 1
        return 2

    def flush(kept):  # the last line kept, once the next hash differs (or the data ends)
        if kept is None:
            return
        if kept[1]:
            report.hashes += 1
            yield kept[0], kept[1]
        else:
            report.padding_skipped += 1

    it = iter(items)
    done = False
    while True:
        while not done and len(pending) < 3:
            nxt = next(it, None)
            if nxt is None:
                done = True
            else:
                pending.append(nxt)
        if not pending:
            break
        b = pending.pop(0)
        h, count, src, lineno, raw = b
        verdict = judge(h, pending[0][0] if pending else None, pending[1][0] if len(pending) > 1 else None)
        if verdict == 1 and refuse_unsorted and not pending:
            verdict = 2  # a last line out of order is not between lines in order ([B, A]: A was skipped as damaged)
        if verdict == 1:
            issue(src, lineno, "out of hash order while the lines around it are in order: a damaged line, skipped",
                  raw)
            continue
        if verdict == 2 and refuse_unsorted:
            not_one = "is out of hash order, and not as one damaged line between lines in order"
            if report.layout == "range-folder":
                raise InputFormatError(
                    f"line {lineno} of {Path(src).name} {not_one}: the range files are not sorted by hash (download "
                    f"them again); {refused}", source=str(Path(src).parent))
            raise InputFormatError(
                f"line {lineno} {not_one}: this file is not sorted by hash (use the 'ordered by hash' download or a "
                f"folder of range files); {refused}", source=src)
        if verdict == 2:
            out_of_order += 1
            issue(src, lineno, "out of hash order, skipped", raw)
            if out_of_order >= MAX_OUT_OF_ORDER:
                if report.layout == "range-folder":  # counted over the files read so far
                    raise InputFormatError(
                        f"{out_of_order} lines out of hash order in the range files read so far (the last: line "
                        f"{lineno} of {Path(src).name}): the range files are not sorted by hash (download them "
                        "again)", source=str(Path(src).parent))
                raise InputFormatError(
                    f"{out_of_order} lines out of hash order by line {lineno}: this file is not sorted by "
                    "hash (use the 'ordered by hash' download or a folder of range files)",
                    source=src,
                )
            continue
        prev = h
        if held is not None and held[0] == h:
            report.merged += 1
            issue(src, lineno, f"duplicate of the hash on line {held[3]}: the larger count is kept", raw)
            if count > held[1]:
                held[1] = count
            continue
        yield from flush(held)
        held = [h, count, src, lineno]
    yield from flush(held)


def scan(path: str | os.PathLike, on_issue: Callable[[PwnedIssue], None] | None = None,
         report: ScanReport | None = None, allow_partial: bool = False,
         refuse_unsorted: bool = False) -> Iterator[tuple[bytes, int]]:
    """Yield ``(sha1_hex_upper, count)`` for every usable line of a Pwned Passwords download, in hash order.

    ``path`` is the single file sorted by hash or a folder of range files.
    Count-0 padding lines are skipped; malformed and out-of-order lines are
    reported (file, line, reason) and skipped; duplicates keep their largest
    count. Data not sorted by hash is refused (InputFormatError) after
    ``MAX_OUT_OF_ORDER`` lines out of order, or with ``refuse_unsorted`` at the
    first one that is not an isolated damaged line (a last line out of order
    included). A range folder missing some of its 1,048,576 files is refused unless
    ``allow_partial`` (then it is reported). Streams: memory stays bounded.
    """
    p = Path(path)
    report = report if report is not None else ScanReport(str(path))

    def issue(src: str, line: int | None, reason: str, raw: bytes = b"") -> None:
        i = PwnedIssue(src, line, reason, _shown(raw) if raw else "")
        report.add_issue(i)
        if on_issue is not None:
            on_issue(i)

    if not p.exists():
        raise InputFormatError("no such file or folder", source=str(path))
    if p.is_dir():
        report.layout = "range-folder"
        files = _range_files(p, report)
        if not files:
            raise InputFormatError("folder holds no range files (00000.txt ... FFFFF.txt)", source=str(path))
        missing, first = _missing_ranges([prefix for prefix, _ in files])
        if missing:
            if not allow_partial:
                raise InputFormatError(_partial_message(missing, first) + " (an interrupted download?): finish the "
                                       "download, or pass --allow-partial to use the ranges present", source=str(path))
            issue(str(path), None, _partial_message(missing, first) + ": only the ranges present are used")

        def lines() -> Iterator[tuple[bytes, int, str, int, bytes]]:
            for prefix, fp in files:
                report.range_files += 1
                pre = prefix.encode("ascii")
                src = str(fp)
                with open(fp, "rb") as f:
                    for lineno, raw in enumerate(f, 1):
                        report.lines_read += 1
                        parsed = _parse(raw, 35)
                        if isinstance(parsed, str):
                            issue(src, lineno, parsed, raw)
                            continue
                        yield pre + parsed[0], parsed[1], src, lineno, raw

        yield from _in_order(lines(), report, issue, refuse_unsorted)
        return
    if _sniff_file(p) == INDEX_MAGIC:
        raise InputFormatError("is already a riskgate index (made by `riskgate credentials build`)", source=str(path))
    report.layout = "sorted-file"
    src = str(path)

    def lines() -> Iterator[tuple[bytes, int, str, int, bytes]]:
        with open(p, "rb", buffering=1 << 20) as f:
            for lineno, raw in enumerate(f, 1):
                report.lines_read += 1
                parsed = _parse(raw, 40)
                if isinstance(parsed, str):
                    issue(src, lineno, parsed, raw)
                    continue
                yield parsed[0], parsed[1], src, lineno, raw

    yield from _in_order(lines(), report, issue, refuse_unsorted)


def _digest8(data: bytes = b""):
    return hashlib.blake2b(data, digest_size=8)


def _index_problems(mm, size: int, records: int, table_sum: bytes) -> tuple[list[str], array | None]:
    """The cheap structural checks of an index (header, bucket table, size): problems found, and the table.

    The table is returned only when it is usable (rising from 0 to the header's record count).
    """
    problems = []
    if records == 0:
        problems.append("holds no hashes (built from data with no usable SHA1:COUNT line)")
    if size != DATA_OFFSET + records * RECORD_BYTES:
        problems.append(f"size {size} does not match {records} records: the file is truncated or damaged")
    raw = mm[HEADER_BYTES:DATA_OFFSET]
    table = array("Q")
    table.frombytes(raw)
    if sys.byteorder != "little":
        table.byteswap()
    usable = True
    if table_sum != bytes(8) and _digest8(raw).digest() != table_sum:
        problems.append("the bucket table does not match its checksum: the table is damaged")
    if table[0] != 0:
        problems.append(f"the bucket table starts at record {table[0]:,}, not 0")
        usable = False
    if table[BUCKETS] != records:
        problems.append(f"the bucket table ends at record {table[BUCKETS]:,}, not at the header's {records:,} records")
        usable = False
    if any(a > b for a, b in zip(table, table[1:])):
        b = next(i for i in range(BUCKETS) if table[i] > table[i + 1])
        problems.append(f"the bucket table is not rising: bucket {b:04X} starts at record {table[b]:,} and ends "
                        f"at record {table[b + 1]:,}")
        usable = False
    if max(table) > (size - DATA_OFFSET) // RECORD_BYTES:
        problems.append("the bucket table points beyond the end of the file")
        usable = False
    return problems, (table if usable else None)


def _verify_index(path: Path, report: ScanReport, on_issue: Callable[[PwnedIssue], None] | None) -> None:
    """Read a whole index: header, bucket table, every record (sorted strictly in its bucket, count > 0), checksums."""
    src = str(path)

    def issue(reason: str) -> None:
        i = PwnedIssue(src, None, reason)
        report.add_issue(i)
        if on_issue is not None:
            on_issue(i)

    report.layout = "index"
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < DATA_OFFSET:
            issue(f"too short for a riskgate Pwned Passwords index ({size} bytes): truncated or damaged")
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            magic, version, key_bytes, records, lines, issues, table_sum, data_sum = _HEADER.unpack_from(mm, 0)
            if version != INDEX_VERSION or key_bytes != KEY_BYTES:
                raise InputFormatError(f"index version {version} with {key_bytes}-byte keys; this riskgate reads "
                                       f"version {INDEX_VERSION}", source=src)
            report.records = report.hashes = records
            report.lines_read = lines
            # the lines the build could not use: not a defect of the index, and not listed (verify the source)
            report.skipped_at_build = issues
            problems, table = _index_problems(mm, size, records, table_sum)
            for p in problems:
                issue(p)
            if table is None:
                return
            summed = _digest8()
            key_of = operator.itemgetter(0)
            stop = min(records, (size - DATA_OFFSET) // RECORD_BYTES)
            for b in range(BUCKETS):
                lo, hi = table[b], min(table[b + 1], stop)
                if lo >= hi:
                    continue
                chunk = mm[DATA_OFFSET + lo * RECORD_BYTES : DATA_OFFSET + hi * RECORD_BYTES]
                summed.update(chunk)
                recs = list(_RECORD.iter_unpack(chunk))
                keys = list(map(key_of, recs))
                if not all(map(operator.lt, keys, keys[1:])):
                    bad = next(i for i in range(1, len(keys)) if keys[i] <= keys[i - 1])
                    issue(f"record {lo + bad:,} (bucket {b:04X}) is not above the record before it: the records "
                          "are not sorted (damaged)")
                if any(c == 0 for _, c in recs):
                    bad = next(i for i, (_, c) in enumerate(recs) if c == 0)
                    issue(f"record {lo + bad:,} (bucket {b:04X}) has count 0")
            if data_sum != bytes(8) and summed.digest() != data_sum:
                issue("the records do not match their checksum: the records are damaged")


def verify(path: str | os.PathLike, on_issue: Callable[[PwnedIssue], None] | None = None) -> ScanReport:
    """Read a whole Pwned Passwords download or built index through and report what is unusable."""
    start = time.monotonic()
    p = Path(path)
    report = ScanReport(str(path))
    if p.is_file() and _sniff_file(p) == INDEX_MAGIC:
        _verify_index(p, report, on_issue)
    else:
        for _ in scan(path, on_issue, report, allow_partial=True):
            pass
    report.seconds = time.monotonic() - start
    return report


def default_index_path(path: str | os.PathLike) -> Path:
    """``PATH.rgpw`` beside the file or folder."""
    return Path(str(path).rstrip("/\\") + ".rgpw")


def build(path: str | os.PathLike, out: str | os.PathLike | None = None,
          on_issue: Callable[[PwnedIssue], None] | None = None, allow_partial: bool = False) -> ScanReport:
    """Turn a Pwned Passwords download (sorted file or range folder) into the compact index at ``out``.

    Streams the input once; memory is bounded (the 512 KiB bucket table and
    write buffers). The index is written beside ``out`` and renamed into place
    only when complete. Data with no usable hash gives no index (an error), nor
    does data not sorted by hash (a line out of order that is not one damaged
    line between lines in order, whatever the number of lines: the lines skipped
    would be answered "not found"); an incomplete range folder is refused unless
    ``allow_partial``.
    """
    start = time.monotonic()
    out_path = Path(out) if out else default_index_path(path)
    if out_path.resolve() == Path(path).resolve():
        raise InputFormatError("the output would overwrite the input", source=str(out_path))
    if out_path.is_dir():
        raise InputFormatError("is a folder: give the path of the index file to write (e.g. pwned.rgpw)",
                               source=str(out_path))
    check_output_folder(out_path, InputFormatError)
    report = ScanReport(str(path), out=str(out_path))
    bucket_counts = array("Q", bytes(8 * BUCKETS))
    tmp = out_path.with_name(out_path.name + f".tmp-{os.getpid()}")
    pack_count = struct.Struct("<I").pack
    fromhex = bytes.fromhex
    key_hex = 2 * KEY_BYTES
    prefix_hex = 2 * PREFIX_BYTES
    records = 0
    summed = _digest8()
    try:
        with open(tmp, "wb") as f:
            f.write(bytes(DATA_OFFSET))
            buf = bytearray()
            prev_key = b""
            prev_count = 0
            for h, count in scan(path, on_issue, report, allow_partial=allow_partial, refuse_unsorted=True):
                key = h[:key_hex]
                if key == prev_key:  # two hashes sharing their first 64 bits: keep the larger count
                    report.merged += 1
                    if count > prev_count:
                        prev_count = count
                    continue
                if prev_key:
                    buf += fromhex(prev_key[prefix_hex:].decode())
                    buf += pack_count(prev_count if prev_count <= MAX_COUNT else MAX_COUNT)
                    bucket_counts[int(prev_key[:prefix_hex], 16)] += 1
                    records += 1
                    if len(buf) >= 1 << 20:
                        summed.update(buf)
                        f.write(buf)
                        buf.clear()
                prev_key, prev_count = key, count
            if prev_key:
                buf += fromhex(prev_key[prefix_hex:].decode())
                buf += pack_count(prev_count if prev_count <= MAX_COUNT else MAX_COUNT)
                bucket_counts[int(prev_key[:prefix_hex], 16)] += 1
                records += 1
            if not records:
                raise InputFormatError(
                    f"no usable SHA1:COUNT line ({report.lines_read:,} lines read, {report.unusable_lines:,} unusable, "
                    f"{report.padding_skipped:,} count-0 padding): no index written; is this a Pwned Passwords "
                    "download?", source=str(path))
            summed.update(buf)
            f.write(buf)
            index = array("Q", bytes(8 * (BUCKETS + 1)))
            total = 0
            for i in range(BUCKETS):
                index[i] = total
                total += bucket_counts[i]
            index[BUCKETS] = total
            if sys.byteorder != "little":
                index.byteswap()
            table = index.tobytes()
            f.seek(0)
            header = _HEADER.pack(INDEX_MAGIC, INDEX_VERSION, KEY_BYTES, records, report.lines_read,
                                  report.unusable_lines, _digest8(table).digest(), summed.digest())
            f.write(header.ljust(HEADER_BYTES, b"\0"))
            f.write(table)
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    report.records = records
    report.seconds = time.monotonic() - start
    return report


# -- lookups -----------------------------------------------------------------------------


class PwnedIndex:
    """The compact index made by :func:`build`, searched through mmap.

    Opening it checks the header, the bucket table (rising from 0 to the record
    count, matching its checksum) and the file size, so a damaged index is
    refused instead of answering wrongly; ``riskgate credentials verify`` reads
    every record too.
    """

    layout = "index"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._f = None
        self._mm: mmap.mmap | None = None
        self.records = 0
        self.source_lines = 0
        self.source_issues = 0

    def open(self) -> PwnedIndex:
        if self._mm is not None:
            return self
        src = str(self.path)
        try:
            f = open(self.path, "rb")
        except OSError as exc:
            raise InputFormatError(f"cannot open: {exc.strerror}", source=src) from exc
        size = os.fstat(f.fileno()).st_size
        if size < DATA_OFFSET:
            f.close()
            raise InputFormatError(f"too short for a riskgate Pwned Passwords index ({size} bytes)", source=src)
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        magic, version, key_bytes, records, lines, issues, table_sum, _ = _HEADER.unpack_from(mm, 0)
        problem = None
        if magic != INDEX_MAGIC:
            problem = "not a riskgate Pwned Passwords index (bad magic)"
        elif version != INDEX_VERSION or key_bytes != KEY_BYTES:
            problem = f"index version {version} with {key_bytes}-byte keys; this riskgate reads version {INDEX_VERSION}"
        else:
            problems, _ = _index_problems(mm, size, records, table_sum)
            problem = "; ".join(problems) or None
        if problem:
            mm.close()
            f.close()
            raise InputFormatError(problem + "; rebuild it with `riskgate credentials build`", source=src)
        self._f, self._mm = f, mm
        self.records, self.source_lines, self.source_issues = records, lines, issues
        return self

    def close(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._f.close()
            self._mm = self._f = None

    def __enter__(self) -> PwnedIndex:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def lookup(self, digest: bytes) -> int | None:
        """The count for a 20-byte SHA-1 digest, or None."""
        mm = self.open()._mm
        bucket = int.from_bytes(digest[:PREFIX_BYTES], "big")
        lo, hi = struct.unpack_from("<QQ", mm, HEADER_BYTES + 8 * bucket)
        want = digest[PREFIX_BYTES:KEY_BYTES]
        while lo < hi:
            mid = (lo + hi) // 2
            at = DATA_OFFSET + mid * RECORD_BYTES
            key = mm[at : at + SUFFIX_BYTES]
            if key < want:
                lo = mid + 1
            elif key > want:
                hi = mid
            else:
                return struct.unpack_from("<I", mm, at + SUFFIX_BYTES)[0] or None
        return None


class PwnedSortedFile:
    """The single Pwned Passwords file sorted by hash, searched in place by binary search over byte offsets.

    Only the few lines the search lands on are read. A malformed line it lands
    on is passed over to the next good line; ``\\r\\n`` endings are fine.
    Opening it refuses a file that is not sorted by hash (the "ordered by count"
    download), whose passwords a search would answer "not found": its first
    :attr:`ORDER_HEAD_BYTES` (all of it, when no larger) are read line by line
    and judged as ``build`` judges them, and lines at :attr:`ORDER_PROBES`
    places spread through the rest are sampled.
    """

    layout = "sorted-file"
    #: Places spread through the file whose lines are checked for hash order on opening.
    ORDER_PROBES = 16
    #: The head of the file whose every line is checked for hash order on opening (about 23,000 lines, 0.1 s): the
    #: whole of a small file, where a few samples could happen to be in order (6 lines ordered by count were
    #: taken), and the most common passwords of the "ordered by count" download, which are in no hash order.
    ORDER_HEAD_BYTES = 1 << 20

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._f = None
        self._size = 0
        self._lock = threading.Lock()

    def open(self) -> PwnedSortedFile:
        if self._f is None:
            _sniff_file(self.path)
            try:
                self._f = open(self.path, "rb")
            except OSError as exc:
                raise InputFormatError(f"cannot open: {exc.strerror}", source=str(self.path)) from exc
            self._size = os.fstat(self._f.fileno()).st_size
            try:
                self._check_order()
            except BaseException:
                self.close()
                raise
        return self

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> PwnedSortedFile:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _first_good_line(self, pos: int, hi: int) -> tuple[int, bytes, int, int] | None:
        """The first well-formed line starting at or after ``pos`` and before ``hi``: (start, hash, count, end)."""
        f = self._f
        if pos > 0:
            f.seek(pos - 1)
            f.readline(_MAX_LINE)  # the rest of the line holding pos-1 (just "\n" when pos starts a line)
        else:
            f.seek(0)
        start = f.tell()
        while start < hi:
            raw = f.readline(_MAX_LINE)
            if not raw:
                return None
            end = f.tell()
            parsed = _parse(raw, 40)
            if not isinstance(parsed, str):
                return start, parsed[0], parsed[1], end
            start = end
        return None

    def _good_lines(self, pos: int, n: int) -> list[tuple[int, bytes, int, int]]:
        """Up to ``n`` consecutive well-formed lines from the first one starting at or after ``pos``."""
        out = []
        while len(out) < n:
            found = self._first_good_line(pos, self._size)
            if found is None:
                break
            out.append(found)
            pos = found[3]
        return out

    def _check_order(self) -> None:
        """Refuse a file whose head (:attr:`ORDER_HEAD_BYTES`: every line, as ``build`` would) or sampled lines (a
        few spread through it) are not in hash order.

        Sampled lines are taken three at a time and their middle hash compared, so one damaged line
        (out of order with both neighbours) does not make a sorted file look unsorted.
        """
        self._check_head_order()
        if self._size <= self.ORDER_HEAD_BYTES:
            return
        windows = []
        first = self._good_lines(0, 12)
        for i in range(len(first) - 2):
            windows.append((first[i][0], sorted(line[1] for line in first[i : i + 3])[1]))
        probes = self.ORDER_PROBES
        for k in range(1, probes + 1):
            got = self._good_lines(k * self._size // (probes + 1), 3)
            if len(got) == 3:
                windows.append((got[0][0], sorted(line[1] for line in got)[1]))
        windows.sort(key=lambda w: w[0])
        for (_, before), (at, after) in zip(windows, windows[1:]):
            if after < before:
                raise InputFormatError(
                    f"is not sorted by hash (lines near byte {at:,} are out of hash order; the 'ordered by count' "
                    "download?): it cannot be searched; use the 'ordered by hash' file or a folder of range files, "
                    "or build an index from one with `riskgate credentials build`",
                    source=str(self.path),
                )

    def _check_head_order(self) -> None:
        """Judge every line of the first :attr:`ORDER_HEAD_BYTES` as ``build`` does (:func:`_in_order`): refused at
        the first line out of hash order that is not one damaged line between lines in order."""
        f = self._f
        f.seek(0)
        src = str(self.path)

        def lines() -> Iterator[tuple[bytes, int, str, int, bytes]]:
            for lineno, raw in enumerate(iter(lambda: f.readline(_MAX_LINE), b""), 1):
                parsed = _parse(raw, 40)
                if not isinstance(parsed, str):
                    yield parsed[0], parsed[1], src, lineno, raw

        refused = ("it cannot be searched (the 'ordered by count' download?), nor an index built from it with "
                   "`riskgate credentials build`")
        # the lines are read ahead of those judged: past the head, the lines judged had the lines after them
        for _ in _in_order(lines(), ScanReport(src, layout=self.layout), lambda *a, **k: None, refuse_unsorted=True,
                           refused=refused):
            if f.tell() > self.ORDER_HEAD_BYTES:
                break

    def lookup(self, digest: bytes) -> int | None:
        """The count for a 20-byte SHA-1 digest (the largest, when the hash is on several lines), or None."""
        want = digest.hex().upper().encode("ascii")
        with self._lock:
            self.open()
            lo, hi = 0, self._size
            # lower bound: good lines starting before lo are below want, those from hi on are not
            while lo < hi:
                mid = (lo + hi) // 2
                found = self._first_good_line(mid, hi)
                if found is None:
                    hi = mid
                    continue
                start, h, count, end = found
                if h < want:
                    lo = end
                else:
                    hi = mid
            best = None
            for _, h, count, _ in self._good_lines_while(lo, want):
                best = count if best is None or count > best else best
        return best or None

    def _good_lines_while(self, pos: int, want: bytes) -> Iterator[tuple[int, bytes, int, int]]:
        """The well-formed lines from ``pos`` on while their hash is ``want``."""
        while True:
            found = self._first_good_line(pos, self._size)
            if found is None or found[1] != want:
                return
            yield found
            pos = found[3]


class PwnedRangeFolder:
    """A folder of range files as the official downloader writes them: ``<PREFIX>.txt`` of ``SUFFIX:COUNT`` lines."""

    layout = "range-folder"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._files: dict[str, Path] | None = None

    def open(self) -> PwnedRangeFolder:
        if self._files is None:
            if not self.path.is_dir():
                raise InputFormatError("is not a folder", source=str(self.path))
            self._files = dict(_range_files(self.path))
            if not self._files:
                raise InputFormatError("folder holds no range files (00000.txt ... FFFFF.txt)", source=str(self.path))
        return self

    def missing(self) -> tuple[int, str | None]:
        """How many of the 1,048,576 range files are missing, and the first missing name (None: complete)."""
        return _missing_ranges(list(self.open()._files))

    @property
    def complete(self) -> bool:
        return self.missing()[0] == 0

    def close(self) -> None:
        self._files = None

    def __enter__(self) -> PwnedRangeFolder:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def lookup(self, digest: bytes) -> int | None:
        """The count for a 20-byte SHA-1 digest (the largest, when on several lines), or None.

        The whole range file is read (about a thousand lines), so a line out of order cannot hide a later one.
        """
        h = digest.hex().upper()
        fp = self.open()._files.get(h[:5])
        if fp is None:
            return None
        want = h[5:].encode("ascii")
        best = 0
        with open(fp, "rb") as f:
            for raw in f:
                parsed = _parse(raw, 35)
                if not isinstance(parsed, str) and parsed[0] == want and parsed[1] > best:
                    best = parsed[1]
        return best or None


PwnedLookup = PwnedIndex | PwnedSortedFile | PwnedRangeFolder


def open_pwned(path: str | os.PathLike, *, allow_partial: bool = False,
               warn: Callable[[str], None] | None = None) -> PwnedLookup:
    """Open Pwned Passwords data in whichever form ``path`` holds (index, sorted file or range folder).

    Damaged data is refused (an index whose structure is inconsistent, a text file
    not sorted by hash, a range folder missing files unless ``allow_partial``;
    then ``warn`` is told) rather than opened to answer "not found" wrongly.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InputFormatError("no such file or folder (Pwned Passwords data)", source=str(path))
    if p.is_dir():
        folder = PwnedRangeFolder(p).open()
        missing, first = folder.missing()
        if missing:
            message = _partial_message(missing, first)
            if not allow_partial:
                raise InputFormatError(message + " (an interrupted download?): passwords in the missing ranges would be "
                                       "answered \"not found\"; finish the download, or pass --allow-partial to use it "
                                       "anyway", source=str(path))
            if warn is not None:
                warn(f"{path}: {message}: passwords in the missing ranges are answered \"not found\"")
        return folder
    head = _sniff_file(p)
    if head == INDEX_MAGIC:
        return PwnedIndex(p).open()
    with open(p, "rb") as f:
        lines = [f.readline(_MAX_LINE) for _ in range(10)]
    if not any(not isinstance(_parse(line, 40), str) for line in lines if line):
        raise InputFormatError(
            "neither a riskgate index nor Pwned Passwords text (no SHA1:COUNT line among the first 10)",
            source=str(path),
        )
    return PwnedSortedFile(p).open()


# -- the shipped list of common passwords -----------------------------------------------------


@lru_cache(maxsize=1)
def common_password_digests() -> frozenset[bytes]:
    """SHA-1 digests of the shipped common passwords (lowercase), read once per process."""
    data = resources.files("risk.data").joinpath(COMMON_LIST_RESOURCE).read_bytes()
    words = gzip.decompress(data).decode("utf-8").split("\n")
    return frozenset(hashlib.sha1(w.encode("utf-8")).digest() for w in words if w)


# -- the checker ----------------------------------------------------------------------------


def _validate_min_count(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"min_count (minimum breach count) must be a whole number >= 1, got {value!r}")
    return value


class CredentialChecker:
    """Checks presented passwords; open it once per process and reuse it.

    ``pwned`` is a path to Pwned Passwords data (any form :func:`open_pwned`
    takes) or an open lookup; ``None`` means none (see :meth:`from_env`).
    ``allow_partial`` accepts a range folder missing some files (see :attr:`warnings`).
    """

    def __init__(self, *, min_count: int = DEFAULT_MIN_COUNT, pwned: str | os.PathLike | PwnedLookup | None = None,
                 use_common_list: bool = True, test_hook: bool = True, allow_partial: bool = False):
        self.min_count = min_count
        self.pwned = pwned
        self.use_common_list = use_common_list
        self.test_hook = test_hook
        self.allow_partial = allow_partial
        #: Warnings from opening the data (an incomplete range folder accepted with ``allow_partial``).
        self.warnings: list[str] = []
        self._lookup: PwnedLookup | None = None
        self._opened = False

    @classmethod
    def from_env(cls, *, min_count: int | None = None, pwned: str | os.PathLike | None = None,
                 **kwargs) -> CredentialChecker:
        """Settings not given come from ``RISKGATE_PWNED_PATH`` and ``RISKGATE_PWNED_MIN_COUNT``."""
        if pwned is None:
            pwned = os.environ.get(PWNED_PATH_ENV) or None
        if min_count is None:
            raw = os.environ.get(MIN_COUNT_ENV)
            if raw:
                try:
                    min_count = int(raw)
                except ValueError:
                    min_count = 0
                if min_count < 1:
                    raise ConfigurationError(f"{MIN_COUNT_ENV} must be a whole number >= 1, got {raw!r}")
            else:
                min_count = DEFAULT_MIN_COUNT
        return cls(min_count=min_count, pwned=pwned, **kwargs)

    def open(self) -> CredentialChecker:
        if not self._opened:
            _validate_min_count(self.min_count)
            if isinstance(self.pwned, (str, os.PathLike)):
                self._lookup = open_pwned(self.pwned, allow_partial=self.allow_partial, warn=self.warnings.append)
            else:
                self._lookup = self.pwned.open() if self.pwned is not None else None
            if self.use_common_list:
                common_password_digests()
            self._opened = True
        return self

    def close(self) -> None:
        if self._lookup is not None and isinstance(self.pwned, (str, os.PathLike)):
            self._lookup.close()
        self._lookup = None
        self._opened = False

    def __enter__(self) -> CredentialChecker:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def sources(self) -> tuple[str, ...]:
        out = []
        if self.pwned is not None:
            out.append(SOURCE_PWNED)
        if self.use_common_list:
            out.append(SOURCE_COMMON)
        return tuple(out)

    def check(self, password: str) -> CheckResult:
        """Check a password as presented. It is hashed at once and not kept anywhere."""
        if not isinstance(password, str):
            raise TypeError("password must be a str")
        if self.test_hook and password.startswith(TEST_PREFIX):
            return CheckResult(True, None, SOURCE_TEST_HOOK)
        encoded = password.encode("utf-8", "surrogatepass")
        lowered = password.lower().encode("utf-8", "surrogatepass")
        return self._check_digests(hashlib.sha1(encoded).digest(), hashlib.sha1(lowered).digest())

    def check_sha1(self, sha1_hex: str) -> CheckResult:
        """Check a password known only by its SHA-1 (40 hex digits). The test hook cannot apply."""
        try:
            digest = bytes.fromhex(sha1_hex)
        except (ValueError, TypeError):
            digest = b""
        if len(digest) != 20:
            raise InputFormatError("expected a SHA-1 as 40 hexadecimal digits")
        return self._check_digests(digest, digest)

    def _check_digests(self, exact: bytes, lowered: bytes) -> CheckResult:
        self.open()
        count = self._lookup.lookup(exact) if self._lookup is not None else None
        if count and count >= self.min_count:
            return CheckResult(True, count, SOURCE_PWNED)
        # the shipped list has no counts: a hit there counts whatever min_count is, even when the
        # Pwned data has seen the password fewer times (use_common_list=False applies min_count strictly)
        if self.use_common_list:
            digests = common_password_digests()
            if lowered in digests or exact in digests:
                return CheckResult(True, None, SOURCE_COMMON)
        if count:
            return CheckResult(False, count, SOURCE_PWNED)
        return CheckResult(False, 0, "+".join(self.sources) or "none")


# -- EventFilter and EventAction --------------------------------------------------------------


@dataclass(frozen=True)
class CredentialsOutcome:
    """What the compromised-credentials configuration makes of one event's check.

    ``applies``: the event type is in the EventFilter (else nothing was checked).
    ``detected``: CompromisedCredentialsDetected. ``block``: the request is
    blocked and the user must reset the password (UserStatus RESET_REQUIRED).
    """

    event_type: str
    applies: bool
    detected: bool
    event_action: str
    block: bool
    count: int | None = None
    source: str | None = None

    @property
    def reset_required(self) -> bool:
        return self.block

    def as_json(self) -> dict:
        return {
            "event_type": self.event_type,
            "applies": self.applies,
            "detected": self.detected,
            "event_action": self.event_action,
            "block": self.block,
            "reset_required": self.reset_required,
            "count": self.count,
            "source": self.source,
        }


def _validate_filter(event_filter: Iterable[str] | str | None) -> tuple[str, ...]:
    if event_filter is None:
        return EVENT_FILTERS
    if isinstance(event_filter, str):
        event_filter = [event_filter]
    values = tuple(str(getattr(v, "value", v)) for v in event_filter)
    for v in values:
        if v not in EVENT_FILTERS:
            raise ConfigurationError(
                f"CompromisedCredentialsRiskConfiguration.EventFilter: {v!r} is not one of {', '.join(EVENT_FILTERS)}"
            )
    return values or EVENT_FILTERS


def _validate_action(event_action: str) -> str:
    value = str(getattr(event_action, "value", event_action))
    if value not in EVENT_ACTIONS:
        raise ConfigurationError(
            f"CompromisedCredentialsRiskConfiguration.Actions.EventAction: {value!r} is not one of "
            f"{', '.join(EVENT_ACTIONS)}"
        )
    return value


def applies(event_type: str, event_filter: Iterable[str] | str | None = None) -> bool:
    """Whether a compromised-credentials check is due for this event type.

    ``event_filter`` None or empty means all three filters (Cognito: absent = all
    events). ForgotPassword and ResendCode present no password: never checked.
    """
    filters = _validate_filter(event_filter)
    if event_type not in EVENT_TYPES:
        raise ConfigurationError(f"event type {event_type!r} is not one of {', '.join(EVENT_TYPES)}")
    wanted = FILTER_FOR_EVENT_TYPE.get(event_type)
    return wanted is not None and wanted in filters


def evaluate(event_type: str, event_filter: Iterable[str] | str | None, event_action: str,
             result: CheckResult | None) -> CredentialsOutcome:
    """Apply EventFilter and EventAction to a check result (``None`` when no check was made)."""
    action = _validate_action(event_action)
    if not applies(event_type, event_filter):
        return CredentialsOutcome(event_type, False, False, action, False)
    if result is None:
        raise ConfigurationError(f"a {event_type} event is in the EventFilter but no check result was given")
    detected = bool(result.compromised)
    return CredentialsOutcome(event_type, True, detected, action, detected and action == "BLOCK",
                              result.count, result.source)


# -- the store: outcomes (never passwords) and the user's status ----------------------------------------

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "risk_credentials_0001_credential_checks",
        (
            """CREATE TABLE IF NOT EXISTS credential_checks (
                 check_id VARCHAR PRIMARY KEY,
                 event_id VARCHAR,
                 username VARCHAR,
                 event_type VARCHAR,
                 checked_at TIMESTAMPTZ,
                 applies BOOLEAN,
                 compromised BOOLEAN,
                 breach_count BIGINT,
                 source VARCHAR,
                 event_action VARCHAR,
                 blocked BOOLEAN,
                 enforced BOOLEAN
               )""",
        ),
    ),
)


def record_check(con: duckdb.DuckDBPyConnection, outcome: CredentialsOutcome, *, event_id: str | None,
                 username: str | None, enforced: bool) -> str:
    """Store one outcome (no password, no hash); return its check id."""
    check_id = uuid.uuid4().hex
    con.execute(
        """INSERT INTO credential_checks (check_id, event_id, username, event_type, checked_at, applies,
               compromised, breach_count, source, event_action, blocked, enforced)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [check_id, event_id, username, outcome.event_type, datetime.now(timezone.utc), outcome.applies,
         outcome.detected, outcome.count, outcome.source, outcome.event_action, outcome.block and enforced,
         enforced],
    )
    return check_id


def checks_for_event(con: duckdb.DuckDBPyConnection, event_id: str) -> list[dict]:
    cur = con.execute(
        """SELECT check_id, event_id, username, event_type, checked_at, applies, compromised, breach_count,
                  source, event_action, blocked, enforced
           FROM credential_checks WHERE event_id = ? ORDER BY checked_at""",
        [event_id],
    )
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def apply_block(con: duckdb.DuckDBPyConnection, username: str, user_pool_id: str | None = None) -> str | None:
    """Set the UserStatus of the user ``username`` of ``user_pool_id`` (None: the pool of events without one) to
    RESET_REQUIRED; return the status before (None: user was not in the table)."""
    from ingest.users import set_user_status
    from risk.config import unpooled_pool

    if not username:
        raise ConfigurationError("apply_block needs a username")
    return set_user_status(con, username, RESET_REQUIRED, user_pool_id, unpooled=unpooled_pool(con))


def check_event(con: duckdb.DuckDBPyConnection, checker: CredentialChecker, *, event_type: str, password: str,
                event_filter: Iterable[str] | str | None = None, event_action: str = "NO_ACTION",
                username: str | None = None, event_id: str | None = None, enforce: bool = True,
                record: bool = True, user_pool_id: str | None = None) -> CredentialsOutcome:
    """Check the password presented with one event, apply the configuration, record the outcome.

    The password is checked only when the event type is in the EventFilter.
    With ``enforce`` (mode ENFORCED) a BLOCK makes the user RESET_REQUIRED; in
    AUDIT (``enforce=False``) the outcome says what would have happened and
    nothing changes.
    """
    if applies(event_type, event_filter):
        outcome = evaluate(event_type, event_filter, event_action, checker.check(password))
    else:
        outcome = evaluate(event_type, event_filter, event_action, None)
    del password
    if outcome.block and enforce:
        if not username:
            raise ConfigurationError("a BLOCK for compromised credentials needs the username to reset")
        apply_block(con, username, user_pool_id)
    if record and con is not None:
        record_check(con, outcome, event_id=event_id, username=username, enforced=enforce)
    return outcome
