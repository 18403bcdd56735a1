"""``riskgate score``, ``riskgate events``, ``riskgate export`` and ``riskgate report``."""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import datetime, timezone
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cli.common import DbOption, JsonFlag, app, console, counted, err_console, handle_errors, styled, warn
from ingest.errors import RiskgateError


#: a fraction of a second finer than the store's microseconds: its first six digits and the rest
_SUB_MICROSECOND = re.compile(r"([.,]\d{6})(\d+)")


def parse_time(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 date or time; without an offset it is UTC. A time finer than a microsecond (the store's
    resolution) is read to the microsecond as ingest reads an event's time (its finer digits dropped): a bound
    copied from an event's time (``.1234567``) then compares equal to that event, stored at ``.123456`` -- "at or
    after T" holds it and "before T" does not. (Rounding the bound up had left such an event out of ``--since T``
    and in ``--until T``.)"""
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(_SUB_MICROSECOND.sub(r"\1", value))
    except ValueError:
        raise RiskgateError(f"{option}: {value!r} is not an ISO 8601 date or time (e.g. 2026-03-01 or 2026-03-01T08:00:00Z)") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def parse_period(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """``--since`` and ``--until`` as times (:func:`parse_time`); an empty period (since not before until) is
    refused rather than silently matching nothing."""
    lo, hi = parse_time(since, "--since"), parse_time(until, "--until")
    if lo is not None and hi is not None and lo >= hi:
        raise RiskgateError(f"--since {since} is not before --until {until}: that period holds no event")
    return lo, hi


SinceOption = Annotated[str | None, typer.Option("--since", help="Only events at or after this time (ISO 8601, UTC by default).")]
UntilOption = Annotated[str | None, typer.Option("--until", help="Only events before this time (ISO 8601, UTC by default).")]


@app.command()
@handle_errors
def score(
    db: DbOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    rescore: Annotated[bool, typer.Option("--rescore", help="Assess again events that already have an assessment.")] = False,
    chunk_rows: Annotated[int, typer.Option("--chunk-rows", min=1, help="Events per chunk: bounds memory, and how long another process waiting for the store waits.")] = 250_000,
    notify: Annotated[bool, typer.Option("--notify", help="Send the notifications the decisions make due (ENFORCED mode; an event's first assessment only: --rescore emails nobody about an event assessed before; SMTP or outbox, see README). Off by default: scoring history must not email users about old sign-ins.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Assess unscored events in time order: score, level, decision, action and reasons, per event."""
    from risk import score as scoring
    from risk import store
    from risk.config import unpooled_users_problem

    lo, hi = parse_period(since, until)
    con = store.connect(db)
    try:
        problem = unpooled_users_problem(con)  # said first: also when the run then fails
        if problem:  # on stderr, with --json too (and in the object): the users' MFA applies to nobody
            warn(problem)
        with Progress(TextColumn("[bold]score[/]"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=err_console, disable=json_out or not err_console.is_terminal, transient=True) as bar:
            task = bar.add_task("", total=None)
            result = scoring.score_events(
                con, since=lo, until=hi, rescore=rescore,
                chunk_rows=chunk_rows, notify=notify, progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    finally:
        con.close()
    warnings = [problem] if problem else []
    if result.stale_assessed:
        n = result.stale_assessed
        late = (f"{counted(n, 'event')} assessed before {'were' if n != 1 else 'was'} assessed without the events "
                f"ingested late that this run scored (from {result.stale_since:%Y-%m-%dT%H:%M:%S}Z on): "
                f"`riskgate score --rescore --since {result.stale_since:%Y-%m-%dT%H:%M:%S}Z` assesses "
                f"{'them' if n != 1 else 'it'} again with them, as one run over everything would")
        warn(late)
        warnings.append(late)
    if json_out:
        print(json.dumps({**result.as_json(), "warnings": warnings}))
        return
    if notify:
        earlier = f" ({result.notifications_earlier:,} owed by earlier runs)" if result.notifications_earlier else ""
        console.print(f"notifications sent or queued: {result.notifications:,}{earlier}", highlight=False)
        if result.notifications_failed:
            warn(f"{counted(result.notifications_failed, 'notification')} failed (recorded in the store's "
                 "notifications table):")
            for reason, n in sorted(result.notification_failures.items(), key=lambda kv: -kv[1]):
                err_console.print(f"  {n:,}  {reason}", highlight=False, soft_wrap=True)
    console.print(
        f"scored {counted(result.events_scored, 'event')} in {counted(result.chunks, 'chunk')} "
        f"(model v{result.model_version}, thresholds v{result.thresholds_version})", highlight=False)
    if result.by_level:
        console.print("by level: " + ", ".join(f"{k} {v:,}" for k, v in sorted(result.by_level.items())),
                      highlight=False)
        console.print("by decision: " + ", ".join(f"{k} {v:,}"
                                                  for k, v in sorted(result.by_decision.items())),
                      highlight=False)


@app.command()
@handle_errors
def events(
    username: Annotated[str, typer.Argument(help="The user whose sign-in events to list.")],
    max_results: Annotated[int | None, typer.Option("--max-results", help="0..60; 0 or absent means 60.")] = None,
    next_token: Annotated[str | None, typer.Option("--next-token", help="NextToken from the previous page.")] = None,
    db: DbOption = None,
) -> None:
    """Print a user's events as AdminListUserAuthEvents JSON (newest first), with risk, context and feedback."""
    from risk import store
    from risk.auth_events import list_user_auth_events

    con = store.connect(db, read_only=None)  # only reads: a store on read-only media too
    try:
        out = list_user_auth_events(con, username, max_results=max_results, next_token=next_token)
    finally:
        con.close()
    print(json.dumps(out, indent=4))


@app.command()
@handle_errors
def export(
    out: Annotated[str, typer.Option("--out", help="File to write.")],
    format: Annotated[str, typer.Option("--format", help="csv, parquet or jsonl.")] = "csv",
    since: SinceOption = None,
    until: UntilOption = None,
    db: DbOption = None,
) -> None:
    """Write events joined with their assessments (score, level, decision, action, reasons, versions)."""
    from ingest.store import resolve_db_path
    from risk import store
    from risk.report import assessed_counts, check_export_format, export_assessments, export_target

    lo, hi = parse_period(since, until)
    check_export_format(format)  # a bad --format or --out (the store itself, say) before the store is opened
    export_target(out, resolve_db_path(db))
    to_stdout = _is_stdout(out)
    con = store.connect(db, read_only=None)  # only reads: a store on read-only media too
    try:
        n = export_assessments(con, out, format, since=lo, until=hi)
        _, unscored = assessed_counts(con, since=lo, until=hi)
    finally:
        con.close()
    # with --out /dev/stdout the line goes to stderr, not at the end of the export
    (err_console if to_stdout else console).print(f"wrote {counted(n, 'row')} to {out}", highlight=False)
    if unscored:  # the export joins events with their assessments: say what it could not hold
        warn(f"{counted(unscored, 'event')} in the period not yet assessed, not in the export: run `riskgate score` first")


def _is_stdout(path: str) -> bool:
    """Whether ``path`` is the file this process's standard output writes to (``/dev/stdout``, its pipe)."""
    try:
        return os.path.samestat(os.stat(path), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, AttributeError):  # no such file yet; a stdout without a file (a test's)
        return False


@app.command()
@handle_errors
def report(db: DbOption = None, since: SinceOption = None, until: UntilOption = None, json_out: JsonFlag = False) -> None:
    """What scoring decided: events by level and decision, attacks caught by type, legitimate users affected."""
    from risk import store
    from risk.report import pipeline_summary

    lo, hi = parse_period(since, until)
    con = store.connect(db, read_only=None)  # only reads: a store on read-only media too
    try:
        s = pipeline_summary(con, since=lo, until=hi)
    finally:
        con.close()
    if json_out:
        print(json.dumps(s, default=str))
        return
    period = (f" from {since} until {until}" if lo and hi else f" since {since}" if lo else f" until {until}" if hi
              else "")
    console.print(styled("assessments", "bold", f"{period}: {counted(s['events_scored'], 'event')} scored, {s['events_unscored']:,} not yet"),
                  highlight=False)
    if not s["events_scored"]:
        if s["events_unscored"]:
            console.print("nothing to report yet: run `riskgate score`", highlight=False)
        elif period:
            console.print("nothing to report: the store holds no events in that period", highlight=False)
        else:
            console.print("nothing to report yet: the store holds no events (`riskgate ingest`)", highlight=False)
        return
    # levels and outcomes are stored with the assessment: name the thresholds they were decided with
    versions = [v for v, _n in s["thresholds_versions"]]
    current = s["current_thresholds_version"]

    def version(v) -> str:
        return "unknown" if v is None else str(v)

    at = (f"at the current thresholds (version {current})" if versions == [current] else
          f"at the thresholds assessed with (version{'s' if len(versions) > 1 else ''} "
          f"{', '.join(map(version, versions))})")
    if versions != [current]:
        older = [(v, n) for v, n in s["thresholds_versions"] if v != current]
        console.print(f"note: {counted(sum(n for _v, n in older), 'assessment')} of the period used thresholds other "
                      f"than the current version {current} ("
                      + ", ".join(f"version {version(v)}: {n:,}" for v, n in older)
                      + "): levels and outcomes below are theirs; run `riskgate score --rescore` (with --since/--until "
                      "for a period) to assess them at the current thresholds", highlight=False)
    t = Table(title="events by level", show_edge=False, title_justify="left")
    t.add_column("level")
    t.add_column("events", justify="right")
    for lvl, n in s["by_level"]:
        t.add_row(lvl, f"{n:,}")
    console.print(t)
    t = Table(title="events by decision", show_edge=False, title_justify="left")
    for c in ("RiskDecision", "outcome", "events"):
        t.add_column(c, justify="right" if c == "events" else "left")
    for d, o, n in s["by_decision"]:
        t.add_row(d, o, f"{n:,}")
    console.print(t)
    if s["attacks_by_type"]:
        t = Table(title=f"attacks caught (challenged or blocked) {at}", show_edge=False, title_justify="left")
        for c in ("attack type", "attacks", "caught", "share", "blocked"):
            t.add_column(c, justify="left" if c == "attack type" else "right")
        for typ, n, caught, blocked in s["attacks_by_type"]:
            t.add_row(typ, f"{n:,}", f"{caught:,}", f"{caught / n:.1%}" if n else "-", f"{blocked:,}")
        console.print(t)
    if s["legitimate_sign_ins"]:
        n = s["legitimate_sign_ins"]
        own, at_level = s["legitimate_own_mfa_challenged"], s["legitimate_own_mfa_at_mfa_level"]
        ranges, creds = s["legitimate_range_blocked"], s["legitimate_credentials_blocked"]
        console.print(
            f"legitimate successful sign-ins {n:,}: challenged {s['legitimate_challenged']:,} "
            f"({s['legitimate_challenged'] / n:.2%}) and blocked {s['legitimate_blocked']:,} "
            f"({s['legitimate_blocked'] / n:.2%}) for their risk; {own:,} challenged because the user has MFA of "
            f"their own (always, as in Cognito)" + (f", {at_level:,} of them at a level whose action asks for MFA"
                                                    if at_level else "")
            + (f"; {ranges:,} blocked by the BlockedIPRangeList" if ranges else "")
            + (f"; {creds:,} blocked for compromised credentials" if creds else ""),
            highlight=False)
