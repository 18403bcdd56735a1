"""Every CLI command and every option of it is documented in the README (sqlite-utils' test_docs habit)."""

import re
from pathlib import Path

import pytest
import typer.main

from cli import app

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _commands(group, prefix=()):
    for name, cmd in sorted(group.commands.items()):
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,), cmd


COMMANDS = list(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize("path, cmd", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_command_is_in_the_readme(path, cmd):
    assert f"riskgate {' '.join(path)}" in README, f"`riskgate {' '.join(path)}` is not documented in README.md"


@pytest.mark.parametrize("path, cmd", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_command_options_are_in_the_readme(path, cmd):
    missing = []
    for p in cmd.params:
        if getattr(p, "param_type_name", None) != "option" or p.name in ("help",):
            continue
        longs = [o for o in p.opts + p.secondary_opts if o.startswith("--")]
        if longs and not any(o in README for o in longs) and longs != ["--db"] and longs != ["--json"]:
            missing.append("/".join(longs))
    assert not missing, f"riskgate {' '.join(path)}: options not in README.md: {missing}"


def test_environment_variables_used_in_code_are_documented():
    root = Path(__file__).resolve().parent.parent
    used = set()
    for pkg in ("ingest", "risk", "cli"):
        for f in (root / pkg).rglob("*.py"):
            used |= set(re.findall(r'"(RISKGATE_[A-Z_]+)"', f.read_text()))
    missing = sorted(v for v in used if v not in README)
    assert not missing, f"environment variables not in README.md: {missing}"


def test_the_readmes_dashboard_passwords_are_ones_riskgate_dashboard_takes():
    """The README's example was 'a long passphrase': 15 characters besides the blanks, refused."""
    from dashboards.auth import check_password

    examples = re.findall(r"RISKGATE_DASHBOARD_PASSWORD='([^']*)'", README)
    assert examples
    for example in examples:
        check_password(example)


def test_the_readme_names_the_commands_that_take_no_db():
    """The README said "Every command takes `--db PATH`": ``synth``, ``credentials check|build|verify`` and ``config
    validate`` take none (they never open the store). The sentence names exactly the commands without it."""
    without = sorted(" ".join(path) for path, cmd in COMMANDS if not any("--db" in p.opts for p in cmd.params))
    m = re.search(r"takes `--db PATH`[^:]*: all but (.+?), which never open it", README, re.S)
    assert m, "the README does not say which commands take no --db"
    named = []
    for item in re.findall(r"`([^`]+)`", m.group(1)):
        *group, last = item.split()
        named += [" ".join([*group, alt]) for alt in last.split("|")]
    assert sorted(named) == without
