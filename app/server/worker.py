"""The engine-level generation worker the server queue drives.

`EngineWorker` owns (or shares) one model, its tokenizer and one `Generator`, whose KV cache
is reused across requests. It implements the small protocol the queue needs:

    worker.model_name, worker.n_ctx, worker.tokenizer
    worker.run(request, cancel) -> iterator of PromptWindow, PromptScores / ChoiceEvent

`run` is called from the queue's single thread, so there is only ever one generation. The
headless server (`python -m app.server`) builds one from a model file; the desktop app can
build one around the model and generator its Qt worker already holds and pass the lock its
worker takes around a generation, so the GUI and the server never run the generator at the
same time.
"""
from __future__ import annotations

import dataclasses
import secrets
import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from app.server.request import ChoiceEvent, GenerationRequest, PromptScores, PromptWindow
from app.threads import GilHandover


class EngineWorker:
    """Runs GenerationRequests on one local model, one at a time."""

    def __init__(self, model, tokenizer, generator=None, *, lock: threading.Lock | None = None,
                 model_name: str | None = None):
        from engine.generator import Generator
        self.model = model
        self.tokenizer = tokenizer
        self.generator = generator if generator is not None else Generator(model, tokenizer)
        self.lock = lock if lock is not None else threading.Lock()
        self.model_name = model_name or Path(str(model.info().get("path", "model"))).stem

    @classmethod
    def load(cls, path, tokenizer_json=None, *, backend: str = "auto", threads: int | None = None) -> "EngineWorker":
        """Open a model file with its tokenizer (engine.loaded.open_model finds the tokenizer.json)."""
        from engine.loaded import open_model
        loaded = open_model(path, tokenizer_json, backend=backend, threads=threads)
        return cls(loaded.model, loaded.tokenizer, loaded.generator)

    def swap(self, model, tokenizer, generator, model_name: str | None = None) -> None:
        """Serve another model (the desktop app loaded one); waits for a running generation."""
        with self.lock:
            self.model, self.tokenizer, self.generator = model, tokenizer, generator
            self.model_name = model_name or Path(str(model.info().get("path", "model"))).stem

    @property
    def n_ctx(self) -> int:
        return self.generator.n_ctx

    def run(self, request: GenerationRequest, cancel: threading.Event) -> Iterator:
        """Score the prompt if asked, then generate the `request.n` candidates together.

        Up to 8 candidates (engine.session.MAX_BRANCHES) run as one batch of
        `Generator.generate_many`: the prompt is evaluated once and each pass over the weights
        makes a token for every candidate still running; a larger n runs as several batches,
        each reusing the prompt's KV cache. Candidate i uses seed + i, so that the candidates
        differ but the whole answer repeats.
        """
        from engine.session import MAX_BRANCHES
        with self.lock:
            window = self.generator.preview_window(request.prompt, memory=request.memory,
                                                   max_tokens=request.max_tokens, max_context=request.max_context)
            yield PromptWindow(len(window.tokens), window.dropped_tokens)
            if request.prompt_logprobs is not None:
                yield self.score_prompt(request.prompt, request.prompt_logprobs)
            settings = request.settings
            if request.n > MAX_BRANCHES and settings.seed is None:
                # one random seed for all batches, so that candidate i still has seed + i
                settings = dataclasses.replace(settings, seed=secrets.randbits(31))
            for first in range(0, request.n, MAX_BRANCHES):
                if first:
                    settings = dataclasses.replace(settings, seed=settings.seed + MAX_BRANCHES)
                events = self.generator.generate_many(
                    request.prompt, min(MAX_BRANCHES, request.n - first), settings, memory=request.memory,
                    max_tokens=request.max_tokens, stop=request.stop, max_context=request.max_context,
                    cancel=cancel)
                handover = GilHandover()   # the desktop app's GUI thread shares the GIL with this one
                for event in events:
                    handover()
                    yield ChoiceEvent(first + event.index, event)

    def score_prompt(self, prompt: str, top_n: int) -> PromptScores:
        """Log-probabilities of each prompt token given the ones before it (a fresh context).

        A prompt longer than the context is scored over its last n_ctx tokens; earlier tokens
        get no score.
        """
        tokens = self.tokenizer.encode(prompt)
        logprobs: list = [None] * len(tokens)
        top: list = [[] for _ in tokens]
        start = max(0, len(tokens) - self.n_ctx)
        if len(tokens) - start >= 2:
            n_vocab = min(int(self.tokenizer.n_vocab), int(self.model.info()["n_vocab"]))
            logits = self.model.logits(tokens[start:])[:-1, :n_vocab].astype(np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            logz = np.log(np.exp(logits).sum(axis=1, keepdims=True))
            rows = logits - logz
            for j, row in enumerate(rows):
                position = start + j + 1
                logprobs[position] = float(row[tokens[position]])
                if top_n:
                    best = np.argpartition(-row, min(top_n, len(row) - 1))[:top_n]
                    best = best[np.argsort(-row[best], kind="stable")]
                    top[position] = [(int(t), float(row[t])) for t in best]
        return PromptScores(tokens, logprobs, top)
