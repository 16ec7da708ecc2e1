"""The 512-bit row kernels (engine/fast/rows.py) against the token kernel and the prompt path's gemm.

Each of 2..8 rows (and more than one pass's worth) of every lanes-layout type must equal what
``matvec`` computes for that row alone: the integer sums are the same, so only the order of the
float additions differs. Matrices with two layers (the layer index must be honoured), row counts
that are no multiple of the 64-row tile, and a tile range that starts past 0 (a thread's share).
"""
from __future__ import annotations

import numpy as np
import pytest

from modelgen import write_random_model

from engine.fast.repack import layout_of
from engine.fast.simd import ROWS512

pytestmark = pytest.mark.skipif(not ROWS512 or layout_of("q4_0") != "lanes",
                                reason="no AVX-512 VNNI here (or the kernel choice is lowered): rows.py is not used")

TYPES = [("q4_0", 2), ("q4_0", 0), ("q4_1", 1), ("q5_0", 2), ("q5_1", 2), ("q8_0", 2)]


@pytest.fixture(scope="module")
def matrices(tmp_path_factory):
    """Per type: the packed QKV (288 rows: 4.5 tiles) and head (200 rows) of a 2-layer random model."""
    from engine.fast.repack import pack_matrices
    from engine.ggml_file import GGMLFile
    folder = tmp_path_factory.mktemp("rows")
    out = {}
    for type_name, version in TYPES:
        path = folder / f"{type_name}_{version}.bin"
        write_random_model(path, dict(n_embd=96, n_head=3, n_layer=2, n_rot=4, n_vocab=200), ftype=type_name,
                           qnt_version=version, seed=5)
        f = GGMLFile(path)
        qkv = pack_matrices(str(path), [f.tensors[f"gpt_neox.layers.{i}.attention.query_key_value.weight"]
                                        for i in range(2)])
        head = pack_matrices(str(path), [f.tensors["embed_out.weight"]])
        out[type_name, version] = (qkv, head)
    return out


def _quantized(n, cols, seed):
    from engine.fast.gemm import quantize_rows
    from engine.fast.matvec import xsum_floats
    x = np.random.default_rng(seed).standard_normal((n, cols)).astype(np.float32) * 2
    x[0, :32] = 0.0                      # a block of zeros: dx = 0
    xq = np.zeros((n, xsum_floats(cols, False)), np.float32)
    quantize_rows(x, 0, n, xq)
    return xq


def _token_kernel(pm, layer, xq, t0, t1):
    """Each row through the one-token kernel (matvec), as the single-sequence path computes it."""
    from engine.fast.matvec import _lanes_nibbles, _lanes_q8_0
    a = pm.arrays
    out = np.full((xq.shape[0], pm.padded_rows), np.nan, np.float32)
    for r in range(xq.shape[0]):
        if pm.type == "q8_0":
            _lanes_q8_0(a[0], a[1], layer, xq[r], out[r], t0, t1)
        else:
            _lanes_nibbles(a[0], a[1], a[2], a[3], layer, xq[r], out[r], t0, t1)
    return out


@pytest.mark.parametrize("type_name,version", TYPES)
@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7, 8, 11])
def test_rows_equal_the_token_kernel_row_by_row(matrices, type_name, version, n):
    from engine.fast.rows import rows_lanes
    for which, pm in zip(("qkv", "head"), matrices[type_name, version]):
        tiles = pm.padded_rows // 64
        for layer in range(pm.n_layers):
            xq = _quantized(n, pm.cols, seed=10 * n + layer)
            expected = _token_kernel(pm, layer, xq, 0, tiles)
            got = np.full_like(expected, np.nan)
            rows_lanes(*pm.arrays, layer, xq, got, 0, tiles)
            scale = np.max(np.abs(expected))
            assert scale > 0
            assert np.max(np.abs(got - expected)) <= 2e-6 * scale, (which, layer)


@pytest.mark.parametrize("type_name,version", [("q4_0", 2), ("q5_1", 2), ("q8_0", 2)])
def test_rows_write_only_their_tiles(matrices, type_name, version):
    """A thread's share: tiles 1..2 of 5 are written, the others left as they were."""
    from engine.fast.rows import rows_lanes
    pm = matrices[type_name, version][0]
    xq = _quantized(5, pm.cols, seed=3)
    expected = _token_kernel(pm, 1, xq, 1, 3)
    got = np.full_like(expected, np.nan)
    rows_lanes(*pm.arrays, 1, xq, got, 1, 3)
    assert np.all(np.isnan(got[:, :64])) and np.all(np.isnan(got[:, 192:]))
    scale = np.max(np.abs(expected[:, 64:192]))
    assert np.max(np.abs(got[:, 64:192] - expected[:, 64:192])) <= 2e-6 * scale


@pytest.mark.parametrize("type_name,version", TYPES)
def test_matmat_takes_the_row_kernels_and_equals_gemm(matrices, type_name, version):
    """gemm.matmat (what forward_rows calls) with 6 rows against the prompt path's gemm (4 + 2 rows)."""
    from engine.fast.gemm import gemm_lanes, matmat
    from numba import njit

    @njit
    def call_matmat(a0, a1, a2, a3, layer, x, xs, out, t0, t1):
        matmat(a0, a1, a2, a3, layer, x, xs, out, t0, t1)

    pm = matrices[type_name, version][0]
    xq = _quantized(6, pm.cols, seed=4)
    tiles = pm.padded_rows // 64
    expected = np.full((6, pm.padded_rows), np.nan, np.float32)
    gemm_lanes(*pm.arrays, 0, xq, expected, 0, tiles)
    got = np.full_like(expected, np.nan)
    call_matmat(*pm.arrays, 0, np.zeros((6, pm.cols), np.float32), xq, got, 0, tiles)
    assert np.max(np.abs(got - expected)) <= 2e-6 * np.max(np.abs(expected))
