"""Fused dequantize-and-dot kernels: a quantized weight matrix (any layer) times one vector.

f16/f32 matrices take ``floatgemm.gemv_rows`` instead (through ``gemm.matmat``), summed as the
batched rows are.

``matvec(a0, a1, a2, a3, layer, x, xsum, out, t0, t1)`` computes the rows of tiles t0..t1-1
(groups of ``TILE`` rows) of ``out = W[layer] @ x`` over the four arrays of a ``PackedMatrix``
(see ``repack.py``), once the caller has made x ready for that matrix with
``prepare(w, x, xsum)`` (per-block sums of x into ``xsum``, and a fold of x for the nibble
types, see ``_fold``). Nothing is dequantized to memory: each quant is widened in a register,
multiplied and accumulated. The kernels are serial; the forward pass splits the tiles of a
matrix between threads itself (``forward.py``), so a token passes few parallel regions.

``matvec`` picks the kernel at compile time from the array types (an ``overload``), not from a
function passed as an argument: numba cannot cache a function that takes another dispatcher,
which made every process recompile the whole forward pass.

How the tiled kernels are shaped, and why (numba 0.68 / LLVM on x86):

* The innermost loop runs over the TILE rows of a tile (contiguous bytes), so LLVM vectorises it
  with one row per lane and no horizontal sums; the 16 quant bytes of a block are an unrolled loop
  of constant length around it, with x values broadcast.
* Only the high nibble is extracted, in float arithmetic (hi = floor(v / 16)): numba types
  integer ``&``/``>>`` on bytes as int64, which would halve the vector width. The low nibble is
  never formed: x is folded so the whole byte v can stand in for it (``_fold``), which took a
  q4_0 kernel from 11 to 17 G weights per CPU-second on this machine.
* The integer offsets and minimums are taken out of the inner loop:
  sum((q - 8) d x) = d (sum(q x) - 8 sum(x)) and sum((q d + m) x) = d sum(q x) + m sum(x),
  with sum(x) per block computed once per vector (``xsum``).
* The 5th bits of q5_0/q5_1 (a 32-bit field per block and row) are looked up, a byte at a time,
  in tables of 256 partial sums that ``_fold`` makes per vector: 4 loads per block and row instead
  of 32 bit extractions, which numba computes in int64 lanes (5.6 -> 9-11 G weights/CPU-s).
* fp16 scales are widened by bit arithmetic (numba has no float16 type).

On a CPU with AVX2 the 32-value types use integer kernels instead (``_lanes_*``, the "lanes"
layout of ``repack.py``), as ggml does: x is quantized to 8 bits per block of 32
(``_quantize``, ggml's q8_0: a scale and 32 int8), and the block dot products are integer
multiply-adds of 4 weight bytes by 4 activation bytes per int32 lane (``simd.dot4``: one
``vpdpbusd`` with VNNI), 8 rows at a time, converted to float once per block. They are written
with the vector values of ``simd.py``, since numba would widen byte arithmetic to int64.
Offsets and minimums come out of the sums as above: d dx (sum(q xq) - 8 sum(xq)).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from engine.fast.repack import (K_SCALE_BYTES, K_SUPER, LANES, Q6_BITS_BYTES,   # global ints: compile-time
                                TILE)                                           # constants in the kernels
from engine.fast.simd import (INT8_DOT, abs_bytes, broadcast4, dot4, fifth_bits, half_to_float, high_nibbles,
                              iq4_levels, iq4_levels_unsigned, load_bytes, load_floats, low_nibbles, move_bit, mul, mul_add,
                              offset_bytes, or_bytes, prefetch, quantize_block, sign_bytes, sixth_bits, splat,
                              store_floats, to_floats, zero_floats, zero_ints)

QK = 32          # values per block of the 32-value types
HALF = 16        # quant bytes per block of the 4/5-bit 32-value types
QK16_HALF = 8    # quant bytes per block of q4_2 / q4_3 (16 values)
PREFETCH = 1024
# q8_0 weights are signed, and dot4 wants unsigned bytes. vpdpbusd adds the 4 products exactly, so
# with VNNI the weights are offset to w + 128 (one xor) and 128 sum(x) taken off per block; AVX2's
# vpmaddubsw would saturate (255 * 127 * 2 > 32767), so there |w| times x with w's signs is used.
Q8_UNSIGNED = INT8_DOT == "vnni"



def as_float(v):
    """A scale as float32, whether stored as fp16 bits or as float32."""


@overload(as_float, inline="always")
def _as_float(v):
    if isinstance(v, types.Float):
        return lambda v: np.float32(v)
    return lambda v: half_to_float(v)


QH_TABLE = 4 * 256   # floats per block of a 5-bit type's table: 4 bytes of the qh field x 256 values


def xsum_floats(cols: int, qh_tables: bool) -> int:
    """Length of the buffer ``prepare`` needs for an input of ``cols`` values.

    Block sums (float kernels), or the quantized x of the integer kernels (a scale and a scaled
    sum per block, then the int8 values), plus the 5th-bit tables of the float q5 kernels.
    """
    return 2 * (cols // 16 + 1) + cols // 4 + 8 + (cols // QK * QH_TABLE if qh_tables else 0)


@njit(nogil=True, cache=True)     # no fastmath: its sums vectorised differently for a strided x
def _fold(x, half, xsum, bit_tables):
    """Prepare x for a nibble matrix, in place: block sums into xsum, then x[hi] -= 16 x[lo].

    A quant byte v holds lo = v - 16 hi and hi = floor(v / 16), so
    lo x[j] + hi x[j + half] = v x[j] + hi (x[j + half] - 16 x[j]): with the second half of each
    block folded like this, a kernel needs no lo at all (one operation fewer per byte, of six).

    With ``bit_tables`` (the 5-bit types) it first writes, after the nb block sums, a table per
    block and byte k of the 32-bit qh field: entry v = what the 5th bits set in v add,
    sum of 16 x[8k + i] over the bits i of v. A kernel then handles a block's 32 fifth bits
    with 4 table loads instead of 32 bit extractions (numba widens those to int64 lanes).
    """
    qk = 2 * half
    nb = x.size // qk
    for b in range(nb):
        xb = x[b * qk:(b + 1) * qk]
        if bit_tables:
            for k in range(4):
                tab = xsum[nb + (b * 4 + k) * 256:nb + (b * 4 + k + 1) * 256]
                tab[0] = 0.0
                for i in range(8):
                    step = 1 << i
                    add = np.float32(16.0) * xb[8 * k + i]
                    for v in range(step):
                        tab[step + v] = tab[v] + add
        s = np.float32(0.0)
        for j in range(qk):
            s += xb[j]
        xsum[b] = s
        for j in range(half):
            xb[j + half] -= np.float32(16.0) * xb[j]


@njit(nogil=True, fastmath=True, cache=True)
def _nibbles(qs, d, m, qh, layer, x, xsum, out, t0, t1):
    """q4_0, q4_1, q5_0, q5_1 (32-value blocks; x folded by ``_fold``): which one follows from the arrays present."""
    nb = qs.shape[2]
    has_min = m.size > 1
    has_qh = qh.size > 1
    offset = np.float32(-16.0) if has_qh else np.float32(-8.0)
    fifth = np.empty(TILE, np.float32)      # what the 5th bits add to each row of a block
    for t in range(t0, t1):
        acc = out[t * TILE:(t + 1) * TILE]
        acc[:] = 0.0
        for b in range(nb):
            qb = qs[layer, t, b]
            db = d[layer, t, b]
            xb = x[b * QK:(b + 1) * QK]
            xs = xsum[b]
            if has_qh:
                hb = qh[layer, t, b]
                tab = xsum[nb + b * QH_TABLE:nb + (b + 1) * QH_TABLE]     # see _fold
                for r in range(TILE):      # a loop of its own: mixed into the one below it stops vectorising
                    bits = hb[r]
                    fifth[r] = (tab[bits & 255] + tab[256 + ((bits >> 8) & 255)]
                                + tab[512 + ((bits >> 16) & 255)] + tab[768 + (bits >> 24)])
                for r in range(TILE):
                    s = fifth[r]
                    for j in range(HALF):
                        v = np.float32(qb[j, r])
                        hi = np.floor(v * np.float32(0.0625))
                        s += v * xb[j] + hi * xb[j + HALF]
                    if has_min:
                        acc[r] += as_float(db[r]) * s + as_float(m[layer, t, b, r]) * xs
                    else:
                        acc[r] += as_float(db[r]) * (s + offset * xs)
            else:
                for r in range(TILE):
                    s = np.float32(0.0)
                    for j in range(HALF):
                        v = np.float32(qb[j, r])
                        hi = np.floor(v * np.float32(0.0625))
                        s += v * xb[j] + hi * xb[j + HALF]
                    if has_min:
                        acc[r] += as_float(db[r]) * s + as_float(m[layer, t, b, r]) * xs
                    else:
                        acc[r] += as_float(db[r]) * (s + offset * xs)


@njit(nogil=True, fastmath=True, cache=True)
def _nibbles16(qs, d, m, qh, layer, x, xsum, out, t0, t1):
    """q4_2 and q4_3 (16-value blocks, stablelm-era files; x folded): q4_3 has a minimum, q4_2 an offset of 8."""
    nb = qs.shape[2]
    has_min = m.size > 1
    for t in range(t0, t1):
        acc = out[t * TILE:(t + 1) * TILE]
        acc[:] = 0.0
        for b in range(nb):
            qb = qs[layer, t, b]
            db = d[layer, t, b]
            xb = x[b * 2 * QK16_HALF:(b + 1) * 2 * QK16_HALF]
            xs = xsum[b]
            for r in range(TILE):
                s = np.float32(0.0)
                for j in range(QK16_HALF):
                    v = np.float32(qb[j, r])
                    hi = np.floor(v * np.float32(0.0625))
                    s += v * xb[j] + hi * xb[j + QK16_HALF]
                if has_min:
                    acc[r] += as_float(db[r]) * s + as_float(m[layer, t, b, r]) * xs
                else:
                    acc[r] += as_float(db[r]) * (s - np.float32(8.0) * xs)


@njit(nogil=True, fastmath=True, cache=True)
def _q8_0(qs, d, layer, x, out, t0, t1):
    """q8_0: int8 quants times one scale per 32-value block."""
    nb = qs.shape[2]
    for t in range(t0, t1):
        acc = out[t * TILE:(t + 1) * TILE]
        acc[:] = 0.0
        for b in range(nb):
            qb = qs[layer, t, b]
            db = d[layer, t, b]
            xb = x[b * QK:(b + 1) * QK]
            for r in range(TILE):
                s = np.float32(0.0)
                for j in range(QK):
                    s += np.float32(qb[j, r]) * xb[j]
                acc[r] += as_float(db[r]) * s


@njit(nogil=True, inline="always")
def x_bytes(xq, nb):
    """The int8 values of an x of nb blocks quantized by ``_quantize`` (the one place that knows where)."""
    return xq[2 * nb:2 * nb + nb * 8].view(np.int8)


@njit(nogil=True, cache=True)
def _quantize(x, xq):
    """x -> xq: per block of 32, the scale dx = max|x| / 127 and round(x / dx) as int8 (ggml's q8_0).

    xq (float32) holds [dx: nb][dx * sum of the block's int8: nb][the int8 values: nb * 8 floats].
    Each block is one ``simd.quantize_block`` (vector IR: 3x the speed of the scalar loops it replaced).
    """
    nb = x.size // QK
    if x.strides[0] != x.itemsize:      # a strided view (never in the engine's own calls)
        x = x.copy()
    for b in range(nb):
        quantize_block(x, xq, b, nb)


@njit(nogil=True, fastmath=True, inline="always")
def widen(q, bits, b, k, has_qh):
    """Run k of block b of a group (lanes layout): its low and high nibbles as bytes, with the
    5th bits of the q5 types (``bits``: the block's rearranged 5th-bit bytes) or'ed in."""
    w = load_bytes(q, b * 128 + k * 32)
    lo = low_nibbles(w)
    hi = high_nibbles(w)
    if has_qh:
        lo = or_bytes(lo, fifth_bits(bits, k, 0))
        hi = or_bytes(hi, fifth_bits(bits, k, 1))
    return lo, hi


# The K-quants q4_K and q5_K in the lanes layout (``repack.py``): the quants as q4_1 / q5_1 hold them,
# and in place of an fp16 scale and minimum per block and row, the super-block's 6-bit integer
# ones (d: uint8 [L, G, nb, K_SCALE_BYTES], the 8 rows' scales then their minimums) and per
# super-block of K_SUPER blocks its fp16 d and -dmin (m: uint16 [L, G, nb / K_SUPER, 16]): a
# block's scale is then d sc and its minimum -dmin m, made in 8 lanes from the two (exactly the
# file's factors). 4.625 bits a weight for q4_K's 4.5 in the file (the q4_1 stand-in took 5).


@njit(nogil=True, fastmath=True, inline="always")
def block_scales(dd, mm, b, has_min, is_k):
    """The 8 rows' scale and minimum of block b of one group: a type's own, or a K-quant's made up."""
    if is_k:
        s = (b // K_SUPER) * 16
        return (mul(load_floats(dd, b * K_SCALE_BYTES), load_floats(mm, s)),
                mul(load_floats(dd, b * K_SCALE_BYTES + 8), load_floats(mm, s + 8)))
    scales = load_floats(dd, b * LANES)
    return scales, (load_floats(mm, b * LANES) if has_min else scales)


@njit(nogil=True, fastmath=True, cache=True)
def _lanes_k(qs, d, m, qh, layer, xq, out, t0, t1):
    """q4_K and q5_K in the lanes layout (see ``block_scales``)."""
    if qh.size > 1:
        _nibble_groups(qs, d, m, qh, layer, xq, out, t0, t1, True, True, True)
    else:
        _nibble_groups(qs, d, m, qh, layer, xq, out, t0, t1, True, False, True)


# q6_K, q3_K and q2_K in the lanes layout: the K-quants whose sub-blocks are 16 values (two to a
# block of 32), each with an integer scale, times the super-block's d. The widened weights are
# unsigned bytes, and each half block's int32 sum is scaled and offset on its own:
#
# * q6_K (kind Q6): the low 4 bits of the quants as q4_1 holds its nibbles (qs), the high 2 bits
#   per block and group in 64 bytes (qh, ``repack._scatter_q6``: 32 for the low nibbles' values, 32
#   for the high ones, widened into bits 4-5 by ``simd.sixth_bits``), the int8 scale of each half
#   block as d: int8 [L, G, nb, 16] (the 8 rows' first halves, then the second halves), and the
#   super-block's fp16 d as m: uint16 [L, G, nb / K_SUPER, 8]. The quants are unsigned (0..63, the
#   file's q + 32), so each half's sum carries -32 dx sum(xq of the half): 6.5625 bits a weight.
# * q3_K (kind Q3): its 2 low bits in qs as q6_K's high bits are in qh (64 bytes a block and group),
#   its third bits in qh as the q5 5th bits are laid out (32 bytes), widened to 16 u (u = 0..7, bits
#   4-6; the file's q = u - 4), so each half carries -64 dx sum(xq); the 6-bit scales less 32 as
#   int8 d, and m float32 [L, G, nb / K_SUPER, 8] the super-block's d / 16 (exact): 3.625 bits.
# * q2_K (kind Q2): its 2-bit quants in qs as q3_K's, widened to 16 u (u = 0..3), qh a dummy; d
#   uint8 [L, G, nb, 32] the 4-bit scales of the 8 rows' first halves, second halves, then the 4-bit
#   mins likewise, and m float32 [L, G, nb / K_SUPER, 16] d / 16, then -dmin: each half adds
#   -dmin m dx sum(xq of the half): 3.25 bits a weight (the file's 2.625).
#
# ``half_offsets`` makes the per-half terms once per call: the offset times dx sum(xq of the half)
# (q6_K, q3_K), or dx sum(xq of the half) for q2_K's mins. The arrays' types tell the three apart
# (``kind_of``): q6_K's m is fp16 bits, q3_K's and q2_K's float32; q2_K's d unsigned.

Q6, Q3, Q2 = 6, 3, 2
Q3_BITS_BYTES = 4 * LANES      # q3_K: the third bits of a block and group (as the q5 5th bits)
Q2_SCALE_BYTES = 4 * LANES     # q2_K: per block and group, two halves' scales then their mins


def kind_of(a1, a2) -> int:
    """Q6, Q3 or Q2 from the numba types of a sixteens matrix's scale arrays (d, m); 0 for another."""
    if a2.dtype == types.float32 and a1.dtype in (types.int8, types.uint8):
        return Q3 if a1.dtype == types.int8 else Q2
    if a1.dtype == types.int8 and a2.dtype == types.uint16:
        return Q6
    return 0


@njit(nogil=True, fastmath=True, inline="always")
def half_offsets(xq, nb, table, at, kind):
    """table[at + 2b], table[at + 2b + 1] = the kind's offset times dx sum(xq) over values 0-15 and
    16-31 of block b: -32 (q6_K), -64 (q3_K: its widened quants are 16 u), 1 (q2_K's mins)."""
    offset = np.float32(-32.0) if kind == Q6 else np.float32(-64.0) if kind == Q3 else np.float32(1.0)
    xb = x_bytes(xq, nb)
    for b in range(nb):
        lo, hi = 0, 0
        for j in range(16):
            lo += np.int32(xb[b * QK + j])
            hi += np.int32(xb[b * QK + 16 + j])
        table[at + 2 * b] = offset * xq[b] * np.float32(lo)
        table[at + 2 * b + 1] = offset * xq[b] * np.float32(hi)


@njit(nogil=True, fastmath=True, inline="always")
def widen_halves(q, bits, b, k, kind):
    """Run k of block b of a group: the values of the first half (4k..) and of the second (16 + 4k..)
    as unsigned bytes, q6_K's 0..63, q3_K's and q2_K's 16 u."""
    if kind == Q6:
        w = load_bytes(q, b * 128 + k * 32)
        return (or_bytes(low_nibbles(w), sixth_bits(load_bytes(bits, b * Q6_BITS_BYTES), k)),
                or_bytes(high_nibbles(w), sixth_bits(load_bytes(bits, b * Q6_BITS_BYTES + 32), k)))
    lo = sixth_bits(load_bytes(q, b * Q6_BITS_BYTES), k)
    hi = sixth_bits(load_bytes(q, b * Q6_BITS_BYTES + 32), k)
    if kind == Q3:
        third = load_bytes(bits, b * Q3_BITS_BYTES)
        return or_bytes(lo, move_bit(third, k, 6)), or_bytes(hi, move_bit(third, 4 + k, 6))
    return lo, hi


@njit(nogil=True, fastmath=True, inline="always")
def half_scales(dd, mm, b, kind):
    """The 8 rows' scales of the two halves of block b, and (q2_K) their mins: d sc, -dmin m."""
    if kind == Q2:
        s = (b // K_SUPER) * 16
        sup, dmin = load_floats(mm, s), load_floats(mm, s + 8)
        return (mul(load_floats(dd, b * Q2_SCALE_BYTES), sup), mul(load_floats(dd, b * Q2_SCALE_BYTES + 8), sup),
                mul(load_floats(dd, b * Q2_SCALE_BYTES + 16), dmin),
                mul(load_floats(dd, b * Q2_SCALE_BYTES + 24), dmin))
    sup = load_floats(mm, (b // K_SUPER) * LANES)
    s_lo, s_hi = mul(load_floats(dd, b * 16), sup), mul(load_floats(dd, b * 16 + 8), sup)
    return s_lo, s_hi, s_lo, s_hi


@njit(nogil=True, fastmath=True, inline="always")
def half_block(acc, dot_lo, dot_hi, s, dx, t_lo, t_hi, kind):
    """acc + one block of one token: s_lo (dx dot_lo + t_lo) + s_hi (dx dot_hi + t_hi), or for q2_K
    s_lo dx dot_lo + n_lo t_lo + s_hi dx dot_hi + n_hi t_hi (s: ``half_scales``)."""
    s_lo, s_hi, n_lo, n_hi = s
    if kind == Q2:
        acc = mul_add(s_lo, mul(to_floats(dot_lo), splat(dx)), acc)
        acc = mul_add(n_lo, splat(t_lo), acc)
        acc = mul_add(s_hi, mul(to_floats(dot_hi), splat(dx)), acc)
        return mul_add(n_hi, splat(t_hi), acc)
    acc = mul_add(s_lo, mul_add(to_floats(dot_lo), splat(dx), splat(t_lo)), acc)
    return mul_add(s_hi, mul_add(to_floats(dot_hi), splat(dx), splat(t_hi)), acc)


@njit(nogil=True, fastmath=True, inline="always")
def half_groups(qs, d, m, qh, layer, xq, out, t0, t1, kind):
    """One token: q6_K, q3_K or q2_K groups of tiles t0..t1-1."""
    nb = qs.shape[2]
    block = qs.shape[3]
    dxs = xq[:nb]
    xb = x_bytes(xq, nb)
    offsets = np.empty(2 * nb, np.float32)
    half_offsets(xq, nb, offsets, 0, kind)
    for g in range(t0 * (TILE // LANES), min(t1 * (TILE // LANES), qs.shape[1])):
        q = qs[layer, g].ravel()
        dd = d[layer, g].ravel()
        mm = m[layer, g].ravel()
        hh = qh[layer, g].ravel() if kind != Q2 else q
        acc = zero_floats()
        for b in range(nb):
            prefetch(q, b * block + PREFETCH)
            if kind == Q6:
                prefetch(q, b * block + PREFETCH + 64)
                prefetch(hh, b * Q6_BITS_BYTES + PREFETCH // 2)
            elif kind == Q3:
                prefetch(hh, b * Q3_BITS_BYTES + PREFETCH // 2)
            lo_dot, hi_dot = zero_ints(), zero_ints()
            for k in range(4):
                lo, hi = widen_halves(q, hh, b, k, kind)
                lo_dot = dot4(lo_dot, lo, broadcast4(xb, b * QK + 4 * k))
                hi_dot = dot4(hi_dot, hi, broadcast4(xb, b * QK + 16 + 4 * k))
            acc = half_block(acc, lo_dot, hi_dot, half_scales(dd, mm, b, kind), dxs[b], offsets[2 * b],
                             offsets[2 * b + 1], kind)
        store_floats(out, g * LANES, acc)


@njit(nogil=True, fastmath=True, cache=True)
def _lanes_q6(qs, d, m, qh, layer, xq, out, t0, t1):
    """q6_K in the lanes layout (see ``half_offsets``)."""
    half_groups(qs, d, m, qh, layer, xq, out, t0, t1, Q6)


@njit(nogil=True, fastmath=True, cache=True)
def _lanes_q3(qs, d, m, qh, layer, xq, out, t0, t1):
    half_groups(qs, d, m, qh, layer, xq, out, t0, t1, Q3)


@njit(nogil=True, fastmath=True, cache=True)
def _lanes_q2(qs, d, m, qh, layer, xq, out, t0, t1):
    half_groups(qs, d, m, qh, layer, xq, out, t0, t1, Q2)


# iq4_nl and iq4_xs in the lanes layout: the 4-bit indices where q4_0 holds its nibbles (their
# value order is q4_0's), looked up in the 16 levels by one vpshufb a vector and
# multiplied as q8_0's bytes are (``iq4_lookup``: unsigned + 128 with VNNI). iq4_nl keeps its fp16 d per block
# (d as q4_0's); iq4_xs its 6-bit block scales, less 32, as int8 (d: int8 [L, G, nb, 8]) and the
# super-block's fp16 d (m: uint16 [L, G, nb / K_SUPER, 8]). The fourth array is an int8 dummy:
# the mark of the iq4 layouts (``matvec`` chooses kernels by the arrays' types).


@njit(nogil=True, fastmath=True, inline="always")
def iq4_lookup(w):
    """32 bytes of indices (run k of a block) -> the levels of their low and high nibbles (values
    4k.. and 16 + 4k..): + 128 as unsigned bytes with VNNI, signed otherwise."""
    if Q8_UNSIGNED:
        return iq4_levels_unsigned(low_nibbles(w)), iq4_levels_unsigned(high_nibbles(w))
    return iq4_levels(low_nibbles(w)), iq4_levels(high_nibbles(w))


@njit(nogil=True, fastmath=True, inline="always")
def iq4_dot(dot, lo, hi, xb, o):
    """dot + levels lo times x bytes o.., hi times o + 16.. (``iq4_lookup``'s; q8_0's sign trick on AVX2)."""
    if Q8_UNSIGNED:
        return dot4(dot4(dot, lo, broadcast4(xb, o)), hi, broadcast4(xb, o + 16))
    dot = dot4(dot, abs_bytes(lo), sign_bytes(broadcast4(xb, o), lo))
    return dot4(dot, abs_bytes(hi), sign_bytes(broadcast4(xb, o + 16), hi))


@njit(nogil=True, fastmath=True, inline="always")
def iq4_scales(dd, mm, b, is_xs):
    """The 8 rows' scales of block b: iq4_nl's fp16 d, or iq4_xs's int8 scale times the super-block's d."""
    if is_xs:
        return mul(load_floats(dd, b * LANES), load_floats(mm, (b // K_SUPER) * LANES))
    return load_floats(dd, b * LANES)


@njit(nogil=True, fastmath=True, inline="always")
def iq4_block(acc, dot, scales, dx, s):
    """acc + d dx (sum(level xq) [- 128 sum(xq) for the unsigned levels]); s = dx sum(xq)."""
    if Q8_UNSIGNED:
        return mul_add(scales, mul_add(to_floats(dot), splat(dx), splat(np.float32(-128.0) * s)), acc)
    return mul_add(scales, mul(to_floats(dot), splat(dx)), acc)


@njit(nogil=True, fastmath=True, inline="always")
def _iq4_groups(qs, d, m, layer, xq, out, t0, t1, is_xs):
    nb = qs.shape[2]
    dxs = xq[:nb]
    sums = xq[nb:2 * nb]
    xb = x_bytes(xq, nb)
    for g in range(t0 * (TILE // LANES), min(t1 * (TILE // LANES), qs.shape[1])):
        q = qs[layer, g].ravel()
        dd = d[layer, g].ravel()
        mm = m[layer, g].ravel() if is_xs else dd
        acc = zero_floats()
        for b in range(nb):
            prefetch(q, b * 128 + PREFETCH)
            prefetch(q, b * 128 + PREFETCH + 64)
            dot = zero_ints()
            for k in range(4):
                lo, hi = iq4_lookup(load_bytes(q, b * 128 + k * 32))
                dot = iq4_dot(dot, lo, hi, xb, b * QK + 4 * k)
            acc = iq4_block(acc, dot, iq4_scales(dd, mm, b, is_xs), dxs[b], sums[b])
        store_floats(out, g * LANES, acc)


@njit(nogil=True, fastmath=True, cache=True)
def _lanes_iq4(qs, d, m, qh, layer, xq, out, t0, t1):
    """iq4_nl (fp16 d) and iq4_xs (int8 block scales): see ``iq4_lookup``."""
    if m.size > 1:
        _iq4_groups(qs, d, m, layer, xq, out, t0, t1, True)
    else:
        _iq4_groups(qs, d, m, layer, xq, out, t0, t1, False)


@njit(nogil=True, fastmath=True, cache=True)
def _lanes_nibbles(qs, d, m, qh, layer, xq, out, t0, t1):
    """q4_0, q4_1, q5_0, q5_1 in the lanes layout, times x quantized by ``_quantize``.

    Each variant is inlined with constant flags, so its inner loop carries no branches
    (with runtime flags LLVM kept them: 44 instead of 59 G weights per CPU-second).
    """
    if m.size > 1:
        if qh.size > 1:
            _nibble_groups(qs, d, m, qh, layer, xq, out, t0, t1, True, True, False)
        else:
            _nibble_groups(qs, d, m, qh, layer, xq, out, t0, t1, True, False, False)
    elif qh.size > 1:
        _nibble_groups(qs, d, m, qh, layer, xq, out, t0, t1, False, True, False)
    else:
        _nibble_groups(qs, d, m, qh, layer, xq, out, t0, t1, False, False, False)


@njit(nogil=True, fastmath=True, inline="always")
def _nibble_groups(qs, d, m, qh, layer, xq, out, t0, t1, has_min, has_qh, is_k):
    """Per group of 8 rows and block: 4 loads of 32 bytes, each giving values 4k..4k+3 (low nibbles)
    and 16+4k.. (high nibbles) of the 8 rows, multiplied by 4 broadcast bytes of x.
    """
    nb = qs.shape[2]
    offset = np.float32(-16.0) if has_qh else np.float32(-8.0)
    dxs = xq[:nb]
    sums = xq[nb:2 * nb]
    xb = x_bytes(xq, nb)
    for g in range(t0 * (TILE // LANES), min(t1 * (TILE // LANES), qs.shape[1])):
        q = qs[layer, g].ravel()
        dd = d[layer, g].ravel()
        mm = m[layer, g].ravel() if has_min else dd
        hh = qh[layer, g].ravel() if has_qh else qh.ravel()
        acc = zero_floats()
        for b in range(nb):
            prefetch(q, b * 128 + PREFETCH)
            prefetch(q, b * 128 + PREFETCH + 64)
            dot = zero_ints()
            bits = load_bytes(hh, b * 4 * LANES) if has_qh else load_bytes(q, 0)    # (unused without qh)
            for k in range(4):
                lo, hi = widen(q, bits, b, k, has_qh)
                dot = dot4(dot, lo, broadcast4(xb, b * QK + 4 * k))
                dot = dot4(dot, hi, broadcast4(xb, b * QK + 16 + 4 * k))
            scales, mins = block_scales(dd, mm, b, has_min, is_k)
            if has_min:      # d dx sum(q xq) + m dx sum(xq)
                acc = mul_add(mins, splat(sums[b]), acc)
                acc = mul_add(scales, mul(to_floats(dot), splat(dxs[b])), acc)
            else:            # d dx (sum(q xq) + offset sum(xq))
                acc = mul_add(scales, mul_add(to_floats(dot), splat(dxs[b]), splat(offset * sums[b])), acc)
        store_floats(out, g * LANES, acc)


@njit(nogil=True, fastmath=True, cache=True)
def _lanes_q8_0(qs, d, layer, xq, out, t0, t1):
    """q8_0 in the lanes layout: |w| times x with w's signs (``vpsignb``), the int8 dot products of ggml."""
    _q8_groups(qs, d, layer, xq, out, t0, t1)


@njit(nogil=True, fastmath=True, inline="always")
def _q8_groups(qs, d, layer, xq, out, t0, t1):
    nb = qs.shape[2]
    dxs = xq[:nb]
    sums = xq[nb:2 * nb]
    xb = x_bytes(xq, nb)
    for g in range(t0 * (TILE // LANES), min(t1 * (TILE // LANES), qs.shape[1])):
        q = qs[layer, g].ravel()
        dd = d[layer, g].ravel()
        acc = zero_floats()
        for b in range(nb):
            dot = zero_ints()
            for k in range(4):
                prefetch(q, b * 256 + PREFETCH + 64 * k)
            for k in range(8):
                w = load_bytes(q, b * 256 + k * 32)
                if Q8_UNSIGNED:
                    dot = dot4(dot, offset_bytes(w), broadcast4(xb, b * QK + 4 * k))
                else:
                    dot = dot4(dot, abs_bytes(w), sign_bytes(broadcast4(xb, b * QK + 4 * k), w))
            if Q8_UNSIGNED:      # sum((w + 128) x) - 128 sum(x)
                acc = mul_add(load_floats(dd, b * LANES),
                              mul_add(to_floats(dot), splat(dxs[b]), splat(np.float32(-128.0) * sums[b])), acc)
            else:
                acc = mul_add(load_floats(dd, b * LANES), mul(to_floats(dot), splat(dxs[b])), acc)
        store_floats(out, g * LANES, acc)


def matvec(a0, a1, a2, a3, layer, x, xsum, out, t0, t1):
    """Rows of tiles t0..t1-1 of W[layer] @ x, for the quantized type the arrays hold."""


@overload(matvec)
def _matvec(a0, a1, a2, a3, layer, x, xsum, out, t0, t1):
    if a0.ndim == 3:     # f16 / f32 rows: floatgemm.gemv_rows (gemm.matmat), summed as the batched rows are
        return None
    if a0.ndim == 4:                                 # the lanes layout: integer kernels on x quantized in xsum
        if a0.dtype == types.int8:
            return lambda a0, a1, a2, a3, layer, x, xsum, out, t0, t1: _lanes_q8_0(a0, a1, layer, xsum, out, t0, t1)
        if a3.dtype == types.int8:                   # iq4_nl, iq4_xs (see iq4_lookup)
            return lambda a0, a1, a2, a3, layer, x, xsum, out, t0, t1: _lanes_iq4(a0, a1, a2, a3, layer, xsum,
                                                                               out, t0, t1)
        kind = kind_of(a1, a2)                       # q6_K, q3_K, q2_K (see half_offsets)
        if kind:
            lanes = _lanes_q6 if kind == Q6 else _lanes_q3 if kind == Q3 else _lanes_q2
            return lambda a0, a1, a2, a3, layer, x, xsum, out, t0, t1: lanes(a0, a1, a2, a3, layer, xsum, out, t0, t1)
        if a1.dtype == types.uint8:                  # q4_K, q5_K (see block_scales)
            return lambda a0, a1, a2, a3, layer, x, xsum, out, t0, t1: _lanes_k(a0, a1, a2, a3, layer, xsum,
                                                                             out, t0, t1)
        return lambda a0, a1, a2, a3, layer, x, xsum, out, t0, t1: _lanes_nibbles(a0, a1, a2, a3, layer, xsum,
                                                                                   out, t0, t1)
    if a0.dtype == types.int8:                       # q8_0
        return lambda a0, a1, a2, a3, layer, x, xsum, out, t0, t1: _q8_0(a0, a1, layer, x, out, t0, t1)

    def nibbles(a0, a1, a2, a3, layer, x, xsum, out, t0, t1):
        if a0.shape[3] == HALF:
            _nibbles(a0, a1, a2, a3, layer, x, xsum, out, t0, t1)
        else:
            _nibbles16(a0, a1, a2, a3, layer, x, xsum, out, t0, t1)
    return nibbles


def prepare(w, x, xsum):
    """Make x ready for the packed matrix w (its four arrays): ``_fold`` for the nibble types.

    x may be overwritten: each vector the forward pass makes feeds exactly one matrix. xsum needs
    ``xsum_floats(x.size, qh_tables)`` floats. For the lanes layout x is quantized into xsum.
    """


@overload(prepare)
def _prepare(w, x, xsum):
    a0 = w[0]
    if a0.ndim == 4:
        return lambda w, x, xsum: _quantize(x, xsum)
    if a0.ndim == 3 or a0.dtype == types.int8:
        return lambda w, x, xsum: None
    return lambda w, x, xsum: _fold(x, w[0].shape[3], xsum, w[3].size > 1)


def n_tiles(a0) -> int:
    """Tiles (groups of TILE rows) of a packed matrix's first array."""


@overload(n_tiles, inline="always")
def _n_tiles(a0):
    if a0.ndim == 3:
        return lambda a0: (a0.shape[1] + TILE - 1) // TILE
    if a0.ndim == 4:
        return lambda a0: a0.shape[1] // (TILE // LANES)
    return lambda a0: a0.shape[1]
