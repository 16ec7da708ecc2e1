"""Multiply-adds per second of the prompt path's kernel on one core, weight type by weight type.

    NUMBA_NUM_THREADS=1 python bench/prompt_kernels.py [--types q4_0,q8_0,q2_K,q3_K,q4_K,q5_K,q6_K,iq4_nl]
                                                      [--tokens 512] [--repeats 3] [--out DIR]

A long prompt is bound by the kernels' arithmetic, not by memory: the prompt path
(``prompt.TileDecoder``) gives each worker a group of rows of a matrix (about 1-2 MiB of weights,
which stay in L2) and runs ``rows.rows_lanes`` (or ``gemm.gemm_lanes`` without 512-bit VNNI) over
that group for every 8 (4) tokens. This script does the same for one group of 2048 rows of a
1024-column matrix (410M's ffn_up, half of it: one worker's share), each type stored pure in a
one-layer GGUF file of random valid blocks, and prints the CPU time of ``--tokens`` tokens and the
multiply-adds per second. The types' ratios say which kernels are slow; the absolute figure is
against the core's ``vpdpbusd`` peak (64 multiply-adds a cycle per port).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import kquant_speed  # noqa: E402  (bench/kquant_speed.py: random valid blocks in a GGUF file)
from engine import fast  # noqa: E402,F401  (numba's cache folder before numba compiles anything)
from engine.fast.gemm import gemm_lanes, quantize_rows  # noqa: E402
from engine.fast.matvec import xsum_floats  # noqa: E402
from engine.fast.repack import TILE, pack_matrices  # noqa: E402
from engine.fast.rows import MAX_ROWS, rows_lanes  # noqa: E402
from engine.fast.simd import ROWS512  # noqa: E402
from engine.gguf_file import GGUFFile  # noqa: E402
from engine.gguf_mix import tensor_type  # noqa: E402
from speed import SHAPES  # noqa: E402

PRESET = {"q2_K": "q2_K", "q3_K": "q3_K_S", "q4_K": "q4_K_S", "q5_K": "q5_K_S"}
GROUP_ROWS = 2048


def one_layer_file(folder: Path, type_name: str) -> Path:
    """A one-layer 410M-wide GGUF file whose matrices are all `type_name` (a small vocabulary)."""
    path = folder / f"kernel-{type_name}.gguf"
    if not path.exists():
        SHAPES["kernel"] = dict(SHAPES["410M"], n_layer=1)
        kquant_speed.N_VOCAB = 256
        kquant_speed.tensor_type = lambda mix, name, shape, n: tensor_type(mix, name, shape, n, pure=True)
        kquant_speed.write_gguf(path, "kernel", PRESET.get(type_name, type_name))
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--types", default="q4_0,q8_0,q2_K,q3_K,q4_K,q5_K,q6_K,iq4_nl")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args(argv)
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    kernel = rows_lanes if ROWS512 else gemm_lanes
    step = MAX_ROWS if ROWS512 else 4
    print(f"kernel: {kernel.__name__}, {step} tokens a pass, one thread, {args.tokens} tokens, "
          f"{GROUP_ROWS} x 1024 weights")
    print("| type | stored type | MiB of the group | ms | G multiply-adds/s | vs q8_0 |")
    print("| --- | --- | --- | --- | --- | --- |")
    rng = np.random.default_rng(0)
    rates = {}
    for type_name in args.types.split(","):
        gf = GGUFFile(str(one_layer_file(folder, type_name)))
        try:
            pm = pack_matrices(gf.path, [gf.tensors["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"]])
        finally:
            gf.close()
        arrays, index = pm.for_layer(0)
        cols = pm.cols
        x = rng.standard_normal((args.tokens, cols)).astype(np.float32)
        xq = np.empty((args.tokens, xsum_floats(cols, False)), np.float32)
        quantize_rows(x, 0, args.tokens, xq)
        out = np.empty((step, pm.padded_rows), np.float32)
        t1 = GROUP_ROWS // TILE

        def run():
            for r in range(0, args.tokens, step):
                kernel(*arrays, index, xq[r:r + step], out, 0, t1)

        run()                                  # compile, warm the caches
        best = float("inf")
        for _ in range(args.repeats):
            start = time.thread_time()
            run()
            best = min(best, time.thread_time() - start)
        rates[type_name] = GROUP_ROWS * cols * args.tokens / best / 1e9
        mib = pm.nbytes * GROUP_ROWS / pm.rows / 2 ** 20
        ratio = f"{rates[type_name] / rates['q8_0']:.2f}" if "q8_0" in rates else ""
        print(f"| {type_name} | {pm.type} | {mib:.2f} | {best * 1e3:.1f} | {rates[type_name]:.1f} | {ratio} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
