"""f16 and f32 weights times a matrix of tokens, held in registers: the float types' batched product.

The weights keep their file's layout (``repack``'s "rows": row-major fp16 bits or float32), and
out[n, r] = x[n] . W[layer, r] for every token row n and each weight row r of a range. Three
weight rows and four tokens go at a time: twelve 8-lane accumulators plus the three rows' vectors
fill the 16 AVX2 registers, so each 8 weights widened from fp16 (one ``vcvtph2ps``) serve four
tokens and each 8 activations loaded serve three rows, and the loop runs on the FMA units rather
than on loads. Four tokens' activations over ``COLUMN_BLOCK`` columns stay in L1 while a group of
rows (``ROW_BLOCK_BYTES``, held in L2) passes by; then the next four tokens of the block meet the
same rows (blocks of ``TOKEN_BLOCK`` tokens, packed, so that theirs stay in L2 as well).

``gemv_rows`` is the one-token product, summed per row exactly as here.

This replaced decoding f16 rows to float32 for numpy's BLAS (OpenBLAS's 256-bit kernels): about as
fast on long prompts, much faster on short ones (410M f16, 32 tokens: 98-117 -> 137-170 tokens/s
batched, 193 in the one-call path, which this made usable for f16), with no decoded copy. For a
few tokens (the sequences of a batched generation) it also replaces a one-token matvec per row per
token. (Four rows by four tokens in 16-lane values, 32 ymm halves, spilled on AVX2: a third of
this speed. With AVX-512's 32 registers, three rows by eight tokens ran no faster on Zen 4: this
kernel already reaches about 92 % of its two 256-bit FMA pipes, docs/benchmarks.md, tenth session.)
"""
from __future__ import annotations

import numpy as np
from numba import njit

from engine.fast.matvec import as_float
from engine.fast.simd import add_lanes, load_floats, mul_add, prefetch, prefetch_far, zero_floats

TOKEN_BLOCK = 64          # tokens per pass: their packed activations (256 KiB at 1024 columns) stay in L2
COLUMN_BLOCK = 1024       # columns per pass: four tokens' activations (16 KiB) stay in L1
ROW_BLOCK_BYTES = 96 << 10    # weights per group of rows (fp16: 48 rows of 1024): they stay in L2 too
WIDTH = 8                 # floats per vector


@njit(nogil=True, fastmath=True, inline="always")
def _dot_tail(w, wi, x, xi, k0, cols):
    """The products of columns k0..cols-1, one at a time (the last few columns of a row)."""
    s = np.float32(0.0)
    for k in range(k0, cols):
        s += as_float(w[wi + k]) * x[xi + k]
    return s


@njit(nogil=True, fastmath=True, inline="always")
def _put(out, t, r, value, first):
    if first:
        out[t, r] = value
    else:
        out[t, r] += value


@njit(nogil=True, fastmath=True, inline="always")
def _one_row_one_token(w, w0, x, x0, k0, k1, out, t, r, first):
    c = zero_floats()
    for k in range(k0, k1, WIDTH):
        c = mul_add(load_floats(w, w0 + k), load_floats(x, x0 + k), c)
    _put(out, t, r, add_lanes(c), first)


@njit(nogil=True, fastmath=True, inline="always")
def _three_rows_one_token(w, w0, cols, x, x0, k0, k1, out, t, r, first):
    """out[t, r..r+2]: the rows' widened weights each used once (the last tokens)."""
    c0 = zero_floats()
    c1 = zero_floats()
    c2 = zero_floats()
    for k in range(k0, k1, WIDTH):
        y = load_floats(x, x0 + k)
        c0 = mul_add(load_floats(w, w0 + k), y, c0)
        c1 = mul_add(load_floats(w, w0 + cols + k), y, c1)
        c2 = mul_add(load_floats(w, w0 + 2 * cols + k), y, c2)
    _put(out, t, r, add_lanes(c0), first)
    _put(out, t, r + 1, add_lanes(c1), first)
    _put(out, t, r + 2, add_lanes(c2), first)


@njit(nogil=True, fastmath=True, inline="always")
def _eight_rows_one_token(w, w0, cols, x, k0, k1, out, r, first, ahead):
    """out[0, r..r+7] for one token: eight rows' chains side by side, each row summed exactly as
    ``_three_rows_four_tokens`` sums it; lines from ``ahead`` on asked for into L2, as many per step
    as the step reads (the next eight rows' same columns: ahead moves 8 values a column)."""
    c0 = zero_floats()
    c1 = zero_floats()
    c2 = zero_floats()
    c3 = zero_floats()
    c4 = zero_floats()
    c5 = zero_floats()
    c6 = zero_floats()
    c7 = zero_floats()
    for k in range(k0, k1, WIDTH):
        p = ahead + 8 * (k - k0)
        prefetch_far(w, p)
        prefetch_far(w, p + 32)
        if w.itemsize == 4:
            prefetch_far(w, p + 16)
            prefetch_far(w, p + 48)
        y = load_floats(x, k)
        c0 = mul_add(load_floats(w, w0 + k), y, c0)
        c1 = mul_add(load_floats(w, w0 + cols + k), y, c1)
        c2 = mul_add(load_floats(w, w0 + 2 * cols + k), y, c2)
        c3 = mul_add(load_floats(w, w0 + 3 * cols + k), y, c3)
        c4 = mul_add(load_floats(w, w0 + 4 * cols + k), y, c4)
        c5 = mul_add(load_floats(w, w0 + 5 * cols + k), y, c5)
        c6 = mul_add(load_floats(w, w0 + 6 * cols + k), y, c6)
        c7 = mul_add(load_floats(w, w0 + 7 * cols + k), y, c7)
    _put(out, 0, r, add_lanes(c0), first)
    _put(out, 0, r + 1, add_lanes(c1), first)
    _put(out, 0, r + 2, add_lanes(c2), first)
    _put(out, 0, r + 3, add_lanes(c3), first)
    _put(out, 0, r + 4, add_lanes(c4), first)
    _put(out, 0, r + 5, add_lanes(c5), first)
    _put(out, 0, r + 6, add_lanes(c6), first)
    _put(out, 0, r + 7, add_lanes(c7), first)


@njit(nogil=True, fastmath=True, inline="always")
def _three_rows_four_tokens(w, w0, cols, xp, q0, k0, k1, out, t, r, first, ahead):
    """out[t..t+3, r..r+2]: 12 accumulators, each weight vector used four times, each token's three.

    The four tokens come packed (``_pack_four``): at q0 + 4 (k - k0) lie columns k..k+7 of each
    token in turn, so the four are one stream. Read from x itself, four rows 4 KiB apart at
    1024 columns fall in one L1 set with the weight rows, and evict each other between the group's
    rows. ``ahead`` >= 0: also ask for the next three rows' weights from there on (the first pass
    over a group, which reads them from memory)."""
    c00 = zero_floats()
    c01 = zero_floats()
    c02 = zero_floats()
    c10 = zero_floats()
    c11 = zero_floats()
    c12 = zero_floats()
    c20 = zero_floats()
    c21 = zero_floats()
    c22 = zero_floats()
    c30 = zero_floats()
    c31 = zero_floats()
    c32 = zero_floats()
    for k in range(k0, k1, WIDTH):
        if ahead >= 0:
            prefetch(w, ahead + k)
            prefetch(w, ahead + cols + k)
            prefetch(w, ahead + 2 * cols + k)
        a0 = load_floats(w, w0 + k)
        a1 = load_floats(w, w0 + cols + k)
        a2 = load_floats(w, w0 + 2 * cols + k)
        at = q0 + 4 * (k - k0)
        y = load_floats(xp, at)
        c00 = mul_add(a0, y, c00)
        c01 = mul_add(a1, y, c01)
        c02 = mul_add(a2, y, c02)
        y = load_floats(xp, at + WIDTH)
        c10 = mul_add(a0, y, c10)
        c11 = mul_add(a1, y, c11)
        c12 = mul_add(a2, y, c12)
        y = load_floats(xp, at + 2 * WIDTH)
        c20 = mul_add(a0, y, c20)
        c21 = mul_add(a1, y, c21)
        c22 = mul_add(a2, y, c22)
        y = load_floats(xp, at + 3 * WIDTH)
        c30 = mul_add(a0, y, c30)
        c31 = mul_add(a1, y, c31)
        c32 = mul_add(a2, y, c32)
    _put(out, t, r, add_lanes(c00), first)
    _put(out, t, r + 1, add_lanes(c01), first)
    _put(out, t, r + 2, add_lanes(c02), first)
    _put(out, t + 1, r, add_lanes(c10), first)
    _put(out, t + 1, r + 1, add_lanes(c11), first)
    _put(out, t + 1, r + 2, add_lanes(c12), first)
    _put(out, t + 2, r, add_lanes(c20), first)
    _put(out, t + 2, r + 1, add_lanes(c21), first)
    _put(out, t + 2, r + 2, add_lanes(c22), first)
    _put(out, t + 3, r, add_lanes(c30), first)
    _put(out, t + 3, r + 1, add_lanes(c31), first)
    _put(out, t + 3, r + 2, add_lanes(c32), first)


@njit(nogil=True, inline="always")
def _pack_four(x, cols, b0, b1, k0, k1, xp):
    """Columns k0..k1-1 of the whole fours of x's rows b0..b1-1, interleaved 8 at a time: the four
    from token b0 + 4 q starts at 4 q (k1 - k0), and there column k0 + 8 s + lane of its token i is
    at 32 s + 8 i + lane."""
    span = 4 * (k1 - k0)
    for q in range((b1 - b0) // 4):
        for i in range(4):
            src = (b0 + 4 * q + i) * cols + k0
            for s in range(0, k1 - k0, WIDTH):
                dst = q * span + 4 * s + i * WIDTH
                for lane in range(WIDTH):
                    xp[dst + lane] = x[src + s + lane]


@njit(nogil=True, fastmath=True, cache=True)
def gemm_rows(w, layer, x, out, r0, r1):
    """out[n, r] = x[n] . W[layer, r] for every row n of x and r0 <= r < r1.

    w: [layers, rows, cols] fp16 bits (uint16) or float32, C-contiguous; x: [N, cols] float32,
    C-contiguous; out: [N, >= r1] float32 (rows of any stride).

    The loops: a block of tokens, a block of columns (packed: four tokens' part stays in L1, the
    block's in L2), a group of rows (in L2), every four tokens, the group's rows three at a time.
    """
    rows, cols = w.shape[1], w.shape[2]
    n = x.shape[0]
    wf = w.reshape(-1)
    xf = x.reshape(-1)
    wide = cols - cols % WIDTH
    group = max(3, ROW_BLOCK_BYTES // (min(cols, COLUMN_BLOCK) * w.itemsize) // 3 * 3)
    xp = np.empty(min(n, TOKEN_BLOCK) // 4 * 4 * min(wide, COLUMN_BLOCK), np.float32)
    for b0 in range(0, n, TOKEN_BLOCK):
        b1 = min(n, b0 + TOKEN_BLOCK)
        for k0 in range(0, max(wide, 1), COLUMN_BLOCK):
            k1 = min(wide, k0 + COLUMN_BLOCK)
            first = k0 == 0
            _pack_four(xf, cols, b0, b1, k0, k1, xp)
            for g0 in range(r0, r1, group):
                g1 = min(r1, g0 + group)
                t = b0
                while t < b1:
                    four = t + 4 <= b1
                    r = g0
                    while r + 3 <= g1:
                        w0 = (layer * rows + r) * cols
                        if four:
                            ahead = w0 + 3 * cols if t == b0 and r + 6 <= g1 else -1
                            _three_rows_four_tokens(wf, w0, cols, xp, (t - b0) * (k1 - k0), k0, k1, out, t, r,
                                                    first, ahead)
                        else:
                            _three_rows_one_token(wf, w0, cols, xf, t * cols, k0, k1, out, t, r, first)
                        r += 3
                    while r < g1:            # the last one or two rows of the group
                        w0 = (layer * rows + r) * cols
                        for i in range(4 if four else 1):
                            _one_row_one_token(wf, w0, xf, (t + i) * cols, k0, k1, out, t + i, r, first)
                        r += 1
                    t += 4 if four else 1
    if wide < cols:                      # a width that is not a multiple of 8 (never in Pythia's shapes)
        for t in range(n):
            for r in range(r0, r1):
                w0 = (layer * rows + r) * cols
                _put(out, t, r, _dot_tail(wf, w0, xf, t * cols, wide, cols), wide == 0)


@njit(nogil=True, fastmath=True, cache=True)
def gemv_rows(w, layer, x, out, r0, r1):
    """``gemm_rows`` of one token: out[0, r] = x[0] . W[layer, r] for r0 <= r < r1.

    Each row is summed bit for bit as ``gemm_rows`` sums it (one 8-lane chain per block of
    COLUMN_BLOCK columns), so a sequence's token and a batched branch's equal each other exactly:
    with fp16 key and value caches a last-bit difference in a key would round to another half and
    could turn a near tie (tests/test_engine_branches.py). One chain is an FMA's latency per 8
    weights, so eight rows go side by side. Eight rows 4 KiB or more apart (f32 at 1024 columns, f16
    at 2048) fall in the same L1 sets and read memory at half speed here, so each step also asks for
    the next eight rows' lines into L2 (``prefetch_far``), in order: one stream, as the single-row loop
    this replaced (``matvec._rows``, LLVM's vectorised sum in its own order) read them, at its speed
    (bench: 410M f16 4 x 4096 x 1024 and 4096 x 4096, 70M and 410M f16 generation within noise)."""
    rows, cols = w.shape[1], w.shape[2]
    wf = w.reshape(-1)
    xf = np.ascontiguousarray(x[0])
    wide = cols - cols % WIDTH
    r = r0
    while r + 8 <= r1:
        w0 = (layer * rows + r) * cols
        for k0 in range(0, max(wide, 1), COLUMN_BLOCK):
            # the block of the next eight rows, spread over this block's steps (within the matrix)
            nxt = w0 + 8 * cols + 8 * k0 if r + 16 <= r1 else w0
            _eight_rows_one_token(wf, w0, cols, xf, k0, min(wide, k0 + COLUMN_BLOCK), out, r, k0 == 0, nxt)
        r += 8
    while r < r1:
        w0 = (layer * rows + r) * cols
        for k0 in range(0, max(wide, 1), COLUMN_BLOCK):
            _one_row_one_token(wf, w0, xf, 0, k0, min(wide, k0 + COLUMN_BLOCK), out, 0, r, k0 == 0)
        r += 1
    if wide < cols:
        for r in range(r0, r1):
            w0 = (layer * rows + r) * cols
            _put(out, 0, r, _dot_tail(wf, w0, xf, 0, wide, cols), wide == 0)
