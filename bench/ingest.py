"""Ingest benchmark: riskgate's full ingest against DuckDB's own read_json of the same file.

    .venv/bin/python bench/ingest.py [--events 1000000] [--keep]

Generates the events once with ``riskgate synth`` (riskgate JSON lines) into
bench/out/ (not committed), then runs, each in its own process:

* the floor: ``CREATE TABLE t AS SELECT * FROM read_json(file)`` into a fresh DuckDB file;
* riskgate: ``riskgate ingest file --db fresh.duckdb`` (read, normalise, enrich with
  the default GeoIP databases, store), GeoIP databases already extracted.

Prints rows per second of both, their ratio, and each process's peak memory
(max RSS from wait4). Target: riskgate >= 1/3 of the floor's rate, < 2 GB.
Machines are shared and noisy (the floor alone moves by a third from run to
run): ``--rounds N`` (default 3) runs the two N times, alternating, prints
every round and then the median ratio of the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
PY = sys.executable


def run(cmd: list[str], env: dict | None = None) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in bytes, stdout of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    out = proc.stdout.read().decode()
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{err}")
    return wall, usage.ru_maxrss * 1024, out


def make_events(n: int, seed: int) -> Path:
    path = OUT / f"events-{n}.jsonl"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    raw = OUT / f"synth-{n}.jsonl"
    users = max(200, n // 180)  # the synthetic cadence gives roughly 2 to 3 sign-in events a user a week
    days = 120
    while True:
        run([PY, "-m", "cli", "synth", "--users", str(users), "--days", str(days), "--format", "riskgate-jsonl",
             "--out", str(raw), "--seed", str(seed)])
        with open(raw, "rb") as fh:
            lines = sum(1 for _ in fh)
        if lines >= n:
            break
        users = int(users * n / max(lines, 1) * 1.1) + 1
    with open(raw, "rb") as src, open(path, "wb") as dst:
        for i, line in enumerate(src):
            if i >= n:
                break
            dst.write(line)
    raw.unlink()
    return path


FLOOR = """
import duckdb, sys
con = duckdb.connect(sys.argv[2])
con.execute("SET enable_progress_bar = false")
con.execute("CREATE TABLE t AS SELECT * FROM read_json(?, format='newline_delimited')", [sys.argv[1]])
print(con.execute("SELECT count(*) FROM t").fetchall()[0][0])
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--rounds", type=int, default=3, help="floor and riskgate, alternating, this many times")
    ap.add_argument("--keep", action="store_true", help="keep the stores written (of the last round)")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error(f"--rounds must be at least 1, got {args.rounds}")
    src = make_events(args.events, args.seed)
    size = src.stat().st_size
    # extract the default GeoIP databases before timing (a one-off first-use cost)
    run([PY, "-c", "from ingest.geo import default_database_paths; default_database_paths()"])
    floor_db, ours_db = OUT / "floor.duckdb", OUT / "ours.duckdb"
    env = dict(os.environ)
    env.pop("RISKGATE_GEOIP_CITY", None)
    env.pop("RISKGATE_GEOIP_ASN", None)
    print(f"input: {src.name}, {size / 1e6:,.0f} MB")
    ratios, peaks = [], []
    for k in range(1, args.rounds + 1):
        for p in (floor_db, ours_db):
            for q in (p, Path(str(p) + ".wal")):
                q.unlink(missing_ok=True)
        f_wall, f_rss, f_out = run([PY, "-c", FLOOR, str(src), str(floor_db)])
        o_wall, o_rss, o_out = run([PY, "-m", "cli", "ingest", str(src), "--db", str(ours_db), "--json"], env=env)
        counts = json.loads(o_out)
        n = int(f_out.strip())
        ratio = (counts["rows_read"] / o_wall) / (n / f_wall)
        ratios.append(ratio)
        peaks.append(o_rss)
        print(f"round {k}: {n:,} events")
        print(f"  floor  duckdb read_json -> table: {f_wall:7.2f} s  {n / f_wall:>10,.0f} rows/s  "
              f"peak {f_rss / 2**20:,.0f} MiB")
        print(f"  riskgate ingest (full pipeline):  {o_wall:7.2f} s  {counts['rows_read'] / o_wall:>10,.0f} rows/s  "
              f"peak {o_rss / 2**20:,.0f} MiB")
        print(f"  ratio riskgate / floor: {ratio:.3f}")
        print(f"  counts: {json.dumps({c: counts[c] for c in ('rows_read', 'events_added', 'duplicates', 'quarantined')})}")
    print(f"median ratio of {len(ratios)} rounds: {statistics.median(ratios):.3f}   (target >= 0.333); "
          f"range {min(ratios):.3f}-{max(ratios):.3f}; riskgate peak at most {max(peaks) / 2**20:,.0f} MiB")
    if not args.keep:
        for p in (floor_db, ours_db):
            p.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
