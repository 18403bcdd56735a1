"""Turning a block of events into the strings every format needs, each distinct value made once.

:class:`Renderer` keeps the caches that live as long as a run (agent strings
per device and week, header sets, names); :class:`View` is one block's
strings, computed on first use, so a writer pays only for what it prints.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from functools import cached_property

import numpy as np

from ingest.schema import EVENT_RESPONSES, EVENT_TYPES, offset_text
from ingest.synth import agents
from ingest.synth import events as ev
from ingest.synth.catalogue import format_ips
from ingest.synth.population import CLIENTS, PROXY_ADDRESSES, SDK_CLIENTS
from ingest.synth.world import DAY_MS, World, utc_offset_minutes

#: ServerPath per app client and event type (EVENT_TYPES order)
SERVER_PATHS = {
    "web": ("/login", "/signup", "/forgot-password", "/account/password", "/signup/resend-code"),
    "spa": ("/api/auth/sign-in", "/api/auth/sign-up", "/api/auth/forgot-password", "/api/auth/change-password",
            "/api/auth/resend-code"),
    "mobile": ("/v2/auth/signin", "/v2/auth/signup", "/v2/auth/password/forgot", "/v2/auth/password/change",
               "/v2/auth/signup/resend"),
    "portal": ("/portal/login", "/portal/register", "/portal/forgot", "/portal/account/password",
               "/portal/register/resend"),
}
INNER_PROXY = "10.20.0.5"  # a second, inner proxy hop some portal requests pass through
_MONTHS = np.array("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), dtype=object)
_WEEKDAYS = np.array("Thu Fri Sat Sun Mon Tue Wed".split(), dtype=object)  # epoch day 0 was a Thursday


def _j(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def challenges_json(style: str) -> list[str]:
    """ChallengeResponses per challenge pattern: Cognito API names, or the user-activity export's."""
    out = []
    for pattern in ev.CHALLENGES:
        if style == "api":
            items = [{"ChallengeName": n, "ChallengeResponse": r} for n, r in pattern]
        else:
            items = [{"challengeName": n, "challengeResponse": r} for n, r in pattern]
        out.append(json.dumps(items, separators=(",", ":")))
    return out


class Renderer:
    """Per-run caches of strings."""

    def __init__(self, world: World):
        self.world = world
        pop, cat = world.pop, world.cat
        self.usernames = np.array(pop.usernames, dtype=object)
        self.subs = np.array(pop.subs, dtype=object)
        self.client_ids = np.array([c[1] for c in CLIENTS], dtype=object)
        self.server_names = np.array([c[2] for c in CLIENTS], dtype=object)
        self.event_types = np.array(EVENT_TYPES, dtype=object)
        self.responses = np.array(EVENT_RESPONSES, dtype=object)
        self.net_country = np.array(cat.country, dtype=object)
        self.net_country_name = np.array(cat.country_name, dtype=object)
        self.net_city = np.array(cat.city_name, dtype=object)
        self.net_region = np.array(cat.region, dtype=object)
        self.net_asn = cat.asn
        self.net_tz = cat.tz
        self._agent_key: dict[int, int] = {}
        self._agents: list[str] = []
        self._headers: list[str] = []
        self._dev_client: np.ndarray | None = None
        self._encoded_part: np.ndarray | None = None
        self._profiles: list[tuple] = []
        self._dev_profile = np.empty(0, np.int64)

    def _refresh_devices(self) -> None:
        """Per-device arrays: app client, EncodedData JSON part, and agent profile.

        A profile is (template, lag, language, client): everything the agent string and the header set depend
        on besides the week, so header sets are made once per profile and week, not per device.
        """
        d = self.world.devices
        if self._dev_client is not None and len(self._dev_client) == len(d):
            return
        self._dev_client = np.array(d.client, np.int8)
        self._encoded_part = np.array(["" if e is None else ',"EncodedData":' + _j(e) for e in d.encoded], dtype=object)
        ids: dict[tuple, int] = {}
        prof = np.empty(len(d), np.int64)
        for i, key in enumerate(zip(d.template, d.lag, d.lang, d.client)):
            prof[i] = ids.setdefault(key, len(ids))
        self._profiles = list(ids)
        self._dev_profile = prof

    def device_client(self) -> np.ndarray:
        self._refresh_devices()
        assert self._dev_client is not None
        return self._dev_client

    def encoded_part(self) -> np.ndarray:
        self._refresh_devices()
        assert self._encoded_part is not None
        return self._encoded_part

    def agents_for(self, dev: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(agent string, HttpHeaders JSON without its closing bracket) per event.

        A device's agent is rendered for the week of the event, so browsers age as the calendar moves.
        """
        self._refresh_devices()
        week = (t // DAY_MS) // 7
        key = (self._dev_profile[dev] << 24) | week
        uniq, inv = np.unique(key, return_inverse=True)
        idx = np.empty(len(uniq), np.int64)
        for i, k in enumerate(uniq.tolist()):
            j = self._agent_key.get(k)
            if j is None:
                template, lag, lang, client = self._profiles[k >> 24]
                tmpl = agents.TEMPLATES[template]
                ua = tmpl.render((k & ((1 << 24) - 1)) * 7, lag)
                pairs = agents.header_pairs(tmpl.headers, CLIENTS[client][2], ua, lang, client in SDK_CLIENTS)
                j = len(self._agents)
                self._agents.append(ua)
                self._headers.append(agents.headers_json_open(pairs))
                self._agent_key[k] = j
            idx[i] = j
        ua_arr = np.array([self._agents[j] for j in idx], dtype=object)
        hd_arr = np.array([self._headers[j] for j in idx], dtype=object)
        return ua_arr[inv], hd_arr[inv]


class View:
    """The strings of one block (computed on first use)."""

    def __init__(self, r: Renderer, b: ev.Block, ids: list[str]):
        self.r = r
        self.b = b
        self.event_id = ids

    @cached_property
    def request_id(self) -> list[str]:
        """A request id per event, derived from its event id (made only for formats that print it)."""
        out = []
        for e in self.event_id:
            h = hashlib.sha1(e.encode("ascii")).hexdigest()
            out.append(f"{h[0:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}")
        return out

    @cached_property
    def iso_ms(self) -> np.ndarray:
        """``2026-06-01T08:15:02.120`` (UTC, no zone suffix)."""
        return np.datetime_as_string(self.b.t.astype("datetime64[ms]"), unit="ms")

    @cached_property
    def client_ip(self) -> np.ndarray:
        return format_ips(self.r.world.cat, self.b.net, self.b.hi, self.b.lo)

    @cached_property
    def ip_address(self) -> np.ndarray:
        """What the app server forwarded as ContextData.IpAddress: the load balancer's address when proxied."""
        ips = self.client_ip.copy()
        p = np.nonzero(self.b.proxied)[0]
        if len(p):
            lb = np.array(PROXY_ADDRESSES, dtype=object)
            ips[p] = lb[(self.b.t[p] // 1000) % len(PROXY_ADDRESSES)]
        return ips

    @cached_property
    def _agents(self) -> tuple[np.ndarray, np.ndarray]:
        return self.r.agents_for(self.b.dev, self.b.t)

    @property
    def user_agent(self) -> np.ndarray:
        return self._agents[0]

    @property
    def headers_open(self) -> np.ndarray:
        return self._agents[1]

    @cached_property
    def client(self) -> np.ndarray:
        return self.r.device_client()[self.b.dev]

    @cached_property
    def client_id(self) -> np.ndarray:
        return self.r.client_ids[self.client]

    @cached_property
    def username(self) -> np.ndarray:
        return self.r.usernames[self.b.user]

    @cached_property
    def user_sub(self) -> np.ndarray:
        return self.r.subs[self.b.user]

    @cached_property
    def event_type(self) -> np.ndarray:
        return self.r.event_types[self.b.etype]

    @cached_property
    def event_response(self) -> np.ndarray:
        return self.r.responses[self.b.resp]

    @cached_property
    def device_name(self) -> np.ndarray:
        ua = self.user_agent
        uniq, inv = np.unique(ua.astype(str), return_inverse=True)
        return np.array([agents.device_name(u) for u in uniq], dtype=object)[inv]

    @cached_property
    def java_date(self) -> np.ndarray:
        """``Wed Jul 17 17:25:55 UTC 2024`` (java.util.Date.toString in UTC)."""
        s = np.datetime_as_string((self.b.t // 1000).astype("datetime64[s]"), unit="s")
        day = self.b.t // DAY_MS
        wd = _WEEKDAYS[day % 7]
        out = []
        for text, w in zip(s.tolist(), wd.tolist()):
            out.append(f"{w} {_MONTHS[int(text[5:7]) - 1]} {text[8:10]} {text[11:19]} UTC {text[0:4]}")
        return np.array(out, dtype=object)

    @cached_property
    def timezone(self) -> np.ndarray:
        """The network's local UTC offset on the event's day, ``+02:00``."""
        day = self.b.t // DAY_MS
        key = (self.b.net.astype(np.int64) << 24) | day
        uniq, inv = np.unique(key, return_inverse=True)
        out = []
        for k in uniq.tolist():
            out.append(offset_text(utc_offset_minutes(self.r.net_tz[k >> 24] or "UTC", k & ((1 << 24) - 1))))
        return np.array(out, dtype=object)[inv]


def iso_with_offset(ms: int) -> str:
    """AWS CLI style: ``2026-06-01T08:15:02.120000+00:00``."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="microseconds")


def proxied_headers(client_ip: str, t: int) -> str:
    """The forwarding headers the portal's load balancer appends (some requests crossed an inner proxy too)."""
    xff = f"{client_ip}, {INNER_PROXY}" if t % 10 < 3 else client_ip
    return (',{"headerName":"X-Forwarded-For","headerValue":"' + xff + '"}'
            ',{"headerName":"X-Forwarded-Proto","headerValue":"https"}')
