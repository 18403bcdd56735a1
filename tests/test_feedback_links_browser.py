"""A notification email's one-click link opened in a real browser (Debian's Chromium): the page names the sign-in
and records nothing; its one button (a plain form: no script, which the page's Content-Security-Policy forbids
anyway) records the answer, under the relative action that keeps working behind a path prefix."""

from __future__ import annotations

import pytest

from tests.browser_support import CHROMIUM, CHROMIUM_ARGS, playwright_or_skip
from tests.service_support import Service, copy_store, trained_base

playwright_api = playwright_or_skip()


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    db = copy_store(trained_base(tmp_path_factory), tmp_path_factory.mktemp("links-browser") / "b.duckdb")
    service = Service(db)
    yield service
    service.stop()


def test_the_link_asks_then_the_button_records_in_chromium(svc, monkeypatch):
    from risk.notify import feedback_links, make_token

    monkeypatch.setenv("RISKGATE_FEEDBACK_SECRET", "b" * 32)
    event_id, user = svc.worker.call(lambda con: con.execute(
        "SELECT event_id, username FROM events ORDER BY event_id LIMIT 1").fetchall()[0]).result(30)
    valid, invalid = feedback_links(make_token(event_id, user), base_url=svc.url)

    def recorded():
        return svc.worker.call(lambda con: con.execute(
            "SELECT feedback_value, provider FROM feedback WHERE event_id = ? ORDER BY seq", [event_id]).fetchall()
        ).result(30)

    problems: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.goto(invalid)
            page.get_by_role("button", name="No, this was not me").wait_for(timeout=30_000)
            assert recorded() == []  # opening the link answers nothing
            page.get_by_role("button", name="No, this was not me").click()
            page.get_by_text("your answer was recorded").wait_for(timeout=30_000)
            assert page.url == svc.url + "/v1/feedback"  # the token is not in the address after the answer
        finally:
            browser.close()
    assert recorded() == [("Invalid", "User")]
    assert not problems, problems
