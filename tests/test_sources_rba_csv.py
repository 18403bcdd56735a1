"""ingest.sources.rba_csv: the public RBA benchmark CSV, with its labels kept apart from the events."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from ingest.errors import InputFormatError
from ingest.sources.base import ReaderOptions
from ingest.sources.rba_csv import HEADER, READER

UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/79.0.3945.117"
GOOD1 = f'10,2020-02-03 12:43:30.772,-4324475583306591935,,10.0.65.171,NO,-,-,29695,"{UA}",Chrome 79.0.3945,Windows 10,desktop,False,False,False'
GOOD2 = "11,2020-02-03 12:43:43,1000,512.5,2001:db8::1,US,Virginia,Ashburn,14618,curl/7.1,curl 7.1,Other,bot,True,True,True"


def read_all(path, **opts):
    batches = list(READER.read(str(path), ReaderOptions(**opts)))
    events = pa.concat_tables([b.events for b in batches]) if batches else None
    quarantine = pa.concat_tables([b.quarantine for b in batches]) if batches else None
    labels = [b.labels for b in batches if b.labels is not None]
    return batches, events, quarantine, (pa.concat_tables(labels) if labels else None)


def write(tmp_path, *lines, name="rba.csv", header=HEADER, newline="\n"):
    p = tmp_path / name
    p.write_bytes(newline.join([header, *lines]).encode("utf-8") + newline.encode())
    return p


def test_header_is_the_reference_header():
    assert HEADER.split(",") == [
        "index", "Login Timestamp", "User ID", "Round-Trip Time [ms]", "IP Address", "Country", "Region", "City",
        "ASN", "User Agent String", "Browser Name and Version", "OS Name and Version", "Device Type",
        "Login Successful", "Is Attack IP", "Is Account Takeover"]


def test_good_rows_map_to_canonical_columns(tmp_path):
    _, ev, q, labels = read_all(write(tmp_path, GOOD1, GOOD2))
    assert q.num_rows == 0
    rows = ev.to_pylist()
    assert rows[0] | {"_raw": None} == {
        "event_id": "10",
        "username": "-4324475583306591935",
        "event_type": "SignIn",
        "event_response": "Fail",
        "creation_date": datetime(2020, 2, 3, 12, 43, 30, 772000, tzinfo=timezone.utc),
        "rtt_ms": None,
        "ip_address": "10.0.65.171",
        "has_context_data": True,
        "source_country": "NO",
        "source_region": None,
        "source_city": None,
        "source_asn": 29695,
        "user_agent_source": UA,
        "http_headers": [{"header_name": "User-Agent", "header_value": UA}],
        "extra": '{"Browser Name and Version":"Chrome 79.0.3945","OS Name and Version":"Windows 10","Device Type":"desktop"}',
        "_raw": None,
        "source_line": 2,
    }
    assert rows[0]["_raw"] == GOOD1
    r2 = rows[1]
    assert (r2["event_response"], r2["rtt_ms"], r2["source_region"], r2["source_city"], r2["source_asn"]) == (
        "Pass", 512.5, "Virginia", "Ashburn", 14618)
    assert r2["creation_date"] == datetime(2020, 2, 3, 12, 43, 43, tzinfo=timezone.utc)
    assert r2["source_line"] == 3
    assert ev.schema.field("creation_date").type == pa.timestamp("us", tz="UTC")


def test_a_dash_or_nothing_is_an_unknown_place_and_asn(tmp_path):
    dash_asn = GOOD2.replace(",14618,", ",-,")
    no_asn = GOOD2.replace("11,", "12,", 1).replace(",14618,", ", ,")
    dash_place = GOOD2.replace("11,", "13,", 1).replace("US,Virginia,Ashburn", "-,-, - ")
    _, ev, q, _ = read_all(write(tmp_path, dash_asn, no_asn, dash_place))
    assert q.num_rows == 0
    assert [(r["event_id"], r["source_country"], r["source_region"], r["source_city"], r["source_asn"])
            for r in ev.to_pylist()] == [
        ("11", "US", "Virginia", "Ashburn", None), ("12", "US", "Virginia", "Ashburn", None),
        ("13", None, None, None, 14618)]


def test_labels_go_only_to_the_labels_table(tmp_path):
    _, ev, _, labels = read_all(write(tmp_path, GOOD1, GOOD2))
    assert sorted(labels.to_pylist(), key=lambda r: (r["event_id"], r["label"])) == [
        {"event_id": "10", "label": "is_account_takeover", "value": "false", "source": "rba-dataset"},
        {"event_id": "10", "label": "is_attack_ip", "value": "false", "source": "rba-dataset"},
        {"event_id": "11", "label": "is_account_takeover", "value": "true", "source": "rba-dataset"},
        {"event_id": "11", "label": "is_attack_ip", "value": "true", "source": "rba-dataset"},
    ]
    for name in ev.column_names:
        assert "attack" not in name.lower() and "takeover" not in name.lower() and name not in ("ato", "reason")
    for extra in ev.column("extra").to_pylist():
        assert "Attack" not in extra and "Takeover" not in extra


def test_bad_rows_are_quarantined_with_line_column_and_value(tmp_path):
    p = write(
        tmp_path,
        GOOD1,                                                                  # 2
        "12,2020-02-30 99:00:00,u,,1.2.3.4,NO,-,-,1,ua,b,o,d,True,False,False",  # 3 bad time
        "13,2020-02-03 12:00:00,u,,1.2.3.4,NO,-,-,AS12x,ua,b,o,d,True,False,False",  # 4 bad ASN
        "14,2020-02-03 12:00:00,u,,1.2.3.4,NO,-,-,1,ua,b,o,d,Maybe,False,False",  # 5 bad Login Successful
        "15,2020-02-03 12:00:00,u,,1.2.3.4",                                    # 6 too few columns
        "x16,2020-02-03 12:00:00,u,,1.2.3.4,NO,-,-,1,ua,b,o,d,True,False,False",  # 7 bad index
        "17,2020-02-03 12:00:00,,fast,1.2.3.4,NO,-,-,1,ua,b,o,d,True,False,yes",  # 8 three problems
        GOOD2,                                                                  # 9
    )
    _, ev, q, labels = read_all(p)
    assert ev.column("source_line").to_pylist() == [2, 9]
    got = {r["source_line"]: r["reason"] for r in q.to_pylist()}
    assert got == {
        3: 'Login Timestamp must be a time like 2020-02-03 12:43:30.772, got "2020-02-30 99:00:00"',
        4: 'ASN must be an integer, got "AS12x"',
        5: 'Login Successful must be True or False, got "Maybe"',
        6: "expected 16 columns, found 5",
        7: 'index must be an integer, got "x16"',
        8: 'User ID is required; Round-Trip Time [ms] must be a number, got "fast"; '
           'Is Account Takeover must be True or False, got "yes"',
    }
    assert q.column("raw").to_pylist()[3] == "15,2020-02-03 12:00:00,u,,1.2.3.4"
    assert {r["event_id"] for r in labels.to_pylist()} == {"10", "11"}  # no labels for quarantined rows


def test_quoted_newlines_blank_lines_and_crlf_keep_physical_line_numbers(tmp_path):
    multi = '20,2020-02-03 12:00:00,u,,1.2.3.4,NO,-,-,1,"line one\nline two",b,o,d,True,False,False'
    p = write(tmp_path, multi, "", GOOD1, "21,bad-time,u,,1.2.3.4,NO,-,-,1,ua,b,o,d,True,False,False", GOOD2,
              newline="\r\n")
    _, ev, q, _ = read_all(p)
    assert ev.column("source_line").to_pylist() == [2, 5, 7]
    assert ev.column("user_agent_source").to_pylist()[0] == "line one\nline two"
    assert q.column("source_line").to_pylist() == [6]
    assert ev.column("_raw").to_pylist()[1] == GOOD1


def test_non_utf8_row_is_quarantined_and_the_rest_read(tmp_path):
    p = tmp_path / "rba.csv"
    bad = b"30,2020-02-03 12:00:00,u\xff\xfe,,1.2.3.4,NO,-,-,1,ua,b,o,d,True,False,False"
    p.write_bytes(b"\n".join([HEADER.encode(), GOOD1.encode(), bad, GOOD2.encode()]) + b"\n")
    _, ev, q, _ = read_all(p)
    assert ev.column("event_id").to_pylist() == ["10", "11"]
    assert q.to_pylist()[0]["source_line"] == 3
    assert q.to_pylist()[0]["reason"] == "not UTF-8: invalid byte at position 24"
    assert "\\xff" in q.to_pylist()[0]["raw"]


def test_missing_required_columns_is_an_input_format_error(tmp_path):
    header = "index,Login Timestamp,IP Address,Country"
    p = write(tmp_path, "1,2020-02-03 12:00:00,1.2.3.4,NO", header=header)
    with pytest.raises(InputFormatError, match="lacks the required columns 'User ID', 'Login Successful'") as exc:
        list(READER.read(str(p), ReaderOptions()))
    assert str(p) in str(exc.value)


def test_optional_columns_may_be_missing_and_unknown_ones_go_to_extra(tmp_path):
    header = "index,Login Timestamp,User ID,Login Successful,Note"
    _, ev, q, labels = read_all(write(tmp_path, "1,2020-02-03 12:00:00,u1,True,hello", "2,2020-02-03 12:00:01,u2,False,",
                                      header=header))
    assert q.num_rows == 0 and labels is None
    assert ev.column("extra").to_pylist() == ['{"Note":"hello"}', None]
    assert ev.column("ip_address").to_pylist() == [None, None]
    assert ev.column("has_context_data").to_pylist() == [False, False]


def test_empty_file_and_a_jsonl_file_are_input_format_errors(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(InputFormatError, match="is empty"):
        list(READER.read(str(empty), ReaderOptions()))
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text(json.dumps({"Username": "a", "EventType": "SignIn"}) + "\n")
    with pytest.raises(InputFormatError, match="not the RBA data set's CSV"):
        list(READER.read(str(jsonl), ReaderOptions()))


def test_header_only_file_has_no_rows(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text(HEADER)
    batches, *_ = read_all(p)
    assert sum(b.rows_read for b in batches) == 0


def test_gzip_input_reads_the_same(tmp_path):
    plain = write(tmp_path, GOOD1, "x,bad", GOOD2)
    gz = tmp_path / "rba.csv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    _, ev1, q1, l1 = read_all(plain)
    _, ev2, q2, l2 = read_all(gz)
    assert ev1.equals(ev2) and l1.equals(l2)
    assert q1.column("reason").to_pylist() == q2.column("reason").to_pylist() == ["expected 16 columns, found 2"]


def test_batches_are_bounded_and_counts_add_up(tmp_path):
    lines = [f"{i},2020-02-03 12:00:{i % 60:02d},u{i % 7},,10.0.0.{i % 250},NO,-,-,1,ua,b,o,d,True,False,False"
             for i in range(50)]
    lines[17] = "17,oops"
    batches, ev, q, labels = read_all(write(tmp_path, *lines), batch_rows=8)
    assert len(batches) == 7
    assert all(b.rows_read <= 8 for b in batches)
    assert ev.num_rows + q.num_rows == 50
    assert q.column("source_line").to_pylist() == [19]
    assert ev.column("source_line").to_pylist() == [i + 2 for i in range(50) if i != 17]
    assert labels.num_rows == 2 * 49


def test_sniff_is_the_exact_header():
    assert READER.sniff((HEADER + "\n1,2\n").encode())
    assert READER.sniff(b"\xef\xbb\xbf" + (HEADER + "\r\n").encode())
    assert not READER.sniff((HEADER.replace("index,", "idx,") + "\n").encode())
    assert not READER.sniff(b'{"index": 1}\n')
