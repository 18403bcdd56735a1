"""Notifications: who is emailed about what, what the service says about it, and the settings refused.

1. An email is due only from an event's first assessment (the decision actually taken about the sign-in): a later
   ``riskgate score --rescore --notify`` under ENFORCED emailed "we blocked a sign-in" about sign-ins the service
   had allowed (in AUDIT, or at no risk).
2. The service logs each failed attempt (WARNING) and each email sent after one (INFO), on stderr.
3. An SMTP login without SSL or STARTTLS is refused unless the relay is on loopback.
4. A public URL with a query, fragment or user info (every link dead) is refused.
5. An ingest whose events make the store know a second pool, leaving users loaded without a pool id in none (every
   email to them fails), says so; so does the service, at start and with each such failure.

Real parts throughout: aiosmtpd on loopback, DuckDB files, the service under uvicorn on 127.0.0.1, the CLI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from aiosmtpd.smtp import AuthResult
from typer.testing import CliRunner

from cli import app as cli_app
from ingest.errors import ConfigurationError
from risk import notify as nt
from tests import test_notify
from tests.service_support import API_KEY, Service, copy_store, headers, rest_events, rg
from tests.storedb import q
from tests.test_notify_reliability import Recorder, base, db, env, smtp, statuses  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parent.parent


def _set(db, *, mode: str, thresholds: tuple[float, float, float]) -> None:
    from risk import config as rc
    from risk import levels
    from risk import store as rstore

    con = rstore.connect(db)
    try:
        rc.set_mode(con, mode)
        levels.set_thresholds(con, levels.Thresholds(*thresholds))
    finally:
        con.close()


def _evaluate(db, ev: dict) -> dict:
    with Service(db, notify_retry_every=600) as svc:
        r = httpx.post(svc.url + "/v1/evaluate", json=ev, headers=headers(), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


# -- 1. an email is due only from an event's first assessment -----------------------------------------------------


def test_a_rescore_emails_nobody_about_sign_ins_assessed_before(base, tmp_path, smtp):
    """The tester's run: the service answered a risky sign-in in AUDIT (Allow, no email), and another in ENFORCED
    at no risk (Allow, no email); after `mode ENFORCED` and thresholds that make everything High, `score --rescore
    --notify` re-decided both as challenged or blocked and emailed the users about sign-ins that went through (and
    about history a run without --notify had assessed). Only an event assessed for the first time is emailed; the
    rescore records what it would send (``would_notify``) and keeps the first assessment's ``notification``."""
    db = copy_store(base, tmp_path / "s.duckdb")
    recorder = Recorder()
    smtp(recorder)
    ev0, ev1, ev2 = rest_events(base)[:3]

    _set(db, mode="AUDIT", thresholds=(0.0, 0.0, 0.0))  # every sign-in High
    a0 = _evaluate(db, ev0)
    # (let through: challenged only when the user has MFA of their own, as every sign-in of theirs is)
    assert (a0["Mode"], a0["RiskLevel"], a0["Notification"]) == ("AUDIT", "High", None) and a0["Action"] != "Block", a0
    _set(db, mode="ENFORCED", thresholds=(1.0, 1.0, 1.0))  # every sign-in at no risk
    a1 = _evaluate(db, ev1)
    assert (a1["Mode"], a1["RiskDecision"], a1["Notification"]) == ("ENFORCED", "NoRisk", None), a1

    # history a run without --notify assessed (due, never sent), and a sign-in ingested since (never assessed)
    _set(db, mode="ENFORCED", thresholds=(0.0, 0.0, 0.0))
    t0 = datetime.fromisoformat(ev0["CreationDate"].replace("Z", "+00:00"))
    tail = [r[0] for r in q(db, "SELECT event_id FROM events WHERE creation_date < ? ORDER BY creation_date DESC "
                                "LIMIT 2", [t0])]
    since = q(db, "SELECT min(creation_date) FROM events WHERE list_contains(?, event_id)", [tail])[0][0].isoformat()
    rg("score", "--since", since, "--until", t0.isoformat(), db=db)
    (tmp_path / "new.jsonl").write_text(json.dumps(ev2) + "\n")
    rg("ingest", tmp_path / "new.jsonl", db=db)

    # without --rescore: only the new event is assessed, and its user is emailed (the first assessment)
    out = json.loads(rg("score", "--notify", "--json", "--since", since, db=db).stdout)
    assert (out["events_scored"], out["notifications"], out["notifications_failed"]) == (1, 1, 0), out
    assert recorder.event_ids() == [ev2["EventId"]]

    # the rescore decides every one of them anew under ENFORCED, every level notifying: nobody is emailed
    out = json.loads(rg("score", "--rescore", "--notify", "--json", "--since", since, db=db).stdout)
    assert (out["events_scored"], out["notifications"], out["notifications_failed"]) == (5, 0, 0), out
    assert recorder.event_ids() == [ev2["EventId"]]
    assert statuses(db) == {ev2["EventId"]: ["sent"]}
    rows = {r[0]: r[1:] for r in q(db, "SELECT event_id, mode, outcome, notification, would_notify, "
                                       "decision_reasons[-1] FROM assessments WHERE list_contains(?, event_id)",
                                   [[ev0["EventId"], ev1["EventId"], ev2["EventId"], *tail]])}
    for event_id in (ev0["EventId"], ev1["EventId"], *tail):
        mode, outcome, notification, would_notify, reason = rows[event_id]
        assert mode == "ENFORCED" and outcome in ("MfaChallenge", "Block") and would_notify, rows[event_id]
        if event_id in tail:  # the notification its first assessment made due (never sent: no --notify then)
            assert notification == would_notify
        else:  # the service's answer made none due
            assert notification is None
            assert reason == f"{would_notify} not sent: assessed again; an email is due only from a sign-in's " \
                             "first assessment", rows[event_id]
    assert rows[ev2["EventId"]][2] is not None
    # and a run that only sends what is owed owes nothing about them
    out = json.loads(rg("score", "--notify", "--json", "--since", "2100-01-01T00:00:00Z", db=db).stdout)
    assert out["notifications"] == 0 and recorder.event_ids() == [ev2["EventId"]]


# -- 2. the service logs each failed attempt and each email sent after one ------------------------------------------


class BusyOnce(Recorder):
    """Refuses each recipient once (450, quoting the address, as servers do), then takes the message."""

    def __init__(self):
        super().__init__()
        self.refused: list[str] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address not in self.refused:
            self.refused.append(address)
            return f"450 4.2.1 <{address}>: mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def _recipient(db, username: str) -> str:
    (email_address,) = q(db, "SELECT email FROM users WHERE username = ?", [username])[0]
    assert email_address
    return email_address


def test_the_service_logs_a_failed_attempt_and_the_retry_that_sent_it(base, db, smtp, caplog):
    """With the SMTP server refusing, the notifications table said `failed` and the service's log nothing; the later
    successful retry was not logged either. Now each failed attempt is a WARNING (template, event id, attempt,
    reason, never the recipient's address even when the server quotes it), and the email sent on a later attempt
    is an INFO line, through the service's logger."""
    import logging

    server = BusyOnce()
    port = smtp(server)
    ev = rest_events(base)[0]
    address = _recipient(db, ev["Username"])
    with caplog.at_level(logging.INFO, logger="riskgate.service"):
        with Service(db, notify_retry_every=0.05) as svc:
            r = httpx.post(svc.url + "/v1/evaluate", json=ev, headers=headers(), timeout=30)
            template = r.json()["Notification"]
            assert r.status_code == 200 and template, r.text
            deadline = time.monotonic() + 30
            while len(server.envelopes) < 1 or not any("sent on attempt" in m.getMessage() for m in caplog.records):
                assert time.monotonic() < deadline, [m.getMessage() for m in caplog.records]
                time.sleep(0.05)
    said = [(m.levelname, m.getMessage()) for m in caplog.records if m.name == "riskgate.service"
            and "notification " in m.getMessage() and ev["EventId"] in m.getMessage()]
    assert said == [
        ("WARNING", f"notification {template} about event {ev['EventId']} failed (attempt 1 of {nt.MAX_ATTEMPTS}; "
                    f"tried again later): SMTP server 127.0.0.1:{port} refused the recipient: 450 4.2.1 "
                    "<[recipient]>: mailbox busy, try again later"),
        ("INFO", f"notification {template} about event {ev['EventId']} sent on attempt 2 (after 1 failed)"),
    ], said
    assert server.refused == [address] and address not in caplog.text and "token=" not in caplog.text


def _serve(db, env: dict) -> tuple[subprocess.Popen, str]:
    """A real `riskgate serve` on a free port of 127.0.0.1 (its stderr read by the caller), and its URL."""
    proc = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--db", str(db), "--port", "0"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = ""
    while not (match := re.search(r"listening on (http://127\.0\.0\.1:\d+)", seen)):  # (after uvicorn's lines)
        line = proc.stderr.readline()
        if not line:
            proc.kill()
            raise AssertionError(seen + proc.stderr.read())
        seen += line
    url = match.group(1)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=5).json()["status"] == "ok":
                return proc, url
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.1)


def _until_unsent(url: str, figures: dict, timeout: float = 60.0) -> None:
    """Wait until the service's /healthz counts ``figures`` unsent notifications in its store."""
    deadline = time.monotonic() + timeout
    while (seen := httpx.get(url + "/healthz", timeout=5).json()["notifications_unsent"]) != figures:
        assert time.monotonic() < deadline, seen
        time.sleep(0.2)


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def test_riskgate_serve_writes_failed_and_retried_notifications_on_stderr(base, db, smtp):
    """The tester's run, with a real `riskgate serve`: SMTP down, a sign-in answered with a notification, and
    stdout and stderr said nothing (nor, once the server was back, about the retry that sent it: INFO lines of the
    service's logger reached no handler)."""
    ev = rest_events(base)[0]
    address = _recipient(db, ev["Username"])
    down = test_notify.free_port()  # nothing listens there: "Connection refused"
    env = {**os.environ, "RISKGATE_API_KEY": API_KEY, nt.SMTP_HOST_ENV: "127.0.0.1", nt.SMTP_PORT_ENV: str(down)}
    proc, url = _serve(db, env)
    try:
        r = httpx.post(url + "/v1/evaluate", json=ev, headers=headers(), timeout=30)
        assert r.status_code == 200 and r.json()["Notification"], r.text
        _until_unsent(url, {"pending": 0, "to_retry": 1})  # attempted, failed, recorded
    finally:
        err = _stop(proc)
    assert statuses(db) == {ev["EventId"]: ["failed"]}, err
    template = r.json()["Notification"]
    assert (f"WARNING:  notification {template} about event {ev['EventId']} failed (attempt 1 of {nt.MAX_ATTEMPTS}; "
            f"tried again later): cannot connect to SMTP server 127.0.0.1:{down}: [Errno 111] Connection refused") \
        in err, err

    recorder = Recorder()
    port = smtp(recorder)  # the server is back (elsewhere): the next start sends what failed
    proc, url = _serve(db, {**env, nt.SMTP_PORT_ENV: str(port)})
    try:
        _until_unsent(url, {"pending": 0, "to_retry": 0})  # tried again at start, sent, recorded
    finally:
        err = _stop(proc)
    assert recorder.event_ids() == [ev["EventId"]]
    assert f"INFO:     notification {template} about event {ev['EventId']} sent on attempt 2 (after 1 failed)" in err, err
    assert address not in err


# -- 3. an SMTP login never travels unencrypted beyond this machine --------------------------------------------------


def test_an_smtp_login_without_tls_is_refused_unless_the_relay_is_on_loopback(monkeypatch):
    monkeypatch.setenv(nt.SMTP_USER_ENV, "relay")
    monkeypatch.setenv(nt.SMTP_PASSWORD_ENV, "s3cret-relay")
    for host in ("mail.example.com", "192.0.2.25", "[2001:db8::25]", "localhost.example.com"):
        monkeypatch.setenv(nt.SMTP_HOST_ENV, host)
        with pytest.raises(ConfigurationError) as caught:
            nt.check_settings()
        said = str(caught.value)
        assert said.startswith("RISKGATE_SMTP_USER is set and neither RISKGATE_SMTP_SSL nor RISKGATE_SMTP_STARTTLS: "
                               f"the SMTP login (user and password) would travel unencrypted to {host!r}"), said
        assert "\n" not in said and "s3cret-relay" not in said
        for tls in (nt.SMTP_SSL_ENV, nt.SMTP_STARTTLS_ENV):  # either encrypts the login
            monkeypatch.setenv(tls, "true")
            nt.check_settings()
            monkeypatch.delenv(tls)
    for host in ("127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost", "LocalHost.", "relay.localhost"):
        monkeypatch.setenv(nt.SMTP_HOST_ENV, host)
        nt.check_settings()  # a local relay: the login never leaves the machine
    monkeypatch.delenv(nt.SMTP_USER_ENV)
    monkeypatch.setenv(nt.SMTP_HOST_ENV, "mail.example.com")
    nt.check_settings()  # no login: nothing secret on the wire


class Logins:
    def __init__(self):
        self.seen = []

    def __call__(self, server, session, envelope, mechanism, auth_data):
        self.seen.append((mechanism, auth_data.login, session.ssl is not None))
        return AuthResult(success=(auth_data.login, auth_data.password) == (b"relay", b"s3cret-relay"), handled=False)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_a_relay_on_loopback_may_take_the_login_without_tls(tmp_path, smtp, monkeypatch):
    """The tester's repro (a relay on 127.0.0.1 that offers AUTH without TLS): allowed, as a local relay."""
    recorder, logins = Recorder(), Logins()
    smtp(recorder, authenticator=logins, auth_required=True, auth_require_tls=False)
    monkeypatch.setenv(nt.SMTP_USER_ENV, "relay")
    monkeypatch.setenv(nt.SMTP_PASSWORD_ENV, "s3cret-relay")
    nt.check_settings()
    rec = nt.notify(None, {"event_id": "ev-1", "username": "alice"}, "BlockEmail",
                    {"Subject": "Sign-in", "TextBody": "Hello {username}"}, {"From": "security@example.com"},
                    "alice@example.org", record=False)
    assert rec.status == "sent", rec.reason
    assert logins.seen == [("PLAIN", b"relay", False)] and len(recorder.envelopes) == 1


def test_score_notify_and_serve_refuse_an_smtp_login_without_tls_in_one_line(base, db, tmp_path, monkeypatch):
    monkeypatch.setenv(nt.SMTP_HOST_ENV, "smtp.example.com")  # refused before anything connects to it
    monkeypatch.setenv(nt.SMTP_USER_ENV, "relay")
    monkeypatch.setenv(nt.SMTP_PASSWORD_ENV, "s3cret-relay")
    runs = q(db, "SELECT count(*) FROM score_runs")
    res = CliRunner().invoke(cli_app, ["score", "--notify", "--db", str(db)])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: RISKGATE_SMTP_USER is set and neither RISKGATE_SMTP_SSL nor "
                                 "RISKGATE_SMTP_STARTTLS"), res.stderr
    assert "s3cret-relay" not in res.output
    assert q(db, "SELECT count(*) FROM score_runs") == runs and q(db, "SELECT count(*) FROM notifications") == [(0,)]
    cmd = [sys.executable, "-m", "cli", "serve", "--db", str(tmp_path / "x.duckdb"), "--port", "0"]
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "RISKGATE_API_KEY": API_KEY}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: RISKGATE_SMTP_USER is set and neither RISKGATE_SMTP_SSL nor "
                                  "RISKGATE_SMTP_STARTTLS") and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "x.duckdb").exists()


# -- 4. a public URL whose links could never reach the feedback route is refused -----------------------------------


@pytest.mark.parametrize("url, said", [
    ('http://127.0.0.1:8781/x?a=1"><b>', "must not have a query (?...) or fragment (#...)"),
    ("https://risk.example.com/?", "must not have a query (?...) or fragment (#...)"),
    ("https://risk.example.com/rg#top", "must not have a query (?...) or fragment (#...)"),
    ("https://admin:hunter2@risk.example.com", "must not hold user info"),
    ('https://risk.example.com/x"><b>', "holds characters a URL may not"),
    ("https://risk.example.com/my links", "holds characters a URL may not"),
    ("https://risk.example.com:99999", "has a bad port"),
    ("http://[::1", "must be an http(s) URL"),  # (a review: urlsplit's ValueError was a traceback, exit 1)
    ("https://:80", "must be an http(s) URL"),  # no host
    ("http://admin:hunter2@[::1", "must be an http(s) URL"),  # (and the password not echoed)
])
def test_a_public_url_with_a_query_fragment_or_user_info_is_refused(url, said, monkeypatch):
    """Such a URL was accepted and every link became `URL/v1/feedback?token=...`: the route inside the query (or
    fragment), dead. It is refused naming the variable, by `score --notify` and `serve` alike (check_settings)."""
    monkeypatch.setenv(nt.PUBLIC_URL_ENV, url)
    for check in (nt.public_url, nt.check_settings):
        with pytest.raises(ConfigurationError) as caught:
            check()
        assert str(caught.value).startswith(f"{nt.PUBLIC_URL_ENV} {said}"), str(caught.value)
        assert "hunter2" not in str(caught.value)
    with pytest.raises(ConfigurationError, match=nt.PUBLIC_URL_ENV):
        nt.feedback_links("tok")


def test_a_public_url_with_a_path_port_or_ipv6_host_still_makes_links(monkeypatch):
    for url, base in (("https://risk.example.com/", "https://risk.example.com"),
                      ("http://127.0.0.1:8781/riskgate/", "http://127.0.0.1:8781/riskgate"),
                      ("http://[::1]:8080", "http://[::1]:8080"),
                      ("https://risk.example.com/a%20b", "https://risk.example.com/a%20b")):
        monkeypatch.setenv(nt.PUBLIC_URL_ENV, url)
        nt.check_settings()
        assert nt.feedback_links("tok")[0] == f"{base}/v1/feedback?token=tok&value=valid"


def test_score_notify_and_serve_refuse_the_testers_public_url(db, tmp_path, monkeypatch):
    """`score --notify` (outbox) exited 0 with every link dead; `serve` started. Both refuse it now, in one line."""
    url = 'http://127.0.0.1:8781/x?a=1"><b>'
    monkeypatch.setenv(nt.PUBLIC_URL_ENV, url)
    runs = q(db, "SELECT count(*) FROM score_runs")
    res = CliRunner().invoke(cli_app, ["score", "--notify", "--db", str(db)])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith(f"error: {nt.PUBLIC_URL_ENV} must not have a query"), res.stderr
    assert q(db, "SELECT count(*) FROM score_runs") == runs and not (tmp_path / "outbox").exists()
    cmd = [sys.executable, "-m", "cli", "serve", "--db", str(tmp_path / "x.duckdb"), "--port", "0"]
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "RISKGATE_API_KEY": API_KEY}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: {nt.PUBLIC_URL_ENV} must not have a query") \
        and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "x.duckdb").exists()


# -- 5. one event of a second pool: users loaded without a pool id belong to none, and every email fails ------------


def _other_pool_event(tmp_path, pool: str, n: int = 1) -> Path:
    path = tmp_path / f"{pool}.jsonl"
    path.write_text(json.dumps({
        "EventId": f"other-pool-{pool}-{n}", "UserPoolId": pool, "Username": "someone", "EventType": "SignIn",
        "EventResponse": "Pass", "CreationDate": "2026-11-29T13:05:00Z",
        "ContextData": {"IpAddress": "8.8.4.4", "ServerName": "a", "ServerPath": "/",
                        "HttpHeaders": [{"headerName": "User-Agent", "headerValue": "curl/8"}]}}) + "\n")
    return path


def _ingest(path, db, *extra) -> tuple[dict, str]:
    res = CliRunner().invoke(cli_app, ["ingest", str(path), "--json", "--db", str(db), *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout), " ".join(res.stderr.split())


def test_ingest_warns_when_another_pools_events_leave_users_loaded_without_a_pool_id_in_none(db, tmp_path,
                                                                                           monkeypatch):
    """The tester's run: users loaded from ListUsers JSON without --user-pool-id (the store's only pool's), then one
    event of another pool ingested: `ingest` said nothing, and every notification failed from then on ("no email
    address for user"). It now says so, on stderr and in its --json output, naming the way out."""
    from risk import config as rc

    monkeypatch.delenv(rc.POOL_ENV, raising=False)
    (pool,) = [r[0] for r in q(db, "SELECT DISTINCT user_pool_id FROM events")]
    unpooled = q(db, "SELECT count(*) FROM users WHERE pool_key = ''")[0][0]
    assert unpooled > 0
    out, err = _ingest(_other_pool_event(tmp_path, pool, 1), db)  # the store's own pool: nothing to say
    assert "warnings" not in out and err == ""
    named = shutil.copy(db, tmp_path / "named.duckdb")
    monkeypatch.setenv(rc.POOL_ENV, pool)  # the pool-less users' pool is named: they stay its users
    out, err = _ingest(_other_pool_event(tmp_path, "us-east-1_Named"), named)
    assert "warnings" not in out and err == ""
    monkeypatch.delenv(rc.POOL_ENV)
    pools = ", ".join(sorted([pool, "us-east-1_OtherPool"]))
    out, err = _ingest(_other_pool_event(tmp_path, "us-east-1_OtherPool"), db)
    said = (f"this ingest added events of pool us-east-1_OtherPool, so the store knows several pools: {unpooled:,} "
            f"user(s) loaded without a pool id belong to no pool: the store knows several ({pools}), so their MFA "
            "settings, email and status apply to nobody (no notification email reaches them: each fails with 'no "
            "email address for user'); load them again with `riskgate users load FILE --user-pool-id POOL`, or set "
            "$RISKGATE_USER_POOL_ID to their pool")
    assert out["events_added"] == 1 and out["warnings"] == [said], out
    assert err == f"warning: {said}"
    out, err = _ingest(_other_pool_event(tmp_path, "us-east-1_Third"), db)  # several already: not this one's doing
    assert "warnings" not in out and err == ""


def test_serve_says_at_start_and_at_each_failed_email_that_users_belong_to_no_pool(base, db, tmp_path, smtp,
                                                                                  caplog, monkeypatch):
    """`riskgate serve` on such a store said nothing, neither at start nor per failed email (only /healthz's
    to_retry grew): it logs the warning `score` prints at start, and with each email failing for want of an
    address."""
    import logging

    from risk import config as rc

    monkeypatch.delenv(rc.POOL_ENV, raising=False)
    _ingest(_other_pool_event(tmp_path, "us-east-1_OtherPool"), db)
    smtp(Recorder())
    ev = rest_events(base)[0]
    with caplog.at_level(logging.INFO, logger="riskgate.service"):
        with Service(db, notify_retry_every=600) as svc:
            r = httpx.post(svc.url + "/v1/evaluate", json=ev, headers=headers(), timeout=30)
            template = r.json()["Notification"]
            assert r.status_code == 200 and template, r.text
            deadline = time.monotonic() + 30
            while not any("failed (attempt" in m.getMessage() for m in caplog.records):
                assert time.monotonic() < deadline
                time.sleep(0.05)
    said = [m.getMessage() for m in caplog.records if m.name == "riskgate.service" and m.levelname == "WARNING"]
    problem = next((m for m in said if "loaded without a pool id belong to no pool" in m), None)
    assert problem and "us-east-1_OtherPool" in problem and "--user-pool-id" in problem, said
    assert said.index(problem) < len(said) - 1  # at start, before the email failed
    assert said[-1] == (f"notification {template} about event {ev['EventId']} failed (attempt 1 of "
                        f"{nt.MAX_ATTEMPTS}; tried again later): no email address for user ({problem})"), said


def test_a_recipient_quoted_with_escapes_by_the_address_check_is_still_redacted_for_the_log():
    """The address check quotes a bad address as Python writes it (a tab as ``\\t``); the log's redaction looked
    for the address as it is and let it through (a review: ``recipient "zed.o'neil\\tprivate@example.com" ...``)."""
    from datetime import datetime, timezone

    bad = "zed.o'neil\tprivate@example.com"
    with pytest.raises(nt.NotifyError) as caught:
        nt.single_address(bad, "recipient")
    rec = nt.NotificationRecord("n1", "e1", "zed", bad, "BlockEmail", None, "failed", str(caught.value), "smtp", None,
                                datetime.now(timezone.utc))
    shown = nt.reason_for_log(rec)
    assert "private@example.com" not in shown and "[recipient]" in shown, shown
