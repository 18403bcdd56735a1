"""``riskgate config set | describe | validate | reset | history`` and ``riskgate mode``.

Thin: each command reads its input, calls one function of ``risk.config``, and
prints. Invalid documents exit with code 2 and every problem on standard error;
nothing is stored then.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
import yaml
from rich.table import Table

from cli.common import DbOption, JsonFlag, app, console, err_console, handle_errors, warn
from risk import config as risk_config
from risk import store

config_app = typer.Typer(
    help="Risk configuration (Cognito's RiskConfigurationType): set, describe, validate, reset, history.",
    no_args_is_help=True,
)
app.add_typer(config_app, name="config")

ClientIdOption = Annotated[
    str | None,
    typer.Option("--client-id", help="App client id: its own configuration (default: the pool-level one).", show_default=False),
]
def _pool_option(default: str):
    return typer.Option("--user-pool-id", help=f"User pool id (default: {default}${risk_config.POOL_ENV}, else the only "
                        "pool the store knows, else 'default').", show_default=False)


#: for the commands that read a document (set, validate: the document's UserPoolId comes first) and the others
PoolOption = Annotated[str | None, _pool_option("the document's UserPoolId, else ")]
StorePoolOption = Annotated[str | None, _pool_option("")]
FileArgument = Annotated[str, typer.Argument(help="JSON or YAML document (as for set-risk-configuration --cli-input-json).", show_default=False)]


def _warn(warnings: list[str]) -> None:
    for w in warnings:
        warn(w)


def _echo_json(data) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _print_version(version, json_out: bool) -> None:
    """What a command that wrote a version prints: the version as JSON, or one line."""
    if json_out:
        _echo_json(version.to_dict())
    else:
        console.print(f"version {version.version}: {version.scope}: {version.summary}", highlight=False, soft_wrap=True)


@config_app.command("set")
@handle_errors
def set_cmd(
    file: FileArgument,
    client_id: ClientIdOption = None,
    user_pool_id: PoolOption = None,
    db: DbOption = None,
    json_out: JsonFlag = False,
) -> None:
    """Validate FILE fully, then store it as a new version (a document with only ids resets)."""
    cfg = risk_config.load_file(file)
    _warn(risk_config.lint(cfg))
    con = store.connect(db)
    try:
        pool = risk_config.choose_pool(con, user_pool_id, cfg.UserPoolId)
        unknown = risk_config.unknown_pool_warning(con, pool)
        version = risk_config.set_configuration(con, cfg, user_pool_id=user_pool_id, client_id=client_id, source=file)
    finally:
        con.close()
    _warn([unknown] if unknown else [])
    _print_version(version, json_out)


@config_app.command("describe")
@handle_errors
def describe_cmd(
    client_id: ClientIdOption = None,
    user_pool_id: StorePoolOption = None,
    db: DbOption = None,
    as_yaml: Annotated[bool, typer.Option("--yaml", help="Print YAML instead of JSON.")] = False,
) -> None:
    """Print the configuration that applies, as DescribeRiskConfiguration returns it."""
    risk_config.check_client_arg(client_id)
    con = store.connect(db, read_only=None)  # only reads: a store on read-only media too
    try:
        detail = risk_config.resolve_detail(con, user_pool_id, client_id)
    finally:
        con.close()
    doc = risk_config.describe_resolved(detail)
    if as_yaml:
        typer.echo(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=1000), nl=False)
    else:
        _echo_json(doc)
    origin = {
        "client": f"the client's own configuration, version {detail.version}",
        "pool": f"the pool's configuration, version {detail.version}",
        "defaults": "the default configuration" + (f" (reset at version {detail.version})" if detail.version else ""),
    }[detail.origin]
    err_console.print(f"applies: {origin}", highlight=False, soft_wrap=True)


@config_app.command("validate")
@handle_errors
def validate_cmd(file: FileArgument, json_out: JsonFlag = False) -> None:
    """Check FILE without touching the store: exit 0 when valid, 2 with every problem listed when not."""
    cfg = risk_config.load_file(file)
    warnings = risk_config.lint(cfg)
    summary = "reset (only ids)" if cfg.is_reset else risk_config.summarize(cfg)
    if json_out:
        _echo_json({"file": file, "valid": True, "summary": summary, "warnings": warnings})
        return
    _warn(warnings)
    console.print(f"{file}: valid: {summary}", highlight=False, soft_wrap=True)


@config_app.command("reset")
@handle_errors
def reset_cmd(
    client_id: ClientIdOption = None,
    user_pool_id: StorePoolOption = None,
    db: DbOption = None,
    json_out: JsonFlag = False,
) -> None:
    """Pool: back to the defaults. With --client-id: the client inherits the pool's configuration again."""
    con = store.connect(db)
    try:
        unknown = risk_config.unknown_pool_warning(con, risk_config.choose_pool(con, user_pool_id))
        version = risk_config.reset_configuration(con, user_pool_id, client_id, source="config reset")
    finally:
        con.close()
    _warn([unknown] if unknown else [])
    _print_version(version, json_out)


@config_app.command("history")
@handle_errors
def history_cmd(
    client_id: Annotated[str | None, typer.Option("--client-id", help="Only this client's versions.", show_default=False)] = None,
    user_pool_id: Annotated[str | None, typer.Option("--user-pool-id", help="Only this pool's versions (default: all pools).", show_default=False)] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most this many (newest first).", show_default=False)] = None,
    db: DbOption = None,
    json_out: JsonFlag = False,
) -> None:
    """Every configuration and mode change, newest first: version, time, scope, what changed."""
    con = store.connect(db, read_only=None)  # only reads: a store on read-only media too
    try:
        versions = risk_config.history(con, user_pool_id, client_id, limit=limit)
    finally:
        con.close()
    if json_out:
        _echo_json([v.to_dict() for v in versions])
        return
    if not versions:
        console.print("no configuration changes yet: every pool uses the defaults in AUDIT mode", highlight=False)
        return
    table = Table("version", "time (UTC)", "scope", "change", "summary", show_lines=False)
    for v in versions:
        table.add_row(
            str(v.version), v.changed_at.strftime("%Y-%m-%d %H:%M:%S"), v.scope, v.kind, v.summary
        )
    console.print(table)


@app.command("mode")
@handle_errors
def mode_cmd(
    mode: Annotated[
        str | None,
        typer.Argument(help="OFF, AUDIT or ENFORCED; leave out to show the current mode.", show_default=False),
    ] = None,
    user_pool_id: StorePoolOption = None,
    db: DbOption = None,
    json_out: JsonFlag = False,
) -> None:
    """Show or set a pool's AdvancedSecurityMode (OFF / AUDIT / ENFORCED; default AUDIT)."""
    con = store.connect(db)
    try:
        pool = risk_config.choose_pool(con, user_pool_id)
        if mode is None:
            current, version = risk_config.get_mode(con, pool)
            if json_out:
                _echo_json({"user_pool_id": pool, "mode": str(current), "version": version})
            else:
                since = f"set at version {version}" if version else "default, never set"
                console.print(f"pool {pool}: AdvancedSecurityMode {current} ({since})", highlight=False)
            return
        unknown = risk_config.unknown_pool_warning(con, pool)
        version = risk_config.set_mode(con, mode, pool)
    finally:
        con.close()
    _warn([unknown] if unknown else [])
    if json_out:
        _echo_json(version.to_dict())
    else:
        console.print(f"version {version.version}: {version.scope}: {version.summary}", highlight=False)
