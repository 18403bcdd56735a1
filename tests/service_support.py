"""What the service tests share: a trained synthetic store, and the real service on a loopback port.

The service runs for real (uvicorn in a thread, on 127.0.0.1 with a free
port); clients are httpx and boto3. Nothing is mocked.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import uvicorn
from typer.testing import CliRunner

from cli import app as cli_app

API_KEY = "test-api-key-0123456789abcdef"
_runner = CliRunner()
_cache: dict[str, Path] = {}


def rg(*args, db=None):
    res = _runner.invoke(cli_app, [*map(str, args)] + (["--db", str(db)] if db else []))
    assert res.exit_code == 0, res.output
    return res


def trained_base(tmp_path_factory) -> Path:
    """A folder with ``base.duckdb`` (first part of a synthetic population ingested, users, labels, a model)
    and ``rest.jsonl`` (the later events, in time order, not ingested). Built once per test process."""
    if "base" in _cache:
        return _cache["base"]
    d = tmp_path_factory.mktemp("service-base")
    rg("synth", "--users", 120, "--days", 20, "--seed", 5, "--out", d / "ev.jsonl")
    lines = [json.loads(x) for x in (d / "ev.jsonl").read_text().splitlines() if x.strip()]
    lines.sort(key=lambda r: (r["CreationDate"], r["EventId"]))
    cut = len(lines) - 60
    with open(d / "first.jsonl", "w") as fh:
        for r in lines[:cut]:
            fh.write(json.dumps(r) + "\n")
    with open(d / "rest.jsonl", "w") as fh:
        for r in lines[cut:]:
            fh.write(json.dumps(r) + "\n")
    db = d / "base.duckdb"
    rg("ingest", d / "first.jsonl", db=db)
    rg("users", "load", d / "ev.users.json", db=db)
    rg("labels", "load", d / "ev.labels.csv", db=db)
    rg("train", db=db)
    _cache["base"] = d
    return d


def copy_store(base: Path, dest: Path) -> Path:
    shutil.copy(base / "base.duckdb", dest)
    return dest


def rest_events(base: Path) -> list[dict]:
    out = []
    for line in (base / "rest.jsonl").read_text().splitlines():
        rec = json.loads(line)
        rec.pop("Labels", None)
        out.append(rec)
    return out


class Service:
    """``create_app`` served by uvicorn on 127.0.0.1 (a free port) in a thread, until ``stop()``."""

    def __init__(self, db, *, api_key: str = API_KEY, **kwargs):
        from service.app import asgi, create_app

        self.app = create_app(str(db), api_key, **kwargs)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(asgi(self.app), log_config=None, access_log=True, timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the service did not start")
            time.sleep(0.02)

    @property
    def worker(self):
        return self.app.state.riskgate["worker"]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive()

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_until_serving(port: int, proc, timeout: float = 60.0) -> None:
    """Wait until the ``riskgate serve`` process ``proc`` answers ``/healthz`` on ``port`` (fails when it exits
    first, with its stderr, or after ``timeout`` seconds)."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz")
            return
        except httpx.TransportError:
            exited = proc.poll() is not None
            assert time.monotonic() < deadline and not exited, proc.stderr.read() if exited and proc.stderr else ""
            time.sleep(0.1)


def headers(key: str = API_KEY) -> dict:
    return {"X-Api-Key": key}
