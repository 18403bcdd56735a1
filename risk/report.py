"""Reading assessments out: export for SIEMs and evaluation, and the run summary ``make demo`` prints.

Exports stream from DuckDB in Arrow batches (bounded memory) into CSV,
Parquet or JSON lines; reasons are a list of {code, value, contribution}
(a JSON text in CSV); times are ISO 8601 text in UTC in CSV and JSON lines.
"""

from __future__ import annotations

import os
import stat
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime

import duckdb

from ingest.errors import RiskgateError, check_output_folder
from ingest.outputs import PARTIAL_SUFFIX, PartialOutputs
from risk.decide import CREDENTIALS_BLOCK_REASON, OWN_MFA_REASON
from risk.feedback import ATTACK_TYPES_SQL, LABELS_IN_FORCE_SQL
from risk.levels import current_thresholds
from risk.score import NO_LEVEL_WORDS, PERIOD_SQL, period_params

EXPORT_FORMATS = ("csv", "parquet", "jsonl")

_EXPORT_SELECT = f"""
SELECT e.event_id, e.username, e.user_pool_id, e.client_id, e.event_type, e.event_response,
       e.creation_date AS time, e.client_ip AS ip_address, e.country_iso AS country, e.city,
       e.asn, e.as_org, e.device_name,
       a.score, a.risk_level AS level, a.risk_decision AS decision, a.event_action AS action, a.outcome,
       a.mode, a.enforced, a.reasons, a.model_version, a.config_version, a.thresholds_version, a.scored_at
FROM events e
JOIN assessments a ON a.event_id = e.event_id
WHERE {PERIOD_SQL}
ORDER BY e.creation_date, e.event_id
"""


#: Times in text exports as ISO 8601 / RFC 3339 in UTC, as ``riskgate events`` writes them
#: (``2026-03-01T08:15:02.120000+00:00``): DuckDB's own text (``2026-03-01 08:15:02.12+00``) is not read as a time by
#: strict parsers, e.g. Elasticsearch's default date detection. Parquet keeps the typed timestamps.
_ISO_TIMES = ", ".join(f"strftime(timezone('UTC', {c}), '%Y-%m-%dT%H:%M:%S.%f+00:00') AS {c}" for c in ("time", "scored_at"))


#: The text columns of a CSV export, a cell of which a spreadsheet would run as a formula when it starts with
#: ``=``, ``+``, ``-``, ``@`` (after blanks too), a tab, a carriage return or a line feed (OWASP's "CSV
#: injection"): such a cell gets a leading ``'``, which spreadsheets show as text. A username is whatever was typed
#: at a sign-in form, and the analyst who opens the export in a spreadsheet is the target. JSON lines and Parquet
#: keep every value as it is.
_CSV_TEXT_COLUMNS = ("event_id", "username", "user_pool_id", "client_id", "event_type", "event_response",
                     "ip_address", "country", "city", "as_org", "device_name", "level", "decision", "action",
                     "outcome", "mode")
#: a cell a spreadsheet may run: = + - @ (also full-width, which input methods and some spreadsheets turn into them)
#: after any blanks, or a tab, carriage return or line feed first
_CSV_FORMULA = "^(?:[\\t\\r\\n]|\\s*[-=+@\uff0b\uff0d\uff1d\uff20])"
_CSV_TEXT = ", ".join(f"CASE WHEN regexp_matches({c}, '{_CSV_FORMULA}') THEN chr(39) || {c} ELSE {c} END AS {c}"
                      for c in _CSV_TEXT_COLUMNS)


#: The files of a store besides the store file itself (by suffix): DuckDB's write-ahead log and temporary folder,
#: and the lock files of ``ingest.lease``. An export onto any of them would destroy or corrupt the store.
_STORE_FILES = {"": "the store this command reads", ".wal": "the store's write-ahead log",
                ".tmp": "the store's temporary folder", ".lock": "the store's lock file",
                ".want": "the store's lock file", ".serve": "the store's lock file"}


@dataclass(frozen=True)
class ExportTarget:
    """Where an export goes: ``path`` is the file written (the target of ``--out`` when that is a symbolic link);
    ``in_place`` when it is an existing FIFO or character device (``/dev/stdout``), written directly rather than
    through a temporary file renamed over it."""

    path: str
    in_place: bool

    @property
    def partial(self) -> str | None:
        """The temporary file the export is written to first (None when written in place)."""
        return None if self.in_place else self.path + PARTIAL_SUFFIX


def _store_files(stores) -> list[tuple[str, str]]:
    """(file name, what it is) of every store in ``stores`` and the files beside it, as given and resolved (the
    lease and DuckDB 2 name them after the real file; a path as given may be a symbolic link, and files left
    beside it by older versions are refused too)."""
    out = []
    for store in stores:
        if store is None or os.fspath(store) in ("", ":memory:"):
            continue
        for base in dict.fromkeys((os.fspath(store), os.path.realpath(store))):
            out.extend((base + suffix, what) for suffix, what in _STORE_FILES.items())
    return out


def _clash(path: str, stores) -> str | None:
    """What of a store ``path`` is (the file or one of its side files, also through symbolic or hard links), or None."""
    real = os.path.realpath(path)
    for name, what in _store_files(stores):
        try:
            if os.path.realpath(name) == real or (os.path.exists(path) and os.path.samefile(path, name)):
                return f"{what} ({name})"
        except OSError:  # the side file does not exist: only its name can clash
            continue
    return None


def export_target(out: str | os.PathLike, stores=()) -> ExportTarget:
    """Check ``--out`` before anything is read, and say how the export is written (:class:`ExportTarget`).

    Refused with a RiskgateError naming it: an empty name or one without a file part (``exports/``), a folder, a
    missing or unwritable folder, a socket or block device, and the store being exported (any of ``stores``, the
    paths of the stores read) or a file beside it (``.wal``, ``.lock``, ``.want``, ``.serve``), also through a
    symbolic or hard link, and a name whose temporary file (``<out>.partial``) would be one of those. A symbolic
    link is followed: its target is written (atomically) and the link stays. An existing FIFO or character device
    is written in place: no temporary file, no rename.
    """
    text = os.fsdecode(out)
    if text == "":
        raise RiskgateError("--out is empty: it must name the file to write")
    seps = (os.sep, os.altsep) if os.altsep else (os.sep,)
    if text.endswith(seps) or os.path.basename(text) in (".", ".."):
        if os.path.isdir(text):
            raise RiskgateError("is a folder; --out names the file to write", source=text)
        raise RiskgateError("names no file (it ends in a folder); --out names the file to write", source=text)
    try:
        st = os.stat(text)  # following symbolic links
    except FileNotFoundError:
        st = None  # a new file (or a symbolic link to one)
    except OSError as exc:  # a loop of symbolic links, a part of the path that is a file, no permission
        raise RiskgateError(f"cannot be written: {exc.strerror}", source=text) from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise RiskgateError("is a folder; --out names the file to write", source=text)
    if st is not None and not stat.S_ISREG(st.st_mode):
        if not (stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode)):
            kind = "a socket" if stat.S_ISSOCK(st.st_mode) else "a block device" if stat.S_ISBLK(st.st_mode) else \
                "not a regular file"
            raise RiskgateError(f"is {kind}; --out names a file, a FIFO or a character device", source=text)
        if not os.access(text, os.W_OK):
            raise RiskgateError("is not writable", source=text)
        target = ExportTarget(text, in_place=True)
    else:
        # a symbolic link (to an existing file or not): its target is written, atomically, and the link stays
        path = os.path.realpath(text)
        check_output_folder(path if os.path.islink(text) else text)  # the temporary file is made beside it
        target = ExportTarget(path, in_place=False)
    stores = [stores] if isinstance(stores, (str, os.PathLike)) else list(stores)
    clash = _clash(target.path, stores)
    if clash:
        raise RiskgateError(f"is {clash}: writing the export there would destroy it; --out names another file",
                            source=text)
    clash = target.partial and _clash(target.partial, stores)
    if clash:
        raise RiskgateError(f"the export is written to {target.partial} first, which is {clash}: that would destroy "
                            "it; --out names another file", source=text)
    return target


def _store_paths(con) -> list[str]:
    """The files of the databases ``con`` reads: a riskgate Store's path (no query), else DuckDB's catalogue."""
    path = getattr(con, "path", None)
    if isinstance(path, str):
        return [path]
    return [r[0] for r in con.execute("SELECT path FROM duckdb_databases() WHERE path IS NOT NULL").fetchall()]


def _write_batches(reader, fmt: str, sink) -> int:
    """Write the batches of ``reader`` to ``sink`` (a file name, or a binary file object) as ``fmt``; the rows
    written."""
    n = 0
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetWriter(sink, reader.schema) as w:
            for b in reader:
                w.write_batch(b)
                n += b.num_rows
    elif fmt == "csv":
        import pyarrow.csv as pcsv

        with pcsv.CSVWriter(sink, reader.schema) as w:
            for b in reader:
                w.write_batch(b)
                n += b.num_rows
    else:
        with open(sink, "wb") if isinstance(sink, str) else nullcontext(sink) as fh:
            for b in reader:
                col = b.column(0).to_pylist()
                if col:
                    fh.write(("\n".join(col) + "\n").encode("utf-8"))
                n += len(col)
    return n


def check_export_format(fmt: str) -> str:
    """``fmt`` when it is one of :data:`EXPORT_FORMATS`; else a RiskgateError naming ``--format`` and the choices."""
    if fmt not in EXPORT_FORMATS:
        raise RiskgateError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    return fmt


def export_assessments(
    con: duckdb.DuckDBPyConnection,
    out: str | os.PathLike,
    fmt: str = "csv",
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    batch_rows: int = 100_000,
) -> int:
    """Write events joined with their assessments to ``out``; return the number of rows written.

    ``out`` is checked first (:func:`export_target`: never the store itself or a file beside it). A file appears
    only complete (written to ``<out>.partial``, then renamed; the target of a symbolic link); an existing FIFO
    or character device is written directly."""
    check_export_format(fmt)
    target = export_target(out, _store_paths(con))
    params = period_params(since, until)
    if fmt == "csv":
        sql = (f"SELECT * REPLACE (to_json(reasons)::VARCHAR AS reasons, {_ISO_TIMES}, {_CSV_TEXT}) "
               f"FROM ({_EXPORT_SELECT})")
    elif fmt == "jsonl":
        sql = f"SELECT to_json(x)::VARCHAR AS line FROM (SELECT * REPLACE ({_ISO_TIMES}) FROM ({_EXPORT_SELECT})) x"
    else:
        sql = _EXPORT_SELECT
    reader = con.sql(sql, params=params).to_arrow_reader(batch_rows)
    try:
        if target.in_place:
            with open(target.path, "wb") as fh:  # a FIFO: waits for its reader, as a shell's redirection does
                n = _write_batches(reader, fmt, fh)
        else:
            with PartialOutputs() as outputs:  # target.partial, renamed to target.path once written
                n = _write_batches(reader, fmt, outputs.path(target.path))
                outputs.commit()
    except OSError as exc:
        if exc.errno is None:  # not the system's: an error of the query, which Arrow's stream reports as OSError
            raise
        # a full disk, a reader of the FIFO that went away (EPIPE)
        raise RiskgateError(f"cannot write the export: {exc.strerror}", source=os.fsdecode(out)) from exc
    return n


#: an assessment's level as ``report`` counts it, in ``score``'s words: mode OFF is "not evaluated" (no risk
#: evaluation), else no level is "no risk" (below the Low threshold, a skipped or blocked range)
_NOT_EVALUATED, _NO_RISK = NO_LEVEL_WORDS["risk_decision"], NO_LEVEL_WORDS["risk_level"]
_LEVEL_SQL = f"CASE WHEN mode = 'OFF' THEN '{_NOT_EVALUATED}' ELSE coalesce(risk_level, '{_NO_RISK}') END"

_ASSESSED_SQL = """
WITH t AS ({attacks})
SELECT x.*, e.latitude, e.longitude, e.ip_prefix, e.browser_family, e.os_family, e.has_context_data,
       t.attack_type
FROM ({export}) x
JOIN events e ON e.event_id = x.event_id
LEFT JOIN t ON t.event_id = x.event_id
ORDER BY x.time, x.event_id
"""


def assessed_events(
    con: duckdb.DuckDBPyConnection, *, since: datetime | None = None, until: datetime | None = None
):
    """The export's columns plus latitude, longitude, IP prefix, browser, OS, context-data flag and the
    data set's attack type (None for sign-ins not labelled as attacks), as one Arrow table: for
    notebooks and plots (the whole period in memory: choose ``since`` / ``until`` on a big store)."""
    sql = _ASSESSED_SQL.format(attacks=ATTACK_TYPES_SQL,
                               export=_EXPORT_SELECT.replace("ORDER BY e.creation_date, e.event_id", ""))
    return con.sql(sql, params=period_params(since, until)).to_arrow_table()


#: A level whose action asks for MFA (MFA_IF_CONFIGURED, MFA_REQUIRED).
_MFA_ACTION = "(a.risk_level IS NOT NULL AND coalesce(a.event_action IN ('MFA_IF_CONFIGURED', 'MFA_REQUIRED'), false))"
#: The user was challenged by MFA of their own (the decision says so: risk.decide.OWN_MFA_REASON, a parameter):
#: challenged whatever the level, so the challenge is not the risk's doing.
_OWN_MFA = "coalesce(list_contains(a.decision_reasons, ?), false)"
#: Blocked for compromised credentials (risk.decide.CREDENTIALS_BLOCK_REASON, a parameter): whatever the level.
_CREDENTIALS_BLOCK = "coalesce(len(list_filter(a.decision_reasons, lambda r: starts_with(r, ?))) > 0, false)"
#: Blocked whatever the level: by a BlockedIPRangeList, or for compromised credentials (parameter as above).
_BLOCKED_ANYWAY = f"(coalesce(a.override_block, false) OR {_CREDENTIALS_BLOCK})"


def assessed_counts(con: duckdb.DuckDBPyConnection, *, since: datetime | None = None,
                    until: datetime | None = None) -> tuple[int, int]:
    """(assessed, not yet assessed) events in [since, until)."""
    scored, unscored = con.execute(
        f"""SELECT count(a.event_id), count(*) - count(a.event_id)
            FROM events e LEFT JOIN assessments a ON a.event_id = e.event_id WHERE {PERIOD_SQL}""",
        period_params(since, until)).fetchall()[0]
    return int(scored), int(unscored)


def pipeline_summary(con: duckdb.DuckDBPyConnection, *, since: datetime | None = None,
                     until: datetime | None = None) -> dict:
    """Events by level and decision, attacks caught by type, legitimate sign-ins challenged and blocked,
    for the events in [since, until) (by default all), with the thresholds versions the assessments were made
    with (``thresholds_versions``: (version, assessments) pairs) and the current one.

    Legitimate sign-ins "challenged" and "blocked" are those the risk level challenged or blocked, as
    ``riskgate tune`` counts them (what the level adds to what the sign-in gets without one): users who have
    MFA of their own are challenged at every sign-in, whatever the level (COGNITO_REFERENCE), and are counted
    apart (``legitimate_own_mfa_challenged``; ``legitimate_own_mfa_at_mfa_level`` of them at a level whose
    action asks for MFA); sign-ins blocked by a BlockedIPRangeList are ``legitimate_range_blocked``, and those
    blocked for compromised credentials (not by a range) ``legitimate_credentials_blocked``.

    "Caught" means the outcome (enforced or, in AUDIT, would-be) is an MFA challenge or a block.
    Labels: the labels in force (``risk.feedback.LABELS_IN_FORCE_SQL``, as tuning and training read them):
    ``attack_type`` (or ``is_account_takeover`` = true) tags attacks, ``is_account_takeover`` = false marks
    legitimate events, and an administrator's feedback outranks both (Invalid: an attack, Valid: legitimate).
    """

    period = period_params(since, until)
    # every query reads the period's assessments through this CTE (the same parameters first)
    scoped = f"""WITH pa AS (SELECT a.*, e.event_type, e.event_response FROM assessments a
                             JOIN events e ON e.event_id = a.event_id WHERE {PERIOD_SQL})"""

    def rows(sql: str, params: tuple = ()) -> list[tuple]:
        return [tuple(r) for r in con.execute(f"{scoped} {sql}", [*period, *params]).fetchall()]

    scored, unscored = assessed_counts(con, since=since, until=until)
    by_level = rows(
        f"""SELECT {_LEVEL_SQL} AS level, count(*) FROM pa GROUP BY 1
           ORDER BY CASE level WHEN '{_NOT_EVALUATED}' THEN -1 WHEN '{_NO_RISK}' THEN 0 WHEN 'Low' THEN 1
                    WHEN 'Medium' THEN 2 ELSE 3 END"""
    )
    by_decision = rows(
        f"""SELECT coalesce(risk_decision, '{_NOT_EVALUATED}'), outcome, count(*) FROM pa
           GROUP BY ALL ORDER BY 1, 2"""
    )
    # the labels in force: feedback outranks the data set's labels (Invalid: an attack; Valid: legitimate), as for
    # tuning and training (risk.feedback.LABELS_IN_FORCE_SQL)
    attacks = rows(
        f""", t AS (SELECT event_id, attack_type FROM ({LABELS_IN_FORCE_SQL}) WHERE y = 1)
           SELECT t.attack_type, count(*) AS attacks,
                  count(*) FILTER (WHERE a.outcome IN ('MfaChallenge', 'Block')) AS caught,
                  count(*) FILTER (WHERE a.outcome = 'Block') AS blocked
           FROM t JOIN pa a ON a.event_id = t.event_id
           GROUP BY 1 ORDER BY 1"""
    )
    (legit,) = rows(
        f""", l AS (SELECT event_id FROM ({LABELS_IN_FORCE_SQL}) WHERE y = 0)
           SELECT count(*),
                  count(*) FILTER (WHERE a.outcome = 'MfaChallenge' AND NOT {_OWN_MFA}),
                  count(*) FILTER (WHERE a.outcome = 'Block' AND NOT {_BLOCKED_ANYWAY}),
                  count(*) FILTER (WHERE a.outcome = 'MfaChallenge' AND {_OWN_MFA}),
                  count(*) FILTER (WHERE a.outcome = 'MfaChallenge' AND {_OWN_MFA} AND {_MFA_ACTION}),
                  count(*) FILTER (WHERE a.outcome = 'Block' AND coalesce(a.override_block, false)),
                  count(*) FILTER (WHERE a.outcome = 'Block' AND NOT coalesce(a.override_block, false)
                                   AND {_CREDENTIALS_BLOCK})
           FROM l JOIN pa a ON a.event_id = l.event_id
           WHERE a.event_type = 'SignIn' AND a.event_response = 'Pass'""",
        (OWN_MFA_REASON, CREDENTIALS_BLOCK_REASON, *(OWN_MFA_REASON,) * 2, CREDENTIALS_BLOCK_REASON)
    )
    # the thresholds the period's assessments were made with (a level and outcome are stored, not recomputed):
    # after ``riskgate tune --apply`` they may not be the current ones until ``riskgate score --rescore``
    thresholds_versions = [(None if v is None else int(v), int(n)) for v, n in rows(
        "SELECT thresholds_version, count(*) FROM pa GROUP BY 1 ORDER BY 1 NULLS FIRST")]
    _, current = current_thresholds(con)
    return {
        "events_scored": int(scored),
        "events_unscored": int(unscored),
        "by_level": by_level,
        "by_decision": by_decision,
        "attacks_by_type": attacks,
        "legitimate_sign_ins": int(legit[0]),
        "legitimate_challenged": int(legit[1]),
        "legitimate_blocked": int(legit[2]),
        "legitimate_own_mfa_challenged": int(legit[3]),
        "legitimate_own_mfa_at_mfa_level": int(legit[4]),
        "legitimate_range_blocked": int(legit[5]),
        "legitimate_credentials_blocked": int(legit[6]),
        "thresholds_versions": thresholds_versions,
        "current_thresholds_version": current,
    }
