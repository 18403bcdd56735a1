"""Processes taking turns over one store file (ingest.lease, ingest.store.Store): real processes, real locks."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ingest import store
from ingest.errors import StoreError

ROOT = Path(__file__).resolve().parent.parent
RISKGATE_BIN = str(Path(sys.executable).parent / "riskgate")


def spawn(code: str, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_line(proc: subprocess.Popen, expected: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == expected:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"child ended before {expected!r}: {proc.stderr.read()}")
    raise AssertionError(f"no {expected!r} within {timeout} s")


WRITER = """
    import sys, time
    from ingest import store
    con = store.connect(sys.argv[1])
    con.execute("CREATE TABLE IF NOT EXISTS ticks (n INTEGER)")
    print("holding", flush=True)
    n = handovers = 0
    end = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < end:
        con.execute("INSERT INTO ticks VALUES (?)", [n]).fetchall()
        n += 1
        handovers += con.yield_if_wanted()
        time.sleep(0.01)
    count = con.execute("SELECT count(*) FROM ticks").fetchall()[0][0]
    con.close()
    print(n, count, handovers, flush=True)
"""


def test_a_waiting_process_gets_its_turn_and_the_yielding_writer_goes_on(tmp_path):
    db = tmp_path / "s.duckdb"
    writer = spawn(WRITER, db, 4)
    wait_for_line(writer, "holding")
    t0 = time.monotonic()
    with store.connect(db, read_only=True, wait=10) as con:
        assert time.monotonic() - t0 < 3
        seen = con.execute("SELECT count(*) FROM ticks").fetchall()[0][0]
    with store.connect(db, wait=10) as con:  # a writer's turn too
        con.execute("INSERT INTO ticks VALUES (-1)").fetchall()
    out, err = writer.communicate(timeout=30)
    assert writer.returncode == 0, err
    n, count, handovers = map(int, out.split())
    assert seen >= 1
    assert handovers in (1, 2)  # the two visits may fall in one turn
    assert count == n + 1  # every insert of both processes is there, none lost in the hand-overs


def test_a_holder_that_never_yields_makes_the_wait_fail_naming_it(tmp_path):
    db = tmp_path / "s.duckdb"
    holder = spawn("""
        import sys, time
        from ingest import store
        con = store.connect(sys.argv[1])
        print("holding", flush=True)
        time.sleep(60)
    """, db)
    try:
        wait_for_line(holder, "holding")
        t0 = time.monotonic()
        with pytest.raises(StoreError) as err:
            store.connect(db, wait=0.5)
        assert 0.4 < time.monotonic() - t0 < 5
        assert f"pid {holder.pid}" in str(err.value) and "RISKGATE_STORE_WAIT" in str(err.value)
        # The holder dies: the kernel frees its turn, nothing stays locked.
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        with store.connect(db, wait=5) as con:
            assert con.execute("SELECT 1").fetchall() == [(1,)]
    finally:
        holder.kill()
        holder.wait(10)


def test_connections_of_one_process_share_its_turn(tmp_path):
    db = tmp_path / "s.duckdb"
    a = store.connect(db)
    b = store.connect(db, wait=0)  # no wait: the process already has its turn
    b.execute("CREATE TABLE t (x INTEGER)")
    assert a.handover() is False  # b would keep the file open
    b.close()
    with pytest.raises(StoreError, match="already has the store open read-write"):
        store.connect(db, read_only=True, wait=0)
    assert a.yield_if_wanted() is False  # nobody waits
    assert a.handover() is True  # alone: closes and reopens, same object still works
    assert a.execute("SELECT count(*) FROM t").fetchall() == [(0,)]
    a.close()
    with pytest.raises(StoreError, match="closed"):
        a.execute("SELECT 1")
    # Turn given back: another process may open the file at once.
    probe = subprocess.run([sys.executable, "-c", "import sys; from ingest import store; store.connect(sys.argv[1], wait=0).close()",
                            str(db)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr


def test_store_wait_setting_is_validated(tmp_path, monkeypatch):
    monkeypatch.setenv("RISKGATE_STORE_WAIT", "soon")
    with pytest.raises(StoreError, match="RISKGATE_STORE_WAIT must be a number"):
        store.connect(tmp_path / "s.duckdb")


@pytest.mark.slow
def test_the_store_can_be_read_while_riskgate_score_runs(tmp_path):
    """A real `riskgate score` in small chunks hands the store over between chunks; reads get through."""
    db = tmp_path / "s.duckdb"
    env = {**os.environ, "RISKGATE_DB": str(db)}

    def rg(*args):
        done = subprocess.run([RISKGATE_BIN, *map(str, args)], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr

    rg("synth", "--users", 40, "--days", 20, "--seed", 5, "--out", tmp_path / "ev.jsonl")
    rg("ingest", tmp_path / "ev.jsonl")
    rg("train")
    from risk import store as risk_store

    with risk_store.connect(db) as con:
        total = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
    scoring = subprocess.Popen([RISKGATE_BIN, "score", "--chunk-rows", "300"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    counts = []
    try:
        while scoring.poll() is None and len(counts) < 5:
            with risk_store.connect(db, read_only=True, wait=30) as con:
                counts.append(con.execute("SELECT count(*) FROM assessments").fetchall()[0][0])
            time.sleep(0.05)
        out, err = scoring.communicate(timeout=300)
    finally:
        scoring.kill()
    assert scoring.returncode == 0, err
    assert counts and counts == sorted(counts) and counts[0] < total
    with risk_store.connect(db, read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT event_id) FROM assessments").fetchall() == [(total, total)]


def run_in_read_only_folder(folder: Path, cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``cmd`` with ``folder`` read-only (0555 and its files 0444; for root, who writes through permissions,
    a read-only bind mount in a mount namespace of its own)."""
    for p in [folder, *folder.iterdir()]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    if os.geteuid() == 0:
        import shlex

        d = shlex.quote(str(folder))
        cmd = ["unshare", "-m", "sh", "-c",
               f"mount --bind {d} {d} && mount -o remount,bind,ro {d} && exec {shlex.join(cmd)}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/")


def test_a_store_in_a_read_only_folder_can_still_be_read():
    """No lock files can be made there, and none are needed: nobody can write that store."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="riskgate-ro-"))
    try:
        folder.chmod(0o755)
        db = folder / "s.duckdb"
        with store.connect(db) as con:
            con.execute("CREATE TABLE t AS SELECT 42 AS x")
        for side in folder.glob("s.duckdb.*"):
            side.unlink()
        code = ("import sys; sys.path.insert(0, sys.argv[2]); from ingest import store\n"
                "with store.connect(sys.argv[1], read_only=True, wait=0) as con:\n"
                "    print(con.execute('SELECT x FROM t').fetchall())")
        done = run_in_read_only_folder(folder, [sys.executable, "-c", code, str(db), str(ROOT)])
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "[(42,)]"
        assert sorted(p.name for p in folder.iterdir()) == ["s.duckdb"]
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_reader_holding_the_store_is_not_named_after_a_writer_that_is_gone(tmp_path):
    """Only a writer writes its name into the lock file; a reader holding the store used to be reported under
    the name of the last writer -- a process long gone, or killed before it could clear it."""
    db = tmp_path / "s.duckdb"
    store.connect(db).close()
    killed = spawn("""
        import sys, time
        from ingest import store
        con = store.connect(sys.argv[1])
        print("holding", flush=True)
        time.sleep(60)
    """, db)
    wait_for_line(killed, "holding")
    killed.send_signal(signal.SIGKILL)  # its name stays in the lock file
    killed.wait(10)
    reader = spawn("""
        import sys, time
        from ingest import store
        con = store.connect(sys.argv[1], read_only=True)
        print("reading", flush=True)
        time.sleep(60)
    """, db)
    try:
        wait_for_line(reader, "reading")
        with pytest.raises(StoreError) as err:
            store.connect(db, wait=0.5)
        assert f"pid {killed.pid}" not in str(err.value)
        assert "the store is in use by another process and did not come free" in str(err.value)
    finally:
        reader.kill()
        reader.wait(10)
    with store.connect(db) as con:  # a writer that ends cleanly clears its name
        pass
    assert (tmp_path / "s.duckdb.lock").read_text() == ""


def test_the_commands_that_only_read_work_on_a_store_in_a_read_only_folder(tmp_path):
    """summary, events, export, report, config describe / history and models open such a store read-only (they
    used to open every store read-write, which a read-only folder, file or mount refuses)."""
    import json
    import shutil
    import tempfile

    from typer.testing import CliRunner

    import cli

    src = tmp_path / "e.jsonl"
    src.write_text("".join(json.dumps(
        {"EventId": f"e{i}", "Username": "alice", "EventType": "SignIn", "EventResponse": "Pass",
         "CreationDate": f"2026-03-{i + 1:02d}T08:00:00Z",
         "ContextData": {"IpAddress": "192.0.2.7", "ServerName": "a", "ServerPath": "/", "HttpHeaders": []}}) + "\n"
        for i in range(12)))
    folder = Path(tempfile.mkdtemp(prefix="riskgate-ro-"))
    try:
        db = folder / "s.duckdb"
        runner = CliRunner()
        for args in (["ingest", str(src)], ["train"], ["score"]):
            done = runner.invoke(cli.app, [*args, "--db", str(db)])
            assert done.exit_code == 0, done.output
        for side in folder.glob("s.duckdb.*"):
            side.unlink()
        out = tmp_path / "out.csv"
        commands = [["summary"], ["events", "alice"], ["export", "--out", str(out)], ["report"],
                    ["config", "describe"], ["config", "history"], ["models"]]
        code = ("import sys, json; sys.path.insert(0, sys.argv[2])\n"
                "from typer.testing import CliRunner\n"
                "import cli\n"
                f"cmds = {commands!r}\n"
                "res = [CliRunner().invoke(cli.app, [*c, '--db', sys.argv[1]]) for c in cmds]\n"
                "print(json.dumps([[r.exit_code, r.stdout, r.stderr] for r in res]))")
        done = run_in_read_only_folder(folder, [sys.executable, "-c", code, str(db), str(ROOT)], timeout=240)
        assert done.returncode == 0, done.stderr
        results = dict(zip((" ".join(c[:2]) for c in commands), json.loads(done.stdout.splitlines()[-1])))
        assert {name: (rc, err) for name, (rc, _, err) in results.items() if rc} == {}
        assert json.loads(results["events alice"][1])["AuthEvents"][0]["EventId"] == "e11"
        assert "wrote 12 rows" in results["export --out"][1] and len(out.read_text().splitlines()) == 13
        assert sorted(p.name for p in folder.iterdir()) == ["s.duckdb"]
    finally:
        for p in [folder, *folder.iterdir()]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_second_serve_on_a_store_is_refused_naming_the_first_and_the_store_is_servable_once_it_ends(tmp_path):
    """Two services on one store took turns with it at every request (each answer 0.32 s instead of 4 ms,
    measured): the second ``riskgate serve`` now refuses to start, naming the one that serves."""
    import socket

    import httpx

    from ingest.lease import SERVE_SUFFIX, hold_serving
    from tests.service_support import wait_until_serving

    db = tmp_path / "s.duckdb"
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "RISKGATE_API_KEY": "k" * 32}
    first = subprocess.Popen([RISKGATE_BIN, "serve", "--db", str(db), "--port", str(port)], env=env, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_serving(port, first)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200  # serving: it answers
        second = subprocess.run([RISKGATE_BIN, "serve", "--db", str(db), "--port", "0"], env=env, cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2, second.stderr
        err = " ".join(second.stderr.split())
        assert f"another riskgate serve (pid {first.pid} at http://127.0.0.1:{port}) already serves this store" in err
        assert "one service per store" in err and "listening" not in err
        assert first.poll() is None  # the first one serves on
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    finally:
        first.terminate()
        first.wait(30)
    fd = hold_serving(str(db), "http://127.0.0.1:1")  # the kernel dropped the first one's hold
    os.close(fd)
    assert (tmp_path / ("s.duckdb" + SERVE_SUFFIX)).exists()


def test_a_store_named_through_a_symbolic_link_shares_its_locks_with_the_real_path(tmp_path):
    """The lock files were named after the path as given: a process opening the store through a link took no turn
    with one opening it by its real path (it waited on DuckDB's own lock instead, unannounced), and a second
    ``riskgate serve`` through a link was not refused."""
    from ingest.lease import hold_serving, turn_for

    db = tmp_path / "real" / "s.duckdb"
    db.parent.mkdir()
    store.connect(db).close()
    (tmp_path / "link.duckdb").symlink_to(db)
    link = str(tmp_path / "link.duckdb")
    assert turn_for(link).lock_path == turn_for(str(db)).lock_path == str(db) + ".lock"
    fd = hold_serving(str(db), "http://127.0.0.1:1")
    try:
        with pytest.raises(StoreError, match="already serves this store"):
            hold_serving(link, "http://127.0.0.1:2")
    finally:
        os.close(fd)
    holder = spawn(WRITER, db, 3)
    try:
        wait_for_line(holder, "holding")
        con = store.connect(link, wait=30)  # the holder hands the store over: one lock, through the link too
        try:
            assert con.execute("SELECT count(*) > 0 FROM ticks").fetchall() == [(True,)]
        finally:
            con.close()
    finally:
        holder.kill()
        holder.wait()
