"""The running service tries again what fails while it runs, and /healthz counts what the store holds unsent.

Real parts: the service under uvicorn on 127.0.0.1, aiosmtpd on 127.0.0.1 (an SMTP server that refuses with
451 "try again later" while it is "down", and can hold a message in flight), DuckDB files, `riskgate score
--notify`. The store, SMTP fixtures and helpers are tests/test_notify_reliability.py's. Claims of what is owed run
every few hundredths of a second here (``notify_retry_every``), every few minutes in production.
"""

from __future__ import annotations

import email
import socket
import subprocess
import time
from datetime import datetime, timedelta, timezone
from email.policy import default as default_policy

import httpx
import pytest

from risk import notify as nt
from service import app as service_app
from tests.service_support import Service, headers, rest_events, rg
from tests.test_notify_reliability import (  # noqa: F401 - fixtures: the trained store, SMTP on loopback, env
    FUTURE,
    Gate,
    base,
    db,
    due_in,
    env,
    periods,
    score_notify,
    smtp,
    statuses,
)

QUICK = 0.05  # seconds between claims of what is owed


@pytest.fixture(autouse=True)
def fresh_healthz(monkeypatch):
    """/healthz reads the store's figures at every probe here (its throttle has a test of its own)."""
    monkeypatch.setattr(service_app, "HEALTHZ_UNSENT_EVERY_S", 0.0)


def event_of(envelope) -> str:
    return email.message_from_bytes(envelope.content, policy=default_policy)["X-Riskgate-Event-Id"]


class Outage(Gate):
    """Refuses (451) the first ``refuse`` messages about each event (of ``events``; default all), as a server that is
    down would; of the others, holds the first in flight until ``release`` when ``hold``, and accepts them all
    (recorded)."""

    def __init__(self, refuse: int = 1, hold: bool = False, events: set[str] | None = None):
        super().__init__()
        self.refuse = refuse
        self.events = events
        self.refused: list[str] = []  # event ids, one per refused message
        self.held: str | None = None
        if not hold:
            self.release.set()

    async def handle_DATA(self, server, session, envelope):
        event_id = event_of(envelope)
        if (self.events is None or event_id in self.events) and self.refused.count(event_id) < self.refuse:
            self.refused.append(event_id)
            return "451 4.3.0 mail service down, try again later"
        if not self.arrived.is_set():
            self.held = event_id
        return await super().handle_DATA(server, session, envelope)


def until(cond, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def stored(svc) -> dict[str, list[str]]:
    """The notifications' statuses by event, read by the running service's store thread (it holds the file)."""
    rows = svc.worker.call(lambda store: store.execute(
        "SELECT event_id, status FROM notifications ORDER BY created_at, status").fetchall()).result(30)
    out: dict[str, list[str]] = {}
    for event_id, status in rows:
        out.setdefault(event_id, []).append(status)
    return out


def notifier(svc):
    return svc.app.state.riskgate["notifier"]


def claims_pass(svc, n: int) -> None:
    """Wait until ``n`` more claims of what is owed have completed."""
    target = notifier(svc).claims + n
    until(lambda: notifier(svc).claims >= target, f"{n} claims")


def evaluate(svc, events) -> list[str]:
    for ev in events:
        r = httpx.post(svc.url + "/v1/evaluate", json=ev, headers=headers(), timeout=30)
        assert r.status_code == 200 and r.json()["Notification"], r.text
    return [ev["EventId"] for ev in events]


def healthz(svc) -> dict:
    return httpx.get(svc.url + "/healthz", timeout=10).json()


def test_a_notification_that_fails_while_the_service_runs_is_sent_by_its_next_claim(base, db, smtp):
    server = Outage(refuse=1)
    smtp(server)
    with Service(db, notify_retry_every=QUICK) as svc:
        (event_id,) = evaluate(svc, rest_events(base)[:1])
        until(lambda: stored(svc).get(event_id) == ["failed", "sent"], "the notification tried again and sent")
        claims_pass(svc, 5)  # later claims find nothing more to send
        assert healthz(svc)["notifications_unsent"] == {"pending": 0, "to_retry": 0}
    assert server.refused == [event_id]
    assert server.event_ids() == [event_id]  # sent once
    assert statuses(db) == {event_id: ["failed", "sent"]}


def test_the_running_service_tries_a_failed_notification_at_most_max_attempts_times(base, db, smtp):
    server = Outage(refuse=100)  # down for good
    smtp(server)
    with Service(db, notify_retry_every=QUICK) as svc:
        (event_id,) = evaluate(svc, rest_events(base)[:1])
        until(lambda: stored(svc).get(event_id) == ["failed"] * nt.MAX_ATTEMPTS, "every attempt failed")
        claims_pass(svc, 8)
        assert healthz(svc)["notifications_unsent"] == {"pending": 0, "to_retry": 0}  # given up
    assert server.refused == [event_id] * nt.MAX_ATTEMPTS
    assert server.envelopes == []
    assert statuses(db) == {event_id: ["failed"] * nt.MAX_ATTEMPTS}


def test_claims_while_emails_are_in_flight_or_queued_send_none_of_them_twice(base, db, smtp, monkeypatch):
    monkeypatch.setenv(nt.SMTP_TIMEOUT_ENV, "60")
    first, second, third = rest_events(base)[:3]
    server = Outage(refuse=1, hold=True, events={first["EventId"]})  # down for the first email only
    smtp(server)
    with Service(db, notify_retry_every=QUICK) as svc:
        (retried,) = evaluate(svc, [first])
        # refused, then tried again by a claim: that attempt is held in flight (a slow server)
        assert server.arrived.wait(20) and server.held == retried
        try:
            queued = evaluate(svc, [second, third])  # made due meanwhile: queued behind it
            claims_pass(svc, 10)  # while one claimed row is in flight and two of the service's own are queued
            health = healthz(svc)
            assert (health["notifications_pending"], health["notifications_unsent"]) == (2, {"pending": 3,
                                                                                              "to_retry": 0})
        finally:
            server.release.set()
        until(lambda: sorted(stored(svc).values()) == [["failed", "sent"], ["sent"], ["sent"]], "all sent")
        claims_pass(svc, 5)
        assert healthz(svc)["notifications_unsent"] == {"pending": 0, "to_retry": 0}
    assert server.refused == [retried]
    assert server.event_ids() == sorted([retried, *queued])  # each once
    assert statuses(db) == {retried: ["failed", "sent"], queued[0]: ["sent"], queued[1]: ["sent"]}


def test_what_a_claim_has_queued_at_stop_stays_pending_and_the_next_run_sends_it(db, smtp, monkeypatch):
    from tests.test_notify_reliability import Recorder

    (period,) = periods(db, 2)
    rg("score", "--since", period[0], "--until", period[1], db=db)  # due; none sent yet
    ids = due_in(db, period)
    monkeypatch.setenv(nt.SMTP_TIMEOUT_ENV, "2")
    server = Outage(refuse=0, hold=True)
    smtp(server)
    with Service(db, notify_retry_every=QUICK) as svc:
        # two notifications fail while the service runs (recorded together by another part of this process)
        svc.worker.call(lambda store: store.executemany(
            "INSERT INTO notifications (notification_id, event_id, template, status, reason, created_at) "
            "VALUES (?, ?, 'MfaEmail', 'failed', 'cannot connect', ?)",
            [[f"f{i}", event_id, datetime.now(timezone.utc) - timedelta(minutes=1)] for i, event_id in enumerate(ids)],
        )).result(30)
        # the next claim takes both: one is held in flight, the other queued behind it
        until(lambda: server.held is not None and stored(svc) == {e: ["failed", "pending"] for e in ids},
              "both claimed again")
        t0 = time.monotonic()  # stopped now: the claims stop, the email in flight times out (2 s)
    assert time.monotonic() - t0 < 9
    (queued,) = set(ids) - {server.held}
    assert statuses(db) == {server.held: ["failed", "failed"], queued: ["failed", "pending"]}

    recorder = Recorder()
    smtp(recorder)
    out = score_notify("--since", FUTURE, db=db)  # the claimant of the pending row is gone: owed
    assert (out["notifications"], out["notifications_earlier"]) == (2, 2)
    assert recorder.event_ids() == ids
    assert statuses(db) == {server.held: ["failed", "failed", "sent"], queued: ["failed", "sent"]}


def test_healthz_counts_the_stores_pending_and_to_retry_notifications_and_never_waits_long(db, smtp):
    from risk import store as rstore

    (period,) = periods(db, 4)
    rg("score", "--since", period[0], "--until", period[1], db=db)  # due; none sent yet
    retry, given_up, too_old, elsewhere = due_in(db, period)
    now = datetime.now(timezone.utc)
    con = rstore.connect(db)
    try:
        rows = [("r1", retry, "failed", now - timedelta(minutes=3), None),
                *((f"g{i}", given_up, "failed", now - timedelta(minutes=i), None) for i in range(nt.MAX_ATTEMPTS)),
                ("o1", too_old, "failed", now - nt.RETRY_WITHIN - timedelta(minutes=5), None),
                # being sent by a run on another host: pending, and not this service's to claim
                ("p1", elsewhere, "pending", now, f"other-{socket.gethostname()}:1:1/score-x")]
        for nid, event_id, status, at, claimant in rows:
            con.execute("INSERT INTO notifications (notification_id, event_id, template, status, created_at, "
                        "claimed_by) VALUES (?, ?, 'MfaEmail', ?, ?, ?)", [nid, event_id, status, at, claimant])
    finally:
        con.close()
    server = Outage(refuse=100)
    smtp(server)
    with Service(db, notify_retry_every=3600) as svc:  # one claim: at start
        until(lambda: stored(svc)[retry] == ["failed", "failed"], "the claim at start")
        health = healthz(svc)
        assert health["status"] == "ok" and health["notifications_pending"] == 0
        assert health["notifications_unsent"] == {"pending": 1, "to_retry": 1}
        # the store thread busy for a second: /healthz answers at once, without the store's figures
        busy = svc.worker.call(lambda store: time.sleep(1.0))
        t0 = time.monotonic()
        health = healthz(svc)
        assert time.monotonic() - t0 < service_app.HEALTHZ_STORE_WAIT_S + 0.5
        assert health["status"] == "ok" and health["notifications_unsent"] is None
        busy.result(10)
        assert healthz(svc)["notifications_unsent"] == {"pending": 1, "to_retry": 1}  # once it is free again
    assert server.refused == [retry]


def test_a_flood_of_healthz_probes_reads_the_store_once_per_interval(db, monkeypatch):
    """/healthz needs no key: each probe queued a read on the store thread the sign-ins wait for."""
    monkeypatch.setattr(service_app, "HEALTHZ_UNSENT_EVERY_S", 60.0)
    reads = []
    real = nt.unsent

    def counted(con, **kw):
        reads.append(1)
        return real(con, **kw)

    monkeypatch.setattr(nt, "unsent", counted)
    with Service(db, notify_retry_every=3600) as svc:
        answers = [healthz(svc)["notifications_unsent"] for _ in range(30)]
    assert len(reads) == 1
    assert answers == [{"pending": 0, "to_retry": 0}] * 30


def test_the_service_says_at_start_what_every_email_would_lack(db, smtp, monkeypatch, caplog):
    """No secret for the feedback links (ENFORCED, Notify): every email would fail; a warning at start names it (a
    service is not refused, as `score --notify` is: a configuration set while it runs can change it)."""
    import logging

    monkeypatch.delenv(nt.FEEDBACK_SECRET_ENV)
    with caplog.at_level(logging.WARNING, logger="riskgate.service"):
        with Service(db, notify_retry_every=60):
            pass
    said = [r.getMessage() for r in caplog.records if r.name == "riskgate.service"]
    assert any(m.startswith("notifications will fail: RISKGATE_FEEDBACK_SECRET is not set") for m in said), said
    caplog.clear()
    monkeypatch.setenv(nt.FEEDBACK_SECRET_ENV, "s" * 32)
    with caplog.at_level(logging.WARNING, logger="riskgate.service"):
        with Service(db, notify_retry_every=60):
            pass
    assert not [r for r in caplog.records if "notifications will fail" in r.getMessage()]
