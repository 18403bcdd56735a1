"""User agents, header sets and device names of the synthetic population.

A *template* is one browser on one platform, with its share of sign-ins
(roughly the 2025-2026 mix of a consumer web app: Chrome first, Safari on
iPhone second, then Chrome on Android, Edge, desktop Safari, Firefox,
Samsung Internet). Version numbers follow the calendar: Chrome, Edge and
Firefox ship a major version about every four weeks, Safari once a year (with the
2025 jump to 26), so a device's agent ages realistically over a long window
and a device whose owner updates late lags a release or two.

Odd agents (scripts, ancient Internet Explorer, headless Chrome) exist only
for attackers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

_EPOCH = date(1970, 1, 1).toordinal()


def _day(y: int, m: int, d: int) -> int:
    return date(y, m, d).toordinal() - _EPOCH


# (day, version) of a known stable release; then one major every RELEASE_DAYS on average (four-week
# cycles with a longer one around the new year)
CHROME_REF = (_day(2025, 5, 27), 137)
FIREFOX_REF = (_day(2025, 5, 27), 139)
SAMSUNG_REF = (_day(2025, 4, 1), 28)  # about two majors a year
RELEASE_DAYS = 30.4
SAFARI_RELEASES = [  # (day, major): iOS/macOS releases each September
    (_day(2022, 9, 12), 16),
    (_day(2023, 9, 18), 17),
    (_day(2024, 9, 16), 18),
    (_day(2025, 9, 15), 26),
]


def chrome_major(day: int) -> int:
    return CHROME_REF[1] + int((day - CHROME_REF[0]) // RELEASE_DAYS)


def firefox_major(day: int) -> int:
    return FIREFOX_REF[1] + int((day - FIREFOX_REF[0]) // RELEASE_DAYS)


def samsung_major(day: int) -> int:
    return SAMSUNG_REF[1] + (day - SAMSUNG_REF[0]) // 182


def safari_version(day: int) -> tuple[int, int]:
    """(major, minor) of Safari / iOS on ``day``; a x.y point release about every two months."""
    start, major = SAFARI_RELEASES[0]
    for d, m in SAFARI_RELEASES:
        if day >= d:
            start, major = d, m
    years_after = 0
    while day >= start + 365 * (years_after + 1) and major >= 26:
        years_after += 1  # after 26, one major a year
    if years_after:
        major += years_after
        start += 365 * years_after
    return major, min(6, (day - start) // 60)


@dataclass(frozen=True)
class AgentTemplate:
    """One browser on one platform."""

    key: str
    template: str  # placeholders: {v} browser major, {sv} Safari "major.minor", {ios} iOS "major_minor"
    browser: str  # chrome | edge | firefox | safari | samsung | tool
    platform: str  # windows | mac | linux | ios | ipados | android | other
    device_type: str  # Desktop | Mobile | Tablet | Bot | Other
    headers: str  # header style: chromium | firefox | safari | requests | curl | legacy
    weight: float  # share of legitimate devices (0 = attackers only)

    def render(self, day: int, lag: int = 0) -> str:
        sv_major, sv_minor = safari_version(day - 61 * lag)
        ios = f"{sv_major}_{sv_minor}" if sv_major < 26 else "18_6"  # iOS 26 froze the UA's OS version
        if self.browser == "firefox":
            v = firefox_major(day) - lag
        elif self.browser == "samsung":
            v = samsung_major(day) - lag
        else:
            v = chrome_major(day) - lag
        return self.template.format(v=v, cv=v - 4, sv=f"{sv_major}.{sv_minor}", ios=ios)


_WIN = "Windows NT 10.0; Win64; x64"
_MAC = "Macintosh; Intel Mac OS X 10_15_7"
_WEBKIT = "AppleWebKit/537.36 (KHTML, like Gecko)"

TEMPLATES: tuple[AgentTemplate, ...] = (
    AgentTemplate("chrome-win", f"Mozilla/5.0 ({_WIN}) {_WEBKIT} Chrome/{{v}}.0.0.0 Safari/537.36",
                  "chrome", "windows", "Desktop", "chromium", 26.0),
    AgentTemplate("edge-win", f"Mozilla/5.0 ({_WIN}) {_WEBKIT} Chrome/{{v}}.0.0.0 Safari/537.36 Edg/{{v}}.0.0.0",
                  "edge", "windows", "Desktop", "chromium", 8.0),
    AgentTemplate("firefox-win", "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
                  "firefox", "windows", "Desktop", "firefox", 3.5),
    AgentTemplate("chrome-mac", f"Mozilla/5.0 ({_MAC}) {_WEBKIT} Chrome/{{v}}.0.0.0 Safari/537.36",
                  "chrome", "mac", "Desktop", "chromium", 6.5),
    AgentTemplate("safari-mac",
                  f"Mozilla/5.0 ({_MAC}) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{{sv}} Safari/605.1.15",
                  "safari", "mac", "Desktop", "safari", 5.0),
    AgentTemplate("firefox-mac", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
                  "firefox", "mac", "Desktop", "firefox", 1.0),
    AgentTemplate("chrome-linux", f"Mozilla/5.0 (X11; Linux x86_64) {_WEBKIT} Chrome/{{v}}.0.0.0 Safari/537.36",
                  "chrome", "linux", "Desktop", "chromium", 1.0),
    AgentTemplate("firefox-linux", "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
                  "firefox", "linux", "Desktop", "firefox", 0.8),
    AgentTemplate("safari-iphone",
                  "Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                  "Version/{sv} Mobile/15E148 Safari/604.1",
                  "safari", "ios", "Mobile", "safari", 20.0),
    AgentTemplate("chrome-iphone",
                  "Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                  "CriOS/{v}.0.0.0 Mobile/15E148 Safari/604.1",
                  "chrome", "ios", "Mobile", "safari", 3.0),
    AgentTemplate("chrome-android", f"Mozilla/5.0 (Linux; Android 10; K) {_WEBKIT} Chrome/{{v}}.0.0.0 Mobile Safari/537.36",
                  "chrome", "android", "Mobile", "chromium", 16.0),
    AgentTemplate("samsung-android",
                  f"Mozilla/5.0 (Linux; Android 14; SM-S918B) {_WEBKIT} SamsungBrowser/{{v}}.0 Chrome/{{cv}}.0.0.0 "
                  "Mobile Safari/537.36",
                  "samsung", "android", "Mobile", "chromium", 3.0),
    AgentTemplate("safari-ipad",
                  "Mozilla/5.0 (iPad; CPU OS {ios} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                  "Version/{sv} Mobile/15E148 Safari/604.1",
                  "safari", "ipados", "Tablet", "safari", 2.0),
    AgentTemplate("chrome-android-tablet",
                  f"Mozilla/5.0 (Linux; Android 10; K) {_WEBKIT} Chrome/{{v}}.0.0.0 Safari/537.36",
                  "chrome", "android", "Tablet", "chromium", 1.0),
    # attackers only
    AgentTemplate("python-requests", "python-requests/2.32.3", "tool", "other", "Other", "requests", 0.0),
    AgentTemplate("curl", "curl/8.7.1", "tool", "other", "Other", "curl", 0.0),
    AgentTemplate("go-http", "Go-http-client/1.1", "tool", "other", "Other", "curl", 0.0),
    AgentTemplate("okhttp", "okhttp/4.12.0", "tool", "other", "Other", "requests", 0.0),
    AgentTemplate("ie9", "Mozilla/5.0 (compatible; MSIE 9.0; Windows NT 6.1; Trident/5.0)", "tool", "windows",
                  "Desktop", "legacy", 0.0),
    AgentTemplate("ie11", "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko", "tool", "windows",
                  "Desktop", "legacy", 0.0),
    AgentTemplate("headless-chrome",
                  f"Mozilla/5.0 (X11; Linux x86_64) {_WEBKIT} HeadlessChrome/{{v}}.0.0.0 Safari/537.36",
                  "chrome", "linux", "Desktop", "chromium", 0.0),
    AgentTemplate("chrome-win-old",
                  f"Mozilla/5.0 (Windows NT 6.1; Win64; x64) {_WEBKIT} Chrome/74.0.3729.169 Safari/537.36",
                  "chrome", "windows", "Desktop", "chromium", 0.0),
)
TEMPLATE_INDEX = {t.key: i for i, t in enumerate(TEMPLATES)}
LEGIT = tuple(i for i, t in enumerate(TEMPLATES) if t.weight > 0)
ODD = tuple(TEMPLATE_INDEX[k] for k in ("python-requests", "curl", "go-http", "okhttp", "ie9", "ie11",
                                        "headless-chrome", "chrome-win-old"))
#: the agents a careful attacker copies: the most common desktop browsers
COMMON = tuple(TEMPLATE_INDEX[k] for k in ("chrome-win", "chrome-win", "chrome-win", "edge-win", "chrome-mac"))

_ACCEPT_NAV = {
    "chromium": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,"
    "application/signed-exchange;v=b3;q=0.7",
    "firefox": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "safari": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "legacy": "text/html, application/xhtml+xml, */*",
}
_ENCODING = {
    "chromium": "gzip, deflate, br, zstd",
    "firefox": "gzip, deflate, br, zstd",
    "safari": "gzip, deflate, br",
    "legacy": "gzip, deflate",
    "requests": "gzip, deflate",
}


def header_pairs(style: str, host: str, agent: str, language: str | None, sdk: bool) -> list[tuple[str, str]]:
    """Request headers in the order the client sends them (style = AgentTemplate.headers)."""
    accept = "application/json, text/plain, */*" if sdk else _ACCEPT_NAV.get(style, "*/*")
    if style == "curl":
        return [("Host", host), ("User-Agent", agent), ("Accept", "*/*")]
    if style == "requests":
        return [("Host", host), ("User-Agent", agent), ("Accept-Encoding", _ENCODING["requests"]), ("Accept", "*/*"),
                ("Connection", "keep-alive")]
    lang = [("Accept-Language", language)] if language else []
    enc = [("Accept-Encoding", _ENCODING[style])]
    if style == "firefox":
        return [("Host", host), ("User-Agent", agent), ("Accept", accept)] + lang + enc
    if style == "safari":
        return [("Host", host), ("Accept", accept)] + lang + enc + [("User-Agent", agent)]
    if style == "legacy":
        return [("Accept", accept)] + lang + [("User-Agent", agent)] + enc + [("Host", host)]
    return [("Host", host), ("User-Agent", agent), ("Accept", accept)] + enc + lang  # chromium


def headers_json_open(pairs: list[tuple[str, str]]) -> str:
    """The HttpHeaders JSON array without its closing bracket (forwarding headers may follow)."""
    return "[" + ",".join(
        json.dumps({"headerName": k, "headerValue": v}, separators=(",", ":"), ensure_ascii=False) for k, v in pairs
    )


@lru_cache(maxsize=8192)
def describe_agent(agent: str):
    """The agent as the enrichment step reads it (``ingest.agent.parse_agent``), once per distinct string."""
    from ingest.agent import parse_agent

    return parse_agent(agent)


def device_name(agent: str) -> str:
    """Cognito's DeviceName: "Chrome 126, Windows 10" (browser major, OS major; unknown parts "Other")."""
    return describe_agent(agent).device_name
