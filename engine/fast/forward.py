"""The compiled transformer: layer pieces (LayerNorm, RoPE, attention, GELU) and the per-token forward.

``forward_token`` runs one token through every layer and the LM head in a single call into
compiled code, writing only into buffers the session allocated up front. The pieces take a
number of tokens ``n`` so the batched prompt path (``prompt.py``) reuses them for many rows.

Threads: every parallel region ends in a barrier, and a barrier costs the most when a thread
has been descheduled (a busy machine), so a token passes only 3 per layer (for Pythia's parallel
residual): {QKV and MLP-up + GELU, which both read only x}, {attention, heads split}, {dense and
MLP-down}. Within a region each thread takes an equal share of the tiles of both matrices
together. With one thread (numba's thread count set to 1) a region runs on the calling thread
alone, as fast as code without regions, so one compiled function serves both.

Semantics are Hugging Face GPTNeoX's (spec §6): LayerNorm eps 1e-5, rotate-half RoPE on the first
n_rot dims of each head, QKV interleaved per head ([q | k | v] for head 0, then head 1, ...),
softmax attention scaled by 1/sqrt(head_dim), exact erf GELU, parallel or sequential residual.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from engine.fast.gemm import matmat
from engine.fast.matvec import TILE, matvec, n_tiles, prepare
from engine.fast.rows import rows_product
from engine.fast.simd import (ROWS512, float_to_half, half_to_float, load_floats_pair, load_splat, max_floats, max_lane,
                              mul_add, store_floats_pair, zero_floats16)

LN_EPS = np.float32(1e-5)
ROPE_BASE = 10000.0
# fastmath without "no NaNs/no infinities": the softmax relies on exp(-large) being 0.
SAFE_FAST = {"reassoc", "contract", "arcp", "nsz"}


def kv_value(a, i):
    """Element i of a key or value cache as float32: the cache holds fp16 bits (uint16) or float32."""


@overload(kv_value, inline="always")
def _kv_value_kernel(a, i):
    if a.dtype == types.uint16:
        return lambda a, i: half_to_float(a[i])
    return lambda a, i: a[i]


FP16_MAX = np.float32(65504.0)


def kv_put(a, i, v):
    """a[i] = v in a key or value cache of fp16 bits (rounded to nearest even) or float32."""


@overload(kv_put, inline="always")
def _kv_put_kernel(a, i, v):
    if a.dtype == types.uint16:
        def put_half(a, i, v):
            # saturated: a key past fp16's range would be inf, and the softmax's NaN
            a[i] = float_to_half(min(max(v, -FP16_MAX), FP16_MAX))
        return put_half

    def put(a, i, v):
        a[i] = v
    return put


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


@njit(nogil=True, cache=True)
def layer_norm_rows(x, n, weight, bias, out):
    """layer_norm of rows 0..n-1 (serial: a few microseconds a row, next to milliseconds of GEMM)."""
    for i in range(n):
        layer_norm(x[i], weight, bias, out[i])


# erf(x) for float32 as x P(x^2) / Q(x^2) on [-4, 4] (erf is +-1 in float32 beyond): the rational
# approximation of Eigen's generic_fast_erf_float, within 4.3e-7 of erf everywhere (checked in
# tests/test_fast.py). Unlike math.erf (a libm call per value, 2 million per layer of a 512-token
# prompt at 410M) it is plain arithmetic, so the loops applying GELU vectorise.
_ERF_P = (-1.60960333262415e-02, -2.95459980854025e-03, -7.34990630326855e-04, -5.69250639462346e-05,
          -2.10102402082508e-06, 2.77068142495902e-08, -2.72614225801306e-10)
_ERF_Q = (-1.42647390514189e-02, -7.37332916720468e-03, -1.68282697438203e-03, -2.13374055278905e-04,
          -1.45660718464996e-05)
P1, P3, P5, P7, P9, P11, P13 = (np.float32(c) for c in _ERF_P)
Q0, Q2, Q4, Q6, Q8 = (np.float32(c) for c in _ERF_Q)


@njit(nogil=True, fastmath=SAFE_FAST, cache=True, inline="always")
def erf32(v):
    x = min(max(v, np.float32(-4.0)), np.float32(4.0))
    x2 = x * x
    p = x2 * (x2 * (x2 * (x2 * (x2 * (x2 * P13 + P11) + P9) + P7) + P5) + P3) + P1
    q = x2 * (x2 * (x2 * (x2 * Q8 + Q6) + Q4) + Q2) + Q0
    return x * p / q


# e**x for x <= 0 in float32 (the softmax's exp(score - max)): x = n ln2 + r, |r| <= ln2 / 2, e**r by
# cephes' expf polynomial, 2**n made from its exponent bits. Plain arithmetic and one select, so the
# softmax loop vectorises (np.exp is a libm call per position: half the attention's time); within
# 3e-7 of e**x (checked in tests/test_fast.py); 0 below -87, where e**x leaves the normal floats.
LOG2E = np.float32(1.4426950408889634)
LN2_HI, LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)
E0, E1, E2, E3, E4, E5 = (np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                                                  4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
EXP_FLOOR = np.float32(-87.0)


@njit(nogil=True, fastmath=SAFE_FAST, cache=True, inline="always")
def exp_nonpositive(x):
    c = max(x, EXP_FLOOR)
    n = np.floor(c * LOG2E + np.float32(0.5))
    r = c - n * LN2_HI - n * LN2_LO
    p = ((((E0 * r + E1) * r + E2) * r + E3) * r + E4) * r + E5
    p = p * (r * r) + r + np.float32(1.0)
    two_n = np.int32((np.int32(n) + np.int32(127)) << np.int32(23)).view(np.float32)
    return p * two_n if x >= EXP_FLOOR else np.float32(0.0)


@njit(nogil=True, fastmath=SAFE_FAST, cache=True, inline="always")
def _gelu(v):
    """x * Phi(x), the exact-erf GELU of GPT-NeoX, in float32."""
    return np.float32(0.5) * v * (np.float32(1.0) + erf32(v * np.float32(0.7071067811865476)))


# error_model="numpy": numba's default checks every float division for a zero divisor (to raise
# ZeroDivisionError), a branch that keeps LLVM from vectorising erf32's rational function; and the
# loop runs over slices from 0, since an index from c0 might be negative (numba's wraparound select)
# for all LLVM knows. Both together: 4.2 -> 0.56 ns a value (512 x 4096, bit-identical results).
@njit(nogil=True, fastmath=SAFE_FAST, error_model="numpy", cache=True)
def bias_gelu(x, c0, c1, bias):
    """x[:, c0:c1] = GELU(x[:, c0:c1] + bias[c0:c1]) in place (a prompt worker's columns)."""
    b = bias[c0:c1]
    for i in range(x.shape[0]):
        row = x[i, c0:c1]
        for j in range(row.size):
            row[j] = _gelu(row[j] + b[j])


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


@njit(nogil=True, inline="always")
def _rope_head(qkv_row, h, hd, pos, cos, sin, half, k_out, v_out):
    """Rotate the q and k of head h in place; copy its k and v into k_out, v_out (hd values each)."""
    base = h * 3 * hd
    q = qkv_row[base:base + hd]
    k = qkv_row[base + hd:base + 2 * hd]
    v = qkv_row[base + 2 * hd:base + 3 * hd]
    if half > 0:
        _rotate(q, cos[pos], sin[pos], half)
        _rotate(k, cos[pos], sin[pos], half)
    for d in range(hd):      # loops, not slice assignment: no shape check to compile
        kv_put(k_out, d, k[d])
        kv_put(v_out, d, v[d])


@njit(nogil=True, cache=True)
def rope_row(qkv_row, pos, cos, sin, n_head, n_rot, k_out, v_out):
    """Rotate the q and k of one token at position pos in place; copy its k and v into k_out, v_out."""
    hd = k_out.size // n_head
    for h in range(n_head):
        _rope_head(qkv_row, h, hd, pos, cos, sin, n_rot // 2, k_out[h * hd:(h + 1) * hd], v_out[h * hd:(h + 1) * hd])


@njit(nogil=True, cache=True)
def rope_and_store(qkv, n, n_past, cos, sin, n_head, n_rot, kc, vc):
    """Rotate the q and k of tokens 0..n-1 (positions n_past..) in place; copy k, v into the cache.

    qkv rows are [q | k | v] per head; kc, vc are one layer's caches [n_ctx, n_embd].
    """
    for i in range(n):
        rope_row(qkv[i], n_past + i, cos, sin, n_head, n_rot, kc[n_past + i], vc[n_past + i])


@njit(nogil=True, fastmath=SAFE_FAST, inline="always")
def _scores(q, keys, count, lo, hi, scale, sc, at, top):
    """sc[at + j] = q . keys[j, lo:hi] * scale for j < count; returns the running maximum.

    Four keys per pass: each vectorised dot ends in a horizontal sum, and four independent sums
    per pass of q keep the FMA units busy where one would wait on its own chain.
    """
    n4 = count - count % 4
    for j in range(0, n4, 4):
        k0, k1, k2, k3 = keys[j, lo:hi], keys[j + 1, lo:hi], keys[j + 2, lo:hi], keys[j + 3, lo:hi]
        s0 = s1 = s2 = s3 = np.float32(0.0)
        for d in range(hi - lo):
            qd = q[d]
            s0 += qd * kv_value(k0, d)
            s1 += qd * kv_value(k1, d)
            s2 += qd * kv_value(k2, d)
            s3 += qd * kv_value(k3, d)
        sc[at + j], sc[at + j + 1], sc[at + j + 2], sc[at + j + 3] = s0 * scale, s1 * scale, s2 * scale, s3 * scale
        top = max(top, max(max(s0, s1), max(s2, s3)) * scale)
    for j in range(n4, count):
        key = keys[j, lo:hi]
        s = np.float32(0.0)
        for d in range(hi - lo):
            s += q[d] * kv_value(key, d)
        s *= scale
        sc[at + j] = s
        top = max(top, s)
    return top


@njit(nogil=True, fastmath=SAFE_FAST, inline="always")
def _weigh(o, sc, at, inv, values, count, lo, hi):
    """o += sum over j < count of sc[at + j] * inv * values[j, lo:hi], four positions per pass over o."""
    n4 = count - count % 4
    for j in range(0, n4, 4):
        p0, p1, p2, p3 = sc[at + j] * inv, sc[at + j + 1] * inv, sc[at + j + 2] * inv, sc[at + j + 3] * inv
        v0, v1, v2, v3 = values[j, lo:hi], values[j + 1, lo:hi], values[j + 2, lo:hi], values[j + 3, lo:hi]
        for d in range(hi - lo):
            o[d] += (p0 * kv_value(v0, d) + p1 * kv_value(v1, d)) + (p2 * kv_value(v2, d) + p3 * kv_value(v3, d))
    for j in range(n4, count):
        p = sc[at + j] * inv
        val = values[j, lo:hi]
        for d in range(hi - lo):
            o[d] += p * kv_value(val, d)


@njit(nogil=True, fastmath=SAFE_FAST, cache=True)
def _attend(qkv_row, h, n_head, kc, vc, length, sc, out_row):
    """Head h of one token: softmax(q k / sqrt(hd)) v over positions 0..length-1 of kc/vc (the head's
    columns): a prompt's row, whose positions end at its own."""
    hd = kc.shape[1] // n_head
    scale = np.float32(1.0 / math.sqrt(hd))
    q = qkv_row[h * 3 * hd:h * 3 * hd + hd]
    lo, hi = h * hd, (h + 1) * hd
    top = _scores(q, kc, length, lo, hi, scale, sc, 0, np.float32(-3.0e38))
    total = np.float32(0.0)
    for j in range(length):
        e = exp_nonpositive(sc[j] - top)
        sc[j] = e
        total += e
    inv = np.float32(1.0) / total
    o = out_row[lo:hi]
    o[:] = 0.0
    _weigh(o, sc, 0, inv, vc, length, lo, hi)


@njit(nogil=True, fastmath=SAFE_FAST, error_model="numpy", cache=True)
def attend_prompt_heads(qkv, n, n_past, cos, sin, n_head, n_rot, kc, vc, out, h0, h1):
    """Heads h0..h1-1 of a batch of n tokens (positions n_past..): RoPE on their q and k, their k and v
    into the cache, then causal attention of each token over positions 0..its own, into out's rows.

    One worker's share of the prompt path's attention (``prompt.TileDecoder.attention``): a head
    reads only its own columns of the cache, so workers given different heads need no barrier
    between the rotation and the attention. Per head its keys are copied once into a table
    [hd, positions] and its values into [positions, hd] (rows padded to 32 floats with zeros), and
    4 queries at a time go through register-blocked loops on 16-lane vectors (``_four_sums``, for
    the scores and for the weighted values): 8 accumulators, each key or value vector loaded once
    for the 4 queries. A block scores the positions its last query sees; its other queries' extra
    positions (at most 3) get weight 0. The numpy version this replaced (BLAS per slice of 128
    queries, masks, exp and temporaries) and a first compiled one of plain loops (23 G
    multiply-adds/s, bound by loads and stores of the score rows) were slower: a 410M 512-token
    prompt spent 0.19 s and 0.28 s here (docs/benchmarks.md, eighth session)."""
    hd = kc.shape[1] // n_head
    length = n_past + n
    scale = np.float32(1.0 / math.sqrt(hd))
    half = n_rot // 2
    # a key row's floats: positions padded to 32, plus 16 so that the rows of the table do not all
    # fall in the same few L1 sets (a power-of-two stride made the scores 1.7x slower)
    span = -(-length // 32) * 32 + 16
    width_d = -(-hd // 32) * 32                # a value row's floats: the head's dims padded to 32
    keys = np.zeros(hd * span, np.float32)
    values = np.zeros(length * width_d, np.float32)
    weights = np.empty(4 * span, np.float32)
    queries = np.empty(4 * hd, np.float32)
    acc = np.empty(4 * width_d, np.float32)
    for h in range(h0, h1):
        lo = h * hd
        base = 3 * lo                          # the head's q in a row of qkv ([q | k | v] per head)
        for i in range(n):
            _rope_head(qkv[i], h, hd, n_past + i, cos, sin, half, kc[n_past + i, lo:lo + hd],
                       vc[n_past + i, lo:lo + hd])
        # the transpose 16 positions at a time: a key row is written in runs, not a float per 2 KiB
        for j0 in range(0, length, 16):
            j1 = min(length, j0 + 16)
            for d in range(hd):
                for j in range(j0, j1):
                    keys[d * span + j] = kv_value(kc, (j, lo + d))
        for j in range(length):
            for d in range(hd):
                values[j * width_d + d] = kv_value(vc, (j, lo + d))
        for i0 in range(0, n, 4):
            m = min(4, n - i0)
            width = n_past + i0 + m            # the positions the block's last query sees
            for r in range(4):
                row = i0 + min(r, m - 1)       # a short last block repeats its last query
                for d in range(hd):
                    queries[r * hd + d] = qkv[row, base + d] * scale
            for j0 in range(0, width, 32):       # scores: 4 queries times 32 keys a pass over the dims
                _four_sums(keys, j0, span, queries, hd, hd, weights, j0, span)
            for r in range(4):
                _softmax_causal(weights, r * span, n_past + i0 + min(r, m - 1) + 1, width)
            for d0 in range(0, width_d, 32):     # 4 weightings of the values, 32 dims a pass over positions
                _four_sums(values, d0, width_d, weights, span, width, acc, d0, width_d)
            for r in range(m):
                row = out[i0 + r]
                for d in range(hd):
                    row[lo + d] = acc[r * width_d + d]


@njit(nogil=True, fastmath=SAFE_FAST, inline="always")
def _four_sums(vecs, v0, v_step, scalars, s_step, count, out, o0, o_step):
    """out[r * o_step + o0 + c] = sum over t < count of scalars[r * s_step + t] * vecs[v0 + t * v_step + c]
    for 4 rows r and 32 columns c: the 4 x 2 vector sums stay in registers over the count terms,
    each 32-float run of vecs loaded once for the 4 rows."""
    a0, a1, a2, a3 = zero_floats16(), zero_floats16(), zero_floats16(), zero_floats16()
    b0, b1, b2, b3 = zero_floats16(), zero_floats16(), zero_floats16(), zero_floats16()
    for t in range(count):
        at = v0 + t * v_step
        x0 = load_floats_pair(vecs, at, at + 8)
        x1 = load_floats_pair(vecs, at + 16, at + 24)
        p0, p1 = load_splat(scalars, t), load_splat(scalars, s_step + t)
        p2, p3 = load_splat(scalars, 2 * s_step + t), load_splat(scalars, 3 * s_step + t)
        a0, b0 = mul_add(p0, x0, a0), mul_add(p0, x1, b0)
        a1, b1 = mul_add(p1, x0, a1), mul_add(p1, x1, b1)
        a2, b2 = mul_add(p2, x0, a2), mul_add(p2, x1, b2)
        a3, b3 = mul_add(p3, x0, a3), mul_add(p3, x1, b3)
    for r, (a, b) in enumerate(((a0, b0), (a1, b1), (a2, b2), (a3, b3))):
        at = r * o_step + o0
        store_floats_pair(out, at, at + 8, a)
        store_floats_pair(out, at + 16, at + 24, b)


@njit(nogil=True, inline="always")
def _row_max(w, at, count):
    """max(w[at:at + count]) for count >= 1, 16 values a step (a scalar max loop stays scalar: LLVM
    vectorises a float max reduction only under no-NaN fast-math, which the engine does not use)."""
    top = load_splat(w, at)
    j = 0
    while j + 16 <= count:
        top = max_floats(top, load_floats_pair(w, at + j, at + j + 8))
        j += 16
    best = max_lane(top)
    while j < count:
        best = max(best, w[at + j])
        j += 1
    return best


@njit(nogil=True, fastmath=SAFE_FAST, error_model="numpy", inline="always")
def _softmax_causal(w, at, count, width):
    """w[at:at + count] = its softmax; w[at + count:at + width] = 0 (positions after the query's own)."""
    top = _row_max(w, at, count)
    total = np.float32(0.0)
    for j in range(count):
        e = exp_nonpositive(w[at + j] - top)
        w[at + j] = e
        total += e
    inv = np.float32(1.0) / total
    for j in range(count):
        w[at + j] *= inv
    for j in range(count, width):
        w[at + j] = 0.0


@njit(nogil=True, cache=True)
def _share(n, part, parts):
    """The part-th of parts nearly equal pieces of range(n), as (start, stop)."""
    return n * part // parts, n * (part + 1) // parts


@njit(nogil=True, cache=True)
def _cut(k, parts, ta, ca, tb, cb):
    """The tile where part k of ``parts`` begins, when ta tiles of ca bytes are followed by tb tiles of
    cb bytes and each part should read an equal share of the bytes (k = parts: ta + tb).

    Shares of the tile count were unequal work where the two matrices differ in width: attention's
    output projection (n_embd inputs a row) beside the MLP's down projection (4 n_embd) gave one
    thread the first and the other four times as much (410M q4_0, one token on 2 threads: 2.72 ms a
    token in the pair against 3.07 on one thread)."""
    total = ta * ca + tb * cb
    c = total * k // parts
    if c <= ta * ca:
        return min(ta, (c + ca // 2) // ca)
    return min(ta + tb, ta + (c - ta * ca + cb // 2) // cb)


def _product(a0, a1, a2, a3, layer, x, xs, out, t0, t1):
    """Rows of tiles t0..t1-1 of out = W[layer] @ x: ``matvec`` for one token (out a vector),
    ``gemm.matmat`` for a row per token (out a matrix).

    Where ``simd.ROWS512``, one token of a lanes-layout matrix goes through ``rows.rows_product``
    as a single row (the 4/5-bit types): it reads two streams of groups half the range apart,
    which this machine reads at full memory speed, and streams a 410M q4_0 matrix in 67 instead
    of matvec's 87 us of CPU (q5_1 92 vs 145; bench/rows_kernels.py --n 1). Not q8_0: its
    blocks are twice the bytes, and at 1.4B the rows kernel took 662-683 us against 590-616.
    f16/f32 rows take ``matmat`` too (``floatgemm.gemv_rows``): summed as the batched rows are."""


@overload(_product, inline="always")
def _product_kernel(a0, a1, a2, a3, layer, x, xs, out, t0, t1):
    if (out.ndim == 1 and a0.ndim == 4 and a0.dtype != types.int8 and ROWS512 and xs.layout == "C"
            and out.layout == "C"):
        return lambda a0, a1, a2, a3, layer, x, xs, out, t0, t1: rows_product(
            a0, a1, a2, a3, layer, xs.reshape((1, xs.size)), out.reshape((1, out.size)), t0, t1)
    if out.ndim == 1 and a0.ndim == 3 and a0.layout == "C":
        return lambda a0, a1, a2, a3, layer, x, xs, out, t0, t1: matmat(
            a0, a1, a2, a3, layer, x.reshape((1, x.size)), xs, out.reshape((1, out.size)), t0, t1)
    if out.ndim == 1:
        return lambda a0, a1, a2, a3, layer, x, xs, out, t0, t1: matvec(a0, a1, a2, a3, layer, x, xs, out, t0, t1)
    return lambda a0, a1, a2, a3, layer, x, xs, out, t0, t1: matmat(a0, a1, a2, a3, layer, x, xs, out, t0, t1)


def _product_of(w, layer, x, xs, out, t0, t1):
    """``_product`` of a kind of matrix: its four arrays, or the nine of a ``repack.MixedMatrix``
    (the layer's own type chosen by its ``select`` entry)."""


@overload(_product_of, inline="always")
def _product_of_kernel(w, layer, x, xs, out, t0, t1):
    if len(w.types) == 4:
        return lambda w, layer, x, xs, out, t0, t1: _product(w[0], w[1], w[2], w[3], layer, x, xs, out, t0, t1)

    def mixed(w, layer, x, xs, out, t0, t1):
        i = w[8][layer]
        if i >= 0:
            _product(w[0], w[1], w[2], w[3], i, x, xs, out, t0, t1)
        else:
            _product(w[4], w[5], w[6], w[7], -1 - i, x, xs, out, t0, t1)
    return mixed


def _prepare_rows(w, x, xs):
    """``prepare`` of one token's x, or of every row of a matrix of them."""


@overload(_prepare_rows, inline="always")
def _prepare_rows_kernel(w, x, xs):
    if x.ndim == 1:
        return lambda w, x, xs: prepare(w, x, xs)

    def rows(w, x, xs):
        for j in range(x.shape[0]):
            prepare(w, x[j], xs[j])
    return rows


@njit(nogil=True, fastmath=SAFE_FAST, cache=True)
def _two_matvecs(part, parts, wa, la, xa, sa, oa, wb, lb, xb, sb, ob, b_gelu):
    """This part's share of the tiles of oa = Wa[la] @ xa and ob = Wb[lb] @ xb (wb may be skipped).

    With ``b_gelu`` (a bias of ob's length) the part also adds it to its rows of ob and applies
    GELU to them: the MLP-up activation, computed by whoever computed the rows. ``lb < 0`` skips b.
    x and o are vectors (one token) or matrices with a row per token (``_product``).
    """
    ta = n_tiles(wa[0])
    tb = n_tiles(wb[0]) if lb >= 0 else 0
    ca = (wa[0][0].size * wa[0].itemsize + wa[1][0].size * wa[1].itemsize) // ta
    cb = (wb[0][0].size * wb[0].itemsize + wb[1][0].size * wb[1].itemsize) // tb if tb > 0 else 0
    s, e = _cut(part, parts, ta, ca, tb, cb), _cut(part + 1, parts, ta, ca, tb, cb)
    if s < ta:
        _product_of(wa, la, xa, sa, oa, s, min(e, ta))
    if e > ta:
        t0, t1 = max(s, ta) - ta, e - ta
        _product_of(wb, lb, xb, sb, ob, t0, t1)
        if b_gelu.size > 0:
            rows = ob.reshape((-1, ob.shape[-1]))
            bias_gelu(rows, t0 * TILE, min(b_gelu.size, t1 * TILE), b_gelu)


# The parallel regions are small functions of their own, each compiled once and called from
# several places, rather than prange loops inside forward_token: numba outlines every prange
# body into a separate function and compiles it with all the kernels it calls, so eight prange
# loops there cost 28 s of the first run's compilation (now about 10 s for the whole token path).


@njit(nogil=True, cache=True, parallel=True)
def products(parts, wa, la, xa, sa, oa, wb, lb, xb, sb, ob, b_gelu):
    """oa = Wa[la] @ xa and ob = Wb[lb] @ xb (GELU(ob + b_gelu) if b_gelu is not empty; lb < 0 skips b).

    One parallel region over ``parts`` threads, each taking an equal share of the tiles of both.
    xa and xb are overwritten (``prepare``); sa, sb are their block-sum buffers. For many tokens
    at once, x, s and o are matrices with a row per token.
    """
    _prepare_rows(wa, xa, sa)
    if lb >= 0:
        _prepare_rows(wb, xb, sb)
    for p in prange(parts):        # np.int64: prange makes p unsigned in the outlined body only
        _two_matvecs(np.int64(p), parts, wa, la, xa, sa, oa, wb, lb, xb, sb, ob, b_gelu)


ROW_BLOCK = 16     # cached positions a thread takes at a time, for all of its heads


@njit(nogil=True, fastmath=SAFE_FAST, cache=True)
def _attend_rows(qkv, h0, h1, n_head, kc, vc, n_shared, seqs, own, kb, vb, scores, tops, out):
    """Heads h0..h1-1 of rows j = 0..n-1: softmax(q k / sqrt(hd)) v over the n_shared positions of
    kc/vc ([position, n_embd]), then the own[j] positions of kb/vb[seqs[j]] (a branch's own tokens
    after a shared prefix; own[j] = 0 for a session's single token). scores[j * n_head + h] holds
    the row's weights, tops[j * n_head + h] its running maximum, then 1/total.

    A head's keys are 64 floats in every 4 KiB row of a cache (410M), so reading one head's column
    of positions after another strides through memory: the cache of a long story was read at
    about half the speed of a stream (410M, 1024 positions, 2 threads: 11.1 ms a token for 24
    layers; 8.3 ms this way). Here a block of ROW_BLOCK positions is read for all the thread's
    heads before the next (the block stays in L1 between heads), and two threads with half the
    heads each read the positions' two halves side by side. The prefix's blocks are read once for
    all rows (each of 8 rows re-read the whole prefix before), and a branch's own positions are
    rows of n_embd like the prefix's, one stream per row (head-major, they were 16 runs of a few
    KiB per row and layer: 410M, 8 rows of 32 prefix and 32 own positions, 2 threads, 4.5 ms a step
    for 24 layers' attention).
    """
    n = seqs.size
    hd = kc.shape[1] // n_head
    scale = np.float32(1.0 / math.sqrt(hd))
    for j in range(n):
        for h in range(h0, h1):
            tops[j * n_head + h] = np.float32(-3.0e38)
    for b in range(0, n_shared, ROW_BLOCK):
        count = min(ROW_BLOCK, n_shared - b)
        keys = kc[b:b + count]
        for j in range(n):
            for h in range(h0, h1):
                i = j * n_head + h
                q = qkv[j, h * 3 * hd:h * 3 * hd + hd]
                tops[i] = _scores(q, keys, count, h * hd, (h + 1) * hd, scale, scores[i], b, tops[i])
    for j in range(n):
        for b in range(0, own[j], ROW_BLOCK):
            count = min(ROW_BLOCK, own[j] - b)
            keys = kb[seqs[j], b:b + count]
            for h in range(h0, h1):
                i = j * n_head + h
                q = qkv[j, h * 3 * hd:h * 3 * hd + hd]
                tops[i] = _scores(q, keys, count, h * hd, (h + 1) * hd, scale, scores[i], n_shared + b, tops[i])
    for j in range(n):
        for h in range(h0, h1):
            i = j * n_head + h
            sc = scores[i]
            top = tops[i]
            total = np.float32(0.0)
            for t in range(n_shared + own[j]):
                e = exp_nonpositive(sc[t] - top)
                sc[t] = e
                total += e
            tops[i] = np.float32(1.0) / total
            out[j, h * hd:(h + 1) * hd] = 0.0
    for b in range(0, n_shared, ROW_BLOCK):
        count = min(ROW_BLOCK, n_shared - b)
        values = vc[b:b + count]
        for j in range(n):
            for h in range(h0, h1):
                i = j * n_head + h
                _weigh(out[j, h * hd:(h + 1) * hd], scores[i], b, tops[i], values, count, h * hd, (h + 1) * hd)
    for j in range(n):
        for b in range(0, own[j], ROW_BLOCK):
            count = min(ROW_BLOCK, own[j] - b)
            values = vb[seqs[j], b:b + count]
            for h in range(h0, h1):
                i = j * n_head + h
                _weigh(out[j, h * hd:(h + 1) * hd], scores[i], n_shared + b, tops[i], values, count, h * hd,
                       (h + 1) * hd)


@njit(nogil=True, cache=True, parallel=True)
def attention(parts, qkv, length, n_head, kc, vc, scores, out):
    """Every head of one token over cache positions 0..length-1, the heads shared by ``parts`` threads."""
    tops = np.empty(n_head, np.float32)
    one = np.zeros(1, np.int64)                  # the token is row 0, with no branch positions
    no_branch = kc[:0].reshape((1, 0, kc.shape[1]))
    rows, out_rows = qkv.reshape((1, qkv.size)), out.reshape((1, out.size))
    for p in prange(parts):
        h0, h1 = _share(n_head, np.int64(p), parts)
        _attend_rows(rows, h0, h1, n_head, kc, vc, length, one, one, no_branch, no_branch, scores, tops, out_rows)


@njit(nogil=True, cache=True)
def forward_token(parts, wq, wo, wu, wd, wh, ln, bqkv, bo, bu, bd, lnf, parallel_residual,
                  n_head, n_rot, pos, cos, sin, kcache, vcache, x, bufs, scores, logits):
    """One token through every layer and the head: logits for position pos.

    Each matrix product and the attention are split into ``parts`` (the numba thread count;
    with 1, the regions run on the calling thread and cost nothing). x holds the token's
    embedding and is overwritten. wq/wo/wu/wd/wh are the four arrays of the packed QKV, dense,
    h->4h, 4h->h and head matrices. bufs are the vectors (h, h2, qkv, att, attn_out, up, down,
    xsum1, xsum2), each as long as the padded output or input it holds.
    """
    h, h2, qkv, att, attn_out, up, down, xs1, xs2 = bufs
    no_bias = bu[0, :0]
    skip = np.int64(-1)         # np.int64, not a literal: one compiled products() for every call
    one, zero = np.int64(1), np.int64(0)
    n_layer = ln.shape[0]
    e = x.size
    n_ff = bu.shape[1]
    up_in = up[:n_ff]
    for layer in range(n_layer):
        layer_norm(x, ln[layer, 0], ln[layer, 1], h)
        if parallel_residual:        # the MLP reads x too: its up-projection runs beside QKV
            layer_norm(x, ln[layer, 2], ln[layer, 3], h2)
            products(parts, wq, layer, h, xs1, qkv, wu, layer, h2, xs2, up, bu[layer])
        else:
            products(parts, wq, layer, h, xs1, qkv, wu, skip, h2, xs2, up, no_bias)
        add_bias(qkv.reshape((1, qkv.size)), one, bqkv[layer])
        rope_and_store(qkv.reshape((1, qkv.size)), one, pos, cos, sin, n_head, n_rot, kcache[layer], vcache[layer])
        attention(parts, qkv, pos + 1, n_head, kcache[layer], vcache[layer], scores, att)
        if parallel_residual:
            products(parts, wo, layer, att, xs1, attn_out, wd, layer, up_in, xs2, down, no_bias)
            b, b2 = bo[layer], bd[layer]
            for i in range(e):
                x[i] = ((down[i] + b2[i]) + (attn_out[i] + b[i])) + x[i]
        else:
            products(parts, wo, layer, att, xs1, attn_out, wd, skip, up_in, xs2, down, no_bias)
            b = bo[layer]
            for i in range(e):
                x[i] += attn_out[i] + b[i]
            layer_norm(x, ln[layer, 2], ln[layer, 3], h2)
            products(parts, wu, layer, h2, xs2, up, wu, skip, h2, xs2, up, no_bias)
            # bias_gelu, as the rows take it: an inlined loop here compiled to other roundings (no
            # fastmath), so a branch's tokens left its single generation's at near ties
            bias_gelu(up.reshape((1, up.size)), 0, n_ff, bu[layer])
            products(parts, wd, layer, up_in, xs2, down, wd, skip, up_in, xs2, down, no_bias)
            b = bd[layer]
            for i in range(e):
                x[i] = (down[i] + b[i]) + x[i]
    layer_norm(x, lnf[0], lnf[1], h)
    products(parts, wh, zero, h, xs1, logits, wh, skip, h, xs1, logits, no_bias)


# Many sequences, one new token each (engine.model.Branches): the same layer structure as
# forward_token, on [n, width] buffers; products() on matrices goes through gemm.matmat, which
# reads each weight tile from memory once for all n rows.


@njit(nogil=True, cache=True, parallel=True)
def row_attention(parts, qkv, seqs, lengths, n_shared, n_head, kc, vc, kb, vb, scores, out):
    """Row j (the next token of sequence seqs[j]) over the n_shared prefix positions of kc/vc and
    its sequence's own lengths[seqs[j]] + 1 positions of kb/vb ([sequence, position, n_embd]);
    the heads shared by ``parts`` threads."""
    n = seqs.size
    own = np.empty(n, np.int64)
    for j in range(n):
        own[j] = lengths[seqs[j]] + 1
    tops = np.empty(n * n_head, np.float32)
    for p in prange(parts):
        h0, h1 = _share(n_head, np.int64(p), parts)
        _attend_rows(qkv, h0, h1, n_head, kc, vc, n_shared, seqs, own, kb, vb, scores, tops, out)


@njit(nogil=True, cache=True, parallel=True)
def prompt_attention(parts, qkv, n, n_past, n_head, kc, vc, scores, out):
    """Rows 0..n-1 of one sequence (positions n_past..), row j over cache positions 0..n_past+j (causal),
    ``parts`` threads each with scores[p]. The (row, head) pairs are dealt out in turn, not in ranges: a
    later row sees more positions, so ranges would leave the last thread the most work."""
    for p in prange(parts):
        q = np.int64(p)
        for i in range(q, n * n_head, parts):
            j, h = i // n_head, i % n_head
            _attend(qkv[j], h, n_head, kc, vc, n_past + j + 1, scores[q], out[j])


@njit(nogil=True, cache=True)
def _row_layers(parts, wq, wo, wu, wd, ln, bqkv, bo, bu, bd, parallel_residual, n_head, n_rot, prompt,
                seqs, lengths, n_shared, cos, sin, kcache, vcache, kb, vb, x, bufs, scores):
    """The n rows of x through every layer (forward_token's structure on [n, width] buffers).

    With ``prompt`` the rows are the next tokens of one sequence at positions n_shared..n_shared+n-1:
    their keys and values go into kcache/vcache and each row attends causally (seqs, lengths, kb, vb
    unused). Otherwise row j is the next token of sequence seqs[j] (``forward_rows``).
    """
    h, h2, qkv, att, attn_out, up, down, xs1, xs2 = bufs
    no_bias = bu[0, :0]
    skip = np.int64(-1)
    n = x.shape[0]
    n_layer = ln.shape[0]
    e = x.shape[1]
    n_ff = bu.shape[1]
    up_in = up[:, :n_ff]
    for layer in range(n_layer):
        layer_norm_rows(x, n, ln[layer, 0], ln[layer, 1], h)
        if parallel_residual:
            layer_norm_rows(x, n, ln[layer, 2], ln[layer, 3], h2)
            products(parts, wq, layer, h, xs1, qkv, wu, layer, h2, xs2, up, bu[layer])
        else:
            products(parts, wq, layer, h, xs1, qkv, wu, skip, h2, xs2, up, no_bias)
        add_bias(qkv, n, bqkv[layer])
        if prompt:
            rope_and_store(qkv, n, n_shared, cos, sin, n_head, n_rot, kcache[layer], vcache[layer])
            prompt_attention(parts, qkv, n, n_shared, n_head, kcache[layer], vcache[layer], scores, att)
        else:
            for j in range(n):
                s = seqs[j]
                rope_row(qkv[j], n_shared + lengths[s], cos, sin, n_head, n_rot, kb[layer, s, lengths[s]],
                         vb[layer, s, lengths[s]])
            row_attention(parts, qkv, seqs, lengths, n_shared, n_head, kcache[layer], vcache[layer], kb[layer],
                          vb[layer], scores, att)
        if parallel_residual:
            products(parts, wo, layer, att, xs1, attn_out, wd, layer, up_in, xs2, down, no_bias)
            b, b2 = bo[layer], bd[layer]
            for j in range(n):
                for i in range(e):
                    x[j, i] = ((down[j, i] + b2[i]) + (attn_out[j, i] + b[i])) + x[j, i]
        else:
            products(parts, wo, layer, att, xs1, attn_out, wd, skip, up_in, xs2, down, no_bias)
            b = bo[layer]
            for j in range(n):
                for i in range(e):
                    x[j, i] += attn_out[j, i] + b[i]
            layer_norm_rows(x, n, ln[layer, 2], ln[layer, 3], h2)
            products(parts, wu, layer, h2, xs2, up, wu, skip, h2, xs2, up, no_bias)
            bias_gelu(up, 0, n_ff, bu[layer])
            products(parts, wd, layer, up_in, xs2, down, wd, skip, up_in, xs2, down, no_bias)
            b = bd[layer]
            for j in range(n):
                for i in range(e):
                    x[j, i] = (down[j, i] + b[i]) + x[j, i]


@njit(nogil=True, cache=True)
def forward_rows(parts, wq, wo, wu, wd, wh, ln, bqkv, bo, bu, bd, lnf, parallel_residual, n_head, n_rot,
                 seqs, lengths, n_shared, cos, sin, kcache, vcache, kb, vb, x, bufs, scores, logits):
    """One new token for each of n sequences through every layer and the head: logits[j] for row j.

    Row j continues sequence seqs[j]: the n_shared positions of kcache/vcache are the prefix all
    sequences share, and kb/vb[layer, s] ([position, n_embd]) hold sequence s's own
    lengths[s] tokens, after which this row's key and value are stored (the caller then counts them in lengths). x [n, n_embd] holds
    the embeddings and is overwritten; bufs are forward_token's buffers with a row per sequence.
    """
    _row_layers(parts, wq, wo, wu, wd, ln, bqkv, bo, bu, bd, parallel_residual, n_head, n_rot, False,
                seqs, lengths, n_shared, cos, sin, kcache, vcache, kb, vb, x, bufs, scores)
    h, xs1 = bufs[0], bufs[7]
    layer_norm_rows(x, x.shape[0], lnf[0], lnf[1], h)
    products(parts, wh, np.int64(0), h, xs1, logits, wh, np.int64(-1), h, xs1, logits, bu[0, :0])


# A short prompt (engine.fast.session.SHORT_PROMPT): its tokens are n rows of one sequence, run in one
# call like forward_rows, where the batched path of prompt.py pays Python, a thread pool's hand-offs
# and numpy temporaries per matrix and layer (most of a 32-token prompt's time at 70M).
NO_SEQS = np.zeros(0, np.int64)


@njit(nogil=True, cache=True)
def forward_prompt_rows(parts, wq, wo, wu, wd, ln, bqkv, bo, bu, bd, lnf, parallel_residual, n_head, n_rot,
                        n_past, cos, sin, kcache, vcache, x, bufs, scores, no_seqs, no_own):
    """The n rows of x (token embeddings, positions n_past..n_past+n-1 of one sequence) through every
    layer: their keys and values into kcache/vcache at those positions, each row attending to the
    positions up to its own. bufs[0][:n] ends as the final-LayerNorm output (the caller applies the
    head to the rows it needs); x is overwritten. scores is [parts, at least n_past + n];
    no_seqs is NO_SEQS and no_own a [1, 1, 1, 1] array of the caches' dtype (the unused branch
    arguments, typed)."""
    _row_layers(parts, wq, wo, wu, wd, ln, bqkv, bo, bu, bd, parallel_residual, n_head, n_rot, True,
                no_seqs, no_seqs, n_past, cos, sin, kcache, vcache, no_own, no_own, x, bufs, scores)
    layer_norm_rows(x, x.shape[0], lnf[0], lnf[1], bufs[0])
