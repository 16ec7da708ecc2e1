"""The model object: a validated model file (legacy ggml or GGUF) plus the backend that runs it.

``load_model(path)`` maps the file, checks it, and picks a backend: the numba fast path
(``engine.fast``) when available, or the numpy float32 reference (``engine.reference``), which
stays selectable as the oracle for tests. Both offer the same ``Session`` (a KV cache that
grows as tokens are evaluated), so callers never know which one runs.
"""
from __future__ import annotations

import numpy as np

from engine.config import Config
from engine.ggml_file import MappedModelFile
from engine.model_file import format_label, open_model_file
from engine.qkv_layout import describe as describe_qkv, settle_qkv_layout

BACKENDS = ("auto", "fast", "reference", "staged")


class Model:
    """A loaded GPT-NeoX model: ``info()``, ``logits(tokens)`` and ``new_session()``."""

    def __init__(self, file: MappedModelFile, backend: str = "auto", threads: int | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.file = file
        self.config = Config.from_file(file)
        self.vocab = file.vocab
        self._name, self._backend = self._make_backend(backend, threads)
        settle_qkv_layout(file, self._backend)     # a GGUF file that does not say its QKV order

    @property
    def backend_name(self) -> str:
        """"fast" or "reference"; a staged model says "starter" until it has moved to "fast"."""
        return getattr(self._backend, "name", self._name)

    @property
    def staged(self):
        """The StagedBackend while this model has one (backend="staged" on a first start), else None."""
        return self._backend if self._name == "staged" else None

    def _make_backend(self, backend: str, threads):
        if backend == "staged":
            from engine.fast.prepare import is_ready
            from engine.starter import can_start
            if can_start(self.file) and not is_ready(self.file):
                from engine.staged import StagedBackend
                return "staged", StagedBackend(self.file, self.config, threads=threads)
            backend = "fast"         # the kernels are in the cache: start at full speed
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
            backend=self.backend_name, format=format_label(f), qkv_layout=describe_qkv(f),
        )

    def new_session(self, n_ctx: int | None = None):
        """A fresh evaluation state with a KV cache for n_ctx positions (default: the model's)."""
        n_ctx = self.config.n_ctx if n_ctx is None else int(n_ctx)
        if not 1 <= n_ctx <= self.config.n_ctx:
            raise ValueError(f"context size {n_ctx} must be within 1..{self.config.n_ctx}")
        return self._backend.new_session(n_ctx)

    def warm_up(self) -> None:
        """Run every evaluation path once, so that a JIT backend compiles (or loads from numba's
        cache) now rather than inside the first generation, where compiling holds the GIL: the fast
        backend's long prompt, short prompt, one token and several sequences in one pass."""
        if self._name == "fast":
            from engine.fast.prepare import warm_up
            warm_up(self._backend)
            return
        # the staged backend warms its fast model in its own thread; the others compile nothing
        session = self.new_session(min(self.config.n_ctx, 16))
        session.eval([0] * min(8, session.n_ctx))
        if session.n_ctx > len(session.tokens):
            session.eval([0])

    def logits(self, tokens) -> np.ndarray:
        """float32 [len(tokens), n_vocab]: the logits at every position, in a fresh context."""
        tokens = [int(t) for t in tokens]
        if not tokens:
            raise ValueError("logits needs at least one token")
        session = self.new_session(min(self.config.n_ctx, max(len(tokens), 1)))
        return session.eval(tokens, all_logits=True)

    def close(self):
        if self.staged is not None:
            self.staged.close()     # stops a child still compiling
        self.file.close()


def load_model(path, backend: str = "auto", threads: int | None = None) -> Model:
    """Open a legacy ggml or GGUF GPT-NeoX file (raises ModelFormatError if it is malformed)."""
    file = open_model_file(path)
    try:
        return Model(file, backend=backend, threads=threads)
    except BaseException:
        file.close()
        raise
