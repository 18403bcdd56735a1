"""`riskgate feedback` (Provider Admin) and the user's path through a notification link's token (Provider User)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

import risk.store
from cli import app
from risk import feedback
from risk.features import compute_features
from risk.model.training import load_labels
from risk.notify import FeedbackTokenError, make_token
from tests.test_features import SAFARI_IOS, SYDNEY, add, ev

runner = CliRunner()
SECRET = "test-feedback-secret-0123456789abcdef"


@pytest.fixture
def db(tmp_path, monkeypatch):
    monkeypatch.setenv("RISKGATE_FEEDBACK_SECRET", SECRET)
    path = tmp_path / "s.duckdb"
    with risk.store.connect(path) as con:
        add(con, [ev("e1", "alice", 0), ev("e2", "alice", 60, ip="1.120.0.9", **SYDNEY, **SAFARI_IOS),
                  ev("e3", "alice", 120, ip="1.120.0.9", **SYDNEY, **SAFARI_IOS)])
    return path


def rg(*args):
    return runner.invoke(app, [*map(str, args)])


def new_ip(db, event_id):
    with risk.store.connect(db, read_only=True) as con:
        return {r["event_id"]: r for r in compute_features(con).to_pylist()}[event_id]["new_ip"]


def test_admin_feedback_takes_effect_at_once_and_the_latest_counts(db):
    assert new_ip(db, "e3") == 0.0  # e2 taught riskgate alice's Sydney IP
    res = rg("feedback", "e2", "INVALID", "--db", db)
    assert res.exit_code == 0, res.output
    assert "e2 (alice" in res.output and "Invalid (Admin)" in res.output and "no longer counts" in res.output
    assert new_ip(db, "e3") == 1.0  # the next computation already treats the IP as new
    with risk.store.connect(db, read_only=True) as con:
        labels = load_labels(con).set_index("event_id")
    assert labels.loc["e2", "y"] == 1.0 and labels.loc["e2", "attack_type"] == "feedback_invalid"

    res = rg("feedback", "e2", "valid", "--json", "--db", db)
    out = json.loads(res.output)
    assert (out["feedback_value"], out["provider"], out["username"]) == ("Valid", "Admin", "alice")
    assert new_ip(db, "e3") == 0.0
    listing = json.loads(rg("events", "alice", "--db", db).output)
    fb = {e["EventId"]: e.get("EventFeedback") for e in listing["AuthEvents"]}
    assert fb["e2"]["FeedbackValue"] == "Valid" and fb["e2"]["Provider"] == "Admin" and fb["e1"] is None


def test_feedback_says_how_many_later_assessments_it_makes_stale_and_how_to_redo_them(db):
    with risk.store.connect(db) as con:
        con.execute("INSERT INTO assessments (event_id) VALUES ('e2'), ('e3')")
    res = rg("feedback", "e2", "invalid", "--db", db)
    assert res.exit_code == 0, res.output
    assert ("1 later event of the user was assessed before this feedback; `riskgate score --rescore --since "
            "2026-03-02T10:00:00Z` assesses it again.") in " ".join(res.output.split())
    res = rg("feedback", "e1", "valid", "--db", db)
    assert "2 later events of the user were assessed" in " ".join(res.output.split())
    assert "later event" not in rg("feedback", "e3", "valid", "--db", db).output  # nothing after it


def test_feedback_counts_the_later_events_of_the_user_in_the_events_pool_and_says_a_failure_is_no_history(db):
    with risk.store.connect(db) as con:  # alice of other pools signs in later: not the same user
        add(con, [ev("p1", "alice", 30, user_pool_id="eu-west-1_OTHER"), ev("p2", "alice", 90, user_pool_id="eu-west-1_OTHER"),
                  ev("q1", "alice", 95, user_pool_id="eu-west-1_THIRD"), ev("f1", "alice", 100, response="Fail")])
        con.execute("INSERT INTO assessments (event_id) VALUES ('e2'), ('e3'), ('p1'), ('p2'), ('f1')")
    res = rg("feedback", "e1", "invalid", "--db", db)
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "3 later events of the user were assessed" in out  # e2, e3, f1: pool-less (of no pool: there are two)
    res = rg("feedback", "p1", "invalid", "--db", db)
    assert "1 later event of the user was assessed" in " ".join(res.output.split())  # p2 only
    for value, label in (("valid", "a legitimate"), ("invalid", "a takeover")):
        out = " ".join(rg("feedback", "f1", value, "--db", db).output.split())
        assert f"A failed sign-in never counts as the user's known history; this makes it {label} label" in out
        assert "counts as the user's known history, and" not in out and "no longer counts" not in out


def test_feedback_errors_are_clear(db):
    res = rg("feedback", "nope", "invalid", "--db", db)
    assert res.exit_code == 2 and "no event with EventId 'nope' in the store" in res.output
    res = rg("feedback", "e1", "maybe", "--db", db)
    assert res.exit_code == 2 and "FeedbackValue must be one of Valid, Invalid, got 'maybe'" in res.output
    with risk.store.connect(db, read_only=True) as con:
        assert feedback.latest_feedback(con).num_rows == 0


@pytest.mark.parametrize("event_id", ["a b", "a/b", "\u00fc"])
def test_an_event_id_no_event_can_have_is_refused_as_ingest_refuses_it(db, event_id):
    """As AdminUpdateAuthEventFeedback refuses it: the id is not Cognito's (1..50 characters of [\\w+-]), rather
    than "no event with EventId ... in the store"."""
    res = rg("feedback", event_id, "invalid", "--db", db)
    assert res.exit_code == 2, res.output
    assert res.output == (f"error: EventId {json.dumps(event_id, ensure_ascii=False)} must be 1 to 50 characters of "
                          "letters, digits, _, + or -\n")


def test_the_users_token_records_provider_user(db):
    token = make_token("e2", "alice")
    with risk.store.connect(db) as con:
        got = feedback.feedback_from_token(con, token, "invalid", username="alice", event_id="e2")
        assert (got["event_id"], got["feedback_value"], got["provider"]) == ("e2", "Invalid", "User")
        row = feedback.latest_feedback(con, ["e2"]).to_pylist()[0]
        assert (row["feedback_value"], row["provider"]) == ("Invalid", "User")
        with pytest.raises(feedback.FeedbackError, match="another user"):
            feedback.feedback_from_token(con, token, "valid", username="bob")
        with pytest.raises(feedback.FeedbackError, match="another event"):
            feedback.feedback_from_token(con, token, "valid", event_id="e3")
        with pytest.raises(FeedbackTokenError, match="signature does not match"):
            feedback.feedback_from_token(con, token[:-2] + ("AA" if not token.endswith("AA") else "BB"), "valid")
        late = datetime.now(timezone.utc) + timedelta(days=30)
        with pytest.raises(FeedbackTokenError, match="expired"):
            feedback.feedback_from_token(con, token, "valid", now=late)
        foreign = make_token("e2", "mallory")
        with pytest.raises(feedback.FeedbackError, match="does not own its event"):
            feedback.feedback_from_token(con, foreign, "valid")
        assert feedback.latest_feedback(con, ["e2"]).to_pylist()[0]["feedback_value"] == "Invalid"
    assert new_ip(db, "e3") == 1.0
