"""``riskgate users load`` and ``riskgate labels load``: the data that comes beside the events.

(``labels load`` lives here too: users and labels are the two side files ``riskgate synth`` writes.)
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cli.common import DbOption, JsonFlag, app, console, handle_errors, warn
from ingest import store
from ingest.labels import load_labels
from ingest.users import LoadResult, load_users

users_app = typer.Typer(help="Users of the pool (status, MFA) as Cognito ListUsers JSON or CSV.", no_args_is_help=True)
labels_app = typer.Typer(help="Ground-truth labels of events (event_id,label,value,source CSV).", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(labels_app, name="labels")

SHOWN_REJECTIONS = 20


@users_app.command("load")
@handle_errors
def users_load(
    file: Annotated[str, typer.Argument(help="ListUsers JSON (one page, pages back to back, or a list of pages) "
                                        "or CSV username,sub,status,enabled,mfa_settings,preferred_mfa,email.")],
    db: DbOption = None,
    user_pool_id: Annotated[
        str | None, typer.Option("--user-pool-id", help="Pool id to record (ListUsers output names none).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Upsert users: loading again updates, never duplicates; bad entries are reported and skipped."""
    from risk.config import check_pool_arg, unpooled_users_problem

    check_pool_arg(user_pool_id, "--user-pool-id")  # before the store is touched
    con = store.connect(db)
    try:
        # users of a pool the store did not know make it know several: the users (and events) loaded without a pool
        # id then belong to none, which this load says as score would; loading them without one says so whenever
        before = unpooled_users_problem(con) if user_pool_id is not None else None
        result = load_users(con, file, user_pool_id)
        problem = unpooled_users_problem(con)
        if user_pool_id is not None and before is not None:
            problem = None  # not this load's doing (loading a pool's own users leaves it as it was)
    finally:
        con.close()
    if as_json:
        typer.echo(json.dumps(result.as_dict()))
        return
    typer.echo(describe_users(result))
    if problem:
        warn(problem)


@users_app.command("list")
@handle_errors
def users_list(
    user_pool_id: Annotated[str | None, typer.Option("--user-pool-id", help="Only this pool's users.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="Only users of this UserStatus (e.g. RESET_REQUIRED).")] = None,
    mfa: Annotated[bool | None, typer.Option("--mfa/--no-mfa", help="Only users with / without MFA of their own.")] = None,
    enabled: Annotated[bool | None, typer.Option("--enabled/--disabled", help="Only enabled / disabled users.")] = None,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print {\"Users\": [...]} as ListUsers gives them (with "
                                          "UserPoolId), which `users load` reads back.")] = False,
) -> None:
    """List the users as scoring sees them: status, Enabled, MFA of their own, email."""
    from ingest.users import as_list_users_entry, check_status, pool_users
    from risk import store as rstore
    from risk.config import check_pool_arg, unpooled_pool

    check_pool_arg(user_pool_id, "--user-pool-id")
    if status is not None:
        check_status(status)
    con = rstore.connect(db, read_only=None)
    try:
        users = pool_users(con, unpooled_pool(con), user_pool_id=user_pool_id, status=status, mfa_enabled=mfa,
                           enabled=enabled)
    finally:
        con.close()
    if as_json:
        typer.echo(json.dumps({"Users": [as_list_users_entry(u) for u in users]}, indent=1))
        return
    from rich.table import Table

    t = Table(show_edge=False)
    for c in ("username", "pool", "status", "enabled", "MFA", "email"):
        t.add_column(c)
    yes_no = {True: "yes", False: "no", None: "-"}
    for u in users:
        kinds = ", ".join(u["mfa_settings"] or ([u["preferred_mfa"]] if u["preferred_mfa"] else []))
        t.add_row(u["username"], u["pool"] or "-", u["user_status"] or "-", yes_no[u["enabled"]],
                  ("yes" if u["mfa_enabled"] else "no") + (f" ({kinds})" if kinds else ""), u["email"] or "-")
    console.print(t)
    console.print(f"{len(users):,} user{'s' if len(users) != 1 else ''}", highlight=False)


def describe_users(r: LoadResult) -> str:
    lines = [f"users read {r.read:,}  added {r.added:,}  updated {r.updated:,}  rejected {len(r.rejected):,}"]
    for rej in r.rejected[:SHOWN_REJECTIONS]:
        lines.append(f"  rejected {rej.position}: {rej.reason}")
    if len(r.rejected) > SHOWN_REJECTIONS:
        lines.append(f"  ... and {len(r.rejected) - SHOWN_REJECTIONS:,} more (use --json for all)")
    return "\n".join(lines)


@labels_app.command("load")
@handle_errors
def labels_load(
    file: Annotated[str, typer.Argument(help="CSV with the header event_id,label,value,source (gzip accepted).")],
    db: DbOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Load labels; re-loading adds nothing, another value replaces a label; labels of events not (yet) in the store
    are kept and counted."""
    con = store.connect(db)
    try:
        r = load_labels(con, file)
    finally:
        con.close()
    if as_json:
        typer.echo(json.dumps(r.as_dict()))
        return
    lines = [
        f"labels read {r.read:,}  added {r.added:,}  updated {r.updated:,}  already present {r.already_present:,}  "
        f"rejected {r.rejected:,}" + (f"  blank (no label) {r.blank:,}" if r.blank else ""),
        f"  labels of {r.unknown_events:,} event ids not in the store (kept; events may come later)"
        if r.unknown_events else ("  every labelled event is in the store" if r.added + r.updated + r.already_present
                                  else "  no label loaded"),
    ]
    for rej in r.rejections[:SHOWN_REJECTIONS]:
        lines.append(f"  rejected line {rej.line}: {rej.reason}")
    if r.rejected > SHOWN_REJECTIONS:
        lines.append(f"  ... and {r.rejected - SHOWN_REJECTIONS:,} more (use --json for the first 1,000)")
    typer.echo("\n".join(lines))
