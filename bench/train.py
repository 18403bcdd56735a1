"""Training benchmark: ``riskgate train`` on a large store, its time and peak memory per ``--chunk-rows``.

    .venv/bin/python bench/train.py [--events 5000000] [--chunk-rows 1000000,10000000] [--labels]

Builds (once, in bench/out/, not committed) a store of ``--events`` events with
``bench/features.py``'s generator (DuckDB SQL, seeded: 50,000 users over 90
days), then runs ``riskgate train`` on it in its own process once per
``--chunk-rows`` value, and prints the wall time and the peak memory (max RSS
from wait4) of each. ``--chunk-rows`` at or above the number of events is one
call over the whole window (how training computed its features before
2026-11-27). Without ``--labels`` it is ``--no-labels`` (the generated store
has no labels: the statistical model).
"""

from __future__ import annotations

import argparse

from siblings import load as load_sibling  # bench/ is on sys.path when run as a script

_ingest = load_sibling("ingest")
_features = load_sibling("features")
run, OUT, PY = _ingest.run, _ingest.OUT, _ingest.PY


def build_store(n: int, users: int):
    """bench/out/train-<n>.duckdb, generated once."""
    import risk.store

    db = OUT / f"train-{n}.duckdb"
    if db.exists():
        return db
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = OUT / "train-build.duckdb"
    tmp.unlink(missing_ok=True)
    con = risk.store.connect(tmp)
    try:
        _features.build(con, n, users)
    finally:
        con.close()
    tmp.rename(db)
    return db


def sizes(text: str) -> list[int]:
    out = [int(x) for x in text.split(",")]
    if any(x < 1 for x in out):
        raise argparse.ArgumentTypeError(f"chunk sizes must be at least 1, got {text!r}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--chunk-rows", type=sizes, default=[1_000_000, 10_000_000],
                    help="one run per value, separated by commas")
    ap.add_argument("--labels", action="store_true", help="train with --labels (default: --no-labels)")
    args = ap.parse_args()
    db = build_store(args.events, args.users)
    for rows in args.chunk_rows:
        wall, rss, _ = run([PY, "-m", "cli", "train", "--db", str(db), "--json", "--chunk-rows", str(rows),
                            "--labels" if args.labels else "--no-labels"])
        how = "one call" if rows >= args.events else f"windows of {rows:,}"
        print(f"train on {args.events:,} events, features in {how}: {wall:.1f} s  peak {rss / 2**30:.2f} GiB",
              flush=True)


if __name__ == "__main__":
    main()
