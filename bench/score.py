"""Scoring benchmark: 1,000,000 stored events scored end to end (features, model, decision, write).

    .venv/bin/python bench/score.py [--events 1000000] [--chunk-rows 500000]

Chunks of 500,000 by default, twice the CLI's 250,000: the run is about 5 % faster and peaks
about 0.8 GB higher (README, *Scoring*); ``--chunk-rows 250000`` measures the CLI's default.

Builds (once, in bench/out/, not committed) a store of synthetic events with users and
labels loaded and a model trained, then times ``riskgate score`` on a fresh copy in its
own process and prints events per second and peak memory (max RSS from wait4).
Target: at least 100,000 events/s on a 2-core machine, under 4 GB.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from siblings import load as load_sibling  # bench/ is on sys.path when run as a script

_b = load_sibling("ingest")  # its helpers
make_events, run, OUT, PY = _b.make_events, _b.run, _b.OUT, _b.PY


def build_store(n: int, seed: int) -> Path:
    db = OUT / f"score-base-{n}.duckdb"
    if db.exists():
        return db
    src = make_events(n, seed)
    tmp = OUT / "score-build.duckdb"
    tmp.unlink(missing_ok=True)
    run([PY, "-m", "cli", "ingest", str(src), "--db", str(tmp)])
    users = OUT / f"synth-{n}.users.json"
    labels = OUT / f"synth-{n}.labels.csv"
    if users.exists():
        run([PY, "-m", "cli", "users", "load", str(users), "--db", str(tmp)])
    if labels.exists():
        run([PY, "-m", "cli", "labels", "load", str(labels), "--db", str(tmp)])
    run([PY, "-m", "cli", "train", "--db", str(tmp)])
    tmp.rename(db)
    return db


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--chunk-rows", type=int, default=500_000)
    args = ap.parse_args()
    base = build_store(args.events, args.seed)
    db = OUT / "score-run.duckdb"
    shutil.copy(base, db)
    wall, rss, out = run([PY, "-m", "cli", "score", "--db", str(db), "--chunk-rows", str(args.chunk_rows), "--json"])
    res = json.loads(out)
    n = res["events_scored"]
    print(f"scored {n:,} events in {res['chunks']} chunks: {wall:.2f} s  {n / wall:,.0f} events/s  "
          f"peak {rss / 2**20:,.0f} MiB   (target >= 100,000 events/s, < 4 GiB)")
    print(f"by level: {res['by_level']}")
    print(f"by decision: {res['by_decision']}")
    db.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
