"""Vectorised extraction and type checking of JSON-lines records, in DuckDB SQL.

Readers of JSON-lines formats describe their fields as :class:`JsonField`
specs; :func:`extract` parses a whole batch of lines in one SQL statement
(DuckDB's C++ JSON functions, no per-row Python), checks every field's JSON
type, and returns typed columns plus a precise ``reason`` for each bad row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import duckdb
import pyarrow as pa

# JSON types DuckDB's json_type() reports, by the kind a field expects
_KIND_TYPES = {
    "string": ("VARCHAR",),
    "number": ("BIGINT", "UBIGINT", "DOUBLE"),
    "integer": ("BIGINT", "UBIGINT"),
    "bool": ("BOOLEAN",),
    "time": ("VARCHAR", "BIGINT", "UBIGINT", "DOUBLE"),
    "array": ("ARRAY",),
    "object": ("OBJECT",),
    # string-typed values that must read as something else (user-activity export)
    "string_bool": ("VARCHAR", "BOOLEAN"),
}
_KIND_WORDS = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "bool": "true or false",
    "time": "an ISO 8601 time or epoch number",
    "array": "an array",
    "object": "an object",
    "string_bool": '"true" or "false"',
}


@dataclass(frozen=True)
class JsonField:
    """One field of a JSON record: where it is, what it must be, where it goes."""

    name: str  # the name in messages (e.g. "ContextData.IpAddress")
    path: str  # JSONPath for DuckDB, e.g. "$.ContextData.IpAddress"
    kind: str  # a key of _KIND_TYPES
    column: str | None = None  # the output column; None = checked only
    required: bool = False
    required_if: str | None = None  # name of an object field whose presence makes this one required


def sql_string(value: str) -> str:
    """A SQL string literal for a constant from this module's own field tables (never user data)."""
    return "'" + value.replace("'", "''") + "'"


def _type_word(t: str) -> str:
    return (
        f"CASE {t} WHEN 'VARCHAR' THEN 'a string' WHEN 'BOOLEAN' THEN 'a boolean' "
        f"WHEN 'ARRAY' THEN 'an array' WHEN 'OBJECT' THEN 'an object' ELSE 'a number' END"
    )


def time_expr(value_sql: str, type_sql: str) -> str:
    """A TIMESTAMPTZ from an ISO string, or epoch seconds / milliseconds as number or digit string."""
    return f"""CASE
      WHEN {type_sql} IN ('BIGINT', 'UBIGINT', 'DOUBLE') OR regexp_full_match({value_sql}, '\\d{{9,16}}(\\.\\d+)?')
        THEN CASE WHEN TRY_CAST({value_sql} AS DOUBLE) > 1e11
                  THEN to_timestamp(TRY_CAST({value_sql} AS DOUBLE) / 1000.0)
                  ELSE to_timestamp(TRY_CAST({value_sql} AS DOUBLE)) END
      ELSE TRY_CAST({value_sql} AS TIMESTAMPTZ) END"""


def extract(
    con: duckdb.DuckDBPyConnection,
    texts: list[str],
    lines: list[int],
    fields: list[JsonField],
    known_keys: list[str],
    extra_select: str = "",
) -> pa.Table:
    """Parse ``texts`` (one JSON document each) and return a table with columns
    ``_line``, ``_raw``, ``reason`` (NULL when the row is good), ``_unknown_keys``
    and one column per field with a ``column``.
    """
    batch = pa.table({"_line": pa.array(lines, pa.int64()), "_raw": pa.array(texts, pa.string())})
    paths = ", ".join(sql_string(f.path) for f in fields)
    checks = []
    for i, f in enumerate(fields, start=1):
        allowed = ", ".join(sql_string(t) for t in _KIND_TYPES[f.kind])
        t = f"_t[{i}]"
        checks.append(
            f"CASE WHEN {t} IS NOT NULL AND {t} <> 'NULL' AND {t} NOT IN ({allowed}) "
            f"THEN {sql_string(f.name + ' must be ' + _KIND_WORDS[f.kind] + ', got ')} || {_type_word(t)} END"
        )
        if f.required:
            checks.append(f"CASE WHEN {t} IS NULL OR {t} = 'NULL' THEN {sql_string(f.name + ' is required')} END")
        if f.required_if:
            j = next(k for k, g in enumerate(fields, start=1) if g.name == f.required_if)
            checks.append(
                f"CASE WHEN _t[{j}] = 'OBJECT' AND ({t} IS NULL OR {t} = 'NULL') "
                f"THEN {sql_string(f.name + ' is required when ' + f.required_if + ' is present')} END"
            )
    cols = []
    for i, f in enumerate(fields, start=1):
        if not f.column:
            continue
        v, t = f"_v[{i}]", f"_t[{i}]"
        if f.kind == "string":
            expr = f"CASE WHEN {t} = 'VARCHAR' THEN {v} END"
        elif f.kind in ("number",):
            expr = f"CASE WHEN {t} IN ('BIGINT','UBIGINT','DOUBLE') THEN TRY_CAST({v} AS DOUBLE) END"
        elif f.kind == "integer":
            expr = f"CASE WHEN {t} IN ('BIGINT','UBIGINT') THEN TRY_CAST({v} AS BIGINT) END"
        elif f.kind == "bool":
            expr = f"CASE WHEN {t} = 'BOOLEAN' THEN {v} = 'true' END"
        elif f.kind == "string_bool":
            expr = f"CASE WHEN lower({v}) = 'true' THEN true WHEN lower({v}) = 'false' THEN false END"
        elif f.kind == "time":
            expr = time_expr(v, t)
        else:  # array / object: kept as JSON text for the reader to transform
            expr = f"CASE WHEN {t} = {sql_string(_KIND_TYPES[f.kind][0])} THEN json_extract(_doc, {sql_string(f.path)})::VARCHAR END"
        cols.append(f"{expr} AS {f.column}")
    known = ", ".join(sql_string(k) for k in known_keys)
    sql = f"""
    WITH parsed AS (
      SELECT _line, _raw, json_valid(_raw) AS _ok FROM batch_
    ), typed AS (
      SELECT _line, _raw, _ok,
             CASE WHEN _ok THEN _raw::JSON END AS _doc
      FROM parsed
    ), fields AS (
      SELECT _line, _raw, _ok, _doc,
             CASE WHEN _ok THEN json_type(_doc) END AS _root,
             CASE WHEN _ok AND json_type(_doc) = 'OBJECT' THEN json_type(_doc, [{paths}]) END AS _t,
             CASE WHEN _ok AND json_type(_doc) = 'OBJECT' THEN json_extract_string(_doc, [{paths}]) END AS _v
      FROM typed
    )
    SELECT _line, _raw,
      CASE WHEN NOT _ok THEN 'malformed JSON'
           WHEN _root <> 'OBJECT' THEN 'not a JSON object: the line is a JSON ' || lower(_root)
           ELSE nullif(concat_ws('; ', {", ".join(checks)}), '') END AS reason,
      CASE WHEN _root = 'OBJECT' THEN list_filter(json_keys(_doc), lambda k: NOT list_contains([{known}], k)) END
        AS _unknown_keys,
      {", ".join(cols)}
      {extra_select}
    FROM fields
    """
    con.register("batch_", batch)
    try:
        return con.sql(sql).to_arrow_table()
    finally:
        con.unregister("batch_")


def malformed_reason(text: str) -> str:
    """Where a line stops being JSON, in Python's words (called for bad rows only)."""
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return f"malformed JSON: {exc.msg} at column {exc.colno}"
    except RecursionError:
        return "malformed JSON: nested too deeply"
    return "malformed JSON"


def extra_json(text: str, unknown_keys: list[str] | None) -> str | None:
    """The record's fields the canonical event has no column for, as a JSON object (kept, not dropped)."""
    if not unknown_keys:
        return None
    doc = json.loads(text)
    return json.dumps({k: doc[k] for k in unknown_keys if k in doc}, separators=(",", ":"), ensure_ascii=False)
