"""riskgate serve: a request's answer depends on that request only; Cognito-shaped errors for a forged NextToken,
a fault of ours and an oversized body. The real service on loopback, over a copy of the trained store."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import threading
import time

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from risk.credentials import CredentialChecker
from tests.service_support import API_KEY, Service, copy_store, headers, rest_events, rg, trained_base
from tests.storedb import q

REGION = "eu-west-1"
TARGET = "AWSCognitoIdentityProviderService."
#: the password that makes the checker below fail
MARKER = "riskgate-test-marker-fails-the-check"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return trained_base(tmp_path_factory)


class _FailsOnMarker(CredentialChecker):
    """Test double, for failure injection only: the real checker, except that checking MARKER raises -- any fault
    while a batch is assessed, as a DuckDB error deep in ingest's reader was (``"CreationDate": 1e20``)."""

    def check(self, password):
        if password == MARKER:
            raise RuntimeError("injected: this request's check fails")
        return super().check(password)


def _ids_sql(ids) -> str:
    return ", ".join("?" * len(ids))


def test_one_failing_request_does_not_fail_the_others_of_its_batch(base, tmp_path):
    """30 requests coalesced into one batch: 3 whose assessment raises (the checker), 3 that DuckDB could not read
    (``CreationDate`` 1e20); the 24 others get the answers they get without them, each stored once."""
    from ingest.enrich import Enricher
    from ingest.geo import GeoResolver
    from risk import store as rstore
    from risk.inline import InlineRequest, InlineScorer

    events = rest_events(base)
    good = events[:24]
    compromised = {e["EventId"]: "RISKGATE-TEST-" + e["EventId"] for e in good[::4]}  # always "compromised"
    failing = [{**e, "Password": MARKER} for e in events[24:27]]
    unreadable = [{**e, "EventId": f"unreadable-{k}", "CreationDate": 1e20} for k, e in enumerate(events[:3])]
    bodies = [{**e, "Password": compromised[e["EventId"]]} if e["EventId"] in compromised else e for e in good]
    for k, bad in enumerate(failing + unreadable):  # in among the good ones (which stay in time order)
        bodies.insert(3 + 4 * k, bad)
    assert len(bodies) == 30

    # what the good ones get without the bad ones: one batch through the scorer, over its own copy of the store
    con = rstore.connect(copy_store(base, tmp_path / "reference.duckdb"))
    scorer = InlineScorer(con, enricher=Enricher(geo=GeoResolver.from_settings(None, None)),
                          checker=CredentialChecker.from_env().open())
    try:
        ref, _ = scorer.evaluate([InlineRequest(dict(e), compromised.get(e["EventId"])) for e in good])
    finally:
        scorer.close()
        con.close()
    expected = {r.assessment["event_id"]: r.assessment for r in ref}
    assert sum(a["compromised_credentials_detected"] is True for a in expected.values()) == len(compromised) == 6

    store = copy_store(base, tmp_path / "s.duckdb")
    with Service(store, checker=_FailsOnMarker.from_env().open()) as svc:
        worker = svc.worker
        gate, started = threading.Event(), threading.Event()

        def hold(con):
            started.set()
            gate.wait(60)

        held = worker.call(hold)  # the store thread waits: the 30 requests queue and make one batch
        assert started.wait(30)
        with httpx.Client(timeout=60) as client, concurrent.futures.ThreadPoolExecutor(30) as pool:
            futures = []
            for n, body in enumerate(bodies, 1):
                futures.append(pool.submit(client.post, svc.url + "/v1/evaluate", json=body, headers=headers()))
                deadline = time.monotonic() + 30
                while worker.queued() < n and time.monotonic() < deadline:
                    time.sleep(0.005)
                assert worker.queued() == n
            gate.set()
            held.result(30)
            answers = [f.result() for f in futures]
        by_id = {b["EventId"]: r for b, r in zip(bodies, answers)}
        for e in failing:
            assert by_id[e["EventId"]].status_code == 500  # as when it comes alone
        for e in unreadable:
            assert by_id[e["EventId"]].status_code in (422, 500)  # 500 while ingest's reader raised; 422 refused
        for e in good:
            r = by_id[e["EventId"]]
            assert r.status_code == 200, r.text
            out, want = r.json(), expected[e["EventId"]]
            assert out["EventId"] == e["EventId"] and out["Duplicate"] is False
            assert (out["Score"], out["RiskLevel"], out["RiskDecision"], out["CompromisedCredentialsDetected"]) == \
                (want["score"], want["risk_level"], want["risk_decision"], want["compromised_credentials_detected"])
        for e in good:  # the same EventIds again: the stored answers
            again = httpx.post(svc.url + "/v1/evaluate", json=e, headers=headers(), timeout=30).json()
            assert again["Duplicate"] is True and again["Score"] == expected[e["EventId"]]["score"]
    good_ids = [e["EventId"] for e in good]
    assert q(store, f"SELECT count(*), count(DISTINCT event_id) FROM events WHERE event_id IN ({_ids_sql(good_ids)})",
             good_ids) == [(24, 24)]
    assert q(store, f"SELECT count(*), count(DISTINCT event_id) FROM assessments WHERE event_id IN "
                    f"({_ids_sql(good_ids)})", good_ids) == [(24, 24)]
    assert sorted(q(store, f"SELECT event_id, compromised FROM credential_checks WHERE event_id IN "
                           f"({_ids_sql(good_ids)})", good_ids)) == sorted((i, True) for i in compromised)
    bad_ids = [e["EventId"] for e in failing + unreadable]
    assert q(store, f"SELECT count(*) FROM events WHERE event_id IN ({_ids_sql(bad_ids)})", bad_ids) == [(0,)]


# -- the Cognito protocol -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def svc(base, tmp_path_factory):
    service = Service(copy_store(base, tmp_path_factory.mktemp("fixes") / "c.duckdb"))
    yield service
    service.stop()


@pytest.fixture(scope="module")
def pool_and_user(svc):
    from risk.config import known_pools

    pool = svc.worker.call(lambda con: known_pools(con)).result(30)[0]
    user = svc.worker.call(lambda con: con.execute(
        "SELECT username FROM events GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1").fetchall()[0][0]).result(30)
    return pool, user


def client(svc, **config):
    return boto3.client("cognito-idp", endpoint_url=svc.url, region_name=REGION, aws_access_key_id="riskgate",
                        aws_secret_access_key=API_KEY, config=Config(retries={"max_attempts": 1}, **config))


def _token(parts) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


def _cognito_post(svc, op: str, params: dict, **kw) -> httpx.Response:
    h = {"Content-Type": "application/x-amz-json-1.1", "X-Api-Key": API_KEY, "X-Amz-Target": TARGET + op}
    return httpx.post(svc.url + "/", headers=h, content=json.dumps(params), timeout=30, **kw)


def _assert_cognito_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["x-amzn-errortype"] == code
    body = r.json()
    assert body["__type"] == code and body["message"]
    return body


def test_a_forged_next_token_is_invalid_parameter(base, svc, pool_and_user, tmp_path):
    pool, user = pool_and_user
    c = client(svc)
    page = c.admin_list_user_auth_events(UserPoolId=pool, Username=user, MaxResults=2)
    assert len(page["AuthEvents"]) == 2 and page["NextToken"]
    when = json.loads(base64.urlsafe_b64decode(page["NextToken"] + "=" * (-len(page["NextToken"]) % 4)))[1]
    forged = [[user, "2026-07-30T14:40:34", 5],  # the event id a number (was a DuckDB BinderException: a plain 500)
              [user, when, 5], [user, when, None], [user, when, [1]], [user, 5, "x"], [user, when],
              {"a": user, "b": when, "c": "x"}, [user, "0001-01-01T00:00:00+01:00", "x"]]
    for parts in forged:
        with pytest.raises(ClientError) as e:
            c.admin_list_user_auth_events(UserPoolId=pool, Username=user, NextToken=_token(parts))
        err = e.value.response
        assert (err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]) == ("InvalidParameterException", 400)
        assert "is not a valid token" in err["Error"]["Message"], parts
    # our own token still pages on
    nxt = c.admin_list_user_auth_events(UserPoolId=pool, Username=user, MaxResults=2, NextToken=page["NextToken"])
    assert nxt["AuthEvents"] and nxt["AuthEvents"][0]["EventId"] != page["AuthEvents"][-1]["EventId"]
    # the command line reads tokens with the same function: a clear error, exit code 2
    from typer.testing import CliRunner

    from cli import app as cli_app

    db = copy_store(base, tmp_path / "cli.duckdb")
    res = CliRunner().invoke(cli_app, ["events", user, "--next-token", _token(forged[0]), "--db", str(db)])
    assert res.exit_code == 2 and "is not a valid token" in res.output, res.output
    assert rg("events", user, "--max-results", 1, db=db).exit_code == 0


def test_a_fault_on_the_cognito_endpoint_is_internal_error_in_cognitos_shape(svc, pool_and_user):
    pool, user = pool_and_user
    # a store changed behind the service: the feedback table is gone (DuckDB's CatalogException)
    svc.worker.call(lambda con: con.execute("ALTER TABLE feedback RENAME TO feedback_away")).result(30)
    try:
        r = _cognito_post(svc, "AdminListUserAuthEvents", {"UserPoolId": pool, "Username": user, "MaxResults": 1})
        body = _assert_cognito_error(r, 500, "InternalErrorException")
        assert "CatalogException" in body["message"]
        assert r.headers["content-type"] == "application/x-amz-json-1.1"
        with pytest.raises(ClientError) as e:
            client(svc).admin_list_user_auth_events(UserPoolId=pool, Username=user, MaxResults=1)
        assert e.value.response["Error"]["Code"] == "InternalErrorException"
    finally:
        svc.worker.call(lambda con: con.execute("ALTER TABLE feedback_away RENAME TO feedback")).result(30)
    assert _cognito_post(svc, "AdminListUserAuthEvents",
                         {"UserPoolId": pool, "Username": user, "MaxResults": 1}).status_code == 200


def test_an_oversized_body_is_refused_in_the_shape_of_its_protocol(svc, pool_and_user):
    pool, user = pool_and_user
    big = "a" * (2 * 1024 * 1024)
    # boto3: the code and the message, as for any Cognito error (client-side validation off to send it at all)
    with pytest.raises(ClientError) as e:
        client(svc, parameter_validation=False).admin_list_user_auth_events(UserPoolId=pool, Username=big)
    err = e.value.response
    assert (err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]) == ("InvalidParameterException", 413)
    assert err["Error"]["Message"] == "request body over 1048576 bytes"
    # a declared length and a chunked body
    r = _cognito_post(svc, "AdminListUserAuthEvents", {"UserPoolId": pool, "Username": big})
    _assert_cognito_error(r, 413, "InvalidParameterException")

    def chunks():
        for _ in range(3):
            yield b"x" * (1024 * 1024)

    r = httpx.post(svc.url + "/", headers={"X-Api-Key": API_KEY, "X-Amz-Target": TARGET + "AdminListUserAuthEvents"},
                   content=chunks(), timeout=30)
    _assert_cognito_error(r, 413, "InvalidParameterException")
    # POST /v1/evaluate keeps its own shape
    r = httpx.post(svc.url + "/v1/evaluate", headers=headers(), content=b'{"Username": "' + big.encode() + b'"}',
                   timeout=30)
    assert r.status_code == 413 and r.json() == {"error": "request body over 1048576 bytes"}
    assert "x-amzn-errortype" not in r.headers


def test_a_batch_that_fails_after_storing_its_events_answers_each_as_new(base, tmp_path):
    """A batch on the SQL path (it holds a retry) stores its events, then one event's assessment raises: assessed
    again each on its own, the others are answered as new events (not Duplicate), each stored and assessed once."""
    from ingest.enrich import Enricher
    from ingest.geo import GeoResolver
    from risk import store as rstore
    from risk.inline import InlineRequest, InlineScorer
    from service.worker import StoreWorker

    class _FailsOnBoom(InlineScorer):
        """Test double, for failure injection only: the real scorer, except that assessing an event whose id starts
        with ``boom-`` raises (after the SQL path has stored the batch)."""

        def _assessed(self, ctx, feats, events, requests):
            if any(i.startswith("boom-") for i in feats.column("event_id").to_pylist()):
                raise RuntimeError("injected: this event's assessment fails")
            return super()._assessed(ctx, feats, events, requests)

    db = copy_store(base, tmp_path / "w.duckdb")
    events = rest_events(base)
    worker = StoreWorker(lambda: rstore.connect(db),
                         lambda con: _FailsOnBoom(con, enricher=Enricher(geo=GeoResolver.from_settings(None, None)),
                                                  checker=CredentialChecker.from_env().open()))
    worker.start(60)
    try:
        first = worker.evaluate(InlineRequest(dict(events[0]))).result(60)
        assert first.duplicate is False
        gate, started = threading.Event(), threading.Event()
        held = worker.call(lambda con: (started.set(), gate.wait(60)))
        assert started.wait(30)
        batch = [events[0], *events[1:6], {**events[6], "EventId": "boom-1"}]
        futures = [worker.evaluate(InlineRequest(dict(e))) for e in batch]
        assert worker.queued() == len(batch)
        gate.set()
        held.result(30)
        answers = [f.exception(60) or f.result() for f in futures]
    finally:
        worker.stop()
    assert answers[0].duplicate is True and answers[0].assessment["score"] == first.assessment["score"]
    for e, a in zip(events[1:6], answers[1:6]):
        assert a.assessment["event_id"] == e["EventId"] and a.duplicate is False
        assert 0.0 <= a.assessment["score"] <= 1.0
    assert isinstance(answers[6], RuntimeError) and "injected" in str(answers[6])
    ids = [e["EventId"] for e in events[:6]]
    assert q(db, f"SELECT count(*), count(DISTINCT event_id) FROM events WHERE event_id IN ({_ids_sql(ids)})",
             ids) == [(6, 6)]
    assert q(db, f"SELECT count(*), count(DISTINCT event_id) FROM assessments WHERE event_id IN ({_ids_sql(ids)})",
             ids) == [(6, 6)]
    assert q(db, "SELECT count(*) FROM assessments WHERE event_id = 'boom-1'") == [(0,)]
