"""Memory read bandwidth of this machine with N threads, and the bytes a model reads per generated token.

    python bench/bandwidth.py [--threads 2] [--mib 1024] [MODEL ...]

Single-stream generation reads every weight matrix once per token, so a generation speed is best
judged against what the cores can read from memory at all (issue 19 part 2: at least 90% of it).
``read_bandwidth`` sums a buffer far larger than the caches with ``threads`` workers (a compiled
loop each, GIL released, as the engine's kernels run), best of a few passes; ``bytes_per_token``
is a model file's tensors less the token embedding (one row of it is read per token).
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from numba import njit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EMBEDDING = "gpt_neox.embed_in.weight"


@njit(nogil=True, fastmath=True, cache=True)
def _sum(words, lo, hi):
    """The sum of words[lo:hi] (float32; fast-math lets the loop run on vectors with several sums)."""
    part = words[lo:hi]            # indices from 0: no negative-index wraparound to keep it scalar
    total = np.float32(0.0)
    for i in range(part.size):
        total += part[i]
    return total


def read_bandwidth(threads: int = 2, mib: int = 1024, passes: int = 5) -> float:
    """GB/s (10^9 bytes) read by ``threads`` workers summing ``mib`` MiB, best of ``passes``."""
    words = np.ones(mib * 2**20 // 4, np.float32)
    n = words.size
    parts = [(n * i // threads, n * (i + 1) // threads) for i in range(threads)]
    _sum(words, 0, 1024)
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(passes):
            t = time.perf_counter()
            list(pool.map(lambda p: _sum(words, *p), parts))
            best = min(best, time.perf_counter() - t)
    return words.nbytes / best / 1e9


def bytes_per_token(path) -> int:
    """The bytes of a model file's tensors that one generated token reads: all but the token embedding."""
    from engine.model_file import open_model_file
    f = open_model_file(path)
    try:
        return sum(t.nbytes for name, t in f.tensors.items() if name != EMBEDDING)
    finally:
        f.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mib", type=int, default=1024)
    args = ap.parse_args(argv)
    print(f"read bandwidth, {args.threads} threads: {read_bandwidth(args.threads, args.mib):.1f} GB/s")
    for m in args.models:
        print(f"{m}: {bytes_per_token(m) / 2**20:.1f} MiB read per token")
    return 0


if __name__ == "__main__":
    sys.exit(main())
