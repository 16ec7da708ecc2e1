"""K-quant and IQ4 block formats: dequantization bit-identical to the gguf package on arbitrary
blocks, quantizers byte-identical to llama.cpp's on golden inputs, the registry, and errors."""
from pathlib import Path

import numpy as np
import pytest

from engine import kquants, quants
from engine.kquants import BLOCK_SIZES, K_TYPES

gguf = pytest.importorskip("gguf")
from gguf import quants as gq  # noqa: E402

GGUF_NAMES = {"q2_K": "Q2_K", "q3_K": "Q3_K", "q4_K": "Q4_K", "q5_K": "Q5_K", "q6_K": "Q6_K",
              "iq4_nl": "IQ4_NL", "iq4_xs": "IQ4_XS"}
# byte offsets of the fp16 super-scales (d, dmin) in each block
FP16_FIELDS = {"q2_K": (80, 82), "q3_K": (108,), "q4_K": (0, 2), "q5_K": (0, 2), "q6_K": (208,),
               "iq4_nl": (0,), "iq4_xs": (0,)}
GOLDEN = Path(__file__).parent / "fixtures" / "kquants" / "golden.npz"


def qtype(type_name):
    return getattr(gguf.GGMLQuantizationType, GGUF_NAMES[type_name])


def random_blocks(type_name, n=400, seed=0, spread=4.0):
    """Random bytes everywhere (every quant, scale and bit pattern) with random finite fp16 super-scales."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(n, BLOCK_SIZES[type_name][1]), dtype=np.uint8)
    for pos in FP16_FIELDS[type_name]:
        scale = rng.uniform(-spread, spread, size=(n, 1)) * 10.0 ** rng.integers(-6, 1, size=(n, 1))
        blocks[:, pos:pos + 2] = scale.astype("<f2").view(np.uint8)
    return blocks


def gaussian(n_values, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n_values) * rng.uniform(0.05, 2, size=n_values)).astype(np.float32)


def test_block_sizes_and_codes_are_ggmls():
    for t in K_TYPES:
        assert BLOCK_SIZES[t] == tuple(gguf.GGML_QUANT_SIZES[qtype(t)])
        assert kquants.TYPE_CODES[t] == int(qtype(t))
        assert quants.block_info(t, 2) == BLOCK_SIZES[t]


@pytest.mark.parametrize("type_name", K_TYPES)
def test_dequantization_of_arbitrary_blocks_is_bit_identical_to_gguf(type_name):
    blocks = random_blocks(type_name, seed=K_TYPES.index(type_name))
    qk = BLOCK_SIZES[type_name][0]
    ours = quants.dequantize(type_name, 2, blocks.reshape(-1), blocks.shape[0] * qk)
    theirs = gq.dequantize(blocks, qtype(type_name)).reshape(-1)
    assert ours.dtype == np.float32
    assert np.array_equal(ours.view(np.uint32), theirs.view(np.uint32))


@pytest.mark.parametrize("type_name", K_TYPES)
def test_dequantization_of_quantized_data_is_bit_identical_to_gguf(type_name):
    qk = BLOCK_SIZES[type_name][0]
    raw = quants.quantize(type_name, 2, gaussian(qk * 64, seed=3))
    ours = quants.dequantize(type_name, 2, raw, qk * 64)
    theirs = gq.dequantize(raw.reshape(64, -1), qtype(type_name)).reshape(-1)
    assert np.array_equal(ours.view(np.uint32), theirs.view(np.uint32))


@pytest.mark.parametrize("type_name", K_TYPES)
def test_quantizers_write_llama_cpps_bytes(type_name):
    """golden.npz: llama.cpp's quantize_row_*_ref / quantize_iq4_* output (tools/kquant_golden.py)
    for zero, constant, small-integer, tiny, outlier and Gaussian super-blocks."""
    golden = np.load(GOLDEN)
    qk = BLOCK_SIZES[type_name][0]
    ours = kquants.quantize_blocks(type_name, golden["x"].reshape(-1, qk))
    expected = golden[type_name]
    bad = np.flatnonzero((ours != expected).any(axis=1))
    assert bad.size == 0, f"{type_name}: blocks {bad.tolist()} differ from llama.cpp's"


# relative RMS error of a round trip on Gaussian data: about llama.cpp's figures for these types
ROUND_TRIP_LIMITS = {"q2_K": 0.40, "q3_K": 0.20, "q4_K": 0.10, "q5_K": 0.05, "q6_K": 0.025,
                     "iq4_nl": 0.10, "iq4_xs": 0.10}


@pytest.mark.parametrize("type_name", K_TYPES)
def test_round_trip_error_shrinks_with_the_bits(type_name):
    x = gaussian(256 * 128, seed=5)
    y = quants.dequantize(type_name, 2, quants.quantize(type_name, 2, x), x.size)
    rel = np.sqrt(np.mean((y - x) ** 2) / np.mean(x ** 2))
    assert rel < ROUND_TRIP_LIMITS[type_name]
    assert rel > ROUND_TRIP_LIMITS[type_name] / 6      # a lossy 2..6-bit format, not a copy


@pytest.mark.parametrize("type_name", K_TYPES)
def test_zero_and_constant_blocks(type_name):
    qk = BLOCK_SIZES[type_name][0]
    x = np.zeros(2 * qk, np.float32)
    x[qk:] = -0.75
    y = quants.dequantize(type_name, 2, quants.quantize(type_name, 2, x), x.size)
    assert np.array_equal(y[:qk], np.zeros(qk, np.float32))
    assert np.allclose(y[qk:], -0.75, rtol=0, atol=0.75 * 0.02)


@pytest.mark.parametrize("type_name", K_TYPES)
def test_scale_bound_covers_every_value(type_name):
    blocks = random_blocks(type_name, seed=11)
    values = kquants.dequantize_blocks(type_name, blocks)
    bound = kquants.scale_bound(type_name, blocks)
    assert np.all(np.abs(values).max(axis=1) <= bound)
    assert np.all(bound < 64 * np.abs(values).max(axis=1) + 1e-30)   # and is not far above


def test_bad_input_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="NaN or infinity"):
        quants.quantize("q4_K", 2, np.full(256, np.nan, np.float32))
    with pytest.raises(ValueError, match="whole number of q6_K blocks"):
        quants.quantize("q6_K", 2, np.zeros(300, np.float32))
    with pytest.raises(ValueError, match="only in quantization version 2"):
        quants.block_format("q4_K", 1)
    with pytest.raises(ValueError, match="needs 144 bytes"):
        quants.dequantize("q4_K", 2, np.zeros(100, np.uint8), 256)
    with pytest.raises(ValueError, match="unknown K-quant type"):
        kquants.quantize_blocks("q7_K", np.zeros((1, 256), np.float32))
