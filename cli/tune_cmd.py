"""``riskgate tune`` (thresholds from labelled history, for stated targets) and ``riskgate whatif``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from cli.common import DbOption, JsonFlag, app, console, counted, handle_errors, styled, warn
from cli.score_cmd import SinceOption, UntilOption, parse_period
from ingest.errors import RiskgateError


def parse_share(value: str | None, option: str) -> float | None:
    """``0.01`` or ``1%`` -> 0.01."""
    if value is None:
        return None
    text = value.strip()
    try:
        share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise RiskgateError(f"{option}: {value!r} is not a share (write 0.01 or 1%)") from None
    if not 0.0 <= share <= 1.0:
        raise RiskgateError(f"{option}: {value!r} is not between 0 and 1 (0% and 100%)")
    return share


def _pct(rate: dict | None, digits: int = 2) -> str:
    if not rate or rate.get("rate") is None:
        return "-"
    text = f"{100 * rate['rate']:.{digits}f}% ({rate['count']:,}/{rate['of']:,})"
    if rate.get("ci") and rate["of"] < 100_000:
        lo, hi = rate["ci"]
        text += f" [{100 * lo:.{digits}f}-{100 * hi:.{digits}f}]"
    return text


def _json_default(o):
    if hasattr(o, "isoformat"):
        return o.isoformat()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(type(o).__name__)


ShareOption = lambda flag, text: typer.Option(flag, help=text, show_default=False)  # noqa: E731


@app.command()
@handle_errors
def tune(
    max_challenged: Annotated[str | None, ShareOption(
        "--max-challenged", "At most this share of legitimate sign-ins challenged with MFA or blocked because of "
        "their risk level (0.01 or 1%).")] = None,
    max_blocked: Annotated[str | None, ShareOption(
        "--max-blocked", "At most this share of legitimate sign-ins blocked because of their risk level.")] = None,
    min_precision: Annotated[str | None, ShareOption(
        "--min-precision", "At least this share of attacks among labelled sign-ins the risk level challenges or blocks.")] = None,
    max_low: Annotated[str | None, ShareOption("--max-low", "At most this share of legitimate sign-ins rated Low or above.")] = None,
    max_medium: Annotated[str | None, ShareOption("--max-medium", "At most this share of legitimate sign-ins rated Medium or above.")] = None,
    max_high: Annotated[str | None, ShareOption("--max-high", "At most this share of legitimate sign-ins rated High.")] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    apply: Annotated[bool, typer.Option("--apply", help="Write the proposed thresholds as a new version (otherwise nothing is written).")] = False,
    db: DbOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Choose Low/Medium/High thresholds from labelled history for the targets you state, with the trade-off."""
    from risk import store, tuning

    per_level = {lvl: v for lvl, v in (("Low", parse_share(max_low, "--max-low")),
                                        ("Medium", parse_share(max_medium, "--max-medium")),
                                        ("High", parse_share(max_high, "--max-high"))) if v is not None}
    targets = tuning.Targets(
        max_challenged=parse_share(max_challenged, "--max-challenged"),
        max_blocked=parse_share(max_blocked, "--max-blocked"),
        min_precision=parse_share(min_precision, "--min-precision"),
        max_at_level=per_level,
    )
    lo, hi = parse_period(since, until)
    with store.connect(db) as con:
        result = tuning.tune(con, targets, since=lo, until=hi)
        if apply:  # refused, with the reason, for another model's scores or targets not met
            tuning.apply(con, result)
    if as_json:
        print(json.dumps(result.as_json(), default=_json_default))
        return
    _print_tune(result)


def _print_tune(r) -> None:
    t = r.tradeoff
    console.print(f"history: {counted(t['events'], 'assessed sign-in')}, {t['legitimate']:,} legitimate, "
                  f"{counted(t['attacks'], 'attack')}", highlight=False)
    th = Table(title="thresholds", show_edge=False, title_justify="left")
    for c in ("level", f"in force (v{r.current_version})", "proposed", "actions", "legitimate at or above",
              "attacks at or above", "precision"):
        th.add_column(c)
    for row in t["levels"]:
        lvl = row["level"]
        th.add_row(lvl, f"{getattr(r.current, lvl.lower()):.4g}", f"{row['threshold']:.4g}", ", ".join(row["actions"]),
                   _pct(row["legitimate_at_or_above"], 3), _pct(row["attacks_at_or_above"], 1), _pct(row["precision"], 1))
    console.print(th)
    ot = Table(title="what the decisions do (95% Wilson intervals)", show_edge=False, title_justify="left")
    for c in ("measure", "in force", "proposed"):
        ot.add_column(c)
    now, new = t["current_outcomes"], t["outcomes"]
    for key, label in (("legitimate_challenged_or_blocked", "legitimate challenged or blocked by risk"),
                       ("legitimate_blocked", "legitimate blocked by risk"),
                       ("legitimate_challenged_total", "legitimate challenged, all causes"),
                       ("attacks_stopped", "attacks stopped (challenged or blocked)"),
                       ("precision", "attacks among those risk acts on")):
        ot.add_row(label, _pct(now[key], 3), _pct(new[key], 3))
    for typ, rate in new["attacks_stopped_by_type"].items():
        ot.add_row(f"  stopped: {typ}", _pct(now["attacks_stopped_by_type"].get(typ), 1), _pct(rate, 1))
    console.print(ot)
    console.print(styled("targets met" if r.met else "targets NOT met", "" if r.met else "bold red",
                         ": " + ", ".join(f"{k} {v}" for k, v in r.targets.to_dict().items() if v not in (None, {}))))
    for note in r.notes:
        console.print(f"note: {note}", highlight=False)
    for w in t["warnings"]:
        warn(w)
    if r.written:
        console.print(f"written as thresholds version {r.applied_version}", highlight=False)
    elif r.applied_version is not None:
        console.print(f"nothing written: the proposal is thresholds version {r.applied_version}, already in force",
                      highlight=False)
    else:
        console.print("nothing written: add --apply to make these the thresholds in force", highlight=False)


@app.command()
@handle_errors
def whatif(
    config: Annotated[str | None, typer.Option("--config", help="Proposed risk configuration (Cognito JSON/YAML, as `riskgate config set` reads); default: the ones in force.")] = None,
    thresholds: Annotated[str | None, typer.Option("--thresholds", help='Proposed thresholds file, JSON/YAML {"low": .., "medium": .., "high": ..}; default: those in force.')] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    db: DbOption = None,
    as_json: JsonFlag = False,
) -> None:
    """What a proposed configuration and thresholds would do to the stored history: blocked, challenged, allowed."""
    from risk import config as rc
    from risk import store, tuning

    proposal = rc.load_file(config) if config else None
    t = tuning.load_thresholds(thresholds) if thresholds else None
    lo, hi = parse_period(since, until)
    with store.connect(db, read_only=True) as con:
        w = tuning.whatif(con, proposal, t, since=lo, until=hi)
    if as_json:
        print(json.dumps(w, default=_json_default))
        return
    console.print(f"{w['events']:,} assessed sign-ins; configuration {w['configuration']}, thresholds "
                  f"low {w['thresholds']['low']:.4g} / medium {w['thresholds']['medium']:.4g} / high "
                  f"{w['thresholds']['high']:.4g}; mode {', '.join(w['modes'])} (outcomes as ENFORCED would act)",
                  highlight=False)
    tab = Table(show_edge=False)
    for c in ("sign-ins", "total", "Allow", "MfaChallenge", "Block"):
        tab.add_column(c, justify="left" if c == "sign-ins" else "right")

    def add(label, c):
        tab.add_row(label, f"{c['total']:,}", *(f"{c[o]:,}" + (f" ({100 * c['share'][o]:.2f}%)" if c["total"] else "")
                                                for o in tuning.OUTCOMES))

    add("all (proposed)", w["outcomes"])
    add("all (in force)", w["current"])
    for group in ("by_label", "by_mfa", "by_event_type", "by_attack_type"):
        for k, c in w[group].items():
            add(f"{group[3:].replace('_', ' ')}: {k}", c)
    console.print(tab)
    console.print(f"sign-ins whose outcome would change: {w['changed']:,}", highlight=False)
    for msg in w["warnings"]:
        warn(msg)
