"""N continuations of one prompt in one pass over the weights, against one sequence, same process.

    python bench/parallel.py [--sizes 410M,1.4B] [--types q4_0,q5_1,q8_0] [--n 1,2,4,8] [--rounds 1]
                             [--threads 2] [--prompt-tokens 32] [--gen-tokens 64]

For every file (the random-weight Pythia-shaped files of ``bench/speed.py``, written on first
use) and every N, runs ``python -m engine bench FILE --parallel N --json`` in a fresh process:
it times a single greedy sequence and then N sequences after the same prompt, with the same
lengths, in that one process (the single sequence before and after the N), so the ratio is as
fair as a shared machine allows. The table shows the run with the median ratio of ``--rounds``
runs (with the range of the ratios) and the load average (``os.getloadavg``) when it ended; the memory column checks the issue's budget: resident
memory after the N-sequence run <= the figure after the single run + the N sequences' own KV
cache + 64 MiB.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.speed import write_model  # noqa: E402

# the targets: parallel_gen_tokens_per_s / gen_tokens_per_s at N
TARGETS = {("70M", 4): 2.0, ("410M", 4): 3.0, ("410M", 8): 5.0, ("1.4B", 4): 3.0, ("1.4B", 8): 5.0}
MEMORY_SLACK_MIB = 64


def run_parallel(path: Path, n: int, threads: int, prompt_tokens: int, gen_tokens: int) -> dict:
    cmd = [sys.executable, "-m", "engine", "bench", str(path), "--threads", str(threads), "--prompt-tokens",
           str(prompt_tokens), "--gen-tokens", str(gen_tokens), "--parallel", str(n), "--json"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["load"] = "/".join(f"{v:.1f}" for v in os.getloadavg())
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="410M,1.4B")
    ap.add_argument("--types", default="q4_0,q5_1,q8_0")
    ap.add_argument("--n", default="1,2,4,8", help="numbers of sequences")
    ap.add_argument("--version", type=int, default=2, help="quantization version of the files")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=1, help="runs per row; the table shows the median ratio")
    args = ap.parse_args(argv)

    print("| model | type | N | single tok/s | N sequences tok/s | ratio | target | RSS single MiB | "
          "RSS after N MiB | budget MiB | load average |")
    print("| --- " * 11 + "|")
    for size in args.sizes.split(","):
        for t in args.types.split(","):
            path = write_model(size, t, args.version)
            for n in (int(x) for x in args.n.split(",")):
                runs = [run_parallel(path, n, args.threads, args.prompt_tokens, args.gen_tokens)
                        for _ in range(args.rounds)]
                runs.sort(key=lambda x: x["parallel_speedup"])
                r = runs[len(runs) // 2]
                spread = f" ({runs[0]['parallel_speedup']:.2f}-{runs[-1]['parallel_speedup']:.2f})" if len(runs) > 1 else ""
                target = TARGETS.get((size, n))
                verdict = "" if target is None else f">= {target:g}x " + ("met" if r["parallel_speedup"] >= target
                                                                          else "not met")
                budget = r["single_rss_mib"] + r["parallel_kv_mib"] + MEMORY_SLACK_MIB
                print(f"| {size} | {t} | {n} | {r['gen_tokens_per_s']:.1f} | {r['parallel_gen_tokens_per_s']:.1f} | "
                      f"{r['parallel_speedup']:.2f}x{spread} | {verdict} | {r['single_rss_mib']:.0f} | "
                      f"{r['parallel_rss_mib']:.0f} | {budget:.0f} | {r['load']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
