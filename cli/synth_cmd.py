"""``riskgate synth``: write a synthetic, labelled, reproducible data set in any input format."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cli.common import JsonFlag, app, handle_errors
from ingest.synth import DEFAULT_START, SynthConfig, SynthReport, formats, parse_start, synthesize


@app.command("synth")
@handle_errors
def synth(
    out: Annotated[
        str, typer.Option("--out", help="Output file (a folder for cognito-auth-events); a .gz name compresses "
                          "(parquet and cognito-auth-events refuse one).")
    ],
    users: Annotated[int, typer.Option("--users", help="Number of users.")] = 1000,
    days: Annotated[int, typer.Option("--days", help="Number of days of activity.")] = 30,
    fmt: Annotated[
        str, typer.Option("--format", help="Output format: " + ", ".join(formats()) + ".")
    ] = "riskgate-jsonl",
    seed: Annotated[int, typer.Option("--seed", help="Random seed: the same seed writes the same bytes.")] = 0,
    start: Annotated[
        str | None, typer.Option("--start", help=f"First day, YYYY-MM-DD (default {DEFAULT_START.isoformat()}): the users' local day, so events may begin "
        "hours before its midnight UTC.")
    ] = None,
    with_attacks: Annotated[
        bool, typer.Option("--attacks/--no-attacks", help="Include labelled attacks (a few per cent of events).")
    ] = True,
    inline_labels: Annotated[
        bool, typer.Option("--inline-labels", help="riskgate-jsonl only: also put each event's labels in its Labels.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Generate users, sign-ins and attacks; write the events plus <stem>.users.json and <stem>.labels.csv."""
    config = SynthConfig(users=users, days=days, seed=seed, start=parse_start(start), attacks=with_attacks,
                         inline_labels=inline_labels)
    report = synthesize(config, fmt, out)
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
    else:
        typer.echo(describe(report))


def describe(report: SynthReport) -> str:
    """What a run wrote, as the lines ``riskgate synth`` prints."""
    lines = [
        f"wrote {report.events:,} events of {report.users:,} users over {report.days} days "
        f"({report.format}, seed {report.seed}, from {report.start}) in {report.seconds:.1f}s"
    ]
    lines += [f"  events: {f}" for f in report.files]
    lines.append(f"  users:  {report.users_file}")
    lines.append(f"  labels: {report.labels_file} ({report.labels:,} rows)")
    lines.append("events by type:")
    lines += [f"  {k:<24} {n:>10,}" for k, n in report.by_event.items()]
    if report.attacks:
        share = report.attack_events / max(report.events, 1)
        lines.append(f"attacks: {report.attack_events:,} events ({share:.1%}), {report.takeovers:,} account takeovers")
        lines.append(f"  {'attack type':<20} {'incidents':>9} {'events':>8} {'takeovers':>9}")
        lines += [
            f"  {name:<20} {a['incidents']:>9,} {a['events']:>8,} {a['takeovers']:>9,}"
            for name, a in report.attacks.items()
        ]
    else:
        lines.append("attacks: none (--no-attacks)")
    return "\n".join(lines)
