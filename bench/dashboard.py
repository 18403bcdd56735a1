"""Dashboard benchmark: each page rendered by Streamlit's AppTest on a store of 1,000,000 scored events.

    .venv/bin/python bench/dashboard.py [--events 1000000] [--runs 3] [--base PATH]

Builds once, under bench/out/ (not committed), a scored store: bench/score.py's base store
(synthetic events ingested, users and labels loaded, a model trained; ``--base`` reuses an
existing one, which is only copied, never changed), copied and scored with ``riskgate score``.
Then, in this process, for each page: one warm-up render (imports, first open), then
``cold`` renders (Streamlit's caches cleared first, so every query runs against the store
and the store is opened) and ``warm`` renders (query results cached), each the median of
``--runs``; the Tuning page once more after moving its Low slider (the history is
prepared, the new thresholds evaluated); and the Tuning page as an analyst meets it: caches
cleared, the Overview drawn, the background preparation of the Tuning history
(``dashboards.common.prefetch_tuning``) let finish, then the Tuning page. Cold renders run
without that preparation. The period is the dashboard's default: the last 30 days of data.
Target: every page under 2 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from siblings import load as load_sibling  # imported while bench/ is still on sys.path

ROOT = Path(__file__).resolve().parent.parent
# run as a script, bench/ is first on sys.path and bench/ingest.py would hide the ingest package
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

_s = load_sibling("score")  # bench/score.py's helpers
OUT, PY, run = _s.OUT, _s.PY, _s.run
APP = ROOT / "dashboards" / "app.py"
PAGES = ("overview", "events", "user", "tuning", "configuration", "jobs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--base", type=Path, help="an existing base store to copy (bench/score.py builds one otherwise)")
    args = ap.parse_args()
    db = _s.scored_store(args.events, args.seed, args.base)
    os.environ["RISKGATE_DB"] = str(db)
    os.environ.pop("RISKGATE_DASHBOARD_PASSWORD", None)

    import streamlit as st
    from streamlit import config as st_config
    from streamlit.testing.v1 import AppTest

    from dashboards import common
    from risk import insights, store

    st_config.set_option("server.address", "127.0.0.1")
    common.PREFETCH = False
    con = store.connect(db, read_only=True)
    try:
        n_events = insights.store_bounds(con)["events"]
        user = insights.top_risky(con, "user", n=1)["username"].iloc[0]
    finally:
        con.close()

    def render(at: AppTest) -> float:
        t0 = time.perf_counter()
        at.run()
        dt = time.perf_counter() - t0
        if at.exception or at.error:
            raise SystemExit(f"page failed: {[e.value for e in at.exception] + [e.value for e in at.error]}")
        return dt

    def clear() -> None:
        st.cache_data.clear()
        st.cache_resource.clear()

    rows = []
    at = AppTest.from_file(str(APP), default_timeout=600)
    at.session_state["user_name"] = user
    at.run()
    for page in PAGES:
        at.switch_page(f"views/{page}.py")
        clear()
        warmup = render(at)
        cold, warm = [], []
        for _ in range(args.runs):
            clear()
            cold.append(render(at))
            warm.append(render(at))
        rows.append((page, warmup, statistics.median(cold), statistics.median(warm)))
        if page == "tuning":
            moved = []
            for i in range(args.runs):
                at.slider(key="tn_low").set_value(0.1 + 0.01 * i)
                moved.append(render(at))
            rows.append(("tuning, Low slider moved", None, None, statistics.median(moved)))

    # as an analyst meets it: another page first, the history prepared meanwhile
    import threading

    common.PREFETCH = True
    clear()
    common._prefetched.clear()
    at.switch_page("views/overview.py")
    overview = render(at)
    t0 = time.perf_counter()
    for t in [t for t in threading.enumerate() if t.name == "riskgate-tuning-prefetch"]:
        t.join()
    prepared = time.perf_counter() - t0
    at.switch_page("views/tuning.py")
    rows.append(("tuning after the overview", None, None, render(at)))

    print(f"\ndashboard pages on {n_events:,} events ({db.name}), median of {args.runs}; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'page':<26} {'first':>8} {'cold':>8} {'warm':>8}")
    for page, first, cold, warm in rows:
        f = lambda x: "" if x is None else f"{x:.2f} s"  # noqa: E731
        print(f"{page:<26} {f(first):>8} {f(cold):>8} {f(warm):>8}")
    print(f"(the last row: overview {overview:.2f} s, then the Tuning history finished preparing in the "
          f"background {prepared:.2f} s later; 'first' is the first render of a page, imports included)")
    worst = max(max(x for x in r[1:] if x is not None) for r in rows)
    print(f"slowest render {worst:.2f} s (target < 2 s)")


if __name__ == "__main__":
    main()
