"""User agents -> browser, OS, device type and Cognito's device name, with ``ua-parser``.

Parsing is done once per distinct agent string (callers pass distinct
values; a bounded cache spans batches). ``ua-parser`` uses its Rust
accelerator (``ua-parser-rs``) when installed.

Device type is derived from the parsed result, in this order:
``Bot`` (device family Spider, or a known automation/HTTP-library agent),
``Tablet`` (iPad, Kindle, Android without "Mobile", known tablet families),
``Mobile`` (iOS, Android, other mobile OSes), ``Desktop`` (Windows, macOS,
Linux, Chrome OS, BSDs), else ``Other``.

Device name follows Cognito: ``"<browser> <major>, <os> <major>"`` such as
``"Chrome 126, Windows 10"``; an unknown part is ``Other``, so an empty or
unparsable agent gives ``"Other, Other"``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import ua_parser

MAX_AGENT_CHARS = 2048  # longer strings are parsed on their first 2 KB

_DESKTOP_OS = {
    "Windows", "Mac OS X", "macOS", "Linux", "Ubuntu", "Debian", "Fedora", "Chrome OS", "ChromeOS",
    "FreeBSD", "OpenBSD", "NetBSD", "Red Hat", "SUSE", "Mint", "Arch Linux", "Solaris",
}
_MOBILE_OS = {"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "Firefox OS", "Tizen", "HarmonyOS"}
_BOT_BROWSERS = {
    "Python Requests", "Python-urllib", "curl", "Wget", "Go-http-client", "okhttp", "Apache-HttpClient",
    "HeadlessChrome", "PhantomJS", "Java", "libwww-perl", "aiohttp", "Scrapy", "PostmanRuntime",
}
_TABLET_DEVICES = ("iPad", "Kindle", "Tablet", "Galaxy Tab", "Nexus 7", "Nexus 9", "Nexus 10", "Surface")


@dataclass(frozen=True)
class Agent:
    browser_family: str
    browser_version: str | None
    os_family: str
    os_version: str | None
    device_type: str
    device_name: str


def _version(*parts: str | None) -> str | None:
    out = []
    for p in parts:
        if p is None or p == "":
            break
        out.append(p)
    return ".".join(out) or None


def device_type(ua: str, browser: str, os_family: str, device_family: str | None) -> str:
    if device_family == "Spider" or browser in _BOT_BROWSERS:
        return "Bot"
    if device_family and any(t in device_family for t in _TABLET_DEVICES):
        return "Tablet"
    if os_family == "Android" and "Mobile" not in ua:
        return "Tablet"
    if os_family in _MOBILE_OS:
        return "Mobile"
    if os_family in _DESKTOP_OS:
        return "Desktop"
    return "Other"


def parse_agent(ua: str | None) -> Agent:
    """Parse one agent string (callers should use :class:`AgentParser` for many)."""
    if not ua or not ua.strip():
        return Agent("Other", None, "Other", None, "Other", "Other, Other")
    ua = ua[:MAX_AGENT_CHARS]
    r = ua_parser.parse(ua)
    b, o, d = r.user_agent, r.os, r.device
    browser = b.family if b else "Other"
    os_family = o.family if o else "Other"
    bmaj = b.major if b else None
    omaj = o.major if o else None
    name = f"{browser} {bmaj}" if browser != "Other" and bmaj else browser
    oname = f"{os_family} {omaj}" if os_family != "Other" and omaj else os_family
    return Agent(
        browser_family=browser,
        browser_version=_version(b.major, b.minor, b.patch) if b else None,
        os_family=os_family,
        os_version=_version(o.major, o.minor, o.patch) if o else None,
        device_type=device_type(ua, browser, os_family, d.family if d else None),
        device_name=f"{name}, {oname}",
    )


class AgentParser:
    """Parses distinct agent strings once, with a bounded cache across batches."""

    def __init__(self, max_cache: int = 200_000):
        self.max_cache = max_cache
        self._cache: OrderedDict[str, Agent] = OrderedDict()

    def parse_many(self, agents: list[str | None]) -> list[Agent]:
        out = []
        for ua in agents:
            key = ua or ""
            hit = self._cache.get(key)
            if hit is None:
                hit = parse_agent(ua)
                self._cache[key] = hit
                if len(self._cache) > self.max_cache:
                    self._cache.popitem(last=False)
            out.append(hit)
        return out
