"""Tuning benchmark: ``riskgate tune`` and ``riskgate whatif`` over a store of scored events, time and peak memory.

    .venv/bin/python bench/tune.py [--events 1000000]

Uses ``bench/score.py``'s store (synthetic events with users and labels
loaded and a model trained; built once in bench/out/, not committed), scores
every event once (untimed, kept in bench/out/), then runs ``riskgate tune
--max-challenged 0.01`` and ``riskgate whatif`` over the whole history, each
in its own process, and prints the wall time and the peak memory (max RSS
from wait4) of each. Both read every assessed sign-in of the period into
memory: their peak grows with the period.
"""

from __future__ import annotations

import argparse
import json
import shutil

from siblings import load as load_sibling  # bench/ is on sys.path when run as a script

_score = load_sibling("score")
run, OUT, PY = _score.run, _score.OUT, _score.PY


def scored_store(n: int, seed: int):
    """bench/out/score-base-<n>-scored.duckdb: bench/score.py's store with every event scored, made once."""
    base = _score.build_store(n, seed)
    db = OUT / f"{base.stem}-scored.duckdb"
    if not db.exists():
        tmp = OUT / "score-scoring.duckdb"
        shutil.copy(base, tmp)
        run([PY, "-m", "cli", "score", "--db", str(tmp), "--chunk-rows", "500000", "--json"])
        tmp.rename(db)
    return db


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    db = scored_store(args.events, args.seed)
    for what in (["tune", "--max-challenged", "0.01"], ["whatif"]):
        wall, rss, out = run([PY, "-m", "cli", *what, "--db", str(db), "--json"])
        res = json.loads(out)
        events = res["tradeoff"]["events"] if what[0] == "tune" else res["events"]
        print(f"riskgate {' '.join(what)} over {events:,} assessed events: {wall:.2f} s  peak {rss / 2**20:,.0f} MiB")


if __name__ == "__main__":
    main()
