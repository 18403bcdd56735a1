"""The one-click links of notification emails, served by `riskgate serve`: a GET shows the sign-in and one button,
and records nothing (mail scanners and link previews fetch every link of an email); the button's POST records the
user's answer (Provider User). Over real HTTP on loopback, against a real store."""

from __future__ import annotations

from datetime import datetime, timezone

import httpx
import pytest

from tests.service_support import Service, copy_store, trained_base

SECRET = "s" * 32


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    db = copy_store(trained_base(tmp_path_factory), tmp_path_factory.mktemp("links") / "l.duckdb")
    service = Service(db)
    yield service
    service.stop()


@pytest.fixture
def secret(monkeypatch):
    monkeypatch.setenv("RISKGATE_FEEDBACK_SECRET", SECRET)
    monkeypatch.setenv("RISKGATE_PUBLIC_URL", "https://risk.example.test")


def _event(svc, offset: int):
    """(event_id, username, creation_date, client_ip) of one stored event with a client IP."""
    return svc.worker.call(lambda con: con.execute(
        "SELECT event_id, username, creation_date, client_ip FROM events WHERE client_ip IS NOT NULL "
        "ORDER BY event_id LIMIT 1 OFFSET ?", [offset]).fetchall()[0]).result(30)


def _feedback(svc, event_id: str) -> list[tuple]:
    return svc.worker.call(lambda con: con.execute(
        "SELECT feedback_value, provider FROM feedback WHERE event_id = ? ORDER BY seq", [event_id]).fetchall()
    ).result(30)


def _link(event_id: str, username: str, which: int) -> str:
    """The link a notification email carries (``{one-click-link-valid}`` = 0, ``-invalid`` = 1), on the service."""
    from risk.notify import feedback_links, make_token

    return feedback_links(make_token(event_id, username))[which].replace("https://risk.example.test", "")


def test_the_links_page_records_nothing_and_names_the_sign_in(svc, secret):
    event_id, user, when, ip = _event(svc, 3)
    for which, button in ((0, "Yes, this was me"), (1, "No, this was not me")):
        for _ in range(3):  # a scanner, a preview, the user: none of them answers
            r = httpx.get(svc.url + _link(event_id, user, which))
            assert r.status_code == 200, r.text
            assert button in r.text and user in r.text and ip in r.text
            assert when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") in r.text
    assert _feedback(svc, event_id) == []
    assert r.headers["cache-control"] == "no-store" and r.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_the_button_records_the_links_answer(svc, secret):
    from risk.notify import make_token

    event_id, user, _, _ = _event(svc, 5)
    token = make_token(event_id, user)
    r = httpx.post(svc.url + "/v1/feedback", data={"token": token, "value": "invalid"})
    assert r.status_code == 200 and "your answer was recorded" in r.text
    assert _feedback(svc, event_id) == [("Invalid", "User")]
    r = httpx.post(svc.url + "/v1/feedback", data={"token": token, "value": "valid"})  # changing one's mind
    assert r.status_code == 200
    assert _feedback(svc, event_id) == [("Invalid", "User"), ("Valid", "User")]


@pytest.mark.parametrize("body, content_type, says", [
    ("value=valid", "application/x-www-form-urlencoded", "the form lacks token"),
    ("token=a.b", "application/x-www-form-urlencoded", "the form lacks value"),
    ("token=a.b&token=c.d&value=valid", "application/x-www-form-urlencoded", "the form gives token twice"),
    ('{"token": "a.b", "value": "valid"}', "application/json", "expected a form"),
    ("token=a.b&value=maybe", "application/x-www-form-urlencoded", "FeedbackValue must be one of Valid, Invalid"),
    ("token=a.b&value=valid", "application/x-www-form-urlencoded", "feedback token signature does not match"),
])
def test_a_bad_answer_is_refused_naming_what_is_wrong(svc, secret, body, content_type, says):
    r = httpx.post(svc.url + "/v1/feedback", content=body.encode(), headers={"content-type": content_type})
    assert r.status_code == 400 and says in r.text, r.text


def test_an_expired_or_foreign_link_shows_no_button(svc, secret):
    from risk.notify import make_token

    event_id, user, _, _ = _event(svc, 7)
    other_event, other_user, _, _ = _event(svc, 8)
    assert other_user != user or other_event != event_id
    expired = make_token(event_id, user, now=datetime(2020, 1, 1, tzinfo=timezone.utc))
    forged = make_token(event_id, user + "-not")  # signed, but for a user who does not own the event
    for token, says in ((expired, "feedback token expired"), (forged, "does not own its event")):
        r = httpx.get(svc.url + "/v1/feedback", params={"token": token, "value": "valid"})
        assert r.status_code == 400 and says in r.text and "<form" not in r.text, r.text
    assert _feedback(svc, event_id) == []


def test_values_on_the_page_are_escaped(svc, secret):
    """The token and the stored IP are written into the page's HTML: never as markup."""
    from service.app import _confirm_form

    html = _confirm_form({"username": "<b>u</b>", "creation_date": None, "client_ip": "\"><script>x</script>",
                          "feedback_value": "Valid"}, 'tok"en')
    assert "<script>" not in html and "<b>u</b>" not in html and 'value="tok&quot;en"' in html
