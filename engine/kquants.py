"""The K-quant and IQ4 block formats of GGUF files: layouts, dequantization and reference quantizers.

Seven types, named as the reader and the backends name them:

* ``q2_K`` ... ``q6_K``: super-blocks of 256 values with one or two fp16 super-scales (``d``, and
  ``dmin`` for the types with a minimum) and a small integer scale (and minimum) per sub-block of
  16 values (q2_K, q3_K, q6_K) or 32 values (q4_K, q5_K);
* ``iq4_nl``: blocks of 32 values, one fp16 scale, 4-bit indices into a fixed non-linear table of
  16 int8 levels (``IQ4_LEVELS``);
* ``iq4_xs``: super-blocks of 256 with the same table, one fp16 ``d`` and a 6-bit signed scale per
  sub-block of 32.

Byte layouts (offsets in a block), element order and rounding follow ggml (``ggml-common.h``,
``ggml-quants.c`` of llama.cpp); the dequantization is bit-identical to the ``gguf`` package's
``gguf.quants.dequantize`` (same float32 operations in the same order), which tests check on random
blocks. The quantizers follow llama.cpp's ``quantize_row_q*_K_ref`` and ``quantize_iq4_nl`` /
``quantize_iq4_xs`` without an importance matrix (what ``llama-quantize`` runs without
``--imatrix``), in float32 with sums taken in element order; llama.cpp built with FMA contraction
can round a few sums differently, so its bytes may differ from ours in rare blocks.

Layouts, dequantization and the packing of quantized blocks are numpy, vectorised over many
blocks at once; the quantizers' per-sub-block searches (a few candidate scales each, sequential
float32 sums) are compiled (``kquant_search.py``).
"""
from __future__ import annotations

import numpy as np

QK_K = 256
K_TYPES = ("q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "iq4_nl", "iq4_xs")

# (values per block, bytes per block), as gguf.GGML_QUANT_SIZES
BLOCK_SIZES = {
    "q2_K": (256, 84), "q3_K": (256, 110), "q4_K": (256, 144), "q5_K": (256, 176),
    "q6_K": (256, 210), "iq4_nl": (32, 18), "iq4_xs": (256, 136),
}

# GGUF type codes (ggml_type)
TYPE_CODES = {"q2_K": 10, "q3_K": 11, "q4_K": 12, "q5_K": 13, "q6_K": 14, "iq4_nl": 20, "iq4_xs": 23}

# The 16 levels of the IQ4 types (kvalues_iq4nl): denser near zero, where most weights are.
IQ4_LEVELS = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.int8)

# Field offsets within a block
Q2_SCALES, Q2_QS, Q2_D, Q2_DMIN = 0, 16, 80, 82
Q3_HMASK, Q3_QS, Q3_SCALES, Q3_D = 0, 32, 96, 108
Q4_D, Q4_DMIN, Q4_SCALES, Q4_QS = 0, 2, 4, 16
Q5_D, Q5_DMIN, Q5_SCALES, Q5_QH, Q5_QS = 0, 2, 4, 16, 48
Q6_QL, Q6_QH, Q6_SCALES, Q6_D = 0, 128, 192, 208
XS_D, XS_SCALES_H, XS_SCALES_L, XS_QS = 0, 2, 4, 8

_GROUP_MAX_EPS = np.float32(1e-15)


def f16_field(blocks: np.ndarray, pos: int) -> np.ndarray:
    """The fp16 at byte ``pos`` of every block, as float32 [nb, 1]."""
    return np.ascontiguousarray(blocks[:, pos:pos + 2]).view("<f2").astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Unpacking quants and sub-block scales (shared by dequantization and the fast path's repacking)

def crumbs(qs: np.ndarray) -> np.ndarray:
    """2-bit fields of q2_K/q3_K: [nb, 64] bytes -> [nb, 256] values 0..3 in element order.

    Byte l of each half (32 bytes) holds elements l, l+32, l+64, l+96 of that half of 128 in bits
    0-1, 2-3, 4-5, 6-7.
    """
    nb = qs.shape[0]
    shifts = np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)
    return ((qs.reshape(nb, 2, 1, 32) >> shifts) & np.uint8(3)).reshape(nb, QK_K)


def high_bits(field: np.ndarray) -> np.ndarray:
    """q3_K hmask / q5_K qh: [nb, 32] bytes -> [nb, 256] bits; element e is bit e // 32 of byte e % 32."""
    nb = field.shape[0]
    shifts = np.arange(8, dtype=np.uint8).reshape(1, 8, 1)
    return ((field.reshape(nb, 1, 32) >> shifts) & np.uint8(1)).reshape(nb, QK_K)


def nibbles_by_32(qs: np.ndarray) -> np.ndarray:
    """q4_K/q5_K: [nb, 128] bytes -> [nb, 256] values 0..15; each run of 32 bytes holds 64 elements,
    the first 32 in the low nibbles, the next 32 in the high ones."""
    nb = qs.shape[0]
    shifts = np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
    return ((qs.reshape(nb, 4, 1, 32) >> shifts) & np.uint8(15)).reshape(nb, QK_K)


def nibbles_by_16(qs: np.ndarray) -> np.ndarray:
    """iq4_nl/iq4_xs: [nb, 16k] bytes -> [nb, 32k] values 0..15; each run of 16 bytes holds 32
    elements, the first 16 in the low nibbles."""
    nb = qs.shape[0]
    shifts = np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
    return ((qs.reshape(nb, -1, 1, 16) >> shifts) & np.uint8(15)).reshape(nb, -1)


def q3_scales(packed: np.ndarray) -> np.ndarray:
    """q3_K: 12 bytes -> 16 signed 6-bit scales [nb, 16] int8 (low nibbles in bytes 0-7, two high
    bits per scale in bytes 8-11)."""
    nb = packed.shape[0]
    low = (packed[:, :8].reshape(nb, 1, 8) >> np.array([0, 4], np.uint8).reshape(1, 2, 1)).reshape(nb, 16)
    high = (packed[:, 8:].reshape(nb, 1, 4) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 4, 1)).reshape(nb, 16)
    return ((low & np.uint8(15)) | ((high & np.uint8(3)) << np.uint8(4))).astype(np.int8) - np.int8(32)


def k4_scales(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """q4_K/q5_K: 12 bytes -> 8 scales and 8 mins, 6 bits each, as uint8 [nb, 8] (get_scale_min_k4)."""
    p = packed.reshape(-1, 3, 4)
    a, b, c = p[:, 0], p[:, 1], p[:, 2]
    sc = np.concatenate([a & np.uint8(63), (c & np.uint8(15)) | ((a >> np.uint8(6)) << np.uint8(4))], axis=1)
    mn = np.concatenate([b & np.uint8(63), (c >> np.uint8(4)) | ((b >> np.uint8(6)) << np.uint8(4))], axis=1)
    return sc, mn


def xs_scales(blocks: np.ndarray) -> np.ndarray:
    """iq4_xs: the 8 signed 6-bit sub-block scales [nb, 8] int8 (4 low bits in scales_l, 2 high in scales_h)."""
    nb = blocks.shape[0]
    low = (blocks[:, XS_SCALES_L:XS_QS].reshape(nb, 4, 1) >> np.array([0, 4], np.uint8).reshape(1, 1, 2))
    low = low.reshape(nb, 8) & np.uint8(15)
    high_word = np.ascontiguousarray(blocks[:, XS_SCALES_H:XS_SCALES_L]).view("<u2")
    high = ((high_word >> (2 * np.arange(8, dtype=np.uint16))) & np.uint16(3)).astype(np.uint8)
    return (low | (high << np.uint8(4))).astype(np.int8) - np.int8(32)


def q6_values(blocks: np.ndarray) -> np.ndarray:
    """q6_K: the 256 signed quants [nb, 256] int8 (-32..31): 4 low bits in ql, 2 high in qh."""
    nb = blocks.shape[0]
    ql = blocks[:, Q6_QL:Q6_QH].reshape(nb, 2, 1, 64) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
    ql = ql.reshape(nb, 2, 4, 32) & np.uint8(15)          # per half: ql[0:32] lo, ql[32:64] lo, hi, hi
    qh = blocks[:, Q6_QH:Q6_SCALES].reshape(nb, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)
    qh = qh & np.uint8(3)
    return ((ql | (qh << np.uint8(4))).astype(np.int8) - np.int8(32)).reshape(nb, QK_K)


def q3_values(blocks: np.ndarray) -> np.ndarray:
    """q3_K: the 256 signed quants [nb, 256] int8 (-4..3): 2 low bits, minus 4 where the hmask bit is 0."""
    low = crumbs(blocks[:, Q3_QS:Q3_SCALES]).astype(np.int8)
    hbit = high_bits(blocks[:, Q3_HMASK:Q3_QS])
    return low - ((hbit ^ np.uint8(1)) << np.uint8(2)).astype(np.int8)


# ---------------------------------------------------------------------------------------------
# Dequantization (float32 operations in the gguf package's order, so the results are identical)

def dequantize_blocks(type_name: str, blocks: np.ndarray) -> np.ndarray:
    """[nb, block bytes] uint8 -> [nb, values per block] float32."""
    nb = blocks.shape[0]
    if type_name == "q2_K":
        d, dmin = f16_field(blocks, Q2_D), f16_field(blocks, Q2_DMIN)
        sc = blocks[:, Q2_SCALES:Q2_QS]
        dl = (d * (sc & np.uint8(15)).astype(np.float32)).reshape(nb, 16, 1)
        ml = (dmin * (sc >> np.uint8(4)).astype(np.float32)).reshape(nb, 16, 1)
        q = crumbs(blocks[:, Q2_QS:Q2_D]).reshape(nb, 16, 16).astype(np.float32)
        return (dl * q - ml).reshape(nb, QK_K)
    if type_name == "q3_K":
        d = f16_field(blocks, Q3_D)
        dl = (d * q3_scales(blocks[:, Q3_SCALES:Q3_D]).astype(np.float32)).reshape(nb, 16, 1)
        q = q3_values(blocks).reshape(nb, 16, 16).astype(np.float32)
        return (dl * q).reshape(nb, QK_K)
    if type_name in ("q4_K", "q5_K"):
        d, dmin = f16_field(blocks, Q4_D), f16_field(blocks, Q4_DMIN)
        sc, mn = k4_scales(blocks[:, Q4_SCALES:Q4_QS])
        dl = (d * sc.astype(np.float32)).reshape(nb, 8, 1)
        ml = (dmin * mn.astype(np.float32)).reshape(nb, 8, 1)
        if type_name == "q4_K":
            q = nibbles_by_32(blocks[:, Q4_QS:])
        else:
            q = nibbles_by_32(blocks[:, Q5_QS:]) | (high_bits(blocks[:, Q5_QH:Q5_QS]) << np.uint8(4))
        return (dl * q.reshape(nb, 8, 32).astype(np.float32) - ml).reshape(nb, QK_K)
    if type_name == "q6_K":
        d = f16_field(blocks, Q6_D)
        dl = (d * blocks[:, Q6_SCALES:Q6_D].view(np.int8).astype(np.float32)).reshape(nb, 16, 1)
        return (dl * q6_values(blocks).reshape(nb, 16, 16).astype(np.float32)).reshape(nb, QK_K)
    if type_name == "iq4_nl":
        d = f16_field(blocks, 0)
        return d * IQ4_LEVELS[nibbles_by_16(blocks[:, 2:])].astype(np.float32)
    if type_name == "iq4_xs":
        d = f16_field(blocks, XS_D)
        dl = (d * xs_scales(blocks).astype(np.float32)).reshape(nb, 8, 1)
        q = IQ4_LEVELS[nibbles_by_16(blocks[:, XS_QS:])].astype(np.float32).reshape(nb, 8, 32)
        return (dl * q).reshape(nb, QK_K)
    raise ValueError(f"unknown K-quant type {type_name!r}")


def scale_bound(type_name: str, blocks: np.ndarray) -> np.ndarray:
    """An upper bound of |value| per block from the fp16 super-scales alone, float64 [nb].

    Cheap (two fields per block): a reader screens a whole tensor with it and dequantizes only
    the blocks it cannot clear. NaN or inf scales give NaN or inf.
    """
    if type_name == "iq4_nl":
        return np.abs(f16_field(blocks, 0)[:, 0].astype(np.float64)) * 127
    if type_name == "iq4_xs":
        return np.abs(f16_field(blocks, XS_D)[:, 0].astype(np.float64)) * 32 * 127
    if type_name == "q2_K":
        d, m = f16_field(blocks, Q2_D), f16_field(blocks, Q2_DMIN)
        return (np.abs(d) * 15 * 3 + np.abs(m) * 15)[:, 0].astype(np.float64)
    if type_name == "q3_K":
        return np.abs(f16_field(blocks, Q3_D)[:, 0].astype(np.float64)) * 32 * 4
    if type_name in ("q4_K", "q5_K"):
        top = 15 if type_name == "q4_K" else 31
        d, m = f16_field(blocks, Q4_D)[:, 0].astype(np.float64), f16_field(blocks, Q4_DMIN)[:, 0].astype(np.float64)
        return np.abs(d) * 63 * top + np.abs(m) * 63
    if type_name == "q6_K":
        return np.abs(f16_field(blocks, Q6_D)[:, 0].astype(np.float64)) * 128 * 32
    raise ValueError(f"unknown K-quant type {type_name!r}")


# ---------------------------------------------------------------------------------------------
# Reference quantizers. Arrays of sub-blocks [n, k]; float32 throughout like the C code.

_F = np.float32


def _nearest(v: np.ndarray) -> np.ndarray:
    """ggml's nearest_int (adding 1.5 * 2^23 in float32): round half to even; kept as float32."""
    return np.rint(v).astype(np.float32)


def _seq_sum(a: np.ndarray) -> np.ndarray:
    """Sum over the last axis in element order, in float32 (the C loops' rounding)."""
    return np.add.accumulate(a, axis=-1, dtype=np.float32)[..., -1]


def _signed_absmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(|x| max, the value holding it, first one on ties) per row."""
    idx = np.argmax(np.abs(x), axis=1)
    mx = x[np.arange(x.shape[0]), idx]
    return np.abs(mx), mx


def _div(a, b) -> np.ndarray:
    """a / b in float32 where b != 0 (the caller masks the other rows)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return (np.asarray(a, np.float32) / np.asarray(b, np.float32)).astype(np.float32)


def _fp16_round(v: np.ndarray) -> np.ndarray:
    """GGML_FP16_TO_FP32(GGML_FP32_TO_FP16(v))."""
    with np.errstate(over="ignore"):
        return v.astype(np.float16).astype(np.float32)


def _search():
    """The compiled searches (imported on first use: reading a model never needs numba for them)."""
    from engine import kquant_search
    return kquant_search


def make_qkx2_quants(x, w, nmax: int, rmin: float, rdelta: float, nstep: int, use_mad: bool):
    """Scale and minimum of each sub-block (rows of x [n, k]) for quants 0..nmax with weights w.

    Returns (scale [n], the_min [n] (>= 0: the value subtracted), L [n, k] uint8). Tries nstep + 1
    candidate scales around nmax / (max - min) and keeps the least weighted error, each with the
    least-squares scale and minimum for its quants (kquant_search.qkx2_rows).
    """
    n, k = x.shape
    scales, mins = np.empty(n, np.float32), np.empty(n, np.float32)
    L = np.empty((n, k), np.uint8)
    _search().qkx2_rows(np.ascontiguousarray(x, np.float32), np.ascontiguousarray(w, np.float32), nmax,
                        _F(rmin), _F(rdelta), nstep, use_mad, scales, mins, L)
    return scales, mins, L


def make_qx_quants_rmse1(x, nmax: int):
    """Signed quants -nmax..nmax-1 per sub-block with the scale minimising the x^2-weighted error
    (make_qx_quants with rmse_type 1): 19 candidate inverse scales around -nmax / max.

    Returns (scale [n], L [n, k] uint8 = quant + nmax).
    """
    scales = np.empty(x.shape[0], np.float32)
    L = np.empty(x.shape, np.uint8)
    _search().qx_rmse1_rows(np.ascontiguousarray(x, np.float32), nmax, scales, L)
    return scales, L


def make_q3_quants_rmse(x, nmax: int):
    """q3_K's sub-block search (make_q3_quants with do_rmse): quants -nmax..nmax-1, then up to 5
    sweeps moving one quant at a time while the x^2-weighted fit improves.

    Returns (scale [n], L [n, k] uint8 = quant + nmax).
    """
    scales = np.empty(x.shape[0], np.float32)
    L = np.empty(x.shape, np.uint8)
    _search().q3_rmse_rows(np.ascontiguousarray(x, np.float32), nmax, scales, L)
    return scales, L


def _pack_crumbs(L: np.ndarray) -> np.ndarray:
    """[nb, 256] values 0..3 -> [nb, 64] bytes (inverse of ``crumbs``)."""
    q = L.reshape(-1, 2, 4, 32).astype(np.uint8)
    return (q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)).reshape(-1, 64)


def _pack_high_bits(bits: np.ndarray) -> np.ndarray:
    """[nb, 256] bits -> [nb, 32] bytes (inverse of ``high_bits``)."""
    b = bits.reshape(-1, 8, 32).astype(np.uint8) << np.arange(8, dtype=np.uint8).reshape(1, 8, 1)
    return np.bitwise_or.reduce(b, axis=1)


def _pack_nibbles_by_32(L: np.ndarray) -> np.ndarray:
    q = L.reshape(-1, 4, 2, 32).astype(np.uint8)
    return (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128)


def _pack_nibbles_by_16(L: np.ndarray) -> np.ndarray:
    q = L.reshape(L.shape[0], -1, 2, 16).astype(np.uint8)
    return (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(L.shape[0], -1)


def _f16_bytes(v: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return v.astype("<f2").reshape(-1, 1).view(np.uint8)


def _requantize(x, L, d, dm, top: int):
    """The final quants of the min types: round((x + dm) / d) into 0..top where d != 0; sub-blocks
    with d == 0 keep the search's quants (the C code's ``if (!d) continue``)."""
    live = d != 0
    q = np.clip(_nearest(_div(x + dm[..., None], np.where(live, d, _F(1))[..., None])), 0, top)
    return np.where(live[..., None], q, L)


def _quantize_q2_K(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    sub = x.reshape(nb * 16, 16)
    scales, mins, L = make_qkx2_quants(sub, np.abs(sub), 3, -0.5, 0.1, 15, True)
    scales, mins, L = scales.reshape(nb, 16), mins.reshape(nb, 16), L.reshape(nb, 16, 16).astype(np.float32)
    max_scale = np.maximum(scales.max(axis=1), _F(0))
    max_min = np.maximum(mins.max(axis=1), _F(0))
    has_s, has_m = max_scale > 0, max_min > 0
    ls = np.where(has_s[:, None], _nearest(_div(_F(15), np.where(has_s, max_scale, _F(1)))[:, None] * scales), 0).astype(np.int64) & 0xFF
    lm = np.where(has_m[:, None], _nearest(_div(_F(15), np.where(has_m, max_min, _F(1)))[:, None] * mins), 0).astype(np.int64)
    sc = (ls | (lm << 4)) & 0xFF
    d = np.where(has_s, _div(max_scale, _F(15)), _F(0)).astype(np.float32)
    dmin = np.where(has_m, _div(max_min, _F(15)), _F(0)).astype(np.float32)
    dq = _fp16_round(d)[:, None] * (sc & 15).astype(np.float32)
    mq = _fp16_round(dmin)[:, None] * (sc >> 4).astype(np.float32)
    L = _requantize(x.reshape(nb, 16, 16), L, dq, mq, 3)
    return np.concatenate([sc.astype(np.uint8), _pack_crumbs(L.reshape(nb, QK_K)), _f16_bytes(d), _f16_bytes(dmin)],
                          axis=1)


def _quantize_q3_K(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    scales, L = make_q3_quants_rmse(x.reshape(nb * 16, 16), 4)
    scales, L = scales.reshape(nb, 16), L.reshape(nb, 16, 16).astype(np.float32)
    _, max_scale = _signed_absmax(scales)
    live = max_scale != 0
    iscale = _div(_F(-32), np.where(live, max_scale, _F(1)))
    l6 = (np.clip(_nearest(iscale[:, None] * scales), -32, 31) + 32).astype(np.uint8)
    l6 = np.where(live[:, None], l6, np.uint8(0))
    packed = np.zeros((nb, 12), np.uint8)
    packed[:, :8] = (l6[:, :8] & 15) | ((l6[:, 8:] & 15) << 4)
    high = (l6 >> 4).reshape(nb, 4, 4)                       # [j // 4, j % 4]
    packed[:, 8:] = high[:, 0] | (high[:, 1] << 2) | (high[:, 2] << 4) | (high[:, 3] << 6)
    d = np.where(live, _div(_F(1), iscale), _F(0)).astype(np.float32)
    dq = _fp16_round(d)[:, None] * q3_scales(packed).astype(np.float32)
    ok = dq != 0
    q = np.clip(_nearest(_div(x.reshape(nb, 16, 16), np.where(ok, dq, _F(1))[..., None])), -4, 3) + 4
    L = np.where(ok[..., None], q, L).reshape(nb, QK_K).astype(np.uint8)
    hbit = L > 3
    L = np.where(hbit, L - 4, L)
    return np.concatenate([_pack_high_bits(hbit), _pack_crumbs(L), packed, _f16_bytes(d)], axis=1)


def _quantize_k4(x: np.ndarray, top: int) -> tuple:
    """The shared part of q4_K (top 15) and q5_K (top 31): (d, dmin, packed scales, L [nb, 256])."""
    nb = x.shape[0]
    sub = x.reshape(nb * 8, 32)
    av_x = np.sqrt(_seq_sum(sub * sub) / _F(32)).astype(np.float32)
    w = (av_x[:, None] + np.abs(sub)).astype(np.float32)
    if top == 15:
        scales, mins, L = make_qkx2_quants(sub, w, 15, -1.0, 0.1, 20, False)
    else:
        scales, mins, L = make_qkx2_quants(sub, w, 31, -0.5, 0.1, 15, False)
    scales, mins, L = scales.reshape(nb, 8), mins.reshape(nb, 8), L.reshape(nb, 8, 32).astype(np.float32)
    max_scale = np.maximum(scales.max(axis=1), _F(0))
    max_min = np.maximum(mins.max(axis=1), _F(0))
    inv_s = np.where(max_scale > 0, _div(_F(63), np.where(max_scale > 0, max_scale, _F(1))), _F(0))
    inv_m = np.where(max_min > 0, _div(_F(63), np.where(max_min > 0, max_min, _F(1))), _F(0))
    ls = np.minimum(_nearest(inv_s[:, None] * scales).astype(np.int64) & 0xFF, 63).astype(np.uint8)
    lm = np.minimum(_nearest(inv_m[:, None] * mins).astype(np.int64) & 0xFF, 63).astype(np.uint8)
    packed = np.zeros((nb, 12), np.uint8)
    packed[:, 0:4] = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    packed[:, 4:8] = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    packed[:, 8:12] = (ls[:, 4:] & 15) | ((lm[:, 4:] & 15) << 4)
    d = (max_scale / _F(63)).astype(np.float32)
    dmin = (max_min / _F(63)).astype(np.float32)
    sc, mn = k4_scales(packed)
    dq = _fp16_round(d)[:, None] * sc.astype(np.float32)
    mq = _fp16_round(dmin)[:, None] * mn.astype(np.float32)
    L = _requantize(x.reshape(nb, 8, 32), L, dq, mq, top)
    return d, dmin, packed, L.reshape(nb, QK_K).astype(np.uint8)


def _quantize_q4_K(x: np.ndarray) -> np.ndarray:
    d, dmin, packed, L = _quantize_k4(x, 15)
    return np.concatenate([_f16_bytes(d), _f16_bytes(dmin), packed, _pack_nibbles_by_32(L)], axis=1)


def _quantize_q5_K(x: np.ndarray) -> np.ndarray:
    d, dmin, packed, L = _quantize_k4(x, 31)
    return np.concatenate([_f16_bytes(d), _f16_bytes(dmin), packed, _pack_high_bits(L > 15),
                           _pack_nibbles_by_32(L & 15)], axis=1)


def _quantize_q6_K(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    scales, L = make_qx_quants_rmse1(x.reshape(nb * 16, 16), 32)
    scales, L = scales.reshape(nb, 16), L.reshape(nb, 16, 16).astype(np.float32)
    amax, max_scale = _signed_absmax(scales)
    live = amax >= _GROUP_MAX_EPS
    iscale = _div(_F(-128), np.where(live, max_scale, _F(1)))
    d = np.where(live, _div(_F(1), iscale), _F(0)).astype(np.float32)
    sc = np.minimum(_nearest(iscale[:, None] * scales), 127).astype(np.int8)
    sc = np.where(live[:, None], sc, np.int8(0))
    dq = _fp16_round(d)[:, None] * sc.astype(np.float32)
    ok = dq != 0
    q = np.clip(_nearest(_div(x.reshape(nb, 16, 16), np.where(ok, dq, _F(1))[..., None])), -32, 31) + 32
    L = np.where(ok[..., None], q, L).reshape(nb, 2, 4, 32).astype(np.uint8)
    L = np.where(live[:, None, None, None], L, np.uint8(0))   # an all-zero block is stored as zeros
    ql = np.concatenate([(L[:, :, 0] & 15) | ((L[:, :, 2] & 15) << 4),
                         (L[:, :, 1] & 15) | ((L[:, :, 3] & 15) << 4)], axis=2).reshape(nb, 128)
    qh = ((L[:, :, 0] >> 4) | ((L[:, :, 1] >> 4) << 2) | ((L[:, :, 2] >> 4) << 4)
          | ((L[:, :, 3] >> 4) << 6)).reshape(nb, 64)
    return np.concatenate([ql, qh, sc.view(np.uint8), _f16_bytes(d)], axis=1)


def best_level(v: np.ndarray) -> np.ndarray:
    """Index of the IQ4 level nearest to v (best_index_int8: the upper one on ties), uint8."""
    levels = IQ4_LEVELS.astype(np.float32)
    mu = np.clip(np.searchsorted(levels, v, side="right"), 1, 15)
    lower = levels[mu - 1]
    upper = levels[mu]
    idx = np.where((v - lower) < (upper - v), mu - 1, mu)
    idx = np.where(v <= levels[0], 0, idx)
    return np.where(v >= levels[15], 15, idx).astype(np.uint8)


def _iq4_block_scales(x: np.ndarray, ntry: int = 7) -> np.ndarray:
    """The x^2-weighted best scale of each block of 32 (rows of x) for the IQ4 levels
    (quantize_row_iq4_nl_impl's search, no importance matrix): 2 ntry + 2 candidates."""
    scales = np.empty(x.shape[0], np.float32)
    _search().iq4_scale_rows(np.ascontiguousarray(x, np.float32), IQ4_LEVELS, ntry, scales)
    return scales


def _quantize_iq4_nl(x: np.ndarray) -> np.ndarray:
    d = _iq4_block_scales(x)
    inv = np.where(d != 0, _div(_F(1), np.where(d != 0, d, _F(1))), _F(0))
    L = best_level((inv[:, None] * x).astype(np.float32))
    return np.concatenate([_f16_bytes(d), _pack_nibbles_by_16(L)], axis=1)


def _quantize_iq4_xs(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    scales = _iq4_block_scales(x.reshape(nb * 8, 32)).reshape(nb, 8)
    _, max_scale = _signed_absmax(scales)
    d = (-max_scale / _F(32)).astype(np.float32)
    inv = np.where(d != 0, _div(_F(1), np.where(d != 0, d, _F(1))), _F(0))
    ls = np.clip(_nearest(inv[:, None] * scales), -32, 31)
    dl = (d[:, None] * ls).astype(np.float32)
    idl = np.where(dl != 0, _div(_F(1), np.where(dl != 0, dl, _F(1))), _F(0))
    L = best_level((idl[..., None] * x.reshape(nb, 8, 32)).astype(np.float32)).reshape(nb, QK_K)
    l6 = (ls + 32).astype(np.uint16)
    low = (l6 & 15).astype(np.uint8)
    scales_l = low[:, 0::2] | (low[:, 1::2] << 4)
    scales_h = np.bitwise_or.reduce((l6 >> 4) << (2 * np.arange(8, dtype=np.uint16)), axis=1).astype("<u2")
    return np.concatenate([_f16_bytes(d), scales_h.reshape(-1, 1).view(np.uint8), scales_l,
                           _pack_nibbles_by_16(L)], axis=1)


_QUANTIZERS = {"q2_K": _quantize_q2_K, "q3_K": _quantize_q3_K, "q4_K": _quantize_q4_K, "q5_K": _quantize_q5_K,
               "q6_K": _quantize_q6_K, "iq4_nl": _quantize_iq4_nl, "iq4_xs": _quantize_iq4_xs}

CHUNK_BLOCKS = 4096      # super-blocks per vectorised pass (bounds the temporaries to a few MB)


def quantize_blocks(type_name: str, x: np.ndarray) -> np.ndarray:
    """float32 [nb, values per block] -> [nb, block bytes] uint8. Values must be finite."""
    if type_name not in _QUANTIZERS:
        raise ValueError(f"unknown K-quant type {type_name!r}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    qk, nbytes = BLOCK_SIZES[type_name]
    if x.ndim != 2 or x.shape[1] != qk:
        raise ValueError(f"{type_name} quantizes blocks of {qk} values, got an array of shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"cannot quantize to {type_name}: the values include NaN or infinity")
    out = np.empty((x.shape[0], nbytes), np.uint8)
    step = CHUNK_BLOCKS * (QK_K // qk)
    for s in range(0, x.shape[0], step):
        out[s:s + step] = _QUANTIZERS[type_name](x[s:s + step])
    return out
