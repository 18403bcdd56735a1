"""The notebooks are committed with outputs cleared and hold no SQL of their own (they import the packages)."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_both_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == ["01_explore.ipynb", "02_tune_thresholds.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_are_cleared_and_no_sql_is_written_in_a_notebook(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code
    for cell in code:
        assert cell.get("outputs") == [] and cell.get("execution_count") is None, "clear the outputs"
        src = "".join(cell["source"]).upper()
        assert "SELECT " not in src and ".EXECUTE(" not in src and ".SQL(" not in src
