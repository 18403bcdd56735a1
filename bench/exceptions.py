"""Benchmark: IP-range exceptions over 1,000,000 addresses against 200 blocked + 200 skipped ranges.

Run: ``.venv/bin/python bench/exceptions.py [--n 1000000] [--distinct 1000000] [--seed 7]``

Prints the time to compile the lists, to match a batch in which every address
is distinct (the worst case: each one is parsed), a batch with fewer distinct
addresses (the usual case: addresses repeat), and single-address lookups.
Mixed IPv4 / IPv6 (about one in three is IPv6), ranges of both families.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow as pa  # noqa: E402

from risk.exceptions import IPRangeExceptions  # noqa: E402


def _ranges(rng: random.Random, n: int) -> list[str]:
    out = []
    for i in range(n):
        if i % 2:
            out.append(str(ipaddress.ip_network((rng.getrandbits(32), rng.randint(12, 32)), strict=False)))
        else:
            out.append(str(ipaddress.ip_network((rng.getrandbits(128), rng.randint(24, 128)), strict=False)))
    return out


def _addresses(rng: random.Random, n: int) -> list[str]:
    out = []
    for i in range(n):
        if i % 3 == 0:
            out.append(str(ipaddress.IPv6Address(rng.getrandbits(128))))
        else:
            out.append(str(ipaddress.IPv4Address(rng.getrandbits(32))))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="addresses per batch")
    ap.add_argument("--distinct", type=int, default=50_000, help="distinct addresses in the repeating batch")
    ap.add_argument("--single", type=int, default=100_000, help="single-address lookups")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)

    blocked, skipped = _ranges(rng, 200), _ranges(rng, 200)
    t = time.perf_counter()
    ex = IPRangeExceptions(blocked=tuple(blocked), skipped=tuple(skipped))
    compile_s = time.perf_counter() - t

    all_distinct = pa.array(_addresses(rng, args.n))
    pool = _addresses(rng, args.distinct)
    repeating = pa.array([pool[rng.randrange(len(pool))] for _ in range(args.n)])

    print(f"ranges: {len(blocked)} blocked + {len(skipped)} skipped (IPv4 and IPv6); compile {compile_s * 1e3:.1f} ms")
    for name, batch in ((f"{args.n:,} addresses, all distinct", all_distinct),
                        (f"{args.n:,} addresses, {args.distinct:,} distinct", repeating)):
        t = time.perf_counter()
        m = ex.check_many(batch)
        took = time.perf_counter() - t
        print(
            f"batch  {name}: {took:.3f} s ({len(m) / took / 1e6:.2f} M/s); "
            f"blocked {int(m.blocked.sum()):,}, skipped {int(m.skipped.sum()):,}, invalid {int((~m.valid).sum()):,}"
        )

    singles = _addresses(rng, args.single)
    t = time.perf_counter()
    for ip in singles:
        ex.check(ip)
    took = time.perf_counter() - t
    print(f"single {args.single:,} lookups: {took:.3f} s ({took / args.single * 1e6:.2f} µs per address)")


if __name__ == "__main__":
    main()
