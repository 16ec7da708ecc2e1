"""The compiled transformer: layer pieces (LayerNorm, RoPE, attention, GELU) and the per-token forward.

``forward_token`` runs one token through every layer and the LM head in a single call into
compiled code, writing only into buffers the session allocated up front. The pieces take a
number of tokens ``n`` so the batched prompt path (``prompt.py``) reuses them for many rows.

Semantics are Hugging Face GPTNeoX's (spec §6): LayerNorm eps 1e-5, rotate-half RoPE on the first
n_rot dims of each head, QKV interleaved per head ([q | k | v] for head 0, then head 1, ...),
softmax attention scaled by 1/sqrt(head_dim), exact erf GELU, parallel or sequential residual.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

LN_EPS = np.float32(1e-5)
ROPE_BASE = 10000.0
# fastmath without "no NaNs/no infinities": the softmax relies on exp(-large) being 0.
SAFE_FAST = {"reassoc", "contract", "arcp", "nsz"}


def rope_tables(n_ctx: int, n_rot: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin [n_ctx, n_rot/2] of position x inverse frequency (computed in float64)."""
    half = max(n_rot // 2, 1)
    inv_freq = 1.0 / (ROPE_BASE ** (np.arange(0, 2 * half, 2, dtype=np.float64) / max(n_rot, 1)))
    angles = np.outer(np.arange(n_ctx, dtype=np.float64), inv_freq)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


@njit(nogil=True, fastmath=SAFE_FAST, cache=True)
def layer_norm(x, weight, bias, out):
    """out = (x - mean) / sqrt(var + eps) * weight + bias over one vector."""
    n = x.size
    mean = np.float32(0.0)
    for i in range(n):
        mean += x[i]
    mean /= n
    var = np.float32(0.0)
    for i in range(n):
        dx = x[i] - mean
        var += dx * dx
    inv = np.float32(1.0) / np.sqrt(var / n + LN_EPS)
    for i in range(n):
        out[i] = (x[i] - mean) * inv * weight[i] + bias[i]


@njit(nogil=True, cache=True, parallel=True)
def layer_norm_rows(x, n, weight, bias, out):
    """layer_norm of rows 0..n-1."""
    for i in prange(n):
        layer_norm(x[i], weight, bias, out[i])


@njit(nogil=True, cache=True, parallel=True)
def gelu_rows(x, n, width):
    """x[:n, :width] = x * Phi(x) in place, exact erf (computed in float64)."""
    chunks = 16
    per = -(-width // chunks)
    for job in prange(n * chunks):
        row = x[job // chunks]
        c = job % chunks
        for i in range(c * per, min(width, (c + 1) * per)):
            v = np.float64(row[i])
            row[i] = np.float32(0.5 * v * (1.0 + math.erf(v * 0.7071067811865476)))


@njit(nogil=True, fastmath=SAFE_FAST, cache=True)
def add_bias(x, n, bias):
    """x[:n, :len(bias)] += bias."""
    for i in range(n):
        row = x[i]
        for j in range(bias.size):
            row[j] += bias[j]


@njit(nogil=True, fastmath=SAFE_FAST, cache=True)
def _rotate(v, cos, sin, half):
    for k in range(half):
        a = v[k]
        b = v[k + half]
        v[k] = a * cos[k] - b * sin[k]
        v[k + half] = b * cos[k] + a * sin[k]


@njit(nogil=True, cache=True)
def rope_and_store(qkv, n, n_past, cos, sin, n_head, n_rot, kc, vc):
    """Rotate the q and k of tokens 0..n-1 (positions n_past..) in place; copy k, v into the cache.

    qkv rows are [q | k | v] per head; kc, vc are one layer's caches [n_ctx, n_embd].
    """
    hd = kc.shape[1] // n_head
    half = n_rot // 2
    for i in range(n):
        p = n_past + i
        for h in range(n_head):
            base = h * 3 * hd
            q = qkv[i, base:base + hd]
            k = qkv[i, base + hd:base + 2 * hd]
            v = qkv[i, base + 2 * hd:base + 3 * hd]
            if half > 0:
                _rotate(q, cos[p], sin[p], half)
                _rotate(k, cos[p], sin[p], half)
            kc[p, h * hd:(h + 1) * hd] = k
            vc[p, h * hd:(h + 1) * hd] = v


@njit(nogil=True, fastmath=SAFE_FAST, cache=True, parallel=True)
def attention(qkv, n, n_past, n_head, kc, vc, scores, out):
    """Causal softmax attention of tokens 0..n-1 (positions n_past..) over the cache.

    Token i sees cache positions 0..n_past+i. scores is scratch [>= n_head, >= n_past+n];
    out [n, n_embd] gets the heads side by side.
    """
    hd = kc.shape[1] // n_head
    scale = np.float32(1.0 / math.sqrt(hd))
    for h in prange(n_head):
        sc = scores[h]
        for i in range(n):
            q = qkv[i, h * 3 * hd:h * 3 * hd + hd]
            length = n_past + i + 1
            top = np.float32(-3.0e38)
            for j in range(length):
                key = kc[j, h * hd:(h + 1) * hd]
                s = np.float32(0.0)
                for d in range(hd):
                    s += q[d] * key[d]
                s *= scale
                sc[j] = s
                top = max(top, s)
            total = np.float32(0.0)
            for j in range(length):
                e = np.exp(sc[j] - top)
                sc[j] = e
                total += e
            inv = np.float32(1.0) / total
            o = out[i, h * hd:(h + 1) * hd]
            o[:] = 0.0
            for j in range(length):
                p = sc[j] * inv
                val = vc[j, h * hd:(h + 1) * hd]
                for d in range(hd):
                    o[d] += p * val[d]


@njit(nogil=True, cache=True)
def forward_token(mv, mv_head, wq, wo, wu, wd, wh, ln, bqkv, bo, bu, bd, lnf, parallel_residual,
                  n_head, n_rot, pos, cos, sin, kcache, vcache, x, h, qkv, att, attn_out, up, down,
                  scores, xsum, logits):
    """One token through every layer and the head: logits[:n_vocab] for position ``pos``.

    x holds the token's embedding and is overwritten. wq/wo/wu/wd/wh are the four arrays of the
    packed QKV, dense, h->4h, 4h->h and head matrices; mv/mv_head their matvec kernels. qkv and
    att are [1, width] buffers, the others vectors at least as long as the padded outputs.
    """
    n_layer = ln.shape[0]
    e = x.size
    for layer in range(n_layer):
        layer_norm(x, ln[layer, 0], ln[layer, 1], h)
        mv(wq[0], wq[1], wq[2], wq[3], layer, h, xsum, qkv[0])
        add_bias(qkv, 1, bqkv[layer])
        rope_and_store(qkv, 1, pos, cos, sin, n_head, n_rot, kcache[layer], vcache[layer])
        attention(qkv, 1, pos, n_head, kcache[layer], vcache[layer], scores, att)
        mv(wo[0], wo[1], wo[2], wo[3], layer, att[0], xsum, attn_out)
        b = bo[layer]
        for i in range(e):
            attn_out[i] += b[i]
        if not parallel_residual:
            for i in range(e):
                x[i] += attn_out[i]
        layer_norm(x, ln[layer, 2], ln[layer, 3], h)
        mv(wu[0], wu[1], wu[2], wu[3], layer, h, xsum, up)
        n_ff = bu.shape[1]
        b = bu[layer]
        for i in range(n_ff):
            up[i] += b[i]
        gelu_rows(up.reshape((1, up.size)), 1, n_ff)
        mv(wd[0], wd[1], wd[2], wd[3], layer, up[:n_ff], xsum, down)
        b = bd[layer]
        if parallel_residual:
            for i in range(e):
                x[i] = ((down[i] + b[i]) + attn_out[i]) + x[i]
        else:
            for i in range(e):
                x[i] = (down[i] + b[i]) + x[i]
    layer_norm(x, lnf[0], lnf[1], h)
    mv_head(wh[0], wh[1], wh[2], wh[3], 0, h, xsum, logits)
