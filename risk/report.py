"""Reading assessments out: export for SIEMs and evaluation, and the run summary ``make demo`` prints.

Exports stream from DuckDB in Arrow batches (bounded memory) into CSV,
Parquet or JSON lines; reasons are a list of {code, value, contribution}
(a JSON text in CSV); times are ISO 8601 text in UTC in CSV and JSON lines.
"""

from __future__ import annotations

import os
from datetime import datetime

import duckdb

from ingest.errors import RiskgateError, check_output_folder
from risk.feedback import ATO_FALSE_SQL, ATTACK_TYPES_SQL
from risk.levels import current_thresholds
from risk.score import PERIOD_SQL, period_params

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


def export_assessments(
    con: duckdb.DuckDBPyConnection,
    out: str | os.PathLike,
    fmt: str = "csv",
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    batch_rows: int = 100_000,
) -> int:
    """Write events joined with their assessments to ``out``; return the number of rows written."""
    if fmt not in EXPORT_FORMATS:
        raise RiskgateError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    check_output_folder(out)
    if os.path.isdir(out):
        raise RiskgateError("is a folder; --out names the file to write", source=str(out))
    params = period_params(since, until)
    if fmt == "csv":
        sql = f"SELECT * REPLACE (to_json(reasons)::VARCHAR AS reasons, {_ISO_TIMES}) FROM ({_EXPORT_SELECT})"
    elif fmt == "jsonl":
        sql = f"SELECT to_json(x)::VARCHAR AS line FROM (SELECT * REPLACE ({_ISO_TIMES}) FROM ({_EXPORT_SELECT})) x"
    else:
        sql = _EXPORT_SELECT
    tmp = f"{out}.partial"
    reader = con.sql(sql, params=params).to_arrow_reader(batch_rows)
    n = 0
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            with pq.ParquetWriter(tmp, reader.schema) as w:
                for b in reader:
                    w.write_batch(b)
                    n += b.num_rows
        elif fmt == "csv":
            import pyarrow.csv as pcsv

            with pcsv.CSVWriter(tmp, reader.schema) as w:
                for b in reader:
                    w.write_batch(b)
                    n += b.num_rows
        else:
            with open(tmp, "w", encoding="utf-8") as fh:
                for b in reader:
                    col = b.column(0).to_pylist()
                    fh.write("\n".join(col))
                    if col:
                        fh.write("\n")
                    n += len(col)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return n


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


#: An MFA challenge the risk asked for: the event's level has an action that challenges (MFA_IF_CONFIGURED,
#: MFA_REQUIRED). Any other challenge (no level, or a level whose action is NO_ACTION) is the user's own MFA.
_RISK_CHALLENGE = "(a.risk_level IS NOT NULL AND coalesce(a.event_action IN ('MFA_IF_CONFIGURED', 'MFA_REQUIRED'), false))"


def pipeline_summary(con: duckdb.DuckDBPyConnection, *, since: datetime | None = None,
                     until: datetime | None = None) -> dict:
    """Events by level and decision, attacks caught by type, legitimate sign-ins challenged and blocked,
    for the events in [since, until) (by default all), with the thresholds versions the assessments were made
    with (``thresholds_versions``: (version, assessments) pairs) and the current one.

    Legitimate sign-ins "challenged" are those challenged because of their risk level; users who
    have MFA of their own are challenged at every sign-in and are counted apart.

    "Caught" means the outcome (enforced or, in AUDIT, would-be) is an MFA challenge or a block.
    Labels: ``attack_type`` tags attacks; ``is_account_takeover`` = false marks legitimate events.
    """

    period = period_params(since, until)
    # every query reads the period's assessments through this CTE (the same parameters first)
    scoped = f"""WITH pa AS (SELECT a.*, e.event_type, e.event_response FROM assessments a
                             JOIN events e ON e.event_id = a.event_id WHERE {PERIOD_SQL})"""

    def rows(sql: str) -> list[tuple]:
        return [tuple(r) for r in con.execute(f"{scoped} {sql}", period).fetchall()]

    scored, unscored = con.execute(
        f"""SELECT count(a.event_id), count(*) - count(a.event_id)
            FROM events e LEFT JOIN assessments a ON a.event_id = e.event_id WHERE {PERIOD_SQL}""", period
    ).fetchall()[0]
    by_level = rows(
        """SELECT coalesce(risk_level, 'no risk'), count(*) FROM pa GROUP BY 1
           ORDER BY CASE coalesce(risk_level, 'no risk') WHEN 'no risk' THEN 0 WHEN 'Low' THEN 1
                    WHEN 'Medium' THEN 2 ELSE 3 END"""
    )
    by_decision = rows(
        """SELECT coalesce(risk_decision, 'not evaluated'), outcome, count(*) FROM pa
           GROUP BY ALL ORDER BY 1, 2"""
    )
    attacks = rows(
        f""", t AS ({ATTACK_TYPES_SQL})
           SELECT t.attack_type, count(*) AS attacks,
                  count(*) FILTER (WHERE a.outcome IN ('MfaChallenge', 'Block')) AS caught,
                  count(*) FILTER (WHERE a.outcome = 'Block') AS blocked
           FROM t JOIN pa a ON a.event_id = t.event_id
           GROUP BY 1 ORDER BY 1"""
    )
    (legit,) = rows(
        f""", l AS (SELECT event_id FROM labels WHERE {ATO_FALSE_SQL}
                   EXCEPT SELECT event_id FROM ({ATTACK_TYPES_SQL}))
           SELECT count(*),
                  count(*) FILTER (WHERE a.outcome = 'MfaChallenge' AND {_RISK_CHALLENGE}),
                  count(*) FILTER (WHERE a.outcome = 'Block'),
                  count(*) FILTER (WHERE a.outcome = 'MfaChallenge' AND NOT {_RISK_CHALLENGE})
           FROM l JOIN pa a ON a.event_id = l.event_id
           WHERE a.event_type = 'SignIn' AND a.event_response = 'Pass'"""
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
        "thresholds_versions": thresholds_versions,
        "current_thresholds_version": current,
    }
