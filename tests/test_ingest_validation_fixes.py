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


# -- --username-from-file-name: the suffixes in any case (tests/test_sources_cognito_auth_events.py) -------------


def test_the_readme_says_the_suffixes_are_removed_in_any_case():
    assert "`BOB.JSON` is `BOB`'s" in " ".join(README.split())
