"""K-quant and IQ4 matrices (GGUF) that the kernels do not run as they are, rewritten at load as
blocks of 32 of a type they run.

Where the integer kernels are (AVX2 or VNNI), the K-quants (q2_K..q6_K), iq4_nl and iq4_xs matrices
are not rewritten: the kernels take their quants (or indices) and integer sub-block scales as they are
(``K_NATIVE``; the layouts in ``repack.py``, the arithmetic in ``matvec.block_scales``,
``matvec.half_offsets`` and ``matvec.iq4_lookup``), and a matrix whose layers come in two of the
kernels' types keeps each layer's (``repack.MixedMatrix``). What follows is the rest: those seven
on a CPU without the integer kernels, and other mixes.

The lanes kernels of ``matvec.py`` and ``gemm.py`` compute on 8-bit activations per block of 32,
as ggml does; a K-quant super-block is 8 (or 16) such sub-blocks whose scale is an integer times
the super-block's fp16 ``d``. So each sub-block becomes a 32-value block of a type those kernels
already run, with its scale multiplied out:

* q4_K -> q4_1 and q5_K -> q5_1: the same quants, ``d * sc`` and ``-dmin * m`` rounded to fp16
  (relative error <= 2^-11 on a scale; the sub-block's integer dot products are unchanged);
* iq4_nl -> q8_0: the table level of each index as the int8 quant, ``d`` as is: exact;
* iq4_xs -> q8_0: levels as quants, ``d * ls`` rounded to fp16 per sub-block;
* q2_K, q3_K, q6_K (scales per 16 values, two to a block of 32) -> q8_0 by re-quantizing the
  dequantized values (ggml's q8_0 rounding): an error of at most 1/254 of a block's largest
  weight, the size of the activations' own 8-bit rounding.

The result costs 5 bits a weight for q4_K (4.5 in the file), 6 for q5_K (5.5), 8.5 for the q8_0
stand-ins; the prompt path (``gemm.py``) and the many-continuations path (``gemm.matmat``) take
the rewritten matrices like any other of the lanes layout. Without AVX2 the stand-in types take
the float kernels' tile layout instead (``repack.layout_of``).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from engine import kquants
from engine.fast.simd import INT8_DOT
from engine.quants import block_format, dequantize_blocks

# run as they are by the integer kernels where there are those (repack.K_LANE_TYPES): not rewritten
K_NATIVE = ("q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "iq4_nl", "iq4_xs") if INT8_DOT else ()
STAND_IN = {"q4_K": "q4_1", "q5_K": "q5_1", "iq4_nl": "q8_0", "iq4_xs": "q8_0",
            "q2_K": "q8_0", "q3_K": "q8_0", "q6_K": "q8_0"}


FLOAT_TYPES = ("f16", "f32")


def stand_in(types: list) -> tuple[str, int]:
    """(type, version) the kernels run for one kind of matrix whose layers have these
    (type, version) pairs: a legacy type itself, a K-quant's stand-in, and q8_0 where the layers'
    stand-ins differ (a "q4_K_M" file keeps attn_qkv and ffn_down in q6_K in some layers, q4_K in the others;
    one PackedMatrix holds every layer in one layout)."""
    kinds = {(t, 2) if t in K_NATIVE else (STAND_IN[t], 2) if t in STAND_IN else (t, 0 if t in FLOAT_TYPES else v)
             for t, v in types}
    if len(kinds) == 1:
        return kinds.pop()
    if all(t in FLOAT_TYPES for t, _ in kinds):
        return "f32", 0
    return "q8_0", 2


def _split_halves(values: np.ndarray) -> np.ndarray:
    """[n, 32] values 0..15 -> [n, 16] bytes: element j in the low nibble of byte j, j + 16 in the high."""
    v = values.astype(np.uint8)
    return v[:, :16] | (v[:, 16:] << np.uint8(4))


def _fp16(v: np.ndarray) -> np.ndarray:
    """float32 [n] -> [n, 2] bytes of fp16."""
    with np.errstate(over="ignore"):
        return v.astype("<f2").reshape(-1, 1).view(np.uint8)


def _k4_to_blocks(type_name: str, blocks: np.ndarray) -> np.ndarray:
    """q4_K / q5_K super-blocks [nb, bytes] -> q4_1 / q5_1 blocks [nb * 8, 20 or 24]."""
    nb = blocks.shape[0]
    d = kquants.f16_field(blocks, kquants.Q4_D)
    dmin = kquants.f16_field(blocks, kquants.Q4_DMIN)
    sc, mn = kquants.k4_scales(blocks[:, kquants.Q4_SCALES:kquants.Q4_QS])
    scale = (d * sc.astype(np.float32)).reshape(-1)
    minimum = (-(dmin * mn.astype(np.float32))).reshape(-1)
    if type_name == "q4_K":
        q = kquants.nibbles_by_32(blocks[:, kquants.Q4_QS:]).reshape(nb * 8, 32)
        return np.concatenate([_fp16(scale), _fp16(minimum), _split_halves(q)], axis=1)
    q = kquants.nibbles_by_32(blocks[:, kquants.Q5_QS:]).reshape(nb * 8, 32)
    bits = kquants.high_bits(blocks[:, kquants.Q5_QH:kquants.Q5_QS]).reshape(nb * 8, 32)
    qh = np.packbits(bits, axis=1, bitorder="little")       # q5_1's 32-bit field, bit j: element j
    return np.concatenate([_fp16(scale), _fp16(minimum), qh, _split_halves(q)], axis=1)


def _iq4_to_q8_0(type_name: str, blocks: np.ndarray) -> np.ndarray:
    """iq4_nl / iq4_xs blocks -> q8_0 blocks [n, 34] with the table levels as quants."""
    nb = blocks.shape[0]
    if type_name == "iq4_nl":
        levels = kquants.IQ4_LEVELS[kquants.nibbles_by_16(blocks[:, 2:])]
        return np.concatenate([blocks[:, :2], levels.view(np.uint8)], axis=1)
    d = kquants.f16_field(blocks, kquants.XS_D)
    scale = (d * kquants.xs_scales(blocks).astype(np.float32)).reshape(-1)
    levels = kquants.IQ4_LEVELS[kquants.nibbles_by_16(blocks[:, kquants.XS_QS:])].reshape(nb * 8, 32)
    return np.concatenate([_fp16(scale), levels.view(np.uint8)], axis=1)


def requantize_q8_0(values: np.ndarray) -> np.ndarray:
    """float32 values (a multiple of 32) -> q8_0 blocks [n, 34]: d = max|v| / 127 (fp16), quants
    round(v / d) (half to even: the kernels' blocks, not a file's, so quants.py's reference rounding,
    six times slower, is not needed)."""
    v = np.ascontiguousarray(values, np.float32).reshape(-1, 32)
    d = np.abs(v).max(axis=1) / np.float32(127)
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d > 0)
    q = np.rint(v * inv[:, None]).astype(np.int8)
    return np.concatenate([_fp16(d), q.view(np.uint8)], axis=1)


@njit(nogil=True, cache=True)
def _k_block_values(blk, d, dmin, out):
    """One q4_K, q5_K (``blk.size`` 144 or 176) or q6_K (210) super-block, its fp16 super-scales
    already widened, -> its 256 values (float32)."""
    if blk.size == 210:
        for h in range(2):
            for l in range(32):
                a, b, hb = np.int32(blk[64 * h + l]), np.int32(blk[64 * h + 32 + l]), np.int32(blk[128 + 32 * h + l])
                e = 128 * h + l
                sc = np.float32(np.int8(blk[192 + e // 16]))   # e, e + 32, e + 64, e + 96: scales 2 apart
                out[e] = d * sc * np.float32(((a & 15) | ((hb & 3) << 4)) - 32)
                sc = np.float32(np.int8(blk[192 + (e + 32) // 16]))
                out[e + 32] = d * sc * np.float32(((b & 15) | (((hb >> 2) & 3) << 4)) - 32)
                sc = np.float32(np.int8(blk[192 + (e + 64) // 16]))
                out[e + 64] = d * sc * np.float32(((a >> 4) | (((hb >> 4) & 3) << 4)) - 32)
                sc = np.float32(np.int8(blk[192 + (e + 96) // 16]))
                out[e + 96] = d * sc * np.float32(((b >> 4) | (((hb >> 6) & 3) << 4)) - 32)
        return
    five = blk.size == 176
    qs = 48 if five else 16
    for j in range(8):                   # get_scale_min_k4
        if j < 4:
            sc, mn = blk[4 + j] & 63, blk[8 + j] & 63
        else:
            sc = (blk[8 + j] & 15) | ((blk[j] >> 6) << 4)
            mn = (blk[8 + j] >> 4) | ((blk[4 + j] >> 6) << 4)
        dl, ml = d * np.float32(sc), dmin * np.float32(mn)
        for l in range(32):
            byte = blk[qs + 32 * (j // 2) + l]
            q = np.int32(byte & 15) if j % 2 == 0 else np.int32(byte >> 4)
            if five:
                q |= np.int32((blk[16 + l] >> j) & 1) << 4
            out[32 * j + l] = dl * np.float32(q) - ml


@njit(nogil=True, cache=True)
def _k_to_q8_0(blocks, d, dmin, dq, q):
    """q4_K / q5_K / q6_K super-blocks [nb, bytes] (d, dmin: their super-scales as float32) ->
    q8_0 scales dq [nb * 8] and quants q [nb * 8, 32]."""
    values = np.empty(256, np.float32)
    for b in range(blocks.shape[0]):
        _k_block_values(blocks[b], d[b], dmin[b], values)
        for k in range(8):
            amax = np.float32(0.0)
            for j in range(32):
                amax = max(amax, abs(values[32 * k + j]))
            dk = amax / np.float32(127.0)
            inv = np.float32(1.0) / dk if dk > 0 else np.float32(0.0)
            dq[8 * b + k] = dk
            for j in range(32):
                q[8 * b + k, j] = np.int8(np.rint(values[32 * k + j] * inv))


def convert_rows(type_name: str, qnt_version: int, raw: np.ndarray, target: tuple[str, int]) -> np.ndarray:
    """Raw rows [rows, row bytes] of a tensor of type_name -> the same rows in the target
    (type, version) that ``stand_in`` chose: unchanged, a K-quant's own stand-in, or else the
    dequantized values re-quantized to q8_0."""
    if type_name == target[0] and (type_name in FLOAT_TYPES or qnt_version == target[1]):
        return raw
    rows = raw.shape[0]
    if type_name in FLOAT_TYPES:
        values = np.ascontiguousarray(raw).view("<f2" if type_name == "f16" else "<f4").astype(np.float32)
        if target[0] == "f32":
            return values.view(np.uint8).reshape(rows, -1)
        return requantize_q8_0(values).reshape(rows, -1)
    fmt = block_format(type_name, qnt_version)
    blocks = np.ascontiguousarray(raw).reshape(-1, fmt.nbytes)
    if STAND_IN.get(type_name) == target[0] and type_name in ("q4_K", "q5_K"):
        out = _k4_to_blocks(type_name, blocks)
    elif STAND_IN.get(type_name) == target[0] and type_name in ("iq4_nl", "iq4_xs"):
        out = _iq4_to_q8_0(type_name, blocks)
    elif target == ("q8_0", 2) and type_name in ("q4_K", "q5_K", "q6_K"):
        dq = np.empty(blocks.shape[0] * 8, np.float32)      # compiled: numpy took 0.35 s per 8M values
        q = np.empty((blocks.shape[0] * 8, 32), np.int8)
        at = kquants.Q6_D if type_name == "q6_K" else kquants.Q4_D
        d = kquants.f16_field(blocks, at)[:, 0]
        dmin = kquants.f16_field(blocks, kquants.Q4_DMIN)[:, 0] if type_name != "q6_K" else d
        _k_to_q8_0(blocks, d, dmin, dq, q)
        out = np.concatenate([_fp16(dq), q.view(np.uint8)], axis=1)
    elif target == ("q8_0", 2):
        out = requantize_q8_0(dequantize_blocks(fmt, blocks))
    else:
        raise ValueError(f"no conversion of {type_name} to {target[0]}")
    return out.reshape(rows, -1)
