"""Where generated text comes from: the local engine or a remote server, behind one interface.

The engine thread's `LLMWorker` holds one `TextSource` and never asks which kind it is:

    source.info()                         # what the window shows about the model (n_ctx, label, ...)
    source.generate(request, cancel)      # engine TokenEvent ... DoneEvent
    source.alternatives(event)            # ((text, token id or -1, probability), ...) for the popup
    source.preview(request)               # the labelled Context the next generation would use
    source.reset(); source.close()

`LocalSource` wraps the model, tokenizer and Generator of this process (the Generator
previews its own prompt window, so previews are exact). `RemoteSource` wraps an `app.remote` backend:
servers stream text, not token ids, so alternatives are text with id -1, and counts come
from the server's tokenizer (when it has one).
"""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

from app.prompt import Context, ContextPart, Prompt, build_prompt, describe

ALTERNATIVES = 5                # top tokens asked of a remote server that returns logprobs
CHARS_PER_TOKEN = 4.0           # the guess when a server cannot count tokens


class LocalSource:
    """The model loaded in this process: exact prompt windows, token ids and alternatives."""

    remote = False
    supported_samplers = None   # every sampler of the panel

    def __init__(self, loaded, path: str):
        """`loaded` is an engine.loaded.LoadedModel; `path` the file as the user chose it."""
        self.loaded = loaded
        self.model, self.tokenizer, self.generator = loaded.model, loaded.tokenizer, loaded.generator
        self.path = path
        self._decoded: dict[int, str] = {}

    def info(self) -> dict:
        info = dict(self.model.info())
        info.update(tokenizer=self.loaded.tokenizer_note, approximate=self.loaded.approximate, path=self.path,
                    remote=False)
        return info

    def n_ctx(self, request) -> int:
        return min(request.n_ctx or self.generator.n_ctx, self.generator.n_ctx)

    def prompt(self, request) -> Prompt:
        return build_prompt(self.tokenizer, text=request.text, memory=request.memory,
                            authors_note=request.authors_note, authors_note_depth=request.authors_note_depth,
                            world_info=request.world_info, budget=self.n_ctx(request) - request.max_new_tokens,
                            shift_fraction=self.generator.shift_fraction)

    def preview(self, request) -> Context:
        prompt = self.prompt(request)
        n_ctx = self.n_ctx(request)
        window = self.generator.preview_window(prompt.story, memory=prompt.memory,
                                               max_tokens=request.max_new_tokens, max_context=n_ctx)
        return describe(self.tokenizer, prompt, window, n_ctx - request.max_new_tokens)

    def generate(self, request, cancel):
        """The request's events; with n > 1, the n continuations in one batch (generate_many)."""
        prompt = self.prompt(request)
        options = dict(memory=prompt.memory, max_tokens=request.max_new_tokens, stop=request.stop,
                       max_context=self.n_ctx(request), cancel=cancel)
        if request.n > 1:
            return self.generator.generate_many(prompt.story, request.n, request.settings, **options)
        return self.generator.generate(prompt.story, request.settings, **options)

    def alternatives(self, event) -> tuple:
        return tuple((self._piece(t), int(t), float(p)) for t, p in event.top)

    def _piece(self, token: int) -> str:
        text = self._decoded.get(token)
        if text is None:
            text = self._decoded[token] = self.tokenizer.decode([int(token)])
        return text

    def reset(self) -> None:
        self.generator.reset()

    def abort(self) -> None:
        """Nothing to do: the generator checks the cancel event every token."""

    def close(self) -> None:
        self.loaded.close()


class RemoteSource:
    """A model on a KoboldCpp, llama.cpp or OpenAI-compatible server (an `app.remote` backend)."""

    remote = True

    def __init__(self, backend):
        self.backend = backend
        self.supported_samplers = frozenset(backend.supported_samplers)
        self._can_count = True        # False once the server turned out to have no tokenizer endpoint

    def info(self) -> dict:
        b = self.backend
        return {"remote": True, "path": b.url, "model": b.model or "", "kind": b.kind,
                "n_ctx": int(b.n_ctx or 2048), "context_known": bool(b.n_ctx), "describe": b.describe(),
                "tokenizer": f"the server's ({b.kind})", "approximate": False,
                "supported_samplers": sorted(self.supported_samplers)}

    def n_ctx(self, request) -> int:
        limit = int(self.backend.n_ctx or 2048)
        return min(request.n_ctx or limit, limit)

    def count_tokens(self, text: str) -> int | None:
        """The server's count, or None when it has no tokenize endpoint (asked once)."""
        if not text:
            return 0
        if not self._can_count:
            return None
        from app.remote import RemoteError
        try:
            return self.backend.count_tokens(text)
        except RemoteError:
            self._can_count = False
            return None

    def prompt(self, request) -> Prompt:
        """Memory + world info, and the story with the author's note about `authors_note_depth`
        tokens before the end: the depth is turned into characters with the server's own
        tokens-per-character on the story's tail (one tokenize request), since servers cannot
        decode token ids back for us."""
        base = build_prompt(None, text=request.text, memory=request.memory, world_info=request.world_info)
        if not request.authors_note.strip():
            return base
        note = "\n[Author's note: {}]\n".format(request.authors_note.strip())
        text = request.text
        tail = text[-max(64, int(request.authors_note_depth * CHARS_PER_TOKEN * 2)):]
        n = self.count_tokens(tail)
        chars_per_token = len(tail) / n if n else CHARS_PER_TOKEN
        at = max(0, len(text) - int(request.authors_note_depth * chars_per_token))
        space = re.compile(r"\s").search(text, at)      # between words, not inside one
        at = space.start() if space else len(text)
        return Prompt(base.memory_text, base.world_info_text, text[:at] + note + text[at:], note, at)

    def preview(self, request) -> Context:
        """The parts as sent; the server cuts the oldest story itself, so counts are of the whole."""
        prompt = self.prompt(request)
        budget = self.n_ctx(request) - request.max_new_tokens
        parts = []
        pieces = [("memory", prompt.memory_text), ("world info", prompt.world_info_text)]
        if prompt.note:
            pieces += [("story", prompt.story[:prompt.note_at]), ("author's note", prompt.note),
                       ("story", prompt.story[prompt.note_at + len(prompt.note):])]
        else:
            pieces.append(("story", prompt.story))
        for kind, text in pieces:
            if text:
                n = self.count_tokens(text)
                parts.append(ContextPart(kind, text, n if n is not None else round(len(text) / CHARS_PER_TOKEN)))
        total = sum(p.n_tokens for p in parts)
        return Context(parts, total, budget, max(0, total - budget))

    def generate(self, request, cancel):
        prompt = self.prompt(request)
        max_context = self.n_ctx(request) if self.backend.n_ctx else None
        events = self.backend.generate(prompt.story, request.settings, memory=prompt.memory,
                                       max_tokens=request.max_new_tokens, stop=request.stop,
                                       max_context=max_context, cancel=cancel, alternatives=ALTERNATIVES)
        return self._with_prompt_count(events, prompt)

    def _with_prompt_count(self, events, prompt):
        """KoboldCpp's stream reports no usage: count the prompt with the server's tokenizer."""
        for event in events:
            if not hasattr(event, "token") and not event.prompt_tokens:
                n = self.count_tokens(prompt.memory + prompt.story)
                if n:
                    event = dataclasses.replace(event, prompt_tokens=n)
            yield event

    def alternatives(self, event) -> tuple:
        return tuple((str(text), -1, float(p)) for text, p in event.top if not math.isnan(p))

    def reset(self) -> None:
        """The server keeps no story state of ours."""

    def abort(self) -> None:
        self.backend.abort()

    def close(self) -> None:
        self.backend.abort()


def model_label(info: dict) -> str:
    """The short name the window shows for the loaded model."""
    if info.get("remote"):
        return f"{info.get('model') or '?'} @ {info.get('path')}"
    return Path(info.get("path", "")).name


__all__ = ["LocalSource", "RemoteSource", "model_label", "ALTERNATIVES"]
