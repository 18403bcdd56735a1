import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def store_path(tmp_path, monkeypatch):
    """A fresh store file for one test; RISKGATE_DB points at it."""
    path = tmp_path / "riskgate.duckdb"
    monkeypatch.setenv("RISKGATE_DB", str(path))
    return path
