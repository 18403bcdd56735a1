"""risk.signals: one shared set of checks run over every registered signal (STYLE.md, habit 10)."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

import risk.store
from ingest.schema import EVENT_SCHEMA, conform
from ingest.store import insert_events
from risk import signals
from risk.features import compute_features
from risk.signals import FEATURE_COLUMNS, FREEMAN_COLUMNS, SIGNALS, Signal

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
#: signals computed from the username and time alone
CONTEXT_FREE = {"history_size", "time_since_last_success", "unusual_hour", "user_failures_1h", "user_failures_24h"}


@pytest.fixture(scope="module")
def computed(tmp_path_factory):
    """Features of a small store where every signal has both a value and a NULL somewhere."""
    con = risk.store.connect(tmp_path_factory.mktemp("signals") / "s.duckdb")
    base = {"event_type": "SignIn", "source_format": "t", "source_file": "t", "source_line": 1}
    full = {"client_ip": "81.2.69.160", "ip_prefix": "81.2.69.0/24", "ip_version": 4, "asn": 2856,
            "country_iso": "GB", "region": "England", "city": "London", "latitude": 51.5, "longitude": -0.12,
            "user_agent": "UA", "browser_family": "Chrome", "os_family": "Windows", "device_type": "Desktop",
            "device_fingerprint": "fp", "has_context_data": True}
    rows = [
        {**base, **full, "event_id": "e1", "username": "alice", "event_response": "Pass", "creation_date": T0},
        {**base, **full, "event_id": "e2", "username": "alice", "event_response": "Fail",
         "creation_date": T0 + timedelta(minutes=5)},
        {**base, **full, "event_id": "e3", "username": "alice", "event_response": "Pass",
         "creation_date": T0 + timedelta(minutes=10)},
        {**base, "event_id": "e4", "username": "alice", "event_response": "Pass",
         "creation_date": T0 + timedelta(minutes=20), "has_context_data": None},
    ]
    insert_events(con, conform(pa.Table.from_pylist(rows), EVENT_SCHEMA), "t")
    t = compute_features(con)
    con.close()
    return t


@pytest.mark.parametrize("code", list(SIGNALS))
def test_every_signal_is_documented_and_computed(code, computed):
    s = SIGNALS[code]
    assert re.fullmatch(r"[a-z][a-z0-9_]*", s.code)
    assert len(s.description) > 20 and s.description[0].isupper()
    assert s.column in FEATURE_COLUMNS and s.column in computed.column_names
    col = computed.column(s.column)
    assert col.type == pa.float64()
    values = [v for v in col.to_pylist() if v is not None]
    assert values, f"{s.column} is never computed"
    assert all(math.isfinite(v) for v in values)
    # e4 has no context data at all: a signal that needs it is NULL (unknown), never a "safe" 0
    no_context = col.to_pylist()[computed.column("event_id").to_pylist().index("e4")]
    assert (no_context is None) == (s.code not in CONTEXT_FREE), no_context
    assert signals.get(code) is s and signals.by_column(s.column) is s


def test_columns_are_unique_and_in_registration_order():
    assert FEATURE_COLUMNS == [s.column for s in SIGNALS.values()]
    assert len(set(FEATURE_COLUMNS)) == len(FEATURE_COLUMNS)
    assert set(FREEMAN_COLUMNS) <= set(FEATURE_COLUMNS) and len(FREEMAN_COLUMNS) == 7


def test_no_context_row_has_nulls_where_context_is_needed(computed):
    row = computed.to_pylist()[-1]
    assert row["event_id"] == "e4"
    for c in ("new_ip", "new_device", "travel_speed_kmh", "hosting_network", "ip_users_24h", *FREEMAN_COLUMNS):
        assert row[c] is None, c
    assert row["history_size"] == 2.0 and row["no_context_data"] is None  # has_context_data itself unknown


def test_register_refuses_duplicates_and_bad_codes():
    with pytest.raises(signals.RiskgateError, match="already registered"):
        signals.register(Signal("new_ip", "An example description here", "x_new_ip"))
    with pytest.raises(signals.RiskgateError, match="feature column 'new_ip'"):
        signals.register(Signal("other_code", "An example description here", "new_ip"))
    with pytest.raises(signals.RiskgateError, match="snake_case"):
        signals.register(Signal("New-IP", "An example description here", "x"))
    with pytest.raises(signals.UnknownSignalError, match="unknown signal 'nope'; known: history_size"):
        signals.get("nope")
    assert "other_code" not in SIGNALS and "x" not in FEATURE_COLUMNS
