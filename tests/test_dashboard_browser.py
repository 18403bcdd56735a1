"""One real browser over the real server: `riskgate dashboard` opened page by page in Debian's Chromium.

Fails on any error box, Streamlit exception or uncaught page error, and saves a
screenshot of each page to test-artifacts/dashboard/<page>.png. Playwright's own
browser downloads are never used: Chromium is the system's (/usr/bin/chromium,
installed by `make test`, which .ci/run calls). Without it the test is skipped, except in CI (CI=true),
where it fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import dashboard_store as known
from tests.dashboard_server import dashboard_server

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAGES = [("", "Overview"), ("events", "Events"), ("user", "User"), ("tuning", "Tuning"),
         ("configuration", "Configuration"), ("jobs", "Jobs")]

if not Path(CHROMIUM).exists():
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing in CI: make test (the Makefile's browser target) installs "
                    "Debian's chromium", pytrace=False)
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium); CI installs it", allow_module_level=True)

playwright_api = pytest.importorskip("playwright.sync_api") if os.environ.get("CI") != "true" else None
if playwright_api is None:
    import playwright.sync_api as playwright_api


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`riskgate dashboard` on the known store."""
    d = tmp_path_factory.mktemp("browser")
    db = d / "known.duckdb"
    known.build(db)
    env = {k: v for k, v in os.environ.items() if k != "RISKGATE_DASHBOARD_PASSWORD"}
    env["HOME"] = str(d)  # no user-level Streamlit settings or secrets
    with dashboard_server(db, d, env) as url:
        yield url


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


def test_every_page_renders_without_errors_in_chromium(server):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            page.goto(server)
            for path, title in PAGES:
                page.set_viewport_size({"width": 1400, "height": 1000})
                if path:  # through the sidebar's navigation, as a person would (one session)
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
        finally:
            browser.close()
    assert not errors, errors
    assert sorted(f.name for f in ARTIFACTS.glob("*.png")) >= sorted(f"{p or 'overview'}.png" for p, _ in PAGES)
