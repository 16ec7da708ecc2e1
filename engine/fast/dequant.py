"""Dequantize a range of tiles of a packed matrix to float32, for the batched (GEMM) prompt path.

A prompt of N tokens multiplies each weight matrix by an [N, cols] activation matrix. Decoding
each weight once per prompt chunk, a few MiB at a time, and handing the float tile to BLAS is far
faster than N matrix x vector passes. The tiled types decode to ``Wt[cols, rows_of_tiles]``
(x @ Wt gives the outputs), since that is the order the tiles store. (f16 and f32 matrices are
not decoded: ``floatgemm.py`` multiplies their rows as they are.)

The functions are serial: the prompt path's workers each decode their own group of rows (one
numba thread each), and a prange here would only cost compilation time (an outlined body per
function, compiled with everything it calls) on the first run.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from engine.fast.matvec import HALF, QK, QK16_HALF, as_float


@njit(nogil=True, cache=True)
def _nibble_tile(qs, d, m, qh, layer, t, half, out, col0):
    """Decode tile t into out[:, col0:col0+tile] (any nibble type; half = quant bytes per block)."""
    nb, tile = qs.shape[2], qs.shape[4]
    has_min = m.size > 1
    has_qh = qh.size > 1
    offset = np.float32(-16.0) if has_qh else np.float32(-8.0)
    qk = 2 * half
    for b in range(nb):
        qb = qs[layer, t, b]
        for j in range(half):
            lo_row = out[b * qk + j, col0:col0 + tile]
            hi_row = out[b * qk + j + half, col0:col0 + tile]
            for r in range(tile):
                v = qb[j, r]
                lo = np.float32(v & 15)
                hi = np.float32(v >> 4)
                if has_qh:
                    bits = qh[layer, t, b, r]
                    lo += np.float32(16.0) * np.float32((bits >> j) & 1)
                    hi += np.float32(16.0) * np.float32((bits >> (j + half)) & 1)
                scale = as_float(d[layer, t, b, r])
                if has_min:
                    base = as_float(m[layer, t, b, r])
                    lo_row[r] = scale * lo + base
                    hi_row[r] = scale * hi + base
                else:
                    lo_row[r] = scale * (lo + offset)
                    hi_row[r] = scale * (hi + offset)


@njit(nogil=True, cache=True)
def dequant_nibbles(qs, d, m, qh, layer, t0, t1, out):
    """Tiles t0..t1-1 of a q4_0/q4_1/q5_0/q5_1 matrix -> out[cols, (t1-t0)*TILE]."""
    tile = qs.shape[4]
    for t in range(t0, t1):
        _nibble_tile(qs, d, m, qh, layer, t, HALF, out, (t - t0) * tile)


@njit(nogil=True, cache=True)
def dequant_nibbles16(qs, d, m, qh, layer, t0, t1, out):
    """Tiles t0..t1-1 of a q4_2/q4_3 matrix -> out[cols, (t1-t0)*TILE]."""
    tile = qs.shape[4]
    for t in range(t0, t1):
        _nibble_tile(qs, d, m, qh, layer, t, QK16_HALF, out, (t - t0) * tile)


@njit(nogil=True, cache=True)
def dequant_q8_0(qs, d, m, qh, layer, t0, t1, out):
    """Tiles t0..t1-1 of a q8_0 matrix -> out[cols, (t1-t0)*TILE]."""
    nb, tile = qs.shape[2], qs.shape[4]
    for t in range(t0, t1):
        col0 = (t - t0) * tile
        for b in range(nb):
            qb = qs[layer, t, b]
            for j in range(QK):
                row = out[b * QK + j, col0:col0 + tile]
                for r in range(tile):
                    row[r] = as_float(d[layer, t, b, r]) * np.float32(qb[j, r])


TILE_DEQUANT = {
    "q4_0": dequant_nibbles, "q4_1": dequant_nibbles, "q5_0": dequant_nibbles, "q5_1": dequant_nibbles,
    "q4_2": dequant_nibbles16, "q4_3": dequant_nibbles16, "q8_0": dequant_q8_0,
}
