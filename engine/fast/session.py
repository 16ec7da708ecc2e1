"""FastModel (the repacked weights) and FastSession (a KV cache plus preallocated buffers).

A session evaluates one token (generation) through the compiled ``forward_token``, 2 to
``SHORT_PROMPT`` tokens as rows of one sequence in one compiled call (``forward_prompt_rows``:
no Python between layers, which was most of a short prompt's time at 70M) and longer prompts
through the batched path of ``prompt.py``. Between tokens the Python work is one embedding lookup
and one call; every compiled kernel releases the GIL, so a generation on a worker thread never
blocks the GUI thread for long.
"""
from __future__ import annotations

import os
import time

import numpy as np

from engine.fast.forward import FP16_MAX, NO_SEQS, forward_prompt_rows, forward_rows, forward_token, products, rope_tables
from engine.fast.matvec import xsum_floats
from engine.fast.prompt import TileDecoder, forward_prompt
from engine.fast.repack import pack_matrices
from engine.fast.threads import PromptThreadChooser, ThreadChooser, apply_threads, resolve_threads, single_threaded_blas
from engine.resident_memory import after_first_use, lazy_zeros
from engine.session import Branches, Session

BATCH_MIN = 6          # from this many new tokens on, the batched (GEMM) path is faster
SHORT_PROMPT = 64      # up to this many new tokens, the one-call compiled path (forward_prompt_rows)
PROMPT_CHUNK = 512     # tokens per batched pass (bounds the activation memory)
KV_CHUNK = 256         # the key and value caches grow by whole chunks of positions (or by half their size)

# The key and value caches hold fp16 (as uint16 bits: numba has no float16 arrays on the CPU), as
# llama.cpp's do by default: half the bytes a generated token reads from a long story's cache (410M
# q4_0 after 1024 tokens: 48 -> 57-61 tokens/s here) and half the memory, for a perplexity 0.007 %
# higher (docs/benchmarks.md); NEOX_WRITER_KV=f32 keeps float32. fp16 rounding turns a last-bit
# difference in a key into a whole fp16 step, so the batched rows and the single token sum every
# product, norm and attention alike (tests/test_engine_branches.py: bit-equal logits): N branches
# reproduce N single generations exactly (issue 13). The attention converts each value as it reads it.
KV_DTYPES = {"f16": np.uint16, "f32": np.float32}


def kv_dtype_from_env() -> type:
    """The caches' dtype NEOX_WRITER_KV names (f16, the default, or f32)."""
    name = os.environ.get("NEOX_WRITER_KV", "f16").strip().lower() or "f16"
    if name not in KV_DTYPES:
        raise ValueError(f"NEOX_WRITER_KV={name!r}: expected one of {', '.join(KV_DTYPES)}")
    return KV_DTYPES[name]


def kv_floats(cache: np.ndarray) -> np.ndarray:
    """A key or value cache (or a slice of one) as float32."""
    return cache.view(np.float16).astype(np.float32) if cache.dtype == np.uint16 else cache


def kv_stored(values: np.ndarray, dtype) -> np.ndarray:
    """Float keys or values as a cache of ``dtype`` holds them (fp16 bits, rounded to nearest and
    saturated at +-65504 like ``forward.kv_put``, or float32)."""
    if np.dtype(dtype) == np.uint16:
        return np.clip(np.asarray(values, np.float32), -FP16_MAX, FP16_MAX).astype(np.float16).view(np.uint16)
    return np.asarray(values, np.float32)

_MATRICES = {
    "qkv": "attention.query_key_value.weight",
    "dense": "attention.dense.weight",
    "up": "mlp.dense_h_to_4h.weight",
    "down": "mlp.dense_4h_to_h.weight",
}


class FastModel:
    """The weights of a model in the kernels' layout, plus the small float32 parameters.

    The big matrices are repacked into memory once (``repack.py``); ``embed_in`` stays in the
    memory-mapped file, since only the rows of the tokens seen are ever read.
    """

    def __init__(self, ggml_file, config, threads: int | None = None):
        t0 = time.perf_counter()
        self.file = ggml_file
        self.config = c = config
        self.threads = resolve_threads(threads)
        self.kv_dtype = kv_dtype_from_env()      # of the sessions' caches made from now on
        single_threaded_blas()
        tensors = ggml_file.tensors
        packed = {k: self._pack(s) for k, s in _MATRICES.items()}
        self.qkv, self.dense, self.up, self.down = (packed[k] for k in _MATRICES)
        self.head = pack_matrices(ggml_file.path, [tensors["embed_out.weight"]])
        self.embed = tensors["gpt_neox.embed_in.weight"]
        stack = self._stack
        self.ln = np.ascontiguousarray(np.stack([
            stack("input_layernorm.weight"), stack("input_layernorm.bias"),
            stack("post_attention_layernorm.weight"), stack("post_attention_layernorm.bias")], axis=1))
        self.b_qkv = stack("attention.query_key_value.bias")
        self.b_dense = stack("attention.dense.bias")
        self.b_up = stack("mlp.dense_h_to_4h.bias")
        self.b_down = stack("mlp.dense_4h_to_h.bias")
        self.lnf = np.stack([tensors["gpt_neox.final_layer_norm.weight"].to_float32(),
                             tensors["gpt_neox.final_layer_norm.bias"].to_float32()]).astype(np.float32)
        # one for the model, not per session: a new session (a new story, the bench's) starts from what
        # the earlier prompts measured, the warm-up's included
        self.prompt_chooser = PromptThreadChooser(self.threads)
        self.load_seconds = time.perf_counter() - t0
        # the file's pages loading touched (vocabulary, small tensors); embedding rows are read, not mapped
        ggml_file.release_pages(0, ggml_file.file_size)
        after_first_use("repack")

    def embed_rows(self, tokens) -> np.ndarray:
        """The tokens' embedding rows as float32, read from the file (not the mapping: see
        ``TensorInfo.read_row_values``), a read of one row each."""
        return self.embed.read_row_values(self.file.read_into, tokens)

    def _layer_tensors(self, suffix: str) -> list:
        return [self.file.tensors[f"gpt_neox.layers.{i}.{suffix}"] for i in range(self.config.n_layer)]

    def _pack(self, suffix: str):
        return pack_matrices(self.file.path, self._layer_tensors(suffix), self.threads)

    def _stack(self, suffix: str) -> np.ndarray:
        return np.stack([t.to_float32() for t in self._layer_tensors(suffix)]).astype(np.float32)

    def reload_qkv(self) -> None:
        """Read the QKV weights and biases again (a GGUF file's QKV row order was changed)."""
        self.qkv = self._pack(_MATRICES["qkv"])
        self.b_qkv = self._stack("attention.query_key_value.bias")

    @property
    def matrices(self):
        return (self.qkv, self.dense, self.up, self.down, self.head)

    @property
    def packed_bytes(self) -> int:
        """Memory the repacked matrices take (about the file size minus embed_in)."""
        return sum(m.nbytes for m in self.matrices)

    def new_session(self, n_ctx: int | None = None) -> "FastSession":
        n_ctx = self.config.n_ctx if n_ctx is None else int(n_ctx)
        if not 1 <= n_ctx <= self.config.n_ctx:
            raise ValueError(f"context size {n_ctx} must be within 1..{self.config.n_ctx}")
        return FastSession(self, n_ctx)

    def warm_up(self) -> float:
        """Compile (or load from numba's cache) the evaluation paths: a prompt over SHORT_PROMPT tokens
        (where the context holds one), a short one and a token; returns the seconds it took."""
        t0 = time.perf_counter()
        long_prompt = SHORT_PROMPT + 1
        session = self.new_session(min(self.config.n_ctx, max(long_prompt, BATCH_MIN + 1)))
        if session.n_ctx >= long_prompt:
            session.eval([0] * long_prompt)
            session.truncate(0)
        if session.n_ctx > 1:                       # a context of n_ctx holds no prompt over n_ctx - 1 before a token
            session.eval([0] * min(BATCH_MIN, session.n_ctx - 1))
        session.eval([0])
        self.prompt_chooser = PromptThreadChooser(self.threads)    # its first timing included compiling
        return time.perf_counter() - t0


def token_buffers(model: FastModel, rows: tuple, zeros=np.zeros) -> tuple:
    """The buffers of forward_token (rows ()) or forward_rows (rows (n,)): h, h2 (LayerNorm outputs),
    qkv, att, attn_out, up, down, and two for the inputs made ready for a matrix (``prepare``)."""
    e = model.config.n_embd
    vector = lambda n: zeros(rows + (max(n, e),), np.float32)      # noqa: E731
    # block sums of the longest input (the MLP's 4h), plus the 5th-bit tables of q5 matrices
    xsum = xsum_floats(model.up.rows, any(m.layout == "tiles" and m.arrays[3].size > 1 for m in model.matrices))
    return (vector(e), vector(e), vector(model.qkv.padded_rows), vector(e), vector(model.dense.padded_rows),
            vector(model.up.padded_rows), vector(model.down.padded_rows), vector(xsum), vector(xsum))


class FastSession(Session):
    """A KV cache for up to n_ctx positions, the tokens it holds, and the buffers one token needs.

    The cache holds room for the positions in use, grown a chunk at a time (``reserve``): each
    layer's slice [positions, n_embd] is contiguous, so a cache of n_ctx positions filled to a
    few hundred would still be resident in 2 MiB pieces per layer (transparent huge pages: a
    410M model at 96 of 2048 positions held 46 MiB for 9 MiB of keys), and a chunk's growth copies
    the cache once, never per token.
    """

    def __init__(self, model: FastModel, n_ctx: int):
        super().__init__(model.config, n_ctx)
        c = model.config
        self.model = model
        e = c.n_embd
        self.kcache = lazy_zeros((c.n_layer, 0, e), model.kv_dtype)
        self.vcache = lazy_zeros((c.n_layer, 0, e), model.kv_dtype)
        self._no_own = np.zeros((1, 1, 1, 1), model.kv_dtype)     # forward_prompt_rows' unused branch caches
        self.reserve(1)
        self.cos, self.sin = rope_tables(n_ctx, c.n_rot)
        self._x = np.zeros(e, np.float32)
        self._bufs = token_buffers(model, ())
        self._scores = np.zeros((c.n_head, n_ctx), np.float32)
        self._logits = np.zeros(model.head.padded_rows, np.float32)
        self._decoder = TileDecoder(model.threads)
        self._rows_bufs = self._rows_scores = None      # for short prompts, made on the first
        self._chooser = ThreadChooser(model.threads)

    @property
    def capacity(self) -> int:
        """Positions the key and value caches have room for now (grown by ``reserve``)."""
        return self.kcache.shape[1]

    def reserve(self, n: int) -> None:
        """Room for n positions (at most n_ctx): whole chunks, at least half the present size more."""
        have = self.capacity
        if n <= have:
            return
        size = min(self.n_ctx, -(-max(n, have + have // 2) // KV_CHUNK) * KV_CHUNK)
        held = min(have, len(self.tokens))      # copying the room past them would make it resident
        for name in ("kcache", "vcache"):
            old = getattr(self, name)
            new = lazy_zeros((old.shape[0], size, old.shape[2]), old.dtype)     # resident where written only
            new[:, :held] = old[:, :held]
            setattr(self, name, new)

    def eval(self, tokens, all_logits: bool = False) -> np.ndarray:
        """Run tokens after the cached ones; the logits of the last (or every) new position."""
        tokens, n_past = self.check_new(tokens)
        n = len(tokens)
        self.reserve(n_past + n)
        apply_threads(self.model.threads)
        if 2 <= n <= SHORT_PROMPT:
            logits = self._eval_short(tokens, n_past, all_logits)
        elif n >= BATCH_MIN:
            logits = self._eval_batched(tokens, n_past, all_logits)
        else:
            rows = [self._eval_token(t, n_past + i) for i, t in enumerate(tokens)]
            logits = np.stack(rows) if all_logits else rows[-1]
        self.tokens.extend(tokens)
        self.evaluated += n
        return logits

    def _eval_token(self, token: int, pos: int) -> np.ndarray:
        m = self.model
        self._x[:] = m.embed_rows([token])[0]
        args = (m.qkv.arrays, m.dense.arrays, m.up.arrays, m.down.arrays, m.head.arrays,
                m.ln, m.b_qkv, m.b_dense, m.b_up, m.b_down, m.lnf, m.config.parallel_residual,
                m.config.n_head, m.config.n_rot, pos, self.cos, self.sin, self.kcache, self.vcache,
                self._x, self._bufs, self._scores, self._logits)
        threads = self._chooser.choose()
        apply_threads(threads)
        start = time.perf_counter()
        forward_token(threads, *args)
        self._chooser.record(threads, time.perf_counter() - start)
        after_first_use("token")
        return self._logits[:m.config.n_vocab].copy()

    def _eval_short(self, tokens: list[int], n_past: int, all_logits: bool) -> np.ndarray:
        """A few tokens in one compiled call (``forward_prompt_rows``), then the head for the rows asked."""
        m, c = self.model, self.config
        n = len(tokens)
        if self._rows_bufs is None:      # resident where written: a prompt of n rows holds n rows' worth
            self._rows_bufs = token_buffers(m, (SHORT_PROMPT,), lazy_zeros)
            self._rows_scores = np.zeros((m.threads, self.n_ctx), np.float32)
        bufs = tuple(b[:n] for b in self._rows_bufs)       # C-contiguous views: one compiled signature for any n
        x = m.embed_rows(tokens).astype(np.float32)
        # threads chosen as for tokens, from the prompts' own timings (PromptThreadChooser)
        threads = self.model.prompt_chooser.choose()
        apply_threads(threads)
        start = time.perf_counter()
        forward_prompt_rows(threads, m.qkv.arrays, m.dense.arrays, m.up.arrays, m.down.arrays, m.ln, m.b_qkv,
                            m.b_dense, m.b_up, m.b_down, m.lnf, c.parallel_residual, c.n_head, c.n_rot, n_past,
                            self.cos, self.sin, self.kcache, self.vcache, x, bufs, self._rows_scores,
                            NO_SEQS, self._no_own)
        self.model.prompt_chooser.record(threads, (time.perf_counter() - start) / n)
        after_first_use("short prompt")
        h, xs = bufs[0], bufs[7]
        no_bias = m.b_up[0, :0]
        if all_logits:         # forward_rows' head call, the same argument types
            logits = np.empty((n, m.head.padded_rows), np.float32)
            products(threads, m.head.arrays, 0, h, xs, logits, m.head.arrays, -1, h, xs, logits, no_bias)
            logits = logits[:, :c.n_vocab]
        else:
            last = np.ascontiguousarray(h[n - 1])
            products(threads, m.head.arrays, 0, last, self._bufs[7], self._logits,
                     m.head.arrays, -1, last, self._bufs[7], self._logits, no_bias)
            logits = self._logits[:c.n_vocab].copy()
        apply_threads(m.threads)
        return logits

    def _eval_batched(self, tokens: list[int], n_past: int, all_logits: bool) -> np.ndarray:
        m = self.model
        v = m.config.n_vocab
        out = []
        for start in range(0, len(tokens), PROMPT_CHUNK):
            chunk = tokens[start:start + PROMPT_CHUNK]
            x = m.embed_rows(chunk).astype(np.float32)
            h = forward_prompt(m, self._decoder, x, n_past + start, self.cos, self.sin,
                               self.kcache, self.vcache)
            if all_logits:
                logits = np.empty((len(chunk), m.head.padded_rows), np.float32)
                self._decoder.matmul(m.head, 0, h, logits)
                out.append(logits[:, :v])
            elif start + PROMPT_CHUNK >= len(tokens):
                # the token path's compiled products(), with the same argument types: no extra compile
                last = np.ascontiguousarray(h[-1])
                products(self.model.threads, m.head.arrays, 0, last, self._bufs[7], self._logits,
                         m.head.arrays, -1, last, self._bufs[7], self._logits, m.b_up[0, :0])
                after_first_use("prompt")
                return self._logits[:v].copy()
        after_first_use("prompt")
        return np.concatenate(out)


class FastBranches(Branches):
    """Branches of a FastSession: their own keys and values [layer, sequence, max_new, n_embd] (a
    position's row laid out as in the session's cache, so the attention reads a sequence's own
    positions as one stream, and a branch kept copies into the session unchanged), and buffers of
    a row per sequence for ``forward_rows``, which evaluates a token of each in one pass."""

    def __init__(self, session: FastSession, n: int, max_new: int):
        super().__init__(session, n, max_new)
        model, c = session.model, session.config
        # resident where written only: memory grows with the tokens evaluated, not with max_new
        self.kb = lazy_zeros((c.n_layer, n, max_new, c.n_embd), session.kcache.dtype)
        self.vb = lazy_zeros(self.kb.shape, self.kb.dtype)
        self._x = np.zeros((n, c.n_embd), np.float32)
        self._bufs = token_buffers(model, (n,))
        self._scores = np.zeros((n * c.n_head, self.n_prefix + max_new), np.float32)
        self._logits = np.zeros((n, model.head.padded_rows), np.float32)
        self._chooser = ThreadChooser(model.threads)

    def _forward(self, tokens: list[int], seqs: list[int]) -> np.ndarray:
        m, s = self.session.model, self.session
        n = len(tokens)
        x = self._x[:n]
        x[:] = m.embed_rows(tokens)
        rows = np.array(seqs, np.int64)
        lengths = np.array([len(t) for t in self.tokens], np.int64)
        bufs = tuple(b[:n] for b in self._bufs)       # C-contiguous views: one compiled signature for any n
        args = (m.qkv.arrays, m.dense.arrays, m.up.arrays, m.down.arrays, m.head.arrays,
                m.ln, m.b_qkv, m.b_dense, m.b_up, m.b_down, m.lnf, m.config.parallel_residual,
                m.config.n_head, m.config.n_rot, rows, lengths, self.n_prefix, s.cos, s.sin,
                s.kcache, s.vcache, self.kb, self.vb, x, bufs, self._scores, self._logits[:n])
        threads = self._chooser.choose()
        apply_threads(threads)
        start = time.perf_counter()
        forward_rows(threads, *args)
        self._chooser.record(threads, time.perf_counter() - start)
        after_first_use("rows")
        return self._logits[:n, :m.config.n_vocab].copy()

    def _copy_to_session(self, i: int, count: int) -> None:
        at = len(self.session.tokens)
        self.session.reserve(at + count)
        self.session.kcache[:, at:at + count] = self.kb[:, i, :count]
        self.session.vcache[:, at:at + count] = self.vb[:, i, :count]


FastSession.BRANCHES = FastBranches
