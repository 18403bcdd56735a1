"""Cognito user-activity log export: one JSON object per line (COGNITO_REFERENCE.md).

Example line::

    {"eventTimestamp":"1687297330677","eventSource":"USER_ACTIVITY","logLevel":"INFO",
     "message":{"version":"1","eventId":"…","eventType":"SignIn","userSub":"…","userName":"test-user",
      "userPoolId":"us-west-2_EXAMPLE","clientId":"…","creationDate":"Wed Jul 17 17:25:55 UTC 2024",
      "eventResponse":"Pass","riskLevel":"","riskDecision":"PASS","challenges":[],
      "deviceName":"Other, Other","ipAddress":"192.0.2.1","requestId":"…","idpName":"",
      "compromisedCredentialDetected":"false","city":"Seattle","country":"United States",
      "eventFeedbackValue":"","eventFeedbackDate":"","eventFeedbackProvider":"","hasContextData":"true"},
     "logSourceId":{"userPoolId":"us-west-2_EXAMPLE"}}

Quirks honoured: every value is a string, ``""`` means absent, booleans are
``"true"``/``"false"``; the time is ``eventTimestamp`` (epoch milliseconds as a
string) or else ``message.creationDate`` (a Java date string such as
``Wed Jul 17 17:25:55 UTC 2024``, or ISO 8601); a row is quarantined only when
neither gives a time. Unknown fields are kept, not rejected.

Also read: the same records as CloudWatch Logs delivers them,

* a line ``2024-07-17T17:25:55.677Z {"eventTimestamp":...}`` (a timestamp, then the record);
* a subscription / export envelope ``{"messageType":"DATA_MESSAGE", ..., "logEvents":
  [{"id":..,"timestamp":..,"message":"<the record as a JSON string>"}]}``: each
  log event is a row, all with the envelope's line number; several envelopes
  written back to back on one line (Firehose), or with blanks between them, are
  split. ``CONTROL_MESSAGE`` envelopes (CloudWatch's health checks) hold no
  records and are skipped.

Mapping: message.eventId -> event_id (derived from the record when absent),
userName -> username, userSub -> user_sub, userPoolId (or logSourceId.userPoolId,
or ``--user-pool-id``) -> user_pool_id, clientId -> client_id, eventType,
eventResponse, ipAddress -> ip_address, city / country -> source_city /
source_country, deviceName -> source_device_name, compromisedCredentialDetected
-> compromised_credentials, hasContextData -> has_context_data (else: an IP is
present), challenges -> challenge_responses (a list of {challengeName,
challengeResponse} in either casing, or a ``"Password:Success, Mfa:Success"``
string). Every other non-empty field of ``message`` (riskLevel, riskDecision,
eventFeedback*, requestId, idpName, version, new ones) and any unknown top-level
field goes to ``extra``.

Feedback: a record with a non-empty ``eventFeedbackValue``,
``eventFeedbackProvider`` or ``eventFeedbackDate`` carries the feedback in
force when it was written, given beside the events (``ReadBatch.feedback``)
for ``riskgate ingest`` to record: the value ``Valid`` or ``Invalid`` and the
provider ``Admin`` or ``User`` (both required then; any case, recorded in
Cognito's), the date as epoch milliseconds, ISO 8601 or a Java date, else
(``""``) the event's time. A record breaking one of these rules is
quarantined with a reason naming the field, as in ``cognito_auth_events``.

Set-wise in DuckDB (``ingest.sources.jsonfields.extract`` plus two statements
of our own); Python touches only quarantined rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from functools import partial

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ingest.errors import InputFormatError
from ingest.schema import FEEDBACK_PROVIDERS, FEEDBACK_VALUES, MAX_FUTURE, MIN_TIME, SOURCE_FEEDBACK_SCHEMA
from ingest.sources.base import (
    RAW_COLUMN,
    LineBatch,
    Part,
    QuarantineBuilder,
    ReadBatch,
    ReaderOptions,
    as_source_types,
    iter_line_arrays,
    parsed_in_turn,
)
from ingest.sources.jsonfields import JsonField, extract, json_type_word, malformed_reason, sql_string, time_expr

NAME = "cognito-user-activity"
JAVA_DATE = "%a %b %d %H:%M:%S %Z %Y"


def _s(name: str, column: str, **kw) -> JsonField:
    return JsonField(name, "$." + name, "string", column, empty_is_null=True, **kw)


FIELDS = [
    JsonField("eventTimestamp", "$.eventTimestamp", "time", "_ets", empty_is_null=True),
    JsonField("message", "$.message", "object", None, required=True),
    _s("message.eventId", "event_id"),
    _s("message.userName", "username", required=True),
    _s("message.userSub", "user_sub"),
    _s("message.userPoolId", "_pool_msg"),
    _s("message.clientId", "client_id"),
    _s("message.eventType", "event_type", required=True),
    _s("message.eventResponse", "event_response", required=True),
    JsonField("message.creationDate", "$.message.creationDate", "time", "_cd", empty_is_null=True),
    _s("message.ipAddress", "ip_address"),
    _s("message.city", "source_city"),
    _s("message.country", "source_country"),
    _s("message.deviceName", "source_device_name"),
    JsonField("message.compromisedCredentialDetected", "$.message.compromisedCredentialDetected", "string_bool",
              "compromised_credentials", empty_is_null=True),
    JsonField("message.hasContextData", "$.message.hasContextData", "string_bool", "_hcd", empty_is_null=True),
    JsonField("logSourceId", "$.logSourceId", "object", None),
    _s("logSourceId.userPoolId", "_pool_src"),
]
TOP_KEYS = ["eventTimestamp", "eventSource", "logLevel", "message", "logSourceId"]
#: message fields with a canonical column (all others go to extra)
#: message fields without a column that Cognito documents: kept in extra when not empty
KNOWN_EXTRA = ["version", "riskLevel", "riskDecision", "eventFeedbackValue", "eventFeedbackDate",
               "eventFeedbackProvider", "requestId", "idpName"]
MAPPED = ["eventId", "userName", "userSub", "userPoolId", "clientId", "eventType", "eventResponse", "creationDate",
          "ipAddress", "city", "country", "deviceName", "compromisedCredentialDetected", "hasContextData", "challenges"]

_TS_PREFIX = r"^\s*\d{4}-\d{2}-\d{2}[T ][0-9:.]+(?:Z|[+-]\d{2}:?\d{2})?\s+(\{.*)$"

# Ordinary lines -> records: strip a CloudWatch timestamp prefix.
_PLAIN_SQL = f"""
SELECT _line, CASE WHEN left(ltrim(_t), 1) = '{{' THEN _t
                   ELSE coalesce(nullif(regexp_extract(_t, '{_TS_PREFIX}', 1), ''), _t) END AS _raw
FROM (SELECT _line, rtrim(_text, chr(13) || chr(10)) AS _t FROM lines_)
"""

# Lines holding CloudWatch envelopes -> one record per log event (envelopes back to back are split, also with
# JSON whitespace between them: a JSON string holds no unescaped quote, so "{"messageType"" opens an envelope).
_NEXT_ENVELOPE = '[}][ \\t\\r]*[{]"messageType"'
_ENVELOPE_SQL = f"""
WITH l AS (
  SELECT _line, rtrim(_text, chr(13) || chr(10)) AS _t FROM lines_
), r AS (
  SELECT _line,
    CASE WHEN left(ltrim(_t), 1) = '{{' THEN _t ELSE coalesce(nullif(regexp_extract(_t, '{_TS_PREFIX}', 1), ''), _t) END
      AS _r0
  FROM l
), s AS (
  SELECT _line,
    CASE WHEN regexp_matches(_r0, '{_NEXT_ENVELOPE}')
         THEN string_split(regexp_replace(_r0, '{_NEXT_ENVELOPE}', '}}' || chr(30) || '{{"messageType"', 'g'), chr(30))
         ELSE [_r0] END AS _parts
  FROM r
), p AS (
  SELECT _line, unnest(_parts) AS _rec, unnest(range(CAST(len(_parts) AS BIGINT))) AS _k FROM s
), v AS (
  SELECT _line, _k, _rec, CASE WHEN json_valid(_rec) THEN CAST(_rec AS JSON) END AS _d FROM p
), e AS (
  SELECT _line, _k, _rec, _d,
    coalesce(json_type(_d) = 'OBJECT' AND json_exists(_d, '$.logEvents') AND json_exists(_d, '$.messageType'), false)
      AS _env,
    coalesce(json_extract_string(_d, '$.messageType'), '') = 'CONTROL_MESSAGE' AS _control
  FROM v
)
SELECT _line, _k, 0 AS _j, _rec AS _raw, NULL AS _why FROM e WHERE NOT _env
UNION ALL
SELECT _line, _k, 0, _rec,
  'CloudWatch envelope: logEvents must be an array, got ' || {json_type_word("json_type(_d, '$.logEvents')")}
FROM e WHERE _env AND NOT _control AND json_type(_d, '$.logEvents') <> 'ARRAY'
UNION ALL
SELECT _line, _k, _j,
  CASE WHEN json_type(_ev, '$.message') = 'VARCHAR' THEN json_extract_string(_ev, '$.message') ELSE _ev::VARCHAR END,
  CASE WHEN json_type(_ev, '$.message') IS DISTINCT FROM 'VARCHAR'
       THEN 'CloudWatch envelope: logEvents[' || _j || '].message must be a string holding the record' END
FROM (
  SELECT _line, _k, unnest(CAST(json_extract(_d, '$.logEvents') AS JSON[])) AS _ev,
         unnest(range(CAST(json_array_length(_d, '$.logEvents') AS BIGINT))) AS _j
  FROM e WHERE _env AND NOT _control AND json_type(_d, '$.logEvents') = 'ARRAY'
)
ORDER BY _line, _k, _j
"""


#: JSON fragments the finishing step needs, taken from each record in one parse: (name, path)
_PARTS = [("msg", "$.message"), ("ch", "$.message.challenges"), ("cd", "$.message.creationDate"),
          ("ets", "$.eventTimestamp"), ("hasContextData", "$.message.hasContextData"),
          ("compromisedCredentialDetected", "$.message.compromisedCredentialDetected")] + [
          (k, "$.message." + k) for k in KNOWN_EXTRA]
_P = {name: f"_p[{i}]" for i, (name, _) in enumerate(_PARTS, 1)}


def _text(part: str) -> str:
    """The string value of a fragment (NULL when absent or "")."""
    return f"nullif(json_extract_string({_P[part]}, '$'), '')"


def _bool_check(field: str) -> str:
    col = {"hasContextData": "_hcd", "compromisedCredentialDetected": "compromised_credentials"}[field]
    v = _text(field)
    return (f"CASE WHEN {col} IS NULL AND lower(coalesce({v}, '')) NOT IN ('', 'true', 'false') "
            f"THEN 'message.{field} must be \"true\" or \"false\", got ' || to_json({v}) END")


#: the feedback fields: (name in the record, output column, the values it may take in Cognito's spelling)
_FEEDBACK = (("eventFeedbackValue", "_fb_value", FEEDBACK_VALUES),
             ("eventFeedbackProvider", "_fb_provider", FEEDBACK_PROVIDERS))
#: the columns the finishing step gives the feedback in, and their SOURCE_FEEDBACK_SCHEMA names
FEEDBACK_COLUMNS = {"_fb_value": "feedback_value", "_fb_provider": "provider", "_fb_date": "feedback_date"}


def _feedback_text(field: str) -> str:
    """SQL: a feedback field's string (NULL when absent, "" or not a string: :func:`_feedback_checks`)."""
    return f"CASE WHEN json_type({_P[field]}) = 'VARCHAR' THEN nullif(json_extract_string({_P[field]}, '$'), '') END"


def _feedback_checks() -> list[str]:
    """SQL reasons of the feedback fields (the module docstring's rules); columns of the ``f`` step."""
    out = []
    for field, col, allowed in _FEEDBACK:
        want = " or ".join(f'"{a}"' for a in allowed)
        others = " or ".join(f for f in ("eventFeedbackValue", "eventFeedbackProvider", "eventFeedbackDate")
                             if f != field)
        out.append(f"""CASE WHEN json_type({_P[field]}) NOT IN ('VARCHAR', 'NULL')
               THEN 'message.{field} must be a string, got ' || {json_type_word(f"json_type({_P[field]})")}
             WHEN _fb AND {col} IS NULL AND _t_{field} IS NULL
               THEN {sql_string(f"message.{field} is required when the record has feedback ({others}): {want}")}
             WHEN _fb AND {col} IS NULL
               THEN {sql_string(f"message.{field} must be {want}, got ")} || to_json(_t_{field}) END""")
    d = _P["eventFeedbackDate"]
    out.append(f"""CASE WHEN json_type({d}) NOT IN ('VARCHAR', 'NULL')
               THEN 'message.eventFeedbackDate must be a string, got ' || {json_type_word(f"json_type({d})")}
             WHEN _t_eventFeedbackDate IS NOT NULL AND _fbd IS NULL
               THEN 'message.eventFeedbackDate must be epoch milliseconds, an ISO 8601 time or a date like '
                    || '"Wed Jul 17 17:25:55 UTC 2024", got ' || to_json(_t_eventFeedbackDate)
             WHEN _fbd < $min_time OR _fbd > $max_time
               THEN 'message.eventFeedbackDate ' || strftime(_fbd, '%Y-%m-%dT%H:%M:%SZ') || ' is '
                    || CASE WHEN _fbd > $max_time THEN 'in the future' ELSE 'before 2000-01-01' END END""")
    return out


def _spelling_sql(text: str, allowed: tuple[str, ...]) -> str:
    """SQL: ``text`` as the one of ``allowed`` it is in any case, in its spelling; else NULL."""
    whens = " ".join(f"WHEN {sql_string(a.lower())} THEN {sql_string(a)}" for a in allowed)
    return f"CASE lower({text}) {whens} END"


def _finish_sql() -> str:
    drop_mapped = json.dumps({k: None for k in MAPPED + KNOWN_EXTRA})
    known_obj = ", ".join(f"'{k}', CASE WHEN {_P[k]}::VARCHAR = '\"\"' THEN NULL ELSE {_P[k]} END" for k in KNOWN_EXTRA)
    paths = ", ".join(f"'{path}'" for _, path in _PARTS)
    top = ", ".join(f"'{k}'" for k in TOP_KEYS)
    ch = _P["ch"]

    def either(c: str, camel: str) -> str:
        pascal = camel[0].upper() + camel[1:]
        return (f"coalesce(CASE WHEN json_type({c}, '$.{camel}') = 'VARCHAR' THEN json_extract_string({c}, '$.{camel}') END, "
                f"CASE WHEN json_type({c}, '$.{pascal}') = 'VARCHAR' THEN json_extract_string({c}, '$.{pascal}') END)")

    feedback_texts = ",\n        ".join(
        f"{_feedback_text(k)} AS _t_{k}" for k in ("eventFeedbackValue", "eventFeedbackProvider", "eventFeedbackDate"))
    spelled = ",\n        ".join(f"{_spelling_sql('_t_' + k, allowed)} AS {col}" for k, col, allowed in _FEEDBACK)
    fb_time = time_expr("_t_eventFeedbackDate", "'VARCHAR'")
    feedback_checks = ",\n        ".join(_feedback_checks())
    return f"""
    WITH k AS (
      SELECT *, json_extract(_raw, [{paths}]) AS _p FROM good_
    ), c AS (
      SELECT *,
        CASE WHEN _ets IS NOT NULL THEN _ets WHEN _cd IS NOT NULL THEN _cd
             ELSE try_strptime(trim({_text("cd")}), '{JAVA_DATE}')
        END AS _time,
        json_type({ch}) AS _ch_type,
        CASE json_type({ch})
          WHEN 'ARRAY' THEN list_transform(CAST({ch} AS JSON[]), lambda c: {{
            'challenge_name': {either("c", "challengeName")},
            'challenge_response': {either("c", "challengeResponse")}}})
          WHEN 'VARCHAR' THEN CASE WHEN trim({_text("ch")}) <> '' THEN
            list_transform(string_split({_text("ch")}, ','), lambda p: {{
              'challenge_name': nullif(trim(split_part(p, ':', 1)), ''),
              'challenge_response': nullif(trim(split_part(p, ':', 2)), '')}}) END
        END AS _ch,
        json_merge_patch({_P["msg"]}, '{drop_mapped}') AS _left,
        json_merge_patch('{{}}', json_object({known_obj})) AS _known,
        CASE WHEN len(coalesce(_unknown_keys, [])) > 0 THEN
          to_json(map_from_entries(list_filter(map_entries(TRY_CAST(CAST(_raw AS JSON) AS MAP(VARCHAR, JSON))),
            lambda e: NOT list_contains([{top}], e.key))))
        END AS _tx
      FROM k
    ), x AS (
      SELECT *,
        {feedback_texts},
        CASE WHEN _left = '{{}}' THEN _known
             ELSE json_merge_patch(to_json(map_from_entries(list_filter(map_entries(TRY_CAST(_left AS MAP(VARCHAR, JSON))),
                    lambda e: e.value::VARCHAR NOT IN ('""', 'null')))), _known) END AS _mx
      FROM c
    ), f AS (
      SELECT *,
        (_t_eventFeedbackValue IS NOT NULL OR _t_eventFeedbackProvider IS NOT NULL
         OR _t_eventFeedbackDate IS NOT NULL) AS _fb,
        {spelled},
        CAST(coalesce({fb_time}, try_strptime(trim(_t_eventFeedbackDate), '{JAVA_DATE}')) AS TIMESTAMPTZ) AS _fbd
      FROM x
    )
    SELECT
      CASE WHEN event_id IS NULL THEN 'ua-' || left(sha256(_raw), 32) ELSE event_id END AS event_id,
      coalesce(_pool_msg, _pool_src, $pool) AS user_pool_id,
      client_id, username, user_sub, event_type, event_response,
      CAST(_time AS TIMESTAMPTZ) AS creation_date,
      _ch AS challenge_responses,
      ip_address,
      coalesce(_hcd, ip_address IS NOT NULL) AS has_context_data,
      compromised_credentials, source_country, source_city, source_device_name,
      CAST(nullif(CASE WHEN _tx IS NULL THEN _mx ELSE json_merge_patch(_tx, coalesce(_mx, '{{}}')) END, '{{}}')
           AS VARCHAR) AS extra,
      _line AS source_line,
      CASE WHEN _fb THEN _fb_value END AS _fb_value,
      CASE WHEN _fb THEN _fb_provider END AS _fb_provider,
      CASE WHEN _fb THEN coalesce(_fbd, CAST(_time AS TIMESTAMPTZ)) END AS _fb_date,
      nullif(concat_ws('; ',
        CASE WHEN _time IS NULL THEN
          CASE WHEN {_text("ets")} IS NULL AND {_text("cd")} IS NULL
               THEN 'eventTimestamp or message.creationDate is required'
               ELSE 'no usable time: ' || concat_ws(' and ',
                 'eventTimestamp ' || CAST(to_json({_text("ets")}) AS VARCHAR) || ' is not epoch milliseconds',
                 'message.creationDate ' || CAST(to_json({_text("cd")}) AS VARCHAR)
                   || ' is not a date like "Wed Jul 17 17:25:55 UTC 2024"') END
        END,
        {_bool_check("hasContextData")},
        {_bool_check("compromisedCredentialDetected")},
        CASE WHEN _ch_type NOT IN ('ARRAY', 'VARCHAR', 'NULL')
             THEN 'message.challenges must be an array or a string, got ' || {json_type_word('_ch_type')}
             WHEN list_bool_or(list_transform(_ch, lambda x: x.challenge_name IS NULL OR x.challenge_response IS NULL))
             THEN 'message.challenges items must be objects with string challengeName and challengeResponse' END,
        {feedback_checks}
      ), '') AS reason
    FROM f
    """


_FINISH_SQL = _finish_sql()


class CognitoUserActivity:
    name = NAME
    description = "Cognito user-activity log export (JSON lines; also CloudWatch-wrapped lines and envelopes)"

    def sniff(self, head: bytes) -> bool:
        first = b""
        for line in head.splitlines():
            # the first line with content; a Firehose stream's CONTROL_MESSAGE envelope (skipped when read) says
            # nothing of the format
            if line.strip() and not (b'"messageType"' in line and b'"CONTROL_MESSAGE"' in line):
                first = line.strip()
                break
        m = re.match(rb"^\d{4}-\d{2}-\d{2}[T ][0-9:.]+(?:Z|[+-]\d{2}:?\d{2})?\s+(\{.*)$", first)
        if m:
            first = m.group(1)
        if not first.startswith(b"{"):
            return False
        if b"USER_ACTIVITY" in first:
            return True
        inner = first.replace(b'\\"', b'"')  # records inside a CloudWatch envelope are JSON strings
        return b'"message"' in first and b'"userName"' in inner and b'"eventType"' in inner

    def read(self, path: str, options: ReaderOptions) -> Iterator[ReadBatch]:
        return parsed_in_turn(self.read_parts(path, options))

    def read_parts(self, path: str, options: ReaderOptions) -> Iterator[Part]:
        """The input's batches as parts (``ingest.sources.base.PartReader``): the lines of each, read in order;
        a part finds and parses their records on the connection it is given."""
        first = True
        for lb in iter_line_arrays(path, options.batch_rows,
                                   expected="Cognito user-activity records, one JSON object per line"):
            yield partial(self._part, path, lb, options, first)
            first = False
            del lb

    def _part(self, path: str, lb: LineBatch, options: ReaderOptions, first: bool,
              con: duckdb.DuckDBPyConnection) -> ReadBatch:
        q = QuarantineBuilder(NAME, path)
        for line, reason, raw in lb.quarantine:
            q.add(line, reason, raw)
        batch = self._batch(con, lb.lines, lb.texts, q, options)
        if first:
            _check_format(path, batch)
        return batch

    def _records(self, con: duckdb.DuckDBPyConnection, lines: pa.Array, texts: pa.Array,
                 q: QuarantineBuilder) -> pa.Table:
        """(_line, _raw) of every record, in line order: most lines are one record already."""
        simple = pc.and_(pc.starts_with(texts, "{"), pc.invert(pc.match_substring(texts, '"logEvents"')))
        plain = pa.table({"_line": lines, RAW_COLUMN: pc.utf8_rtrim(texts, characters="\r\n")})
        if pc.all(simple).as_py():
            return plain
        other = _records_sql(con, pa.table({"_line": lines, "_text": texts}).filter(pc.invert(simple)), q)
        recs = pa.concat_tables([plain.filter(simple), other.cast(plain.schema)])
        return recs.take(pc.sort_indices(recs, [("_line", "ascending")]))  # stable: a line's records keep their order

    def _batch(self, con: duckdb.DuckDBPyConnection, lines: pa.Array, texts: pa.Array, q: QuarantineBuilder,
               options: ReaderOptions) -> ReadBatch:
        recs = self._records(con, lines, texts, q)
        t = extract(con, recs.column(RAW_COLUMN).combine_chunks(), recs.column("_line").combine_chunks(),
                    FIELDS, TOP_KEYS)
        bad = pc.is_valid(t.column("reason"))
        if pc.any(bad).as_py():
            _quarantine(q, t.filter(bad), "reason", malformed=True)
            t = t.filter(pc.invert(bad))
        keep = ["_line", RAW_COLUMN, "_unknown_keys"] + [f.column for f in FIELDS if f.column]
        good = t.select(keep)
        out = _sql(con, _FINISH_SQL, good_=good, params={
            "pool": options.user_pool_id, "min_time": MIN_TIME, "max_time": datetime.now(timezone.utc) + MAX_FUTURE})
        # the raw text comes back from the input, in the same order (no copy through SQL)
        out = out.append_column(RAW_COLUMN, good.column(RAW_COLUMN))
        bad = pc.is_valid(out.column("reason"))
        if pc.any(bad).as_py():
            _quarantine(q, out.filter(bad).rename_columns(
                ["_line" if c == "source_line" else c for c in out.column_names]), "reason")
            out = out.filter(pc.invert(bad))
        feedback = None
        if out.column("_fb_value").null_count < out.num_rows:  # some record carries feedback
            feedback = pa.table({name: out.column(c).cast(SOURCE_FEEDBACK_SCHEMA.field(name).type)
                                 for c, name in FEEDBACK_COLUMNS.items()})
        events = as_source_types(out.drop_columns(["reason", *FEEDBACK_COLUMNS]))
        return ReadBatch(events=events, quarantine=q.table(), feedback=feedback)


_NOT_THIS_FORMAT = ("malformed JSON", "not a JSON object", "message is required", "not UTF-8")


def _check_format(path: str, batch: ReadBatch) -> None:
    """A file whose first batch has no record of this format at all is not this format: say so once."""
    q = batch.quarantine
    if batch.events.num_rows or not q.num_rows:
        return
    reasons = q.column("reason").to_pylist()
    if all(r.startswith(_NOT_THIS_FORMAT) for r in reasons):
        raise InputFormatError(
            f"is not a Cognito user-activity export: none of its first {len(reasons)} lines is a record with a "
            f"message object (line {q.column('source_line')[0].as_py()}: {reasons[0]}); expected JSON lines like "
            '{"eventTimestamp": "...", "message": {"userName": ..., "eventType": ...}}', source=str(path))


def _records_sql(con: duckdb.DuckDBPyConnection, lines_t: pa.Table, q: QuarantineBuilder) -> pa.Table:
    """Records of lines that do not simply start with "{": CloudWatch prefixes and envelopes."""
    env = pc.match_substring(lines_t.column("_text"), '"logEvents"')
    if not pc.any(env).as_py():
        return _sql(con, _PLAIN_SQL, lines_=lines_t)
    plain = _sql(con, _PLAIN_SQL, lines_=lines_t.filter(pc.invert(env)))
    wrapped = _sql(con, _ENVELOPE_SQL, lines_=lines_t.filter(env))
    wrap_bad = pc.is_valid(wrapped.column("_why"))
    if pc.any(wrap_bad).as_py():
        _quarantine(q, wrapped.filter(wrap_bad), "_why")
        wrapped = wrapped.filter(pc.invert(wrap_bad))
    return pa.concat_tables([plain, wrapped.select(["_line", RAW_COLUMN])])


def _sql(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None, **tables: pa.Table) -> pa.Table:
    for name, t in tables.items():
        con.register(name, t)
    try:
        return con.sql(sql, params=params).to_arrow_table() if params else con.sql(sql).to_arrow_table()
    finally:
        for name in tables:
            con.unregister(name)


def _quarantine(q: QuarantineBuilder, bad: pa.Table, reason_col: str, malformed: bool = False) -> None:
    for line, reason, raw in zip(bad.column("_line").to_pylist(), bad.column(reason_col).to_pylist(),
                                 bad.column(RAW_COLUMN).to_pylist()):
        raw = (raw or "").rstrip("\r\n")
        if malformed and reason == "malformed JSON":
            reason = malformed_reason(raw)
        q.add(line, reason, raw)


READER = CognitoUserActivity()
