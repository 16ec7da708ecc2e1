"""The FIFO generation queue in front of the single worker.

One thread takes jobs in the order they were submitted and runs them on the worker, one at a
time; at most `depth` jobs wait behind the running one (KoboldCpp's default multiuser limit
is 6), a further submit raises QueueFull and the server answers 503. Each job carries its own
cancel flag (set by an abort, a client disconnect or shutdown) and an event queue that the
HTTP thread serving the client reads.
"""
from __future__ import annotations

import collections
import queue as stdlib_queue
import threading
import time

from app.server.request import ChoiceEvent, GenerationRequest, WorkerFailed
from engine.errors import SettingsError

_END = object()

# KoboldCpp's stop_reason numbers for /api/extra/perf (expose.h): -1 invalid, 0 out of
# tokens, 1 EOS, 2 custom stopper. An abort reports what KoboldCpp reports: out of tokens.
KOBOLD_STOP_REASONS = {"length": 0, "eos": 1, "stop_sequence": 2, "cancelled": 0}


class QueueFull(Exception):
    """Every place in the queue is taken."""


class Job:
    """One submitted request: its events, its cancel flag and the text of candidate 0 so far."""

    def __init__(self, request: GenerationRequest):
        self.request = request
        self.genkey = request.genkey or ""
        self.cancelled = threading.Event()
        self.state = "queued"        # queued -> running -> done
        self.text = ""               # what candidate 0 has produced (for /api/extra/generate/check)
        self._events: stdlib_queue.Queue = stdlib_queue.Queue()

    def cancel(self) -> None:
        """End the job: a queued job never starts, a running one stops within one token."""
        self.cancelled.set()

    def next_event(self, timeout: float | None = None):
        """The next event; None on timeout; raises StopIteration when the job is over."""
        try:
            event = self._events.get(timeout=timeout)
        except stdlib_queue.Empty:
            return None
        if event is _END:
            self._events.put(_END)       # every later call also ends
            raise StopIteration
        return event

    def events(self):
        """Iterate all events, blocking (for callers that need no disconnect checks)."""
        while True:
            try:
                yield self.next_event()
            except StopIteration:
                return


class GenerationQueue:
    """Runs jobs on one worker in submission order; `depth` jobs may wait."""

    def __init__(self, worker, depth: int = 6):
        if depth < 0:
            raise ValueError(f"queue depth must be at least 0, got {depth}")
        self.worker = worker
        self.depth = depth
        self._pending: collections.deque[Job] = collections.deque()
        self._running: Job | None = None
        self._last: Job | None = None
        self._lock = threading.Condition()
        self._closed = False
        self.started = time.time()
        self.idle_since = time.time()
        self.stats = dict(last_process=0.0, last_eval=0.0, last_token_count=0, last_seed=0,
                          total_gens=0, stop_reason=-1)
        self._thread = threading.Thread(target=self._loop, name="neox-server-generation", daemon=True)
        self._thread.start()

    # -- the client side ----------------------------------------------------------------------

    def submit(self, request: GenerationRequest) -> Job:
        """Queue a request; raises QueueFull when `depth` jobs are already waiting."""
        job = Job(request)
        with self._lock:
            if self._closed:
                raise QueueFull("the server is shutting down")
            if len(self._pending) >= self.depth and (self._running is not None or self._pending):
                raise QueueFull(f"{len(self._pending)} requests are already waiting")
            self._pending.append(job)
            self._lock.notify_all()
        return job

    def abort(self, genkey: str = "") -> bool:
        """KoboldCpp's abort: with a genkey, the running or queued job of that key; without one,
        the running job only when nobody is waiting (so one user cannot stop another's)."""
        with self._lock:
            if genkey:
                for job in [self._running, *self._pending]:
                    if job is not None and job.genkey == genkey:
                        job.cancel()
                        return True
                return False
            if self._running is not None and not self._pending:
                self._running.cancel()
                return True
            return False

    @property
    def alone(self) -> bool:
        """Exactly one generation: one running, nobody waiting (an abort without a genkey
        can then only mean that one)."""
        with self._lock:
            return self._running is not None and not self._pending

    def running_genkey(self) -> str | None:
        with self._lock:
            return self._running.genkey if self._running is not None else None

    def check(self, genkey: str = "") -> str:
        """The partial text of the running job (or the last finished one) for KoboldCpp's polled
        streaming. Only revealed to the job's own genkey, or without keys when nobody waits, so
        that prompts do not leak between users (as KoboldCpp does)."""
        with self._lock:
            for job in (self._running, self._last):
                if job is None:
                    continue
                if (genkey and job.genkey == genkey) or (not genkey and not self._pending):
                    return job.text
                break
            return ""

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._pending)

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._running is not None

    def close(self) -> None:
        """Cancel everything and stop the thread."""
        with self._lock:
            self._closed = True
            for job in [self._running, *self._pending]:
                if job is not None:
                    job.cancel()
            self._lock.notify_all()
        self._thread.join(timeout=10)

    # -- the worker side ----------------------------------------------------------------------

    def _next_job(self) -> Job | None:
        with self._lock:
            while True:
                while self._pending and self._pending[0].cancelled.is_set():
                    self._finish(self._pending.popleft())
                if self._pending:
                    job = self._pending.popleft()
                    job.state = "running"
                    self._running = job
                    return job
                if self._closed:
                    return None
                self._lock.wait(timeout=0.5)
                # a job cancelled while waiting is dropped at the top of the loop

    def _finish(self, job: Job) -> None:
        job.state = "done"
        job._events.put(_END)

    def _loop(self) -> None:
        while True:
            job = self._next_job()
            if job is None:
                return
            try:
                self._run(job)
            finally:
                with self._lock:
                    self._running = None
                    self._last = job
                    self.idle_since = time.time()
                self._finish(job)

    def _run(self, job: Job) -> None:
        try:
            for event in self.worker.run(job.request, job.cancelled):
                if isinstance(event, ChoiceEvent) and event.index == 0:
                    if hasattr(event.event, "token"):
                        job.text += event.event.text
                    else:
                        self._record(event.event)
                job._events.put(event)
        except SettingsError as e:
            job._events.put(WorkerFailed(str(e), client_error=True))
        except Exception as e:   # noqa: BLE001 - reported to the client; the queue keeps serving
            job._events.put(WorkerFailed(f"generation failed: {type(e).__name__}: {e}"))

    def _record(self, done) -> None:
        self.stats.update(last_process=round(done.prompt_seconds, 3), last_eval=round(done.gen_seconds, 3),
                          last_token_count=done.gen_tokens, last_seed=done.seed,
                          total_gens=self.stats["total_gens"] + 1,
                          stop_reason=KOBOLD_STOP_REASONS.get(done.stop_reason, -1))
