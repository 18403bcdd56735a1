"""ingest.sources.tabular: Parquet times finer than a microsecond; columns a CSV header leaves unnamed."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.errors import InputFormatError
from ingest.sources.base import ReaderOptions
from ingest.sources.rba_csv import HEADER as RBA_HEADER, READER as RBA_READER
from ingest.sources.tabular import CSV_READER, PARQUET_READER, csv_header

UTC = timezone.utc
MAPPING = {"columns": {"username": "user", "creation_date": "ts", "event_response": "ok"},
           "constants": {"event_type": "SignIn"}}


def read(tmp_path, reader, path, mapping=MAPPING):
    m = tmp_path / "mapping.json"
    m.write_text(json.dumps(mapping))
    batches = list(reader.read(str(path), ReaderOptions(mapping=str(m))))
    return (pa.concat_tables([b.events for b in batches]), pa.concat_tables([b.quarantine for b in batches]))


# -- Parquet times in nanoseconds ---------------------------------------------------------------------------------

NS = [1780302609000000000, 1780302611123456789, 1780302612999999999]  # 2026-06-01T08:30:09Z, ...


@pytest.mark.parametrize("tz", ["UTC", None])
def test_parquet_nanosecond_times_are_truncated_to_microseconds_and_every_row_kept(tmp_path, tz):
    p = tmp_path / "ns.parquet"
    pq.write_table(pa.table({"user": ["alice", "bob", "carol"], "ok": ["Pass", "Fail", "Pass"],
                             "ts": pa.array(NS, pa.timestamp("ns", tz))}), p)
    ev, q = read(tmp_path, PARQUET_READER, p)
    assert q.num_rows == 0
    assert ev.column("creation_date").to_pylist() == [
        datetime(2026, 6, 1, 8, 30, 9, tzinfo=UTC),
        datetime(2026, 6, 1, 8, 30, 11, 123456, tzinfo=UTC),  # .123456789: truncated, as text times are
        datetime(2026, 6, 1, 8, 30, 12, 999999, tzinfo=UTC),
    ]
    assert ev.schema.field("creation_date").type == pa.timestamp("us", "UTC")


def test_parquet_nanosecond_times_get_the_ids_of_the_same_rows_as_csv_text(tmp_path):
    p = tmp_path / "ns.parquet"
    pq.write_table(pa.table({"user": ["alice", "bob"], "ok": ["Pass", "Fail"],
                             "ts": pa.array(NS[1:], pa.timestamp("ns", "UTC"))}), p)
    c = tmp_path / "ns.csv"
    c.write_text("user,ok,ts\nalice,Pass,2026-06-01T08:30:11.123456789Z\nbob,Fail,2026-06-01T08:30:12.999999999Z\n")
    from_parquet, _ = read(tmp_path, PARQUET_READER, p)
    from_csv, _ = read(tmp_path, CSV_READER, c)
    assert from_parquet.column("creation_date").equals(from_csv.column("creation_date"))
    assert from_parquet.column("event_id").to_pylist() == from_csv.column("event_id").to_pylist()


# -- columns without a name -----------------------------------------------------------------------------------------


def write(tmp_path, text, name="data.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_a_column_the_header_leaves_unnamed_is_named_as_duckdb_names_it_and_extra_stays_an_object(tmp_path):
    ev, q = read(tmp_path, CSV_READER, write(tmp_path, "user,ts,ok,ip,\nalice,2026-06-01T08:30:09Z,Pass,1.2.3.4,x\n"))
    assert q.num_rows == 0
    assert json.loads(ev.column("extra")[0].as_py()) == {"ip": "1.2.3.4", "column4": "x"}
    mapping = {**MAPPING, "columns": {**MAPPING["columns"], "ip_address": "ip"}}
    ev, _ = read(tmp_path, CSV_READER, write(tmp_path, "user,ts,ok,ip,\nalice,2026-06-01T08:30:09Z,Pass,1.2.3.4,x\n"),
                 mapping)
    assert ev.column("extra").to_pylist() == ['{"column4":"x"}']  # was '["x"]', a JSON array


def test_unnamed_columns_each_get_a_name_of_their_own(tmp_path):
    assert csv_header(write(tmp_path, "user,,ts,,ok,\n")) == ["user", "column1", "ts", "column3", "ok", "column5"]
    assert csv_header(write(tmp_path, "user,,column1,ok\n")) == ["user", "column1_1", "column1", "ok"]
    assert csv_header(write(tmp_path, "user,column3,column3_1,,ok\n")) == [
        "user", "column3", "column3_1", "column3_2", "ok"]
    with pytest.raises(InputFormatError, match="names a column more than once: 'ts'"):
        csv_header(write(tmp_path, "user,ts,ts,,\n"))


def test_a_trailing_delimiter_on_every_line_adds_nothing_and_a_mapping_may_name_an_unnamed_column(tmp_path):
    text = "user,,ts,ok,\nalice,10.0.0.1,2026-06-01T08:30:09Z,Pass,\nbob,,2026-06-01T08:30:10Z,Fail,\n"
    mapping = {**MAPPING, "columns": {**MAPPING["columns"], "ip_address": "column1"}}
    ev, q = read(tmp_path, CSV_READER, write(tmp_path, text), mapping)
    assert q.num_rows == 0
    assert ev.column("ip_address").to_pylist() == ["10.0.0.1", None]
    assert ev.column("extra").to_pylist() == [None, None]


def test_a_parquet_column_with_an_empty_name(tmp_path):
    p = tmp_path / "e.parquet"
    pq.write_table(pa.table({"user": ["alice"], "ts": ["2026-06-01T08:30:09Z"], "ok": ["Pass"], "": ["x"]}), p)
    ev, q = read(tmp_path, PARQUET_READER, p)
    assert q.num_rows == 0
    assert ev.column("extra").to_pylist() == ['{"column3":"x"}']


def test_an_rba_file_with_an_unnamed_column_more(tmp_path):
    row = ("0,2026-06-01 08:30:09.036,u1,,82.29.28.237,UA,Kyiv City,Kyiv,20473,curl/8,Chrome 146,Windows 10,desktop,"
           "True,False,False,x")
    ev, q = read(tmp_path, RBA_READER, write(tmp_path, RBA_HEADER + ",\n" + row + "\n"))
    assert q.num_rows == 0
    assert json.loads(ev.column("extra")[0].as_py())["column16"] == "x"
