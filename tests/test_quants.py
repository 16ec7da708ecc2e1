"""Block formats: agreement with the gguf package, the reference rounding rules on hand-made blocks,
nibble orders per quantization version, and round trips."""
import numpy as np
import pytest

from engine import quants
from engine.quants import block_format, dequantize, quantize

gguf = pytest.importorskip("gguf")
from gguf import quants as gq  # noqa: E402

GGUF_TYPES = {"q4_0": "Q4_0", "q4_1": "Q4_1", "q5_0": "Q5_0", "q5_1": "Q5_1", "q8_0": "Q8_0"}


def sample(n_blocks=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(32 * n_blocks) * rng.uniform(0.001, 5, size=32 * n_blocks)
    x = x.astype(np.float32)
    x[:32] = 0                      # an all-zero block: d = 0, id = 0
    x[32:64] = 0.25                 # a constant block
    return x


@pytest.mark.parametrize("type_name", sorted(GGUF_TYPES))
def test_version2_dequantization_is_bit_identical_to_gguf(type_name):
    qtype = getattr(gguf.GGMLQuantizationType, GGUF_TYPES[type_name])
    raw = quantize(type_name, 2, sample())
    ours = dequantize(type_name, 2, raw, 32 * 400)
    theirs = gq.dequantize(raw, qtype).reshape(-1).astype(np.float32)
    assert np.array_equal(ours.view(np.uint32), theirs.view(np.uint32))


@pytest.mark.parametrize("type_name", sorted(GGUF_TYPES))
def test_version2_dequantization_of_arbitrary_blocks_matches_gguf(type_name):
    """Random block bytes (finite fp16 scales) exercise every nibble and qh bit pattern."""
    qtype = getattr(gguf.GGMLQuantizationType, GGUF_TYPES[type_name])
    fmt = block_format(type_name, 2)
    rng = np.random.default_rng(1)
    blocks = rng.integers(0, 256, size=(300, fmt.nbytes), dtype=np.uint8)
    scales = 2 if not fmt.has_min else 4
    blocks[:, :scales] = rng.uniform(-2, 2, size=(300, scales // 2)).astype("<f2").view(np.uint8)
    ours = dequantize(type_name, 2, blocks, 300 * 32)
    theirs = gq.dequantize(blocks.reshape(-1), qtype).reshape(-1).astype(np.float32)
    assert np.array_equal(ours.view(np.uint32), theirs.view(np.uint32))


@pytest.mark.parametrize("type_name", sorted(GGUF_TYPES))
def test_version2_quantizers_produce_gguf_bytes(type_name):
    qtype = getattr(gguf.GGMLQuantizationType, GGUF_TYPES[type_name])
    x = sample(seed=2)
    theirs = gq.quantize(x.reshape(-1, 32), qtype).reshape(-1)
    assert np.array_equal(quantize(type_name, 2, x), theirs)


def fields(type_name, version, x):
    fmt = block_format(type_name, version)
    blocks = quantize(type_name, version, np.asarray(x, dtype=np.float32)).reshape(-1, fmt.nbytes)
    d, m, qh, qs = quants._fields(fmt, blocks)
    q = quants._unpack_nibbles(fmt, qs) if type_name != "q8_0" else qs.view(np.int8)
    if qh is not None:
        q = q | (quants._qh_bits(qh) << np.uint8(4))
    return d, m, q[0].astype(int)


def test_q8_0_rounds_half_away_from_zero():
    x = np.zeros(32, np.float32)
    x[:6] = [127, 2.5, -2.5, 0.5, -0.5, 1.5]      # amax 127 -> d = 1, id = 1
    d, _, q = fields("q8_0", 1, x)
    assert d[0] == 1.0
    assert list(q[:6]) == [127, 3, -3, 1, -1, 2]


def test_q4_0_truncation_rule_of_version_1_and_rounding_rule_of_version_0():
    x = np.zeros(32, np.float32)
    x[0] = -1.0                   # largest magnitude, signed: d = -1 / -8 = 0.125, id = 8
    x[1] = -0.0625                # x*id = -0.5: v1 (int8)(-0.5 + 8.5) = 8; v0 roundf(-0.5) + 8 = 7
    x[2] = 0.0625                 # x*id = 0.5: both 9
    x[3] = 1.0                    # x*id = 8: v1 min(15, 16) = 15, v0 min(15, 8 + 8) = 15
    d1, _, q1 = fields("q4_0", 1, x)
    d0, _, q0 = fields("q4_0", 0, x)
    assert d1[0] == d0[0] == np.float32(0.125)
    assert list(q1[:4]) == [0, 8, 9, 15]
    assert list(q0[:4]) == [0, 7, 9, 15]


def test_signed_max_takes_the_first_of_equal_magnitudes():
    x = np.zeros(32, np.float32)
    x[0], x[1] = 1.0, -1.0        # first wins: max = +1, d = -0.125
    d, _, q = fields("q4_0", 1, x)
    assert d[0] == np.float32(-0.125)
    assert q[0] == 0 and q[1] == 15


def test_q4_1_and_q5_1_rules():
    x = np.linspace(0, 15, 32).astype(np.float32)
    x[:5] = [0, 15, 7.5, 3.49, 14.6]
    d, m, q = fields("q4_1", 1, x)
    assert d[0] == 1.0 and m[0] == 0.0
    assert list(q[:5]) == [0, 15, 8, 3, 15]
    x5 = np.linspace(-1, 2.1, 32).astype(np.float32)
    d5, m5, q5 = fields("q5_1", 1, x5)
    d32 = np.float32(np.float32(2.1) - np.float32(-1)) / np.float32(31)
    assert d5[0] == np.float32(np.float16(d32)) and m5[0] == np.float32(np.float16(-1.0))
    expected = np.trunc(((x5 - np.float32(-1)) * (np.float32(1) / d32)).astype(np.float32) + np.float32(0.5))
    assert list(q5) == list(expected.astype(int))


def test_version2_stores_fp16_scales_but_quantizes_with_the_fp32_id():
    x = np.zeros(32, np.float32)
    x[0] = -1.1
    x[1] = 0.5
    d32 = np.float32(-1.1) / np.float32(-8)
    d2, _, q2 = fields("q4_0", 2, x)
    d1, _, q1 = fields("q4_0", 1, x)
    assert d1[0] == d32
    assert d2[0] == np.float32(np.float16(d32)) and d2[0] != d32
    assert list(q1) == list(q2)
    assert block_format("q4_0", 2).nbytes == 18 and block_format("q4_0", 1).nbytes == 20
    assert block_format("q8_0", 2).nbytes == 34 and block_format("q4_1", 2).nbytes == 20


@pytest.mark.parametrize("type_name", ["q4_0", "q4_1", "q5_0", "q5_1"])
def test_nibble_order_interleaved_in_version_0_and_split_in_version_1(type_name):
    x = np.arange(32, dtype=np.float32) - 16
    fmt0, fmt1 = block_format(type_name, 0), block_format(type_name, 1)
    q = quants._quantize_values(fmt1, x.reshape(1, 32))[2][0]
    qs0 = quantize(type_name, 0, x)[-16:]
    qs1 = quantize(type_name, 1, x)[-16:]
    # version 1: byte j holds elements j (low) and j + 16 (high)
    assert list(qs1 & 15) == list(q[:16] & 15) and list(qs1 >> 4) == list(q[16:] & 15)
    # version 0: byte j holds elements 2j (low) and 2j + 1 (high)
    q0 = quants._quantize_values(fmt0, x.reshape(1, 32))[2][0]
    assert list(qs0 & 15) == list(q0[0::2] & 15) and list(qs0 >> 4) == list(q0[1::2] & 15)


@pytest.mark.parametrize("type_name,version", [(t, v) for t in quants.WRITABLE_QUANT_TYPES for v in (0, 1, 2)]
                         + [("q4_2", 0), ("q4_3", 0)])
def test_round_trip_error_is_within_half_a_step(type_name, version):
    fmt = block_format(type_name, version)
    x = sample(seed=3)
    raw = quantize(type_name, version, x)
    assert raw.size == x.size // fmt.values * fmt.nbytes
    y = dequantize(type_name, version, raw, x.size)
    blocks = x.reshape(-1, fmt.values)
    spread = blocks.max(axis=1) - blocks.min(axis=1)
    levels = {"q8_0": 254, "q5_0": 31, "q5_1": 31}.get(type_name, 15)
    # one quantization step (plus fp16 scale rounding), per block
    bound = spread / levels * 1.01 + np.abs(blocks).max(axis=1) * 2.0 ** -10 + 1e-6
    err = np.abs(y - x).reshape(-1, fmt.values).max(axis=1)
    assert np.all(err <= bound)


def test_dequantize_refuses_a_wrong_byte_count():
    with pytest.raises(ValueError, match="needs 18 bytes"):
        dequantize("q4_0", 2, np.zeros(17, np.uint8), 32)
    with pytest.raises(ValueError):
        block_format("q4_3", 1)
