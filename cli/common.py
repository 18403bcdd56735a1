"""The typer application and what every command shares (STYLE.md, habit 8).

Each command module (``cli/*_cmd.py``) registers its commands on ``app``;
a command opens the store, calls one library function, and prints. Library
errors (``RiskgateError``) become a one-line message and exit code 2.
"""

from __future__ import annotations

import errno
import functools
import io
import os
import select
import sys
from typing import Annotated, Callable, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from ingest.errors import RiskgateError, counted, interrupted  # noqa: F401 (counted: for the commands)

app = typer.Typer(
    name="riskgate",
    help="riskgate: an open account-takeover risk engine (ingest, score, decide as a Cognito risk configuration would).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class _Console(Console):
    """Rich's console, ending with :data:`EXIT_READER_GONE` (Rich's own: 1) when stdout's reader went away."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        _stdout_to_devnull()
        raise SystemExit(EXIT_READER_GONE)


#: The exit code of a command whose standard output's reader went away (``riskgate export --out /dev/stdout |
#: head``): 128 + SIGPIPE, what a shell reports for ``cat`` or ``grep`` stopped the same way.
EXIT_READER_GONE = 141

# Text is printed as it is: a username, an IP field, a file name or a reason quoting a value may hold "[/]" or
# ":a:", which Rich would otherwise read as markup (an error, or text lost) or an emoji. Styling goes through
# :func:`styled`.
console = _Console(markup=False, emoji=False)
err_console = _Console(stderr=True, markup=False, emoji=False)


def styled(label: str, style: str, rest: str = "") -> Text:
    """``label`` in ``style`` followed by ``rest``, both printed literally."""
    return Text.assemble((label, style), rest)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("riskgate")
        except PackageNotFoundError:  # run from a checkout that was never installed
            v = "unknown (not installed)"
        console.print(f"riskgate {v}", highlight=False)
        raise typer.Exit()


@app.callback()
def _commands(
    show_version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                               help="Print riskgate's version and exit.")] = False,
) -> None:
    # a group, also when only one command module is loaded (``cli.main``): typer would otherwise run a lone
    # command without its name
    pass


DbOption = Annotated[
    str | None,
    typer.Option("--db", help="DuckDB store file (default: $RISKGATE_DB, else ./riskgate.duckdb).", show_default=False),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]

F = TypeVar("F", bound=Callable)


def fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(styled("error:", "bold red", f" {message}"), highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _usage_error(exc) -> None:
    """A refused option or argument (click's UsageError: ``--max-results abc``, an unknown option, a missing
    argument) as every other refusal is: one line on stderr, ``error: ...`` and the command's ``--help`` to see
    (typer printed the usage, a hint and a boxed panel: five or six lines). The exit code stays click's, 2."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # the help was printed: nothing to add
        return
    ctx = getattr(exc, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    message = " ".join(exc.format_message().split())
    err_console.print(styled("error:", "bold red", f" {message}{hint}"), highlight=False, soft_wrap=True)


def one_line_usage_errors() -> None:
    """Make typer (pinned in pyproject.toml) print click's usage errors with :func:`_usage_error`: it prints them
    with this function of its ``rich_utils`` (``riskgate``'s ``main`` calls this before it runs a command)."""
    import typer.rich_utils

    typer.rich_utils.rich_format_error = _usage_error


def warn(message: str) -> None:
    """A warning on stderr (the command goes on), printed literally."""
    err_console.print(styled("warning:", "yellow", f" {message}"), highlight=False, soft_wrap=True)


def _broken_pipe(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was caused by, a write to a pipe whose reader has gone (EPIPE)."""
    return any(isinstance(e, OSError) and e.errno == errno.EPIPE for e in (exc, exc.__cause__))


def stdout_reader_gone() -> bool:
    """Whether this process's standard output is a pipe (or socket) whose reader has closed it: its write end
    then polls as an error."""
    try:
        poller = select.poll()
        poller.register(sys.__stdout__.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no standard output, or one without a file
        return False


def stdout_stat() -> tuple | None:
    """(device, inode) of the file this process's standard output writes to (None without one)."""
    try:
        st = os.fstat(sys.__stdout__.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return (st.st_dev, st.st_ino)


def stdout_to_devnull_since(before: tuple | None) -> bool:
    """Whether standard output, which wrote to the file ``before`` (:func:`stdout_stat`), has since been pointed at
    /dev/null (as Rich does when its reader went away)."""
    try:
        st = os.stat(os.devnull)
    except OSError:
        return False
    devnull = (st.st_dev, st.st_ino)
    return before is not None and before != devnull and stdout_stat() == devnull


def end_quietly_if_reader_gone(exc: BaseException) -> None:
    """When ``exc`` is a broken pipe and the reader of standard output went away, end as a Unix
    filter does: nothing more on stdout or stderr, exit code :data:`EXIT_READER_GONE`. Whatever the command
    committed before stays committed. A broken pipe elsewhere (a named FIFO's reader) is not this: it returns."""
    if not _broken_pipe(exc) or not stdout_reader_gone():
        return
    _stdout_to_devnull()
    sys.exit(EXIT_READER_GONE)


def whole_writes_to_stdout() -> None:
    """Make each write to standard output write all of its text or fail (``riskgate``'s ``main`` calls this before
    it runs a command), whatever prints it: ``typer.echo``, ``print``, Rich's console.

    Unbuffered (``PYTHONUNBUFFERED``, ``python -u``), ``sys.stdout`` hands a write straight to the file, and a pipe
    whose reader leaves in the middle of it (``riskgate users list --json | head -c 1`` of a 1 MB answer) takes a
    part: CPython's text layer does not look at how much its unbuffered file wrote, so the rest was lost without an
    error and the command ended with 0 instead of :data:`EXIT_READER_GONE`. A buffered writer writes the rest, or
    fails with the broken pipe (which :func:`handle_errors` and ``main`` end quietly with 141); line buffered, each
    line still reaches the reader as soon as it is printed, as unbuffered output did."""
    out = sys.stdout
    if out is None or not isinstance(getattr(out, "buffer", None), io.RawIOBase):  # none, or buffered already
        return
    try:
        fd = out.fileno()
    except (OSError, ValueError):
        return
    out.flush()
    sys.stdout = open(fd, "w", buffering=1, encoding=out.encoding, errors=out.errors, closefd=False)  # 1: by line


def _stdout_to_devnull() -> None:
    """Point standard output at /dev/null: the interpreter's last flush would fail again and print "Exception
    ignored ..." on stderr."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.__stdout__.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def handle_errors(fn: F) -> F:
    """Turn library errors into a clean message and exit code 2 (no traceback); Ctrl-C, also when DuckDB reports it
    as the error of the query it interrupted, into "interrupted" and exit code 130; a standard output whose reader
    went away (piped into ``head``) into a quiet exit, code 141 (:func:`end_quietly_if_reader_gone`)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (Exception, KeyboardInterrupt) as exc:
            if interrupted(exc):
                err_console.print("interrupted")
                sys.exit(130)
            end_quietly_if_reader_gone(exc)
            if isinstance(exc, RiskgateError):
                raise fail(str(exc)) from None
            # a read-only command on a store no command of this version has opened read-write yet (only
            # ingested, say): its tables are missing; say how to migrate it instead of a traceback
            if type(exc).__name__ == "CatalogException" and "does not exist" in str(exc):
                raise fail(f"the store lacks a table this command reads ({str(exc).splitlines()[0]}): open it once "
                           "read-write to migrate it, e.g. `riskgate models --db PATH`") from None
            raise

    return wrapper  # type: ignore[return-value]
