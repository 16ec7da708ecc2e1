"""The batched prompt path: many tokens per pass.

Per layer the work is a handful of calls on [N, width] activation matrices, so the Python
between them is negligible next to the matrix products. The lanes layout's types (q4_0, q4_1,
q5_0, q5_1, q8_0 and the natively run K-quants and IQ4 on a CPU with AVX2) multiply the token
matrix, quantized to 8 bits, with the integer kernels of ``rows.py`` (512-bit VNNI) or ``gemm.py``;
f16 and f32 go through the register-blocked float kernel of ``floatgemm.py`` on the file's rows;
the other types decode a few MiB of weights at a time (``dequant.py``) and multiply the whole
token matrix with numpy's BLAS. The worker that computed
a block of outputs also adds their bias (and GELU for the MLP), while they are in its cache.
RoPE and causal attention are compiled (``forward.attend_prompt_heads``), the heads shared by the
same workers; LayerNorm is the compiled one of ``forward.py``.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from engine.fast.dequant import TILE_DEQUANT
from engine.fast.floatgemm import gemm_rows
from engine.fast.gemm import gemm_lanes, quantize_rows
from engine.fast.matvec import xsum_floats
from engine.fast.forward import attend_prompt_heads, bias_gelu, layer_norm_rows
from engine.fast.repack import TILE, PackedMatrix
from engine.fast.rows import rows_lanes
from engine.fast.simd import ROWS512
from engine.fast.threads import apply_threads

SCRATCH_FLOATS = 2 << 20      # 8 MiB of decoded weights per BLAS call; groups of rows of this size


class TileDecoder:
    """Multiplies token matrices by packed weight matrices, a group of rows at a time.

    The work is split by groups of rows over ``threads`` workers, each on one thread (every kernel
    releases the GIL): the integer kernels and floatgemm read the group in place; the other types
    decode it with numba and multiply it with single-threaded BLAS. Groups hold at most
    ``SCRATCH_FLOATS`` weights (the decoded copy's budget). floatgemm needs no copy and blocks its
    rows in L2 itself, so for f16/f32 the size only deals the rows out: at 1.4B a few groups per
    worker, so that one slowed by another program leaves more of them to the other.
    """

    def __init__(self, threads: int):
        self.threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="neox-gemm") if threads > 1 else None

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def _run(self, fn, jobs) -> None:
        if self._pool is None:
            for job in jobs:
                fn(*job)
        else:
            list(self._pool.map(lambda job: fn(*job), jobs))

    def matmul(self, pm: PackedMatrix, layer: int, x: np.ndarray, out: np.ndarray,
               bias: np.ndarray | None = None, gelu: bool = False) -> None:
        """out[:, :pm.rows] = x @ W[layer].T (+ bias, then GELU if asked) for x [N, cols].

        out must be C-contiguous with at least ``pm.padded_rows`` columns (whole tiles are stored).
        """
        rows, cols = pm.rows, pm.cols
        if pm.layout == "lanes":       # quantize the token matrix once, shared by the workers
            n = x.shape[0]
            xq = np.empty((n, xsum_floats(cols, False)), np.float32)
            self._run(quantize_rows, [(x, n * i // self.threads, n * (i + 1) // self.threads, xq)
                                      for i in range(self.threads)])
            x = xq
        if pm.tiled:
            unit = TILE
            step = max(1, SCRATCH_FLOATS // (cols * TILE)) * TILE
        else:
            unit = 1
            step = max(1, SCRATCH_FLOATS // cols)
        # at least one group per worker, so every core has work
        step = max(unit, min(step, -(-rows // (self.threads * unit)) * unit))
        groups = [(pm, layer, x, out, r0, min(rows, r0 + step), bias, gelu) for r0 in range(0, rows, step)]
        self._run(self._group, groups)

    def _group(self, pm: PackedMatrix, layer: int, x: np.ndarray, out: np.ndarray, r0: int, r1: int,
               bias, gelu) -> None:
        apply_threads(1)     # numba threads stay with the caller; parallelism is across groups
        if pm.type in ("f16", "f32"):   # register-blocked FMA on the file's rows (floatgemm.py)
            gemm_rows(pm.arrays[0], layer, x, out, r0, r1)
        elif pm.layout == "lanes":      # x is the quantized token matrix
            arrays, index = pm.for_layer(layer)      # a MixedMatrix: the layer's own type
            # with 512-bit VNNI the rows kernel (8 tokens a pass, each block widened once for the 8,
            # the group's weights staying in L2 from pass to pass) beat gemm's 4 tokens a pass on
            # 256-bit vectors: 410M 512-token prompts q6_K 143 -> 193-203 tokens/s, q4_K_M 200 ->
            # 228-242, q4_0 about the same (docs/benchmarks.md, sixth session)
            (rows_lanes if ROWS512 else gemm_lanes)(*arrays, index, x, out, r0 // TILE, -(-r1 // TILE))
        else:
            t0, t1 = r0 // TILE, -(-r1 // TILE)
            wt = np.empty((pm.cols, (t1 - t0) * TILE), np.float32)
            TILE_DEQUANT[pm.type](*pm.arrays, layer, t0, t1, wt)
            out[:, r0:r1] = x @ wt[:, :r1 - r0]
        if gelu:
            bias_gelu(out, r0, r1, bias)
        elif bias is not None:
            out[:, r0:r1] += bias[r0:r1]

    def attention(self, qkv: np.ndarray, n_past: int, n_head: int, n_rot: int, cos: np.ndarray,
                  sin: np.ndarray, kc: np.ndarray, vc: np.ndarray, out: np.ndarray) -> None:
        """RoPE, the cache's new rows and causal attention of the rows of qkv (positions n_past..),
        the heads shared by the workers (``forward.attend_prompt_heads``), into out."""
        n = qkv.shape[0]
        parts = [(n_head * i // self.threads, n_head * (i + 1) // self.threads) for i in range(self.threads)]
        self._run(lambda h0, h1: attend_prompt_heads(qkv, n, n_past, cos, sin, n_head, n_rot, kc, vc, out, h0, h1),
                  parts)


def forward_prompt(weights, decoder: TileDecoder, x: np.ndarray, n_past: int, cos, sin,
                   kcache, vcache) -> np.ndarray:
    """Run the rows of x (token embeddings [N, n_embd], positions n_past..) through every layer.

    Fills the KV cache for those positions and returns the final-LayerNorm output [N, n_embd]
    (the caller applies the head to the rows it needs).
    """
    c = weights.config
    n, e = x.shape

    def output(pm):      # whole tiles are stored: the padding columns are scratch
        return np.empty((n, pm.padded_rows), np.float32), pm.rows

    qkv_p, rows = output(weights.qkv)
    qkv = qkv_p[:, :rows]
    attn_p, rows = output(weights.dense)
    attn = attn_p[:, :rows]
    up_p, rows = output(weights.up)
    up = up_p[:, :rows]
    down_p, rows = output(weights.down)
    down = down_p[:, :rows]
    att = np.empty((n, e), np.float32)
    h = np.empty((n, e), np.float32)
    for layer in range(c.n_layer):
        ln = weights.ln[layer]
        layer_norm_rows(x, n, ln[0], ln[1], h)
        decoder.matmul(weights.qkv, layer, h, qkv_p, weights.b_qkv[layer])
        decoder.attention(qkv, n_past, c.n_head, c.n_rot, cos, sin, kcache[layer], vcache[layer], att)
        decoder.matmul(weights.dense, layer, att, attn_p, weights.b_dense[layer])
        y = x if c.parallel_residual else attn + x
        layer_norm_rows(y, n, ln[2], ln[3], h)
        decoder.matmul(weights.up, layer, h, up_p, weights.b_up[layer], gelu=True)
        decoder.matmul(weights.down, layer, up, down_p, weights.b_down[layer])
        x = (down + attn) + x if c.parallel_residual else down + y
    layer_norm_rows(x, n, weights.lnf[0], weights.lnf[1], h)
    return h
