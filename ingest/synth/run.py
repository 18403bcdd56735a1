"""Generating a data set end to end: population, attacks, then legitimate days streamed out in time order.

Memory stays bounded: legitimate events are drawn a few days at a time; events
are written once no later chunk can produce an earlier one (a local day runs
from UTC-12 to UTC+14, so a chunk's events are final 15 hours before its last
day ends in UTC), merged with the attacks of the same span.

Every file is written as ``<name>.partial`` and renamed to its name only when
the whole run has succeeded: an interrupted or failed run leaves nothing at the
names that a later ``riskgate ingest`` or ``labels load`` could take for a
finished data set (:class:`ingest.outputs.PartialOutputs`).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ingest.errors import ConfigurationError, RiskgateError, check_output_folder
from ingest.outputs import PartialOutputs
from ingest.schema import EVENT_RESPONSES, EVENT_TYPES
from ingest.synth import activity, attacks, catalogue
from ingest.synth import events as ev
from ingest.synth.config import ATTACK_TYPES, SynthConfig, expected_events_per_user_day
from ingest.synth.population import uuids
from ingest.synth.render import Renderer, View
from ingest.synth.world import DAY_MS, World, build, rng_for
from ingest.synth.writers import WRITERS, LabelsWriter, check_out, side_paths, write_users

#: legitimate events drawn per chunk, about (the chunk is whole days, one to seven)
CHUNK_EVENTS = 200_000
#: events rendered and written at a time
WRITE_EVENTS = 50_000
_HOLD_MS = 15 * 3_600_000


@dataclass
class SynthReport:
    """What a run wrote."""

    format: str
    out: str
    files: list[str]
    users_file: str
    labels_file: str
    users: int
    days: int
    seed: int
    start: str
    events: int
    labels: int
    by_event: dict[str, int] = field(default_factory=dict)  # "SignIn Pass" -> count
    attacks: dict[str, dict[str, int]] = field(default_factory=dict)  # type -> incidents, events, takeovers
    seconds: float = 0.0

    @property
    def attack_events(self) -> int:
        return sum(a["events"] for a in self.attacks.values())

    @property
    def takeovers(self) -> int:
        return sum(a["takeovers"] for a in self.attacks.values())

    def as_dict(self) -> dict:
        d = asdict(self)
        d["attack_events"] = self.attack_events
        d["takeovers"] = self.takeovers
        return d


def formats() -> list[str]:
    return list(WRITERS)


def _v4_keys(world: World, b: ev.Block) -> tuple[np.ndarray, np.ndarray]:
    v4 = world.cat.version[b.net] == 4
    return v4, (b.net.astype(np.int64) << 32) | b.lo


def synthesize(config: SynthConfig, fmt: str, out: str | Path, *, catalogue_path: str | None = None) -> SynthReport:
    """Write a labelled data set of ``config`` in format ``fmt`` to ``out`` (plus the users and labels files)."""
    if fmt not in WRITERS:
        raise ConfigurationError(f"--format must be one of: {', '.join(WRITERS)}; got {fmt!r}")
    out = Path(out)
    check_output_folder(out, ConfigurationError)
    check_out(out, fmt)
    started = time.perf_counter()
    cat = catalogue.load(catalogue_path)
    world = build(config, cat)
    plan = attacks.plan(world) if config.attacks else None
    atk = attacks.generate(world, plan) if plan else ev.empty()
    atk_v4, atk_keys = _v4_keys(world, atk)
    atk_keys = np.unique(atk_keys[atk_v4])

    users_path, labels_path = side_paths(out, fmt)
    outputs = PartialOutputs()  # every file under its partial name until the whole run is done
    renderer = Renderer(world)
    id_rng = rng_for(config.seed, 4)
    counts: Counter = Counter()
    atk_events: Counter = Counter()
    atk_takeovers: Counter = Counter()

    def emit(b: ev.Block) -> None:
        for s in range(0, len(b), WRITE_EVENTS):
            emit_slice(b.take(np.arange(s, min(len(b), s + WRITE_EVENTS))))

    def emit_slice(b: ev.Block) -> None:
        keep = writer.keep(b)
        if keep is not None:
            b = b.take(keep)
        if len(b) == 0:
            return
        ids = uuids(id_rng.bytes(16 * len(b)))
        view = View(renderer, b, ids)
        label_ids = writer.event_ids(view)
        writer.write(view)
        labels.write(label_ids, b)
        for key, n in _pairs(b):
            counts[key] += n
        a = b.attack[b.attack > 0]
        atk_events.update(a.tolist())
        atk_takeovers.update(b.attack[b.ato].tolist())

    def write_all() -> list[Path]:
        write_users(users_path, world, outputs, rba_names=fmt == "rba-csv")
        per_day = max(1.0, expected_events_per_user_day(config.params) * config.users)
        chunk_days = int(min(7, max(1, CHUNK_EVENTS // per_day)))
        pending = ev.empty()
        ai = 0
        for d0 in range(0, config.days, chunk_days):
            d1 = min(config.days, d0 + chunk_days)
            blk = activity.legit(world, d0, d1, rng_for(config.seed, 2, d0))
            if len(atk_keys) and len(blk):
                v4, keys = _v4_keys(world, blk)
                blk.cols["atk_ip"] = v4 & np.isin(keys, atk_keys)
            last = d1 >= config.days
            watermark = np.iinfo(np.int64).max if last else world.start_ms + d1 * DAY_MS - _HOLD_MS
            aj = len(atk) if last else int(np.searchsorted(atk.t, watermark, side="left"))
            pending = ev.sort(ev.concat([pending, blk, atk.take(np.arange(ai, aj))]))
            ai = aj
            k = len(pending) if last else int(np.searchsorted(pending.t, watermark, side="left"))
            emit(pending.take(np.arange(k)))
            pending = pending.take(np.arange(k, len(pending)))
        return writer.close()

    try:
        with outputs:  # left without commit (an error, Ctrl-C): the partial files are removed
            writer = WRITERS[fmt](out, world, outputs)
            labels = LabelsWriter(labels_path, outputs)
            try:
                files = write_all()
            finally:
                labels.close()
            outputs.commit()
    except OSError as exc:
        if exc.errno is None:
            raise
        # a full disk, a file-size limit: what was written is removed, nothing is left at the names
        raise RiskgateError(f"cannot write the data set: {exc.strerror} (nothing is left at --out or beside it)",
                            source=str(out)) from exc

    report = SynthReport(
        format=fmt, out=str(out), files=[str(f) for f in files], users_file=str(users_path),
        labels_file=str(labels_path), users=config.users, days=config.days, seed=config.seed,
        start=config.start.isoformat(), events=writer.rows, labels=labels.rows,
        by_event={f"{EVENT_TYPES[e]} {EVENT_RESPONSES[r]}": n for (e, r), n in sorted(counts.items()) if n},
        attacks={
            name: {"incidents": plan.incidents[name] if plan else 0, "events": int(atk_events[i + 1]),
                   "takeovers": int(atk_takeovers[i + 1])}
            for i, name in enumerate(ATTACK_TYPES)
        } if plan else {},
    )
    report.seconds = round(time.perf_counter() - started, 2)
    return report


def _pairs(b: ev.Block):
    c = np.bincount(b.etype.astype(np.int64) * 3 + b.resp, minlength=len(EVENT_TYPES) * 3)
    for code, n in enumerate(c.tolist()):
        if n:
            yield (code // 3, code % 3), n
