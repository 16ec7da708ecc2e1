"""A model that writes at once on a first start and reaches full speed by itself.

On a first start the fast path's kernels are not in numba's cache yet, and compiling them takes
tens of seconds (25 s here for the demo model). ``StagedBackend`` writes meanwhile with the
starter backend (``engine/starter.py``: the reference forward pass, one small kernel, about a
second to compile) while a child process compiles the fast kernels into the cache
(``engine/fast/prepare.py``). A thread waits for the child, then builds the fast model (repacking
the weights and loading every kernel from the cache, all off the thread that generates), and each
session moves to it at its next evaluation, between two tokens:

- the starter's key and value caches hold the same numbers in the same order as the fast path's
  ([layer, position, head, dim], keys rotated), so they are copied, not evaluated again; the
  generation goes on from the same context, and the starter's cache is freed;
- Branches already made stay with the starter until they are done (their session then is stale
  for them anyway once it evaluates again, as every backend's branches are).

If the child fails (a crash, no interpreter to start), the thread compiles in this process instead:
slower for the window, but the model still reaches full speed. ``name`` says which backend runs now.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time

from engine.fast.prepare import child_command, warm_up
from engine.session import Session
from engine.starter import StarterBackend

CHILD_LOG_LINES = 20      # lines of a failed child's output kept for the error message


class StagedBackend:
    """The starter backend now, the fast backend once its kernels are ready (``name``, ``ready``)."""

    def __init__(self, file, config, threads: int | None = None, prepare_command=None):
        self.file = file
        self.config = config
        self.threads = threads
        self.starter = StarterBackend(file, config)
        self.fast = None                 # the FastModel, once built and warmed up
        self.failure: str | None = None  # why the child failed (the thread then compiled in process)
        self.started = time.perf_counter()
        self.ready_seconds: float | None = None      # from this backend's start to the fast model ready
        self._ready = threading.Event()
        self._closed = threading.Event()
        self._child: subprocess.Popen | None = None
        self._command = prepare_command or child_command(file.path)
        self._thread = threading.Thread(target=self._prepare, name="neox-prepare-kernels", daemon=True)
        self._thread.start()

    @property
    def name(self) -> str:
        return "fast" if self.fast is not None else "starter"

    @property
    def ready(self) -> bool:
        return self.fast is not None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the fast model is ready (True) or the timeout passed (False); for tests and tools."""
        return self._ready.wait(timeout)

    def new_session(self, n_ctx: int) -> "StagedSession":
        return StagedSession(self, n_ctx)

    def close(self) -> None:
        """Stop a child still compiling (its partial cache entries are harmless: numba writes each whole)."""
        self._closed.set()
        child = self._child
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()

    def _prepare(self) -> None:
        try:
            self._run_child()
        except Exception as e:  # noqa: BLE001 - any failure of the child leaves the in-process compile
            self.failure = f"{type(e).__name__}: {e}"
            print(f"neox-writer: the kernels are compiled in this process instead ({self.failure})", file=sys.stderr)
        if self._closed.is_set():
            return
        from engine.fast.session import FastModel
        fast = FastModel(self.file, self.config, threads=self.threads)
        warm_up(fast)            # loads every kernel from the cache (or compiles one the child missed)
        if self._closed.is_set():
            return
        self.ready_seconds = time.perf_counter() - self.started
        self.fast = fast
        self._ready.set()

    def _run_child(self) -> None:
        self._child = subprocess.Popen(self._command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, text=True, errors="replace")
        output, _ = self._child.communicate()
        if self._child.returncode != 0 and not self._closed.is_set():
            tail = "\n".join(output.strip().splitlines()[-CHILD_LOG_LINES:])
            raise RuntimeError(f"the kernel compiler exited with {self._child.returncode}: {tail}")


class StagedSession(Session):
    """A session on the starter backend that moves, with its cache, to the fast one when that is ready.

    ``inner`` is the backend's own session; ``tokens`` is its list, so the caller sees one
    history through the move.
    """

    def __init__(self, backend: StagedBackend, n_ctx: int):
        super().__init__(backend.config, n_ctx)
        self.backend = backend
        fast = backend.fast
        self.inner = fast.new_session(n_ctx) if fast is not None else backend.starter.new_session(n_ctx)
        self.tokens = self.inner.tokens
        self.moves = 0            # 1 once this session has moved to the fast backend

    @property
    def backend_name(self) -> str:
        return "starter" if self.inner.__class__.__module__ == "engine.reference" else "fast"

    def eval(self, tokens, all_logits: bool = False):
        self._move_when_ready()
        before = self.inner.evaluated
        logits = self.inner.eval(tokens, all_logits=all_logits)
        self.evaluated += self.inner.evaluated - before
        self.changes += 1
        return logits

    def truncate(self, n: int) -> None:
        self.inner.truncate(n)
        self.changes += 1

    def branch(self, n: int, max_new: int):
        self._move_when_ready()
        return self.inner.branch(n, max_new)

    def _move_when_ready(self) -> None:
        fast = self.backend.fast
        if fast is None or self.backend_name == "fast":
            return
        old = self.inner
        new = fast.new_session(self.n_ctx)
        count = len(old.tokens)
        c = self.config
        # the same numbers in the same order: [layer, position, head, dim] is [layer, position, n_embd]
        # (fp16 in the fast caches, float32 with NEOX_WRITER_KV=f32; fast is loaded by now, so the import is free)
        from engine.fast.session import kv_stored
        new.reserve(count)
        new.kcache[:, :count] = kv_stored(old.k[:, :count].reshape(c.n_layer, count, c.n_embd), new.kcache.dtype)
        new.vcache[:, :count] = kv_stored(old.v[:, :count].reshape(c.n_layer, count, c.n_embd), new.vcache.dtype)
        new.tokens.extend(old.tokens)
        self.inner = new
        self.tokens = new.tokens
        self.moves += 1

