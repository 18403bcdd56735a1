"""Attacks, one small generator per type, registered by name (STYLE.md, habit 4).

Each generator draws its incidents over the whole window at once (attacks are
a few per cent of the events, so they fit in memory) and returns them as a
:class:`~ingest.synth.events.Block` whose rows carry the ground truth: the
attack type, whether the row is an account takeover (an attacker's successful
sign-in) and that its address is an attacker's.

How many incidents of each type: see :func:`plan`. Volume scales with the
expected number of legitimate events (stuffing, spraying) or with the number
of users (brute force and the takeovers), and every type occurs at least once
whenever attacks are on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ingest.synth import agents
from ingest.synth import events as ev
from ingest.synth.activity import hour_cdf, rtt, sample_hours
from ingest.synth.catalogue import pick_offsets
from ingest.synth.config import ATTACK_TYPES, expected_events_per_user_day
from ingest.synth.population import MOBILE, PORTAL, SDK_CLIENTS, WEB, fingerprint
from ingest.synth.world import DAY_MS, World

_SEC = 1000
_MIN = 60 * _SEC
_HOUR = 60 * _MIN
ATTACKER_LANG = "en-US,en;q=0.9"


@dataclass(frozen=True)
class AttackKind:
    """One attack type: its tag in the labels, what it looks like, and its generator."""

    name: str
    description: str
    generate: Callable[[World, np.random.Generator, int, int], ev.Block]  # (world, rng, incidents, attempts)


@dataclass
class Incidents:
    """What :func:`plan` decided: incidents and total attempts per attack type."""

    incidents: dict[str, int]
    attempts: dict[str, int]


# -- helpers ------------------------------------------------------------------


def _addresses(world: World, rng: np.random.Generator, nets: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.array(nets, np.int32)
    r = rng.integers(0, 2**62, (len(a), 2))
    hi, lo = pick_offsets(world.cat, a, r[:, 0], r[:, 1])
    return a, hi, lo


def _residential(world: World, rng: np.random.Generator, city: int, v4_only: bool = True) -> int:
    isps = world.cat.cities[city].isps
    v4, v6 = isps[int(rng.integers(0, len(isps)))]
    pool = v4 if (v4_only or not v6 or rng.random() < 0.7) else v6
    return int(pool[int(rng.integers(0, len(pool)))])


def _foreign_residential(world: World, rng: np.random.Generator, not_country: str) -> int:
    cities = world.cat.cities
    attack_only = [c.index for c in cities if c.weight == 0 and c.country != not_country]
    others = [c.index for c in cities if c.weight > 0 and c.country != not_country]
    pool = attack_only if (attack_only and rng.random() < 0.6) else others
    return _residential(world, rng, pool[int(rng.integers(0, len(pool)))])


def _hosting(world: World, rng: np.random.Generator, country: str | None = None, vpn: bool | None = None,
             not_country: str | None = None) -> int:
    """A hosting block (``vpn=False``), a VPN block (``vpn=True``) or either (``None``); in ``country`` when
    there is one there, else in a random country other than ``not_country``."""
    cat = world.cat
    if vpn is None:
        maps = [cat.hosting_by_country, cat.vpn_by_country]
    else:
        maps = [cat.vpn_by_country] if vpn else [cat.hosting_by_country]
    if country is not None:
        pool = [x for m in maps for x in m.get(country, [])]
        if pool:
            return int(pool[int(rng.integers(0, len(pool)))])
    countries = sorted({c for m in maps for c in m if c != not_country})
    cc = countries[int(rng.integers(0, len(countries)))]
    pool = [x for m in maps for x in m.get(cc, [])]
    return int(pool[int(rng.integers(0, len(pool)))])


def _attack_source(world: World, rng: np.random.Generator, not_country: str, hosting_share: float) -> int:
    if rng.random() < hosting_share:
        return _hosting(world, rng, not_country=not_country)
    return _foreign_residential(world, rng, not_country)


def _device(world: World, rng: np.random.Generator, template: int, *, lag: int = 0, lang: str | None = ATTACKER_LANG,
            client: int = WEB, sdk: bool = False) -> int:
    if agents.TEMPLATES[template].browser == "tool":
        lang = None
    enc = fingerprint(rng) if sdk else None
    return world.devices.add(template, lag, lang, enc, client, -1)


def _candidates(world: World) -> np.ndarray:
    """Accounts that existed before the window (attackers' lists hold old accounts)."""
    return np.nonzero(world.pop.created_day < 0)[0].astype(np.int32)


def _victims(world: World, rng: np.random.Generator, k: int, *, no_mfa: bool = True) -> np.ndarray:
    pop = world.pop
    ok = (pop.created_day < 0) & pop.signs_in
    if no_mfa:
        ok &= pop.mfa == 0
    pool = np.nonzero(ok)[0]
    if len(pool) == 0:
        pool = np.nonzero(pop.signs_in)[0]
    if len(pool) == 0:
        pool = np.arange(pop.n)
    return rng.choice(pool, size=k, replace=k > len(pool)).astype(np.int32)


def _outcome(world: World, users: np.ndarray, success: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(response, challenge, account takeover) of attempts: a right password still fails on MFA or a blocked account."""
    pop = world.pop
    ok = success & pop.signs_in[users]
    mfa = pop.mfa[users] > 0
    chal = np.where(ok, np.where(mfa, ev.PW_OK_MFA_FAIL, ev.PW_OK), ev.PW_FAIL)
    ato = ok & ~mfa
    resp = np.where(ato, ev.PASS, ev.FAIL)
    return resp, chal, ato


def _local_daytime(world: World, rng: np.random.Generator, users: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Epoch ms at a usual local hour of each user's home on each day."""
    hours = sample_hours(rng, hour_cdf(world.params.hour_weight), len(users))
    local = hours.astype(np.int64) * _HOUR + rng.integers(0, _HOUR, len(users))
    off = world.offset(world.pop.city[users], days).astype(np.int64)
    return world.start_ms + days.astype(np.int64) * DAY_MS + local - off * _MIN


def _window_times(world: World, rng: np.random.Generator, k: int, margin_ms: int = 0) -> np.ndarray:
    span = max(world.end_ms - world.start_ms - margin_ms, _HOUR)
    return world.start_ms + rng.integers(0, span, k)


def _block(world: World, rng: np.random.Generator, name: str, *, t, user, dev, net, hi, lo, resp, chal, ato,
           etype=ev.SIGN_IN) -> ev.Block:
    dev = np.asarray(dev, np.int32)
    n = len(dev)
    clients = np.array([world.devices.client[d] for d in dev.tolist()], np.int8)
    return ev.make(n, t=t, user=user, etype=etype, resp=resp, chal=chal, dev=dev, net=net, hi=hi, lo=lo,
                   proxied=clients == PORTAL, rtt=rtt(rng, n) // 2 + 15, attack=ev.ATTACK_CODE[name], ato=ato,
                   atk_ip=True)


# -- the attack types ---------------------------------------------------------------


def credential_stuffing(world: World, rng: np.random.Generator, campaigns: int, attempts: int) -> ev.Block:
    """Leaked username/password pairs replayed against many accounts from a few addresses (often hosting)."""
    cand = _candidates(world)
    out = []
    per = max(20, attempts // max(campaigns, 1))
    for _ in range(campaigns):
        n_ips = int(rng.integers(3, 13))
        nets = [_attack_source(world, rng, "", 0.6) for _ in range(n_ips)]
        a_net, a_hi, a_lo = _addresses(world, rng, nets)
        devs = [_device(world, rng, agents.COMMON[int(rng.integers(0, len(agents.COMMON)))], lag=int(rng.integers(2, 9)))
                for _ in range(int(rng.integers(1, 4)))]
        t0 = _window_times(world, rng, 1, 5 * _HOUR)[0]
        t = np.sort(t0 + rng.integers(0, int(rng.uniform(0.5, 4.0) * _HOUR), per))
        users = rng.choice(cand, size=per, replace=per > len(cand))
        resp, chal, ato = _outcome(world, users, rng.random(per) < world.params.stuffing_success)
        ip = rng.integers(0, n_ips, per)
        dev = np.array(devs)[rng.integers(0, len(devs), per)]
        out.append(_block(world, rng, "credential_stuffing", t=t, user=users, dev=dev, net=a_net[ip], hi=a_hi[ip],
                          lo=a_lo[ip], resp=resp, chal=chal, ato=ato))
    return ev.concat(out)


def password_spray(world: World, rng: np.random.Generator, campaigns: int, attempts: int) -> ev.Block:
    """A few common passwords tried across many accounts, slowly, from one to three addresses."""
    cand = _candidates(world)
    out = []
    per = max(20, attempts // max(campaigns, 1))
    for _ in range(campaigns):
        rounds = int(rng.integers(2, 5))
        k = max(5, min(len(cand), per // rounds))
        targets = rng.choice(cand, size=k, replace=False) if k <= len(cand) else rng.choice(cand, size=k)
        n_ips = int(rng.integers(1, 4))
        a_net, a_hi, a_lo = _addresses(world, rng, [_attack_source(world, rng, "", 0.5) for _ in range(n_ips)])
        tmpl = agents.TEMPLATE_INDEX["python-requests"] if rng.random() < 0.5 else agents.COMMON[0]
        dev = _device(world, rng, tmpl, lag=int(rng.integers(1, 6)))
        step = rng.integers(20 * _SEC, 120 * _SEC, (rounds, k))
        round_ms = int(step.sum(axis=1).max())
        window = world.end_ms - world.start_ms
        gap = int(min(rng.integers(8 * _HOUR, 30 * _HOUR), max(_HOUR, (window - round_ms) // rounds)))
        t0 = world.start_ms + int(rng.integers(0, max(1, window - rounds * gap - round_ms)))
        for r in range(rounds):
            t = t0 + r * gap + np.cumsum(step[r])
            resp, chal, ato = _outcome(world, targets, rng.random(k) < world.params.spray_success)
            ip = rng.integers(0, n_ips, k) if r % 2 else np.full(k, r % n_ips)
            out.append(_block(world, rng, "password_spray", t=t, user=targets, dev=np.full(k, dev),
                              net=a_net[ip], hi=a_hi[ip], lo=a_lo[ip], resp=resp, chal=chal, ato=ato))
    return ev.concat(out)


def brute_force(world: World, rng: np.random.Generator, incidents: int, attempts: int) -> ev.Block:
    """Many passwords against one account from one address, fast; sometimes the last one is right."""
    out = []
    victims = _victims(world, rng, incidents, no_mfa=False)
    for v in victims:
        home = world.cat.cities[world.pop.city[v]].country
        a_net, a_hi, a_lo = _addresses(world, rng, [_attack_source(world, rng, home, 0.5)])
        tmpl = [agents.TEMPLATE_INDEX["python-requests"], agents.TEMPLATE_INDEX["headless-chrome"], agents.COMMON[0]]
        dev = _device(world, rng, tmpl[int(rng.integers(0, 3))], lag=int(rng.integers(0, 4)))
        k = int(np.clip(attempts / max(incidents, 1) * rng.uniform(0.5, 1.5), 15, 400))
        t = _window_times(world, rng, 1, 2 * _HOUR)[0] + np.cumsum(rng.integers(2 * _SEC, 12 * _SEC, k))
        success = np.zeros(k, bool)
        success[-1] = rng.random() < world.params.brute_force_success
        users = np.full(k, v, np.int32)
        resp, chal, ato = _outcome(world, users, success)
        out.append(_block(world, rng, "brute_force", t=t, user=users, dev=np.full(k, dev), net=np.full(k, a_net[0]),
                          hi=np.full(k, a_hi[0]), lo=np.full(k, a_lo[0]), resp=resp, chal=chal, ato=ato))
    return ev.concat(out)


def _takeover(world: World, rng: np.random.Generator, name: str, victim: int, t_success: int, net: int, dev: int,
              fails: int) -> ev.Block:
    a_net, a_hi, a_lo = _addresses(world, rng, [net])
    k = fails + 1
    t = t_success - np.arange(k)[::-1] * rng.integers(8 * _SEC, 40 * _SEC)
    resp = np.full(k, ev.FAIL)
    resp[-1] = ev.PASS
    chal = np.full(k, ev.PW_FAIL)
    chal[-1] = ev.PW_OK
    return _block(world, rng, name, t=t, user=np.full(k, victim), dev=np.full(k, dev), net=np.full(k, a_net[0]),
                  hi=np.full(k, a_hi[0]), lo=np.full(k, a_lo[0]), resp=resp, chal=chal, ato=resp == ev.PASS)


def naive_takeover(world: World, rng: np.random.Generator, incidents: int, attempts: int) -> ev.Block:
    """A foreign address, an unusual agent (script, ancient browser, headless), and the right password."""
    out = []
    for v in _victims(world, rng, incidents):
        home = world.cat.cities[world.pop.city[v]].country
        net = _attack_source(world, rng, home, 0.3)
        dev = _device(world, rng, agents.ODD[int(rng.integers(0, len(agents.ODD)))])
        t = int(_window_times(world, rng, 1, _HOUR)[0])
        out.append(_takeover(world, rng, "naive_takeover", int(v), t, net, dev, int(rng.integers(0, 3))))
    return ev.concat(out)


def vpn_takeover(world: World, rng: np.random.Generator, incidents: int, attempts: int) -> ev.Block:
    """The victim's country, but from a VPN or hosting network, with the commonest desktop browser."""
    out = []
    for v in _victims(world, rng, incidents):
        home = world.cat.cities[world.pop.city[v]].country
        net = _hosting(world, rng, country=home, vpn=True if rng.random() < 0.7 else None)
        tmpl = agents.COMMON[int(rng.integers(0, len(agents.COMMON)))]
        dev = _device(world, rng, tmpl, lang=world.pop.lang[v])
        t = int(_window_times(world, rng, 1, _HOUR)[0])
        out.append(_takeover(world, rng, "vpn_takeover", int(v), t, net, dev, int(rng.integers(0, 2))))
    return ev.concat(out)


def targeted_takeover(world: World, rng: np.random.Generator, incidents: int, attempts: int) -> ev.Block:
    """Someone who knows the victim: same city and region, a residential ISP there, the victim's browser on a
    new device, at a usual local hour."""
    out = []
    pop = world.pop
    for v in _victims(world, rng, incidents):
        net = _residential(world, rng, int(pop.city[v]))
        own = pop.dev_first[v]
        client = world.devices.client[own]
        dev = _device(world, rng, world.devices.template[own], lang=pop.lang[v], client=client,
                      sdk=client in SDK_CLIENTS)
        day = np.array([int(rng.integers(0, world.days))])
        t = int(_local_daytime(world, rng, np.array([v]), day)[0])
        out.append(_takeover(world, rng, "targeted_takeover", int(v), t, net, dev, int(rng.integers(0, 2))))
    return ev.concat(out)


def impossible_travel(world: World, rng: np.random.Generator, incidents: int, attempts: int) -> ev.Block:
    """The victim signs in at home; minutes later a success from thousands of kilometres away.

    The victim's own sign-in is part of the incident but is legitimate (no attack labels).
    """
    out = []
    pop, cat = world.pop, world.cat
    for v in _victims(world, rng, incidents):
        home = int(pop.city[v])
        far = [c.index for c in cat.cities if cat.distance_km(home, c.index) > 5000]
        dest = far[int(rng.integers(0, len(far)))] if far else home
        day = np.array([int(rng.integers(0, world.days))])
        t0 = int(_local_daytime(world, rng, np.array([v]), day)[0])
        h_net, h_hi, h_lo = pop.home_address(np.array([v]), day)
        own = int(pop.dev_first[v])
        out.append(ev.make(1, t=t0, user=v, etype=ev.SIGN_IN, resp=ev.PASS, chal=ev.PW_OK, dev=own, net=h_net,
                           hi=h_hi, lo=h_lo, proxied=world.devices.client[own] == PORTAL, rtt=rtt(rng, 1)))
        tmpl = int(agents.LEGIT[int(rng.integers(0, len(agents.LEGIT)))])
        dev = _device(world, rng, tmpl, client=MOBILE if agents.TEMPLATES[tmpl].device_type != "Desktop" else WEB,
                      sdk=agents.TEMPLATES[tmpl].device_type != "Desktop")
        t1 = t0 + int(rng.integers(10 * _MIN, 90 * _MIN))
        out.append(_takeover(world, rng, "impossible_travel", int(v), t1, _residential(world, rng, dest), dev, 0))
    return ev.concat(out)


REGISTRY: dict[str, AttackKind] = {
    k.name: k
    for k in (
        AttackKind("credential_stuffing", "many accounts, few addresses (often hosting), mostly failures",
                   credential_stuffing),
        AttackKind("password_spray", "a few passwords across many accounts, slowly, from one to three addresses",
                   password_spray),
        AttackKind("brute_force", "many failures on one account from one address, then maybe a success", brute_force),
        AttackKind("naive_takeover", "foreign address, unusual agent, success", naive_takeover),
        AttackKind("vpn_takeover", "victim's country through a VPN/hosting network, common agent, success",
                   vpn_takeover),
        AttackKind("targeted_takeover", "victim's city, residential ISP, victim's browser on a new device, success",
                   targeted_takeover),
        AttackKind("impossible_travel", "a success far from the victim's previous one, too soon after it",
                   impossible_travel),
    )
}
assert tuple(REGISTRY) == ATTACK_TYPES


def plan(world: World) -> Incidents:
    """How many incidents and attempts of each type for this population and window."""
    p, n, d = world.params, world.pop.n, world.days
    legit = expected_events_per_user_day(p) * n * d
    budget = p.attack_share * legit
    stuffing = max(20, int(budget * p.stuffing_share))
    spray = max(20, int(budget * p.spray_share))
    takeovers = max(1, round(n / p.users_per_takeover))
    incidents = {
        "credential_stuffing": max(1, round(stuffing / 1500)),
        "password_spray": max(1, round(spray / 2000)),
        "brute_force": max(1, round(n / p.users_per_brute_force)),
        "naive_takeover": takeovers,
        "vpn_takeover": takeovers,
        "targeted_takeover": takeovers,
        "impossible_travel": takeovers,
    }
    attempts = {k: 0 for k in incidents}
    attempts["credential_stuffing"] = stuffing
    attempts["password_spray"] = spray
    attempts["brute_force"] = max(15 * incidents["brute_force"], int(budget * p.brute_force_share))
    return Incidents(incidents, attempts)


def generate(world: World, incidents: Incidents) -> ev.Block:
    """All attack events, sorted by time; each type from its own random stream."""
    from ingest.synth.world import rng_for

    blocks = []
    for i, (name, kind) in enumerate(REGISTRY.items()):
        rng = rng_for(world.seed, 3, i)
        blocks.append(kind.generate(world, rng, incidents.incidents[name], incidents.attempts[name]))
    return ev.sort(ev.concat(blocks))
