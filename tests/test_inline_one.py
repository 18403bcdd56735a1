"""ingest.one: one record in plain Python gives the row the reader's and enrichment's SQL give, or steps aside."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone

import pytest

from ingest.enrich import Enricher
from ingest.geo import GeoResolver
from ingest.one import canonical
from risk.inline import SOURCE_FILE, SOURCE_FORMAT, InlineRequest, InlineScorer

UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
BASE = {
    "EventId": "ev-0001", "UserPoolId": "us-east-1_EXAMPLE", "ClientId": "app1", "Username": "alice",
    "UserSub": "7d1e-01", "EventType": "SignIn", "EventResponse": "Pass", "CreationDate": "2026-03-01T08:15:02.120Z",
    "ChallengeResponses": [{"ChallengeName": "Password", "ChallengeResponse": "Success"}],
    "ContextData": {"IpAddress": "81.2.69.160", "ServerName": "auth.example.com", "ServerPath": "/login",
                    "HttpHeaders": [{"headerName": "User-Agent", "headerValue": UA},
                                    {"headerName": "Accept-Language", "headerValue": "en-GB"}]},
}


def variant(**changes) -> dict:
    rec = copy.deepcopy(BASE)
    ctx = changes.pop("ctx", None)
    for k, v in changes.items():
        if v is _DROP:
            rec.pop(k, None)
        else:
            rec[k] = v
    if ctx is not None:
        for k, v in ctx.items():
            if v is _DROP:
                rec["ContextData"].pop(k, None)
            else:
                rec["ContextData"][k] = v
    return rec


_DROP = object()


def headers(*pairs) -> list[dict]:
    return [{"headerName": n, "headerValue": v} for n, v in pairs]


#: records the Python path takes: each must give exactly the SQL path's row
TAKEN = {
    "plain": variant(),
    "ipv6": variant(ctx={"IpAddress": "2A02:0C7F:0000::1"}),
    "encoded data": variant(ctx={"EncodedData": "eyJkZXZpY2UiOiJhYmMifQ=="}),
    "no context data": variant(ContextData=_DROP),
    "no agent": variant(ctx={"HttpHeaders": []}),
    # blank agents are none (no fingerprint every such sign-in of anyone would share)
    "empty agent": variant(ctx={"HttpHeaders": headers(("User-Agent", ""), ("Accept-Language", "en-GB"))}),
    "blank agent": variant(ctx={"HttpHeaders": headers(("User-Agent", " \t"), ("Accept-Language", "en-GB"))}),
    "trusted proxy, X-Forwarded-For": variant(ctx={"IpAddress": "10.0.0.5", "HttpHeaders": headers(
        ("user-agent", UA), ("X-Forwarded-For", "1.120.0.9, 10.0.0.7"), ("x-forwarded-for", "10.0.0.8"))}),
    "trusted proxy, Forwarded": variant(ctx={"IpAddress": "127.0.0.1", "HttpHeaders": headers(
        ("Forwarded", 'for="[2001:db8:cafe::17]:4711"'), ("User-Agent", UA))}),
    "trusted proxy, X-Real-IP": variant(ctx={"IpAddress": "10.0.0.5", "HttpHeaders": headers(
        ("User-Agent", UA), ("x-real-ip", "1.120.0.10"))}),
    # the proxy appended the client to X-Forwarded-For and passed the client's own Forwarded through
    "trusted proxy, X-Forwarded-For and the client's Forwarded": variant(ctx={"IpAddress": "10.0.13.22",
        "HttpHeaders": headers(("User-Agent", UA), ("Forwarded", "for=203.0.113.77"),
                               ("X-Forwarded-For", "81.2.69.160"), ("X-Real-IP", "203.0.113.78"))}),
    "untrusted proxy header ignored": variant(ctx={"HttpHeaders": headers(("X-Forwarded-For", "1.120.0.9"))}),
    "malformed forwarding kept": variant(ctx={"IpAddress": "10.0.0.5", "HttpHeaders": headers(
        ("X-Forwarded-For", "garbage, 10.0.0.1"))}),
    "private address": variant(ctx={"IpAddress": "192.168.1.20"}),
    "Success/Failure responses": variant(EventResponse="Failure"),
    "offset time": variant(CreationDate="2026-03-01T10:15:02+02:00"),
    "time without fraction": variant(CreationDate="2026-03-01T08:15:02Z"),
    "rtt and compromised flag": variant(RoundTripTimeMs=312, CompromisedCredentialsDetected=True),
    "no optional ids": variant(UserPoolId=_DROP, ClientId=_DROP, UserSub=_DROP, ChallengeResponses=_DROP),
    "mobile agent and stable headers": variant(ctx={"HttpHeaders": headers(
        ("User-Agent", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Version/17.5 "
                       "Mobile/15E148 Safari/604.1"),
        ("Accept", "text/html"), ("Accept-Encoding", "gzip"), ("Sec-CH-UA-Mobile", "?1"))}),
    "other event type": variant(EventType="ForgotPassword", EventResponse="InProgress"),
}

#: records it leaves to the SQL path (which quarantines or handles them)
LEFT = {
    "unknown field": variant(Extra=1),
    "null field": variant(ClientId=None),
    "labels": variant(Labels={"is_account_takeover": True}),
    "invalid IP": variant(ctx={"IpAddress": "300.1.1.1"}),
    "epoch time": variant(CreationDate=1772352902),
    "time with a space": variant(CreationDate="2026-03-01 08:15:02"),
    "future time": variant(CreationDate="2099-01-01T00:00:00Z"),
    "unknown event type": variant(EventType="Login"),
    "long header": variant(ctx={"HttpHeaders": headers(("User-Agent", "x" * 20_000))}),
    "missing username": variant(Username=_DROP),
    "number as string field": variant(Username=42),
    "context data without headers": variant(ctx={"HttpHeaders": _DROP}),
    "bool rtt": variant(RoundTripTimeMs=True),
}


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    import risk.store

    con = risk.store.connect(tmp_path_factory.mktemp("one") / "s.duckdb")
    s = InlineScorer(con, enricher=Enricher(geo=GeoResolver.from_settings(None, None)))
    yield s
    s.close()
    con.close()


def _sql_row(scorer, record: dict) -> dict | None:
    good, refused = scorer._canonical([InlineRequest(copy.deepcopy(record))])
    if good is None or good.num_rows == 0:
        return None
    return good.to_pylist()[0]


@pytest.mark.parametrize("name", list(TAKEN))
def test_the_python_path_gives_the_sql_paths_row(scorer, name):
    record = TAKEN[name]
    now = datetime(2026, 11, 26, tzinfo=timezone.utc)
    fast = canonical(copy.deepcopy(record), scorer.enricher, source_format=SOURCE_FORMAT, source_file=SOURCE_FILE,
                     source_line=1, now=now)
    assert fast is not None, name
    slow = _sql_row(scorer, record)
    assert slow is not None, name
    assert fast == slow


def test_the_cases_exercise_what_they_name(scorer):
    rows = {n: canonical(copy.deepcopy(r), scorer.enricher, source_format=SOURCE_FORMAT, source_file=SOURCE_FILE,
                         source_line=1) for n, r in TAKEN.items()}
    assert rows["trusted proxy, X-Forwarded-For"]["client_ip"] == "1.120.0.9"
    assert rows["trusted proxy, X-Forwarded-For"]["client_ip_source"] == "X-Forwarded-For"
    # the proxies write X-Forwarded-For (the default): another forwarding header is never read
    assert rows["trusted proxy, Forwarded"]["client_ip"] == "127.0.0.1"
    assert rows["trusted proxy, X-Real-IP"]["client_ip"] == "10.0.0.5"
    spoofed = rows["trusted proxy, X-Forwarded-For and the client's Forwarded"]
    assert (spoofed["client_ip"], spoofed["client_ip_source"]) == ("81.2.69.160", "X-Forwarded-For")
    assert rows["untrusted proxy header ignored"]["client_ip"] == "81.2.69.160"
    assert rows["malformed forwarding kept"]["client_ip"] == "10.0.0.5"
    assert rows["ipv6"]["client_ip"] == "2a02:c7f::1" and rows["ipv6"]["ip_prefix"] == "2a02:c7f::/48"
    assert rows["encoded data"]["device_fingerprint"].startswith("ed-")
    assert rows["plain"]["device_fingerprint"].startswith("hd-") and rows["plain"]["country_iso"]
    assert rows["no context data"]["has_context_data"] is False and rows["no agent"]["user_agent"] is None
    for name in ("empty agent", "blank agent"):  # none: neither an agent nor a fingerprint (README: "none without")
        assert (rows[name]["user_agent"], rows[name]["device_fingerprint"], rows[name]["device_name"]) == (
            None, None, "Other, Other"), name
    assert rows["offset time"]["creation_date"] == datetime(2026, 3, 1, 8, 15, 2, tzinfo=timezone.utc)
    assert rows["Success/Failure responses"]["event_response"] == "Fail"


@pytest.mark.parametrize("name", list(LEFT))
def test_records_it_is_not_sure_about_are_left_to_sql(scorer, name):
    assert canonical(copy.deepcopy(LEFT[name]), scorer.enricher, source_format=SOURCE_FORMAT,
                     source_file=SOURCE_FILE, source_line=1) is None


def test_prepare_mixes_both_paths_and_keeps_request_order(scorer):
    records = [TAKEN["plain"], LEFT["invalid IP"], variant(EventId="ev-0002", Extra={"a": 1}), TAKEN["ipv6"]]
    records = [dict(r, EventId=f"mix-{i}") for i, r in enumerate(records)]
    before = scorer.fast_rows
    prepared = scorer.prepare([InlineRequest(copy.deepcopy(r)) for r in records])
    assert scorer.fast_rows - before == 2
    assert list(prepared.refused) == [1] and "300.1.1.1" in prepared.refused[1]
    rows = {r["source_line"]: r for r in prepared.good.to_pylist()}
    assert sorted(rows) == [1, 3, 4]
    assert rows[3]["event_id"] == "mix-2" and json.loads(rows[3]["extra"]) == {"Extra": {"a": 1}}
    assert rows[4]["client_ip"] == "2a02:c7f::1"


FORWARDING = [n for n in TAKEN if "proxy" in n or "forwarding" in n]
#: the client each forwarding record names when the trusted proxies write that header (IpAddress without it)
CLIENTS = {
    "X-Forwarded-For": {"trusted proxy, X-Forwarded-For": "1.120.0.9", "trusted proxy, Forwarded": "127.0.0.1",
                        "trusted proxy, X-Real-IP": "10.0.0.5",
                        "trusted proxy, X-Forwarded-For and the client's Forwarded": "81.2.69.160"},
    "Forwarded": {"trusted proxy, X-Forwarded-For": "10.0.0.5", "trusted proxy, Forwarded": "2001:db8:cafe::17",
                  "trusted proxy, X-Real-IP": "10.0.0.5",
                  "trusted proxy, X-Forwarded-For and the client's Forwarded": "203.0.113.77"},
    "X-Real-IP": {"trusted proxy, X-Forwarded-For": "10.0.0.5", "trusted proxy, Forwarded": "127.0.0.1",
                  "trusted proxy, X-Real-IP": "1.120.0.10",
                  "trusted proxy, X-Forwarded-For and the client's Forwarded": "203.0.113.78"},
}


@pytest.fixture(scope="module", params=list(CLIENTS))
def scorer_for_header(request, tmp_path_factory):
    import risk.store
    from ingest.context import DEFAULT_TRUSTED_PROXIES, ProxyPolicy

    con = risk.store.connect(tmp_path_factory.mktemp("one-header") / "s.duckdb")
    policy = ProxyPolicy.from_cidrs(DEFAULT_TRUSTED_PROXIES, header=request.param)
    s = InlineScorer(con, enricher=Enricher(geo=GeoResolver.from_settings(None, None), proxies=policy))
    yield request.param, s
    s.close()
    con.close()


def test_with_each_header_the_python_path_reads_the_one_the_proxies_write_as_the_sql_path_does(scorer_for_header):
    header, scorer = scorer_for_header
    now = datetime(2026, 11, 26, tzinfo=timezone.utc)
    for name in FORWARDING:
        fast = canonical(copy.deepcopy(TAKEN[name]), scorer.enricher, source_format=SOURCE_FORMAT,
                         source_file=SOURCE_FILE, source_line=1, now=now)
        assert fast is not None and fast == _sql_row(scorer, TAKEN[name]), (header, name)
        if name in CLIENTS[header]:
            want = CLIENTS[header][name]
            assert fast["client_ip"] == want, (header, name)
            assert fast["client_ip_source"] == (header if want != TAKEN[name]["ContextData"]["IpAddress"]
                                                else "IpAddress")
