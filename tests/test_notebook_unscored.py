"""`notebooks/01_explore.ipynb` on a store whose events are not assessed yet (ingested only, no model): it says to
run `riskgate score` instead of failing in its first plot ("no numeric data to plot")."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.service_support import rg

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "01_explore.ipynb"


def test_the_explore_notebook_runs_on_an_unscored_store(tmp_path, monkeypatch):
    rg("synth", "--users", "20", "--days", "5", "--seed", "5", "--out", tmp_path / "ev.jsonl")
    db = tmp_path / "s.duckdb"
    rg("ingest", tmp_path / "ev.jsonl", db=db)
    rg("models", db=db)  # opened once read-write by a risk command: its tables exist, no model, nothing scored
    monkeypatch.setenv("RISKGATE_DB", str(db))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    try:
        NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    except Exception as exc:  # noqa: BLE001 - the cell's error, in the failure
        pytest.fail(f"the notebook failed on an unscored store: {exc}")
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "no assessed sign-ins in this store yet: run `riskgate train` (once) and `riskgate score`" in printed
