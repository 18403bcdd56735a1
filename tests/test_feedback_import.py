"""`riskgate ingest` of Cognito's own exports records the feedback they carry (risk.feedback.record_imported).

AdminListUserAuthEvents output carries ``EventFeedback {FeedbackValue, Provider, FeedbackDate}``; the
user-activity export ``eventFeedbackValue`` / ``eventFeedbackProvider`` / ``eventFeedbackDate`` (strings, ""
for none). Both were stored only as text in the event's ``extra``: the feedback table stayed empty, so an
``Invalid`` sign-in still taught the user's history its IP, ``riskgate events`` showed no EventFeedback and
training saw no label.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from typer.testing import CliRunner

import risk.store
from cli import app
from risk.features import compute_features
from risk.model.training import load_labels
from tests.storedb import q
from tests.test_ingest import env  # noqa: F401 (the fixture: the test GeoIP databases, a store in tmp_path)

runner = CliRunner()
UTC = timezone.utc
HOME, AWAY = "81.2.69.160", "1.120.0.9"


def rg(*args):
    return runner.invoke(app, [*map(str, args)])


def ingest(*args):
    res = rg("ingest", *args)
    assert res.exit_code == 0, res.output
    return " ".join(res.output.split())


def auth_event(event_id, hour, ip, feedback=None, **kw):
    e = {"EventId": event_id, "EventType": "SignIn", "CreationDate": f"2026-03-02T{hour:02d}:00:00+00:00",
         "EventResponse": "Pass", "EventRisk": {"RiskDecision": "NoRisk", "CompromisedCredentialsDetected": False},
         "ChallengeResponses": [{"ChallengeName": "Password", "ChallengeResponse": "Success"}],
         "EventContextData": {"IpAddress": ip, "DeviceName": "Chrome 126, Windows 10"}, **kw}
    if feedback is not None:
        e["EventFeedback"] = feedback
    return e


def alice_page(path, feedback):
    """alice signs in at home (a1), then from AWAY (a2, with ``feedback``), then from AWAY again (a3); newest
    first, as AdminListUserAuthEvents lists them."""
    doc = {"AuthEvents": [auth_event("a3", 11, AWAY), auth_event("a2", 10, AWAY, feedback),
                          auth_event("a1", 9, HOME)]}
    path.write_text(json.dumps(doc, indent=4))
    return path


def activity(event_id, hour, ip, value="", provider="", date="", **message):
    m = {"version": "1", "eventId": event_id, "eventType": "SignIn", "userSub": "sub-bob", "userName": "bob",
         "userPoolId": "us-west-2_EXAMPLE", "clientId": "c1", "creationDate": "", "eventResponse": "Pass",
         "riskLevel": "", "riskDecision": "PASS", "challenges": [], "deviceName": "Chrome 126, Windows 10",
         "ipAddress": ip, "requestId": "r", "idpName": "", "compromisedCredentialDetected": "false", "city": "",
         "country": "", "eventFeedbackValue": value, "eventFeedbackDate": date, "eventFeedbackProvider": provider,
         "hasContextData": "true", **message}
    ms = int(datetime(2026, 3, 2, hour, tzinfo=UTC).timestamp() * 1000)
    return json.dumps({"eventTimestamp": str(ms), "eventSource": "USER_ACTIVITY", "logLevel": "INFO", "message": m,
                       "logSourceId": {"userPoolId": "us-west-2_EXAMPLE"}}, separators=(",", ":"))


def feedback_rows(env):
    return q(env / "store.duckdb", "SELECT event_id, feedback_value, provider, feedback_date FROM feedback "
                                   "ORDER BY event_id, seq")


def listed_feedback(username):
    res = rg("events", username)
    assert res.exit_code == 0, res.output
    return {e["EventId"]: e.get("EventFeedback") for e in json.loads(res.output)["AuthEvents"]}


def new_ip(env, event_id):
    with risk.store.connect(env / "store.duckdb", read_only=True) as con:
        return {r["event_id"]: r for r in compute_features(con).to_pylist()}[event_id]["new_ip"]


def labels(env):
    with risk.store.connect(env / "store.duckdb", read_only=True) as con:
        return {r.event_id: (r.y, r.attack_type) for r in load_labels(con).itertuples()}


def test_an_auth_events_page_records_its_event_feedback_as_the_feedback_given(env):
    page = alice_page(env / "alice.json", {"FeedbackValue": "Invalid", "Provider": "Admin",
                                           "FeedbackDate": "2026-03-02T12:00:00+00:00"})
    out = ingest(page, "--username", "alice")
    assert "events added 3" in out and "feedback recorded 1" in out
    assert feedback_rows(env) == [("a2", "Invalid", "Admin", datetime(2026, 3, 2, 12, tzinfo=UTC))]
    assert listed_feedback("alice") == {
        "a3": None, "a1": None,
        "a2": {"FeedbackValue": "Invalid", "Provider": "Admin", "FeedbackDate": "2026-03-02T12:00:00.000000+00:00"}}
    # "this was not me": a2 is no part of alice's known history, so a3 from the same IP is new; and it trains
    assert new_ip(env, "a3") == 1.0
    assert labels(env) == {"a2": (1.0, "feedback_invalid")}


def test_a_user_activity_export_records_its_event_feedback_as_the_feedback_given(env):
    noon = str(int(datetime(2026, 3, 2, 12, tzinfo=UTC).timestamp() * 1000))
    f = env / "activity.jsonl"
    f.write_text("\n".join([
        activity("u1", 9, HOME),
        activity("u2", 10, AWAY, value="Invalid", provider="User", date=noon),
        activity("u3", 11, AWAY),
        # a record the enrichment quarantines (no address) records no feedback either
        activity("u4", 11, "not-an-ip", value="Valid", provider="Admin", date=noon),
    ]) + "\n")
    out = ingest(f)
    assert "events added 3" in out and "quarantined 1" in out and "feedback recorded 1" in out
    assert feedback_rows(env) == [("u2", "Invalid", "User", datetime(2026, 3, 2, 12, tzinfo=UTC))]
    assert listed_feedback("bob") == {
        "u3": None, "u1": None,
        "u2": {"FeedbackValue": "Invalid", "Provider": "User", "FeedbackDate": "2026-03-02T12:00:00.000000+00:00"}}
    assert new_ip(env, "u3") == 1.0
    assert labels(env) == {"u2": (1.0, "feedback_invalid")}


def test_reingesting_adds_no_feedback_a_changed_export_adds_the_newer_and_later_feedback_stays_in_force(env):
    invalid = {"FeedbackValue": "Invalid", "Provider": "Admin", "FeedbackDate": "2026-03-02T12:00:00Z"}
    first = alice_page(env / "first.json", invalid)
    ingest(first, "--username", "alice")
    out = ingest(first, "--username", "alice")  # the same export again: nothing new, feedback included
    assert "events added 0" in out and "duplicates skipped 3" in out and "feedback recorded" not in out
    assert len(feedback_rows(env)) == 1

    # listed again after the administrator changed their mind in Cognito: the events are duplicates, the
    # newer feedback is recorded and is in force
    valid = {"FeedbackValue": "Valid", "Provider": "Admin", "FeedbackDate": 1772460000}  # 2026-03-02T14:00Z
    later = alice_page(env / "later.json", valid)
    out = ingest(later, "--username", "alice")
    assert "duplicates skipped 3" in out and "feedback recorded 1" in out
    assert feedback_rows(env) == [("a2", "Invalid", "Admin", datetime(2026, 3, 2, 12, tzinfo=UTC)),
                                  ("a2", "Valid", "Admin", datetime(2026, 3, 2, 14, tzinfo=UTC))]
    assert listed_feedback("alice")["a2"]["FeedbackValue"] == "Valid"
    assert new_ip(env, "a3") == 0.0

    # feedback given in riskgate afterwards (dated now) is never outranked by an export dated before it
    res = rg("feedback", "a2", "invalid")
    assert res.exit_code == 0, res.output
    for page in (first, later):
        assert "feedback recorded" not in ingest(page, "--username", "alice")
    older = alice_page(env / "older.json", {**valid, "FeedbackDate": "2026-03-03T08:00:00Z"})
    assert "feedback recorded 1" in ingest(older, "--username", "alice")  # kept, as every feedback is
    assert len(feedback_rows(env)) == 4
    fb = listed_feedback("alice")["a2"]
    assert (fb["FeedbackValue"], fb["Provider"]) == ("Invalid", "Admin") and fb["FeedbackDate"] > "2026-03-03T08:00:00"
    assert new_ip(env, "a3") == 1.0


def test_feedback_without_a_date_is_dated_at_its_event(env):
    """FeedbackDate is optional in the API: the event's time, the earliest the feedback can have been given,
    so that it outranks no feedback given later, and ingesting it again adds nothing."""
    page = alice_page(env / "alice.json", {"FeedbackValue": "invalid", "Provider": "user"})  # any case
    assert "feedback recorded 1" in ingest(page, "--username", "alice")
    f = env / "activity.jsonl"
    f.write_text(activity("u2", 10, AWAY, value="Valid", provider="Admin") + "\n")
    assert "feedback recorded 1" in ingest(f)
    assert feedback_rows(env) == [("a2", "Invalid", "User", datetime(2026, 3, 2, 10, tzinfo=UTC)),
                                  ("u2", "Valid", "Admin", datetime(2026, 3, 2, 10, tzinfo=UTC))]
    assert "feedback recorded" not in ingest(page, "--username", "alice")
    assert "feedback recorded" not in ingest(f)
    assert len(feedback_rows(env)) == 2


def test_feedback_that_cannot_be_read_quarantines_its_row_naming_the_field(env):
    page = env / "alice.json"
    page.write_text(json.dumps({"AuthEvents": [
        auth_event("a1", 9, HOME),
        auth_event("b1", 10, AWAY, {"FeedbackValue": "Maybe", "Provider": "Admin"}),
        auth_event("b2", 10, AWAY, {"FeedbackValue": "Invalid", "Provider": "Console"}),
        auth_event("b3", 10, AWAY, {"FeedbackValue": "Invalid", "Provider": "Admin", "FeedbackDate": "yesterday"}),
        auth_event("b4", 10, AWAY, {"FeedbackValue": "Invalid", "Provider": "Admin", "FeedbackDate": "2099-01-01"}),
        auth_event("b5", 10, AWAY, {"FeedbackValue": "Invalid"}),
    ]}))
    out = ingest(page, "--username", "alice")
    assert "events added 1" in out and "quarantined 5" in out
    f = env / "activity.jsonl"
    f.write_text("\n".join([
        activity("u1", 9, HOME),
        activity("v1", 10, AWAY, value="Maybe", provider="Admin"),
        activity("v2", 10, AWAY, value="Invalid", provider="Console"),
        activity("v3", 10, AWAY, value="Invalid", provider="Admin", date="soon"),
        activity("v4", 10, AWAY, value="", provider="", date="1772460000000"),
    ]) + "\n")
    out = ingest(f)
    assert "events added 1" in out and "quarantined 4" in out
    reasons = dict(q(env / "store.duckdb", "SELECT source_line, reason FROM quarantine WHERE source_format = ?",
                     ["cognito-user-activity"]))
    assert reasons == {
        2: 'message.eventFeedbackValue must be "Valid" or "Invalid", got "Maybe"',
        3: 'message.eventFeedbackProvider must be "Admin" or "User", got "Console"',
        4: 'message.eventFeedbackDate must be epoch milliseconds, an ISO 8601 time or a date like '
           '"Wed Jul 17 17:25:55 UTC 2024", got "soon"',
        5: 'message.eventFeedbackValue is required when the record has feedback (eventFeedbackProvider or '
           'eventFeedbackDate): "Valid" or "Invalid"; message.eventFeedbackProvider is required when the record '
           'has feedback (eventFeedbackValue or eventFeedbackDate): "Admin" or "User"'}
    reasons = sorted(r for (r,) in q(env / "store.duckdb", "SELECT reason FROM quarantine WHERE source_format = ?",
                                     ["cognito-auth-events"]))
    assert reasons == [
        'EventFeedback.FeedbackDate 2099-01-01T00:00:00Z is in the future',
        'EventFeedback.FeedbackDate must be an ISO 8601 time or epoch seconds, got "yesterday"',
        'EventFeedback.FeedbackValue must be Valid or Invalid, got "Maybe"',
        'EventFeedback.Provider is required (Admin or User)',
        'EventFeedback.Provider must be Admin or User, got "Console"']
    assert feedback_rows(env) == []
    assert q(env / "store.duckdb", "SELECT event_id FROM events ORDER BY event_id") == [("a1",), ("u1",)]


def test_an_item_without_event_id_listed_again_with_feedback_is_the_same_event(env):
    """The id derived from an item without EventId hashed its EventFeedback too: the item listed again after the
    user or an administrator gave feedback became a second event, which the feedback was about, and the first stayed
    in the user's history (a review)."""
    item = {k: v for k, v in auth_event("x", 10, AWAY).items() if k != "EventId"}
    first, again = env / "first.json", env / "again.json"
    first.write_text(json.dumps({"AuthEvents": [item]}))
    again.write_text(json.dumps({"AuthEvents": [{**item, "EventFeedback": {
        "FeedbackValue": "Invalid", "Provider": "Admin", "FeedbackDate": "2026-03-03T00:00:00Z"}}]}))
    assert "events added 1" in ingest(first, "--username", "alice")
    out = ingest(again, "--username", "alice")
    assert "events added 0 duplicates skipped 1" in out and "feedback recorded 1" in out, out
    [(event_id,)] = q(env / "store.duckdb", "SELECT event_id FROM events")
    assert feedback_rows(env) == [(event_id, "Invalid", "Admin", datetime(2026, 3, 3, tzinfo=UTC))]
