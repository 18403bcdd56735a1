"""HTTP service benchmark: POST /v1/evaluate at a fixed rate for a fixed time, from a second process.

    .venv/bin/python bench/serve.py [--rate 200] [--seconds 60] [--concurrency 256] [--users 2000] [--days 30]

Builds (once, in bench/out/, not committed) a store from a synthetic population:
every event but the last ``rate * seconds`` (in time order) ingested, users and
labels loaded, a model trained. Then, on a fresh copy, starts ``riskgate serve``
(its own process) and sends the held-back events, in time order, open loop:
request i is due at start + i / rate, whatever happened to the ones before, over
``concurrency`` keep-alive connections (at most that many in flight). Latency is
measured from the moment a request was due (so waiting for a free connection
counts: no coordinated omission).

Prints p50, p99 and max latency, the achieved throughput, errors, the CPU
seconds the service and the load generator used, the service's own counters
and timings (``/healthz``), and checks that the events stored equal the
events answered 200. Target: p99 <= 20 ms at 200 requests/s on a 2-core
machine, no errors, nothing lost.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
PY = sys.executable
KEY = "bench-api-key-0123456789abcdef"


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def build(users: int, days: int, held_back: int, seed: int) -> tuple[Path, Path]:
    OUT.mkdir(parents=True, exist_ok=True)
    stem = OUT / f"serve-{users}u-{days}d-{seed}"
    db, stream = Path(str(stem) + f"-but{held_back}.duckdb"), Path(str(stem) + f"-last{held_back}.jsonl")
    if db.exists() and stream.exists():
        return db, stream
    src = Path(str(stem) + ".jsonl")
    if not src.exists():
        run([PY, "-m", "cli", "synth", "--users", str(users), "--days", str(days), "--seed", str(seed), "--out", str(src)])
    rows = [json.loads(x) for x in src.read_text().splitlines() if x.strip()]
    rows.sort(key=lambda r: (r["CreationDate"], r["EventId"]))
    if held_back >= len(rows):
        raise SystemExit(f"the population has {len(rows)} events; hold back fewer than that (or more --users/--days)")
    first = Path(str(stem) + "-first.jsonl")
    with open(first, "w") as fh:
        for r in rows[:-held_back]:
            fh.write(json.dumps(r) + "\n")
    with open(stream, "w") as fh:
        for r in rows[-held_back:]:
            r.pop("Labels", None)
            fh.write(json.dumps(r) + "\n")
    tmp = db.with_suffix(".build.duckdb")
    tmp.unlink(missing_ok=True)
    run([PY, "-m", "cli", "ingest", str(first), "--db", str(tmp)])
    run([PY, "-m", "cli", "users", "load", str(src.with_suffix("")) + ".users.json", "--db", str(tmp)])
    run([PY, "-m", "cli", "labels", "load", str(src.with_suffix("")) + ".labels.csv", "--db", str(tmp)])
    run([PY, "-m", "cli", "train", "--db", str(tmp)])
    tmp.rename(db)
    return db, stream


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def load(port: int, bodies: list[bytes], rate: float, concurrency: int) -> tuple[list[float], list[str], float]:
    """Open loop over ``concurrency`` keep-alive connections, one thread each (stdlib http.client).

    Request i is due at start + i / rate; a free connection sends it then (or as soon as one is free).
    An asyncio client (httpx) could not send more than about 20-40 requests a second here once
    its connections were all waiting, which measured the client, not the service.
    """
    import http.client
    import threading

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    nxt = iter(range(len(bodies)))
    start = time.perf_counter() + 0.5
    headers = {"X-Api-Key": KEY, "Content-Type": "application/json"}

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                conn.close()
                return
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                conn.request("POST", "/v1/evaluate", body=bodies[i], headers=headers)
                r = conn.getresponse()
                text = r.read()
                ok = r.status == 200
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                if ok:
                    latencies.append(time.perf_counter() - due)
                else:
                    errors.append(f"{r.status} {text[:120]!r}")

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - start


def pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    # Little's law: 200 req/s answered in about a second needs about 200 requests in flight
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    n = int(args.rate * args.seconds)
    base, stream = build(args.users, args.days, n, args.seed)
    db = OUT / "serve-run.duckdb"
    for p in (db, Path(str(db) + ".wal")):
        p.unlink(missing_ok=True)
    shutil.copy(base, db)
    bodies = [line.encode() for line in stream.read_text().splitlines()]
    port = free_port()
    env = {**os.environ, "RISKGATE_API_KEY": KEY}
    log = open(OUT / "serve-run.log", "w")
    proc = subprocess.Popen([PY, "-m", "cli", "serve", "--db", str(db), "--port", str(port), "--no-access-log"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).json()["status"] == "ok":
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the service did not start; see {OUT / 'serve-run.log'}")
            time.sleep(0.2)
        load_before = os.getloadavg()
        import resource

        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        svc0 = _cpu_seconds(proc.pid)
        latencies, errors, elapsed = load(port, bodies, args.rate, args.concurrency)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        svc1 = _cpu_seconds(proc.pid)
        load_after = os.getloadavg()
        health = httpx.get(url + "/healthz", timeout=5).json()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        stored = con.execute("SELECT count(*) FROM events WHERE ingest_run_id LIKE 'inline-%'").fetchall()[0][0]
        assessed = con.execute("SELECT count(*) FROM assessments a JOIN events e USING (event_id) "
                               "WHERE e.ingest_run_id LIKE 'inline-%'").fetchall()[0][0]
        total = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
    finally:
        con.close()
    lat = sorted(x * 1000 for x in latencies)
    out = {
        "sent": n, "ok": len(latencies), "errors": len(errors), "seconds": round(elapsed, 1),
        "throughput_rps": round(len(latencies) / elapsed, 1), "rate_rps": args.rate, "concurrency": args.concurrency,
        "p50_ms": round(pct(lat, 50), 1), "p99_ms": round(pct(lat, 99), 1), "max_ms": round(lat[-1], 1) if lat else None,
        "stored": stored, "assessed": assessed, "store_events": total,
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
        # CPU seconds used during the run, and as a share of one core over it
        "client_cpu_s": round((cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime), 1),
        "service_cpu_s": round(svc1 - svc0, 1) if svc0 is not None and svc1 is not None else None,
        "service": {k: health.get(k) for k in ("batches", "events_from_memory", "state_loads", "writes",
                                               "write_errors", "store_thread_ms")},
    }
    print(json.dumps(out))
    if errors:
        print("first errors:", *errors[:5], sep="\n  ")
    print(f"stored {stored} of {len(latencies)} answered 200: {'nothing lost' if stored == len(latencies) else 'MISMATCH'}")
    print(f"p99 {out['p99_ms']} ms at {out['throughput_rps']} req/s: target p99 <= 20 ms at 200 req/s "
          f"{'met' if out['p99_ms'] <= 20 and out['throughput_rps'] >= 0.98 * 200 and not errors else 'NOT met'}")


if __name__ == "__main__":
    main()
