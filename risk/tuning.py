"""Choosing thresholds from evidence: trade-offs, curves, what-if, and tuning against stated targets.

Everything here works on the stored history of assessed sign-ins: their
scores (``assessments``), labels (the data set's ``labels`` and feedback, the
same as ``riskgate train`` uses, ``risk.model.training.load_labels``), and
what the decision function (``risk.decide``) does with a level for each event
under a configuration: the user's MFA state, the event type, IP-range
exceptions and compromised credentials all count, exactly as in scoring.

* ``tradeoff``: per level, the share of legitimate sign-ins at or above it and
  the attacks caught by type, with Wilson confidence intervals, and what the
  configuration then does (challenged / blocked shares).
* ``curves``: ROC and precision-recall curves of the score.
* ``whatif``: what a proposed configuration and thresholds would do to the
  stored history: blocked, challenged, allowed, split by label, the user's MFA
  state, event type and attack type.
* ``tune``: the lowest (most protective) thresholds that meet the targets.

Outcomes are evaluated as ENFORCED mode would act (in AUDIT they are what
would have happened); the current mode is reported beside them. Tuning
changes thresholds only, never the model (ARCHITECTURE.md).

"Legitimate" means labelled legitimate. When the history has no legitimate
labels at all (a data set that labels only attacks), unlabelled sign-ins are
taken as legitimate, and every result says so in its warnings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from ingest.errors import RiskgateError, counted
from ingest.users import MFA_KINDS, has_mfa_configured_sql, users_by_pool_sql
from risk import combos
from risk.feedback import LABELS_IN_FORCE_SQL
from risk.levels import LEVELS, Thresholds, level_index
from risk.config import unpooled_pool
from risk.score import _pool_of, check_period

#: Outcome codes, in order of severity.
OUTCOMES = ("Allow", "MfaChallenge", "Block")
_LEVEL_INDEX = (None, "Low", "Medium", "High")  # position = severity index
CONFIDENCE = 0.95
#: Fewer attacks of a type than this: its catch rate is shown with a warning.
MIN_ATTACKS_PER_TYPE = 20
#: A share target is estimated from fewer than this many legitimate sign-ins at the limit: warn.
MIN_EVENTS_AT_LIMIT = 10


class TuningError(RiskgateError):
    """Tuning or a what-if that cannot be computed (no assessed events, bad targets)."""


# -- the history ------------------------------------------------------------------------------

#: each field of the history: its SQL over the events (e), assessments (a), users (u) and labels in force (lab)
_HISTORY_FIELDS = {
    **{c: f"e.{c}" for c in ("event_id", "username", "user_pool_id", "client_id", "event_type", "event_response",
                             "creation_date", "client_ip", "compromised_credentials")},
    **{c: f"a.{c}" for c in ("score", "risk_level", "outcome", "model_version")},
    "has_mfa": has_mfa_configured_sql("$kinds", "u"),  # the user's row, or none: no MFA
    "y": "lab.y",
    "attack_type": "lab.attack_type",
}


def _history_sql(columns: Sequence[str]) -> str:
    """``columns`` of the assessed events with the user's MFA state and the label in force
    (``risk.feedback.LABELS_IN_FORCE_SQL``, which training uses too: feedback outranks the data set's
    labels)."""
    unknown = [c for c in columns if c not in _HISTORY_FIELDS]
    if unknown:
        raise TuningError(f"no column {', '.join(map(repr, unknown))} in the history; "
                          f"it has {', '.join(_HISTORY_FIELDS)}")
    # the user's row (for MFA): a username is one user per pool (ingest.users.users_by_pool_sql)
    users = (f"LEFT JOIN {users_by_pool_sql('$unpooled')} u ON u.username = e.username "
             "AND u.pool IS NOT DISTINCT FROM coalesce(e.user_pool_id, $unpooled)") if "has_mfa" in columns else ""
    return f"""
WITH lab AS ({LABELS_IN_FORCE_SQL})
SELECT {", ".join(f"{_HISTORY_FIELDS[c]} AS {c}" for c in columns)}
FROM events e
JOIN assessments a USING (event_id)
{users}
LEFT JOIN lab ON lab.event_id = e.event_id
WHERE ($since IS NULL OR e.creation_date >= $since)
  AND ($until IS NULL OR e.creation_date < $until)
"""


#: what tuning and what-if read of each sign-in (``History.df``)
HISTORY_COLUMNS = ("user_pool_id", "client_id", "event_type", "client_ip", "compromised_credentials", "score",
                   "has_mfa", "y", "attack_type", "model_version")


def labelled_scores(con, *, since: datetime | None = None, until: datetime | None = None,
                    columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per assessed sign-in in [since, until): event and user fields, ``score``, the stored level
    and outcome, ``has_mfa``, ``y`` (1 attack, 0 legitimate, NaN unknown) and ``attack_type``; only
    ``columns`` of them when given (the query then reads only what they need)."""
    columns = list(_HISTORY_FIELDS) if columns is None else list(columns)
    params = {"since": since, "until": until,
              **({"kinds": list(MFA_KINDS), "unpooled": unpooled_pool(con)} if "has_mfa" in columns else {})}
    df = con.sql(_history_sql(columns), params=params).to_arrow_table().to_pandas()
    for name, typ in (("score", float), ("y", float), ("has_mfa", bool)):
        if name in df:
            df[name] = df[name].astype(typ)
    return df


@dataclass
class History:
    df: pd.DataFrame
    legit: np.ndarray  # bool mask
    attack: np.ndarray  # bool mask
    warnings: list[str] = field(default_factory=list)
    #: a warning when the scores are not all the active model's (``scoring_models_warning``), else None
    model_warning: str | None = None

    @property
    def scores(self) -> np.ndarray:
        return self.df["score"].to_numpy(dtype=float)


def scoring_models(con, *, since: datetime | None = None, until: datetime | None = None) -> dict[int | None, int]:
    """How many assessed sign-ins of [since, until) each model version scored (None: not recorded)."""
    rows = con.sql(
        """SELECT a.model_version, count(*) FROM events e JOIN assessments a USING (event_id)
           WHERE ($since IS NULL OR e.creation_date >= $since) AND ($until IS NULL OR e.creation_date < $until)
           GROUP BY 1""",
        params={"since": since, "until": until},
    ).fetchall()
    return {None if v is None else int(v): int(n) for v, n in rows}


def scoring_models_warning(models: dict[int | None, int], active: int | None) -> str | None:
    """Why thresholds fitted to this history would not fit the active model's scores, or None when every
    sign-in was scored by the active model (or nothing records a model at all, with none active)."""
    if not models or set(models) == {active}:
        return None
    name = lambda v: f"model v{v}" if v is not None else "an unrecorded model"  # noqa: E731
    scored = ", ".join(f"{name(v)}: {counted(n, 'sign-in')}"
                       for v, n in sorted(models.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))
    what = f"several models ({scored})" if len(models) > 1 else f"{name(next(iter(models)))}"
    active_text = f"the active model is v{active}" if active is not None else "no model is active"
    return (f"the history was scored by {what}, but {active_text}: its thresholds would not fit the active "
            "model's scores; run `riskgate score --rescore` over the period first")


def history(con, since: datetime | None = None, until: datetime | None = None) -> History:
    """The assessed history of [since, until) with its labels in force (legitimate / attack masks and warnings,
    among them ``model_warning`` when the scores are not all the active model's, and one when events of the
    period are not yet assessed: the history leaves them out)."""
    from risk.model.registry import active_version
    from risk.report import assessed_counts

    check_period(since, until)
    df = labelled_scores(con, since=since, until=until, columns=HISTORY_COLUMNS)
    unscored = assessed_counts(con, since=since, until=until)[1]  # events the history leaves out
    if len(df) == 0:
        raise TuningError("no assessed sign-ins in the period: " + (
            f"{counted(unscored, 'event')} not yet assessed, run `riskgate score` first" if unscored else
            "the store holds no events in it" if since is not None or until is not None else
            "the store holds no events (`riskgate ingest`)"))
    # which model scored them, from the rows read (what ``scoring_models`` counts, without a second scan)
    versions = df["model_version"]
    models = {(None if pd.isna(v) else int(v)): int(n) for v, n in versions.value_counts(dropna=False).items()}
    model_warning = scoring_models_warning(models, active_version(con))
    y = df["y"].to_numpy(dtype=float)
    attack = y == 1
    legit = y == 0
    warnings = [model_warning] if model_warning else []
    if unscored:  # as report and export say it: what is left out, and how to bring it in
        warnings.append(f"{counted(unscored, 'event')} in the period not yet assessed, not in the history: "
                        "run `riskgate score` first")
    if not legit.any():
        legit = ~attack
        warnings.append(f"no sign-in is labelled legitimate: the {int(legit.sum()):,} unlabelled ones are taken as legitimate")
    if not attack.any():
        warnings.append("no sign-in is labelled an attack: attacks caught cannot be measured")
    elif attack.sum() < 30:
        warnings.append(f"only {counted(int(attack.sum()), 'labelled attack')}: rates are rough, see the intervals")
    return History(df, legit, attack, warnings, model_warning)


# -- statistics ---------------------------------------------------------------------------------


def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Wilson score interval of k successes in n trials (None when n == 0)."""
    if n <= 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def _rate(k: int, n: int) -> dict:
    return {"count": int(k), "of": int(n), "rate": (k / n) if n else None, "ci": wilson(k, n)}


# -- outcomes under a configuration ------------------------------------------------------------


class Outcomes:
    """For every event, the outcome (0 Allow, 1 MfaChallenge, 2 Block) at each level (no risk, Low, Medium, High).

    ``decide`` runs once per distinct combination of its inputs; evaluating
    thresholds is then a vectorised look-up.
    """

    def __init__(self, con, df: pd.DataFrame, proposal=None):
        from risk import config as rc
        from risk.decide import decide
        from risk.exceptions import IPRangeExceptions

        pool, pools = combos.pool_codes(df["user_pool_id"], lambda p: _pool_of(con, p))
        client, clients = combos.factorize(df["client_id"])
        cfgs: dict = {}

        def config_for(pool_id, client_id):
            key = (pool_id, client_id)
            if key not in cfgs:
                cfg = (rc.resolve(con, pool_id, client_id)[0] if proposal is None
                       else rc.resolve_proposed(con, pool_id, client_id, proposal))
                cfgs[key] = (cfg, IPRangeExceptions.from_configuration(cfg))
            return cfgs[key]

        exc = combos.exception_codes(df["client_ip"], pool, pools, client, clients, lambda p, c: config_for(p, c)[1])
        # decide() once per distinct combination of its inputs (risk.combos: codes, not a Python loop per event)
        compromised, compromised_values = combos.factorize(df["compromised_credentials"])
        event_type, event_types = combos.factorize(df["event_type"])
        mfa = df["has_mfa"].to_numpy(dtype=bool).astype(np.int64)
        group, firsts = combos.combinations((exc, len(combos.EXCEPTION_NAMES)), (compromised, len(compromised_values)),
                                            (event_type, len(event_types)), (pool, len(pools)),
                                            (client, len(clients)), (mfa, 2))
        code = {o: i for i, o in enumerate(OUTCOMES)}
        table = np.zeros((len(firsts), len(_LEVEL_INDEX)), dtype=np.int8)
        for g, i in enumerate(firsts.tolist()):
            cfg, _ranges = config_for(pools[pool[i]], clients[client[i]])
            table[g] = [code[str(decide(risk_level=level, exception=combos.EXCEPTION_NAMES[exc[i]],
                                        compromised=compromised_values[compromised[i]],
                                        event_type=event_types[event_type[i]], configuration=cfg, mode="ENFORCED",
                                        user_has_mfa=bool(mfa[i])).outcome)]
                        for level in _LEVEL_INDEX]
        self.by_level = table[group]  # (0, 4) for no events too
        self.configs = cfgs

    @property
    def baseline(self) -> np.ndarray:
        """The outcome of each event with no risk level (what the thresholds cannot change)."""
        return self.by_level[:, 0]

    def at(self, scores: np.ndarray, t: Thresholds) -> np.ndarray:
        idx = level_index(scores, t)
        return self.by_level[np.arange(len(idx)), idx]


# -- trade-off ------------------------------------------------------------------------------------


def outcome_summary(h: History, outcome: np.ndarray, baseline: np.ndarray) -> dict:
    """Shares of what the decision does. ``baseline`` is the outcome each event gets with no risk level:
    users with MFA of their own are challenged and blocked IP ranges blocked whatever the thresholds, so
    ``legitimate_challenged`` / ``legitimate_blocked`` and ``precision`` count what the risk level adds;
    the ``*_total`` ones count everything."""
    nl, na = int(h.legit.sum()), int(h.attack.sum())
    by_risk = outcome > baseline
    out = {
        "legitimate_challenged_or_blocked": _rate(int((by_risk & h.legit).sum()), nl),
        "legitimate_challenged": _rate(int(((outcome == 1) & by_risk & h.legit).sum()), nl),
        "legitimate_blocked": _rate(int(((outcome == 2) & by_risk & h.legit).sum()), nl),
        "legitimate_challenged_total": _rate(int(((outcome == 1) & h.legit).sum()), nl),
        "legitimate_blocked_total": _rate(int(((outcome == 2) & h.legit).sum()), nl),
        "attacks_stopped": _rate(int(((outcome >= 1) & h.attack).sum()), na),
        "attacks_blocked": _rate(int(((outcome == 2) & h.attack).sum()), na),
    }
    labelled_acted = int((by_risk & (h.legit | h.attack)).sum())
    out["precision"] = _rate(int((by_risk & h.attack).sum()), labelled_acted)
    types = h.df["attack_type"].to_numpy(dtype=object)
    out["attacks_stopped_by_type"] = {
        str(t): _rate(int(((outcome >= 1) & h.attack & (types == t)).sum()), int((h.attack & (types == t)).sum()))
        for t in sorted({x for x in types[h.attack] if x is not None})
    }
    return out


def _level_rows(h: History, t: Thresholds, configs: dict) -> list[dict]:
    scores = h.scores
    types = h.df["attack_type"].to_numpy(dtype=object)
    nl, na = int(h.legit.sum()), int(h.attack.sum())
    rows = []
    actions = {}
    for (_pool, _client), (cfg, _r) in configs.items():
        for level in LEVELS:
            a = cfg.action_for(level)
            actions.setdefault(level, set()).add(str(a.EventAction) if a else "none")
    for level in LEVELS:
        at = scores >= getattr(t, level.lower())
        rows.append({
            "level": level,
            "threshold": getattr(t, level.lower()),
            "actions": sorted(actions.get(level, {"none"})),
            "legitimate_at_or_above": _rate(int((at & h.legit).sum()), nl),
            "attacks_at_or_above": _rate(int((at & h.attack).sum()), na),
            "precision": _rate(int((at & h.attack).sum()), int((at & (h.legit | h.attack)).sum())),
            "attacks_by_type": {
                str(k): _rate(int((at & h.attack & (types == k)).sum()), int((h.attack & (types == k)).sum()))
                for k in sorted({x for x in types[h.attack] if x is not None})
            },
        })
    return rows


def _type_warnings(h: History) -> list[str]:
    types = h.df["attack_type"].to_numpy(dtype=object)[h.attack]
    out = []
    for k, n in sorted(pd.Series(types).value_counts().items()):
        if n < MIN_ATTACKS_PER_TYPE:
            out.append(f"only {counted(int(n), 'labelled attack')} of type {k}: too few to trust its catch rate")
    return out


def tradeoff(con, thresholds: Thresholds | None = None, *, since: datetime | None = None,
             until: datetime | None = None, config=None) -> dict:
    """The trade-off of ``thresholds`` (default: those in force) on the stored history.

    Returns ``{"thresholds", "events", "legitimate", "attacks", "levels": [per level: threshold, actions,
    legitimate_at_or_above, attacks_at_or_above, precision, attacks_by_type], "outcomes": {legitimate_challenged,
    legitimate_blocked, attacks_stopped, attacks_blocked, precision, attacks_stopped_by_type}, "warnings"}``;
    every rate is ``{"count", "of", "rate", "ci": [low, high] (95 % Wilson) or None}``.
    """
    from risk import levels

    t = thresholds or levels.current_thresholds(con)[0]
    h = history(con, since, until)
    return tradeoff_of(h, Outcomes(con, h.df, config), t)


def tradeoff_of(h: "History", oc: "Outcomes", t: Thresholds, outcome: np.ndarray | None = None) -> dict:
    """``tradeoff`` on a history already read (``outcome``: the outcomes at ``t``, when already evaluated)."""
    return {
        "thresholds": t.to_dict(),
        "events": len(h.df),
        "legitimate": int(h.legit.sum()),
        "attacks": int(h.attack.sum()),
        "levels": _level_rows(h, t, oc.configs),
        "outcomes": outcome_summary(h, oc.at(h.scores, t) if outcome is None else outcome, oc.baseline),
        "warnings": h.warnings + _type_warnings(h),
    }


# -- curves ----------------------------------------------------------------------------------------


@dataclass
class Curves:
    fpr: np.ndarray
    tpr: np.ndarray
    roc_thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    pr_thresholds: np.ndarray
    roc_auc: float | None
    average_precision: float | None
    legitimate: int
    attacks: int
    warnings: list[str]


def curves(con, *, since: datetime | None = None, until: datetime | None = None) -> Curves:
    """ROC and precision-recall curves of the score over the labelled (or taken-as-legitimate) history."""
    return curves_of(history(con, since, until))


def curves_of(h: "History") -> Curves:
    """``curves`` on a history already read."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    keep = h.legit | h.attack
    y = h.attack[keep].astype(int)
    s = h.scores[keep]
    if y.min(initial=1) == y.max(initial=0):
        raise TuningError("curves need both legitimate and attack sign-ins in the labelled history")
    fpr, tpr, rt = roc_curve(y, s)
    p, r, pt = precision_recall_curve(y, s)
    return Curves(fpr, tpr, rt, p, r, pt, float(roc_auc_score(y, s)), float(average_precision_score(y, s)),
                  int(h.legit.sum()), int(h.attack.sum()), h.warnings)


# -- what-if ------------------------------------------------------------------------------------------


def outcome_counts(outcome: np.ndarray, mask: np.ndarray) -> dict:
    n = int(mask.sum())
    c = np.bincount(outcome[mask], minlength=3)
    return {"total": n, **{name: int(c[i]) for i, name in enumerate(OUTCOMES)},
            "share": {name: (int(c[i]) / n if n else None) for i, name in enumerate(OUTCOMES)}}


def whatif(con, config=None, thresholds: Thresholds | None = None, *, since: datetime | None = None,
           until: datetime | None = None) -> dict:
    """What ``config`` (a ``risk.config.RiskConfiguration``; None: those in force) and ``thresholds`` (None:
    those in force) would do to the stored history, against what the ones in force do.

    ``config`` is evaluated as ``riskgate config set`` would store it (``risk.config.resolve_proposed``): one
    naming a UserPoolId (and ClientId) applies to that pool's (client's) sign-ins only, one naming none to
    every pool's; a client with a configuration of its own keeps it under a pool-level one; ids only reset. Returns counts of Allow / MfaChallenge / Block overall and split
    ``by_label`` (attack, legitimate, unlabelled), ``by_mfa`` (with MFA, without MFA), ``by_event_type``,
    ``by_attack_type``, the same overall for the settings in force (``current``) and ``changed`` (sign-ins
    whose outcome differs).
    """
    from risk import levels

    current_t, current_v = levels.current_thresholds(con)
    t = thresholds or current_t
    h = history(con, since, until)
    proposed = Outcomes(con, h.df, config)
    now = proposed if config is None else Outcomes(con, h.df, None)
    scores = h.scores
    out_new = proposed.at(scores, t)
    out_now = now.at(scores, current_t)
    all_rows = np.ones(len(scores), dtype=bool)
    mfa = h.df["has_mfa"].to_numpy(dtype=bool)
    types = h.df["event_type"].to_numpy(dtype=object)
    atypes = h.df["attack_type"].to_numpy(dtype=object)
    return {
        "thresholds": t.to_dict(),
        "current_thresholds": {**current_t.to_dict(), "version": current_v},
        "configuration": "proposed" if config is not None else "in force",
        "modes": modes_of(con, proposed.configs),
        "events": len(scores),
        "outcomes": outcome_counts(out_new, all_rows),
        "current": outcome_counts(out_now, all_rows),
        "changed": int((out_new != out_now).sum()),
        "by_label": by_label(h, out_new),
        "by_mfa": {"with MFA": outcome_counts(out_new, mfa), "without MFA": outcome_counts(out_new, ~mfa)},
        "by_event_type": {str(k): outcome_counts(out_new, types == k) for k in sorted({str(x) for x in types})},
        "by_attack_type": {str(k): outcome_counts(out_new, h.attack & (atypes == k))
                           for k in sorted({x for x in atypes[h.attack] if x is not None})},
        "warnings": h.warnings + _type_warnings(h) + _scope_warnings(config, proposed.configs, len(scores)),
    }


def _scope_warnings(config, configs: dict, events: int) -> list[str]:
    """A proposal naming a pool / client that none of the assessed sign-ins belongs to changes nothing: say so
    (``configs``: the (pool, client) pairs of the history, as ``Outcomes`` resolved them)."""
    if config is None or (config.UserPoolId is None and config.ClientId is None):
        return []
    if any(config.UserPoolId in (None, pool) and config.ClientId in (None, client) for pool, client in configs):
        return []
    names = " / ".join(f"{k} {v}" for k, v in (("UserPoolId", config.UserPoolId), ("ClientId", config.ClientId))
                       if v is not None)
    return [f"the proposed configuration's {names} matches none of the {counted(events, 'assessed sign-in')}: "
            "it changes nothing here (check the ids, or the period)"]


def by_label(h: History, outcome: np.ndarray) -> dict:
    """Outcome counts of the attacks, the legitimate sign-ins (labelled ones when there are any) and, beside
    labelled ones, the unlabelled."""
    y = h.df["y"].to_numpy(dtype=float)
    labelled_any = bool((y == 0).any())
    out = {"attack": outcome_counts(outcome, h.attack),
           "legitimate": outcome_counts(outcome, y == 0 if labelled_any else h.legit)}
    if labelled_any and np.isnan(y).any():
        out["unlabelled"] = outcome_counts(outcome, np.isnan(y))
    return out


def modes_of(con, configs) -> list[str]:
    """"pool: mode" of each pool among the (pool, client) configurations of an ``Outcomes``."""
    from risk import config as rc

    return sorted({f"{p}: {rc.get_mode(con, p)[0]}" for p in {k[0] for k in configs}})


# -- tuning -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Targets:
    """What the thresholds must respect; every target is optional, at least one is required.

    ``max_challenged`` / ``max_blocked``: shares of legitimate sign-ins the decision would
    challenge with MFA or block (``max_challenged``: any friction) / block, because of their risk level (not those challenged anyway, having
    MFA of their own, or blocked anyway, from a blocked IP range); ``min_precision``: among labelled sign-ins that are challenged or
    blocked, the share of attacks (not met when none is: unmeasured); ``max_at_level``: per level (Low/Medium/High), the share of
    legitimate sign-ins rated at or above it.
    """

    max_challenged: float | None = None
    max_blocked: float | None = None
    min_precision: float | None = None
    max_at_level: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("max_challenged", "max_blocked", "min_precision"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
                raise TuningError(f"{name} must be a share in [0, 1] (e.g. 0.01 for 1 %), got {v!r}")
        for level, v in self.max_at_level.items():
            if level not in LEVELS:
                raise TuningError(f"unknown level {level!r}: use Low, Medium or High")
            if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
                raise TuningError(f"the target for {level} must be a share in [0, 1], got {v!r}")
        if self.empty:
            raise TuningError("state at least one target (e.g. --max-challenged 0.01)")

    @property
    def empty(self) -> bool:
        return self.max_challenged is None and self.max_blocked is None and self.min_precision is None \
            and not self.max_at_level

    def to_dict(self) -> dict:
        return {"max_challenged": self.max_challenged, "max_blocked": self.max_blocked,
                "min_precision": self.min_precision, "max_at_level": dict(self.max_at_level)}


@dataclass
class TuneResult:
    thresholds: Thresholds
    current: Thresholds
    current_version: int
    targets: Targets
    met: bool
    tradeoff: dict
    notes: list[str]
    applied_version: int | None = None
    #: the history's ``model_warning``: its scores are not all the active model's, so ``apply`` refuses
    model_warning: str | None = None

    @property
    def written(self) -> bool:
        """Whether ``apply`` stored a new version (not when the proposal equals the thresholds in force)."""
        return self.applied_version is not None and self.applied_version != self.current_version

    def as_json(self) -> dict:
        return {"thresholds": self.thresholds.to_dict(), "current": {**self.current.to_dict(),
                                                                     "version": self.current_version},
                "targets": self.targets.to_dict(), "met": self.met, "notes": self.notes,
                "applied_version": self.applied_version, "written": self.written, "tradeoff": self.tradeoff}


def _candidates(scores: np.ndarray, current: Thresholds) -> np.ndarray:
    """Every threshold worth trying, ascending: each distinct score (a threshold between two scores rates the
    same sign-ins as the higher one, so the exact boundary of every target is among them), the thresholds in
    force (an equivalent proposal then keeps them) and 1.0."""
    s = scores[np.isfinite(scores)]
    c = np.unique(np.concatenate([s, [current.low, current.medium, current.high, 1.0]]))
    return c[(c >= 0.0) & (c <= 1.0)]


def tune(con, targets: Targets, *, since: datetime | None = None, until: datetime | None = None) -> TuneResult:
    """The lowest thresholds (most attacks caught) that meet ``targets`` on the stored history.

    A level is constrained when a target depends on it (its own share target, or its action changes
    what the decision does). Constrained levels are chosen from High down, each the lowest candidate
    threshold (every distinct score, and the thresholds in force) at which every target still holds with
    the lower levels collapsed onto it; a level no target constrains keeps its threshold in force, moved
    only to keep Low <= Medium <= High. Nothing is written:
    ``apply`` stores the result as a new thresholds version.
    """
    from risk import levels

    current, current_v = levels.current_thresholds(con)
    h = history(con, since, until)
    return tune_of(h, Outcomes(con, h.df), current, current_v, targets)


def tune_of(h: History, oc: Outcomes, current: Thresholds, current_v: int, targets: Targets) -> TuneResult:
    """``tune`` on a history already read, with each event's outcomes per level (the dashboard's snapshot)."""
    scores = h.scores
    nl = max(int(h.legit.sum()), 1)
    labelled = h.legit | h.attack
    base = oc.baseline
    caps = targets.max_at_level

    def ok(t: Thresholds) -> bool:
        """Every target holds at ``t``: the outcome targets and the share target of every level."""
        o = oc.at(scores, t)
        by_risk = o > base
        if targets.max_challenged is not None and (by_risk & h.legit).sum() / nl > targets.max_challenged:
            return False
        if targets.max_blocked is not None and ((o == 2) & by_risk & h.legit).sum() / nl > targets.max_blocked:
            return False
        if targets.min_precision is not None:
            acted = by_risk & labelled
            # unmeasured (no labelled sign-in acted on) is not met: it would hold at every threshold, down to
            # the most aggressive one, on a history that says nothing about it
            if not acted.sum() or (acted & h.attack).sum() / acted.sum() < targets.min_precision:
                return False
        for level, cap in caps.items():
            if ((scores >= getattr(t, level.lower())) & h.legit).sum() / nl > cap:
                return False
        return True

    outcome_targets = not (targets.max_challenged is None and targets.max_blocked is None
                           and targets.min_precision is None)

    def constrains(level: str) -> bool:
        """A target depends on this level: its own share target, or its action changes some outcome."""
        if level in caps:
            return True
        i = _LEVEL_INDEX.index(level)
        return outcome_targets and bool((oc.by_level[:, i] != oc.by_level[:, i - 1]).any())

    # the scored events in score order, to count the events in [x, upper) for every candidate x at once
    finite = np.isfinite(scores)
    ranked = np.flatnonzero(finite)[np.argsort(scores[finite], kind="stable")]
    ranked_scores = scores[ranked]

    def cumulative(mask: np.ndarray) -> np.ndarray:
        return np.concatenate(([0], np.cumsum(mask[ranked], dtype=np.int64)))

    legit_cum = cumulative(h.legit)
    order = ("High", "Medium", "Low")

    def feasible(xs: np.ndarray, k: int, at_upper: Thresholds, upper: float) -> np.ndarray:
        """``ok(make(x))`` for every candidate ``x <= upper`` of level ``order[k]``, vectorised. Under
        ``make(x)`` a sign-in below x has no risk level; one in [x, upper) has this level's outcome (a level
        between it and the next constrained one changes no outcome and has no target); one at or above
        ``upper`` has its outcome under ``at_upper`` (= ``make(upper)``), whatever x."""
        xi = np.searchsorted(ranked_scores, xs, side="left")
        ui = np.searchsorted(ranked_scores, upper, side="left")
        good = np.ones(len(xs), dtype=bool)
        if outcome_targets:
            o_top = oc.at(scores, at_upper)
            risk_top = (o_top > base) & (scores >= upper)
            o_here = oc.by_level[:, _LEVEL_INDEX.index(order[k])]
            risk_here = o_here > base

            def count(fixed: np.ndarray, region: np.ndarray) -> np.ndarray:
                c = cumulative(region)
                return int(fixed.sum()) + (c[ui] - c[xi])

            if targets.max_challenged is not None:
                n = count(risk_top & h.legit, risk_here & h.legit)
                good &= ~(n / nl > targets.max_challenged)
            if targets.max_blocked is not None:
                n = count((o_top == 2) & risk_top & h.legit, (o_here == 2) & risk_here & h.legit)
                good &= ~(n / nl > targets.max_blocked)
            if targets.min_precision is not None:
                acted = count(risk_top & labelled, risk_here & labelled)
                hits = count(risk_top & h.attack, risk_here & h.attack)
                good &= (acted > 0) & ~(hits / np.maximum(acted, 1) < targets.min_precision)
        for level, cap in caps.items():
            if level in order[k:]:  # this level and the lower ones are at x
                n = legit_cum[-1] - legit_cum[xi]
            else:  # a higher level, as chosen
                n = int(((scores >= getattr(at_upper, level.lower())) & h.legit).sum())
            good &= np.asarray(n) / nl <= cap
        return good

    cands = _candidates(scores, current)
    notes: list[str] = []
    chosen: dict[str, float | None] = {}
    upper = 1.0
    for k, level in enumerate(order):
        if not constrains(level):
            chosen[level] = None
            continue

        def make(x, k=k):
            th = {}
            cap = 1.0
            for j, other in enumerate(order):
                if j < k:  # higher levels: as chosen, or (free) where they are in force, kept ordered
                    v = chosen[other]
                    floor = max([x, *(chosen[o] for o in order[j + 1:k] if chosen[o] is not None)])
                    th[other] = v if v is not None else max(floor, min(getattr(current, other.lower()), cap))
                    cap = th[other]
                else:  # this level and the lower ones collapse onto x (the most lenient for the lower ones)
                    th[other] = x
            return Thresholds(th["Low"], th["Medium"], th["High"])

        xs = cands[cands <= upper]
        good = feasible(xs, k, make(upper), upper)
        if good.any():
            chosen[level] = float(xs[int(np.argmax(good))])
        else:
            chosen[level] = upper
            notes.append(f"{level}: no threshold meets the targets; set to {upper:g}")
        upper = chosen[level]
    for k, level in enumerate(order):
        if chosen[level] is None:
            above = [chosen[o] for o in order[:k] if chosen[o] is not None]
            below = [chosen[o] for o in order[k + 1:] if chosen[o] is not None]
            value = getattr(current, level.lower())
            value = min(value, min(above)) if above else value
            value = max(value, max(below)) if below else value
            chosen[level] = value
            notes.append(f"{level}: no target depends on it; kept at {value:g}"
                         + ("" if value == getattr(current, level.lower()) else " (moved to keep the levels ordered)"))
    t = Thresholds(chosen["Low"], chosen["Medium"], chosen["High"])
    met = ok(t)
    if not met and not any("no threshold meets the targets" in n for n in notes):
        notes.append("the combined thresholds do not meet every target")
    if targets.min_precision is not None and not ((oc.at(scores, t) > base) & labelled).any():
        notes.append("min_precision cannot be measured: no labelled sign-in is challenged or blocked for its risk at "
                     "these thresholds (label attacks, or widen the period), so it is not met")
    few = [(targets.max_challenged, "a challenge share of {:g}"), (targets.max_blocked, "a block share of {:g}"),
           *((caps.get(lvl), "a share of {:g} rated " + lvl + (" or above" if lvl != "High" else ""))
             for lvl in LEVELS)]
    few_warnings = [f"only {nl:,} legitimate sign-ins: {what.format(share)} rests on fewer than "
                    f"{MIN_EVENTS_AT_LIMIT} of them" for share, what in few
                    if share is not None and share * nl < MIN_EVENTS_AT_LIMIT]
    outcomes = outcome_summary(h, oc.at(scores, t), oc.baseline)
    now = outcome_summary(h, oc.at(scores, current), oc.baseline)
    spent = outcomes["legitimate_challenged_or_blocked"]["count"] - now["legitimate_challenged_or_blocked"]["count"]
    if h.attack.any() and spent > 0 and all(outcomes[k]["count"] <= now[k]["count"]
                                            for k in ("attacks_stopped", "attacks_blocked")):
        # the targets allow the lower thresholds, and tune proposes them (room for attacks no label names), but
        # they buy nothing that the labels show: say so rather than spend the budget in silence
        notes.append(f"the proposal stops no labelled attack more than the thresholds in force "
                     f"({outcomes['attacks_stopped']['count']:,} of {int(h.attack.sum()):,}) and challenges or "
                     f"blocks {spent:,} more legitimate sign-in{'s' if spent != 1 else ''} for their risk: it buys "
                     "room for attacks no label names only; keep the thresholds in force if the labels cover yours")
    result = {
        "thresholds": t.to_dict(),
        "events": len(h.df),
        "legitimate": int(h.legit.sum()),
        "attacks": int(h.attack.sum()),
        "levels": _level_rows(h, t, oc.configs),
        "outcomes": outcomes,
        "current_outcomes": now,
        "warnings": h.warnings + _type_warnings(h) + few_warnings,
    }
    return TuneResult(t, current, current_v, targets, met, result, notes, model_warning=h.model_warning)


def apply(con, result: TuneResult) -> int:
    """Store the tuned thresholds as a new version; returns it. Refused (``TuningError``) when the history
    was not scored by the active model alone (``TuneResult.model_warning``), or when the targets are not met."""
    from risk import levels

    if result.model_warning:
        raise TuningError(f"{result.model_warning}; nothing written")
    if not result.met:
        raise TuningError("the targets cannot all be met on this history; nothing written "
                          "(see the notes without --apply)")
    targets = ", ".join(f"{k}={v}" for k, v in result.targets.to_dict().items() if v not in (None, {}))
    result.applied_version = levels.set_thresholds(con, result.thresholds, source=f"riskgate tune ({targets})")
    return result.applied_version


def load_thresholds(path: str) -> Thresholds:
    """Thresholds from a JSON or YAML file: ``{"low": 0.2, "medium": 0.5, "high": 0.8}`` (any case of the keys).

    A ``.json`` file, or any text that is JSON, is read as JSON; other text as YAML, where a number
    written ``5e-05`` (a string to YAML 1.1) counts as the number it is. A file nesting more than
    ``MAX_JSON_DEPTH`` levels is refused naming where (``ingest.documents``)."""
    import yaml

    from risk.levels import ThresholdsError

    try:
        with open(path, encoding="utf-8-sig") as fh:
            text = fh.read()
    except OSError as exc:
        raise ThresholdsError(f"cannot read thresholds file: {exc.strerror}", source=path) from exc
    except UnicodeDecodeError as exc:
        raise ThresholdsError(f"thresholds file is not UTF-8 text: {exc.reason} at byte {exc.start}",
                              source=path) from None
    # nesting too deep: one error naming where; a repeated key is refused, as in configurations and mappings
    from ingest.documents import (
        RepeatedKeyError,
        StrictYamlLoader,
        load_json,
        load_yaml,
        repeated_key,
        strict_json_pairs,
        yaml_refusal,
    )
    from ingest.errors import ConfigurationError

    try:
        doc = load_json(text, source=path, what="thresholds file", error=ThresholdsError,
                        object_pairs_hook=strict_json_pairs)
    except ThresholdsError:
        raise
    except RepeatedKeyError as exc:  # JSON's parser names no line: the YAML reader finds it
        problem, line = repeated_key(text=text) or (str(exc), None)
        raise ThresholdsError(f"thresholds file: {problem}", source=path, line=line) from None
    except ConfigurationError as exc:
        raise ThresholdsError(f"thresholds file: {exc}", source=path) from None
    except ValueError as exc:
        if str(path).lower().endswith(".json"):
            raise ThresholdsError(f"thresholds file is not JSON: {exc}", source=path) from None
        try:
            doc = load_yaml(text, loader=StrictYamlLoader, source=path, what="thresholds file", error=ThresholdsError)
        except yaml.YAMLError as exc:
            problem, line, repeated = yaml_refusal(exc)
            raise ThresholdsError(f"thresholds file: {problem}" if repeated
                                  else f"thresholds file is not JSON or YAML: {problem}", source=path,
                                  line=line) from None
        if isinstance(doc, dict):
            doc = {k: _yaml_number(v) for k, v in doc.items()}
    if not isinstance(doc, dict):
        raise ThresholdsError("thresholds file must hold an object with low, medium and high", source=path)
    lowered = [str(k).lower() for k in doc]
    repeated = sorted({k for k in lowered if lowered.count(k) > 1})
    if repeated:  # keys are read in any case: 'low' and 'LOW' are one key given twice
        raise ThresholdsError(f"thresholds file gives {', '.join(repeated)} more than once", source=path)
    keys = {str(k).lower(): v for k, v in doc.items()}
    unknown = sorted(set(keys) - {"low", "medium", "high"})
    missing = [k for k in ("low", "medium", "high") if k not in keys]
    if unknown or missing:
        raise ThresholdsError(
            "thresholds file needs exactly low, medium and high"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            + (f"; missing: {', '.join(missing)}" if missing else ""),
            source=path,
        )
    try:
        return Thresholds(keys["low"], keys["medium"], keys["high"])
    except ThresholdsError as exc:  # out of range, not a number, not in order: which file says so
        raise ThresholdsError(str(exc), source=path) from None


#: a decimal number, as YAML 1.2 and JSON write it (YAML 1.1 reads ``5e-05``, with no dot, as a string)
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def _yaml_number(value):
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)
    return value
