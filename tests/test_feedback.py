"""risk.feedback: recording feedback and reading the one in force."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

import risk.store
from ingest.schema import EVENT_SCHEMA, conform
from ingest.store import insert_events
from risk.feedback import FeedbackError, latest_feedback, set_feedback

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def con(tmp_path):
    c = risk.store.connect(tmp_path / "s.duckdb")
    rows = [{"event_id": f"e{i}", "username": "alice", "event_type": "SignIn", "event_response": "Pass",
             "creation_date": T0 + timedelta(minutes=i), "source_format": "t", "source_file": "t", "source_line": i}
            for i in range(3)]
    insert_events(c, conform(pa.Table.from_pylist(rows), EVENT_SCHEMA), "t")
    yield c
    c.close()


def test_latest_feedback_wins_by_date_then_by_order_of_recording(con):
    set_feedback(con, "e1", "Invalid", "User", when=T0 + timedelta(days=1))
    set_feedback(con, "e1", "Valid", "Admin", when=T0 + timedelta(days=2))
    set_feedback(con, "e2", "Valid", "Admin", when=T0)
    set_feedback(con, "e2", "Invalid", "Admin", when=T0)  # same instant: the later recorded wins
    rows = latest_feedback(con).to_pylist()
    assert [(r["event_id"], r["feedback_value"], r["provider"]) for r in rows] == [
        ("e1", "Valid", "Admin"), ("e2", "Invalid", "Admin")]
    assert [r["event_id"] for r in latest_feedback(con, ["e2", "e0"]).to_pylist()] == ["e2"]
    assert latest_feedback(con, []).num_rows == 0


@pytest.mark.parametrize("args, message", [
    (("nope", "Invalid", "Admin"), "no event with EventId 'nope' in the store"),
    (("e1", "invalid", "Admin"), "FeedbackValue must be one of Valid, Invalid, got 'invalid'"),
    (("e1", "Valid", "Robot"), "provider must be one of Admin, User, got 'Robot'"),
])
def test_bad_feedback_is_refused_with_what_was_wrong(con, args, message):
    with pytest.raises(FeedbackError, match=message):
        set_feedback(con, *args)
    assert latest_feedback(con).num_rows == 0


def test_labels_in_force_read_every_spelling_of_yes_and_no_that_labels_load_accepts(con):
    """A store may hold ``is_account_takeover`` values written before ``labels load`` normalised them."""
    from ingest.store import insert_labels
    from risk.feedback import LABELS_IN_FORCE_SQL

    values = {"e0": " 1", "e1": "Yes", "e2": "F ", "e3": "T", "e4": "0", "e5": "maybe"}
    insert_labels(con, pa.table({"event_id": list(values), "label": ["is_account_takeover"] * len(values),
                                 "value": list(values.values()), "source": ["old"] * len(values)}))
    got = dict(con.execute(f"SELECT event_id, y FROM ({LABELS_IN_FORCE_SQL})").fetchall())
    assert got == {"e0": 1.0, "e1": 1.0, "e2": 0.0, "e3": 1.0, "e4": 0.0, "e5": None}


def test_record_imported_adds_what_is_new_and_leaves_out_what_cannot_be_feedback(con):
    """An export's feedback (ingest's FeedbackSink): that very feedback once, on stored events, in Cognito's
    spelling; the latest by date in force, whichever way it came."""
    from ingest.schema import FEEDBACK_SCHEMA
    from risk.feedback import record_imported

    def table(*rows):
        return pa.Table.from_pylist([dict(zip(FEEDBACK_SCHEMA.names, r)) for r in rows], schema=FEEDBACK_SCHEMA)

    day = timedelta(days=1)
    given = table(("e1", "Invalid", "Admin", T0 + day), ("e1", "Invalid", "Admin", T0 + day),  # a repeat
                  ("nope", "Invalid", "Admin", T0), ("e2", "invalid", "Admin", T0), ("e2", "Valid", "Robot", T0),
                  ("e0", "Valid", "User", T0))
    assert record_imported(con, given) == 2
    assert record_imported(con, given) == 0  # the same export again
    assert record_imported(con, table()) == 0
    set_feedback(con, "e1", "Valid", "Admin", when=T0 + 3 * day)  # given in riskgate later
    assert record_imported(con, table(("e1", "Invalid", "User", T0 + 2 * day))) == 1  # kept, not in force
    rows = latest_feedback(con).to_pylist()
    assert [(r["event_id"], r["feedback_value"], r["provider"]) for r in rows] == [
        ("e0", "Valid", "User"), ("e1", "Valid", "Admin")]
    assert con.execute("SELECT count(*) FROM feedback").fetchall()[0][0] == 4
