"""Debian's Chromium driven by Playwright (never Playwright's own browser downloads): what the browser tests share.

:func:`playwright_or_skip` skips the calling test module when /usr/bin/chromium is missing, except in CI (CI=true),
where it fails: `make test` (the Makefile's browser target, which .ci/run calls) installs it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def playwright_or_skip():
    """``playwright.sync_api``, or skip (fail in CI) the module when Chromium or Playwright is missing."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing in CI: make test (the Makefile's browser target) installs "
                        "Debian's chromium", pytrace=False)
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium); CI installs it", allow_module_level=True)
    if os.environ.get("CI") == "true":
        import playwright.sync_api as api

        return api
    return pytest.importorskip("playwright.sync_api")
