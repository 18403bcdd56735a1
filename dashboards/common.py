"""What every page shares: the store for one script run, cached queries, the scope in the sidebar, formatting.

The store is a DuckDB file other processes write to (``riskgate score``,
``riskgate ingest``), and DuckDB lets one process write it or several read it.
So a page never keeps a connection across reruns: the first query of a script
run opens the store read-only (waiting its turn, ``ingest.lease``), and
``end_run`` closes it when the run ends. A page that writes (feedback,
thresholds, configuration, mode) does it inside ``write_store()``, which
closes the run's reading connection, waits until no other session of this
process is reading, opens the store read-write, and clears the query cache.

Query results are cached briefly (``CACHE_TTL_S``) keyed on the function, its
arguments and the store's signature (``store_signature``: a few counts, latest
ids and the file's size and time, read in 2-3 ms when a run opens the
store), so moving between pages does not run the same queries again, while a
page drawn after another process wrote the store (``riskgate score``,
``ingest``, ``feedback``, ...) reads it afresh. Every run opens the store (to
read the signature), even when all its queries are cached.
"""

from __future__ import annotations

import importlib
import os
import re
import string
import threading
import time as _time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import duckdb
import streamlit as st

from ingest.errors import RiskgateError, StoreError
from ingest.store import resolve_db_path

CACHE_TTL_S = 30
DEFAULT_PERIOD_DAYS = 30
#: Seconds a page waits for another session of this process to finish writing, or to stop reading.
GATE_WAIT_S = 60.0


class _ReadWriteGate:
    """Sessions of one Streamlit process: many may read the store at once, one may write (writers first)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    def acquire_read(self, timeout: float) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: not self._writing and not self._writers_waiting, timeout)
            if not ok:
                raise RiskgateError(f"another session of the dashboard has been writing for over {timeout:g} s")
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            self._cond.notify_all()

    def acquire_write(self, timeout: float) -> None:
        with self._cond:
            self._writers_waiting += 1
            try:
                ok = self._cond.wait_for(lambda: not self._writing and self._readers == 0, timeout)
            finally:
                self._writers_waiting -= 1
            if not ok:
                self._cond.notify_all()
                raise RiskgateError(f"other sessions of the dashboard kept reading the store for over {timeout:g} s")
            self._writing = True

    def release_write(self) -> None:
        with self._cond:
            self._writing = False
            self._cond.notify_all()


_gate = _ReadWriteGate()
_local = threading.local()


def db_path() -> str:
    """The store: ``$RISKGATE_DB`` (the dashboard command sets it from ``--db``), else ./riskgate.duckdb."""
    return resolve_db_path(None)


#: The store's signature (``store_signature``): per table, what changes whenever anything is written to it.
#: Events, labels, quarantined rows, feedback, configuration and threshold versions are only ever added (their
#: counts); a rescore replaces assessments with a later ``scored_at``; runs and models are updated in place (a
#: run's end, the active model) but are few rows, so those columns are hashed whole; users are updated in place
#: too (a reload): their count and latest change, and the file's own stamp (``_file_stamp``), which a commit
#: moves. One row per table (first column: which), in no set order. 2-3 ms on 1,000,000 events (one
#: statement of scalar subqueries took twice as long, a cross join of them ten times).
_SIGNATURE_SQL = """
SELECT 1, count(*), NULL FROM events
UNION ALL SELECT 2, count(*), epoch_us(max(scored_at)) FROM assessments
UNION ALL SELECT 3, count(*), max(seq) FROM feedback
UNION ALL SELECT 4, count(*), NULL FROM labels
UNION ALL SELECT 5, count(*), NULL FROM quarantine
UNION ALL SELECT 6, count(*), epoch_us(max(modified_at)) FROM users
UNION ALL SELECT 7, count(*), max(version) FROM risk_config_versions
UNION ALL SELECT 8, count(*), max(version) FROM risk_thresholds
UNION ALL SELECT 9, count(*), bit_xor(hash(row(version, active)::VARCHAR)) FROM models
UNION ALL SELECT 10, count(*), bit_xor(hash(row(run_id, status, finished_at, events_scored)::VARCHAR)) FROM score_runs
UNION ALL SELECT 11, count(*),
          bit_xor(hash(row(run_id, status, finished_at, events_added, quarantined)::VARCHAR)) FROM ingest_runs
"""


def _file_stamp(path: str) -> tuple:
    """Size and modification time (ns) of the store file and of its write-ahead log (None when absent)."""
    if path == ":memory:":
        return ()
    out: list = []
    for p in (path, f"{path}.wal"):
        try:
            s = os.stat(p)
        except FileNotFoundError:
            out += [None, None]
        else:
            out += [s.st_size, s.st_mtime_ns]
    return tuple(out)


def store_signature(con, path: str) -> tuple:
    """What a cached result of the store at ``path`` is keyed on: it differs once anyone wrote the store (see
    ``_SIGNATURE_SQL``), and stays the same while nobody does. ``con`` is open read-only, so no process writes
    while it is read: the signature is that of what ``con`` reads."""
    return (*sorted(con.execute(_SIGNATURE_SQL).fetchall()), *_file_stamp(path))


class _RunStore:
    """The store of one script run: opened read-only on first use (its signature read then), closed by
    ``end_run``."""

    def __init__(self) -> None:
        self.con = None
        self.path: str | None = None
        self.signature: tuple | None = None

    def get(self):
        if self.con is None:
            from risk import store

            path = db_path()
            if path != ":memory:" and not os.path.exists(path):
                raise RiskgateError(f"no store at {path}: ingest events first (riskgate ingest) or pass --db")
            _gate.acquire_read(GATE_WAIT_S)
            try:
                self.con = store.connect(path, read_only=True)
                check_risk_tables(self.con, path)
                self.path, self.signature = path, store_signature(self.con, path)
                _local.last_signature = self.signature
            except BaseException:
                con, self.con = self.con, None
                try:
                    if con is not None:
                        con.close()
                finally:
                    _gate.release_read()
                raise
        return self.con

    def close(self) -> None:
        con, self.con = self.con, None
        self.path = self.signature = None
        if con is not None:
            try:
                con.close()
            finally:
                _gate.release_read()


def check_risk_tables(con, path: str) -> None:
    """Refuse, with what to do, a store whose risk tables were never created: one that only ``riskgate ingest``
    wrote (a read-only open cannot create them; ``riskgate dashboard`` and any read-write command do)."""
    from ingest.store import applied_migrations, has_table
    from risk.store import risk_migrations

    done = set(applied_migrations(con)) if has_table(con, "schema_migrations") else set()
    missing = [m.name for m in risk_migrations() if m.name not in done]
    if missing:
        raise StoreError(
            "the store has no risk tables yet (configuration, thresholds, assessments: "
            f"{len(missing)} of riskgate's schema changes not applied, e.g. a store only `riskgate ingest` wrote), "
            "and the dashboard reads it read-only, so it cannot add them. Open it read-write once, e.g. "
            f"`riskgate models --db {path}`, or start the dashboard with `riskgate dashboard --db {path}`, "
            "which does it",
            source=path)


def _run_store() -> _RunStore:
    rs = getattr(_local, "store", None)
    if rs is None:
        rs = _local.store = _RunStore()
    return rs


def opened() -> _RunStore:
    """This run's store, opened (and its signature read) if it is not yet."""
    rs = _run_store()
    rs.get()
    return rs


def end_run() -> None:
    """Close this run's reading connection (called when a script run ends, and before writing)."""
    rs = getattr(_local, "store", None)
    if rs is not None:
        rs.close()


@contextmanager
def write_store() -> Iterator[Any]:
    """A read-write connection for one action; the cached query results are dropped afterwards."""
    from risk import store

    end_run()
    _gate.acquire_write(GATE_WAIT_S)
    try:
        con = store.connect(db_path())
        try:
            yield con
        finally:
            con.close()
    finally:
        _gate.release_write()
        st.cache_data.clear()
        _snapshot.clear()
        with _prefetch_lock:
            _prefetched.clear()


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False, max_entries=512)
def _cached(db: str, signature: tuple, target: str, args: tuple, kwargs: tuple) -> Any:
    module, _, name = target.partition(":")
    fn = getattr(importlib.import_module(module), name)
    return fn(_run_store().get(), *args, **dict(kwargs))


@st.cache_resource(ttl=CACHE_TTL_S * 10, show_spinner=False, max_entries=2)
def _snapshot(db: str, signature: tuple, since, until):
    from risk import insights

    return insights.tuning_snapshot(_run_store().get(), since=since, until=until)


def tuning_snapshot(since=None, until=None):
    """The prepared tuning history of the period (shared by the sessions; prepared again once the store changed)."""
    rs = opened()
    return _snapshot(rs.path, rs.signature, since, until)


@st.cache_data(ttl=CACHE_TTL_S * 10, show_spinner=False, max_entries=4)
def _curves(db: str, signature: tuple, since, until) -> dict:
    from risk import insights

    return insights.curves_from(_snapshot(db, signature, since, until))


#: Prepare the Tuning page's history and curves in the background once a page is drawn (seconds on a large store).
PREFETCH = True
_prefetch_lock = threading.Lock()
_prefetched: dict = {}
#: At most one background preparation of a period's history this often, however often the store changes (with
#: `riskgate serve` beside it, it changes at every sign-in; the page itself still prepares it when opened)
PREFETCH_EVERY_S = 60.0


def prefetch_tuning(since=None, until=None) -> threading.Thread | None:
    """Start preparing ``tuning_snapshot(since, until)`` and its curves in a background thread, at most once per
    few minutes for one state of the store (the signature the run that calls this read).

    The thread reads the store like a page (its own read-only connection, closed at the end, and its
    signature: the store may have changed since the page); if the Tuning page asks while it works,
    Streamlit's cache makes the page wait for it rather than compute twice.
    """
    if not PREFETCH:
        return None
    key = (db_path(), getattr(_local, "last_signature", None), since, until)
    period = ("any state", db_path(), since, until)  # the period's last prefetch, whatever the store's state
    now = _time.monotonic()
    with _prefetch_lock:
        if now - _prefetched.get(key, float("-inf")) < CACHE_TTL_S * 5:
            return None
        if now - _prefetched.get(period, float("-inf")) < PREFETCH_EVERY_S:
            return None  # a store written all the time (the service beside it): at most one every so often
        for old in [k for k, t in _prefetched.items() if now - t >= max(CACHE_TTL_S * 5, PREFETCH_EVERY_S)]:
            del _prefetched[old]
        _prefetched[key] = _prefetched[period] = now

    def work() -> None:
        try:
            rs = opened()
            _snapshot(rs.path, rs.signature, since, until)
            _curves(rs.path, rs.signature, since, until)  # its first call imports scikit-learn's metrics
            # (about 0.7 s): here, not in the page
        except (RiskgateError, duckdb.Error):
            pass  # nothing to prepare (e.g. nothing assessed): the Tuning page says why when opened
        finally:
            end_run()

    thread = threading.Thread(target=work, name="riskgate-tuning-prefetch", daemon=True)
    thread.start()
    return thread


#: Modules a page imports late and slowly: the Tuning page's curves need scikit-learn's metrics (about 0.7 s to
#: import). The first page a process draws starts importing them in a background thread (``warm_up``).
WARM_UP = ("sklearn.metrics",)
_warm_up_started = False


def warm_up() -> threading.Thread | None:
    """Import ``WARM_UP`` in a background thread, once per process (a page that needs one meanwhile waits for
    Python's import lock instead of importing it again)."""
    global _warm_up_started
    with _prefetch_lock:
        if _warm_up_started:
            return None
        _warm_up_started = True

    def work() -> None:
        for name in WARM_UP:
            try:
                importlib.import_module(name)
            except ImportError:  # the page that needs it says so when it imports it itself
                pass

    thread = threading.Thread(target=work, name="riskgate-warm-up", daemon=True)
    thread.start()
    return thread


def tuning_curves(since=None, until=None) -> dict:
    """ROC and precision-recall curves of the period's snapshot (``risk.insights.curves_from``)."""
    rs = opened()
    return _curves(rs.path, rs.signature, since, until)


def read_store():
    """This run's read-only connection (for a library call that takes a connection and is not cached)."""
    return _run_store().get()


def q(fn: Callable, *args, **kwargs) -> Any:
    """``fn(con, *args, **kwargs)`` on this run's store, cached for ``CACHE_TTL_S`` seconds while the store's
    signature stays the same."""
    rs = opened()
    return _cached(rs.path, rs.signature, f"{fn.__module__}:{fn.__qualname__}", args, tuple(sorted(kwargs.items())))


def show_error(exc: BaseException) -> None:
    st.error(md(exc), icon=":material/error:")  # a message may quote a stored value: shown literally


# -- the scope: period, pool, client --------------------------------------------------------------


def _day(ts: datetime | None) -> date | None:
    return ts.astimezone(timezone.utc).date() if ts is not None else None


def scope_sidebar() -> dict:
    """The period, pool and app client chosen in the sidebar (kept in session state across pages)."""
    from risk import insights

    b = q(insights.store_bounds)
    first, last = _day(b["first"]), _day(b["last"])
    today = datetime.now(timezone.utc).date()
    lo = first or today
    hi = last or today
    if "scope_period" not in st.session_state:
        st.session_state["scope_period"] = (max(lo, hi - timedelta(days=DEFAULT_PERIOD_DAYS - 1)), hi)
    with st.sidebar:
        st.caption(f"store {code(db_path())} · {b['events']:,} events")
        period = st.date_input("Period (UTC days)", key="scope_period", min_value=lo, max_value=max(hi, today),
                               help="First and last day, inclusive.")
        pool = st.selectbox("User pool", ["All pools", *b["pools"]], key="scope_pool")
        client = st.selectbox("App client", ["All clients", *b["clients"]], key="scope_client")
    if isinstance(period, (tuple, list)):
        start = period[0] if len(period) else lo
        end = period[1] if len(period) > 1 else start
    else:
        start = end = period
    since = datetime.combine(start, time(0), tzinfo=timezone.utc)
    until = datetime.combine(end + timedelta(days=1), time(0), tzinfo=timezone.utc)
    return {
        "since": since,
        "until": until,
        "pool": None if pool == "All pools" else pool,
        "client": None if client == "All clients" else client,
    }


def scope() -> dict:
    """The scope chosen in this run's sidebar (``app.py`` draws the sidebar before the page)."""
    return st.session_state.get("_rg_scope") or {"since": None, "until": None, "pool": None, "client": None}


def describe_scope(s: dict) -> str:
    """The scope as Markdown (pool and client ids are data: shown literally)."""
    days = ""
    if s["since"] and s["until"]:
        last = s["until"] - timedelta(days=1)
        days = f"{s['since']:%Y-%m-%d} to {last:%Y-%m-%d}"
    pool = code(s["pool"]) if s["pool"] else "all pools"
    client = code(s["client"]) if s["client"] else "all clients"
    return " · ".join(x for x in (days, pool, client) if x)


# -- stored values in Markdown ----------------------------------------------------------------------
#
# Streamlit renders Markdown (GitHub-flavoured, with KaTeX math, emoji short codes, colour directives, and
# images and links in headers and labels too). Values from the store (usernames, places, devices, paths, file
# names: whatever the events said) must be shown as written, never interpreted: an image would make every
# viewer's browser fetch an address of the sender's choosing. So a stored value goes into Markdown only
# through ``code`` (an inline code span: literal, never auto-linked) or ``md`` (escaped text).

_MD_PUNCTUATION = frozenset(string.punctuation)  # CommonMark: any ASCII punctuation may be backslash-escaped
_LINE_BREAKS = re.compile(r"\r\n|[\r\n\v\f\x85\u2028\u2029]")


def _one_line(value) -> str:
    return _LINE_BREAKS.sub(" ", str(value))


def md(value) -> str:
    """``value`` as Markdown text that shows exactly its characters: every ASCII punctuation character
    (Markdown, HTML, LaTeX ``$``, directives ``:red[...]``, short codes ``:smile:``) backslash-escaped, line
    breaks as spaces. For text the dashboard writes around values; GitHub-flavoured Markdown still turns a bare
    ``www.`` / ``http://`` address or an email address into a link, so stored values go through ``code``."""
    return "".join("\\" + c if c in _MD_PUNCTUATION else c for c in _one_line(value))


def code(value, missing: str = "-") -> str:
    """A stored value as an inline code span, shown literally whatever it holds (backticks included; no
    link, image, math or emoji); ``missing`` (plain text) for None or an empty string."""
    if value is None or value == "":
        return missing
    text = _one_line(value)
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    # CommonMark strips one space from each end when both are spaces: pad so the value's own survive
    pad = " " if text[0] == "`" or text[-1] == "`" or (text[0] == " " and text[-1] == " " and text.strip()) else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def n(x) -> str:
    """A count with thousands separators."""
    return f"{int(x):,}"


def pct(part, whole) -> str:
    return f"{part / whole:.1%}" if whole else "-"
