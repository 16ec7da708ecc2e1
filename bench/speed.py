"""Speed of the fast path on random-weight files of the Pythia shapes, beside ggml's figures.

    python bench/speed.py [--sizes 70M,160M,410M,1.4B] [--types q4_0,q5_1,q8_0,f16] [--versions 2] [--rounds 1]
                          [--threads 2] [--prompt-tokens 32] [--gen-tokens 64] [--long-prompt 512]

Writes the model files once into bench/out/ (git-ignored; random but valid blocks written
directly, since quantizing 1.4B parameters in numpy would take minutes), then runs
``python -m engine bench`` on each in a fresh process (so peak memory and load time are per
model) and prints a markdown table. ggml's figures are those of issue 3: examples/gpt-neox at
commit 010203f, AVX2/FMA/F16C build, 2 threads on the same machine, 32-token prompt, 64 tokens.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.ggml_file import expected_tensors  # noqa: E402
from engine.ggml_writer import GGMLWriter, tensor_type_for  # noqa: E402
from engine.quants import block_format  # noqa: E402

OUT = ROOT / "bench" / "out"

# spec §11
SHAPES = {
    "70M": dict(n_embd=512, n_head=8, n_layer=6, n_rot=16),
    "160M": dict(n_embd=768, n_head=12, n_layer=12, n_rot=16),
    "410M": dict(n_embd=1024, n_head=16, n_layer=24, n_rot=16),
    "1.4B": dict(n_embd=2048, n_head=16, n_layer=24, n_rot=32),
}

# issue 3: ggml generation ms/token, prompt ms/token (chunks of 9)
GGML = {
    ("70M", "q4_0"): (2.27, 1.37), ("160M", "q4_0"): (5.21, 3.45), ("160M", "q5_1"): (7.80, 4.65),
    ("410M", "q4_0"): (12.3, 8.6), ("410M", "q5_1"): (17.4, 13.4), ("410M", "q8_0"): (17.1, 8.2),
    ("410M", "f16"): (23.8, 11.0), ("1.4B", "q4_0"): (34.0, 29.7), ("1.4B", "q5_1"): (55.0, 43.1),
    ("1.4B", "q8_0"): (44.9, 30.7), ("1.4B", "f16"): (75.0, 37.8),
}


def random_raw(type_name: str, qnt_version: int, shape, rng) -> np.ndarray:
    """Valid random data of a tensor: random quants, scales of a plausible size for its row length."""
    rows, cols = shape if len(shape) == 2 else (1, shape[0])
    if type_name in ("f32", "f16"):
        w = rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(1 / np.sqrt(cols))
        return w.astype("<f4" if type_name == "f32" else "<f2").view(np.uint8).reshape(-1)
    fmt = block_format(type_name, qnt_version)
    nb = rows * cols // fmt.values
    blocks = rng.integers(0, 256, size=(nb, fmt.nbytes), dtype=np.uint8)
    sb = 2 if fmt.scale_dtype == "f2" else 4
    sdt = "<f2" if sb == 2 else "<f4"
    levels = 127 if type_name == "q8_0" else 8
    d = (rng.random(nb, dtype=np.float32) * 2 + 1) / (levels * np.sqrt(cols))
    blocks[:, 0:sb] = d.astype(sdt).view(np.uint8).reshape(nb, sb)
    if fmt.has_min:
        blocks[:, sb:2 * sb] = (-levels * d).astype(sdt).view(np.uint8).reshape(nb, sb)
    return blocks.reshape(-1)


def write_model(size: str, type_name: str, qnt_version: int) -> Path:
    path = OUT / f"pythia-{size}-{type_name}-v{qnt_version}.bin"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    hp = dict(SHAPES[size], n_vocab=50304, n_ctx=2048, par_res=1)
    rng = np.random.default_rng(0)
    tmp = path.with_suffix(".part")
    with GGMLWriter(tmp, hp, [f"<{i}>".encode() for i in range(hp["n_vocab"])],
                    ftype=type_name, qnt_version=qnt_version) as w:
        for name, shape in expected_tensors(hp["n_vocab"], hp["n_embd"], hp["n_layer"]).items():
            t = tensor_type_for(name, len(shape), type_name)
            if t == "f32":      # norms and biases: a plausible value, not random noise
                value = np.ones(shape, np.float32) if name.endswith("norm.weight") else \
                    rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
                w.write_raw(name, shape, "f32", value.view(np.uint8))
            else:
                w.write_raw(name, shape, t, random_raw(t, qnt_version, shape, rng))
    os.replace(tmp, path)
    return path


def bench_command(path: Path, threads: int, prompt_tokens: int, gen_tokens: int) -> list[str]:
    """`python -m engine bench FILE ... --json`: its last line of output is the figures."""
    return [sys.executable, "-m", "engine", "bench", str(path), "--threads", str(threads),
            "--prompt-tokens", str(prompt_tokens), "--gen-tokens", str(gen_tokens), "--json"]


def run_bench(path: Path, threads: int, prompt_tokens: int, gen_tokens: int) -> dict:
    out = subprocess.run(bench_command(path, threads, prompt_tokens, gen_tokens), cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def json_or_error(cmd: list[str], cwd=None) -> dict:
    """The JSON on the last line a command prints, or {"error": its last line} when it fails
    (a comparison table shows the failure in its row instead of stopping)."""
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="70M,160M,410M,1.4B")
    ap.add_argument("--types", default="q4_0,q5_1,q8_0,f16")
    ap.add_argument("--versions", default="2", help="quantization versions of the quantized files (1,2)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--long-prompt", type=int, default=512, help="also time a prompt this long (0: skip)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="runs per file; the table shows the best speed (a shared machine is noisy)")
    ap.add_argument("--write-only", action="store_true", help="only write the model files")
    args = ap.parse_args(argv)

    rows = []
    print("| model | type | v | file MiB | load s | compile s | gen tok/s | ggml gen tok/s | "
          f"prompt tok/s ({args.prompt_tokens}) | prompt tok/s ({args.long_prompt}) | ggml prompt tok/s | "
          f"{args.long_prompt} / ggml | RSS MiB | budget MiB |")
    print("| --- " * 14 + "|")
    for size in args.sizes.split(","):
        for t in args.types.split(","):
            for v in ([0] if t in ("f16", "f32") else [int(x) for x in args.versions.split(",")]):
                path = write_model(size, t, v)
                if args.write_only:
                    print(path)
                    continue
                runs = [run_bench(path, args.threads, args.prompt_tokens, args.gen_tokens) for _ in range(args.rounds)]
                r = dict(runs[-1], **{k: max(x[k] for x in runs) for k in ("gen_tokens_per_s", "prompt_tokens_per_s")})
                long_tps, ratio = "", ""
                ggml = GGML.get((size, t))
                if args.long_prompt:
                    long_value = max(run_bench(path, args.threads, args.long_prompt, 1)['prompt_tokens_per_s']
                                     for _ in range(args.rounds))
                    long_tps = f"{long_value:.0f}"
                    ratio = f"{long_value * ggml[1] / 1000:.2f}x" if ggml else ""
                ggml_gen = f"{1000 / ggml[0]:.0f}" if ggml else ""
                ggml_prompt = f"{1000 / ggml[1]:.0f}" if ggml else ""
                budget = r["file_mib"] + r["kv_cache_mib"] + 100
                print(f"| {size} | {t} | {v} | {r['file_mib']:.0f} | {r['load_s']:.2f} | {r['compile_s']:.1f} | "
                      f"{r['gen_tokens_per_s']:.1f} | {ggml_gen} | {r['prompt_tokens_per_s']:.0f} | {long_tps} | "
                      f"{ggml_prompt} | {ratio} | {r['rss_mib']:.0f} | {budget:.0f} |", flush=True)
                rows.append(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
