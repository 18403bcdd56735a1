"""riskgate's command line: ``riskgate COMMAND``. Thin: each command calls one library function.

Every module ``cli/<name>_cmd.py`` registers its commands on ``cli.common.app``
when imported. ``riskgate COMMAND`` imports only the module of that command
(:data:`COMMANDS`): importing every module (the risk configuration's models,
the synthetic population, ...) had cost each command 0.1-0.2 s of its start.
``riskgate --help``, or a name that is no command, imports them all, and so
does ``cli.app``: the application with every command (for ``CliRunner``).
"""

from __future__ import annotations

import importlib
import sys

#: the module (``cli/<module>.py``) that registers each top-level command or command group
COMMANDS = {
    "ingest": "ingest_cmd", "summary": "ingest_cmd",
    "users": "users_cmd", "labels": "users_cmd",
    "synth": "synth_cmd",
    "train": "train_cmd", "models": "train_cmd",
    "score": "score_cmd", "events": "score_cmd", "export": "score_cmd", "report": "score_cmd",
    "config": "config_cmd", "mode": "config_cmd",
    "credentials": "credentials_cmd",
    "feedback": "feedback_cmd",
    "tune": "tune_cmd", "whatif": "tune_cmd",
    "dashboard": "dashboard_cmd",
    "serve": "serve_cmd",
}


def command_modules() -> list[str]:
    """Every ``*_cmd`` module of this package, by name."""
    import pkgutil  # (here: ``main``'s handling of Ctrl-C begins after this module's own imports)

    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.endswith("_cmd"))


def load(modules: list[str] | None = None):
    """The application with the commands of ``modules`` registered (every command module: None)."""
    for name in command_modules() if modules is None else modules:
        importlib.import_module(f"{__name__}.{name}")
    from cli.common import app

    return app


def __getattr__(name: str):
    if name == "app":  # the whole application (not cli/common.py's, whose commands are registered on import)
        return load()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    name = next((a for a in args if not a.startswith("-")), None)
    try:  # the imports take a moment: Ctrl-C then ends as it does later, not with a traceback
        app = load([COMMANDS[name]] if name in COMMANDS else None)
        from cli.common import (EXIT_READER_GONE, end_quietly_if_reader_gone, one_line_usage_errors, stdout_stat,
                                stdout_to_devnull_since, whole_writes_to_stdout)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None

    before = stdout_stat()
    one_line_usage_errors()
    whole_writes_to_stdout()
    try:
        app(args=args)
    except SystemExit as exc:
        # typer's help ends with 1 when stdout's reader went away (``riskgate --help | head``), once Rich has
        # pointed stdout at /dev/null (and only then: a command's own exit 1, ``credentials check`` not finding the
        # password, stays 1 whoever reads its output)
        if exc.code == 1 and stdout_to_devnull_since(before):
            raise SystemExit(EXIT_READER_GONE) from None
        raise
    finally:  # what is still buffered for stdout: a reader that went away (``| head``) ends the command quietly
        try:
            if sys.stdout is not None:  # (none when it was closed: ``riskgate ... >&-``)
                sys.stdout.flush()
        except OSError as exc:
            end_quietly_if_reader_gone(exc)
            raise

