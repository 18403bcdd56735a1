"""ingest.sources.cognito_user_activity: the user-activity export, its quirks and its CloudWatch wrappings."""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from ingest.errors import InputFormatError
from ingest.sources.base import ReaderOptions
from ingest.sources.cognito_user_activity import READER

UTC = timezone.utc
RECORD = {
    "eventTimestamp": "1687297330677", "eventSource": "USER_ACTIVITY", "logLevel": "INFO",
    "message": {
        "version": "1", "eventId": "e-1", "eventType": "SignIn", "userSub": "sub-1", "userName": "test-user",
        "userPoolId": "us-west-2_EXAMPLE", "clientId": "client1", "creationDate": "Wed Jul 17 17:25:55 UTC 2024",
        "eventResponse": "Pass", "riskLevel": "", "riskDecision": "PASS",
        "challenges": [{"challengeName": "Password", "challengeResponse": "Success"}],
        "deviceName": "Chrome 126, Windows 10", "ipAddress": "192.0.2.1", "requestId": "req-1", "idpName": "",
        "compromisedCredentialDetected": "false", "city": "Seattle", "country": "United States",
        "eventFeedbackValue": "", "eventFeedbackDate": "", "eventFeedbackProvider": "", "hasContextData": "true"},
    "logSourceId": {"userPoolId": "us-west-2_EXAMPLE"},
}


def rec(top=None, **message) -> dict:
    r = copy.deepcopy(RECORD)
    for k, v in message.items():
        if v is None:
            r["message"].pop(k, None)
        else:
            r["message"][k] = v
    for k, v in (top or {}).items():
        if v is None:
            r.pop(k, None)
        else:
            r[k] = v
    return r


def line(top=None, **message) -> str:
    return json.dumps(rec(top, **message))


def write(tmp_path, lines, name="activity.jsonl"):
    p = tmp_path / name
    data = "\n".join(lines) + "\n"
    p.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return p


def read_all(path, **opts):
    batches = list(READER.read(str(path), ReaderOptions(**opts)))
    events = pa.concat_tables([b.events for b in batches]) if batches else None
    quarantine = pa.concat_tables([b.quarantine for b in batches]) if batches else None
    return batches, events, quarantine


def test_a_record_maps_exactly(tmp_path):
    _, ev, q = read_all(write(tmp_path, [line()]))
    assert q.num_rows == 0
    row = ev.to_pylist()[0]
    assert row == {
        "event_id": "e-1",
        "user_pool_id": "us-west-2_EXAMPLE",
        "client_id": "client1",
        "username": "test-user",
        "user_sub": "sub-1",
        "event_type": "SignIn",
        "event_response": "Pass",
        "creation_date": datetime(2023, 6, 20, 21, 42, 10, 677000, tzinfo=UTC),  # eventTimestamp wins
        "challenge_responses": [{"challenge_name": "Password", "challenge_response": "Success"}],
        "ip_address": "192.0.2.1",
        "has_context_data": True,
        "compromised_credentials": False,
        "source_country": "United States",
        "source_city": "Seattle",
        "source_device_name": "Chrome 126, Windows 10",
        "extra": '{"version":"1","riskDecision":"PASS","requestId":"req-1"}',
        "_raw": line(),
        "source_line": 1,
    }
    assert ev.schema.field("creation_date").type == pa.timestamp("us", tz="UTC")


def test_quirks_empty_strings_java_dates_and_unknown_fields(tmp_path):
    lines = [
        line({"eventTimestamp": ""}, eventId="e-2"),                              # creationDate (Java) instead
        line(eventId="e-3", ipAddress="", hasContextData="", city="", compromisedCredentialDetected="true"),
        line({"extraTop": {"a": 1}}, eventId="e-4", newField="x", riskLevel="High", eventFeedbackValue="Valid",
             eventFeedbackProvider="Admin"),
        line({"eventTimestamp": None}, eventId="e-5", creationDate="2024-07-17T17:25:55Z"),
        line({"logSourceId": {"userPoolId": "pool-src"}}, eventId="e-6", userPoolId=""),
    ]
    _, ev, q = read_all(write(tmp_path, lines))
    assert q.num_rows == 0
    r = {x["event_id"]: x for x in ev.to_pylist()}
    assert r["e-2"]["creation_date"] == datetime(2024, 7, 17, 17, 25, 55, tzinfo=UTC)
    assert (r["e-3"]["ip_address"], r["e-3"]["has_context_data"], r["e-3"]["source_city"]) == (None, False, None)
    assert r["e-3"]["compromised_credentials"] is True
    assert json.loads(r["e-4"]["extra"]) == {"extraTop": {"a": 1}, "version": "1", "riskLevel": "High",
                                              "riskDecision": "PASS", "requestId": "req-1",
                                              "eventFeedbackValue": "Valid", "eventFeedbackProvider": "Admin",
                                              "newField": "x"}
    assert r["e-5"]["creation_date"] == datetime(2024, 7, 17, 17, 25, 55, tzinfo=UTC)
    assert r["e-6"]["user_pool_id"] == "pool-src"


def test_user_pool_option_fills_a_missing_pool_and_ids_are_derived(tmp_path):
    no_pool = line({"logSourceId": None}, eventId=None, userPoolId="")
    _, ev, _ = read_all(write(tmp_path, [no_pool]), user_pool_id="eu-west-1_OPT")
    row = ev.to_pylist()[0]
    assert row["user_pool_id"] == "eu-west-1_OPT"
    assert row["event_id"] == "ua-" + hashlib.sha256(no_pool.encode()).hexdigest()[:32]


@pytest.mark.parametrize("challenges, expected", [
    ([{"ChallengeName": "Mfa", "ChallengeResponse": "Failure"}], [("Mfa", "Failure")]),
    ("Password:Success, Mfa:Success", [("Password", "Success"), ("Mfa", "Success")]),
    ([], []),
    ("", None),
])
def test_challenges_in_either_casing_or_as_text(tmp_path, challenges, expected):
    _, ev, q = read_all(write(tmp_path, [line(challenges=challenges)]))
    assert q.num_rows == 0
    got = ev.column("challenge_responses").to_pylist()[0]
    assert (None if got is None else [(c["challenge_name"], c["challenge_response"]) for c in got]) == expected


def test_bad_lines_are_quarantined_with_line_and_reason(tmp_path):
    p = tmp_path / "a.jsonl"
    lines = [
        line(),                                                                   # 1
        "{not json",                                                              # 2
        line(userName=""),                                                        # 3
        line(userName=5),                                                         # 4
        "[1, 2]",                                                                 # 5
        line({"eventTimestamp": "soon"}, creationDate="yesterday"),               # 6
        line({"eventTimestamp": None}, creationDate=None),                        # 7
        line(hasContextData="maybe"),                                             # 8
        line(challenges=[1]),                                                     # 9
        line({"message": "flat text"}),                                           # 10
        "",                                                                       # 11 blank: not a row
    ]
    data = "\n".join(lines).encode() + b"\n" + line().encode().replace(b"Seattle", b"S\xe3o Paulo") + b"\n"  # 12
    p.write_bytes(data)
    _, ev, q = read_all(p)
    assert ev.column("source_line").to_pylist() == [1]
    got = {r["source_line"]: r["reason"] for r in q.to_pylist()}
    assert got == {
        2: "malformed JSON: Expecting property name enclosed in double quotes at column 2",
        3: "message.userName is required",
        4: "message.userName must be a string, got a number",
        5: "not a JSON object: the line is a JSON array",
        6: 'no usable time: eventTimestamp "soon" is not epoch milliseconds and message.creationDate "yesterday" '
           'is not a date like "Wed Jul 17 17:25:55 UTC 2024"',
        7: "eventTimestamp or message.creationDate is required",
        8: 'message.hasContextData must be "true" or "false", got "maybe"',
        9: "message.challenges items must be objects with string challengeName and challengeResponse",
        10: "message must be an object, got a string; message.userName is required; message.eventType is required; "
            "message.eventResponse is required",
        12: got[12],
    }
    assert got[12] == f"not UTF-8: invalid byte at position {line().index('Seattle') + 1}"
    assert q.column("raw").to_pylist()[0] == "{not json"


def _envelope_of(log_events) -> str:
    return json.dumps({"messageType": "DATA_MESSAGE", "logEvents": log_events})


@pytest.mark.parametrize("text, reason", [  # JSON's names of its types, never DuckDB's (varchar, ubigint)
    ('"x"', "not a JSON object: the line is a JSON string"),
    ("5", "not a JSON object: the line is a JSON number"),
    ("-5.5", "not a JSON object: the line is a JSON number"),
    ("true", "not a JSON object: the line is a JSON boolean"),
    ("null", "not a JSON object: the line is a JSON null"),
    (line(challenges=5), "message.challenges must be an array or a string, got a number"),
    (line(challenges=False), "message.challenges must be an array or a string, got a boolean"),
    (line(challenges={"a": 1}), "message.challenges must be an array or a string, got an object"),
    (_envelope_of("none"), "CloudWatch envelope: logEvents must be an array, got a string"),
    (_envelope_of(18446744073709551615), "CloudWatch envelope: logEvents must be an array, got a number"),
    (_envelope_of(None), "CloudWatch envelope: logEvents must be an array, got null"),
])
def test_reasons_name_json_types_in_jsons_words(tmp_path, text, reason):
    _, ev, q = read_all(write(tmp_path, [line(), text]))
    assert ev.num_rows == 1
    assert [(r["source_line"], r["reason"]) for r in q.to_pylist()] == [(2, reason)]


def test_cloudwatch_prefixed_lines_and_envelopes(tmp_path):
    a, b, c = line(eventId="cw-a"), line(eventId="cw-b"), line(eventId="cw-c", userName="")
    envelope = {"messageType": "DATA_MESSAGE", "owner": "123", "logGroup": "g", "logStream": "s",
                "subscriptionFilters": ["f"],
                "logEvents": [{"id": "1", "timestamp": 1, "message": b}, {"id": "2", "timestamp": 1, "message": c},
                              {"id": "3", "timestamp": 1, "message": {"not": "a string"}}]}
    control = {"messageType": "CONTROL_MESSAGE", "logEvents": [
        {"id": "", "timestamp": 1, "message": "CWL CONTROL MESSAGE: Checking health of destination Firehose."}]}
    two = {"messageType": "DATA_MESSAGE", "logEvents": [{"id": "4", "timestamp": 1, "message": line(eventId="cw-d")}]}
    three = {"messageType": "DATA_MESSAGE", "logEvents": [{"id": "5", "timestamp": 1, "message": line(eventId="cw-e")}]}
    lines = [
        "2024-07-17T17:25:55.677Z " + a,                       # 1
        json.dumps(envelope),                                  # 2: three records
        json.dumps(control),                                   # 3: no records
        json.dumps(two) + json.dumps(three),                   # 4: two envelopes back to back
        line(eventId="plain"),                                 # 5
    ]
    batches, ev, q = read_all(write(tmp_path, lines))
    assert list(zip(ev.column("event_id").to_pylist(), ev.column("source_line").to_pylist())) == [
        ("cw-a", 1), ("cw-b", 2), ("cw-d", 4), ("cw-e", 4), ("plain", 5)]
    assert ev.column("_raw").to_pylist()[:2] == [a, b]
    assert sorted((r["source_line"], r["reason"], r["raw"]) for r in q.to_pylist()) == [
        (2, "CloudWatch envelope: logEvents[2].message must be a string holding the record",
         '{"id":"3","timestamp":1,"message":{"not":"a string"}}'),
        (2, "message.userName is required", c),
    ]
    assert sum(b.rows_read for b in batches) == 7


@pytest.mark.parametrize("between", [" ", "\t", "  \t ", " \r "])
def test_envelopes_with_blanks_between_them_on_one_line_are_split(tmp_path, between):
    def envelope(event_id):
        return json.dumps({"messageType": "DATA_MESSAGE", "logEvents": [
            {"id": "1", "timestamp": 1, "message": line(eventId=event_id)}]})
    lines = [line(eventId="first"), envelope("e1") + between + envelope("e2") + between + envelope("e3")]
    batches, ev, q = read_all(write(tmp_path, lines))
    assert q.num_rows == 0
    assert list(zip(ev.column("event_id").to_pylist(), ev.column("source_line").to_pylist())) == [
        ("first", 1), ("e1", 2), ("e2", 2), ("e3", 2)]
    assert sum(b.rows_read for b in batches) == 4


def test_gzip_input_and_batches(tmp_path):
    lines = [line(eventId=f"g-{i}") for i in range(11)] + ["oops"]
    plain = write(tmp_path, lines)
    gz = tmp_path / "activity.jsonl.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    b1, ev1, q1 = read_all(plain, batch_rows=5)
    b2, ev2, q2 = read_all(gz, batch_rows=5)
    assert [b.rows_read for b in b1] == [b.rows_read for b in b2] == [5, 5, 2]
    assert ev1.equals(ev2)
    assert q1.drop_columns(["source_file"]).equals(q2.drop_columns(["source_file"]))
    assert ev1.column("source_line").to_pylist() == list(range(1, 12))


@pytest.mark.parametrize("content", [b"", b"\n  \n"])
def test_an_empty_file_is_an_input_format_error(tmp_path, content):
    p = tmp_path / "empty.jsonl"
    p.write_bytes(content)
    with pytest.raises(InputFormatError, match="is empty"):
        list(READER.read(str(p), ReaderOptions()))


def test_a_file_of_another_format_is_an_input_format_error(tmp_path):
    csv = write(tmp_path, ["index,Login Timestamp,User ID", "1,2020-02-03 12:00:00,u"], name="x.csv")
    with pytest.raises(InputFormatError, match="is not a Cognito user-activity export") as exc:
        list(READER.read(str(csv), ReaderOptions()))
    assert str(csv) in str(exc.value)
    rg = write(tmp_path, [json.dumps({"Username": "a", "EventType": "SignIn", "EventResponse": "Pass",
                                      "CreationDate": "2024-01-01T00:00:00Z"})], name="rg.jsonl")
    with pytest.raises(InputFormatError, match="message is required"):
        list(READER.read(str(rg), ReaderOptions()))


def test_sniff():
    assert READER.sniff((line() + "\n").encode())
    assert READER.sniff(("2024-07-17T17:25:55.677Z " + line() + "\n").encode())
    env = {"messageType": "DATA_MESSAGE", "logEvents": [{"id": "1", "timestamp": 1,
                                                          "message": json.dumps(rec({"eventSource": None}))}]}
    assert READER.sniff((json.dumps(env) + "\n").encode())
    assert not READER.sniff(b'{"Username": "a", "EventType": "SignIn"}\n')
    assert not READER.sniff(b"index,Login Timestamp\n")


def test_a_firehose_stream_that_starts_with_a_control_message_is_recognised(tmp_path):
    """Firehose streams often begin with CloudWatch's CONTROL_MESSAGE (no records): detection looks past it."""
    from ingest.sources import detect_format

    control = {"messageType": "CONTROL_MESSAGE", "logEvents": [
        {"id": "", "timestamp": 1, "message": "CWL CONTROL MESSAGE: Checking health of destination Firehose."}]}
    data = {"messageType": "DATA_MESSAGE", "logEvents": [{"id": "1", "timestamp": 1, "message": line(eventId="fh")}]}
    path = write(tmp_path, ["", json.dumps(control), json.dumps(data)])
    assert detect_format(str(path)) == "cognito-user-activity"
    with pytest.raises(InputFormatError, match="format not recognised"):  # nothing but a control message
        detect_format(str(write(tmp_path, [json.dumps(control)], name="only-control.jsonl")))


def test_event_feedback_is_given_beside_the_events_row_for_row(tmp_path):
    """``ReadBatch.feedback``: Cognito's spelling whatever the case; eventFeedbackDate as epoch milliseconds,
    ISO 8601 or a Java date, else ("") the event's time."""
    lines = [line(eventId="none"),
             line(eventId="ms", eventFeedbackValue="Invalid", eventFeedbackProvider="Admin",
                  eventFeedbackDate="1721237200000"),
             line(eventId="java", eventFeedbackValue="VALID", eventFeedbackProvider="user",
                  eventFeedbackDate="Thu Jul 18 08:00:00 UTC 2024"),
             line(eventId="iso", eventFeedbackValue="invalid", eventFeedbackProvider="Admin",
                  eventFeedbackDate="2024-07-18T09:00:00Z"),
             line(eventId="undated", eventFeedbackValue="Valid", eventFeedbackProvider="Admin")]
    batches, ev, q = read_all(write(tmp_path, lines))
    assert q.num_rows == 0 and len(batches) == 1
    fb = batches[0].feedback
    assert fb.schema.field("feedback_date").type == pa.timestamp("us", tz="UTC")
    got = dict(zip(ev.column("event_id").to_pylist(),
                   [(r["feedback_value"], r["provider"], r["feedback_date"]) for r in fb.to_pylist()]))
    assert got == {"none": (None, None, None),
                   "ms": ("Invalid", "Admin", datetime(2024, 7, 17, 17, 26, 40, tzinfo=UTC)),
                   "java": ("Valid", "User", datetime(2024, 7, 18, 8, tzinfo=UTC)),
                   "iso": ("Invalid", "Admin", datetime(2024, 7, 18, 9, tzinfo=UTC)),
                   "undated": ("Valid", "Admin", datetime(2023, 6, 20, 21, 42, 10, 677000, tzinfo=UTC))}
    batches, _, _ = read_all(write(tmp_path, [line()], "plain.jsonl"))
    assert batches[0].feedback is None  # no record carries feedback


def test_event_feedback_that_cannot_be_recorded_quarantines_its_record(tmp_path):
    lines = [line(eventId="ok", eventFeedbackValue="Invalid", eventFeedbackProvider="Admin"),
             line(eventId="e1", eventFeedbackValue="Maybe", eventFeedbackProvider="Admin"),
             line(eventId="e2", eventFeedbackValue=1, eventFeedbackProvider="Robot"),
             line(eventId="e3", eventFeedbackValue="Valid", eventFeedbackProvider="Admin",
                  eventFeedbackDate="Thu Jul 18 08:00:00 UTC 2099"),
             line(eventId="e4", eventFeedbackDate="1721237200000")]
    batches, ev, q = read_all(write(tmp_path, lines))
    assert ev.column("event_id").to_pylist() == ["ok"] and batches[0].feedback.num_rows == 1
    assert q.column("reason").to_pylist() == [
        'message.eventFeedbackValue must be "Valid" or "Invalid", got "Maybe"',
        'message.eventFeedbackValue must be a string, got a number; '
        'message.eventFeedbackProvider must be "Admin" or "User", got "Robot"',
        "message.eventFeedbackDate 2099-07-18T08:00:00Z is in the future",
        'message.eventFeedbackValue is required when the record has feedback (eventFeedbackProvider or '
        'eventFeedbackDate): "Valid" or "Invalid"; message.eventFeedbackProvider is required when the record has '
        'feedback (eventFeedbackValue or eventFeedbackDate): "Admin" or "User"',
    ]
