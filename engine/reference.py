"""The numpy float32 reference forward pass: Hugging Face GPTNeoXForCausalLM semantics, readable first.

This is the oracle the fast path is tested against, not the path users run. It follows spec §6:
rotate-half RoPE on the first n_rot dims of each head (base 10000), exact erf GELU, LayerNorm
eps 1e-5, parallel or sequential residual as the file says, untied ``embed_out``. Weights are
dequantized from the memory-mapped file at each use and dropped again, so a big model is never
held in RAM as float32.
"""
from __future__ import annotations

import math

import numpy as np

from engine.ggml_file import MappedModelFile
from engine.config import Config
from engine.resident_memory import lazy_zeros
from engine.session import Branches, Session

LN_EPS = 1e-5
ROPE_BASE = 10000.0

_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, x * Phi(x), with erf evaluated in float64 (math.erf is correctly rounded enough)."""
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1.0 + _erf(x64 / math.sqrt(2.0)).astype(np.float64))).astype(np.float32)


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + np.float32(LN_EPS)) * weight + bias).astype(np.float32)


def rope_tables(positions: np.ndarray, n_rot: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin [N, n_rot] for rotate-half RoPE at the given positions."""
    inv_freq = 1.0 / (ROPE_BASE ** (np.arange(0, n_rot, 2, dtype=np.float64) / n_rot))
    freqs = np.outer(positions.astype(np.float64), inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, n_rot: int) -> np.ndarray:
    """x [N, H, hd]: rotate the first n_rot dims of every head, pass the rest through."""
    if n_rot == 0:
        return x
    rot, rest = x[..., :n_rot], x[..., n_rot:]
    half = n_rot // 2
    rotated = np.concatenate([-rot[..., half:], rot[..., :half]], axis=-1)
    c, s = cos[:, None, :], sin[:, None, :]
    return np.concatenate([rot * c + rotated * s, rest], axis=-1).astype(np.float32)


class ReferenceBackend:
    """Runs a model with plain numpy; holds nothing but the mapped file."""

    def __init__(self, file: MappedModelFile, config: Config):
        self.file = file
        self.config = config

    def reload_qkv(self) -> None:
        """Nothing to do: the weights are read from the file at every use."""

    def weight(self, name: str) -> np.ndarray:
        return self.file.tensors[name].to_float32()

    def product(self, x: np.ndarray, name: str) -> np.ndarray:
        """x @ W.T for the 2-D weight ``name``: the one place a forward pass multiplies by a matrix."""
        return x @ self.weight(name).T

    gelu = staticmethod(gelu)

    def new_session(self, n_ctx: int) -> "ReferenceSession":
        return ReferenceSession(self, n_ctx)


class ReferenceSession(Session):
    """A float32 KV cache for n_ctx positions and the tokens it holds."""

    def __init__(self, backend: ReferenceBackend, n_ctx: int):
        super().__init__(backend.config, n_ctx)
        c = backend.config
        self.backend = backend
        # resident where written only, so an unused long context costs no memory (np.zeros would
        # ask for huge pages: 2 MiB of each layer's slice resident from its first position on)
        self.k = lazy_zeros((c.n_layer, n_ctx, c.n_head, c.head_dim))
        self.v = lazy_zeros((c.n_layer, n_ctx, c.n_head, c.head_dim))

    def eval(self, tokens, all_logits: bool = False) -> np.ndarray:
        """Run tokens after the cached ones; the logits of the last (or every) new position."""
        tokens, n_past = self.check_new(tokens)
        logits = forward(self.backend, tokens, np.arange(n_past, n_past + len(tokens)), self._attend)
        self.tokens.extend(tokens)
        self.evaluated += len(tokens)
        return logits if all_logits else logits[-1]

    def _attend(self, layer: int, positions: np.ndarray, q, k, v) -> np.ndarray:
        """Store the new keys and values, then causal attention of the new rows over the cache."""
        n_past, T = positions[0], positions[-1] + 1
        self.k[layer, n_past:T] = k
        self.v[layer, n_past:T] = v
        # causal mask over the cached + new positions: row i sees columns <= n_past + i
        mask = np.arange(T)[None, :] > positions[:, None]
        return attention(q, self.k[layer, :T], self.v[layer, :T], mask)


class ReferenceBranches(Branches):
    """N sequences after a ReferenceSession's tokens: each row attends to the prefix and its own tokens."""

    def __init__(self, session: ReferenceSession, n: int, max_new: int):
        super().__init__(session, n, max_new)
        c = session.config
        self.k = lazy_zeros((c.n_layer, n, max_new, c.n_head, c.head_dim))
        self.v = lazy_zeros(self.k.shape)

    def _forward(self, tokens: list[int], seqs: list[int]) -> np.ndarray:
        lengths = [len(self.tokens[s]) for s in seqs]
        positions = self.n_prefix + np.array(lengths)

        def attend(layer, positions, q, k, v):
            out = np.empty((len(seqs), q.shape[1] * q.shape[2]), np.float32)
            prefix_k, prefix_v = self.session.k[layer, :self.n_prefix], self.session.v[layer, :self.n_prefix]
            for j, (s, length) in enumerate(zip(seqs, lengths)):
                self.k[layer, s, length] = k[j]
                self.v[layer, s, length] = v[j]
                keys = np.concatenate([prefix_k, self.k[layer, s, :length + 1]])
                values = np.concatenate([prefix_v, self.v[layer, s, :length + 1]])
                out[j] = attention(q[j:j + 1], keys, values, np.zeros((1, len(keys)), bool))[0]
            return out

        return forward(self.session.backend, tokens, positions, attend)

    def _copy_to_session(self, i: int, count: int) -> None:
        at = len(self.session.tokens)
        self.session.k[:, at:at + count] = self.k[:, i, :count]
        self.session.v[:, at:at + count] = self.v[:, i, :count]


ReferenceSession.BRANCHES = ReferenceBranches


def attention(q: np.ndarray, keys: np.ndarray, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Softmax attention of q [N, H, hd] over keys, values [T, H, hd]; mask [N, T] hides True entries.
    Returns [N, H * hd]."""
    n, n_head, hd = q.shape
    scores = (q.transpose(1, 0, 2) @ keys.transpose(1, 2, 0)) / np.float32(math.sqrt(hd))   # [H, N, T]
    scores[:, mask] = -np.inf
    scores -= scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(axis=-1, keepdims=True)
    return (probs @ values.transpose(1, 0, 2)).transpose(1, 0, 2).reshape(n, n_head * hd)


def forward(be: ReferenceBackend, tokens: list[int], positions: np.ndarray, attend) -> np.ndarray:
    """Logits [N, n_vocab] of tokens at the given positions.

    ``attend(layer, positions, q, k, v)`` (q, k rotated; each [N, H, hd]) stores the keys and
    values where its caller keeps them and returns the attention output [N, n_embd]: a session
    attends causally over its one cache, branches each row over the prefix and its own tokens.
    """
    c = be.config
    H, hd, N = c.n_head, c.head_dim, len(tokens)
    cos, sin = rope_tables(positions, c.n_rot)
    x = be.file.tensors["gpt_neox.embed_in.weight"].rows(tokens)
    w = be.weight
    for layer in range(c.n_layer):
        p = f"gpt_neox.layers.{layer}."
        # attention
        a = layer_norm(x, w(p + "input_layernorm.weight"), w(p + "input_layernorm.bias"))
        qkv = be.product(a, p + "attention.query_key_value.weight") + w(p + "attention.query_key_value.bias")
        qkv = qkv.reshape(N, H, 3, hd)          # per-head interleaved [q | k | v] (spec §7.3)
        q = apply_rope(qkv[:, :, 0], cos, sin, c.n_rot)
        k = apply_rope(qkv[:, :, 1], cos, sin, c.n_rot)
        out = attend(layer, positions, q, k, qkv[:, :, 2])
        attn = be.product(out, p + "attention.dense.weight") + w(p + "attention.dense.bias")
        # feed-forward, parallel or sequential residual
        y = x if c.parallel_residual else attn + x
        h = layer_norm(y, w(p + "post_attention_layernorm.weight"), w(p + "post_attention_layernorm.bias"))
        h = be.gelu(be.product(h, p + "mlp.dense_h_to_4h.weight") + w(p + "mlp.dense_h_to_4h.bias"))
        ff = be.product(h, p + "mlp.dense_4h_to_h.weight") + w(p + "mlp.dense_4h_to_h.bias")
        x = ((ff + attn) + x) if c.parallel_residual else (ff + y)
        x = x.astype(np.float32)

    x = layer_norm(x, be.weight("gpt_neox.final_layer_norm.weight"), be.weight("gpt_neox.final_layer_norm.bias"))
    return be.product(x, "embed_out.weight").astype(np.float32)
