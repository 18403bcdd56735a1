"""A tiny store with known answers for the dashboard's tests (events, assessments, labels, runs, quarantine)."""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa

import risk.store
from ingest.schema import EVENT_SCHEMA, QUARANTINE_SCHEMA, conform
from ingest.store import finish_run, insert_events, insert_labels, insert_quarantine, start_run

POOL = "us-east-1_T"


def _t(day: int, hour: int) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=timezone.utc)


GB = ("GB", "United Kingdom", "London", 51.5, -0.12, 20712, "Andrews & Arnold")
US = ("US", "United States", "Ashburn", 39.0, -77.5, 16509, "Amazon.com, Inc.")
DE = ("DE", "Germany", "Berlin", 52.5, 13.4, 3320, "Deutsche Telekom AG")
FR = ("FR", "France", "Paris", 48.86, 2.35, 3215, "Orange S.A.")
NL = ("NL", "Netherlands", "Amsterdam", 52.37, 4.9, 1136, "KPN B.V.")
LYON = ("FR", "France", "Lyon", 45.76, 4.83, 3215, "Orange S.A.")

# id, user, time, type, response, ip, network, place, client
EVENTS = [
    ("e01", "alice", _t(1, 8), "SignIn", "Pass", "81.2.69.160", "81.2.69.0/24", GB, "app1"),
    ("e02", "alice", _t(2, 8), "SignIn", "Pass", "81.2.69.161", "81.2.69.0/24", GB, "app1"),
    ("e03", "alice", _t(3, 3), "SignIn", "Pass", "203.0.113.9", "203.0.113.0/24", US, "app1"),
    ("e04", "bob", _t(1, 9), "SignIn", "Fail", "203.0.113.10", "203.0.113.0/24", US, "app1"),
    ("e05", "bob", _t(2, 9), "SignIn", "Pass", "198.51.100.20", "198.51.100.0/24", DE, "app1"),
    ("e06", "bob", _t(3, 9), "PasswordChange", "Pass", "198.51.100.20", "198.51.100.0/24", DE, "app1"),
    ("e07", "carol", _t(1, 10), "SignIn", "Pass", "2001:db8:1::5", "2001:db8:1::/48", FR, "app2"),
    ("e08", "carol", _t(2, 10), "SignIn", "Pass", "2001:db8:2::7", "2001:db8:2::/48", FR, "app2"),
    ("e09", "dave", _t(4, 11), "SignIn", "Pass", "192.0.2.1", "192.0.2.0/24", NL, "app2"),
    ("e10", "dave", _t(5, 11), "ForgotPassword", "Pass", "192.0.2.1", "192.0.2.0/24", NL, "app2"),
    ("e11", "erin", _t(5, 12), "SignIn", "Pass", "2001:db9::1", "2001:db9::/48", LYON, "app2"),
]

REASONS_E03 = [{"code": "new_device", "value": 1.0, "contribution": 2.0},
               {"code": "travel_distance", "value": 5900.0, "contribution": 1.5}]

# id -> score, level, decision, outcome, override block, compromised, reasons (e10 is not assessed)
ASSESSMENTS = {
    "e01": (0.01, None, "NoRisk", "Allow", False, False, []),
    "e02": (0.02, None, "NoRisk", "Allow", False, False, []),
    "e03": (0.95, "High", "AccountTakeover", "MfaChallenge", False, False, REASONS_E03),
    "e04": (0.60, "Medium", "AccountTakeover", "MfaChallenge", False, False,
            [{"code": "ip_users_1h", "value": 12.0, "contribution": 1.1}]),
    "e05": (0.30, "Low", "AccountTakeover", "Allow", False, False,
            [{"code": "new_country", "value": 1.0, "contribution": 0.4}]),
    "e06": (0.05, None, "Block", "Block", False, True, []),
    "e07": (0.03, None, "NoRisk", "Allow", False, False, []),
    "e08": (0.90, "High", "Block", "Block", False, False, [{"code": "hosting_network", "value": 1.0,
                                                            "contribution": 2.2}]),
    "e09": (0.04, None, "Block", "Block", True, False, []),
    "e11": (0.01, None, "NoRisk", "Allow", False, False, []),
}

LABELS = [("e03", "attack_type", "naive_takeover"), ("e08", "attack_type", "vpn_takeover"),
          ("e04", "attack_type", "credential_stuffing")] + [
    (e, "is_account_takeover", "false") for e in ("e01", "e02", "e05", "e07", "e09", "e11")]


def build(path) -> None:
    """Write the known store at ``path``."""
    con = risk.store.connect(path)
    try:
        rows = []
        for i, (eid, user, when, etype, resp, ip, net, place, client) in enumerate(EVENTS):
            cc, country, city, lat, lon, asn, org = place
            rows.append({
                "event_id": eid, "user_pool_id": POOL, "client_id": client, "username": user, "event_type": etype,
                "event_response": resp, "creation_date": when, "ip_address": ip, "client_ip": ip,
                "client_ip_source": "IpAddress", "ip_version": 6 if ":" in ip else 4, "ip_prefix": net,
                "has_context_data": True, "server_name": "auth.example.com", "server_path": "/login",
                "http_headers": [{"header_name": "User-Agent", "header_value": "Mozilla/5.0 test"}],
                "device_name": "Chrome 126, Windows 10", "device_type": "Desktop", "country_iso": cc,
                "country_name": country, "city": city, "latitude": lat, "longitude": lon, "asn": asn,
                "as_org": org, "geo_source": "lookup", "compromised_credentials": eid == "e06",
                "challenge_responses": [{"challenge_name": "Password", "challenge_response": "Success"}],
                "source_format": "test", "source_file": "known.jsonl", "source_line": i + 1,
            })
        start_run(con, "ingest-1", ["known.jsonl"], "riskgate-jsonl")
        insert_events(con, conform(pa.Table.from_pylist(rows), EVENT_SCHEMA), "ingest-1")
        q = conform(pa.Table.from_pylist([
            {"source_format": "riskgate-jsonl", "source_file": "known.jsonl", "source_line": 12,
             "reason": "malformed JSON: Expecting value", "raw": "{not json"},
            {"source_format": "riskgate-jsonl", "source_file": "known.jsonl", "source_line": 13,
             "reason": "malformed JSON: Expecting value", "raw": "{also not json"},
            {"source_format": "riskgate-jsonl", "source_file": "known.jsonl", "source_line": 14,
             "reason": 'IpAddress "x" is not an IPv4 or IPv6 address', "raw": '{"IpAddress": "x"}'},
        ]), QUARANTINE_SCHEMA)
        q = q.append_column("quarantine_id", pa.array(["q1", "q2", "q3"]))
        insert_quarantine(con, q, "ingest-1")
        finish_run(con, "ingest-1", status="completed", rows_read=14, events_added=11, duplicates=0, quarantined=3,
                   reasons={"malformed JSON: Expecting value": 2, 'IpAddress "x" is not an IPv4 or IPv6 address': 1})
        for eid, (score, level, decision, outcome, override, compromised, reasons) in ASSESSMENTS.items():
            con.execute(
                """INSERT INTO assessments (event_id, score, risk_level, risk_decision, outcome, event_action, mode,
                       enforced, mfa_challenge, blocked, override_block, ip_exception,
                       compromised_credentials_detected, reset_required, reasons, decision_reasons, model_version,
                       thresholds_version, config_version, mode_version, run_id, scored_at)
                   VALUES (?, ?, ?, ?, ?, NULL, 'AUDIT', false, ?, ?, ?, ?, ?, false, ?, ?, 1, 0, 0, 0, 'score-1', ?)""",
                [eid, score, level, decision, outcome, outcome == "MfaChallenge", outcome == "Block", override,
                 "blocked" if override else "none", compromised, reasons,
                 [f"known decision of {eid}"], _t(6, 0)],
            )
        con.execute(
            "INSERT INTO score_runs (run_id, started_at, finished_at, status, since, until, rescore, events_scored, "
            "model_version, thresholds_version) VALUES ('score-1', ?, ?, 'completed', NULL, NULL, false, 10, 1, 0)",
            [_t(6, 0), _t(6, 1)],
        )
        insert_labels(con, pa.table({"event_id": [e for e, _, _ in LABELS], "label": [k for _, k, _ in LABELS],
                                     "value": [v for _, _, v in LABELS], "source": ["test"] * len(LABELS)}))
    finally:
        con.close()

