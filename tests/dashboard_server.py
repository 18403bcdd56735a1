"""What the browser tests of the dashboard share: Debian's Chromium and `riskgate dashboard` on a loopback port.

(Not a test module: importing it never skips or fails anything; ``browser_api()`` does that, per test.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def browser_api():
    """playwright.sync_api, or a skip (a failure in CI, which installs Chromium) when Chromium is missing."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing in CI", pytrace=False)
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium); CI installs it")
    if os.environ.get("CI") == "true":
        import playwright.sync_api as api
        return api
    return pytest.importorskip("playwright.sync_api")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def dashboard_server(db: Path, folder: Path, env: dict):
    """`riskgate dashboard --db DB` on a free loopback port, in its own process group (stopped as a group), run
    from ``folder`` (its log: folder/server.log) with ``env``; yields its URL once it answers."""
    port = free_port()
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "cli", "dashboard", "--db", str(db), "--port", str(port)],
                            cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (folder / "server.log").read_text()
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the dashboard did not start:\n" + (folder / "server.log").read_text()
            time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def settle(page, title: str) -> None:
    """Wait until the page's title is drawn and the script run is over."""
    page.locator("h1", has_text=title).first.wait_for(timeout=60_000)
    page.wait_for_timeout(200)
    page.wait_for_selector("[data-testid='stStatusWidget']", state="detached", timeout=60_000)
    page.wait_for_timeout(600)
