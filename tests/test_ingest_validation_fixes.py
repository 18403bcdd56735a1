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

UTC = timezone.utc


# -- --username-from-file-name: the suffixes in any case (tests/test_sources_cognito_auth_events.py) -------------


def test_the_readme_says_the_suffixes_are_removed_in_any_case():
    assert "`BOB.JSON` is `BOB`'s" in " ".join(README.split())
