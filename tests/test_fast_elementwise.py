"""The fast path's per-value steps that run on every matrix's input or output: the 8-bit
quantization of activations (``matvec._quantize``, one ``simd.quantize_block`` per block of 32)
and the prompt path's bias + GELU (``forward.bias_gelu``), against plain numpy."""
from __future__ import annotations

import math

import numpy as np

from engine.fast.forward import bias_gelu
from engine.fast.gemm import quantize_rows
from engine.fast.matvec import QK, xsum_floats


def numpy_q8(x: np.ndarray):
    """(dx, dx * sum of the int8 values, int8 values) per block of 32, as ggml's q8_0 makes them."""
    blocks = x.reshape(-1, QK)
    dx = (np.abs(blocks).max(axis=1) * np.float32(1 / 127)).astype(np.float32)
    inv = np.divide(np.float32(1), dx, out=np.zeros_like(dx), where=dx > 0)
    q = np.rint(blocks * inv[:, None]).astype(np.int8)
    return dx, dx * q.sum(axis=1, dtype=np.int32).astype(np.float32), q.ravel()


def unpack(xq: np.ndarray, nb: int):
    return xq[:nb], xq[nb:2 * nb], xq[2 * nb:2 * nb + nb * 8].view(np.int8)


def test_activations_quantize_as_q8_0_blocks():
    rng = np.random.default_rng(7)
    cols = 1024
    nb = cols // QK
    x = rng.standard_normal((6, cols)).astype(np.float32) * 3
    x[1, :QK] = 0                                   # an all-zero block: dx 0, every value 0
    x[2, QK:2 * QK] = 1e-30                         # tiny but not zero
    x[3, :QK] = np.arange(QK) - 15.5                # halves: rint rounds them to even
    x[4, 5 * QK:6 * QK] = -2.0                      # one value repeated, every |x| the maximum
    xq = np.full((6, xsum_floats(cols, False)), np.nan, np.float32)
    quantize_rows(x, 0, 6, xq)
    for row in range(6):
        want = numpy_q8(x[row])
        got = unpack(xq[row], nb)
        assert np.array_equal(got[0], want[0])
        assert np.array_equal(got[2], want[2])
        assert np.allclose(got[1], want[1], rtol=1e-6, atol=0)
    assert np.all(unpack(xq[1], nb)[2][:QK] == 0) and unpack(xq[1], nb)[0][0] == 0
    assert np.all(unpack(xq[4], nb)[2][5 * QK:6 * QK] == -127)


def test_a_strided_row_quantizes_as_its_copy():
    """A view whose values are not adjacent (every other column) is copied first, not misread."""
    from engine.fast.matvec import _quantize
    x = np.random.default_rng(8).standard_normal(2 * 256).astype(np.float32)
    strided, xq_a = x[::2], np.zeros(xsum_floats(256, False), np.float32)
    xq_b = np.zeros_like(xq_a)
    _quantize(strided, xq_a)
    _quantize(np.ascontiguousarray(strided), xq_b)
    assert np.array_equal(xq_a[:2 * 8 + 64], xq_b[:2 * 8 + 64])


def test_bias_gelu_is_the_erf_gelu_on_its_columns_only():
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((5, 300)) * 4).astype(np.float32)
    bias = rng.standard_normal(300).astype(np.float32)
    out = x.copy()
    bias_gelu(out, 17, 291, bias)
    v = (x[:, 17:291] + bias[17:291]).astype(np.float64)
    erf = np.vectorize(math.erf)(v / math.sqrt(2))
    want = 0.5 * v * (1 + erf)
    assert np.abs(out[:, 17:291] - want).max() <= 2e-6 * max(1.0, np.abs(want).max())
    assert np.array_equal(out[:, :17], x[:, :17]) and np.array_equal(out[:, 291:], x[:, 291:])
