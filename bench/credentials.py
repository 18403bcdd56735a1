"""Benchmark the Pwned Passwords lookups and the index build on synthetic data.

    .venv/bin/python bench/credentials.py [--hashes 2000000] [--lookups 20000] [--dir DIR]

Writes a synthetic ``SHA1:COUNT`` file sorted by hash (CRLF, as the real
download), builds the compact index from it, and times: the build (lines/s,
peak memory of the build process), lookups in the sorted text file (binary
search over byte offsets), in the index (mmap), and in a range folder (4,096
range files of ~n/4096 lines, as dense as the real ones), for hashes present
and absent. Scale: the real v8 download is ~847 million hashes (~38 GB).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from risk import credentials as cred  # noqa: E402


def write_sorted(path: Path, n: int, rng: random.Random) -> list[bytes]:
    """n increasing random 160-bit hashes, streamed; returns a sample of them for lookups."""
    gap = (1 << 160) // (n + 1)
    h = 0
    sample = []
    with open(path, "w", newline="") as f:
        for i in range(n):
            h += rng.randrange(1, 2 * gap)
            hexd = f"{h:040X}"
            f.write(f"{hexd}:{rng.randrange(1, 5000)}\r\n")
            if i % max(1, n // 50_000) == 0:
                sample.append(bytes.fromhex(hexd))
    return sample


def write_folder(folder: Path, n: int, rng: random.Random) -> list[bytes]:
    folder.mkdir()
    sample = []
    per_file = max(1, n // 4096)
    for p in range(4096):
        prefix = f"{p * 256:05X}"
        suffixes = sorted(f"{rng.getrandbits(140):035X}" for _ in range(per_file))
        (folder / f"{prefix}.txt").write_text("".join(f"{s}:{rng.randrange(1, 5000)}\r\n" for s in suffixes),
                                              newline="")
        sample.append(bytes.fromhex(prefix + suffixes[len(suffixes) // 2]))
    return sample


def time_lookups(lookup, present: list[bytes], absent: list[bytes]) -> tuple[float, float]:
    t = time.perf_counter()
    assert all(lookup.lookup(d) for d in present)
    hit = (time.perf_counter() - t) / len(present)
    t = time.perf_counter()
    assert not any(lookup.lookup(d) for d in absent)
    miss = (time.perf_counter() - t) / len(absent)
    return hit * 1e6, miss * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hashes", type=int, default=2_000_000)
    ap.add_argument("--lookups", type=int, default=20_000)
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    rng = random.Random(7)
    work = Path(args.dir or tempfile.mkdtemp(prefix="rg-bench-cred-"))
    work.mkdir(parents=True, exist_ok=True)
    text = work / "pwned-sorted.txt"
    t = time.perf_counter()
    sample = write_sorted(text, args.hashes, rng)
    print(f"synthetic sorted file: {args.hashes:,} hashes, {text.stat().st_size / 1e6:.1f} MB "
          f"({time.perf_counter() - t:.1f} s to write)")

    # the build runs in a child process so that its peak memory is its own
    out = work / "pwned.rgpw"
    code = (
        "import resource, sys, time; sys.path.insert(0, %r); from risk.credentials import build;"
        "t = time.perf_counter(); r = build(%r, %r); dt = time.perf_counter() - t;"
        "print(r.records, dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    ) % (str(ROOT), str(text), str(out))
    records, seconds, maxrss_kb = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    records, seconds = int(records), float(seconds)
    size = out.stat().st_size
    print(f"build: {seconds:.1f} s, {args.hashes / seconds:,.0f} lines/s, peak RSS {int(maxrss_kb) / 1024:.0f} MiB; "
          f"index {size / 1e6:.1f} MB = {(size - cred.DATA_OFFSET) / records:.1f} bytes/hash "
          f"({size / text.stat().st_size:.0%} of the text)")
    est = 847_000_000 / (args.hashes / seconds)
    print(f"  at this rate ~847M hashes (Pwned Passwords v8) build in ~{est / 60:.0f} min, "
          f"index ~{(cred.DATA_OFFSET + 847_000_000 * cred.RECORD_BYTES) / 1e9:.1f} GB")

    present = rng.sample(sample, min(args.lookups, len(sample)))
    absent = [os.urandom(20) for _ in range(len(present))]
    with cred.PwnedSortedFile(text) as f:
        hit, miss = time_lookups(f, present, absent)
        print(f"sorted text file (seek + binary search): {hit:.1f} us/hit, {miss:.1f} us/miss")
    with cred.PwnedIndex(out) as idx:
        hit, miss = time_lookups(idx, present, absent)
        print(f"compact index (mmap + binary search):    {hit:.1f} us/hit, {miss:.1f} us/miss")

    folder = work / "ranges"
    if not folder.exists():
        fsample = write_folder(folder, args.hashes, rng)
        with cred.PwnedRangeFolder(folder) as rf:
            fabsent = [bytes.fromhex(d.hex()[:5] + "0" * 35) for d in fsample]
            hit, miss = time_lookups(rf, fsample, fabsent)
            print(f"range folder (4,096 files of ~{max(1, args.hashes // 4096)} lines): "
                  f"{hit:.1f} us/hit, {miss:.1f} us/miss")

    checker = cred.CredentialChecker(pwned=out)
    words = [f"bench-password-{i}" for i in range(args.lookups)]
    with checker:
        t = time.perf_counter()
        for w in words:
            checker.check(w)
        print(f"CredentialChecker.check (index + shipped list): "
              f"{(time.perf_counter() - t) / len(words) * 1e6:.1f} us/password")
    print(f"(files in {work}; peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
