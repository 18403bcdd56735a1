"""ingest.sources.tabular: generic CSV and Parquet through a column mapping, and the CSV record reader."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.errors import ConfigurationError, InputFormatError
from ingest.sources.base import ReaderOptions
from ingest.sources.tabular import CSV_READER, PARQUET_READER, iter_csv_records, load_mapping
from tests.test_docs import README

UTC = timezone.utc
MAPPING = {
    "columns": {"username": "user", "creation_date": "ts", "ip_address": "client_ip", "user_agent_source": "ua",
                "event_response": "ok"},
    "constants": {"event_type": "SignIn"},
    "time_format": "%Y-%m-%d %H:%M:%S",
    "values": {"event_response": {"1": "Pass", "0": "Fail"}},
    "headers": {"User-Agent": "ua"},
    "labels": {"is_account_takeover": "label_col"},
    "label_source": "my-data",
}
CSV = (
    "user,ts,client_ip,ua,ok,label_col,note\n"
    'alice,2024-01-02 03:04:05,10.0.0.1,"Mozilla/5.0 (X11, Linux)",1,false,hello\n'
    "bob,2024-01-02 03:04:06,,curl/8,0,true,\n"
)


def mapping_file(tmp_path, doc=None, name="mapping.yaml", text=None):
    p = tmp_path / name
    p.write_text(text if text is not None else json.dumps(doc if doc is not None else MAPPING))
    return str(p)


def read_all(reader, path, **opts):
    batches = list(reader.read(str(path), ReaderOptions(**opts)))
    events = pa.concat_tables([b.events for b in batches])
    quarantine = pa.concat_tables([b.quarantine for b in batches])
    labels = [b.labels for b in batches if b.labels is not None]
    return batches, events, quarantine, (pa.concat_tables(labels) if labels else None)


def write(tmp_path, text, name="data.csv"):
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return p


# -- the mapping ---------------------------------------------------------------


def test_mapping_reads_yaml_with_numeric_value_keys(tmp_path):
    m = load_mapping(mapping_file(tmp_path, text=(
        "columns: {username: u, creation_date: t, event_response: r}\n"
        "constants: {event_type: SignIn}\n"
        "values: {event_response: {1: Pass, 0: Fail}}\n")), "csv")
    assert m.values == {"event_response": {"1": "Pass", "0": "Fail"}}
    assert m.time_zone == "UTC" and m.keep_unmapped and m.csv.delimiter == ","


def test_mapping_yaml_scalars_are_the_text_written(tmp_path):
    """YAML 1.1 had read Norway's code NO as false (its location then dropped), 0123 as octal 83, and the value keys
    yes/no as booleans that no cell matched: a mapping's plain scalars are text (numbers and booleans read from it)."""
    m = load_mapping(mapping_file(tmp_path, text=(
        "columns: {username: u, creation_date: t, event_response: r}\n"
        "constants: {event_type: SignIn, source_country: NO, server_name: 0123, source_asn: 2119, rtt_ms: 1.5e2,\n"
        "            has_context_data: yes}\n"
        "values: {event_response: {yes: Pass, no: Fail, 1: Pass, 0: Fail, on: Pass, off: Fail}}\n"
        "keep_unmapped: off\n"
        "csv: {quote_char: ~}\n")), "csv")
    assert m.constants == {"event_type": "SignIn", "source_country": "NO", "server_name": "0123",
                           "source_asn": "2119", "rtt_ms": "1.5e2", "has_context_data": "yes"}
    assert m.values == {"event_response": {"yes": "Pass", "no": "Fail", "1": "Pass", "0": "Fail", "on": "Pass",
                                           "off": "Fail"}}
    assert m.keep_unmapped is False and m.csv.quote_char is None
    data = write(tmp_path, "u,t,r\nola,2026-03-01T08:00:00Z,yes\nkari,2026-03-01T09:00:00Z,off\n")
    _, events, quarantine, _ = read_all(CSV_READER, data, mapping=mapping_file(tmp_path, text=(
        "columns: {username: u, creation_date: t, event_response: r}\n"
        "constants: {event_type: SignIn, source_country: NO, source_asn: 2119}\n"
        "values: {event_response: {yes: Pass, off: Fail}}\n"), name="m2.yaml"))
    assert quarantine.num_rows == 0
    assert events.select(["username", "event_response", "source_country", "source_asn"]).to_pylist() == [
        {"username": "ola", "event_response": "Pass", "source_country": "NO", "source_asn": 2119},
        {"username": "kari", "event_response": "Fail", "source_country": "NO", "source_asn": 2119}]


@pytest.mark.parametrize("constant, message", [
    ("rtt_ms: .inf", "constants.rtt_ms must be a finite number, got '.inf'"),
    ("rtt_ms: fast", "constants.rtt_ms must be a finite number, got 'fast'"),
    ("source_asn: AS2119", "constants.source_asn must be an integer (AS number), got 'AS2119'"),
    ("source_asn: -1", "constants.source_asn must be an integer (AS number), got '-1'"),
    ("has_context_data: maybe", "constants.has_context_data must be true or false, got 'maybe'"),
])
def test_mapping_constants_that_are_not_what_their_field_holds_are_refused(tmp_path, constant, message):
    path = mapping_file(tmp_path, text=("columns: {username: u, creation_date: t, event_response: r}\n"
                                        f"constants: {{event_type: SignIn, {constant}}}\n"))
    with pytest.raises(ConfigurationError, match="invalid column mapping") as exc:
        load_mapping(path, "csv")
    assert message in str(exc.value)


@pytest.mark.parametrize("change, message", [
    ({"columns": {**MAPPING["columns"], "user_name": "x", "ip": "y"}},
     "unknown canonical fields 'user_name', 'ip'; expected one of: event_id, user_pool_id"),
    ({"constants": {"event_type": "SignIn", "username": "x"}}, "mapped both to a column and to a constant: username"),
    ({"constants": {}}, "required field event_type not mapped"),
    ({"time_zone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ({"values": {"event_type": {"a": "b"}}}, "values given for fields not mapped to a column: event_type"),
    ({"colums": {}}, "colums: Extra inputs are not permitted"),
    ({"columns": {"username": "user", "event_response": "ok"},
      "constants": {"event_type": "SignIn", "creation_date": "2024-01-01"}}, "must come from a column, not a constant: creation_date"),
    ({"constants": {"event_type": "SignIn", "has_context_data": "maybe"}}, "constants.has_context_data must be true or false"),
    ({"csv": {"delimiter": ";;"}}, "csv.delimiter: must be a single character"),
    ({"csv": {"delimiter": "§"}}, "csv.delimiter: must be an ASCII character (one byte in UTF-8), got '§'"),
    ({"csv": {"quote_char": "«"}}, "csv.quote_char: must be an ASCII character (one byte in UTF-8), got '«'"),
    ({"time_format": "YYYY-MM-DD"}, "must be a strptime format"),
    ({"time_format": "%Y-%m-%d %Q"}, "time_format: '%Y-%m-%d %Q' is not a strptime format DuckDB reads: "
                                     "Unrecognized format for strftime/strptime: %Q"),
    ({"time_format": "%Y-%m-%d %"}, "DuckDB reads: Trailing format character %"),
    ({"constants": {"event_type": "Login"}},
     "constants.event_type must be one of SignIn, SignUp, ForgotPassword, PasswordChange, ResendCode, got 'Login'"),
    ({"columns": {"username": "user", "creation_date": "ts"}, "values": {},
      "constants": {"event_type": "SignIn", "event_response": "OK"}},
     "constants.event_response must be one of Pass, Fail, InProgress (or Success, Failure), got 'OK'"),
    ({"values": {"event_response": {"1": "Pass", "0": "KO"}}},
     "values.event_response.0 must be one of Pass, Fail, InProgress (or Success, Failure), got 'KO'"),
])
def test_mapping_errors_name_what_is_wrong(tmp_path, change, message):
    path = mapping_file(tmp_path, {**MAPPING, **change})
    with pytest.raises(ConfigurationError, match="invalid column mapping") as exc:
        load_mapping(path, "csv")
    assert message in str(exc.value)
    assert path in str(exc.value)


def test_mapping_missing_or_unreadable(tmp_path):
    with pytest.raises(ConfigurationError, match="pass --mapping FILE"):
        load_mapping(None, "csv")
    with pytest.raises(ConfigurationError, match="not valid YAML or JSON"):
        load_mapping(mapping_file(tmp_path, text="columns: [unclosed"), "csv")
    with pytest.raises(ConfigurationError, match="must be an object"):
        load_mapping(mapping_file(tmp_path, text="- a\n- b\n"), "csv")
    with pytest.raises(ConfigurationError, match="cannot read the mapping file"):
        load_mapping(str(tmp_path / "nope.yaml"), "csv")


def test_reading_without_a_mapping_says_to_pass_one(tmp_path):
    with pytest.raises(ConfigurationError, match="the csv format needs a column-mapping file"):
        list(CSV_READER.read(str(write(tmp_path, CSV)), ReaderOptions()))


def test_mapped_columns_missing_from_the_file_are_named(tmp_path):
    m = mapping_file(tmp_path, {**MAPPING, "columns": {**MAPPING["columns"], "username": "login"}})
    with pytest.raises(InputFormatError, match=r"'login' \(for username\)") as exc:
        list(CSV_READER.read(str(write(tmp_path, CSV)), ReaderOptions(mapping=m)))
    assert "the file's columns are: 'user', 'ts'" in str(exc.value)


# -- CSV -------------------------------------------------------------------------


def test_csv_good_rows_map_exactly(tmp_path):
    _, ev, q, labels = read_all(CSV_READER, write(tmp_path, CSV), mapping=mapping_file(tmp_path))
    assert q.num_rows == 0
    a, b = ev.to_pylist()
    assert a["username"] == "alice" and b["username"] == "bob"
    assert a["creation_date"] == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert (a["event_type"], a["event_response"], b["event_response"]) == ("SignIn", "Pass", "Fail")
    assert (a["ip_address"], b["ip_address"]) == ("10.0.0.1", None)
    assert (a["has_context_data"], b["has_context_data"]) == (True, False)
    assert a["http_headers"] == [{"header_name": "User-Agent", "header_value": "Mozilla/5.0 (X11, Linux)"}]
    assert a["user_agent_source"] == "Mozilla/5.0 (X11, Linux)"
    assert (a["extra"], b["extra"]) == ('{"note":"hello"}', None)
    assert (a["source_line"], b["source_line"]) == (2, 3)
    assert a["_raw"] == 'alice,2024-01-02 03:04:05,10.0.0.1,"Mozilla/5.0 (X11, Linux)",1,false,hello'
    assert a["event_id"].startswith("row-") and len(a["event_id"]) == 36 and a["event_id"] != b["event_id"]
    assert labels.to_pylist() == [
        {"event_id": a["event_id"], "label": "is_account_takeover", "value": "false", "source": "my-data"},
        {"event_id": b["event_id"], "label": "is_account_takeover", "value": "true", "source": "my-data"},
    ]
    assert "label_col" not in ev.column_names and all("label" not in (x or "") for x in ev.column("extra").to_pylist())
    assert ev.schema.field("creation_date").type == pa.timestamp("us", tz="UTC")
    assert ev.schema.field("http_headers").type == pa.list_(pa.struct([("header_name", pa.string()),
                                                                        ("header_value", pa.string())]))


def test_a_boolean_label_is_stored_as_true_or_false_and_another_value_quarantines_its_row(tmp_path):
    """A mapped is_account_takeover was stored as written: "YES" was no takeover to training, "maybe" was kept."""
    text = ("user,ts,client_ip,ua,ok,label_col,note\n"
            "a,2024-01-02 03:04:05,10.0.0.1,x,1,YES,\n" "b,2024-01-02 03:04:06,10.0.0.1,x,1, 0 ,\n"
            "c,2024-01-02 03:04:07,10.0.0.1,x,1,maybe,\n" "d,2024-01-02 03:04:08,10.0.0.1,x,1,,\n"
            "e,2024-01-02 03:04:09,10.0.0.1,x,1,  ,\n")
    _, ev, q, labels = read_all(CSV_READER, write(tmp_path, text), mapping=mapping_file(tmp_path))
    assert ev.column("username").to_pylist() == ["a", "b", "d", "e"]
    assert q.select(["source_line", "reason"]).to_pylist() == [{"source_line": 4, "reason": (
        "label is_account_takeover (column 'label_col') must be true or false (or 1/0, yes/no, t/f): got 'maybe'")}]
    users = dict(zip(ev.column("event_id").to_pylist(), ev.column("username").to_pylist()))
    assert sorted((users[r["event_id"]], r["value"]) for r in labels.to_pylist()) == [("a", "true"), ("b", "false")]


def test_derived_event_ids_are_stable_and_a_mapped_id_wins(tmp_path):
    m = mapping_file(tmp_path)
    p = write(tmp_path, CSV)
    _, ev1, _, _ = read_all(CSV_READER, p, mapping=m)
    _, ev2, _, _ = read_all(CSV_READER, p, mapping=m)
    assert ev1.column("event_id").equals(ev2.column("event_id"))
    m2 = mapping_file(tmp_path, {**MAPPING, "columns": {**MAPPING["columns"], "event_id": "note"}}, name="m2.yaml")
    _, ev3, _, _ = read_all(CSV_READER, p, mapping=m2)
    ids = ev3.column("event_id").to_pylist()
    assert ids[0] == "hello" and ids[1] == ev1.column("event_id").to_pylist()[1]  # empty cell: derived


def test_csv_bad_rows_name_field_column_and_value(tmp_path):
    doc = {"columns": {"username": "user", "creation_date": "ts", "event_response": "ok", "source_asn": "asn",
                       "has_context_data": "ctx", "rtt_ms": "rtt"},
           "constants": {"event_type": "SignIn"}}
    text = ("user,ts,ok,asn,ctx,rtt\n"
            "a,2024-01-02T03:04:05Z,Pass,AS15169,yes,12\n"     # 2 good
            "b,yesterday,Pass,1,true,\n"                      # 3 bad time
            ",2024-01-02T03:04:05Z,Pass,1,true,\n"            # 4 missing username
            "c,2024-01-02T03:04:05Z,Pass,AS1x,maybe,fast\n"   # 5 three bad values
            "d,2024-01-02T03:04:05Z\n"                        # 6 too few columns
            "e,1704164645,Fail,,0,\n")                        # 7 good, epoch seconds
    _, ev, q, _ = read_all(CSV_READER, write(tmp_path, text), mapping=mapping_file(tmp_path, doc))
    assert ev.column("source_line").to_pylist() == [2, 7]
    assert ev.column("source_asn").to_pylist() == [15169, None]
    assert ev.column("has_context_data").to_pylist() == [True, False]
    assert ev.column("rtt_ms").to_pylist() == [12.0, None]
    assert ev.column("creation_date").to_pylist() == [datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)] * 2
    assert {r["source_line"]: r["reason"] for r in q.to_pylist()} == {
        3: "creation_date (column 'ts') is not an ISO 8601 time or epoch seconds/milliseconds: got 'yesterday'",
        4: "username (column 'user') is required but empty",
        5: "source_asn (column 'asn') must be an integer (AS number): got 'AS1x'; "
           "has_context_data (column 'ctx') must be true or false: got 'maybe'; "
           "rtt_ms (column 'rtt') must be a number: got 'fast'",
        6: "expected 6 columns, found 2",
    }


@pytest.mark.parametrize("value, zone, expected", [
    ("2024-01-02T03:04:05+02:00", "UTC", datetime(2024, 1, 2, 1, 4, 5, tzinfo=UTC)),
    ("2024-01-02 03:04:05.250", "UTC", datetime(2024, 1, 2, 3, 4, 5, 250000, tzinfo=UTC)),
    ("2024-01-02 03:04:05", "Europe/Paris", datetime(2024, 1, 2, 2, 4, 5, tzinfo=UTC)),
    ("2024-07-02 03:04:05", "Europe/Paris", datetime(2024, 7, 2, 1, 4, 5, tzinfo=UTC)),
    ("1704164645000", "UTC", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ("2024-01-02", "UTC", datetime(2024, 1, 2, tzinfo=UTC)),
])
def test_times_without_a_format(tmp_path, value, zone, expected):
    doc = {"columns": {"username": "u", "creation_date": "t", "event_response": "r"},
           "constants": {"event_type": "SignIn"}, "time_zone": zone}
    _, ev, q, _ = read_all(CSV_READER, write(tmp_path, f"u,t,r\nx,{value},Pass\n"), mapping=mapping_file(tmp_path, doc))
    assert q.num_rows == 0
    assert ev.column("creation_date").to_pylist() == [expected]


def test_delimiter_quote_and_unmapped_columns_off(tmp_path):
    doc = {"columns": {"username": "u", "creation_date": "t", "event_response": "r", "source_city": "c"},
           "constants": {"event_type": "SignIn"}, "keep_unmapped": False,
           "csv": {"delimiter": ";", "quote_char": "'"}}
    _, ev, q, _ = read_all(CSV_READER, write(tmp_path, "u;t;r;c;z\nx;2024-01-02T03:04:05Z;Pass;'Saint-Denis; Paris';9\n"),
                           mapping=mapping_file(tmp_path, doc))
    assert q.num_rows == 0
    assert ev.column("source_city").to_pylist() == ["Saint-Denis; Paris"]
    assert ev.column("extra").to_pylist() == [None]


def test_quoted_newline_blank_line_non_utf8_and_unclosed_quote(tmp_path):
    doc = {"columns": {"username": "u", "creation_date": "t", "event_response": "r", "user_agent_source": "a"},
           "constants": {"event_type": "SignIn"}}
    data = (b"u,t,r,a\n"
            b'x,2024-01-02T03:04:05Z,Pass,"two\nlines"\n'   # 2-3
            b"\n"                                           # 4 blank: not a row
            b"y\xff,2024-01-02T03:04:05Z,Pass,ua\n"         # 5 not UTF-8
            b"z,2024-01-02T03:04:05Z,Pass,ua\n"             # 6
            b'w,2024-01-02T03:04:05Z,Pass,"never closed\n'  # 7
            b"v,2024-01-02T03:04:05Z,Pass,ua\n")            # 8 a row: line 7's quote is never closed
    _, ev, q, _ = read_all(CSV_READER, write(tmp_path, data), mapping=mapping_file(tmp_path, doc))
    assert ev.column("username").to_pylist() == ["x", "z", "v"]
    assert ev.column("source_line").to_pylist() == [2, 6, 8]
    assert ev.column("user_agent_source").to_pylist()[0] == "two\nlines"
    assert [(r["source_line"], r["reason"]) for r in q.to_pylist()] == [
        (5, "not UTF-8: invalid byte at position 1"),
        (7, "a quoted field is not closed before the end of the file"),
    ]


def test_csv_gzip_and_small_batches(tmp_path):
    rows = "".join(f"u{i},2024-01-02 03:04:{i % 60:02d},10.0.0.{i},ua,{i % 2},false,\n" for i in range(25))
    text = "user,ts,client_ip,ua,ok,label_col,note\n" + rows
    plain = write(tmp_path, text)
    gz = write(tmp_path, gzip.compress(text.encode()), name="data.csv.gz")
    m = mapping_file(tmp_path)
    b1, ev1, _, _ = read_all(CSV_READER, plain, mapping=m, batch_rows=10)
    b2, ev2, _, _ = read_all(CSV_READER, gz, mapping=m, batch_rows=10)
    assert [b.rows_read for b in b1] == [b.rows_read for b in b2] == [10, 10, 5]
    assert ev1.equals(ev2)
    assert ev1.column("source_line").to_pylist() == list(range(2, 27))


def test_a_jsonl_file_given_as_csv_is_an_input_format_error(tmp_path):
    p = write(tmp_path, json.dumps({"Username": "a", "EventType": "SignIn"}) + "\n", name="x.jsonl")
    with pytest.raises(InputFormatError, match="the mapping names columns the file does not have"):
        list(CSV_READER.read(str(p), ReaderOptions(mapping=mapping_file(tmp_path))))


def test_empty_csv_is_an_input_format_error_and_header_only_has_no_rows(tmp_path):
    with pytest.raises(InputFormatError, match="is empty"):
        list(CSV_READER.read(str(write(tmp_path, "")), ReaderOptions(mapping=mapping_file(tmp_path))))
    batches = list(CSV_READER.read(str(write(tmp_path, CSV.splitlines()[0] + "\n", name="h.csv")),
                                   ReaderOptions(mapping=mapping_file(tmp_path))))
    assert sum(b.rows_read for b in batches) == 0


def test_iter_csv_records_splits_on_newlines_outside_quotes(tmp_path):
    p = write(tmp_path, 'a,b\n1,"x\n""y"""\r\n\n2,3\n4\n"5",6')
    chunks = list(iter_csv_records(str(p), 2, 100))
    rows = pa.concat_tables([c.rows for c in chunks]).to_pylist()
    assert rows == [{"c0": "1", "c1": 'x\n"y"'}, {"c0": "2", "c1": "3"}, {"c0": "5", "c1": "6"}]
    assert [x for c in chunks for x in c.lines.to_pylist()] == [2, 5, 7]
    assert [x for c in chunks for x in c.raws.to_pylist()] == ['1,"x\n""y"""', "2,3", '"5",6']
    assert [b for c in chunks for b in c.bad] == [(6, "expected 2 columns, found 1", b"4")]


def test_records_spanning_read_blocks_are_split_the_same(tmp_path, monkeypatch):
    import ingest.sources.tabular as tabular

    rows = [f'{i},"v{i}\nw{i}, ""q""",{i % 3}' if i % 4 == 0 else f"{i},plain{i},{i % 3}" for i in range(40)]
    rows[13] = "13,only-two"
    p = write(tmp_path, "a,b,c\n" + "\n".join(rows) + "\n")
    expected = list(iter_csv_records(str(p), 3, 7))
    for name, value in (("_FIRST_BLOCK", 5), ("_MIN_BLOCK", 3), ("_MAX_BLOCK", 11)):
        monkeypatch.setattr(tabular, name, value)
    small = list(iter_csv_records(str(p), 3, 7))
    assert len(small) > len(expected)

    def flat(chunks):
        return ([r for c in chunks for r in c.rows.to_pylist()], [x for c in chunks for x in c.lines.to_pylist()],
                [x for c in chunks for x in c.raws.to_pylist()], [b for c in chunks for b in c.bad])

    assert flat(small) == flat(expected)
    rows_, lines, raws, bad = flat(expected)
    assert len(rows_) == 39 and bad == [(19, "expected 3 columns, found 2", b"13,only-two")]
    assert rows_[4] == {"c0": "4", "c1": 'v4\nw4, "q"', "c2": "1"}
    assert lines[:6] == [2, 4, 5, 6, 7, 9]


# -- Parquet ---------------------------------------------------------------------


def parquet_file(tmp_path, name="data.parquet", **kw):
    t = pa.table({
        "user": ["alice", "bob", None],
        "ts": pa.array([datetime(2024, 1, 2, 3, 4, 5), datetime(2024, 1, 2, 3, 4, 6), datetime(2024, 1, 2, 3, 4, 7)],
                       pa.timestamp("ms")),
        "client_ip": ["10.0.0.1", None, "10.0.0.3"],
        "ua": ["Mozilla/5.0 (X11, Linux)", "curl/8", "x"],
        "ok": pa.array([1, 0, 1], pa.int8()),
        "label_col": [False, True, None],
        "note": ["hello", None, "n"],
        "score": [0.5, 1.5, 2.5],
    })
    p = tmp_path / name
    pq.write_table(t, p, row_group_size=kw.get("row_group_size", 2))
    return p


def test_parquet_rows_map_with_row_numbers_as_lines(tmp_path):
    m = mapping_file(tmp_path, {**MAPPING, "time_format": None})
    batches, ev, q, labels = read_all(PARQUET_READER, parquet_file(tmp_path), mapping=m, batch_rows=2)
    assert [b.rows_read for b in batches] == [2, 1]
    assert ev.column("source_line").to_pylist() == [1, 2]
    assert ev.column("creation_date").to_pylist() == [datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
                                                      datetime(2024, 1, 2, 3, 4, 6, tzinfo=UTC)]
    assert ev.column("event_response").to_pylist() == ["Pass", "Fail"]
    assert ev.column("extra").to_pylist() == ['{"note":"hello","score":0.5}', '{"score":1.5}']
    assert [(r["source_line"], r["reason"]) for r in q.to_pylist()] == [(3, "username (column 'user') is required but empty")]
    assert json.loads(q.column("raw")[0].as_py())["client_ip"] == "10.0.0.3"
    assert labels.column("value").to_pylist() == ["false", "true"]


def test_csv_and_parquet_of_the_same_rows_get_the_same_event_ids(tmp_path):
    m = mapping_file(tmp_path, {**MAPPING, "time_format": None})
    _, pev, _, _ = read_all(PARQUET_READER, parquet_file(tmp_path), mapping=m)
    csv_text = ("user,ts,client_ip,ua,ok,label_col,note,score\n"
                'alice,2024-01-02 03:04:05,10.0.0.1,"Mozilla/5.0 (X11, Linux)",1,false,hello,0.5\n'
                "bob,2024-01-02 03:04:06,,curl/8,0,true,,1.5\n")
    _, cev, _, _ = read_all(CSV_READER, write(tmp_path, csv_text), mapping=m)
    assert cev.column("creation_date").equals(pev.column("creation_date"))
    # the extras are kept as each file types them, and hashed as text: Parquet's 0.5 is the CSV's "0.5"
    assert cev.column("extra").to_pylist() == ['{"note":"hello","score":"0.5"}', '{"score":"1.5"}']
    assert pev.column("extra").to_pylist() == ['{"note":"hello","score":0.5}', '{"score":1.5}']
    assert pev.column("event_id").to_pylist() == cev.column("event_id").to_pylist()
    assert len(set(pev.column("event_id").to_pylist())) == 2
    m2 = mapping_file(tmp_path, {**MAPPING, "time_format": None, "keep_unmapped": False}, name="m2.yaml")
    _, pev2, _, _ = read_all(PARQUET_READER, parquet_file(tmp_path, name="d2.parquet"), mapping=m2)
    _, cev2, _, _ = read_all(CSV_READER, write(tmp_path, csv_text, name="d2.csv"), mapping=m2)
    assert pev2.column("event_id").to_pylist() == cev2.column("event_id").to_pylist()


def test_not_parquet_and_gzipped_parquet_are_input_format_errors(tmp_path):
    m = mapping_file(tmp_path)
    with pytest.raises(InputFormatError, match="is not a Parquet file"):
        list(PARQUET_READER.read(str(write(tmp_path, CSV, name="x.parquet")), ReaderOptions(mapping=m)))
    gz = tmp_path / "d.parquet.gz"
    gz.write_bytes(gzip.compress(parquet_file(tmp_path).read_bytes()))
    with pytest.raises(InputFormatError, match="gunzip it first"):
        list(PARQUET_READER.read(str(gz), ReaderOptions(mapping=m)))
    assert "All but Parquet accept gzip" in README and "All accept gzip" not in README  # as the README says


def test_parquet_column_of_an_unusable_type_is_named(tmp_path):
    t = pa.table({"user": [["a"]], "ts": [1704164645], "ok": ["Pass"]})
    p = tmp_path / "n.parquet"
    pq.write_table(t, p)
    m = mapping_file(tmp_path, {"columns": {"username": "user", "creation_date": "ts", "event_response": "ok"},
                                "constants": {"event_type": "SignIn"}})
    with pytest.raises(InputFormatError, match=r"column 'user' \(for username\) has type list<element: string>"):
        list(PARQUET_READER.read(str(p), ReaderOptions(mapping=m)))


def test_sniffs():
    assert PARQUET_READER.sniff(b"PAR1\x15\x04")
    assert CSV_READER.sniff(b"user,ts,ok\nalice,1,2\n")
    assert CSV_READER.sniff(b"user;ts;ok\n")
    assert not CSV_READER.sniff(b'{"a": 1, "b": 2}\n')
    assert not CSV_READER.sniff(b"PAR1\x00\x00,")
    assert not CSV_READER.sniff(b"just words\n")


def test_a_password_column_is_never_kept_in_extra_nor_in_a_quarantined_rows_raw_text(tmp_path):
    """An unmapped column is kept in the event's extra JSON, and a bad row's line as its raw text: a Password
    column of an export kept the users' passwords in the store."""
    from ingest import pipeline, store as istore
    from ingest.enrich import Enricher
    from ingest.geo import GeoResolver

    text = ("user,ts,client_ip,ua,ok,label_col,Password\n"
            "alice,2024-01-02 03:04:05,10.0.0.1,x,1,false,hunter2secret\n"
            'bob,not a time,10.0.0.2,x,1,false,"p,w secret2"\n')
    f = write(tmp_path, text)
    db = tmp_path / "s.duckdb"
    con = istore.connect(db)
    try:
        pipeline.ingest_paths(con, [str(f)], fmt="csv", options=ReaderOptions(mapping=mapping_file(tmp_path)),
                              enricher=Enricher(geo=GeoResolver.from_settings(None, None)))
        assert con.execute("SELECT username, extra FROM events").fetchall() == [("alice", None)]
        [(raw,)] = con.execute("SELECT raw FROM quarantine").fetchall()
    finally:
        con.close()
    assert raw == "bob,not a time,10.0.0.2,x,1,false,[redacted]"
    assert b"secret" not in db.read_bytes()
