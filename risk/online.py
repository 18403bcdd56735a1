"""Point-in-time features of new events from state kept in memory: the inline service's fast path.

``risk.features.compute_features`` computes features set-wise in SQL: right
for a million stored events, too slow (a tenth of a second per statement) for
a sign-in waiting for its answer. :class:`OnlineFeatures` reads the store once
into the state those same features are made of, then computes the features
of each new event from it and counts the event in, in microseconds:

* per user: the size of the known history, the last known sign-in (time and
  place), and the known count of each value of each key
  (``risk.features.KEYS``: IP, prefix, ASN, country, city, device, agent
  hierarchy, hour of week);
* per key value, over everyone's known history: the total, the last UTC day
  it was seen and its count on that day (Freeman's global counts are "before
  the event's day");
* the last 24 hours of events per user, IP and prefix, for the failure and
  distinct-user windows.

The definitions are those of ``risk.features`` (same keys, same "known", same
frames, same formulas in the same order of floating-point operations), and
``tests/test_online.py`` checks that every feature of every event equals the
SQL's. The state is exact for events after everything it holds in the order
(creation_date, event_id) -- or up to ``REORDER_US`` (60 s of event time)
before the latest, which it serves by taking the later events back, computing
the late one and counting them again -- and only while nobody else changed
the store: :meth:`OnlineFeatures.ensure` reloads it when the store holds
events or feedback it has not counted, and :meth:`OnlineFeatures.can_serve`
says whether a batch of events can be served (otherwise the caller computes
them with SQL, which is always right). It also knows every stored event id
by the first 64 bits of its MD5 (8 bytes an event), so that "is this EventId
new?" needs no scan of the store unless the answer may be no.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from datetime import datetime, timezone

import numpy as np

from risk import feedback
from risk.config import known_pools, unpooled_of
from risk.features import (
    _DAY,
    _FREEMAN_PRESENT,
    FREEMAN_HIERARCHIES,
    FREEMAN_PRIOR,
    GLOBAL_KEYS,
    KEYS,
    NOVELTY_KEYS,
    USER_KEYS,
    hosting_asns,
    UNPOOLED_VAR,
    bind_unpooled,
    store_signature,
)
from risk.signals import FEATURE_COLUMNS

#: the event columns the state reads (``keys_of`` and the features)
ONLINE_COLUMNS = ("event_id", "username", "user_pool_id", "creation_date", "event_type", "event_response",
                  "client_ip", "ip_prefix", "asn", "country_iso", "region", "city", "device_fingerprint", "device_type",
                  "os_family", "browser_family", "user_agent", "latitude", "longitude", "has_context_data")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_HOUR_US = 3_600 * 1_000_000
_DAY_US = 24 * _HOUR_US
#: keys whose per-user counts the state keeps (counts for the Freeman levels and hour, presence for novelty)
_COUNTED = tuple(dict.fromkeys(USER_KEYS + NOVELTY_KEYS))
#: how much earlier (event time) than the latest one an event may arrive and still be served from memory
REORDER_US = 60 * 1_000_000
#: at most this many recent events are kept to be taken back and counted again around a late one
MAX_REORDER_EVENTS = 20_000
#: what the state remembers of a recent event, to count it again (and compute its features anew: ``recount``)
_REMEMBERED = ("event_id", "username", "user_pool_id", "event_response", "client_ip", "ip_prefix", "asn",
               "country_iso", "city", "device_fingerprint", "latitude", "longitude", "user_agent", "has_context_data")


def epoch_us(t: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (exact)."""
    d = t - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def keys_of(ev: dict) -> dict[str, str | None]:
    """The values of ``risk.features.KEYS`` for one canonical event (dict of event columns), as the SQL gives them."""
    dt = ev.get("device_type")
    dt = "?" if dt is None else dt
    os_ = dt + "/" + ("?" if ev.get("os_family") is None else ev["os_family"])
    br = os_ + "/" + ("?" if ev.get("browser_family") is None else ev["browser_family"])
    city = ev.get("city")
    if city is not None:  # concat_ws skips NULLs
        city = "/".join(x for x in (ev.get("country_iso"), ev.get("region"), city) if x is not None)
    asn = ev.get("asn")
    t = ev["creation_date"].astimezone(timezone.utc)
    return {
        "ip": ev.get("client_ip"),
        "prefix": ev.get("ip_prefix"),
        "asn": "?" if asn is None else str(int(asn)),
        "country": "?" if ev.get("country_iso") is None else ev["country_iso"],
        "city": city,
        "device": ev.get("device_fingerprint"),
        "dtype": dt,
        "os": os_,
        "browser": br,
        "ua": ev.get("user_agent"),
        "how": str((t.isoweekday() - 1) * 24 + t.hour),
    }


class _User:
    __slots__ = ("n", "prev", "counts", "fails")

    def __init__(self):
        self.n = 0  # known history size
        self.prev = None  # (t_us, lat, lon) of the last known event
        self.counts: dict[tuple[str, str], int] = {}  # (key, value) -> known count
        self.fails: deque = deque()  # times (us) of failed events in the last 24 h


def _radians(x: float) -> float:
    return x * (math.pi / 180.0)


def _haversine(lat: float, lon: float, plat: float, plon: float) -> float:
    """``risk.features``' expression, operation for operation."""
    a = math.pow(math.sin(_radians(lat - plat) / 2), 2)
    b = math.cos(_radians(plat)) * math.cos(_radians(lat)) * math.pow(math.sin(_radians(lon - plon) / 2), 2)
    return 2 * 6371.0088 * math.asin(math.sqrt(a + b))


def _signature(con) -> tuple:
    """What the state compares to notice a change behind it: the store's signature, and the number of pools
    with a configuration (a new one can change the pool of the events without one, ``risk.features``)."""
    configured = con.execute("SELECT count(DISTINCT user_pool_id) FROM risk_config_versions").fetchall()[0][0]
    return (*store_signature(con), configured)


class OnlineFeatures:
    """The state behind the features of new events (see the module docstring).

    A user is a username in its pool, as in ``risk.features``: the state keys users by ``(pool, username)``,
    with the pool of an event without one taken at load (:func:`risk.features.bind_unpooled`)."""

    def __init__(self):
        self.signature: tuple | None = None
        self.unpooled: str | None = None  # the pool of events without a UserPoolId
        self.pools: set[str] = set()  # the pools the store knows (risk.config.known_pools), and those counted since
        self.last: tuple[int, str] | None = None  # (t_us, event_id) of the latest event counted
        self.users: dict[tuple, _User] = {}  # (pool, username) -> state
        self.glob: dict[tuple[str, str | None], list[int]] = {}  # (key, value) -> [total, last day, count that day]
        self.recent_ip: dict[str, deque] = {}  # ip -> (t_us, user, failed), user = (pool, username) or None
        self.recent_prefix: dict[str, deque] = {}
        self.hosting = frozenset(a for a, _, _ in hosting_asns())
        self.loads = 0
        # every stored event id as the first 64 bits of its MD5 (DuckDB's md5_number_upper): a sorted
        # array from the load and a set of those counted since, to tell "surely new" without a scan
        self._ids = np.empty(0, dtype=np.uint64)
        self._ids_new: set[int] = set()
        self._log: deque = deque()  # the latest events counted: (key, event, t, keys, known, failed, undo)
        self._pin: tuple[int, str] | None = None  # events counted from this key on are kept (:meth:`pin`)

    # -- keeping in step with the store -----------------------------------------------------

    def ensure(self, con) -> None:
        """Reload from the store when it holds events or feedback the state has not counted."""
        sig = _signature(con)
        if sig != self.signature:
            self.load(con)
            self.signature = sig

    @staticmethod
    def id_key(event_id: str) -> int:
        """``md5_number_upper(event_id)`` as DuckDB computes it."""
        return int.from_bytes(hashlib.md5(event_id.encode("utf-8")).digest()[:8], "little")

    def may_hold(self, event_ids: list[str]) -> bool:
        """False when none of ``event_ids`` is stored (surely); True when one may be (then ask the store)."""
        if self.signature is None:
            return True
        for eid in event_ids:
            k = self.id_key(eid)
            if k in self._ids_new:
                return True
            i = int(np.searchsorted(self._ids, np.uint64(k)))
            if i < len(self._ids) and int(self._ids[i]) == k:
                return True
        return False

    def noted(self, con) -> None:
        """The caller wrote the events it served (and nothing else changed): remember the store's new state."""
        self.signature = _signature(con)

    def invalidate(self) -> None:
        """Forget the state (the next :meth:`ensure` reloads it)."""
        self.signature = None

    def load(self, con) -> None:
        """Read the whole state from the store (a handful of aggregate queries)."""
        ev = f"""(SELECT e.*, epoch_us(e.creation_date) AS t_us,
                         {feedback.known_sql("e", "fl")} AS known, {feedback.failed_sql("e", "fl")} AS failed,
                         {_DAY.replace("creation_date", "e.creation_date")} AS d
                  FROM events e LEFT JOIN ({feedback.HISTORY_FLAGS_SQL}) fl ON fl.event_id = e.event_id)"""
        self.pools = set(known_pools(con))
        self.unpooled = bind_unpooled(con, self.pools)
        pool = f"coalesce(user_pool_id, getvariable('{UNPOOLED_VAR}'))"
        users: dict[tuple, _User] = {}
        for who, n, prev in con.execute(
                f"""SELECT ({pool}, username), count(*) FILTER (WHERE known),
                           arg_max({{'t': t_us, 'lat': latitude, 'lon': longitude}}, {{'t': t_us, 'id': event_id}})
                             FILTER (WHERE known)
                    FROM {ev} WHERE username IS NOT NULL GROUP BY ALL""").fetchall():
            u = users[who] = _User()
            u.n = int(n)
            if prev is not None:
                u.prev = (int(prev["t"]), prev["lat"], prev["lon"])
        for name in _COUNTED:
            for who, value, c in con.execute(
                    f"SELECT ({pool}, username), {KEYS[name]} AS v, count(*) FROM {ev} "
                    f"WHERE known AND username IS NOT NULL AND v IS NOT NULL GROUP BY ALL").fetchall():
                users[who].counts[(name, value)] = int(c)
        glob: dict = {}
        for name in (*GLOBAL_KEYS, "total"):
            expr = "NULL::VARCHAR" if name == "total" else KEYS[name]
            for value, total, day, on_day in con.execute(
                    f"""SELECT v, sum(c), max(d), arg_max(c, d) FROM (
                          SELECT {expr} AS v, d, count(*) AS c FROM {ev}
                          WHERE known {"" if name == "total" else "AND v IS NOT NULL"} GROUP BY ALL)
                        GROUP BY v""").fetchall():
                glob[(name, value)] = [int(total), int(day), int(on_day)]
        top = con.execute("SELECT max({'t': epoch_us(creation_date), 'id': event_id}) FROM events").fetchall()[0][0]
        self.last = None if top is None else (int(top["t"]), top["id"])
        self.users, self.glob, self.recent_ip, self.recent_prefix = users, glob, {}, {}
        self._log = deque()
        ids = con.execute("SELECT md5_number_upper(event_id) AS k FROM events").fetchnumpy()["k"]
        self._ids = np.sort(np.asarray(ids, dtype=np.uint64))
        self._ids_new = set()
        if self.last is not None:
            since = self.last[0] - _DAY_US - REORDER_US
            for t_us, who, ip, prefix, failed in con.execute(
                    f"""SELECT t_us, CASE WHEN username IS NOT NULL THEN ({pool}, username) END,
                               client_ip, ip_prefix, failed
                       FROM {ev} WHERE t_us >= ? ORDER BY creation_date, event_id""",
                    [since]).fetchall():
                self._add_recent(int(t_us), who, ip, prefix, bool(failed))
        self.loads += 1

    # -- serving ----------------------------------------------------------------------------

    def can_serve(self, events: list[dict]) -> bool:
        """Whether the features of ``events`` (in the given order, which must be theirs) come exactly from the state.

        They do when every event has a username and comes after the one
        before it in (creation_date, event_id), and after everything the state
        holds -- or after the oldest event it can still take back (those
        counted in the last ``REORDER_US`` of event time, see :meth:`features`);
        and when storing them leaves the pool of events without one as it is
        (the first event of a new pool can change it: the store's only pool
        becomes one of two, or a pool-less store gets its pool).
        """
        if self.signature is None:
            return False
        new = {p for ev in events if (p := ev.get("user_pool_id")) is not None and p not in self.pools}
        if new and unpooled_of(self.pools | new) != self.unpooled:
            return False
        # the latest event it cannot take back: the one counted before the oldest it remembers
        floor = self._log[0][6]["last"] if self._log else self.last
        prev = None
        for ev in events:
            if ev.get("username") is None or ev.get("creation_date") is None:
                return False
            key = (epoch_us(ev["creation_date"]), ev["event_id"])
            if (floor is not None and key <= floor) or (prev is not None and key <= prev):
                return False
            prev = key
        return True

    def features(self, ev: dict, known: bool | None = None, failed: bool | None = None) -> dict[str, float | None]:
        """The features of ``ev`` (a canonical event) given the state, then ``ev`` counted in.

        ``known``: whether it joins the user's known history; ``failed``: whether it counts as a failed attempt
        (default: as ``risk.feedback`` says of a new event, from its response). An event that arrives after
        later ones (requests overtaking each other) gets the features it would have had in time
        order: the later events are taken back, it is computed and counted,
        and they are counted again (their own answers are not changed).
        """
        t = epoch_us(ev["creation_date"])
        keys = keys_of(ev)
        key = (t, ev["event_id"])
        later = self._take_back(key)
        out = self._compute(ev, t, keys)
        self._add(ev, t, keys, feedback.is_known(ev.get("event_response")) if known is None else known,
                  feedback.is_failed(ev.get("event_response")) if failed is None else failed)
        for _key, again, t2, keys2, known2, failed2, _undo in reversed(later):
            self._add(again, t2, keys2, known2, failed2)
        return out

    def pin(self, key: tuple[int, str]) -> None:
        """Keep every event counted from ``key`` (t_us, event_id) on, and the recent events their windows read,
        however much later the events counted after them are, until :meth:`unpin`: the events of a batch being
        decided can then be counted again (:meth:`recount`) even when the batch spans more than ``REORDER_US``."""
        self._pin = key

    def unpin(self) -> None:
        self._pin = None

    def _take_back(self, key: tuple) -> list:
        """Take back the events counted after ``key`` (t_us, event_id), latest first; returns their log entries."""
        later = []
        while self._log and self._log[-1][0] > key:
            entry = self._log.pop()
            self._undo(entry)
            later.append(entry)
        return later

    def recount(self, event: dict, *, known: bool, failed: bool, compute: set[str]) -> dict[str, dict] | None:
        """Count ``event`` (counted last time with other flags) again as ``known`` / ``failed``, and every event
        counted after it again in order; the events whose ids are in ``compute`` get their features computed
        anew on the way (they may depend on it). Returns those features by event id, or None when the state no
        longer remembers ``event`` (it was counted more than ``REORDER_US`` of event time before the latest):
        then nothing was changed."""
        key = (epoch_us(event["creation_date"]), event["event_id"])
        at = next((j for j in range(len(self._log) - 1, -1, -1) if self._log[j][0] == key), None)
        if at is None:
            return None
        later = self._take_back(key)
        entry = self._log.pop()
        self._undo(entry)
        _key, again, t, keys, _known, _failed, _undo = entry
        self._add(again, t, keys, known, failed)
        out = {}
        for _key2, again2, t2, keys2, known2, failed2, _undo2 in reversed(later):
            if again2["event_id"] in compute:
                out[again2["event_id"]] = self._compute(again2, t2, keys2)
            self._add(again2, t2, keys2, known2, failed2)
        return out

    def _who(self, ev: dict) -> tuple | None:
        """The user of an event: (pool, username), or None without a username."""
        username = ev.get("username")
        if username is None:
            return None
        pool = ev.get("user_pool_id")
        return (self.unpooled if pool is None else pool, username)

    def _compute(self, ev: dict, t: int, keys: dict) -> dict:
        u = self.users.get(self._who(ev))
        n_u = float(u.n) if u else 0.0
        counts = u.counts if u else {}

        def cu(name: str) -> float:
            v = keys[name]
            return float(counts.get((name, v), 0)) if v is not None else 0.0

        day = t // _DAY_US

        def cg(name: str, value) -> float:
            g = self.glob.get((name, value))
            if g is None:
                return 0.0
            total, last_day, on_day = g
            return float(total - on_day) if last_day >= day else float(total)

        n_g = cg("total", None)
        out: dict[str, float | None] = {"history_size": n_u}

        def novelty(name: str, present) -> float | None:
            return None if present is None else (0.0 if cu(name) > 0 else 1.0)

        out["new_ip"] = novelty("ip", ev.get("client_ip"))
        out["new_ip_prefix"] = novelty("prefix", ev.get("ip_prefix"))
        out["new_asn"] = novelty("asn", ev.get("asn"))
        out["new_country"] = novelty("country", ev.get("country_iso"))
        out["new_city"] = novelty("city", ev.get("city"))
        out["new_device"] = novelty("device", ev.get("device_fingerprint"))

        prev = u.prev if u else None
        lat, lon = ev.get("latitude"), ev.get("longitude")
        if prev is None:
            hours = None
        else:
            hours = ((t - prev[0]) / 1_000_000) / 3600.0  # exact microseconds first, as the feature SQL does
        if prev is None or lat is None or lon is None or prev[1] is None or prev[2] is None:
            out["travel_speed_kmh"] = out["travel_distance_km"] = None
        else:
            dist = _haversine(lat, lon, prev[1], prev[2])
            out["travel_speed_kmh"] = dist / max(hours, 1.0 / 60)
            out["travel_distance_km"] = dist
        out["hours_since_last_success"] = hours
        out["unusual_hour"] = math.log((n_u + 168) / (168 * (cu("how") + 1)))

        kept = t if self._pin is None else min(t, self._pin[0])  # what the windows may forget is before kept's
        uf1, uf24 = self._user_windows(u, t, kept)
        out["user_failures_1h"], out["user_failures_24h"] = float(uf1), float(uf24)
        ip, prefix = ev.get("client_ip"), ev.get("ip_prefix")
        if ip is None:
            for c in ("ip_failures_1h", "ip_failures_24h", "ip_users_1h", "ip_users_24h"):
                out[c] = None
        else:
            f1, f24, n1, n24 = self._windows(self.recent_ip.get(ip), t, kept)
            out["ip_failures_1h"], out["ip_failures_24h"] = float(f1), float(f24)
            out["ip_users_1h"], out["ip_users_24h"] = float(n1), float(n24)
        if prefix is None:
            out["prefix_failures_24h"] = out["prefix_users_24h"] = None
        else:
            _f1, f24, _n1, n24 = self._windows(self.recent_prefix.get(prefix), t, kept)
            out["prefix_failures_24h"], out["prefix_users_24h"] = float(f24), float(n24)
        asn = ev.get("asn")
        out["hosting_network"] = None if asn is None else (1.0 if int(asn) in self.hosting else 0.0)
        has = ev.get("has_context_data")
        out["no_context_data"] = None if has is None else (0.0 if has else 1.0)

        m = float(FREEMAN_PRIOR)
        for hierarchy in FREEMAN_HIERARCHIES:
            present = ev.get(_FREEMAN_PRESENT[hierarchy[0][0]]) is not None
            parent_key, pu_prev = None, None
            for col, key in hierarchy:
                c_g = cg(key, keys[key])
                if parent_key is None:
                    pg = (c_g + 1) / (n_g + 1)
                    pu = (cu(key) + m * 1.0 * pg) / (n_u + m)
                    cond = pu
                else:
                    pg = min(1.0, (c_g + 1) / (cg(parent_key, keys[parent_key]) + 1))
                    pu = (cu(key) + m * pu_prev * pg) / (n_u + m)
                    cond = pu / pu_prev
                out[col] = (math.log(pg) - math.log(cond)) if present else None
                parent_key, pu_prev = key, pu
        return {c: out[c] for c in FEATURE_COLUMNS}

    @staticmethod
    def _user_windows(u: _User | None, t: int, kept: int) -> tuple[int, int]:
        if u is None:
            return 0, 0
        q = u.fails
        while q and q[0] < kept - _DAY_US - REORDER_US:
            q.popleft()
        f1 = f24 = 0
        for ft in q:
            if ft >= t or ft < t - _DAY_US:  # the same instant (peer group) never counts
                continue
            f24 += 1
            if ft >= t - _HOUR_US:
                f1 += 1
        return f1, f24

    @staticmethod
    def _windows(q: deque | None, t: int, kept: int) -> tuple[int, int, int, int]:
        if not q:
            return 0, 0, 0, 0
        while q and q[0][0] < kept - _DAY_US - REORDER_US:
            q.popleft()
        f1 = f24 = 0
        u1: set = set()
        u24: set = set()
        for et, who, failed in q:
            if et >= t or et < t - _DAY_US:
                continue
            if failed:
                f24 += 1
            if who is not None:
                u24.add(who)
            if et >= t - _HOUR_US:
                if failed:
                    f1 += 1
                if who is not None:
                    u1.add(who)
        return f1, f24, len(u1), len(u24)

    def _add_recent(self, t: int, who, ip, prefix, failed: bool) -> None:
        if ip is not None:
            self.recent_ip.setdefault(ip, deque()).append((t, who, failed))
        if prefix is not None:
            self.recent_prefix.setdefault(prefix, deque()).append((t, who, failed))
        if failed and who is not None:
            u = self.users.get(who)
            if u is None:
                u = self.users[who] = _User()
            u.fails.append(t)

    def _add(self, ev: dict, t: int, keys: dict, known: bool, failed: bool) -> None:
        who = self._who(ev)
        ip, prefix = ev.get("client_ip"), ev.get("ip_prefix")
        self._add_recent(t, who, ip, prefix, failed)
        undo: dict = {"last": self.last, "recent": (ip, prefix, failed and who is not None)}
        self.last = (t, ev["event_id"])
        self._ids_new.add(self.id_key(ev["event_id"]))
        if ev.get("user_pool_id") is not None:
            self.pools.add(ev["user_pool_id"])  # (kept if taken back: a known pool that changes nothing)
        if known:
            u = self.users.get(who)
            if u is None:
                u = self.users[who] = _User()
            undo["user"] = u.prev
            u.n += 1
            u.prev = (t, ev.get("latitude"), ev.get("longitude"))
            for name in _COUNTED:
                v = keys[name]
                if v is not None:
                    u.counts[(name, v)] = u.counts.get((name, v), 0) + 1
            day = t // _DAY_US
            old_glob = []
            for name in (*GLOBAL_KEYS, "total"):
                v = None if name == "total" else keys[name]
                if name != "total" and v is None:
                    continue
                g = self.glob.get((name, v))
                old_glob.append((name, v, None if g is None else list(g)))
                if g is None:
                    self.glob[(name, v)] = [1, day, 1]
                elif g[1] < day:
                    g[0] += 1
                    g[1], g[2] = day, 1
                else:
                    g[0] += 1
                    g[2] += 1
            undo["glob"] = old_glob
        # remembered for a while, to be taken back if an earlier event arrives late
        again = {c: ev.get(c) for c in _REMEMBERED}
        self._log.append((self.last, again, t, keys, known, failed, undo))
        while self._log and (self._pin is None or self._log[0][0] < self._pin) and (
                len(self._log) > MAX_REORDER_EVENTS or self._log[0][2] < t - REORDER_US):
            self._log.popleft()

    def _undo(self, entry) -> None:
        """Take back the latest event counted (``_add`` in reverse)."""
        _key, ev, t, keys, known, _failed, undo = entry
        ip, prefix, failed_user = undo["recent"]
        for table, k in ((self.recent_ip, ip), (self.recent_prefix, prefix)):
            if k is not None:
                q = table[k]
                q.pop()
                if not q:
                    del table[k]
        if failed_user:
            self.users[self._who(ev)].fails.pop()
        self.last = undo["last"]
        if known:
            u = self.users[self._who(ev)]
            u.n -= 1
            u.prev = undo["user"]
            for name in _COUNTED:
                v = keys[name]
                if v is not None:
                    c = u.counts[(name, v)] - 1
                    if c:
                        u.counts[(name, v)] = c
                    else:
                        del u.counts[(name, v)]
            for name, v, old in undo["glob"]:
                if old is None:
                    del self.glob[(name, v)]
                else:
                    self.glob[(name, v)] = old
