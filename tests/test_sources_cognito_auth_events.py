"""ingest.sources.cognito_auth_events: AdminListUserAuthEvents output, one or more pages."""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
from datetime import datetime, timezone

import pyarrow as pa
import pytest

import ingest.sources.cognito_auth_events as auth_events
from ingest.errors import InputFormatError
from ingest.sources.base import ReaderOptions
from ingest.sources.cognito_auth_events import READER

UTC = timezone.utc
EVENT = {
    "EventId": "ev-1", "EventType": "SignIn", "CreationDate": "2024-07-17T17:25:55.123000+00:00",
    "EventResponse": "Pass",
    "EventRisk": {"RiskDecision": "NoRisk", "CompromisedCredentialsDetected": False},
    "ChallengeResponses": [{"ChallengeName": "Password", "ChallengeResponse": "Success"}],
    "EventContextData": {"IpAddress": "192.0.2.1", "DeviceName": "Chrome 126, Windows 10", "Timezone": "+02:00",
                         "City": "Paris", "Country": "France"},
}


def event(**kw) -> dict:
    e = copy.deepcopy(EVENT)
    for k, v in kw.items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    return e


def page(*events, token="next") -> dict:
    return {"AuthEvents": list(events), "NextToken": token}


def write(tmp_path, text, name="events.json"):
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return p


def read_all(path, username="alice", **opts):
    batches = list(READER.read(str(path), ReaderOptions(username=username, **opts)))
    events = pa.concat_tables([b.events for b in batches])
    quarantine = pa.concat_tables([b.quarantine for b in batches])
    return batches, events, quarantine


def test_a_pretty_printed_page_maps_exactly_with_item_lines(tmp_path):
    doc = page(event(), event(EventId="ev-2", CreationDate=1721237155.5, EventRisk=None,
                              EventFeedback={"FeedbackValue": "Invalid", "Provider": "Admin", "FeedbackDate": 1721237200},
                              EventContextData=None, ChallengeResponses=None))
    text = json.dumps(doc, indent=4)
    _, ev, q = read_all(write(tmp_path, text), user_pool_id="eu-west-1_POOL")
    assert q.num_rows == 0
    first, second = ev.to_pylist()
    assert first == {
        "event_id": "ev-1",
        "user_pool_id": "eu-west-1_POOL",
        "username": "alice",
        "event_type": "SignIn",
        "event_response": "Pass",
        "creation_date": datetime(2024, 7, 17, 17, 25, 55, 123000, tzinfo=UTC),
        "challenge_responses": [{"challenge_name": "Password", "challenge_response": "Success"}],
        "ip_address": "192.0.2.1",
        "has_context_data": True,
        "compromised_credentials": False,
        "source_country": "France",
        "source_city": "Paris",
        "source_device_name": "Chrome 126, Windows 10",
        "extra": '{"EventRisk":{"RiskDecision":"NoRisk","CompromisedCredentialsDetected":false},'
                 '"EventContextData":{"Timezone":"+02:00"}}',
        "_raw": json.dumps(doc["AuthEvents"][0], indent=4).replace("\n", "\n        "),
        "source_line": 3,
    }
    lines = text.splitlines()
    assert lines[first["source_line"] - 1].strip() == "{" and '"ev-1"' in lines[first["source_line"]]
    assert '"ev-2"' in lines[second["source_line"]]
    assert second["creation_date"] == datetime(2024, 7, 17, 17, 25, 55, 500000, tzinfo=UTC)
    assert (second["has_context_data"], second["ip_address"], second["challenge_responses"]) == (False, None, None)
    assert json.loads(second["extra"]) == {"EventFeedback": {"FeedbackValue": "Invalid", "Provider": "Admin",
                                                             "FeedbackDate": 1721237200}}
    assert ev.schema.field("creation_date").type == pa.timestamp("us", tz="UTC")


def test_concatenated_pages_compact_and_pretty(tmp_path):
    text = (json.dumps(page(event(EventId="a"), event(EventId="b"))) + "\n"
            + json.dumps(page(event(EventId="c")), indent=2) + "\n"
            + json.dumps(page(event(EventId="d"), token=None)) + "\n")
    _, ev, q = read_all(write(tmp_path, text))
    assert q.num_rows == 0
    lines = text.splitlines()
    c_line = lines.index('      "EventId": "c",')  # the item's "{" is the line before (1-based: this index)
    d_line = next(i for i, x in enumerate(lines, 1) if '"EventId": "d"' in x)
    assert list(zip(ev.column("event_id").to_pylist(), ev.column("source_line").to_pylist())) == [
        ("a", 1), ("b", 1), ("c", c_line), ("d", d_line)]
    assert (c_line, d_line) == (4, 30)


def test_without_username_is_an_input_format_error(tmp_path):
    p = write(tmp_path, json.dumps(page(event())))
    with pytest.raises(InputFormatError, match="pass --username USER .*or --username-from-file-name") as exc:
        list(READER.read(str(p), ReaderOptions()))
    assert str(p) in str(exc.value)
    with pytest.raises(InputFormatError, match="the file name holds no username"):
        list(READER.read(str(write(tmp_path, json.dumps(page(event())), name=".json")),
                         ReaderOptions(username_from_file_name=True)))


@pytest.mark.parametrize("name, user", [("alice.json", "alice"), ("chidi.bell.json.gz", "chidi.bell"),
                                        ("bob.jsonl", "bob"), ("carol", "carol"), ("dave.gz", "dave"),
                                        ("BOB.JSON", "BOB"), ("Erin.Json.GZ", "Erin"), ("frank.JSONL", "frank")])
def test_each_file_named_after_its_user(tmp_path, name, user):
    data = json.dumps(page(event(EventId=None), event(EventId=None, CreationDate="2024-07-17T17:00:00Z"))).encode()
    p = write(tmp_path, gzip.compress(data) if name.lower().endswith(".gz") else data, name=name)
    assert auth_events.username_of_file(str(p)) == user
    _, ev, q = read_all(p, username=None, username_from_file_name=True)
    assert ev.column("username").to_pylist() == [user, user] and q.num_rows == 0
    # the same ids as the same file read with --username: the ids are derived from the user and the item
    named = write(tmp_path, gzip.compress(data) if name.lower().endswith(".gz") else data, name="x" + name)
    assert read_all(named, username=user)[1].column("event_id").to_pylist() == ev.column("event_id").to_pylist()


def test_wrong_types_and_missing_fields_are_quarantined_per_item(tmp_path):
    doc = page(
        event(EventId="ok"),
        event(EventId="no-type", EventType=None),
        event(EventId="bad-date", CreationDate="yesterday"),
        event(EventId="bad-ip", EventContextData={"IpAddress": 5}),
        event(EventId="bad-ccd", EventRisk={"CompromisedCredentialsDetected": "no"}),
        event(EventId="bad-ch", ChallengeResponses=[{"ChallengeName": "Password"}]),
        "not an object",
        event(EventId=7),
    )
    text = json.dumps(doc, indent=2)
    _, ev, q = read_all(write(tmp_path, text))
    assert ev.column("event_id").to_pylist() == ["ok"]
    reasons = q.column("reason").to_pylist()
    assert reasons == [
        "EventType is required",
        'CreationDate must be an ISO 8601 time or epoch seconds, got "yesterday"',
        "EventContextData.IpAddress must be a string, got a number 5",
        'EventRisk.CompromisedCredentialsDetected must be true or false, got "no"',
        "ChallengeResponses items must be objects with string ChallengeName and ChallengeResponse",
        "an AuthEvents item must be an object, got a string",
        "EventId must be a string, got a number 7",
    ]
    lines = text.splitlines()
    for line_no, raw in zip(q.column("source_line").to_pylist(), q.column("raw").to_pylist()):
        assert lines[line_no - 1].strip().startswith(raw.splitlines()[0].strip())


def test_malformed_json_keeps_good_items_and_the_following_pages(tmp_path):
    good = json.dumps(page(event(EventId="p1")))
    broken = '{"AuthEvents": [' + json.dumps(event(EventId="p2-a")) + ',\n  {"EventId": "p2-b", "x": }\n]}'
    after = json.dumps(page(event(EventId="p3")))
    _, ev, q = read_all(write(tmp_path, "\n".join([good, broken, after]) + "\n"))
    assert list(zip(ev.column("event_id").to_pylist(), ev.column("source_line").to_pylist())) == [
        ("p1", 1), ("p2-a", 2), ("p3", 5)]
    assert q.to_pylist()[0] | {"source_file": None} == {
        "source_format": "cognito-auth-events", "source_file": None, "source_line": 3,
        "reason": "malformed JSON: Expecting value at line 3 (after 1 good AuthEvents items of this document)",
        "raw": '{"EventId": "p2-b", "x": }\n]}'}


def _cut(at: str, keep: int, indent: int | None = None) -> str:
    """A page of c1 and c2, cut off ``keep`` characters after the start of ``at``."""
    text = json.dumps(page(event(EventId="c1"), event(EventId="c2")), indent=indent)
    return text[:text.index(at) + keep]


CUT_OFF = "the document breaks off before line {}, which starts another one"
_PRETTY = _cut('"c2"', 10, indent=4)  # as the AWS CLI prints: cut in the indentation of the line after EventId
BROKEN_THEN_PAGE = [  # (the page cut off, the broken part quarantined, why: the parser's words if it stops there)
    ("inside an item", _cut('{"EventId": "c2"', 1), "{", CUT_OFF.format(2)),
    ("after an item's comma", _cut('{"EventId": "c2"', 0), ",", CUT_OFF.format(2)),
    ("inside a string", _cut('"c2"', 2), '{"EventId": "c', "Invalid control character at line 1"),
    ("pretty-printed", _PRETTY, _PRETTY[_PRETTY.index('{\n            "EventId": "c2"'):].strip(),
     CUT_OFF.format(len(_PRETTY.splitlines()) + 1)),
]


@pytest.mark.parametrize("how, broken, raw, why", BROKEN_THEN_PAGE, ids=[b[0] for b in BROKEN_THEN_PAGE])
def test_a_page_cut_off_loses_nothing_of_the_page_on_the_next_line(tmp_path, how, broken, raw, why):
    after = json.dumps(page(event(EventId="n1"), event(EventId="n2")), indent=4 if how == "pretty-printed" else None)
    text = broken + "\n" + after + "\n"
    batches, ev, q = read_all(write(tmp_path, text))
    assert ev.column("event_id").to_pylist() == ["c1", "n1", "n2"]
    assert sum(b.rows_read for b in batches) == 4
    assert [(r["source_line"], r["reason"], r["raw"]) for r in q.to_pylist()] == [(
        text[:text.index(raw)].count("\n") + 1,
        f"malformed JSON: {why} (after 1 good AuthEvents items of this document)", raw)]


def test_non_utf8_bytes_quarantine_their_item(tmp_path):
    text = json.dumps(page(event(EventId="u1"), event(EventId="u2", EventContextData={"City": "SAOPAULO"}),
                           event(EventId="u3")), indent=2).encode()
    p = write(tmp_path, text.replace(b"SAOPAULO", b"S\xe3o Paulo"))
    _, ev, q = read_all(p)
    assert ev.column("event_id").to_pylist() == ["u1", "u3"]
    row = q.to_pylist()[0]
    line_of_city = text.decode().splitlines().index('        "City": "SAOPAULO"') + 1
    assert row["reason"] == f"not UTF-8: invalid byte on line {line_of_city}"
    assert "S\\xe3o Paulo" in row["raw"]


def test_event_ids_are_derived_from_the_item_and_the_user(tmp_path):
    p = write(tmp_path, json.dumps(page(event(EventId=None, Extra="kept"))))
    _, ev_a, _ = read_all(p, username="alice")
    _, ev_a2, _ = read_all(p, username="alice")
    _, ev_b, _ = read_all(p, username="bob")
    ida, idb = ev_a.column("event_id")[0].as_py(), ev_b.column("event_id")[0].as_py()
    item = json.loads(p.read_text())["AuthEvents"][0]
    assert ida == "ae-" + hashlib.sha256(
        ("alice\x1f" + json.dumps(item, sort_keys=True, ensure_ascii=False)).encode()).hexdigest()[:32]
    assert ida == ev_a2.column("event_id")[0].as_py() and ida != idb
    assert json.loads(ev_a.column("extra")[0].as_py())["Extra"] == "kept"


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ("  \n", "is empty"),
    ("index,Login Timestamp\n1,2\n", "is not JSON"),
    (json.dumps({"Username": "a", "EventType": "SignIn"}) + "\n", "the object has no AuthEvents"),
    ("[1, 2, 3]", "the JSON is an array"),
    ('{"AuthEvents": "none"}', "the JSON is AuthEvents is a string"),
    ('{"AuthEvents": [tru', "malformed JSON"),
    ('{"AuthEvents": [{"EventId": "a', "malformed JSON: Unterminated string starting at line 1; expected"),
])
def test_files_that_are_not_this_format(tmp_path, content, message):
    with pytest.raises(InputFormatError, match=message):
        list(READER.read(str(write(tmp_path, content)), ReaderOptions(username="alice")))


def test_later_documents_that_are_not_pages_are_quarantined(tmp_path):
    text = json.dumps(page(event(EventId="x1"))) + "\n[1, 2]\n" + json.dumps({"Other": 1}) + "\nnot json\n" + \
        json.dumps(page(event(EventId="x2"))) + "\n"
    _, ev, q = read_all(write(tmp_path, text))
    assert ev.column("event_id").to_pylist() == ["x1", "x2"]
    assert [(r["source_line"], r["reason"]) for r in q.to_pylist()] == [
        (2, "not an AuthEvents document: the JSON is an array"),
        (3, "not an AuthEvents document: the object has no AuthEvents array"),
        (4, "not JSON: expected another {\"AuthEvents\": [...]} document, found 'not json'"),
    ]


def test_gzip_small_batches_and_small_read_pieces_agree(tmp_path, monkeypatch):
    pages = [json.dumps(page(*[event(EventId=f"e{p}-{i}") for i in range(4)]), indent=2) for p in range(5)]
    text = "\n".join(pages) + "\n"
    plain = write(tmp_path, text)
    gz = write(tmp_path, gzip.compress(text.encode()), name="events.json.gz")
    b1, ev1, _ = read_all(plain, batch_rows=6)
    b2, ev2, _ = read_all(gz, batch_rows=6)
    assert ev1.equals(ev2)
    assert all(b.rows_read <= 9 for b in b1) and sum(b.rows_read for b in b1) == 20
    monkeypatch.setattr(auth_events, "_CHUNK", 64)  # documents straddle many reads; lines must not move
    _, ev3, _ = read_all(plain, batch_rows=6)
    assert ev3.equals(ev1)
    lines = text.splitlines()
    starts = [i for i, x in enumerate(lines, 1) if x == "    {"]  # each item opens on its own line
    assert ev1.column("source_line").to_pylist() == starts and len(starts) == 20


def test_sniff():
    assert READER.sniff(b'{\n    "AuthEvents": [\n')
    assert READER.sniff(b'{"AuthEvents": [], "NextToken": "x"}')
    assert not READER.sniff(b'{"Username": "a", "AuthEvents": []}')
    assert not READER.sniff(b"index,Login Timestamp\n")


def test_event_feedback_is_given_beside_the_events_row_for_row(tmp_path):
    """``ReadBatch.feedback``: Cognito's spelling whatever the case, FeedbackDate else the event's CreationDate."""
    doc = page(event(EventId="none"),
               event(EventId="dated", EventFeedback={"FeedbackValue": "Invalid", "Provider": "Admin",
                                                     "FeedbackDate": "2024-07-18T08:00:00Z"}),
               event(EventId="undated", EventFeedback={"FeedbackValue": "valid", "Provider": "USER"}),
               event(EventId="null", EventFeedback=None))
    batches, ev, q = read_all(write(tmp_path, json.dumps(doc)))
    assert q.num_rows == 0 and len(batches) == 1
    fb = batches[0].feedback
    assert fb.schema.field("feedback_date").type == pa.timestamp("us", tz="UTC")
    got = dict(zip(ev.column("event_id").to_pylist(),
                   [(r["feedback_value"], r["provider"], r["feedback_date"]) for r in fb.to_pylist()]))
    assert got == {"none": (None, None, None), "null": (None, None, None),
                   "dated": ("Invalid", "Admin", datetime(2024, 7, 18, 8, tzinfo=UTC)),
                   "undated": ("Valid", "User", datetime(2024, 7, 17, 17, 25, 55, 123000, tzinfo=UTC))}
    batches, _, _ = read_all(write(tmp_path, json.dumps(page(event())), "plain.json"))
    assert batches[0].feedback is None  # no item carries feedback


def test_event_feedback_that_cannot_be_recorded_quarantines_its_item(tmp_path):
    doc = page(event(EventId="ok", EventFeedback={"FeedbackValue": "Invalid", "Provider": "Admin"}),
               event(EventId="e1", EventFeedback={"FeedbackValue": "Maybe", "Provider": "Admin"}),
               event(EventId="e2", EventFeedback={"FeedbackValue": True, "Provider": "Robot"}),
               event(EventId="e3", EventFeedback={"Provider": "Admin", "FeedbackDate": 1e20}),
               event(EventId="e4", EventFeedback={"FeedbackValue": "Valid", "Provider": "User",
                                                  "FeedbackDate": "1999-12-31T23:59:59Z"}),
               event(EventId="e5", EventFeedback={}))
    batches, ev, q = read_all(write(tmp_path, json.dumps(doc, indent=2)))
    assert ev.column("event_id").to_pylist() == ["ok"] and batches[0].feedback.num_rows == 1
    assert q.column("reason").to_pylist() == [
        'EventFeedback.FeedbackValue must be Valid or Invalid, got "Maybe"',
        'EventFeedback.FeedbackValue must be Valid or Invalid, got a boolean true; '
        'EventFeedback.Provider must be Admin or User, got "Robot"',
        "EventFeedback.FeedbackValue is required (Valid or Invalid); "
        "EventFeedback.FeedbackDate must be an ISO 8601 time or epoch seconds, got 1e+20",
        "EventFeedback.FeedbackDate 1999-12-31T23:59:59Z is before 2000-01-01",
        "EventFeedback.FeedbackValue is required (Valid or Invalid); "
        "EventFeedback.Provider is required (Admin or User)",
    ]
