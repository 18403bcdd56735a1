"""The notebooks on a store whose events are not assessed yet (ingested only, no model, with or without the risk
tables): `01_explore` says to run `riskgate score` instead of failing in its first plot ("no numeric data to plot")
or on the missing tables (a CatalogException); `02_tune_thresholds` says there is nothing to tune yet (it raised
TuningError), and neither keeps the store: `riskgate score`, run while the kernel is still open, is not kept
waiting (it waited for the notebook's connection, which the failed cell never closed)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.service_support import rg

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.mark.parametrize("risk_tables", [True, False], ids=["unscored", "ingested-only"])
def test_the_notebooks_run_on_an_unscored_store_and_leave_it_free(tmp_path, monkeypatch, risk_tables):
    rg("synth", "--users", "20", "--days", "5", "--seed", "5", "--out", tmp_path / "ev.jsonl")
    db = tmp_path / "s.duckdb"
    rg("ingest", tmp_path / "ev.jsonl", db=db)
    if risk_tables:
        rg("models", db=db)  # opened once read-write by a risk command: its tables exist, no model, nothing scored
    monkeypatch.setenv("RISKGATE_DB", str(db))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("RISKGATE_STORE_WAIT", "5")
    said = {"01_explore.ipynb": "no assessed sign-ins in this store yet: run `riskgate train` (once) and `riskgate score`",
            "02_tune_thresholds.ipynb": "nothing to tune yet: no assessed sign-ins in the period"}
    for name, message in said.items():
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        client = NotebookClient(nb, timeout=120, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}})
        with client.setup_kernel():  # the kernel stays up, as an open notebook's does
            try:
                for index, cell in enumerate(nb.cells):
                    client.execute_cell(cell, index)
            except Exception as exc:  # noqa: BLE001 - the cell's error, in the failure
                pytest.fail(f"{name} failed on an unscored store: {exc}")
            printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                              for o in c.get("outputs", []))
            assert message in printed, (name, printed[-2000:])
            rg("models", db=db)  # another process opens the store read-write while the kernel is open (waits 5 s at most)
