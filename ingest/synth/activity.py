"""Legitimate activity, a range of days at a time, vectorised over all users.

Per user and day: a Poisson number of sessions (the user's rate times the
weekday factor of their profile; none on travel days), each at a local hour
drawn from the day curve (shifted for night owls and early birds) in the time
zone of where the user is that day. A session signs in from one of the user's
devices and from the network that fits: the hotel's on a trip, the office's
on a weekday at work, the mobile carrier's for a phone out of the house, else
home (IPv6 when the ISP gives it; the IPv4 address changes with the lease).
Around the successful sign-in: wrong passwords first (typos), an MFA code
mistyped, a forgotten password, a password change, and the sign-up of new
accounts.
"""

from __future__ import annotations

import numpy as np

from ingest.synth import events as ev
from ingest.synth.catalogue import pick_offsets
from ingest.synth.population import PORTAL, mix
from ingest.synth.world import DAY_MS, World

_SEC = 1000


def hour_cdf(weights) -> np.ndarray:
    w = np.asarray(weights, float)
    return np.cumsum(w) / w.sum()


def sample_hours(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), 23)


def rtt(rng: np.random.Generator, n: int, far: np.ndarray | None = None) -> np.ndarray:
    """Round-trip times in ms: log-normal around 170 ms, longer when far from home."""
    x = np.exp(rng.normal(np.log(170.0), 0.45, n))
    if far is not None:
        x = x + far * 120.0
    return np.clip(x, 20, 5000).astype(np.int32)


def legit(world: World, d0: int, d1: int, rng: np.random.Generator) -> ev.Block:
    """Legitimate events of users' local days ``d0`` .. ``d1 - 1`` (relative to the start), unsorted."""
    pop, p = world.pop, world.params
    days = np.arange(d0, d1)
    dow = (world.start_day + days + 3) % 7  # epoch day 0 was a Thursday; Monday = 0
    wf = np.asarray(p.weekday_factor)
    lam = pop.rate[:, None] * wf[pop.profile][:, dow]
    active = pop.signs_in[:, None] & (days[None, :] > pop.created_day[:, None])
    for k in range(pop.trip_start.shape[1]):
        s = pop.trip_start[:, k][:, None]
        e = pop.trip_end[:, k][:, None]
        lg = pop.trip_long[:, k][:, None]
        black = (days == s) | (days == e) | (lg & ((days == s + 1) | (days == e + 1)))
        active &= ~black
    counts = np.minimum(rng.poisson(np.where(active, lam, 0.0)), p.max_sessions_per_day)
    uu, di = np.nonzero(counts)
    reps = counts[uu, di]
    su = np.repeat(uu, reps).astype(np.int32)
    sd = np.repeat(days[di], reps).astype(np.int32)
    blocks = [_sessions(world, su, sd, rng)]
    new = np.nonzero((pop.created_day >= d0) & (pop.created_day < d1))[0]
    if len(new):
        blocks.append(_signups(world, new.astype(np.int32), rng))
    return ev.concat(blocks)


def _sessions(world: World, su: np.ndarray, sd: np.ndarray, rng: np.random.Generator) -> ev.Block:
    pop, p, cat, seed = world.pop, world.params, world.cat, world.seed
    n = len(su)
    if n == 0:
        return ev.empty()
    da = world.device_arrays()
    # where, when
    city = pop.city[su].copy()
    trip = np.full(n, -1, np.int8)
    for k in range(pop.trip_start.shape[1]):
        on = (sd > pop.trip_start[su, k]) & (sd < pop.trip_end[su, k])
        city[on] = pop.trip_city[su[on], k]
        trip[on] = k
    hours = (sample_hours(rng, hour_cdf(p.hour_weight), n) + pop.hour_shift[su]) % 24
    local_ms = hours.astype(np.int64) * 3_600_000 + rng.integers(0, 3_600_000, n)
    off = world.offset(city, sd).astype(np.int64)
    t = world.start_ms + sd.astype(np.int64) * DAY_MS + local_ms - off * 60_000
    # which device
    ndev = pop.dev_count[su].astype(np.int64)
    alt = 1 + rng.integers(0, 1 << 30, n) % np.maximum(ndev - 1, 1)
    choice = np.where((ndev > 1) & (rng.random(n) >= p.primary_device_share), alt, 0)
    dev = (pop.dev_first[su] + choice).astype(np.int32)
    kind = da["kind"][dev]
    # which network
    net, hi, lo = pop.home_address(su, sd)
    r = rng.random((n, 3))
    six = (pop.home_net6[su] >= 0) & (r[:, 0] < p.ipv6_preference)
    if six.any():
        s6 = su[six]
        period = (sd[six] + pop.lease_phase[s6]) // pop.lease_days[s6]
        n6 = pop.home_net6[s6]
        h6, l6 = pick_offsets(cat, n6, mix(seed, 12, s6, period), mix(seed, 13, s6, sd[six]))
        net[six], hi[six], lo[six] = n6, h6, l6
    carrier = (kind == 1) & (pop.mobile_net[su] >= 0) & (r[:, 1] < p.mobile_carrier_use)
    if carrier.any():
        nc = pop.mobile_net[su[carrier]]
        rc = rng.integers(0, 2**62, int(carrier.sum()))
        hc, lc = pick_offsets(cat, nc, rc, rc)
        net[carrier], hi[carrier], lo[carrier] = nc, hc, lc
    weekday = ((world.start_day + sd + 3) % 7) < 5
    office = (pop.office_net[su] >= 0) & weekday & (hours >= 9) & (hours < 18) & (kind == 0) & (r[:, 2] < p.office_use)
    net[office] = pop.office_net[su[office]]
    hi[office] = 0
    lo[office] = pop.office_off[su[office]]
    away = trip >= 0
    if away.any():
        sa, ka = su[away], trip[away].astype(np.int64)
        na = pop.trip_net[sa, ka]
        ra = mix(seed, 14, sa, ka)
        ha, la = pick_offsets(cat, na, ra, ra)
        net[away], hi[away], lo[away] = na, ha, la
    proxied = da["client"][dev] == PORTAL
    mfa = pop.mfa[su] > 0
    base = dict(user=su, dev=dev, net=net, hi=hi, lo=lo, proxied=proxied)

    def part(idx: np.ndarray, t_: np.ndarray, etype: int, resp: int, chal) -> ev.Block:
        cols = {k: v[idx] for k, v in base.items()}
        return ev.make(len(idx), t=t_, etype=etype, resp=resp, chal=chal, rtt=rtt(rng, len(idx), away[idx]), **cols)

    every = np.arange(n)
    parts = [part(every, t, ev.SIGN_IN, ev.PASS, np.where(mfa, ev.PW_MFA_OK, ev.PW_OK))]
    u = rng.random((n, 5))
    gaps = rng.integers(6 * _SEC, 45 * _SEC, (n, 3))
    typo = np.nonzero(u[:, 0] < p.typo_rate)[0]
    parts.append(part(typo, t[typo] - gaps[typo, 0], ev.SIGN_IN, ev.FAIL, ev.PW_FAIL))
    typo2 = typo[u[typo, 1] < p.double_typo_share]
    parts.append(part(typo2, t[typo2] - gaps[typo2, 0] - gaps[typo2, 1], ev.SIGN_IN, ev.FAIL, ev.PW_FAIL))
    retry = np.nonzero(mfa & (u[:, 2] < p.mfa_retry_rate))[0]
    parts.append(part(retry, t[retry] - 2 * gaps[retry, 2], ev.SIGN_IN, ev.FAIL, ev.PW_OK_MFA_FAIL))
    forgot = np.nonzero(u[:, 3] < p.forgot_rate)[0]
    if len(forgot):
        tf = t[forgot]
        parts.append(part(forgot, tf - 14 * 60 * _SEC, ev.SIGN_IN, ev.FAIL, ev.PW_FAIL))
        parts.append(part(forgot, tf - 13 * 60 * _SEC, ev.SIGN_IN, ev.FAIL, ev.PW_FAIL))
        parts.append(part(forgot, tf - 9 * 60 * _SEC, ev.FORGOT_PASSWORD, ev.PASS, ev.NO_CHALLENGE))
    change = np.nonzero(u[:, 4] < p.password_change_rate)[0]
    parts.append(part(change, t[change] + rng.integers(60 * _SEC, 600 * _SEC, len(change)), ev.PASSWORD_CHANGE,
                      ev.PASS, ev.NO_CHALLENGE))
    return ev.concat(parts)


def _signups(world: World, users: np.ndarray, rng: np.random.Generator) -> ev.Block:
    """Sign-up of accounts created in the window, the occasional code resend, and the first sign-in."""
    pop, p = world.pop, world.params
    n = len(users)
    t = pop.created_ms[users]
    dev = pop.dev_first[users]
    net, hi, lo = pop.home_address(users, pop.created_day[users])
    proxied = world.device_arrays()["client"][dev] == PORTAL
    base = dict(user=users, dev=dev, net=net, hi=hi, lo=lo, proxied=proxied)

    def part(idx, t_, etype, resp, chal):
        cols = {k: v[idx] for k, v in base.items()}
        return ev.make(len(idx), t=t_, etype=etype, resp=resp, chal=chal, rtt=rtt(rng, len(idx)), **cols)

    every = np.arange(n)
    parts = [part(every, t, ev.SIGN_UP, ev.PASS, ev.NO_CHALLENGE)]
    resend = np.nonzero(rng.random(n) < p.resend_code_share)[0]
    parts.append(part(resend, t[resend] + rng.integers(60 * _SEC, 300 * _SEC, len(resend)), ev.RESEND_CODE, ev.PASS,
                      ev.NO_CHALLENGE))
    first = np.nonzero(pop.signs_in[users])[0]
    parts.append(part(first, t[first] + rng.integers(400 * _SEC, 900 * _SEC, len(first)), ev.SIGN_IN, ev.PASS,
                      ev.PW_OK))
    return ev.concat(parts)
