"""riskgate serve: POST /v1/evaluate, its faults, the password, notifications, batch = inline, and a concurrent batch job."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import socket
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from risk.score import ASSESSMENT_COLUMNS
from tests.service_support import (
    API_KEY,
    Service,
    copy_store,
    headers,
    rest_events,
    rg,
    trained_base,
    wait_until_serving,
)
from tests.dashboard_server import free_port
from tests.storedb import q


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return trained_base(tmp_path_factory)


@pytest.fixture
def store(base, tmp_path):
    return copy_store(base, tmp_path / "s.duckdb")



def test_evaluate_returns_the_assessment_and_stores_it(base, store):
    ev = rest_events(base)[0]
    own_mfa = q(store, "SELECT len(mfa_settings) > 0 FROM users WHERE username = ?", [ev["Username"]])[0][0]
    action = "MfaChallenge" if own_mfa else "Allow"  # AUDIT: no risk action; the pool's MFA still applies
    with Service(store) as svc:
        assert httpx.get(svc.url + "/healthz").json()["status"] == "ok"
        assert "/v1/evaluate" in httpx.get(svc.url + "/openapi.json").json()["paths"]
        r = httpx.post(svc.url + "/v1/evaluate", json=ev, headers=headers(), timeout=30)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["EventId"] == ev["EventId"] and 0.0 <= out["Score"] <= 1.0
        assert out["RiskDecision"] in ("NoRisk", "AccountTakeover", "Block")
        assert (out["Mode"], out["Action"], out["ChallengeMfa"]) == ("AUDIT", action, own_mfa)
        assert isinstance(out["Reasons"], list) and out["DecisionReasons"]
        # the same EventId again is a retry: the stored answer, nothing added
        again = httpx.post(svc.url + "/v1/evaluate", json=ev, headers=headers(), timeout=30).json()
        assert again["Duplicate"] is True and again["Score"] == out["Score"]
        # without EventId and CreationDate: generated
        bare = {k: v for k, v in ev.items() if k not in ("EventId", "CreationDate")}
        gen = httpx.post(svc.url + "/v1/evaluate", json=bare, headers=headers(), timeout=30).json()
        assert gen["EventId"] and gen["EventId"] != ev["EventId"]
    assert q(store, "SELECT count(*) FROM events WHERE event_id IN (?, ?)", [ev["EventId"], gen["EventId"]]) == [(2,)]
    assert q(store, "SELECT count(*) FROM assessments WHERE event_id IN (?, ?)", [ev["EventId"], gen["EventId"]]) == [(2,)]


def test_the_api_key_is_required_on_data_routes_only(base, store):
    ev = rest_events(base)[0]
    with Service(store) as svc:
        for h in ({}, {"X-Api-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
            r = httpx.post(svc.url + "/v1/evaluate", json=ev, headers=h)
            assert r.status_code == 401, r.text
        r = httpx.post(svc.url + "/v1/evaluate", json=ev, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
        assert r.status_code == 200
        assert httpx.get(svc.url + "/healthz").status_code == 200
        assert httpx.get(svc.url + "/openapi.json").status_code == 200


def test_serve_refuses_to_start_without_an_api_key(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    monkeypatch.delenv("RISKGATE_API_KEY", raising=False)
    res = CliRunner().invoke(app, ["serve", "--db", str(tmp_path / "x.duckdb")])
    assert res.exit_code == 2 and "RISKGATE_API_KEY is not set" in res.output
    # 16 blanks were a key (only a SigV4 signature could match it: HTTP drops the blanks of X-Api-Key)
    for key, said in ((" " * 16, "is shorter than 16 characters (not counting blanks)"),
                      (" " * 8 + "k" * 15, "is shorter than 16 characters (not counting blanks)"),
                      (" " + "k" * 32, "begins or ends with blanks")):
        monkeypatch.setenv("RISKGATE_API_KEY", key)
        res = CliRunner().invoke(app, ["serve", "--db", str(tmp_path / "x.duckdb")])
        assert res.exit_code == 2 and said in res.output, (key, res.output)
    assert not list(tmp_path.iterdir())


def _behind_the_load_balancer(ev: dict, suffix: str, **headers_by_name) -> dict:
    """``ev`` as the load balancer (10.0.13.22, a trusted proxy) passes it on, with these forwarding headers
    (and none of its own)."""
    ctx = ev["ContextData"]
    names = {"forwarded", "x-forwarded-for", "x-real-ip"}
    kept = [h for h in ctx["HttpHeaders"] if h["headerName"].lower() not in names]
    added = [{"headerName": n.replace("_", "-"), "headerValue": v} for n, v in headers_by_name.items()]
    return {**ev, "EventId": ev["EventId"][:40] + suffix,
            "ContextData": {**ctx, "IpAddress": "10.0.13.22", "HttpHeaders": kept + added}}


@pytest.mark.parametrize("header", [None, "Forwarded", "x-real-ip"])
def test_only_the_forwarding_header_the_proxies_write_chooses_the_address(base, store, monkeypatch, header):
    """The reviewer's spoof: the load balancer appends the real client to X-Forwarded-For and passes the client's
    own Forwarded and X-Real-IP through. Only the header $RISKGATE_CLIENT_IP_HEADER names (X-Forwarded-For by
    default) is believed: an address in BlockedIPRangeList stays blocked whatever the others say."""
    from risk import config as rc
    from risk import store as rstore

    blocked, spoof = "81.2.69.160", "203.0.113.77"
    events = rest_events(base)
    pool = events[0]["UserPoolId"]
    con = rstore.connect(store)
    try:
        rc.set_configuration(con, rc.RiskConfiguration.model_validate({
            "UserPoolId": pool, "RiskExceptionConfiguration": {"BlockedIPRangeList": [f"{blocked}/32"]}}))
    finally:
        con.close()
    monkeypatch.delenv("RISKGATE_TRUSTED_PROXIES", raising=False)
    if header is None:
        monkeypatch.delenv("RISKGATE_CLIENT_IP_HEADER", raising=False)
    else:
        monkeypatch.setenv("RISKGATE_CLIENT_IP_HEADER", header)
    written = {None: "X-Forwarded-For", "Forwarded": "Forwarded", "x-real-ip": "X-Real-IP"}[header]
    values = {"Forwarded": lambda ip: f"for={ip}", "X-Forwarded-For": lambda ip: f"{ip}, 10.0.0.9",
              "X-Real-IP": lambda ip: ip}
    # the real client (blocked) in the header the proxies write, a spoofed address in every other one
    real = {n.replace("-", "_"): values[n](blocked if n == written else spoof) for n in values}
    # and the other way round: the blocked address only in headers the proxies do not write
    posing = {n.replace("-", "_"): values[n](spoof if n == written else blocked) for n in values}
    ev = next(e for e in events if e["UserPoolId"] == pool and e["EventType"] == "SignIn")
    with Service(store) as svc:
        post = lambda body: httpx.post(svc.url + "/v1/evaluate", json=body, headers=headers(), timeout=30)  # noqa: E731
        a = post(_behind_the_load_balancer(ev, "-real", **real))
        b = post(_behind_the_load_balancer(ev, "-posing", **posing))
    assert a.status_code == 200 and b.status_code == 200, (a.text, b.text)
    assert (a.json()["RiskDecision"], a.json()["Outcome"]) == ("Block", "Block")
    assert any("BlockedIPRangeList" in r for r in a.json()["DecisionReasons"]), a.json()
    assert not any("BlockedIPRangeList" in r for r in b.json()["DecisionReasons"]), b.json()  # (scored instead)
    ids = [ev["EventId"][:40] + "-real", ev["EventId"][:40] + "-posing"]
    assert q(store, "SELECT event_id, client_ip, client_ip_source FROM events WHERE event_id IN (?, ?) ORDER BY 1",
             ids) == sorted([(ids[0], blocked, written), (ids[1], spoof, written)])


def test_serve_refuses_a_bad_client_ip_header_before_it_opens_the_store(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    monkeypatch.setenv("RISKGATE_API_KEY", API_KEY)
    monkeypatch.setenv("RISKGATE_CLIENT_IP_HEADER", "X-Client-IP")
    res = CliRunner().invoke(app, ["serve", "--db", str(tmp_path / "x.duckdb")])
    assert res.exit_code == 2, res.output
    assert "RISKGATE_CLIENT_IP_HEADER: 'X-Client-IP' is not one of X-Forwarded-For, Forwarded, X-Real-IP" in res.output
    assert not (tmp_path / "x.duckdb").exists()


def test_serve_refuses_bad_notification_retry_waits_before_it_opens_the_store(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    monkeypatch.setenv("RISKGATE_API_KEY", API_KEY)
    monkeypatch.setenv("RISKGATE_NOTIFY_RETRY_AFTER", "5 minutes")
    res = CliRunner().invoke(app, ["serve", "--db", str(tmp_path / "x.duckdb")])
    assert res.exit_code == 2, res.output
    assert "RISKGATE_NOTIFY_RETRY_AFTER must be seconds, comma-separated (e.g. 300,3600), got '5 minutes'" \
        in " ".join(res.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no store, no lock file


def _bycount(tmp_path) -> str:
    """Pwned Passwords lines ordered by count (the download that cannot be searched by hash)."""
    import hashlib

    rows = [(hashlib.sha1(f"pw-{i}".encode()).hexdigest().upper(), 1000 - i) for i in range(300)]
    path = tmp_path / "pwned-passwords-sha1-ordered-by-count-v8.txt"
    path.write_text("".join(f"{h}:{c}\r\n" for h, c in rows))
    return str(path)


@pytest.mark.parametrize("setting, message", [
    (("RISKGATE_PWNED_PATH", "{tmp}/nonexistent.txt"),
     "error: {tmp}/nonexistent.txt: no such file or folder (Pwned Passwords data)"),
    (("RISKGATE_PWNED_PATH", "{bycount}"), "error: {bycount}: line 3 is out of hash order, and not as one damaged line "
                                            "between lines in order: this file is not sorted by hash"),
    (("RISKGATE_PWNED_MIN_COUNT", "0"), "error: RISKGATE_PWNED_MIN_COUNT must be a whole number >= 1, got '0'"),
    (("RISKGATE_FEEDBACK_TTL", "99999999999999"), "error: RISKGATE_FEEDBACK_TTL must be a whole number of seconds "
                                                  "from 1 to 31536000 (365 days), got '99999999999999'"),
    (("RISKGATE_SMTP_PORT", "smtp"), "error: RISKGATE_SMTP_PORT must be a port number, got 'smtp'"),
    (("RISKGATE_SMTP_TIMEOUT", "soon"), "error: RISKGATE_SMTP_TIMEOUT must be seconds, got 'soon'"),
    (("RISKGATE_SMTP_TIMEOUT", "-5"), "error: RISKGATE_SMTP_TIMEOUT must be seconds, got '-5'"),
    (("RISKGATE_STORE_WAIT", "abc"), "error: RISKGATE_STORE_WAIT must be a number of seconds, got 'abc'"),
    (("RISKGATE_STORE_WAIT", "-1"), "error: RISKGATE_STORE_WAIT must not be negative, got '-1'"),
])
def test_serve_refuses_a_bad_breach_data_token_or_smtp_setting_in_one_line_before_it_starts(tmp_path, setting, message):
    """A real `riskgate serve` with a bad Pwned Passwords setting died after starting with a 30-line traceback
    and exit code 3 (once SIGABRT); with a feedback-token lifetime too long for a date it started and crashed at
    its first notification. Each is refused as `riskgate credentials check` (or `score --notify`) refuses it: one
    line on stderr naming what is wrong, exit code 2, no store opened. So is a bad RISKGATE_STORE_WAIT, as every
    other command refuses it (it said it listened, then logged a traceback and ended with exit code 3)."""
    import os

    names = {"tmp": str(tmp_path), "bycount": _bycount(tmp_path) if "{bycount}" in setting[1] else ""}
    env = {k: v for k, v in os.environ.items() if not k.startswith("RISKGATE_")}
    env.update({"RISKGATE_API_KEY": API_KEY, setting[0]: setting[1].format(**names)})
    if setting[0].startswith("RISKGATE_SMTP_"):  # (checked when a server is set: else emails go to the outbox)
        env["RISKGATE_SMTP_HOST"] = "127.0.0.1"
    cmd = [sys.executable, "-m", "cli", "serve", "--db", str(tmp_path / "x.duckdb"), "--port", "0"]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the service started with {setting}: {exc.stderr}") from None
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(message.format(**names)) and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "x.duckdb").exists()


def test_bad_input_is_refused_with_reasons(base, store):
    ev = rest_events(base)[0]
    with Service(store) as svc:
        post = lambda **kw: httpx.post(svc.url + "/v1/evaluate", headers=headers(), timeout=30, **kw)  # noqa: E731
        r = post(content=b'{"Username": "a", "EventType": ')
        assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
        r = post(json={**ev, "Colour": "blue"})
        assert r.status_code == 422 and r.json()["detail"] == [
            {"loc": "Colour", "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}]
        r = post(json={**ev, "ContextData": {**ev["ContextData"], "Extra": 1}})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "ContextData.Extra"
        r = post(json={**ev, "EventType": 5})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "EventType"
        r = post(json={**ev, "EventType": "LogIn"})  # what ingest would quarantine, with its reason
        assert r.status_code == 422 and "EventType \"LogIn\" is not one of" in r.json()["detail"][0]["msg"]
        r = post(json={**ev, "ContextData": {**ev["ContextData"], "IpAddress": "999.1.1.1"}})
        assert r.status_code == 422 and "is not an IPv4 or IPv6 address" in r.json()["detail"][0]["msg"]
        for blank in ("", " \t"):  # context data without an address: no IP-range exception could ever match it
            r = post(json={**ev, "ContextData": {**ev["ContextData"], "IpAddress": blank}})
            assert r.status_code == 422 and r.json()["detail"][0]["msg"] == (
                "ContextData.IpAddress is required when ContextData is present"), r.text
        # 10 MB: refused before parsing, with a declared length and chunked
        big = b'{"Username": "' + b"a" * (10 * 1024 * 1024) + b'"}'
        r = post(content=big)
        assert r.status_code == 413 and "over 1048576 bytes" in r.json()["error"]

        def chunks():
            for _ in range(10):
                yield b"x" * (1024 * 1024)

        r = post(content=chunks())
        assert r.status_code == 413
        assert post(json=ev).status_code == 200  # and the service still answers


def test_client_disconnects_and_concurrency(base, store):
    events = rest_events(base)[:30]
    with Service(store) as svc:
        # a client that sends half its body and goes away
        s = socket.create_connection(("127.0.0.1", svc.port))
        s.sendall(b"POST /v1/evaluate HTTP/1.1\r\nHost: x\r\nX-Api-Key: " + API_KEY.encode()
                  + b"\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"Username\": ")
        s.close()
        # one that sends a whole request and leaves before the answer: the event is still stored
        s = socket.create_connection(("127.0.0.1", svc.port))
        body = json.dumps(events[0]).encode()
        s.sendall(b"POST /v1/evaluate HTTP/1.1\r\nHost: x\r\nX-Api-Key: " + API_KEY.encode()
                  + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                  + b"\r\n\r\n" + body)
        s.close()
        # concurrent requests
        with httpx.Client(timeout=60) as client, concurrent.futures.ThreadPoolExecutor(12) as pool:
            rs = list(pool.map(lambda e: client.post(svc.url + "/v1/evaluate", json=e, headers=headers()), events[1:]))
        assert [r.status_code for r in rs] == [200] * 29
        assert {r.json()["EventId"] for r in rs} == {e["EventId"] for e in events[1:]}
        deadline = time.monotonic() + 30
        while svc.worker.queued() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(svc.url + "/healthz").json()["status"] == "ok"
    ids = [e["EventId"] for e in events]
    n = q(store, f"SELECT count(*) FROM events WHERE event_id IN ({', '.join('?' * len(ids))})", ids)[0][0]
    assert n == 30
    assert q(store, f"SELECT count(*) FROM assessments WHERE event_id IN ({', '.join('?' * len(ids))})", ids)[0][0] == 30


def test_the_password_is_never_stored_logged_or_echoed(base, store, caplog, capfd):
    ev = rest_events(base)[0]
    password = "RISKGATE-TEST-" + uuid.uuid4().hex  # the test hook: always "compromised"
    caplog.set_level(logging.DEBUG)
    with Service(store) as svc:
        r = httpx.post(svc.url + "/v1/evaluate", json={**ev, "Password": password}, headers=headers(), timeout=30)
        assert r.status_code == 200 and r.json()["CompromisedCredentialsDetected"] is True
        texts = [r.text]
        for bad in ({**ev, "Password": password, "Nope": 1}, {**ev, "Password": 12345, "Username": None},
                    {"Password": password}, {**ev, "Password": password, "EventType": "Nope"}):
            r = httpx.post(svc.url + "/v1/evaluate", json=bad, headers=headers(), timeout=30)
            assert r.status_code == 422
            texts.append(r.text)
        r = httpx.post(svc.url + "/v1/evaluate", json={**ev, "Password": password}, headers={"X-Api-Key": "no"})
        texts.append(r.text)
    out, err = capfd.readouterr()
    for text in texts + [caplog.text, out, err]:
        assert password not in text and password.lower() not in text
    assert "12345" not in "".join(texts)
    for f in store.parent.iterdir():
        data = f.read_bytes() if f.is_file() else b""
        assert password.encode() not in data, f.name
    assert q(store, "SELECT compromised FROM credential_checks WHERE event_id = ?", [ev["EventId"]]) == [(True,)]


def test_a_failed_guess_of_a_breached_password_blocks_without_resetting_and_own_mfa_is_challenged_in_audit(base, store):
    """A wrong password that is a breached one is not the user's: the attempt is blocked, the user is not made
    RESET_REQUIRED (anyone could lock anyone out by guessing common passwords); the same password accepted is.
    In AUDIT a user with MFA of their own is still told to be challenged: that is the pool's MFA, no risk action."""
    events = rest_events(base)
    users = q(store, "SELECT username FROM users WHERE len(mfa_settings) > 0 AND user_status = 'CONFIRMED' LIMIT 1")
    mfa_user = users[0][0]
    ev = {**events[0], "Username": mfa_user}
    sql = "SELECT user_status FROM users WHERE username = ?"
    with Service(store) as svc:
        out = httpx.post(svc.url + "/v1/evaluate", json=ev, headers=headers(), timeout=30).json()
        assert (out["Mode"], out["Action"], out["ChallengeMfa"]) == ("AUDIT", "MfaChallenge", True)
    rg("mode", "ENFORCED", db=store)
    password = "RISKGATE-TEST-" + uuid.uuid4().hex  # the test hook: always "compromised"
    with Service(store) as svc:
        failed = {**events[1], "Username": mfa_user, "EventResponse": "Fail", "Password": password}
        out = httpx.post(svc.url + "/v1/evaluate", json=failed, headers=headers(), timeout=30).json()
        assert (out["Action"], out["CompromisedCredentialsDetected"], out["ResetRequired"]) == ("Block", True, False)
        assert svc.worker.call(lambda con: con.execute(sql, [mfa_user]).fetchall()).result(30) == [("CONFIRMED",)]
        passed = {**events[2], "Username": mfa_user, "EventResponse": "Pass", "Password": password}
        out = httpx.post(svc.url + "/v1/evaluate", json=passed, headers=headers(), timeout=30).json()
        assert (out["Action"], out["ResetRequired"]) == ("Block", True)
    assert q(store, sql, [mfa_user]) == [("RESET_REQUIRED",)]


def test_a_feedback_links_token_never_reaches_the_access_log(tmp_path):
    """`riskgate serve` logs one line per request; a one-click link's token (replayable until it expires) is
    logged as [redacted]."""
    import os

    number = free_port()
    env = {**os.environ, "RISKGATE_API_KEY": API_KEY, "RISKGATE_FEEDBACK_SECRET": "x" * 32}
    proc = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--db", str(tmp_path / "s.duckdb"), "--port",
                             str(number)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    token = "eyJlIjoiZXYtMSJ9.c2VjcmV0LXNpZ25hdHVyZQ"
    try:
        wait_until_serving(number, proc)
        r = httpx.get(f"http://127.0.0.1:{number}/v1/feedback", params={"token": token, "value": "valid"})
        assert r.status_code in (400, 403, 404)  # a forged token: refused
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert "GET /v1/feedback?token=[redacted]&value=valid" in out, out  # uvicorn's access log: on stdout
    assert token not in out + err and token[:20] not in out + err


def test_a_feedback_token_under_a_percent_encoded_key_never_reaches_the_access_log(tmp_path):
    """`tok%65n=` is `token=` to the feedback route (the query is decoded): such a request was served with the
    token and logged with the token in clear. The key is read decoded, as the route reads it."""
    import os

    from risk.notify import make_token

    number = free_port()
    secret = "x" * 32
    env = {**os.environ, "RISKGATE_API_KEY": API_KEY, "RISKGATE_FEEDBACK_SECRET": secret}
    proc = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--db", str(tmp_path / "s.duckdb"), "--port",
                             str(number)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    keys = ("token", "tok%65n", "%74%6F%6B%65%6E", "%74oken")
    tokens = {key: make_token(f"ev-{i}", "alice", secret=secret) for i, key in enumerate(keys)}  # real, signed
    try:
        wait_until_serving(number, proc)
        answers = {}
        for key, token in tokens.items():
            r = httpx.get(f"http://127.0.0.1:{number}/v1/feedback?{key}={token}&value=valid")
            answers[key] = (r.status_code, r.text)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    # the route reads each key as the token: its signed event is named (an event the store lacks)
    assert {key: (status, text.count(f"<p>This link cannot be used: no event with EventId &#x27;ev-{i}&#x27; in the "
                                     "store.</p>")) for i, (key, (status, text)) in enumerate(answers.items())} == {
        key: (400, 1) for key in keys}
    for key, token in tokens.items():
        assert f"GET /v1/feedback?{key}=[redacted]&value=valid" in out, out
        assert token not in out + err and token.split(".")[1] not in out + err


class _SlowHandler:
    def __init__(self, delay: float):
        self.delay = delay
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        import asyncio

        await asyncio.sleep(self.delay)
        self.messages.append(envelope)
        return "250 OK"


def test_a_slow_smtp_server_never_slows_the_answer(base, store, monkeypatch):
    from aiosmtpd.controller import Controller

    from risk import config as rc
    from risk import levels
    from risk import store as rstore

    con = rstore.connect(store)
    try:
        rc.set_mode(con, "ENFORCED")
        levels.set_thresholds(con, levels.Thresholds(0.0, 0.0, 0.0))  # every event High: MFA_REQUIRED, Notify
    finally:
        con.close()
    handler = _SlowHandler(2.0)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    smtp_port = sock.getsockname()[1]
    sock.close()
    controller = Controller(handler, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    monkeypatch.setenv("RISKGATE_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("RISKGATE_SMTP_PORT", str(smtp_port))
    monkeypatch.setenv("RISKGATE_FEEDBACK_SECRET", "s" * 32)
    monkeypatch.setenv("RISKGATE_PUBLIC_URL", "https://risk.example.com")
    events = rest_events(base)[:3]
    try:
        with Service(store) as svc:
            times = []
            for ev in events:
                t0 = time.monotonic()
                r = httpx.post(svc.url + "/v1/evaluate", json=ev, headers=headers(), timeout=30)
                times.append(time.monotonic() - t0)
                assert r.status_code == 200
                assert r.json()["RiskLevel"] == "High" and r.json()["Notification"] in ("MfaEmail", "BlockEmail")
            assert max(times) < 2.0, times  # the first email alone takes 2 s to accept
            deadline = time.monotonic() + 30
            while (len(handler.messages) < 3 or svc.app.state.riskgate["notifier"].pending()) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)  # the store thread records the last outcome
    finally:
        controller.stop()
    assert len(handler.messages) == 3
    rows = q(store, "SELECT event_id, status FROM notifications ORDER BY event_id")
    assert sorted(rows) == sorted((e["EventId"], "sent") for e in events)


def _features_equal(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a == b or (math.isnan(a) and math.isnan(b))


def test_batch_and_inline_give_the_same_features_and_scores(base, tmp_path):
    """A stream replayed through POST /v1/evaluate, and through `riskgate ingest` + `riskgate score`."""
    from risk import levels
    from risk import store as rstore
    from risk.features import compute_features
    from risk.signals import FEATURE_COLUMNS

    events = rest_events(base)[:25]
    inline_db = copy_store(base, tmp_path / "inline.duckdb")
    batch_db = copy_store(base, tmp_path / "batch.duckdb")
    for db in (inline_db, batch_db):  # every event at a level: each assessment has its reasons to compare
        con = rstore.connect(db)
        try:
            levels.set_thresholds(con, levels.Thresholds(0.0, 0.0, 0.0))
        finally:
            con.close()
    inline = {}
    with Service(inline_db) as svc, httpx.Client(timeout=30) as client:
        for ev in events:  # in time order, one at a time, as sign-ins arrive
            r = client.post(svc.url + "/v1/evaluate?features=true", json=ev, headers=headers())
            assert r.status_code == 200, r.text
            inline[ev["EventId"]] = r.json()
    with open(tmp_path / "stream.jsonl", "w") as fh:
        for ev in events:
            fh.write(json.dumps(ev) + "\n")
    rg("ingest", tmp_path / "stream.jsonl", db=batch_db)
    rg("score", db=batch_db)
    con = rstore.connect(batch_db, read_only=True)
    try:
        ids = [e["EventId"] for e in events]
        feats = {row["event_id"]: row for row in compute_features(con, event_ids=ids).to_pylist()}
        cur = con.execute("SELECT event_id, score, risk_level, risk_decision, outcome FROM assessments")
        batch = {r[0]: r[1:] for r in cur.fetchall() if r[0] in inline}
    finally:
        con.close()
    assert set(batch) == set(inline) == set(feats)
    for eid, out in inline.items():
        for col in FEATURE_COLUMNS:
            assert _features_equal(out["Features"][col], feats[eid][col]), (eid, col, out["Features"][col], feats[eid][col])
        assert (out["Score"], out["RiskLevel"], out["RiskDecision"], out["Outcome"]) == batch[eid], eid
    # and the stored assessments agree in every column but the run's (the service's were written from dicts)
    cols = [c for c in ASSESSMENT_COLUMNS if c not in ("run_id", "scored_at")]
    sql = f"SELECT {', '.join(cols)} FROM assessments WHERE event_id IN ({', '.join('?' * len(ids))}) ORDER BY event_id"
    stored = {name: q(db, sql, ids) for name, db in (("inline", inline_db), ("batch", batch_db))}
    assert len(stored["inline"]) == len(ids) and any(r[cols.index("reasons")] for r in stored["batch"])
    assert stored["inline"] == stored["batch"]


def test_the_service_keeps_answering_while_a_batch_score_runs(base, store):
    """A real `riskgate score` process over the same store: the two take turns; every request gets 200."""
    events = rest_events(base)[:20]
    n_before = q(store, "SELECT count(*) FROM events")[0][0]
    with Service(store, min_hold=0.1) as svc, httpx.Client(timeout=60) as client:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "score", "--chunk-rows", "400", "--json", "--db", str(store)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        codes = []
        for ev in events:
            codes.append(client.post(svc.url + "/v1/evaluate", json=ev, headers=headers()).status_code)
            time.sleep(0.05)
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        assert codes == [200] * len(events)
        assert svc.worker.handovers >= 1
    scored = json.loads(out)["events_scored"]
    assert q(store, "SELECT count(*) FROM events")[0][0] == n_before + len(events)
    # every event has exactly one assessment: the batch job's or the service's
    assert q(store, "SELECT count(*), count(DISTINCT event_id) FROM assessments") == [(n_before + len(events),) * 2]
    assert scored == n_before


def test_a_hand_over_that_cannot_take_the_store_back_recovers_once_it_is_free(base, store, monkeypatch):
    """Another process keeps the store longer than the service's wait (a notebook, a long job that does not take
    turns): the service's taking it back fails. It used to stay closed for good (every request 503 without
    Retry-After, /healthz "ok"); now it answers 503 with Retry-After and says unavailable meanwhile, and serves
    again once the store is free."""
    monkeypatch.setenv("RISKGATE_STORE_WAIT", "2")
    events = rest_events(base)[:2]
    hold = ("import sys, time\nfrom risk import store\ncon = store.connect(sys.argv[1], wait=60)\n"
            "print('held', flush=True)\ntime.sleep(float(sys.argv[2]))\ncon.close()\n")
    with Service(store, min_hold=0.1, request_timeout=1) as svc, httpx.Client(timeout=30) as client:
        assert client.post(svc.url + "/v1/evaluate", json=events[0], headers=headers()).status_code == 200
        proc = subprocess.Popen([sys.executable, "-c", hold, str(store), "6"], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "held"  # the service handed the store over
        deadline = time.monotonic() + 20
        while client.get(svc.url + "/healthz").json()["status"] == "ok" and time.monotonic() < deadline:
            time.sleep(0.2)  # ... and could not take it back within its 2 s
        assert client.get(svc.url + "/healthz").json()["status"] == "unavailable"
        r = client.post(svc.url + "/v1/evaluate", json=events[1], headers=headers())
        assert r.status_code == 503 and r.headers.get("retry-after") == "1"
        assert proc.wait(30) == 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            r = client.post(svc.url + "/v1/evaluate", json=events[1], headers=headers())
            if r.status_code == 200:
                break
            assert r.status_code == 503 and r.headers.get("retry-after") == "1"
            time.sleep(0.3)
        assert r.status_code == 200
        assert client.get(svc.url + "/healthz").json()["status"] == "ok"
    assert q(store, "SELECT count(*) FROM events WHERE event_id IN (?, ?)", [e["EventId"] for e in events]) == [(2,)]


def _serve(tmp_path, *args, **popen):
    import os

    env = {**os.environ, "RISKGATE_API_KEY": API_KEY}
    cmd = [sys.executable, "-m", "cli", "serve", "--db", str(tmp_path / "s.duckdb"), *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_serve_on_a_port_in_use_is_one_line_and_exit_2_before_saying_it_listens(tmp_path):
    """It printed "listening on" first, then uvicorn's error and exit 3 after 8 lines."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _serve(tmp_path, "--port", str(port))
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert err == f"error: cannot listen on 127.0.0.1:{port}: Address already in use (another process listens there)\n"
    proc = _serve(tmp_path, "--host", "256.1.1.1")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and err.startswith("error: cannot listen on 256.1.1.1:8080: ") and err.count("\n") == 1


def _port_it_says_it_listens_on(proc, seen: list | None = None) -> int:
    """The port of the line ``riskgate serve`` (``_serve``'s, on s.duckdb) prints on stderr once it listens; the
    lines before it (uvicorn's, the warnings of its start) and it are appended to ``seen``."""
    import re

    seen = [] if seen is None else seen
    for line in proc.stderr:
        seen.append(line)
        found = re.fullmatch(r"riskgate serve: store .*s\.duckdb, listening on http://127\.0\.0\.1:(\d+)\n", line)
        if found:
            return int(found.group(1))
    raise AssertionError(f"it never said it listens:\n{''.join(seen)}")


def test_serve_says_it_listens_only_once_its_port_accepts_and_the_store_is_ready(base, store):
    """The line came before uvicorn had started, the store opened or its state loaded: a client that connected
    when it appeared was refused for about 3.7 s. Connected at once, it is answered, by a service whose store is
    open."""
    proc = _serve(store.parent, "--port", "0")
    try:
        port = _port_it_says_it_listens_on(proc)
        r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)  # no retry: refused would fail here
        assert r.status_code == 200 and r.json()["status"] == "ok", r.text
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


HOLDERS = {
    # a notebook's plain DuckDB connection: DuckDB's own lock names the process
    "duckdb": "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('holding', flush=True); sys.stdin.read()",
    # another riskgate process: its turn on the store (ingest.lease) names it
    "riskgate": "from ingest import store; import sys; con = store.connect(sys.argv[1]); print('holding', flush=True); "
                "sys.stdin.read()",
}


@pytest.mark.parametrize("holder", sorted(HOLDERS))
def test_serve_on_a_store_held_past_the_wait_is_one_line_naming_the_holder_and_exit_2(tmp_path, holder):
    """It said it listened, then logged a 40-line traceback ("Application startup failed") and ended with exit code
    3; every other command says in one line who holds the store, and exits 2."""
    import os
    from pathlib import Path

    db = tmp_path / "s.duckdb"
    hold = subprocess.Popen([sys.executable, "-c", HOLDERS[holder], str(db)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    try:
        assert hold.stdout.readline() == "holding\n"
        env = {**os.environ, "RISKGATE_API_KEY": API_KEY, "RISKGATE_STORE_WAIT": "1"}
        done = subprocess.run([sys.executable, "-m", "cli", "serve", "--db", str(db), "--port", "0"], env=env,
                              capture_output=True, text=True, timeout=60)
    finally:
        hold.stdin.close()
        hold.wait(30)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: {db}: ") and done.stderr.count("\n") == 1, done.stderr
    assert f"(PID {hold.pid})" in done.stderr or f"in use by pid {hold.pid} (" in done.stderr, done.stderr


def test_serve_says_the_port_it_got_and_ctrl_c_is_interrupted_130_without_a_traceback(tmp_path):
    """--port 0 said port 0; Ctrl-C exited 0 (uvicorn.run swallows it) without the "interrupted" of every other
    command; a store without a model logged a traceback at start (each request says "no trained model")."""
    import signal

    proc = _serve(tmp_path, "--port", "0")
    before = []
    try:
        port = _port_it_says_it_listens_on(proc, before)
        assert port > 0
        wait_until_serving(port, proc)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/evaluate", headers=headers(), json={"Username": "a"}, timeout=30)
        assert r.status_code in (422, 503), r.text
        proc.send_signal(signal.SIGINT)
        _out, after = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = "".join(before) + after
    assert proc.returncode == 130, err
    assert err.rstrip().endswith("interrupted"), err
    assert "Traceback" not in err, err
    assert "could not prepare the scorer before the first request: no trained model in the store" in err, err
