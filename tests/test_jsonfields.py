"""The two ways of ``ingest.sources.jsonfields.extract``: Arrow's JSON reader for batches of well-formed records,
DuckDB's JSON functions for everything else. Whatever the batch, both give the same table."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from ingest.sources import cognito_user_activity, riskgate_jsonl
from ingest.sources.base import iter_line_arrays
from ingest.sources.jsonfields import _extract_fast, _fast_schema, extract
from ingest.store import scratch

EXTRA = "_s['ContextData'] IS NOT NULL AS has_context_data"


def _record(i: int, **kw) -> dict:
    rec = {
        "EventId": f"ev-{i}", "UserPoolId": "us-east-1_Test", "ClientId": "app", "Username": f"user{i % 7}",
        "UserSub": f"sub-{i % 7}", "EventType": "SignIn", "EventResponse": "Pass" if i % 5 else "Fail",
        "CreationDate": f"2026-03-01T08:{i % 60:02d}:{i % 59:02d}.{i % 1000:03d}Z",
        "ChallengeResponses": [{"ChallengeName": "Password", "ChallengeResponse": "Success"}],
        "ContextData": {"IpAddress": f"81.2.69.{i % 250}", "ServerName": "auth.example.com", "ServerPath": "/login",
                        "HttpHeaders": [{"headerName": "User-Agent", "headerValue": f"Mozilla/5.0 agent \u00e9 {i % 3}"},
                                        {"headerName": "X-Forwarded-For", "headerValue": "10.0.0.1, 81.2.69.1"}],
                        "EncodedData": "abc" if i % 2 else None},
        "RoundTripTimeMs": [151, 0.1, -0.0, 12345678901234567890, 2.5e-7][i % 5],
        "CompromisedCredentialsDetected": bool(i % 3 == 0),
    }
    if i % 4 == 0:
        del rec["EventId"]  # derived from the line later: the raw text must come through
    if i % 12 == 0:
        del rec["ContextData"]  # absent
    elif i % 6 == 0:
        rec["ContextData"] = None  # JSON null
    rec.update(kw)
    return rec


def _batches(tmp_path, lines: list[str | bytes], name="in.jsonl"):
    path = tmp_path / name
    path.write_bytes(b"".join(x if isinstance(x, bytes) else x.encode() + b"\n" for x in lines))
    return list(iter_line_arrays(str(path), 10_000))


def _both(con, lb, fields=riskgate_jsonl.FIELDS, keys=riskgate_jsonl.KNOWN_KEYS, extra=EXTRA):
    fast = extract(con, lb.texts, lb.lines, fields, keys, extra)
    slow = extract(con, lb.texts, lb.lines, fields, keys, extra, fast=False)
    return fast, slow


GOOD = [json.dumps(_record(i), ensure_ascii=i % 2 == 0) for i in range(200)]


def test_good_records_take_the_fast_way_and_give_the_same_table(tmp_path):
    con = scratch()
    (lb,) = _batches(tmp_path, GOOD)
    assert _extract_fast(con, lb.texts, riskgate_jsonl.FIELDS, EXTRA) is not None
    fast, slow = _both(con, lb)
    assert fast.num_rows == 200
    assert fast.column("reason").null_count == 200
    assert fast.equals(slow)
    row = fast.slice(1, 1).to_pylist()[0]
    assert row["event_id"] == "ev-1" and row["rtt_ms"] == 0.1 and row["has_context_data"] is True
    assert row["http_headers"][0] == {"headerName": "User-Agent", "headerValue": "Mozilla/5.0 agent \u00e9 1"}
    assert str(row["creation_date"]) == "2026-03-01 08:01:01.001000+00:00"


def test_crlf_lines_blank_lines_and_batches_across_read_blocks(tmp_path, monkeypatch):
    from ingest.sources import base

    monkeypatch.setattr(base, "LINE_BLOCK_BYTES", 4096)  # a batch then spans many blocks (chunked arrays)
    lines = [(g + "\r\n").encode() if i % 3 == 0 else g for i, g in enumerate(GOOD)]
    lines.insert(5, "")
    lines.insert(9, "   ")
    (lb,) = _batches(tmp_path, lines)
    assert isinstance(lb.texts, pa.ChunkedArray) and lb.texts.num_chunks > 10
    con = scratch()
    assert _extract_fast(con, lb.texts, riskgate_jsonl.FIELDS, EXTRA) is not None
    fast, slow = _both(con, lb)
    assert fast.equals(slow)
    assert fast.column("_line").to_pylist()[:7] == [1, 2, 3, 4, 5, 7, 8]


# each line makes the Arrow reader or the checks refuse the batch; the SQL way gives its reasons
BAD = {
    "duplicate key": '{"Username":"a","Username":"b","EventType":"SignIn","EventResponse":"Pass","CreationDate":"2026-03-01T00:00:00Z"}',
    "unknown key": json.dumps(_record(1, Extra=1)),
    "unknown nested key": json.dumps(_record(1, ContextData={**_record(1)["ContextData"], "Other": 1})),
    "wrong type": json.dumps(_record(1, Username=5)),
    "number as text": json.dumps(_record(1, RoundTripTimeMs="151")),
    "epoch time": json.dumps(_record(1, CreationDate=1772323200)),
    "null required": json.dumps(_record(1, EventType=None)),
    "missing required": json.dumps({k: v for k, v in _record(1).items() if k != "Username"}),
    "empty context": json.dumps(_record(1, ContextData={})),
    "context without headers": json.dumps(_record(1, ContextData={"IpAddress": "1.2.3.4", "ServerName": "a",
                                                                  "ServerPath": "/"})),
    "null header item": json.dumps(_record(1, ContextData={**_record(1)["ContextData"], "HttpHeaders": [None]})),
    "null header name": json.dumps(_record(1, ContextData={**_record(1)["ContextData"],
                                                           "HttpHeaders": [{"headerName": None, "headerValue": "x"}]})),
    "header value a number": json.dumps(_record(1, ContextData={**_record(1)["ContextData"],
                                                                "HttpHeaders": [{"headerName": "a", "headerValue": 1}]})),
    "labels": json.dumps(_record(1, Labels={"is_account_takeover": True})),
    "empty labels": json.dumps(_record(1, Labels={})),
    "two objects": json.dumps(_record(1)) + json.dumps(_record(2)),
    "array": "[1, 2]",
    "truncated": json.dumps(_record(1))[:-1],
    "trailing space": json.dumps(_record(1)) + "  ",
    "too big a number": json.dumps(_record(1, RoundTripTimeMs=7)).replace('"RoundTripTimeMs": 7', '"RoundTripTimeMs": 1e400'),
    "lone surrogate": json.dumps(_record(1, UserSub="\ud800"), ensure_ascii=True),
    "raw tab in a string": json.dumps(_record(1)).replace("auth.example.com", "auth\t.example.com"),
}


#: unusual but good records (kept, or their extra keys kept): the SQL way gives them no reason
ACCEPTED = {"duplicate key", "unknown key", "unknown nested key", "labels", "empty labels", "epoch time",
            "trailing space"}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_or_unusual_line_sends_its_batch_the_sql_way(case, tmp_path):
    lines = GOOD[:50] + [BAD[case]] + GOOD[50:60]
    con = scratch()
    (lb,) = _batches(tmp_path, lines)
    assert _extract_fast(con, lb.texts, riskgate_jsonl.FIELDS, EXTRA) is None
    fast, slow = _both(con, lb)
    assert fast.equals(slow)
    assert fast.num_rows == 61
    reasons = fast.column("reason").to_pylist()
    assert reasons[:50] == [None] * 50 and reasons[51:] == [None] * 10
    assert (reasons[50] is None) == (case in ACCEPTED), reasons[50]
    if case == "too big a number":
        assert reasons[50] == "RoundTripTimeMs must be a finite number"
    # the good lines around it come out as the fast way would give them alone
    (alone,) = _batches(tmp_path, GOOD[:50], "alone.jsonl")
    assert fast.slice(0, 50).equals(extract(con, alone.texts, alone.lines, riskgate_jsonl.FIELDS,
                                            riskgate_jsonl.KNOWN_KEYS, EXTRA))


def test_fields_without_an_arrow_type_keep_the_sql_way():
    assert _fast_schema(riskgate_jsonl.FIELDS) is not None
    assert _fast_schema(cognito_user_activity.FIELDS) is None  # "" means absent, string-valued booleans


def test_texts_without_line_terminators_keep_the_sql_way():
    con = scratch()
    texts = pa.array(GOOD[:10], pa.string())
    assert _extract_fast(con, texts, riskgate_jsonl.FIELDS, EXTRA) is None
    fast = extract(con, GOOD[:10], list(range(1, 11)), riskgate_jsonl.FIELDS, riskgate_jsonl.KNOWN_KEYS, EXTRA)
    assert fast.column("reason").null_count == 10
