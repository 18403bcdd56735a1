"""``riskgate credentials check | build | verify``.

``check`` reads the password from standard input only (no argument, so it
never lands in shell history or the process list): with no echo through
getpass when standard input is a terminal, else the first line of the pipe.
"""

from __future__ import annotations

import getpass
import json
import sys
from typing import Annotated

import typer

from cli.common import JsonFlag, app, console, counted, err_console, fail, handle_errors, warn
from risk.credentials import (
    PWNED_PATH_ENV,
    CredentialChecker,
    ScanReport,
    build,
    verify,
)

credentials_app = typer.Typer(
    help="Compromised credentials: check a password against breach data; prepare Pwned Passwords downloads.",
    no_args_is_help=True,
)
app.add_typer(credentials_app, name="credentials")

SHOW_ISSUES = 20


def read_password() -> str:
    """One password from standard input: getpass on a terminal, else the first line (newline removed)."""
    stdin = sys.stdin
    if stdin is None:
        raise fail("no standard input to read the password from")
    if stdin.isatty():
        password = getpass.getpass("Password: ")
    else:
        stream = getattr(stdin, "buffer", None)
        raw = stream.readline() if stream is not None else stdin.readline()
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise fail("standard input is not UTF-8 text") from None
        password = raw[:-1] if raw.endswith("\n") else raw
        if password.endswith("\r"):
            password = password[:-1]
    if not password:
        raise fail("no password on standard input (pipe one line, or run in a terminal to be asked)")
    return password


@credentials_app.command("check")
@handle_errors
def check(
    pwned: Annotated[str | None, typer.Option("--pwned", help=f"Pwned Passwords data: a built index, the sorted .txt file, or a folder of range files (default: ${PWNED_PATH_ENV}).", show_default=False)] = None,
    min_count: Annotated[int | None, typer.Option("--min-count", help="Count a password as compromised only when seen at least this often (default: $RISKGATE_PWNED_MIN_COUNT, else 1).", show_default=False)] = None,
    no_common_list: Annotated[bool, typer.Option("--no-common-list", help="Do not use the shipped list of common passwords.")] = False,
    allow_partial: Annotated[bool, typer.Option("--allow-partial", help="Accept a range folder missing some of its 1,048,576 files (with a warning).")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Say whether the password on standard input is compromised and how often it was seen.

    Exit code 0: compromised; 1: not found (or below --min-count); 2: error.
    """
    checker = CredentialChecker.from_env(min_count=min_count, pwned=pwned, use_common_list=not no_common_list,
                                         allow_partial=allow_partial)
    with checker:
        for warning in checker.warnings:
            warn(warning)
        result = checker.check(read_password())
    if json_out:
        console.print_json(json.dumps({**result.as_json(), "min_count": checker.min_count}))
    else:
        console.print(result.describe(), highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(0 if result.compromised else 1)


def _print_report(report: ScanReport, verb: str) -> None:
    if report.layout == "index":
        found = f"{report.issue_count:,} problems"
    else:  # a line's problems, and those of the whole apart (an incomplete range folder is no unusable line)
        whole = report.issue_count - report.unusable_lines
        found = f"{report.unusable_lines:,} unusable lines" + (f", {counted(whole, 'other problem')}" if whole else "")
    console.print(
        f"{verb} {report.source} ({report.layout}): {report.lines_read:,} lines read, {report.hashes:,} hashes, "
        f"{report.padding_skipped:,} padding lines skipped, {found}",
        highlight=False, markup=False, soft_wrap=True,
    )
    if report.skipped_at_build:
        console.print(f"  {report.skipped_at_build:,} lines of its source were skipped when it was built (not a "
                      "problem of the index; `riskgate credentials verify SOURCE` lists them)",
                      highlight=False, markup=False, soft_wrap=True)
    if report.range_files:
        console.print(f"  {report.range_files:,} range files of 1,048,576", highlight=False, markup=False, soft_wrap=True)
    if report.out:
        console.print(f"  wrote {report.out}: {report.records:,} records ({report.merged:,} merged) in {report.seconds:.1f} s",
                      highlight=False, markup=False, soft_wrap=True)
    shown = report.issues[:SHOW_ISSUES]
    for issue in shown:
        err_console.print(f"  {issue}", highlight=False, markup=False, soft_wrap=True)
    rest = report.issue_count - len(shown)
    if rest > 0:  # never announce more than are listed: --json lists what the report kept (up to 1,000)
        listed = len(report.issues) - len(shown)
        where = ("--json lists them" if listed >= rest else f"--json lists {listed:,} of them" if listed
                 else "not listed")
        err_console.print(f"  ... and {rest:,} more ({where})", highlight=False, markup=False, soft_wrap=True)


@credentials_app.command("build")
@handle_errors
def build_cmd(
    path: Annotated[str, typer.Argument(help="The Pwned Passwords SHA-1 file ordered by hash, or a folder of range files.", show_default=False)],
    out: Annotated[str | None, typer.Option("--out", "-o", help="Index file to write (default: PATH.rgpw).", show_default=False)] = None,
    allow_partial: Annotated[bool, typer.Option("--allow-partial", help="Build from a range folder missing some of its 1,048,576 files (reported).")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Turn a Pwned Passwords download into the compact lookup index (streams; bounded memory).

    Malformed lines are reported with file and line number and skipped; the rest is kept.
    Data with no usable hash, data not sorted by hash (a line out of order that is not one damaged line between
    lines in order), or a range folder missing files (without --allow-partial), is refused: no index is written.
    """
    report = build(path, out, allow_partial=allow_partial)
    if json_out:
        console.print_json(json.dumps(report.as_json()))
    else:
        _print_report(report, "built from")


@credentials_app.command("verify")
@handle_errors
def verify_cmd(
    path: Annotated[str, typer.Argument(help="Pwned Passwords data (sorted file, range folder or built index).", show_default=False)],
    json_out: JsonFlag = False,
) -> None:
    """Read Pwned Passwords data (or a built index, every record) through and report problems. Exit code 1 when there are any."""
    report = verify(path)
    if json_out:
        console.print_json(json.dumps(report.as_json()))
    else:
        _print_report(report, "verified")
    raise typer.Exit(1 if report.issue_count else 0)
