"""Notifications: who is emailed about what, what the service says about it, and the settings refused.

* An email is due only from an event's first assessment (the decision actually taken about the sign-in): a later
  ``riskgate score --rescore --notify`` under ENFORCED emailed "we blocked a sign-in" about sign-ins the service
  had allowed (in AUDIT, or at no risk).

Real parts throughout: aiosmtpd on loopback, DuckDB files, the service under uvicorn on 127.0.0.1, the CLI.
"""

from __future__ import annotations

import json
from datetime import datetime

import httpx

from risk import notify as nt
from tests.service_support import Service, copy_store, headers, rest_events, rg
from tests.storedb import q
from tests.test_notify_reliability import Recorder, base, env, smtp, statuses  # noqa: F401 - fixtures

__all__ = ["base", "env", "smtp"]


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
