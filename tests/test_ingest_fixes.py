"""Ingest fixes, end to end on real files and a real store: epoch times out of range, labels of rows that did
not become events, empty inputs, byte-order marks, non-finite round-trip times."""

from __future__ import annotations

import copy
import gzip
import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from cli import app
from ingest import pipeline, store
from ingest.enrich import Enricher
from ingest.one import canonical
from ingest.sources import riskgate_jsonl
from ingest.sources.base import LineBatch, ReaderOptions
from risk.feedback import ATTACK_LABEL_SQL
from tests.test_ingest import env  # noqa: F401 (the fixture: the test GeoIP databases, a store in tmp_path)
from tests.storedb import q as rows
from tests.test_sources_cognito_user_activity import RECORD as ACTIVITY
from tests.test_sources_rba_csv import GOOD1, GOOD2, HEADER as RBA_HEADER

runner = CliRunner()

E = '{"EventId":"b1","Username":"alice","EventType":"SignIn","EventResponse":"Pass","CreationDate":"2026-03-01T08:15:02Z"}'
FUTURE = "CreationDate is in the future (an epoch number out of the range of times)"
PAST = "CreationDate is before 2000-01-01 (an epoch number out of the range of times)"
FINITE = "RoundTripTimeMs must be a finite number"
BOM = b"\xef\xbb\xbf"


def ingest(*args):
    res = runner.invoke(app, ["ingest", *map(str, args), "--json"])
    assert res.exit_code in (0, 1), res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["rows_read"] == out["events_added"] + out["duplicates"] + out["quarantined"]
    return out, res


def counts(out):
    return out["rows_read"], out["events_added"], out["duplicates"], out["quarantined"]


def line(event_id: str, created: str) -> str:
    """A riskgate JSON line whose CreationDate is the JSON text ``created``."""
    return (f'{{"EventId":"{event_id}","Username":"alice","EventType":"SignIn","EventResponse":"Pass",'
            f'"CreationDate":{created}}}')


def quarantine(env):
    return rows(env / "store.duckdb", "SELECT source_line, reason FROM quarantine ORDER BY source_line")


# -- 1. epoch times out of the range of times: the row alone is quarantined ----------------------------------

@pytest.mark.parametrize("created, reason", [
    ("1e20", FUTURE),
    ("-1e20", PAST),
    ("1e308", FUTURE),
    ("99999999999999999999999", FUTURE),
    ('"9999999999999999"', FUTURE),  # epoch milliseconds as a digit string (the fast way)
])
def test_an_epoch_creation_date_out_of_range_quarantines_only_its_row(env, created, reason):
    f = env / "big.jsonl"
    f.write_text("\n".join([E, line("b2", created), line("b3", '"2026-03-01T09:00:00Z"')]) + "\n")
    out, res = ingest(f)
    assert res.exit_code == 0, res.output
    assert counts(out) == (3, 2, 0, 1)
    assert quarantine(env) == [(2, reason)]
    assert rows(env / "store.duckdb", "SELECT event_id FROM events ORDER BY event_id") == [("b1",), ("b3",)]


def test_epoch_times_out_of_range_in_the_other_formats_quarantine_their_rows(tmp_path):
    """cognito-user-activity's eventTimestamp and the generic CSV / Parquet epochs share the conversion."""
    recs = []
    for i, ts in enumerate(["1687297330677", 1e20, -1e20, "9999999999999999"]):
        r = copy.deepcopy(ACTIVITY)
        r["eventTimestamp"], r["message"]["eventId"] = ts, f"e-{i}"
        recs.append(json.dumps(r))
    activity = tmp_path / "activity.jsonl"
    activity.write_text("\n".join(recs) + "\n")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(yaml.safe_dump({"columns": {"username": "u", "creation_date": "t", "event_response": "r"},
                                       "constants": {"event_type": "SignIn"}}))
    table = tmp_path / "t.csv"
    table.write_text("u,t,r\nx,1700000000,Pass\ny,9999999999999999,Pass\nz,-9999999999999999,Pass\n")
    parquet = tmp_path / "t.parquet"
    pq.write_table(pa.table({"u": ["a", "b", "c"], "t": [1.7e9, 1e20, float("-inf")], "r": ["Pass"] * 3}), parquet)
    expected = {
        "activity": ([activity], "auto", (4, 1, 3), [(2, FUTURE), (3, PAST), (4, FUTURE)]),
        "csv": ([table], "csv", (3, 1, 2), [(3, FUTURE), (4, PAST)]),
        "parquet": ([parquet], "parquet", (3, 1, 2), [(2, FUTURE), (3, PAST)]),
    }
    for name, (paths, fmt, want, reasons) in expected.items():
        con = store.connect(tmp_path / f"{name}.duckdb")
        try:
            r = pipeline.ingest_paths(con, [str(p) for p in paths], fmt=fmt,
                                      options=ReaderOptions(mapping=str(mapping)), enricher=Enricher(geo=None))
            assert not r.errors, (name, r.errors)
            assert (r.rows_read, r.events_added, r.quarantined) == want, name
            assert con.sql("SELECT source_line, reason FROM quarantine ORDER BY 1").fetchall() == reasons, name
        finally:
            con.close()


def test_the_inline_sql_path_refuses_an_epoch_out_of_range_instead_of_failing(tmp_path):
    """What the HTTP service's SQL path does (risk.inline): the reader's batch, then the enrichment."""
    records = [json.loads(E), {**json.loads(E), "EventId": "b2", "CreationDate": 1e20},
               {**json.loads(E), "EventId": "b3", "CreationDate": -1e20}]
    texts = [json.dumps(r) for r in records]
    lb = LineBatch(pa.array(range(1, 4), pa.int64()), pa.array(texts, pa.string()), [])
    con = store.scratch()
    try:
        batch = riskgate_jsonl.READER._batch(con, "inline", lb, ReaderOptions())
    finally:
        con.close()
    good, bad = Enricher(geo=None).run(batch.events, "riskgate-jsonl", "inline")
    assert good.column("event_id").to_pylist() == ["b1"]
    assert list(zip(bad.column("source_line").to_pylist(), bad.column("reason").to_pylist())) == [
        (2, FUTURE), (3, PAST)]


# -- 2. labels only for the events the ingest adds -----------------------------------------------------------

LABELLED = [
    '{"EventId":"l1","Username":"alice","EventType":"SignIn","EventResponse":"Pass",'
    '"CreationDate":"2026-03-01T08:15:02Z","Labels":{"is_account_takeover":false}}',
    '{"EventId":"l1","Username":"mallory","EventType":"SignIn","EventResponse":"Pass",'
    '"CreationDate":"2026-03-01T08:15:02Z","Labels":{"is_account_takeover":true}}',
    '{"EventId":"l2","Username":"alice","EventType":"Bogus","EventResponse":"Pass",'
    '"CreationDate":"2026-03-01T08:15:02Z","Labels":{"is_account_takeover":true}}',
    '{"EventId":"l3","Username":"bob","EventType":"SignIn","EventResponse":"Pass",'
    '"CreationDate":"2026-03-01T08:16:02Z","Labels":{"is_account_takeover":true,"attack_type":"targeted"}}',
]
LABELS = [("l1", "is_account_takeover", "false", "riskgate-jsonl"),
          ("l3", "attack_type", "targeted", "riskgate-jsonl"),
          ("l3", "is_account_takeover", "true", "riskgate-jsonl")]


def labels(db):
    return rows(db, "SELECT event_id, label, value, source FROM labels ORDER BY ALL")


@pytest.mark.parametrize("batch_rows", [1, 2, 122_880])
def test_rows_that_did_not_become_events_add_no_label(env, batch_rows):
    f = env / "lab.jsonl"
    f.write_text("\n".join(LABELLED) + "\n")
    out, _ = ingest(f, "--batch-rows", batch_rows)
    assert counts(out) == (4, 2, 1, 1)
    assert rows(env / "store.duckdb", "SELECT event_id, username FROM events ORDER BY 1") == [
        ("l1", "alice"), ("l3", "bob")]
    assert labels(env / "store.duckdb") == LABELS
    again, _ = ingest(f, "--batch-rows", batch_rows)  # re-ingesting adds nothing
    assert counts(again) == (4, 0, 3, 1)
    assert labels(env / "store.duckdb") == LABELS


def test_a_duplicate_of_an_event_stored_by_an_earlier_ingest_adds_no_label(env):
    first = env / "first.jsonl"
    first.write_text(LABELLED[0].replace(',"Labels":{"is_account_takeover":false}', "") + "\n")
    ingest(first)
    later = env / "later.jsonl"
    later.write_text(LABELLED[1] + "\n" + LABELLED[3] + "\n")
    out, _ = ingest(later)
    assert counts(out) == (2, 1, 1, 0)
    assert labels(env / "store.duckdb") == LABELS[1:]


def _with_labels(event_id: str, labels: str) -> str:
    return E.replace('"b1"', f'"{event_id}"')[:-1] + f',"Labels":{labels}}}'


@pytest.mark.parametrize("bad_row", [False, True])  # (a malformed row sends the batch the per-row way)
def test_inline_labels_null_is_no_label_and_booleans_follow_labels_load(env, bad_row):
    f = env / "lab.jsonl"
    f.write_text("\n".join([
        _with_labels("n1", '{"is_account_takeover":false,"attack_type":null}'),
        _with_labels("n2", '{"is_account_takeover":null,"is_attack_ip":null}'),
        _with_labels("n3", '{"is_account_takeover":" Yes ","attack_type":"brute_force"}'),
        _with_labels("n4", '{"is_account_takeover":0,"is_attack_ip":true,"score":0.5}'),
        _with_labels("x1", '{"is_account_takeover":false,"attack_type":false}'),
        _with_labels("x2", '{"is_account_takeover":false,"attack_type":3}'),
        _with_labels("x3", '{"is_account_takeover":"maybe"}'),
        _with_labels("x4", '{"is_account_takeover":2,"attack_type":["a"]}'),
    ] + (["{broken"] if bad_row else [])) + "\n")
    out, _ = ingest(f)
    assert counts(out) == (8 + bad_row, 4, 0, 4 + bad_row)
    assert labels(env / "store.duckdb") == [
        ("n1", "is_account_takeover", "false", "riskgate-jsonl"),
        ("n3", "attack_type", "brute_force", "riskgate-jsonl"),
        ("n3", "is_account_takeover", "true", "riskgate-jsonl"),
        ("n4", "is_account_takeover", "false", "riskgate-jsonl"),
        ("n4", "is_attack_ip", "true", "riskgate-jsonl"),
        ("n4", "score", "0.5", "riskgate-jsonl")]
    assert quarantine(env)[:4] == [
        (5, "Labels.attack_type must be a string or null, got a boolean"),
        (6, "Labels.attack_type must be a string or null, got 3"),
        (7, 'Labels.is_account_takeover must be true or false (or 1/0, yes/no, t/f), got "maybe"'),
        (8, "Labels.is_account_takeover must be true or false (or 1/0, yes/no, t/f), got 2; "
            "Labels.attack_type must be a string or null, got an array")]
    assert rows(env / "store.duckdb", f"SELECT count(*) FROM labels WHERE {ATTACK_LABEL_SQL}") == [(1,)]


def test_rba_rows_quarantined_at_enrichment_add_no_label(env):
    bad_ip = GOOD2.replace("2001:db8::1", "999.1.1.1").replace("11,", "12,", 1)
    f = env / "rba.csv"
    f.write_text("\n".join([RBA_HEADER, GOOD1, bad_ip, GOOD2]) + "\n")
    out, _ = ingest(f)
    assert counts(out) == (3, 2, 0, 1)
    assert quarantine(env) == [(3, 'IpAddress "999.1.1.1" is not an IPv4 or IPv6 address')]
    assert labels(env / "store.duckdb") == [
        ("10", "is_account_takeover", "false", "rba-dataset"), ("10", "is_attack_ip", "false", "rba-dataset"),
        ("11", "is_account_takeover", "true", "rba-dataset"), ("11", "is_attack_ip", "true", "rba-dataset")]


# -- 3. an empty line file is one error naming it --------------------------------------------------------------

@pytest.mark.parametrize("name, data", [
    ("empty.jsonl", b""),
    ("blank.jsonl", b"  \n\n\t\r\n"),
    ("bom.jsonl", BOM + b"\n"),
    ("empty.jsonl.gz", gzip.compress(b"", mtime=0)),
])
@pytest.mark.parametrize("fmt", ["riskgate-jsonl", "cognito-user-activity"])
def test_an_empty_file_given_as_a_line_format_is_one_error_and_exit_1(env, name, data, fmt):
    f = env / name
    f.write_bytes(data)
    good = env / "good.jsonl"
    good.write_text(E + "\n")
    out, res = ingest("--format", fmt, f)
    assert res.exit_code == 1
    assert counts(out) == (0, 0, 0, 0)
    assert f"{name}: is empty: expected " in res.stderr
    out, res = ingest("--format", "riskgate-jsonl", f, good)  # the other files are still ingested
    assert res.exit_code == 1 and counts(out) == (1, 1, 0, 0)


# -- 4. a UTF-8 byte-order mark is not part of the first line ---------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("fmt", ["auto", "riskgate-jsonl", "cognito-user-activity"])
def test_a_byte_order_mark_is_tolerated(env, fmt, gz):
    if fmt == "cognito-user-activity":
        data = "\n".join(json.dumps({**copy.deepcopy(ACTIVITY), "message": {**ACTIVITY["message"], "eventId": f"e-{i}"}})
                         for i in range(2))
    else:
        data = E + "\n" + E.replace('"b1"', '"b2"')
    raw = BOM + (data + "\n").encode()
    f = env / ("x.jsonl.gz" if gz else "x.jsonl")
    f.write_bytes(gzip.compress(raw) if gz else raw)
    args = [f] if fmt == "auto" else ["--format", fmt, f]
    out, res = ingest(*args)
    assert res.exit_code == 0, res.output
    assert counts(out) == (2, 2, 0, 0)
    assert rows(env / "store.duckdb", "SELECT source_line FROM events ORDER BY 1") == [(1,), (2,)]
    if fmt == "auto":  # (a user-activity file with a byte-order mark is detected too)
        act = env / "act.jsonl"
        act.write_bytes(BOM + json.dumps(ACTIVITY).encode() + b"\n")
        out, res = ingest(act)
        assert res.exit_code == 0 and counts(out) == (1, 1, 0, 0)


# -- 5. non-finite round-trip times are refused as ingest refuses them -------------------------------------------

@pytest.mark.parametrize("rtt", [float("inf"), float("-inf"), float("nan")])
def test_the_inline_path_refuses_a_non_finite_round_trip_time_with_ingests_reason(rtt):
    record = {**json.loads(E), "RoundTripTimeMs": rtt}
    enricher = Enricher(geo=None)
    assert canonical(record, enricher, source_format="riskgate-jsonl", source_file="inline", source_line=1) is None
    assert canonical({**record, "RoundTripTimeMs": 312}, enricher, source_format="riskgate-jsonl",
                     source_file="inline", source_line=1)["rtt_ms"] == 312.0
    lb = LineBatch(pa.array([1], pa.int64()), pa.array([json.dumps(record)], pa.string()), [])
    con = store.scratch()
    try:
        batch = riskgate_jsonl.READER._batch(con, "inline", lb, ReaderOptions())
    finally:
        con.close()
    assert batch.events.num_rows == 0
    assert batch.quarantine.column("reason").to_pylist() == [FINITE]


def test_ingest_quarantines_nan_and_infinity_round_trip_times(env):
    f = env / "rtt.jsonl"
    f.write_text("\n".join([E.replace("}", ',"RoundTripTimeMs":12}'),
                            E.replace('"b1"', '"b2"').replace("}", ',"RoundTripTimeMs":NaN}'),
                            E.replace('"b1"', '"b3"').replace("}", ',"RoundTripTimeMs":-Infinity}'),
                            E.replace('"b1"', '"b4"').replace("}", ',"RoundTripTimeMs":1e400}')]) + "\n")
    out, _ = ingest(f)
    assert counts(out) == (4, 1, 0, 3)
    assert quarantine(env) == [(2, FINITE), (3, FINITE), (4, FINITE)]
    stored = rows(env / "store.duckdb", "SELECT rtt_ms FROM events")
    assert stored == [(12.0,)] and all(math.isfinite(r[0]) for r in stored)


def test_a_country_given_by_name_is_its_iso_code_and_a_lookup_elsewhere_adds_no_place(env):
    """Cognito's export names the country ("France"); the features and reports key on the ISO code. It used to
    keep the lookup's code (GB for a London address) beside the source's name, with London's region, coordinates
    and zone: now the code is the name's, and a lookup in another country adds no place (its network stays)."""
    def record(eid, ip, city, country):
        r = copy.deepcopy(ACTIVITY)
        r["message"].update(eventId=eid, ipAddress=ip, city=city, country=country)
        return json.dumps(r)

    src = env / "ua.jsonl"
    src.write_text("\n".join([
        record("g1", "81.2.69.160", "Paris", "France"),           # the lookup: London, GB
        record("g2", "81.2.69.161", "", "united kingdom"),       # agrees (any case): the lookup fills the place
        record("g3", "81.2.69.162", "Seoul", "Korea, Republic of"),  # another spelling of a known country
        record("g4", "81.2.69.163", "Nowhere", "Atlantis"),      # a name no table knows: no code, no lookup place
    ]) + "\n")
    ingest(src)
    got = rows(env / "store.duckdb", "SELECT event_id, country_iso, country_name, region, city, latitude IS NOT NULL, "
                                     "time_zone, asn FROM events ORDER BY 1")
    assert got == [
        ("g1", "FR", "France", None, "Paris", False, None, 20712),
        ("g2", "GB", "united kingdom", "England", "London", True, "Europe/London", 20712),
        ("g3", "KR", "Korea, Republic of", None, "Seoul", False, None, 20712),
        ("g4", None, "Atlantis", None, "Nowhere", False, None, 20712),
    ]


def test_an_iso_country_that_the_lookup_contradicts_adds_no_place_from_it(env):
    """The RBA data set gives ISO codes; where the lookup puts the address in another country its region, city,
    coordinates and zone are not the event's."""
    src = env / "rba.csv"
    src.write_text(RBA_HEADER + "\n"
                   + "1,2020-02-03 12:43:30.772,-4324475583306591935,,81.2.69.160,FR,-,-,20712,"
                   "Mozilla/5.0,Chrome 79,Windows 10,desktop,True,False,False\n"
                   + "2,2020-02-03 12:44:30.772,-4324475583306591935,,81.2.69.161,GB,-,-,20712,"
                   "Mozilla/5.0,Chrome 79,Windows 10,desktop,True,False,False\n")
    ingest(src, "--format", "rba-csv")
    got = rows(env / "store.duckdb", "SELECT country_iso, region, city, latitude IS NOT NULL, time_zone FROM events "
                                     "ORDER BY source_line")
    assert got == [("FR", None, None, False, None), ("GB", "England", "London", True, "Europe/London")]


def test_a_truncated_gzip_keeps_its_whole_lines_before_the_break_and_names_it(env):
    """A .gz cut short (a copy interrupted): the lines before the break are ingested, the error names the last
    line read, and ingesting the whole file later adds the rest, nothing twice."""
    lines = [json.dumps({"EventId": f"t{i:05d}", "Username": f"u{i % 7}", "EventType": "SignIn",
                         "EventResponse": "Pass", "CreationDate": "2026-03-01T08:15:02Z", "Pad": f"{i:x}" * 9})
             for i in range(3000)]
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    whole, cut = env / "whole.jsonl.gz", env / "cut.jsonl.gz"
    whole.write_bytes(data)
    cut.write_bytes(data[: len(data) // 3])
    res = runner.invoke(app, ["ingest", str(cut), "--json"])
    assert res.exit_code == 1
    out = json.loads(res.stdout.strip().splitlines()[-1])
    kept = out["events_added"]
    assert 0 < kept < 3000 and out["rows_read"] == kept and out["quarantined"] == 0
    assert f"cannot read past line {kept}: Compressed file ended" in " ".join(res.stderr.split())
    assert rows(env / "store.duckdb", "SELECT min(event_id), max(event_id) FROM events") == [("t00000", f"t{kept - 1:05d}")]
    out, res = ingest(whole)
    assert res.exit_code == 0 and (out["events_added"], out["duplicates"]) == (3000 - kept, kept)



@pytest.mark.parametrize("fmt, name", [("riskgate-jsonl", "s.jsonl"), ("cognito-user-activity", "ua.jsonl"),
                                       ("rba-csv", "r.csv"), ("csv", "g.csv")])
def test_a_gzip_cut_anywhere_keeps_every_whole_line_gzip_reads_before_the_break(env, fmt, name):
    """In every format read as lines, a .gz cut at any point keeps as many rows as Python's gzip module
    decompresses whole lines before the break (the header apart), and the error names the last of them. (Cut in
    half, a riskgate-jsonl file kept 121 of its 176 whole lines, an RBA CSV none.)"""
    from ingest.synth import SynthConfig, synthesize
    from tests.test_ingest_batches import cut_points, gzip_whole_lines

    src = env / name
    synthesize(SynthConfig(users=40, days=10, seed=3), fmt, src)
    data = gzip.compress(src.read_bytes(), mtime=0)
    given = ["--format", fmt] + (["--mapping", str(src.with_suffix(".mapping.yaml"))] if fmt == "csv" else [])
    header = 1 if name.endswith(".csv") else 0
    for i, cut in enumerate(cut_points(data, 4)):
        f = env / f"cut{i}.{name}.gz"
        f.write_bytes(data[:cut])
        whole = gzip_whole_lines(data[:cut]).count(b"\n")
        res = runner.invoke(app, ["ingest", str(f), "--json", *given])
        assert res.exit_code == 1, res.output
        out = json.loads(res.stdout.strip().splitlines()[-1])
        assert out["rows_read"] == whole - header == out["events_added"] + out["duplicates"], (cut, out)
        assert f"cannot read past line {whole}: Compressed file ended" in " ".join(res.stderr.split()), cut

# -- a riskgate JSON-lines file cut in its first record; another format given as riskgate-jsonl ----------------

def test_json_lines_whose_first_record_was_cut_are_still_detected_as_riskgate_json_lines(env):
    """A log cut in the middle of a record (rotation): detection looked at the first line only, took the file for
    CSV and refused it ("the csv format needs a column-mapping file")."""
    f = env / "rotated.jsonl"
    f.write_text(E[40:] + "\n" + "\n".join(line(f"c{i}", f'"2026-03-01T09:0{i}:00Z"') for i in range(3)) + "\n")
    out, res = ingest(f)
    assert counts(out) == (4, 3, 0, 1)
    assert quarantine(env) == [(1, "malformed JSON: Expecting value at column 1")]


def test_another_format_given_as_riskgate_json_lines_is_refused_naming_it(env):
    """``--format riskgate-jsonl`` on a Cognito user-activity export quarantined every line (a junk row each)."""
    f = env / "activity.jsonl"
    f.write_text("\n".join(json.dumps({**copy.deepcopy(ACTIVITY), "message": {**ACTIVITY["message"], "eventId": f"e-{i}"}})
                           for i in range(5)) + "\n")
    res = runner.invoke(app, ["ingest", str(f), "--format", "riskgate-jsonl"])
    assert res.exit_code == 1  # as for any file that cannot be read (the others of the command are ingested)
    assert " ".join(res.stderr.split()).endswith(
        "activity.jsonl: is not riskgate JSON lines: no line of its first batch is an event, and it reads as "
        "cognito-user-activity (give --format cognito-user-activity, or leave --format out)"), res.stderr
    assert rows(env / "store.duckdb", "SELECT count(*) FROM quarantine") == [(0,)]
    out, res = ingest(f)  # detected, it reads
    assert counts(out) == (5, 5, 0, 0)


def test_the_default_pool_id_applies_to_every_format(env):
    """``--user-pool-id`` is the pool of events whose source gives none: the RBA CSV and generic CSV/Parquet
    readers left it out, and their events belonged to no pool."""
    rba = env / "rba.csv"
    rba.write_text("\n".join([RBA_HEADER, GOOD1, GOOD2]) + "\n")
    mine = env / "mine.jsonl"
    mine.write_text("\n".join([E, E.replace('"b1"', '"b2"').replace('"Username"', '"UserPoolId":"eu-west-1_Own","Username"')]) + "\n")
    for f in (rba, mine):
        out, res = ingest(f, "--user-pool-id", "eu-west-1_Default")
        assert res.exit_code == 0 and out["events_added"] == 2, res.output
    assert rows(env / "store.duckdb", "SELECT user_pool_id, count(*) FROM events GROUP BY 1 ORDER BY 1") == [
        ("eu-west-1_Default", 3), ("eu-west-1_Own", 1)]


# -- a column mapping's time format and enumerated constants are checked before anything is read ------------

@pytest.mark.parametrize("change, message", [
    ({"time_format": "%Y-%m-%d %Q"}, "time_format: '%Y-%m-%d %Q' is not a strptime format DuckDB reads: "
                                     "Unrecognized format for strftime/strptime: %Q"),
    ({"constants": {"event_type": "Login"}}, "constants.event_type must be one of SignIn, SignUp, ForgotPassword, "
                                             "PasswordChange, ResendCode, got 'Login'"),
])
def test_a_bad_time_format_or_event_type_constant_refuses_the_mapping_before_reading(env, change, message):
    data = env / "t.csv"
    data.write_text("user,ts,ok\na,2026-06-01 10:00:00,1\nb,2026-06-01 11:00:00,0\n")
    mapping = env / "m.yaml"
    mapping.write_text(yaml.safe_dump({"columns": {"username": "user", "creation_date": "ts", "event_response": "ok"},
                                       "constants": {"event_type": "SignIn"}, "time_format": "%Y-%m-%d %H:%M:%S",
                                       "values": {"event_response": {"1": "Pass", "0": "Fail"}}, **change}))
    res = runner.invoke(app, ["ingest", str(data), "--mapping", str(mapping), "--json"])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip() == f"error: {mapping}: invalid column mapping: {message}"
    db = env / "store.duckdb"
    assert not db.exists() or rows(db, "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM quarantine)") == [(0,)]


@pytest.mark.parametrize("text, message", [
    (None, "cannot read the mapping file"),
    ("{columns: [user\n", "2: not valid YAML or JSON: while parsing a flow sequence: expected ',' or ']', but got "
                           "'<stream end>' (column 1)"),
    ("- a\n", "a mapping file must be an object"),
])
def test_a_mapping_file_that_cannot_be_read_is_refused_in_one_line_before_the_store_is_made(env, text, message):
    data = env / "t.csv"
    data.write_text("user,ts,ok\na,2026-06-01 10:00:00,1\n")
    mapping = env / "m.yaml"
    if text is not None:
        mapping.write_text(text)
    res = runner.invoke(app, ["ingest", str(data), "--mapping", str(mapping)])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith(f"error: {mapping}:") and message in res.stderr
    assert res.stderr.count("\n") == 1, res.stderr  # one line: PyYAML's own message spans five, quoting the text
    assert not (env / "store.duckdb").exists()


def test_a_password_in_an_ingested_row_is_never_stored(env):
    """A row shaped like /v1/evaluate's body (``Password`` included) kept the password in the event's extra JSON,
    and in the quarantine row's raw text when the row was bad."""
    secret = "S3cretPlainMarker!42"
    good = E.replace('"Username"', f'"Password":"{secret}","Note":"kept","Username"')
    nested = line("b2", '"2026-03-01T09:00:00Z"').replace('"Username"', f'"Meta":{{"PASSWORD":"{secret}","k":1}},"Username"')
    bad = line("b3", '"not a time"').replace('"Username"', f'"password":"{secret}","Username"')
    f = env / "pw.jsonl"
    f.write_text("\n".join([good, nested, bad]) + "\n")
    out, _ = ingest(f)
    assert counts(out) == (3, 2, 0, 1)
    db = env / "store.duckdb"
    assert rows(db, "SELECT event_id, extra FROM events ORDER BY event_id") == [
        ("b1", '{"Note":"kept"}'), ("b2", '{"Meta":{"k":1}}')]
    [(raw,)] = rows(db, "SELECT raw FROM quarantine")
    assert secret not in raw and '"password":"[redacted]"' in raw
    assert secret.encode() not in (env / "store.duckdb").read_bytes()


def test_a_password_under_an_escaped_name_or_as_an_object_is_redacted_in_quarantine_too(env):
    """The raw text of a quarantined row kept the password when its member's name was written with a JSON escape
    (``Pass\\u0077ord``: JSON reads it as Password) or its value was an object or array."""
    secrets = ["escaped-secret-1", "obj-secret-2", "list-secret-3", "cut-secret-4"]
    bad = [line("q1", '"not a time"').replace('"Username"', f'"Pass\\u0077ord":"{secrets[0]}","Username"'),
           line("q2", '"not a time"').replace('"Username"', f'"Password":{{"value":"{secrets[1]}","n":[1,"}}"]}},'
                                                            '"Username"'),
           line("q3", '"not a time"').replace('"Username"', f'"x":{{"PASSWORD":["{secrets[2]}",{{"a":1}}]}},"Username"'),
           '{"EventId":"q4","Username":"alice","password":{"v":"' + secrets[3]]
    f = env / "pw2.jsonl"
    f.write_text("\n".join(bad) + "\n")
    out, _ = ingest(f)
    assert counts(out) == (4, 0, 0, 4)
    db = env / "store.duckdb"
    raws = [r[0] for r in rows(db, "SELECT raw FROM quarantine ORDER BY source_line")]
    assert raws[0].startswith('{"EventId":"q1","Pass\\u0077ord":"[redacted]","Username":"alice"')
    assert raws[1].startswith('{"EventId":"q2","Password":"[redacted]","Username":"alice"')
    assert raws[2].startswith('{"EventId":"q3","x":{"PASSWORD":"[redacted]"},"Username":"alice"')
    assert raws[3] == '{"EventId":"q4","Username":"alice","password":"[redacted]"'
    for secret in secrets:
        assert secret.encode() not in db.read_bytes()


def test_a_raw_text_cut_off_after_a_backslash_or_full_of_escaped_quotes_is_redacted_and_quarantined(env):
    """The password scanner crashed (AttributeError: the whole ingest failed) on a line ending in a backslash
    inside a string, and took time quadratic in a line of escaped quotes (a User-Agent is whatever the client sends:
    seconds to hours per line). One pass now, string by string."""
    from ingest.sources.base import redact_passwords

    cut = ('{"Username":"alice","EventType":"SignIn","EventResponse":"Pass","CreationDate":"2026-01-01T00:00:00Z",'
           '"Password":"hunter2\\')
    hostile = line("h1", '"not a time"').replace('"Username"', '"Note":"' + '\\"' * 100_000 + '","Username"')
    f = env / "cut.jsonl"
    f.write_text("\n".join([E, cut, hostile]) + "\n")
    out, res = ingest(f)
    assert res.exit_code == 0 and counts(out) == (3, 1, 0, 2), res.output
    raws = [r[0] for r in rows(env / "store.duckdb", "SELECT raw FROM quarantine ORDER BY source_line")]
    assert raws[0].endswith('"Password":"[redacted]"') and "hunter2" not in raws[0]
    assert raws[1].startswith('{"EventId":"h1","Note":"\\"\\"')
    assert redact_passwords('{"password":{"a":"b\\') == '{"password":"[redacted]"'
    assert redact_passwords('{"k":"a\\\n","password":"s"}') == '{"k":"a\\\n","password":"[redacted]"}'


def test_a_password_in_a_string_that_is_json_text_is_never_stored(env):
    """A field holding JSON as text (a logged request body: ``"body": "{\\"password\\": …}"``) kept the password in
    clear, in the event's extra and in a quarantined row's raw text, and the id derived from such a row was the
    SHA-256 of a line holding it. Such a string is read as JSON (strings in it that are JSON too, escaped names)."""
    import hashlib

    secrets = ["in-body-1", "escaped-2", "deeper-3", "raw-4", "raw-escaped-5", "raw-deeper-6"]

    def body(a, b, c):  # JSON text with a password, and a string in it that is JSON text with two more
        deeper = json.dumps({"k": [json.dumps({"PASSWORD": c})]}).replace('"k"', '"Pass\\u0077ord":"' + b + '","k"')
        return json.dumps({"user": "alice", "password": a, "x": deeper})

    event = {"Username": "alice", "EventType": "SignIn", "EventResponse": "Fail",
             "CreationDate": "2026-03-01T08:00:00Z", "body": body(*secrets[:3]), "plain": '{"k": 1}'}
    good = json.dumps(event, separators=(",", ":"))
    bad = json.dumps({**event, "EventId": "q1", "CreationDate": "not a time", "body": body(*secrets[3:])},
                     separators=(",", ":"))
    f = env / "body.jsonl"
    f.write_text(good + "\n" + bad + "\n")
    out, _ = ingest(f)
    assert counts(out) == (2, 1, 0, 1)
    db = env / "store.duckdb"
    [(event_id, extra)] = rows(db, "SELECT event_id, extra FROM events")
    kept = json.loads(extra)
    assert json.loads(kept["body"]) == {"user": "alice", "x": '{"k":["{}"]}'}
    assert kept["plain"] == '{"k": 1}'  # JSON text without a password: left as written
    assert event_id != "rg-" + hashlib.sha256(good.encode()).hexdigest()[:32]  # keyed: the row carried a password
    [(raw,)] = rows(db, "SELECT raw FROM quarantine")
    inner = json.loads(json.loads(raw)["body"])
    assert inner["password"] == "[redacted]" and inner["user"] == "alice"
    assert json.loads(inner["x"]) == {"Password": "[redacted]", "k": ['{"PASSWORD": "[redacted]"}']}
    for secret in secrets:
        assert secret.encode() not in db.read_bytes(), secret


def test_every_spelling_of_a_password_in_json_text_is_redacted_and_no_such_text_breaks_the_ingest(env):
    r"""A review of the first version: a password in JSON text under an escaped name (``\u0070assword``), quoted with
    ``\u0022``, with an escaped blank in its name, in a member's name, cut off after a backslash or inside ``\u00``, or
    in a label's string value was kept in clear; JSON text nested 3,000 deep (a label, or an extra mentioning a
    password) crashed the whole ingest (RecursionError); a lone surrogate in such text refused the whole file; and a
    line of backslashes took time quadratic in its length (a minute for 160 KB)."""
    good = {"EventId": "g1", "Username": "a", "EventType": "SignIn", "EventResponse": "Pass",
            "CreationDate": "2026-03-01T08:00:00Z"}
    q = '{"EventId":"u%d","Username":"a","EventType":"SignIn","EventResponse":"Pass","CreationDate":"bad",'
    secrets = ["esc-secret", "secret-u22", "secret-tab", "secret-name", "secret-cut", "secret-cutu", "label-secret",
               "deep-secret", "hunter2"]
    lines = [json.dumps(good),
             json.dumps(dict(good, EventId="x1", body='{"\\u0070assword": "esc-secret"}')),
             json.dumps(dict(good, EventId="x2", note="password reset", body="[" * 3000 + "]" * 3000,
                             Labels={"req": json.dumps({"password": "label-secret"}),
                                     "deep": {"x": "[" * 3000 + "]" * 3000}})),
             json.dumps(dict(good, EventId="x3", body="[" * 3000 + '{"password": "deep-secret"}' + "]" * 3000)),
             q % 1 + '"body":"{\\u0022password\\u0022:\\u0022secret-u22\\u0022}"}',
             q % 2 + '"body":"{\\"password\\\\t\\": \\"secret-tab\\"}"}',
             q % 3 + '"{\\"password\\": \\"secret-name\\"}": 1}',
             q % 6 + '"body":"{\\"password\\":\\"hunter2\\",\\"x\\":\\"\\ud800\\"}"}',
             json.dumps(dict(good, EventId="u7", CreationDate="bad", a="\\" * 200_000 + '"x')),
             q % 4 + '"body":"{\\"password\\": \\"secret-cut\\',
             q % 5 + '"body":"{\\"password\\": \\"secret-cutu\\u00']
    f = env / "spellings.jsonl"
    f.write_text("\n".join(lines) + "\n")
    out, res = ingest(f)
    assert res.exit_code == 0 and counts(out) == (11, 4, 0, 7), res.output
    db = env / "store.duckdb"
    extras = dict(rows(db, "SELECT event_id, extra FROM events"))
    assert json.loads(extras["x1"]) == {"body": "{}"}
    assert json.loads(extras["x3"]) == {"body": "[redacted]"}  # too deep to look into, and it names a password
    assert json.loads(extras["x2"])["body"] == "[" * 3000 + "]" * 3000  # too deep, but no password: as written
    assert dict(rows(db, "SELECT label, value FROM labels"))["req"] == "{}"
    raws = [r[0] for r in rows(db, "SELECT raw FROM quarantine ORDER BY source_line")]
    assert len(raws) == 7 and sum("[redacted]" in r for r in raws) == 6, raws
    data = db.read_bytes()
    for secret in secrets:
        assert secret.encode() not in data, secret


def test_redacting_json_text_inside_a_string_keeps_everything_else_as_written():
    from ingest.sources.base import redact_passwords

    same = '{"a":"{\\"k\\": \\"v\\"}","b":"say \\"password\\" please","c":"{\\"password\\" broken"}'
    assert redact_passwords(same) == same  # no member named password in a JSON text: nothing changes
    assert (redact_passwords('{"a":"{\\"user\\": \\"x\\", \\"password\\": \\"s\\"}","b":1}')
            == '{"a":"{\\"user\\": \\"x\\", \\"password\\": \\"[redacted]\\"}","b":1}')
    # a text cut off inside such a string stays cut off, its password redacted
    assert redact_passwords('{"a":"{\\"password\\": \\"sec') == '{"a":"{\\"password\\": \\"[redacted]\\"'


def test_the_labels_of_a_row_whose_id_is_keyed_stay_with_it(env):
    """The keyed id replaced the reader's id after the labels were made with it: the label of every row carrying a
    password (credential stuffing's rows) was lost."""
    base = '{"Username":"eve","EventType":"SignIn","EventResponse":"Fail","CreationDate":"2026-03-01T08:0%dZ"%s}'
    f = env / "lab.jsonl"
    f.write_text(base % (0, ',"Labels":{"is_account_takeover":true}') + "\n"
                 + base % (1, ',"Password":"hunter2","Labels":{"is_account_takeover":true}') + "\n")
    out, _ = ingest(f)
    assert counts(out) == (2, 2, 0, 0)
    assert rows(env / "store.duckdb", "SELECT count(*) FROM labels l JOIN events e USING (event_id)") == [(2,)]


def test_an_id_derived_from_a_row_with_a_password_is_keyed_by_the_store(env):
    """A row without EventId gets an id from its content; with a password in it, the SHA-256 of that content was
    an offline oracle for the password (whoever saw the id and knew the rest of the row could test guesses). The
    id is now an HMAC under the store's own key: one per row in a store (ingesting again adds nothing; attempts
    differing only in the password stay two), different in another store, and a row without a password keeps its
    plain SHA-256 id. For every format that derives ids: riskgate JSON lines, AdminListUserAuthEvents output,
    generic CSV."""
    import hashlib

    def sha(text: str, prefix: str = "rg-") -> str:
        return prefix + hashlib.sha256(text.encode()).hexdigest()[:32]

    base = '{"Username":"eve","EventType":"SignIn","EventResponse":"Fail","CreationDate":"2026-03-01T08:00:00Z"'
    lines = [base + ',"Password":"Tr0ub4dor&3"}', base + ',"Password":"hunter2"}', base + ',"Pass\\u0077ord":"x1"}',
             base + ',"ContextData":{"IpAddress":"10.0.0.1","ServerName":"a","ServerPath":"/","HttpHeaders":[],'
                    '"password":"in-context"}}',
             base.replace("08:00", "08:05") + "}"]
    jl = env / "p.jsonl"
    jl.write_text("\n".join(lines) + "\n")
    ae = env / "p.json"
    item = {"EventType": "SignIn", "CreationDate": "2026-03-01T09:00:00Z", "EventResponse": "Fail"}
    ae.write_text(json.dumps({"AuthEvents": [{**item, "Password": "pw-one"}, {**item, "Password": "pw-two"}, item]}))
    csvf = env / "p.csv"
    csvf.write_text("user,ts,ok,password\nzed,2026-03-01T10:00:00Z,0,pw-a\nzed,2026-03-01T10:00:00Z,0,pw-b\n")
    mapping = env / "m.yaml"
    mapping.write_text("columns: {username: user, creation_date: ts, event_response: ok}\n"
                       "constants: {event_type: SignIn}\nvalues: {event_response: {'0': Fail}}\n")
    seen = []
    for name in ("one.duckdb", "two.duckdb"):
        db = env / name
        for args in ((jl,), (ae, "--username", "ann"), (csvf, "--mapping", mapping)):
            out, _ = ingest(*args, "--db", db)
            assert out["events_added"] == out["rows_read"] and out["quarantined"] == 0, (args, out)
            again, _ = ingest(*args, "--db", db)
            assert again["duplicates"] == again["rows_read"] and again["events_added"] == 0
        ids = dict(rows(db, "SELECT username || ' ' || strftime(creation_date, '%H:%M') || ' ' || coalesce(extra, ''), "
                            "list(event_id ORDER BY event_id) FROM events GROUP BY 1"))
        assert [(k.split()[0], len(v)) for k, v in sorted(ids.items())] == [("ann", 3), ("eve", 4), ("eve", 1),
                                                                            ("zed", 2)], ids
        all_ids = {i for v in ids.values() for i in v}
        assert sha(lines[4]) in all_ids  # no password: the plain SHA-256, as before
        assert not all_ids & {sha(x) for x in lines[:4]}  # with a password: not the SHA-256 of the line
        assert all(x.startswith(("rg-", "ae-", "row-")) and len(x.split("-", 1)[1]) == 32 for x in all_ids)
        assert b"Tr0ub4dor&3" not in db.read_bytes() and b"pw-one" not in db.read_bytes()
        seen.append(all_ids)
    assert len(seen[0] & seen[1]) == 2  # in another store only the rows without a password keep their ids


def test_an_ipv4_mapped_trusted_proxy_range_is_used_by_ingest_and_an_ipv4_zone_is_quarantined(env):
    ctx = ',"ContextData":{"IpAddress":%s,"ServerName":"a","ServerPath":"/","HttpHeaders":[%s]}}'
    xff = '{"headerName":"X-Forwarded-For","headerValue":"81.2.69.160"}'
    f = env / "proxy.jsonl"
    f.write_text(E.replace("}", ctx % ('"203.0.113.5"', xff)) + "\n"
                 + E.replace('"b1"', '"b2"').replace("}", ctx % ('"1.1.1.1%eth0"', "")) + "\n")
    out, _ = ingest(f, "--trusted-proxy", "::ffff:203.0.113.0/120")
    assert counts(out) == (2, 1, 0, 1)
    db = env / "store.duckdb"
    assert rows(db, "SELECT reason FROM quarantine") == [('IpAddress "1.1.1.1%eth0" is not an IPv4 or IPv6 address',)]
    assert rows(db, "SELECT event_id, client_ip, ip_address FROM events") == [("b1", "81.2.69.160", "203.0.113.5")]


@pytest.mark.parametrize("address", ["", "   ", "\t"])
def test_context_data_with_a_blank_ip_address_is_quarantined(env, address):
    """ContextData requires its IpAddress: a blank one was stored as context data without an address, which no
    BlockedIPRangeList / SkippedIPRangeList entry can ever match (an application's bug would switch them off)."""
    with_context = E.replace("}", ',"ContextData":{"IpAddress":' + json.dumps(address)
                             + ',"ServerName":"a","ServerPath":"/","HttpHeaders":[]}}')
    f = env / "blank-ip.jsonl"
    f.write_text(with_context + "\n")
    out, _ = ingest(f)
    assert counts(out) == (1, 0, 0, 1)
    assert out["reasons"] == {"ContextData.IpAddress is required when ContextData is present": 1}


def test_label_values_follow_labels_loads_rules():
    """null and blank strings are no label (as a blank cell of a labels file); yes/no spellings are true/false."""
    pairs, reason = riskgate_jsonl.label_values(
        {"attack_type": "", "is_account_takeover": " ", "note": None, "is_attack_ip": 1, "x": "kept"})
    assert (pairs, reason) == ([("is_attack_ip", "1"), ("x", "kept")], None)
    assert riskgate_jsonl.label_values({"is_account_takeover": "YES"}) == ([("is_account_takeover", "true")], None)
    assert riskgate_jsonl.label_values({"attack_type": False})[1] == "Labels.attack_type must be a string or null, got a boolean"
