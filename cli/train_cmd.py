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


def _print_metrics(metrics: dict) -> None:
    base = metrics.get("baseline", {})
    if "roc_auc" not in metrics and "per_attack_type" not in metrics:
        labelled, attacks = metrics.get("labelled", 0), metrics.get("attacks", 0)
        if not labelled:
            why = "no labelled events in the held-out period"
            hint = "load labels, give feedback, or use --inject-attacks"
        elif not attacks:
            why = f"the held-out period's {counted(labelled, 'labelled event')} are all legitimate"
            hint = "load attack labels, mark attacks Invalid, or use --inject-attacks"
        else:
            why = f"the held-out period's {counted(labelled, 'labelled event')} are all attacks"
            hint = "load labels of legitimate sign-ins or give Valid feedback"
        console.print(f"{why}: no metrics ({hint})", highlight=False)
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
    if json_out:
        print(json.dumps({"version": result.version, "kind": result.kind, "rows": result.rows,
                          "labels": result.labelled, "metrics": result.metrics}, default=str))
        return
    console.print(f"trained {result.kind} on {counted(result.rows, 'event')} "
                  f"({counted(result.labelled['attack'], 'attack')}, "
                  f"{result.labelled['legitimate']:,} legitimate labelled)", highlight=False)
    _print_metrics(result.metrics)
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

    con = store.connect(db)
    try:
        if activate is not None:
            registry.activate(con, activate)
        recs = registry.list_models(con)
    finally:
        con.close()
    if json_out:
        print(json.dumps([r.__dict__ for r in recs], default=str))
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
