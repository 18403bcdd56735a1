"""Maintainer script: rebuild ``common-passwords.txt.gz`` from the two packages it is made of.

Not imported by riskgate. Run it when either source list changes::

    pip download --no-deps -d /tmp/pw django==5.2.19 zxcvbn==4.5.0
    python risk/data/build_common_passwords.py /tmp/pw/django-5.2.19-py3-none-any.whl \
        /tmp/pw/zxcvbn-4.5.0-py2.py3-none-any.whl risk/data/common-passwords.txt.gz

The output is one lowercase password per line (UTF-8, ``\\n``), gzipped with a
fixed timestamp so that the same inputs give the same bytes: first Django's
list in its order (most common first), then the entries of zxcvbn's
``passwords`` frequency list that Django's list lacks, in zxcvbn's order.
Sources and licences: ``COMMON_PASSWORDS_SOURCES.txt`` beside this file.
"""

from __future__ import annotations

import gzip
import io
import re
import sys
import zipfile

DJANGO_MEMBER = "django/contrib/auth/common-passwords.txt.gz"
ZXCVBN_MEMBER = "zxcvbn/frequency_lists.py"


def django_list(wheel: str) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        raw = gzip.decompress(zf.read(DJANGO_MEMBER)).decode("utf-8")
    return [line for line in raw.split("\n") if line]


def zxcvbn_list(wheel: str) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        src = zf.read(ZXCVBN_MEMBER).decode("utf-8")
    # the module is `FREQUENCY_LISTS = {"passwords": "a,b,c", ...}`: read the literal, do not execute it
    m = re.search(r'"passwords":\s*"([^"]*)"', src)
    if not m:
        raise SystemExit(f"{wheel}: no 'passwords' list in {ZXCVBN_MEMBER}")
    return [p for p in m.group(1).split(",") if p]


def merged(django: list[str], zxcvbn: list[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for p in django + zxcvbn:
        p = p.lower()
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    django_wheel, zxcvbn_wheel, out = argv
    passwords = merged(django_list(django_wheel), zxcvbn_list(zxcvbn_wheel))
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(("\n".join(passwords) + "\n").encode("utf-8"))
    with open(out, "wb") as f:
        f.write(buf.getvalue())
    print(f"{out}: {len(passwords)} passwords, {len(buf.getvalue())} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
