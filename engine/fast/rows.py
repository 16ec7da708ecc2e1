"""512-bit kernels for a few token rows (2..8) against one pass over a lanes-layout matrix.

A batched generation (``session.branch``, ``forward.forward_rows``) multiplies each weight matrix
by one new token of each of N sequences. The prompt path's ``gemm`` serves 4 tokens per widening
of the weights with 256-bit vectors, and fewer than 4 through the one-token kernel once each, so
N = 2, 3 paid N widenings and N = 8 two. Here each block of weights is widened (nibbles to bytes,
the 5th bits or'ed in, q8_0 made unsigned) once into registers and multiplied with every row's
int8 activations:

* One 512-bit vector holds the same run of two groups of 8 rows (``load_bytes_pair``: 16 rows,
  one per int32 lane), so one ``vpdpbusd`` is 64 multiply-adds and one broadcast of 4 bytes of x
  serves 16 rows. The two groups are half the call's range apart, not neighbours: two streams
  4-16 KiB apart read memory at half the speed of one here (17 against 34 GB/s), two streams
  64 KiB or more apart at full speed (31-35 GB/s). A block's 32 values of the 16 rows are 8 such vectors (the low nibbles of runs
  0-3, then the high ones, which hold values 16-31: so run k always meets x bytes 4k..4k+3, for
  the nibble types and q8_0 alike), 8 of the 32 zmm registers.
* Per row and block one int32 accumulator (a single chain of 8 ``vpdpbusd``), converted once and
  scaled in float with the block's per-row scales; a float accumulator per row for the whole row
  of blocks. With 8 rows that is about 20 live vectors: no spills.
* The rows are a run-time count, but all 8 rows' code is written out with ``if n > j`` guards on
  loop-invariant conditions (cheap, perfectly predicted branches) rather than a kernel per count:
  one compiled kernel per weight type, as for ``gemm``.
* The offset term of the types without minimums (q4_0's -8 sum(x), q5_0's -16, q8_0's -128 of
  the unsigned weights) is a table per row and block made once per call and read by a broadcast;
  the per-row scalars are read with ``load_splat`` (no numba index checks in the hot loop).

The integer sums are exactly those of ``gemm`` and ``matvec``; only the order of the float
additions differs (within rounding). Used where ``simd.ROWS512`` (AVX-512 F, BW and VNNI, and the
kernel choice not lowered to avx2 by NEOX_WRITER_KERNELS), from ``gemm.matmat``.
"""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from engine.fast.matvec import Q2, Q2_SCALE_BYTES, Q3, Q3_BITS_BYTES, Q6, QK, half_offsets, kind_of, x_bytes
from engine.fast.repack import K_SCALE_BYTES, K_SUPER, LANES, Q6_BITS_BYTES, TILE
from engine.fast.simd import (broadcast4_wide, dot4, fifth_bits, high_nibbles, iq4_levels_unsigned, load_bytes_pair,
                              load_floats_pair,
                              load_splat, low_nibbles, move_bit, mul, mul_add, offset_bytes, or_bytes, prefetch,
                              sixth_bits, store_floats_pair, to_floats, zero_floats16, zero_ints16)

MAX_ROWS = 8          # rows per pass (float accumulators + 8 widened vectors fit 32 registers)


@njit(nogil=True, fastmath=True, inline="always")
def _row_dot(w, xb, o):
    """One row's int32 sums of a block: run k of the widened weights times x bytes o+4k..o+4k+3."""
    w0, w1, w2, w3, w4, w5, w6, w7 = w
    dot = dot4(zero_ints16(), w0, broadcast4_wide(xb, o))
    dot = dot4(dot, w1, broadcast4_wide(xb, o + 4))
    dot = dot4(dot, w2, broadcast4_wide(xb, o + 8))
    dot = dot4(dot, w3, broadcast4_wide(xb, o + 12))
    dot = dot4(dot, w4, broadcast4_wide(xb, o + 16))
    dot = dot4(dot, w5, broadcast4_wide(xb, o + 20))
    dot = dot4(dot, w6, broadcast4_wide(xb, o + 24))
    return dot4(dot, w7, broadcast4_wide(xb, o + 28))


@njit(nogil=True, fastmath=True, inline="always")
def _row_block(acc, w, xb, xrow, b, nb, scales, mins, table, t, has_min):
    """acc + block b of one row: d dx sum(q xq) + m dx sum(xq) (has_min), else d (dx sum(q xq) + table[t])
    where table[t] is the type's offset times dx sum(xq)."""
    dot = to_floats(_row_dot(w, xb, b * QK))
    if has_min:
        acc = mul_add(mins, load_splat(xrow, nb + b), acc)
        return mul_add(scales, mul(dot, load_splat(xrow, b)), acc)
    return mul_add(scales, mul_add(dot, load_splat(xrow, b), load_splat(table, t)), acc)


@njit(nogil=True, fastmath=True, inline="always")
def _offset_table(xq, r0, n, nb, offset, table):
    """table[j * nb + b] = offset * dx sum(xq) of row r0 + j, block b (``matvec._quantize``'s sums)."""
    for j in range(n):
        x = xq[r0 + j]
        for b in range(nb):
            table[j * nb + b] = offset * x[nb + b]


@njit(nogil=True, fastmath=True, inline="always")
def _widen_nibbles(q, h, ia, ib, ha, hb, has_qh):
    """The block of two groups whose quant bytes start at q[ia] and q[ib] (5th bits at h[ha], h[hb]) as
    8 vectors of bytes: the low nibbles of runs 0-3 (values 4k..), then the high ones (16 + 4k..)."""
    w0 = load_bytes_pair(q, ia, ib)
    w1 = load_bytes_pair(q, ia + 32, ib + 32)
    w2 = load_bytes_pair(q, ia + 64, ib + 64)
    w3 = load_bytes_pair(q, ia + 96, ib + 96)
    if has_qh:
        bits = load_bytes_pair(h, ha, hb)
        return (or_bytes(low_nibbles(w0), fifth_bits(bits, 0, 0)), or_bytes(low_nibbles(w1), fifth_bits(bits, 1, 0)),
                or_bytes(low_nibbles(w2), fifth_bits(bits, 2, 0)), or_bytes(low_nibbles(w3), fifth_bits(bits, 3, 0)),
                or_bytes(high_nibbles(w0), fifth_bits(bits, 0, 1)),
                or_bytes(high_nibbles(w1), fifth_bits(bits, 1, 1)),
                or_bytes(high_nibbles(w2), fifth_bits(bits, 2, 1)),
                or_bytes(high_nibbles(w3), fifth_bits(bits, 3, 1)))
    return (low_nibbles(w0), low_nibbles(w1), low_nibbles(w2), low_nibbles(w3),
            high_nibbles(w0), high_nibbles(w1), high_nibbles(w2), high_nibbles(w3))


@njit(nogil=True, fastmath=True, inline="always")
def _widen_q8(q, ia, ib):
    """A q8_0 block of two groups (8 runs of 4 bytes per row) made unsigned: w + 128 (``matvec.Q8_UNSIGNED``)."""
    return (offset_bytes(load_bytes_pair(q, ia, ib)), offset_bytes(load_bytes_pair(q, ia + 32, ib + 32)),
            offset_bytes(load_bytes_pair(q, ia + 64, ib + 64)), offset_bytes(load_bytes_pair(q, ia + 96, ib + 96)),
            offset_bytes(load_bytes_pair(q, ia + 128, ib + 128)),
            offset_bytes(load_bytes_pair(q, ia + 160, ib + 160)),
            offset_bytes(load_bytes_pair(q, ia + 192, ib + 192)),
            offset_bytes(load_bytes_pair(q, ia + 224, ib + 224)))


@njit(nogil=True, fastmath=True, inline="always")
def _rows_pass(qs, d, m, qh, layer, xq, r0, r1, out, t0, t1, offset, has_min, has_qh, is_q8, is_k, is_iq4, is_xs):
    """Rows r0..r1-1 (at most MAX_ROWS) of out[r] = W[layer] @ x_r over tiles t0..t1-1, two groups at a time:
    group g of the range's first half with group g + half of its second."""
    nb = qs.shape[2]
    nsb = m.shape[2]                           # super-blocks per row (K-quants: ``matvec.block_scales``)
    n = r1 - r0
    block = qs.shape[3]                        # quant bytes per block and group: 128, or 256 for q8_0
    q = qs[layer].ravel()
    dd = d[layer].ravel()
    mm = m[layer].ravel() if has_min or is_xs else dd
    h = qh[layer].ravel() if has_qh else q
    table = np.empty(MAX_ROWS * nb, np.float32)
    if not has_min:
        _offset_table(xq, r0, n, nb, offset, table)
    last = r1 - 1                              # rows past n read the last row's x; their work is skipped
    x0, x1, x2, x3 = xq[r0], xq[min(r0 + 1, last)], xq[min(r0 + 2, last)], xq[min(r0 + 3, last)]
    x4, x5, x6, x7 = xq[min(r0 + 4, last)], xq[min(r0 + 5, last)], xq[min(r0 + 6, last)], xq[min(r0 + 7, last)]
    b0, b1, b2, b3 = x_bytes(x0, nb), x_bytes(x1, nb), x_bytes(x2, nb), x_bytes(x3, nb)
    b4, b5, b6, b7 = x_bytes(x4, nb), x_bytes(x5, nb), x_bytes(x6, nb), x_bytes(x7, nb)
    g0, g1 = t0 * (TILE // LANES), min(t1 * (TILE // LANES), qs.shape[1])     # whole tiles: an even count
    half = (g1 - g0) // 2
    ahead = nb * block                         # prefetch distance: the next group of each stream
    for ga in range(g0, g0 + half):
        gb = ga + half
        a0, a1, a2, a3 = zero_floats16(), zero_floats16(), zero_floats16(), zero_floats16()
        a4, a5, a6, a7 = zero_floats16(), zero_floats16(), zero_floats16(), zero_floats16()
        qa, qb = ga * nb * block, gb * nb * block
        sa, sb = ga * nb * LANES, gb * nb * LANES
        for b in range(nb):
            ia, ib = qa + b * block, qb + b * block
            # the same block of the next group of each stream (past the end: a hint, it never faults)
            prefetch(q, ia + ahead)
            prefetch(q, ib + ahead)
            prefetch(q, ia + ahead + 64)
            prefetch(q, ib + ahead + 64)
            if is_q8:
                prefetch(q, ia + ahead + 128)
                prefetch(q, ib + ahead + 128)
                prefetch(q, ia + ahead + 192)
                prefetch(q, ib + ahead + 192)
                w = _widen_q8(q, ia, ib)
            elif is_iq4:
                w = _widen_iq4(q, ia, ib)
            else:
                w = _widen_nibbles(q, h, ia, ib, (ga * nb + b) * 32, (gb * nb + b) * 32, has_qh)
            if is_k:
                ka, kb = (ga * nb + b) * K_SCALE_BYTES, (gb * nb + b) * K_SCALE_BYTES
                za, zb = (ga * nsb + b // K_SUPER) * 16, (gb * nsb + b // K_SUPER) * 16
                scales = mul(load_floats_pair(dd, ka, kb), load_floats_pair(mm, za, zb))
                mins = mul(load_floats_pair(dd, ka + 8, kb + 8), load_floats_pair(mm, za + 8, zb + 8))
            elif is_xs:          # iq4_xs: int8 block scales times the super-block's d
                za, zb = (ga * nsb + b // K_SUPER) * LANES, (gb * nsb + b // K_SUPER) * LANES
                scales = mul(load_floats_pair(dd, sa + b * LANES, sb + b * LANES), load_floats_pair(mm, za, zb))
                mins = scales
            else:
                scales = load_floats_pair(dd, sa + b * LANES, sb + b * LANES)
                mins = load_floats_pair(mm, sa + b * LANES, sb + b * LANES) if has_min else scales
            a0 = _row_block(a0, w, b0, x0, b, nb, scales, mins, table, b, has_min)
            if n > 1:
                a1 = _row_block(a1, w, b1, x1, b, nb, scales, mins, table, nb + b, has_min)
            if n > 2:
                a2 = _row_block(a2, w, b2, x2, b, nb, scales, mins, table, 2 * nb + b, has_min)
            if n > 3:
                a3 = _row_block(a3, w, b3, x3, b, nb, scales, mins, table, 3 * nb + b, has_min)
            if n > 4:
                a4 = _row_block(a4, w, b4, x4, b, nb, scales, mins, table, 4 * nb + b, has_min)
            if n > 5:
                a5 = _row_block(a5, w, b5, x5, b, nb, scales, mins, table, 5 * nb + b, has_min)
            if n > 6:
                a6 = _row_block(a6, w, b6, x6, b, nb, scales, mins, table, 6 * nb + b, has_min)
            if n > 7:
                a7 = _row_block(a7, w, b7, x7, b, nb, scales, mins, table, 7 * nb + b, has_min)
        _store_rows(out, r0, n, ga * LANES, gb * LANES, a0, a1, a2, a3, a4, a5, a6, a7)


@njit(nogil=True, fastmath=True, inline="always")
def _row_block_halves(acc, w, xb, xrow, b, s, table, t, kind):
    """acc + block b of one row of q6_K, q3_K or q2_K: two int32 sums (values 0-15, 16-31), each with its
    half's scale and term (``matvec.half_offsets``: table[2t], table[2t + 1]; ``matvec.half_block``)."""
    w0, w1, w2, w3, w4, w5, w6, w7 = w
    s_lo, s_hi, n_lo, n_hi = s
    o = b * QK
    lo = dot4(zero_ints16(), w0, broadcast4_wide(xb, o))
    lo = dot4(lo, w1, broadcast4_wide(xb, o + 4))
    lo = dot4(lo, w2, broadcast4_wide(xb, o + 8))
    lo = dot4(lo, w3, broadcast4_wide(xb, o + 12))
    hi = dot4(zero_ints16(), w4, broadcast4_wide(xb, o + 16))
    hi = dot4(hi, w5, broadcast4_wide(xb, o + 20))
    hi = dot4(hi, w6, broadcast4_wide(xb, o + 24))
    hi = dot4(hi, w7, broadcast4_wide(xb, o + 28))
    dx = load_splat(xrow, b)
    if kind == Q2:
        acc = mul_add(s_lo, mul(to_floats(lo), dx), acc)
        acc = mul_add(n_lo, load_splat(table, 2 * t), acc)
        acc = mul_add(s_hi, mul(to_floats(hi), dx), acc)
        return mul_add(n_hi, load_splat(table, 2 * t + 1), acc)
    acc = mul_add(s_lo, mul_add(to_floats(lo), dx, load_splat(table, 2 * t)), acc)
    return mul_add(s_hi, mul_add(to_floats(hi), dx, load_splat(table, 2 * t + 1)), acc)


@njit(nogil=True, fastmath=True, inline="always")
def _widen_halves(q, h, a, bb, kind):
    """Block a of one group and block bb of the other (their indices in the layer's blocks) as 8 vectors of
    bytes (as ``_widen_nibbles``): q6_K with its high 2 bits in bits 4-5, q3_K and q2_K as 16 u."""
    if kind == Q6:
        ia, ib = a * 128, bb * 128
        w0, w1 = load_bytes_pair(q, ia, ib), load_bytes_pair(q, ia + 32, ib + 32)
        w2, w3 = load_bytes_pair(q, ia + 64, ib + 64), load_bytes_pair(q, ia + 96, ib + 96)
        ha, hb = a * Q6_BITS_BYTES, bb * Q6_BITS_BYTES
        lo, hi = load_bytes_pair(h, ha, hb), load_bytes_pair(h, ha + 32, hb + 32)
        return (or_bytes(low_nibbles(w0), sixth_bits(lo, 0)), or_bytes(low_nibbles(w1), sixth_bits(lo, 1)),
                or_bytes(low_nibbles(w2), sixth_bits(lo, 2)), or_bytes(low_nibbles(w3), sixth_bits(lo, 3)),
                or_bytes(high_nibbles(w0), sixth_bits(hi, 0)), or_bytes(high_nibbles(w1), sixth_bits(hi, 1)),
                or_bytes(high_nibbles(w2), sixth_bits(hi, 2)), or_bytes(high_nibbles(w3), sixth_bits(hi, 3)))
    ia, ib = a * Q6_BITS_BYTES, bb * Q6_BITS_BYTES
    lo, hi = load_bytes_pair(q, ia, ib), load_bytes_pair(q, ia + 32, ib + 32)
    if kind == Q3:
        t = load_bytes_pair(h, a * Q3_BITS_BYTES, bb * Q3_BITS_BYTES)
        return (or_bytes(sixth_bits(lo, 0), move_bit(t, 0, 6)), or_bytes(sixth_bits(lo, 1), move_bit(t, 1, 6)),
                or_bytes(sixth_bits(lo, 2), move_bit(t, 2, 6)), or_bytes(sixth_bits(lo, 3), move_bit(t, 3, 6)),
                or_bytes(sixth_bits(hi, 0), move_bit(t, 4, 6)), or_bytes(sixth_bits(hi, 1), move_bit(t, 5, 6)),
                or_bytes(sixth_bits(hi, 2), move_bit(t, 6, 6)), or_bytes(sixth_bits(hi, 3), move_bit(t, 7, 6)))
    return (sixth_bits(lo, 0), sixth_bits(lo, 1), sixth_bits(lo, 2), sixth_bits(lo, 3),
            sixth_bits(hi, 0), sixth_bits(hi, 1), sixth_bits(hi, 2), sixth_bits(hi, 3))


@njit(nogil=True, fastmath=True, inline="always")
def _half_scales_pair(dd, mm, a, bb, sa, sb, kind):
    """``matvec.half_scales`` of block a of one group and block bb of the other (sa, sb: their super-blocks)."""
    if kind == Q2:
        ka, kb = a * Q2_SCALE_BYTES, bb * Q2_SCALE_BYTES
        sup = load_floats_pair(mm, sa * 16, sb * 16)
        dmin = load_floats_pair(mm, sa * 16 + 8, sb * 16 + 8)
        return (mul(load_floats_pair(dd, ka, kb), sup), mul(load_floats_pair(dd, ka + 8, kb + 8), sup),
                mul(load_floats_pair(dd, ka + 16, kb + 16), dmin), mul(load_floats_pair(dd, ka + 24, kb + 24), dmin))
    ka, kb = a * 16, bb * 16
    sup = load_floats_pair(mm, sa * LANES, sb * LANES)
    s_lo = mul(load_floats_pair(dd, ka, kb), sup)
    s_hi = mul(load_floats_pair(dd, ka + 8, kb + 8), sup)
    return s_lo, s_hi, s_lo, s_hi


@njit(nogil=True, fastmath=True, inline="always")
def _rows_halves(qs, d, m, qh, layer, xq, r0, r1, out, t0, t1, kind):
    """q6_K, q3_K, q2_K: rows r0..r1-1 over tiles t0..t1-1, two groups at a time (as ``_rows_pass``)."""
    nb = qs.shape[2]
    nsb = m.shape[2]
    n = r1 - r0
    block = qs.shape[3]
    q, dd, mm = qs[layer].ravel(), d[layer].ravel(), m[layer].ravel()
    h = qh[layer].ravel() if kind != Q2 else q
    table = np.empty(2 * MAX_ROWS * nb, np.float32)
    for j in range(n):
        half_offsets(xq[r0 + j], nb, table, 2 * j * nb, kind)
    last = r1 - 1
    x0, x1, x2, x3 = xq[r0], xq[min(r0 + 1, last)], xq[min(r0 + 2, last)], xq[min(r0 + 3, last)]
    x4, x5, x6, x7 = xq[min(r0 + 4, last)], xq[min(r0 + 5, last)], xq[min(r0 + 6, last)], xq[min(r0 + 7, last)]
    b0, b1, b2, b3 = x_bytes(x0, nb), x_bytes(x1, nb), x_bytes(x2, nb), x_bytes(x3, nb)
    b4, b5, b6, b7 = x_bytes(x4, nb), x_bytes(x5, nb), x_bytes(x6, nb), x_bytes(x7, nb)
    g0, g1 = t0 * (TILE // LANES), min(t1 * (TILE // LANES), qs.shape[1])
    half = (g1 - g0) // 2
    ahead = nb * block
    for ga in range(g0, g0 + half):
        gb = ga + half
        a0, a1, a2, a3 = zero_floats16(), zero_floats16(), zero_floats16(), zero_floats16()
        a4, a5, a6, a7 = zero_floats16(), zero_floats16(), zero_floats16(), zero_floats16()
        for b in range(nb):
            ba, bb = ga * nb + b, gb * nb + b
            ia, ib = ba * block, bb * block
            prefetch(q, ia + ahead)
            prefetch(q, ib + ahead)
            if kind == Q6:
                prefetch(q, ia + ahead + 64)
                prefetch(q, ib + ahead + 64)
                prefetch(h, (ia + ahead) // 2)
                prefetch(h, (ib + ahead) // 2)
            elif kind == Q3:
                prefetch(h, (ia + ahead) // 2)
                prefetch(h, (ib + ahead) // 2)
            w = _widen_halves(q, h, ba, bb, kind)
            s = _half_scales_pair(dd, mm, ba, bb, ga * nsb + b // K_SUPER, gb * nsb + b // K_SUPER, kind)
            a0 = _row_block_halves(a0, w, b0, x0, b, s, table, b, kind)
            if n > 1:
                a1 = _row_block_halves(a1, w, b1, x1, b, s, table, nb + b, kind)
            if n > 2:
                a2 = _row_block_halves(a2, w, b2, x2, b, s, table, 2 * nb + b, kind)
            if n > 3:
                a3 = _row_block_halves(a3, w, b3, x3, b, s, table, 3 * nb + b, kind)
            if n > 4:
                a4 = _row_block_halves(a4, w, b4, x4, b, s, table, 4 * nb + b, kind)
            if n > 5:
                a5 = _row_block_halves(a5, w, b5, x5, b, s, table, 5 * nb + b, kind)
            if n > 6:
                a6 = _row_block_halves(a6, w, b6, x6, b, s, table, 6 * nb + b, kind)
            if n > 7:
                a7 = _row_block_halves(a7, w, b7, x7, b, s, table, 7 * nb + b, kind)
        _store_rows(out, r0, n, ga * LANES, gb * LANES, a0, a1, a2, a3, a4, a5, a6, a7)


@njit(nogil=True, fastmath=True, cache=True)
def _rows_q6(qs, d, m, qh, layer, xq, r0, r1, out, t0, t1):
    _rows_halves(qs, d, m, qh, layer, xq, r0, r1, out, t0, t1, Q6)


@njit(nogil=True, fastmath=True, cache=True)
def _rows_q3(qs, d, m, qh, layer, xq, r0, r1, out, t0, t1):
    _rows_halves(qs, d, m, qh, layer, xq, r0, r1, out, t0, t1, Q3)


@njit(nogil=True, fastmath=True, cache=True)
def _rows_q2(qs, d, m, qh, layer, xq, r0, r1, out, t0, t1):
    _rows_halves(qs, d, m, qh, layer, xq, r0, r1, out, t0, t1, Q2)


@njit(nogil=True, fastmath=True, inline="always")
def _store_rows(out, r0, n, at, bt, a0, a1, a2, a3, a4, a5, a6, a7):
    """The n rows' accumulators of one pair of groups into out[r0 ..]."""
    store_floats_pair(out[r0], at, bt, a0)
    if n > 1:
        store_floats_pair(out[r0 + 1], at, bt, a1)
    if n > 2:
        store_floats_pair(out[r0 + 2], at, bt, a2)
    if n > 3:
        store_floats_pair(out[r0 + 3], at, bt, a3)
    if n > 4:
        store_floats_pair(out[r0 + 4], at, bt, a4)
    if n > 5:
        store_floats_pair(out[r0 + 5], at, bt, a5)
    if n > 6:
        store_floats_pair(out[r0 + 6], at, bt, a6)
    if n > 7:
        store_floats_pair(out[r0 + 7], at, bt, a7)


@njit(nogil=True, fastmath=True, cache=True)
def _rows_nibbles(qs, d, m, qh, layer, xq, r0, r1, out, t0, t1):
    """q4_0/q4_1/q5_0/q5_1: each variant inlined with constant flags (as ``gemm._gemm_nibbles``)."""
    if qh.size > 1:
        if m.size > 1:
            _rows_pass(qs, d, m, qh, layer, xq, r0, r1, out, t0, t1, np.float32(0.0), True, True, False, False, False, False)
        else:
            _rows_pass(qs, d, m, qh, layer, xq, r0, r1, out, t0, t1, np.float32(-16.0), False, True, False, False, False, False)
    elif m.size > 1:
        _rows_pass(qs, d, m, qh, layer, xq, r0, r1, out, t0, t1, np.float32(0.0), True, False, False, False, False, False)
    else:
        _rows_pass(qs, d, m, qh, layer, xq, r0, r1, out, t0, t1, np.float32(-8.0), False, False, False, False, False, False)


@njit(nogil=True, fastmath=True, cache=True)
def _rows_k(qs, d, m, qh, layer, xq, r0, r1, out, t0, t1):
    """q4_K/q5_K: the scales made from the super-blocks' (``matvec.block_scales``)."""
    if qh.size > 1:
        _rows_pass(qs, d, m, qh, layer, xq, r0, r1, out, t0, t1, np.float32(0.0), True, True, False, True, False, False)
    else:
        _rows_pass(qs, d, m, qh, layer, xq, r0, r1, out, t0, t1, np.float32(0.0), True, False, False, True, False, False)


@njit(nogil=True, fastmath=True, inline="always")
def _widen_iq4(q, ia, ib):
    """An iq4 block of two groups: its indices looked up as unsigned levels (+ 128, ``matvec.iq4_lookup``),
    the low nibbles of runs 0-3, then the high ones."""
    w0, w1 = load_bytes_pair(q, ia, ib), load_bytes_pair(q, ia + 32, ib + 32)
    w2, w3 = load_bytes_pair(q, ia + 64, ib + 64), load_bytes_pair(q, ia + 96, ib + 96)
    return (iq4_levels_unsigned(low_nibbles(w0)), iq4_levels_unsigned(low_nibbles(w1)),
            iq4_levels_unsigned(low_nibbles(w2)), iq4_levels_unsigned(low_nibbles(w3)),
            iq4_levels_unsigned(high_nibbles(w0)), iq4_levels_unsigned(high_nibbles(w1)),
            iq4_levels_unsigned(high_nibbles(w2)), iq4_levels_unsigned(high_nibbles(w3)))


@njit(nogil=True, fastmath=True, cache=True)
def _rows_iq4(qs, d, m, qh, layer, xq, r0, r1, out, t0, t1):
    """iq4_nl / iq4_xs: the levels less 128 (the offset table, as q8_0's), fp16 or int8 x super-block scales."""
    if m.size > 1:
        _rows_pass(qs, d, m, qh, layer, xq, r0, r1, out, t0, t1, np.float32(-128.0), False, False, False, False,
                   True, True)
    else:
        _rows_pass(qs, d, m, qh, layer, xq, r0, r1, out, t0, t1, np.float32(-128.0), False, False, False, False,
                   True, False)


@njit(nogil=True, fastmath=True, cache=True)
def _rows_q8_0(qs, d, layer, xq, r0, r1, out, t0, t1):
    _rows_pass(qs, d, d, d, layer, xq, r0, r1, out, t0, t1, np.float32(-128.0), False, False, True, False, False, False)


def rows_product(a0, a1, a2, a3, layer, xq, out, t0, t1):
    """Rows of tiles t0..t1-1 of out[r] = W[layer] @ x_r for every row r of out (x_r quantized in xq[r]
    by ``matvec.prepare``), MAX_ROWS rows per pass over the weights; a lanes-layout matrix."""


@overload(rows_product)
def _rows_product(a0, a1, a2, a3, layer, xq, out, t0, t1):
    if a0.ndim != 4:
        return None
    q8 = a0.dtype == types.int8
    iq4 = a3.dtype == types.int8
    kind = 0 if iq4 else kind_of(a1, a2)           # q6_K, q3_K, q2_K (matvec.half_offsets)
    k = a1.dtype == types.uint8 and not kind

    def product(a0, a1, a2, a3, layer, xq, out, t0, t1):
        n = out.shape[0]
        for r0 in range(0, n, MAX_ROWS):
            r1 = min(r0 + MAX_ROWS, n)
            if q8:
                _rows_q8_0(a0, a1, layer, xq, r0, r1, out, t0, t1)
            elif iq4:
                _rows_iq4(a0, a1, a2, a3, layer, xq, r0, r1, out, t0, t1)
            elif k:
                _rows_k(a0, a1, a2, a3, layer, xq, r0, r1, out, t0, t1)
            elif kind == Q6:
                _rows_q6(a0, a1, a2, a3, layer, xq, r0, r1, out, t0, t1)
            elif kind == Q3:
                _rows_q3(a0, a1, a2, a3, layer, xq, r0, r1, out, t0, t1)
            elif kind == Q2:
                _rows_q2(a0, a1, a2, a3, layer, xq, r0, r1, out, t0, t1)
            else:
                _rows_nibbles(a0, a1, a2, a3, layer, xq, r0, r1, out, t0, t1)
    return product


@njit(nogil=True, cache=True)
def rows_lanes(a0, a1, a2, a3, layer, xq, out, t0, t1):
    """The compiled entry point of ``rows_product`` (tests and benchmarks call it directly)."""
    rows_product(a0, a1, a2, a3, layer, xq, out, t0, t1)
