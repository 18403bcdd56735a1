"""The command line's fixes: ``export`` never writes over the store or a file beside it, refuses an ``--out`` that
names no file before anything is read, writes into a FIFO or character device and through a symbolic link;
``events`` (and the service's AdminListUserAuthEvents) refuse a hostile NextToken as an invalid one; Ctrl-C during
a DuckDB query ends a command with "interrupted" and exit code 130. Real stores, FIFOs and subprocesses."""

from __future__ import annotations

import base64
import csv
import fcntl
import hashlib
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import termios
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import boto3
import duckdb
import pyarrow.parquet as pq
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from cli import app
from tests.service_support import API_KEY, Service, copy_store, rg, trained_base
from tests.storedb import q

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return trained_base(tmp_path_factory)


@pytest.fixture(scope="module")
def scored(base, tmp_path_factory):
    """A trained store with every event assessed, and how many rows its export has."""
    db = copy_store(base, tmp_path_factory.mktemp("scored") / "scored.duckdb")
    rg("score", db=db)
    return db, q(db, "SELECT count(*) FROM assessments")[0][0]


@pytest.fixture
def store(scored, tmp_path):
    db = tmp_path / "s.duckdb"
    shutil.copy(scored[0], db)
    return db


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(*args, db, cwd=None):
    if cwd is not None:
        old = os.getcwd()
        os.chdir(cwd)
    try:
        return runner.invoke(app, ["export", *map(str, args), "--db", str(db)])
    finally:
        if cwd is not None:
            os.chdir(old)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


# -- export: never over the store ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["s.duckdb", "./s.duckdb", "{abs}", "s.duckdb.wal", "s.duckdb.lock", "s.duckdb.want",
                                  "s.duckdb.serve", "symlink", "hardlink"])
def test_an_export_onto_the_store_or_a_file_beside_it_is_refused_and_the_store_is_untouched(store, tmp_path, name):
    """It used to overwrite the store itself with the CSV ("wrote 654 rows"): the store was gone."""
    if name == "symlink":
        (tmp_path / "link.csv").symlink_to(store)
        name = "link.csv"
    elif name == "hardlink":
        os.link(store, tmp_path / "hard.csv")
        name = "hard.csv"
    name = name.replace("{abs}", str(store))
    before = digest(store)
    res = export("--out", name, db="s.duckdb", cwd=tmp_path)
    assert res.exit_code == 2, res.output
    assert "--out names another file" in res.stderr and "would destroy it" in res.stderr
    assert "the store" in res.stderr and "wrote" not in res.stdout
    assert digest(store) == before
    assert q(store, "SELECT count(*) FROM events")[0][0] > 0  # still a store
    assert leftovers(tmp_path) == []


def test_the_store_through_a_symbolic_link_and_the_exports_temporary_file_are_protected_too(store, tmp_path):
    before = digest(store)
    (tmp_path / "via.duckdb").symlink_to(store)
    for out, db in (("s.duckdb", "via.duckdb"), ("via.duckdb.wal", "via.duckdb"), ("s.duckdb.wal", "via.duckdb")):
        res = export("--out", out, db=db, cwd=tmp_path)
        assert res.exit_code == 2 and "would destroy it" in res.stderr, (out, db, res.output)
    # an export to X is written to X.partial first: a store of that name would be overwritten by it
    partial_named = tmp_path / "x.csv.partial"
    shutil.copy(store, partial_named)
    res = export("--out", "x.csv", db=partial_named.name, cwd=tmp_path)
    assert res.exit_code == 2 and "is written to" in res.stderr and "would destroy it" in res.stderr, res.output
    assert digest(partial_named) == digest(store) == before and not (tmp_path / "x.csv").exists()


def test_an_export_onto_a_store_that_does_not_exist_yet_is_refused_before_it_is_opened(tmp_path):
    """Refused before anything is read: the store is not even created (opening it made and migrated one, which
    the export then overwrote)."""
    res = export("--out", "new.duckdb", db="new.duckdb", cwd=tmp_path)
    assert res.exit_code == 2 and "is the store this command reads" in res.stderr, res.output
    assert list(tmp_path.iterdir()) == []


def test_an_export_in_an_unknown_format_is_refused_before_the_store_is_opened(tmp_path):
    res = export("--out", "x.xml", "--format", "xml", db="new.duckdb", cwd=tmp_path)
    assert res.exit_code == 2 and "--format must be one of csv, parquet, jsonl, got 'xml'" in res.stderr, res.output
    assert list(tmp_path.iterdir()) == []  # no store made and migrated for nothing


# -- export: an --out that names no file ---------------------------------------------------------------------


@pytest.mark.parametrize("out", ["", "missing-folder/", "a-folder/", ".", "a-folder/.."])
def test_an_out_that_names_no_file_is_refused_before_anything_is_read(tmp_path, out):
    """``--out ""`` used to read and write everything, then crash (FileNotFoundError '.partial' -> '')."""
    (tmp_path / "a-folder").mkdir()
    res = export("--out", out, db="new.duckdb", cwd=tmp_path)
    assert res.exit_code == 2, res.output
    assert "--out" in res.stderr and "Traceback" not in res.output
    assert {"": "--out is empty", "missing-folder/": "missing-folder/: names no file"}.get(out, "is a folder") \
        in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-folder"]  # no store opened, nothing written
    assert list((tmp_path / "a-folder").iterdir()) == []


# -- export: FIFOs, character devices, symbolic links ------------------------------------------------------------


def _read_export(data: bytes, fmt: str) -> list[dict]:
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(data.decode())))
    if fmt == "jsonl":
        return [json.loads(line) for line in data.decode().splitlines()]
    return pq.read_table(io.BytesIO(data)).to_pylist()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_an_export_into_a_fifo_writes_into_it_and_leaves_it_a_fifo(store, scored, tmp_path, fmt):
    """It used to write ``<fifo>.partial`` and rename it over the FIFO: the reader waited for ever, and the FIFO was
    gone."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    keep = tmp_path / "keep"
    os.link(fifo, keep)  # the FIFO by another name, to let the reader go should nothing write into it
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    res = export("--out", fifo, "--format", fmt, db=store)
    reader.join(30)
    if reader.is_alive():  # nothing opened the FIFO for writing: the reader still waits
        os.close(os.open(keep, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(30)
    assert res.exit_code == 0, res.output
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and leftovers(tmp_path) == []
    assert got, "the reader of the FIFO got nothing"
    rows = _read_export(got[0], fmt)
    assert len(rows) == scored[1] > 0 and {"event_id", "score", "decision"} <= set(rows[0])


def _reader_gone(args: list[str], store: Path) -> subprocess.CompletedProcess:
    """``riskgate ARGS --db store`` with its standard output a pipe whose reader has already closed it (``| head``
    that has read what it wanted), in its own process as a shell runs it."""
    r, w = os.pipe()
    os.close(r)
    try:
        db = [] if args[-1] == "--help" else ["--db", str(store)]
        return subprocess.run([sys.executable, "-m", "cli", *args, *db], stdout=w,
                              stderr=subprocess.PIPE, cwd=ROOT, timeout=120, text=True)
    finally:
        os.close(w)


@pytest.mark.parametrize("args", [["export", "--out", "/dev/stdout"], ["export", "--out", "/dev/stdout", "--format",
                                  "jsonl"], ["summary"], ["report"], ["report", "--json"], ["--help"],
                                  ["export", "--help"]])
def test_a_standard_output_whose_reader_went_away_ends_the_command_quietly_with_141(store, args):
    """``riskgate export --out /dev/stdout | head`` said "error: cannot write the export: Broken pipe" (exit 2), and
    the other commands ended with Rich's or click's 1: now each ends as ``cat`` does, silent, 128 + SIGPIPE."""
    res = _reader_gone(args, store)
    assert (res.returncode, res.stderr) == (141, "")


def test_a_commands_own_exit_code_stays_when_its_reader_leaves_after_reading_everything():
    """``credentials check`` exits 1 for a password not in breach data; a reader that reads its whole answer and
    leaves before it exits (``| grep -q``) made that 141."""
    for _ in range(3):
        r, w = os.pipe()
        proc = subprocess.Popen([sys.executable, "-m", "cli", "credentials", "check"],
                                stdin=subprocess.PIPE, stdout=w, stderr=subprocess.PIPE, cwd=ROOT)
        os.close(w)
        proc.stdin.write(b"x7#kq!Zr9-unlikely-pw\n")
        proc.stdin.close()
        line = b""
        while not line.endswith(b"\n"):
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            line += chunk
        os.close(r)  # it has the whole answer: gone
        assert proc.wait(60) == 1 and b"not found" in line, (line, proc.stderr.read())


@pytest.fixture(scope="module")
def talkative(scored, tmp_path_factory):
    """A scored store with 60 configuration versions (``config history`` prints more than a pipe holds), and files
    of users and labels that ``users load`` and ``labels load`` reject entry by entry."""
    from risk import config as risk_config
    from risk import store as rstore

    d = tmp_path_factory.mktemp("talkative")
    db = d / "t.duckdb"
    shutil.copy(scored[0], db)
    con = rstore.connect(str(db))
    try:
        for i in range(60):
            risk_config.set_mode(con, ("AUDIT", "ENFORCED")[i % 2])
    finally:
        con.close()
    (d / "labels.csv").write_text("event_id,label,value,source\n" + "".join(f"e{i},colour,blue\n"
                                                                          for i in range(300)))
    (d / "users.csv").write_text("username,sub,status,enabled,mfa_settings,preferred_mfa,email\n"
                                 + "".join(f"u{i},s{i},NOT_A_STATUS,yes,,,\n" for i in range(300)))
    user = q(db, "SELECT username FROM events GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1")[0][0]
    return db, d, user


def _reader_leaves_mid_write(args: list[str], db: Path) -> subprocess.CompletedProcess:
    """``riskgate ARGS --db db`` writing into a one-page pipe whose reader leaves once the pipe is full: the
    command is then inside a write (``| head -c 1`` of a long answer). Unbuffered (``PYTHONUNBUFFERED=1``), as
    the tester ran it."""
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
        capacity = fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)
        proc = subprocess.Popen([sys.executable, "-m", "cli", *args, "--db", str(db)], stdout=w,
                                stderr=subprocess.PIPE, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    finally:
        os.close(w)
    try:
        deadline = time.monotonic() + 120
        while int.from_bytes(fcntl.ioctl(r, termios.FIONREAD, b"\0" * 4), sys.byteorder) < capacity:
            assert proc.poll() is None, f"the command ended before it filled the pipe: {proc.stderr.read()!r}"
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        os.close(r)
    stderr = proc.stderr.read().decode()
    return subprocess.CompletedProcess(args, proc.wait(60), None, stderr)


#: commands whose output is longer than a one-page pipe, through each way of printing: typer.echo (users list --json,
#: config history --json, config describe, labels load and users load --json), Rich (users list, config history),
#: print (events), and the export's own file
LONG_OUTPUTS = [["users", "list", "--json"], ["users", "list"], ["config", "history", "--json"], ["config", "history"],
                ["config", "describe"], ["events", "{user}", "--max-results", "60"],
                ["labels", "load", "{d}/labels.csv", "--json"], ["users", "load", "{d}/users.csv", "--json"],
                ["export", "--out", "/dev/stdout", "--format", "jsonl"]]


@pytest.mark.parametrize("args", LONG_OUTPUTS, ids=[" ".join(a) for a in LONG_OUTPUTS])
def test_a_reader_that_leaves_in_the_middle_of_a_write_ends_the_command_with_141(talkative, args):
    """``riskgate users list --json | head -c 1`` ended with 0, silent, having written a part of its answer: with
    ``PYTHONUNBUFFERED`` a write (``typer.echo`` of the whole JSON, Rich's of a whole table) went straight to the
    pipe, which took what it held, and the rest was dropped without an error. Whatever prints it, a write now
    writes everything or ends the command as ``cat`` does."""
    db, d, user = talkative
    res = _reader_leaves_mid_write([a.format(d=d, user=user) for a in args], db)
    assert (res.returncode, res.stderr) == (141, "")


def test_a_named_fifo_whose_reader_went_away_is_still_an_error_of_the_export(store, tmp_path):
    """Only standard output's reader going away is the quiet end of a filter; a FIFO given as ``--out`` whose
    reader leaves is an export that did not complete, and says so."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def read_a_little_and_leave():
        with open(fifo, "rb") as fh:
            fh.read(10)

    reader = threading.Thread(target=read_a_little_and_leave, daemon=True)
    reader.start()
    res = subprocess.run([sys.executable, "-m", "cli", "export", "--out", str(fifo), "--db", str(store)],
                         capture_output=True, cwd=ROOT, timeout=120, text=True)
    reader.join(30)
    assert res.returncode == 2 and "cannot write the export: Broken pipe" in res.stderr, res.stderr


def test_an_export_through_a_symbolic_link_writes_its_target_and_keeps_the_link(store, scored, tmp_path):
    (tmp_path / "links").mkdir()
    (tmp_path / "data").mkdir()
    target = tmp_path / "data" / "export.csv"
    target.write_text("old\n")
    link = tmp_path / "links" / "export.csv"
    link.symlink_to(target)
    res = export("--out", link, db=store)
    assert res.exit_code == 0, res.output
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert len(_read_export(target.read_bytes(), "csv")) == scored[1]
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["export.csv"]  # the temporary file beside the target
    assert [p.name for p in (tmp_path / "links").iterdir()] == ["export.csv"]
    # a link to a file not there yet: the file is made, the link stays
    dangling = tmp_path / "links" / "later.jsonl"
    dangling.symlink_to(tmp_path / "data" / "later.jsonl")
    res = export("--out", dangling, "--format", "jsonl", db=store)
    assert res.exit_code == 0, res.output
    assert dangling.is_symlink() and len(_read_export(dangling.read_bytes(), "jsonl")) == scored[1]


def test_an_export_into_a_character_device_writes_into_it(store, tmp_path):
    """Through links in the test's folder (an export that replaced its --out replaces only the link)."""
    null = tmp_path / "null"
    null.symlink_to("/dev/null")
    res = export("--out", null, db=store)
    assert res.exit_code == 0 and "wrote" in res.stdout, res.output
    assert null.is_symlink() and stat.S_ISCHR(os.stat("/dev/null").st_mode) and leftovers(tmp_path) == []
    full = tmp_path / "full"
    full.symlink_to("/dev/full")
    res = export("--out", full, db=store)  # a write that fails: a clean error, not a traceback
    assert res.exit_code == 2 and "cannot write the export: No space left on device" in res.stderr, res.output
    assert full.is_symlink() and leftovers(tmp_path) == []


def test_an_export_to_dev_stdout_in_a_pipe_is_the_export_alone(store, scored):
    res = subprocess.run([sys.executable, "-m", "cli", "export", "--out", "/dev/stdout", "--db", str(store)],
                         cwd=ROOT, capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert len(_read_export(res.stdout, "csv")) == scored[1]
    assert b"wrote" not in res.stdout and b"wrote" in res.stderr


# -- events / AdminListUserAuthEvents: hostile NextTokens --------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


#: a token far longer than any of ours, and ones short enough to be decoded whose JSON nests too deep for the parser
HOSTILE_TOKENS = {"overlong": _b64(b"[" * 20000), "deep": _b64(b"[" * 3000),
                  "deep-closed": _b64(b"[" * 1500 + b"]" * 1500)}


@pytest.mark.parametrize("kind", sorted(HOSTILE_TOKENS))
def test_a_hostile_next_token_is_an_invalid_token_on_the_command_line(base, tmp_path, kind):
    """A deeply nested token was a RecursionError (a traceback, exit code 1)."""
    db = copy_store(base, tmp_path / "e.duckdb")
    user = q(db, "SELECT any_value(username) FROM events")[0][0]
    res = runner.invoke(app, ["events", user, "--next-token", HOSTILE_TOKENS[kind], "--db", str(db)])
    assert res.exit_code == 2, res.output
    assert "NextToken" in res.stderr and "is not a valid token" in res.stderr
    assert isinstance(res.exception, SystemExit)


def test_an_empty_next_token_is_refused_not_read_as_the_first_page(base, tmp_path):
    """``--next-token ''`` (an unset shell variable) listed the first page again as if no token had been given;
    Cognito's tokens are at least one character."""
    db = copy_store(base, tmp_path / "e.duckdb")
    user = q(db, "SELECT any_value(username) FROM events")[0][0]
    res = runner.invoke(app, ["events", user, "--next-token", "", "--db", str(db)])
    assert res.exit_code == 2, res.output
    assert res.stderr == "error: NextToken is empty: give the NextToken of the previous page, or none\n"


def test_the_longest_token_of_ours_is_accepted():
    """The length limit is above every token the listing writes: a 55-character user pool id, a 128-character
    username of characters ``json.dumps`` writes as 12 each, and a 50-character event id."""
    from risk.auth_events import MAX_TOKEN_CHARS, InvalidParameterError, _decode_token, _encode_token

    user, pool = "\U0001F600" * 128, "eu-west-1_" + "p" * 45
    when = datetime(2026, 3, 1, 8, 15, 2, 120000, tzinfo=timezone.utc)
    token = _encode_token(pool, user, when, "e" * 50)
    assert len(token) <= MAX_TOKEN_CHARS
    assert _decode_token(token, pool, user) == (when, "e" * 50)
    # bound to the user: the username in its pool (the same username of another pool is another user)
    for other_pool, other_user in ((None, user), ("eu-west-1_Other", user), (pool, "someone")):
        with pytest.raises(InvalidParameterError, match="another user's listing"):
            _decode_token(token, other_pool, other_user)
    # the hostile tokens: one refused for its length, the others decoded (and refused for their depth)
    assert [k for k, t in sorted(HOSTILE_TOKENS.items()) if len(t) > MAX_TOKEN_CHARS] == ["overlong"]


def test_a_hostile_next_token_is_invalid_parameter_on_the_service(base, tmp_path):
    """The service's AdminListUserAuthEvents reads tokens with the same function: it answered 500."""
    with Service(copy_store(base, tmp_path / "svc.duckdb")) as svc:
        pool, user = svc.worker.call(lambda con: con.execute(
            "SELECT user_pool_id, username FROM events WHERE user_pool_id IS NOT NULL GROUP BY ALL "
            "ORDER BY count(*) DESC, 2 LIMIT 1").fetchall()[0]).result(30)
        c = boto3.client("cognito-idp", endpoint_url=svc.url, region_name="eu-west-1", aws_access_key_id="riskgate",
                         aws_secret_access_key=API_KEY, config=Config(retries={"max_attempts": 1}))
        for kind, token in sorted(HOSTILE_TOKENS.items()):
            with pytest.raises(ClientError) as e:
                c.admin_list_user_auth_events(UserPoolId=pool, Username=user, NextToken=token)
            err = e.value.response
            assert (err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]) == \
                ("InvalidParameterException", 400), kind
            assert "is not a valid token" in err["Error"]["Message"], kind
        page = c.admin_list_user_auth_events(UserPoolId=pool, Username=user, MaxResults=1)
        assert c.admin_list_user_auth_events(UserPoolId=pool, Username=user, MaxResults=1,
                                             NextToken=page["NextToken"])["AuthEvents"]  # ours still pages


# -- Ctrl-C during a DuckDB query ------------------------------------------------------------------------------

#: a command wrapped in ``handle_errors`` that runs one long DuckDB query (some 40 s on two cores unless
#: interrupted); it says "querying" once DuckDB reports the query's progress, and which exception DuckDB raised
_LONG_QUERY = """
import signal, sys, threading, time
import duckdb
from cli.common import handle_errors

signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored (a background job)
# one thread: the query's work runs on the thread that waits for it, which checks for signals between its slices of
# work (with more, it may only wait for a worker thread, and see the signal when the query ends)
con = duckdb.connect(config={"threads": 1})
con.execute("SET enable_progress_bar = true; SET enable_progress_bar_print = false")

def when_running():
    while con.query_progress() < 0:
        time.sleep(0.01)
    if sys.argv[1] == "interrupt":
        con.interrupt()
    else:
        print("querying", flush=True)

@handle_errors
def command():
    threading.Thread(target=when_running, daemon=True).start()
    try:
        con.execute("SELECT count(*) FROM range(100000000000) t(i) WHERE i % 7 = 3").fetchall()
    except BaseException as exc:
        print("duckdb raised", type(exc).__name__, exc, file=sys.stderr, flush=True)
        raise
    print("finished", flush=True)

command()
"""


@pytest.mark.parametrize("how", ["sigint", "interrupt"])
def test_ctrl_c_during_a_duckdb_query_is_interrupted_with_exit_code_130(how):
    """SIGINT during a query makes DuckDB raise ``RuntimeError: Query interrupted`` in place of KeyboardInterrupt
    (``con.interrupt()``: duckdb.InterruptException): that was a traceback and exit code 1."""
    proc = subprocess.Popen([sys.executable, "-c", _LONG_QUERY, how], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        if how == "sigint":
            assert proc.stdout.readline() == "querying\n"
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    raised = {"sigint": "duckdb raised RuntimeError Query interrupted",
              "interrupt": "duckdb raised InterruptException"}[how]
    assert raised in err, err
    assert proc.returncode == 130, err
    assert err.rstrip().endswith("interrupted") and "Traceback" not in err and "finished" not in out


def test_an_error_raised_from_an_interrupt_is_still_an_interrupt(capsys):
    from cli.common import handle_errors
    from ingest.errors import RiskgateError

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = true; SET enable_progress_bar_print = false")

    def when_running():
        while con.query_progress() < 0:
            time.sleep(0.01)
        con.interrupt()

    threading.Thread(target=when_running, daemon=True).start()
    with pytest.raises(duckdb.InterruptException) as e:
        con.execute("SELECT count(*) FROM range(100000000000) t(i) WHERE i % 7 = 3").fetchall()
    real = e.value

    @handle_errors
    def wrapped():
        try:
            raise real
        except duckdb.Error as exc:
            raise RiskgateError("while scoring chunk 3") from exc

    with pytest.raises(SystemExit) as done:
        wrapped()
    assert done.value.code == 130 and capsys.readouterr().err.strip() == "interrupted"
    from ingest.errors import interrupted

    assert interrupted(RuntimeError("Query interrupted")) and not interrupted(RuntimeError("something else"))
    assert not interrupted(ValueError("Query interrupted"))


def test_ctrl_c_while_the_command_is_still_being_imported_ends_quietly_with_130(monkeypatch, capsys):
    """A Ctrl-C in the first moments (the command's modules importing, before its own error handling) printed a
    traceback; now it ends as a later one does."""
    import cli

    def interrupted_import(modules=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "load", interrupted_import)
    with pytest.raises(SystemExit) as done:
        cli.main(["score", "--db", "x.duckdb"])
    assert done.value.code == 130 and capsys.readouterr().err == "interrupted\n"
