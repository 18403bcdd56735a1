"""``riskgate serve``'s connections (service.http): a request's line and headers are bounded in size (431) and in
time (408), before any API key is read; ordinary and pipelined requests are untouched. A real service process."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
RISKGATE_BIN = str(Path(sys.executable).parent / "riskgate")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """``riskgate serve`` on an empty store with ``--header-timeout 1``: (port, process)."""
    db = tmp_path_factory.mktemp("http") / "s.duckdb"
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen([RISKGATE_BIN, "serve", "--db", str(db), "--port", str(port), "--header-timeout", "1"],
                            env={**os.environ, "RISKGATE_API_KEY": "k" * 32}, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz")
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
            time.sleep(0.1)
    yield port, proc
    proc.terminate()
    proc.wait(30)


def _exchange(port: int, *pieces: bytes, pause: float = 0.0, timeout: float = 20) -> bytes:
    """Send ``pieces`` on one connection (``pause`` seconds apart) and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        for i, piece in enumerate(pieces):
            if i and pause:
                time.sleep(pause)
            try:
                s.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):  # refused and closed while we were still sending
                break
        got = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
        return got


def test_a_head_over_64_kib_is_refused_with_431_at_once_and_the_service_answers_on(service):
    """One header of 64 MiB used to be buffered whole, copied again at each piece by the event loop (400 MB: 269 s
    and 0.5 GB, nothing else answered meanwhile)."""
    port, proc = service
    start = time.monotonic()
    got = _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ", *[b"a" * (1 << 20)] * 64)
    took = time.monotonic() - start
    assert got.startswith(b"HTTP/1.1 431 "), got[:200]
    assert b"exceed 65,536 bytes" in got and b"connection: close" in got.lower()
    assert took < 10, took
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    assert proc.poll() is None


@pytest.mark.parametrize("size", [66_000, 200_000, 330_000])
def test_a_head_over_64_kib_sent_in_one_write_is_refused_too(service, size):
    """Counted by the pieces after the one a head began in, a head in one or two pieces (up to about 0.5 MB) was
    served: it is measured as parsed too."""
    port, _ = service
    got = _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n")
    assert _statuses(got) == [b"431"], got[:200]


def test_a_head_that_trickles_is_closed_with_408_after_the_header_timeout(service):
    port, _ = service
    start = time.monotonic()
    got = _exchange(port, b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n", b"X-A: 1\r\n", b"X-B: 2\r\n", pause=0.4)
    took = time.monotonic() - start
    assert got.startswith(b"HTTP/1.1 408 "), got[:200]
    assert b"did not arrive within 1 s" in got
    assert 0.9 < took < 8, took


def test_ordinary_large_and_pipelined_requests_are_untouched(service):
    """Headers just under the limit, a body far over it (only the head is bounded), two requests pipelined on one
    connection, and a keep-alive connection idle longer than the header timeout between two requests."""
    port, _ = service
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
        r = c.get("/healthz", headers={"X-Pad": "p" * 60_000})
        assert r.status_code == 200
        big_body = c.post("/v1/evaluate", content=b"{" + b" " * 300_000 + b"}",
                          headers={"X-Api-Key": "k" * 32, "Content-Type": "application/json"})
        assert big_body.status_code not in (408, 431) and big_body.status_code < 500, big_body.text[:200]
        time.sleep(1.5)  # idle (no request begun) longer than --header-timeout: not a slow head
        assert c.get("/healthz").status_code == 200
    got = _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                          b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert got.count(b"HTTP/1.1 200 ") == 2, got[:500]


def _statuses(got: bytes) -> list[bytes]:
    """The status codes of the answers read, in order (an answer's status line follows the body before it)."""
    return re.findall(rb"HTTP/1\.1 (\d{3}) ", got)


def test_pipelined_requests_whose_last_head_arrives_in_two_pieces_are_all_answered(service):
    """The bytes a head shares a piece with (the requests pipelined before it, a large body) are not the head's:
    they were counted, and a valid pipeline got one 431 and lost every answer before it."""
    port, _ = service
    body = b"{" + b" " * 100_000 + b"}"
    post = (b"POST /v1/evaluate HTTP/1.1\r\nHost: x\r\nX-Api-Key: " + b"k" * 32
            + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    last_a, last_b = b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"Connection: close\r\n\r\n"
    got = _exchange(port, post + last_a, last_b, pause=0.3)
    statuses = _statuses(got)
    assert len(statuses) == 2 and statuses[1] == b"200" and b"431" not in statuses, got[:300]
    small = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    got = _exchange(port, small * 2000 + last_a, last_b, pause=0.3)
    assert _statuses(got) == [b"200"] * 2001


def test_a_chunked_body_with_a_trailer_over_64_kib_is_cut_off_and_ordinary_chunked_bodies_are_not(service):
    """httptools buffers a chunked body's trailer fields like headers, and they came after the head's bound: one
    128 MiB trailer took the service 19.7 s of CPU and 0.2 GB."""
    port, proc = service
    start = time.monotonic()
    got = _exchange(port, b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n"
                          b"X-Trailer: ", *[b"a" * (1 << 20)] * 32)
    assert got == b"" and time.monotonic() - start < 10  # closed: the application had the request already
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200 and proc.poll() is None
    # nor may a body of many one-byte chunks earn the trailer its framing allowance (1,040,000 chunks had let a
    # 60 MB trailer through)
    start = time.monotonic()
    got = _exchange(port, b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + b"1\r\na\r\n" * 200_000 + b"0\r\nX-Trailer: ",
                    *[b"a" * (1 << 20)] * 8)  # 8 MiB: under the 11.8 MB credit 200,000 chunks had earned
    assert got == b"" and time.monotonic() - start < 10
    # 2,000 chunks of 100 bytes and a small trailer: answered (405: /healthz takes no POST), the connection kept
    chunked = b"".join(b"64\r\n" + b"b" * 100 + b"\r\n" for _ in range(2000)) + b"0\r\nX-Sum: 1\r\n\r\n"
    got = _exchange(port, b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert _statuses(got) == [b"405", b"200"], got[:300]


def test_the_command_line_default_is_the_protocols():
    from cli.serve_cmd import HEADER_TIMEOUT_S
    from service.http import HEAD_TIMEOUT_S

    assert HEADER_TIMEOUT_S == HEAD_TIMEOUT_S
