"""Output files that appear at their names only complete (``riskgate export``, ``riskgate synth``).

Each file (or folder) is written under its name plus :data:`PARTIAL_SUFFIX` and renamed to its name once the
command has written everything (:meth:`PartialOutputs.commit`). A command that fails or is interrupted before
that removes what it wrote and leaves whatever was at the names as it was: a reader (``riskgate ingest``,
``riskgate labels load``) never finds a truncated file there that looks finished. Only a process killed outright
leaves ``<name>.partial`` behind, which the next run writing that name removes.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat

from ingest.errors import RiskgateError

#: The suffix of the name an output is written under before it is renamed to its own.
PARTIAL_SUFFIX = ".partial"


class PartialOutputs:
    """The outputs of one run, each written as ``<name>.partial``, renamed to their names together at the end.

    Leaving the ``with`` block without :meth:`commit` (an error, Ctrl-C) removes every partial file and folder
    handed out::

        with PartialOutputs() as outputs:
            write_events(outputs.path("events.jsonl"))
            write_labels(outputs.path("events.labels.csv"))
            outputs.commit()
    """

    def __init__(self) -> None:
        self._pending: list[tuple[str, str]] = []  # (partial name, name)
        self._locks: list[int] = []  # a descriptor of each partial output, locked while this run writes it

    def path(self, name: str | os.PathLike, *, folder: bool = False) -> str:
        """Where to write ``name``: ``<name>.partial``, beside the target when ``name`` is a symbolic link (the
        target is replaced, the link stays); ``name`` itself when it is a FIFO or a device (``/dev/stdout``: written
        in place, there is nothing to rename). A partial file left by a killed run is removed first (never written
        through: it may be a link). ``folder``: the partial folder is made here, and one left by a killed run must
        be empty (its files are not this run's to delete). Each partial output is locked (``flock``) while this run
        writes it: another run writing the same name is refused, instead of the two removing each other's partial
        files and renaming a half-written one into place."""
        name = os.fspath(name)
        if not folder and os.path.exists(name) and not os.path.isfile(name) and not os.path.isdir(name):
            return name
        target = os.path.realpath(name) if os.path.islink(name) else name
        tmp = target + PARTIAL_SUFFIX
        if os.path.lexists(tmp) and not os.path.islink(tmp):
            self._refuse_if_written(tmp, name)
        if folder and os.path.isdir(tmp) and not os.path.islink(tmp):
            if os.listdir(tmp):
                raise RiskgateError(f"the folder is written as {tmp} first, which holds files (left by an interrupted "
                                    "run?): remove it, or name another folder", source=name)
            os.rmdir(tmp)
        elif os.path.lexists(tmp):
            os.unlink(tmp)
        if folder:
            os.mkdir(tmp)
            fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        else:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        self._locks.append(fd)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # just made: nobody else holds it
        self._pending.append((tmp, target))
        return tmp

    @staticmethod
    def _refuse_if_written(tmp: str, name: str) -> None:
        """Refuse ``name`` when its partial output ``tmp`` is locked: another run is writing it now."""
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | (os.O_DIRECTORY if os.path.isdir(tmp) else 0))
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RiskgateError(f"another run is writing it now (as {tmp}): wait for it, or name another output",
                                source=name) from None
        finally:
            os.close(fd)

    def commit(self) -> None:
        """Rename every partial output to its name, the first handed out last (a run's main output: once it is at
        its name, so are the files beside it). A file replaced keeps its mode (a private file stays private)."""
        while self._pending:
            tmp, target = self._pending[-1]
            if os.path.isfile(target) and os.path.isfile(tmp):
                os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
            os.replace(tmp, target)
            self._pending.pop()
        self._unlock()

    def discard(self) -> None:
        """Remove every partial output not renamed yet."""
        for tmp, _ in self._pending:
            if os.path.isdir(tmp) and not os.path.islink(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
            elif os.path.lexists(tmp):
                os.unlink(tmp)
        self._pending.clear()
        self._unlock()

    def _unlock(self) -> None:
        while self._locks:
            os.close(self._locks.pop())

    def __enter__(self) -> "PartialOutputs":
        return self

    def __exit__(self, *exc) -> None:
        self.discard()
