"""The generation loop: prompt window, KV-cache reuse, sampling, stop sequences, streaming events.

`Generator(model, tokenizer).generate(prompt, settings, ...)` returns an iterator of events:
one `TokenEvent` per sampled token, then one `DoneEvent`. Text reaches the caller only when it
is final: complete UTF-8 (StreamDecoder), not possibly the start of a stop sequence
(`StopMatcher`) and not possibly the start of a banned phrase (`PhraseGuard`: a completed one
is taken back and sampled again, so it is never emitted). Concatenating the `text` of every
TokenEvent gives `DoneEvent.text`.

`generate_many(prompt, n, settings, ...)` continues one prompt n ways at once: the prompt is
evaluated once, then each pass over the weights evaluates one new token of every sequence still
running (engine.session.Branches). Its events are those of n generations interleaved, each tagged
with its sequence's `index`; sequence i samples with seed s + i, so a single `generate` with
seed s + i repeats it.

The generator keeps one Session (KV cache) across requests. Each request evaluates only the
tokens after the longest common prefix with what the session already holds, so continuing or
retrying a story does not re-read it; `DoneEvent.prompt_tokens_reused` says how many were
reused. One Generator serves one request at a time (starting another while an iterator is
still running raises RuntimeError; closing the iterator ends it); `cancel()` may be called
from any thread. After `generate_many`, a request that continues one of its sequences reuses
that sequence's cache too.
"""
from __future__ import annotations

import copy
import dataclasses
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from engine.context import ContextShifter, Window
from engine.errors import SettingsError
from engine.phrase_bans import PhraseBans, PhraseGuard
from engine.sampling import Sampler, SamplerSettings
from engine.session import MAX_BRANCHES
from engine.stream_decode import StreamDecoder

STOP_REASONS = ("length", "eos", "stop_sequence", "cancelled")


@dataclass(frozen=True)
class TokenEvent:
    """One sampled token: the text it released (possibly "" while held back), its id, its
    probability and the top alternatives as (id, probability) pairs, most likely first."""

    text: str
    token: int                    # -1 only for the text a generation ends with when no token is left to carry it
    probability: float
    top: list
    index: int = 0                # the sequence it belongs to (generate_many); 0 for generate


@dataclass(frozen=True)
class DoneEvent:
    """The end of a request: why it stopped, what it produced and how fast."""

    stop_reason: str              # one of STOP_REASONS
    text: str                     # all text the TokenEvents carried, concatenated
    stop_sequence: str | None     # the stop string that ended it (not part of `text`)
    prompt_tokens: int            # tokens in the prompt window
    prompt_tokens_reused: int     # of those, taken from the KV cache of the previous request
    prompt_tokens_dropped: int    # oldest story tokens left out to fit the context
    gen_tokens: int               # tokens generated (an end-of-text token included; taken-back ones not)
    prompt_seconds: float
    gen_seconds: float
    seed: int                     # the seed actually used: repeats the run
    index: int = 0                # the sequence it ends (generate_many); 0 for generate

    @property
    def prompt_tokens_evaluated(self) -> int:
        return self.prompt_tokens - self.prompt_tokens_reused

    @property
    def prompt_tokens_per_s(self) -> float:
        return self.prompt_tokens_evaluated / self.prompt_seconds if self.prompt_seconds > 0 else 0.0

    @property
    def gen_tokens_per_s(self) -> float:
        return self.gen_tokens / self.gen_seconds if self.gen_seconds > 0 else 0.0


class StopMatcher:
    """Finds stop strings in streamed text, holding back any tail that could start one."""

    def __init__(self, stops: Sequence[str]):
        self.stops = list(stops)
        self.held = ""

    def push(self, piece: str) -> tuple[str, str | None]:
        """Add new text; returns (text safe to emit, the stop string found or None).
        After a stop is found, the text from it onwards is discarded."""
        text = self.held + piece
        found = None
        for stop in self.stops:
            at = text.find(stop)
            if at >= 0 and (found is None or at < found[0]):
                found = (at, stop)
        if found:
            self.held = ""
            return text[:found[0]], found[1]
        hold = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(text)), hold, -1):
                if text.endswith(stop[:k]):
                    hold = k
                    break
        self.held = text[len(text) - hold:] if hold else ""
        return text[:len(text) - hold], None

    def release(self) -> str:
        """The held-back text, once it is certain no stop string follows."""
        held, self.held = self.held, ""
        return held


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class Generator:
    """Streams text from a model for prompts and sampler settings, keeping one KV cache."""

    def __init__(self, model, tokenizer, *, n_ctx: int | None = None, batch_size: int = 64):
        """`n_ctx` caps the context (default: the model's); prompts are evaluated in
        batches of `batch_size` tokens, with a cancellation check between batches."""
        self.model = model
        self.tokenizer = tokenizer
        model_ctx = int(model.info()["n_ctx"])
        self.n_ctx = model_ctx if n_ctx is None else int(n_ctx)
        if not 1 <= self.n_ctx <= model_ctx:
            raise SettingsError("n_ctx", f"must be within 1..{model_ctx}, got {n_ctx}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size
        self.n_vocab = min(int(tokenizer.n_vocab), int(model.info()["n_vocab"]))
        self._session = None
        self._shifter = ContextShifter()
        self._cancel = threading.Event()
        self._running = False
        self._branches = None       # the last generate_many's sequences, for prefix reuse

    @property
    def session(self):
        """The Session whose KV cache is reused across requests (made on first use)."""
        if self._session is None:
            self._session = self.model.new_session(self.n_ctx)
        return self._session

    @property
    def shift_fraction(self) -> float:
        """The share of the story budget the context cut frees at once (see engine.context)."""
        return self._shifter.shift_fraction

    def cancel(self):
        """Stop the running request within one token (safe from any thread)."""
        self._cancel.set()

    def reset(self):
        """Forget the cached prompt and the story cut (e.g. another story was opened)."""
        if self._session is not None:
            self._session.truncate(0)
        self._branches = None
        self._shifter.reset()

    def generate(self, prompt: str, settings: SamplerSettings | None = None, *, memory: str = "",
                 max_tokens: int = 80, stop: Sequence[str] = (), max_context: int | None = None,
                 cancel: threading.Event | None = None) -> Iterator[TokenEvent | DoneEvent]:
        """Start a request and return its event iterator.

        `prompt` is the story text to continue, `memory` a head that is always kept when the
        story is cut to fit `max_context` (default and maximum: the generator's n_ctx).
        Settings are checked here, before any work: a SettingsError names the bad one.
        Generation runs while the iterator is consumed; `cancel` (or `Generator.cancel()`)
        ends it within one token.
        """
        settings, window, stop = self._start(prompt, settings, memory, max_tokens, stop, max_context, cancel)
        sampler = Sampler(settings, self.n_vocab, self.tokenizer)
        bans = PhraseBans(settings.banned_phrases, self.tokenizer) if settings.banned_phrases else None
        return self._run(self._stream(window, sampler, max_tokens, stop, self._cancel, bans))

    def generate_many(self, prompt: str, n: int, settings: SamplerSettings | None = None, *, memory: str = "",
                      max_tokens: int = 80, stop: Sequence[str] = (), max_context: int | None = None,
                      cancel: threading.Event | None = None) -> Iterator[TokenEvent | DoneEvent]:
        """n continuations of one prompt in one pass per token (n within 1..8), as one event iterator.

        The arguments are those of `generate`. Every event carries the `index` (0..n-1) of its
        sequence: per pass, the TokenEvent of each running sequence in index order, and a
        sequence's DoneEvent right after its last TokenEvent. Sequences end independently (end of
        text, a stop sequence, `max_tokens`); the others go on in a smaller batch. Sequence i has
        its own sampler state and the seed s + i, where s is `settings.seed` (or a random seed);
        its DoneEvent reports s + i, and `generate` with that seed reproduces it. Cancelling ends
        every sequence within one pass ("cancelled"). The prompt statistics of each DoneEvent are
        those of the one shared prompt evaluation.

        With banned phrases (which take tokens back) the sequences run one after another instead,
        each reusing the prompt's cache, with the same seeds and events.
        """
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_BRANCHES:
            raise SettingsError("n", f"must be an integer within 1..{MAX_BRANCHES}, got {n!r}")
        settings, window, stop = self._start(prompt, settings, memory, max_tokens, stop, max_context, cancel)
        seed = settings.seed if settings.seed is not None else secrets.randbits(31)
        samplers = [Sampler(dataclasses.replace(settings, seed=seed + i), self.n_vocab, self.tokenizer)
                    for i in range(n)]
        if n == 1 or settings.banned_phrases:
            bans = PhraseBans(settings.banned_phrases, self.tokenizer) if settings.banned_phrases else None
            return self._run(event for i, sampler in enumerate(samplers)
                             for event in self._stream(window, sampler, max_tokens, stop, self._cancel, bans, i))
        return self._run(self._stream_many(window, samplers, max_tokens, stop, self._cancel))

    def _start(self, prompt, settings, memory, max_tokens, stop, max_context, cancel):
        """Check a request's arguments (SettingsError names the bad one) and fit its prompt window:
        (settings, window, stop sequences)."""
        if self._running:
            raise RuntimeError("a request is still running on this Generator: consume or close() its "
                               "iterator first (one KV cache serves one request at a time)")
        settings = settings if settings is not None else SamplerSettings()
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise SettingsError("max_tokens", f"must be a positive integer, got {max_tokens!r}")
        if isinstance(stop, str):
            stop = [stop]
        stop = list(stop)
        for s in stop:
            if not isinstance(s, str) or not s:
                raise SettingsError("stop", f"stop sequences must be non-empty strings, got {s!r}")
        n_ctx = self._context_size(max_context)
        Sampler(settings, self.n_vocab, self.tokenizer)          # checks the settings against the vocabulary
        if settings.banned_phrases:
            PhraseBans(settings.banned_phrases, self.tokenizer)
        window = self._fit(self._shifter, prompt, memory, n_ctx, max_tokens)
        self._cancel = cancel if cancel is not None else threading.Event()
        return settings, window, stop

    def preview_window(self, prompt: str, *, memory: str = "", max_tokens: int = 80,
                       max_context: int | None = None) -> Window:
        """The prompt window `generate` would build for these arguments now, without generating
        and without moving the cut it remembers (a copy of the shifter makes the fit)."""
        n_ctx = self._context_size(max_context)
        return self._fit(copy.deepcopy(self._shifter), prompt, memory, n_ctx, max_tokens)

    def _context_size(self, max_context) -> int:
        n_ctx = self.n_ctx if max_context is None else max_context
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or not 1 <= n_ctx <= self.n_ctx:
            raise SettingsError("max_context", f"must be within 1..{self.n_ctx}, got {max_context!r}")
        return n_ctx

    def _fit(self, shifter: ContextShifter, prompt: str, memory: str, n_ctx: int, max_tokens: int) -> Window:
        return shifter.fit(self.tokenizer.encode(memory) if memory else [],
                           self.tokenizer.encode(prompt) if prompt else [], n_ctx, max_tokens)

    def _run(self, events: Iterator[TokenEvent | DoneEvent]) -> Iterator[TokenEvent | DoneEvent]:
        self._running = True
        try:
            yield from events
        finally:
            self._running = False

    def _prompt_logits(self, prompt: list, cancel: threading.Event):
        """Evaluate the prompt after the longest prefix the cache already holds (or one of the last
        request's branches holds): (logits of its last token, or None if cancelled; tokens reused)."""
        session = self.session
        self._adopt_best_branch(prompt)
        # Reuse the cached prefix; at least the last prompt token is evaluated to get logits.
        reused = min(common_prefix_length(session.tokens, prompt), len(prompt) - 1)
        session.truncate(reused)
        logits = None
        for start in range(reused, len(prompt), self.batch_size):
            if cancel.is_set():
                return None, reused
            logits = session.eval(prompt[start:start + self.batch_size])
        return logits, reused

    def _adopt_best_branch(self, prompt: list) -> None:
        """If the prompt continues a sequence of the last generate_many, put it in the session."""
        branches, self._branches = self._branches, None
        if branches is None or branches.stale:
            return
        session = self.session
        best, best_length = None, common_prefix_length(session.tokens, prompt)
        for i, tokens in enumerate(branches.tokens):
            length = common_prefix_length(session.tokens + tokens, prompt)
            if length > best_length:
                best, best_length = i, length
        if best is not None:
            branches.adopt(best)

    def _stream(self, window: Window, sampler: Sampler, max_tokens: int, stops: list,
                cancel: threading.Event, bans: PhraseBans | None = None, index: int = 0
                ) -> Iterator[TokenEvent | DoneEvent]:
        eos = self.tokenizer.eos_id
        # An empty prompt starts from end-of-text, the separator the model was trained with.
        prompt = window.tokens or [eos]
        session = self.session

        t0 = time.perf_counter()
        logits, reused = self._prompt_logits(prompt, cancel)
        seq = Continuation(self.tokenizer, sampler, prompt, stops, max_tokens, index)
        if logits is None:
            yield self._done(seq, window, reused, time.perf_counter() - t0, 0.0, reason="cancelled")
            return
        t1 = time.perf_counter()

        # Without phrase bans every token is released as soon as it is sampled.
        guard = PhraseGuard(bans, self.tokenizer, max_tokens) if bans else None
        always_banned = bans.token_ids if bans else ()
        history = seq.history
        while seq.reason is None:
            sample = self._sample(sampler, logits, history, always_banned, guard)
            if sample is None:
                # The phrase bans left no token possible here: the text ends before it.
                token, ending = None, True
                ready = [(h.token, h.sample) for h in guard.release(everything=True)]
            else:
                token = sample.token
                history.append(token)
                ending = token == eos or len(history) - len(prompt) >= max_tokens or cancel.is_set()
            if guard is None:
                ready = [(token, sample)]
            elif sample is not None:
                if token != eos:
                    guard.push(token, sample, logits)
                    at = guard.violation()
                    if at is not None:
                        # A banned phrase was completed: take it back to where it began and
                        # sample again there, without the token that began it.
                        position = len(history) - (len(guard.held) - at)
                        first = guard.rewind(at, position)
                        del history[position:]
                        session.truncate(position)
                        logits = first.logits
                        if not (cancel.is_set() or guard.exhausted):
                            continue
                        ending = True
                held = [(h.token, h.sample) for h in guard.release(everything=ending)]
                ready = held + [(token, sample)] if token == eos else held
            for i, (tok, smp) in enumerate(ready):
                yield seq.emit(tok, smp, ending and i == len(ready) - 1, cancel.is_set())
                if seq.reason is not None:
                    break                      # held tokens after a stop sequence are dropped
            if seq.reason is None and ending:
                # Everything left was taken back: what is still held ends the text.
                event = seq.end_without_token(cancel.is_set())
                if event is not None:
                    yield event
            if seq.reason is None:
                logits = session.eval([token])
        yield self._done(seq, window, reused, t1 - t0, time.perf_counter() - t1)

    def _stream_many(self, window: Window, samplers: list, max_tokens: int, stops: list,
                     cancel: threading.Event) -> Iterator[TokenEvent | DoneEvent]:
        """generate_many's loop: a Continuation per sequence, one batched eval per pass."""
        prompt = window.tokens or [self.tokenizer.eos_id]
        t0 = time.perf_counter()
        logits, reused = self._prompt_logits(prompt, cancel)
        seqs = [Continuation(self.tokenizer, sampler, prompt, stops, max_tokens, index=i)
                for i, sampler in enumerate(samplers)]
        if logits is None:
            for seq in seqs:
                yield self._done(seq, window, reused, time.perf_counter() - t0, 0.0, reason="cancelled")
            return
        t1 = time.perf_counter()
        session = self.session
        branches = self._branches = session.branch(len(seqs), min(max_tokens, session.n_ctx - len(prompt)))
        rows = [logits] * len(seqs)           # every sequence starts from the prompt's logits
        live = seqs
        while live:
            cancelled = cancel.is_set()
            for seq, row in zip(live, rows):
                yield seq.step(row, cancelled)
                if seq.reason is not None:
                    yield self._done(seq, window, reused, t1 - t0, time.perf_counter() - t1)
            live = [seq for seq in live if seq.reason is None]
            if live:
                rows = branches.eval([seq.history[-1] for seq in live], seqs=[seq.index for seq in live])

    @staticmethod
    def _sample(sampler: Sampler, logits, history: list, always_banned, guard: PhraseGuard | None):
        """The next token's Sample, or None when phrase bans at this position exclude every token."""
        if guard is None or not guard.banned_at(len(history)):
            return sampler.sample(logits, history, always_banned)
        banned = np.union1d(always_banned, sorted(guard.banned_at(len(history)))).astype(np.int64)
        try:
            return sampler.sample(logits, history, banned)
        except SettingsError:
            return None

    @staticmethod
    def _done(seq: "Continuation", window, reused, prompt_s, gen_s, reason=None) -> DoneEvent:
        return DoneEvent(stop_reason=reason or seq.reason, text=seq.text, stop_sequence=seq.found,
                         prompt_tokens=seq.prompt_length, prompt_tokens_reused=reused,
                         prompt_tokens_dropped=window.dropped_tokens, gen_tokens=seq.n, prompt_seconds=prompt_s,
                         gen_seconds=gen_s, seed=seq.sampler.seed, index=seq.index)


class Continuation:
    """One sequence being generated: its sampler (seeded random state, mirostat), its token history
    for the penalties, its detokenizer and stop matcher, the text it released, and why it ended
    (``reason``, None while it runs). ``emit`` releases a token as a TokenEvent; ``step`` samples
    and releases the next token where nothing is held back (generate_many's sequences)."""

    def __init__(self, tokenizer, sampler: Sampler, prompt: list, stops: list, max_tokens: int, index: int = 0):
        self.eos = tokenizer.eos_id
        self.sampler = sampler
        self.history = list(prompt)
        self.prompt_length = len(prompt)
        self.decoder = StreamDecoder(tokenizer)
        self.matcher = StopMatcher(stops)
        self.max_tokens = max_tokens
        self.index = index
        self.emitted: list[str] = []
        self.reason: str | None = None
        self.found: str | None = None

    @property
    def n(self) -> int:
        """Tokens generated so far (taken-back ones not counted)."""
        return len(self.history) - self.prompt_length

    @property
    def text(self) -> str:
        return "".join(self.emitted)

    def step(self, logits, cancelled: bool) -> TokenEvent:
        """Sample the next token from logits and release it; ``cancelled`` makes it the last one."""
        sample = self.sampler.sample(logits, self.history)
        self.history.append(sample.token)
        last = sample.token == self.eos or self.n >= self.max_tokens or cancelled
        return self.emit(sample.token, sample, last, cancelled)

    def emit(self, token: int, sample, last: bool, cancelled: bool) -> TokenEvent:
        """The event of a released token: its final text (held back while it may start a stop
        sequence); ``last`` ends the sequence ("cancelled" if ``cancelled``, else "length")."""
        matcher, decoder = self.matcher, self.decoder
        if token == self.eos:
            # The end-of-text token has no text of its own: release what is pending.
            text, self.found = matcher.push(decoder.flush())
            self.reason = "stop_sequence" if self.found else "eos"
        else:
            text, self.found = matcher.push(decoder.feed(token) + (decoder.flush() if last else ""))
            if self.found:
                self.reason = "stop_sequence"
            elif last:
                self.reason = "cancelled" if cancelled else "length"
        if self.reason is not None and not self.found:
            text += matcher.release()
        self.emitted.append(text)
        return TokenEvent(text, token, sample.probability, sample.top, self.index)

    def end_without_token(self, cancelled: bool) -> TokenEvent | None:
        """End the sequence when no token is left to carry the text still held: that text on a
        token-less event (None if there is none)."""
        text, self.found = self.matcher.push(self.decoder.flush())
        self.reason = "stop_sequence" if self.found else ("cancelled" if cancelled else "length")
        text += "" if self.found else self.matcher.release()
        if not text:
            return None
        self.emitted.append(text)
        return TokenEvent(text, -1, 0.0, [], self.index)
