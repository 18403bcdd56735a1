"""Running the notebooks in `make test` (nbmake): against a small synthetic store built once per session.

The notebooks read ``RISKGATE_DB``; the kernels nbmake starts inherit this process's environment.
``RISKGATE_NOTEBOOK_APPLY=1`` lets the tuning notebook write its thresholds (to this throw-away store).
"""

import os
import shutil
import tempfile

import pytest

_built: dict[str, str] = {}


def _build_store() -> str:
    from typer.testing import CliRunner

    from cli import app

    folder = tempfile.mkdtemp(prefix="riskgate-notebooks-")
    db = os.path.join(folder, "riskgate.duckdb")
    runner = CliRunner()
    steps = [
        ["synth", "--users", "60", "--days", "20", "--seed", "11", "--out", os.path.join(folder, "ev.jsonl")],
        ["ingest", os.path.join(folder, "ev.jsonl")],
        ["users", "load", os.path.join(folder, "ev.users.json")],
        ["labels", "load", os.path.join(folder, "ev.labels.csv")],
        ["train"],
        ["score"],
    ]
    for args in steps:
        res = runner.invoke(app, [*args, "--db", db] if args[0] != "synth" else args)
        if res.exit_code != 0:
            raise RuntimeError(f"riskgate {' '.join(args)} failed: {res.output}")
    _built["folder"] = folder
    return db


def pytest_runtest_setup(item):
    if item.path.suffix == ".ipynb" and "db" not in _built:
        _built["db"] = _build_store()
        os.environ["RISKGATE_DB"] = _built["db"]
        os.environ["RISKGATE_NOTEBOOK_APPLY"] = "1"


def pytest_sessionfinish(session):
    if "folder" in _built:
        shutil.rmtree(_built["folder"], ignore_errors=True)
