"""The reader contract, checked the same way over every reader; and format detection for every format."""

from __future__ import annotations

import gzip
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.schema import LABEL_SCHEMA, QUARANTINE_SCHEMA, REQUIRED, SOURCE_COLUMNS, SOURCE_SCHEMA, conform
from ingest.sources import detect_format, get_reader, reader_names
from ingest.sources.base import RAW_COLUMN, ReaderOptions
from ingest.sources.rba_csv import HEADER

MAPPING = {"columns": {"username": "user", "creation_date": "ts", "event_response": "ok", "ip_address": "ip"},
           "constants": {"event_type": "SignIn"}, "labels": {"is_account_takeover": "ato"}}
UA_RECORD = {"eventTimestamp": "1687297330677", "eventSource": "USER_ACTIVITY", "logLevel": "INFO",
             "message": {"eventId": "x", "eventType": "SignIn", "userName": "u", "eventResponse": "Pass",
                         "ipAddress": "192.0.2.1", "hasContextData": "true", "challenges": []}}
AUTH_EVENT = {"EventId": "x", "EventType": "SignIn", "CreationDate": "2024-07-17T17:25:55.123000+00:00",
              "EventResponse": "Pass", "EventContextData": {"IpAddress": "192.0.2.1"}}


def _ua(event_id, **kw):
    r = json.loads(json.dumps(UA_RECORD))
    r["message"].update(eventId=event_id, **kw)
    return json.dumps(r)


def _rg(**kw):
    return json.dumps({"Username": "alice", "EventType": "SignIn", "EventResponse": "Pass",
                       "CreationDate": "2026-03-01T08:15:02.120Z", **kw})


def make_input(fmt: str, tmp_path) -> tuple[str, ReaderOptions]:
    """A small input of each format: two good rows and one bad one."""
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps(MAPPING))
    if fmt == "riskgate-jsonl":
        text = "\n".join([_rg(EventId="r1", Labels={"is_account_takeover": False}), "{broken", _rg()]) + "\n"
        return _put(tmp_path / "in.jsonl", text), ReaderOptions()
    if fmt == "cognito-user-activity":
        text = "\n".join([_ua("a1"), _ua("a2", userName=""), "2024-07-17T17:25:55.677Z " + _ua("a3")]) + "\n"
        return _put(tmp_path / "in.jsonl", text), ReaderOptions()
    if fmt == "cognito-auth-events":
        doc = {"AuthEvents": [AUTH_EVENT, {**AUTH_EVENT, "EventId": "y", "EventType": 5},
                              {**AUTH_EVENT, "EventId": "z"}]}
        return _put(tmp_path / "in.json", json.dumps(doc, indent=2)), ReaderOptions(username="alice")
    if fmt == "rba-csv":
        text = "\n".join([HEADER,
                          "1,2020-02-03 12:43:30.772,u1,,10.0.0.1,NO,-,-,29695,ua,b,o,d,False,False,False",
                          "2,not a time,u2,,10.0.0.2,NO,-,-,29695,ua,b,o,d,False,False,False",
                          '3,2020-02-03 12:43:31,u3,100,10.0.0.3,NO,Oslo,Oslo,1,"a,b",b,o,d,True,False,True']) + "\n"
        return _put(tmp_path / "in.csv", text), ReaderOptions()
    if fmt == "csv":
        text = "user,ts,ok,ip,ato\nu1,2024-01-01T00:00:00Z,Pass,10.0.0.1,false\nu2,never,Pass,,\nu3,1704067200,Fail,,true\n"
        return _put(tmp_path / "in.csv", text), ReaderOptions(mapping=str(mapping))
    if fmt == "parquet":
        t = pa.table({"user": ["u1", None, "u3"], "ts": pa.array([1704067200000, 1704067201000, 1704067202000]),
                      "ok": ["Pass", "Pass", "Fail"], "ip": ["10.0.0.1", None, None], "ato": [False, None, True]})
        p = tmp_path / "in.parquet"
        pq.write_table(t, p)
        return str(p), ReaderOptions(mapping=str(mapping))
    raise AssertionError(fmt)


def _put(path, text) -> str:
    path.write_text(text)
    return str(path)


def _conforms(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Same type, with UTC spelled any way (UTC, Etc/UTC) counting as UTC."""
    if pa.types.is_timestamp(expected):
        return (pa.types.is_timestamp(actual) and actual.unit == expected.unit
                and actual.tz in ("UTC", "Etc/UTC", "+00:00"))
    return actual == expected


FORMATS = ["riskgate-jsonl", "cognito-user-activity", "cognito-auth-events", "rba-csv", "csv", "parquet"]
SOURCE_TYPES = {f.name: f.type for f in SOURCE_SCHEMA}


def test_every_format_has_a_reader():
    assert reader_names() == FORMATS


@pytest.mark.parametrize("fmt", FORMATS)
def test_reader_contract(fmt, tmp_path):
    path, options = make_input(fmt, tmp_path)
    reader = get_reader(fmt)
    assert reader.name == fmt and reader.description
    batches = list(reader.read(path, options))
    events = quarantined = 0
    ids = []
    for batch in batches:
        ev, q = batch.events, batch.quarantine
        assert batch.rows_read == ev.num_rows + q.num_rows
        for name in ev.column_names:
            if name in SOURCE_TYPES:
                assert _conforms(ev.schema.field(name).type, SOURCE_TYPES[name]), (name, ev.schema.field(name).type)
        for name in REQUIRED:
            assert name in ev.column_names and ev.column(name).null_count == 0, name
        assert pa.types.is_string(ev.schema.field(RAW_COLUMN).type) or pa.types.is_large_string(
            ev.schema.field(RAW_COLUMN).type)
        assert ev.column(RAW_COLUMN).null_count == 0
        lines = ev.column("source_line").to_pylist()
        assert ev.schema.field("source_line").type == pa.int64()
        assert lines == sorted(lines) and all(x >= 1 for x in lines)
        assert all(re.fullmatch(r"[\w+-]{1,50}", i) for i in ev.column("event_id").to_pylist())
        if "extra" in ev.column_names:
            for x in ev.column("extra").to_pylist():
                assert x is None or isinstance(json.loads(x), dict)
        assert conform(ev).schema.names == SOURCE_COLUMNS
        assert q.schema == QUARANTINE_SCHEMA
        assert all(r and ln >= 1 for r, ln in zip(q.column("reason").to_pylist(), q.column("source_line").to_pylist()))
        if batch.labels is not None:
            assert [(f.name, f.type) for f in batch.labels.schema] == [(f.name, f.type) for f in LABEL_SCHEMA]
            assert set(batch.labels.column("event_id").to_pylist()) <= set(ev.column("event_id").to_pylist())
        events += ev.num_rows
        quarantined += q.num_rows
        ids += ev.column("event_id").to_pylist()
    assert (events, quarantined) == (2, 1)
    again = [i for b in reader.read(path, options) for i in b.events.column("event_id").to_pylist()]
    assert again == ids  # ids are stable across reads (derived ones included)


SAMPLES = {
    "riskgate-jsonl": lambda tmp: make_input("riskgate-jsonl", tmp)[0],
    "cognito-user-activity": lambda tmp: make_input("cognito-user-activity", tmp)[0],
    "cognito-auth-events": lambda tmp: make_input("cognito-auth-events", tmp)[0],
    "rba-csv": lambda tmp: make_input("rba-csv", tmp)[0],
    "csv": lambda tmp: make_input("csv", tmp)[0],
    "parquet": lambda tmp: make_input("parquet", tmp)[0],
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_detect_format(fmt, compressed, tmp_path):
    path = SAMPLES[fmt](tmp_path)
    if compressed:
        with open(path, "rb") as fh:
            data = fh.read()
        path = path + ".gz"
        with open(path, "wb") as fh:
            fh.write(gzip.compress(data))
    assert detect_format(path) == fmt


@pytest.mark.parametrize("text, fmt", [
    ('{"messageType": "DATA_MESSAGE", "logEvents": [{"id": "1", "timestamp": 1, "message": '
     + json.dumps(_ua("w1")) + "}]}\n", "cognito-user-activity"),
    ('{"AuthEvents": [], "NextToken": "t"}\n', "cognito-auth-events"),
    ("\ufeff" + HEADER + "\r\n", "rba-csv"),
    ("a;b;c\n1;2;3\n", "csv"),
])
def test_detect_format_variants(text, fmt, tmp_path):
    p = tmp_path / "x"
    p.write_text(text, encoding="utf-8")
    assert detect_format(str(p)) == fmt


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_detect_format_reads_a_first_record_longer_than_the_head(compressed, tmp_path):
    # an event whose headers come before its Username and make its line longer than the first 64 KiB read
    headers = [{"headerName": f"x-h{i}", "headerValue": "v" * 200} for i in range(400)]
    record = {"ContextData": {"IpAddress": "192.0.2.1", "ServerName": "s", "ServerPath": "/",
                              "HttpHeaders": headers},
              "EventType": "SignIn", "Username": "alice", "CreationDate": "2026-01-01T00:00:00Z"}
    line = (json.dumps(record) + "\n").encode()
    assert len(line) > 65536 and line.index(b'"Username"') > 65536
    p = tmp_path / ("big.jsonl.gz" if compressed else "big.jsonl")
    p.write_bytes(gzip.compress(line * 2) if compressed else line * 2)
    assert detect_format(str(p)) == "riskgate-jsonl"


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_readers_rows_go_through_the_pool_id_check(fmt, tmp_path):
    """The UserPoolId check (the risk configuration's rule) is enrich's, after every reader: a pool id a reader
    gives its rows, from the input or from --user-pool-id, is checked the same way whatever the format."""
    from ingest.enrich import Enricher

    path, options = make_input(fmt, tmp_path)
    enricher = Enricher(geo=None)
    for batch in get_reader(fmt).read(path, options):
        ev = batch.events
        pool = pa.array(["q" * 56] * ev.num_rows, pa.string())
        ev = (ev.set_column(ev.column_names.index("user_pool_id"), "user_pool_id", pool)
              if "user_pool_id" in ev.column_names else ev.append_column("user_pool_id", pool))
        good, bad = enricher.run(ev, fmt, path)
        assert (good.num_rows, bad.num_rows) == (0, ev.num_rows)
        assert all('UserPoolId "' + "q" * 56 + '" is too long: at most 55' in r for r in bad.column("reason").to_pylist())
