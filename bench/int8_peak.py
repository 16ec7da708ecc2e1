"""The CPU's int8 multiply-add peak (512-bit ``vpdpbusd``), and what it makes the floor of N rows a step.

    python bench/int8_peak.py [--seconds 2] [--sizes 410M,1.4B] [--n 4,8]

One compiled loop per thread runs 8 independent accumulators of ``simd.dot4`` on 64-byte vectors
held in registers (the instruction the row kernels of ``engine/fast/rows.py`` run, 64 multiply-adds
each), so nothing but the vector units limits it. It prints G multiply-adds per second on 1 and 2
threads, then, per Pythia shape and N, the multiply-adds of one generation step of N sequences (every
matrix of every layer and the head, N times) and the time that step would take at that peak on 2
threads: the floor under the many-continuations path once the weights come from memory no slower
than the vectors consume them. Issue 13's N = 8 target (5x the single sequence's tokens/s) needs a
step of 8 rows within 8/5 of the single token's time; compare with `bench/parallel.py`. Measure on
an idle machine: another program on the cores lowers the peak it reports.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.speed import SHAPES  # noqa: E402
from engine import fast  # noqa: E402,F401  (numba's cache folder)
from engine.fast.simd import (ROWS512, broadcast4_wide, dot4, load_bytes_pair, store_floats_pair,  # noqa: E402
                              to_floats, zero_ints16)
from numba import njit  # noqa: E402

MACS_PER_CALL = 8 * 64          # 8 vpdpbusd of 64 byte products each per iteration


@njit(nogil=True, cache=True)
def _spin(w, x, iterations, out):
    """iterations x 8 vpdpbusd on registers; the sums are stored so none of it is dead code."""
    u0 = load_bytes_pair(w, 0, 32)
    u1 = load_bytes_pair(w, 64, 96)
    s0 = broadcast4_wide(x, 0)
    s1 = broadcast4_wide(x, 4)
    a0 = zero_ints16()
    a1 = zero_ints16()
    a2 = zero_ints16()
    a3 = zero_ints16()
    a4 = zero_ints16()
    a5 = zero_ints16()
    a6 = zero_ints16()
    a7 = zero_ints16()
    for _ in range(iterations):
        a0 = dot4(a0, u0, s0)
        a1 = dot4(a1, u1, s0)
        a2 = dot4(a2, u0, s1)
        a3 = dot4(a3, u1, s1)
        a4 = dot4(a4, u0, s0)
        a5 = dot4(a5, u1, s0)
        a6 = dot4(a6, u0, s1)
        a7 = dot4(a7, u1, s1)
    store_floats_pair(out, 0, 8, to_floats(a0))
    store_floats_pair(out, 16, 24, to_floats(a1))
    store_floats_pair(out, 32, 40, to_floats(a2))
    store_floats_pair(out, 48, 56, to_floats(a3))
    store_floats_pair(out, 64, 72, to_floats(a4))
    store_floats_pair(out, 80, 88, to_floats(a5))
    store_floats_pair(out, 96, 104, to_floats(a6))
    store_floats_pair(out, 112, 120, to_floats(a7))


def peak(threads: int, seconds: float) -> float:
    """G multiply-adds per second of ``threads`` threads spinning together (the slowest one's time)."""
    rng = np.random.default_rng(0)
    w = rng.integers(0, 16, 128, dtype=np.uint8)
    x = rng.integers(-127, 128, 8, dtype=np.int8)
    iterations = 1 << 20
    outs = [np.zeros(128, np.float32) for _ in range(threads)]
    _spin(w, x, 16, outs[0])                      # compile (or load the cache) outside the timing
    start = time.perf_counter()
    _spin(w, x, iterations, outs[0])
    iterations = max(1 << 16, int(iterations * seconds / max(time.perf_counter() - start, 1e-6)))
    times = [0.0] * threads

    def worker(i: int) -> None:
        t0 = time.perf_counter()
        _spin(w, x, iterations, outs[i])
        times[i] = time.perf_counter() - t0

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return threads * iterations * MACS_PER_CALL / max(times) / 1e9


def step_macs(size: str, n: int) -> float:
    """Multiply-adds of one step of n sequences: QKV, dense, MLP up and down of every layer, and the head."""
    s = SHAPES[size]
    e, layers, vocab = s["n_embd"], s["n_layer"], 50304
    return n * (layers * 12 * e * e + vocab * e)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--sizes", default="410M,1.4B")
    ap.add_argument("--n", default="4,8")
    args = ap.parse_args(argv)
    if not ROWS512:
        print("this CPU lacks AVX-512 F/BW/VNNI: the row kernels (and this measure) do not run here")
        return 1
    one = peak(1, args.seconds)
    two = peak(2, args.seconds)
    print("| threads | G int8 multiply-adds/s |\n| --- | --- |")
    print(f"| 1 | {one:.0f} |\n| 2 | {two:.0f} |\n")
    print("| model | N | G multiply-adds a step | floor ms a step at the 2-thread peak | floor tok/s (all N) |")
    print("| --- | --- | --- | --- | --- |")
    for size in args.sizes.split(","):
        for n in (int(v) for v in args.n.split(",")):
            macs = step_macs(size, n)
            ms = macs / (two * 1e9) * 1e3
            print(f"| {size} | {n} | {macs / 1e9:.2f} | {ms:.2f} | {n / ms * 1e3:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
