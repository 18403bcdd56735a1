"""An ingest killed with SIGKILL at any moment leaves the store consistent; running it again completes it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from tests.events_gen import many, write_jsonl
from tests.geo_fixtures import build

ROOT = Path(__file__).resolve().parent.parent
N = 12_000


def _env(tmp_path):
    city, asn = build(tmp_path)
    env = dict(os.environ, RISKGATE_GEOIP_CITY=str(city), RISKGATE_GEOIP_ASN=str(asn), PYTHONPATH=str(ROOT))
    env.pop("RISKGATE_DB", None)
    return env


def _count(db):
    con = duckdb.connect(str(db))  # read-write: also proves the store opens and recovers after the kill
    try:
        return con.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchall()[0]
    finally:
        con.close()


def test_kill_9_mid_ingest_then_rerun_completes_without_duplicates(tmp_path):
    src = tmp_path / "events.jsonl"
    write_jsonl(src, many(N))
    env = _env(tmp_path)
    cmd = [sys.executable, "-m", "cli", "ingest", str(src), "--batch-rows", "500", "--json"]
    partial_seen = None
    for attempt in range(6):
        db = tmp_path / f"store{attempt}.duckdb"
        wal = Path(str(db) + ".wal")
        proc = subprocess.Popen(cmd + ["--db", str(db)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # kill once the first batches are committed (the write-ahead log has grown), whatever the machine's speed
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if wal.exists() and wal.stat().st_size > 200_000 * (attempt + 1):
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if not db.exists():
            continue
        total, distinct = _count(db)
        assert total == distinct  # never a duplicate, even mid-run
        if 0 < total < N:
            partial_seen = (db, total)
            break
    assert partial_seen, "could not kill the ingest mid-run"
    db, before = partial_seen
    assert before % 500 == 0  # whole batches only: each is one transaction
    done = subprocess.run(cmd + ["--db", str(db)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    import json

    out = json.loads(done.stdout)
    assert out["rows_read"] == N
    assert out["duplicates"] == before and out["events_added"] == N - before
    assert _count(db) == (N, N)
    con = duckdb.connect(str(db))
    statuses = sorted(r[0] for r in con.execute("SELECT status FROM ingest_runs").fetchall())
    con.close()
    assert statuses == ["completed", "interrupted"]
