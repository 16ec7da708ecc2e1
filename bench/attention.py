"""The attention of one generated token, and of N branches' rows, alone: milliseconds for every layer.

    python bench/attention.py [--size 410M] [--lengths 128,512,1024,2048] [--rows 4,8]
                              [--prefix 32] [--own 32] [--kv f16,f32] [--threads 2] [--repeats 15]

The KV caches are random arrays of the Pythia shape (410M: 24 layers, 16 heads of 64), one per
layer as a session holds them, so a long cache is read from memory as in generation; ``--kv``
names the caches' types to time (fp16 bits, the sessions' default, and float32).

* Single token (``forward.attention``, what ``forward_token`` runs per layer): the time for all
  layers at each cache length, the bytes of keys and values read and the rate they were read at.
* Rows (``forward.row_attention``, what ``forward_rows`` runs per layer for a batch of branches):
  N rows over a shared prefix of ``--prefix`` positions and ``--own`` positions of each branch's
  own cache ([layer, sequence, position, n_embd], as ``FastBranches`` holds it).

Best and median of ``--repeats`` passes, wall time. Not a test: it prints a table.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import fast  # noqa: E402,F401  (sets numba's cache folder before numba compiles anything)
from engine.fast.forward import attention, row_attention  # noqa: E402
from engine.fast.session import KV_DTYPES, kv_stored  # noqa: E402
from engine.fast.threads import apply_threads  # noqa: E402

SHAPES = {"70M": (6, 8, 512), "160M": (12, 12, 768), "410M": (24, 16, 1024), "1.4B": (24, 16, 2048)}


def timed(fn, repeats: int) -> tuple[float, float]:
    """(best, median) seconds of fn() over ``repeats`` calls, after one to compile and warm."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), float(np.median(times))


def cache(rng, shape, kv: str) -> np.ndarray:
    """Random keys or values as a cache of type ``kv`` holds them."""
    return kv_stored(rng.standard_normal(shape, dtype=np.float32), KV_DTYPES[kv])


def single_token(n_layer, n_head, e, lengths, kv, threads, repeats, rng) -> None:
    top = max(lengths)
    kc, vc = cache(rng, (n_layer, top, e), kv), cache(rng, (n_layer, top, e), kv)
    qkv = rng.standard_normal(3 * e).astype(np.float32)
    scores = np.zeros((n_head, top), np.float32)
    out = np.zeros(e, np.float32)
    print("| KV | cache positions | best ms | median ms | K+V MiB read | GB/s (best) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for length in lengths:
        def run():
            for layer in range(n_layer):
                attention(threads, qkv, length, n_head, kc[layer], vc[layer], scores, out)
        best, median = timed(run, repeats)
        size = n_layer * length * e * kc.itemsize * 2
        print(f"| {kv} | {length} | {best * 1e3:.2f} | {median * 1e3:.2f} | {size / 2**20:.0f} | "
              f"{size / best / 1e9:.1f} |")


def rows(n_layer, n_head, e, counts, prefix, own, kv, threads, repeats, rng) -> None:
    kc, vc = cache(rng, (n_layer, prefix, e), kv), cache(rng, (n_layer, prefix, e), kv)
    print("| KV | rows | prefix | own each | best ms | median ms | K+V MiB read | GB/s (best) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in counts:
        kb, vb = cache(rng, (n_layer, n, own + 1, e), kv), cache(rng, (n_layer, n, own + 1, e), kv)
        qkv = rng.standard_normal((n, 3 * e)).astype(np.float32)
        seqs = np.arange(n, dtype=np.int64)
        lengths = np.full(n, own, np.int64)            # own positions before this row's own token
        scores = np.zeros((n * n_head, prefix + own + 1), np.float32)
        out = np.zeros((n, e), np.float32)

        def run():
            for layer in range(n_layer):
                row_attention(threads, qkv, seqs, lengths, prefix, n_head, kc[layer], vc[layer], kb[layer],
                              vb[layer], scores, out)
        best, median = timed(run, repeats)
        size = n_layer * (prefix + n * (own + 1)) * e * kc.itemsize * 2
        print(f"| {kv} | {n} | {prefix} | {own + 1} | {best * 1e3:.2f} | {median * 1e3:.2f} | {size / 2**20:.0f} | "
              f"{size / best / 1e9:.1f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="410M", choices=sorted(SHAPES))
    ap.add_argument("--lengths", default="128,512,1024,2048", help="single token: cache positions")
    ap.add_argument("--rows", default="4,8", help="rows: numbers of branches (empty: none)")
    ap.add_argument("--prefix", type=int, default=32, help="rows: the shared prefix's positions")
    ap.add_argument("--own", type=int, default=32, help="rows: each branch's own positions before its row")
    ap.add_argument("--kv", default="f16,f32", help="the caches' types to time: f16, f32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args(argv)
    n_layer, n_head, e = SHAPES[args.size]
    apply_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"{args.size}: {n_layer} layers, {n_head} heads of {e // n_head}, {args.threads} threads\n")
    kvs = args.kv.split(",")
    if any(kv not in KV_DTYPES for kv in kvs):
        ap.error(f"--kv: each of {', '.join(KV_DTYPES)}")
    for kv in kvs if args.lengths else []:
        single_token(n_layer, n_head, e, [int(x) for x in args.lengths.split(",")], kv, args.threads, args.repeats,
                     rng)
        print()
    for kv in kvs if args.rows else []:
        rows(n_layer, n_head, e, [int(x) for x in args.rows.split(",")], args.prefix, args.own, kv, args.threads,
             args.repeats, rng)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
