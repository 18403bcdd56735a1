"""Scoring benchmark: 1,000,000 stored events scored end to end (features, model, decision, write).

    .venv/bin/python bench/score.py [--events 1000000] [--chunk-rows 500000]

    .venv/bin/python bench/score.py --incremental 1000

``--incremental N`` times what a scheduled run does: the newest N events scored on a store whose
older events are already scored (that store is built once, untimed, and kept in bench/out/).

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


def scored_store(n: int, seed: int, base: Path | None = None) -> Path:
    """bench/out/scored-<n>.duckdb: a copy of ``base`` (default: :func:`build_store`'s) with every event scored,
    made once (for the benchmarks of what reads assessments: the dashboard, tuning)."""
    db = OUT / f"scored-{n}.duckdb"
    if db.exists():
        return db
    base = base or build_store(n, seed)
    tmp = OUT / f"scored-{n}.partial.duckdb"
    shutil.copy(base, tmp)
    wall, rss, out = run([PY, "-m", "cli", "score", "--db", str(tmp), "--json"])
    print(f"scored {json.loads(out)['events_scored']:,} events in {wall:.1f} s (built once: {db})", flush=True)
    tmp.rename(db)
    return db


def prescored_store(base: Path, newest: int, chunk_rows: int) -> tuple[Path, str]:
    """A copy of ``base`` with every event but about the newest ``newest`` scored, and the time from which
    the rest lies (the newest events, with any others at that same instant)."""
    import duckdb

    con = duckdb.connect(str(base), read_only=True)
    try:
        rows = con.execute("SELECT creation_date FROM events ORDER BY creation_date DESC LIMIT 1 OFFSET ?",
                           [newest - 1]).fetchall()
    finally:
        con.close()
    if not rows:
        raise SystemExit(f"--incremental {newest}: the store holds fewer events")
    cut = rows[0][0].isoformat()
    db = OUT / f"{base.stem}-prescored-{newest}.duckdb"
    if not db.exists():
        tmp = OUT / "score-prescoring.duckdb"
        shutil.copy(base, tmp)
        run([PY, "-m", "cli", "score", "--db", str(tmp), "--until", cut, "--chunk-rows", str(chunk_rows), "--json"])
        tmp.rename(db)
    return db, cut


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--chunk-rows", type=int, default=500_000)
    ap.add_argument("--incremental", type=int, default=0, metavar="N",
                    help="time only the newest N events, every older one already scored")
    args = ap.parse_args()
    if args.incremental < 0 or args.incremental >= args.events:
        ap.error(f"--incremental must be between 1 and --events - 1 ({args.events - 1:,}); 0 times every event")
    base = build_store(args.events, args.seed)
    db = OUT / "score-run.duckdb"
    if args.incremental:
        start, cut = prescored_store(base, args.incremental, args.chunk_rows)
        shutil.copy(start, db)
    else:
        shutil.copy(base, db)
    wall, rss, out = run([PY, "-m", "cli", "score", "--db", str(db), "--chunk-rows", str(args.chunk_rows), "--json"])
    res = json.loads(out)
    n = res["events_scored"]
    what = (f"the newest {n:,} of {args.events:,} events (from {cut}; the rest scored before)" if args.incremental
            else f"{n:,} events")
    print(f"scored {what} in {res['chunks']} chunks: {wall:.2f} s  {n / wall:,.0f} events/s  "
          f"peak {rss / 2**20:,.0f} MiB" + ("" if args.incremental else "   (target >= 100,000 events/s, < 4 GiB)"))
    print(f"by level: {res['by_level']}")
    print(f"by decision: {res['by_decision']}")
    db.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
