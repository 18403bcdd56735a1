"""`riskgate ingest` end to end on riskgate JSON lines: counts, enrichment, quarantine, idempotence."""

import gzip
import hashlib
import json

import pytest
from typer.testing import CliRunner

from cli import app
from tests.events_gen import UA, event, many, write_jsonl
from tests.geo_fixtures import build
from tests.storedb import q as rows

runner = CliRunner()


@pytest.fixture
def env(tmp_path, monkeypatch):
    city, asn = build(tmp_path)
    monkeypatch.setenv("RISKGATE_GEOIP_CITY", str(city))
    monkeypatch.setenv("RISKGATE_GEOIP_ASN", str(asn))
    monkeypatch.delenv("RISKGATE_TRUSTED_PROXIES", raising=False)
    monkeypatch.delenv("RISKGATE_CLIENT_IP_HEADER", raising=False)
    db = tmp_path / "store.duckdb"
    monkeypatch.setenv("RISKGATE_DB", str(db))
    return tmp_path


def ingest(*args):
    res = runner.invoke(app, ["ingest", *map(str, args), "--json"])
    assert res.exit_code in (0, 1), res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(out) == {"rows_read", "events_added", "duplicates", "quarantined", "reasons"}
    assert out["rows_read"] == out["events_added"] + out["duplicates"] + out["quarantined"]
    return out, res



def test_good_events_are_enriched_with_known_answers(env):
    f = env / "a.jsonl"
    write_jsonl(f, [event(0), event(4, ContextData={**event(4)["ContextData"], "EncodedData": "abc"})])
    out, _ = ingest(f)
    assert out == {"rows_read": 2, "events_added": 2, "duplicates": 0, "quarantined": 0, "reasons": {}}
    got = rows(env / "store.duckdb", """SELECT event_id, client_ip, ip_prefix, ip_version, country_iso, country_name, region,
        city, time_zone, asn, as_org, device_name, device_type, browser_family, os_family, device_fingerprint_source,
        geo_source, has_context_data, source_line, source_format FROM events ORDER BY event_id""")
    assert got[0] == ("ev-0000000", "81.2.69.160", "81.2.69.0/24", 4, "GB", "United Kingdom", "England", "London",
                      "Europe/London", 20712, "Andrews & Arnold Ltd", "Chrome 126, Windows 10", "Desktop", "Chrome",
                      "Windows", "headers", "lookup", True, 1, "riskgate-jsonl")
    assert got[1][:11] == ("ev-0000004", "2001:db8:1::5", "2001:db8:1::/48", 6, "DE", "Germany", "Berlin", "Berlin",
                           "Europe/Berlin", 64502, "Example DE v6")
    assert got[1][15] == "EncodedData"
    fp = rows(env / "store.duckdb", "SELECT device_fingerprint FROM events ORDER BY event_id")
    assert fp[0][0].startswith("hd-") and fp[1][0].startswith("ed-") and len(fp[0][0]) == 35


def test_reingesting_adds_nothing_and_gzip_is_read(env):
    f = env / "a.jsonl"
    write_jsonl(f, many(300) + ["{not json"])
    first, _ = ingest(f)
    assert (first["events_added"], first["quarantined"]) == (300, 1)
    gz = env / "a.jsonl.gz"
    gz.write_bytes(gzip.compress(f.read_bytes()))
    again, _ = ingest(gz)
    assert (again["rows_read"], again["events_added"], again["duplicates"], again["quarantined"]) == (301, 0, 300, 1)
    db = env / "store.duckdb"
    assert rows(db, "SELECT count(*), count(DISTINCT event_id) FROM events") == [(300, 300)]
    assert rows(db, "SELECT count(*) FROM quarantine") == [(1,)]  # the same bad row of the same input, once


def test_duplicates_inside_one_input_count_once(env):
    f = env / "a.jsonl"
    write_jsonl(f, [event(1), event(2), event(1)])
    out, _ = ingest(f)
    assert (out["events_added"], out["duplicates"]) == (2, 1)
    assert rows(env / "store.duckdb", "SELECT source_line FROM events WHERE event_id = 'ev-0000001'") == [(1,)]


BAD = [
    ("malformed JSON", '{"Username": "a", "EventType": ', "malformed JSON: Expecting value at column"),
    ("unterminated string", '{"Username": "a', "malformed JSON: Unterminated string starting at column 14"),
    ("wrong type", json.dumps(event(1, EventType=5)), "EventType must be a string, got a number"),
    ("wrong nested type", json.dumps(event(1, ContextData="10.0.0.1")), "ContextData must be an object, got a string"),
    ("missing required", json.dumps({k: v for k, v in event(1).items() if k != "Username"}), "Username is required"),
    ("missing ContextData part", json.dumps(event(1, ContextData={"IpAddress": "81.2.69.160"})),
     "ContextData.ServerName is required when ContextData is present"),
    ("invalid IP", json.dumps(event(1, ContextData={**event(1)["ContextData"], "IpAddress": "300.1.2.3"})),
     'IpAddress "300.1.2.3" is not an IPv4 or IPv6 address'),
    ("unknown event type", json.dumps(event(1, EventType="LogIn")),
     'EventType "LogIn" is not one of SignIn, SignUp, ForgotPassword, PasswordChange, ResendCode'),
    ("unknown response", json.dumps(event(1, EventResponse="Maybe")), 'EventResponse "Maybe" is not one of'),
    ("far future", json.dumps(event(1, CreationDate="2199-01-01T00:00:00Z")), "CreationDate 2199-01-01T00:00:00Z is in the future"),
    ("far past", json.dumps(event(1, CreationDate="1970-01-02T00:00:00Z")), "CreationDate 1970-01-02T00:00:00Z is before 2000-01-01"),
    ("not a time", json.dumps(event(1, CreationDate="yesterday")), "CreationDate is missing or not a time"),
    ("bad event id", json.dumps(event(1, EventId="a b/c")), 'EventId "a b/c" must be 1 to 50 characters'),
    ("100 KB header", json.dumps(event(1, ContextData={**event(1)["ContextData"], "HttpHeaders": [
        {"headerName": "User-Agent", "headerValue": UA}, {"headerName": "X-Junk", "headerValue": "x" * 100_000}]})),
     'header "X-Junk" is 100000 bytes, more than 16384'),
    ("header item of wrong type", json.dumps(event(1, ContextData={**event(1)["ContextData"], "HttpHeaders": [
        {"headerName": "User-Agent", "headerValue": 42}]})),
     "ContextData.HttpHeaders items must be objects with string headerName and headerValue"),
    ("a JSON array", "[1, 2, 3]", "not a JSON object: the line is a JSON array"),
    ("a JSON string", '"x"', "not a JSON object: the line is a JSON string"),
    ("a JSON number", "18446744073709551615", "not a JSON object: the line is a JSON number"),
    ("an infinite number", json.dumps(event(1, RoundTripTimeMs=7)).replace('"RoundTripTimeMs": 7', '"RoundTripTimeMs": 1e400'),
     "RoundTripTimeMs must be a finite number"),
]


@pytest.mark.parametrize("name, line, reason", BAD, ids=[b[0] for b in BAD])
def test_each_bad_row_is_quarantined_with_its_reason_and_line(env, name, line, reason):
    f = env / "bad.jsonl"
    write_jsonl(f, [event(100), line, event(101)])  # a bad row among good ones is quarantined, not the file
    out, _ = ingest(f)
    assert (out["rows_read"], out["events_added"], out["quarantined"]) == (3, 2, 1)
    q = rows(env / "store.duckdb", "SELECT source_file, source_line, reason, raw FROM quarantine")
    assert len(q) == 1
    src, line_no, got_reason, raw = q[0]
    assert src == str(f) and line_no == 2
    assert reason in got_reason, got_reason
    assert raw.startswith(line[:50])


def test_a_folder_stands_for_the_files_directly_in_it(env):
    folder = env / "exports"
    (folder / "old").mkdir(parents=True)
    write_jsonl(folder / "b.jsonl", [event(2), event(3)])
    write_jsonl(folder / "a.jsonl", [event(1)])
    write_jsonl(folder / ".partial.jsonl", [event(7)])  # hidden: an upload in progress, say
    write_jsonl(folder / "old" / "c.jsonl", [event(9)])  # subfolders are not read
    write_jsonl(env / "single.jsonl", [event(4)])
    out, _ = ingest(folder, env / "single.jsonl")
    assert (out["rows_read"], out["events_added"]) == (4, 4)
    assert rows(env / "store.duckdb", "SELECT source_file, count(*) FROM events GROUP BY ALL ORDER BY 1") == [
        (str(folder / "a.jsonl"), 1), (str(folder / "b.jsonl"), 2), (str(env / "single.jsonl"), 1)]
    (env / "empty").mkdir()
    (env / "empty" / ".keep").write_text("")
    write_jsonl(env / "more.jsonl", [event(5)])
    res = runner.invoke(app, ["ingest", str(env / "more.jsonl"), str(env / "empty")])
    assert res.exit_code == 2 and "empty: the folder holds no file to ingest" in res.output
    assert rows(env / "store.duckdb", "SELECT count(*) FROM events") == [(4,)]  # refused before anything was read


def test_non_utf8_bytes_are_quarantined_with_their_line(env):
    f = env / "bytes.jsonl"
    f.write_bytes(json.dumps(event(1)).encode() + b"\n" + b'{"Username": "\xff\xfe"}\n' + json.dumps(event(2)).encode() + b"\r\n")
    out, _ = ingest(f)
    assert (out["events_added"], out["quarantined"]) == (2, 1)
    assert rows(env / "store.duckdb", "SELECT source_line, reason FROM quarantine") == [
        (2, "not UTF-8: invalid byte at position 14")]


def test_garbage_forwarding_headers_never_override_ip_address(env):
    ctx = event(1)["ContextData"]
    f = env / "fwd.jsonl"
    write_jsonl(f, [
        event(1, ContextData={**ctx, "IpAddress": "10.0.0.5", "HttpHeaders": ctx["HttpHeaders"] + [
            {"headerName": "X-Forwarded-For", "headerValue": "81.2.69.160, 10.0.0.7"}]}),
        event(2, ContextData={**ctx, "IpAddress": "10.0.0.5", "HttpHeaders": ctx["HttpHeaders"] + [
            {"headerName": "X-Forwarded-For", "headerValue": "<script>, 81.2.69.160x"}]}),
        event(3, ContextData={**ctx, "IpAddress": "198.51.100.20", "HttpHeaders": ctx["HttpHeaders"] + [
            {"headerName": "x-forwarded-for", "headerValue": "81.2.69.160"}]}),
    ])
    out, _ = ingest(f)
    assert out["events_added"] == 3
    assert rows(env / "store.duckdb", "SELECT event_id, client_ip, client_ip_source, country_iso FROM events ORDER BY 1") == [
        ("ev-0000001", "81.2.69.160", "X-Forwarded-For", "GB"),
        ("ev-0000002", "10.0.0.5", "IpAddress", None),
        ("ev-0000003", "198.51.100.20", "IpAddress", "US"),
    ]


def test_empty_arrays_are_accepted(env):
    f = env / "empty-arrays.jsonl"
    write_jsonl(f, [event(1, ChallengeResponses=[], ContextData={**event(1)["ContextData"], "HttpHeaders": []})])
    out, _ = ingest(f)
    assert out["events_added"] == 1
    assert rows(env / "store.duckdb", "SELECT challenge_responses, http_headers, device_name FROM events") == [
        ([], [], "Other, Other")]


def test_events_without_context_data_and_unknown_fields_are_kept(env):
    ev = event(7)
    del ev["ContextData"]
    ev["Extra"] = {"k": [1, 2]}
    del ev["EventId"]
    f = env / "noctx.jsonl"
    write_jsonl(f, [ev])
    out, _ = ingest(f)
    assert out["events_added"] == 1
    (eid, has_ctx, ip, extra, dev), = rows(env / "store.duckdb",
                                           "SELECT event_id, has_context_data, client_ip, extra, device_name FROM events")
    # derived from the row's content: "rg-" + the first 32 hex digits of the SHA-256 of the line
    assert eid == "rg-" + hashlib.sha256(f.read_bytes().rstrip(b"\r\n")).hexdigest()[:32]
    assert (has_ctx, ip, json.loads(extra), dev) == (False, None, {"Extra": {"k": [1, 2]}}, "Other, Other")
    again, _ = ingest(f)
    assert again["duplicates"] == 1  # the derived id is stable


def test_empty_file_and_wrong_format_are_one_clear_error_each_and_the_run_goes_on(env):
    empty = env / "empty.jsonl"
    empty.write_bytes(b"")
    good = env / "good.jsonl"
    write_jsonl(good, [event(1)])
    out, res = ingest(empty, good)
    assert res.exit_code == 1
    assert out["events_added"] == 1
    assert "empty.jsonl: is empty" in res.stderr
    csv = env / "data.csv"
    csv.write_text("a,b\n1,2\n")
    out, res = ingest("--format", "riskgate-jsonl", csv)
    assert res.exit_code == 1 and out["rows_read"] == 0
    assert "data.csv: is not riskgate JSON lines: none of its first 2 lines is a JSON object" in res.stderr
    txt = env / "notes.txt"
    txt.write_text("hello\nworld\n")
    res = runner.invoke(app, ["ingest", str(txt), "--json"])
    assert res.exit_code == 1 and "notes.txt: format not recognised" in res.stderr
    import bz2
    import lzma

    for name, data, what in (("e.jsonl.bz2", bz2.compress(b'{"a":1}\n'), "bzip2"),
                             ("e.jsonl.xz", lzma.compress(b'{"a":1}\n'), "xz")):
        (env / name).write_bytes(data)
        res = runner.invoke(app, ["ingest", str(env / name), "--json"])
        assert res.exit_code == 1 and f"{name}: is compressed with {what}, which riskgate does not read" in res.stderr
    res = runner.invoke(app, ["ingest", str(env / "missing.jsonl")])
    assert res.exit_code == 1 and "missing.jsonl: no such file" in res.stderr
    res = runner.invoke(app, ["ingest", str(good), "--format", "xml"])
    assert res.exit_code == 2 and "unknown format 'xml'" in res.stderr


def test_text_output_names_counts_and_reasons(env):
    res = runner.invoke(app, ["summary"])  # an empty store: no "None .. None"
    assert res.exit_code == 0 and "events 0; users loaded 0; labels 0; quarantined rows 0" in res.stdout, res.stdout
    f = env / "mixed.jsonl"
    write_jsonl(f, [event(1), "nope", json.dumps(event(2, EventType="LogIn")), json.dumps(event(3, EventType="LogIn"))])
    res = runner.invoke(app, ["ingest", str(f)])
    assert res.exit_code == 0
    assert "rows read 4  events added 1  duplicates skipped 0  quarantined 3" in res.stdout
    assert "EventType \"…\" is not one of" in res.stdout
    res = runner.invoke(app, ["summary"])
    assert res.exit_code == 0 and "events 1 from 1 user," in res.stdout


def test_store_location_from_option_beats_environment(env, tmp_path):
    f = env / "a.jsonl"
    write_jsonl(f, [event(1)])
    other = tmp_path / "other.duckdb"
    res = runner.invoke(app, ["ingest", str(f), "--db", str(other), "--json"])
    assert res.exit_code == 0
    assert rows(other, "SELECT count(*) FROM events") == [(1,)]
    assert not (env / "store.duckdb").exists()


def test_plain_ipv4_canonical_ipv6_and_forwarded_ipv4_clients_are_resolved_without_python(env, monkeypatch):
    import ingest.enrich as enrich

    seen = []
    real = enrich.resolve_client_ip_from
    monkeypatch.setattr(enrich, "resolve_client_ip_from", lambda ip, *a: seen.append(ip) or real(ip, *a))
    ctx = event(1)["ContextData"]
    f = env / "fast.jsonl"

    def proxied(i, ip, xff, *others):
        return event(i, ContextData={**ctx, "IpAddress": ip, "HttpHeaders": ctx["HttpHeaders"] + [
            {"headerName": n, "headerValue": v} for n, v in others] + [
            {"headerName": "X-Forwarded-For", "headerValue": xff}]})

    write_jsonl(f, [event(1), event(2, ContextData={**ctx, "IpAddress": "2001:db8:1::9"}),
                    proxied(3, "10.0.0.5", "81.2.69.160"), proxied(4, "10.0.0.6", "81.2.69.170, 10.1.1.1"),
                    proxied(5, "10.0.0.7", "10.2.2.2"), proxied(6, "81.2.69.9", "203.0.113.7"),
                    # a Forwarded the client typed (the proxy writes X-Forwarded-For): never read, nor a reason
                    # to leave the row to Python
                    proxied(7, "10.0.0.8", "81.2.69.171", ("Forwarded", "for=203.0.113.77"),
                            ("X-Real-IP", "203.0.113.78"))])
    out, _ = ingest(f)
    assert out["events_added"] == 7
    # the plain IPv4 and IPv6 rows, the proxied rows with a client and the untrusted "proxy" never reached Python
    assert sorted(seen) == ["10.0.0.7"]
    assert rows(env / "store.duckdb", "SELECT client_ip, ip_prefix, client_ip_source FROM events ORDER BY event_id") == [
        ("81.2.69.161", "81.2.69.0/24", "IpAddress"),
        ("2001:db8:1::9", "2001:db8:1::/48", "IpAddress"),
        ("81.2.69.160", "81.2.69.0/24", "X-Forwarded-For"),
        ("81.2.69.170", "81.2.69.0/24", "X-Forwarded-For"),  # walked from the right past the trusted 10.1.1.1
        ("10.0.0.7", "10.0.0.0/24", "IpAddress"),  # every hop trusted: IpAddress stays
        ("81.2.69.9", "81.2.69.0/24", "IpAddress"),  # an untrusted IpAddress: its headers are not believed
        ("81.2.69.171", "81.2.69.0/24", "X-Forwarded-For"),
    ]


def _behind_the_load_balancer(i, *headers):
    """A sign-in whose IpAddress is the load balancer's (10.0.13.22, a trusted proxy), with these headers."""
    ctx = event(i)["ContextData"]
    return event(i, ContextData={**ctx, "IpAddress": "10.0.13.22", "HttpHeaders": ctx["HttpHeaders"] + [
        {"headerName": n, "headerValue": v} for n, v in headers]})


#: the load balancer appended the real client (81.2.69.160) to X-Forwarded-For and passed through the
#: Forwarded and X-Real-IP headers the client typed itself
SPOOFED = [("Forwarded", "for=203.0.113.77"), ("X-Forwarded-For", "81.2.69.160"), ("X-Real-IP", "198.51.100.20")]


def test_a_forwarding_header_the_client_typed_never_chooses_its_address(env):
    f = env / "spoof.jsonl"
    write_jsonl(f, [_behind_the_load_balancer(1, *SPOOFED),
                    _behind_the_load_balancer(2, ("Forwarded", "for=203.0.113.77")),
                    _behind_the_load_balancer(3, ("X-Real-IP", "198.51.100.20"))])
    out, _ = ingest(f)
    assert out["events_added"] == 3
    assert rows(env / "store.duckdb", "SELECT event_id, client_ip, client_ip_source FROM events ORDER BY 1") == [
        ("ev-0000001", "81.2.69.160", "X-Forwarded-For"),
        ("ev-0000002", "10.0.13.22", "IpAddress"),
        ("ev-0000003", "10.0.13.22", "IpAddress"),
    ]


@pytest.mark.parametrize("how", ["option", "environment"])
@pytest.mark.parametrize("header, client", [("Forwarded", "203.0.113.77"), ("x-real-ip", "198.51.100.20"),
                                            ("X-Forwarded-For", "81.2.69.160")])
def test_the_header_the_proxies_write_is_chosen_by_option_or_environment(env, monkeypatch, how, header, client):
    f = env / "spoof.jsonl"
    write_jsonl(f, [_behind_the_load_balancer(1, *SPOOFED)])
    if how == "option":
        other = "X-Forwarded-For" if header != "X-Forwarded-For" else "Forwarded"
        monkeypatch.setenv("RISKGATE_CLIENT_IP_HEADER", other)
        out, _ = ingest(f, "--client-ip-header", header)  # (the option wins over the environment)
    else:
        monkeypatch.setenv("RISKGATE_CLIENT_IP_HEADER", header)
        out, _ = ingest(f, "--trusted-proxy", "10.0.0.0/8")  # (the header still from the environment)
    assert out["events_added"] == 1
    source = {"forwarded": "Forwarded", "x-real-ip": "X-Real-IP"}.get(header.lower(), "X-Forwarded-For")
    assert rows(env / "store.duckdb", "SELECT client_ip, client_ip_source FROM events") == [(client, source)]


def test_a_bad_client_ip_header_is_refused_before_anything_is_read(env, monkeypatch):
    f = env / "spoof.jsonl"
    write_jsonl(f, [_behind_the_load_balancer(1, *SPOOFED)])
    res = runner.invoke(app, ["ingest", str(f), "--client-ip-header", "X-Client-IP"])
    assert res.exit_code == 2
    assert "--client-ip-header: 'X-Client-IP' is not one of X-Forwarded-For, Forwarded, X-Real-IP" in res.output
    monkeypatch.setenv("RISKGATE_CLIENT_IP_HEADER", "True-Client-IP")
    res = runner.invoke(app, ["ingest", str(f), "--trusted-proxy", "10.0.0.0/8"])
    assert res.exit_code == 2
    assert ("RISKGATE_CLIENT_IP_HEADER: 'True-Client-IP' is not one of X-Forwarded-For, Forwarded, X-Real-IP"
            in res.output)
    assert not (env / "store.duckdb").exists()


def test_ingest_runs_on_arrows_jemalloc_pool_unless_the_environment_chooses(tmp_path):
    import os
    import subprocess
    import sys

    code = ("import pyarrow as pa; from ingest.pipeline import prefer_jemalloc; "
            "before = pa.default_memory_pool().backend_name; print(before, prefer_jemalloc())")
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["mimalloc", "jemalloc"]
    out = subprocess.run([sys.executable, "-c", code], env={**env, "ARROW_DEFAULT_MEMORY_POOL": "system"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["system", "system"]


def test_the_ingest_command_lets_duckdb_keep_and_reuse_freed_memory(env, monkeypatch):
    import cli.ingest_cmd
    from ingest import store
    from ingest.pipeline import BULK_SETTINGS

    tmp_path = env
    settings = ("SELECT current_setting('allocator_flush_threshold'), current_setting('block_allocator_memory')")
    con = store.connect(tmp_path / "plain.duckdb")
    assert con.execute(settings).fetchall() == [("134217728B", "0 bytes")]  # DuckDB's defaults: 128 MiB, none
    con.close()
    con = store.connect(tmp_path / "bulk.duckdb", settings=BULK_SETTINGS)
    assert con.execute(settings).fetchall() == [("4GB", "512.0 MiB")]
    con.close()
    used = []  # the settings the command opens its store with (the real store.connect, watched)
    real = store.connect
    monkeypatch.setattr(cli.ingest_cmd.store, "connect", lambda *a, **k: used.append(k.get("settings")) or real(*a, **k))
    src = tmp_path / "one.jsonl"
    write_jsonl(src, many(3))
    assert ingest(src)[0]["events_added"] == 3
    assert used == [BULK_SETTINGS]


def test_a_pool_id_the_configuration_would_refuse_is_quarantined_by_every_reader(env, tmp_path):
    """A 1,000-character or blank UserPoolId was stored: `riskgate mode` / `config` refuse it (1..55 characters),
    so its events could never be configured, and the store knew one pool more (exploratory review). An empty one
    is no pool id, in every path (with --user-pool-id it is that pool, as an absent one)."""
    f = env / "pools.jsonl"
    write_jsonl(f, [event(1, UserPoolId="x" * 1000), event(2, UserPoolId="  "), event(3, UserPoolId="p" * 55),
                    event(4, UserPoolId="")])
    out, _ = ingest(f)
    assert (out["rows_read"], out["events_added"], out["quarantined"]) == (4, 2, 2)
    got = rows(env / "store.duckdb", "SELECT source_line, reason FROM quarantine ORDER BY source_line")
    assert got == [(1, 'UserPoolId "' + "x" * 80 + '…" (1,000 characters) is too long: at most 55 characters allowed'),
                   (2, 'UserPoolId "  " is blank: give a pool id of 1..55 characters')]
    assert rows(env / "store.duckdb", "SELECT user_pool_id FROM events ORDER BY source_line") == [("p" * 55,), (None,)]


def test_a_bad_user_pool_id_option_is_refused_before_anything_is_read(env):
    f = env / "one.jsonl"
    write_jsonl(f, [event(1)])
    res = runner.invoke(app, ["ingest", str(f), "--user-pool-id", "p" * 56])
    assert res.exit_code == 2
    assert "--user-pool-id '" + "p" * 56 + "' is too long: at most 55 characters allowed" in res.output
    assert not (env / "store.duckdb").exists()


def test_a_blank_user_pool_id_option_is_refused_by_ingest_and_users_load(env, tmp_path):
    """`--user-pool-id "  "` (an unset variable, quoted) stored a pool "  " that `mode` and `config` refuse."""
    f = env / "one.jsonl"
    write_jsonl(f, [event(1)])
    users = tmp_path / "u.csv"
    users.write_text("username,sub,status,enabled,mfa_settings,preferred_mfa,email\nalice,s,CONFIRMED,true,,,\n")
    for args in (["ingest", str(f)], ["users", "load", str(users), "--db", str(env / "store.duckdb")]):
        res = runner.invoke(app, [*args, "--user-pool-id", "  "])
        assert res.exit_code == 2 and "--user-pool-id '  ' is blank" in res.output, res.output
    assert not (env / "store.duckdb").exists() or rows(env / "store.duckdb", "SELECT count(*) FROM events") == [(0,)]


def test_a_username_of_blanks_is_one_rule_for_ingest_the_service_and_users_load(env, tmp_path):
    """A Username of a tab was ingested (SQL's trim keeps tabs) while `users load` refused it (Python's strip)."""
    from ingest.one import canonical
    from ingest.enrich import Enricher
    from ingest.schema import username_problem

    f = env / "blank.jsonl"
    write_jsonl(f, [event(1, Username="\t"), event(2, Username=" \n "), event(3, Username="\tbob")])
    out, _ = ingest(f)
    assert (out["events_added"], out["quarantined"]) == (1, 2)
    assert rows(env / "store.duckdb", "SELECT DISTINCT reason FROM quarantine") == [("Username is missing or empty",)]
    assert username_problem("\t") == username_problem(" \n ") == "Username is missing or empty"
    assert username_problem("\tbob") is None
    from ingest.geo import GeoResolver

    enricher = Enricher(geo=GeoResolver.from_settings(None, None))
    assert [canonical(event(1, Username=name), enricher, source_format="riskgate-jsonl", source_file="x",
                      source_line=1) is None for name in ("\t", " \n ", "\tbob")] == [True, True, False]
