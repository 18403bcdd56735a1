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


# -- --username-from-file-name: the suffixes in any case (tests/test_sources_cognito_auth_events.py) -------------


def test_the_readme_says_the_suffixes_are_removed_in_any_case():
    assert "`BOB.JSON` is `BOB`'s" in " ".join(README.split())
