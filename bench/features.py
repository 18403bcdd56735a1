"""Benchmark ``risk.features.compute_features`` on a 1,000,000-event store.

By default the store is generated directly with DuckDB SQL (seeded, about
10 s): 50,000 users with a home network, city and device each, sign-ins over
90 days, 5 % of them from elsewhere (some on hosting networks) and 5 % on
another device, 10 % failures. ``--synth`` builds it instead with
``riskgate synth`` (the realistic synthetic population with attacks, as many
users as give about ``--events`` events in 30 days) and ``riskgate ingest``;
that takes minutes, mostly ingesting.

Usage::

    .venv/bin/python bench/features.py [--events 1000000] [--users 50000] [--synth] [--db PATH] [--chunks N]

Prints the time and events per second of one call over everything, of
``--chunks`` calls over consecutive time windows, and the peak memory (RSS)
of the process.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import risk.store  # noqa: E402
from risk.features import compute_features  # noqa: E402

GENERATE = """
INSERT INTO events (event_id, username, event_type, event_response, creation_date, client_ip, ip_prefix,
                    ip_version, asn, country_iso, region, city, latitude, longitude, user_agent, browser_family,
                    os_family, device_type, device_fingerprint, has_context_data, source_format, source_file,
                    source_line)
WITH base AS (
  SELECT i,
         hash(i, 1) % $users AS u,
         hash(i, 2) % 1000 AS r_roam,
         hash(i, 3) % 100 AS r_fail,
         hash(i, 4) % 100 AS r_dev,
         TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_microseconds(CAST(hash(i, 5) % (90 * 86400000000) AS BIGINT)) AS t
  FROM range($n) r(i)
), shaped AS (
  SELECT i, u, t,
         CASE WHEN r_roam < 50 THEN hash(i, 6) % 200000 ELSE hash(u, 7) % 200000 END AS net,
         CASE WHEN r_roam < 50 THEN hash(i, 8) % 40 ELSE hash(u, 9) % 40 END AS place,
         CASE WHEN r_dev < 5 THEN hash(i, 10) % 30 ELSE hash(u, 11) % 30 END AS agent,
         CASE WHEN r_fail < 10 THEN 'Fail' ELSE 'Pass' END AS resp,
         CASE WHEN r_roam < 5 THEN 16509 ELSE 1000 + hash(i, 12) % 3000 END AS asn_rnd,
         hash(u, 13) % 3000 + 1000 AS asn_home, r_roam
  FROM base
)
SELECT 'ev-' || lpad(CAST(i AS VARCHAR), 8, '0'), 'user' || CAST(u AS VARCHAR), 'SignIn', resp, t,
       CAST(net // 65536 % 223 + 1 AS VARCHAR) || '.' || CAST(net // 256 % 256 AS VARCHAR) || '.' ||
         CAST(net % 256 AS VARCHAR) || '.' || CAST(hash(i, 14) % 4 + 1 AS VARCHAR),
       CAST(net // 65536 % 223 + 1 AS VARCHAR) || '.' || CAST(net // 256 % 256 AS VARCHAR) || '.' ||
         CAST(net % 256 AS VARCHAR) || '.0/24',
       4, CASE WHEN r_roam < 50 THEN asn_rnd ELSE asn_home END,
       'C' || CAST(place % 25 AS VARCHAR), 'R' || CAST(place AS VARCHAR), 'City' || CAST(place AS VARCHAR),
       -60 + place * 3.0, -170 + place * 8.5,
       'Mozilla/5.0 agent ' || CAST(agent AS VARCHAR), 'B' || CAST(agent % 5 AS VARCHAR),
       'O' || CAST(agent % 4 AS VARCHAR), CASE WHEN agent % 3 = 0 THEN 'Mobile' ELSE 'Desktop' END,
       'fp' || CAST(hash(u, agent) % 1000000 AS VARCHAR), TRUE, 'bench', 'bench', i
FROM shaped
"""


def build(con, n: int, users: int) -> None:
    con.execute(GENERATE.replace("$users", str(int(users))).replace("$n", str(int(n))))


def build_synth(path: str, n: int, tmp: str) -> None:
    """``riskgate synth`` + ``riskgate ingest`` into the store at ``path`` (closed meanwhile)."""
    from ingest.synth import users_for_events

    out = str(Path(tmp) / "synth.jsonl")
    for cmd in (["synth", "--users", str(users_for_events(n, 30)), "--days", "30", "--seed", "4", "--out", out],
                ["ingest", out, "--db", path]):
        r = subprocess.run([sys.executable, "-m", "cli", *cmd], cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"riskgate {' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--synth", action="store_true", help="build the store with riskgate synth + ingest")
    ap.add_argument("--db", help="store file (default: a temporary file; an existing store is used as it is)")
    ap.add_argument("--chunks", type=int, default=5, help="consecutive windows for the incremental run (0: skip)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or str(Path(tmp) / "bench.duckdb")
        con = risk.store.connect(path)
        have = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
        if have == 0:
            t0 = time.perf_counter()
            if args.synth:
                con.close()
                build_synth(path, args.events, tmp)
                con = risk.store.connect(path)
            else:
                build(con, args.events, args.users)
            print(f"built the store in {time.perf_counter() - t0:.1f} s")
        n = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
        print(f"store: {n:,} events")
        threads = con.execute("SELECT current_setting('threads')").fetchall()[0][0]

        t0, c0 = time.perf_counter(), cpu_s()
        table = compute_features(con)
        dt = time.perf_counter() - t0
        print(f"one call: {table.num_rows:,} events in {dt:.2f} s = {table.num_rows / dt:,.0f} events/s "
              f"({threads} DuckDB threads, {cpu_s() - c0:.1f} s of CPU)")
        del table

        if args.chunks > 0:
            lo, hi = con.execute("SELECT min(creation_date), max(creation_date) FROM events").fetchall()[0]
            step = (hi - lo) / args.chunks
            bounds = [lo + step * k for k in range(args.chunks)] + [None]
            t0, c0 = time.perf_counter(), cpu_s()
            rows = 0
            for a, b in zip(bounds[:-1], bounds[1:]):
                rows += compute_features(con, since=a, until=b).num_rows
            dt = time.perf_counter() - t0
            print(f"{args.chunks} windows: {rows:,} events in {dt:.2f} s = {rows / dt:,.0f} events/s "
                  f"({cpu_s() - c0:.1f} s of CPU)")
        print(f"peak memory (RSS): {peak_rss_mb():,.0f} MB")
        con.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
