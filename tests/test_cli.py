"""The command line loads only the module of the command it runs (cli.COMMANDS), and still knows them all."""

import json
import subprocess
import sys
from pathlib import Path

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


def _riskgate(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_values_that_look_like_rich_markup_or_emoji_codes_are_printed_as_they_are(tmp_path):
    """Whatever an event, a file or a document carries is printed literally: "[/]" used to crash ``summary`` for
    good (a Rich MarkupError once such a row was quarantined), "[bold]x" lost its brackets and ":a:" became an
    emoji in error messages."""
    src = tmp_path / "mk.jsonl"
    ctx = lambda ip, agent: {"IpAddress": ip, "ServerName": "a", "ServerPath": "/",  # noqa: E731
                             "HttpHeaders": [{"headerName": "User-Agent", "headerValue": agent}]}
    rows = [
        {"EventId": "m1", "Username": "alice", "EventType": "SignIn", "EventResponse": "Pass",
         "CreationDate": "2026-03-01T08:15:02Z", "ContextData": ctx("[/]", "x")},
        {"EventId": "m2", "Username": "bob", "EventType": "SignIn", "EventResponse": "Pass",
         "CreationDate": "2026-03-01T08:16:02Z", "ContextData": ctx("[bold]1.2.3.4", "x")},
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    db = str(tmp_path / "x.duckdb")
    r = _riskgate("ingest", str(src), "--db", db)
    assert r.returncode == 0, r.stderr
    assert "quarantined 2" in r.stdout
    r = _riskgate("summary", "--db", db)
    assert r.returncode == 0, r.stderr
    assert 'IpAddress "[/]" is not an IPv4 or IPv6 address' in r.stdout
    assert 'IpAddress "[bold]1.2.3.4" is not an IPv4 or IPv6 address' in r.stdout
    for doc, shown in (({"ClientId": "web[/]app", "RiskExceptionConfiguration": {}}, "'web[/]app'"),
                       ({"AccountTakeoverRiskConfiguration": {"NotifyConfiguration": {"SourceArn": "arn:a:b::1:c"},
                                                              "Actions": {}}}, "'arn:a:b::1:c' is too short")):
        (tmp_path / "c.json").write_text(json.dumps(doc))
        r = _riskgate("config", "validate", str(tmp_path / "c.json"))
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert shown in r.stderr and r.stderr.startswith("error: "), r.stderr


def test_version_prints_the_installed_version_which_is_pyprojects():
    import tomllib
    from importlib.metadata import version

    code, out, _mods = _imports("--version")
    declared = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
    assert code == 0 and out == f"riskgate {version('riskgate')}\n" == f"riskgate {declared['version']}\n"


def test_a_refused_option_or_argument_is_one_line_on_stderr_and_exit_2(tmp_path):
    """typer printed click's usage errors as the usage, a hint and a boxed panel (five or six lines); the README
    says a refused option is one line on stderr, exit code 2, as every other refusal is. Run as a user runs it."""
    db = str(tmp_path / "s.duckdb")
    cases = {
        ("events", "alice", "--max-results", "abc", "--db", db):
            "error: Invalid value for '--max-results': Input should be a valid integer, unable to parse string as "
            "an integer (see `riskgate events --help`)",
        ("export", "--out", str(tmp_path / "x.csv"), "--bogus"):
            "error: No such option: --bogus (Possible options: --out) (see `riskgate export --help`)",
        ("events",): "error: Missing argument 'username'. (see `riskgate events --help`)",
        ("nosuch",): "error: No such command 'nosuch'. (see `riskgate --help`)",
    }
    for argv, line in cases.items():
        r = subprocess.run([sys.executable, "-c", "import sys, cli; sys.argv[0] = 'riskgate'; cli.main()", *argv],
                           capture_output=True, text=True, timeout=120, env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"})
        assert (r.returncode, r.stdout, r.stderr) == (2, "", line + "\n"), argv
    assert not list(tmp_path.iterdir())  # refused before any store was made
