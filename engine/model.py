"""The model object: a validated ggml file plus the backend that runs it.

``load_model(path)`` maps the file, checks it, and picks a backend: the numba fast path
(``engine.fast``) when available, or the numpy float32 reference (``engine.reference``), which
stays selectable as the oracle for tests. Both offer the same ``Session`` (a KV cache that
grows as tokens are evaluated), so callers never know which one runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.ggml_file import GGMLFile


@dataclass(frozen=True)
class Config:
    """The hyper-parameters of a GPT-NeoX model as the file states them."""

    n_vocab: int
    n_ctx: int
    n_embd: int
    n_head: int
    n_layer: int
    n_rot: int
    parallel_residual: bool

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_file(cls, f: GGMLFile) -> "Config":
        hp = f.hparams
        return cls(hp["n_vocab"], hp["n_ctx"], hp["n_embd"], hp["n_head"], hp["n_layer"],
                   hp["n_rot"], bool(hp["par_res"]))


BACKENDS = ("auto", "fast", "reference")


class Model:
    """A loaded GPT-NeoX model: ``info()``, ``logits(tokens)`` and ``new_session()``."""

    def __init__(self, file: GGMLFile, backend: str = "auto", threads: int | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.file = file
        self.config = Config.from_file(file)
        self.vocab = file.vocab
        self.backend_name, self._backend = self._make_backend(backend, threads)

    def _make_backend(self, backend: str, threads):
        if backend in ("auto", "fast"):
            try:
                from engine import fast
            except ImportError:
                if backend == "fast":
                    raise
            else:
                return "fast", fast.build(self.file, self.config, threads=threads)
        from engine.reference import ReferenceBackend
        return "reference", ReferenceBackend(self.file, self.config)

    def info(self) -> dict:
        """What the file says about the model (the keys outside tools rely on)."""
        c, f = self.config, self.file
        return dict(
            n_vocab=c.n_vocab, n_ctx=c.n_ctx, n_embd=c.n_embd, n_head=c.n_head,
            n_layer=c.n_layer, n_rot=c.n_rot, parallel_residual=c.parallel_residual,
            layout=f.layout, qnt_version=f.qnt_version, weight_type=f.weight_type,
            ftype=f.hparams["ftype_raw"], file_size=f.file_size, path=f.path,
            backend=self.backend_name,
        )

    def new_session(self, n_ctx: int | None = None):
        """A fresh evaluation state with a KV cache for n_ctx positions (default: the model's)."""
        n_ctx = self.config.n_ctx if n_ctx is None else int(n_ctx)
        if not 1 <= n_ctx <= self.config.n_ctx:
            raise ValueError(f"context size {n_ctx} must be within 1..{self.config.n_ctx}")
        return self._backend.new_session(n_ctx)

    def logits(self, tokens) -> np.ndarray:
        """float32 [len(tokens), n_vocab]: the logits at every position, in a fresh context."""
        tokens = [int(t) for t in tokens]
        if not tokens:
            raise ValueError("logits needs at least one token")
        session = self.new_session(min(self.config.n_ctx, max(len(tokens), 1)))
        return session.eval(tokens, all_logits=True)

    def close(self):
        self.file.close()


def check_tokens(tokens, n_vocab: int) -> list[int]:
    """Token ids as ints, each within 0..n_vocab-1 (ValueError naming the first bad one)."""
    out = [int(t) for t in tokens]
    for t in out:
        if not 0 <= t < n_vocab:
            raise ValueError(f"token id {t} is outside the vocabulary (0..{n_vocab - 1})")
    return out


class Session:
    """What every backend's session shares: the cached token ids and the checks on new ones.

    A backend's session adds the KV cache and ``eval(tokens, all_logits=False)``.
    """

    def __init__(self, config: Config, n_ctx: int):
        self.config = config
        self.n_ctx = n_ctx
        self.tokens: list[int] = []     # the ids whose keys and values are cached, in order
        self.evaluated = 0              # tokens run through the model (for reuse accounting)

    def truncate(self, n: int) -> None:
        """Forget cached positions from n on (the cache of a common prefix stays valid)."""
        if n < len(self.tokens):
            del self.tokens[max(n, 0):]

    def check_new(self, tokens) -> tuple[list[int], int]:
        """Validated new ids and the number already cached (ValueError past n_ctx)."""
        tokens = check_tokens(tokens, self.config.n_vocab)
        if not tokens:
            raise ValueError("eval needs at least one token")
        n_past = len(self.tokens)
        if n_past + len(tokens) > self.n_ctx:
            raise ValueError(f"{n_past} cached + {len(tokens)} new tokens exceed the context of {self.n_ctx}")
        return tokens, n_past


def load_model(path, backend: str = "auto", threads: int | None = None) -> Model:
    """Open a legacy ggml GPT-NeoX file (raises ModelFormatError if it is malformed)."""
    return Model(GGMLFile(path), backend=backend, threads=threads)
