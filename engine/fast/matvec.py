"""Fused dequantize-and-dot kernels: weight matrix (any type, any layer) times one vector.

Every kernel has the signature ``kernel(a0, a1, a2, a3, layer, x, xsum, out)`` over the four
arrays of a ``PackedMatrix`` (see ``repack.py``): ``out[:padded_rows] = W[layer] @ x``, with
``xsum`` a scratch buffer for per-block sums of x. Nothing is dequantized to memory: each quant
is widened in a register, multiplied and accumulated.

How the tiled kernels are shaped, and why (numba 0.68 / LLVM on x86):

* The innermost loop runs over the TILE rows of a tile (contiguous bytes), so LLVM vectorises it
  with one row per lane and no horizontal sums; the 16 quant bytes of a block are an unrolled loop
  of constant length around it, with x values broadcast.
* A nibble is split in float arithmetic (h = floor(v / 16), lo = v - 16 h): numba types integer
  ``&``/``>>`` on bytes as int64, which would halve the vector width.
* The integer offsets and minimums are taken out of the inner loop:
  sum((q - 8) d x) = d (sum(q x) - 8 sum(x)) and sum((q d + m) x) = d sum(q x) + m sum(x),
  with sum(x) per block computed once per call (``xsum``).
* fp16 scales are widened by bit arithmetic (numba has no float16 type).
* ``prange`` over tiles: a few dozen to a few thousand equal pieces of work.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

QK = 32          # values per block of the 32-value types
HALF = 16        # quant bytes per block of the 4/5-bit 32-value types
QK16_HALF = 8    # quant bytes per block of q4_2 / q4_3 (16 values)

_TWO_POW_112 = np.float32(2.0 ** 112)


@njit(inline="always")
def half_to_float(h):
    """fp16 bits (uint16) -> float32, exact for normal and subnormal values (weights hold no inf/nan).

    The exponent and mantissa bits shifted into a float32 make a number 2**112 too small
    (the exponent biases differ by 127 - 15), which one multiplication repairs; that also
    turns fp16 subnormals into the right float32 normals.
    """
    u = np.uint32(h)
    mag = np.float32(np.uint32((u & np.uint32(0x7FFF)) << np.uint32(13)).view(np.float32)) * _TWO_POW_112
    sign = np.uint32((u & np.uint32(0x8000)) << np.uint32(16))
    return np.uint32(np.float32(mag).view(np.uint32) | sign).view(np.float32)


def as_float(v):
    """A scale as float32, whether stored as fp16 bits or as float32."""


@overload(as_float, inline="always")
def _as_float(v):
    if isinstance(v, types.Float):
        return lambda v: np.float32(v)
    return lambda v: half_to_float(v)


@njit(nogil=True, cache=True)
def block_sums(x, qk, xsum):
    """xsum[b] = sum of x over block b (blocks of qk values)."""
    for b in range(x.size // qk):
        s = np.float32(0.0)
        for j in range(qk):
            s += x[b * qk + j]
        xsum[b] = s


@njit(nogil=True, fastmath=True, cache=True, parallel=True)
def matvec_nibbles(qs, d, m, qh, layer, x, xsum, out):
    """q4_0, q4_1, q5_0, q5_1 (32-value blocks): which one follows from the arrays present."""
    n_tiles, nb, tile = qs.shape[1], qs.shape[2], qs.shape[4]
    has_min = m.size > 1
    has_qh = qh.size > 1
    offset = np.float32(-16.0) if has_qh else np.float32(-8.0)
    block_sums(x, QK, xsum)
    for t in prange(n_tiles):
        acc = out[t * tile:(t + 1) * tile]
        acc[:] = 0.0
        for b in range(nb):
            qb = qs[layer, t, b]
            db = d[layer, t, b]
            xb = x[b * QK:(b + 1) * QK]
            xs = xsum[b]
            if has_qh:
                hb = qh[layer, t, b]
                for r in range(tile):
                    bits = hb[r]
                    s = np.float32(0.0)
                    for j in range(HALF):
                        v = np.float32(qb[j, r])
                        hi = np.floor(v * np.float32(0.0625))
                        lo = v - np.float32(16.0) * hi
                        lo += np.float32(16.0) * np.float32((bits >> np.uint32(j)) & np.uint32(1))
                        hi += np.float32(16.0) * np.float32((bits >> np.uint32(j + HALF)) & np.uint32(1))
                        s += lo * xb[j] + hi * xb[j + HALF]
                    if has_min:
                        acc[r] += as_float(db[r]) * s + as_float(m[layer, t, b, r]) * xs
                    else:
                        acc[r] += as_float(db[r]) * (s + offset * xs)
            else:
                for r in range(tile):
                    s = np.float32(0.0)
                    for j in range(HALF):
                        v = np.float32(qb[j, r])
                        hi = np.floor(v * np.float32(0.0625))
                        lo = v - np.float32(16.0) * hi
                        s += lo * xb[j] + hi * xb[j + HALF]
                    if has_min:
                        acc[r] += as_float(db[r]) * s + as_float(m[layer, t, b, r]) * xs
                    else:
                        acc[r] += as_float(db[r]) * (s + offset * xs)


@njit(nogil=True, fastmath=True, cache=True, parallel=True)
def matvec_nibbles16(qs, d, m, qh, layer, x, xsum, out):
    """q4_2 and q4_3 (16-value blocks, stablelm-era files): q4_3 has a minimum, q4_2 an offset of 8."""
    n_tiles, nb, tile = qs.shape[1], qs.shape[2], qs.shape[4]
    has_min = m.size > 1
    block_sums(x, 2 * QK16_HALF, xsum)
    for t in prange(n_tiles):
        acc = out[t * tile:(t + 1) * tile]
        acc[:] = 0.0
        for b in range(nb):
            qb = qs[layer, t, b]
            db = d[layer, t, b]
            xb = x[b * 2 * QK16_HALF:(b + 1) * 2 * QK16_HALF]
            xs = xsum[b]
            for r in range(tile):
                s = np.float32(0.0)
                for j in range(QK16_HALF):
                    v = np.float32(qb[j, r])
                    hi = np.floor(v * np.float32(0.0625))
                    lo = v - np.float32(16.0) * hi
                    s += lo * xb[j] + hi * xb[j + QK16_HALF]
                if has_min:
                    acc[r] += as_float(db[r]) * s + as_float(m[layer, t, b, r]) * xs
                else:
                    acc[r] += as_float(db[r]) * (s - np.float32(8.0) * xs)


@njit(nogil=True, fastmath=True, cache=True, parallel=True)
def matvec_q8_0(qs, d, m, qh, layer, x, xsum, out):
    """q8_0: int8 quants times one scale per 32-value block."""
    n_tiles, nb, tile = qs.shape[1], qs.shape[2], qs.shape[4]
    for t in prange(n_tiles):
        acc = out[t * tile:(t + 1) * tile]
        acc[:] = 0.0
        for b in range(nb):
            qb = qs[layer, t, b]
            db = d[layer, t, b]
            xb = x[b * QK:(b + 1) * QK]
            for r in range(tile):
                s = np.float32(0.0)
                for j in range(QK):
                    s += np.float32(qb[j, r]) * xb[j]
                acc[r] += as_float(db[r]) * s


@njit(nogil=True, fastmath=True, cache=True, parallel=True)
def matvec_rows(w, a1, a2, a3, layer, x, xsum, out):
    """f16 (stored as fp16 bits) or f32 rows: one long vectorised dot per row, rows in chunks."""
    rows, cols = w.shape[1], w.shape[2]
    n_chunks = min(rows, 64)
    per = -(-rows // n_chunks)
    for c in prange(n_chunks):
        for r in range(c * per, min(rows, (c + 1) * per)):
            row = w[layer, r]
            s = np.float32(0.0)
            for k in range(cols):
                s += as_float(row[k]) * x[k]
            out[r] = s


MATVEC = {
    "q4_0": matvec_nibbles, "q4_1": matvec_nibbles, "q5_0": matvec_nibbles, "q5_1": matvec_nibbles,
    "q4_2": matvec_nibbles16, "q4_3": matvec_nibbles16, "q8_0": matvec_q8_0,
    "f16": matvec_rows, "f32": matvec_rows,
}


def kernel_for(type_name: str):
    """The matrix x vector kernel of a weight type."""
    return MATVEC[type_name]
