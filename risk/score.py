"""Batch scoring: every stored sign-in gets a score, a level, a decision and its reasons.

``score_events`` assesses events in time order, in chunks (bounded memory),
each chunk written in one transaction: features (``risk.features``) -> model
score and explanation (``risk.model``) -> level (``risk.levels``) -> IP-range
exceptions (``risk.exceptions``) -> the decision of the configuration that
applies (``risk.decide``) -> one ``assessments`` row per event.

Idempotent and interrupt-safe: only events without an assessment are
scored (unless ``rescore``); a run killed between chunks leaves whole chunks
behind, and the next run continues. The model, thresholds, configurations and
modes are read once at the start of a run (each user's MFA settings once,
when first needed), and every assessment records their versions, so
incremental runs give exactly the result of one run over everything
(features are point-in-time, computed from the stored history). The next
chunk's features are computed on a second cursor while a chunk is assessed
(``_FeaturePrefetch``).

``decide`` is a pure function of a handful of categorical inputs, so it is
called once per distinct combination in a chunk and joined back, not per event.
Notifications due are recorded with the assessment; they are sent only when
asked (``notify=True``): scoring history must not email users about old sign-ins.
Then each is also a pending row of ``notifications``, written in the chunk's
transaction and sent after it (``risk.notify``), and what earlier runs owe is
sent first, so a run that dies loses none. An email is due only from an
event's first assessment (``_write``): ``rescore`` decides anew and records
what the new decision would send (``would_notify``), but sends nothing about an
event assessed before.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest import store as ingest_store
from ingest.errors import ConfigurationError, RiskgateError, interrupted
from ingest.store import Migration
from risk import combos
from risk.combos import EXCEPTION_NAMES
from risk.config import unpooled_pool

MIGRATIONS = (
    Migration(
        "risk_score_0001_assessments",
        (
            """CREATE TABLE IF NOT EXISTS assessments (
                 event_id VARCHAR NOT NULL,
                 score DOUBLE,
                 risk_level VARCHAR,
                 risk_decision VARCHAR,
                 outcome VARCHAR,
                 event_action VARCHAR,
                 mode VARCHAR,
                 enforced BOOLEAN,
                 mfa_challenge BOOLEAN,
                 blocked BOOLEAN,
                 override_block BOOLEAN,
                 ip_exception VARCHAR,
                 compromised_credentials_detected BOOLEAN,
                 reset_required BOOLEAN,
                 notification VARCHAR,
                 would_notify VARCHAR,
                 reasons STRUCT(code VARCHAR, value DOUBLE, contribution DOUBLE)[],
                 decision_reasons VARCHAR[],
                 model_version BIGINT,
                 thresholds_version BIGINT,
                 config_version BIGINT,
                 mode_version BIGINT,
                 run_id VARCHAR,
                 scored_at TIMESTAMPTZ
               )""",
            """CREATE TABLE IF NOT EXISTS score_runs (
                 run_id VARCHAR PRIMARY KEY,
                 started_at TIMESTAMPTZ,
                 finished_at TIMESTAMPTZ,
                 status VARCHAR,
                 since TIMESTAMPTZ,
                 until TIMESTAMPTZ,
                 rescore BOOLEAN,
                 events_scored BIGINT,
                 model_version BIGINT,
                 thresholds_version BIGINT
               )""",
        ),
    ),
    # A password reset is applied once per event, in the transaction that writes the event's assessment: a run
    # interrupted after a chunk's commit has applied its resets, and rescoring an old sign-in does not make a
    # user who has since reset their password RESET_REQUIRED again. A store's earlier resets count as applied.
    Migration(
        "risk_score_0002_resets_applied",
        (
            """CREATE TABLE IF NOT EXISTS resets_applied (
                 event_id VARCHAR PRIMARY KEY,
                 applied_at TIMESTAMPTZ
               )""",
            """INSERT INTO resets_applied SELECT DISTINCT event_id, scored_at FROM assessments
               WHERE reset_required ON CONFLICT DO NOTHING""",
        ),
    ),
    # The process of a run (``host:pid:start``, risk.notify.this_process): a run starting records as interrupted
    # only the running runs whose process is gone; one started while another still ran (the store is handed over
    # between chunks) marked the live run interrupted. Runs recorded before have none: gone, as before.
    Migration(
        "risk_score_0003_run_process",
        ("ALTER TABLE score_runs ADD COLUMN IF NOT EXISTS process VARCHAR",),
    ),
    # When a run last made progress (started, or committed a chunk): a run of another host (whose process cannot be
    # looked at from here: a container has a hostname of its own) is gone once it made none for risk.notify.OTHER_HOST_STALE_AFTER.
    Migration(
        "risk_score_0004_run_progress",
        ("ALTER TABLE score_runs ADD COLUMN IF NOT EXISTS progress_at TIMESTAMPTZ",),
    ),
)


DEFAULT_CHUNK_ROWS = 250_000
TOP_REASONS = 3


@dataclass
class ScoreResult:
    run_id: str
    events_scored: int = 0
    chunks: int = 0
    by_level: dict = field(default_factory=dict)
    by_decision: dict = field(default_factory=dict)
    model_version: int | None = None
    thresholds_version: int | None = None
    notifications: int = 0  # sent or written to the outbox
    #: of those, notifications earlier runs owed (left pending by a run killed or a service stopped, or failed)
    notifications_earlier: int = 0
    #: notifications recorded as failed (table ``notifications``), by reason
    notification_failures: dict = field(default_factory=dict)
    #: events assessed before this run that come after the earliest event it assessed for the first time (a late
    #: event: ingested after later ones were scored): their features did not count it (``stale_since``: that time)
    stale_assessed: int = 0
    stale_since: datetime | None = None

    @property
    def notifications_failed(self) -> int:
        return sum(self.notification_failures.values())

    def as_json(self) -> dict:
        return {
            "run_id": self.run_id,
            "events_scored": self.events_scored,
            "chunks": self.chunks,
            "by_level": self.by_level,
            "by_decision": self.by_decision,
            "model_version": self.model_version,
            "thresholds_version": self.thresholds_version,
            "notifications": self.notifications,
            "notifications_earlier": self.notifications_earlier,
            "notifications_failed": self.notifications_failed,
            "notification_failures": self.notification_failures,
            "stale_assessed": self.stale_assessed,
            "stale_since": None if self.stale_since is None else self.stale_since.isoformat(),
        }


ProgressFn = Callable[[int, int], None]  # (scored so far, total to score)


#: events ``e`` in [since, until) (either may be NULL: unbounded); its parameters: :func:`period_params`
PERIOD_SQL = """(CAST(? AS TIMESTAMPTZ) IS NULL OR e.creation_date >= CAST(? AS TIMESTAMPTZ))
  AND (CAST(? AS TIMESTAMPTZ) IS NULL OR e.creation_date < CAST(? AS TIMESTAMPTZ))"""


class EmptyPeriodError(RiskgateError):
    """``since`` is not before ``until``: the period holds no time, so no event."""


def check_period(since: datetime | None, until: datetime | None) -> None:
    """Refuse a period that holds no time (``since`` not before ``until``) instead of matching nothing in
    silence; the CLI refuses it with the options' names before any of this runs."""
    if since is not None and until is not None and since >= until:
        raise EmptyPeriodError(f"since {since.isoformat()} is not before until {until.isoformat()}: "
                               "that period holds no event")


def period_params(since: datetime | None, until: datetime | None) -> list:
    """The parameters of :data:`PERIOD_SQL`, in its order (an empty period is refused: :func:`check_period`)."""
    check_period(since, until)
    return [since, since, until, until]


def _targets_sql(rescore: bool) -> str:
    return f"""
      FROM events e
      WHERE {PERIOD_SQL}
        {"" if rescore else "AND NOT EXISTS (SELECT 1 FROM assessments a WHERE a.event_id = e.event_id)"}
    """


def chunk_bounds(con, since, until, *, rescore: bool = True, chunk_rows: int = DEFAULT_CHUNK_ROWS
                 ) -> tuple[list[tuple[datetime, datetime]], int]:
    """Consecutive [start, end) time windows holding about ``chunk_rows`` target events each (the events in
    [since, until), without an assessment unless ``rescore``), and how many target events there are (from
    the same pass: finding the targets reads every event and assessment). An instant never spans two windows."""
    rows = con.execute(
        f"""SELECT min(creation_date), count(*) FROM (
              SELECT creation_date, (row_number() OVER (ORDER BY creation_date) - 1) // ? AS k
              {_targets_sql(rescore)}) GROUP BY k ORDER BY k""",
        [chunk_rows, *period_params(since, until)],
    ).fetchall()
    total = sum(int(c) for _lo, c in rows)
    bounds = []
    for i, (lo, _c) in enumerate(rows):
        hi = rows[i + 1][0] if i + 1 < len(rows) else None
        if bounds and bounds[-1][0] == lo:
            continue  # one timestamp never spans two chunks
        bounds.append((lo, hi))
    out = []
    for i, (lo, hi) in enumerate(bounds):
        nxt = bounds[i + 1][0] if i + 1 < len(bounds) else until
        out.append((lo, nxt))
    return out, total


def _stale_after(con, first: datetime) -> int:
    """How many events assessed before come at or after ``first``, the earliest event a run assesses for the first
    time (one at the same instant may follow it in the order of (creation_date, event_id) the history uses): when
    it was ingested late, those were assessed without it, so their features -- the user's history, the
    windows of the address and network, everyone's counts -- did not count it, as one run over everything would
    have. (Restricted by time first: the events after ``first`` are usually the few newest.)"""
    return int(con.execute("SELECT count(*) FROM assessments a JOIN events e USING (event_id) WHERE e.creation_date >= ?",
                           [first]).fetchall()[0][0])


def _mfa_state(con, users: list[tuple] | None, unpooled: str | None) -> dict[tuple, bool]:
    """Whether each of ``users`` ((pool, username); every user: None) that is in the users table has MFA
    configured (``ingest.users.has_mfa_configured``, in SQL as every reader of the users table has it); users
    loaded without a pool id are of ``unpooled`` (``ingest.users.users_by_pool_sql``)."""
    from ingest.users import MFA_KINDS, has_mfa_configured_sql, users_by_pool_sql

    select = f"SELECT pool, username, {has_mfa_configured_sql('?')} FROM {users_by_pool_sql('?')}"
    params = [list(MFA_KINDS), unpooled]
    rows = con.execute(select, params).fetchall() if users is None else ingest_store.rows_where_in(
        con, select, "username", [u for _p, u in users], params)
    return {(pool, u): bool(has_mfa) for pool, u, has_mfa in rows}


class _Context:
    """What a run reads once: model, thresholds, and per pool/client configuration and mode."""

    def __init__(self, con):
        from risk import levels, model

        self.con = con
        self.model, self.model_version = model.load_active(con)
        self.thresholds, self.thresholds_version = levels.current_thresholds(con)
        self._configs: dict = {}
        self._modes: dict = {}
        self._exceptions: dict = {}
        self._mfa: dict[tuple, bool] = {}
        self.unpooled = unpooled_pool(con)  # the pool of users loaded (and events stored) without a pool id

    def mfa_state(self, users: list[tuple]) -> dict[tuple, bool]:
        """Whether each user ((pool, username): a username is one user per pool) has MFA configured, read once
        per user per run (False for unknown users)."""
        missing = [u for u in users if u not in self._mfa]
        if missing:
            found = _mfa_state(self.con, missing, self.unpooled)
            for u in missing:
                self._mfa[u] = found.get(u, False)
        return {u: self._mfa[u] for u in users}

    def preload_users(self, limit: int = 2_000_000) -> int:
        """Read every user's MFA state at once (for a long-running reader, the service); above ``limit`` users
        nothing is read here and each user is read when first needed. Returns how many were read."""
        n = self.con.execute("SELECT count(*) FROM users").fetchall()[0][0]
        if n > limit:
            return 0
        self._mfa.update(_mfa_state(self.con, None, self.unpooled))
        return n

    def forget_users(self) -> None:
        """Read the users' MFA settings again on next use (they, or the store's pools, may have changed)."""
        self._mfa = {}
        self.unpooled = unpooled_pool(self.con)

    def config(self, pool, client):
        from risk import config as rc
        from risk.exceptions import IPRangeExceptions

        key = (pool, client)
        if key not in self._configs:
            cfg, version = rc.resolve(self.con, pool, client)
            self._configs[key] = (cfg, version)
            self._exceptions[key] = IPRangeExceptions.from_configuration(cfg)
        return self._configs[key]

    def exceptions(self, pool, client):
        self.config(pool, client)
        return self._exceptions[(pool, client)]

    def mode(self, pool):
        from risk import config as rc

        if pool not in self._modes:
            self._modes[pool] = rc.get_mode(self.con, pool)
        return self._modes[pool]


def _pool_of(con, pool):
    """Events without a pool id are assessed under the store's pool (risk.config.choose_pool)."""
    from risk import config as rc

    if pool is not None:
        return pool
    try:
        return rc.choose_pool(con, None)
    except ConfigurationError:  # several pools: say what it is about and the way that works for every command
        raise ConfigurationError(
            f"events without a UserPoolId cannot be assessed: the store knows several pools "
            f"({', '.join(rc.known_pools(con))}); set ${rc.POOL_ENV} to the pool they belong to "
            "(or give them their pool id when ingesting: --user-pool-id)") from None


#: decide()'s part of an assessment row, in the order ``_assess`` gives it (``_Assessed.decided``)
_DECISION_FIELDS = (("risk_level", pa.string()), ("risk_decision", pa.string()), ("outcome", pa.string()),
                    ("event_action", pa.string()), ("mode", pa.string()), ("enforced", pa.bool_()),
                    ("mfa_challenge", pa.bool_()), ("blocked", pa.bool_()), ("override_block", pa.bool_()),
                    ("compromised_credentials_detected", pa.bool_()), ("reset_required", pa.bool_()),
                    ("notification", pa.string()), ("would_notify", pa.string()),
                    ("decision_reasons", pa.list_(pa.string())), ("config_version", pa.int64()),
                    ("mode_version", pa.int64()))


@dataclass
class _Assessed:
    """What :func:`assess_chunk` and :func:`assess_rows` share: per event its score, level, reasons (events
    with a level only), IP-range exception and the index of its decided row."""

    scores: np.ndarray
    risky: np.ndarray  # positions of the events with a level
    explained: list  # their reasons, in the order of ``risky``
    exceptions: np.ndarray  # per event, its index in risk.combos.EXCEPTION_NAMES
    codes: np.ndarray  # per event, its row of ``decided``
    decided: list[tuple]  # one per distinct combination of decide()'s inputs, in _DECISION_FIELDS order


def _assess(ctx: _Context, X, subset: Callable, ev: dict) -> _Assessed:
    """Score, level, explain, check the IP-range exceptions and decide for the events of ``X`` (features, an
    Arrow table or rows); ``subset(positions)`` takes some of them; ``ev`` has the event columns per event
    (lists or Arrow arrays)."""
    from risk import levels
    from risk.decide import decide

    con = ctx.con
    scores = np.asarray(ctx.model.score_samples(X), dtype=float)
    lv = levels.checked_level_index(scores, ctx.thresholds)

    # each column as codes of its distinct values (risk.combos): the work per event is numpy's and Arrow's
    pool, pools = combos.pool_codes(ev["user_pool_id"], lambda p: _pool_of(con, p))
    client, clients = combos.factorize(ev["client_id"])
    user, users = combos.factorize(ev["username"])
    compromised, compromised_values = combos.factorize(ev["compromised_credentials"])
    event_type, event_types = combos.factorize(ev["event_type"])
    response, responses = combos.factorize(ev["event_response"])  # a failed attempt's password is not the user's
    exc = combos.exception_codes(ev["client_ip"], pool, pools, client, clients, ctx.exceptions)
    # a username is one user per pool: MFA is looked up per (pool, username)
    who, firsts = combos.combinations((pool, len(pools)), (user, len(users)))
    pairs = [(pools[pool[i]], users[user[i]]) for i in firsts.tolist()]
    mfa = ctx.mfa_state(sorted(p for p in pairs if p[1] is not None))
    has_mfa = np.array([mfa.get(p, False) for p in pairs], dtype=np.int64)[who]

    # decide() once per distinct combination of its inputs; each event takes its combination's row
    codes, firsts = combos.combinations((lv, len(levels.LEVEL_NAMES)), (exc, len(EXCEPTION_NAMES)),
                                        (compromised, len(compromised_values)), (event_type, len(event_types)),
                                        (response, len(responses)), (pool, len(pools)), (client, len(clients)),
                                        (has_mfa, 2))
    text = lambda v: None if v is None else str(v)  # noqa: E731
    decided = []
    for i in firsts.tolist():  # in code order
        cfg, cver = ctx.config(pools[pool[i]], clients[client[i]])
        mode, mver = ctx.mode(pools[pool[i]])
        d = decide(risk_level=levels.LEVEL_NAMES[lv[i]], exception=EXCEPTION_NAMES[exc[i]],
                   compromised=compromised_values[compromised[i]], event_type=event_types[event_type[i]],
                   configuration=cfg, mode=mode, user_has_mfa=bool(has_mfa[i]),
                   event_response=responses[response[i]])
        decided.append((
            text(d.risk_level), text(d.risk_decision), str(d.outcome), text(d.event_action), str(d.mode), d.enforced,
            d.mfa_challenge, d.blocked, d.override_block, d.compromised_credentials_detected, d.reset_required,
            text(d.notification), text(d.would_notify), [str(r) for r in d.reasons], cver, mver,
        ))
    # reasons for every event the decision gives a risk level (the model's exact contributions); an event below
    # the Low threshold has nothing to explain, and one that no risk detection looked at (mode OFF, a skipped or
    # blocked IP range) has no signals to show: both get an empty list
    with_level = np.array([row[0] is not None for row in decided], dtype=bool)
    risky = np.flatnonzero(with_level[np.asarray(codes, dtype=np.int64)])
    explained = ctx.model.explain(subset(risky), top=TOP_REASONS) if len(risky) else []
    return _Assessed(scores, risky, explained, exc, codes, decided)


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for a while; reference counting still frees what is dropped.

    Assessing a chunk makes many short-lived objects (the reasons; until decide()'s inputs became codes,
    ``risk.combos``, also the events' columns as Python values). They start a collection every 700 new objects (CPython's
    default), and the older generations' collections walk every live object (the model's, the libraries').
    None of these objects is in a reference cycle, so the passes find nothing. In ``bench/score.py``
    (1,000,000 events, 2 chunks) the collector took 0.82 s of the run and 0.22 s with the assessment
    paused; the collector runs again as soon as the block ends.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def assess_chunk(ctx: _Context, feats: pa.Table, events: pa.Table) -> pa.Table:
    """Assessments (one row per event of ``feats``) for one chunk; ``events`` has the event columns decide needs."""
    with cyclic_gc_paused():
        return _assess_chunk(ctx, feats, events)


def _assess_chunk(ctx: _Context, feats: pa.Table, events: pa.Table) -> pa.Table:
    n = feats.num_rows
    # the event columns in the order of feats (events_to_assess gives them so; anything else is put in order)
    if not (events.num_rows == n and events.column("event_id").equals(feats.column("event_id"))):
        events = events.take(pc.index_in(feats.column("event_id"), value_set=events.column("event_id")))
    ev = {c: events.column(c) for c in EVENT_COLUMNS_TO_ASSESS[1:]}
    a = _assess(ctx, feats, lambda idx: feats.take(pa.array(idx, pa.int64())), ev)
    decided, codes = a.decided, a.codes
    if n <= 64:  # a few rows: built directly (an Arrow take per column costs more than it saves)
        per_field = {name: pa.array([decided[c][j] for c in codes.tolist()], typ)
                     for j, (name, typ) in enumerate(_DECISION_FIELDS)}
    else:
        taken = pa.array(codes, pa.int64())
        per_field = {name: pa.array([row[j] for row in decided], typ).take(taken)
                     for j, (name, typ) in enumerate(_DECISION_FIELDS)}
    reasons = _reasons_array(n, a.risky, a.explained)
    out = {
        "event_id": feats.column("event_id"),
        "score": pa.array(a.scores, pa.float64()),
        **{name: per_field[name] for name in ("risk_level", "risk_decision", "outcome", "event_action", "mode",
                                               "enforced", "mfa_challenge", "blocked", "override_block")},
        "ip_exception": pa.array(EXCEPTION_NAMES, pa.string()).take(pa.array(a.exceptions, pa.int64())),
        **{name: per_field[name] for name in ("compromised_credentials_detected", "reset_required", "notification",
                                               "would_notify")},
        "reasons": reasons,
        "decision_reasons": per_field["decision_reasons"],
        "model_version": _constant(ctx.model_version, pa.int64(), n),
        "thresholds_version": _constant(ctx.thresholds_version, pa.int64(), n),
        "config_version": per_field["config_version"],
        "mode_version": per_field["mode_version"],
    }
    return pa.table(out)


def _constant(value, typ: pa.DataType, n: int) -> pa.Array:
    """``n`` times ``value`` as an Arrow array, made in Arrow: ``pa.array([value] * n)`` goes through a Python
    list and converts every item (a run id over 500,000 rows: about a quarter of a second)."""
    return pa.repeat(pa.scalar(value, typ), n)


def assess_rows(ctx: _Context, feats: list[dict], events: list[dict]) -> list[dict]:
    """:func:`assess_chunk` for a few events as dicts (the service): the same values, as the rows its table's
    ``to_pylist()`` gives (ASSESSMENT_COLUMNS but run_id and scored_at), without building Arrow arrays.

    ``feats``: the features per event (with event_id); ``events``: the event columns decide needs, by event.
    """
    by_id = {e["event_id"]: e for e in events}
    ev = {c: [by_id[f["event_id"]][c] for f in feats] for c in EVENT_COLUMNS_TO_ASSESS[1:]}
    a = _assess(ctx, feats, lambda idx: [feats[i] for i in idx], ev)
    reasons: list[list] = [[] for _ in feats]
    for i, explained in zip(a.risky.tolist(), a.explained):
        reasons[i] = [_reason(c, v, w) for c, v, w in explained]
    names = [name for name, _ in _DECISION_FIELDS]
    out = []
    for i, f in enumerate(feats):
        d = dict(zip(names, a.decided[a.codes[i]]))
        d["decision_reasons"] = list(d["decision_reasons"])  # each row its own list
        out.append({
            "event_id": f["event_id"], "score": float(a.scores[i]),
            **{k: d[k] for k in ("risk_level", "risk_decision", "outcome", "event_action", "mode", "enforced",
                                 "mfa_challenge", "blocked", "override_block")},
            "ip_exception": EXCEPTION_NAMES[a.exceptions[i]],
            **{k: d[k] for k in ("compromised_credentials_detected", "reset_required", "notification",
                                 "would_notify")},
            "reasons": reasons[i], "decision_reasons": d["decision_reasons"],
            "model_version": ctx.model_version, "thresholds_version": ctx.thresholds_version,
            "config_version": d["config_version"], "mode_version": d["mode_version"],
        })
    return out


def _reason(code, value, contribution) -> dict:
    """One reason as stored: NaN and None values alike are NULL."""
    return {"code": code, "value": None if value is None or value != value else float(value),
            "contribution": float(contribution)}


REASON_TYPE = pa.struct([("code", pa.string()), ("value", pa.float64()), ("contribution", pa.float64())])


def _reasons_array(n: int, rows_with: np.ndarray, explained: list) -> pa.Array:
    """list<struct<code, value, contribution>> for n events: the explained rows' reasons, empty lists elsewhere."""
    lengths = np.zeros(n, dtype=np.int32)
    lengths[rows_with] = [len(r) for r in explained]
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = [_reason(*t) for row in explained for t in row]
    values = pa.StructArray.from_arrays(
        [pa.array([r[f.name] for r in flat], f.type) for f in REASON_TYPE], fields=list(REASON_TYPE))
    return pa.ListArray.from_arrays(pa.array(offsets), values)


#: the event columns ``assess_chunk`` needs
EVENT_COLUMNS_TO_ASSESS = ("event_id", "user_pool_id", "client_id", "username", "event_type", "event_response",
                           "client_ip", "compromised_credentials")
_EVENT_COLS = ", ".join(EVENT_COLUMNS_TO_ASSESS)


def score_events(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    rescore: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: ProgressFn | None = None,
    notify: bool = False,
) -> ScoreResult:
    """Assess the events in [since, until) that have no assessment (all of them with ``rescore``).

    Enforced compromised-credential blocks set the user's status to RESET_REQUIRED. With ``notify``,
    the notifications the decisions made due (ENFORCED only) are sent, each at most once per event: each is a
    pending row of ``notifications`` from the chunk's transaction on (``risk.notify.reserve``), sent after it.
    Only an event's first assessment makes one due (:func:`_write`): events assessed before (by the service or
    an earlier run) are decided anew with ``rescore``, and no email goes out about them.
    What earlier runs owe is sent first (``risk.notify.claim_owed``: left pending by a run that was killed or a
    service that stopped, or failed fewer than ``risk.notify.MAX_ATTEMPTS`` times).
    """
    from risk.model.registry import active_version

    if notify:  # a bad notification setting ($RISKGATE_FEEDBACK_TTL, ...) is refused before anything is scored
        from risk import notify as rn

        rn.check_settings(con)
    bounds, total = chunk_bounds(con, since, until, rescore=rescore, chunk_rows=chunk_rows)
    if total and con.execute(f"SELECT count(*) > 0 {_targets_sql(rescore)} AND e.user_pool_id IS NULL",
                             period_params(since, until)).fetchall()[0][0]:
        _pool_of(con, None)  # events without a pool in a store of several: refused before any chunk is written
    stale = _stale_after(con, bounds[0][0]) if total and not rescore else 0
    prefetch = _FeaturePrefetch(con, bounds)
    try:
        if active_version(con) is not None:
            prefetch.start(0)  # the first chunk's features while the model loads (scikit-learn: a second to import)
        ctx = _Context(con)
    except BaseException:
        prefetch.close()
        raise
    run_id = uuid.uuid4().hex
    result = ScoreResult(run_id=run_id, model_version=ctx.model_version, thresholds_version=ctx.thresholds_version,
                         stale_assessed=stale, stale_since=bounds[0][0] if stale else None)
    status = "failed"
    claimant = _hold_claimant() if notify else None
    try:
        _mark_gone_runs(con)
        started = datetime.now(timezone.utc)
        con.execute(
            """INSERT INTO score_runs (run_id, started_at, finished_at, status, since, until, rescore, events_scored,
                                       model_version, thresholds_version, process, progress_at)
               VALUES (?, ?, NULL, 'running', ?, ?, ?, 0, ?, ?, ?, ?)""",
            [run_id, started, since, until, rescore, ctx.model_version, ctx.thresholds_version,
             _run_process(run_id), started],
        ).fetchall()
        if notify:  # what earlier runs owe first
            from risk import notify as rn

            rn.claim_owed(con, claimant)
            result.notifications_earlier = _send_notifications(ctx, claimant, result.notification_failures)
            result.notifications += result.notifications_earlier
        for k, (lo, hi) in enumerate(bounds):
            feats = prefetch.take(k)  # and the next chunk's start computing, beside this one's assessment
            if not rescore:
                done = con.execute(
                    f"SELECT event_id FROM assessments a JOIN events e USING (event_id) WHERE {PERIOD_SQL}",
                    period_params(lo, hi),
                ).fetchall()
                if done:
                    feats = feats.filter(pc.invert(pc.is_in(feats.column("event_id"),
                                                            pa.array([r[0] for r in done], pa.string()))))
            if feats.num_rows == 0:
                continue
            events = events_to_assess(con, feats)
            with _sharing_cores(con) if prefetch.running() else nullcontext():
                table = assess_chunk(ctx, feats, events)
            table = table.append_column("run_id", _constant(run_id, pa.string(), table.num_rows))
            table = table.append_column(
                "scored_at", _constant(datetime.now(timezone.utc), pa.timestamp("us", tz="UTC"), table.num_rows))
            # with --notify: the notifications due, pending; and the run's count, so that a run killed later (its
            # finally never runs) still says how many events it scored
            _write(con, table, reserve=notify, claimant=claimant,
                   also=("UPDATE score_runs SET events_scored = events_scored + ?, progress_at = ? WHERE run_id = ?",
                         [table.num_rows, datetime.now(timezone.utc), run_id]))
            if notify:
                result.notifications += _send_notifications(ctx, claimant, result.notification_failures)
            result.events_scored += table.num_rows
            result.chunks += 1
            off = pc.equal(table.column("mode"), "OFF")
            levels_seen = pc.if_else(off, pa.scalar(NO_LEVEL_WORDS["risk_decision"]), table.column("risk_level"))
            for column, key_none, agg in ((levels_seen, NO_LEVEL_WORDS["risk_level"], result.by_level),
                                          (table.column("risk_decision"), NO_LEVEL_WORDS["risk_decision"],
                                           result.by_decision)):
                for row in pc.value_counts(column).to_pylist():
                    key = key_none if row["values"] is None else str(row["values"])
                    agg[key] = agg.get(key, 0) + int(row["counts"])
            if progress:
                progress(result.events_scored, total)
            if ingest_store.wants_turn(con):
                prefetch.pause()  # nothing may read the file while it is handed over
                if ingest_store.yield_turn(con):
                    prefetch.restart()  # the store may have changed meanwhile: computed again
        status = "completed"
    except BaseException as exc:
        if interrupted(exc):  # Ctrl-C, or DuckDB's own report of it: the next run completes this one
            status = "interrupted"
        raise
    finally:
        _live_runs.discard(run_id)
        prefetch.close()
        if claimant is not None:  # what it could not send (interrupted) is owed: the next run claims it
            from risk import notify as rn

            rn.release(claimant)
        # (events_scored is counted by each chunk's own transaction: a Ctrl-C between a chunk's commit and this
        # process's count of it had this line write one chunk too few)
        con.execute(
            "UPDATE score_runs SET finished_at = ?, status = ? WHERE run_id = ?",
            [datetime.now(timezone.utc), status, run_id],
        ).fetchall()
    return result


_live_runs: set[str] = set()  # the runs of this process that have not ended


def _run_process(run_id: str) -> str:
    """What ``score_runs.process`` records for a run of this process (and remembers it as live)."""
    from risk.notify import this_process

    _live_runs.add(run_id)
    return this_process()


def _mark_gone_runs(con) -> None:
    """Record as interrupted the runs still ``running`` whose process is gone (killed, or stopped before its
    ``finally`` could say so): a run of another process that still runs (the store is handed over between
    chunks) stays running, and so does a run of this process that has not ended."""
    from risk.notify import process_alive, this_process

    me = this_process()

    def alive(run_id: str, proc: str | None, progress: datetime) -> bool:
        if proc == me:
            return run_id in _live_runs
        return process_alive(proc, progress)  # another host's: while it made progress lately

    gone = [run_id for run_id, proc, progress in con.execute(
                "SELECT run_id, process, coalesce(progress_at, started_at) FROM score_runs WHERE status = 'running'"
            ).fetchall() if not alive(run_id, proc, progress)]
    if gone:
        con.execute("UPDATE score_runs SET status = 'interrupted' WHERE status = 'running' AND list_contains(?, run_id)",
                    [gone]).fetchall()


#: what ``ScoreResult.by_level`` / ``by_decision`` call an event without a level / a decision (``riskgate report``'s
#: words): no risk level (below Low, a skipped or blocked range), and not evaluated (mode OFF: also its level)
NO_LEVEL_WORDS = {"risk_level": "no risk", "risk_decision": "not evaluated"}


@contextmanager
def _sharing_cores(con) -> Iterator[None]:
    """While the next chunk's features are computed beside an assessment: the store's DuckDB gets half its
    threads (``ingest.store.halved_threads``) and the model's OpenMP one thread (``openmp_limited``).

    Without the second, the tree model's OpenMP threads (one per core) and DuckDB's thread contend for the
    cores with the assessment's Python thread, and libgomp's threads spin between the model's thousands of
    parallel regions (one per tree and block of rows) on cores DuckDB needs. On ``bench/score.py``'s store
    (1,000,000 events in 2 chunks, ``score_events`` called from Python) the first chunk's assessment took
    8.6 s beside the features and the second 2.4 s alone; with one OpenMP thread meanwhile 3.2 s, and the
    run 14.1-14.3 s instead of 17.2-17.5 s. Unlike ``OMP_WAIT_POLICY``, which must be set before the runtime
    loads, this works for every caller and leaves training its spinning threads (faster there).
    """
    from risk.model.estimators import openmp_limited

    with ingest_store.halved_threads(con), openmp_limited():
        yield


class _FeaturePrefetch:
    """Computes the features of chunk k + 1 on its own cursor while chunk k is assessed and written.

    Features read events and feedback only, never assessments, so computing
    them one chunk ahead gives the same values; DuckDB works on them while
    Python assesses (the two cores both busy). Around a hand-over of the
    store nothing runs ahead (:meth:`pause`), and what was computed before it
    is computed again (:meth:`restart`).
    """

    def __init__(self, con, bounds: list[tuple[datetime, datetime]]):
        from concurrent.futures import ThreadPoolExecutor

        self.con = con
        self.bounds = bounds
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="riskgate-features")
        self.ahead: dict[int, object] = {}
        self.share: bool | None = None  # whether the chunks share their history (decided on the first chunk)
        self.shared = None  # risk.features.SharedHistory, made again when the store changed (a hand-over)
        self.cursor = None  # the cursor computing a chunk ahead (stopped by close() when the run ends early)

    def _compute(self, k: int) -> pa.Table:
        from risk.features import SharedHistory, compute_features, worth_sharing

        cur = self.cursor = self.con.cursor()
        try:
            if self.share is None:
                self.share = worth_sharing(cur, [lo for lo, _hi in self.bounds])
            if self.share and (self.shared is None or not self.shared.current(cur)):
                self.shared = SharedHistory(cur)
            lo, hi = self.bounds[k]
            return compute_features(cur, since=lo, until=hi, shared=self.shared)
        finally:
            self.cursor = None
            cur.close()

    def start(self, k: int) -> None:
        """Start computing chunk k (if there is one and it is not started)."""
        if k < len(self.bounds) and k not in self.ahead:
            self.ahead[k] = self.pool.submit(self._compute, k)

    def take(self, k: int) -> pa.Table:
        self.start(k)
        feats = _result(self.ahead[k])  # (kept in ``ahead`` while awaited: a Ctrl-C meanwhile stops it in close())
        del self.ahead[k]
        self.start(k + 1)
        return feats

    def running(self) -> bool:
        """Whether a chunk ahead is still being computed."""
        return any(not fut.done() for fut in self.ahead.values())

    def pause(self) -> None:
        """Wait for what is running (its result is kept until :meth:`restart` drops it)."""
        for fut in self.ahead.values():
            _result(fut, exception=True)

    def restart(self) -> None:
        """Forget what was computed ahead (the next :meth:`take` computes it again)."""
        self.ahead.clear()

    def close(self) -> None:
        """Stop what is computed (an error or Ctrl-C mid-run: its query is interrupted, again until it ends, since
        DuckDB drops an interrupt that comes between two queries) and end the thread."""
        for fut in self.ahead.values():
            _let_go(fut)  # (a Ctrl-C in done() or cancel() may leave the lock held as in result(): _result)
            fut.cancel()
            _let_go(fut)
        for fut in self.ahead.values():
            while not fut.done():
                cur = self.cursor
                if cur is not None:
                    try:
                        cur.interrupt()
                    except Exception:  # noqa: BLE001 - closed meanwhile: nothing left to stop
                        pass
                try:
                    fut.exception(timeout=0.05)
                except (TimeoutError, CancelledError):
                    pass
                finally:
                    _let_go(fut)
        self.pool.shutdown(wait=True)


def _result(fut, *, exception: bool = False):
    """``fut.result()`` (``fut.exception()`` with ``exception``), left by Ctrl-C without keeping the future's lock.

    CPython can deliver a KeyboardInterrupt between a ``with`` block's ``__enter__`` and its body (bpo-29988),
    which then never runs ``__exit__``: in ``Future.result`` that left the future's condition held by this
    thread, the feature thread then waited for it forever to set its result, and ``riskgate score`` hung after
    Ctrl-C holding the store (1 run in about 110 interrupted)."""
    try:
        return fut.exception() if exception else fut.result()
    except BaseException:
        _let_go(fut)
        raise


def _let_go(fut) -> None:
    """Release ``fut``'s lock if this thread holds it (left so by an interrupted ``with``: :func:`_result`)."""
    condition = fut._condition  # noqa: SLF001 - the lock the interrupted ``with`` may have left held
    while condition._is_owned():  # noqa: SLF001
        condition.release()


def events_to_assess(con, feats: pa.Table) -> pa.Table:
    """The event columns ``assess_chunk`` needs, for the events of ``feats``, in the order of ``feats``."""
    con.register("_rg_chunk_ids", pa.table({"event_id": feats.column("event_id"),
                                            "_pos": pa.array(np.arange(feats.num_rows, dtype=np.int64))}))
    try:
        return con.sql(f"SELECT {_EVENT_COLS} FROM _rg_chunk_ids c JOIN events USING (event_id) "
                       "ORDER BY c._pos").to_arrow_table()
    finally:
        con.unregister("_rg_chunk_ids")


ASSESSMENT_COLUMNS = ("event_id", "score", "risk_level", "risk_decision", "outcome", "event_action", "mode",
                      "enforced", "mfa_challenge", "blocked", "override_block", "ip_exception",
                      "compromised_credentials_detected", "reset_required", "notification", "would_notify",
                      "reasons", "decision_reasons", "model_version", "thresholds_version", "config_version",
                      "mode_version", "run_id", "scored_at")


_FIELD_TYPES = dict(_DECISION_FIELDS)
#: the Arrow schema of assessment rows (ASSESSMENT_COLUMNS), e.g. for rows from :func:`assess_rows`
ASSESSMENT_SCHEMA = pa.schema([
    (c, {"event_id": pa.string(), "score": pa.float64(), "ip_exception": pa.string(),
         "reasons": pa.list_(REASON_TYPE), "model_version": pa.int64(), "thresholds_version": pa.int64(),
         "run_id": pa.string(), "scored_at": pa.timestamp("us", tz="UTC")}.get(c) or _FIELD_TYPES[c])
    for c in ASSESSMENT_COLUMNS])


def assessments_for(con, event_ids: list[str]) -> dict[str, dict]:
    """The stored assessment of each of ``event_ids`` that has one, as a dict of ASSESSMENT_COLUMNS."""
    rows = ingest_store.rows_where_in(con, f"SELECT {', '.join(ASSESSMENT_COLUMNS)} FROM assessments", "event_id",
                                      event_ids)
    return {r[0]: dict(zip(ASSESSMENT_COLUMNS, r)) for r in rows}


def _apply_resets(con, assessments: str) -> None:
    """Compromised credentials blocked while enforced: the user must reset the password (RESET_REQUIRED), once
    per event (``resets_applied``). ``assessments``: the registered table being written, whose events are stored;
    called inside the transaction that writes it (:func:`_write`)."""
    from ingest.store import quote_ident
    from ingest.users import set_user_status

    new = f"""FROM {quote_ident(assessments)} a JOIN events e USING (event_id)
              WHERE a.reset_required AND e.username IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM resets_applied r WHERE r.event_id = a.event_id)"""
    raw = {(p, u) for p, u in con.execute(f"SELECT DISTINCT e.user_pool_id, e.username {new}").fetchall()}
    if not raw:
        return
    unpooled = unpooled_pool(con)
    pool_of = {p: _pool_of(con, p) for p in {p for p, _u in raw}}  # once per pool id, not per event
    # a username is one user per pool: only this pool's is reset
    for pool, username in sorted({(pool_of[p], u) for p, u in raw}, key=lambda pu: (pu[0] or "", pu[1])):
        set_user_status(con, username, "RESET_REQUIRED", pool, unpooled=unpooled)
    con.execute(f"INSERT INTO resets_applied SELECT DISTINCT a.event_id, ? {new}",
                [datetime.now(timezone.utc)]).fetchall()


_NOTIFY_COLUMNS = ("event_id", "username", "user_pool_id", "client_id", "client_ip", "city", "country_name",
                   "creation_date", "device_name")


def _hold_claimant() -> str:
    """A claimant for this run's notifications, held (``risk.notify.hold``) until the run releases it."""
    from risk import notify as rn

    claimant = rn.new_claimant("score")
    rn.hold(claimant)
    return claimant


def _send_notifications(ctx: "_Context", claimant: str, failures: dict) -> int:
    """Send the emails ``claimant`` has pending (reserved with the chunk's assessments, or claimed from earlier
    runs), each completing its row; a failed send is recorded with its reason, never raised, and counted in
    ``failures`` by reason. Returns how many were sent or written to the outbox."""
    from risk import notify as rn

    con = ctx.con
    sent = 0
    for nid, ev, name, template, notify_config in claimed_notifications(ctx, claimant, failures):
        rec = rn.notify(con, ev, name, template, notify_config, record=False, notification_id=nid)
        rn.complete(con, rec, claimant)
        if rec.status == "failed":
            failures[rec.reason] = failures.get(rec.reason, 0) + 1
        else:
            sent += 1
    return sent


def claimed_notifications(ctx: "_Context", claimant: str, failures: dict | None = None) -> list[tuple]:
    """(notification id, event, template name, template, NotifyConfiguration) for each pending notification
    ``claimant`` holds (``risk.notify.claimed``), with the configuration that now applies to its event. One whose
    event is no longer stored is completed as failed here (and counted in ``failures`` by reason)."""
    from risk import notify as rn

    con = ctx.con
    held = rn.claimed(con, claimant)
    if not held:
        return []
    rows = ingest_store.rows_where_in(con, f"SELECT {', '.join(_NOTIFY_COLUMNS)} FROM events", "event_id",
                                      sorted({e for _n, e, _t in held}))
    due = {ev["event_id"]: (ev, name, template, cfg)
           for ev, name, template, cfg in _due(ctx, [(e, t) for _n, e, t in held],
                                               [dict(zip(_NOTIFY_COLUMNS, r)) for r in rows])}
    out = []
    for nid, event_id, name in held:
        if event_id in due:
            out.append((nid, *due[event_id]))
            continue
        reason = "the event is no longer stored"
        rn.complete(con, rn.NotificationRecord(nid, event_id, None, None, name, None, "failed", reason, None, None,
                                               datetime.now(timezone.utc)), claimant)
        if failures is not None:
            failures[reason] = failures.get(reason, 0) + 1
    return out


def due_notifications(ctx: "_Context", table: pa.Table, events: pa.Table | None = None) -> list[tuple[dict, str, object, object]]:
    """(event, template name, template, NotifyConfiguration) for each assessment of ``table`` with a notification due.

    The events' columns come from ``events`` when given (events not stored yet), else from the store.
    """
    due = table.filter(pc.is_valid(table.column("notification"))).select(["event_id", "notification"])
    if due.num_rows == 0:
        return []
    pairs = list(zip(due.column("event_id").to_pylist(), due.column("notification").to_pylist()))
    con = ctx.con
    if events is not None:
        return _due(ctx, pairs, events.select(list(_NOTIFY_COLUMNS)).to_pylist())
    con.register("_rg_due", due)
    try:
        rows = con.execute(f"SELECT {', '.join(_NOTIFY_COLUMNS)} FROM events JOIN _rg_due d USING (event_id)").fetchall()
    finally:
        con.unregister("_rg_due")
    return _due(ctx, pairs, [dict(zip(_NOTIFY_COLUMNS, r)) for r in rows])


def due_notifications_rows(ctx: "_Context", assessments: list[dict], events: list[dict]) -> list[tuple[dict, str, object, object]]:
    """:func:`due_notifications` for assessment rows (:func:`assess_rows`) of events given as dicts."""
    pairs = [(a["event_id"], a["notification"]) for a in assessments if a["notification"] is not None]
    return _due(ctx, pairs, events) if pairs else []


def _due(ctx: "_Context", pairs: list[tuple[str, str]], events: list[dict]) -> list[tuple[dict, str, object, object]]:
    from risk.config import template_for

    by_id = {e["event_id"]: e for e in events}
    out = []
    for event_id, name in pairs:
        if event_id not in by_id:  # not stored (the store path): nothing to address
            continue
        ev = {c: by_id[event_id][c] for c in _NOTIFY_COLUMNS}
        cfg, _ = ctx.config(_pool_of(ctx.con, ev["user_pool_id"]), ev["client_id"])
        ato = cfg.AccountTakeoverRiskConfiguration
        out.append((ev, name, template_for(cfg, name), ato.NotifyConfiguration if ato else None))
    return out


def _write(con, table: pa.Table, replace: bool = True, transaction: bool = True, *, reserve: bool = False,
           claimant: str | None = None, also: tuple[str, list] | None = None, prevented: bool = False) -> pa.Table:
    """Replace the assessments of these events (stored already), in one transaction that also applies the
    password resets they require (:func:`_apply_resets`, once per event).

    This is the one place notifications become due, and only from an event's first assessment: the decision
    actually taken about the sign-in (the service's answer, or the first batch scoring of an event ingested
    since). An event assessed again (``riskgate score --rescore``, perhaps under another mode, configuration or
    model) keeps the ``notification`` of the assessment it replaces; what the new decision would send is its
    ``would_notify`` (and a decision reason says it was not sent), and nothing is reserved for it: a rescore
    never emails a user about a sign-in decided before (an AUDIT-era sign-in, or one the service allowed,
    would otherwise get a "we blocked a sign-in" email about a sign-in that went through). Password resets
    likewise (:func:`_apply_resets`): an event assessed again keeps its first assessment's ``reset_required`` (a
    decision reason says when the new decision would have required one). Returns the first assessments among
    ``table`` (all of it with ``replace=False``).

    ``replace=False``: the caller knows they have none; ``transaction=False``: inside the caller's transaction.
    ``reserve``: the notifications the first assessments make due become pending rows in that transaction
    (``risk.notify.reserve``), claimed by ``claimant`` -- by default the service's (``risk.inline`` delivers
    everything it makes due); batch scoring reserves only with --notify. ``also``: one more statement (SQL and its
    parameters) in the same transaction (batch scoring: the run's count of events scored). ``prevented``: the
    blocked events were refused by the application (the inline service's answers), recorded as such
    (``risk.feedback.record_prevented``): they join no user's known history.
    """
    con.register("_rg_new_assessments", table)
    first, firsts = table, "_rg_new_assessments"  # the first assessments, and the name they are registered under
    try:
        if transaction:
            con.execute("BEGIN TRANSACTION")
        try:
            prior = con.sql(
                "DELETE FROM assessments WHERE event_id IN (SELECT event_id FROM _rg_new_assessments) "
                "RETURNING event_id, notification, reset_required, scored_at"
            ).to_arrow_table() if replace else None
            if prior is not None and prior.num_rows:
                con.register("_rg_prior_assessments", prior)
                try:
                    con.execute(_INSERT_AGAIN, [_AGAIN_REASON, _RESET_AGAIN_REASON]).fetchall()
                finally:
                    con.unregister("_rg_prior_assessments")
                first = table.filter(pc.invert(pc.is_in(table.column("event_id"),
                                                        value_set=prior.column("event_id"))))
                firsts = "_rg_first_assessments"
                con.register(firsts, first)
            else:
                con.execute(
                    "INSERT INTO assessments BY NAME SELECT * FROM _rg_new_assessments"
                ).fetchall()
            if pc.any(first.column("reset_required")).as_py():  # (an event assessed again keeps its first's)
                _apply_resets(con, firsts)
            if prevented and pc.any(table.column("blocked")).as_py():
                from risk import feedback

                feedback.record_prevented(con, "_rg_new_assessments", datetime.now(timezone.utc))
            if reserve and first.column("notification").null_count < first.num_rows:
                from risk import notify as rn

                rn.reserve(con, firsts, claimant or rn.service_claimant())
            if also is not None:
                con.execute(*also).fetchall()
            if transaction:
                con.execute("COMMIT")
        except BaseException:
            if transaction:
                ingest_store.rollback(con)  # (none left: an interrupt that hit COMMIT itself)
            raise
    finally:
        con.unregister("_rg_new_assessments")
        if firsts != "_rg_new_assessments":
            con.unregister(firsts)
    return first


#: the decision reason of an event assessed again whose new decision would send an email the first did not make
#: due (its template is appended): it is not sent (:func:`_write`)
_AGAIN_REASON = " not sent: assessed again; an email is due only from a sign-in's first assessment"
#: the new assessments (``_rg_new_assessments``) of events that had one (``_rg_prior_assessments``: event_id,
#: notification, reset_required, scored_at, as deleted): each keeps the notification and the reset required of its
#: first assessment (parameters: :data:`_AGAIN_REASON`, :data:`_RESET_AGAIN_REASON`)
#: the decision reason of an event assessed again whose new decision would require a password reset its first did not:
#: none is required (the sign-in was decided when it happened; the password may have changed since)
_RESET_AGAIN_REASON = ("password reset not required: assessed again; a reset is required only by a sign-in's first "
                       "assessment")
_INSERT_AGAIN = """INSERT INTO assessments BY NAME
    SELECT n.* REPLACE (
             p.notification AS notification,
             coalesce(p.reset_required, false) AS reset_required,
             list_concat(n.decision_reasons,
                         CASE WHEN n.notification IS NOT NULL AND n.notification IS DISTINCT FROM p.notification
                              THEN [n.notification || ?] ELSE [] END,
                         CASE WHEN n.reset_required AND NOT coalesce(p.reset_required, false)
                              THEN [?] ELSE [] END) AS decision_reasons)
    FROM _rg_new_assessments n
    JOIN (SELECT event_id, first(notification ORDER BY scored_at) AS notification,
                 first(reset_required ORDER BY scored_at) AS reset_required
          FROM _rg_prior_assessments GROUP BY event_id) p USING (event_id)
    UNION ALL BY NAME
    SELECT n.* FROM _rg_new_assessments n ANTI JOIN _rg_prior_assessments p USING (event_id)"""
