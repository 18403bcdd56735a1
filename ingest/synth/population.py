"""The synthetic users: who they are, where they live, their devices, habits, trips and MFA.

Everything is drawn once, up front, from the seed: a population of ``N`` users
is a few arrays of length ``N`` plus a device table. Per-event choices made
later (which address today, which device this time) are pure functions of
these arrays, the day and the seed (see :func:`mix`), so any module can ask
"what was user u's home address on day d" and get the answer the activity
generator used.
"""

from __future__ import annotations

import base64
import unicodedata
from dataclasses import dataclass, field

import numpy as np

from ingest.synth import agents
from ingest.synth.catalogue import Catalogue, pick_offsets
from ingest.synth.config import SynthParams

USER_POOL_ID = "us-east-1_Rg5ynTh01"
#: app clients: (name, ClientId, ServerName). Browser devices use web, spa or portal; app devices use mobile.
CLIENTS = (
    ("web", "4f1b7kq2rp0sd8mva3nch5e6tu", "auth.example.com"),
    ("spa", "7c2tq9e1ml4dv6s0fa8kg3o5bj", "app.example.com"),
    ("mobile", "1n6p3mrq8sk2ba4n2f7k1h0c9d", "api.example.com"),
    ("portal", "5h8d2ws3jx7yq1zk4r6m0v9b2e", "portal.example.com"),
)
WEB, SPA, MOBILE, PORTAL = range(4)
SDK_CLIENTS = (SPA, MOBILE)
#: the load balancer in front of the portal: what the portal forwards as IpAddress
PROXY_ADDRESSES = ("10.0.12.7", "10.0.13.22", "10.0.14.5", "10.0.15.19")
EMAIL_DOMAINS = ("example.com", "example.org", "example.net")
STATUSES = ("CONFIRMED", "UNCONFIRMED", "FORCE_CHANGE_PASSWORD", "RESET_REQUIRED")

FIRST_NAMES = (
    "james mary robert patricia john jennifer michael linda david elizabeth william barbara richard susan joseph "
    "jessica thomas sarah charles karen daniel nancy matthew lisa anthony betty mark sandra paul ashley steven "
    "emily andrew kimberly joshua donna kevin michelle brian carol george amanda oliver amelia harry isla jack "
    "ava noah mia leo emma lucas lea hugo chloe louis ines gabriel jade lukas hannah felix lena jonas sofia "
    "mateo valentina santiago camila diego lucia alejandro martina marco giulia luca chiara matteo francesca "
    "jan anna piotr zofia aarav diya vivaan ananya arjun saanvi haruto yui sota hina minjun seoyeon wei li "
    "chen jing thabo naledi chidi ngozi emeka amara sven astrid lars ingrid joao beatriz pedro mariana"
).split()
LAST_NAMES = (
    "smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez lopez gonzalez wilson "
    "anderson thomas taylor moore jackson martin lee thompson white harris clark lewis walker hall young allen "
    "wright scott green baker adams nelson hill campbell mitchell roberts carter phillips evans turner parker "
    "collins edwards stewart morris murphy cook rogers morgan cooper peterson reed bailey bell kelly howard "
    "muller schmidt schneider fischer weber meyer wagner becker dubois durand leroy moreau laurent simon "
    "rossi russo ferrari esposito bianchi romano silva santos oliveira souza pereira costa kowalski nowak "
    "wisniewski sharma patel singh kumar gupta sato suzuki takahashi tanaka kim park choi wang zhang liu "
    "nkosi dlamini okafor adeyemi johansson andersson nielsen jansen devries peeters novak horvath"
).split()
_PHONE_PREFIX = {"US": "+1", "CA": "+1", "GB": "+44", "DE": "+49", "FR": "+33", "IN": "+91", "BR": "+55",
                 "AU": "+61", "JP": "+81", "ES": "+34", "IT": "+39", "MX": "+52", "NL": "+31"}

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)


def mix(seed: int, *parts) -> np.ndarray:
    """A deterministic non-negative int64 per element from integer arrays (splitmix64 rounds)."""
    with np.errstate(over="ignore"):
        x = np.full(np.broadcast(*[np.asarray(p) for p in parts]).shape, np.uint64(seed & 0xFFFFFFFFFFFFFFFF))
        for p in parts:
            x = x ^ (np.asarray(p).astype(np.int64).astype(np.uint64) + _M1)
            x = (x ^ (x >> np.uint64(30))) * _M2
            x = (x ^ (x >> np.uint64(27))) * _M3
            x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(1)).astype(np.int64)


@dataclass
class Devices:
    """All devices, users' and attackers': a stable agent template, language, fingerprint and app client."""

    template: list[int] = field(default_factory=list)
    lag: list[int] = field(default_factory=list)
    lang: list[str | None] = field(default_factory=list)
    encoded: list[str | None] = field(default_factory=list)
    client: list[int] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)  # user index, -1 for attackers

    def add(self, template: int, lag: int, lang: str | None, encoded: str | None, client: int, owner: int) -> int:
        self.template.append(template)
        self.lag.append(lag)
        self.lang.append(lang)
        self.encoded.append(encoded)
        self.client.append(client)
        self.owner.append(owner)
        return len(self.template) - 1

    def __len__(self) -> int:
        return len(self.template)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "template": np.array(self.template, np.int32),
            "lag": np.array(self.lag, np.int32),
            "client": np.array(self.client, np.int8),
        }


def fingerprint(rng: np.random.Generator) -> str:
    """An opaque EncodedData blob, as the client SDK sends (base64, stable per device)."""
    return fingerprints(rng, 1)[0]


def fingerprints(rng: np.random.Generator, k: int) -> list[str]:
    sizes = rng.integers(72, 120, k).tolist()
    raw = rng.bytes(sum(sizes))
    out, pos = [], 0
    for n in sizes:
        out.append(base64.b64encode(raw[pos:pos + n]).decode("ascii"))
        pos += n
    return out


def uuids(raw: bytes) -> list[str]:
    """UUID version 4 strings from 16 random bytes each."""
    h = raw.hex()
    return [
        f"{h[i:i + 8]}-{h[i + 8:i + 12]}-4{h[i + 13:i + 16]}-{'89ab'[int(h[i + 16], 16) & 3]}{h[i + 17:i + 20]}-"
        f"{h[i + 20:i + 32]}"
        for i in range(0, len(h), 32)
    ]


@dataclass
class Population:
    n: int
    usernames: list[str]
    subs: list[str]
    emails: list[str]
    phones: list[str | None]
    city: np.ndarray  # int32 catalogue city
    lang: list[str]
    home_net4: np.ndarray  # int32
    home_net6: np.ndarray  # int32, -1 = no IPv6
    mobile_net: np.ndarray  # int32, -1 = none
    office_net: np.ndarray  # int32, -1 = none
    office_off: np.ndarray  # int64 host offset inside office_net
    lease_days: np.ndarray  # int32
    lease_phase: np.ndarray  # int32
    profile: np.ndarray  # int8: 0 daily, 1 weekly, 2 rare
    rate: np.ndarray  # float64 sessions per day
    hour_shift: np.ndarray  # int8
    mfa: np.ndarray  # int8: 0 none, 1 TOTP, 2 SMS, 3 both
    created_ms: np.ndarray  # int64 epoch ms
    created_day: np.ndarray  # int32 day relative to the window start (negative: before)
    status: list[str]
    enabled: np.ndarray  # bool
    signs_in: np.ndarray  # bool: produces sign-ins (confirmed, enabled, not blocked)
    dev_first: np.ndarray  # int32
    dev_count: np.ndarray  # int8
    trip_start: np.ndarray  # (n, 2) int32, day of departure (-10**6 = no trip)
    trip_end: np.ndarray  # (n, 2) int32, day of return
    trip_city: np.ndarray  # (n, 2) int32
    trip_net: np.ndarray  # (n, 2) int32
    trip_long: np.ndarray  # (n, 2) bool
    rba_id: np.ndarray  # int64: the user's integer id in rba-csv output
    seed: int
    cat: Catalogue

    def home_address(self, users: np.ndarray, days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(network, hi, lo) of each user's home IPv4 address on each day (it changes every lease)."""
        period = (days + self.lease_phase[users]) // self.lease_days[users]
        nets = self.home_net4[users]
        r = mix(self.seed, 11, users, period)
        hi, lo = pick_offsets(self.cat, nets, r, r)
        return nets, hi, lo


def _ascii(s: str) -> str:
    return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode("ascii")


def _choice_idx(rng: np.random.Generator, weights, size=None):
    w = np.asarray(weights, dtype=float)
    return rng.choice(len(w), size=size, p=w / w.sum())


def build(n: int, days: int, start_ms: int, cat: Catalogue, params: SynthParams, seed: int,
          rng: np.random.Generator) -> tuple[Population, Devices]:
    """Draw ``n`` users and their devices."""
    user_cities = [c for c in cat.cities if c.weight > 0]
    city_ids = np.array([c.index for c in user_cities], np.int32)
    city = city_ids[_choice_idx(rng, [c.weight for c in user_cities], n)]

    # names
    firsts = rng.integers(0, len(FIRST_NAMES), n)
    lasts = rng.integers(0, len(LAST_NAMES), n)
    taken: dict[str, int] = {}
    usernames, emails = [], []
    doms = rng.integers(0, len(EMAIL_DOMAINS), n)
    sfx = rng.integers(2, 99, n)
    for i in range(n):
        base = _ascii(f"{FIRST_NAMES[firsts[i]]}.{LAST_NAMES[lasts[i]]}")
        name = base
        if name in taken:
            name = f"{base}{sfx[i]}"
            while name in taken:
                taken[base] = taken.get(base, 1) + 1
                name = f"{base}{sfx[i]}{taken[base]}"
        taken[name] = 1
        usernames.append(name)
        emails.append(f"{name}@{EMAIL_DOMAINS[doms[i]]}")
    subs = uuids(rng.bytes(16 * n))
    rba_id = rng.integers(-(2**62), 2**62, n, dtype=np.int64)

    # language
    english = rng.random(n) < params.english_share
    lang = ["en-US,en;q=0.9" if english[i] else cat.cities[city[i]].lang for i in range(n)]

    # networks
    home_net4 = np.empty(n, np.int32)
    home_net6 = np.full(n, -1, np.int32)
    mobile_net = np.full(n, -1, np.int32)
    office_net = np.full(n, -1, np.int32)
    wants6 = rng.random(n) < params.ipv6_share
    has_carrier = rng.random(n) < params.mobile_carrier_share
    has_office = rng.random(n) < params.office_share
    r = rng.integers(0, 2**62, (n, 6)).tolist()
    city_list = city.tolist()
    wants6_l, carrier_l, office_l = wants6.tolist(), has_carrier.tolist(), has_office.tolist()
    h4, h6, mob, off = [0] * n, [-1] * n, [-1] * n, [-1] * n
    for i in range(n):
        ri = r[i]
        isps = cat.cities[city_list[i]].isps
        k = ri[0] % len(isps)
        v4, v6 = isps[k]
        h4[i] = v4[ri[1] % len(v4)]
        if wants6_l[i] and v6:
            h6[i] = v6[ri[2] % len(v6)]
        if carrier_l[i] and len(isps) > 1:
            other = isps[(k + 1 + ri[3] % (len(isps) - 1)) % len(isps)][0]
            mob[i] = other[ri[4] % len(other)]
        if office_l[i]:
            j = ri[5] % len(isps)
            off[i] = isps[j][0][(ri[5] >> 8) % len(isps[j][0])]
    home_net4[:] = h4
    home_net6[:] = h6
    mobile_net[:] = mob
    office_net[:] = off
    office_off = np.zeros(n, np.int64)
    o = office_net >= 0
    if o.any():
        rr = rng.integers(0, 2**62, int(o.sum()))
        office_off[o] = pick_offsets(cat, office_net[o], rr, rr)[1]
    lease_days = np.array(params.lease_days, np.int32)[_choice_idx(rng, params.lease_share, n)]
    lease_phase = rng.integers(0, 365, n).astype(np.int32)

    # habits
    profile = _choice_idx(rng, params.profile_share, n).astype(np.int8)
    lo = np.array([p[0] for p in params.profile_rate])[profile]
    hi = np.array([p[1] for p in params.profile_rate])[profile]
    rate = lo + (hi - lo) * rng.random(n)
    u = rng.random(n)
    early = -rng.integers(1, 3, n)
    hour_shift = np.where(u < params.night_owl_share, 3,
                          np.where(u < params.night_owl_share + params.early_bird_share, early, 0)).astype(np.int8)

    # accounts
    mfa = np.where(rng.random(n) < params.mfa_share, 1 + _choice_idx(rng, params.mfa_kind_share, n), 0).astype(np.int8)
    u = rng.random(n)
    in_window = u < params.created_in_window_share
    created_day = np.where(
        in_window, rng.integers(0, max(days, 1), n), -rng.integers(1, params.history_days, n)
    ).astype(np.int32)
    created_ms = start_ms + created_day.astype(np.int64) * 86_400_000 + rng.integers(6 * 3600_000, 22 * 3600_000, n)
    status = ["CONFIRMED"] * n
    enabled = np.ones(n, bool)
    v = rng.random(n)
    p = params
    cut = np.cumsum([p.unconfirmed_share, p.force_change_share, p.reset_required_share, p.disabled_share])
    for i in range(n):
        if v[i] < cut[0] and in_window[i]:
            status[i] = "UNCONFIRMED"
            mfa[i] = 0
        elif cut[0] <= v[i] < cut[1] and not in_window[i]:
            status[i] = "FORCE_CHANGE_PASSWORD"
            mfa[i] = 0
        elif cut[1] <= v[i] < cut[2] and not in_window[i]:
            status[i] = "RESET_REQUIRED"
        elif cut[2] <= v[i] < cut[3] and not in_window[i]:
            enabled[i] = False
    signs_in = np.array([s == "CONFIRMED" for s in status]) & enabled

    # devices: the first drawn from the overall mix, the others more often of another kind (phone + laptop)
    devices = Devices()
    n_dev = 1 + _choice_idx(rng, params.devices_share, n)
    dev_first = np.zeros(n, np.int32)
    dev_first[1:] = np.cumsum(n_dev)[:-1]
    total = int(n_dev.sum())
    owner = np.repeat(np.arange(n), n_dev)
    slot = np.arange(total) - dev_first[owner]
    legit = np.array(agents.LEGIT)
    tw = np.array([agents.TEMPLATES[t].weight for t in agents.LEGIT], float)
    kind_names = sorted({agents.TEMPLATES[t].device_type for t in agents.LEGIT})
    kinds = np.array([kind_names.index(agents.TEMPLATES[t].device_type) for t in agents.LEGIT])
    first_cdf = np.cumsum(tw) / tw.sum()
    first = np.minimum(np.searchsorted(first_cdf, rng.random(n), side="right"), len(tw) - 1)
    other_cdf = np.stack([np.cumsum(np.where(kinds == k, tw * 0.35, tw)) for k in range(len(kind_names))])
    other_cdf /= other_cdf[:, -1:]
    u = rng.random(total)
    first_kind = kinds[first][owner]
    pick = np.where(
        slot == 0,
        first[owner],
        np.minimum((other_cdf[first_kind] < u[:, None]).sum(axis=1), len(tw) - 1),
    )
    template = legit[pick]
    desktop = np.array([agents.TEMPLATES[t].device_type == "Desktop" for t in template])
    c = rng.random(total)
    c2 = rng.random(total)
    client = np.where(
        desktop,
        np.where(c < params.proxy_client_share, PORTAL,
                 np.where(c < params.proxy_client_share + params.sdk_client_share, SPA, WEB)),
        np.where(c < 0.6, MOBILE, np.where(c2 < 0.5, SPA, WEB)),
    )
    lags = _choice_idx(rng, params.device_lag_share, total)
    sdk = np.isin(client, SDK_CLIENTS)
    blobs = iter(fingerprints(rng, int(sdk.sum())))
    devices.template = template.tolist()
    devices.lag = lags.tolist()
    devices.lang = [lang[o] for o in owner.tolist()]
    devices.encoded = [next(blobs) if s_ else None for s_ in sdk.tolist()]
    devices.client = client.tolist()
    devices.owner = owner.tolist()

    # trips
    trip_start = np.full((n, 2), -(10**6), np.int32)
    trip_end = np.full((n, 2), -(10**6), np.int32)
    trip_city = np.zeros((n, 2), np.int32)
    trip_net = np.zeros((n, 2), np.int32)
    trip_long = np.zeros((n, 2), bool)
    n_trips = np.minimum(rng.poisson(params.trips_per_user_per_90_days * days / 90.0, n), 2)
    n_trips[profile == 2] = 0
    weights = np.array([c.weight for c in user_cities])
    for i in np.nonzero(n_trips)[0]:
        home = int(city[i])
        earliest = 0
        for t in range(int(n_trips[i])):
            length = int(rng.integers(params.trip_days[0], params.trip_days[1] + 1))
            latest = days - length
            if latest <= earliest:
                break
            s = int(rng.integers(earliest, latest + 1))
            foreign = rng.random() < params.trip_foreign_share
            same = [j for j, c in enumerate(user_cities)
                    if c.index != home and (c.country == cat.cities[home].country) != foreign]
            if not same:
                same = [j for j, c in enumerate(user_cities) if c.index != home]
            w = weights[same]
            dest = int(user_cities[same[_choice_idx(rng, w)]].index)
            isps = cat.cities[dest].isps
            v4 = isps[int(rng.integers(0, len(isps)))][0]
            trip_start[i, t], trip_end[i, t] = s, s + length
            trip_city[i, t] = dest
            trip_net[i, t] = v4[int(rng.integers(0, len(v4)))]
            trip_long[i, t] = cat.distance_km(home, dest) > params.long_haul_km
            earliest = s + length + 7

    phones: list[str | None] = []
    digits = rng.integers(10**8, 10**9, n)
    for i in range(n):
        if mfa[i] in (2, 3):
            phones.append(_PHONE_PREFIX.get(cat.cities[city[i]].country, "+1") + "555" + str(digits[i])[:7])
        else:
            phones.append(None)

    pop = Population(
        n=n, usernames=usernames, subs=subs, emails=emails, phones=phones, city=city, lang=lang,
        home_net4=home_net4, home_net6=home_net6, mobile_net=mobile_net, office_net=office_net,
        office_off=office_off, lease_days=lease_days, lease_phase=lease_phase, profile=profile, rate=rate,
        hour_shift=hour_shift, mfa=mfa, created_ms=created_ms, created_day=created_day, status=status,
        enabled=enabled, signs_in=signs_in, dev_first=dev_first, dev_count=n_dev.astype(np.int8),
        trip_start=trip_start, trip_end=trip_end, trip_city=trip_city, trip_net=trip_net, trip_long=trip_long,
        rba_id=rba_id, seed=seed, cat=cat,
    )
    return pop, devices
