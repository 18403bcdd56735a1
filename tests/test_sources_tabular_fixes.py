"""ingest.sources.tabular: Parquet times finer than a microsecond; columns a CSV header leaves unnamed."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

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
