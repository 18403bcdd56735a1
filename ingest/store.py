"""The DuckDB store: opening, named migrations, and the tables ingest owns.

SQL for ``events``, ``quarantine``, ``users``, ``labels`` and ``ingest_runs``
lives here and nowhere else (STYLE.md, habit 7). Values are always bound
parameters; identifiers come only from the fixed schema in ``ingest.schema``.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa

from ingest import lease
from ingest.errors import StoreError
from ingest.schema import EVENT_COLUMNS, EVENT_SCHEMA, LABEL_SCHEMA, QUARANTINE_SCHEMA

DEFAULT_DB = "riskgate.duckdb"
#: Set on every connection riskgate opens: no progress bar of DuckDB's own on stdout (ours goes to stderr).
SESSION_SETTINGS = ("SET enable_progress_bar = false", "SET TimeZone = 'UTC'")
DB_ENV = "RISKGATE_DB"

_DUCK_TYPES = {
    pa.string(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.int8(): "TINYINT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
    pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
}


def quote_ident(name: str) -> str:
    """Quote an identifier for DuckDB (the one helper for it)."""
    return '"' + name.replace('"', '""') + '"'


def _duck_type(t: pa.DataType) -> str:
    if t in _DUCK_TYPES:
        return _DUCK_TYPES[t]
    if pa.types.is_list(t):
        return _duck_type(t.value_type) + "[]"
    if pa.types.is_struct(t):
        inner = ", ".join(f"{quote_ident(f.name)} {_duck_type(f.type)}" for f in t)
        return f"STRUCT({inner})"
    raise TypeError(f"no DuckDB type for Arrow type {t}")


def _create_table_sql(name: str, schema: pa.Schema, extra: Sequence[str] = (), uncompressed: Sequence[str] = ()) -> str:
    """``uncompressed``: columns stored as they are (``USING COMPRESSION uncompressed``)."""
    unknown = set(uncompressed) - set(schema.names)
    if unknown:
        raise ValueError(f"no column {sorted(unknown)} in the schema of {name}")
    cols = [f"{quote_ident(f.name)} {_duck_type(f.type)}"
            + (" USING COMPRESSION uncompressed" if f.name in uncompressed else "") for f in schema] + list(extra)
    return f"CREATE TABLE IF NOT EXISTS {quote_ident(name)} (\n  " + ",\n  ".join(cols) + "\n)"


#: Event columns whose values are all different and barely compressible (ids, opaque base64 device data):
#: compressing them took about a sixth of the time of writing the events (1,000,000 events: 1.3 of 8.3 s on
#: one thread) and saved about 46 bytes an event (the file 149 MB instead of 195).
UNCOMPRESSED_EVENT_COLUMNS = ("event_id", "encoded_data")


@dataclass(frozen=True)
class Migration:
    """A named, recorded schema change. Applied once, in order, inside a transaction."""

    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "0001_ingest_tables",
        (
            _create_table_sql(
                "events",
                EVENT_SCHEMA,
                ("ingest_run_id VARCHAR", "ingested_at TIMESTAMPTZ"),
                uncompressed=UNCOMPRESSED_EVENT_COLUMNS,
            ),
            _create_table_sql(
                "quarantine",
                QUARANTINE_SCHEMA,
                ("quarantine_id VARCHAR PRIMARY KEY", "ingest_run_id VARCHAR", "quarantined_at TIMESTAMPTZ"),
            ),
            _create_table_sql("labels", LABEL_SCHEMA),
            """CREATE TABLE IF NOT EXISTS users (
                 username VARCHAR PRIMARY KEY,
                 user_pool_id VARCHAR,
                 user_sub VARCHAR,
                 user_status VARCHAR,
                 enabled BOOLEAN,
                 mfa_settings VARCHAR[],
                 preferred_mfa VARCHAR,
                 email VARCHAR,
                 created_at TIMESTAMPTZ,
                 modified_at TIMESTAMPTZ,
                 attributes VARCHAR
               )""",
            """CREATE TABLE IF NOT EXISTS ingest_runs (
                 run_id VARCHAR PRIMARY KEY,
                 started_at TIMESTAMPTZ,
                 finished_at TIMESTAMPTZ,
                 status VARCHAR,
                 inputs VARCHAR,
                 source_format VARCHAR,
                 rows_read BIGINT,
                 events_added BIGINT,
                 duplicates BIGINT,
                 quarantined BIGINT,
                 reasons VARCHAR
               )""",
        ),
    ),
    # A Cognito username is one user per pool: the users table is keyed by (pool, username). ``pool_key`` is
    # the pool id, or '' for users loaded without one (who belong to the pool events without one belong to:
    # ``ingest.users.users_by_pool_sql``). DuckDB cannot change a primary key in place: the table is rebuilt.
    Migration(
        "0002_users_per_pool",
        (
            """CREATE TABLE users_per_pool (
                 username VARCHAR NOT NULL,
                 user_pool_id VARCHAR,
                 user_sub VARCHAR,
                 user_status VARCHAR,
                 enabled BOOLEAN,
                 mfa_settings VARCHAR[],
                 preferred_mfa VARCHAR,
                 email VARCHAR,
                 created_at TIMESTAMPTZ,
                 modified_at TIMESTAMPTZ,
                 attributes VARCHAR,
                 pool_key VARCHAR NOT NULL,
                 PRIMARY KEY (pool_key, username)
               )""",
            """INSERT INTO users_per_pool
               SELECT username, user_pool_id, user_sub, user_status, enabled, mfa_settings, preferred_mfa, email,
                      created_at, modified_at, attributes, coalesce(user_pool_id, '') FROM users""",
            "DROP TABLE users",
            "ALTER TABLE users_per_pool RENAME TO users",
        ),
    ),
    # Random keys of the store, made on first use (``store_key``): the key of the ids derived from rows that carry
    # a password (``ingest.pipeline._keyed_ids``).
    Migration(
        "0003_store_keys",
        ("CREATE TABLE IF NOT EXISTS store_keys (name VARCHAR PRIMARY KEY, key BLOB NOT NULL)",),
    ),
)


def scratch() -> duckdb.DuckDBPyConnection:
    """An in-memory connection for set-wise work on Arrow batches (UTC, no progress bar), with half the
    threads DuckDB would take (:func:`halve_threads`): it works beside another stage that has the rest
    (ingest's reading thread beside its writer, the service's requests beside its store thread)."""
    con = duckdb.connect(":memory:")
    for stmt in SESSION_SETTINGS:
        con.execute(stmt)
    halve_threads(con)
    return con


def threads(con) -> int:
    """The number of threads ``con``'s DuckDB database runs queries on."""
    return int(con.execute("SELECT current_setting('threads')").fetchall()[0][0])


def halve_threads(con) -> int:
    """Give ``con``'s DuckDB database half its threads (at least one); return how many it had.

    For two stages that run at once, each on its own database (ingest: reading and enriching one batch
    while the one before is written): each then has its share of the cores, instead of twice as many
    threads as cores taking turns (1,000,000 events on 2 cores: 12.1-13.6 s and about 21.5 CPU seconds,
    against 13.8-14.1 s and 24.5-25 with every database on both cores).
    """
    n = threads(con)
    set_threads(con, max(1, n // 2))
    return n


def set_threads(con, n: int) -> None:
    """Run ``con``'s DuckDB database on ``n`` threads."""
    con.execute(f"SET threads = {int(n):d}")


@contextmanager
def halved_threads(con):
    """:func:`halve_threads` for a ``with`` block, which gets the number ``con`` now has; the number it had
    is given back after the block, whatever happens."""
    had = halve_threads(con)
    try:
        yield threads(con)
    finally:
        set_threads(con, had)


def resolve_db_path(db: str | os.PathLike | None = None) -> str:
    """``--db`` wins, then ``RISKGATE_DB``, then ``./riskgate.duckdb``."""
    if db:
        return str(db)
    return os.environ.get(DB_ENV) or DEFAULT_DB


def _family(name: str) -> str:
    """What a migration name has before its number: ``''`` for ingest's ``0001_…``, ``risk_config_`` for
    ``risk_config_0001_…``. A family's migrations change the same tables, in order."""
    m = re.match(r"\D*", name)
    return m.group(0) if m else ""


def _namespace(name: str) -> str:
    """Who owns a migration name: ``''`` (ingest: names begin with their number) or its first word (``risk``)."""
    return "" if name[:1].isdigit() else name.split("_", 1)[0]


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the store's main schema has the table ``name`` (a read-only open cannot create a missing one)."""
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main'",
                            [name]).fetchall()[0][0])


def check_schema(con: duckdb.DuckDBPyConnection, migrations: Iterable[Migration], read_only: bool,
                 source: str | None = None) -> set[str]:
    """The names recorded in the store, after refusing a store this code cannot read safely (:class:`StoreError`):
    one written by a newer riskgate (a migration of a namespace these ``migrations`` own that they do not
    know), and, opened read-only, one with tables in an older shape (a family of migrations applied in part:
    only a read-write open can bring them up to date). Families not applied at all are fine: their tables are
    missing, and a command that reads them says so."""
    migrations = list(migrations)
    try:
        if not read_only:
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMPTZ)"
            )
        elif not has_table(con, "schema_migrations"):
            return set()
        done = {r[0] for r in con.execute("SELECT name FROM schema_migrations").fetchall()}
    except duckdb.Error as exc:  # a damaged file (truncated, say): one clear error, not a traceback
        raise StoreError(f"cannot read the store: {exc}") from exc
    known = {m.name for m in migrations}
    owned = {_namespace(n) for n in known}
    newer = sorted(n for n in done - known if _namespace(n) in owned)
    if newer:
        raise StoreError(f"the store was written by a newer riskgate: it has schema changes this version does not "
                         f"know ({', '.join(newer)}); open it with that version or a later one", source=source)
    if read_only:
        families: dict[str, set[str]] = {}
        for n in known:
            families.setdefault(_family(n), set()).add(n)
        pending = sorted(n for names in families.values() if names & done for n in names - done)
        if pending:
            raise StoreError(f"the store has tables in an older shape ({', '.join(pending)} not applied yet), and "
                             "a read-only command cannot update them: open it once read-write to migrate it, "
                             "e.g. `riskgate models --db PATH`", source=source)
    return done


def migrate(con: duckdb.DuckDBPyConnection, migrations: Iterable[Migration], source: str | None = None) -> list[str]:
    """Apply the migrations not yet recorded (after :func:`check_schema`); return the names applied now."""
    migrations = list(migrations)
    done = check_schema(con, migrations, read_only=False, source=source)
    applied = []
    for m in migrations:
        if m.name in done:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for stmt in m.statements:
                con.execute(stmt)
            con.execute(
                "INSERT INTO schema_migrations VALUES (?, ?)", [m.name, datetime.now(timezone.utc)]
            )
            con.execute("COMMIT")
        except duckdb.Error as exc:
            rollback(con)
            raise StoreError(f"migration {m.name} failed: {exc}") from exc
        applied.append(m.name)
    return applied


def rollback(con) -> bool:
    """Roll back the connection's transaction after an error; False when none was active any more.

    Ctrl-C (a KeyboardInterrupt, or DuckDB's interrupt of the statement) can arrive while ``COMMIT`` runs, after
    the transaction has committed: rolling back then raised "cannot rollback - no transaction is active", which
    took the interrupt's place (an ingest interrupted so exited 1 blaming its input, and did not count the batch
    it had stored). The caller re-raises its own error. False says only that no transaction was left: the COMMIT
    went through, or DuckDB refused it and ended the transaction itself; a caller that must know which reads
    the store (``ingest.pipeline._write_batch``: the run's rows read, written in the batch's transaction)."""
    try:
        con.execute("ROLLBACK")
    except duckdb.TransactionException as exc:
        if "no transaction is active" in str(exc):
            return False
        raise
    return True


class Store:
    """An open store: a DuckDB connection (every method forwarded) that takes turns with other processes.

    ``connect`` waits for this process's turn on the file (``ingest.lease``).
    A long-running writer calls ``yield_if_wanted()`` at points where it has
    nothing in flight (between chunks, between requests): when another
    process waits, the file is closed, the waiting processes take their turn,
    and the file is opened again behind the same object. Registered views
    and cursors taken before a hand-over are gone after it.
    Use as a context manager, or ``close()``, to give the turn back early.
    """

    def __init__(self, path: str, read_only: bool, wait: float, migrations: Sequence[Migration],
                 settings: Sequence[str] = ()):
        self._path = path
        self._settings = tuple(settings)
        self._read_only = read_only
        self._wait = wait
        self._migrations = tuple(migrations)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._turn = None if path == ":memory:" else lease.turn_for(path)
        if self._turn is not None and read_only and not lease.can_lock(path):
            self._turn = None  # a store on read-only media: nobody can write it, so there is nothing to take turns on
        self._open()

    # -- opening and closing ------------------------------------------------------

    def _open(self) -> None:
        turn = self._turn
        if turn is not None:
            with turn._mutex:
                if turn.held and turn.exclusive == self._read_only:
                    raise StoreError(
                        "this process already has the store open "
                        + ("read-write" if turn.exclusive else "read-only")
                        + "; close that connection first",
                        source=self._path,
                    )
                if not turn.held:
                    turn.acquire(exclusive=not self._read_only, wait=self._wait)
                turn.refs += 1
        try:
            self._con = _open_duckdb(self._path, self._read_only, self._wait)
            for stmt in (*SESSION_SETTINGS, *self._settings):
                self._con.execute(stmt)
            if self._read_only:
                check_schema(self._con, self._migrations, read_only=True, source=self._path)
            else:
                migrate(self._con, self._migrations, source=self._path)
        except BaseException:
            self._close_connection()
            raise

    def _close_connection(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            try:
                con.close()
            except duckdb.Error:
                pass
        turn = self._turn
        if turn is not None:
            with turn._mutex:
                turn.refs -= 1
                if turn.refs <= 0:
                    turn.refs = 0
                    turn.release()

    def close(self) -> None:
        if self._con is not None:
            self._close_connection()

    @property
    def closed(self) -> bool:
        return self._con is None

    def reopen(self) -> None:
        """Open the file again when it is closed (a hand-over whose taking back failed), waiting for the turn as
        ``connect`` does; a no-op when it is open."""
        if self._con is None:
            self._open()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __getattr__(self, name: str):
        con = self.__dict__.get("_con")
        if con is None:
            raise StoreError("the store connection is closed", source=self.__dict__.get("_path"))
        return getattr(con, name)

    def __repr__(self) -> str:
        state = "closed" if self._con is None else ("read-only" if self._read_only else "read-write")
        return f"<riskgate Store {self._path} {state}>"

    # -- taking turns ---------------------------------------------------------------

    @property
    def path(self) -> str:
        return self._path

    def wanted(self) -> bool:
        """Whether another process waits for this store file."""
        return self._turn is not None and self._con is not None and self._turn.wanted()

    def held_for(self) -> float:
        """Seconds since this process took its current turn."""
        return 0.0 if self._turn is None else time.monotonic() - self._turn.since

    def handover(self) -> bool:
        """Close the file, let the processes waiting now have their turn, open it again.

        Returns False (and does nothing) when other connections of this process
        share the turn: they would keep the file open.
        """
        turn = self._turn
        if turn is None or self._con is None:
            return False
        with turn._mutex:
            if turn.refs != 1:
                return False
            self._close_connection()
            turn.let_waiters_in(self._wait)
            self._open()
        return True

    def yield_if_wanted(self, min_hold: float = 0.0) -> bool:
        """Hand the store over if another process waits and this one has held it ``min_hold`` seconds."""
        if self.held_for() >= min_hold and self.wanted():
            return self.handover()
        return False


def wants_turn(con) -> bool:
    """Whether another process waits for the store (False for plain DuckDB connections)."""
    wanted = getattr(con, "wanted", None)
    return bool(wanted()) if wanted is not None else False


def yield_turn(con) -> bool:
    """At a point with nothing in flight: let a process waiting for the store have its turn.

    A no-op for plain DuckDB connections (in-memory work, tests).
    """
    hand_over = getattr(con, "yield_if_wanted", None)
    return bool(hand_over()) if hand_over is not None else False


def _open_duckdb(path: str, read_only: bool, wait: float) -> duckdb.DuckDBPyConnection:
    """duckdb.connect, retrying briefly while a process that gave up its turn still closes the file."""
    deadline = time.monotonic() + wait
    delay = 0.005
    while True:
        try:
            return duckdb.connect(path, read_only=read_only)
        except duckdb.Error as exc:
            # DuckDB's lock conflict ("Could not set lock on file ...: Conflicting lock is held ..."); not any
            # message with "lock" in it (a damaged file's "checksum ... in block at ..." waited out the deadline)
            message = str(exc).lower()
            busy = "could not set lock" in message or "conflicting lock" in message
            retry = busy and time.monotonic() < deadline
            if not retry:
                raise StoreError(f"cannot open the store: {exc}", source=path) from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def writable(path: str) -> bool:
    """Whether the store file at ``path`` can be written: the file itself and its folder (DuckDB's WAL and the
    lease's files are made beside it). False on a read-only folder, file or mount, for root too."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    return os.access(folder, os.W_OK) and (not os.path.exists(path) or os.access(path, os.W_OK))


def store_key(con: duckdb.DuckDBPyConnection, name: str) -> bytes:
    """The store's random 32-byte key ``name``, made on first use (by the first process to use it: another's
    insert at the same moment wins, and both then read the same key). It never leaves the store."""
    rows = con.execute("SELECT key FROM store_keys WHERE name = ?", [name]).fetchall()
    if not rows:
        con.execute("INSERT INTO store_keys VALUES (?, ?) ON CONFLICT DO NOTHING", [name, os.urandom(32)])
        rows = con.execute("SELECT key FROM store_keys WHERE name = ?", [name]).fetchall()
    return bytes(rows[0][0])


def connect(
    db: str | os.PathLike | None = None,
    *,
    read_only: bool | None = False,
    wait: float | None = None,
    migrations: Sequence[Migration] | None = None,
    settings: Sequence[str] = (),
) -> Store:
    """Open (creating and migrating on first use) the store at ``db``, waiting for this process's turn.

    ``read_only=None`` is for commands that only read: read-only when the store exists and cannot be written
    (:func:`writable`: a store on read-only media is still readable), else read-write as usual (created when
    missing, migrated when older). ``":memory:"`` gives a throw-away store for tests. ``wait`` (default
    ``$RISKGATE_STORE_WAIT``, else 300 s) bounds the wait while another
    process holds the file. ``settings``: constant ``SET`` statements run
    each time the file is opened (again after a hand-over).
    """
    path = resolve_db_path(db)
    if path != ":memory:":
        parent = Path(path).expanduser().resolve().parent
        if not parent.exists():
            raise StoreError(f"folder {parent} does not exist", source=path)
    if read_only is None:
        read_only = path != ":memory:" and os.path.exists(path) and not writable(path)
    return Store(path, read_only, lease.default_wait() if wait is None else wait,
                 MIGRATIONS if migrations is None else migrations, settings)


def applied_migrations(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute("SELECT name FROM schema_migrations ORDER BY name").fetchall()]


# -- writing events ---------------------------------------------------------

_EVENT_COLS_SQL = ", ".join(quote_ident(c) for c in EVENT_COLUMNS)


def insert_events(con: duckdb.DuckDBPyConnection, table: pa.Table, run_id: str, known_new: bool = False) -> int:
    """Insert the rows of ``table`` (EVENT_SCHEMA) whose event_id is new; return how many.

    Of rows repeating an event_id inside ``table``, the one with the lowest source_line wins.
    ``known_new``: the caller has checked that no id is stored or repeated (no probe).
    Runs in the caller's transaction.
    """
    if table.num_rows == 0:
        return 0
    con.register("_rg_new_events", table)
    try:
        return insert_events_from(con, "SELECT * FROM _rg_new_events", {}, table.column("event_id"), run_id,
                                  known_new=known_new)
    finally:
        con.unregister("_rg_new_events")


def insert_events_from(con: duckdb.DuckDBPyConnection, select: str, params: dict, event_ids, run_id: str,
                       known_new: bool = False) -> int:
    """Insert the rows of the query ``select`` (the EVENT_COLUMNS at least; named parameters ``params``) whose
    event_id is new; return how many. ``event_ids``: the query's event ids (an Arrow array), for the probes.

    The rows go from the query into the table without coming out as Arrow on the way (ingest's final
    enrichment runs inside this statement). Otherwise as :func:`insert_events`.
    """
    import pyarrow.compute as pc

    n = len(event_ids)
    if n == 0:
        return 0
    # keep the first of repeated ids (sorting only when the batch has repeats, which is rare)
    dedup = not known_new and pc.count_distinct(event_ids).as_py() < n
    source = (f"(SELECT DISTINCT ON (event_id) * FROM ({select}) ORDER BY event_id, source_line)"
              if dedup else f"({select})")
    stored = 0
    if not known_new:
        # Usually no id of the batch is stored yet: one probe of the stored ids against the batch's
        # (a hash of the batch's ids) says so, and the rows go in without an anti join against every
        # stored id (which hashed the whole events.event_id column on each batch).
        ids = event_ids.combine_chunks() if isinstance(event_ids, pa.ChunkedArray) else event_ids
        con.register("_rg_new_event_ids", pa.table({"event_id": ids}))
        try:
            stored = con.execute(
                "SELECT count(*) FROM events WHERE event_id IN (SELECT event_id FROM _rg_new_event_ids)"
            ).fetchall()[0][0]
        finally:
            con.unregister("_rg_new_event_ids")
    new_only = "WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = n.event_id)" if stored else ""
    res = con.execute(
        f"""INSERT INTO events ({_EVENT_COLS_SQL}, ingest_run_id, ingested_at)
            SELECT {", ".join("n." + quote_ident(c) for c in EVENT_COLUMNS)}, $rg_run_id, $rg_ingested_at
            FROM {source} n
            {new_only}""",
        {**params, "rg_run_id": run_id, "rg_ingested_at": datetime.now(timezone.utc)},
    ).fetchall()
    return int(res[0][0]) if res else 0


def rows_where_in(con: duckdb.DuckDBPyConnection, select: str, column: str, values: Sequence[str],
                  params: Sequence = ()) -> list[tuple]:
    """The rows of ``select`` (a ``SELECT ... FROM ...`` without WHERE, its own ``?`` bound to ``params``) whose
    ``column`` is one of ``values``.

    A few values (the service) are bound parameters: no registered table to
    plan around. Many go through a registered Arrow table.
    """
    values = list(dict.fromkeys(values))
    if not values:
        return []
    if len(values) <= 64:
        return con.execute(f"{select} WHERE {column} IN ({', '.join('?' * len(values))})",
                           [*params, *values]).fetchall()
    con.register("_rg_rows_where_in", pa.table({"v": pa.array(values, pa.string())}))
    try:
        return con.execute(f"{select} WHERE {column} IN (SELECT v FROM _rg_rows_where_in)", list(params)).fetchall()
    finally:
        con.unregister("_rg_rows_where_in")


def existing_event_ids(con: duckdb.DuckDBPyConnection, event_ids: Sequence[str]) -> set[str]:
    """Which of ``event_ids`` are stored already."""
    return {r[0] for r in rows_where_in(con, "SELECT event_id FROM events", "event_id", event_ids)}


def event_owner(con: duckdb.DuckDBPyConnection, event_id: str) -> tuple[str | None, str | None] | None:
    """(username, user_pool_id) of a stored event (None when there is no such event)."""
    rows = con.execute("SELECT username, user_pool_id FROM events WHERE event_id = ? LIMIT 1", [event_id]).fetchall()
    return rows[0] if rows else None


def insert_quarantine(con: duckdb.DuckDBPyConnection, table: pa.Table, run_id: str) -> int:
    """Record quarantined rows (QUARANTINE_SCHEMA + quarantine_id); a row seen before is not repeated."""
    if table.num_rows == 0:
        return 0
    con.register("_rg_new_quarantine", table)
    try:
        res = con.execute(
            """INSERT INTO quarantine (source_format, source_file, source_line, reason, raw,
                                       quarantine_id, ingest_run_id, quarantined_at)
               SELECT q.source_format, q.source_file, q.source_line, q.reason, q.raw,
                      q.quarantine_id, ?, ?
               FROM (SELECT DISTINCT ON (quarantine_id) * FROM _rg_new_quarantine) q
               WHERE NOT EXISTS (SELECT 1 FROM quarantine o WHERE o.quarantine_id = q.quarantine_id)""",
            [run_id, datetime.now(timezone.utc)],
        ).fetchall()
    finally:
        con.unregister("_rg_new_quarantine")
    return int(res[0][0]) if res else 0


def insert_labels(con: duckdb.DuckDBPyConnection, table: pa.Table, *, added_by_run: str | None = None,
                  source_file: str | None = None) -> int:
    """Add labels (LABEL_SCHEMA) not already present for (event_id, label, source).

    ``added_by_run`` (ingest, in the transaction that wrote the events): only the labels of events that run
    added from ``source_file``. When ``table`` also has a ``source_line`` column (the input row each label
    came with), only the labels of the row that became the event: none from a quarantined row, a duplicate of
    a stored event, or a later row repeating an event id (whatever the batch size).
    """
    if table is None or table.num_rows == 0:
        return 0
    added = ""
    params: dict = {}
    if added_by_run is not None:
        same_row = " AND e.source_line = n.source_line" if "source_line" in table.column_names else ""
        added = f"""AND EXISTS (SELECT 1 FROM events e WHERE e.event_id = n.event_id
                                   AND e.ingest_run_id = $run AND e.source_file = $file{same_row})"""
        params = {"run": added_by_run, "file": source_file}
    con.register("_rg_new_labels", table)
    try:
        res = con.execute(
            f"""INSERT INTO labels
               SELECT DISTINCT n.event_id, n.label, n.value, n.source FROM _rg_new_labels n
               WHERE NOT EXISTS (SELECT 1 FROM labels l WHERE l.event_id = n.event_id
                                 AND l.label = n.label AND l.source IS NOT DISTINCT FROM n.source)
               {added}""", params
        ).fetchall()
    finally:
        con.unregister("_rg_new_labels")
    return int(res[0][0]) if res else 0


# -- ingest runs --------------------------------------------------------------


def start_run(con: duckdb.DuckDBPyConnection, run_id: str, inputs: Sequence[str], source_format: str) -> None:
    con.execute(
        "INSERT INTO ingest_runs (run_id, started_at, status, inputs, source_format) VALUES (?, ?, 'running', ?, ?)",
        [run_id, datetime.now(timezone.utc), json.dumps(list(inputs)), source_format],
    )


def mark_interrupted_runs(con: duckdb.DuckDBPyConnection) -> int:
    """Runs still 'running' while we hold the store's single writer lock were killed: say so."""
    res = con.execute(
        "UPDATE ingest_runs SET status = 'interrupted' WHERE status = 'running'"
    ).fetchall()
    return int(res[0][0]) if res else 0


def finish_run(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    *,
    status: str,
    rows_read: int,
    events_added: int,
    duplicates: int,
    quarantined: int,
    reasons: dict[str, int],
) -> None:
    con.execute(
        """UPDATE ingest_runs SET finished_at = ?, status = ?, rows_read = ?, events_added = ?,
               duplicates = ?, quarantined = ?, reasons = ? WHERE run_id = ?""",
        [
            datetime.now(timezone.utc),
            status,
            rows_read,
            events_added,
            duplicates,
            quarantined,
            json.dumps(reasons),
            run_id,
        ],
    )


def recent_runs(con: duckdb.DuckDBPyConnection, limit: int = 20) -> list[dict]:
    cur = con.execute(
        """SELECT run_id, started_at, finished_at, status, inputs, source_format, rows_read,
                  events_added, duplicates, quarantined, reasons
           FROM ingest_runs ORDER BY started_at DESC LIMIT ?""",
        [limit],
    )
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


# -- reading ----------------------------------------------------------------


def count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    if table not in {"events", "quarantine", "users", "labels", "ingest_runs"}:
        raise ValueError(f"unknown table {table!r}")
    return int(con.execute(f"SELECT count(*) FROM {quote_ident(table)}").fetchall()[0][0])


def users_counted(pool: str, prefix: str = "") -> str:
    """SQL counting the users of events: usernames in their pool, events without a pool id in the pool bound at
    ``pool`` (a parameter, ``?`` or ``$name``); ``prefix`` qualifies the columns (``e.``). One spelling for
    ``riskgate summary`` and the dashboard, which must give the same number."""
    return (f"count(DISTINCT (coalesce({prefix}user_pool_id, CAST({pool} AS VARCHAR)), {prefix}username)) "
            f"FILTER (WHERE {prefix}username IS NOT NULL)")


def summary(con: duckdb.DuckDBPyConnection, unpooled: str | None = None) -> dict:
    """What is in the store: counts, period, and the main breakdowns (for `make demo` and `riskgate summary`).
    Users are usernames in their pool, events without a pool id in ``unpooled`` (``risk.config.unpooled_pool``)."""
    first, last, users = con.execute(
        f"SELECT min(creation_date), max(creation_date), {users_counted('?')} FROM events", [unpooled]
    ).fetchall()[0]

    def pairs(sql: str, params: Sequence = ()) -> list[tuple]:
        return [tuple(r) for r in con.execute(sql, list(params)).fetchall()]

    return {
        "events": count(con, "events"),
        "quarantined": count(con, "quarantine"),
        "users_in_events": int(users or 0),
        "users_loaded": count(con, "users"),
        "labels": count(con, "labels"),
        "first_event": first,
        "last_event": last,
        "by_event_type": pairs(
            "SELECT event_type, event_response, count(*) FROM events GROUP BY ALL ORDER BY 1, 2"
        ),
        "by_source_format": pairs("SELECT source_format, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC"),
        "top_countries": pairs(
            "SELECT coalesce(country_iso, '??'), count(*) FROM events GROUP BY 1 ORDER BY 2 DESC LIMIT ?", [8]
        ),
        "top_networks": pairs(
            """SELECT coalesce('AS' || asn::VARCHAR || ' ' || coalesce(as_org, ''), 'unknown'), count(*)
               FROM events GROUP BY 1 ORDER BY 2 DESC LIMIT ?""",
            [8],
        ),
        "top_devices": pairs("SELECT device_name, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC LIMIT ?", [8]),
        "with_context_data": int(
            con.execute("SELECT count(*) FROM events WHERE has_context_data").fetchall()[0][0]
        ),
        "geo_resolved": int(con.execute("SELECT count(*) FROM events WHERE country_iso IS NOT NULL").fetchall()[0][0]),
        "labels_by_value": pairs(
            "SELECT label, value, count(*) FROM labels GROUP BY ALL ORDER BY 1, 3 DESC"
        ),
        "quarantine_reasons": pairs(
            "SELECT reason, count(*) FROM quarantine GROUP BY 1 ORDER BY 2 DESC LIMIT ?", [8]
        ),
    }
