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

from engine.ggml_file import GGMLFile
from engine.config import Config
from engine.session import Session

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

    def __init__(self, file: GGMLFile, config: Config):
        self.file = file
        self.config = config

    def weight(self, name: str) -> np.ndarray:
        return self.file.tensors[name].to_float32()

    def new_session(self, n_ctx: int) -> "ReferenceSession":
        return ReferenceSession(self, n_ctx)


class ReferenceSession(Session):
    """A float32 KV cache for n_ctx positions and the tokens it holds."""

    def __init__(self, backend: ReferenceBackend, n_ctx: int):
        super().__init__(backend.config, n_ctx)
        c = backend.config
        self.backend = backend
        # np.zeros maps untouched pages lazily, so an unused long context costs no memory.
        self.k = np.zeros((c.n_layer, n_ctx, c.n_head, c.head_dim), dtype=np.float32)
        self.v = np.zeros((c.n_layer, n_ctx, c.n_head, c.head_dim), dtype=np.float32)

    def eval(self, tokens, all_logits: bool = False) -> np.ndarray:
        """Run tokens after the cached ones; the logits of the last (or every) new position."""
        tokens, n_past = self.check_new(tokens)
        logits = self._forward(tokens, n_past)
        self.tokens.extend(tokens)
        self.evaluated += len(tokens)
        return logits if all_logits else logits[-1]

    def _forward(self, tokens: list[int], n_past: int) -> np.ndarray:
        be, c = self.backend, self.backend.config
        H, hd, N = c.n_head, c.head_dim, len(tokens)
        T = n_past + N
        positions = np.arange(n_past, T)
        cos, sin = rope_tables(positions, c.n_rot)
        # causal mask over the cached + new positions: row i sees columns <= n_past + i
        mask = np.arange(T)[None, :] > (n_past + np.arange(N))[:, None]

        x = be.file.tensors["gpt_neox.embed_in.weight"].rows(tokens)
        for layer in range(c.n_layer):
            p = f"gpt_neox.layers.{layer}."
            w = be.weight
            # attention
            a = layer_norm(x, w(p + "input_layernorm.weight"), w(p + "input_layernorm.bias"))
            qkv = a @ w(p + "attention.query_key_value.weight").T + w(p + "attention.query_key_value.bias")
            qkv = qkv.reshape(N, H, 3, hd)          # per-head interleaved [q | k | v] (spec §7.3)
            q = apply_rope(qkv[:, :, 0], cos, sin, c.n_rot)
            k = apply_rope(qkv[:, :, 1], cos, sin, c.n_rot)
            self.k[layer, n_past:T] = k
            self.v[layer, n_past:T] = qkv[:, :, 2]
            keys = self.k[layer, :T].transpose(1, 2, 0)            # [H, hd, T]
            values = self.v[layer, :T].transpose(1, 0, 2)          # [H, T, hd]
            scores = (q.transpose(1, 0, 2) @ keys) / np.float32(math.sqrt(hd))   # [H, N, T]
            scores[:, mask] = -np.inf
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            out = (probs @ values).transpose(1, 0, 2).reshape(N, c.n_embd)
            attn = out @ w(p + "attention.dense.weight").T + w(p + "attention.dense.bias")
            # feed-forward, parallel or sequential residual
            y = x if c.parallel_residual else attn + x
            h = layer_norm(y, w(p + "post_attention_layernorm.weight"), w(p + "post_attention_layernorm.bias"))
            h = gelu(h @ w(p + "mlp.dense_h_to_4h.weight").T + w(p + "mlp.dense_h_to_4h.bias"))
            ff = h @ w(p + "mlp.dense_4h_to_h.weight").T + w(p + "mlp.dense_4h_to_h.bias")
            x = ((ff + attn) + x) if c.parallel_residual else (ff + y)
            x = x.astype(np.float32)

        x = layer_norm(x, be.weight("gpt_neox.final_layer_norm.weight"), be.weight("gpt_neox.final_layer_norm.bias"))
        return (x @ be.weight("embed_out.weight").T).astype(np.float32)
