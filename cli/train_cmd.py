"""``riskgate train`` and ``riskgate models``: fit the risk model on the store, print its metrics, register it.

Thin (STYLE.md, habit 8): the work is ``risk.model.training.train``; this
module parses options and prints.
"""

from __future__ import annotations

import json
import math
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cli.common import DbOption, JsonFlag, app, console, counted, err_console, handle_errors
from cli.score_cmd import SinceOption, UntilOption, parse_period


#: ``risk.model.training.TRAIN_CHUNK_ROWS``, spelled out so that the CLI's help does not import scikit-learn
TRAIN_CHUNK_ROWS = 1_000_000


def _fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def _no_metrics_reason(metrics: dict) -> tuple[str, str] | None:
    """(what is wrong, what to do) when ``metrics`` hold no held-out figures; None when they do."""
    small = metrics.get("holdout_too_small")
    if small:
        early, late, start = small["earlier_events"], small["held_out_events"], small.get("holdout_since")
        if not early:
            return (f"no event comes before the held-out period (from {start}, the window's first time: most of "
                    "its events share that time), so there is nothing to fit on before it",
                    "widen the window (--since/--until) to events at more than one time")
        if early < 10:
            return (f"only {counted(early, 'event')} before the held-out period (from {start}), at least 10 are "
                    "needed to fit on", "use a smaller --holdout or widen the window")
        return (f"the held-out period (from {start}) has only {counted(late, 'event')}, at least 10 are needed",
                "use a larger --holdout or widen the window")
    if "labelled" not in metrics:
        return ("no labelled events in the training window",
                "load labels (`riskgate labels load`) or give feedback on attacks (Invalid) and legitimate "
                "sign-ins (Valid); --inject-attacks adds attacks only, and the metrics also need legitimate labels")
    if "roc_auc" in metrics:
        return None
    labelled, attacks = metrics.get("labelled", 0), metrics.get("attacks", 0)
    if not labelled:
        return ("no labelled events in the held-out period",
                "load labels or give feedback on later events, or use a larger --holdout")
    if not attacks:
        return (f"the held-out period's {counted(labelled, 'labelled event')} "
                + ("are all legitimate" if labelled > 1 else "is legitimate"),
                "load attack labels, mark attacks Invalid, or use --inject-attacks")
    if attacks == labelled:
        return (f"the held-out period's {counted(labelled, 'labelled event')} "
                + ("are all attacks" if labelled > 1 else "is an attack"),
                "load labels of legitimate sign-ins or give Valid feedback; --inject-attacks adds attacks only")
    return (f"the held-out period's labelled sign-ins are not both attacks and legitimate "
            f"({counted(labelled, 'labelled event')}, {counted(attacks, 'attack')})",
            "load labels of both kinds of sign-in")


def _print_holdout_mode(metrics: dict, kind: str) -> None:
    """Say so when the model evaluated (fitted on the earlier part) is not of the registered model's kind."""
    mode = metrics.get("holdout_mode")
    if not mode or mode == metrics.get("mode"):
        return
    labels = metrics.get("holdout_labels") or {}
    why = metrics.get("holdout_fallback") or (
        f"the earlier part held {counted(labels.get('attack', 0), 'attack')} and "
        f"{labels.get('legitimate', 0):,} legitimate labelled events" if labels else "")
    console.print(f"note: the held-out metrics are of a RiskModel/{mode} fitted on the earlier part"
                  f"{f' ({why})' if why else ''}; the registered model, fitted on the whole window, is {kind}",
                  highlight=False)


def _print_metrics(metrics: dict, kind: str | None = None) -> None:
    kind = kind or f"RiskModel/{metrics.get('mode')}"
    base = metrics.get("baseline", {})
    reason = _no_metrics_reason(metrics)
    if reason:
        why, hint = reason
        console.print(f"{why}: no metrics ({hint})", highlight=False)
        _print_holdout_mode(metrics, kind)
        return
    console.print(f"held-out period from {metrics.get('holdout_since')}: {counted(metrics['events'], 'event')}, "
                  f"{metrics['labelled']:,} labelled, {counted(metrics['attacks'], 'attack')}", highlight=False)
    t = Table("metric", "riskgate", "Freeman baseline", title="held-out metrics (ROC/PR AUC over labelled sign-ins)")
    for key, name in (("roc_auc", "ROC AUC"), ("pr_auc", "PR AUC"), ("brier", "Brier score")):
        t.add_row(name, _fmt(metrics.get(key)), _fmt(base.get(key)))
    console.print(t)
    per = metrics.get("per_attack_type") or {}
    if per:
        rate = metrics.get("challenge_rate", 0.01)
        t = Table(title=f"true-positive rate (TPR) when {rate:.0%} of legitimate successful sign-ins are challenged")
        t.add_column("attack type", no_wrap=True)
        for name in ("sign-ins", "TPR", "base TPR", "AUC", "base AUC"):
            t.add_column(name, justify="right")
        bper = base.get("per_attack_type") or {}
        for name, e in per.items():
            b = bper.get(name, {})
            t.add_row(name, f"{e['events']:,}", _fmt(e.get("tpr")), _fmt(b.get("tpr")), _fmt(e.get("roc_auc")),
                      _fmt(b.get("roc_auc")))
        console.print(t)
    _print_holdout_mode(metrics, kind)


@app.command()
@handle_errors
def train(
    db: DbOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    labels: Annotated[bool, typer.Option("--labels/--no-labels", help="Learn from labels (data set labels and "
                                         "feedback); --no-labels fits the statistical score only.")] = True,
    inject_attacks: Annotated[int, typer.Option("--inject-attacks", min=0, help="Also inject this many synthetic "
                                                "attack sign-ins into real users' histories (Freeman et al.).")] = 0,
    holdout: Annotated[float, typer.Option("--holdout", min=0.01, max=0.99, help="Share of the window (the latest "
                                           "events) held out for the metrics.")] = 0.2,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (injection, sampling, trees).")] = 0,
    chunk_rows: Annotated[int, typer.Option("--chunk-rows", min=1, help="Events per window of features: bounds "
                                            "memory on large stores (README).")] = TRAIN_CHUNK_ROWS,
    json_out: JsonFlag = False,
) -> None:
    """Fit the risk model on the stored events, print held-out metrics and register it as a new active version."""
    from risk import store
    from risk.model.registry import json_safe
    from risk.model.training import INJECT_DELAY
    from risk.model.training import train as train_model

    lo, hi = parse_period(since, until)
    con = store.connect(db)
    try:
        with Progress(TextColumn("[bold]features[/]"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=err_console, disable=json_out or not err_console.is_terminal, transient=True) as bar:
            task = bar.add_task("", total=None)
            if not json_out:
                err_console.print("computing features, then fitting ...", highlight=False)
            result = train_model(con, since=lo, until=hi, use_labels=labels, inject_attacks=inject_attacks,
                                 holdout=holdout, seed=seed, chunk_rows=chunk_rows,
                                 progress=lambda done, total: bar.update(task, completed=done, total=total))
    finally:
        con.close()
    model = result.model
    absent = list(getattr(model, "absent_features_", None) or [])
    if json_out:
        print(json.dumps(json_safe({"version": result.version, "kind": result.kind, "rows": result.rows,
                                    "injected": result.injected, "labels": result.labelled,
                                    "fallback": getattr(model, "fallback_", None), "absent_features": absent,
                                    "metrics": result.metrics}), default=str, allow_nan=False))
        return
    injected = f" + {counted(result.injected, 'injected attack')}" if inject_attacks else ""
    console.print(f"trained {result.kind} on {counted(result.rows, 'event')}{injected} "
                  f"({counted(result.labelled['attack'], 'attack')}, "
                  f"{result.labelled['legitimate']:,} legitimate labelled)", highlight=False)
    if result.injected < inject_attacks:
        left_out = inject_attacks - result.injected
        console.print(f"note: {left_out:,} of the {inject_attacks:,} injected attacks came after the training "
                      f"window's end (an injected sign-in comes up to {INJECT_DELAY[1].total_seconds() / 3600:g} hours after a "
                      f"real one) and "
                      f"{'were' if left_out > 1 else 'was'} left out", highlight=False)
    if getattr(model, "fallback_", None):
        console.print(f"note: {model.fallback_}", highlight=False)
    if absent:
        console.print(f"signals missing from every event (no part in scores or reasons): {', '.join(absent)}",
                      highlight=False)
    _print_metrics(result.metrics, result.kind)
    console.print(f"model version {result.version} registered and active", highlight=False)


@app.command()
@handle_errors
def models(
    db: DbOption = None,
    activate: Annotated[int | None, typer.Option("--activate", help="Make this version the active one "
                                                  "(roll back or forward).")] = None,
    json_out: JsonFlag = False,
) -> None:
    """List the registered models (version, kind, window, metrics, active); --activate VERSION switches."""
    from risk import store
    from risk.model import registry
    from risk.model.registry import json_safe

    con = store.connect(db, read_only=None if activate is None else False)  # a listing only reads
    try:
        if activate is not None:
            registry.activate(con, activate)
        recs = registry.list_models(con)
    finally:
        con.close()
    if json_out:
        print(json.dumps(json_safe([r.__dict__ for r in recs]), default=str, allow_nan=False))
        return
    if not recs:
        console.print("no models yet; run `riskgate train`", highlight=False)
        return
    t = Table("version", "active", "created", "window", "ROC AUC", "Brier")
    t.add_column("kind", no_wrap=True)
    for r in recs:
        t.add_row(str(r.version), "*" if r.active else "", f"{r.created_at:%Y-%m-%d %H:%M}",
                  f"{r.train_since:%Y-%m-%d}..{r.train_until:%Y-%m-%d}" if r.train_since and r.train_until else "-",
                  _fmt(r.metrics.get("roc_auc")), _fmt(r.metrics.get("brier")), r.kind)
    console.print(t)
