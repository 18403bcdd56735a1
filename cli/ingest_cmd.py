"""``riskgate ingest`` and ``riskgate summary``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cli.common import DbOption, JsonFlag, app, console, counted, err_console, handle_errors, styled, warn
from ingest import store
from ingest.context import ProxyPolicy
from ingest.enrich import Enricher
from ingest.geo import GeoResolver
from ingest.pipeline import BULK_SETTINGS, expand_folders, ingest_paths, prefer_jemalloc, total_size
from ingest.sources import reader_names
from ingest.sources.base import DEFAULT_BATCH_ROWS, ReaderOptions

PROGRESS_MIN_BYTES = 5 * 1024 * 1024

GeoCityOption = Annotated[
    str | None,
    typer.Option("--geoip-city", help="GeoLite2-compatible City .mmdb (default: $RISKGATE_GEOIP_CITY, else bundled DB-IP Lite; 'none' = off)."),
]
GeoAsnOption = Annotated[
    str | None,
    typer.Option("--geoip-asn", help="GeoLite2-compatible ASN .mmdb (default: $RISKGATE_GEOIP_ASN, else bundled DB-IP Lite; 'none' = off)."),
]


@app.command()
@handle_errors
def ingest(
    paths: Annotated[list[str], typer.Argument(help="Input files (gzip accepted); a folder stands for the files directly in it.", show_default=False)],
    format: Annotated[str, typer.Option("--format", "-f", help="auto, or one of: " + ", ".join(
        ["riskgate-jsonl", "cognito-user-activity", "cognito-auth-events", "rba-csv", "csv", "parquet"]))] = "auto",
    db: DbOption = None,
    json_out: JsonFlag = False,
    username: Annotated[str | None, typer.Option("--username", help="Username for cognito-auth-events input (AdminListUserAuthEvents output names no user).")] = None,
    username_from_file_name: Annotated[bool, typer.Option("--username-from-file-name", help="cognito-auth-events input: each file is named after its user (alice.json, alice.json.gz), as `riskgate synth` writes them.")] = False,
    user_pool_id: Annotated[str | None, typer.Option("--user-pool-id", help="Pool id for events whose source has none.")] = None,
    mapping: Annotated[str | None, typer.Option("--mapping", help="Column-mapping file (YAML/JSON) for csv and parquet inputs.")] = None,
    geoip_city: GeoCityOption = None,
    geoip_asn: GeoAsnOption = None,
    trusted_proxy: Annotated[list[str] | None, typer.Option("--trusted-proxy", help="CIDR of a proxy whose forwarding header is trusted (repeatable; default: $RISKGATE_TRUSTED_PROXIES, else private and loopback ranges).")] = None,
    client_ip_header: Annotated[str | None, typer.Option("--client-ip-header", metavar="NAME", help="The forwarding header the trusted proxies write, the only one believed: X-Forwarded-For, Forwarded or X-Real-IP (default: $RISKGATE_CLIENT_IP_HEADER, else X-Forwarded-For).")] = None,
    batch_rows: Annotated[int, typer.Option("--batch-rows", min=1, help="Rows per batch (memory bound).")] = DEFAULT_BATCH_ROWS,
) -> None:
    """Load sign-in events into the store: detect the format, normalise, enrich, quarantine bad rows.

    Prints rows read, events added, duplicates skipped and rows quarantined with the most
    frequent reasons; rows_read == events_added + duplicates + quarantined. Feedback the
    inputs carry (Cognito's EventFeedback) is recorded as feedback given, with each batch.
    """
    from ingest.errors import InputFormatError

    if format != "auto" and format not in reader_names():
        raise InputFormatError(f"unknown format {format!r}; expected auto or one of: {', '.join(reader_names())}")
    if username and username_from_file_name:
        raise InputFormatError("give --username or --username-from-file-name, not both")
    policy = ProxyPolicy.from_settings(trusted_proxy, client_ip_header)  # (refused here, before anything is read)
    from risk.config import check_pool_arg, known_pools, unpooled_users_problem

    check_pool_arg(user_pool_id, "--user-pool-id")  # the configuration's rule: it could never be configured
    if mapping:  # read (and refused) before the store is made or anything is read
        from ingest.sources.tabular import load_mapping

        load_mapping(mapping, format)
    paths = expand_folders(paths)
    enricher = Enricher(geo=GeoResolver.from_settings(geoip_city, geoip_asn), proxies=policy)
    options = ReaderOptions(batch_rows=batch_rows, username=username, username_from_file_name=username_from_file_name,
                            user_pool_id=user_pool_id, mapping=mapping)
    prefer_jemalloc()
    from risk import store as risk_store
    from risk.feedback import record_imported

    con = risk_store.connect(db, settings=BULK_SETTINGS)  # (risk's tables too: the feedback read is recorded)
    warnings: list[str] = []
    try:
        pools_before = set(known_pools(con))
        unpooled_before = unpooled_users_problem(con)
        size = total_size(paths)
        show = (not json_out) and size >= PROGRESS_MIN_BYTES and err_console.is_terminal
        with Progress(
            TextColumn("[bold]ingest[/] {task.description}"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[rows]:,} rows"),
            TimeRemainingColumn(),
            console=err_console,
            disable=not show,
            transient=True,
        ) as bar:
            task = bar.add_task("", total=size or None, rows=0)
            state = {"file": None, "base": 0, "last": 0}

            def progress(path: str, done: int, rows: int) -> None:
                if state["file"] != path:
                    state["base"] += state["last"]
                    state["file"], state["last"] = path, 0
                if done >= 0:
                    state["last"] = done
                bar.update(task, completed=state["base"] + state["last"], rows=rows, description=escape(path))

            result = ingest_paths(con, paths, fmt=format, options=options, enricher=enricher, progress=progress,
                                  record_feedback=record_imported)
        # events of a pool the store did not know, in a store of one pool, make the users (and events) loaded without
        # a pool id belong to none: their MFA settings, status and email (every notification) apply to nobody
        if unpooled_before is None and (problem := unpooled_users_problem(con)):
            new = sorted(set(known_pools(con)) - pools_before)
            warnings.append(f"this ingest added events of pool {', '.join(new)}, so the store knows several pools: "
                            + problem)
    finally:
        con.close()
    for e in result.errors:
        err_console.print(styled("error:", "bold red", f" {e}"), highlight=False, soft_wrap=True)
    for text in warnings:  # on stderr, with --json too (and in the object)
        warn(text)
    if json_out:
        out = result.as_json()
        keys = ("rows_read", "events_added", "duplicates", "quarantined", "reasons")
        print(json.dumps({**{k: out[k] for k in keys}, **({"warnings": warnings} if warnings else {})}))
    else:
        console.print(
            f"rows read {result.rows_read:,}  events added {result.events_added:,}  "
            f"duplicates skipped {result.duplicates:,}  quarantined {result.quarantined:,}",
            highlight=False,
        )
        if result.labels_added:
            console.print(f"labels added {result.labels_added:,}", highlight=False)
        if result.feedback_added:
            console.print(f"feedback recorded {result.feedback_added:,}", highlight=False)
        if result.reasons:
            t = Table(title="most frequent quarantine reasons", show_edge=False)
            t.add_column("rows", justify="right")
            t.add_column("reason")
            for reason, n in result.reasons.most_common(5):
                t.add_row(f"{n:,}", reason)
            console.print(t)
    if result.errors:
        raise typer.Exit(1)


@app.command()
@handle_errors
def summary(db: DbOption = None, json_out: JsonFlag = False) -> None:
    """What is in the store: events by type and outcome, countries, networks, devices, labels, quarantine."""
    from risk.config import unpooled_pool

    con = store.connect(db, read_only=None)  # only reads: a store on read-only media too
    try:
        s = store.summary(con, unpooled_pool(con))
        runs = store.recent_runs(con, 5)
    finally:
        con.close()
    if json_out:
        print(json.dumps(s, default=str))
        return
    console.print(styled("store", "bold", f" {store.resolve_db_path(db)}"), highlight=False)
    console.print(
        f"events {s['events']:,}"
        + (f" from {counted(s['users_in_events'], 'user')}, {s['first_event']} .. {s['last_event']}" if s["events"] else "")
        + "; "
        f"users loaded {s['users_loaded']:,}; labels {s['labels']:,}; quarantined rows {s['quarantined']:,}",
        highlight=False,
    )
    if s["events"]:
        console.print(
            f"with context data {s['with_context_data'] / s['events']:.1%}; "
            f"GeoIP resolved {s['geo_resolved'] / s['events']:.1%}",
            highlight=False,
        )
    for title, key, cols in (
        ("events by type and response", "by_event_type", ("type", "response", "events")),
        ("top countries", "top_countries", ("country", "events")),
        ("top networks", "top_networks", ("network", "events")),
        ("top devices", "top_devices", ("device", "events")),
        ("labels", "labels_by_value", ("label", "value", "events")),
        ("quarantine reasons", "quarantine_reasons", ("reason", "rows")),
    ):
        if not s[key]:
            continue
        t = Table(title=title, show_edge=False, title_justify="left")
        for c in cols:
            t.add_column(c, justify="right" if c in ("events", "rows") else "left")
        for row in s[key]:
            t.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in row])
        console.print(t)
    if runs:
        r = runs[0]
        console.print(
            f"last ingest {r['started_at']:%Y-%m-%d %H:%M:%S} {r['status']}: rows read {r['rows_read'] or 0:,}, "
            f"added {r['events_added'] or 0:,}, duplicates {r['duplicates'] or 0:,}, quarantined {r['quarantined'] or 0:,}",
            highlight=False,
        )
