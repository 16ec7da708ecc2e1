"""What the reader's weight check (every value finite and within the fp16 range) costs per GB.

    python bench/weight_check.py [--mb 512] [--rounds 3]

Runs `TensorInfo.first_bad_value` over an in-memory tensor of each block format (all zeros: a
sound file, so the integer screen passes every block and nothing is examined further, which is
the case of every real model) and prints the best of `--rounds` per type.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.ggml_file import TensorInfo  # noqa: E402
from engine.quants import block_format  # noqa: E402

FORMATS = [("f32", 0), ("f16", 0), ("q4_0", 0), ("q4_0", 2), ("q4_1", 1), ("q4_1", 2), ("q4_2", 0), ("q4_3", 0),
           ("q5_0", 2), ("q5_1", 2), ("q8_0", 0), ("q8_0", 2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    raw = np.zeros(args.mb << 20, dtype=np.uint8)
    print(f"weight check, {args.mb} MiB per type, best of {args.rounds}; load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'type':<8} {'version':>7} {'MiB':>6} {'seconds':>8} {'GB/s':>6}")
    for type_name, version in FORMATS:
        fmt = block_format(type_name, version)
        nbytes = raw.size // fmt.nbytes * fmt.nbytes
        values = nbytes // fmt.nbytes * fmt.values
        tensor = TensorInfo("t", type_name, version, (values // 4096, 4096), 0, nbytes, raw[:nbytes])
        best = min(_timed(tensor) for _ in range(args.rounds))
        print(f"{type_name:<8} {version:>7} {nbytes / 2**20:>6.0f} {best:>8.3f} {nbytes / best / 1e9:>6.2f}")


def _timed(tensor) -> float:
    start = time.perf_counter()
    assert tensor.first_bad_value() is None
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
