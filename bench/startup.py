"""Time from process start to the first generated token, with numba's cache warm and empty.

    python bench/startup.py [MODEL] [--threads 2] [--runs 3] [--cold]

Starts ``python -c`` processes that load the model with ``engine.load_model`` (the fast path),
evaluate a 16-token prompt and pick the first token; the parent measures from just before it
starts each process to the moment the child reports its token on stdout. ``--cold`` first runs
once with an empty numba cache folder (a temporary ``NEOX_WRITER_HOME``), which is what a first
start after installing costs. Default model: bench/out/pythia-160M-q4_0-v2.bin (bench/speed.py
writes it).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys
import numpy as np
from engine import load_model
model = load_model(sys.argv[1], backend="fast", threads=int(sys.argv[2]))
logits = model.new_session(64).eval(list(range(100, 116)))
print(int(np.argmax(logits)), flush=True)
"""


def first_token_seconds(model: str, threads: int, env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, model, str(threads)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - start
    _, err = proc.communicate()
    if proc.returncode != 0 or not line.strip():
        raise SystemExit(f"the child failed: {err.strip().splitlines()[-1] if err.strip() else proc.returncode}")
    return elapsed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default=str(ROOT / "bench" / "out" / "pythia-160M-q4_0-v2.bin"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="also time a first run with an empty numba cache")
    args = ap.parse_args(argv)
    env = dict(os.environ)
    print(f"model {args.model}, threads {args.threads}, load average "
          + "/".join(f"{v:.1f}" for v in os.getloadavg()))
    if args.cold:
        with tempfile.TemporaryDirectory() as home:
            cold = first_token_seconds(args.model, args.threads, dict(env, NEOX_WRITER_HOME=home))
        print(f"empty numba cache: first token after {cold:.2f} s")
    first_token_seconds(args.model, args.threads, env)           # make sure the real cache is warm
    warm = [first_token_seconds(args.model, args.threads, env) for _ in range(args.runs)]
    print(f"warm cache: first token after {min(warm):.2f} s (best of {args.runs}; all: "
          + ", ".join(f"{w:.2f}" for w in warm) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
