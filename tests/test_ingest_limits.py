"""Limits that keep one hostile input from exhausting memory or ending a whole run: over-long lines (a small gzip
file can hold a line of gigabytes), too much decompressed data for a file read whole, documents of millions of
items, and JSON nested too deeply for Python's parser. The limits are module constants, lowered here so that every
input is a few kilobytes; real files, real gzip."""

from __future__ import annotations

import gzip
import json
import random

import pytest
from typer.testing import CliRunner

from cli import app
from ingest import labels as labels_mod, users as users_mod
from ingest.errors import InputFormatError
from ingest.labels import load_labels
from ingest.sources import base, cognito_auth_events as auth_events, rba_csv, tabular
from ingest.sources.base import ReaderOptions, iter_line_arrays
from ingest.users import get_user, load_users
from tests.storedb import q as rows
from tests.test_ingest import env  # noqa: F401 (the fixture: the test GeoIP databases, a store in tmp_path)
from tests.test_labels import con as labels_con  # noqa: F401 (a store with events e1, e2, e3)
from tests.test_sources_cognito_auth_events import event, page
from tests.test_sources_rba_csv import GOOD1, GOOD2, HEADER as RBA_HEADER
from tests.test_users import con as users_con  # noqa: F401 (the fixture: an empty store)
from tests.test_users import user

runner = CliRunner()
LIMIT = 1000  # bytes a line may have, in these tests


def line(event_id: str, **extra) -> str:
    doc = {"EventId": event_id, "Username": "alice", "EventType": "SignIn", "EventResponse": "Pass",
           "CreationDate": "2026-03-01T08:15:02Z", **extra}
    return json.dumps(doc, separators=(",", ":"))


def nested(depth: int) -> str:
    """A JSON array ``depth`` levels deep (as a ``"X":`` value of an event it makes that event depth + 1 deep)."""
    return "[" * depth + "]" * depth


def ingest(*args):
    res = runner.invoke(app, ["ingest", *map(str, args), "--json"])
    assert res.exit_code in (0, 1) and res.stdout.strip(), (res.output, res.exception)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["rows_read"] == out["events_added"] + out["duplicates"] + out["quarantined"]
    return out, res


def quarantine(env):
    return rows(env / "store.duckdb", "SELECT source_file, source_line, reason, raw FROM quarantine "
                                      "ORDER BY source_file, source_line")


def event_ids(env):
    return [r[0] for r in rows(env / "store.duckdb", "SELECT event_id FROM events ORDER BY event_id")]


@pytest.fixture
def small_lines(monkeypatch):
    """Lines of at most LIMIT bytes, read in blocks and pieces far smaller than that."""
    monkeypatch.setattr(base, "MAX_RECORD_BYTES", LIMIT)
    monkeypatch.setattr(base, "LINE_BLOCK_BYTES", 256)
    monkeypatch.setattr(base, "READ_PIECE_BYTES", 64)
    monkeypatch.setattr(base, "MAX_RAW_CHARS", 100)


# -- A. over-long lines: quarantined with their number and length, read past, the next line read -------------------

def test_an_over_long_line_in_a_gzip_is_quarantined_and_the_next_line_ingested(env, small_lines):
    """The reviewer's bomb, in small: a line of 'a' far longer than the limit (no newline within it), then good
    lines, and a last over-long line that the file ends in."""
    data = "\n".join([line("g1"), "a" * 50_000, line("g2"), "b" * 3_000 + "\r", line("g3"), "c" * 20_000])
    f = env / "bomb.jsonl.gz"
    f.write_bytes(gzip.compress(data.encode()))
    out, res = ingest(f, "--format", "riskgate-jsonl")
    assert res.exit_code == 0, res.output
    assert (out["rows_read"], out["events_added"], out["quarantined"]) == (6, 3, 3)
    assert event_ids(env) == ["g1", "g2", "g3"]
    got = [(n, reason, raw) for _, n, reason, raw in quarantine(env)]
    assert got == [
        (2, "line 2 is too long: 50,000 bytes, more than 1,000 (only its first 100 bytes are kept)", "a" * 100),
        (4, "line 4 is too long: 3,000 bytes, more than 1,000 (only its first 100 bytes are kept)", "b" * 100),
        (6, "line 6 is too long: 20,000 bytes, more than 1,000 (only its first 100 bytes are kept)", "c" * 100),
    ]


def test_a_file_of_one_endless_line_is_one_quarantine_row_and_the_other_files_are_read(env, small_lines):
    bomb, other = env / "bomb.jsonl.gz", env / "other.jsonl"
    bomb.write_bytes(gzip.compress(b"a" * 200_000))  # no newline at all
    other.write_text(line("o1") + "\n")
    out, res = ingest(bomb, other, "--format", "riskgate-jsonl")
    assert res.exit_code == 0, res.output
    assert (out["rows_read"], out["events_added"], out["quarantined"]) == (2, 1, 1)
    assert [(n, reason) for _, n, reason, _ in quarantine(env)] == [
        (1, "line 1 is too long: 200,000 bytes, more than 1,000 (only its first 100 bytes are kept)")]


def test_cognito_user_activity_lines_have_the_same_limit(env, small_lines):
    from tests.test_sources_cognito_user_activity import RECORD

    record = json.dumps(RECORD)
    assert len(record) < LIMIT
    f = env / "activity.jsonl"
    f.write_text("\n".join([record, "{" + " " * 5_000 + "}", record.replace('"ev-1"', '"ev-2"')]) + "\n")
    out, res = ingest(f)
    assert res.exit_code == 0, res.output
    assert (out["rows_read"], out["quarantined"]) == (3, 1)
    assert quarantine(env)[0][1:3] == (2, "line 2 is too long: 5,002 bytes, more than 1,000 (only its first 100 "
                                          "bytes are kept)")


def reference_lines(data: bytes) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(line, text) of the lines a reader takes, (line, reason) of those too long: the lines of ``data``."""
    kept, long = [], []
    for n, raw in enumerate(data.split(b"\n"), start=1):
        body = raw[:-1] if raw.endswith(b"\r") else raw
        if len(body) > LIMIT:
            long.append((n, f"line {n} is too long: {len(body):,} bytes, more than {LIMIT:,}"
                            + (" (only its first 100 bytes are kept)" if len(body) > 100 else "")))
        elif body.strip():
            kept.append((n, body.decode()))
    return kept, long


@pytest.mark.parametrize("block", [64, 256, 999, 1001, 4096])
def test_the_line_reader_takes_what_a_plain_split_takes_for_any_block_size(tmp_path, small_lines, monkeypatch,
                                                                             block):
    """Lines just under, at and over the limit, across blocks of every size, plain and through gzip."""
    monkeypatch.setattr(base, "LINE_BLOCK_BYTES", block)
    rnd = random.Random(block)
    lines = [b"x" * rnd.choice([0, 5, 300, 999, 1000, 1001, 1500, 6000]) + (b"\r" if rnd.random() < 0.2 else b"")
             for _ in range(120)]
    data = b"\n".join(lines)
    want = reference_lines(data)
    for name, payload in (("l.txt", data), ("l.txt.gz", gzip.compress(data))):
        f = tmp_path / name
        f.write_bytes(payload)
        batches = list(iter_line_arrays(f, 17))
        kept = [(n, t.rstrip("\r\n")) for b in batches for n, t in zip(b.lines.to_pylist(), b.texts.to_pylist())]
        long = sorted((n, reason) for b in batches for n, reason, _ in b.quarantine)
        assert (kept, long) == want, name


def test_csv_inputs_quarantine_an_over_long_line_and_refuse_an_endless_quoted_field(env, monkeypatch):
    monkeypatch.setattr(base, "MAX_RECORD_BYTES", LIMIT)
    monkeypatch.setattr(base, "READ_PIECE_BYTES", 64)
    monkeypatch.setattr(base, "MAX_RAW_CHARS", 100)
    monkeypatch.setattr(tabular, "_FIRST_BLOCK", 128)
    monkeypatch.setattr(tabular, "_MIN_BLOCK", 128)
    monkeypatch.setattr(tabular, "_MAX_BLOCK", 256)
    f = env / "rba.csv.gz"
    f.write_bytes(gzip.compress("\n".join([RBA_HEADER, GOOD1, "9," + "z" * 30_000, GOOD2]).encode() + b"\n"))
    out, res = ingest(f)
    assert res.exit_code == 0, res.output
    assert (out["rows_read"], out["events_added"], out["quarantined"]) == (3, 2, 1)
    assert [(n, reason, raw) for _, n, reason, raw in quarantine(env)] == [
        (3, "line 3 is too long: 30,002 bytes, more than 1,000 (only its first 100 bytes are kept)",
         "9," + "z" * 98)]
    endless = env / "quoted.csv"
    endless.write_text("\n".join([RBA_HEADER, GOOD1, '9,"' + "z\n" * 3_000]))
    with pytest.raises(InputFormatError, match="a quoted field opened on line 3 is not closed within 1,000 bytes"):
        list(rba_csv.READER.read(str(endless), ReaderOptions()))


# -- A. users load: at most MAX_USERS_FILE_BYTES decompressed, then refused -----------------------------------------

def test_users_load_reads_no_more_than_its_limit_of_decompressed_bytes(users_con, tmp_path, monkeypatch):
    monkeypatch.setattr(users_mod, "MAX_USERS_FILE_BYTES", 10_000)
    read = []
    opened = users_mod.open_binary

    class Counting:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def read(self, n=-1):
            data = self.fh.read(n)
            read.append(len(data))
            return data

    monkeypatch.setattr(users_mod, "open_binary", lambda path: Counting(opened(path)))
    bomb = tmp_path / "users.json.gz"
    bomb.write_bytes(gzip.compress(b"{" + b" " * 1_000_000 + b"}"))  # 1 MB of blanks in 1 KB of gzip
    with pytest.raises(InputFormatError, match=r"holds more than 10,000 bytes once decompressed"):
        load_users(users_con, bomb)
    assert sum(read) == 10_001  # the limit and one byte: nothing further
    fits = tmp_path / "fits.json.gz"
    fits.write_bytes(gzip.compress(json.dumps({"Users": [user("alice")]}, indent=2).encode()))
    assert load_users(users_con, fits).added == 1


# -- A. labels load: a bounded line reader ----------------------------------------------------------------------------

def test_labels_load_rejects_an_over_long_line_and_loads_the_rest(labels_con, tmp_path, monkeypatch):
    monkeypatch.setattr(base, "MAX_RECORD_BYTES", LIMIT)
    text = ("event_id,label,value,source\r\n"
            "e1,is_account_takeover,yes,synth\r\n"
            "e2,note," + "v" * 50_000 + ",synth\r\n"  # 4 fields: a label, were it not too long
            "e3,is_account_takeover,no,synth\r\n"
            "e2,note," + "w" * (LIMIT - 10) + ",s\r\n")  # just at the limit: kept
    f = tmp_path / "labels.csv.gz"
    f.write_bytes(gzip.compress(text.encode()))
    r = load_labels(labels_con, f)
    assert (r.read, r.added, r.rejected) == (4, 3, 1)
    assert [(x.line, x.reason) for x in r.rejections] == [
        (3, "line 3 is too long: 50,014 characters, more than 1,000; skipped")]
    got = labels_con.execute("SELECT event_id, label FROM labels ORDER BY event_id, label").fetchall()
    assert got == [("e1", "is_account_takeover"), ("e2", "note"), ("e3", "is_account_takeover")]


def test_the_labels_line_reader_reads_a_long_line_in_pieces_and_goes_on_after_it(monkeypatch):
    import io

    from ingest.labels import BoundedLines, LongLine

    reads = []
    # (11 characters and "\r\n": the first read ends between "\r" and "\n", which still end that line)
    fh = io.StringIO("ab\r\n" + "x" * 95 + "\r\nc,d\n" + "z" * 11 + "\r\nok\n" + "y" * 30 + "\rlast", newline="")
    real = fh.readline

    def readline(size):
        reads.append(real(size))
        return reads[-1]

    fh.readline = readline
    monkeypatch.setattr(BoundedLines, "PIECE", 8)
    lines = BoundedLines(fh, 10)
    got = []
    while True:
        try:
            got.append(next(lines))
        except LongLine as exc:
            got.append(exc.length)
        except StopIteration:
            break
    assert got == ["ab\r\n", 95, "c,d\n", 11, "ok\n", 30, "last"] and lines.skipped == 3
    assert max(len(r) for r in reads) == 12  # the limit and a line end: never the whole long line


def test_an_over_long_labels_header_refuses_the_file(labels_con, tmp_path, monkeypatch):
    monkeypatch.setattr(base, "MAX_RECORD_BYTES", LIMIT)
    f = tmp_path / "labels.csv"
    f.write_text("event_id" * 500 + "\n")
    with pytest.raises(InputFormatError, match="cannot read the header: line 1 is too long: 4,000 characters"):
        load_labels(labels_con, f)


# -- A. AdminListUserAuthEvents: documents of many items, broken regions of gigabytes ----------------------------

def test_a_document_of_many_items_is_read_a_batch_at_a_time(tmp_path):
    """Millions of items in a 60 KB gzip (`[],` repeated) were all parsed before the first batch: 20 GB."""
    text = json.dumps(page(*[event(EventId=f"m{i}") for i in range(40)], token="t"), indent=2)
    text += '\n{"AuthEvents": [' + "[]," * 30 + "[]]}\n"
    f = tmp_path / "many.json.gz"
    f.write_bytes(gzip.compress(text.encode()))
    batches = list(auth_events.READER.read(str(f), ReaderOptions(username="alice", batch_rows=7)))
    assert max(b.rows_read for b in batches) == 7
    assert sum(b.events.num_rows for b in batches) == 40 and sum(b.quarantine.num_rows for b in batches) == 31
    whole = list(auth_events.READER.read(str(f), ReaderOptions(username="alice")))
    assert [e for b in batches for e in b.events.column("event_id").to_pylist()] == \
        whole[0].events.column("event_id").to_pylist()
    assert [n for b in batches for n in b.events.column("source_line").to_pylist()] == \
        whole[0].events.column("source_line").to_pylist()


def test_a_broken_region_is_skipped_without_being_held_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(auth_events, "_CHUNK", 256)
    kept = []
    drop = auth_events._Text.drop_before

    def watch(self, pos):
        kept.append(len(self.buf))
        drop(self, pos)

    monkeypatch.setattr(auth_events._Text, "drop_before", watch)
    text = (json.dumps(page(event(EventId="b1"))) + "\nnot json " + "x" * 100_000 + "\n"
            + json.dumps(page(event(EventId="b2"))) + "\n")
    f = tmp_path / "broken.json.gz"
    f.write_bytes(gzip.compress(text.encode()))
    batches = list(auth_events.READER.read(str(f), ReaderOptions(username="alice")))
    assert [e for b in batches for e in b.events.column("event_id").to_pylist()] == ["b1", "b2"]
    (q,) = [b.quarantine.to_pylist() for b in batches if b.quarantine.num_rows]
    assert q[0]["source_line"] == 2 and q[0]["reason"].startswith("not JSON")
    more = 100_009 - base.MAX_RAW_CHARS
    assert q[0]["raw"] == "not json " + "x" * (base.MAX_RAW_CHARS - 9) + f"... [{more} more characters]"
    assert kept and max(kept) < 10_000  # the buffer never held the region


# -- B. JSON nested too deeply: the row quarantined, the rest read --------------------------------------------------

def test_a_deeply_nested_extra_field_quarantines_its_row_and_the_rest_is_ingested(env):
    """1,000 levels (2 KB) raised RecursionError in extra_json and ended the whole run: 0 events stored."""
    f, other = env / "deep.jsonl", env / "other.jsonl"
    deep = line("d2", X=0).replace('"X":0', '"X":' + nested(1000))
    f.write_text("\n".join([line("d1"), deep, line("d3")]) + "\n")
    other.write_text(line("o1") + "\n")
    out, res = ingest(f, other)
    assert res.exit_code == 0, res.output
    assert (out["rows_read"], out["events_added"], out["quarantined"]) == (4, 3, 1)
    assert event_ids(env) == ["d1", "d3", "o1"]
    ((_, n, reason, raw),) = quarantine(env)
    col = len(line("d2", X=0).split('"X":')[0]) + len('"X":') + 512  # the bracket that opens level 513
    assert (n, reason) == (2, f"nested too deeply: more than 512 levels of arrays and objects (at column {col})")
    assert raw == deep


@pytest.mark.parametrize("field", ["X", "Labels"])
def test_the_depth_limit_is_exact_for_kept_fields_and_labels(env, monkeypatch, field):
    monkeypatch.setattr(base, "MAX_JSON_DEPTH", 6)
    value = {"l": json.loads(nested(4))} if field == "Labels" else json.loads(nested(5))  # 6 levels with the row's
    deeper = {"l": json.loads(nested(5))} if field == "Labels" else json.loads(nested(6))
    f = env / "limit.jsonl"
    f.write_text("\n".join([line("k1", **{field: value}), line("k2", **{field: deeper}),
                            line("k3", Note="[[[[[[[[ in a string ]]]]]]]]")]) + "\n")
    out, res = ingest(f)
    assert res.exit_code == 0, res.output
    assert event_ids(env) == ["k1", "k3"]
    assert [(n, reason.split(" (")[0]) for _, n, reason, _ in quarantine(env)] == [
        (2, "nested too deeply: more than 6 levels of arrays and objects")]


def test_a_deeply_nested_auth_events_item_is_quarantined_alone(env):
    deep = event(EventId="a2")
    text = json.dumps(page(event(EventId="a1"), deep, event(EventId="a3"), token="t"))
    text = text.replace('"EventId": "a2"', '"EventId": "a2", "Zed": ' + nested(5000))
    text = text.replace('"NextToken": "t"', '"NextToken": ' + nested(3000))  # not kept: only stepped over
    text += "\n" + json.dumps(page(event(EventId="a4")), indent=2) + "\n"
    f = env / "alice.json"
    f.write_text(text)
    out, res = ingest(f, "--username", "alice")
    assert res.exit_code == 0, res.output
    assert event_ids(env) == ["a1", "a3", "a4"]
    ((_, n, reason, _),) = quarantine(env)
    col = text.index(nested(5000)) + 511 + 1  # the bracket that opens level 513 (the item's brace is level 1)
    assert (n, reason) == (1, f"nested too deeply: more than 512 levels of arrays and objects (at line 1 column {col})")


def test_users_load_refuses_a_deeply_nested_file_before_anything_changes(users_con, tmp_path):
    assert load_users(users_con, _users(tmp_path, "first.json", json.dumps({"Users": [user("bob")]}))).added == 1
    text = json.dumps({"Users": [user("alice", status="COMPROMISED"), user("bob", status="COMPROMISED")]}, indent=2)
    text = text.replace('"Username": "bob"', '"Username": "bob", "Deep": ' + nested(1000))
    deep_file = _users(tmp_path, "deep.json", text)
    with pytest.raises(InputFormatError) as exc:
        load_users(users_con, deep_file)
    at = text.index(nested(1000)) + 509  # the bracket that opens level 513: the page, Users and the user are 3
    line = text.count("\n", 0, at) + 1
    assert str(exc.value) == (
        f"{deep_file}: the document of line 1 nests arrays and objects too deeply for the JSON parser: more than "
        f"512 levels from line {line} column {at - text.rfind(chr(10), 0, at)}; expected ListUsers output")
    assert get_user(users_con, "alice") is None and get_user(users_con, "bob")["user_status"] == "CONFIRMED"


def _users(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_nesting_is_measured_outside_strings_without_parsing():
    from ingest.sources.base import deeper_than, json_nesting, json_value_end

    text = '{"a": "[[[{{{\\"]]]", "b": [[{"c": []}]], "d": "\\\\"}'
    assert json.loads(text) and json_nesting(text) == 5
    assert deeper_than(text, 3) == text.index('{"c"') and deeper_than(text, 4) == text.index("[]")
    assert deeper_than(text, 5) is None
    assert json_nesting(nested(100_000)) == 100_000  # no recursion
    assert json_value_end(nested(3000) + ", 1]", 0) == 6000
    assert json_value_end(nested(3000)[:-1], 0) is None  # cut off
