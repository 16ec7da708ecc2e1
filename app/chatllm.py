"""The engine's thread: one worker QObject owns the model, tokenizer and generator.

The GUI never calls the engine. `ChatLLM` (living in the GUI thread) moves an `LLMWorker`
to its own QThread and talks to it only through queued signals: load, generate, preview.
The worker reports back with signals too: model loaded or failed, batches of tokens,
speed, the end of a generation, context previews. Stop is a `threading.Event` set directly
from the GUI thread and checked by the generator every token, because the worker's event
loop is busy while it generates.

Tokens are batched: the worker emits at most one `tokensReady` every `BATCH_SECONDS`, so a
model writing hundreds of tokens per second does not flood the GUI's event loop.
"""
from __future__ import annotations

import copy
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, QThread, Signal, Slot

from app.contextview import Prompt, build_prompt, describe

BATCH_SECONDS = 0.04          # at most ~25 token batches a second reach the GUI


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


@dataclass(frozen=True)
class TokenPiece:
    """One generated token as the view needs it: text, id, probability, alternatives."""
    text: str
    token: int
    probability: float
    alternatives: tuple          # ((text, token id, probability), ...) most likely first


def find_tokenizer_json(model_path: Path) -> Path | None:
    """A tokenizer.json that belongs to a model file: `<stem>.tokenizer.json` or `tokenizer.json` beside it."""
    for candidate in (model_path.with_name(model_path.stem + ".tokenizer.json"),
                      model_path.with_name("tokenizer.json")):
        if candidate.is_file():
            return candidate
    return None


def warm_up(model, generator) -> None:
    """Run everything a generation touches once while the model is loading: both evaluation
    paths (a batch, then one token) so a JIT backend compiles now, and a two-token generation
    so first-use imports (numpy submodules, sampler tables) happen now. Either would otherwise
    hold the GIL for tens of milliseconds at the start of the user's first generation."""
    from engine.sampling import SamplerSettings
    session = model.new_session(min(int(model.info()["n_ctx"]), 16))
    session.eval([0] * 8)
    session.eval([0])
    for _ in generator.generate("", SamplerSettings(seed=0), max_tokens=2):
        pass
    generator.reset()


class LLMWorker(QObject):
    """Lives in the engine thread: loads models and runs generations, reporting via signals."""

    modelLoaded = Signal(dict)                 # model.info() plus "tokenizer" and "approximate"
    loadFailed = Signal(str, str)              # path, message
    tokensReady = Signal(int, list)            # request id, [TokenPiece]
    speedChanged = Signal(float)               # tokens per second of the running generation
    generationFinished = Signal(int, dict)     # request id, summary (stop reason, seed, speeds, ...)
    generationFailed = Signal(int, str)        # request id, message
    contextReady = Signal(object)              # Context
    contextFailed = Signal(str)

    def __init__(self, cancel: threading.Event, threads: int | None = None, backend: str = "auto"):
        super().__init__()
        self.cancel = cancel
        self.threads = threads
        self.backend = backend
        self.model = None
        self.tokenizer = None
        self.generator = None
        self.model_path = ""
        self._mirror = None    # follows the generator's ContextShifter for exact previews
        self.tokens_generated = 0   # tokens of the running generation so far (read by tests and Stop)

    @Slot(str, str)
    def on_load_requested(self, path: str, tokenizer_json: str) -> None:
        """Load a model; on failure keep the current one and report the engine's message."""
        from engine import load_model
        from engine.context import ContextShifter
        from engine.generator import Generator
        from engine.tokenizer import load_tokenizer
        try:
            model = load_model(path, backend=self.backend, threads=self.threads or None)
            tok_path = Path(tokenizer_json) if tokenizer_json else find_tokenizer_json(Path(path))
            tokenizer = load_tokenizer(model.vocab, str(tok_path) if tok_path else None, source=path)
            generator = Generator(model, tokenizer)
            warm_up(model, generator)
        except Exception as e:   # noqa: BLE001 - every failure is shown to the user, the old model stays
            self.loadFailed.emit(path, _message(e))
            return
        old = self.model
        self.model, self.tokenizer, self.generator = model, tokenizer, generator
        self.model_path = path
        self._mirror = ContextShifter()
        if old is not None and hasattr(old, "close"):
            old.close()
        info = dict(model.info())
        info["tokenizer"] = str(tok_path) if tok_path else "rebuilt from the model's vocabulary"
        info["approximate"] = bool(getattr(tokenizer, "approximate", tok_path is None))
        info["path"] = path
        self.modelLoaded.emit(info)

    def _prompt(self, request: GenerationRequest) -> Prompt:
        return build_prompt(self.tokenizer, text=request.text, memory=request.memory,
                            authors_note=request.authors_note, authors_note_depth=request.authors_note_depth,
                            world_info=request.world_info, budget=self._n_ctx(request) - request.max_new_tokens,
                            shift_fraction=self._mirror.shift_fraction)

    def _n_ctx(self, request: GenerationRequest) -> int:
        return min(request.n_ctx or self.generator.n_ctx, self.generator.n_ctx)

    @Slot(object)
    def on_preview_requested(self, request: GenerationRequest) -> None:
        """Build the context the next generation would use, without generating."""
        if self.generator is None:
            self.contextFailed.emit("No model is loaded.")
            return
        try:
            prompt = self._prompt(request)
            n_ctx = self._n_ctx(request)
            window = copy.deepcopy(self._mirror).fit(
                self.tokenizer.encode(prompt.memory) if prompt.memory else [],
                self.tokenizer.encode(prompt.story) if prompt.story else [], n_ctx, request.max_new_tokens)
            self.contextReady.emit(describe(self.tokenizer, prompt, window, n_ctx - request.max_new_tokens))
        except Exception as e:   # noqa: BLE001
            self.contextFailed.emit(_message(e))

    @Slot(object)
    def on_generate_requested(self, request: GenerationRequest) -> None:
        """Run one generation, emitting token batches; the cancel event ends it within one token."""
        rid = request.request_id
        if self.generator is None:
            self.generationFailed.emit(rid, "No model is loaded.")
            return
        try:
            prompt = self._prompt(request)
            n_ctx = self._n_ctx(request)
            events = self.generator.generate(prompt.story, request.settings, memory=prompt.memory,
                                             max_tokens=request.max_new_tokens, stop=request.stop,
                                             max_context=n_ctx, cancel=self.cancel)
            # keep the mirror in step: the generator's shifter just made the same fit
            self._mirror.fit(self.tokenizer.encode(prompt.memory) if prompt.memory else [],
                             self.tokenizer.encode(prompt.story) if prompt.story else [], n_ctx,
                             request.max_new_tokens)
            self._stream(rid, events)
        except ValueError as e:          # a setting the user can change (SettingsError is one)
            self.generationFailed.emit(rid, _message(e))
        except Exception as e:   # noqa: BLE001 - unexpected: keep the traceback for a bug report
            traceback.print_exc()
            self.generationFailed.emit(rid, _message(e))

    def _stream(self, rid: int, events) -> None:
        batch: list[TokenPiece] = []
        last_emit = float("-inf")      # the first token goes out at once: it shows the model is writing
        started = None
        n = 0
        self.tokens_generated = 0
        decode_cache: dict[int, str] = {}
        for event in events:
            if not hasattr(event, "token"):          # the DoneEvent
                if batch:
                    self.tokensReady.emit(rid, batch)
                self.generationFinished.emit(rid, {
                    "stop_reason": event.stop_reason, "seed": event.seed, "text": event.text,
                    "gen_tokens": event.gen_tokens, "tokens_per_second": event.gen_tokens_per_s,
                    "prompt_tokens": event.prompt_tokens, "prompt_tokens_reused": event.prompt_tokens_reused,
                    "prompt_tokens_dropped": event.prompt_tokens_dropped,
                    "prompt_tokens_per_second": event.prompt_tokens_per_s,
                    "stop_sequence": event.stop_sequence})
                return
            now = time.perf_counter()
            if started is None:
                started = now
            n += 1
            self.tokens_generated = n
            alternatives = tuple((self._piece(t, decode_cache), int(t), float(p)) for t, p in event.top)
            batch.append(TokenPiece(event.text, int(event.token), float(event.probability), alternatives))
            if now - last_emit >= BATCH_SECONDS:
                self.tokensReady.emit(rid, batch)
                if n > 1 and now > started:
                    self.speedChanged.emit((n - 1) / (now - started))
                batch = []
                last_emit = now

    def _piece(self, token: int, cache: dict) -> str:
        text = cache.get(token)
        if text is None:
            text = cache[token] = self.tokenizer.decode([int(token)])
        return text

    @Slot()
    def on_reset_requested(self) -> None:
        """Another story was opened: forget the cached prompt."""
        if self.generator is not None:
            self.generator.reset()
            self._mirror.reset()


def _message(e: Exception) -> str:
    text = str(e)
    return text if text else type(e).__name__


class ChatLLM(QObject):
    """The GUI's handle on the engine thread: call `load`, `generate`, `stop`; connect to the signals."""

    loadRequested = Signal(str, str)
    generateRequested = Signal(object)
    previewRequested = Signal(object)
    resetRequested = Signal()

    def __init__(self, threads: int | None = None, parent=None, backend: str = "auto"):
        super().__init__(parent)
        self.cancel = threading.Event()
        self.thread = QThread()
        self.thread.setObjectName("neox-engine")
        self.worker = LLMWorker(self.cancel, threads, backend)
        self.worker.moveToThread(self.thread)
        self.loadRequested.connect(self.worker.on_load_requested)
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

    def generate(self, request: GenerationRequest) -> None:
        self.cancel.clear()
        self.generating = True
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
