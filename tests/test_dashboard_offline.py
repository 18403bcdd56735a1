"""`riskgate dashboard` makes no outbound request: the real command, its real Streamlit child, every socket either
process opens watched.

Each process of the command (riskgate, and Streamlit under it) is started with a ``sitecustomize`` on its path
that adds an audit hook (``sys.addaudithook``): every name looked up (``socket.getaddrinfo``, ...) and every
address connected or sent to (``socket.connect``, ``socket.sendto``) is written to a file. Nothing is faked or
stubbed: Streamlit runs as it does for a user, and the test fails on any look-up or connection beyond loopback.
"""

from __future__ import annotations

import ast
import base64
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from tests.dashboard_server import free_port

ROOT = Path(__file__).resolve().parent.parent

SITECUSTOMIZE = '''
import os, sys

_LOG = os.environ.get("RG_SOCKET_LOG")
_LOOKUPS = ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex", "socket.gethostbyaddr")


def _hook(event, args):
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        line = f"{event} {args[0].family.name} {args[0].type.name} {args[1]!r}"
    elif event in _LOOKUPS:
        line = f"{event} {args[0]!r}"
    else:
        return
    with open(_LOG, "a", encoding="utf-8") as f:
        f.write(f"{os.getpid()} {line}\\n")


if _LOG:
    sys.addaudithook(_hook)
    with open(_LOG, "a", encoding="utf-8") as f:
        f.write(f"{os.getpid()} watching {sys.orig_argv!r}\\n")
'''


def _local(host) -> bool:
    """Whether a host looked up or connected to is this machine (a loopback name or address, or the wildcard
    address a server binds to)."""
    if host is None:
        return True
    text = (host.decode() if isinstance(host, bytes) else str(host)).strip("[]")
    if text.lower() in ("", "localhost", "localhost.localdomain"):
        return True
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def beyond_loopback(log: Path) -> list[str]:
    """The look-ups and connections written to ``log`` that leave this machine."""
    found = []
    for line in log.read_text(encoding="utf-8").splitlines() if log.exists() else []:
        _pid, event, rest = line.split(" ", 2)
        if event == "watching":
            continue
        if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
            family, _type, address = rest.split(" ", 2)
            if family == "AF_UNIX":
                continue
            address = ast.literal_eval(address)
            host = address[0] if isinstance(address, tuple) else address
        else:
            host = ast.literal_eval(rest)
        if not _local(host):
            found.append(line)
    return found


def watched(log: Path) -> list[str]:
    """What each watched process ran (``cli dashboard``, ``dashboards.launch run``), in the order they started."""
    found = []
    for line in log.read_text(encoding="utf-8").splitlines():
        _pid, event, rest = line.split(" ", 2)
        if event == "watching":
            argv = ast.literal_eval(rest)
            module = argv[argv.index("-m") + 1] if "-m" in argv else argv[1]
            found.append(f"{module} {argv[argv.index(module) + 1]}")
    return found


@contextmanager
def run_dashboard(tmp_path: Path, *args: str, password: str | None = None):
    """`riskgate dashboard ARGS` (with ``RISKGATE_DASHBOARD_PASSWORD`` set to ``password``, if any) with every
    socket of its processes watched, once it answers; yields (port, stop, log): stop() ends it (SIGTERM to
    riskgate, passed on to Streamlit) and returns what it printed, ``log`` is the file of look-ups and
    connections."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    log = tmp_path / "sockets.log"
    env = {k: v for k, v in os.environ.items() if k != "RISKGATE_DASHBOARD_PASSWORD"}
    env.update({"RG_SOCKET_LOG": str(log),
                "PYTHONPATH": os.pathsep.join([str(site), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])})
    if password is not None:
        env["RISKGATE_DASHBOARD_PASSWORD"] = password
    port = free_port()
    out = open(tmp_path / "dashboard.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "cli", "dashboard", "--db", str(tmp_path / "s.duckdb"),
                             "--port", str(port), *args], cwd=tmp_path, env=env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)

    def printed() -> str:
        return (tmp_path / "dashboard.log").read_text(errors="replace")

    def stop() -> str:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        return printed()

    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, printed()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the dashboard did not start:\n" + printed()
            time.sleep(0.2)
        time.sleep(1.0)  # (what Streamlit does once it serves: printing its URLs, after the first answer)
        yield port, stop, log
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group
        except ProcessLookupError:
            pass
        proc.wait()
        out.close()


def test_the_watch_sees_an_outbound_look_up(tmp_path):
    """The audit hook itself: a child that looks up a public name (it fails or not: no packet needs to leave)
    is caught; one that looks up and connects to loopback is not."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    log = tmp_path / "sockets.log"
    env = {**os.environ, "RG_SOCKET_LOG": str(log), "PYTHONPATH": str(site)}
    code = ("import socket\n"
            "try:\n    socket.getaddrinfo('checkip.amazonaws.com', 80)\nexcept OSError:\n    pass\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(('127.0.0.1', 9)); s.close()\n")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    found = beyond_loopback(log)
    assert len(found) == 1 and "'checkip.amazonaws.com'" in found[0], log.read_text()
    assert "('127.0.0.1', 9)" in log.read_text()


def test_the_dashboard_on_every_interface_makes_no_outbound_request(tmp_path):
    """On 0.0.0.0, Streamlit's start-up banner looked up the machine's public address at
    http://checkip.amazonaws.com ("Did not auto detect external IP." without a network) and its local one by
    a UDP socket towards 8.8.8.8: riskgate prints its own URL line and Streamlit's banner is off."""
    with run_dashboard(tmp_path, "--host", "0.0.0.0", password="correct horse battery staple") as (_, stop, log):
        printed = stop()
    assert beyond_loopback(log) == [], log.read_text()
    assert "riskgate dashboard on http://0.0.0.0:" in printed
    assert "external IP" not in printed and "External URL" not in printed, printed
    assert watched(log) == ["cli dashboard", "dashboards.launch run"], log.read_text()  # both processes watched


def websocket_status(port: int, origin: str) -> int:
    """The HTTP status Streamlit answers a WebSocket opening (its ``/_stcore/stream``) sent from a page of
    ``origin``, as a browser sends it."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /_stcore/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                   f"Origin: {origin}\r\n\r\n").encode())
        answer = b""
        while b"\r\n" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_a_web_page_cannot_make_the_dashboard_look_up_its_public_address(tmp_path):
    """A WebSocket opened by a page of another site (any page the browser has open can try) made Streamlit,
    before refusing it, look up the machine's public address at http://checkip.amazonaws.com, again at each
    try while the look-up fails, blocking the server for up to two seconds each time. The dashboard on
    loopback, as started by default: the refusal stays, the look-up goes."""
    with run_dashboard(tmp_path) as (port, stop, log):
        for origin in ("http://evil.example", "https://dash.example", "http://evil.example"):
            assert websocket_status(port, origin) == 403  # refused: not the dashboard's own origin
        assert websocket_status(port, f"http://127.0.0.1:{port}") == 101  # the dashboard's own page is let in
        printed = stop()
    # (a UDP socket's connect() sends nothing: it is how Streamlit learns the local address it also lets in)
    assert [line for line in beyond_loopback(log) if " SOCK_DGRAM " not in line] == [], log.read_text()
    assert "external IP" not in printed, printed
    assert watched(log) == ["cli dashboard", "dashboards.launch run"], log.read_text()
