"""The engine's thread: one worker QObject owns the text source (local model or remote server).

The GUI never calls the engine. `ChatLLM` (living in the GUI thread) moves an `LLMWorker`
to its own QThread and talks to it only through queued signals: load, use a remote server,
generate, preview. The worker reports back with signals too: model loaded or failed,
batches of tokens, speed, the end of a generation, context previews. Stop is a
`threading.Event` set directly from the GUI thread and checked by the generator every token
(or, for a remote server, watched by the backend, which aborts and closes the stream),
because the worker's event loop is busy while it generates.

The worker does not care where text comes from: `app.textsource` puts the local engine and
the remote backends behind one interface. When the API server is on, it shares the local
model through `engine_lock` (see LLMWorker).

Tokens are batched: the worker emits at most one `tokensReady` every `BATCH_SECONDS`, so a
model writing hundreds of tokens per second does not flood the GUI's event loop.
"""
from __future__ import annotations

import gc
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, Qt, QThread, QTimer, Signal, Slot

from app.textsource import LocalSource, RemoteSource
from app.threads import GilHandover

GIL_SWITCH_INTERVAL = 0.001     # seconds (Python's default is 0.005); see ChatLLM.__init__

WARM_POLL_MS = 500            # how often an idle worker looks whether a warming model reached full speed
BATCH_SECONDS = 0.04          # at most ~25 token batches a second reach the GUI
SPEED_SECONDS = 0.25          # the speed shown is updated at most 4 times a second: each update
                              # is a call into Python in the GUI thread, a wait for the GIL


@dataclass
class GenerationRequest:
    """Everything one generation needs, copied out of the GUI so the worker shares nothing."""
    request_id: int
    text: str                         # story (or chat transcript prompt) to continue
    memory: str = ""
    authors_note: str = ""
    authors_note_depth: int = 80
    world_info: list = field(default_factory=list)
    settings: object = None           # engine.sampling.SamplerSettings
    max_new_tokens: int = 80
    n_ctx: int | None = None
    stop: list = field(default_factory=list)
    n: int = 1                        # continuations of the one prompt, in one batch (local engine only)


@dataclass(frozen=True)
class TokenPiece:
    """One generated token as the view needs it: text, id, probability, alternatives."""
    text: str
    token: int
    probability: float
    alternatives: tuple          # ((text, token id, probability), ...) most likely first
    index: int = 0               # which continuation of a batched request (n > 1) it belongs to


def freeze_heap() -> None:
    """Move every object alive now (Qt wrappers, numpy, numba, the model) out of the garbage
    collector's reach. A full collection otherwise walks them all and holds the GIL for
    50-100 ms, which stalls the GUI in the middle of streaming; new objects are still collected."""
    gc.collect()
    gc.freeze()


def normalise_newlines(text: str) -> str:
    """One kind of line break. The story view (Qt) shows "\r", "\r\n" and U+2028/U+2029 as a
    plain "\n"; normalising here, before a piece is made, keeps the story's text and the view's
    the same string, so the story never has to be read back from the view."""
    if "\r" in text or "\u2028" in text or "\u2029" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
    return text


def make_piece(event, alternatives) -> TokenPiece:
    """The TokenPiece of an engine TokenEvent, its text and its alternatives' normalised."""
    return TokenPiece(normalise_newlines(event.text), int(event.token), float(event.probability),
                      tuple((normalise_newlines(text), token, p) for text, token, p in alternatives),
                      int(getattr(event, "index", 0)))


def warm_up(model, generator) -> None:
    """Run everything a generation touches once while the model is loading: every evaluation
    path (long and short prompts, one token, several sequences) so a JIT backend compiles now,
    and a two-token generation so first-use imports (numpy submodules, sampler tables) happen
    now. Either would otherwise hold the GIL (a long prompt's kernels: about half a second) at
    the start of the user's first generation."""
    from engine.sampling import SamplerSettings
    model.warm_up()
    for _ in generator.generate("", SamplerSettings(seed=0), max_tokens=2):
        pass
    generator.reset()


class LLMWorker(QObject):
    """Lives in the engine thread: loads models, connects to remote servers and runs
    generations on whichever `TextSource` is active, reporting via signals.

    The local model may also be served to other programs by the API server (`served`, an
    `app.server.EngineWorker` sharing this model): `engine_lock` is held around every local
    generation and model swap, by this worker and by the server's worker alike, so the one
    KV cache only ever serves one request. It is re-entrant so that a model swap can hand the
    new model to the server inside the same critical section.
    """

    modelLoaded = Signal(dict)                 # source.info(): model.info() plus "path", "tokenizer", "remote", ...
    loadFailed = Signal(str, str)              # path, message
    loadStage = Signal(str)                    # what the load is doing now, for the status bar
    tokensReady = Signal(int, list)            # request id, [TokenPiece]
    speedChanged = Signal(float)               # tokens per second of the running generation
    backendChanged = Signal(str)               # the local model moved on: "starter" (warming up) -> "fast"
    generationWaiting = Signal(int, str)       # request id, why it has not started yet
    generationFinished = Signal(int, object)   # request id, engine DoneEvent (None: stopped before it started)
    generationFailed = Signal(int, str)        # request id, message
    contextReady = Signal(object)              # Context
    contextFailed = Signal(str)

    def __init__(self, cancel: threading.Event, threads: int | None = None, backend: str = "auto"):
        super().__init__()
        self.cancel = cancel
        self.threads = threads
        self.backend = backend
        self.engine_lock = threading.RLock()
        self.local: LocalSource | None = None     # the model loaded in this process (kept while a remote is used)
        self.source = None                        # the active TextSource: `local` or a RemoteSource
        self.served = None                        # the API server's EngineWorker on `local`, or None
        self.tokens_generated = 0   # tokens of the running generation so far (read by tests and Stop)
        self._backend_name = ""     # the local model's backend as last reported (backendChanged)
        # polls a warming model between generations; a generation checks at each batch of tokens
        self._warm_timer = QTimer(self, interval=WARM_POLL_MS)
        self._warm_timer.timeout.connect(self.on_warm_timer_timeout)

    # the local model's parts, for code that drives the engine directly (selftest, server)
    @property
    def model(self):
        return self.local.model if self.local else None

    @property
    def tokenizer(self):
        return self.local.tokenizer if self.local else None

    @property
    def generator(self):
        return self.local.generator if self.local else None

    @property
    def model_path(self) -> str:
        return self.local.path if self.local else ""

    @Slot(str, str)
    def on_load_requested(self, path: str, tokenizer_json: str) -> None:
        """Load a model; on failure keep the current one and report the engine's message."""
        from engine.loaded import open_model
        loaded = None
        try:
            loaded = open_model(path, tokenizer_json or None, backend=self.backend, threads=self.threads or None)
            # The first start compiles the engine's kernels (up to a minute); later starts load
            # them from the cache in about a second. Say so rather than look frozen.
            if loaded.model.staged is not None:     # writes at once; full speed once the child has compiled
                self.loadStage.emit("Preparing the engine…")
            else:
                self.loadStage.emit("Preparing the engine (the first start compiles it once; this can take a minute)…")
            warm_up(loaded.model, loaded.generator)
        except Exception as e:   # noqa: BLE001 - every failure is shown to the user, the old model stays
            if loaded is not None:
                loaded.close()
            self.loadFailed.emit(path, _message(e))
            return
        local = LocalSource(loaded, path)
        model, tokenizer, generator = loaded.model, loaded.tokenizer, loaded.generator
        # waits for a generation the API server may be running on the old model
        with self.engine_lock:
            old, self.local = self.local, local
            if self.served is not None:
                self.served.swap(model, tokenizer, generator, model_name=Path(path).stem)
            if old is not None:
                old.close()
        self._activate(local)
        self._backend_name = model.backend_name
        if model.staged is not None and not model.staged.ready:
            self._warm_timer.start()

    @Slot()
    def on_thread_finished(self) -> None:
        """Runs in the engine thread as it ends: its timer must stop there, not when the worker is
        deleted from the GUI thread later (Qt: "Timers cannot be stopped from another thread")."""
        self._warm_timer.stop()

    @Slot()
    def on_warm_timer_timeout(self) -> None:
        """While the model warms up, notice (between generations) when it reached full speed."""
        self._check_backend()

    def _check_backend(self) -> None:
        """Say when the local model's backend changed (the staged model's move to the fast kernels)."""
        model = self.local.model if self.local else None
        name = model.backend_name if model is not None else ""
        if name != self._backend_name:
            self._backend_name = name
            self.backendChanged.emit(name)
        if name != "starter":
            self._warm_timer.stop()

    @Slot(object)
    def on_remote_requested(self, backend) -> None:
        """Generate through a remote server's backend from now on (the local model stays loaded
        for the API server until another model is loaded)."""
        self._activate(RemoteSource(backend))

    def _activate(self, source) -> None:
        previous, self.source = self.source, source
        if previous is not None and previous.remote and previous is not source:
            previous.close()
        self.modelLoaded.emit(source.info())

    @Slot(object)
    def on_preview_requested(self, request: GenerationRequest) -> None:
        """Build the context the next generation would use, without generating."""
        if self.source is None:
            self.contextFailed.emit("No model is loaded.")
            return
        try:
            self.contextReady.emit(self.source.preview(request))
        except Exception as e:   # noqa: BLE001 - a remote error or a bad setting: shown in the view
            self.contextFailed.emit(_message(e))

    def _wait_for_engine(self, rid: int) -> bool:
        """Take the engine lock; while the API server holds it, say so and give up on Stop."""
        if self.engine_lock.acquire(blocking=False):
            return True
        self.generationWaiting.emit(rid, "Waiting for the API server's generation to finish…")
        while not self.engine_lock.acquire(timeout=0.05):
            if self.cancel.is_set():
                return False
        return True

    @Slot(object)
    def on_generate_requested(self, request: GenerationRequest) -> None:
        """Run one generation, emitting token batches; the cancel event ends it within one token."""
        rid = request.request_id
        source = self.source
        if source is None:
            self.generationFailed.emit(rid, "No model is loaded.")
            return
        if not source.remote and not self._wait_for_engine(rid):
            self.generationFinished.emit(rid, None)
            return
        self.tokens_generated = 0
        try:
            self._stream(rid, source, source.generate(request, self.cancel))
        except ValueError as e:          # a setting the user can change (SettingsError is one)
            self.generationFailed.emit(rid, _message(e))
        except Exception as e:   # noqa: BLE001 - unexpected or a network failure
            if not _is_remote_error(e):
                traceback.print_exc()     # keep the traceback for a bug report
            message = _message(e)
            if self.tokens_generated:
                message += f"\n\nThe {self.tokens_generated} tokens received before the error are kept in the story."
            self.generationFailed.emit(rid, message)
        finally:
            if not source.remote:
                self.engine_lock.release()

    def _stream(self, rid: int, source, events) -> None:
        """Emit the events of a generation (one or several continuations): token batches, and
        each continuation's DoneEvent."""
        batch: list[TokenPiece] = []
        last_emit = float("-inf")      # the first token goes out at once: it shows the model is writing
        last_speed = float("-inf")
        started = None
        tokens = 0
        handover = GilHandover()     # the GUI thread would otherwise wait for the GIL tens of ms
        try:
            for event in events:
                handover()
                if not hasattr(event, "token"):          # a DoneEvent: one per continuation
                    if batch:
                        self.tokensReady.emit(rid, batch)
                        batch = []
                    self.generationFinished.emit(rid, event)     # frozen: safe to hand across threads
                    continue
                now = time.perf_counter()
                if started is None:
                    started = now
                tokens += 1
                self.tokens_generated = tokens
                batch.append(make_piece(event, source.alternatives(event)))
                if now - last_emit >= BATCH_SECONDS:
                    self.tokensReady.emit(rid, batch)
                    if tokens > 1 and now > started and now - last_speed >= SPEED_SECONDS:
                        self.speedChanged.emit((tokens - 1) / (now - started))
                        last_speed = now
                    if not source.remote:
                        self._check_backend()
                    batch = []
                    last_emit = now
        except Exception:
            if batch:                  # what arrived before a failure is the user's story now
                self.tokensReady.emit(rid, batch)
            raise

    @Slot()
    def on_reset_requested(self) -> None:
        """Another story was opened: forget the cached prompt."""
        if self.source is not None:
            with self.engine_lock:
                self.source.reset()


def _is_remote_error(e: Exception) -> bool:
    from app.remote import RemoteError
    return isinstance(e, RemoteError)


def _message(e: Exception) -> str:
    text = str(e)
    return text if text else type(e).__name__


class ChatLLM(QObject):
    """The GUI's handle on the engine thread: call `load`, `generate`, `stop`; connect to the signals."""

    loadRequested = Signal(str, str)
    remoteRequested = Signal(object)
    generateRequested = Signal(object)
    previewRequested = Signal(object)
    resetRequested = Signal()

    def __init__(self, threads: int | None = None, parent=None, backend: str = "auto"):
        super().__init__(parent)
        # The GUI thread takes the GIL back from the engine thread several times a frame (each
        # token's signal, each timer); with Python's default 5 ms switch interval every one of
        # those can wait 5 ms. At 1 ms the longest event-loop gap over a fast generation halved
        # (tests/test_gui_latency.py: worst gaps 14-20 ms -> 6-15 ms), at no cost in tokens/s.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        self.cancel = threading.Event()
        self.thread = QThread()
        self.thread.setObjectName("neox-engine")
        self.worker = LLMWorker(self.cancel, threads, backend)
        self.worker.moveToThread(self.thread)
        # direct: QThread.finished is emitted in the ending thread itself, where the worker lives
        self.thread.finished.connect(self.worker.on_thread_finished, Qt.ConnectionType.DirectConnection)
        self.loadRequested.connect(self.worker.on_load_requested)
        self.remoteRequested.connect(self.worker.on_remote_requested)
        self.generateRequested.connect(self.worker.on_generate_requested)
        self.previewRequested.connect(self.worker.on_preview_requested)
        self.resetRequested.connect(self.worker.on_reset_requested)
        self.thread.start()
        self.loading = False
        self.generating = False
        self.worker.modelLoaded.connect(self.on_worker_done_loading)
        self.worker.loadFailed.connect(self.on_worker_done_loading)
        self.worker.generationFinished.connect(self.on_worker_done_generating)
        self.worker.generationFailed.connect(self.on_worker_done_generating)

    def load(self, path: str, tokenizer_json: str = "") -> None:
        """Load a model (and its tokenizer.json if given, else one beside the file or rebuilt)."""
        self.loading = True
        self.loadRequested.emit(str(path), str(tokenizer_json or ""))

    def use_remote(self, backend) -> None:
        """Generate through a connected `app.remote` backend from now on (`modelLoaded` follows)."""
        self.loading = True
        self.remoteRequested.emit(backend)

    def generate(self, request: GenerationRequest) -> None:
        self.cancel.clear()
        self.generating = True
        # Everything alive now (the story, widgets, what the last generation left) leaves the
        # collector's reach: a full collection during the stream would walk it all on the engine
        # thread with the GIL held, stalling the GUI for 50-100 ms. Freezing is O(1); only cyclic
        # garbage that is not yet collected at this moment stays uncollected.
        gc.freeze()
        self.generateRequested.emit(request)

    def preview(self, request: GenerationRequest) -> None:
        self.previewRequested.emit(request)

    def stop(self) -> None:
        """End the running generation within one token (sets the flag the generator checks)."""
        self.cancel.set()

    def reset(self) -> None:
        self.resetRequested.emit()

    def on_worker_done_loading(self, *args) -> None:
        self.loading = False

    def on_worker_done_generating(self, *args) -> None:
        self.generating = False

    def shutdown(self) -> None:
        """Stop any generation and end the thread (waits for the current token to finish)."""
        self.cancel.set()
        self.thread.quit()
        self.thread.wait()
