"""The dashboard while a batch job writes the store: a page load during a real `riskgate score` run."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from dashboards import common
from tests.service_support import rg
from tests.storedb import q

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboards" / "app.py")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Some thousands of synthetic events ingested and a model trained (no labels: faster); nothing scored yet."""
    d = tmp_path_factory.mktemp("live")
    db = d / "base.duckdb"
    rg("synth", "--users", 120, "--days", 30, "--seed", 3, "--out", d / "ev.jsonl")
    rg("ingest", d / "ev.jsonl", "--db", db)
    rg("train", "--no-labels", "--db", db)
    return db


def test_a_page_loads_while_riskgate_score_writes_the_store(trained, tmp_path, monkeypatch):
    db = tmp_path / "s.duckdb"
    shutil.copy(trained, db)
    monkeypatch.setenv("RISKGATE_DB", str(db))
    monkeypatch.delenv("RISKGATE_DASHBOARD_PASSWORD", raising=False)
    monkeypatch.setattr(common, "PREFETCH", False)
    old = st_config.get_option("server.address")
    st_config.set_option("server.address", "127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "cli", "score", "--db", str(db), "--chunk-rows", "500", "--json"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = Path(f"{db}.lock")
        deadline = time.monotonic() + 60
        while not (lock.exists() and f"pid {proc.pid}" in lock.read_text(errors="replace")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "riskgate score never took the store"
            time.sleep(0.02)
        assert proc.poll() is None  # the job holds the store now
        at = AppTest.from_file(APP, default_timeout=120).run()  # waits its turn, reads between two chunks
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, [e.value for e in at.error]
        shown = {m.label: m.value for m in at.metric}
        assert int(shown["Sign-ins"].replace(",", "")) > 0
        at.switch_page("views/jobs.py").run()
        assert not at.exception and not at.error
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        st_config.set_option("server.address", old)
    assert proc.returncode == 0, err
    [(events, assessed)] = q(db, "SELECT (SELECT count(*) FROM events), "
                                 "(SELECT count(DISTINCT event_id) FROM assessments)")
    assert events == assessed > 1000  # the job finished its work despite the visitor
    assert '"events_scored": %d' % events in out
