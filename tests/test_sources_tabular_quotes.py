"""ingest.sources.tabular's CSV record reader and quotes: a quote opens a quoted field only at the start of a field
(RFC 4180, as Python's csv module and DuckDB's read_csv read it); no input row is lost, whatever its quotes."""

from __future__ import annotations

import bisect
import csv
import io
import json
import random
import re

import pyarrow as pa
import pytest

import ingest.sources.tabular as tabular
from ingest.sources.base import ReaderOptions
from ingest.sources.rba_csv import HEADER as RBA_HEADER, READER as RBA_READER
from ingest.sources.tabular import CSV_READER, csv_header, iter_csv_records

MAPPING = {"columns": {"username": "user", "creation_date": "ts", "event_response": "ok"},
           "constants": {"event_type": "SignIn"}}
T = "2026-06-01T08:30:1{}Z"


def read(tmp_path, data: bytes | str, mapping=None, reader=CSV_READER, **opts):
    p = tmp_path / "data.csv"
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    m = tmp_path / "mapping.json"
    m.write_text(json.dumps(mapping or MAPPING))
    batches = list(reader.read(str(p), ReaderOptions(mapping=str(m), **opts)))
    events = pa.concat_tables([b.events for b in batches])
    quarantine = pa.concat_tables([b.quarantine for b in batches])
    assert sum(b.rows_read for b in batches) == events.num_rows + quarantine.num_rows
    return events, quarantine


def bad(q: pa.Table) -> list[tuple[int, str]]:
    return [(r["source_line"], r["reason"]) for r in q.to_pylist()]


def test_a_quote_inside_an_unquoted_field_is_a_character_of_it_and_every_row_is_read(tmp_path):
    ev, q = read(tmp_path, "user,ts,ok,note\n"
                           f"alice,{T.format(0)},Pass,ok\n"
                           f'bob,{T.format(1)},Pass,5" screen\n'  # was: the next lines up to erin's quote one record
                           f"carol,{T.format(2)},Pass,ok\n"
                           f"dave,{T.format(3)},Pass,ok\n"
                           f'erin,{T.format(4)},Pass,12" ruler\n'
                           f'frank,{T.format(5)},Pass,"say ""hi"", then go"\n')
    assert q.num_rows == 0
    assert ev.column("username").to_pylist() == ["alice", "bob", "carol", "dave", "erin", "frank"]
    assert ev.column("source_line").to_pylist() == [2, 3, 4, 5, 6, 7]
    assert [json.loads(x)["note"] for x in ev.column("extra").to_pylist()] == [
        "ok", '5" screen', "ok", "ok", '12" ruler', 'say "hi", then go']
    assert ev.column("_raw").to_pylist()[1] == f'bob,{T.format(1)},Pass,5" screen'


def test_one_stray_quote_loses_no_row_after_it(tmp_path):
    rows = "".join(f"user{i},{T.format(i % 10)},Pass\n" for i in range(1000))
    ev, q = read(tmp_path, f"user,ts,ok\nalice,{T.format(0)},Pass\nbo\"b,{T.format(1)},Pass\n" + rows)
    assert q.num_rows == 0 and ev.num_rows == 1002
    assert ev.column("username").to_pylist()[:3] == ["alice", 'bo"b', "user0"]
    assert ev.column("source_line").to_pylist()[-1] == 1003


def test_quotes_closing_a_field_before_its_end_read_as_python_and_duckdb_read_them(tmp_path):
    ev, q = read(tmp_path, "user,ts,ok,note\n"
                           f'a,{T.format(0)},Pass,"ab"c"d\n'  # the field is abc"d, then the line ends the row
                           f'b,{T.format(1)},Pass,""x\n'
                           f'"c,d"e,{T.format(2)},Pass,n\n')
    assert q.num_rows == 0
    assert ev.column("username").to_pylist() == ["a", "b", "c,de"]
    assert [json.loads(x)["note"] for x in ev.column("extra").to_pylist()] == ['abc"d', "x", "n"]


def test_rba_values_ending_in_a_quote_lose_no_row(tmp_path):
    ua = '"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/146.0"'
    rows = [f"{i},2026-06-01 08:30:{i:02d}.036,u1,,82.29.28.237,UA,Kyiv City,{city},20473,{ua},Chrome 146,"
            "Windows 10,desktop,True,False,False"
            for i, city in enumerate(["Kyiv", 'Kyiv"', "Lviv", 'Odesa"', "Kyiv"])]
    ev, q = read(tmp_path, RBA_HEADER + "\n" + "\n".join(rows) + "\n", reader=RBA_READER)
    assert q.num_rows == 0
    assert ev.column("source_city").to_pylist() == ["Kyiv", 'Kyiv"', "Lviv", 'Odesa"', "Kyiv"]
    assert ev.column("event_id").to_pylist() == ["0", "1", "2", "3", "4"]
    assert set(ev.column("user_agent_source").to_pylist()) == {ua.strip('"')}


def test_a_quote_opening_a_field_it_never_closes_costs_only_its_line(tmp_path):
    ev, q = read(tmp_path, "user,ts,ok,note\n"
                           f'a,{T.format(0)},Pass,"oops\n'  # 2: read to its closing quote, a row of 5 columns
                           f"b,{T.format(1)},Pass,n\n"
                           f'c,{T.format(2)},Pass,"ok, quoted"\n'
                           f'd,{T.format(3)},Pass,"two\nlines"\n'  # 5-6: a quoted line end still is the field's
                           f'e,{T.format(4)},Pass,"never closed\n'  # 7
                           f"f,{T.format(5)},Pass,n\n"
                           f"g,{T.format(6)},Pass,n\n")
    assert ev.column("username").to_pylist() == ["b", "c", "d", "f", "g"]
    assert ev.column("source_line").to_pylist() == [3, 4, 5, 8, 9]
    assert [json.loads(x)["note"] for x in ev.column("extra").to_pylist()] == ["n", "ok, quoted", "two\nlines", "n",
                                                                               "n"]
    assert bad(q) == [
        (2, "a quoted field is not closed on this line (read on to its closing quote, the row has 5 columns, "
            "expected 4)"),
        (7, "a quoted field is not closed before the end of the file"),
    ]
    assert q.column("raw").to_pylist() == [f'a,{T.format(0)},Pass,"oops', f'e,{T.format(4)},Pass,"never closed']


def test_a_never_closed_quote_before_a_thousand_rows(tmp_path):
    rows = "".join(f"user{i},{T.format(i % 10)},Pass\n" for i in range(1000))
    ev, q = read(tmp_path, f'user,ts,ok\nalice,{T.format(0)},Pass\n"bob,{T.format(1)},Pass\n' + rows)
    assert bad(q) == [(3, "a quoted field is not closed before the end of the file")]
    assert ev.num_rows == 1001 and ev.column("source_line").to_pylist()[-1] == 1003


def test_a_row_missing_a_column_in_a_quoted_multiline_value_still_accounts_for_every_line(tmp_path):
    ev, q = read(tmp_path, "user,ts,ok,note\n"
                           f'x,{T.format(0)},"Pass\nlater"\n'  # 2-3: 3 columns: line 2 alone, then line 3
                           f"y,{T.format(1)},Pass,n\n")
    assert ev.column("username").to_pylist() == ["y"]
    assert bad(q) == [
        (2, "a quoted field is not closed on this line (read on to its closing quote, the row has 3 columns, "
            "expected 4)"),
        (3, "expected 4 columns, found 1"),
    ]


def test_a_stray_quote_in_the_header(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text(f'user,ts,ok,size"\na,{T.format(0)},Pass,5\nb,{T.format(1)},Pass,"6"\n')
    assert csv_header(p) == ["user", "ts", "ok", 'size"']
    ev, q = read(tmp_path, p.read_text())
    assert q.num_rows == 0 and ev.column("username").to_pylist() == ["a", "b"]


def test_the_slow_parse_accounts_for_every_row(tmp_path, monkeypatch):
    """When pyarrow reads a block differently than it was split, Python's csv module reads it record by record:
    every record is a row or a bad record (it used to keep a record's first row and drop the others)."""

    def fail(*a, **k):
        raise pa.ArrowInvalid("as if pyarrow read it differently")

    monkeypatch.setattr(tabular.pacsv, "read_csv", fail)
    ev, q = read(tmp_path, "user,ts,ok,note\n"
                           f'alice,{T.format(0)},Pass,5" screen\n'
                           f"bob,{T.format(1)},Pass,ok\n"
                           f'carol,{T.format(2)},Pass,"two\nlines"\n'
                           f"dave,{T.format(3)},Pass\n"
                           f'erin,{T.format(4)},Pass,12" ruler\n')
    assert ev.column("username").to_pylist() == ["alice", "bob", "carol", "erin"]
    assert [json.loads(x)["note"] for x in ev.column("extra").to_pylist()] == ['5" screen', "ok", "two\nlines",
                                                                               '12" ruler']
    assert bad(q) == [(6, "expected 4 columns, found 3")]


# -- against Python's csv module, on random files -------------------------------------------------------------------

ALPHABET = ["a", "b", " ", ",", '"', "\n", "\r\n", '""']


def _field(rng: random.Random) -> str:
    """A field as a CSV writer writes it (quoted when it must be), or, half the time when it can, unquoted with
    quotes inside it but not at its start (a stray quote, a character of the field)."""
    text = "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 6)))
    plain = text.replace(",", "").replace("\n", "").replace("\r", "")
    if plain and not plain.startswith('"') and rng.random() < 0.5:
        return plain
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow([text])  # (the line terminator's characters are quoted)
    return out.getvalue().removesuffix("\r\n") if text else rng.choice(["", '""'])


def _random_file(rng: random.Random, ncols: int, nrows: int) -> str:
    lines = [",".join(f"h{i}" for i in range(ncols))]
    for _ in range(nrows):
        lines.append(",".join(_field(rng) for _ in range(ncols)))
    return "\n".join(lines) + rng.choice(["", "\n"])


def _flat(chunks):
    return ([list(r.values()) for c in chunks for r in c.rows.to_pylist()],
            [x for c in chunks for x in c.lines.to_pylist()], [b for c in chunks for b in c.bad])


@pytest.mark.parametrize("small_blocks", [False, True])
def test_well_formed_random_files_read_as_pythons_csv_reads_them(tmp_path, monkeypatch, small_blocks):
    if small_blocks:  # records cut across reads, carried over
        for name, value in (("_FIRST_BLOCK", 7), ("_MIN_BLOCK", 5), ("_MAX_BLOCK", 23)):
            monkeypatch.setattr(tabular, name, value)
    rng = random.Random(20261129)
    p = tmp_path / "r.csv"
    for _ in range(150):
        ncols = rng.randrange(1, 4)
        text = _random_file(rng, ncols, rng.randrange(1, 12))
        p.write_bytes(text.encode())
        want = [r for r in csv.reader(io.StringIO(text, newline=""))][1:]
        want = [r for r in want if r != []]  # (blank lines are no rows)
        rows, _, errors = _flat(iter_csv_records(str(p), ncols, 4))
        assert (rows, errors) == (want, []), text


@pytest.mark.parametrize("small_blocks", [False, True])
def test_any_random_file_accounts_for_every_line(tmp_path, monkeypatch, small_blocks):
    """Whatever the quotes: each line that is not blank belongs to exactly one row or bad record, and each row is
    what Python's csv module reads from its raw text."""
    if small_blocks:
        for name, value in (("_FIRST_BLOCK", 7), ("_MIN_BLOCK", 5), ("_MAX_BLOCK", 23)):
            monkeypatch.setattr(tabular, name, value)
    rng = random.Random(7)
    p = tmp_path / "r.csv"
    for _ in range(300):
        ncols = rng.randrange(1, 4)
        body = "".join(rng.choice(["a", ",", '"', "\n", "b", '""']) for _ in range(rng.randrange(0, 40)))
        text = ",".join(f"h{i}" for i in range(ncols)) + "\n" + body
        p.write_bytes(text.encode())
        chunks = list(iter_csv_records(str(p), ncols, 3))
        spans = [(line, raw) for c in chunks for line, raw in zip(c.lines.to_pylist(), c.raws.to_pylist())]
        spans += [(line, raw.decode()) for c in chunks for line, _, raw in c.bad]
        covered: list[int] = []
        for line, raw in spans:
            covered += range(line, line + raw.count("\n") + 1)
        assert len(covered) == len(set(covered)), text
        lines = text.split("\n")
        assert set(covered) <= set(range(2, len(lines) + 1)), text
        assert all(lines[i - 1] == "" for i in set(range(2, len(lines) + 1)) - set(covered)), text
        for c in chunks:
            for row, raw in zip(c.rows.to_pylist(), c.raws.to_pylist()):
                assert [list(row.values())] == list(csv.reader(io.StringIO(raw, newline=""))), text


_LINE_END = re.compile(r"\r\n|\r|\n")


def _naive_records(text: str, ncols: int) -> list[tuple[int, str, str]]:
    """The README's rule read character by character: (line, raw text, "row" / "bad" / "alone") of each record
    after the header. A record is read as Python's csv module reads one; a record whose quoted field holds a line
    end but that is no row of ``ncols`` columns, or that leaves a quoted field open at the end of the file, is
    its first line alone ("alone"), and reading goes on at the next line."""
    starts = [0] + [m.end() for m in _LINE_END.finditer(text)]
    out, pos, header = [], 0, True
    while pos < len(text):
        state, fields, crossed, i = "start", 1, False, pos
        while i < len(text):
            c, end = text[i], _LINE_END.match(text, i)
            if state == "quoted":
                if c == '"' and text[i + 1:i + 2] == '"':
                    i += 2
                    continue
                state = "field" if c == '"' else state
                crossed |= end is not None
            elif end is not None:
                break
            elif c == ",":
                fields, state = fields + 1, "start"
            else:
                state = "quoted" if c == '"' and state == "start" else "field"
            i += 1
        nxt = _LINE_END.match(text, i).end() if i < len(text) else i
        line = bisect.bisect_right(starts, pos)
        if header or i == pos:  # the header; a blank line
            header, pos = False, nxt
        elif (crossed and fields != ncols) or state == "quoted":
            m = _LINE_END.search(text, pos)
            out.append((line, text[pos:m.start() if m else len(text)], "alone"))
            pos = m.end() if m else len(text)
        else:
            out.append((line, text[pos:i], "row" if fields == ncols else "bad"))
            pos = nxt
    return out


@pytest.mark.parametrize("small_blocks", [False, True])
def test_the_records_are_those_of_a_naive_reading_of_the_rule(tmp_path, monkeypatch, small_blocks):
    """The reader splits records with numpy and reads a line alone again only where it must (tabular._split); a
    naive reading of the same rule, character by character, gives the same records, rows and bad records."""
    if small_blocks:
        for name, value in (("_FIRST_BLOCK", 7), ("_MIN_BLOCK", 5), ("_MAX_BLOCK", 23)):
            monkeypatch.setattr(tabular, name, value)
    rng = random.Random(11)
    p = tmp_path / "r.csv"
    pieces = ["a", ",", '"', "\n", "b", '""', "\r", "\r\n", " ", ",a", ',"', '",', '"\n']
    for _ in range(250):
        ncols = rng.randrange(1, 5)
        text = ",".join(f"h{i}" for i in range(ncols)) + "\n" + "".join(
            rng.choice(pieces) for _ in range(rng.randrange(0, 100)))
        p.write_bytes(text.encode())
        got = []
        for c in iter_csv_records(str(p), ncols, rng.randrange(1, 6)):
            got += [(line, raw, "row") for line, raw in zip(c.lines.to_pylist(), c.raws.to_pylist())]
            got += [(line, raw.decode(), "alone" if "not closed" in why else "bad") for line, why, raw in c.bad]
        assert sorted(got) == _naive_records(text, ncols), text


def test_many_lines_read_alone_are_each_read_again_a_bounded_number_of_times(tmp_path, monkeypatch):
    """Every other line opens a quote that the next one closes as no row: each is read alone, the next read again
    once or so (reading again through lines an earlier pass read alone, 1,000 of them took 26,000 readings)."""
    calls = []
    toggles = tabular._Quotes.toggles

    def counted(self, k=0, agree=None):
        calls.append(k)
        return toggles(self, k, agree)

    monkeypatch.setattr(tabular._Quotes, "toggles", counted)
    rows = [f'a{i},{T.format(i % 10)},Pass,"note' if i % 2 == 0 else f'b{i}",{T.format(i % 10)},Pass,n'
            for i in range(2000)]
    ev, q = read(tmp_path, "user,ts,ok,note\n" + "\n".join(rows) + "\n")
    assert ev.num_rows == 1000 and q.num_rows == 1000
    assert ev.column("username").to_pylist()[:2] == ['b1"', 'b3"']
    assert q.column("source_line").to_pylist() == list(range(2, 2002, 2))
    assert len(calls) <= 3 * 1000


def test_a_delimiter_beyond_ascii_does_not_break_the_quote_reading(tmp_path):
    p = tmp_path / "euro.csv"
    p.write_text('u€t\na€b\n"c€d\n', encoding="utf-8")
    chunks = list(iter_csv_records(str(p), 2, 10, delimiter="€"))  # (raised IndexError in _Quotes)
    assert sum(c.rows.num_rows + len(c.bad) for c in chunks) == 2
