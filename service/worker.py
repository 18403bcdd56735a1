"""The service's store thread and notification thread.

DuckDB has one writer per file, and riskgate's processes take turns over it
(``ingest.lease``). The service therefore keeps one ``Store`` and one thread
that does all its store work: :class:`StoreWorker` runs jobs from a queue,
coalescing the ``/v1/evaluate`` requests that queued while the previous
handful was being assessed into one ``InlineScorer.evaluate`` call. A
request's answer depends on that request only: when the call for a batch
raises, each of its requests is assessed on its own, so that only those that
fail alone get an error.
Between jobs it checks, at most every ``poll`` seconds, whether another
process waits for the store; once it has held the store ``min_hold`` seconds
it hands it over (``Store.handover``) -- nothing is in flight then, because
only this thread touches the store -- and requests that arrive meanwhile
wait in the queue. A request that waits longer than its timeout is answered
503 with Retry-After by the HTTP layer; its job is cancelled if it has not
started.

Write-behind: an event whose features come from the scorer's in-memory state
(``risk.online``: new events, in time order -- the usual case) is answered as
soon as it is assessed, and written afterwards by the scorer's writer thread,
together with the others answered meanwhile, in one transaction: every
``max_delay`` seconds (0.25) or ``max_pending`` events, and as soon as no
request has come for ``poll`` seconds (0.05). Everything else that touches
the store (a call, a hand-over, an event that needs SQL features, stopping)
waits for those writes first. The window this opens: if the service dies
after an answer and before its write (at most ``max_delay`` later, plus the
write), that event is lost; a failed write is logged and counted
(``write_errors``).

:class:`Notifier` delivers the notifications the decisions made due from its
own thread (a slow or dead SMTP server never delays an answer) and has the
store thread record each outcome. Each is a pending row of the store, written
with its assessment (``risk.notify.reserve``), so a stop leaves what is still
queued pending for the next run instead of losing it. At start, and then every
``retry_every`` seconds (``DEFAULT_RETRY_EVERY_S``), it has the store thread
claim what is owed (notifications that failed meanwhile, pending rows of runs
that are gone) and delivers that too, through the same queue; a row it holds
(queued or in flight) is never queued a second time.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Hashable

from ingest.errors import RiskgateError

log = logging.getLogger("riskgate.service")

DEFAULT_MIN_HOLD_S = 0.25
DEFAULT_POLL_S = 0.05
DEFAULT_MAX_BATCH = 256
#: write-behind: answered events are written at the latest after this many / seconds (at once when idle)
DEFAULT_MAX_PENDING = 512
DEFAULT_MAX_DELAY_S = 0.25
#: how often the running service claims and sends what is owed (``risk.notify.claim_owed``, whose attempt and time
#: limits apply): a notification that failed while it runs (SMTP down for a minute) is tried again this much later
DEFAULT_RETRY_EVERY_S = 300.0


@dataclass
class _Job:
    kind: str  # "evaluate" | "call" | "read" | "stop"
    payload: Any
    future: Future


class StoreWorker:
    """One thread owning the store (see the module docstring)."""

    def __init__(self, open_store: Callable[[], Any], make_scorer: Callable[[Any], Any], *,
                 min_hold: float = DEFAULT_MIN_HOLD_S, poll: float = DEFAULT_POLL_S,
                 max_batch: int = DEFAULT_MAX_BATCH, on_due: Callable[[list], None] | None = None,
                 max_pending: int = DEFAULT_MAX_PENDING, max_delay: float = DEFAULT_MAX_DELAY_S):
        self._open_store = open_store
        self._make_scorer = make_scorer
        self.min_hold = min_hold
        self.poll = poll
        self.max_batch = max_batch
        self.on_due = on_due
        self._q: queue.Queue[_Job] = queue.Queue()
        self._pending: deque[_Job] = deque()
        self._thread = threading.Thread(target=self._run, name="riskgate-store", daemon=True)
        self._opened = threading.Event()
        self.open_error: BaseException | None = None
        self.store = None
        self.scorer = None
        self.handovers = 0
        self.batches = 0
        self.max_pending = max_pending
        self.max_delay = max_delay
        self.flushes = 0
        #: seconds the last 10,000 batches took to assess, and requests from their handler's start to the
        #: answer (``/healthz`` gives percentiles)
        self.timings = {"evaluate": deque(maxlen=10_000), "request": deque(maxlen=10_000)}
        self._last_flush = time.monotonic()
        self.waiting_for_turn = False

    # -- life -------------------------------------------------------------------------------

    def start(self, wait: float | None = None) -> None:
        """Start the thread; wait until the store is open (or failed to open)."""
        self._thread.start()
        self._opened.wait(wait)
        if self.open_error is not None:
            raise self.open_error

    def stop(self, timeout: float = 30.0) -> None:
        if not self._thread.is_alive():
            return
        self._q.put(_Job("stop", None, Future()))
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.store is not None and not getattr(self.store, "closed", False)

    # -- submitting -------------------------------------------------------------------------

    def evaluate(self, request) -> Future:
        """Queue one inline event (an ``InlineRequest``); the future gives (result, None) or raises."""
        fut: Future = Future()
        self._q.put(_Job("evaluate", request, fut))
        return fut

    def call(self, fn: Callable[[Any], Any]) -> Future:
        """Queue ``fn(store)`` to run on the store thread."""
        fut: Future = Future()
        self._q.put(_Job("call", fn, fut))
        return fut

    def read(self, fn: Callable[[Any], Any]) -> Future:
        """Queue ``fn(store)``, which only reads, to run on the store thread. Unlike :meth:`call` it does not wait
        for the write-behind (it sees what is stored) nor tell the scorer the store changed, so that a frequent
        caller (``/healthz``) costs the requests nothing. Cancelled, not run, when the worker stops first."""
        fut: Future = Future()
        self._q.put(_Job("read", fn, fut))
        return fut

    def queued(self) -> int:
        return self._q.qsize() + len(self._pending)

    # -- the thread -------------------------------------------------------------------------

    def _next(self, block: bool) -> _Job | None:
        if self._pending:
            return self._pending.popleft()
        try:
            return self._q.get(timeout=self.poll) if block else self._q.get_nowait()
        except queue.Empty:
            return None

    def _run(self) -> None:
        try:
            self.store = self._open_store()
            self.scorer = self._make_scorer(self.store)
            warm = getattr(self.scorer, "warm", None)
            if warm is not None:
                try:
                    warm()  # ready only once the first request would not wait for the model and the state
                except RiskgateError as exc:  # e.g. no model yet: each request will say so
                    log.warning("could not prepare the scorer before the first request: %s", exc)
                except Exception:  # noqa: BLE001 - a fault of ours: the details
                    log.warning("could not prepare the scorer before the first request", exc_info=True)
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self.open_error = exc
            self._opened.set()
            return
        self._opened.set()
        last_check = 0.0
        try:
            while True:
                job = self._next(block=True)
                now = time.monotonic()
                if now - last_check >= self.poll:
                    last_check = now
                    self._maybe_hand_over()
                if job is None or job.kind != "stop":
                    self._reopen_if_closed()
                if job is None:
                    self._flush(wait=False)
                    continue
                if job.kind == "stop":
                    self._drain_cancel()
                    self._flush()
                    break
                if job.kind == "call":
                    self._flush()  # a call sees every answered event stored
                    self._run_call(job)
                elif job.kind == "read":
                    self._run_read(job)
                else:
                    self._run_evaluations(job)
                    if self._due_for_flush():
                        self._flush(wait=False)  # the writer thread writes while this one goes on
        finally:
            try:
                self._flush()
                self.scorer.close()
            finally:
                self.store.close()

    # -- write-behind -------------------------------------------------------------------------

    def _due_for_flush(self) -> bool:
        pending = getattr(self.scorer, "pending", None)
        if pending is None or not pending():
            return False
        return pending() >= self.max_pending or time.monotonic() - self._last_flush >= self.max_delay

    def _flush(self, wait: bool = True) -> None:
        """Write what was answered and not yet stored (the scorer's write-behind); a failure is logged."""
        flush = getattr(self.scorer, "flush", None)
        if flush is None:
            return
        try:
            if flush(wait=wait):
                self.flushes += 1
        except Exception:  # noqa: BLE001 - the answers are out; the loss is logged loudly
            log.exception("writing answered events to the store failed")
        self._last_flush = time.monotonic()

    def _maybe_hand_over(self) -> None:
        store = self.store
        if not hasattr(store, "wanted"):
            return
        try:
            if store.held_for() >= self.min_hold and store.wanted():
                self._flush()
                self.waiting_for_turn = True
                t0 = time.monotonic()
                if store.handover():
                    self.handovers += 1
                    self.scorer.refresh()  # another process may have changed the model, thresholds, configuration
                    log.info("store handed over and taken back after %.3f s", time.monotonic() - t0)
        except Exception:  # noqa: BLE001 - keep serving; the next request will report a closed store
            log.exception("handing the store over failed")
        finally:
            self.waiting_for_turn = False

    def _reopen_if_closed(self) -> None:
        """Take the store back when a hand-over could not (another process held it past the wait): until then
        requests get 503 with Retry-After and /healthz says unavailable; from then on the service serves again."""
        store = self.store
        if not getattr(store, "closed", False) or not hasattr(store, "reopen"):
            return
        try:
            store.reopen()
        except Exception:  # noqa: BLE001 - still held elsewhere: the next job or poll tries again
            log.warning("the store is still not free; requests get 503 until it is", exc_info=True)
            return
        self.scorer.refresh()  # another process may have changed the model, thresholds, configuration
        log.info("store taken back after a failed hand-over")

    def _run_call(self, job: _Job) -> None:
        if self._run_read(job):
            changed = getattr(self.scorer, "store_changed", None)
            if changed is not None:
                changed()  # the call may have written (feedback, configuration, users)

    def _run_read(self, job: _Job) -> bool:
        """Run the job's function on the store, its result or error to its future; False when it was cancelled."""
        if not job.future.set_running_or_notify_cancel():
            return False
        try:
            job.future.set_result(job.payload(self.store))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            job.future.set_exception(exc)
        return True

    def _run_evaluations(self, first: _Job) -> None:
        jobs = [first]
        while len(jobs) < self.max_batch:
            nxt = self._next(block=False)
            if nxt is None:
                break
            if nxt.kind != "evaluate":
                self._pending.appendleft(nxt)
                break
            jobs.append(nxt)
        live = [j for j in jobs if j.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            results, due = self._assess(live)
        except Exception as exc:  # noqa: BLE001 - one request must not fail the others: each is tried on its own
            if len(live) == 1:
                live[0].future.set_exception(exc)
                return
            log.warning("assessing a batch of %d requests failed (%s); assessing each on its own",
                        len(live), type(exc).__name__)
            for j in live:
                try:
                    results, due = self._assess([j])
                except BaseException as own:  # noqa: BLE001 - this request's own error, handed to it
                    j.future.set_exception(own)
                else:
                    self._answer([j], results, due)
            return
        except BaseException as exc:  # noqa: BLE001 - not the requests' doing (e.g. interrupted): all get it
            for j in live:
                j.future.set_exception(exc)
            return
        self._answer(live, results, due)

    def _assess(self, jobs: list[_Job]) -> tuple[list, list]:
        """One scorer call for ``jobs``: (a result or refusal per job, notifications due). A call that raises
        leaves its requests as they came (``InlineScorer.evaluate``), so that each can be tried again."""
        t0 = time.perf_counter()
        results, due = self.scorer.evaluate([j.payload for j in jobs])
        self.timings["evaluate"].append(time.perf_counter() - t0)
        self.batches += 1
        return results, due

    def _answer(self, jobs: list[_Job], results: list, due: list) -> None:
        for j, r in zip(jobs, results):
            if isinstance(r, BaseException):
                j.future.set_exception(r)
            else:
                j.future.set_result(r)
        if due and self.on_due is not None:
            self.on_due(due)

    def _drain_cancel(self) -> None:
        while True:
            job = self._next(block=False)
            if job is None:
                return
            if job.kind == "call":
                self._run_call(job)  # e.g. recording a notification: still done
            else:
                job.future.cancel()


@dataclass(frozen=True)
class Owed:
    """A notification the store thread claimed for the notifier (:class:`Notifier` ``owed``): ``key`` names its
    pending row, ``item`` is what ``deliver`` takes, and ``record(store, outcome)`` completes the row."""

    key: Hashable
    item: Any
    record: Callable[[Any, Any], None]


class Notifier:
    """Delivers due notifications from its own thread; the store thread records each outcome.

    Each notification it is given is already a pending row of the store (reserved with its assessment, or
    claimed by ``owed``: ``risk.notify``), so stopping loses none: what is still queued stays pending, and the
    next run (``riskgate score --notify``, or the service's next start) delivers it.

    ``owed(store)``, when given, runs on the store thread when the notifier starts (before any request: the store
    thread takes jobs in order) and then every ``retry_every`` seconds, from a timer thread of its own (so also
    while an email hangs; none starts while the previous one is still under way). It claims what is owed and
    returns it as :class:`Owed`; those are queued like the others, except a row (``key``) that the notifier still
    holds (queued, being sent, or sent and not recorded yet): no row is ever queued twice. A row whose delivery
    raised stays held until the stop (the next run delivers it), so that this process never sends it twice.
    """

    def __init__(self, worker: StoreWorker, deliver: Callable[[Any], Any], record: Callable[[Any, Any], None],
                 *, stop_wait: float = 10.0, owed: Callable[[Any], list[Owed]] | None = None,
                 retry_every: float = DEFAULT_RETRY_EVERY_S):
        self.worker = worker
        self._deliver = deliver
        self._record = record
        self.stop_wait = stop_wait
        self._owed = owed
        self.retry_every = retry_every
        self._q: queue.Queue = queue.Queue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="riskgate-notify", daemon=True)
        self._timer = threading.Thread(target=self._claim_every, name="riskgate-notify-owed", daemon=True)
        self.delivered = 0
        self.claims = 0  # claims of what is owed that completed (each found nothing, or queued what it found)
        self._held: set = set()  # keys of the Owed queued or being delivered: touched on the store thread only
        self._claim: Future | None = None

    def start(self) -> None:
        self._thread.start()
        if self._owed is not None:
            self._claim_owed()  # queued on the store thread before any request
            self._timer.start()

    def submit(self, due: list) -> None:
        for n in due:
            self._q.put(n)

    def stop(self, timeout: float | None = None) -> None:
        """Deliver nothing more and claim nothing more; wait (at most ``timeout``, default ``stop_wait`` seconds)
        for the delivery under way, whose outcome is then recorded. The queue is left as it is (pending in the
        store)."""
        self._stopping.set()
        if self._timer.is_alive():
            self._timer.join(self.stop_wait)  # it wakes at once; a claim it queued completes on the store thread
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join(self.stop_wait if timeout is None else timeout)

    def pending(self) -> int:
        return self._q.qsize()

    # -- what is owed ---------------------------------------------------------------------------

    def _claim_every(self) -> None:
        while not self._stopping.wait(self.retry_every):
            self._claim_owed()

    def _claim_owed(self) -> None:
        """Have the store thread claim what is owed, unless the previous claim is still under way."""
        if self._claim is not None and not self._claim.done():
            return
        self._claim = self.worker.call(self._claim_on_store_thread)
        self._claim.add_done_callback(self._claimed)

    def _claim_on_store_thread(self, store) -> list[Owed]:
        if self._stopping.is_set():  # run while the worker stops: nothing would deliver what it claims
            return []
        owed = [o for o in self._owed(store) if o.key not in self._held]
        self._held.update(o.key for o in owed)
        return owed

    def _claimed(self, fut: Future) -> None:
        try:
            if not fut.cancelled():
                owed = fut.result()
                if owed:
                    log.info("%d notification(s) owed (failed, or left pending by a run that is gone) to send",
                             len(owed))
                self.submit(owed)
        except RiskgateError as exc:  # e.g. no model yet: they stay owed, for the next claim or run
            log.warning("the notifications earlier runs owe wait for the next try: %s", exc)
        except Exception:  # noqa: BLE001 - the same, with what went wrong
            log.warning("could not claim the notifications earlier runs owe", exc_info=True)
        finally:
            self.claims += 1

    def _record_owed(self, store, owed: Owed, rec) -> None:
        owed.record(store, rec)
        self._held.discard(owed.key)  # recorded: no longer pending, so no claim finds it again

    # -- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            n = self._q.get()
            if n is None or self._stopping.is_set():
                return
            owed = n if isinstance(n, Owed) else None
            try:
                rec = self._deliver(n if owed is None else owed.item)
            except Exception:  # noqa: BLE001 - delivery reports failures as records; anything else is logged
                log.exception("delivering a notification failed")
                continue
            self.delivered += 1
            if owed is None:
                self.worker.call(lambda store, rec=rec: self._record(store, rec))
            else:
                self.worker.call(lambda store, rec=rec, owed=owed: self._record_owed(store, owed, rec))
