"""engine/fast/floatgemm.py: the f16/f32 weights' batched product against float64 numpy.

The shapes reach every branch: 1-3 leftover rows of a group, 1-3 leftover tokens, widths that are
not a multiple of 8 (the scalar tail, alone or after whole vectors), more columns than one
``COLUMN_BLOCK`` (partial sums added across blocks), several row groups, a sub-range of rows, and
an output wider than the range (the columns outside it untouched).
"""
from __future__ import annotations

import numpy as np
import pytest

from engine.fast.floatgemm import COLUMN_BLOCK, gemm_rows

SHAPES = [  # (rows, cols, tokens, r0, r1)
    (7, 16, 1, 0, 7), (8, 24, 5, 0, 8), (37, 50, 9, 0, 37), (64, 1024, 13, 3, 61), (5, 5, 4, 0, 5),
    (200, COLUMN_BLOCK + 40, 6, 0, 200), (300, 2 * COLUMN_BLOCK + 3, 3, 10, 290), (400, 256, 70, 0, 400),
]


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("rows,cols,n,r0,r1", SHAPES)
def test_gemm_rows_equals_numpy(dtype, rows, cols, n, r0, r1):
    rng = np.random.default_rng(rows * 1000 + cols + n)
    weights = (rng.standard_normal((2, rows, cols)) * 0.1).astype(dtype)
    stored = weights.view(np.uint16) if dtype == np.float16 else weights
    x = rng.standard_normal((n, cols)).astype(np.float32)
    out = np.full((n, rows + 5), 7.0, np.float32)
    gemm_rows(stored, 1, x, out, r0, r1)
    want = x.astype(np.float64) @ weights[1, r0:r1].astype(np.float64).T
    np.testing.assert_allclose(out[:, r0:r1], want, rtol=1e-4, atol=2e-5 * np.sqrt(cols))
    assert (out[:, :r0] == 7.0).all() and (out[:, r1:] == 7.0).all()
