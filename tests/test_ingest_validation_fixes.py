"""Validation gaps of ingest, each with the one rule every reader follows.

* An ASN out of 0..4294967295 (``ingest.schema.MAX_ASN``): rba-csv's ``-5`` and ``4294967296`` were stored as the
  source's ASN, over the GeoIP lookup's; a mapping's column too; a mapping constant ``4294967296`` was taken.
* A UTC offset beyond ±23:59 (``ingest.sources.base.bad_offset_sql``): ``2026-06-01T08:30:09+24:00`` was stored
  a day earlier (DuckDB's cast reads ``+24:00`` as a day).
* A Username of only Unicode blanks (``"\\u00a0\\u2003"``: ``ingest.schema.BLANK``) was taken for a user.
* ``--username-from-file-name`` took ``BOB.JSON`` for the user ``BOB.JSON`` (only lower-case suffixes removed).
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import duckdb
import pytest

from ingest.errors import ConfigurationError
from ingest.schema import BLANK, BLANK_SQL, username_problem
from ingest.sources.tabular import CSV_READER, load_mapping
from tests.storedb import q as rows
from tests.test_docs import README
from tests.test_ingest import env  # noqa: F401 (the fixture: the test GeoIP databases, a store in tmp_path)
from tests.test_ingest_fixes import counts, ingest
from tests.test_sources_rba_csv import GOOD1, read_all as rba_read_all, write as rba_write
from tests.test_sources_tabular import read_all as tab_read_all, write as tab_write

ROW = ('{"EventId":"%s","Username":"alice","EventType":"SignIn","EventResponse":"Pass","CreationDate":"%s"%s}')

UTC = timezone.utc


# -- a Username of only blanks, Unicode's too --------------------------------------------------------------------


def test_blank_is_every_character_python_takes_for_whitespace_and_sql_agrees():
    spaces = {c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()}
    assert set(BLANK) == spaces
    con = duckdb.connect()
    for c in [*spaces, "\u200b", "x", "\u00ad"]:
        assert con.execute(f"SELECT regexp_full_match(?, '{BLANK_SQL}')", [c * 3]).fetchall()[0][0] is (c in spaces), c
    assert username_problem("\u00a0\u2003") == "Username is missing or empty"
    assert username_problem("\u00a0bob\u3000") is None


def test_a_username_of_unicode_blanks_is_quarantined(env):
    f = env / "u.jsonl"
    f.write_text("\n".join((ROW % (f"u{i}", "2026-06-01T08:30:09Z", "")).replace('"alice"', name) for i, name in
                           enumerate(['"\\u00a0\\u2003"', '"\\u3000"', '" \\u2028\\t"', '"\\u00a0bob"'])) + "\n")
    out, _ = ingest(f)
    assert counts(out) == (4, 1, 0, 3)
    db = env / "store.duckdb"
    assert rows(db, "SELECT DISTINCT reason FROM quarantine") == [("Username is missing or empty",)]
    assert rows(db, "SELECT username FROM events") == [("\u00a0bob",)]


def test_the_readme_says_unicode_blanks_are_blanks():
    text = " ".join(README.split())
    assert "not only blanks (spaces, tabs, line breaks, and Unicode's: a no-break space, an em space, …" in text


# -- a UTC offset beyond ±23:59 is no time -----------------------------------------------------------------------

BAD_OFFSETS = ["2026-06-01T08:30:09+24:00", "2026-06-01T08:30:09-24:00", "2026-06-01T08:30:09+2400",
               "2026-06-01T08:30:09+99:00", "2026-06-01T08:30:09+05:60", "2026-06-01T08:30:09.5+00:99",
               "2026-06-01T08:30+24"]
GOOD_OFFSETS = {"2026-06-01T08:30:09+23:59": datetime(2026, 5, 31, 8, 31, 9, tzinfo=UTC),
                "2026-06-01T08:30:09-0959": datetime(2026, 6, 1, 18, 29, 9, tzinfo=UTC),
                "2026-06-01T08:30:09.250+05:30": datetime(2026, 6, 1, 3, 0, 9, 250_000, tzinfo=UTC),
                "2026-06-01T08:30:09Z": datetime(2026, 6, 1, 8, 30, 9, tzinfo=UTC)}


@pytest.mark.parametrize("context", ["", ',"ContextData":{"IpAddress":"81.2.69.160","ServerName":"a",'
                                         '"ServerPath":"/","HttpHeaders":[]}'], ids=["arrow", "sql"])
def test_an_offset_beyond_23_59_is_the_rows_bad_time(env, context):
    """Both ways a riskgate JSON lines batch is read (Arrow's reader for a batch of well-formed lines, DuckDB's
    JSON functions otherwise: an unknown field sends it there)."""
    lines = [ROW % (f"b{i}", t, context) for i, t in enumerate(BAD_OFFSETS)]
    lines += [ROW % (f"g{i}", t, context) for i, t in enumerate(GOOD_OFFSETS)]
    if context:
        lines.append('{"EventId":"u1","Username":"alice","EventType":"SignIn","EventResponse":"Pass",'
                     '"CreationDate":"2026-06-01T08:30:09Z","Unknown":1}')
    f = env / "ts.jsonl"
    f.write_text("\n".join(lines) + "\n")
    out, _ = ingest(f)
    assert out["quarantined"] == len(BAD_OFFSETS)
    db = env / "store.duckdb"
    assert rows(db, "SELECT DISTINCT reason FROM quarantine") == [("CreationDate is missing or not a time",)]
    assert rows(db, "SELECT creation_date FROM events WHERE event_id LIKE 'g%' ORDER BY event_id") == [
        (t,) for t in GOOD_OFFSETS.values()]


def test_a_mapped_time_with_such_an_offset_is_quarantined(tmp_path):
    from tests.test_sources_tabular import mapping_file

    cols = {"columns": {"username": "u", "creation_date": "t", "event_response": "r"},
            "constants": {"event_type": "SignIn"}}
    data = tab_write(tmp_path, "u,t,r\na,2026-06-01T08:30:09+24:00,Pass\nb,2026-06-01T08:30:09+05:30,Pass\n")
    _, events, quarantine, _ = tab_read_all(CSV_READER, data, mapping=mapping_file(tmp_path, cols))
    assert events.column("username").to_pylist() == ["b"]
    assert quarantine.column("source_line").to_pylist() == [2]
    data = tab_write(tmp_path, "u,t,r\na,01/06/2026 08:30:09 +2400,Pass\nb,01/06/2026 08:30:09 +0530,Pass\n",
                     name="f.csv")
    with_format = mapping_file(tmp_path, {**cols, "time_format": "%d/%m/%Y %H:%M:%S %z"}, name="f.yaml")
    _, events, quarantine, _ = tab_read_all(CSV_READER, data, mapping=with_format)
    assert events.column("username").to_pylist() == ["b"]
    assert [(r["source_line"], r["reason"]) for r in quarantine.to_pylist()] == [
        (2, "creation_date (column 't') is not a time in format '%d/%m/%Y %H:%M:%S %z': got '01/06/2026 08:30:09 +2400'")]


def test_the_readme_says_an_offset_beyond_23_59_is_no_time():
    assert "a time with a UTC offset beyond ±23:59" in " ".join(README.split())


# -- ASN: 0..4294967295 ------------------------------------------------------------------------------------------


def test_rba_asns_that_are_no_as_number_quarantine_their_row(tmp_path):
    row = "{i},2020-02-03 12:00:00,u,,1.2.3.4,NO,-,-,{asn},ua,b,o,d,True,False,False"
    p = rba_write(tmp_path, GOOD1, row.format(i=20, asn=-5), row.format(i=21, asn=4294967296),
                  row.format(i=22, asn=99999999999999999999), row.format(i=23, asn=4294967295),
                  row.format(i=24, asn=0), row.format(i=25, asn="AS1x"))
    _, ev, q, _ = rba_read_all(p)
    assert [(r["event_id"], r["source_asn"]) for r in ev.to_pylist()] == [("10", 29695), ("23", 4294967295),
                                                                          ("24", 0)]
    assert {r["source_line"]: r["reason"] for r in q.to_pylist()} == {
        3: 'ASN must be an AS number (0 to 4294967295), got "-5"',
        4: 'ASN must be an AS number (0 to 4294967295), got "4294967296"',
        5: 'ASN must be an AS number (0 to 4294967295), got "99999999999999999999"',
        8: 'ASN must be an integer, got "AS1x"'}


def test_rba_asn_out_of_range_no_longer_overrides_the_lookups(env):
    from tests.test_sources_rba_csv import HEADER

    f = env / "rb.csv"
    f.write_text(HEADER + "\n2,2026-06-01 08:30:09,u1,,81.2.69.160,,,,4294967296,,,,,true,false,false\n"
                 "3,2026-06-01 08:30:10,u1,,81.2.69.160,,,,-5,,,,,true,false,false\n")
    out, _ = ingest(f)
    assert counts(out) == (2, 0, 0, 2)
    assert rows(env / "store.duckdb", "SELECT count(*) FROM events WHERE source_asn < 0 OR asn > 4294967295") == [(0,)]


def test_a_mapped_asn_column_out_of_range_quarantines_the_row(tmp_path):
    from tests.test_sources_tabular import mapping_file

    m = mapping_file(tmp_path, {"columns": {"username": "u", "creation_date": "t", "event_response": "r",
                                            "source_asn": "a"}, "constants": {"event_type": "SignIn"}})
    data = tab_write(tmp_path, "u,t,r,a\na,2026-03-01T08:00:00Z,Pass,-5\nb,2026-03-01T08:00:00Z,Pass,4294967296\n"
                               "c,2026-03-01T08:00:00Z,Pass,AS4294967295\nd,2026-03-01T08:00:00Z,Pass,0\n")
    _, events, quarantine, _ = tab_read_all(CSV_READER, data, mapping=m)
    assert events.select(["username", "source_asn"]).to_pylist() == [
        {"username": "c", "source_asn": 4294967295}, {"username": "d", "source_asn": 0}]
    assert [(r["source_line"], r["reason"]) for r in quarantine.to_pylist()] == [
        (2, "source_asn (column 'a') must be an integer (AS number): got '-5'"),
        (3, "source_asn (column 'a') must be an integer (AS number): got '4294967296'")]


@pytest.mark.parametrize("value", ["4294967296", "-5", "9" * 5000])
def test_a_mapping_constant_asn_out_of_range_is_refused(tmp_path, value):
    path = tmp_path / "m.yaml"
    path.write_text("columns: {username: u, creation_date: t, event_response: r}\n"
                    f"constants: {{event_type: SignIn, source_asn: '{value}'}}\n")
    with pytest.raises(ConfigurationError) as info:
        load_mapping(str(path), "csv")
    assert f"constants.source_asn must be an integer (AS number), got '{value}'" in str(info.value)


def test_a_mapping_constant_asn_of_32_bits_is_taken(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("columns: {username: u, creation_date: t, event_response: r}\n"
                    "constants: {event_type: SignIn, source_asn: 4294967295}\n")
    assert load_mapping(str(path), "csv").constants["source_asn"] == "4294967295"


def test_the_readme_says_what_an_as_number_is():
    text = " ".join(README.split())
    assert "an ASN that is not an AS number (an integer from 0 to 4294967295)" in text
    assert "a source's ASN (RBA's `ASN`, a mapping's `source_asn`) an AS number" in text


# -- --username-from-file-name: the suffixes in any case (tests/test_sources_cognito_auth_events.py) -------------


def test_the_readme_says_the_suffixes_are_removed_in_any_case():
    assert "`BOB.JSON` is `BOB`'s" in " ".join(README.split())
