"""Batching and overlap in ingest: whatever the batch and block sizes, the same events and quarantine.

Batches fill to ``--batch-rows`` across read blocks (chunked arrays), a thread reads and
enriches ahead of the writer, and JSON strings in header items are unquoted without a parse
unless they hold an escape. None of that may change a stored value, a reason or a count.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import threading
import zlib

import duckdb
import pytest

from ingest import pipeline, store
from ingest.enrich import Enricher
from ingest.geo import GeoResolver
from ingest.sources import base
from ingest.errors import InputFormatError
from ingest.sources.base import ReaderOptions, iter_line_arrays
from ingest.sources.tabular import csv_header, iter_csv_records
from tests.events_gen import UA, event, many
from tests.geo_fixtures import build

ESCAPED_UA = 'Mozilla/5.0 "quoted" \u00e9\u20ac \U0001F600 a/b\\c \t end'


def _ctx(i, **over):
    return {**event(i)["ContextData"], **over}


def mixed_lines() -> list[bytes]:
    """Valid events among malformed JSON, wrong types, huge lines, blank lines and bytes that are not UTF-8."""
    good = [json.dumps(e).encode() for e in many(60)]
    special = [
        b'{"Username": "a", "EventType": ',  # malformed JSON
        json.dumps(event(1001, EventType=5)).encode(),  # wrong type
        json.dumps(event(1002, ContextData="10.0.0.1")).encode(),
        json.dumps(event(1003, ContextData=_ctx(1003, HttpHeaders=[{"headerName": "User-Agent", "headerValue": 42}]))).encode(),
        json.dumps(event(1004, ContextData=_ctx(1004, HttpHeaders=[
            {"headerName": "User-Agent", "headerValue": UA}, {"headerName": "X-Junk", "headerValue": "x" * 40_000}]))).encode(),
        json.dumps(event(1005, ContextData=_ctx(1005, HttpHeaders=[
            {"headerName": "User-Agent", "headerValue": UA}, {"headerName": "X-Big", "headerValue": "y" * 9_000}]))).encode(),
        json.dumps(event(1006, ContextData=_ctx(1006, HttpHeaders=[
            {"headerName": "User-Agent", "headerValue": ESCAPED_UA}, {"headerName": 'Na"me', "headerValue": "a\nb"},
            {"headerName": "Accept-Language", "headerValue": ""}]))).encode(),
        # escapes in a value (one of Cognito's: another is quarantined)
        json.dumps(event(1007, ChallengeResponses=[{"ChallengeName": "Password", "ChallengeResponse": "Success"}]),
                   ensure_ascii=False).replace('"Password"', '"P\\u0061ss\\u0077ord"').encode(),
        json.dumps(event(1008, Extra={"k": [1, 2]})).encode(),  # unknown key, kept in extra
        b'{"EventId": "dk-1", "Username": "u", "Username": "v", "EventType": "SignIn", "EventResponse": "Pass", '
        b'"CreationDate": "2026-01-01T00:00:00Z"}',  # duplicate key
        b'{"EventId": "dk-2", "Username": "u", "Other": 1, "Other": 2, "EventType": "SignIn", "EventResponse": "Pass", '
        b'"CreationDate": "2026-01-01T00:00:00Z"}',  # duplicate unknown key
        b'{"Username": "\xff\xfe"}',  # not UTF-8
        b"[1, 2, 3]",
        b"",
        b"   ",
        json.dumps(event(3)).encode(),  # a duplicate of an earlier event
    ]
    out = list(good)
    for k, line in enumerate(special):
        out.insert(3 + k * 4, line)
    return out


def _ingest(tmp_path, name, data: bytes, batch_rows: int):
    src = tmp_path / "mixed.jsonl"
    src.write_bytes(data)
    city, asn = build(tmp_path)
    con = store.connect(tmp_path / f"{name}.duckdb")
    try:
        result = pipeline.ingest_paths(con, [str(src)], options=ReaderOptions(batch_rows=batch_rows),
                                       enricher=Enricher(geo=GeoResolver(str(city), str(asn))))
        events = con.execute("SELECT * EXCLUDE (ingest_run_id, ingested_at) FROM events ORDER BY event_id").fetchall()
        quarantine = con.execute(
            "SELECT * EXCLUDE (ingest_run_id, quarantined_at) FROM quarantine ORDER BY source_line").fetchall()
        headers = dict(con.execute("SELECT event_id, http_headers FROM events").fetchall())
        challenges = dict(con.execute("SELECT event_id, challenge_responses FROM events").fetchall())
    finally:
        con.close()
    counts = (result.rows_read, result.events_added, result.duplicates, result.quarantined)
    assert result.rows_read == result.events_added + result.duplicates + result.quarantined
    assert not result.errors
    return counts, events, quarantine, headers, challenges


def test_batch_and_block_sizes_change_nothing_stored(tmp_path, monkeypatch):
    data = b"\n".join(mixed_lines()) + b"\r\n" + json.dumps(event(2000)).encode()  # CRLF, no final newline
    whole = _ingest(tmp_path, "whole", data, batch_rows=1_000_000)  # one batch, one block
    monkeypatch.setattr(base, "LINE_BLOCK_BYTES", 4096)  # lines longer than a block, batches across blocks
    for batch_rows in (1, 7, 64):
        small = _ingest(tmp_path, f"small{batch_rows}", data, batch_rows=batch_rows)
        assert small[0] == whole[0]
        assert small[1] == whole[1]
        assert small[2] == whole[2]
    counts, _, quarantine, headers, challenges = whole
    assert counts == (75, 67, 1, 7)  # 77 lines, 2 blank; 7 bad; event 3 twice
    reasons = {line: reason for _, _, line, reason, *_ in quarantine}
    assert any(r.startswith("malformed JSON: Expecting value") for r in reasons.values())
    assert "EventType must be a string, got a number" in reasons.values()
    assert "not UTF-8: invalid byte at position 14" in reasons.values()
    assert 'header "X-Junk" is 40000 bytes, more than 16384' in reasons.values()
    # strings with escapes come out exactly as a JSON parser reads them
    assert headers["ev-0001006"] == [{"header_name": "User-Agent", "header_value": ESCAPED_UA},
                                     {"header_name": 'Na"me', "header_value": "a\nb"},
                                     {"header_name": "Accept-Language", "header_value": ""}]
    assert challenges["ev-0001007"] == [{"challenge_name": "Password", "challenge_response": "Success"}]
    assert len(headers["ev-0001005"][1]["header_value"]) == 9_000


def test_line_batches_fill_up_across_blocks_with_their_physical_line_numbers(tmp_path, monkeypatch):
    lines = [b'{"n": %d}' % i if i % 5 else b"" for i in range(1, 301)]  # every fifth line blank
    lines[10] = b'{"long": "' + b"z" * 10_000 + b'"}'
    lines[20] = b"\xff not utf-8"
    f = tmp_path / "lines.txt"
    f.write_bytes(b"\n".join(lines) + b"\n")
    monkeypatch.setattr(base, "LINE_BLOCK_BYTES", 1000)
    batches = list(iter_line_arrays(f, 50))
    assert [len(b.texts) for b in batches] == [50, 50, 50, 50, 39]
    got = [(n, t.rstrip("\n")) for b in batches for n, t in zip(b.lines.to_pylist(), b.texts.to_pylist())]
    want = [(i + 1, line.decode()) for i, line in enumerate(lines) if line and i != 20]
    assert got == want
    assert [q[:2] for b in batches for q in b.quarantine] == [(21, "not UTF-8: invalid byte at position 0")]


@pytest.mark.parametrize("block", [1000, 4096, 5000, 1 << 20])
def test_a_plain_file_and_its_gzip_give_the_same_lines(tmp_path, monkeypatch, block):
    """The same lines, line numbers and quarantine from a file and from its gzip, for any block size (lines
    longer than a block, CRLF, blank and whitespace lines, bad UTF-8, no newline at the end); batches full
    but the last, and the progress observer reaching the file's size."""
    import gzip
    import random

    rnd = random.Random(block)
    lines = []
    for i in range(400):
        k = rnd.random()
        lines.append(b"" if k < 0.1 else b"   " if k < 0.13 else b"\xfe\xff bad" if k < 0.15
                     else b'{"n": %d, "pad": "%s"}' % (i, b"x" * rnd.choice([1, 50, 700, 3000, 9000])))
    data = b"\n".join(line + (b"\r" if i % 7 == 0 and line else b"") for i, line in enumerate(lines))  # no final \n
    plain, packed = tmp_path / "lines.jsonl", tmp_path / "lines.jsonl.gz"
    plain.write_bytes(data)
    packed.write_bytes(gzip.compress(data))
    monkeypatch.setattr(base, "LINE_BLOCK_BYTES", block)
    seen = []
    token = base.BYTES_READ_OBSERVER.set(seen.append)
    try:
        direct = list(iter_line_arrays(plain, 37))
    finally:
        base.BYTES_READ_OBSERVER.reset(token)
    read = list(iter_line_arrays(packed, 37))  # through gzip

    def flat(batches):
        return ([n for b in batches for n in b.lines.to_pylist()], [t for b in batches for t in b.texts.to_pylist()],
                [q for b in batches for q in b.quarantine])

    assert flat(direct) == flat(read)
    numbers, texts, bad = flat(direct)
    assert len(numbers) == sum(1 for line in lines if line.strip() and not line.startswith(b"\xfe")) == len(texts)
    assert texts[-1].endswith("\n") and texts[0].rstrip("\r\n") == lines[numbers[0] - 1].decode()
    assert [q[0] for q in bad] == [i + 1 for i, line in enumerate(lines) if line.startswith(b"\xfe")]
    assert seen == sorted(seen) and seen[-1] == len(data)
    assert [len(b.texts) for b in direct][:-1] == [37] * (len(direct) - 1)



def gzip_whole_lines(data: bytes) -> bytes:
    """What Python's gzip module decompresses from ``data`` (a .gz perhaps cut short) before the break, up to its
    last newline: ``read1`` does one read of the decompressor a call, so nothing is lost when the next raises."""
    out = bytearray()
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as g:
        try:
            while chunk := g.read1(1 << 16):
                out += chunk
        except EOFError:  # cut short
            assert bytes(out) == zlib.decompressobj(31).decompress(data)  # (all that zlib itself gives)
        except zlib.error:  # damaged (what zlib decompressed in the call that found the damage is lost)
            pass
    return bytes(out[: out.rfind(b"\n") + 1])


def cut_points(data: bytes, n: int = 9) -> list[int]:
    """``n`` lengths spread over ``data`` (past its gzip header) at which to cut it."""
    return [len(data) * (2 * k + 1) // (2 * n) for k in range(n)]


def random_lines(count: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)  # lines of random lengths that do not compress to nothing
    return [b'{"n": %d, "pad": "%s"}' % (i, rnd.randbytes(rnd.randrange(1, 600)).hex().encode()) for i in range(count)]


@pytest.mark.parametrize("block", [1000, 100_000, 1 << 24])
def test_a_gzip_cut_short_gives_every_whole_line_before_the_break_and_names_the_last(tmp_path, monkeypatch, block):
    """A .gz cut anywhere: every whole line gzip decompresses before the break is a line (read in pieces, the
    piece that reached the break lost all it had decompressed: up to 64 KiB of whole lines), the unfinished
    line is not, and the error names the last line read."""
    data = gzip.compress(b"\n".join(random_lines(3000, block)) + b"\n", mtime=0)
    monkeypatch.setattr(base, "LINE_BLOCK_BYTES", block)
    f = tmp_path / "cut.jsonl.gz"
    for cut in cut_points(data):
        f.write_bytes(data[:cut])
        whole = gzip_whole_lines(data[:cut]).count(b"\n")
        got: list[int] = []
        with pytest.raises(InputFormatError) as err:
            for lb in iter_line_arrays(f, 500):
                got.extend(lb.lines.to_pylist())
        assert got == list(range(1, whole + 1)), cut
        assert str(err.value).startswith(f"{f}: cannot read past line {whole}: Compressed file ended"), cut


def test_a_gzip_csv_cut_short_gives_every_whole_record_before_the_break_and_names_the_last_line(tmp_path):
    """The same for CSV (rba-csv and generic CSV read their records so): cut in half, nothing was kept (its first
    read, of 1 MiB, reached the break), and the error named the line after the last one read."""
    rnd = random.Random(5)
    rows = [b"%d,%s" % (i, rnd.randbytes(rnd.randrange(1, 600)).hex().encode()) for i in range(3000)]
    data = gzip.compress(b"n,pad\n" + b"\n".join(rows) + b"\n", mtime=0)
    f = tmp_path / "cut.csv.gz"
    for cut in cut_points(data):
        f.write_bytes(data[:cut])
        whole = gzip_whole_lines(data[:cut]).count(b"\n")
        assert csv_header(f) == ["n", "pad"]
        got: list[int] = []
        with pytest.raises(InputFormatError) as err:
            for recs in iter_csv_records(f, 2, 500):
                assert not recs.bad
                got.extend(recs.lines.to_pylist())
        assert got == list(range(2, whole + 1)), cut
        assert str(err.value).startswith(f"{f}: cannot read past line {whole}: Compressed file ended"), cut


def test_a_gzip_damaged_part_way_is_an_error_naming_the_last_line_read_not_a_crash(tmp_path):
    """A .gz damaged in the middle (not cut short): zlib's error (not an OSError) went past every reader's handling
    of a damaged input and ended the whole run with a traceback. (zlib gives nothing of what it decompressed in
    the call that finds the damage: the lines before it in that compressed piece are lost.)"""
    lines = random_lines(3000, 9)
    packer = zlib.compressobj(wbits=31)  # gzip, flushed whole after 1,500 lines and part of one more
    data = packer.compress(b"\n".join(lines[:1501])[:-20]) + packer.flush(zlib.Z_FULL_FLUSH)
    data += b"\x07" + bytes(100)  # then a block of the invalid type 3 (and its final one)
    f = tmp_path / "damaged.jsonl.gz"
    f.write_bytes(data)
    got: list[int] = []
    damaged = r"cannot read past line \d+: damaged compressed data: .*invalid block"
    with pytest.raises(InputFormatError, match=damaged) as err:
        for lb in iter_line_arrays(f, 500):
            got.extend(lb.lines.to_pylist())
    assert got == list(range(1, len(got) + 1)) and f": cannot read past line {len(got)}: " in str(err.value)
    assert 1400 < len(got) <= 1500


def test_a_cut_gzip_read_in_any_way_gives_all_it_decompressed_then_the_error(tmp_path):
    """Through ``open_binary``: ``read`` and ``readinto`` of any size, after ``readline`` and ``peek`` left bytes
    waiting in the gzip file's buffer, give every byte gzip decompresses before the break; then the error."""
    data = gzip.compress(b"\n".join(random_lines(2000, 3)) + b"\n", mtime=0)
    f = tmp_path / "cut.gz"
    for cut in cut_points(data, 5):
        f.write_bytes(data[:cut])
        want = zlib.decompressobj(31).decompress(data[:cut])
        for size in (1000, 1 << 16, 1 << 20, -1):
            with base.open_binary(f) as fh:
                got = bytearray(fh.readline()) + fh.peek(10)[:0]
                with pytest.raises(EOFError, match="Compressed file ended"):
                    while True:
                        if size > 0 and len(got) % 2:
                            piece = bytearray(size)
                            n = fh.readinto(piece)
                            assert n  # (no end of input before the error)
                            got += piece[:n]
                        else:
                            chunk = fh.read(size)
                            assert chunk
                            got += chunk
                assert got == want, (cut, size)
                with pytest.raises(EOFError):  # and again
                    fh.read(10)

#: how ingest reads a plain reader's batches (one thread, one ahead), and a PartReader's (the pool's defaults)
ONE_THREAD = {"workers": 1, "ahead": 1, "nice": 0}
HOW = pytest.mark.parametrize("how", [ONE_THREAD, {}], ids=["one thread", "pool"])


@HOW
def test_items_keep_their_order_and_an_error_reading_them_is_raised_where_it_happened(how):
    def items():
        yield 1
        yield 2
        raise ValueError("bad third item")

    got = []
    with pytest.raises(ValueError, match="bad third item"):
        for x in pipeline.in_pool(pipeline._jobs(items(), lambda x: x * 10), "test", **how):
            got.append(x)
    assert got == [10, 20]
    assert not any(t.name.startswith("riskgate-ingest-test") for t in threading.enumerate())


@HOW
def test_the_threads_stop_and_close_their_source_when_the_consumer_stops(how):
    closed = threading.Event()

    def endless():
        try:
            n = 0
            while True:
                n += 1
                yield n
        finally:
            closed.set()

    gen = pipeline.in_pool(pipeline._jobs(endless(), lambda x: x), "test", **how)
    assert [next(gen), next(gen), next(gen)] == [1, 2, 3]
    gen.close()
    assert closed.wait(5)
    assert not any(t.name.startswith("riskgate-ingest-test") for t in threading.enumerate())


def test_an_error_in_the_writer_stops_the_reading_thread(tmp_path, monkeypatch):
    src = tmp_path / "a.jsonl"
    src.write_text("\n".join(json.dumps(e) for e in many(50)) + "\n")
    city, asn = build(tmp_path)
    calls = []

    def failing_write(con, batch, run_id, stored, read_before, record_feedback=None):
        calls.append(batch)
        raise duckdb.IOException("disk full")

    monkeypatch.setattr(pipeline, "_write_batch", failing_write)
    con = store.connect(tmp_path / "s.duckdb")
    try:
        result = pipeline.ingest_paths(con, [str(src)], options=ReaderOptions(batch_rows=10),
                                       enricher=Enricher(geo=GeoResolver(str(city), str(asn))))
    finally:
        con.close()
    assert len(calls) == 1 and result.rows_read == 0
    assert result.errors and "disk full" in result.errors[0]
    assert not any(t.name.startswith("riskgate-ingest-") for t in threading.enumerate())


def test_the_insert_stores_the_rows_the_enrichment_returns(tmp_path):
    """Ingest runs the final enrichment inside the store's INSERT; ``Enricher.run`` (the service's SQL path)
    returns the same projection as Arrow rows. Both give the same values, column for column."""
    from ingest.schema import EVENT_COLUMNS
    from ingest.sources import riskgate_jsonl

    data = b"\n".join(mixed_lines()) + b"\n"
    _, stored, _, _, _ = _ingest(tmp_path, "stored", data, batch_rows=16)
    city, asn = build(tmp_path)
    enricher = Enricher(geo=GeoResolver(str(city), str(asn)))
    src = str(tmp_path / "mixed.jsonl")
    first: dict[str, tuple] = {}
    for batch in riskgate_jsonl.READER.read(src, ReaderOptions(batch_rows=16)):
        good, bad = enricher.run(batch.events, riskgate_jsonl.NAME, src)
        assert good.num_rows + bad.num_rows == batch.events.num_rows
        for row in good.to_pylist():
            key = row["event_id"]
            if key not in first or row["source_line"] < first[key][EVENT_COLUMNS.index("source_line")]:
                first[key] = tuple(row[c] for c in EVENT_COLUMNS)
    assert len(stored) == len(first) == 66  # 67 good rows, event 3 twice
    assert stored == [first[k] for k in sorted(first)]


@pytest.mark.parametrize("lines", [
    [b"x" * 300] * 50,  # event-sized lines: found one by one
    [b""] * 5000,  # blank lines: the mask
    [b"x" * 300] * 20 + [b""] * 3000 + [b"y" * 900] * 10,  # starts long, turns short half way
])
def test_newlines_are_found_whatever_the_line_lengths(lines):
    import numpy as np

    data = bytearray(b"\n".join(lines) + b"\n" + b"tail without newline")
    size = len(data) - len(b"tail without newline")
    want = np.flatnonzero(np.frombuffer(bytes(data[:size]), dtype=np.uint8) == 10)
    assert base._newlines(data, size).tolist() == want.tolist()
    assert base._newlines(bytes(data), size).tolist() == want.tolist()


def test_the_two_stages_share_the_cores_and_the_store_gets_its_threads_back(tmp_path, monkeypatch):
    """While ingest runs, the writer's database and the reading thread's each have half the threads (at least
    one); afterwards, also after an error, the store has the threads it had."""
    src = tmp_path / "a.jsonl"
    src.write_text("\n".join(json.dumps(e) for e in many(30)) + "\n")
    city, asn = build(tmp_path)
    con = store.connect(tmp_path / "s.duckdb")
    try:
        for before in (4, 1):
            con.execute(f"SET threads = {before}")
            during = []
            result = pipeline.ingest_paths(con, [str(src)], options=ReaderOptions(batch_rows=10),
                                           enricher=Enricher(geo=GeoResolver(str(city), str(asn))),
                                           # after each batch written (done == -1: the main thread's call)
                                           progress=lambda path, done, rows: done == -1 and during.append(
                                               store.threads(con)))
            assert result.rows_read == 30 and not result.errors
            assert set(during) == {max(1, before // 2)}
            assert store.threads(con) == before
        scratch, fresh = store.scratch(), duckdb.connect()
        assert store.threads(scratch) == max(1, store.threads(fresh) // 2)
        scratch.close()
        fresh.close()

        def failing_write(con, batch, run_id, stored, read_before, record_feedback=None):
            raise RuntimeError("the writer broke")

        monkeypatch.setattr(pipeline, "_write_batch", failing_write)
        con.execute("SET threads = 4")
        with pytest.raises(RuntimeError, match="the writer broke"):
            pipeline.ingest_paths(con, [str(src)], enricher=Enricher(geo=GeoResolver(str(city), str(asn))))
        assert store.threads(con) == 4
    finally:
        con.close()


# -- the pool that parses and prepares the batches of a PartReader --------------------------------------------


def test_in_pool_keeps_order_runs_two_jobs_at_once_and_stays_bounded():
    import random
    import time

    both = threading.Barrier(2, timeout=5)  # the first two jobs wait for each other: they must run at once
    started = []
    lock = threading.Lock()
    rnd = random.Random(3)
    delays = [rnd.choice([0, 0.001, 0.01]) for _ in range(40)]

    def job(i):
        with lock:
            started.append(i)
        if i < 2:
            both.wait()
        time.sleep(delays[i])
        return i * 10

    got = []
    for k, x in enumerate(pipeline.in_pool(pipeline._jobs(iter(range(40)), job), "test", workers=2, ahead=2)):
        time.sleep(0.005)  # the caller holds item k a while: the workers may run ahead, but not further than 2
        with lock:
            assert max(started) <= k + 2
        got.append(x)
    assert got == [i * 10 for i in range(40)]
    assert sorted(started) == list(range(40))
    assert not any(t.name.startswith("riskgate-ingest-test") for t in threading.enumerate())


def test_in_pool_raises_an_error_where_it_happened_after_the_results_before_it():
    def job(i):
        if i == 3:
            raise ValueError("bad fourth job")
        return i

    got = []
    with pytest.raises(ValueError, match="bad fourth job"):
        for x in pipeline.in_pool(pipeline._jobs(iter(range(10)), job), "test"):
            got.append(x)
    assert got == [0, 1, 2]
    assert not any(t.name.startswith("riskgate-ingest-test") for t in threading.enumerate())


def test_in_pool_workers_see_the_callers_context_and_run_below_its_priority():
    import contextvars
    import os
    import sys

    var = contextvars.ContextVar("var", default="unset")
    var.set("the caller's")

    def job(i):
        return var.get(), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    got = list(pipeline.in_pool(pipeline._jobs(iter(range(4)), job), "test"))
    assert [v for v, _ in got] == ["the caller's"] * 4
    if sys.platform == "linux":
        assert {p for _, p in got} == {min(19, mine + pipeline.POOL_NICE)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine  # the caller's own is unchanged


def test_the_pool_stores_what_one_reading_thread_stores(tmp_path, monkeypatch):
    """riskgate JSON lines are parsed and prepared by two threads (a PartReader); taken as a plain reader, the
    same file goes through one reading thread. The same events, quarantine and counts, for several batch sizes."""
    from ingest.sources import riskgate_jsonl
    from ingest.sources.base import PartReader

    assert isinstance(riskgate_jsonl.READER, PartReader)
    data = b"\n".join(mixed_lines()) + b"\n"
    monkeypatch.setattr(base, "LINE_BLOCK_BYTES", 4096)
    pooled = {n: _ingest(tmp_path, f"pool{n}", data, batch_rows=n) for n in (3, 16)}
    monkeypatch.setattr(pipeline, "PartReader", type("NoReaderIsThis", (), {}))  # every reader the old way
    for n in (3, 16):
        assert _ingest(tmp_path, f"one{n}", data, batch_rows=n) == pooled[n]
    assert pooled[3][0] == pooled[16][0] == (74, 66, 1, 7)  # 76 lines, 2 blank; 7 bad; event 3 twice


def activity_lines() -> list[bytes]:
    """Cognito user-activity records: plain, behind a CloudWatch timestamp, in envelopes (several records to
    a line), among lines that are not records at all."""
    from tests.test_sources_cognito_user_activity import line

    out = []
    for i in range(70):
        text = line(eventId=f"ua-{i}", userName=f"user{i % 9}", ipAddress=f"198.51.100.{i % 50}",
                    creationDate=f"Wed Jul 17 17:{i // 60:02d}:{i % 60:02d} UTC 2024")
        if i % 10 == 3:
            text = "2024-07-17T17:25:55.677Z " + text
        if i % 10 == 6:
            text = json.dumps({"messageType": "DATA_MESSAGE", "logEvents": [
                {"id": "1", "timestamp": 1, "message": text},
                {"id": "2", "timestamp": 1, "message": line(eventId=f"ua-{i}-b", userName="other")},
                {"id": "3", "timestamp": 1, "message": line(eventId=f"ua-{i}-c", userName="")}]})
        out.append(text.encode())
    for k, bad in enumerate([b"{not json", line(userName=5).encode(), b"[1, 2]", b"", b'{"message": "\xff"}',
                             line(hasContextData="maybe").encode(), line(eventId="ua-5").encode()]):
        out.insert(5 + k * 9, bad)
    return out


def test_the_pool_stores_what_one_reading_thread_stores_for_cognito_user_activity(tmp_path, monkeypatch):
    """A Cognito user-activity export is parsed and prepared by two threads too: the same events, quarantine
    and counts as one reading thread; an empty export is refused with the same message either way."""
    from ingest.sources import cognito_user_activity
    from ingest.sources.base import PartReader

    assert isinstance(cognito_user_activity.READER, PartReader)
    data = b"\n".join(activity_lines()) + b"\n"
    monkeypatch.setattr(base, "LINE_BLOCK_BYTES", 4096)
    pooled = {n: _ingest(tmp_path, f"pool{n}", data, batch_rows=n) for n in (4, 25)}
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"\n")
    errors = {}
    for how in ("pool", "one"):
        con = store.connect(tmp_path / f"empty-{how}.duckdb")
        try:
            errors[how] = pipeline.ingest_paths(con, [str(empty)], fmt="cognito-user-activity",
                                                enricher=Enricher(geo=None)).errors
        finally:
            con.close()
        monkeypatch.setattr(pipeline, "PartReader", type("NoReaderIsThis", (), {}))  # every reader the old way
    for n in (4, 25):
        assert _ingest(tmp_path, f"one{n}", data, batch_rows=n) == pooled[n]
    counts, events, quarantine = pooled[4][:3]
    # 90 rows: 84 records from the 70 lines (63 of one record, 7 envelopes of three) and 6 lines more (the
    # blank one is no row); quarantined: the 3 lines that hold no record, 2 bad records and the 7 records
    # without a user name; ua-5 comes twice
    assert counts == pooled[25][0] == (90, 77, 1, 12)
    assert len(events) == 77 and len(quarantine) == 12
    assert errors["pool"] == errors["one"] and len(errors["pool"]) == 1 and "is empty" in errors["pool"][0]


def test_each_thread_stages_on_its_own_connection_to_the_enrichers_database(tmp_path):
    enricher = Enricher(geo=None)
    here = enricher.connection()
    assert here is enricher.con and enricher.connection() is here
    seen = []

    def other():
        seen.append((enricher.connection(), enricher.connection()))
        seen.append(seen[-1][0].execute("SELECT current_setting('TimeZone')").fetchall())

    t = threading.Thread(target=other)
    t.start()
    t.join()
    (a, b), tz = seen
    assert a is b and a is not here
    assert tz == [("UTC",)]
