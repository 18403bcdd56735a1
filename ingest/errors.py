"""One exception family for riskgate (STYLE.md, habit 5).

Messages say what was expected, what was found, and where.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


class RiskgateError(ValueError):
    """Base of every error riskgate raises on purpose; the CLI turns it into a clean message."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None):
        self.source = source
        self.line = line
        where = ""
        if source is not None:
            where = f"{source}:{line}: " if line is not None else f"{source}: "
        super().__init__(where + message)


class InputFormatError(RiskgateError):
    """A whole input cannot be read as the format it was given or detected as."""


class StoreError(RiskgateError):
    """The store cannot be opened, migrated or written."""


class ConfigurationError(RiskgateError):
    """A setting or configuration document is invalid; nothing was changed."""


class GeoIPError(RiskgateError):
    """A GeoIP database is missing, corrupt, or not what it claims to be."""


def malformed_json(msg: str, where: str) -> str:
    """``malformed JSON: <Python's message> at <where>``; some of Python's messages end in "at" already
    ("Unterminated string starting at"), and get no second one."""
    return f"malformed JSON: {msg}{'' if msg.endswith(' at') else ' at'} {where}"


def counted(n: int, noun: str) -> str:
    """``1 event``, ``2 events``, ``1,000 events``: a count and its noun in agreement (messages, the CLI and
    the dashboard)."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def check_output_folder(out: str | os.PathLike, error: type[RiskgateError] = RiskgateError) -> None:
    """Refuse, before anything is read or written, an output path whose folder is missing or not writable
    (the commands that write files call this first, so a typo costs no work and leaves nothing behind)."""
    parent = Path(out).expanduser().resolve().parent
    if not parent.is_dir():
        raise error(f"folder {parent} does not exist", source=str(out))
    if not os.access(parent, os.W_OK):
        raise error(f"folder {parent} is not writable", source=str(out))
    # os.access asks the permission bits, which root passes: a read-only mount, /proc or /sys refuse a file all
    # the same, after the work is done (an export had created the store it was to read); a file is tried
    try:
        with tempfile.TemporaryFile(dir=parent, prefix=".riskgate-probe-"):
            pass
    except OSError as exc:
        raise error(f"folder {parent} is not writable: {exc.strerror}", source=str(out)) from None


def interrupted(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an error it was raised from or while handling, is Ctrl-C: Python's KeyboardInterrupt, or
    DuckDB's report of it. SIGINT during a query makes DuckDB end the query with a plain ``RuntimeError("Query
    interrupted")`` in place of the KeyboardInterrupt; ``con.interrupt()`` with ``duckdb.InterruptException``; one
    that reaches Python code DuckDB calls (a registered Arrow table) as an error naming the KeyboardInterrupt."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, KeyboardInterrupt) or (isinstance(exc, RuntimeError) and str(exc) == "Query interrupted"):
            return True
        duckdb = sys.modules.get("duckdb")  # raised by DuckDB only when DuckDB is loaded: not imported for this
        if duckdb is not None and isinstance(exc, getattr(duckdb, "InterruptException", ())):
            return True
        # a KeyboardInterrupt raised in Python while DuckDB scanned a registered Python object (an Arrow table)
        # comes back as "Invalid Input Error: counting the rows of the object registered as 'x' failed:
        # KeyboardInterrupt: "
        if duckdb is not None and isinstance(exc, duckdb.Error) and "failed: KeyboardInterrupt" in str(exc):
            return True
        exc = exc.__cause__ if exc.__cause__ is not None or exc.__suppress_context__ else exc.__context__
    return False
