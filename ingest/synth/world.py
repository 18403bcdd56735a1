"""The world a data set is drawn in: catalogue, population, devices, calendar and time zones."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np

from ingest.synth import agents, population
from ingest.synth.catalogue import Catalogue
from ingest.synth.config import SynthConfig

DAY_MS = 86_400_000
_EPOCH = date(1970, 1, 1)
DEVICE_TYPES = ("Desktop", "Mobile", "Tablet", "Other")


@lru_cache(maxsize=65536)
def utc_offset_minutes(tz: str, day: int) -> int:
    """Minutes east of UTC in zone ``tz`` at local noon of epoch day ``day``."""
    d = _EPOCH.toordinal() + day
    local = datetime.combine(date.fromordinal(d), time(12, 0), tzinfo=ZoneInfo(tz))
    off = local.utcoffset()
    return int(off.total_seconds() // 60) if off is not None else 0


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    """An independent random stream per purpose (and per chunk), all from the one seed."""
    return np.random.default_rng([seed, *stream])


@dataclass
class World:
    config: SynthConfig
    cat: Catalogue
    pop: population.Population
    devices: population.Devices
    start_day: int  # epoch day of the first day
    start_ms: int
    tzoff: np.ndarray  # (cities, days + 4) minutes east of UTC, column = day + 2
    _dev_arrays: dict = field(default_factory=dict)

    @property
    def days(self) -> int:
        return self.config.days

    @property
    def params(self):
        return self.config.params

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.days * DAY_MS

    def offset(self, cities: np.ndarray, days: np.ndarray) -> np.ndarray:
        return self.tzoff[cities, np.clip(days + 2, 0, self.tzoff.shape[1] - 1)]

    def device_arrays(self) -> dict[str, np.ndarray]:
        """Per-device template, client and device-type code (refreshed when attackers add devices)."""
        if self._dev_arrays.get("n") != len(self.devices):
            a = self.devices.arrays()
            kinds = np.array(
                [DEVICE_TYPES.index(t.device_type) if t.device_type in DEVICE_TYPES else 3 for t in agents.TEMPLATES],
                np.int8,
            )
            a["kind"] = kinds[a["template"]]
            a["n"] = len(self.devices)
            self._dev_arrays = a
        return self._dev_arrays


def build(config: SynthConfig, cat: Catalogue) -> World:
    start_day = (config.start - _EPOCH).days
    start_ms = start_day * DAY_MS
    rng = rng_for(config.seed, 1)
    pop, devices = population.build(config.users, config.days, start_ms, cat, config.params, config.seed, rng)
    tzoff = np.zeros((len(cat.cities), config.days + 4), np.int32)
    for c in cat.cities:
        for j in range(config.days + 4):
            tzoff[c.index, j] = utc_offset_minutes(c.tz, start_day + j - 2)
    world = World(config, cat, pop, devices, start_day, start_ms, tzoff)
    # accounts created in the window: sign-up time in the user's local afternoon/evening rather than UTC
    new = np.nonzero(pop.created_day >= 0)[0]
    if len(new):
        off = world.offset(pop.city[new], pop.created_day[new]).astype(np.int64)
        local = rng.integers(8 * 3_600_000, 22 * 3_600_000, len(new))
        pop.created_ms[new] = start_ms + pop.created_day[new].astype(np.int64) * DAY_MS + local - off * 60_000
    return world
