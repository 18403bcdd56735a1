"""Training data and training: labels, feedback, synthetic attacks injected into real histories, metrics.

Where labels come from (most specific wins)
    1. the data set's labels (table ``labels``, loaded by ingest): an event is
       an attack when its ``attack_type`` label names one or its
       ``is_account_takeover`` label is ``true``; legitimate when it has an
       ``is_account_takeover`` = ``false`` label and no attack type;
    2. feedback (``risk.feedback``; the feedback in force): ``Invalid`` =
       attack, ``Valid`` = legitimate; it overrides the data set;
    3. attacks injected into real users' histories, as Freeman et al. did
       (:func:`inject_attacks`): a real user's successful sign-in is taken,
       and a sign-in of the same user shortly after it is made up from another
       user's network and agent (a foreign country's for half of them, the
       victim's country for the other half); its features are computed
       point-in-time against the real store inside a transaction that is
       rolled back, so nothing injected stays in the store. The donor is
       never the victim; an injected sign-in after the training window's end
       is left out, so the window stays the real events'.
    Everything else is unlabelled (NaN): it still shapes the statistical score.

Metrics (:func:`evaluate`), on a held-out later period (the last ``holdout``
share of the training window, by time; the model is then refitted on the
whole window before it is saved): ROC AUC and PR AUC over labelled sign-ins,
Brier score over labelled events, and per attack type the true-positive rate
at the score that challenges 1 % of legitimate successful sign-ins.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from ingest import store as ingest_store
from ingest.schema import EVENT_COLUMNS, EVENT_SCHEMA
from risk.feedback import LABELS_IN_FORCE_SQL
from risk.model.errors import ModelError
from risk.model.estimators import FreemanBaseline, RiskModel
from risk.model.registry import ModelMetadata, model_kind, save_model
from risk.score import ProgressFn, chunk_bounds
from risk.signals import FEATURE_COLUMNS

#: The challenge rate at which true-positive rates are reported: share of legitimate successful sign-ins.
CHALLENGE_RATE = 0.01
#: attack_type of injected attacks.
INJECTED = ("injected_foreign", "injected_domestic")
#: An injected sign-in comes this long after the victim's real one (uniformly between the bounds).
INJECT_DELAY = (timedelta(minutes=5), timedelta(hours=12))
#: Victims are users with at least this many earlier successful sign-ins (a history to compare with).
INJECT_MIN_HISTORY = 3
#: Events per window of features when training (:func:`features_in_chunks`). ``python bench/train.py`` (5,000,000
#: events, ``riskgate train --no-labels``, 2026-11-27): features in one call 141.2 s and an 18.19 GiB peak; in
#: windows of 1,000,000 115.9 s and 5.72 GiB; of 500,000 137.4 s and 5.62 GiB (every window reads the history
#: before it again). Up to this many events it is one call, as before.
TRAIN_CHUNK_ROWS = 1_000_000


@dataclass
class TrainingSet:
    """Feature rows (keys + feature columns), their labels (1 / 0 / NaN) and attack types (None if none)."""

    features: pd.DataFrame
    y: np.ndarray
    attack_type: np.ndarray

    def __len__(self) -> int:
        return len(self.features)

    def select(self, mask: np.ndarray) -> TrainingSet:
        """Rows by boolean mask or by positions."""
        return TrainingSet(self.features.iloc[mask].reset_index(drop=True), self.y[mask], self.attack_type[mask])

    @staticmethod
    def concat(parts: list[TrainingSet]) -> TrainingSet:
        return TrainingSet(pd.concat([p.features for p in parts], ignore_index=True),
                           np.concatenate([p.y for p in parts]), np.concatenate([p.attack_type for p in parts]))


@dataclass
class TrainResult:
    model: RiskModel
    version: int | None
    metrics: dict
    kind: str
    rows: int  #: real events in the window (injected attacks not counted)
    labelled: dict = field(default_factory=dict)  #: labelled events the model learnt from, injected ones included
    injected: int = 0  #: injected attack sign-ins trained on (those inside the window)


# -- labels -----------------------------------------------------------------------


def load_labels(con) -> pd.DataFrame:
    """event_id, y (1 attack / 0 legitimate / NaN), attack_type, from the data set's labels and feedback."""
    return con.sql(LABELS_IN_FORCE_SQL).to_arrow_table().to_pandas()


def labelled(features: pa.Table | pd.DataFrame, labels: pd.DataFrame | None) -> TrainingSet:
    """Join feature rows with labels (None: all unknown)."""
    df = features.to_pandas() if isinstance(features, pa.Table) else features.reset_index(drop=True)
    if labels is None or len(labels) == 0:
        return TrainingSet(df, np.full(len(df), np.nan), np.full(len(df), None, dtype=object))
    m = df[["event_id"]].merge(labels, on="event_id", how="left")
    return TrainingSet(df, m["y"].to_numpy(dtype=float), m["attack_type"].to_numpy(dtype=object))


# -- injected attacks ----------------------------------------------------------------


_NETWORK_COLUMNS = (
    "ip_address", "http_headers", "encoded_data", "has_context_data", "user_agent_source", "rtt_ms",
    "source_country", "source_region", "source_city", "source_asn", "source_device_name", "client_ip",
    "client_ip_source", "ip_version", "ip_prefix", "user_agent", "browser_family", "browser_version", "os_family",
    "os_version", "device_type", "device_name", "device_fingerprint", "device_fingerprint_source", "country_iso",
    "country_name", "region", "city", "latitude", "longitude", "time_zone", "asn", "as_org", "geo_source",
)


def _injected_events(con, pairs: pd.DataFrame) -> pa.Table:
    """EVENT_SCHEMA rows: the victim's identity and time + delay, the donor's network and agent."""
    con.register("_rg_inject_pairs", pa.Table.from_pandas(pairs, preserve_index=False))
    try:
        cols = []
        for c in EVENT_COLUMNS:
            q = ingest_store.quote_ident(c)
            if c in _NETWORK_COLUMNS:
                cols.append(f"d.{q}")
            elif c == "event_id":
                cols.append("p.new_id AS event_id")
            elif c == "creation_date":
                cols.append("v.creation_date + to_microseconds(p.delay_us) AS creation_date")
            elif c == "event_type":
                cols.append("'SignIn' AS event_type")
            elif c == "event_response":
                cols.append("'Pass' AS event_response")
            elif c == "challenge_responses":
                cols.append("[{'challenge_name': 'Password', 'challenge_response': 'Success'}] AS challenge_responses")
            elif c == "source_format":
                cols.append("'injected' AS source_format")
            elif c == "source_file":
                cols.append("'riskgate train --inject-attacks' AS source_file")
            elif c == "source_line":
                cols.append("p.line AS source_line")
            elif c in ("extra", "compromised_credentials"):
                cols.append(f"NULL AS {q}")
            else:
                cols.append(f"v.{q}")
        table = con.sql(
            f"""SELECT {", ".join(cols)} FROM _rg_inject_pairs p
                JOIN events v ON v.event_id = p.victim_id JOIN events d ON d.event_id = p.donor_id
                ORDER BY p.line"""
        ).to_arrow_table()
    finally:
        con.unregister("_rg_inject_pairs")
    return table.cast(EVENT_SCHEMA)


def inject_attacks(con, n: int, victims: pd.DataFrame, *, seed: int = 0) -> TrainingSet:
    """Features of ``n`` attack sign-ins injected into the histories of real users (Freeman et al.).

    ``victims``: candidate real events (feature rows with keys); successful
    sign-ins of users with at least :data:`INJECT_MIN_HISTORY` earlier ones
    are used. Half the donors are from another country than the victim's
    event, half from the same country (the harder case). Features are
    computed by ``risk.features.compute_features`` against the real store in
    a transaction that is rolled back.
    """
    from risk.features import compute_features

    if n <= 0:
        return labelled(pd.DataFrame(columns=list(victims.columns)), None)
    cand = victims[(victims["event_type"] == "SignIn") & (victims["event_response"] == "Pass")
                   & (victims["history_size"].fillna(0) >= INJECT_MIN_HISTORY)]
    if len(cand) < 2:
        raise ModelError(f"cannot inject attacks: fewer than 2 successful sign-ins of users with "
                         f"{INJECT_MIN_HISTORY}+ earlier ones in the training window")
    rng = np.random.default_rng(seed)
    ids = cand["event_id"].to_numpy()
    con.register("_rg_inject_ids", pa.table({"event_id": pa.array(ids, pa.string())}))
    try:
        info = con.sql("SELECT e.event_id, e.username, e.country_iso FROM events e SEMI JOIN _rg_inject_ids USING (event_id)"
                       " WHERE e.client_ip IS NOT NULL").to_arrow_table().to_pandas()
    finally:
        con.unregister("_rg_inject_ids")
    if len(info) < 2:
        raise ModelError("cannot inject attacks: the candidate sign-ins carry no client IP")
    if info["username"].nunique() < 2:
        raise ModelError(f"cannot inject attacks: the candidate sign-ins are all of one user "
                         f"({info['username'].iloc[0]!r}); an injected attack takes its network and device from "
                         f"another user, so at least 2 users with {INJECT_MIN_HISTORY}+ earlier successful sign-ins "
                         "(and a client IP) are needed in the training window")
    victim_idx = rng.choice(len(info), n, replace=len(info) < n)
    country = info["country_iso"].fillna("?").to_numpy()
    users = info["username"].to_numpy()
    donors = np.empty(n, dtype=np.int64)
    kinds = np.empty(n, dtype=object)
    by_country = pd.Series(np.arange(len(info))).groupby(country).apply(np.asarray).to_dict()
    for k, v in enumerate(victim_idx):  # n draws, not rows of the store
        foreign = k % 2 == 0
        pool = np.where(country != country[v])[0] if foreign else by_country.get(country[v], np.arange(len(info)))
        for _ in range(20):
            d = int(pool[rng.integers(len(pool))]) if len(pool) else int(rng.integers(len(info)))
            if users[d] != users[v]:
                break
        if users[d] == users[v]:  # the pool is (nearly) all the victim's own: never the victim's own sign-in
            others = pool[users[pool] != users[v]] if len(pool) else pool
            if not len(others):
                others = np.flatnonzero(users != users[v])
            # a generator of its own, so that the draws of every other attack stay as they were
            d = int(others[np.random.default_rng(None if seed is None else [seed, k]).integers(len(others))])
        donors[k] = d
        kinds[k] = INJECTED[0] if foreign and country[d] != country[v] else INJECTED[1]
    lo, hi = (int(d.total_seconds() * 1e6) for d in INJECT_DELAY)
    pairs = pd.DataFrame({
        "victim_id": info["event_id"].to_numpy()[victim_idx],
        "donor_id": info["event_id"].to_numpy()[donors],
        "new_id": [f"injected-{uuid.UUID(int=int(rng.integers(2**63)) << 64 | k)}" for k in range(n)],
        "delay_us": rng.integers(lo, hi, n),
        "line": np.arange(1, n + 1),
    })
    events = _injected_events(con, pairs)
    con.execute("BEGIN TRANSACTION")
    try:
        ingest_store.insert_events(con, events, run_id="riskgate-train-injection")
        feats = compute_features(con, event_ids=pairs["new_id"].tolist())
    finally:
        con.execute("ROLLBACK")
    df = feats.to_pandas()
    kind_of = dict(zip(pairs["new_id"], kinds))
    return TrainingSet(df, np.ones(len(df)), df["event_id"].map(kind_of).to_numpy(dtype=object))


_inject = inject_attacks  # train()'s parameter of the same name shadows the function


# -- metrics ---------------------------------------------------------------------------


def tpr_at_challenge_rate(scores_pos: np.ndarray, scores_legit: np.ndarray, rate: float = CHALLENGE_RATE) -> float:
    """Share of ``scores_pos`` at or above the threshold challenging at most ``rate`` of ``scores_legit``.

    The threshold is the smallest score with at most ``rate`` of the legitimate
    scores at or above it (ties count against the model).
    """
    if len(scores_pos) == 0 or len(scores_legit) == 0:
        return float("nan")
    legit = np.sort(scores_legit)[::-1]
    k = int(np.floor(rate * len(legit)))  # legitimate events we may challenge
    # the threshold must be above the (k+1)-th highest legitimate score
    bar = legit[k] if k < len(legit) else -np.inf
    return float(np.mean(scores_pos > bar))


def evaluate(scores: np.ndarray, ts: TrainingSet, rate: float = CHALLENGE_RATE) -> dict:
    """ROC AUC, PR AUC (labelled sign-ins), Brier (labelled events), TPR at ``rate`` per attack type."""
    f = ts.features
    known = ~np.isnan(ts.y)
    signin = (f["event_type"] == "SignIn").to_numpy()
    legit_ok = known & (ts.y == 0) & signin & (f["event_response"] == "Pass").to_numpy()
    out: dict = {"events": int(len(ts)), "labelled": int(known.sum()), "attacks": int((ts.y == 1).sum()),
                 "challenge_rate": rate}
    m = known & signin
    if m.any() and len(np.unique(ts.y[m])) == 2:
        out["roc_auc"] = float(roc_auc_score(ts.y[m], scores[m]))
        out["pr_auc"] = float(average_precision_score(ts.y[m], scores[m]))
    if known.any() and len(np.unique(ts.y[known])) == 2:
        out["brier"] = float(brier_score_loss(ts.y[known], np.clip(scores[known], 0, 1)))
    per_type = {}
    for t in sorted({a for a in ts.attack_type[ts.y == 1] if a is not None}):
        pos = (ts.attack_type == t) & signin & (ts.y == 1)
        if not pos.any():
            continue
        tpr = tpr_at_challenge_rate(scores[pos], scores[legit_ok], rate)
        # no legitimate successful sign-in, no threshold: null (JSON has no NaN), never NaN
        entry = {"events": int(pos.sum()), "tpr": None if np.isnan(tpr) else tpr}
        if legit_ok.any():
            yy = np.r_[np.ones(pos.sum()), np.zeros(legit_ok.sum())]
            entry["roc_auc"] = float(roc_auc_score(yy, np.r_[scores[pos], scores[legit_ok]]))
        per_type[t] = entry
    if per_type:
        out["per_attack_type"] = per_type
    return out


# -- training -----------------------------------------------------------------------------


def _split_by_time(ts: TrainingSet, holdout: float) -> tuple[TrainingSet, TrainingSet]:
    t = pd.to_datetime(ts.features["creation_date"], utc=True)
    cut = t.quantile(1 - holdout)
    early = (t < cut).to_numpy()
    return ts.select(early), ts.select(~early)


def _feature_columns(df: pd.DataFrame) -> list[str]:
    """The model's inputs: exactly risk.signals.FEATURE_COLUMNS (an error naming any that is missing)."""
    missing = [c for c in FEATURE_COLUMNS if c not in df.columns]
    if missing:
        raise ModelError(f"the feature rows lack the column(s) {', '.join(missing)}")
    return list(FEATURE_COLUMNS)


def features_in_chunks(con, *, since: datetime | None = None, until: datetime | None = None,
                       chunk_rows: int = TRAIN_CHUNK_ROWS, progress: ProgressFn | None = None) -> pa.Table:
    """``compute_features(con, since=, until=)``, computed over consecutive time windows of about ``chunk_rows``
    events (``risk.score.chunk_bounds``) and put together: the same rows and values (features are point in
    time), with DuckDB's working memory bounded by the window instead of growing with the store (training on
    5,000,000 events peaked at 18.19 GiB in one call, 5.72 GiB in windows: :data:`TRAIN_CHUNK_ROWS`).
    ``progress(done, total)`` after each window. Every window reads the history before it again, so windows
    much smaller than the default cost time; the parts of it that are the same for every window are computed
    once when that pays (``risk.features.SharedHistory``)."""
    from risk.features import SharedHistory, compute_features, worth_sharing

    if chunk_rows < 1:
        raise ModelError(f"chunk_rows must be at least 1, got {chunk_rows!r}")
    bounds, total = chunk_bounds(con, since, until, rescore=True, chunk_rows=chunk_rows)
    shared = SharedHistory(con) if worth_sharing(con, [lo for lo, _hi in bounds]) else None
    parts = []
    for lo, hi in bounds:
        parts.append(compute_features(con, since=lo, until=hi, shared=shared))
        if progress:
            progress(sum(p.num_rows for p in parts), total)
    return pa.concat_tables(parts) if parts else compute_features(con, since=since, until=until)


def train(con, *, since: datetime | None = None, until: datetime | None = None, use_labels: bool = True,
          inject_attacks: int = 0, holdout: float = 0.2, params: dict | None = None, seed: int = 0,
          save: bool = True, chunk_rows: int = TRAIN_CHUNK_ROWS, progress: ProgressFn | None = None
          ) -> TrainResult:
    """Fit a RiskModel on the store's events in [since, until), evaluate it on the later ``holdout``, refit, save.

    Labels from the data set and feedback are used when ``use_labels``
    (evaluation uses them whenever they exist); ``inject_attacks`` synthetic
    attacks are added to both parts in proportion (those after the window's end left out). Returns the model,
    its registry version and the metrics (of the model fitted on the earlier part, on the later part, its mode
    under ``holdout_mode``; the Freeman baseline's under ``baseline``; ``holdout_too_small`` with the parts'
    sizes when one is under 10 events), the real events' count and the injected attacks' apart. The
    features are computed ``chunk_rows`` events at a time (:func:`features_in_chunks`,
    which reports to ``progress``).
    """
    if not 0 < holdout < 1:
        raise ModelError(f"holdout must be a fraction between 0 and 1, got {holdout!r}")
    if inject_attacks < 0:
        raise ModelError(f"--inject-attacks must be 0 or more, got {inject_attacks!r}")
    feats = features_in_chunks(con, since=since, until=until, chunk_rows=chunk_rows, progress=progress)
    if feats.num_rows < 10:
        bounds = ([] if since is None else [f"at or after {since.isoformat()}"]) + (
            [] if until is None else [f"before {until.isoformat()}"])
        raise ModelError(f"too few events to train on: {feats.num_rows} {' and '.join(bounds) or 'in the store'}, "
                         "at least 10 are needed; ingest events first"
                         + (" or widen --since/--until" if bounds else ""))
    full = labelled(feats, load_labels(con))
    del feats  # pandas holds the features now; the table's memory goes back with the rest (below)
    with _memory_given_back(con):
        return _fit_and_save(con, full, since=since, until=until, use_labels=use_labels,
                             inject_attacks=inject_attacks, holdout=holdout, params=params, seed=seed, save=save)


@contextmanager
def _memory_given_back(con) -> Iterator[None]:
    """DuckDB's allocator gives the memory the feature queries freed back to the system while the models fit
    (its background threads purge it; without them it keeps it for its next queries: after the features of
    1,000,000 events the process held 1.49 GiB, two seconds after this 0.66 GiB; training on 5,000,000 peaked
    at 8.21 GiB without it, 5.65 GiB with it), then is as it was."""
    was = con.execute("SELECT current_setting('allocator_background_threads')").fetchall()[0][0]
    con.execute("SET allocator_background_threads = true")
    try:
        yield
    finally:
        con.execute(f"SET allocator_background_threads = {'true' if was else 'false'}")


def _fit_and_save(con, full: TrainingSet, *, since, until, use_labels, inject_attacks, holdout, params, seed,
                  save) -> TrainResult:
    # the training window is the real events' window: [since, until), else their first and last times
    t = pd.to_datetime(full.features["creation_date"], utc=True)
    window = (since or t.min().to_pydatetime(), until or t.max().to_pydatetime())
    rows = len(full)
    injected = 0
    if inject_attacks:
        inj = _inject(con, inject_attacks, full.features, seed=seed)
        # an injected sign-in comes up to INJECT_DELAY after its victim's: one past the window's end is left out
        # (after --until it would be trained on events the window excludes; past the last event it would stretch
        # the recorded window)
        when = pd.to_datetime(inj.features["creation_date"], utc=True)
        end = pd.Timestamp(until) if until is not None else t.max()
        if end.tzinfo is None:
            end = end.tz_localize("UTC")
        inj = inj.select(((when < end) if until is not None else (when <= end)).to_numpy())
        injected = len(inj)
        full = TrainingSet.concat([full, inj])
        order = np.argsort(pd.to_datetime(full.features["creation_date"], utc=True).to_numpy(), kind="stable")
        full = full.select(order)
    cols = _feature_columns(full.features)
    params = {"random_state": seed, **(params or {})}

    def fit(ts: TrainingSet) -> RiskModel:
        y = ts.y if use_labels else None
        return RiskModel(**params).fit(ts.features[cols], y)

    metrics: dict = {}
    if (~np.isnan(full.y)).any():
        early, late = _split_by_time(full, holdout)
        since_late = str(pd.to_datetime(late.features["creation_date"], utc=True).min()) if len(late) else None
        if len(early) >= 10 and len(late) >= 10:
            m = fit(early)
            metrics = evaluate(m.score_samples(late.features[cols]), late)
            # the model evaluated is the one fitted on the earlier part: its mode may not be the final model's
            metrics["holdout_mode"] = m.mode_
            metrics["holdout_labels"] = dict(m.n_labels_)
            if m.fallback_:
                metrics["holdout_fallback"] = m.fallback_
            base = FreemanBaseline().fit(early.features)
            metrics["baseline"] = evaluate(base.score_samples(late.features), late)
            metrics["holdout_since"] = since_late
        else:  # labels, but a part too small to fit on or to evaluate on
            metrics["holdout_too_small"] = {"earlier_events": len(early), "held_out_events": len(late),
                                            "holdout_since": since_late}
    model = fit(full)
    metrics["mode"] = model.mode_
    if model.fallback_:
        metrics["fallback"] = model.fallback_
    version = None
    if save:
        meta = ModelMetadata(
            train_since=window[0], train_until=window[1], metrics=metrics,
            extra={"rows": rows, "labels": model.n_labels_, "use_labels": use_labels,
                   "injected_attacks": int(inject_attacks), "injected_rows": injected,
                   "params": {k: v for k, v in params.items()}})
        version = save_model(con, model, meta)
    return TrainResult(model=model, version=version, metrics=metrics, kind=model_kind(model), rows=rows,
                       labelled=model.n_labels_, injected=injected)
