"""Decode ggml blocks to float32 straight from the file's layout: the starter backend's one kernel.

The fast path first repacks every matrix and compiles a dozen large kernels (tens of seconds on
a first start). The starter backend (``engine/starter.py``) writes the first words meanwhile with
the reference forward pass, which needs each weight matrix as float32 once per pass. numpy
decodes the 4-bit blocks in several passes over temporaries (about 60 M values/s here, 6 s a
token for a 410M model); this one serial loop does it in one pass and compiles in about a second,
since it is small and has a single signature for every block type (absent fields are empty arrays).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from engine.quants import _fields, block_format


@njit(nogil=True, cache=True)
def decode_blocks(qs, d, m, qh, interleaved, signed_bytes, out):
    """out[b, :] = the values of block b.

    qs [nb, bytes] holds the quants (two nibbles a byte, or one signed byte a value with
    ``signed_bytes``: q8_0); d the scales; m the minimums (empty: none, the 4-bit values are
    offset by 8, or 16 with fifth bits); qh the fifth bits (empty: none). ``interleaved``: the
    nibbles of version 0 files (element e in byte e/2), else split halves (j and j + half).
    """
    nb = qs.shape[0]
    has_min = m.size > 0
    has_qh = qh.size > 0
    offset = np.float32(0.0) if has_min else (np.float32(-16.0) if has_qh else np.float32(-8.0))
    for b in range(nb):
        scale = d[b]
        row = out[b]
        if signed_bytes:
            for j in range(qs.shape[1]):
                v = np.int32(qs[b, j])
                row[j] = scale * np.float32(v - 256 if v >= 128 else v)
            continue
        half = qs.shape[1]
        base = m[b] if has_min else np.float32(0.0)
        bits = qh[b] if has_qh else np.uint32(0)
        for j in range(half):
            v = qs[b, j]
            lo_at, hi_at = (2 * j, 2 * j + 1) if interleaved else (j, j + half)
            lo = np.float32(v & 15)
            hi = np.float32(v >> 4)
            if has_qh:
                lo += np.float32(16.0) * np.float32((bits >> lo_at) & 1)
                hi += np.float32(16.0) * np.float32((bits >> hi_at) & 1)
            row[lo_at] = scale * (lo + offset) + base
            row[hi_at] = scale * (hi + offset) + base


_NONE = np.zeros(0, np.float32)
_NO_BITS = np.zeros(0, np.uint32)


def decode_rows(tensor, r0: int, r1: int) -> np.ndarray:
    """Rows r0..r1-1 of a 2-D tensor (a ``TensorInfo``) as float32 [r1 - r0, cols]."""
    rows, cols = tensor.shape
    raw = tensor.data.reshape(rows, tensor.row_bytes)[r0:r1]
    if tensor.type in ("f32", "f16"):
        return raw.reshape(-1).view("<f4" if tensor.type == "f32" else "<f2").astype(np.float32).reshape(r1 - r0, cols)
    fmt = block_format(tensor.type, tensor.qnt_version)
    blocks = raw.reshape(-1, fmt.nbytes)
    d, m, qh, qs = _fields(fmt, blocks)
    out = np.empty((blocks.shape[0], fmt.values), np.float32)
    decode_blocks(qs, d, _NONE if m is None else m, _NO_BITS if qh is None else np.ascontiguousarray(qh),
                  fmt.interleaved, fmt.type_name == "q8_0", out)
    return out.reshape(r1 - r0, cols)
