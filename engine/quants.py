"""ggml block formats of the legacy GPT-NeoX files: sizes, dequantization and the reference quantizers.

A block format is named by ``(type_name, qnt_version)``:

* version 0 (ggml commits before fe48e22f: the stablelm-era files): the nibbles of element e sit in
  byte e/2, even e in the low nibble ("interleaved"); q4_0/q4_1/q8_0 scales are fp32.
* version 1 (commit 010203f era): element j < 16 is the low nibble of byte j, element j + 16 its high
  nibble ("split halves"); scales as in version 0.
* version 2 (b0d536bb and later, also GGUF): split halves, q4_0/q4_1/q8_0 scales become fp16.

GGUF files also carry the K-quants and IQ4 types (``kquants.K_TYPES``: q2_K ... q6_K, iq4_nl,
iq4_xs), registered here as version-2 formats; their layouts, dequantization and quantizers live in
``engine/kquants.py``.

For the Q5 types bit e of the 32-bit ``qh`` field is the fifth bit of element e in every version.
Every function here is vectorised over whole rows of blocks; spec references are to
``shared/spec/ggml-gpt-neox.md`` §5.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine import kquants
from engine.kquants import K_TYPES

# The types of legacy ggml files (GGUF adds K_TYPES, always in version 2)
TYPE_NAMES = ("f32", "f16", "q4_0", "q4_1", "q4_2", "q4_3", "q5_0", "q5_1", "q8_0")
QUANTIZED_TYPES = ("q4_0", "q4_1", "q4_2", "q4_3", "q5_0", "q5_1", "q8_0")
# Types the quantizer writes (q4_2 and q4_3 existed only in the stablelm era; we read them).
WRITABLE_QUANT_TYPES = ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0")


@dataclass(frozen=True)
class BlockFormat:
    """The byte layout of one block: how many values it holds and where its fields sit."""

    type_name: str
    qnt_version: int
    values: int          # values per block (QK)
    nbytes: int          # bytes per block
    scale_dtype: str     # "f4", "f2" or "" for f32/f16 tensors
    has_min: bool        # a second scale-sized field m (q4_1, q4_3, q5_1)
    has_qh: bool         # a 32-bit field of fifth bits (q5_0, q5_1)
    interleaved: bool    # nibble order of version 0

    @property
    def k_quant(self) -> bool:
        """A K-quant or IQ4 type (kquants.py): sub-block scales, its own byte layout."""
        return self.type_name in K_TYPES


def block_format(type_name: str, qnt_version: int) -> BlockFormat:
    """The block format of a tensor type in a given quantization version (ValueError if none)."""
    v = qnt_version
    if type_name == "f32":
        return BlockFormat("f32", v, 1, 4, "", False, False, False)
    if type_name == "f16":
        return BlockFormat("f16", v, 1, 2, "", False, False, False)
    if v not in (0, 1, 2):
        raise ValueError(f"unknown quantization version {v}")
    if type_name in K_TYPES:
        if v != 2:
            raise ValueError(f"{type_name} exists only in quantization version 2 (GGUF)")
        values, nbytes = kquants.BLOCK_SIZES[type_name]
        return BlockFormat(type_name, 2, values, nbytes, "f2", type_name in ("q2_K", "q4_K", "q5_K"), False, False)
    wide = "f2" if v == 2 else "f4"
    inter = v == 0
    if type_name == "q4_0":
        return BlockFormat("q4_0", v, 32, 16 + (2 if v == 2 else 4), wide, False, False, inter)
    if type_name == "q4_1":
        return BlockFormat("q4_1", v, 32, 16 + (4 if v == 2 else 8), wide, True, False, inter)
    if type_name == "q8_0":
        return BlockFormat("q8_0", v, 32, 32 + (2 if v == 2 else 4), wide, False, False, False)
    if type_name == "q5_0":
        return BlockFormat("q5_0", v, 32, 22, "f2", False, True, inter)
    if type_name == "q5_1":
        return BlockFormat("q5_1", v, 32, 24, "f2", True, True, inter)
    if type_name in ("q4_2", "q4_3"):
        if v != 0:
            raise ValueError(f"{type_name} exists only in quantization version 0")
        return BlockFormat(type_name, 0, 16, 10 if type_name == "q4_2" else 12, "f2",
                           type_name == "q4_3", False, True)
    raise ValueError(f"unknown tensor type {type_name!r}")


def block_info(type_name: str, qnt_version: int) -> tuple[int, int]:
    """(values per block, bytes per block)."""
    f = block_format(type_name, qnt_version)
    return f.values, f.nbytes


def tensor_nbytes(type_name: str, qnt_version: int, n_values: int) -> int:
    """Bytes that n_values of this type occupy (ValueError if not a whole number of blocks)."""
    qk, nb = block_info(type_name, qnt_version)
    if n_values % qk:
        raise ValueError(f"{n_values} values are not a whole number of {type_name} blocks of {qk}")
    return n_values // qk * nb


# ---------------------------------------------------------------------------------------------
# Splitting blocks into their fields

def _scale_bytes(fmt: BlockFormat) -> int:
    return 2 if fmt.scale_dtype == "f2" else 4


def _fields(fmt: BlockFormat, blocks: np.ndarray):
    """Split an [nb, nbytes] uint8 array into (d, m, qh, qs) arrays (m, qh None when absent)."""
    sb = _scale_bytes(fmt)
    sdt = np.dtype("<" + fmt.scale_dtype)
    pos = 0
    d = np.ascontiguousarray(blocks[:, pos:pos + sb]).view(sdt)[:, 0].astype(np.float32)
    pos += sb
    m = None
    if fmt.has_min:
        m = np.ascontiguousarray(blocks[:, pos:pos + sb]).view(sdt)[:, 0].astype(np.float32)
        pos += sb
    qh = None
    if fmt.has_qh:
        qh = np.ascontiguousarray(blocks[:, pos:pos + 4]).view("<u4")[:, 0]
        pos += 4
    qs = blocks[:, pos:]
    return d, m, qh, qs


def _unpack_nibbles(fmt: BlockFormat, qs: np.ndarray) -> np.ndarray:
    """[nb, QK/2] packed bytes -> [nb, QK] values 0..15 in element order."""
    lo = qs & np.uint8(15)
    hi = qs >> np.uint8(4)
    if fmt.interleaved:
        return np.stack([lo, hi], axis=-1).reshape(qs.shape[0], -1)
    return np.concatenate([lo, hi], axis=1)


def _pack_nibbles(fmt: BlockFormat, q: np.ndarray) -> np.ndarray:
    """[nb, QK] values (low 4 bits used) -> [nb, QK/2] packed bytes."""
    q = q.astype(np.uint8) & np.uint8(15)
    if fmt.interleaved:
        return q[:, 0::2] | (q[:, 1::2] << np.uint8(4))
    half = q.shape[1] // 2
    return q[:, :half] | (q[:, half:] << np.uint8(4))


_BIT_WEIGHTS = (np.uint32(1) << np.arange(32, dtype=np.uint32))


def _qh_bits(qh: np.ndarray) -> np.ndarray:
    """[nb] uint32 -> [nb, 32] fifth bits as uint8 (bit e belongs to element e)."""
    return ((qh[:, None] >> np.arange(32, dtype=np.uint32)) & np.uint32(1)).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Dequantization

def dequantize_blocks(fmt: BlockFormat, blocks: np.ndarray) -> np.ndarray:
    """[nb, nbytes] uint8 blocks -> [nb, QK] float32 values."""
    if fmt.k_quant:
        return kquants.dequantize_blocks(fmt.type_name, blocks)
    d, m, qh, qs = _fields(fmt, blocks)
    if fmt.type_name == "q8_0":
        return qs.view(np.int8).astype(np.float32) * d[:, None]
    q = _unpack_nibbles(fmt, qs)
    if fmt.has_qh:
        q = q | (_qh_bits(qh) << np.uint8(4))
    if m is not None:
        return q.astype(np.float32) * d[:, None] + m[:, None]
    offset = 16 if fmt.has_qh else 8
    return (q.astype(np.int16) - offset).astype(np.float32) * d[:, None]


def dequantize(type_name: str, qnt_version: int, raw: np.ndarray, n_values: int) -> np.ndarray:
    """Raw bytes of a tensor (uint8, exactly its size) -> n_values float32 values."""
    raw = np.asarray(raw, dtype=np.uint8).reshape(-1)
    expected = tensor_nbytes(type_name, qnt_version, n_values)
    if raw.size != expected:
        raise ValueError(f"{type_name} data of {n_values} values needs {expected} bytes, got {raw.size}")
    if type_name == "f32":
        return raw.view("<f4").astype(np.float32)
    if type_name == "f16":
        return raw.view("<f2").astype(np.float32)
    fmt = block_format(type_name, qnt_version)
    return dequantize_blocks(fmt, raw.reshape(-1, fmt.nbytes)).reshape(-1)


# ---------------------------------------------------------------------------------------------
# Reference quantizers (spec §5.1-§5.3). All arithmetic in float32 like the C code, rounding
# and truncation exactly as the C casts do.

def _roundf(v: np.ndarray) -> np.ndarray:
    """C roundf: half away from zero. Done in float64, where |v| + 0.5 is exact for any float32."""
    v64 = v.astype(np.float64)
    return np.sign(v64) * np.floor(np.abs(v64) + 0.5)


def _inverse(d: np.ndarray) -> np.ndarray:
    """id = d ? 1.0f/d : 0.0f, in float32."""
    with np.errstate(divide="ignore"):
        return np.where(d != 0, np.float32(1) / np.where(d != 0, d, np.float32(1)), np.float32(0)).astype(np.float32)


def _signed_absmax(x: np.ndarray) -> np.ndarray:
    """The value of largest magnitude per block, the first one on ties (ggml's strict '<' scan)."""
    idx = np.argmax(np.abs(x), axis=1)
    return x[np.arange(x.shape[0]), idx]


def _f32(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float32)


def _quantize_values(fmt: BlockFormat, x: np.ndarray):
    """float32 [nb, QK] -> (d, m, q) with q the unsigned quant per element (before packing)."""
    t, v = fmt.type_name, fmt.qnt_version
    m = None
    if t == "q8_0":
        amax = np.max(np.abs(x), axis=1)
        d = _f32(amax / np.float32(127))
        q = _roundf(_f32(x * _inverse(d)[:, None])).astype(np.int8).view(np.uint8)
        return d, None, q
    if t in ("q4_0", "q4_2", "q5_0"):
        levels = 16 if t == "q5_0" else 8
        d = _f32(_signed_absmax(x) / np.float32(-levels))
        scaled = _f32(x * _inverse(d)[:, None])
        top = 2 * levels - 1
        if t == "q4_0" and v == 0:
            # abea4b76..fe48e22f: q = min(15, (int8)roundf(x*id) + 8)
            q = np.minimum(top, _roundf(scaled) + levels)
        else:
            # q = min(top, (int)(x*id + levels + 0.5f)): a float32 add, then C truncation
            q = np.minimum(top, np.trunc(_f32(scaled + np.float32(levels + 0.5))))
        return d, None, q.astype(np.uint8)
    # Types with a minimum: q4_1, q4_3, q5_1
    mn = np.min(x, axis=1)
    mx = np.max(x, axis=1)
    top = 31 if t == "q5_1" else 15
    d = _f32((mx - mn) / np.float32(top))
    scaled = _f32((x - mn[:, None]) * _inverse(d)[:, None])
    if t == "q4_1" and v == 0:
        q = _roundf(scaled)                                   # (uint8)roundf((x - min)*id)
    elif t == "q4_1":
        q = np.minimum(15, np.trunc(_f32(scaled + np.float32(0.5))))
    else:
        q = np.trunc(_f32(scaled + np.float32(0.5)))          # q4_3, q5_1: no clamp
    m = mn
    return d, m, q.astype(np.uint8)


def quantize_blocks(fmt: BlockFormat, x: np.ndarray) -> np.ndarray:
    """float32 [nb, QK] -> [nb, nbytes] uint8 blocks."""
    if fmt.k_quant:
        return kquants.quantize_blocks(fmt.type_name, x)
    x = np.ascontiguousarray(x, dtype=np.float32)
    d, m, q = _quantize_values(fmt, x)
    sdt = np.dtype("<" + fmt.scale_dtype)
    parts = [d.astype(sdt).reshape(-1, 1).view(np.uint8)]
    if fmt.has_min:
        parts.append(m.astype(sdt).reshape(-1, 1).view(np.uint8))
    if fmt.type_name == "q8_0":
        parts.append(q)
    else:
        if fmt.has_qh:
            qh = ((q >> np.uint8(4)) & np.uint8(1)).astype(np.uint32) @ _BIT_WEIGHTS
            parts.append(qh.astype("<u4").reshape(-1, 1).view(np.uint8))
        parts.append(_pack_nibbles(fmt, q))
    out = np.concatenate(parts, axis=1)
    assert out.shape[1] == fmt.nbytes
    return out


def quantize(type_name: str, qnt_version: int, x: np.ndarray) -> np.ndarray:
    """float32 values (a whole number of blocks) -> the tensor's raw bytes as uint8."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if type_name == "f32":
        return x.astype("<f4").view(np.uint8)
    if type_name == "f16":
        return x.astype("<f2").view(np.uint8)
    fmt = block_format(type_name, qnt_version)
    if x.size % fmt.values:
        raise ValueError(f"{x.size} values are not a whole number of {type_name} blocks of {fmt.values}")
    return quantize_blocks(fmt, x.reshape(-1, fmt.values)).reshape(-1)
