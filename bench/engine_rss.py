"""The engine's resident memory per weight type against file + KV cache + 100 MiB (issue 19, part 3).

    python bench/engine_rss.py [--sizes 410M,1.4B] [--types q4_0,q4_1,q5_0,q5_1,q8_0,f16,f32]
                               [--gguf Q4_K_M,Q5_K_M,Q6_K] [--threads 2] [--prompt-tokens 32]
                               [--gen-tokens 64] [--where] [FILE ...]

Each file is measured in its own process (after a first one that fills numba's cache for its
type, since compiling leaves LLVM's working memory resident), the way the program runs it: ``load_model`` (map,
check, repack), a session at the model's whole context, a random prompt, then greedy tokens.
The figure is the process's VmRSS (everything resident: Python, numpy, numba and LLVM, the
repacked weights, the KV cache, the mapped file's touched pages), not a difference from a
baseline. "KV MiB" is the keys and values of the positions in use (prompt + generated tokens,
float32); the budget is file + KV + 100 MiB. Random-weight files of the Pythia shapes are written
once into bench/out/ (``bench/speed.py``, ``bench/llamacpp_compare.py`` for GGUF K-quant mixes).

``--where`` adds, per file, the resident MiB by kind of mapping (from /proc/self/smaps) at each
step: after ``import engine.fast``, after the load, after the first token (the token kernels
loaded from numba's cache), after the last token. RSS is not timing-sensitive, so a loaded
machine gives the same figures; the load average is printed for the record.
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

from bench.window_rss import rss_mib, where  # noqa: E402

BUDGET_MIB = 100
TYPES = ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "f16", "f32")


def measure(path: str, threads: int, prompt_tokens: int, gen_tokens: int) -> dict:
    """In this process: load the file, evaluate a prompt and generate; the figures as a dict."""
    import numpy as np

    steps = []

    def step(name):
        steps.append((name, round(rss_mib(), 1), where(path)))

    import engine.fast  # noqa: F401  (numba and its cache folder)
    step("import engine.fast")
    from engine.model import load_model
    model = load_model(path, backend="fast", threads=threads)
    step("loaded")
    c = model.config
    session = model.new_session()
    rng = np.random.default_rng(0)
    logits = session.eval(rng.integers(0, min(c.n_vocab, 50277), size=prompt_tokens).tolist())
    logits = session.eval([int(np.argmax(logits))])
    step("prompt + 1 token")
    for _ in range(gen_tokens - 1):
        logits = session.eval([int(np.argmax(logits))])
    step(f"+ {gen_tokens} tokens")
    positions = prompt_tokens + gen_tokens
    return dict(file=os.path.basename(path), weight_type=model.file.weight_type,
                file_mib=model.file.file_size / 2**20,
                kv_mib=2 * c.n_layer * positions * c.n_embd * session.kcache.itemsize / 2**20,   # fp16: 2 bytes
                rss_load=steps[1][1], rss_gen=steps[-1][1], steps=steps)


def run_child(path: str, args, gen_tokens: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", path, "--threads", str(args.threads),
           "--prompt-tokens", str(args.prompt_tokens), "--gen-tokens", str(gen_tokens)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return {"file": os.path.basename(path), "error": lines[-1] if lines else f"exit status {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def model_files(args) -> list[str]:
    files = list(args.files)
    if args.sizes:
        from bench.speed import write_model
        for size in args.sizes.split(","):
            files += [str(write_model(size, t, 2)) for t in args.types.split(",") if t]
            if args.gguf:
                from bench.llamacpp_compare import write_random_gguf
                files += [str(write_random_gguf(ROOT / "bench" / "out", size, p)) for p in args.gguf.split(",")]
    return files


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", help="model files to measure (besides --sizes x --types)")
    ap.add_argument("--sizes", default="410M,1.4B", help="Pythia shapes to write and measure ('' for none)")
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--gguf", default="", help="GGUF presets to write and measure too, e.g. Q4_K_M,Q5_K_M,Q6_K")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--where", action="store_true", help="also print where the memory is at each step")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.prompt_tokens < 1 or args.gen_tokens < 1:
        ap.error("--prompt-tokens and --gen-tokens must be at least 1")
    if args.child:
        print(json.dumps(measure(args.child, args.threads, args.prompt_tokens, args.gen_tokens)))
        return 0

    print(f"| file | file MiB | KV MiB | budget MiB | RSS after load | RSS after {args.gen_tokens} tokens "
          "| met | load average |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    failed = 0
    details = []
    for path in model_files(args):
        # a first run compiles what numba's cache lacks, and compiling leaves LLVM's working memory
        # resident: measure a second process, as the program runs once the kernels are cached
        r = run_child(path, args, 2)
        if "error" not in r:
            r = run_child(path, args, args.gen_tokens)
        load = "/".join(f"{v:.1f}" for v in os.getloadavg())
        if "error" in r:
            failed += 1
            print(f"| {r['file']} | failed: {r['error']} | | | | | | {load} |", flush=True)
            continue
        budget = r["file_mib"] + r["kv_mib"] + BUDGET_MIB
        met = "met" if r["rss_gen"] <= budget and r["rss_load"] <= budget else \
            f"not met (+{max(r['rss_gen'], r['rss_load']) - budget:.0f})"
        print(f"| {r['file']} | {r['file_mib']:.0f} | {r['kv_mib']:.0f} | {budget:.0f} | {r['rss_load']:.0f} "
              f"| {r['rss_gen']:.0f} | {met} | {load} |", flush=True)
        details.append(r)
    if args.where:
        for r in details:
            print(f"\n{r['file']}: resident MiB by mapping at each step")
            kinds = sorted({k for _, _, w in r["steps"] for k, _ in w})
            print("| step | VmRSS | " + " | ".join(kinds) + " |")
            print("| --- " * (len(kinds) + 2) + "|")
            for name, total, w in r["steps"]:
                d = dict(w)
                print(f"| {name} | {total:.0f} | " + " | ".join(f"{d.get(k, 0):.0f}" for k in kinds) + " |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
