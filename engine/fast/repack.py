"""Load-time repacking of the weight matrices into the layout the kernels stream through.

A ggml row is a run of blocks, each holding its scale(s) next to its quants. Dotting one row
with x needs a horizontal sum per 32-value block, which numba's vectoriser turns into slow code.
So the rows are regrouped into tiles of ``TILE`` rows and stored "row-minor": for tile t, block b
and quant byte j, the bytes of the tile's rows are contiguous (``qs[layer, t, b, j, row]``), and
the scales likewise (``d[layer, t, b, row]``). A kernel then keeps one accumulator per row in a
vector lane and never reduces across lanes.

Nothing is converted to float: quants stay 4 or 8 bits, fp16 scales stay 16 bits (the kernels
widen them), fp32 scales stay fp32, so the repacked matrices take the same bytes as in the file.
The bytes are read with plain file reads, not through the memory map, so the file's pages do not
also count in our resident memory. Version-0 files (interleaved nibbles: element 2j in the low,
2j+1 in the high nibble of byte j) are converted to the split order of versions 1/2 (element j
low, j + half high), which is also the bit order of the Q5 ``qh`` field in every version.

f16 and f32 matrices keep their row-major layout (a long contiguous dot per row vectorises well).

On a CPU with AVX2 (``simd.INT8_DOT``) the 32-value types q4_0, q4_1, q5_0, q5_1 and q8_0 take
the "lanes" layout of the integer kernels instead: groups of 8 rows (one per int32 lane of a
256-bit vector), and in a group, per block, the quant bytes in runs of 4 per row
(``qs[layer, group, block, (run, row, 4 bytes)]``), so that one 32-byte load holds bytes 4k..4k+3
of 8 rows: what ``vpdpbusd`` / ``vpmaddubsw`` multiply by 4 broadcast activations. Scales, mins
and 5th-bit fields are ``[layer, group, block, row]``. Rows are still padded to a whole TILE.

GGUF's K-quants (q2_K..q6_K), iq4_nl and iq4_xs matrices take lanes layouts of their own where the
integer kernels are (``K_LANE_TYPES``): q4_K/q5_K the quants as q4_1/q5_1 with the 6-bit scales and
mins as bytes and the super-blocks' d and -dmin; q6_K the low nibbles as q4_1, its high 2 bits in
64 bytes a block and group, int8 half-block scales and the super-blocks' d; q3_K and q2_K their
2-bit fields as q6_K's high bits (and q3_K's third bits as the q5 5th bits), their half-block scales
(and q2_K's mins) as bytes; the IQ4 types their indices as q4_0's nibbles (``matvec.block_scales``,
``matvec.half_offsets``, ``matvec.iq4_lookup``): the file's bits a weight, or 1/8 to 3/16 bit more (q2_K
5/8 more: its 4-bit scales and mins take a byte each).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numba import njit

from engine.errors import ModelFormatError
from engine.fast.kquant_repack import K_NATIVE, convert_rows, stand_in
from engine.fast.simd import INT8_DOT, half_to_float
from engine.quants import block_format

TILE = 64                      # rows per tile: four AVX-512 or eight AVX2 float vectors
LANES = 8                      # rows per group of the lanes layout (int32 lanes of a 256-bit vector)
CHUNK_BYTES = 8 << 20          # read the file in pieces of about this size

NIBBLE_TYPES = ("q4_0", "q4_1", "q5_0", "q5_1", "q4_2", "q4_3")
K_LANE_TYPES = K_NATIVE        # K-quants the integer kernels run as they are (``matvec.block_scales``)
LANE_TYPES = ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0") + K_LANE_TYPES if INT8_DOT else ()
K_QK = 256                     # values per K-quant super-block
K_SUPER = K_QK // 32           # blocks of 32 per super-block
K_SCALE_BYTES = 2 * LANES      # q4_K/q5_K: per block and group, the 8 rows' scales then their mins
Q6_BITS_BYTES = 8 * LANES      # q6_K: per block and group, the high 2 bits of 8 rows' 32 values


def layout_of(type_name: str) -> str:
    """"rows" (f16/f32), "lanes" (the integer kernels' types) or "tiles" (the float kernels')."""
    if type_name in ("f16", "f32"):
        return "rows"
    return "lanes" if type_name in LANE_TYPES else "tiles"


@dataclass
class PackedMatrix:
    """One kind of weight matrix for every layer, in the kernels' layout.

    ``arrays`` is always four arrays, whatever the type, so every kernel has one signature:

    * nibble types, tiles: (qs uint8 [L, T, nb, half, TILE], d [L, T, nb, TILE] uint16 (fp16 bits)
      or float32, m like d or a 1-element dummy, qh uint32 [L, T, nb, TILE] or a dummy)
    * q8_0, tiles: (qs int8 [L, T, nb, 32, TILE], d, dummy, dummy)
    * lanes: (qs uint8 [L, G, nb, 128] (int8 [L, G, nb, 256] for q8_0), d [L, G, nb, 8],
      m like d or a dummy, hb uint8 [L, G, nb, 32] or a dummy), G = 8 groups per tile; hb holds
      the 5th bits of the q5 types rearranged to match the quant runs (``_fifth_bit_bytes``)
    * f16 / f32: (w uint16 (fp16 bits) or float32 [L, rows, cols], dummies)
    * the K-quants' and IQ4's own lanes layouts (``K_LANE_TYPES``), told apart by the arrays' types:
      q4_K/q5_K (qs as q4_1, d uint8 [L, G, nb, 16] scales and mins, m uint16 [L, G, nsb, 16] the
      super-blocks' d and -dmin, hb as q5_1 or a dummy); q6_K (qs as q4_1, d int8 [L, G, nb, 16]
      half-block scales, m uint16 [L, G, nsb, 8], hb uint8 [L, G, nb, 64] the high 2 bits);
      iq4_nl (q4_0's arrays with an int8 dummy as hb); iq4_xs (qs, d int8 [L, G, nb, 8], m uint16
      [L, G, nsb, 8], an int8 dummy); q3_K (qs uint8 [L, G, nb, 64] the low 2 bits, d int8 [L, G, nb, 16],
      m float32 [L, G, nsb, 8] d / 16, hb uint8 [L, G, nb, 32] the third bits); q2_K (qs as q3_K's,
      d uint8 [L, G, nb, 32] scales and mins, m float32 [L, G, nsb, 16] d / 16 and -dmin, a uint8
      dummy), nsb = nb / K_SUPER super-blocks a row (``matvec.kind_of`` tells q6_K, q3_K, q2_K apart)
    """

    type: str
    rows: int
    cols: int
    n_layers: int
    arrays: tuple

    @property
    def tiled(self) -> bool:
        return self.type not in ("f16", "f32")

    @property
    def layout(self) -> str:
        return layout_of(self.type)

    @property
    def padded_rows(self) -> int:
        """Length an output buffer needs: tiled kernels write whole tiles."""
        return -(-self.rows // TILE) * TILE if self.tiled else self.rows

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)

    def for_layer(self, layer: int) -> tuple[tuple, int]:
        """(the four arrays that hold ``layer``, its index in them)."""
        return self.arrays, layer


@dataclass
class MixedMatrix:
    """One kind of weight matrix whose layers come in two types (a "q4_K_M" file keeps ffn_down in
    q6_K in some layers, q4_K in the others), each type's layers in a PackedMatrix of their own.

    ``arrays`` is the first's four arrays, the second's four and ``select`` (int64 [n_layers]:
    i >= 0 for layer i of the first, -1 - i for layer i of the second): the compiled forward pass
    takes that tuple of nine where it takes four for one type (``forward._product_of``). Both are
    lanes layouts, so x is prepared the same way for either."""

    first: PackedMatrix
    second: PackedMatrix
    select: np.ndarray

    @property
    def type(self) -> str:
        return f"{self.first.type}+{self.second.type}"

    rows = property(lambda self: self.first.rows)
    cols = property(lambda self: self.first.cols)
    n_layers = property(lambda self: self.select.size)
    tiled = property(lambda self: True)
    layout = property(lambda self: "lanes")
    padded_rows = property(lambda self: self.first.padded_rows)

    @property
    def arrays(self) -> tuple:
        return (*self.first.arrays, *self.second.arrays, self.select)

    @property
    def nbytes(self) -> int:
        return self.first.nbytes + self.second.nbytes + self.select.nbytes

    def for_layer(self, layer: int) -> tuple[tuple, int]:
        i = int(self.select[layer])
        return (self.first.arrays, i) if i >= 0 else (self.second.arrays, -1 - i)


def _dummy(dtype, ndim: int) -> np.ndarray:
    return np.zeros((1,) * ndim, dtype=dtype)


def _read_rows(fh, path: str, info, r0: int, r1: int, scratch: list) -> np.ndarray:
    """Raw bytes of rows r0..r1 of a tensor as uint8 [r1 - r0, row_bytes], as the tensor presents
    them: ``TensorInfo.read_rows`` (a file read, not the map; a GGUF file's QKV rows in the order the
    kernels compute with, BF16 widened). Every read of the repack goes through here."""
    return info.read_rows(fh, path, r0, r1, scratch)


def _split_order(qs: np.ndarray) -> np.ndarray:
    """Version-0 interleaved nibble bytes [..., half] -> split order (element j low, j + half high)."""
    lo = qs & np.uint8(15)
    hi = qs >> np.uint8(4)
    vals = np.stack([lo, hi], axis=-1).reshape(*qs.shape[:-1], 2 * qs.shape[-1])   # element order
    half = qs.shape[-1]
    return vals[..., :half] | (vals[..., half:] << np.uint8(4))


def _tiles(a: np.ndarray) -> np.ndarray:
    """[rows, ...] with rows a multiple of TILE -> [rows/TILE, ..., TILE] (row index last)."""
    t = a.reshape(a.shape[0] // TILE, TILE, *a.shape[1:])
    return np.moveaxis(t, 1, -1)


@njit(nogil=True, cache=True)
def _gather_runs(src, start, length, run, dst):
    """Bytes start..start+length of each row's blocks (src [rows, nb, block bytes]) -> dst [rows/8, nb, length*8].

    In dst each group of 8 rows holds, per block, the bytes in runs of ``run`` per row: run c of
    rows 0..7, then run c+1, ... (run = the scale's size for scales: one run per row). dst is
    written in order; flat indices keep the loop free of per-row array views.
    """
    n, nb, nbytes = src.shape
    flat = src.reshape(src.size)
    out = dst.reshape(dst.size)
    o = 0
    for g in range(n // LANES):
        for b in range(nb):
            for c in range(length // run):
                for r in range(LANES):
                    s = ((g * LANES + r) * nb + b) * nbytes + start + c * run
                    if run == 4:
                        out[o] = flat[s]
                        out[o + 1] = flat[s + 1]
                        out[o + 2] = flat[s + 2]
                        out[o + 3] = flat[s + 3]
                    else:
                        for i in range(run):
                            out[o + i] = flat[s + i]
                    o += run


@njit(nogil=True, cache=True)
def _fifth_bit_bytes(src, start, out):
    """q5 5th-bit fields (4 bytes at ``start`` of each block; bit j: value j) -> out [rows, nb, 4].

    Byte i of a row holds in bit k the 5th bit of value 4k+i (the low nibble of byte i of run k)
    and in bit 4+k that of value 16+4k+i (its high nibble), so a kernel gets the bits of run k
    into place (16 or 0 per byte) with one shift and one mask.
    """
    for r in range(src.shape[0]):
        for b in range(src.shape[1]):
            blk = src[r, b]
            qh = (np.uint32(blk[start]) | (np.uint32(blk[start + 1]) << 8) | (np.uint32(blk[start + 2]) << 16)
                  | (np.uint32(blk[start + 3]) << 24))
            for i in range(4):
                v = np.uint32(0)
                for k in range(4):
                    v |= ((qh >> np.uint32(4 * k + i)) & np.uint32(1)) << np.uint32(k)
                    v |= ((qh >> np.uint32(16 + 4 * k + i)) & np.uint32(1)) << np.uint32(4 + k)
                out[r, b, i] = np.uint8(v)


# The K-quant and IQ4 super-blocks scattered into their lanes layouts (see PackedMatrix), compiled
# and without temporaries: numpy's unpacking of a chunk left tens of MiB of freed temporaries in
# malloc's heap (50 MiB more resident after loading a 1.4B Q4_K_M file than a legacy q4_0 one).
# Each writes, for row r of the chunk (group r // LANES, lane r % LANES) and block b, the byte of
# run k and byte i at qs[g, b, 32 k + 4 lane + i]: values 4k + i (low nibble) and 16 + 4k + i (high).


@njit(nogil=True, cache=True, inline="always")
def _put_nibbles(vals, qs, g, b, lane):
    """32 values 0..15 of one block -> their 16 bytes in the lanes layout (q4_1's nibble order)."""
    for k in range(4):
        for i in range(4):
            qs[g, b, 32 * k + 4 * lane + i] = (vals[4 * k + i] & 15) | ((vals[16 + 4 * k + i] & 15) << 4)


@njit(nogil=True, cache=True, inline="always")
def _fp16_bits(blk, at):
    return np.uint16(blk[at]) | (np.uint16(blk[at + 1]) << np.uint16(8))


@njit(nogil=True, cache=True)
def _scatter_k4(blocks, five, qs, d, m, qh):
    """q4_K / q5_K super-blocks [rows, nsb, 144 or 176]: quants, the 6-bit scales and mins as bytes,
    d and -dmin (the sign bit flipped), and q5_K's 5th bits as ``_fifth_bit_bytes`` lays them out."""
    vals = np.empty(32, np.uint8)
    qoff = 48 if five else 16
    for r in range(blocks.shape[0]):
        g, lane = r // LANES, r % LANES
        for s in range(blocks.shape[1]):
            blk = blocks[r, s]
            m[g, s, lane] = _fp16_bits(blk, 0)
            m[g, s, LANES + lane] = _fp16_bits(blk, 2) ^ np.uint16(0x8000)
            for j in range(K_SUPER):
                if j < 4:                      # get_scale_min_k4
                    sc, mn = blk[4 + j] & 63, blk[8 + j] & 63
                else:
                    sc = (blk[8 + j] & 15) | ((blk[j] >> 6) << 4)
                    mn = (blk[8 + j] >> 4) | ((blk[4 + j] >> 6) << 4)
                b = s * K_SUPER + j
                d[g, b, lane] = sc
                d[g, b, LANES + lane] = mn
                for v in range(32):
                    byte = blk[qoff + 32 * (j // 2) + v]
                    vals[v] = byte & 15 if j % 2 == 0 else byte >> 4
                _put_nibbles(vals, qs, g, b, lane)
                if five:                       # bit k of byte i: value 4k + i; bit 4 + k: value 16 + 4k + i
                    for i in range(4):
                        bits = 0
                        for k in range(4):
                            bits |= ((blk[16 + 4 * k + i] >> j) & 1) << k
                            bits |= ((blk[16 + 16 + 4 * k + i] >> j) & 1) << (4 + k)
                        qh[g, b, 4 * lane + i] = bits


@njit(nogil=True, cache=True)
def _scatter_q6(blocks, qs, d, m, qh):
    """q6_K super-blocks [rows, nsb, 210]: the low nibbles of the unsigned quants (q + 32), the high
    2 bits of value 4k + i (half h: + 16 h) in bits 2k, 2k + 1 of qh byte 32 h + 4 lane + i (what
    ``simd.sixth_bits`` moves into place), the int8 half-block scales and d."""
    vals = np.empty(256, np.uint8)
    for r in range(blocks.shape[0]):
        g, lane = r // LANES, r % LANES
        for s in range(blocks.shape[1]):
            blk = blocks[r, s]
            m[g, s, lane] = _fp16_bits(blk, 208)
            for h in range(2):                 # dequantize_row_q6_K's element order
                for v in range(32):
                    a, c, hb = blk[64 * h + v], blk[64 * h + 32 + v], blk[128 + 32 * h + v]
                    e = 128 * h + v
                    vals[e] = (a & 15) | ((hb & 3) << 4)
                    vals[e + 32] = (c & 15) | (((hb >> 2) & 3) << 4)
                    vals[e + 64] = (a >> 4) | (((hb >> 4) & 3) << 4)
                    vals[e + 96] = (c >> 4) | (((hb >> 6) & 3) << 4)
            for j in range(K_SUPER):
                b = s * K_SUPER + j
                block = vals[32 * j:32 * j + 32]
                d[g, b, lane] = np.int8(blk[192 + 2 * j])
                d[g, b, LANES + lane] = np.int8(blk[192 + 2 * j + 1])
                _put_nibbles(block, qs, g, b, lane)
                _put_crumbs(block, qh, g, b, lane, 4)


@njit(nogil=True, cache=True, inline="always")
def _put_crumbs(vals, qs, g, b, lane, shift):
    """Bits shift, shift + 1 of 32 values of one block -> 2 bits of value 16 h + 4k + i in bits 2k, 2k + 1
    of byte 32 h + 4 lane + i (``simd.sixth_bits`` moves them into bits 4-5)."""
    for half in range(2):
        for i in range(4):
            bits = 0
            for k in range(4):
                bits |= ((vals[16 * half + 4 * k + i] >> shift) & 3) << (2 * k)
            qs[g, b, 32 * half + 4 * lane + i] = bits


@njit(nogil=True, cache=True, inline="always")
def _crumb_values(blk, at, vals):
    """The 2-bit fields of a q2_K / q3_K super-block (64 bytes at ``at``) -> vals[256] in element order
    (``kquants.crumbs``: byte l of half h holds elements 128 h + l, + 32, + 64, + 96)."""
    for e in range(256):
        vals[e] = (blk[at + 32 * (e // 128) + e % 32] >> (2 * ((e % 128) // 32))) & 3


@njit(nogil=True, cache=True)
def _scatter_q3(blocks, qs, d, m, qh):
    """q3_K super-blocks [rows, nsb, 110]: the unsigned quants u = q + 4 (0..7), their low 2 bits as
    ``_put_crumbs`` lays them out, their third bits as ``_fifth_bit_bytes`` does, the 6-bit scales less
    32 as int8 (values 0-15 of block b: scale 2b, 16-31: 2b + 1) and d / 16 as float32 (the kernels
    widen the quants to 16 u)."""
    vals = np.empty(256, np.uint8)
    for r in range(blocks.shape[0]):
        g, lane = r // LANES, r % LANES
        for s in range(blocks.shape[1]):
            blk = blocks[r, s]
            m[g, s, lane] = half_to_float(_fp16_bits(blk, 108)) / np.float32(16.0)
            _crumb_values(blk, 32, vals)
            for e in range(256):               # hmask: bit e // 32 of byte e % 32
                vals[e] |= ((blk[e % 32] >> (e // 32)) & 1) << 2
            for j in range(K_SUPER):
                b = s * K_SUPER + j
                for half in range(2):
                    sub = 2 * j + half
                    sc = ((blk[96 + sub % 8] >> (4 * (sub // 8))) & 15) | (((blk[104 + sub % 4] >> (2 * (sub // 4))) & 3) << 4)
                    d[g, b, LANES * half + lane] = np.int8(np.int32(sc) - 32)
                block = vals[32 * j:32 * j + 32]
                _put_crumbs(block, qs, g, b, lane, 0)
                for i in range(4):
                    bits = 0
                    for k in range(4):
                        bits |= ((block[4 * k + i] >> 2) & 1) << k
                        bits |= ((block[16 + 4 * k + i] >> 2) & 1) << (4 + k)
                    qh[g, b, 4 * lane + i] = bits


@njit(nogil=True, cache=True)
def _scatter_q2(blocks, qs, d, m):
    """q2_K super-blocks [rows, nsb, 84]: the 2-bit quants as ``_put_crumbs`` lays them out, the 4-bit
    scales and mins of the two halves of each block as bytes, d / 16 and -dmin as float32."""
    vals = np.empty(256, np.uint8)
    for r in range(blocks.shape[0]):
        g, lane = r // LANES, r % LANES
        for s in range(blocks.shape[1]):
            blk = blocks[r, s]
            m[g, s, lane] = half_to_float(_fp16_bits(blk, 80)) / np.float32(16.0)
            m[g, s, LANES + lane] = -half_to_float(_fp16_bits(blk, 82))
            _crumb_values(blk, 16, vals)
            for j in range(K_SUPER):
                b = s * K_SUPER + j
                for half in range(2):
                    sc = blk[2 * j + half]
                    d[g, b, LANES * half + lane] = sc & 15
                    d[g, b, 2 * LANES + LANES * half + lane] = sc >> 4
                _put_crumbs(vals[32 * j:32 * j + 32], qs, g, b, lane, 0)


@njit(nogil=True, cache=True)
def _scatter_xs(blocks, qs, d, m):
    """iq4_xs super-blocks [rows, nsb, 136]: the indices as they are (each block's 16 bytes hold value
    l low, l + 16 high: the lanes order), the 6-bit block scales less 32 as int8, d."""
    for r in range(blocks.shape[0]):
        g, lane = r // LANES, r % LANES
        for s in range(blocks.shape[1]):
            blk = blocks[r, s]
            m[g, s, lane] = _fp16_bits(blk, 0)
            high = _fp16_bits(blk, 2)
            for j in range(K_SUPER):
                b = s * K_SUPER + j
                low = (blk[4 + j // 2] >> (4 * (j % 2))) & 15
                d[g, b, lane] = np.int8(np.int32(low | (((high >> (2 * j)) & 3) << 4)) - 32)
                for k in range(4):
                    for i in range(4):
                        qs[g, b, 32 * k + 4 * lane + i] = blk[8 + 16 * j + 4 * k + i]


class _Packer:
    """Builds the arrays of one PackedMatrix layer by layer, reading each tensor in chunks."""

    def __init__(self, type_name: str, qnt_version: int, rows: int, cols: int, n_layers: int):
        self.type, self.rows, self.cols, self.L = type_name, rows, cols, n_layers
        if type_name in ("f16", "f32"):
            dt = np.uint16 if type_name == "f16" else np.float32
            self.arrays = (np.empty((n_layers, rows, cols), dt), _dummy(np.float32, 4),
                           _dummy(np.float32, 4), _dummy(np.uint32, 4))
            return
        fmt = block_format(type_name, qnt_version)
        self.fmt = fmt
        self.nb = cols // fmt.values
        self.lanes = layout_of(type_name) == "lanes"
        T = -(-rows // TILE)
        if type_name == "q6_K" and type_name in K_LANE_TYPES:
            G, nb = T * (TILE // LANES), cols // 32
            self.arrays = (np.zeros((n_layers, G, nb, 16 * LANES), np.uint8),
                           np.zeros((n_layers, G, nb, 2 * LANES), np.int8),
                           np.zeros((n_layers, G, cols // K_QK, LANES), np.uint16),
                           np.zeros((n_layers, G, nb, Q6_BITS_BYTES), np.uint8))
            return
        if type_name in ("q3_K", "q2_K") and type_name in K_LANE_TYPES:
            G, nb, nsb = T * (TILE // LANES), cols // 32, cols // K_QK
            q3 = type_name == "q3_K"
            self.arrays = (np.zeros((n_layers, G, nb, Q6_BITS_BYTES), np.uint8),
                           np.zeros((n_layers, G, nb, (2 if q3 else 4) * LANES), np.int8 if q3 else np.uint8),
                           np.zeros((n_layers, G, nsb, (1 if q3 else 2) * LANES), np.float32),
                           np.zeros((n_layers, G, nb, 4 * LANES), np.uint8) if q3 else _dummy(np.uint8, 4))
            return
        if type_name == "iq4_xs" and type_name in K_LANE_TYPES:
            G, nb = T * (TILE // LANES), cols // 32
            self.arrays = (np.zeros((n_layers, G, nb, 16 * LANES), np.uint8), np.zeros((n_layers, G, nb, LANES), np.int8),
                           np.zeros((n_layers, G, cols // K_QK, LANES), np.uint16), _dummy(np.int8, 4))
            return
        if type_name in ("q4_K", "q5_K") and type_name in K_LANE_TYPES:
            self._k_arrays(n_layers, T * (TILE // LANES), cols)
            return
        sdt = np.uint16 if fmt.scale_dtype == "f2" else np.float32
        qdt = np.int8 if type_name == "q8_0" else np.uint8
        qbytes = 32 if type_name == "q8_0" else fmt.values // 2       # quant bytes per block and row
        # np.zeros: the padding rows of the last tile must be zero (they are computed, then ignored)
        if self.lanes:
            G = T * (TILE // LANES)
            qs = np.zeros((n_layers, G, self.nb, qbytes * LANES), qdt)
            d = np.zeros((n_layers, G, self.nb, LANES), sdt)
            qh_shape, qh_dtype = (n_layers, G, self.nb, 4 * LANES), np.uint8
        else:
            qs = np.zeros((n_layers, T, self.nb, qbytes, TILE), qdt)
            d = np.zeros((n_layers, T, self.nb, TILE), sdt)
            qh_shape, qh_dtype = d.shape, np.uint32
        m = np.zeros_like(d) if fmt.has_min else _dummy(sdt, 4)
        qh = np.zeros(qh_shape, qh_dtype) if fmt.has_qh else _dummy(qh_dtype, 4)
        if type_name == "iq4_nl":     # q4_0's arrays; an int8 dummy marks the iq4 layouts (matvec.iq4_lookup)
            qh = _dummy(np.int8, 4)
        self.arrays = (qs, d, m, qh)

    def _k_arrays(self, n_layers: int, groups: int, cols: int) -> None:
        """q4_K / q5_K: the quants of q4_1 / q5_1, the 6-bit scales and mins as bytes, and per
        super-block d and -dmin (see ``matvec.block_scales``)."""
        nb, nsb = cols // 32, cols // K_QK
        qs = np.zeros((n_layers, groups, nb, 16 * LANES), np.uint8)
        d = np.zeros((n_layers, groups, nb, 2 * LANES), np.uint8)
        m = np.zeros((n_layers, groups, nsb, 2 * LANES), np.uint16)
        qh = np.zeros((n_layers, groups, nb, 4 * LANES), np.uint8) if self.type == "q5_K" else _dummy(np.uint8, 4)
        self.arrays = (qs, d, m, qh)

    def add(self, fh, path: str, layer: int, info, scratch: list) -> None:
        if info.shape != (self.rows, self.cols):
            raise ModelFormatError(path, info.offset, f"tensor {info.name!r} is {list(info.shape)}, "
                                   f"expected {[self.rows, self.cols]} like the other layers")
        target = (self.type, self.fmt.qnt_version if self.tiled else 0)
        row_bytes = info.nbytes // self.rows
        step = max(TILE, CHUNK_BYTES // max(row_bytes, 1) // TILE * TILE)
        for r0 in range(0, self.rows, step):
            r1 = min(self.rows, r0 + step)
            # K-quants, and layers of mixed types: rows of the kernels' type (kquant_repack.py)
            raw = convert_rows(info.type, info.qnt_version, _read_rows(fh, path, info, r0, r1, scratch), target)
            if not self.tiled:
                dt = np.dtype("<u2") if self.type == "f16" else np.dtype("<f4")
                self.arrays[0][layer, r0:r1] = raw.view(dt)
            else:
                self._add_blocks(layer, r0, raw)

    @property
    def tiled(self) -> bool:
        return self.type not in ("f16", "f32")

    def _add_blocks(self, layer: int, r0: int, raw: np.ndarray) -> None:
        fmt = self.fmt
        n = raw.shape[0]
        pad = -n % TILE                        # only the last chunk of a matrix can be ragged
        if pad:
            raw = np.concatenate([raw, np.zeros((pad, raw.shape[1]), np.uint8)])
        blocks = raw.reshape(raw.shape[0], self.nb, fmt.nbytes)
        if self.type == "q6_K" and self.lanes:
            self._add_q6_blocks(layer, r0, blocks)
            return
        if self.type == "iq4_xs" and self.lanes:
            self._add_xs_blocks(layer, r0, blocks)
            return
        if self.type in ("q3_K", "q2_K") and self.lanes:
            qs, d, m, qh = self.arrays
            s0, s1 = r0 // LANES, (r0 + blocks.shape[0]) // LANES
            if self.type == "q3_K":
                _scatter_q3(blocks, qs[layer, s0:s1], d[layer, s0:s1], m[layer, s0:s1], qh[layer, s0:s1])
            else:
                _scatter_q2(blocks, qs[layer, s0:s1], d[layer, s0:s1], m[layer, s0:s1])
            return
        if self.type in ("q4_K", "q5_K") and self.lanes:
            self._add_k_blocks(layer, r0, blocks)
            return
        if self.lanes:
            self._add_lane_blocks(layer, r0, blocks)
            return
        regroup, s0, s1 = _tiles, r0 // TILE, (r0 + raw.shape[0]) // TILE
        qs, d, m, qh = self.arrays
        sb = 2 if fmt.scale_dtype == "f2" else 4
        sdt = np.dtype("<u2") if sb == 2 else np.dtype("<f4")
        pos = 0
        d[layer, s0:s1] = regroup(np.ascontiguousarray(blocks[:, :, pos:pos + sb]).view(sdt)[..., 0])
        pos += sb
        if fmt.has_min:
            m[layer, s0:s1] = regroup(np.ascontiguousarray(blocks[:, :, pos:pos + sb]).view(sdt)[..., 0])
            pos += sb
        if fmt.has_qh:
            qh[layer, s0:s1] = regroup(np.ascontiguousarray(blocks[:, :, pos:pos + 4]).view("<u4")[..., 0])
            pos += 4
        q = blocks[:, :, pos:]
        if self.type == "q8_0":
            q = q.view(np.int8)
        elif fmt.interleaved:
            q = _split_order(q)
        qs[layer, s0:s1] = regroup(q)

    def _add_lane_blocks(self, layer: int, r0: int, blocks: np.ndarray) -> None:
        """Scatter whole blocks [rows, nb, block bytes] into the lanes layout (compiled: numpy's
        transposes made a 1.4B q8_0 file take 7 s to load)."""
        fmt = self.fmt
        qs, d, m, qh = self.arrays
        s0, s1 = r0 // LANES, (r0 + blocks.shape[0]) // LANES
        sb = 2 if fmt.scale_dtype == "f2" else 4
        pos = 0
        _gather_runs(blocks, pos, sb, sb, d[layer, s0:s1].view(np.uint8))
        pos += sb
        if fmt.has_min:
            _gather_runs(blocks, pos, sb, sb, m[layer, s0:s1].view(np.uint8))
            pos += sb
        if fmt.has_qh:
            bits = np.empty((blocks.shape[0], self.nb, 4), np.uint8)
            _fifth_bit_bytes(blocks, pos, bits)
            _gather_runs(bits, 0, 4, 4, qh[layer, s0:s1])
            pos += 4
        dst = qs[layer, s0:s1].view(np.uint8)
        if fmt.interleaved:
            _gather_runs(_split_order(blocks[:, :, pos:]), 0, fmt.nbytes - pos, 4, dst)
        else:
            _gather_runs(blocks, pos, fmt.nbytes - pos, 4, dst)

    def _add_k_blocks(self, layer: int, r0: int, blocks: np.ndarray) -> None:
        qs, d, m, qh = self.arrays
        s0, s1 = r0 // LANES, (r0 + blocks.shape[0]) // LANES
        five = self.type == "q5_K"
        _scatter_k4(blocks, five, qs[layer, s0:s1], d[layer, s0:s1], m[layer, s0:s1], qh[layer, s0:s1] if five else qh)

    def _add_xs_blocks(self, layer: int, r0: int, blocks: np.ndarray) -> None:
        qs, d, m, _ = self.arrays
        s0, s1 = r0 // LANES, (r0 + blocks.shape[0]) // LANES
        _scatter_xs(blocks, qs[layer, s0:s1], d[layer, s0:s1], m[layer, s0:s1])

    def _add_q6_blocks(self, layer: int, r0: int, blocks: np.ndarray) -> None:
        qs, d, m, qh = self.arrays
        s0, s1 = r0 // LANES, (r0 + blocks.shape[0]) // LANES
        _scatter_q6(blocks, qs[layer, s0:s1], d[layer, s0:s1], m[layer, s0:s1], qh[layer, s0:s1])

    def result(self) -> PackedMatrix:
        return PackedMatrix(self.type, self.rows, self.cols, self.L, self.arrays)


def pack_matrices(path: str, infos: list, threads: int = 1) -> PackedMatrix | MixedMatrix:
    """Repack the same matrix of every layer (``infos[layer]``: the file's TensorInfo records).

    Layers of two types that both have a lanes layout (a K-quant mix) are packed as a MixedMatrix,
    each type as it is; other mixes take one stand-in type for every layer (``kquant_repack.stand_in``).
    With ``threads`` > 1 the layers are shared between threads (file reads and the compiled
    scatter release the GIL), each with its own file handle and read buffer.
    """
    first = infos[0]
    if len(first.shape) != 2:
        raise ModelFormatError(path, first.offset, f"tensor {first.name!r} is not a matrix")
    kinds = [stand_in([(i.type, i.qnt_version)]) for i in infos]
    distinct = sorted(set(kinds), key=kinds.index)
    if len(distinct) == 2 and all(layout_of(t) == "lanes" for t, _ in distinct):
        groups = [[i for i, k in enumerate(kinds) if k == kind] for kind in distinct]
        select = np.empty(len(infos), np.int64)
        for n, layer in enumerate(groups[0]):
            select[layer] = n
        for n, layer in enumerate(groups[1]):
            select[layer] = -1 - n
        a, b = (_pack_uniform(path, [infos[i] for i in g], threads) for g in groups)
        return MixedMatrix(a, b, select)
    return _pack_uniform(path, infos, threads)


def _pack_uniform(path: str, infos: list, threads: int) -> PackedMatrix:
    """Every layer in the one type ``stand_in`` chooses for them all."""
    rows, cols = infos[0].shape
    packer = _Packer(*stand_in([(i.type, i.qnt_version) for i in infos]), rows, cols, len(infos))

    def pack_layers(part: int, parts: int) -> None:
        scratch = [np.empty(0, np.uint8)]
        with open(path, "rb") as fh:
            for layer in range(part, len(infos), parts):
                packer.add(fh, path, layer, infos[layer], scratch)

    parts = max(1, min(threads, len(infos)))
    if parts == 1:
        pack_layers(0, 1)
    else:
        with ThreadPoolExecutor(parts, thread_name_prefix="neox-repack") as pool:
            for done in [pool.submit(pack_layers, p, parts) for p in range(parts)]:
                done.result()          # re-raises a worker's ModelFormatError
    return packer.result()
