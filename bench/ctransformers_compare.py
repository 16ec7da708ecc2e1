"""Our fast path beside ctransformers 0.2.27 (ggml's C code from PyPI) on the same files, same run.

    python bench/ctransformers_compare.py [--ct-python /work/ctenv/bin/python] [--threads 2]
                                          [--sizes 70M,160M,410M] [--types q4_0] [--rounds 2]
                                          [--prompt-tokens 32] [--gen-tokens 64]

ctransformers lives in its own environment (it is not a dependency of this project):
``python3 -m venv /work/ctenv && /work/ctenv/bin/pip install ctransformers==0.2.27``. The files
are bench/speed.py's random-weight Pythia shapes (quantization version 2, the only one
ctransformers reads). Each round runs ``python -m engine bench`` and then ctransformers, each in
a fresh process, so on a shared machine both see about the same load; the table shows the best
round of each and the load average when the row finished. Generation is greedy on both sides
(ours: argmax; ctransformers: ``sample(top_k=1)``), and the prompt is fed in one batch.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.speed import GGML, json_or_error, run_bench, write_model  # noqa: E402

CT_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
from ctransformers import AutoModelForCausalLM
path, threads, n_prompt, n_gen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
m = AutoModelForCausalLM.from_pretrained(path, model_type="gpt_neox", threads=threads,
                                         context_length=n_prompt + n_gen + 8)
load_s = time.perf_counter() - t0
prompt = [(7919 * i) % 50000 + 1 for i in range(n_prompt)]
t = time.perf_counter()
m.eval(prompt, batch_size=n_prompt, threads=threads)
prompt_s = time.perf_counter() - t
t = time.perf_counter()
for _ in range(n_gen):
    m.eval([int(m.sample(top_k=1))], threads=threads)
gen_s = time.perf_counter() - t
print(json.dumps(dict(load_s=load_s, prompt_tokens_per_s=n_prompt / prompt_s,
                      gen_tokens_per_s=n_gen / gen_s)))
"""


def run_ctransformers(ct_python: str, path: Path, threads: int, prompt_tokens: int, gen_tokens: int) -> dict:
    """ctransformers' figures for one file, or {"error": what it reported}."""
    cmd = [ct_python, "-c", CT_SCRIPT, str(path), str(threads), str(prompt_tokens), str(gen_tokens)]
    return json_or_error(cmd)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ct-python", default="/work/ctenv/bin/python",
                    help="a Python with ctransformers==0.2.27 installed")
    ap.add_argument("--sizes", default="70M,160M,410M")
    ap.add_argument("--types", default="q4_0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="alternating runs of each side per file")
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--gen-tokens", type=int, default=64)
    args = ap.parse_args(argv)
    if not Path(args.ct_python).exists():
        print(f"no ctransformers Python at {args.ct_python} (see this script's docstring)", file=sys.stderr)
        return 2

    print(f"threads {args.threads}, prompt {args.prompt_tokens} tokens, {args.gen_tokens} generated; "
          f"best of {args.rounds} alternating rounds")
    print("| model | type | ours gen tok/s | ctransformers gen tok/s | ggml (issue 3, idle) gen tok/s | "
          "ours prompt tok/s | ctransformers prompt tok/s | load average |")
    print("| --- " * 8 + "|")
    for size in args.sizes.split(","):
        for t in args.types.split(","):
            path = write_model(size, t, 2)
            ours, theirs, error = [], [], ""
            for _ in range(args.rounds):
                ours.append(run_bench(path, args.threads, args.prompt_tokens, args.gen_tokens))
                ct = run_ctransformers(args.ct_python, path, args.threads, args.prompt_tokens, args.gen_tokens)
                if "error" in ct:
                    error = ct["error"]
                else:
                    theirs.append(ct)

            def best(rows, key):
                return f"{max(r[key] for r in rows):.1f}" if rows else f"failed: {error}"

            ggml = GGML.get((size, t))
            ggml_gen = f"{1000 / ggml[0]:.0f}" if ggml else ""
            load = "/".join(f"{v:.1f}" for v in os.getloadavg())
            print(f"| {size} | {t} | {best(ours, 'gen_tokens_per_s')} | {best(theirs, 'gen_tokens_per_s')} | "
                  f"{ggml_gen} | {best(ours, 'prompt_tokens_per_s')} | {best(theirs, 'prompt_tokens_per_s')} | "
                  f"{load} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
