"""Integer matrix x token-matrix kernels for the batched prompt path (the lanes layout's types).

A prompt multiplies each weight matrix by many tokens at once. The generation kernels of
``matvec.py`` read a group of 8 rows, widen its nibbles and multiply them by one token's 8-bit
activations; here each group's widened weights serve 4 tokens before the next block is read, so
the nibble work and the weight loads are paid once per 4 tokens and the multiply-adds
(``vpdpbusd``) are nearly all that remains; with 32 vector registers the q4 types take two
groups per pass, so each broadcast of x serves 16 rows. Tokens are taken in slices of ``TOKEN_SLICE`` so
their quantized activations stay in the core's L2 cache while all groups pass over them.

As in ``matvec.py``, x is quantized per block of 32 (``quantize_rows``, ggml's q8_0), which is
what ggml does for prompts too; a prompt's logits are then as close to the reference as a
generated token's (issue 3 allows 2e-2).
"""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from engine.fast.matvec import (Q2, Q3, Q6, Q8_UNSIGNED, QK, _iq4_groups, _nibble_groups, _q8_groups, _quantize,
                                block_scales, half_block, half_groups, half_offsets, half_scales, iq4_block, iq4_dot,
                                iq4_lookup, iq4_scales, kind_of, matvec, widen, widen_halves, x_bytes)
from engine.fast.floatgemm import gemm_rows, gemv_rows
from engine.fast.repack import LANES, TILE
from engine.fast.rows import rows_product
from engine.fast.simd import (FEATURES, MODE, ROWS512, abs_bytes, broadcast4, dot4, load_bytes, load_floats, mul, mul_add,
                              offset_bytes, sign_bytes, splat, store_floats, to_floats, zero_floats, zero_ints)

TOKEN_SLICE = 32      # tokens whose int8 activations stay in L2 while every group passes over them
# two groups per pass for the q4 types where there are 32 vector registers (AVX-512VL); the
# NEOX_WRITER_KERNELS=avx2 choice takes the one-group kernels, so the tests run both here
PAIRS = MODE == "vnni" and bool(FEATURES.get("avx512vl"))


@njit(nogil=True, cache=True)
def quantize_rows(x, n0, n1, xq):
    """Rows n0..n1-1 of the token matrix x [N, cols] -> xq [N, xsum_floats(cols)] (``matvec._quantize``)."""
    for n in range(n0, n1):
        _quantize(x[n], xq[n])


@njit(nogil=True, fastmath=True, inline="always")
def _acc_block(acc, dot, scales, mins, dx, s, offset, has_min):
    """acc + one block's contribution for one token (see matvec._nibble_groups)."""
    if has_min:
        acc = mul_add(mins, splat(s), acc)
        return mul_add(scales, mul(to_floats(dot), splat(dx)), acc)
    return mul_add(scales, mul_add(to_floats(dot), splat(dx), splat(offset * s)), acc)


@njit(nogil=True, fastmath=True, inline="always")
def _nibble_gemm_one(qs, d, m, qh, layer, xq, out, t0, t1, has_min, has_qh, is_k):
    """One group (8 rows) times 4 tokens per pass."""
    nb = qs.shape[2]
    n_tok = xq.shape[0]
    offset = np.float32(-16.0) if has_qh else np.float32(-8.0)
    g0, g1 = t0 * (TILE // LANES), min(t1 * (TILE // LANES), qs.shape[1])
    full = n_tok - n_tok % 4
    for n0 in range(0, full, TOKEN_SLICE):
        for g in range(g0, g1):
            q = qs[layer, g].ravel()
            dd = d[layer, g].ravel()
            mm = m[layer, g].ravel() if has_min else dd
            hh = qh[layer, g].ravel() if has_qh else q
            for n in range(n0, min(n0 + TOKEN_SLICE, full), 4):
                x0, x1, x2, x3 = xq[n], xq[n + 1], xq[n + 2], xq[n + 3]
                b0, b1, b2, b3 = x_bytes(x0, nb), x_bytes(x1, nb), x_bytes(x2, nb), x_bytes(x3, nb)
                acc0, acc1, acc2, acc3 = zero_floats(), zero_floats(), zero_floats(), zero_floats()
                for b in range(nb):
                    dot0, dot1, dot2, dot3 = zero_ints(), zero_ints(), zero_ints(), zero_ints()
                    bits = load_bytes(hh, b * 4 * LANES) if has_qh else load_bytes(q, 0)
                    for k in range(4):
                        lo, hi = widen(q, bits, b, k, has_qh)
                        o = b * QK + 4 * k
                        dot0 = dot4(dot4(dot0, lo, broadcast4(b0, o)), hi, broadcast4(b0, o + 16))
                        dot1 = dot4(dot4(dot1, lo, broadcast4(b1, o)), hi, broadcast4(b1, o + 16))
                        dot2 = dot4(dot4(dot2, lo, broadcast4(b2, o)), hi, broadcast4(b2, o + 16))
                        dot3 = dot4(dot4(dot3, lo, broadcast4(b3, o)), hi, broadcast4(b3, o + 16))
                    scales, mins = block_scales(dd, mm, b, has_min, is_k)
                    acc0 = _acc_block(acc0, dot0, scales, mins, x0[b], x0[nb + b], offset, has_min)
                    acc1 = _acc_block(acc1, dot1, scales, mins, x1[b], x1[nb + b], offset, has_min)
                    acc2 = _acc_block(acc2, dot2, scales, mins, x2[b], x2[nb + b], offset, has_min)
                    acc3 = _acc_block(acc3, dot3, scales, mins, x3[b], x3[nb + b], offset, has_min)
                store_floats(out[n], g * LANES, acc0)
                store_floats(out[n + 1], g * LANES, acc1)
                store_floats(out[n + 2], g * LANES, acc2)
                store_floats(out[n + 3], g * LANES, acc3)
    for n in range(full, n_tok):         # the last 1-3 tokens: the generation kernel
        _nibble_groups(qs, d, m, qh, layer, xq[n], out[n], t0, t1, has_min, has_qh, is_k)


@njit(nogil=True, fastmath=True, inline="always")
def _nibble_gemm_pairs(qs, d, m, qh, layer, xq, out, t0, t1, has_min, has_qh, is_k):
    """Two groups (16 rows) times 4 tokens per pass: each broadcast of x serves both groups.

    That takes 8 int32 and 8 float accumulators besides the widened weights, which fit the 32
    vector registers of a CPU with AVX-512VL (q4_0 x 512 tokens: 98-109 -> 117-123 GMAC per
    CPU-second); with 16 registers they would spill, and for the q5 types the 5th bits add
    enough live values to make it slower (87 -> 75), so those take ``_nibble_gemm_one``.
    """
    nb = qs.shape[2]
    n_tok = xq.shape[0]
    offset = np.float32(-16.0) if has_qh else np.float32(-8.0)
    g0, g1 = t0 * (TILE // LANES), min(t1 * (TILE // LANES), qs.shape[1])   # an even count: whole tiles
    full = n_tok - n_tok % 4
    for n0 in range(0, full, TOKEN_SLICE):
        for g in range(g0, g1, 2):
            qa, qb = qs[layer, g].ravel(), qs[layer, g + 1].ravel()
            da, db = d[layer, g].ravel(), d[layer, g + 1].ravel()
            ma = m[layer, g].ravel() if has_min else da
            mb = m[layer, g + 1].ravel() if has_min else db
            ha = qh[layer, g].ravel() if has_qh else qa
            hb = qh[layer, g + 1].ravel() if has_qh else qb
            for n in range(n0, min(n0 + TOKEN_SLICE, full), 4):
                x0, x1, x2, x3 = xq[n], xq[n + 1], xq[n + 2], xq[n + 3]
                b0, b1, b2, b3 = x_bytes(x0, nb), x_bytes(x1, nb), x_bytes(x2, nb), x_bytes(x3, nb)
                a0a, a1a, a2a, a3a = zero_floats(), zero_floats(), zero_floats(), zero_floats()
                a0b, a1b, a2b, a3b = zero_floats(), zero_floats(), zero_floats(), zero_floats()
                for b in range(nb):
                    d0a, d1a, d2a, d3a = zero_ints(), zero_ints(), zero_ints(), zero_ints()
                    d0b, d1b, d2b, d3b = zero_ints(), zero_ints(), zero_ints(), zero_ints()
                    bits_a = load_bytes(ha, b * 4 * LANES) if has_qh else load_bytes(qa, 0)
                    bits_b = load_bytes(hb, b * 4 * LANES) if has_qh else bits_a
                    for k in range(4):
                        loa, hia = widen(qa, bits_a, b, k, has_qh)
                        lob, hib = widen(qb, bits_b, b, k, has_qh)
                        o = b * QK + 4 * k
                        lx, hx = broadcast4(b0, o), broadcast4(b0, o + 16)
                        d0a = dot4(dot4(d0a, loa, lx), hia, hx)
                        d0b = dot4(dot4(d0b, lob, lx), hib, hx)
                        lx, hx = broadcast4(b1, o), broadcast4(b1, o + 16)
                        d1a = dot4(dot4(d1a, loa, lx), hia, hx)
                        d1b = dot4(dot4(d1b, lob, lx), hib, hx)
                        lx, hx = broadcast4(b2, o), broadcast4(b2, o + 16)
                        d2a = dot4(dot4(d2a, loa, lx), hia, hx)
                        d2b = dot4(dot4(d2b, lob, lx), hib, hx)
                        lx, hx = broadcast4(b3, o), broadcast4(b3, o + 16)
                        d3a = dot4(dot4(d3a, loa, lx), hia, hx)
                        d3b = dot4(dot4(d3b, lob, lx), hib, hx)
                    sa, mna = block_scales(da, ma, b, has_min, is_k)
                    sb, mnb = block_scales(db, mb, b, has_min, is_k)
                    a0a = _acc_block(a0a, d0a, sa, mna, x0[b], x0[nb + b], offset, has_min)
                    a0b = _acc_block(a0b, d0b, sb, mnb, x0[b], x0[nb + b], offset, has_min)
                    a1a = _acc_block(a1a, d1a, sa, mna, x1[b], x1[nb + b], offset, has_min)
                    a1b = _acc_block(a1b, d1b, sb, mnb, x1[b], x1[nb + b], offset, has_min)
                    a2a = _acc_block(a2a, d2a, sa, mna, x2[b], x2[nb + b], offset, has_min)
                    a2b = _acc_block(a2b, d2b, sb, mnb, x2[b], x2[nb + b], offset, has_min)
                    a3a = _acc_block(a3a, d3a, sa, mna, x3[b], x3[nb + b], offset, has_min)
                    a3b = _acc_block(a3b, d3b, sb, mnb, x3[b], x3[nb + b], offset, has_min)
                store_floats(out[n], g * LANES, a0a)
                store_floats(out[n], (g + 1) * LANES, a0b)
                store_floats(out[n + 1], g * LANES, a1a)
                store_floats(out[n + 1], (g + 1) * LANES, a1b)
                store_floats(out[n + 2], g * LANES, a2a)
                store_floats(out[n + 2], (g + 1) * LANES, a2b)
                store_floats(out[n + 3], g * LANES, a3a)
                store_floats(out[n + 3], (g + 1) * LANES, a3b)
    for n in range(full, n_tok):         # the last 1-3 tokens: the generation kernel
        _nibble_groups(qs, d, m, qh, layer, xq[n], out[n], t0, t1, has_min, has_qh, is_k)


@njit(nogil=True, fastmath=True, cache=True)
def _gemm_k(qs, d, m, qh, layer, xq, out, t0, t1):
    """q4_K/q5_K (``matvec.block_scales``): q5_K one group a pass, q4_K two where ``PAIRS``, as q5_1/q4_1."""
    if qh.size > 1:
        _nibble_gemm_one(qs, d, m, qh, layer, xq, out, t0, t1, True, True, True)
    elif PAIRS:
        _nibble_gemm_pairs(qs, d, m, qh, layer, xq, out, t0, t1, True, False, True)
    else:
        _nibble_gemm_one(qs, d, m, qh, layer, xq, out, t0, t1, True, False, True)


@njit(nogil=True, fastmath=True, inline="always")
def _gemm_halves(qs, d, m, qh, layer, xq, out, t0, t1, kind):
    """q6_K, q3_K, q2_K (``matvec.half_offsets``): one group times 4 tokens per pass, two int32 sums per
    block and token."""
    nb = qs.shape[2]
    n_tok = xq.shape[0]
    g0, g1 = t0 * (TILE // LANES), min(t1 * (TILE // LANES), qs.shape[1])
    full = n_tok - n_tok % 4
    offsets = np.empty(2 * nb * max(full, 1), np.float32)
    for n in range(full):
        half_offsets(xq[n], nb, offsets, 2 * nb * n, kind)
    for n0 in range(0, full, TOKEN_SLICE):
        for g in range(g0, g1):
            q = qs[layer, g].ravel()
            dd = d[layer, g].ravel()
            mm = m[layer, g].ravel()
            hh = qh[layer, g].ravel() if kind != Q2 else q
            for n in range(n0, min(n0 + TOKEN_SLICE, full), 4):
                x0, x1, x2, x3 = xq[n], xq[n + 1], xq[n + 2], xq[n + 3]
                b0, b1, b2, b3 = x_bytes(x0, nb), x_bytes(x1, nb), x_bytes(x2, nb), x_bytes(x3, nb)
                o0, o1, o2, o3 = 2 * nb * n, 2 * nb * (n + 1), 2 * nb * (n + 2), 2 * nb * (n + 3)
                acc0, acc1, acc2, acc3 = zero_floats(), zero_floats(), zero_floats(), zero_floats()
                for b in range(nb):
                    l0, l1, l2, l3 = zero_ints(), zero_ints(), zero_ints(), zero_ints()
                    h0, h1, h2, h3 = zero_ints(), zero_ints(), zero_ints(), zero_ints()
                    for k in range(4):
                        lo, hi = widen_halves(q, hh, b, k, kind)
                        o = b * QK + 4 * k
                        l0, h0 = dot4(l0, lo, broadcast4(b0, o)), dot4(h0, hi, broadcast4(b0, o + 16))
                        l1, h1 = dot4(l1, lo, broadcast4(b1, o)), dot4(h1, hi, broadcast4(b1, o + 16))
                        l2, h2 = dot4(l2, lo, broadcast4(b2, o)), dot4(h2, hi, broadcast4(b2, o + 16))
                        l3, h3 = dot4(l3, lo, broadcast4(b3, o)), dot4(h3, hi, broadcast4(b3, o + 16))
                    s = half_scales(dd, mm, b, kind)
                    acc0 = half_block(acc0, l0, h0, s, x0[b], offsets[o0 + 2 * b], offsets[o0 + 2 * b + 1], kind)
                    acc1 = half_block(acc1, l1, h1, s, x1[b], offsets[o1 + 2 * b], offsets[o1 + 2 * b + 1], kind)
                    acc2 = half_block(acc2, l2, h2, s, x2[b], offsets[o2 + 2 * b], offsets[o2 + 2 * b + 1], kind)
                    acc3 = half_block(acc3, l3, h3, s, x3[b], offsets[o3 + 2 * b], offsets[o3 + 2 * b + 1], kind)
                store_floats(out[n], g * LANES, acc0)
                store_floats(out[n + 1], g * LANES, acc1)
                store_floats(out[n + 2], g * LANES, acc2)
                store_floats(out[n + 3], g * LANES, acc3)
    for n in range(full, n_tok):         # the last 1-3 tokens: the generation kernel
        half_groups(qs, d, m, qh, layer, xq[n], out[n], t0, t1, kind)


@njit(nogil=True, fastmath=True, cache=True)
def _gemm_q6(qs, d, m, qh, layer, xq, out, t0, t1):
    _gemm_halves(qs, d, m, qh, layer, xq, out, t0, t1, Q6)


@njit(nogil=True, fastmath=True, cache=True)
def _gemm_q3(qs, d, m, qh, layer, xq, out, t0, t1):
    _gemm_halves(qs, d, m, qh, layer, xq, out, t0, t1, Q3)


@njit(nogil=True, fastmath=True, cache=True)
def _gemm_q2(qs, d, m, qh, layer, xq, out, t0, t1):
    _gemm_halves(qs, d, m, qh, layer, xq, out, t0, t1, Q2)


@njit(nogil=True, fastmath=True, inline="always")
def _iq4_gemm(qs, d, m, layer, xq, out, t0, t1, is_xs):
    """iq4_nl / iq4_xs (``matvec.iq4_lookup``): one group times 4 tokens per pass, each run's levels
    looked up once for the 4."""
    nb = qs.shape[2]
    n_tok = xq.shape[0]
    g0, g1 = t0 * (TILE // LANES), min(t1 * (TILE // LANES), qs.shape[1])
    full = n_tok - n_tok % 4
    for n0 in range(0, full, TOKEN_SLICE):
        for g in range(g0, g1):
            q = qs[layer, g].ravel()
            dd = d[layer, g].ravel()
            mm = m[layer, g].ravel() if is_xs else dd
            for n in range(n0, min(n0 + TOKEN_SLICE, full), 4):
                x0, x1, x2, x3 = xq[n], xq[n + 1], xq[n + 2], xq[n + 3]
                b0, b1, b2, b3 = x_bytes(x0, nb), x_bytes(x1, nb), x_bytes(x2, nb), x_bytes(x3, nb)
                acc0, acc1, acc2, acc3 = zero_floats(), zero_floats(), zero_floats(), zero_floats()
                for b in range(nb):
                    dot0, dot1, dot2, dot3 = zero_ints(), zero_ints(), zero_ints(), zero_ints()
                    for k in range(4):
                        lo, hi = iq4_lookup(load_bytes(q, b * 128 + k * 32))
                        o = b * QK + 4 * k
                        dot0 = iq4_dot(dot0, lo, hi, b0, o)
                        dot1 = iq4_dot(dot1, lo, hi, b1, o)
                        dot2 = iq4_dot(dot2, lo, hi, b2, o)
                        dot3 = iq4_dot(dot3, lo, hi, b3, o)
                    scales = iq4_scales(dd, mm, b, is_xs)
                    acc0 = iq4_block(acc0, dot0, scales, x0[b], x0[nb + b])
                    acc1 = iq4_block(acc1, dot1, scales, x1[b], x1[nb + b])
                    acc2 = iq4_block(acc2, dot2, scales, x2[b], x2[nb + b])
                    acc3 = iq4_block(acc3, dot3, scales, x3[b], x3[nb + b])
                store_floats(out[n], g * LANES, acc0)
                store_floats(out[n + 1], g * LANES, acc1)
                store_floats(out[n + 2], g * LANES, acc2)
                store_floats(out[n + 3], g * LANES, acc3)
    for n in range(full, n_tok):
        _iq4_groups(qs, d, m, layer, xq[n], out[n], t0, t1, is_xs)


@njit(nogil=True, fastmath=True, cache=True)
def _gemm_iq4(qs, d, m, qh, layer, xq, out, t0, t1):
    if m.size > 1:
        _iq4_gemm(qs, d, m, layer, xq, out, t0, t1, True)
    else:
        _iq4_gemm(qs, d, m, layer, xq, out, t0, t1, False)


@njit(nogil=True, fastmath=True, cache=True)
def _gemm_nibbles(qs, d, m, qh, layer, xq, out, t0, t1):
    """q4_0/q4_1/q5_0/q5_1: each variant inlined with constant flags, as in matvec._lanes_nibbles."""
    if qh.size > 1:
        if m.size > 1:
            _nibble_gemm_one(qs, d, m, qh, layer, xq, out, t0, t1, True, True, False)
        else:
            _nibble_gemm_one(qs, d, m, qh, layer, xq, out, t0, t1, False, True, False)
    elif PAIRS:
        if m.size > 1:
            _nibble_gemm_pairs(qs, d, m, qh, layer, xq, out, t0, t1, True, False, False)
        else:
            _nibble_gemm_pairs(qs, d, m, qh, layer, xq, out, t0, t1, False, False, False)
    elif m.size > 1:
        _nibble_gemm_one(qs, d, m, qh, layer, xq, out, t0, t1, True, False, False)
    else:
        _nibble_gemm_one(qs, d, m, qh, layer, xq, out, t0, t1, False, False, False)


@njit(nogil=True, fastmath=True, cache=True)
def _gemm_q8_0(qs, d, layer, xq, out, t0, t1):
    """q8_0: the weights made unsigned once per block run (matvec.Q8_UNSIGNED), times each of 4 tokens' bytes."""
    nb = qs.shape[2]
    offset = np.float32(-128.0) if Q8_UNSIGNED else np.float32(0.0)
    n_tok = xq.shape[0]
    g0, g1 = t0 * (TILE // LANES), min(t1 * (TILE // LANES), qs.shape[1])
    full = n_tok - n_tok % 4
    for n0 in range(0, full, TOKEN_SLICE):
        for g in range(g0, g1):
            q = qs[layer, g].ravel()
            dd = d[layer, g].ravel()
            for n in range(n0, min(n0 + TOKEN_SLICE, full), 4):
                x0, x1, x2, x3 = xq[n], xq[n + 1], xq[n + 2], xq[n + 3]
                b0, b1, b2, b3 = x_bytes(x0, nb), x_bytes(x1, nb), x_bytes(x2, nb), x_bytes(x3, nb)
                acc0, acc1, acc2, acc3 = zero_floats(), zero_floats(), zero_floats(), zero_floats()
                for b in range(nb):
                    dot0, dot1, dot2, dot3 = zero_ints(), zero_ints(), zero_ints(), zero_ints()
                    for k in range(8):
                        w = load_bytes(q, b * 256 + k * 32)
                        o = b * QK + 4 * k
                        if Q8_UNSIGNED:       # see matvec.Q8_UNSIGNED
                            u = offset_bytes(w)
                            dot0 = dot4(dot0, u, broadcast4(b0, o))
                            dot1 = dot4(dot1, u, broadcast4(b1, o))
                            dot2 = dot4(dot2, u, broadcast4(b2, o))
                            dot3 = dot4(dot3, u, broadcast4(b3, o))
                        else:
                            u = abs_bytes(w)
                            dot0 = dot4(dot0, u, sign_bytes(broadcast4(b0, o), w))
                            dot1 = dot4(dot1, u, sign_bytes(broadcast4(b1, o), w))
                            dot2 = dot4(dot2, u, sign_bytes(broadcast4(b2, o), w))
                            dot3 = dot4(dot3, u, sign_bytes(broadcast4(b3, o), w))
                    scales = load_floats(dd, b * LANES)
                    acc0 = _acc_block(acc0, dot0, scales, scales, x0[b], x0[nb + b], offset, False)
                    acc1 = _acc_block(acc1, dot1, scales, scales, x1[b], x1[nb + b], offset, False)
                    acc2 = _acc_block(acc2, dot2, scales, scales, x2[b], x2[nb + b], offset, False)
                    acc3 = _acc_block(acc3, dot3, scales, scales, x3[b], x3[nb + b], offset, False)
                store_floats(out[n], g * LANES, acc0)
                store_floats(out[n + 1], g * LANES, acc1)
                store_floats(out[n + 2], g * LANES, acc2)
                store_floats(out[n + 3], g * LANES, acc3)
    for n in range(full, n_tok):
        _q8_groups(qs, d, layer, xq[n], out[n], t0, t1)


def gemm(a0, a1, a2, a3, layer, xq, out, t0, t1):
    """out[n, rows of tiles t0..t1-1] = W[layer] @ x_n for every token n (xq from ``quantize_rows``).

    out is [N, padded rows] (C-contiguous): the kernels store whole groups of 8 rows.
    """


@overload(gemm)
def _gemm(a0, a1, a2, a3, layer, xq, out, t0, t1):
    if a0.ndim != 4:
        return None
    if a0.dtype == types.int8:
        return lambda a0, a1, a2, a3, layer, xq, out, t0, t1: _gemm_q8_0(a0, a1, layer, xq, out, t0, t1)
    if a3.dtype == types.int8:
        return lambda a0, a1, a2, a3, layer, xq, out, t0, t1: _gemm_iq4(a0, a1, a2, a3, layer, xq, out, t0, t1)
    kind = kind_of(a1, a2)
    if kind:
        halves = _gemm_q6 if kind == Q6 else _gemm_q3 if kind == Q3 else _gemm_q2
        return lambda a0, a1, a2, a3, layer, xq, out, t0, t1: halves(a0, a1, a2, a3, layer, xq, out, t0, t1)
    if a1.dtype == types.uint8:
        return lambda a0, a1, a2, a3, layer, xq, out, t0, t1: _gemm_k(a0, a1, a2, a3, layer, xq, out, t0, t1)
    return lambda a0, a1, a2, a3, layer, xq, out, t0, t1: _gemm_nibbles(a0, a1, a2, a3, layer, xq, out, t0, t1)


@njit(nogil=True, cache=True)
def gemm_lanes(a0, a1, a2, a3, layer, xq, out, t0, t1):
    """The compiled entry point the prompt path's workers call (``gemm`` for the arrays' type)."""
    gemm(a0, a1, a2, a3, layer, xq, out, t0, t1)


def matmat(a0, a1, a2, a3, layer, x, xs, out, t0, t1):
    """Rows of tiles t0..t1-1 of out[j] = W[layer] @ x[j] for every row j of out, any weight type.

    The rows are a few tokens (one per sequence of a batched generation), each made ready for the
    matrix by ``matvec.prepare(w, x[j], xs[j])``. The lanes layout's types take the 512-bit kernels
    of ``rows.py`` where the CPU has them (``simd.ROWS512``: each block widened once for up to 8
    rows); otherwise the work goes tile by tile, so each tile's weights come from memory once and
    from the core's cache for the other rows: the lanes types through ``gemm`` (4 tokens per pass
    over the widened weights), the others through the one-token kernel of ``matvec`` once per row.
    """


@overload(matmat)
def _matmat(a0, a1, a2, a3, layer, x, xs, out, t0, t1):
    if a0.ndim == 4:           # the lanes layout (see matvec.matvec)
        q8 = a0.dtype == types.int8

        def lanes(a0, a1, a2, a3, layer, x, xs, out, t0, t1):
            if ROWS512 and (out.shape[0] > 1 or not q8):   # one 4/5-bit row too: see forward._product
                rows_product(a0, a1, a2, a3, layer, xs, out, t0, t1)
                return
            if out.shape[0] == 1:      # one row: the token kernel, streaming with its prefetches
                matvec(a0, a1, a2, a3, layer, x[0], xs[0], out[0], t0, t1)
                return
            for t in range(t0, t1):
                gemm(a0, a1, a2, a3, layer, xs, out, t, t + 1)
        return lanes

    if a0.ndim == 3 and a0.layout == "C":    # f16 / f32 rows: floatgemm.py

        def float_rows(a0, a1, a2, a3, layer, x, xs, out, t0, t1):
            r0, r1 = t0 * TILE, min(a0.shape[1], t1 * TILE)
            if out.shape[0] == 1:
                gemv_rows(a0, layer, x, out, r0, r1)
            else:      # x may be the first columns of a wider buffer: a few rows, copied at no cost
                gemm_rows(a0, layer, np.ascontiguousarray(x), out, r0, r1)
        return float_rows

    def per_row(a0, a1, a2, a3, layer, x, xs, out, t0, t1):
        if out.shape[0] == 1:
            matvec(a0, a1, a2, a3, layer, x[0], xs[0], out[0], t0, t1)
            return
        for t in range(t0, t1):
            for j in range(out.shape[0]):
                matvec(a0, a1, a2, a3, layer, x[j], xs[j], out[j], t, t + 1)
    return per_row
