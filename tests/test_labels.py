"""riskgate labels load: event_id,label,value,source CSV into the labels table; idempotent; unknown ids counted."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timezone

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from cli import app
from ingest import store
from ingest.errors import InputFormatError
from ingest.labels import load_labels
from ingest.schema import EVENT_SCHEMA, conform

runner = CliRunner()
HEADER = "event_id,label,value,source\n"


@pytest.fixture
def con(tmp_path):
    c = store.connect(tmp_path / "l.duckdb")
    events = pa.table({
        "event_id": ["e1", "e2", "e3"],
        "username": ["alice", "bob", "alice"],
        "event_type": ["SignIn"] * 3,
        "event_response": ["Pass", "Fail", "Pass"],
        "creation_date": pa.array([datetime(2026, 6, 1, 8, i, tzinfo=timezone.utc) for i in range(3)],
                                  pa.timestamp("us", tz="UTC")),
        "source_format": ["test"] * 3,
        "source_file": ["t"] * 3,
        "source_line": [1, 2, 3],
    })
    assert store.insert_events(c, conform(events, EVENT_SCHEMA), "run-1") == 3
    yield c
    c.close()


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def labels(con):
    return sorted(con.execute("SELECT event_id, label, value, source FROM labels").fetchall())


def test_labels_load_and_reload_adds_nothing(con, tmp_path):
    f = write(tmp_path, "l.csv", HEADER
              + "e1,is_account_takeover,false,synth\n"
              + "e2,is_account_takeover,true,synth\n"
              + "e2,attack_type,credential_stuffing,synth\n"
              + "e2,is_account_takeover,true,feedback\n")
    r = load_labels(con, f)
    assert (r.read, r.added, r.already_present, r.rejected, r.unknown_events) == (4, 4, 0, 0, 0)
    assert labels(con) == [
        ("e1", "is_account_takeover", "false", "synth"),
        ("e2", "attack_type", "credential_stuffing", "synth"),
        ("e2", "is_account_takeover", "true", "feedback"),
        ("e2", "is_account_takeover", "true", "synth"),
    ]
    r = load_labels(con, f)
    assert (r.read, r.added, r.already_present) == (4, 0, 4)
    assert store.count(con, "labels") == 4


def test_unknown_event_ids_are_kept_and_counted(con, tmp_path):
    f = write(tmp_path, "l.csv", HEADER
              + "e3,is_attack_ip,false,synth\n"
              + "later-1,is_attack_ip,true,synth\n"
              + "later-1,is_account_takeover,true,synth\n"
              + "later-2,is_attack_ip,false,synth\n")
    r = load_labels(con, f, batch_rows=2)  # an event's rows may straddle batches: still counted once
    assert (r.added, r.unknown_events) == (4, 2)
    assert ("later-1", "is_account_takeover", "true", "synth") in labels(con)


def test_bad_rows_are_reported_by_line_and_skipped(con, tmp_path):
    f = write(tmp_path, "l.csv", HEADER
              + "e1,is_attack_ip,false,synth\n"
              + ",is_attack_ip,false,synth\n"
              + "\n"
              + "e1,,false,synth\n"
              + "e2,is_attack_ip,true\n"
              + 'e2,note,"a, quoted value",\n')
    r = load_labels(con, f)
    assert (r.read, r.added, r.rejected) == (5, 2, 3)
    assert [(x.line, x.reason) for x in r.rejections] == [
        (3, "event_id is empty"),
        (5, "label is empty"),
        (6, "expected 4 fields (event_id,label,value,source), found 3"),
    ]
    assert ("e2", "note", "a, quoted value", None) in labels(con)


def test_the_header_must_be_exact(con, tmp_path):
    with pytest.raises(InputFormatError, match=r"x\.csv:1: the header must be event_id,label,value,source; "
                                               r"found event,label,value"):
        load_labels(con, write(tmp_path, "x.csv", "event,label,value\ne1,a,b\n"))
    with pytest.raises(InputFormatError, match="is empty"):
        load_labels(con, write(tmp_path, "e.csv", ""))
    assert store.count(con, "labels") == 0


def test_gzip_and_bom(con, tmp_path):
    p = tmp_path / "l.csv.gz"
    p.write_bytes(gzip.compress(("\ufeff" + HEADER + "e1,is_attack_ip,false,synth\n").encode("utf-8")))
    assert load_labels(con, p).added == 1


def test_cli_labels_load(con, tmp_path, monkeypatch):
    db = tmp_path / "l.duckdb"
    con.close()
    monkeypatch.setenv("RISKGATE_DB", str(db))
    f = write(tmp_path, "l.csv", HEADER + "e1,is_attack_ip,false,synth\nnope,is_attack_ip,true,synth\n,x,y,z\n")
    res = runner.invoke(app, ["labels", "load", str(f)])
    assert res.exit_code == 0, res.output
    assert "labels read 3  added 2  updated 0  already present 0  rejected 1" in res.stdout
    assert "labels of 1 event ids not in the store" in res.stdout
    assert "rejected line 4: event_id is empty" in res.stdout
    res = runner.invoke(app, ["labels", "load", str(f), "--json"])
    doc = json.loads(res.stdout)
    assert (doc["added"], doc["already_present"], doc["unknown_events"]) == (0, 2, 1)
    res = runner.invoke(app, ["labels", "load", str(tmp_path / "none.csv")])
    assert res.exit_code == 2 and "no such file" in res.output
    # every row rejected: it said "every labelled event is in the store"
    bad = write(tmp_path, "bad.csv", HEADER + ",x,y,z\ne9,is_account_takeover,perhaps,synth\n")
    res = runner.invoke(app, ["labels", "load", str(bad)])
    assert "rejected 2" in res.stdout and "  no label loaded" in res.stdout
    assert "every labelled event is in the store" not in res.stdout


def test_is_account_takeover_spellings_are_stored_as_true_or_false_and_others_rejected(con, tmp_path):
    f = write(tmp_path, "l.csv", HEADER
              + "e1,is_account_takeover,1,a\n"
              + "e2,is_account_takeover, TRUE ,b\n"
              + "e3,is_account_takeover,no,c\n"
              + "e1,is_account_takeover,F,d\n"
              + "e2,is_account_takeover,yes,e\n"
              + "e3,is_account_takeover,2,f\n"
              + "e1,is_account_takeover,maybe,g\n"
              + "e2,is_account_takeover,,h\n"
              + "e3,attack_type, Stuffing ,i\n"
              + "e3,is_attack_ip,1,j\n")
    r = load_labels(con, f)
    assert (r.read, r.added, r.rejected, r.blank) == (10, 7, 2, 1)  # an empty value is no label
    assert [(x.line, x.reason) for x in r.rejections] == [
        (7, "is_account_takeover must be true or false (or 1/0, yes/no, t/f), got '2'"),
        (8, "is_account_takeover must be true or false (or 1/0, yes/no, t/f), got 'maybe'"),
    ]
    assert labels(con) == [
        ("e1", "is_account_takeover", "false", "d"), ("e1", "is_account_takeover", "true", "a"),
        ("e2", "is_account_takeover", "true", "b"), ("e2", "is_account_takeover", "true", "e"),
        ("e3", "attack_type", " Stuffing ", "i"),  # other labels are kept as written
        ("e3", "is_account_takeover", "false", "c"), ("e3", "is_attack_ip", "1", "j"),
    ]
    assert load_labels(con, f).added == 0  # loading again adds nothing


def test_loading_a_label_again_with_another_value_corrects_it(con, tmp_path):
    """A label loaded again with another value was skipped as "already present" (and any true wins when labels
    are read), so a wrong takeover label could never be corrected by loading the right one."""
    load_labels(con, write(tmp_path, "a.csv", HEADER + "e1,is_account_takeover,true,analyst\n"
                           + "e2,attack_type,brute_force,analyst\n" + "e2,attack_type,brute_force,synth\n"))
    r = load_labels(con, write(tmp_path, "b.csv", HEADER + "e1,is_account_takeover,no,analyst\n"
                               + "e2,attack_type,brute_force,analyst\n" + "e3,attack_type,,analyst\n"
                               + "e2,attack_type,password_spray,synth\n" + "e2,attack_type,password_spray,synth\n"))
    assert (r.read, r.added, r.updated, r.already_present, r.rejected, r.blank) == (5, 0, 2, 2, 0, 1)
    assert labels(con) == [("e1", "is_account_takeover", "false", "analyst"),
                           ("e2", "attack_type", "brute_force", "analyst"),
                           ("e2", "attack_type", "password_spray", "synth")]
    res = runner.invoke(app, ["labels", "load", str(tmp_path / "b.csv"), "--db", str(tmp_path / "l.duckdb")])
    assert res.exit_code == 0 and "added 0  updated 0  already present 4  rejected 0  blank (no label) 1" in res.output
    # a blank cell is no label: it neither erases nor replaces the stored one
    r = load_labels(con, write(tmp_path, "c.csv", HEADER + "e2,attack_type,,analyst\ne1,is_account_takeover, ,analyst\n"))
    assert (r.read, r.added, r.updated, r.rejected, r.blank) == (2, 0, 0, 0, 2)
    assert ("e2", "attack_type", "brute_force", "analyst") in labels(con) and len(labels(con)) == 3


def test_a_file_giving_one_label_two_values_loads_neither_and_names_the_lines(con, tmp_path):
    """Two values of one label in one file were both stored (and read as whichever wins)."""
    load_labels(con, write(tmp_path, "a.csv", HEADER + "e1,is_account_takeover,false,analyst\n"))
    r = load_labels(con, write(tmp_path, "b.csv", HEADER + "e1,is_account_takeover,true,analyst\n"
                               + "e2,is_account_takeover,true,analyst\n" + "e1,is_account_takeover,0,analyst\n"
                               + "e1,is_account_takeover,yes,analyst\n"))
    assert (r.read, r.added, r.updated, r.rejected) == (4, 1, 0, 3)
    assert [(x.line, x.reason) for x in r.rejections] == [
        (2, "is_account_takeover of event e1 is 'true' here and another value on line 4: none of them loaded"),
        (4, "is_account_takeover of event e1 is 'false' here and another value on lines 2, 5: none of them loaded"),
        (5, "is_account_takeover of event e1 is 'true' here and another value on line 4: none of them loaded")]
    assert labels(con) == [("e1", "is_account_takeover", "false", "analyst"),
                           ("e2", "is_account_takeover", "true", "analyst")]


def write_bytes(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_a_row_that_is_not_utf8_is_rejected_by_its_line_and_the_rest_loaded(con, tmp_path):
    """The text decoder works ahead of the lines, in blocks: one byte that is not UTF-8 refused the whole file,
    naming the header for a small file ("cannot read the header") and a line 40 before the bad one for a larger."""
    r = load_labels(con, write_bytes(tmp_path, "a.csv", (HEADER + "e1,attack_type,caf\xe9,s\ne2,attack_type,ok,s\n")
                                     .encode("latin-1")))
    assert (r.read, r.added, r.rejected) == (2, 1, 1)
    assert [(x.line, x.reason) for x in r.rejections] == [(2, "not UTF-8: invalid byte at position 18")]
    assert labels(con) == [("e2", "attack_type", "ok", "s")]


def test_a_bad_byte_far_into_a_file_is_named_on_its_own_line(con, tmp_path):
    good = "".join(f"g{i},note,v,s\n" for i in range(20_000))
    data = (HEADER + good).encode() + b"bad,note,caf\xe9,s\n" + "".join(f"h{i},note,\u20ac,s\r\n" for i in range(10)).encode()
    r = load_labels(con, write_bytes(tmp_path, "big.csv", data))
    assert (r.read, r.added, r.rejected) == (20_011, 20_010, 1)
    assert [(x.line, x.reason) for x in r.rejections] == [(20_002, "not UTF-8: invalid byte at position 12")]
    assert con.execute("SELECT count(*) FROM labels WHERE value = '\u20ac'").fetchall() == [(10,)]


def test_a_bad_byte_on_a_later_line_of_a_quoted_value_names_that_line_too(con, tmp_path):
    data = b'\xef\xbb\xbfevent_id,label,value,source\r\ne1,note,"one\r\ntw\xc3o",s\r\ne2,note,"x\ny",s\r\n'
    r = load_labels(con, write_bytes(tmp_path, "m.csv", data))
    assert [(x.line, x.reason) for x in r.rejections] == [(2, "not UTF-8: invalid byte at position 2 of line 3")]
    assert labels(con) == [("e2", "note", "x\ny", "s")]


def test_a_header_that_is_not_utf8_refuses_the_file_naming_where(con, tmp_path):
    with pytest.raises(InputFormatError) as info:
        load_labels(con, write_bytes(tmp_path, "h.csv", b"event_id,label,va\xfflue,source\ne1,note,x,s\n"))
    assert str(info.value) == f"{tmp_path / 'h.csv'}:1: cannot read the header: not UTF-8: invalid byte at position 17"


def test_the_readme_says_a_row_that_is_not_utf8_is_a_bad_row():
    from tests.test_docs import README

    assert "A row with a byte that is not UTF-8 is a bad row" in " ".join(README.split())
