"""GenerationController: asks the engine thread for text and follows each generation to its end.

It builds requests from the open story (`StoryDocument`) and the sampler options (a callable
the window gives, since only widgets hold them), queues them to the engine thread (`ChatLLM`),
and reports everything as signals: pieces to append while a story streams, the chat reply so
far, and, at the end, one `Generated` record with the text, its tokens and probabilities and the
engine's `DoneEvent`, which the document records. It never calls the window or a widget, and
imports nothing from QtWidgets: a test drives it with a fake worker.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from PySide6.QtCore import QObject, Signal

from app.chatllm import GenerationRequest
from app.chattemplates import TEMPLATES, strip_reply


@dataclass(frozen=True)
class Options:
    """What the sampling panel says about the next generation."""

    settings: object               # engine.sampling.SamplerSettings
    max_new_tokens: int
    n_ctx: int | None
    stops: tuple = ()
    values: dict = field(default_factory=dict)     # the panel's values, kept with each generation


@dataclass(frozen=True)
class Generated:
    """One generation that ended (finished, stopped or failed), as the story records it."""

    request_id: int
    mode: str                      # "story" or "chat"
    start: int                     # story: where the generated text starts in the story's text
    text: str                      # the text generated (chat: the reply without stop strings)
    pieces: tuple                  # chatllm.TokenPiece: token ids, probabilities, alternatives
    done: object                   # engine DoneEvent; None when it failed or never started
    model: str = ""
    sampler: dict = field(default_factory=dict)    # the sampling panel's values for this generation

    @property
    def seed(self) -> int | None:
        return self.done.seed if self.done is not None else None

    @property
    def stop_reason(self) -> str:
        return self.done.stop_reason if self.done is not None else "cancelled"

    @property
    def gen_tokens(self) -> int:
        return self.done.gen_tokens if self.done is not None else len(self.pieces)


@dataclass
class _Running:
    request_id: int
    mode: str
    start: int = 0
    stops: tuple = ()
    sampler: dict = field(default_factory=dict)
    pieces: list = field(default_factory=list)
    shown: bool = True                 # story: this request streams into the story view
    n: int = 1                         # continuations in this request (a batch on the local engine)
    ended: int = 0                     # of those, how many have ended

    def text(self) -> str:
        text = "".join(p.text for p in self.pieces)
        return strip_reply(text, list(self.stops)) if self.mode == "chat" else text


class GenerationController(QObject):
    """Starts, streams, stops and retries generations; one at a time."""

    storyStarted = Signal()               # story mode: the view locks and streams at the end
    piecesReady = Signal(list)            # story mode: TokenPieces to append
    replyStarted = Signal()               # chat mode: an empty bot turn appears
    replyChanged = Signal(str)            # chat mode: the reply so far
    finished = Signal(object)             # Generated
    failed = Signal(object, str)          # Generated (what came before the error), message
    alternativeFinished = Signal(object)  # one of several alternatives ended (its DoneEvent); more follow
    busyChanged = Signal(bool)
    problem = Signal(str, str)            # title, message for the user
    notice = Signal(str)                  # a passing remark for the status bar

    def __init__(self, llm, document, options, parent=None):
        """`llm` is the ChatLLM (or a fake with the same signals), `options()` returns Options
        (ValueError naming a bad setting)."""
        super().__init__(parent)
        self.llm = llm
        self.document = document
        self.options = options
        self.model_info: dict | None = None    # the active text source's info; None: no model
        self._request_id = 0
        self._running: _Running | None = None
        self._values: dict = {}                # the panel's values of the last request made
        worker = llm.worker
        worker.tokensReady.connect(self.on_worker_tokens_ready)
        worker.generationFinished.connect(self.on_worker_generation_finished)
        worker.generationFailed.connect(self.on_worker_generation_failed)
        worker.generationWaiting.connect(self.on_worker_generation_waiting)

    def busy(self) -> bool:
        return self._running is not None

    def ready(self) -> bool:
        """A model is loaded (or a server connected), none is loading, nothing runs."""
        return self.model_info is not None and not self.llm.loading and not self.busy()

    def on_model_changed(self, info: dict) -> None:
        self.model_info = info

    # --- requests ------------------------------------------------------------------------
    def _options(self):
        """The panel's options, or None (and `problem`) when a sampler setting is invalid."""
        try:
            return self.options()
        except ValueError as e:
            self.problem.emit("Invalid sampler setting", str(e))
            return None

    def _request(self, text: str, stops=(), seed: int | None = None, n: int = 1) -> GenerationRequest | None:
        """A request for `text` with the story's memory and the panel's options; None (and
        `problem`) when a sampler setting is invalid. `stops` come before the panel's own;
        `seed` replaces the panel's (alternative i of a fixed seed s uses s + i)."""
        options = self._options()
        if options is None:
            return None
        if seed is not None:
            options = replace(options, settings=replace(options.settings, seed=seed))
        story = self.document.story
        self._request_id += 1
        self._values = dict(options.values)
        return GenerationRequest(self._request_id, text, story.memory, story.authors_note,
                                 story.authors_note_depth, list(story.world_info), options.settings,
                                 options.max_new_tokens, options.n_ctx, list(stops) + list(options.stops), n)

    def _start(self, request: GenerationRequest, mode: str, start: int = 0, stops=(), shown: bool = True) -> None:
        self._running = _Running(request.request_id, mode, start, tuple(stops), self._values, shown=shown,
                                 n=request.n)
        self.document.set_locked(True)
        self.busyChanged.emit(True)
        if shown:
            (self.storyStarted if mode == "story" else self.replyStarted).emit()
        self.llm.generate(request)

    def _check_ready(self) -> bool:
        if self.model_info is None and not self.busy():
            self.problem.emit("No model", "Load a model first (Models panel, or File › Open model file…).")
        return self.ready()

    def generate(self) -> None:
        """Continue the story at the end (story mode) or answer in the chat (chat mode)."""
        if not self._check_ready():
            return
        if self.document.story.mode == "chat":
            self.regenerate() if self._last_turn_is_bot() else self._reply()
            return
        self.document.checkpoint()
        self._continue_story()

    def _continue_story(self, into: int | None = None) -> None:
        """Write the panel's number of alternatives after the current passage (one after another;
        the first streams into the story view), or continue passage `into`."""
        options = self._options()
        if options is None:
            return
        n = 1 if into is not None else int(options.values.get("alternatives", 1))
        model = (self.model_info or {}).get("model") or ""
        batched = n > 1 and not (self.model_info or {}).get("remote")    # servers take one at a time
        run = self.document.begin_run(n, options.values.get("seed"), options.values, model, into, batched)
        if not batched:
            self._next_alternative()
            return
        request = self._request(run.prompt, seed=run.seed, n=n)    # generate_many: seeds s + i
        if request is None:
            self.document.record(Generated(0, "story", len(run.prompt), "", (), None))
        else:
            self._start(request, "story", len(run.prompt))

    def _next_alternative(self) -> None:
        run = self.document.run
        request = self._request(run.prompt, seed=run.seed_of(run.index))
        if request is None:
            self.document.record(Generated(0, "story", len(run.prompt), "", (), None))
            return
        self._start(request, "story", len(run.prompt), shown=run.shown)

    def retry(self) -> None:
        """Generate a sibling of the last generation (the old one stays in the story tree)."""
        if not self.ready():
            return
        if self.document.story.mode == "chat":
            self.regenerate()
        elif not self.document.go_to_retry_point():
            self.notice.emit("Nothing to retry: the last generation was edited or there is none")
        else:
            self._continue_story()

    def choose_alternative(self, offset: int, text: str, token: int = -1) -> None:
        """Start a new branch at `offset` (a Python offset into the story's text) with the
        alternative token `text` in place of the generated one, and generate on from there."""
        if self.ready():
            self._continue_story(into=self.document.branch_with_token(offset, text, token))

    def stop(self) -> None:
        """End the running generation within one token."""
        if self.busy():
            self.llm.stop()

    # --- chat ----------------------------------------------------------------------------
    def send(self, text: str) -> None:
        """The user said `text` in the chat: add the turn and answer it."""
        if self._check_ready():
            self.document.add_user_turn(text)
            self._reply()

    def regenerate(self) -> None:
        """A new answer in place of the last one."""
        if self.ready():
            self.document.drop_last_bot_turn()
            self._reply()

    def _last_turn_is_bot(self) -> bool:
        turns = self.document.story.chat_turns
        return bool(turns) and turns[-1].role == "bot"

    def chat_prompt(self) -> tuple[str, list]:
        """The chat transcript as the template lays it out, and the template's stop strings."""
        story = self.document.story
        template = TEMPLATES.get(story.chat_template, TEMPLATES["plain"])
        prompt = template.prompt(story.chat_turns, story.user_name, story.bot_name)
        return prompt, template.stop_sequences(story.user_name, story.bot_name)

    def _reply(self) -> None:
        prompt, stops = self.chat_prompt()
        request = self._request(prompt, stops)
        if request is not None:
            self._start(request, "chat", stops=request.stop)

    def preview(self) -> None:
        """Ask the engine thread for the context the next generation would see (`contextReady`)."""
        story = self.document.story
        text = self.chat_prompt()[0] if story.mode == "chat" else story.text
        request = self._request(text)
        if request is not None:
            self.llm.preview(request)

    # --- what the engine thread reports ----------------------------------------------------
    def _current(self, request_id: int) -> _Running | None:
        running = self._running
        return running if running is not None and running.request_id == request_id else None

    def on_worker_tokens_ready(self, request_id: int, pieces: list) -> None:
        running = self._current(request_id)
        if running is None:
            return
        running.pieces.extend(pieces)
        if running.mode == "story":
            self.document.add_pieces(pieces)
            shown = [p for p in pieces if p.index == 0] if running.n > 1 else pieces if running.shown else []
            if shown:
                self.piecesReady.emit(shown)
        else:
            text = running.text()
            self.replyChanged.emit(text if text.strip() else "…")

    def on_worker_generation_waiting(self, request_id: int, message: str) -> None:
        if self._current(request_id) is not None:
            self.notice.emit(message)

    def _end(self, request_id: int, done) -> Generated | None:
        running = self._current(request_id)
        if running is None:
            return None
        self._running = None
        self.document.set_locked(False)
        model = (self.model_info or {}).get("model") or ""
        return Generated(running.request_id, running.mode, running.start, running.text(),
                         tuple(running.pieces), done, model, running.sampler)

    def on_worker_generation_finished(self, request_id: int, done) -> None:
        running = self._current(request_id)
        if running is not None and running.n > 1:          # one continuation of a batch ended
            running.ended += 1
            self.document.end_sequence(done)
            if running.ended < running.n:
                return
        elif running is not None and running.mode == "story" and self.document.end_alternative(done):
            self._running = None
            self.alternativeFinished.emit(done)
            self._next_alternative()           # the next alternative of the same Generate
            return
        generated = self._end(request_id, done)
        if generated is not None:
            self.finished.emit(generated)
            self.busyChanged.emit(False)

    def on_worker_generation_failed(self, request_id: int, message: str) -> None:
        running = self._current(request_id)
        if running is not None and running.mode == "story":
            self.document.end_alternative(None)
        generated = self._end(request_id, None)
        if generated is not None:
            self.failed.emit(generated, message)
            self.busyChanged.emit(False)
            self.problem.emit("Generation failed", message)
