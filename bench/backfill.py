"""Backfill benchmark: scoring every event of a large store in many chunks, with and without the shared history.

    .venv/bin/python bench/backfill.py [--events 5000000] [--chunk-rows 250000]

Uses ``bench/train.py``'s store (``bench/features.py``'s generator, 50,000 users
over 90 days, built once in bench/out/, not committed; it needs a model, so
``riskgate train --no-labels`` runs on it once if it has none). Then, each on a
fresh copy and in its own process, scores every event with ``score_events`` in
chunks of ``--chunk-rows``: once as ``riskgate score`` does (the chunks share the
history that does not depend on the chunk, ``risk.features.SharedHistory``),
once with that sharing turned off (each chunk reads all of its history itself),
and prints the wall time and peak memory (max RSS from wait4) of each and
their ratio.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from siblings import load as load_sibling  # imported while bench/ is still on sys.path

ROOT = Path(__file__).resolve().parent.parent
# run as a script, bench/ is first on sys.path and bench/ingest.py would hide the ingest package
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

_train = load_sibling("train")
run, OUT, PY = _train.run, _train.OUT, _train.PY


def child(db: str, chunk_rows: int, share: bool) -> None:
    """In its own process: score every event of ``db``; print a JSON line."""
    import risk.features
    import risk.store
    from risk.score import score_events

    if not share:
        risk.features.SHARE_HISTORY_READS = float("inf")
    con = risk.store.connect(db)
    try:
        t0 = time.perf_counter()
        res = score_events(con, chunk_rows=chunk_rows)
        print(json.dumps({"events": res.events_scored, "chunks": res.chunks, "seconds": time.perf_counter() - t0}))
    finally:
        con.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--chunk-rows", type=int, default=250_000)
    ap.add_argument("--child", choices=["shared", "unshared"], help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.db, args.chunk_rows, args.child == "shared")
        return
    db = _train.build_store(args.events, args.users)
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        has_model = con.execute("SELECT count(*) FROM models").fetchall()[0][0] > 0
    finally:
        con.close()
    if not has_model:
        run([PY, "-m", "cli", "train", "--no-labels", "--db", str(db)])
    took = {}
    for mode in ("shared", "unshared"):
        copy = OUT / "backfill-run.duckdb"
        shutil.copy(db, copy)
        wall, rss, out = run([PY, __file__, "--child", mode, "--db", str(copy), "--chunk-rows", str(args.chunk_rows)])
        copy.unlink(missing_ok=True)
        res = json.loads(out.strip().splitlines()[-1])
        took[mode] = wall
        print(f"{mode:>8}: scored {res['events']:,} events in {res['chunks']} chunks: {wall:.1f} s  "
              f"{res['events'] / wall:,.0f} events/s  peak {rss / 2**30:.2f} GiB", flush=True)
    print(f"shared / unshared: {took['shared'] / took['unshared']:.3f}")


if __name__ == "__main__":
    main()
