"""Tuning benchmark: ``riskgate tune`` and ``riskgate whatif`` over a store of scored events, time and peak memory.

    .venv/bin/python bench/tune.py [--events 1000000]

Uses ``bench/score.py``'s store with every event scored (synthetic events
with users and labels loaded and a model trained, scored once, untimed; kept
in bench/out/, not committed; the dashboard's benchmark uses it too), then
runs ``riskgate tune --max-challenged 0.01`` and ``riskgate whatif`` over the
whole history, each in its own process, and prints the wall time and the peak memory (max RSS
from wait4) of each. Both read every assessed sign-in of the period into
memory: their peak grows with the period.
"""

from __future__ import annotations

import argparse
import json

from siblings import load as load_sibling  # bench/ is on sys.path when run as a script

_score = load_sibling("score")
run, OUT, PY = _score.run, _score.OUT, _score.PY


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    db = _score.scored_store(args.events, args.seed)
    for what in (["tune", "--max-challenged", "0.01"], ["whatif"]):
        wall, rss, out = run([PY, "-m", "cli", *what, "--db", str(db), "--json"])
        res = json.loads(out)
        events = res["tradeoff"]["events"] if what[0] == "tune" else res["events"]
        print(f"riskgate {' '.join(what)} over {events:,} assessed events: {wall:.2f} s  peak {rss / 2**20:,.0f} MiB")


if __name__ == "__main__":
    main()
