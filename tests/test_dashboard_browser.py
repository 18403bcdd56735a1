"""One real browser over the real server: `riskgate dashboard` opened page by page in Debian's Chromium.

Fails on any error box, Streamlit exception or uncaught page error, and saves a
screenshot of each page to test-artifacts/dashboard/<page>.png; then, on the same
server and browser, on stored values crafted to be rendered (the check of
tests/test_dashboard_fixes.py: shown literally, nothing fetched). Playwright's own
browser downloads are never used: Chromium is the system's (/usr/bin/chromium,
installed by `make test`, which .ci/run calls). Without it the test is skipped, except in CI (CI=true),
where it fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from risk import config as rc
from tests import dashboard_store as known
from tests.browser_support import CHROMIUM, CHROMIUM_ARGS, playwright_or_skip
from tests.dashboard_server import dashboard_server, settle
from tests.test_dashboard_fixes import add_evil, tracker  # noqa: F401 (tracker: a fixture)

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
PAGES = [("", "Overview"), ("events", "Events"), ("user", "User"), ("tuning", "Tuning"),
         ("configuration", "Configuration"), ("jobs", "Jobs")]

playwright_api = playwright_or_skip()


@pytest.fixture
def server(tmp_path, tracker):
    """`riskgate dashboard` on the known store (its path, its URL), and the loopback server the evil values point
    to (``tests.test_dashboard_fixes.tracker``)."""
    db = tmp_path / "known.duckdb"
    known.build(db)
    env = {k: v for k, v in os.environ.items() if k not in ("RISKGATE_DASHBOARD_PASSWORD", rc.POOL_ENV)}
    env["HOME"] = str(tmp_path)  # no user-level Streamlit settings or secrets
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with dashboard_server(db, tmp_path, env) as url:
        yield db, url, tracker


def _settle(page, title: str) -> None:
    """Wait until the page's title is drawn and the script run is over."""
    page.locator("h1", has_text=title).first.wait_for(timeout=60_000)
    page.wait_for_timeout(200)
    page.wait_for_selector("[data-testid='stStatusWidget']", state="detached", timeout=60_000)
    page.wait_for_timeout(400)


def _problems(page) -> list[str]:
    found = []
    for sel in ("[data-testid='stException']", "[data-testid='stAlertContentError']"):
        for el in page.locator(sel).all():
            found.append(f"{sel}: {el.inner_text()[:300]}")
    body = page.locator("body").inner_text()
    for marker in ("Traceback (most recent call last)", "StreamlitAPIException"):
        if marker in body:
            found.append(f"page text contains {marker!r}")
    return found


def test_every_page_renders_then_no_stored_value_is_rendered_or_fetched_in_chromium(server):
    """One server and one browser for two checks (each used to start its own, about 13 s): every page of the
    known store without errors (screenshots saved), then -- once the test process added an event, a label and
    quarantined rows crafted to be rendered (``tests.test_dashboard_fixes.add_evil``) while the server runs --
    none of their values rendered as Markdown or HTML, nor any address they name fetched (the pages show them
    at once: the dashboard notices the store changed)."""
    db, url, (base, hits) = server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    elsewhere: list[str] = []
    dialogs: list[str] = []
    with playwright_api.sync_playwright() as p:
        # a name of a web page that rebinds it to this machine (DNS rebinding), simulated by the browser's resolver
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            page.on("request", lambda r: None if r.url.startswith(url) or r.url.startswith("data:")
                    else elsewhere.append(r.url))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            _every_page(page, url)
            assert not errors, errors
            values = add_evil(db, base)  # another process's write, between two page loads
            page.set_viewport_size({"width": 1400, "height": 1600})
            found, shown = _evil_pages(page, url, base, values)
            rebound = _rebound_page(page, url)
        finally:
            browser.close()
    assert not errors, errors
    assert sorted(f.name for f in ARTIFACTS.glob("*.png")) >= sorted(f"{p or 'overview'}.png" for p, _ in PAGES)
    assert hits == [], f"the browser fetched addresses chosen by the events: {hits}"
    assert not [u for u in elsewhere if u.startswith(base)], elsewhere
    assert not dialogs, dialogs
    # without a password, a page whose address is not a loopback one shows nothing of the store
    assert "answers only to a loopback address in the browser" in rebound, rebound
    assert "known.duckdb" not in rebound and "AdminListUserAuthEvents" not in rebound, rebound
    assert values["username"] not in rebound and "alice" not in rebound
    assert all(not any(v.values()) for v in found.values()), found
    assert "<b>BOLDCITY</b>" in shown["map"] and '<a href="' in shown["map"]  # plotly shows the characters
    for k in ("username", "city", "region", "server_path", "as_org", "label", "device_name"):
        assert values[k] in shown["events"], k
    assert values["device_name"] in shown["user"] and values["city"] in shown["user"]
    assert values["file"] in shown["jobs"]


def _every_page(page, url: str) -> None:
    """Each page through the sidebar's navigation, as a person would (one session): no error shown; a
    screenshot of each."""
    page.goto(url)
    for path, title in PAGES:
        page.set_viewport_size({"width": 1400, "height": 1000})
        if path:
            page.locator("[data-testid='stSidebarNav'] a", has_text=title).first.click()
            page.wait_for_url(f"**/{path}", timeout=30_000)
        _settle(page, title)
        if path == "user":
            box = page.get_by_label("Username")
            box.fill("alice")
            box.press("Enter")
            page.get_by_text("AdminListUserAuthEvents").first.wait_for(timeout=30_000)
            _settle(page, title)
        problems = _problems(page)
        assert not problems, f"/{path}: {problems}"
        height = page.evaluate("() => Math.max(...[...document.querySelectorAll("
                               "'[data-testid=stMain], [data-testid=stMainBlockContainer]')]"
                               ".map(e => e.scrollHeight))")
        page.set_viewport_size({"width": 1400, "height": min(max(int(height) + 80, 1000), 8000)})
        page.wait_for_timeout(300)
        page.screenshot(path=str(ARTIFACTS / f"{path or 'overview'}.png"), full_page=True)


REBOUND = "rebind.riskgate.test"


def _rebound_page(page, url: str) -> str:
    """The text of the dashboard's User page opened under another name that resolves to 127.0.0.1."""
    page.goto(url.replace("127.0.0.1", REBOUND) + "/user")
    page.get_by_text("answers only to a loopback address").first.wait_for(timeout=60_000)
    page.wait_for_timeout(500)
    return page.locator("body").inner_text()


def _evil_pages(page, url: str, base: str, values: dict) -> tuple[dict, dict]:
    """The pages showing the evil values, each loaded afresh: what each has that the values could have made
    (images and links to ``base``, math, bold), and the text shown."""
    found: dict = {}
    shown: dict = {}

    def look(where: str) -> None:
        main = page.locator("[data-testid='stMain']")
        found[where] = {
            "img": main.locator(f"img[src^='{base}']").count(),
            "a": page.locator(f"a[href^='{base}'], a[href^='javascript']").count(),
            "katex": main.locator(".katex").count(),
            "strong bold": main.locator("strong", has_text="bold").count(),
        }

    page.goto(url)  # the overview and its map
    settle(page, "Overview")
    page.locator(".js-plotly-plot .scattergeo, .js-plotly-plot .scattergeolayer").first.wait_for(
        state="attached", timeout=30_000)
    page.wait_for_timeout(500)
    look("overview")
    shown["map"] = page.locator(".js-plotly-plot").last.text_content()

    page.goto(f"{url}/events")  # the newest event (the evil one) is shown at once
    settle(page, "Events")
    page.locator("h2", has_text="SignIn by").first.wait_for(timeout=30_000)
    shown["events"] = page.locator("[data-testid='stMain']").inner_text()
    look("events")

    page.goto(f"{url}/user")
    settle(page, "User")
    box = page.get_by_label("Username")
    box.fill(values["username"])
    box.press("Enter")
    page.get_by_text("AdminListUserAuthEvents").first.wait_for(timeout=30_000)
    settle(page, "User")
    shown["user"] = page.locator("[data-testid='stMain']").inner_text()
    look("user")

    page.goto(f"{url}/jobs")
    settle(page, "Jobs")
    shown["jobs"] = page.locator("[data-testid='stMain']").inner_text()
    look("jobs")
    page.wait_for_timeout(500)
    return found, shown
