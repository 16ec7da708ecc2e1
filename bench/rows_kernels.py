"""CPU time of N token rows against one pass over a weight matrix: 1 token vs N = 2, 4, 8, old path vs new.

    NUMBA_NUM_THREADS=1 python bench/rows_kernels.py [--sizes 410M,1.4B] [--types q4_0,q4_1,q5_0,q5_1,q8_0]
                                                    [--n 2,4,8] [--repeats 5]

The matrix is the MLP's h -> 4h of every layer of the random-weight Pythia-shaped files of
``bench/speed.py`` (410M: 4096 x 1024, 1.4B: 8192 x 2048; all layers together far exceed the L3
cache, so each pass reads the weights from memory, as generation does). One pass runs every layer's
matrix once on this thread:

* 1 token: ``matvec``, the single-sequence kernel;
* old: ``gemm`` a tile at a time, what ``gemm.matmat`` did for 2+ rows (256-bit, 4 rows per pass);
* new: ``rows.rows_product`` (512-bit, up to 8 rows per widening), where the CPU has AVX-512 VNNI.

Times are CPU seconds of this thread (``time.thread_time``), the best of ``--repeats`` passes:
on a shared machine they move far less than wall time. The table gives microseconds per matrix
and each N's cost relative to one token's (a batched generation's products cost about that ratio).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.speed import write_model  # noqa: E402
from engine import fast  # noqa: E402,F401  (sets numba's cache folder before numba compiles anything)
from numba import njit  # noqa: E402

from engine.fast.gemm import gemm, quantize_rows  # noqa: E402
from engine.fast.matvec import matvec, n_tiles, xsum_floats  # noqa: E402
from engine.fast.repack import pack_matrices  # noqa: E402
from engine.fast.rows import rows_product  # noqa: E402
from engine.fast.simd import ROWS512  # noqa: E402
from engine.ggml_file import GGMLFile  # noqa: E402


@njit(nogil=True)
def one_token(a0, a1, a2, a3, xq, out):
    for layer in range(a0.shape[0]):
        matvec(a0, a1, a2, a3, layer, xq[0], xq[0], out[0], 0, n_tiles(a0))


@njit(nogil=True)
def old_rows(a0, a1, a2, a3, xq, out):
    for layer in range(a0.shape[0]):
        for t in range(n_tiles(a0)):
            gemm(a0, a1, a2, a3, layer, xq, out, t, t + 1)


@njit(nogil=True)
def new_rows(a0, a1, a2, a3, xq, out):
    for layer in range(a0.shape[0]):
        rows_product(a0, a1, a2, a3, layer, xq, out, 0, n_tiles(a0))


def cpu_seconds(fn, arrays, xq, out, repeats: int) -> float:
    fn(*arrays, xq, out)                        # compile, and warm the caches of the x rows
    best = float("inf")
    for _ in range(repeats):
        t0 = time.thread_time()
        fn(*arrays, xq, out)
        best = min(best, time.thread_time() - t0)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="410M,1.4B")
    ap.add_argument("--types", default="q4_0,q4_1,q5_0,q5_1,q8_0")
    ap.add_argument("--n", default="2,4,8", help="row counts")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    counts = [int(v) for v in args.n.split(",")]
    if not ROWS512:
        print("this CPU has no AVX-512 VNNI (or NEOX_WRITER_KERNELS lowers the choice): only the old path runs")

    print("| model | type | matrix | 1 token us | N | old us | old / 1 token | new us | new / 1 token | old / new |")
    print("| --- " * 10 + "|")
    for size in args.sizes.split(","):
        for type_name in args.types.split(","):
            path = write_model(size, type_name, 2)
            f = GGMLFile(path)
            n_layer = f.hparams["n_layer"]
            pm = pack_matrices(str(path), [f.tensors[f"gpt_neox.layers.{i}.mlp.dense_h_to_4h.weight"]
                                           for i in range(n_layer)])
            if pm.layout != "lanes":
                print(f"| {size} | {type_name} | not the lanes layout on this CPU |")
                continue
            rng = np.random.default_rng(0)
            x = rng.standard_normal((max(counts), pm.cols)).astype(np.float32)
            xq = np.zeros((max(counts), xsum_floats(pm.cols, False)), np.float32)
            quantize_rows(x, 0, x.shape[0], xq)
            out = np.zeros((max(counts), pm.padded_rows), np.float32)
            per = lambda s: s / n_layer * 1e6          # noqa: E731  (microseconds per matrix)
            single = per(cpu_seconds(one_token, pm.arrays, xq[:1], out[:1], args.repeats))
            shape = f"{pm.rows} x {pm.cols}"
            for n in counts:
                old = per(cpu_seconds(old_rows, pm.arrays, xq[:n], out[:n], args.repeats))
                if ROWS512:
                    new = per(cpu_seconds(new_rows, pm.arrays, xq[:n], out[:n], args.repeats))
                    cells = f"{new:.0f} | {new / single:.2f}x | {old / new:.2f}x"
                else:
                    cells = "- | - | -"
                print(f"| {size} | {type_name} | {shape} | {single:.0f} | {n} | {old:.0f} | {old / single:.2f}x | "
                      f"{cells} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
