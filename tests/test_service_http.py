"""``riskgate serve``'s connections (service.http): a request's line and headers are bounded in size (431) and in
time (408), and its body in time (408), before any API key is read; ordinary and pipelined requests are untouched.
A real service process (and, for a body the application answers without reading, a real uvicorn server)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.dashboard_server import free_port
from tests.service_support import wait_until_serving

ROOT = Path(__file__).resolve().parent.parent
RISKGATE_BIN = str(Path(sys.executable).parent / "riskgate")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """``riskgate serve`` on an empty store with ``--header-timeout 1 --body-timeout 1``: (port, process)."""
    db = tmp_path_factory.mktemp("http") / "s.duckdb"
    port = free_port()
    proc = subprocess.Popen([RISKGATE_BIN, "serve", "--db", str(db), "--port", str(port), "--header-timeout", "1",
                             "--body-timeout", "1"],
                            env={**os.environ, "RISKGATE_API_KEY": "k" * 32}, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_until_serving(port, proc)
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


def test_the_command_line_defaults_are_the_protocols():
    from cli.serve_cmd import BODY_TIMEOUT_S as CLI_BODY
    from cli.serve_cmd import HEADER_TIMEOUT_S
    from service.http import BODY_TIMEOUT_S, HEAD_TIMEOUT_S

    assert HEADER_TIMEOUT_S == HEAD_TIMEOUT_S and CLI_BODY == BODY_TIMEOUT_S


_EVALUATE = b"POST /v1/evaluate HTTP/1.1\r\nHost: x\r\nX-Api-Key: " + b"k" * 32 + b"\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_that_trickles_is_answered_408_after_the_body_timeout(service, framing):
    """A body sent a byte at a time held its connection for as long as the client went on (45 s and counting, one
    byte every 2 s, before any key was checked): now 408 once --body-timeout has passed since the headers."""
    port, proc = service
    if framing == "chunked":
        head, piece = _EVALUATE + b"Transfer-Encoding: chunked\r\n\r\n", b"1\r\n \r\n"
    else:
        head, piece = _EVALUATE + b"Content-Length: 1000\r\n\r\n", b" "
    start = time.monotonic()
    got = _exchange(port, head + piece, *[piece] * 20, pause=0.3)
    took = time.monotonic() - start
    assert _statuses(got) == [b"408"], got[:300]
    assert b"did not arrive within 1 s of its headers" in got and b"connection: close" in got.lower()
    assert 0.9 < took < 5, took  # the 20 pieces would have taken 6 s
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200 and proc.poll() is None


def test_a_body_in_pieces_within_the_timeout_is_served_and_its_clock_starts_at_its_headers(service):
    """The body's time counts from its own headers: a keep-alive connection idle longer than --body-timeout before
    the request, then a body in three pieces over 0.6 s, is answered by the application (400: not an event)."""
    port, _ = service
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
        time.sleep(1.5)  # idle, no request begun
        s.sendall(_EVALUATE + b"Content-Length: 5\r\nConnection: close\r\n\r\n{")
        for piece in (b"  ", b" }"):
            time.sleep(0.3)
            s.sendall(piece)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    assert _statuses(got) in ([b"422"], [b"400"]), got[:600]


@contextmanager
def _uvicorn(app, **limits):
    """A real uvicorn server on loopback serving the ASGI ``app`` with :class:`BoundedHttpProtocol` configured with
    ``limits``, in a thread: yields its port. Keep-alive 60 s, so that it never closes a connection in a test."""
    import asyncio
    import threading

    import uvicorn

    from service.http import BoundedHttpProtocol

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                                           http=BoundedHttpProtocol.configured(**limits), timeout_keep_alive=60))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(20)


async def _read_body(receive) -> bytes:
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            return body


async def _answer_ok(send, body: bytes = b"ok") -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def test_a_body_still_trickling_after_an_early_answer_has_its_connection_closed():
    """An application that answers before reading the body (here: at once): the trickle would have held the
    connection, every byte putting off uvicorn's keep-alive timeout; it is closed after --body-timeout, the
    answer intact."""

    async def early(scope, receive, send):
        await _answer_ok(send)

    with _uvicorn(early, body_timeout=0.5) as port:
        start = time.monotonic()
        got = _exchange(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", *[b"x"] * 30, pause=0.2)
        took = time.monotonic() - start
    assert _statuses(got) == [b"200"] and got.endswith(b"\r\n\r\nok"), got
    assert 0.4 < took < 3, took  # the 30 pieces would have taken 6 s


def test_a_pipelined_body_waiting_for_the_answer_before_it_is_not_timed_out():
    """uvicorn stops reading while a request pipelined behind another waits for the other's answer: that wait is
    the service's. The body sent meanwhile is read once the first is answered (1.5 s, three body timeouts later),
    and both are answered in order; no 408 cuts in before the first answer."""
    import asyncio

    async def app(scope, receive, send):
        if scope["path"] == "/slow":
            await asyncio.sleep(1.5)
            return await _answer_ok(send, b"slow")
        body = await _read_body(receive)
        await _answer_ok(send, b"got " + body)

    with _uvicorn(app, body_timeout=0.5) as port:
        got = _exchange(port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                              b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
                        b"abc", pause=0.8)
    assert _statuses(got) == [b"200", b"200"], got
    assert got.index(b"slow") < got.index(b"got abc"), got


def _reading_app(slow: float):
    """An application behind riskgate's body limit (``service.app.BodyLimit``, which reads every body first) that
    answers ``<path>:<body>``, after ``slow`` seconds for ``/slow``; it records what it carried out."""
    import asyncio

    from service.app import BodyLimit

    done: list[str] = []

    async def inner(scope, receive, send):
        body = await _read_body(receive)
        if scope["path"] == "/slow":
            await asyncio.sleep(slow)
        done.append(scope["path"])
        await _answer_ok(send, scope["path"].encode() + b":" + body)

    return BodyLimit(inner), done


def test_a_late_body_pipelined_behind_a_post_is_refused_only_after_the_posts_answer():
    """The POST before it reads its own body, which resumes reading while the late request still waits in the
    pipeline: its 408 went out in place of the POST's answer (the POST carried out, its answer lost). Now the POST
    is answered first, then the late body gets its 408."""
    app, done = _reading_app(slow=2.0)
    with _uvicorn(app, body_timeout=0.5) as port:
        got = _exchange(port, b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                              b"POST /late HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", *[b"x"] * 40, pause=0.1)
    assert _statuses(got) == [b"200", b"408"], got
    assert b"/slow:abc" in got and got.index(b"/slow:abc") < got.index(b"408"), got
    assert done == ["/slow"]


def test_a_pipelined_request_waiting_for_100_continue_is_not_timed_out():
    """A client may wait for ``100 Continue`` before sending the body; uvicorn sends it when the request's
    application starts, after the answer before it (2 s, four body timeouts): that wait is the service's."""
    app, done = _reading_app(slow=2.0)
    with _uvicorn(app, body_timeout=0.5) as port, socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                  b"POST /next HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n"
                  b"Connection: close\r\n\r\n")
        got, sent = b"", False
        while chunk := s.recv(65536):
            got += chunk
            if b"100 Continue" in got and not sent:
                sent = True
                s.sendall(b"xyz")
    assert _statuses(got) == [b"200", b"100", b"200"], got
    assert got.index(b"/slow:abc") < got.index(b"/next:xyz"), got
    assert done == ["/slow", "/next"]


def test_a_client_gets_a_whole_body_timeout_after_its_100_continue():
    """The service's wait may end just before the body's timer fires: the 100 Continue here goes out 1.8 s after the
    headers, 0.2 s before the timer's second firing. The client, answering it 0.5 s later, got a 408; it now has at
    least a whole --body-timeout (1 s) from the end of the wait."""
    app, done = _reading_app(slow=1.8)
    with _uvicorn(app, body_timeout=1.0) as port, socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                  b"POST /next HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n"
                  b"Connection: close\r\n\r\n")
        got, sent = b"", False
        while chunk := s.recv(65536):
            got += chunk
            if b"100 Continue" in got and not sent:
                sent = True
                time.sleep(0.5)
                s.sendall(b"xyz")
    assert _statuses(got) == [b"200", b"100", b"200"], got
    assert done == ["/slow", "/next"]
