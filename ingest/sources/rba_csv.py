"""The public RBA benchmark CSV (das-group "rba-dataset", CC BY 4.0): about 31 million labelled logins.

Header, exactly (COGNITO_REFERENCE.md)::

    index,Login Timestamp,User ID,Round-Trip Time [ms],IP Address,Country,Region,City,ASN,User Agent String,Browser Name and Version,OS Name and Version,Device Type,Login Successful,Is Attack IP,Is Account Takeover

Mapping: ``index`` -> event_id; ``User ID`` -> username; ``Login Timestamp``
(``2020-02-03 12:43:30.772``, UTC) -> creation_date; event_type ``SignIn``;
``Login Successful`` True/False -> event_response Pass/Fail; ``IP Address`` ->
ip_address (has_context_data is true when there is one); ``Country`` /
``Region`` / ``City`` / ``ASN`` -> source_country / source_region /
source_city / source_asn (``-`` and empty mean unknown); ``User Agent String``
-> user_agent_source and an ``User-Agent`` http_headers entry; ``Round-Trip
Time [ms]`` -> rtt_ms. ``Browser Name and Version``, ``OS Name and Version``,
``Device Type`` and any column not listed here go to ``extra`` under their own
names. ``Is Account Takeover`` and ``Is Attack IP`` are ground truth: they go
*only* to the labels table (labels ``is_account_takeover`` / ``is_attack_ip``,
values ``true``/``false``, source ``rba-dataset``), never to an event column.

Required columns: index, Login Timestamp, User ID, Login Successful; the
others may be missing (their fields are then empty). Rows are read in bulk
(see :func:`ingest.sources.tabular.iter_csv_records`) and converted set-wise
in DuckDB; only rows that go to quarantine are touched one by one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from ingest.errors import InputFormatError
from ingest.schema import LABEL_SCHEMA, MAX_ASN, as_number_sql
from ingest.sources.base import RAW_COLUMN, QuarantineBuilder, as_source_types, ReadBatch, ReaderOptions
from ingest.sources.tabular import csv_header, first_line, iter_csv_records
from ingest.store import scratch

NAME = "rba-csv"
LABEL_SOURCE = "rba-dataset"
HEADER = (
    "index,Login Timestamp,User ID,Round-Trip Time [ms],IP Address,Country,Region,City,ASN,"
    "User Agent String,Browser Name and Version,OS Name and Version,Device Type,Login Successful,"
    "Is Attack IP,Is Account Takeover"
)
#: column name -> the alias the conversion SQL uses
COLUMNS = {
    "index": "idx",
    "Login Timestamp": "ts",
    "User ID": "uid",
    "Round-Trip Time [ms]": "rtt",
    "IP Address": "ip",
    "Country": "country",
    "Region": "region",
    "City": "city",
    "ASN": "asn",
    "User Agent String": "ua",
    "Browser Name and Version": "browser",
    "OS Name and Version": "os",
    "Device Type": "device",
    "Login Successful": "ok",
    "Is Attack IP": "attack_ip",
    "Is Account Takeover": "ato",
}
REQUIRED = ("index", "Login Timestamp", "User ID", "Login Successful")
#: label name -> alias of its column
LABELS = {"is_attack_ip": "attack_ip", "is_account_takeover": "ato"}
_EXTRA_NAMED = ("Browser Name and Version", "OS Name and Version", "Device Type")


def _sql(has_unknown: bool) -> str:
    def bool_check(alias: str, name: str, required: bool) -> str:
        cond = f"lower(trim({alias})) NOT IN ('true', 'false')"
        if not required:
            cond = f"trim({alias}) <> '' AND {cond}"
        return f"CASE WHEN {cond} THEN '{name} must be True or False, got ' || to_json({alias}) END"

    def geo(alias: str) -> str:
        return f"CASE WHEN trim({alias}) IN ('', '-') THEN NULL ELSE {alias} END"

    obj = "json_object(" + ", ".join(f"'{n}', nullif({COLUMNS[n]}, '')" for n in _EXTRA_NAMED) + ")"
    all_there = " AND ".join(f"{COLUMNS[n]} <> ''" for n in _EXTRA_NAMED)
    extra = f"CASE WHEN {all_there} THEN {obj} ELSE json_merge_patch('{{}}', {obj}) END"
    if has_unknown:
        extra = f"json_merge_patch({extra}, to_json(_x))"
    return f"""
    WITH v AS (
      SELECT *,
        try_strptime(trim(ts), ['%Y-%m-%d %H:%M:%S.%f', '%Y-%m-%d %H:%M:%S',
                                '%Y-%m-%dT%H:%M:%S.%f', '%Y-%m-%dT%H:%M:%S']) AS _ts,
        TRY_CAST(nullif(trim(rtt), '') AS DOUBLE) AS _rtt,
        TRY_CAST(CASE WHEN trim(asn) NOT IN ('', '-') THEN trim(asn) END AS BIGINT) AS _int_asn,
        lower(trim(ok)) AS _ok
      FROM rows_
    ), w AS (
      SELECT *, {as_number_sql("_int_asn")} AS _asn FROM v
    )
    SELECT
      trim(idx) AS event_id,
      nullif(uid, '') AS username,
      'SignIn' AS event_type,
      CASE _ok WHEN 'true' THEN 'Pass' WHEN 'false' THEN 'Fail' END AS event_response,
      CAST(_ts AS TIMESTAMPTZ) AS creation_date,
      _rtt AS rtt_ms,
      nullif(trim(ip), '') AS ip_address,
      nullif(trim(ip), '') IS NOT NULL AS has_context_data,
      {geo("country")} AS source_country,
      {geo("region")} AS source_region,
      {geo("city")} AS source_city,
      _asn AS source_asn,
      nullif(ua, '') AS user_agent_source,
      CASE WHEN ua <> '' THEN [{{'header_name': 'User-Agent', 'header_value': ua}}] END AS http_headers,
      CAST(nullif({extra}, '{{}}') AS VARCHAR) AS extra,
      _raw,
      _line AS source_line,
      CASE lower(trim(attack_ip)) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' END AS attack_ip,
      CASE lower(trim(ato)) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' END AS ato,
      nullif(concat_ws('; ',
        CASE WHEN TRY_CAST(trim(idx) AS BIGINT) IS NULL THEN 'index must be an integer, got ' || to_json(idx) END,
        CASE WHEN uid = '' THEN 'User ID is required' END,
        CASE WHEN trim(ts) = '' THEN 'Login Timestamp is required'
             WHEN _ts IS NULL THEN 'Login Timestamp must be a time like 2020-02-03 12:43:30.772, got ' || to_json(ts) END,
        CASE WHEN _rtt IS NULL AND trim(rtt) <> '' THEN 'Round-Trip Time [ms] must be a number, got ' || to_json(rtt)
             WHEN NOT isfinite(_rtt) THEN 'Round-Trip Time [ms] must be a finite number, got ' || to_json(rtt) END,
        CASE WHEN _asn IS NULL AND trim(asn) NOT IN ('', '-')  -- (an integer out of 0..MAX_ASN: no AS number)
             THEN CASE WHEN _int_asn IS NOT NULL OR regexp_full_match(trim(asn), '[+-]?[0-9]+')
                       THEN 'ASN must be an AS number (0 to {MAX_ASN}), got ' ELSE 'ASN must be an integer, got ' END
                  || to_json(asn) END,
        CASE WHEN _ok NOT IN ('true', 'false') THEN 'Login Successful must be True or False, got ' || to_json(ok) END,
        {bool_check("attack_ip", "Is Attack IP", False)},
        {bool_check("ato", "Is Account Takeover", False)}
      ), '') AS reason
    FROM w
    """


class RbaCsv:
    name = NAME
    description = "the public RBA benchmark CSV (das-group rba-dataset): logins with account-takeover labels"

    def sniff(self, head: bytes) -> bool:
        return first_line(head) == HEADER.encode()

    def read(self, path: str, options: ReaderOptions) -> Iterator[ReadBatch]:
        names = csv_header(path)
        missing = [c for c in REQUIRED if c not in names]
        if missing:
            raise InputFormatError(
                "is not the RBA data set's CSV: the header lacks the required column"
                + ("s " if len(missing) > 1 else " ") + ", ".join(repr(c) for c in missing)
                + f"; expected the header: {HEADER}",
                source=str(path),
                line=1,
            )
        unknown = [n for n in names if n not in COLUMNS]
        sql = _sql(bool(unknown))
        con = scratch()
        try:
            for chunk in iter_csv_records(path, len(names), options.batch_rows):
                q = QuarantineBuilder(NAME, path)
                for line, reason, raw in chunk.bad:
                    q.add(line, reason, raw)
                yield self._convert(con, sql, chunk.rows, names, unknown, chunk.lines, chunk.raws, q)
        finally:
            con.close()

    def _convert(self, con, sql, rows: pa.Table, names: list[str], unknown: list[str], lines: pa.Array,
                 raws: pa.Array, q: QuarantineBuilder) -> ReadBatch:
        n = rows.num_rows
        cols: dict[str, pa.ChunkedArray | pa.Array] = {}
        for name, alias in COLUMNS.items():
            cols[alias] = rows.column(names.index(name)) if name in names else pa.array([""] * n, pa.string())
        if unknown:
            arrays = [rows.column(names.index(u)).combine_chunks() for u in unknown]
            arrays = [pc.if_else(pc.equal(a, ""), pa.scalar(None, pa.string()), a) for a in arrays]
            cols["_x"] = pa.StructArray.from_arrays(arrays, names=unknown)
        cols["_line"] = lines
        cols[RAW_COLUMN] = raws
        con.register("rows_", pa.table(cols))
        try:
            out = con.sql(sql).to_arrow_table()
        finally:
            con.unregister("rows_")
        bad = pc.is_valid(out.column("reason"))
        if pc.any(bad).as_py():
            for r in pc.indices_nonzero(bad).to_pylist():
                q.add(out.column("source_line")[r].as_py(), out.column("reason")[r].as_py(),
                      out.column(RAW_COLUMN)[r].as_py())
            out = out.filter(pc.invert(bad))
        labels = _labels(out)
        events = as_source_types(out.drop_columns(["attack_ip", "ato", "reason"]))
        return ReadBatch(events=events, quarantine=q.table(), labels=labels)


def _labels(out: pa.Table) -> pa.Table | None:
    parts = []
    for label, alias in LABELS.items():
        t = pa.table({"event_id": out.column("event_id"), "value": out.column(alias),
                      "source_line": out.column("source_line")})
        t = t.filter(pc.is_valid(t.column("value")))
        parts.append(pa.table({
            "event_id": t.column("event_id"),
            "label": pa.array([label] * t.num_rows, pa.string()),
            "value": t.column("value"),
            "source": pa.array([LABEL_SOURCE] * t.num_rows, pa.string()),
            "source_line": t.column("source_line").cast(pa.int64()),  # the row the label came with
        }, schema=LABEL_SCHEMA.append(pa.field("source_line", pa.int64()))))
    labels = pa.concat_tables(parts)
    return labels if labels.num_rows else None


READER = RbaCsv()
