"""Our fast path beside llama.cpp's llama-bench on the same GGUF files, in the same run (issue 18).

    python bench/llamacpp_compare.py [--llama-bin /work/scratch/llama/bin] [--out DIR]
                                     [--sizes 410M,1.4B] [--types q4_0,q8_0,q4_K_M,q5_K_M,q6_K]
                                     [--threads 2] [--reps 3] [--rounds 1] [--legacy]

llama.cpp is the one vendored in the llama-cpp-python 0.3.36 source package (llama.cpp of
2026-10-01), built as docs/benchmarks.md says (Release, GGML_NATIVE=ON, no CUDA, static). The
files are random-weight GGUF files of the Pythia shapes written by our writer: valid random
blocks of each tensor's type (quantizing 1.4B weights in numpy would take long and speed does
not depend on the values), each tensor in the type llama.cpp's quantizer gives it for that preset
(engine/gguf_mix.py: e.g. Q4_K_M has Q6_K in half the attn_qkv and ffn_down and the output, Q4_0
has a Q6_K output). For each file, llama-bench runs ``-t 2 -p 32 -n 64`` and ``-p 512 -n 0``
(``-r`` reps, its mean) and ``python -m engine bench`` runs a 32-token prompt with 64 generated
tokens and a 512-token prompt, each in a fresh process, one after the other, so both see about
the same load; the table shows the best of ``--rounds`` of each and the load average at the end of
the row. Each row also gives the memory read bandwidth measured just after it (``bench/bandwidth.py``,
the same threads) and each side's generation as a share of it: the bytes a token reads (the file's
tensors less the token embedding) times tokens/s.

With ``--legacy`` our side runs the legacy version-2 file of the same shape and type instead
(``bench/speed.py``'s, for q4_0, q4_1, q5_0, q5_1, q8_0 and f16), beside llama.cpp on the GGUF: the
comparison of issue 19 part 2 (our engine as the writer runs the 2023 files, llama.cpp as it runs
today's).
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

from bench.bandwidth import bytes_per_token, read_bandwidth  # noqa: E402
from bench.speed import SHAPES, bench_command, json_or_error, random_raw, write_model  # noqa: E402
from engine.ggml_file import expected_tensors  # noqa: E402
from engine.gguf_constants import tensor_name_map  # noqa: E402
from engine.gguf_convert import gguf_metadata  # noqa: E402
from engine.gguf_mix import PRESETS, preset_name, tensor_type  # noqa: E402
from engine.gguf_vocab import vocab_from_legacy  # noqa: E402
from engine.gguf_writer import GGUFWriter, TensorPlan, type_nbytes  # noqa: E402

DEFAULT_BIN = os.environ.get("NEOX_LLAMA_CPP_BIN", "/work/scratch/llama/bin")

# Byte offsets of the fp16 super-block scale (and min scale) in each K-quant / IQ4 block.
SCALE_OFFSETS = {"q2_K": (80, 82), "q3_K": (108,), "q4_K": (0, 2), "q5_K": (0, 2), "q6_K": (208,),
                 "iq4_nl": (0,), "iq4_xs": (0,)}


LEGACY_TYPES = ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "f16")


def random_gguf_raw(type_name: str, shape, rng) -> np.ndarray:
    """Valid random data of a tensor of a GGUF type: random bytes with plausible fp16 scales."""
    if type_name not in SCALE_OFFSETS:
        return random_raw(type_name, 2, shape, rng)
    rows, cols = shape
    nbytes = type_nbytes(type_name, shape)
    per_block = nbytes // (rows * cols // (32 if type_name == "iq4_nl" else 256))
    blocks = rng.integers(0, 256, size=(nbytes // per_block, per_block), dtype=np.uint8)
    for offset in SCALE_OFFSETS[type_name]:
        d = (rng.random(blocks.shape[0], dtype=np.float32) + 1) / np.float32(1024 * np.sqrt(cols))
        blocks[:, offset:offset + 2] = d.astype("<f2").view(np.uint8).reshape(-1, 2)
    return blocks.reshape(-1)


def write_random_gguf(out_dir: Path, size: str, preset: str) -> Path:
    """A random-weight GGUF of a Pythia shape, each tensor in the type llama.cpp picks for `preset`."""
    path = out_dir / f"pythia-{size}-{preset}.gguf"
    if path.exists():
        return path
    out_dir.mkdir(parents=True, exist_ok=True)
    hp = dict(SHAPES[size], n_vocab=50304, n_ctx=2048, par_res=1)
    shapes = expected_tensors(hp["n_vocab"], hp["n_embd"], hp["n_layer"])
    names = tensor_name_map(hp["n_layer"])
    plan = [TensorPlan(g, shapes[h], tensor_type(preset, g, shapes[h], hp["n_layer"])) for g, h in names.items()]
    vocab = vocab_from_legacy([f"<{i}>".encode() for i in range(hp["n_vocab"])])
    meta = gguf_metadata(hp, vocab, int(PRESETS[preset][0]), path.stem)
    rng = np.random.default_rng(0)
    with GGUFWriter(path, meta, plan) as w:
        for t in plan:
            w.begin(t.name)
            if t.type == "f32":      # norms and biases: a plausible value, not random noise
                value = (np.ones(t.shape, np.float32) if t.name.endswith("norm.weight")
                         else rng.standard_normal(t.shape, dtype=np.float32) * np.float32(0.02))
                w.write(value.view(np.uint8))
            else:
                w.write(random_gguf_raw(t.type, t.shape, rng))
        w.finish()
    return path


def llama_bench(binary: Path, path: Path, threads: int, reps: int, prompt: int, gen: int) -> dict:
    """llama-bench's mean tokens/s per test ("pp32", "tg64", "pp512"), or {"error": ...}."""
    cmd = [str(binary), "-m", str(path), "-t", str(threads), "-p", str(prompt), "-n", str(gen),
           "-r", str(reps), "-o", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {done.returncode}"}
    out = {}
    for rec in json.loads(done.stdout):
        key = f"pp{rec['n_prompt']}" if rec["n_gen"] == 0 else f"tg{rec['n_gen']}"
        out[key] = rec["avg_ts"]
    return out


def ours(path: Path, threads: int, prompt: int, gen: int) -> dict:
    return json_or_error(bench_command(path, threads, prompt, gen), cwd=ROOT)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llama-bin", default=DEFAULT_BIN, help="folder holding llama-bench")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"), help="where the GGUF files are written")
    ap.add_argument("--sizes", default="410M,1.4B")
    ap.add_argument("--types", default="q4_0,q8_0,q4_K_M,q5_K_M,q6_K")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3, help="llama-bench -r")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each side per file; the best is shown")
    ap.add_argument("--write-only", action="store_true", help="only write the GGUF files")
    ap.add_argument("--legacy", action="store_true",
                    help="our side on the legacy version-2 file of the same shape and type (issue 19 part 2)")
    args = ap.parse_args(argv)
    binary = Path(args.llama_bin) / "llama-bench"
    if not args.write_only and not binary.exists():
        print(f"no llama-bench at {binary} (see docs/benchmarks.md for the build)", file=sys.stderr)
        return 2

    presets = [preset_name(t) for t in args.types.split(",")]
    if args.legacy and any(p not in LEGACY_TYPES for p in presets):
        print(f"--legacy takes the types {', '.join(LEGACY_TYPES)}", file=sys.stderr)
        return 2
    print(f"threads {args.threads}; llama-bench -r {args.reps} (mean), ours best of {args.rounds}"
          f"{' on the legacy v2 files' if args.legacy else ''}; tokens/s")
    print("| model | type | MiB | ours gen | llama.cpp gen | ratio | ours prompt 32 | llama.cpp pp32 | "
          "ours prompt 512 | llama.cpp pp512 | ratio | read GB/s | ours % of it | llama.cpp % of it | load average |")
    print("| --- " * 15 + "|")
    for size in args.sizes.split(","):
        for preset in presets:
            path = write_random_gguf(Path(args.out), size, preset)
            if args.write_only:
                print(path)
                continue
            mine, theirs, errors = [], [], []
            our_path = write_model(size, preset, 2) if args.legacy else path
            for _ in range(args.rounds):
                short, long = ours(our_path, args.threads, 32, 64), ours(our_path, args.threads, 512, 1)
                if "error" in short or "error" in long:
                    errors.append("ours: " + short.get("error", long.get("error", "")))
                else:
                    mine.append((short["gen_tokens_per_s"], short["prompt_tokens_per_s"], long["prompt_tokens_per_s"]))
                a = llama_bench(binary, path, args.threads, args.reps, 32, 64)
                b = llama_bench(binary, path, args.threads, args.reps, 512, 0)
                if "error" in a or "error" in b:
                    errors.append("llama.cpp: " + a.get("error", b.get("error", "")))
                else:
                    theirs.append((a["tg64"], a["pp32"], b["pp512"]))

            def best(rows, i):
                return max(r[i] for r in rows) if rows else None

            def cell(v):
                return f"{v:.1f}" if v is not None else "failed"

            def ratio(x, y):
                return f"{x / y:.2f}x" if x and y else ""

            g, p32, p512 = (best(mine, i) for i in range(3))
            lg, lp32, lp512 = (best(theirs, i) for i in range(3))
            # generation against the memory read bandwidth measured now: bytes a token reads x tokens/s
            bandwidth = read_bandwidth(args.threads)

            def share(tokens_per_s, file):
                return f"{tokens_per_s * bytes_per_token(file) / 1e9 / bandwidth:.0%}" if tokens_per_s else ""

            load = "/".join(f"{v:.1f}" for v in os.getloadavg())
            print(f"| {size} | {preset} | {path.stat().st_size / 2**20:.0f} | {cell(g)} | {cell(lg)} | {ratio(g, lg)} | "
                  f"{cell(p32)} | {cell(lp32)} | {cell(p512)} | {cell(lp512)} | {ratio(p512, lp512)} | "
                  f"{bandwidth:.1f} | {share(g, our_path)} | {share(lg, path)} | {load} |", flush=True)
            for e in dict.fromkeys(errors):
                print(f"  {size} {preset}: {e}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
