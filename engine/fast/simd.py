"""256-bit vector values for numba kernels, written as LLVM IR: the integer dot products ggml uses.

numba types every small integer operation as int64, so a loop of int8 x int8 products never
becomes the byte instructions that make ggml fast (``vpmaddubsw`` on AVX2, ``vpdpbusd`` with
VNNI: 32 multiply-adds in one or three instructions). The kernels of ``matvec.py`` therefore
handle vectors as values of three numba types backed by LLVM vector types, with a few
operations implemented as LLVM IR through ``numba.extending.intrinsic``:

* ``Bytes32`` (<32 x i8>): 32 quant bytes, or a 4-byte group of activations broadcast 8 times;
* ``Ints8`` (<8 x i32>): per-lane integer sums, one lane per weight row;
* ``Floats8`` (<8 x float>): per-lane float accumulators.

``dot4(acc, u, s)`` adds, in each of 8 int32 lanes, the 4 products of unsigned bytes ``u`` and
signed bytes ``s``: one ``vpdpbusd`` with VNNI, ``vpmaddubsw`` + ``vpmaddwd`` + ``vpaddd`` on
AVX2. Which one is decided once at import from the CPU's features (numba caches compiled code
per CPU model and feature set, so a cache made here is never used on a CPU without them).
Without AVX2 (an ARM Mac, an old PC) ``INT8_DOT`` is None and the engine keeps its float
kernels. ``NEOX_WRITER_KERNELS=float|avx2|vnni`` lowers the choice (tests and benchmarks run
every path on one machine); it cannot enable instructions the CPU lacks.
"""
from __future__ import annotations

import os

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.datamodel import PrimitiveModel
from numba.extending import intrinsic, register_model

_MODES = ("float", "avx2", "vnni")


def _host_features() -> dict:
    try:
        from llvmlite import binding
        return dict(binding.get_host_cpu_features())
    except Exception:            # noqa: BLE001  (no feature list: the portable float kernels)
        return {}


def _choose_mode(features: dict, forced: str | None) -> str:
    best = "float"
    if features.get("avx2") and features.get("fma") and features.get("f16c"):
        best = "avx2"
        if (features.get("avx512vnni") and features.get("avx512vl")) or features.get("avxvnni"):
            best = "vnni"
    if forced in _MODES and _MODES.index(forced) < _MODES.index(best):
        return forced
    return best


FEATURES = _host_features()
MODE = _choose_mode(FEATURES, os.environ.get("NEOX_WRITER_KERNELS"))
INT8_DOT = MODE if MODE != "float" else None      # None: the engine keeps its float kernels

_TWO_POW_112 = np.float32(2.0 ** 112)


# numba caches code per CPU model and features, so a cache made here is never used on a CPU
# without F16C (which would need a libgcc helper LLVM cannot link).
HAS_F16C = bool(FEATURES.get("f16c"))


@intrinsic
def _fpext_half(typingctx, h):
    """fp16 bits -> float32 as one LLVM fpext, which becomes vcvtph2ps on a CPU with F16C."""
    if h != types.uint16:
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return types.float32(types.uint16), codegen


@njit(inline="always")
def _half_to_float_f16c(h):
    return _fpext_half(np.uint16(h))


@njit(inline="always")
def _half_to_float_bits(h):
    """fp16 bits -> float32 by integer arithmetic (no F16C), exact for normals and subnormals.

    The exponent and mantissa bits shifted into a float32 make a number 2**112 too small
    (the exponent biases differ by 127 - 15), which one multiplication repairs; that also
    turns fp16 subnormals into the right float32 normals. Weights hold no inf/nan.
    """
    u = np.uint32(h)
    mag = np.float32(np.uint32((u & np.uint32(0x7FFF)) << np.uint32(13)).view(np.float32)) * _TWO_POW_112
    sign = np.uint32((u & np.uint32(0x8000)) << np.uint32(16))
    return np.uint32(np.float32(mag).view(np.uint32) | sign).view(np.float32)


# fp16 bits (uint16) -> float32; numba has no float16 type on the CPU. With F16C an f16 row
# kernel runs 40% faster (9.3 instead of 6.6 G weights per CPU-second here).
half_to_float = _half_to_float_f16c if HAS_F16C else _half_to_float_bits


@intrinsic
def _fptrunc_half(typingctx, f):
    """float32 -> fp16 bits as one LLVM fptrunc (round to nearest even), vcvtps2ph with F16C."""
    if f != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))
    return types.uint16(types.float32), codegen


@njit(inline="always")
def _float_to_half_f16c(f):
    return _fptrunc_half(np.float32(f))


_F16_TOO_BIG = np.uint32((127 + 16) << 23)             # 65536: rounds to inf, as fptrunc does
_F16_SUBNORMAL = np.uint32(113 << 23)                  # 2**-14, the smallest fp16 normal
_F16_DENORM_MAGIC = np.uint32(((127 - 15) + (23 - 10) + 1) << 23)    # the bits of 0.5
_F16_DENORM_MAGIC_FLOAT = np.float32(0.5)


@njit(inline="always")
def _float_to_half_bits(f):
    """float32 -> fp16 bits by integer arithmetic (no F16C), rounding to nearest even like fptrunc.

    F. Giesen's float_to_half_fast3_rtne: a normal result takes the float32's top mantissa bits
    with the exponent rebased and a rounding bias; a subnormal one adds a magic float whose
    exponent lines the 10 mantissa bits up at the bottom, so the float addition rounds them.
    """
    u = np.float32(f).view(np.uint32)
    sign = np.uint32(u & np.uint32(0x80000000))
    u = np.uint32(u ^ sign)                    # numba widens uint32 arithmetic: narrowed at each step
    if u >= _F16_TOO_BIG:
        out = np.uint32(0x7E00) if u > np.uint32(0x7F800000) else np.uint32(0x7C00)
    elif u < _F16_SUBNORMAL:
        total = np.float32(u.view(np.float32) + _F16_DENORM_MAGIC_FLOAT)
        out = np.uint32(total.view(np.uint32) - _F16_DENORM_MAGIC)
    else:
        odd = np.uint32((u >> np.uint32(13)) & np.uint32(1))
        u = np.uint32(u + np.uint32(((15 - 127) << 23) & 0xFFFFFFFF) + np.uint32(0xFFF) + odd)
        out = np.uint32(u >> np.uint32(13))
    return np.uint16(out | np.uint32(sign >> np.uint32(16)))


# float32 -> fp16 bits (the f16 key and value caches)
float_to_half = _float_to_half_f16c if HAS_F16C else _float_to_half_bits


_I8, _I16, _I32, _F32 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.FloatType()
_V32I8 = ir.VectorType(_I8, 32)
_V16I16 = ir.VectorType(_I16, 16)
_V8I32 = ir.VectorType(_I32, 8)
_V8F = ir.VectorType(_F32, 8)
_V8H = ir.VectorType(ir.HalfType(), 8)
_V8I8 = ir.VectorType(_I8, 8)
SCALE_DTYPES = (types.uint16, types.float32, types.uint8, types.int8)
_V64I8 = ir.VectorType(_I8, 64)
_V16I32 = ir.VectorType(_I32, 16)
_V16F = ir.VectorType(_F32, 16)
_V16H = ir.VectorType(ir.HalfType(), 16)


class VectorType(types.Type):
    """A numba type whose values are one LLVM vector (held in a register once optimised)."""

    def __init__(self, name: str, llvm_type):
        self.llvm_type = llvm_type
        super().__init__(name=name)


@register_model(VectorType)
class _VectorModel(PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, fe_type.llvm_type)


Bytes32 = VectorType("Bytes32", _V32I8)
Ints8 = VectorType("Ints8", _V8I32)
Floats8 = VectorType("Floats8", _V8F)
Bytes64 = VectorType("Bytes64", _V64I8)
Ints16 = VectorType("Ints16", _V16I32)
Floats16 = VectorType("Floats16", _V16F)


def _is_index(t) -> bool:
    return isinstance(t, types.Integer)


def _is_c_array(t, dtype=None) -> bool:
    return isinstance(t, types.Array) and t.ndim == 1 and t.layout == "C" and (dtype is None or t.dtype == dtype)


def _element_pointer(context, builder, array_type, array, index, llvm_type):
    """Address of array[index] (a 1-D C array), as a pointer to llvm_type (no bounds check)."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [index]), llvm_type.as_pointer())


def _splat(builder, value, vector_type):
    vec = builder.insert_element(ir.Constant(vector_type, None), value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(vec, ir.Constant(vector_type, None),
                                  ir.Constant(ir.VectorType(_I32, vector_type.count), [0] * vector_type.count))


def _intrinsic_fn(builder, name, ret, args):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


@intrinsic
def load_bytes(typingctx, array, index):
    """32 bytes of a 1-D uint8/int8 array from ``index`` on (the caller keeps them in bounds)."""
    if not (_is_c_array(array) and array.dtype in (types.uint8, types.int8) and _is_index(index)):
        return None

    def codegen(context, builder, sig, args):
        return builder.load(_element_pointer(context, builder, sig.args[0], args[0], args[1], _V32I8), align=1)
    return Bytes32(array, index), codegen


@intrinsic
def broadcast4(typingctx, array, index):
    """The 4 bytes array[index:index+4] repeated in all 8 lanes (activations against 8 rows)."""
    if not (_is_c_array(array) and array.dtype in (types.uint8, types.int8) and _is_index(index)):
        return None

    def codegen(context, builder, sig, args):
        word = builder.load(_element_pointer(context, builder, sig.args[0], args[0], args[1], _I32), align=1)
        return builder.bitcast(_splat(builder, word, _V8I32), _V32I8)
    return Bytes32(array, index), codegen


def _bytes(v) -> bool:
    return v in (Bytes32, Bytes64)


def _each(vector_type, value):
    """A constant vector of ``vector_type`` (an LLVM vector type) with ``value`` in every element."""
    return ir.Constant(vector_type, [value] * vector_type.count)


@intrinsic
def low_nibbles(typingctx, v):
    """Each byte & 15."""
    if not _bytes(v):
        return None

    def codegen(context, builder, sig, args):
        return builder.and_(args[0], _each(args[0].type, 15))
    return v(v), codegen


@intrinsic
def high_nibbles(typingctx, v):
    """Each byte >> 4 (unsigned)."""
    if not _bytes(v):
        return None

    def codegen(context, builder, sig, args):
        return builder.lshr(args[0], _each(args[0].type, 4))
    return v(v), codegen


@intrinsic
def fifth_bits(typingctx, bits, k, high):
    """The q5 5th bits of run k as 16 or 0 per byte: bit k (low nibbles) or bit 4+k (high) moved to bit 4.

    ``bits`` are the bytes of ``repack._fifth_bit_bytes``; k and high must be constants after
    inlining (LLVM then emits one 16-bit shift and one mask).
    """
    if not _bytes(bits) or not _is_index(k) or not _is_index(high):
        return None

    def codegen(context, builder, sig, args):
        vt = args[0].type
        k8 = builder.trunc(args[1], _I8)
        left = builder.shl(args[0], _splat(builder, builder.sub(ir.Constant(_I8, 4), k8), vt))
        right = builder.lshr(args[0], _splat(builder, k8, vt))
        high_ = builder.icmp_unsigned("!=", args[2], ir.Constant(args[2].type, 0))
        moved = builder.select(high_, right, left)
        return builder.and_(moved, _each(vt, 16))
    return bits(bits, k, high), codegen


@intrinsic
def sixth_bits(typingctx, bits, k):
    """The q6_K high bits of run k as bits 4-5 of each byte: bits 2k, 2k+1 of ``bits`` (the bytes of
    ``repack._high_crumb_bytes``) moved there; k must be a constant after inlining."""
    if not _bytes(bits) or not _is_index(k):
        return None

    def codegen(context, builder, sig, args):
        vt = args[0].type
        k8 = builder.trunc(args[1], _I8)
        twice = builder.add(k8, k8)
        seven = ir.Constant(_I8, 7)          # shift amounts kept in range: the arm not selected is never poison
        left = builder.shl(args[0], _splat(builder, builder.and_(builder.sub(ir.Constant(_I8, 4), twice), seven), vt))
        right = builder.lshr(args[0], _splat(builder, builder.and_(builder.sub(twice, ir.Constant(_I8, 4)), seven), vt))
        moved = builder.select(builder.icmp_unsigned("<=", k8, ir.Constant(_I8, 2)), left, right)
        return builder.and_(moved, _each(vt, 48))
    return bits(bits, k), codegen


@intrinsic
def move_bit(typingctx, bits, src, dst):
    """Bit ``src`` of each byte moved to bit ``dst``, the other bits cleared (q3_K's third bit, laid
    out as the q5 5th bits are, into bit 6); src and dst must be constants after inlining, when
    LLVM keeps one shift and one mask."""
    if not _bytes(bits) or not _is_index(src) or not _is_index(dst):
        return None

    def codegen(context, builder, sig, args):
        vt = args[0].type
        s8, d8 = builder.trunc(args[1], _I8), builder.trunc(args[2], _I8)
        seven = ir.Constant(_I8, 7)          # shift amounts kept in range: the arm not selected is never poison
        left = builder.shl(args[0], _splat(builder, builder.and_(builder.sub(d8, s8), seven), vt))
        right = builder.lshr(args[0], _splat(builder, builder.and_(builder.sub(s8, d8), seven), vt))
        moved = builder.select(builder.icmp_unsigned("<=", s8, d8), left, right)
        mask = builder.shl(ir.Constant(_I8, 1), builder.and_(d8, seven))
        return builder.and_(moved, _splat(builder, mask, vt))
    return bits(bits, src, dst), codegen


# The 16 int8 levels of iq4_nl / iq4_xs (kquants.IQ4_LEVELS), as a table vpshufb looks up per
# 128-bit lane; signed, or offset by 128 to unsigned bytes (what vpdpbusd takes as the weights).
_IQ4_LEVELS = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)


def _iq4_lookup(offset):
    """An intrinsic: bytes 0..15 -> the iq4 levels plus ``offset``, one vpshufb per vector."""
    def typer(typingctx, idx):
        if not _bytes(idx):
            return None

        def codegen(context, builder, sig, args):
            vt = args[0].type
            table = ir.Constant(vt, [ir.Constant(_I8, (v + offset) & 255) for v in _IQ4_LEVELS] * (vt.count // 16))
            name = "llvm.x86.avx512.pshuf.b.512" if vt.count == 64 else "llvm.x86.avx2.pshuf.b"
            return builder.call(_intrinsic_fn(builder, name, vt, [vt, vt]), [table, args[0]])
        return idx(idx), codegen
    return intrinsic(typer)


iq4_levels = _iq4_lookup(0)             # the signed levels (AVX2: |w| x sign(x, w), as q8_0)
iq4_levels_unsigned = _iq4_lookup(128)  # + 128 (VNNI: as q8_0's unsigned weights, 128 sum(x) taken off)


@intrinsic
def or_bytes(typingctx, a, b):
    if not _bytes(a) or a != b:
        return None

    def codegen(context, builder, sig, args):
        return builder.or_(args[0], args[1])
    return a(a, a), codegen


@intrinsic
def abs_bytes(typingctx, v):
    """|v| of signed bytes (-128 stays 128 read unsigned: what dot4 wants)."""
    if v != Bytes32:
        return None

    def codegen(context, builder, sig, args):
        fn = _intrinsic_fn(builder, "llvm.abs.v32i8", _V32I8, [_V32I8, ir.IntType(1)])
        return builder.call(fn, [args[0], ir.Constant(ir.IntType(1), 0)])
    return Bytes32(Bytes32), codegen


@intrinsic
def sign_bytes(typingctx, v, sign_of):
    """v negated where sign_of < 0, zeroed where sign_of == 0 (vpsignb): abs(w) . sign(x, w) = w . x."""
    if v != Bytes32 or sign_of != Bytes32:
        return None

    def codegen(context, builder, sig, args):
        fn = _intrinsic_fn(builder, "llvm.x86.avx2.psign.b", _V32I8, [_V32I8, _V32I8])
        return builder.call(fn, [args[0], args[1]])
    return Bytes32(Bytes32, Bytes32), codegen


@intrinsic
def dot4(typingctx, acc, u, s):
    """acc + (the 4 products of unsigned bytes u and signed bytes s) in each int32 lane.

    On AVX2 the pair sums pass through int16 with saturation: fine for u <= 31 (4/5-bit quants)
    or |u| <= 128 with |s| <= 127 (q8_0 by the sign trick), the only uses here.
    """
    if (acc, u, s) == (Ints16, Bytes64, Bytes64):         # 512 bits: only rows.py calls it, where ROWS512
        def codegen512(context, builder, sig, args):
            fn = _intrinsic_fn(builder, "llvm.x86.avx512.vpdpbusd.512", _V16I32, [_V16I32, _V64I8, _V64I8])
            return builder.call(fn, list(args))
        return Ints16(Ints16, Bytes64, Bytes64), codegen512
    if acc != Ints8 or u != Bytes32 or s != Bytes32:
        return None

    def codegen(context, builder, sig, args):
        a, uu, ss = args
        if MODE == "vnni":
            fn = _intrinsic_fn(builder, "llvm.x86.avx512.vpdpbusd.256", _V8I32, [_V8I32, _V32I8, _V32I8])
            return builder.call(fn, [a, uu, ss])
        pairs = builder.call(_intrinsic_fn(builder, "llvm.x86.avx2.pmadd.ub.sw", _V16I16, [_V32I8, _V32I8]),
                             [uu, ss])
        quads = builder.call(_intrinsic_fn(builder, "llvm.x86.avx2.pmadd.wd", _V8I32, [_V16I16, _V16I16]),
                             [pairs, ir.Constant(_V16I16, [1] * 16)])
        return builder.add(a, quads)
    return Ints8(Ints8, Bytes32, Bytes32), codegen


@intrinsic
def zero_ints(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_V8I32, [0] * 8)
    return Ints8(), codegen


@intrinsic
def zero_floats(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_V8F, [0.0] * 8)
    return Floats8(), codegen


@intrinsic
def load_uints(typingctx, array, index):
    """8 uint32 of a 1-D array from ``index`` on, as int32 lanes."""
    if not (_is_c_array(array, types.uint32) and _is_index(index)):
        return None

    def codegen(context, builder, sig, args):
        return builder.load(_element_pointer(context, builder, sig.args[0], args[0], args[1], _V8I32), align=4)
    return Ints8(array, index), codegen


@intrinsic
def load_floats(typingctx, array, index):
    """8 scales from ``index`` on: fp16 bits (uint16, widened by vcvtph2ps), float32, or bytes
    (uint8, int8: the K-quants' integer sub-block scales, widened and converted)."""
    if not (_is_c_array(array) and array.dtype in SCALE_DTYPES and _is_index(index)):
        return None

    def codegen(context, builder, sig, args):
        if sig.args[0].dtype == types.float32:
            return builder.load(_element_pointer(context, builder, sig.args[0], args[0], args[1], _V8F), align=4)
        if sig.args[0].dtype in (types.uint8, types.int8):
            u = builder.load(_element_pointer(context, builder, sig.args[0], args[0], args[1], _V8I8), align=1)
            return (builder.uitofp if sig.args[0].dtype == types.uint8 else builder.sitofp)(u, _V8F)
        halves = builder.load(_element_pointer(context, builder, sig.args[0], args[0], args[1], _V8H), align=2)
        return builder.fpext(halves, _V8F)
    return Floats8(array, index), codegen


@intrinsic
def to_floats(typingctx, v):
    if v not in (Ints8, Ints16):
        return None
    result = Floats8 if v == Ints8 else Floats16

    def codegen(context, builder, sig, args):
        return builder.sitofp(args[0], result.llvm_type)
    return result(v), codegen


@intrinsic
def splat(typingctx, value):
    """A float32 in all 8 lanes."""
    if not isinstance(value, types.Float):
        return None

    def codegen(context, builder, sig, args):
        return _splat(builder, context.cast(builder, args[0], sig.args[0], types.float32), _V8F)
    return Floats8(value), codegen


@intrinsic
def mul_add(typingctx, a, b, c):
    """a * b + c lane by lane (contracted to one FMA)."""
    if not (a == b == c and a in (Floats8, Floats16)):
        return None

    def codegen(context, builder, sig, args):
        product = builder.fmul(args[0], args[1], flags=("contract",))
        return builder.fadd(product, args[2], flags=("contract",))
    return a(a, a, a), codegen


@intrinsic
def max_floats(typingctx, a, b):
    """The larger of a and b lane by lane (llvm.maxnum: a NaN lane takes the other operand)."""
    if not (a == b and a in (Floats8, Floats16)):
        return None

    def codegen(context, builder, sig, args):
        vt = sig.return_type.llvm_type
        return builder.call(_intrinsic_fn(builder, f"llvm.maxnum.v{vt.count}f32", vt, [vt, vt]), list(args))
    return a(a, a), codegen


@intrinsic
def max_lane(typingctx, v):
    """The largest lane of v, as a float32 (a horizontal reduction: once per row, not per value)."""
    if v not in (Floats8, Floats16):
        return None

    def codegen(context, builder, sig, args):
        vt = sig.args[0].llvm_type
        return builder.call(_intrinsic_fn(builder, f"llvm.vector.reduce.fmax.v{vt.count}f32", _F32, [vt]), [args[0]])
    return types.float32(v), codegen


@intrinsic
def add_lanes(typingctx, v):
    """The sum of v's lanes, as a float32: halves added pairwise (a horizontal sum: once per dot
    product, not per value)."""
    if v not in (Floats8, Floats16):
        return None

    def codegen(context, builder, sig, args):
        value, count = args[0], sig.args[0].llvm_type.count
        while count > 1:
            count //= 2
            low = builder.shuffle_vector(value, value, ir.Constant(ir.VectorType(_I32, count), list(range(count))))
            high = builder.shuffle_vector(value, value, ir.Constant(ir.VectorType(_I32, count),
                                                                    list(range(count, 2 * count))))
            value = builder.fadd(low, high)
        return builder.extract_element(value, ir.Constant(_I32, 0))
    return types.float32(v), codegen


@intrinsic
def store_floats(typingctx, array, index, v):
    """array[index:index+8] = v (a 1-D float32 array; the caller keeps it in bounds)."""
    if not (_is_c_array(array, types.float32) and _is_index(index) and v == Floats8):
        return None

    def codegen(context, builder, sig, args):
        builder.store(args[2], _element_pointer(context, builder, sig.args[0], args[0], args[1], _V8F), align=4)
        return context.get_dummy_value()
    return types.none(array, index, Floats8), codegen


@intrinsic
def mul(typingctx, a, b):
    """a * b lane by lane."""
    if not (a == b and a in (Floats8, Floats16)):
        return None

    def codegen(context, builder, sig, args):
        return builder.fmul(args[0], args[1])
    return a(a, a), codegen


def _prefetch(array, index, locality):
    """The typing and code of a prefetch hint for array[index] (llvm.prefetch: read, data cache)."""
    if not (_is_c_array(array) and _is_index(index)):
        return None

    def codegen(context, builder, sig, args):
        pointer = _element_pointer(context, builder, sig.args[0], args[0], args[1], _I8)
        fn = _intrinsic_fn(builder, "llvm.prefetch.p0", ir.VoidType(), [_I8.as_pointer(), _I32, _I32, _I32])
        builder.call(fn, [pointer, ir.Constant(_I32, 0), ir.Constant(_I32, locality), ir.Constant(_I32, 1)])
        return context.get_dummy_value()
    return types.none(array, index), codegen


@intrinsic
def prefetch(typingctx, array, index):
    """Ask the CPU to start loading the cache line holding array[index] (a hint: never faults)."""
    return _prefetch(array, index, 3)


@intrinsic
def prefetch_far(typingctx, array, index):
    """``prefetch`` into the outer caches only (prefetcht2): for lines wanted a while later, which
    prefetched into L1 would evict the lines in use where rows 4 KiB apart share its sets."""
    return _prefetch(array, index, 1)


@intrinsic
def offset_bytes(typingctx, v):
    """Signed bytes w -> unsigned w + 128 (the sign bit flipped)."""
    if not _bytes(v):
        return None

    def codegen(context, builder, sig, args):
        return builder.xor(args[0], _each(args[0].type, 0x80))
    return v(v), codegen


# 512-bit values for the kernels of rows.py (N sequences' tokens against one pass over the weights).
# There two groups of 8 weight rows share a vector (16 int32 lanes), so one vpdpbusd does 64
# multiply-adds and each broadcast of x serves 16 rows; the elementwise operations above take
# these types as well. LLVM emits zmm code for them whatever its preferred vector width.
ROWS512 = MODE == "vnni" and all(FEATURES.get(f) for f in ("avx512f", "avx512bw", "avx512vnni"))


def _concat(builder, a, b):
    """<n x T> a, <n x T> b -> <2n x T> [a | b]."""
    n = a.type.count
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_I32, 2 * n), list(range(2 * n))))


@intrinsic
def load_bytes_pair(typingctx, array, i, j):
    """32 bytes from ``i`` on, then 32 from ``j`` on (two groups' runs), as one 64-byte vector."""
    if not (_is_c_array(array) and array.dtype in (types.uint8, types.int8) and _is_index(i) and _is_index(j)):
        return None

    def codegen(context, builder, sig, args):
        a = builder.load(_element_pointer(context, builder, sig.args[0], args[0], args[1], _V32I8), align=1)
        b = builder.load(_element_pointer(context, builder, sig.args[0], args[0], args[2], _V32I8), align=1)
        return _concat(builder, a, b)
    return Bytes64(array, i, j), codegen


@intrinsic
def broadcast4_wide(typingctx, array, index):
    """The 4 bytes array[index:index+4] repeated in all 16 lanes (one vpbroadcastd from memory)."""
    if not (_is_c_array(array) and array.dtype in (types.uint8, types.int8) and _is_index(index)):
        return None

    def codegen(context, builder, sig, args):
        word = builder.load(_element_pointer(context, builder, sig.args[0], args[0], args[1], _I32), align=1)
        return builder.bitcast(_splat(builder, word, _V16I32), _V64I8)
    return Bytes64(array, index), codegen


@intrinsic
def zero_ints16(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_V16I32, [0] * 16)
    return Ints16(), codegen


@intrinsic
def zero_floats16(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_V16F, [0.0] * 16)
    return Floats16(), codegen


@intrinsic
def load_floats_pair(typingctx, array, i, j):
    """8 scales from ``i`` on, then 8 from ``j`` on: fp16 bits (widened by one vcvtph2ps), float32 or
    unsigned bytes (as ``load_floats``)."""
    if not (_is_c_array(array) and array.dtype in SCALE_DTYPES and _is_index(i) and _is_index(j)):
        return None

    def codegen(context, builder, sig, args):
        if sig.args[0].dtype in (types.uint8, types.int8):
            a = builder.load(_element_pointer(context, builder, sig.args[0], args[0], args[1], _V8I8), align=1)
            b = builder.load(_element_pointer(context, builder, sig.args[0], args[0], args[2], _V8I8), align=1)
            convert = builder.uitofp if sig.args[0].dtype == types.uint8 else builder.sitofp
            return convert(_concat(builder, a, b), _V16F)
        half = sig.args[0].dtype == types.uint16
        vt = _V8H if half else _V8F
        a = builder.load(_element_pointer(context, builder, sig.args[0], args[0], args[1], vt), align=2)
        b = builder.load(_element_pointer(context, builder, sig.args[0], args[0], args[2], vt), align=2)
        both = _concat(builder, a, b)
        return builder.fpext(both, _V16F) if half else both
    return Floats16(array, i, j), codegen


@intrinsic
def load_splat(typingctx, array, index):
    """array[index] (float32) in all 16 lanes: one vbroadcastss from memory, no index checks."""
    if not (_is_c_array(array, types.float32) and _is_index(index)):
        return None

    def codegen(context, builder, sig, args):
        value = builder.load(_element_pointer(context, builder, sig.args[0], args[0], args[1], _F32), align=4)
        return _splat(builder, value, _V16F)
    return Floats16(array, index), codegen


@intrinsic
def splat_wide(typingctx, value):
    """A float32 in all 16 lanes."""
    if not isinstance(value, types.Float):
        return None

    def codegen(context, builder, sig, args):
        return _splat(builder, context.cast(builder, args[0], sig.args[0], types.float32), _V16F)
    return Floats16(value), codegen


@intrinsic
def store_floats_pair(typingctx, array, i, j, v):
    """array[i:i+8] = the first 8 lanes of v, array[j:j+8] = the last 8 (two groups' rows; a 1-D float32
    array, the caller keeps both in bounds)."""
    if not (_is_c_array(array, types.float32) and _is_index(i) and _is_index(j) and v == Floats16):
        return None

    def codegen(context, builder, sig, args):
        for half, index in enumerate(args[1:3]):
            part = builder.shuffle_vector(args[3], args[3], ir.Constant(ir.VectorType(_I32, 8),
                                                                        list(range(8 * half, 8 * half + 8))))
            builder.store(part, _element_pointer(context, builder, sig.args[0], args[0], index, _V8F), align=4)
        return context.get_dummy_value()
    return types.none(array, i, j, Floats16), codegen


_V32F = ir.VectorType(_F32, 32)
_V32I32 = ir.VectorType(_I32, 32)


@intrinsic
def quantize_block(typingctx, x, xq, b, nb):
    """Block b (32 floats from 32 b) of x to 8 bits as ``matvec._quantize`` stores it in xq: xq[b] = dx =
    max|x| / 127, xq[nb + b] = dx times the sum of the int8 values, the values round(x / dx) at byte
    8 nb + 32 b of xq (its int8 area, ``matvec.x_bytes``); x's elements must be adjacent (a view of
    any layout whose stride is 4 bytes). Written as vector IR because numba's loops
    of 32 stayed scalar (about 2.2 ns a value; a long prompt quantizes every matrix's input)."""
    unit = isinstance(x, types.Array) and x.ndim == 1 and x.dtype == types.float32   # any layout: the caller
    if not (unit and _is_c_array(xq, types.float32) and _is_index(b) and _is_index(nb)):  # sees its stride is 4
        return None

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        b = context.cast(builder, args[2], sig.args[2], types.int64)
        nb = context.cast(builder, args[3], sig.args[3], types.int64)
        v = builder.load(_element_pointer(context, builder, sig.args[0], args[0], builder.mul(b, ir.Constant(i64, 32)),
                                          _V32F), align=4)
        fabs = _intrinsic_fn(builder, "llvm.fabs.v32f32", _V32F, [_V32F])
        fmax = _intrinsic_fn(builder, "llvm.vector.reduce.fmax.v32f32", _F32, [_V32F])
        amax = builder.call(fmax, [builder.call(fabs, [v])])
        dx = builder.fmul(amax, ir.Constant(_F32, 1.0 / 127.0))
        inv = builder.select(builder.fcmp_ordered(">", dx, ir.Constant(_F32, 0.0)),
                             builder.fdiv(ir.Constant(_F32, 1.0), dx), ir.Constant(_F32, 0.0))
        rint = _intrinsic_fn(builder, "llvm.rint.v32f32", _V32F, [_V32F])
        q = builder.fptosi(builder.call(rint, [builder.fmul(v, _splat(builder, inv, _V32F))]), _V32I8)
        add = _intrinsic_fn(builder, "llvm.vector.reduce.add.v32i32", _I32, [_V32I32])
        total = builder.sitofp(builder.call(add, [builder.sext(q, _V32I32)]), _F32)
        data = context.make_array(sig.args[1])(context, builder, args[1]).data
        byte = builder.add(builder.mul(nb, ir.Constant(i64, 8)), builder.mul(b, ir.Constant(i64, 32)))
        bytes_ = builder.gep(builder.bitcast(data, _I8.as_pointer()), [byte])
        builder.store(q, builder.bitcast(bytes_, _V32I8.as_pointer()), align=1)
        builder.store(dx, builder.gep(data, [b]), align=4)
        builder.store(builder.fmul(dx, total), builder.gep(data, [builder.add(nb, b)]), align=4)
        return context.get_dummy_value()
    return types.none(x, xq, b, nb), codegen
