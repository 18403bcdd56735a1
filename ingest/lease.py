"""Turn-taking between processes over one DuckDB store file.

DuckDB lets one process open a database file read-write, or several open it
read-only, never both. riskgate has long-running writers (``riskgate score``,
``riskgate ingest``, the HTTP service) and short visitors (the dashboard, a
``riskgate feedback``), so processes take turns instead of failing:

* ``<db>.lock`` is held with ``flock`` while a process has the file open:
  exclusively by a writer, shared by readers. Its content names the writer
  (pid and command) for the message of whoever waits too long.
* ``<db>.want`` is held shared by every process waiting for its turn, and
  released once it has it. A holder learns that somebody waits by failing to
  take it exclusively (one non-blocking system call, ``wanted()``), and then
  hands over at a point where it has nothing in flight: a batch job between
  two chunks, the service between requests, a dashboard after one page.

The kernel drops the locks of a process that dies, so a crash never leaves
the store locked. Locks are per process: connections opened in one process
share its turn (DuckDB shares the open database between them too).
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
import time

from ingest.errors import StoreError

WAIT_ENV = "RISKGATE_STORE_WAIT"
DEFAULT_WAIT_S = 300.0
#: After this long waiting, say on stderr who holds the store (once).
_ANNOUNCE_AFTER_S = 2.0


def default_wait() -> float:
    raw = os.environ.get(WAIT_ENV)
    if not raw:
        return DEFAULT_WAIT_S
    try:
        value = float(raw)
    except ValueError:
        raise StoreError(f"{WAIT_ENV} must be a number of seconds, got {raw!r}") from None
    if value < 0:
        raise StoreError(f"{WAIT_ENV} must not be negative, got {raw!r}")
    return value


def _open_side_file(path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot open the store's lock file: {exc.strerror}", source=path) from exc


def side_file(db_path: str, suffix: str) -> str:
    """The lock file ``suffix`` of the store at ``db_path``: beside the store's real file, so that processes that
    name it through different symbolic links (or the real path) take turns on one lock."""
    return os.path.realpath(db_path) + suffix


def can_lock(db_path: str) -> bool:
    """Whether the lock files beside ``db_path`` can be created (not on a read-only folder)."""
    for side in (side_file(db_path, ".lock"), side_file(db_path, ".want")):
        if not os.path.exists(side) and not os.access(os.path.dirname(os.path.abspath(side)) or ".", os.W_OK):
            return False
        if os.path.exists(side) and not os.access(side, os.W_OK):
            return False
    return True


class Turn:
    """This process's turn on one store file; one object per path per process (see ``turn_for``)."""

    def __init__(self, db_path: str):
        self.db_path = db_path
        self.lock_path = side_file(db_path, ".lock")
        self.want_path = side_file(db_path, ".want")
        self._fd: int | None = None
        self.exclusive = False
        self.refs = 0
        self.since = 0.0
        self._mutex = threading.RLock()

    # -- holding --------------------------------------------------------------

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, exclusive: bool, wait: float) -> None:
        """Wait (at most ``wait`` seconds) until this process may open the file, registered as waiting."""
        want_fd = _open_side_file(self.want_path)
        try:
            fcntl.flock(want_fd, fcntl.LOCK_SH)
            fd = _open_side_file(self.lock_path)
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            start = time.monotonic()
            announced = False
            delay = 0.002
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    waited = time.monotonic() - start
                    if waited >= wait:
                        os.close(fd)
                        raise StoreError(
                            f"the store is in use by {self.holder() or 'another process'} "
                            f"and did not come free in {wait:g} s (set {WAIT_ENV} to wait longer)",
                            source=self.db_path,
                        ) from None
                    if not announced and waited >= _ANNOUNCE_AFTER_S:
                        print(f"waiting for the store {self.db_path}: in use by {self.holder() or 'another process'}",
                              file=sys.stderr, flush=True)
                        announced = True
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
        finally:
            fcntl.flock(want_fd, fcntl.LOCK_UN)
            os.close(want_fd)
        if exclusive:
            me = f"pid {os.getpid()} ({' '.join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv[:3]))})"
            os.ftruncate(fd, 0)
            os.pwrite(fd, me.encode("utf-8", "replace"), 0)
        self._fd = fd
        self.exclusive = exclusive
        self.since = time.monotonic()

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self.exclusive:  # the name is this holder's: not the next one's, a reader's that writes none
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def holder(self) -> str:
        """Who holds the store exclusively, as the holder wrote it ('' when unknown: a reader holds it, or the
        name left by a process that is gone -- killed before it could clear it)."""
        try:
            with open(self.lock_path, encoding="utf-8", errors="replace") as fh:
                text = fh.read(200).strip()
        except OSError:
            return ""
        parts = text.split()
        if len(parts) >= 2 and parts[0] == "pid" and parts[1].isdigit():
            try:
                os.kill(int(parts[1]), 0)
            except ProcessLookupError:
                return ""
            except OSError:  # (PermissionError: it exists, owned by another user)
                pass
        return text

    # -- others waiting -------------------------------------------------------

    def wanted(self) -> bool:
        """Whether another process waits for the store (never blocks)."""
        try:
            fd = os.open(self.want_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def let_waiters_in(self, wait: float) -> None:
        """After ``release``: give the processes waiting now the time to take their turn."""
        deadline = time.monotonic() + wait
        while self.wanted() and time.monotonic() < deadline:
            time.sleep(0.002)


_turns: dict[str, Turn] = {}
_turns_lock = threading.Lock()


def turn_for(db_path: str) -> Turn:
    """The one ``Turn`` of this process for the store at ``db_path``."""
    key = os.path.realpath(db_path)
    with _turns_lock:
        turn = _turns.get(key)
        if turn is None:
            turn = _turns[key] = Turn(db_path)
        return turn


#: The suffix of the file ``riskgate serve`` holds locked while it serves a store (:func:`hold_serving`).
SERVE_SUFFIX = ".serve"


def note_serving_address(fd: int, address: str) -> None:
    """Say in the lease ``fd`` (:func:`hold_serving`'s) the address the service got, once it listens."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} at {address}".encode("utf-8", "replace"), 0)


def hold_serving(db_path: str, address: str) -> int:
    """Take ``<db>.serve`` for this process's lifetime (the kernel drops it when the process ends) and write who
    serves (pid and ``address``) into it; return its descriptor. One service per store: the service keeps the
    users' recent history in memory and holds the store between requests, so a second one would hand the store
    back and forth with the first at every request (each answer then waits for the other's hand-over and a
    reload of its state: 0.32 s instead of 4 ms, measured on the demo store) -- refused here with a StoreError
    naming the one that serves."""
    fd = _open_side_file(side_file(db_path, SERVE_SUFFIX))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            who = os.pread(fd, 300, 0).decode("utf-8", "replace").strip()
        finally:
            os.close(fd)
        raise StoreError(
            f"another riskgate serve ({who or 'a process that has not said who it is yet'}) already serves this "
            "store: one service per store (it keeps the users' recent history in memory and holds the store "
            "between requests; a second one would take turns with it at every request); stop it, or point the "
            "clients at it", source=db_path) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} at {address}".encode("utf-8", "replace"), 0)
    return fd
