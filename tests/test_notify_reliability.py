"""Notifications that are due are never lost nor sent twice: pending rows, later runs, the service's stop.

Also the message and SMTP details that made every email fail or misreported why (an internationalised From
domain, a server without STARTTLS or AUTH) and the feedback secret's length. Real parts throughout: aiosmtpd
on loopback, a socket that never answers, DuckDB files, `riskgate score` in a process of its own (killed with
SIGKILL), the service under uvicorn.
"""

from __future__ import annotations

import asyncio
import email
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from email.policy import default as default_policy
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller

from ingest import store as ingest_store
from ingest.errors import ConfigurationError
from risk import notify as nt
from tests import test_notify
from tests.service_support import Service, copy_store, headers, rest_events, rg, trained_base
from tests.storedb import q

ROOT = Path(__file__).resolve().parent.parent
FUTURE = "2100-01-01T00:00:00+00:00"  # a period with no event: a run that only sends what is owed
env = test_notify.env  # the same clean SMTP and feedback settings (autouse)


class Recorder(test_notify.Recorder):
    def event_ids(self) -> list[str]:
        return sorted(email.message_from_bytes(e.content, policy=default_policy)["X-Riskgate-Event-Id"]
                      for e in self.envelopes)


class Gate(Recorder):
    """Holds the first message's DATA until released (an email in flight); lets the others through."""

    def __init__(self):
        super().__init__()
        self.arrived = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        first = not self.arrived.is_set()
        self.arrived.set()
        while first and not self.release.is_set():
            await asyncio.sleep(0.02)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def smtp(monkeypatch):
    """start(handler) -> port, with RISKGATE_SMTP_HOST/PORT pointing at it."""
    started = []

    def start(handler, **kwargs):
        port = test_notify.free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        started.append((controller, handler))
        monkeypatch.setenv(nt.SMTP_HOST_ENV, "127.0.0.1")
        monkeypatch.setenv(nt.SMTP_PORT_ENV, str(port))
        return port

    yield start
    for controller, handler in started:
        if isinstance(handler, Gate):
            handler.release.set()
        controller.stop()


@pytest.fixture
def tarpit(monkeypatch):
    """An SMTP port that accepts connections and never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    monkeypatch.setenv(nt.SMTP_HOST_ENV, "127.0.0.1")
    monkeypatch.setenv(nt.SMTP_PORT_ENV, str(sock.getsockname()[1]))
    yield sock
    sock.close()


def smtp_down(monkeypatch) -> None:
    monkeypatch.setenv(nt.SMTP_HOST_ENV, "127.0.0.1")
    monkeypatch.setenv(nt.SMTP_PORT_ENV, str(test_notify.free_port()))  # nothing listens there: "Connection refused"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return trained_base(tmp_path_factory)


@pytest.fixture
def db(base, tmp_path):
    """The trained store in ENFORCED mode with every event High (MFA_REQUIRED, Notify: an email due)."""
    from risk import config as rc
    from risk import levels
    from risk import store as rstore

    path = copy_store(base, tmp_path / "s.duckdb")
    con = rstore.connect(path)
    try:
        rc.set_mode(con, "ENFORCED")
        levels.set_thresholds(con, levels.Thresholds(0.0, 0.0, 0.0))
    finally:
        con.close()
    return path


def periods(db, *sizes: int) -> list[tuple[str, str]]:
    """Consecutive periods holding the last sum(sizes) events of the store, ``sizes[i]`` events each."""
    times = [r[0] for r in q(db, "SELECT creation_date FROM events ORDER BY creation_date")]
    assert len(set(times[-sum(sizes):])) == sum(sizes)
    bounds, i = [], len(times) - sum(sizes)
    for n in sizes:
        hi = times[i + n] if i + n < len(times) else times[-1] + timedelta(milliseconds=1)
        bounds.append((times[i].isoformat(), hi.isoformat()))
        i += n
    return bounds


def due_in(db, period) -> list[str]:
    return sorted(r[0] for r in q(db, "SELECT a.event_id FROM assessments a JOIN events e USING (event_id) "
                                      "WHERE a.notification IS NOT NULL AND e.creation_date >= ? "
                                      "AND e.creation_date < ?", list(period)))


def statuses(db) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for event_id, status in q(db, "SELECT event_id, status FROM notifications ORDER BY created_at, status"):
        out.setdefault(event_id, []).append(status)
    return out


def score_notify(*args, db) -> dict:
    return json.loads(rg("score", "--notify", "--json", *args, db=db).stdout)


# -- batch scoring ----------------------------------------------------------------------------------------------


def test_a_run_killed_mid_way_leaves_its_notifications_pending_and_the_next_run_sends_each_once(db, smtp,
                                                                                                 monkeypatch):
    (period,) = periods(db, 6)
    gate = Gate()
    smtp(gate)
    monkeypatch.setenv(nt.SMTP_TIMEOUT_ENV, "60")
    cmd = [sys.executable, "-m", "cli", "score", "--notify", "--chunk-rows", "2", "--since", period[0],
           "--until", period[1], "--db", str(db)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert gate.arrived.wait(120), proc.stderr.read() if proc.poll() is not None else "no email came"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    # killed while its first email was in flight: the first chunk is assessed, and what it made due is pending
    first = due_in(db, period)
    assert len(first) == 2
    assert statuses(db) == {e: ["pending"] for e in first}

    recorder = Recorder()
    smtp(recorder)
    out = score_notify("--since", period[0], "--until", period[1], db=db)
    due = due_in(db, period)
    assert len(due) == 6 and out["events_scored"] == 4
    assert (out["notifications"], out["notifications_earlier"], out["notifications_failed"]) == (6, 2, 0)
    assert recorder.event_ids() == due  # each once, the two the killed run owed included
    assert statuses(db) == {e: ["sent"] for e in due}
    assert score_notify("--since", FUTURE, db=db)["notifications"] == 0  # nothing is owed any more


def test_failed_notifications_are_tried_again_by_later_runs_at_most_max_attempts_times(db, smtp, monkeypatch):
    quiet, retried, given_up = periods(db, 2, 2, 2)
    rg("score", "--since", quiet[0], "--until", quiet[1], db=db)  # due, but no run with --notify made it so
    smtp_down(monkeypatch)
    out = score_notify("--since", retried[0], "--until", retried[1], db=db)
    assert out["notifications"] == 0 and out["notifications_failed"] == 2
    assert all("Connection refused" in reason for reason in out["notification_failures"])

    recorder = Recorder()
    smtp(recorder)
    out = score_notify("--since", FUTURE, db=db)  # a later run with the server back: the failed ones are sent
    assert recorder.event_ids() == due_in(db, retried)
    assert (out["events_scored"], out["notifications"], out["notifications_earlier"]) == (0, 2, 2)
    assert all(statuses(db)[e] == ["failed", "sent"] for e in due_in(db, retried))

    smtp_down(monkeypatch)
    score_notify("--since", given_up[0], "--until", given_up[1], db=db)
    for _ in range(nt.MAX_ATTEMPTS):  # tried again each run, up to MAX_ATTEMPTS attempts in all
        score_notify("--since", FUTURE, db=db)
    assert all(statuses(db)[e] == ["failed"] * nt.MAX_ATTEMPTS for e in due_in(db, given_up))
    smtp(recorder)
    assert score_notify("--since", FUTURE, db=db)["notifications"] == 0
    assert recorder.event_ids() == due_in(db, retried)  # neither the given-up ones nor history nobody notified
    assert not set(statuses(db)) & set(due_in(db, quiet)) and len(due_in(db, quiet)) == 2


def test_a_store_migrated_by_an_older_riskgate_opens_and_its_failed_notifications_are_owed(tmp_path):
    from risk import store as rstore
    from risk.store import risk_migrations

    path = tmp_path / "old.duckdb"
    older = [m for m in risk_migrations()
             if m.name not in ("risk_notify_0002_pending", "risk_notify_0003_attempted_at", "risk_notify_0004_claimed_at")]
    con = ingest_store.connect(path, migrations=(*ingest_store.MIGRATIONS, *older))
    try:
        con.execute("INSERT INTO notifications VALUES ('n1', 'ev-1', 'alice', 'alice@example.org', 'BlockEmail', "
                    "'Blocked', 'failed', 'cannot connect', 'smtp', NULL, now())")
        con.execute("INSERT INTO notifications VALUES ('n2', 'ev-2', 'bob', 'bob@example.org', 'BlockEmail', "
                    "'Blocked', 'sent', NULL, 'smtp', '<id@example.com>', now())")
    finally:
        con.close()
    con = rstore.connect(path)
    try:
        assert {"risk_notify_0002_pending", "risk_notify_0004_claimed_at"} <= set(ingest_store.applied_migrations(con))
        assert [r.status for r in nt.notifications_for_event(con, "ev-1")] == ["failed"]
        assert not nt.already_notified(con, "ev-1") and nt.already_notified(con, "ev-2")
    finally:
        con.close()


def test_a_failed_notification_is_tried_again_only_within_a_day_of_its_first_attempt(tmp_path):
    from risk import store as rstore

    con = rstore.connect(tmp_path / "s.duckdb")
    try:
        con.execute("INSERT INTO assessments (event_id, notification) VALUES ('old', 'BlockEmail'), "
                    "('new', 'BlockEmail')")
        now = datetime.now(timezone.utc)
        for nid, event_id, at in (("n1", "old", now - nt.RETRY_WITHIN - timedelta(minutes=5)),
                                  ("n2", "new", now - nt.RETRY_WITHIN + timedelta(minutes=5))):
            con.execute("INSERT INTO notifications (notification_id, event_id, template, status, reason, created_at) "
                        "VALUES (?, ?, 'BlockEmail', 'failed', 'cannot connect', ?)", [nid, event_id, at])
        claimant = nt.new_claimant("test")
        assert nt.claim_owed(con, claimant) == 1
        assert [event_id for _nid, event_id, _t in nt.claimed(con, claimant)] == ["new"]
    finally:
        con.close()


def test_a_failed_notification_is_tried_again_only_after_the_wait_for_its_attempt(tmp_path, monkeypatch):
    """With the service claiming what is owed every few minutes, three attempts used to go within ten minutes of a
    mail server's outage: the second attempt waits 5 minutes after the first, the third an hour after the second
    (``RETRY_AFTER``), or what ``$RISKGATE_NOTIFY_RETRY_AFTER`` says."""
    from risk import store as rstore

    monkeypatch.delenv(nt.RETRY_AFTER_ENV)
    assert nt.retry_after_from_env() == nt.RETRY_AFTER == (timedelta(minutes=5), timedelta(hours=1))
    claimant = nt.new_claimant("test")
    con = rstore.connect(tmp_path / "s.duckdb")
    try:
        now = datetime.now(timezone.utc)
        # event -> the times of its failed attempts (minutes ago); the claim takes only those whose wait is over
        failures = {"once-3m": [3], "once-6m": [6], "twice-30m": [40, 30], "twice-70m": [80, 70]}
        con.execute("INSERT INTO assessments (event_id, notification) SELECT unnest(?), 'BlockEmail'",
                    [list(failures)])
        for event_id, ago in failures.items():
            for i, minutes in enumerate(ago):
                con.execute("INSERT INTO notifications (notification_id, event_id, template, status, reason, "
                            "created_at) VALUES (?, ?, 'BlockEmail', 'failed', 'cannot connect', ?)",
                            [f"{event_id}-{i}", event_id, now - timedelta(minutes=minutes)])
        assert nt.unsent(con) == {"pending": 0, "to_retry": 4}  # all four will be tried again
        nt.hold(claimant)  # it delivers what it claimed: the next claim leaves that to it
        assert nt.claim_owed(con, claimant) == 2
        assert sorted(e for _nid, e, _t in nt.claimed(con, claimant)) == ["once-6m", "twice-70m"]
        monkeypatch.setenv(nt.RETRY_AFTER_ENV, "60,1200")  # 1 minute after the first, 20 after the second
        other = nt.new_claimant("test")
        assert nt.claim_owed(con, other) == 2
        assert sorted(e for _nid, e, _t in nt.claimed(con, other)) == ["once-3m", "twice-30m"]
        for bad in ("5m", "-1", "300,,60", "inf"):
            monkeypatch.setenv(nt.RETRY_AFTER_ENV, bad)
            with pytest.raises(nt.NotifyError, match=f"{nt.RETRY_AFTER_ENV} must be seconds"):
                nt.claim_owed(con, other)
    finally:
        nt.release(claimant)
        con.close()


def test_the_wait_before_the_next_attempt_counts_from_the_failed_attempt_not_from_when_it_became_due(
        tmp_path, monkeypatch):
    """A notification due 10 minutes ago (it waited in a delivery queue behind others, each waiting for the SMTP
    timeout) whose attempt failed just now was claimed again at once: the wait counted from the row's creation."""
    from risk import store as rstore

    monkeypatch.delenv(nt.RETRY_AFTER_ENV)
    first, later = nt.new_claimant("score"), nt.new_claimant("service-owed")
    con = rstore.connect(tmp_path / "s.duckdb")
    nt.hold(first)
    nt.hold(later)
    try:
        now = datetime.now(timezone.utc)
        con.execute("INSERT INTO assessments (event_id, notification) VALUES ('ev-1', 'BlockEmail')")
        con.execute("INSERT INTO notifications (notification_id, event_id, template, status, created_at, claimed_by) "
                    "VALUES ('n1', 'ev-1', 'BlockEmail', 'pending', ?, ?)", [now - timedelta(minutes=10), first])
        nt.complete(con, nt.NotificationRecord(
            notification_id="n1", event_id="ev-1", username="alice", recipient="alice@example.org",
            template="BlockEmail", subject="s", status="failed", reason="451 try again later", transport="smtp",
            location=None, created_at=now), first)
        assert con.execute("SELECT status, attempted_at FROM notifications").fetchall() == [("failed", now)]
        assert nt.claim_owed(con, later) == 0  # the attempt was just now: 5 minutes to wait
        con.execute("UPDATE notifications SET attempted_at = attempted_at - INTERVAL 6 MINUTE")
        assert nt.claim_owed(con, later) == 1
    finally:
        nt.release(first)
        nt.release(later)
        con.close()


def test_a_feedback_ttl_too_long_for_a_date_is_refused_before_score_notify_scores(db, monkeypatch):
    """RISKGATE_FEEDBACK_TTL=99999999999999 made `riskgate score --notify` end in an OverflowError traceback after
    its first chunk's notifications were made pending, and every later run the same way. It is refused as a bad
    RISKGATE_NOTIFY_RETRY_AFTER is: one line naming the variable, exit 2, before anything is scored."""
    (period,) = periods(db, 3)
    cmd = [sys.executable, "-m", "cli", "score", "--notify", "--since", period[0], "--until", period[1],
           "--db", str(db)]
    for bad in ("99999999999999", "31536001"):
        monkeypatch.setenv(nt.FEEDBACK_TTL_ENV, bad)
        done = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=180)
        assert (done.returncode, done.stderr) == (2, "error: RISKGATE_FEEDBACK_TTL must be a whole number of "
                                                     f"seconds from 1 to 31536000 (365 days), got '{bad}'\n")
    assert q(db, "SELECT count(*) FROM notifications") == [(0,)]
    assert q(db, "SELECT count(*) FROM score_runs") == [(0,)]
    monkeypatch.setenv(nt.FEEDBACK_TTL_ENV, "31536000")  # the longest: 365 days
    out = score_notify("--since", period[0], "--until", period[1], db=db)
    assert (out["events_scored"], out["notifications"], out["notifications_failed"]) == (3, 3, 0)
    assert sorted(statuses(db)) == due_in(db, period)


def test_score_notify_sends_once_to_a_server_that_answers_quit_with_an_error(db, monkeypatch):
    """An SMTP server that takes each message (250 to DATA) and answers QUIT with 500: every email was recorded
    failed and sent again by the next two runs (3 copies each). It was sent: each event is emailed once."""
    (period,) = periods(db, 3)
    recorder = Recorder()
    controller = test_notify.odd_quit_server(recorder, "500")
    monkeypatch.setenv(nt.SMTP_HOST_ENV, "127.0.0.1")
    monkeypatch.setenv(nt.SMTP_PORT_ENV, str(controller.port))
    try:
        out = score_notify("--since", period[0], "--until", period[1], db=db)
        assert (out["notifications"], out["notifications_failed"]) == (3, 0), out
        again = score_notify("--since", FUTURE, db=db)  # a later run: nothing owed
        assert (again["notifications"], again["notifications_failed"]) == (0, 0), again
    finally:
        controller.stop()
    assert recorder.event_ids() == due_in(db, period)
    assert statuses(db) == {e: ["sent"] for e in due_in(db, period)}


# -- the service -----------------------------------------------------------------------------------------------


def test_a_service_stopped_while_smtp_hangs_keeps_the_queue_pending_and_score_notify_sends_it(base, db, tarpit,
                                                                                               smtp, monkeypatch):
    monkeypatch.setenv(nt.SMTP_TIMEOUT_ENV, "2")
    events = rest_events(base)[:3]
    ids = sorted(e["EventId"] for e in events)
    with Service(db) as svc:
        for ev in events:
            r = httpx.post(svc.url + "/v1/evaluate", json=ev, headers=headers(), timeout=30)
            assert r.status_code == 200 and r.json()["Notification"], r.text
        t0 = time.monotonic()  # stopped at once: the first email waits for a greeting that never comes
    assert time.monotonic() - t0 < 9  # the stop waits for the email in flight (2 s), not for the whole queue
    left = statuses(db)
    assert sorted(left) == ids and "pending" in {s for v in left.values() for s in v}, left

    recorder = Recorder()
    smtp(recorder)
    out = score_notify("--since", FUTURE, db=db)
    assert (out["notifications"], out["notifications_earlier"]) == (3, 3)
    assert recorder.event_ids() == ids
    assert all(v[-1] == "sent" and v.count("sent") == 1 for v in statuses(db).values())


def test_the_service_sends_at_start_what_earlier_runs_owe(db, smtp):
    from risk import store as rstore

    (period,) = periods(db, 3)
    rg("score", "--since", period[0], "--until", period[1], db=db)  # due; nobody made it pending
    left, failed, history = due_in(db, period)
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = f"{socket.gethostname()}:{dead.pid}:0/score-killed"  # a run whose process is gone
    con = rstore.connect(db)
    try:
        now = datetime.now(timezone.utc)
        con.execute("INSERT INTO notifications (notification_id, event_id, template, status, created_at, claimed_by) "
                    "VALUES ('p1', ?, 'MfaEmail', 'pending', ?, ?)", [left, now, gone])
        con.execute("INSERT INTO notifications (notification_id, event_id, template, status, reason, created_at) "
                    "VALUES ('f1', ?, 'MfaEmail', 'failed', 'cannot connect', ?)", [failed, now])
    finally:
        con.close()
    recorder = Recorder()
    smtp(recorder)
    with Service(db):
        deadline = time.monotonic() + 30
        while len(recorder.envelopes) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the store thread records the outcomes
    assert recorder.event_ids() == sorted([left, failed])
    assert statuses(db) == {left: ["sent"], failed: ["failed", "sent"]}  # and nothing about ``history``
    assert history not in statuses(db)


def test_score_rescore_notify_while_the_services_email_is_in_flight_sends_no_second_one(base, db, smtp,
                                                                                         monkeypatch):
    gate = Gate()
    smtp(gate)
    monkeypatch.setenv(nt.SMTP_TIMEOUT_ENV, "60")
    ev = rest_events(base)[0]
    with Service(db) as svc:
        r = httpx.post(svc.url + "/v1/evaluate", json=ev, headers=headers(), timeout=30)
        assert r.status_code == 200 and r.json()["Notification"], r.text
        assert gate.arrived.wait(30)  # the service's email is being sent
        t = datetime.fromisoformat(ev["CreationDate"].replace("Z", "+00:00"))
        cmd = [sys.executable, "-m", "cli", "score", "--rescore", "--notify", "--json", "--since", t.isoformat(),
               "--until", (t + timedelta(milliseconds=1)).isoformat(), "--db", str(db)]
        done = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert (out["events_scored"], out["notifications"], out["notifications_failed"]) == (1, 0, 0)
        gate.release.set()
        deadline = time.monotonic() + 30
        while not svc.worker.call(lambda store: store.execute(
                "SELECT count(*) FROM notifications WHERE status = 'sent'").fetchall()[0][0]).result(30):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert gate.event_ids() == [ev["EventId"]]
    assert statuses(db) == {ev["EventId"]: ["sent"]}


# -- the message, the SMTP server's answers, the secret -------------------------------------------------------------

TEMPLATE = {"Subject": "Sign-in for {username}", "TextBody": "Hello {username}, from {ip-address}"}
EVENT = {"event_id": "ev-0001", "username": "alice", "client_ip": "192.0.2.1",
         "creation_date": datetime(2024, 7, 17, 17, 25, 55, tzinfo=timezone.utc)}


def test_a_from_address_with_an_internationalised_domain_is_sent(smtp, tmp_path):
    recorder = Recorder()
    port = smtp(recorder)
    config = {"From": "Security <no-reply@exämple.com>"}
    transport = nt.SmtpTransport(nt.SmtpSettings(host="127.0.0.1", port=port, timeout=3))
    rec = nt.notify(None, EVENT, "BlockEmail", TEMPLATE, config, "alice@example.org", transport=transport,
                    record=False)
    assert rec.status == "sent", rec.reason
    assert rec.location.endswith("@xn--exmple-cua.com>")
    (env,) = recorder.envelopes
    assert env.mail_from == "no-reply@xn--exmple-cua.com"
    msg = email.message_from_bytes(env.content, policy=default_policy)
    assert msg["Message-ID"] == rec.location and msg["From"] == "Security <no-reply@xn--exmple-cua.com>"
    rec = nt.notify(None, EVENT, "BlockEmail", TEMPLATE, config, "alice@example.org",
                    transport=nt.OutboxTransport(tmp_path / "outbox"), record=False)
    assert rec.status == "outbox", rec.reason
    assert email.message_from_bytes(Path(rec.location).read_bytes())["Message-ID"].endswith("@xn--exmple-cua.com>")


def test_a_server_without_starttls_or_auth_is_named_as_such_not_smtputf8(smtp):
    port = smtp(Recorder())  # offers neither STARTTLS (no certificate) nor AUTH (not over plain text)
    for settings, expected in ((dict(starttls=True), f"does not offer STARTTLS, which {nt.SMTP_STARTTLS_ENV}=true"),
                               (dict(username="relay", password="s3cret-relay"),
                                f"does not offer AUTH (login), which {nt.SMTP_USER_ENV}")):
        transport = nt.SmtpTransport(nt.SmtpSettings(host="127.0.0.1", port=port, timeout=3, **settings))
        rec = nt.notify(None, EVENT, "BlockEmail", TEMPLATE, {"From": "a@example.com"}, "bob@example.com",
                        transport=transport, record=False)
        assert rec.status == "failed" and expected in rec.reason, rec.reason
        assert "SMTPUTF8" not in rec.reason


def test_blanks_inside_the_feedback_secret_do_not_count(monkeypatch):
    for short in ("abcdefgh" + " " * 10 + "ijk", "a b c d e f g h i j k l m n o", "abcdefgh\t\t\t\t\t\t\t\tijklmno"):
        monkeypatch.setenv(nt.FEEDBACK_SECRET_ENV, short)
        with pytest.raises(ConfigurationError, match=nt.FEEDBACK_SECRET_ENV):
            nt.make_token("ev", "alice")
    monkeypatch.setenv(nt.FEEDBACK_SECRET_ENV, "abcd efgh ijkl mnop")  # 16 characters besides the blanks
    assert nt.verify_token(nt.make_token("ev", "alice")).event_id == "ev"


def test_pending_notifications_of_another_hosts_claimant_are_taken_once_its_claims_are_an_hour_old(tmp_path):
    """A claimant of another host cannot be looked at from here (a container has a hostname of its own, a new one
    when it is started again): its pending rows were never claimed again, so the emails of a killed container were
    never sent. Now they are once its newest claim is older than OTHER_HOST_STALE_AFTER (rows of older stores,
    without ``claimed_at``: by when they became due); a live one's, claimed lately, stay its own."""
    from risk import store as rstore

    now = datetime.now(timezone.utc)
    hour = nt.OTHER_HOST_STALE_AFTER
    rows = [  # event, claimant, created_at, claimed_at
        ("killed-1", "pod-a1b2:7:123/score-1", now - 3 * hour, now - 2 * hour),
        ("killed-2", "pod-a1b2:7:123/score-1", now - 3 * hour, None),
        ("lately-retaken", "pod-c3d4:9:456/service", now - 5 * hour, now - timedelta(minutes=5)),
        ("lately-retaken-old", "pod-c3d4:9:456/service", now - 5 * hour, now - 2 * hour),
        ("older-store", "pod-e5f6:3:789/score-2", now - 2 * hour, None),
        ("older-store-live", "pod-0a0b:4:111/score-3", now - timedelta(minutes=10), None),
    ]
    con = rstore.connect(tmp_path / "s.duckdb")
    try:
        for i, (event_id, who, created, claimed) in enumerate(rows):
            con.execute("INSERT INTO notifications (notification_id, event_id, template, status, created_at, "
                        "claimed_by, claimed_at) VALUES (?, ?, 'BlockEmail', 'pending', ?, ?, ?)",
                        [f"n{i}", event_id, created, who, claimed])
        claimant = nt.new_claimant("test")
        before = datetime.now(timezone.utc)
        assert nt.claim_owed(con, claimant) == 3
        assert sorted(e for _nid, e, _t in nt.claimed(con, claimant)) == ["killed-1", "killed-2", "older-store"]
        # a claimant's rows go together (its newest claim is recent: pod-c3d4 is alive), and a claim is dated, so
        # that a run of yet another host does not take them from the one that just took them over (seen from there,
        # this is another host: its claimant is renamed so here)
        assert con.execute("SELECT count(*) FROM notifications WHERE claimed_by = ? AND claimed_at >= ?",
                           [claimant, before]).fetchall() == [(3,)]
        con.execute("UPDATE notifications SET claimed_by = 'pod-9z9z:5:222/score-4' WHERE claimed_by = ?", [claimant])
        assert nt.claim_owed(con, nt.new_claimant("third")) == 0
        # a claimant of this process that still delivers (the service's queue) renews its claims whenever this
        # process claims what is owed (the service does every few minutes): seen from elsewhere, it is alive
        queue = nt.new_claimant("service")
        con.execute("INSERT INTO notifications (notification_id, event_id, template, status, created_at, claimed_by, "
                    "claimed_at) VALUES ('q1', 'queued', 'BlockEmail', 'pending', ?, ?, ?)", [now - 3 * hour, queue,
                                                                                             now - 2 * hour])
        nt.hold(queue)
        try:
            assert nt.claim_owed(con, nt.new_claimant("service-owed")) == 0
        finally:
            nt.release(queue)
        assert con.execute("SELECT claimed_by = ?, claimed_at >= ? FROM notifications WHERE event_id = 'queued'",
                           [queue, before]).fetchall() == [(True, True)]
    finally:
        con.close()
