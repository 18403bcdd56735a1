"""Ingest fixes, end to end on real files and a real store: CSV lines ended by a carriage return alone (old Mac),
non-finite round-trip times in every format, quarantined rows that share file, line and raw text, and
ChallengeResponses values outside Cognito's enumerations."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from cli import app
from ingest.sources.tabular import iter_csv_records
from tests.storedb import q as rows
from tests.test_ingest import env  # noqa: F401 (the fixture: the test GeoIP databases, a store in tmp_path)
from tests.test_sources_rba_csv import GOOD1, GOOD2, HEADER as RBA_HEADER

runner = CliRunner()

MAPPING = {"columns": {"username": "user", "creation_date": "ts", "ip_address": "client_ip", "event_response": "ok"},
           "constants": {"event_type": "SignIn"},
           "values": {"event_response": {"1": "Pass", "0": "Fail"}}}


def ingest(*args, code=0):
    res = runner.invoke(app, ["ingest", *map(str, args), "--json"])
    assert res.exit_code == code, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["rows_read"] == out["events_added"] + out["duplicates"] + out["quarantined"]
    return out


def counts(out):
    return out["rows_read"], out["events_added"], out["duplicates"], out["quarantined"]


def mapping(env, **more):
    m = env / "mapping.yaml"
    doc = json.loads(json.dumps(MAPPING))
    for k, v in more.items():
        doc[k].update(v)
    m.write_text(yaml.safe_dump(doc))
    return m


def db(env, sql):
    return rows(env / "store.duckdb", sql)


# -- 1. CSV lines ended by a carriage return alone ------------------------------------------------------------


def test_a_csv_with_old_mac_line_ends_is_read_row_by_row(env):
    f = env / "f3.csv"
    f.write_bytes(b"user,ts,client_ip,ok\ra,2026-03-01T08:00:00Z,1.2.3.4,1\rb,2026-03-01T08:00:00Z,1.2.3.4,0\r")
    out = ingest(f, "--mapping", mapping(env))
    assert counts(out) == (2, 2, 0, 0)
    assert db(env, "SELECT username, event_response, source_line FROM events ORDER BY username") == [
        ("a", "Pass", 2), ("b", "Fail", 3)]
    assert db(env, "SELECT status, rows_read FROM ingest_runs") == [("completed", 2)]


def test_an_lf_header_with_cr_rows_and_a_bad_cr_row_keeps_each_row_and_its_line(env):
    f = env / "mixed.csv"
    f.write_bytes(b"user,ts,client_ip,ok\na,2026-03-01T08:00:00Z,1.2.3.4,1\rb,2026-03-01T08:00:00Z,1.2.3.4,7\r\n"
                  b"c,2026-03-01T08:00:00Z,1.2.3.4,0")
    out = ingest(f, "--mapping", mapping(env))
    assert counts(out) == (3, 2, 0, 1)
    assert db(env, "SELECT username, source_line FROM events ORDER BY username") == [("a", 2), ("c", 4)]
    assert db(env, "SELECT source_line, reason, raw FROM quarantine") == [
        (3, 'EventResponse "7" is not one of Pass, Fail, InProgress (or Success, Failure)',
         "b,2026-03-01T08:00:00Z,1.2.3.4,7")]


def test_an_rba_csv_with_old_mac_line_ends_is_detected_and_read(env):
    f = env / "rba.csv"
    f.write_bytes("\r".join([RBA_HEADER, GOOD1, GOOD2]).encode() + b"\r")
    out = ingest(f)  # detected by its header, which ends in a CR
    assert counts(out) == (2, 2, 0, 0)
    assert db(env, "SELECT event_id, source_line FROM events ORDER BY event_id") == [("10", 2), ("11", 3)]
    again = ingest(f, "--format", "rba-csv")
    assert counts(again) == (2, 0, 2, 0)


def test_cr_line_ends_split_the_same_across_read_blocks(tmp_path, monkeypatch):
    import ingest.sources.tabular as tabular

    recs = [f'{i},"v{i}\rw{i}",{i % 3}' if i % 5 == 0 else f"{i},plain{i},{i % 3}" for i in range(30)]
    recs[7] = "7,only-two"
    p = tmp_path / "cr.csv"
    p.write_bytes(("a,b,c\r" + "\r".join(recs) + "\r").encode())
    expected = list(iter_csv_records(str(p), 3, 7))
    for name, value in (("_FIRST_BLOCK", 5), ("_MIN_BLOCK", 3), ("_MAX_BLOCK", 11)):
        monkeypatch.setattr(tabular, name, value)  # blocks that end between a CR and what follows it
    small = list(iter_csv_records(str(p), 3, 7))

    def flat(chunks):
        return ([r for c in chunks for r in c.rows.to_pylist()], [x for c in chunks for x in c.lines.to_pylist()],
                [b for c in chunks for b in c.bad])

    assert flat(small) == flat(expected)
    got, lines, bad = flat(expected)
    assert len(got) == 29 and bad == [(11, "expected 3 columns, found 2", b"7,only-two")]
    assert got[0] == {"c0": "0", "c1": "v0\rw0", "c2": "0"}  # a CR inside quotes is the value's
    assert lines[:4] == [2, 4, 5, 6]
    assert lines[-1] == 37


# -- 2. non-finite round-trip times are quarantined in every format -------------------------------------------


def test_a_csv_round_trip_time_that_is_not_finite_quarantines_its_row(env):
    f = env / "rtt.csv"
    f.write_text("user,ts,client_ip,ok,rtt\n"
                 "a,2026-03-01T08:00:00Z,1.2.3.4,1,nan\n"
                 "b,2026-03-01T08:00:01Z,1.2.3.4,0,1e400\n"
                 "c,2026-03-01T08:00:02Z,1.2.3.4,0,-inf\n"
                 "d,2026-03-01T08:00:03Z,1.2.3.4,1,312.5\n"
                 "e,2026-03-01T08:00:04Z,1.2.3.4,1,fast\n")
    out = ingest(f, "--mapping", mapping(env, columns={"rtt_ms": "rtt"}))
    assert counts(out) == (5, 1, 0, 4)
    assert db(env, "SELECT username, rtt_ms FROM events") == [("d", 312.5)]
    assert db(env, "SELECT source_line, reason FROM quarantine ORDER BY source_line") == [
        (2, "rtt_ms (column 'rtt') must be a finite number: got 'nan'"),
        (3, "rtt_ms (column 'rtt') must be a finite number: got '1e400'"),
        (4, "rtt_ms (column 'rtt') must be a finite number: got '-inf'"),
        (6, "rtt_ms (column 'rtt') must be a number: got 'fast'")]


def test_a_parquet_round_trip_time_that_is_not_finite_quarantines_its_row(env):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = env / "rtt.parquet"
    pq.write_table(pa.table({"user": ["p", "q", "r"], "ts": ["2026-03-01T08:00:00Z"] * 3,
                             "client_ip": ["1.2.3.4"] * 3, "ok": ["1", "0", "1"],
                             "rtt": [float("nan"), float("-inf"), 12.5]}), f)
    out = ingest(f, "--mapping", mapping(env, columns={"rtt_ms": "rtt"}))
    assert counts(out) == (3, 1, 0, 2)
    assert db(env, "SELECT username, rtt_ms FROM events") == [("r", 12.5)]
    assert db(env, "SELECT source_line, reason FROM quarantine ORDER BY source_line") == [
        (1, "rtt_ms (column 'rtt') must be a finite number: got nan"),
        (2, "rtt_ms (column 'rtt') must be a finite number: got -inf")]


def test_an_rba_round_trip_time_that_is_not_finite_quarantines_its_row(env):
    def with_rtt(row: str, index: int, rtt: str) -> str:
        cells = row.split(",")
        cells[0], cells[3] = str(index), rtt
        return ",".join(cells)

    f = env / "rba.csv"
    f.write_text("\n".join([RBA_HEADER, with_rtt(GOOD2, 1, "NaN"), with_rtt(GOOD2, 2, "1e400"),
                            with_rtt(GOOD2, 3, "-Infinity"), with_rtt(GOOD2, 4, "512.5")]) + "\n")
    out = ingest(f)
    assert counts(out) == (4, 1, 0, 3)
    assert db(env, "SELECT event_id, rtt_ms FROM events") == [("4", 512.5)]
    assert db(env, "SELECT source_line, reason FROM quarantine ORDER BY source_line") == [
        (2, 'Round-Trip Time [ms] must be a finite number, got "NaN"'),
        (3, 'Round-Trip Time [ms] must be a finite number, got "1e400"'),
        (4, 'Round-Trip Time [ms] must be a finite number, got "-Infinity"')]
    assert db(env, "SELECT count(*) FROM labels") == [(2,)]  # the one event's two labels; none of the others


# -- 3. quarantined rows that share file, line and raw text are each kept -------------------------------------

BAD_ITEM = {"EventType": "Bad", "CreationDate": "2026-03-01T08:00:00Z", "EventResponse": "Pass"}
BAD_TYPE = 'EventType "Bad" is not one of SignIn, SignUp, ForgotPassword, PasswordChange, ResendCode'


def stored_quarantine(env):
    return db(env, "SELECT source_line, reason, raw FROM quarantine ORDER BY source_line, reason")


def test_two_equal_bad_auth_events_items_on_one_line_are_two_quarantine_rows(env):
    f = env / "f5.json"
    f.write_text(json.dumps({"AuthEvents": [BAD_ITEM, BAD_ITEM]}) + "\n")
    out = ingest(f, "--username", "t")
    assert counts(out) == (2, 0, 0, 2)
    raw = json.dumps(BAD_ITEM)
    assert stored_quarantine(env) == [(1, BAD_TYPE, raw), (1, BAD_TYPE, raw)]
    assert db(env, "SELECT quarantined FROM ingest_runs") == [(2,)]
    again = ingest(f, "--username", "t")  # nothing twice
    assert counts(again) == (2, 0, 0, 2)
    assert db(env, "SELECT count(*) FROM quarantine") == [(2,)]


def test_equal_bad_items_of_a_line_split_between_batches_keep_their_ids(env):
    f = env / "page.json"
    f.write_text(json.dumps({"AuthEvents": [BAD_ITEM] * 5}) + "\n")
    assert counts(ingest(f, "--username", "t", "--batch-rows", "2")) == (5, 0, 0, 5)
    assert db(env, "SELECT count(*), count(DISTINCT quarantine_id) FROM quarantine") == [(5, 5)]
    assert counts(ingest(f, "--username", "t", "--batch-rows", "3")) == (5, 0, 0, 5)
    assert counts(ingest(f, "--username", "t")) == (5, 0, 0, 5)
    assert db(env, "SELECT count(*) FROM quarantine") == [(5,)]  # other batches, the same ids


def test_cloudwatch_envelopes_on_one_line_with_equal_bad_log_events_keep_every_row(env):
    from tests.test_sources_cognito_user_activity import line as activity_line

    def envelope(event_id):
        return json.dumps({"messageType": "DATA_MESSAGE", "logEvents": [
            {"id": "1", "timestamp": 1, "message": "not json"},
            {"id": "2", "timestamp": 1, "message": activity_line(eventId=event_id)},
            {"id": "3", "timestamp": 1, "message": "not json"}]})

    f = env / "cw.jsonl"
    f.write_text(envelope("cw-a") + envelope("cw-b") + "\n")
    out = ingest(f, "--format", "cognito-user-activity")
    assert counts(out) == (6, 2, 0, 4)
    got = stored_quarantine(env)
    assert len(got) == 4 and {(ln, raw) for ln, _, raw in got} == {(1, "not json")}
    assert db(env, "SELECT count(DISTINCT quarantine_id) FROM quarantine") == [(4,)]
    assert counts(ingest(f, "--format", "cognito-user-activity")) == (6, 0, 2, 4)
    assert db(env, "SELECT count(*) FROM quarantine") == [(4,)]


def test_the_first_of_equal_rows_keeps_the_id_riskgate_gave_it_before():
    from ingest.sources.base import QuarantineIds, quarantine_id, quarantine_table

    t = quarantine_table("cognito-auth-events", "/x/f5.json.gz", [1, 1, 2], ["r", "r", "r"], ["raw", "raw", "raw"])
    ids = QuarantineIds()(t).column("quarantine_id").to_pylist()
    assert ids[0] == quarantine_id("cognito-auth-events", "f5.json", 1, "raw")  # the id of stores made before
    assert ids[2] == quarantine_id("cognito-auth-events", "f5.json", 2, "raw")
    assert len(set(ids)) == 3


# -- 4. ChallengeResponses values are Cognito's ---------------------------------------------------------------

SMS = 'ChallengeResponses[0].ChallengeName "Sms" is not one of Password, Mfa'
MAYBE_AT_1 = 'ChallengeResponses[1].ChallengeResponse "Maybe" is not one of Success, Failure'
GOOD_JSONL = {"Username": "u", "EventType": "SignIn", "EventResponse": "Pass", "CreationDate": "2026-03-01T08:00:00Z"}


def test_a_challenge_value_out_of_cognitos_quarantines_a_riskgate_json_line(env):
    f = env / "c.jsonl"
    ok = [{"ChallengeName": "Password", "ChallengeResponse": "Success"}, {"ChallengeName": "Mfa",
                                                                          "ChallengeResponse": "Failure"}]
    f.write_text("\n".join(json.dumps({**GOOD_JSONL, "EventId": i, "ChallengeResponses": ch}) for i, ch in [
        ("c1", [{"ChallengeName": "Sms", "ChallengeResponse": "Maybe"}]),
        ("c2", [ok[0], {"ChallengeName": "Mfa", "ChallengeResponse": "Maybe"}]),
        ("c3", ok)]) + "\n")
    out = ingest(f)
    assert counts(out) == (3, 1, 0, 2)
    assert db(env, "SELECT source_line, reason FROM quarantine ORDER BY source_line") == [
        (1, SMS + '; ChallengeResponses[0].ChallengeResponse "Maybe" is not one of Success, Failure'),
        (2, MAYBE_AT_1)]
    res = runner.invoke(app, ["events", "u"])
    assert res.exit_code == 0, res.output
    assert [e["EventId"] for e in json.loads(res.stdout)["AuthEvents"]] == ["c3"]


def test_a_challenge_value_out_of_cognitos_quarantines_an_auth_events_item(env):
    f = env / "t.json"
    good = {"EventId": "ae1", "EventType": "SignIn", "CreationDate": "2026-03-01T08:00:00Z", "EventResponse": "Pass",
            "ChallengeResponses": [{"ChallengeName": "Password", "ChallengeResponse": "Success"}]}
    bad = {**good, "EventId": "ae2", "ChallengeResponses": [{"ChallengeName": "Sms", "ChallengeResponse": "Success"}]}
    f.write_text(json.dumps({"AuthEvents": [good, bad]}, indent=2) + "\n")
    out = ingest(f, "--username", "t")
    assert counts(out) == (2, 1, 0, 1)
    assert db(env, "SELECT reason FROM quarantine") == [(SMS,)]


def test_a_challenge_value_out_of_cognitos_quarantines_a_user_activity_record(env):
    from tests.test_sources_cognito_user_activity import line as activity_line

    f = env / "ua.jsonl"
    f.write_text("\n".join([
        activity_line(eventId="ua-1"),
        activity_line(eventId="ua-2", challenges=[{"challengeName": "Password", "challengeResponse": "Success"},
                                                 {"challengeName": "Mfa", "challengeResponse": "Maybe"}]),
        activity_line(eventId="ua-3", challenges="Password:Success, Sms:Success")]) + "\n")
    out = ingest(f)
    assert counts(out) == (3, 1, 0, 2)
    assert db(env, "SELECT source_line, reason FROM quarantine ORDER BY source_line") == [
        (2, MAYBE_AT_1), (3, 'ChallengeResponses[1].ChallengeName "Sms" is not one of Password, Mfa')]


def test_the_service_refuses_a_challenge_value_out_of_cognitos(tmp_path_factory, tmp_path):
    import httpx

    from tests.service_support import Service, copy_store, headers, rest_events, trained_base

    base = trained_base(tmp_path_factory)
    store = copy_store(base, tmp_path / "s.duckdb")
    ev = rest_events(base)[0]
    with Service(store) as svc:
        r = httpx.post(svc.url + "/v1/evaluate", headers=headers(), timeout=30, json={
            **ev, "ChallengeResponses": [{"ChallengeName": "Sms", "ChallengeResponse": "Success"}]})
        assert r.status_code == 422, r.text
        assert r.json()["detail"] == [{"loc": "", "msg": SMS, "type": "quarantined"}]
        r = httpx.post(svc.url + "/v1/evaluate", headers=headers(), timeout=30, json={
            **ev, "ChallengeResponses": [{"ChallengeName": "Password", "ChallengeResponse": "Success"}]})
        assert r.status_code == 200, r.text
