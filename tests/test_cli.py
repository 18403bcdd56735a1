"""The command line loads only the module of the command it runs (cli.COMMANDS), and still knows them all."""

import json
import subprocess
import sys

import cli
from cli import app


def _registered() -> dict[str, str]:
    """Every top-level command and group of the whole application -> the module that registers it."""
    out = {}
    for c in app.registered_commands:
        out[c.name or c.callback.__name__.replace("_", "-")] = c.callback.__module__
    for g in app.registered_groups:
        out[g.name] = {c.callback.__module__ for c in g.typer_instance.registered_commands}.pop()
    return out


def test_every_command_is_mapped_to_the_module_that_registers_it():
    assert {name: f"cli.{module}" for name, module in cli.COMMANDS.items()} == _registered()
    assert set(cli.COMMANDS.values()) == set(cli.command_modules())


_RUN = """
import atexit, json, sys
atexit.register(lambda: sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n"))
sys.argv = ["riskgate", *sys.argv[1:]]
import cli
cli.main()
"""


def _imports(*args: str) -> tuple[int, str, set[str]]:
    """Exit code, stdout and the modules imported by ``riskgate ARGS`` (as the console script runs it)."""
    r = subprocess.run([sys.executable, "-c", _RUN, *args], capture_output=True, text=True, timeout=120)
    line = next(x for x in r.stderr.splitlines() if x.startswith("MODULES "))
    return r.returncode, r.stdout, set(json.loads(line[len("MODULES "):]))


def test_a_command_imports_only_its_own_module():
    code, out, mods = _imports("serve", "--help")
    assert code == 0 and "POST /v1/evaluate" in out
    assert "cli.serve_cmd" in mods
    assert not mods & {"cli.ingest_cmd", "cli.config_cmd", "cli.synth_cmd", "risk.config"}
    # a group even with one command module loaded: typer would run a lone command without its name
    assert "Usage: riskgate serve [OPTIONS]" in " ".join(out.split())


def test_help_and_unknown_names_load_every_command():
    code, out, mods = _imports("--help")
    assert code == 0
    assert {f"cli.{m}" for m in cli.command_modules()} <= mods
    for name in ("ingest", "score", "credentials", "serve"):
        assert name in out
    code, _, mods = _imports("no-such-command")
    assert code == 2 and {f"cli.{m}" for m in cli.command_modules()} <= mods
