"""riskgate JSON lines: our own input format, one Cognito-shaped sign-in event per line.

Example line (see README, "Formats")::

    {"EventId": "2f0c...", "UserPoolId": "us-east-1_EXAMPLE", "ClientId": "app1",
     "Username": "alice", "UserSub": "7d1e...", "EventType": "SignIn",
     "EventResponse": "Pass", "CreationDate": "2026-03-01T08:15:02.120Z",
     "ChallengeResponses": [{"ChallengeName": "Password", "ChallengeResponse": "Success"}],
     "ContextData": {"IpAddress": "81.2.69.160", "ServerName": "auth.example.com",
                     "ServerPath": "/login",
                     "HttpHeaders": [{"headerName": "User-Agent", "headerValue": "Mozilla/5.0 ..."}],
                     "EncodedData": "..."},
     "RoundTripTimeMs": 312, "CompromisedCredentialsDetected": false,
     "Labels": {"is_account_takeover": false}}

Required: Username, EventType, EventResponse, CreationDate (ISO 8601, or epoch
seconds/milliseconds). EventId is optional: without it the id is derived from
the line's content. When ContextData is present, its IpAddress, ServerName,
ServerPath and HttpHeaders are required, as in the Cognito API. ``Labels`` (an
object of label name to value) goes to the labels table, never to the event
(:func:`label_values`: a ``null`` label is none, ``is_account_takeover`` a yes or
a no, ``attack_type`` a string).
Unknown top-level fields are kept in the event's ``extra`` column.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import pyarrow as pa

from ingest.errors import InputFormatError
from ingest.labels import BOOLEAN_LABELS, boolean_label_value
from ingest.schema import short_digest
from ingest.sources import base
from ingest.sources.base import (
    QuarantineBuilder,
    ReadBatch,
    ReaderOptions,
    LineBatch,
    Part,
    deeper_than,
    iter_line_arrays,
    nested_too_deeply,
    parsed_in_turn,
)
from ingest.sources.jsonfields import JsonField, extra_json, extract, malformed_reason, rename_struct_list

NAME = "riskgate-jsonl"

FIELDS = [
    JsonField("EventId", "$.EventId", "string", "event_id"),
    JsonField("UserPoolId", "$.UserPoolId", "string", "user_pool_id"),
    JsonField("ClientId", "$.ClientId", "string", "client_id"),
    JsonField("Username", "$.Username", "string", "username", required=True),
    JsonField("UserSub", "$.UserSub", "string", "user_sub"),
    JsonField("EventType", "$.EventType", "string", "event_type", required=True),
    JsonField("EventResponse", "$.EventResponse", "string", "event_response", required=True),
    JsonField("CreationDate", "$.CreationDate", "time", "creation_date", required=True),
    JsonField("ChallengeResponses", "$.ChallengeResponses", "array", "challenge_responses",
              item=[{"ChallengeName": "VARCHAR", "ChallengeResponse": "VARCHAR"}]),
    JsonField("ContextData", "$.ContextData", "object", None),
    # blank is missing: an empty address would be context data no IP-range exception can ever match
    JsonField("ContextData.IpAddress", "$.ContextData.IpAddress", "string", "ip_address", required_if="ContextData",
              blank_is_missing=True),
    JsonField("ContextData.ServerName", "$.ContextData.ServerName", "string", "server_name", required_if="ContextData"),
    JsonField("ContextData.ServerPath", "$.ContextData.ServerPath", "string", "server_path", required_if="ContextData"),
    JsonField("ContextData.HttpHeaders", "$.ContextData.HttpHeaders", "array", "http_headers",
              required_if="ContextData", item=[{"headerName": "VARCHAR", "headerValue": "VARCHAR"}]),
    JsonField("ContextData.EncodedData", "$.ContextData.EncodedData", "string", "encoded_data"),
    JsonField("RoundTripTimeMs", "$.RoundTripTimeMs", "number", "rtt_ms"),
    JsonField("CompromisedCredentialsDetected", "$.CompromisedCredentialsDetected", "bool", "compromised_credentials"),
    JsonField("Labels", "$.Labels", "object", "_labels"),
]
KNOWN_KEYS = [f.name for f in FIELDS if "." not in f.name]

class RiskgateJsonl:
    name = NAME
    description = "riskgate JSON lines: one Cognito-shaped event (with ContextData) per line"

    def sniff(self, head: bytes) -> bool:
        """The first line with content is an event; or, when it does not even begin an object (a log cut in the
        middle of a record, at rotation), the next complete one is."""
        lines = _content_lines(head)
        if lines and not lines[0].startswith(b"{"):
            lines = lines[1:]
        return bool(lines) and _looks_like_event(lines[0])

    def read(self, path: str, options: ReaderOptions) -> Iterator[ReadBatch]:
        return parsed_in_turn(self.read_parts(path, options))

    def read_parts(self, path: str, options: ReaderOptions) -> Iterator[Part]:
        """The input's batches as parts (``ingest.sources.base.PartReader``): the lines of each, read in order;
        a part parses them on the connection it is given."""
        first = True
        for lb in iter_line_arrays(path, options.batch_rows, expected="riskgate JSON lines, one event object per line"):
            yield partial(self._part, path, lb, options, first)
            first = False
            del lb

    def _part(self, path: str, lb: LineBatch, options: ReaderOptions, first: bool, con) -> ReadBatch:
        batch = self._batch(con, path, lb, options)
        if first and batch.events.num_rows == 0 and batch.quarantine.num_rows:
            _refuse_if_not_json_lines(path, batch)
            _refuse_if_another_format(path)
        return batch

    def _batch(self, con, path: str, lb: LineBatch, options: ReaderOptions) -> ReadBatch:
        q = QuarantineBuilder(NAME, path)
        for line, reason, raw in lb.quarantine:
            q.add(line, reason, raw)
        t = extract(con, lb.texts, lb.lines, FIELDS, KNOWN_KEYS, "_s['ContextData'] IS NOT NULL AS has_context_data")
        t = t.set_column(t.column_names.index("http_headers"), "http_headers",
                         rename_struct_list(t.column("http_headers"), ["header_name", "header_value"]))
        t = t.set_column(t.column_names.index("challenge_responses"), "challenge_responses",
                         rename_struct_list(t.column("challenge_responses"), ["challenge_name", "challenge_response"]))
        return assemble(t, q, options, derive_id_prefix="rg")


def _refuse_if_not_json_lines(path: str, batch: ReadBatch) -> None:
    """A file none of whose first lines is a JSON object is not this format: one error, not a row per line."""
    reasons = batch.quarantine.column("reason").to_pylist()
    if all(r.startswith(("malformed JSON", "not a JSON object", "not UTF-8")) for r in reasons):
        line = batch.quarantine.column("source_line")[0].as_py()
        raise InputFormatError(
            f"is not riskgate JSON lines: none of its first {len(reasons)} lines is a JSON object "
            f"(line {line}: {reasons[0]})",
            source=path,
        )


def _looks_like_event(line: bytes) -> bool:
    return line.startswith(b"{") and (b'"EventType"' in line or b'"ContextData"' in line) and b'"Username"' in line


def _content_lines(head: bytes, most: int = 2) -> list[bytes]:
    """The first ``most`` lines with content of ``head``, stripped; a last line not ended in ``head`` only when it
    is the first (``read_head`` always ends the first line with content; the next may be cut)."""
    out = []
    parts = head.split(b"\n")
    for i, line in enumerate(parts):
        if len(out) == most:
            break
        if line.strip() and (i < len(parts) - 1 or not out):
            out.append(line.strip())
    return out


def _refuse_if_another_format(path: str) -> None:
    """Given ``--format riskgate-jsonl``, a file of another format (every row of the first batch quarantined, and
    another format recognises it) is refused as a whole, naming that format, instead of a quarantine row per line."""
    from ingest.sources import detect_format

    try:
        other = detect_format(path)
    except InputFormatError:
        return
    if other != NAME:
        raise InputFormatError(f"is not riskgate JSON lines: no line of its first batch is an event, and it reads "
                               f"as {other} (give --format {other}, or leave --format out)", source=path)


def assemble(t: pa.Table, q: QuarantineBuilder, options: ReaderOptions, derive_id_prefix: str) -> ReadBatch:
    """Split an extracted batch into good rows and quarantine; derive missing ids; collect labels and extras.

    The per-row Python work here touches only bad rows, rows with unknown keys and rows with labels. Those last
    two are parsed in Python, which recurses: a row whose kept JSON nests too deeply (``MAX_JSON_DEPTH``) is
    quarantined too.
    """
    good = t
    if t.column("reason").null_count != t.num_rows:  # (the usual batch has no bad row: no per-row Python)
        reasons = t.column("reason").to_pylist()
        raws = t.column("_raw")
        lines = t.column("_line").to_pylist()
        good_idx = []
        for i, r in enumerate(reasons):
            if r is None:
                good_idx.append(i)
            else:
                raw = raws[i].as_py().rstrip("\r\n")
                if r == "malformed JSON":
                    r = malformed_reason(raw)
                q.add(lines[i], r, raw)
        good = t.take(pa.array(good_idx, pa.int64()))
    good = _derive_ids(good, derive_id_prefix)
    extras, deep = _extras(good)
    labels, bad_labels = _labels(good, deep) if "_labels" in good.column_names else (None, {})
    deep |= bad_labels
    if deep:  # quarantined instead (their labels are left out already)
        raws, lines = good.column("_raw"), good.column("_line")
        for i, reason in deep.items():
            q.add(lines[i].as_py(), reason, raws[i].as_py().rstrip("\r\n"))
        keep = [i for i in range(good.num_rows) if i not in deep]
        good = good.take(pa.array(keep, pa.int64()))
        extras = [extras[i] for i in keep] if extras is not None else None
    extra = pa.array(extras, pa.string()) if extras is not None else pa.nulls(good.num_rows, pa.string())
    good = good.append_column("extra", extra)
    if options.user_pool_id and "user_pool_id" in good.column_names:
        pools = good.column("user_pool_id").to_pylist()
        good = good.set_column(
            good.column_names.index("user_pool_id"),
            "user_pool_id",
            pa.array([p or options.user_pool_id for p in pools], pa.string()),
        )
    good = good.append_column("source_line", good.column("_line"))
    return ReadBatch(events=good, quarantine=q.table(), labels=labels if labels is not None and labels.num_rows else None)


def _too_deep(value: str | None, raw: str, limit: int) -> str | None:
    """The reason to quarantine a row whose kept JSON ``value`` (None: too deep for the parser) nests more than
    ``limit`` levels, at the column of ``raw`` (the row) where the row does; None when it does not."""
    if value is not None and deeper_than(value, limit) is None:  # (deeper_than counts the brackets first)
        return None
    at = deeper_than(raw)
    return nested_too_deeply(f"column {(at or 0) + 1}")


def _extras(good: pa.Table) -> tuple[list[str | None] | None, dict[int, str]]:
    """Each row's unknown fields as a JSON object (None: no row has any), and the rows nesting them too deeply."""
    if good.column("_unknown_keys").null_count == good.num_rows:
        return None, {}
    extras: list[str | None] = [None] * good.num_rows
    deep: dict[int, str] = {}
    raw_list = None
    for i, keys in enumerate(good.column("_unknown_keys").to_pylist()):
        if keys:
            if raw_list is None:
                raw_list = good.column("_raw").to_pylist()
            try:
                extras[i] = extra_json(raw_list[i], keys)
            except RecursionError:  # the line is too deep for the parser
                extras[i] = None
                deep[i] = _too_deep(None, raw_list[i], base.MAX_JSON_DEPTH)
                continue
            reason = _too_deep(extras[i], raw_list[i], base.MAX_JSON_DEPTH)  # the row's object and the extra's: level 1
            if reason:
                deep[i] = reason
    return extras, deep


def _derive_ids(t: pa.Table, prefix: str) -> pa.Table:
    """Sources without an EventId get one derived from the row's content (the raw line)."""
    ids = t.column("event_id")
    if ids.null_count == 0:
        return t
    raws = t.column("_raw").to_pylist()
    out = [
        i if i is not None else prefix + "-" + short_digest(raws[k].rstrip("\r\n"))
        for k, i in enumerate(ids.to_pylist())
    ]
    return t.set_column(t.column_names.index("event_id"), "event_id", pa.array(out, pa.string()))


def _labels(good: pa.Table, skip: dict[int, str]) -> tuple[pa.Table | None, dict[int, str]]:
    """The labels of the rows (those in ``skip`` left out), and the rows to quarantine for their Labels: nested
    too deeply, or a label value :func:`label_values` refuses."""
    import json

    vals = good.column("_labels")
    if vals.null_count == good.num_rows:
        return None, {}
    ids = good.column("event_id").to_pylist()
    lines = good.column("_line").to_pylist()
    raws = good.column("_raw")
    ev, lab, val, at = [], [], [], []
    bad: dict[int, str] = {}
    for i, v in enumerate(vals.to_pylist()):
        if not v or i in skip:
            continue
        reason = _too_deep(v, raws[i].as_py(), base.MAX_JSON_DEPTH - 1)  # Labels is one level below the row's object
        if reason:
            bad[i] = reason
            continue
        pairs, reason = label_values(json.loads(v))
        if reason:
            bad[i] = reason
            continue
        for k, x in pairs:
            ev.append(ids[i])
            lab.append(k)
            val.append(x)
            at.append(lines[i])
    return pa.table(
        {
            "event_id": pa.array(ev, pa.string()),
            "label": pa.array(lab, pa.string()),
            "value": pa.array(val, pa.string()),
            "source": pa.array([NAME] * len(ev), pa.string()),
            "source_line": pa.array(at, pa.int64()),  # the row the label came with (``ingest.store.insert_labels``)
        }
    ), bad


def label_values(labels: dict) -> tuple[list[tuple[str, str]], str | None]:
    """A ``Labels`` object's labels as (name, stored text) pairs, or the reason to quarantine its row.

    The rules of ``riskgate labels load`` (``ingest.labels``): a JSON ``null`` or a blank string is no label
    (nothing stored);
    ``is_account_takeover`` is stored as ``true`` / ``false`` from ``true``/``false`` or a spelling that
    command accepts (``1``/``0``, ``"yes"``/``"no"``, ...), anything else refuses the row; ``attack_type``
    names an attack (``risk.feedback.ATTACK_LABEL_SQL``), so it must be a string; any other label is kept as
    written (a string as itself, another value as its JSON text, without its members named password, at any
    depth: a password is never stored).
    """
    import json

    pairs, reasons = [], []
    for k, x in labels.items():
        if x is None or (isinstance(x, str) and not x.strip()):  # as a blank cell of a labels file: no label
            continue
        if k in BOOLEAN_LABELS:
            text = json.dumps(x) if isinstance(x, (bool, int, float)) else x if isinstance(x, str) else None
            value = boolean_label_value(text) if text is not None else None
            if value is None:
                reasons.append(f"Labels.{k} must be true or false (or 1/0, yes/no, t/f), got {_shown(x)}")
            else:
                pairs.append((k, value))
        elif k == "attack_type" and not isinstance(x, str):
            reasons.append(f"Labels.{k} must be a string or null, got {_shown(x)}")
        else:  # an object or array without its members named password (``ingest.pipeline`` leaves out a label
            # named password, whichever reader made it)
            # (a string that is JSON text is looked into too)
            pairs.append((str(k), base.without_passwords(x) if isinstance(x, str)
                           else json.dumps(base.without_passwords(x))))
    return pairs, "; ".join(reasons) or None


def _shown(value) -> str:
    """A label's value in a quarantine reason: a string or number as JSON writes it (cut at 100 characters),
    another value by its JSON type."""
    import json

    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (str, int, float)):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 100 else text[:100] + "…"
    return "an array" if isinstance(value, list) else "an object"


READER = RiskgateJsonl()
