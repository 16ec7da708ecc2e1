"""Speed of the fast path on GGUF files of the Pythia shapes in K-quant and IQ4 mixes.

    python bench/kquant_speed.py [--sizes 410M,1.4B] [--mixes q4_K_M,q5_K_M,q6_K,q4_0]
                                 [--threads 2] [--gen-tokens 64] [--rounds 1] [--out DIR]

Writes each model once (default into /work/scratch/kquant/gguf, else ``--out``) as a GGUF file
with the ``gguf`` package: random but valid blocks (quantizing 1.4B parameters would take
minutes), each tensor in the type ``python -m engine quantize`` gives it in that preset
(``engine.gguf_mix``, llama.cpp's choices), so the same files can be timed with ``llama-bench``.
Then runs ``python -m engine bench`` on each in a fresh process, with a 32-token prompt and 64
generated tokens and again with a 512-token prompt, and prints a markdown table with llama.cpp's
figures from issue 18 beside ours (``llama-bench -t 2 -p 32 -n 64`` and ``-p 512``, idle machine).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.gguf_constants import KEY_QKV_LAYOUT, QKV_SPLIT  # noqa: E402
from engine.gguf_file import SCALE_BOUNDS  # noqa: E402
from engine.gguf_mix import PRESETS, tensor_type  # noqa: E402
from engine.kquants import BLOCK_SIZES, K_TYPES  # noqa: E402
from engine.quants import block_format  # noqa: E402
from speed import SHAPES, run_bench  # noqa: E402  (bench/speed.py)

N_VOCAB = 50304

# issue 18: llama.cpp (vendored in llama-cpp-python 0.3.36), 2 threads, this machine:
# (generation tok/s, prompt(512) tok/s)
LLAMA_CPP = {("410M", "q4_K_M"): (74.0, 299.0), ("1.4B", "q4_K_M"): (26.0, 82.5),
             ("410M", "q4_0"): (104.6, 318.0), ("1.4B", "q4_0"): (28.9, 64.6)}

# (byte offset of an fp16 scale, the largest factor a value has on it) per type, as the reader checks them
SCALES = dict(SCALE_BOUNDS, q4_0=((0, 8),), q8_0=((0, 127),))


def random_blocks(type_name: str, rows: int, cols: int, rng) -> np.ndarray:
    """[rows, row bytes] of valid random blocks whose weights are about 1/sqrt(cols) in size."""
    values, nbytes = BLOCK_SIZES[type_name] if type_name in K_TYPES else \
        (block_format(type_name, 2).values, block_format(type_name, 2).nbytes)
    nb = rows * cols // values
    blocks = rng.integers(0, 256, size=(nb, nbytes), dtype=np.uint8)
    reach = SCALES[type_name][0][1]
    d = (rng.random(nb, dtype=np.float32) + 1) / np.float32(reach * np.sqrt(cols) / 2)
    for pos, _ in SCALES[type_name]:
        blocks[:, pos:pos + 2] = d.astype("<f2").view(np.uint8).reshape(nb, 2)
    return blocks.reshape(rows, -1)


def write_gguf(path: Path, size: str, mix: str) -> None:
    import gguf
    hp = SHAPES[size]
    e, n_layer = hp["n_embd"], hp["n_layer"]
    rng = np.random.default_rng(0)
    tmp = path.with_suffix(".part")
    w = gguf.GGUFWriter(str(tmp), "gptneox")
    w.add_context_length(2048)
    w.add_embedding_length(e)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(4 * e)
    w.add_rope_dimension_count(hp["n_rot"])
    w.add_head_count(hp["n_head"])
    w.add_parallel_residual(True)
    w.add_layer_norm_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"<{i}>" for i in range(N_VOCAB)])
    w.add_string(KEY_QKV_LAYOUT, QKV_SPLIT)

    def matrix(name, rows, cols, layer=0):
        t = tensor_type(mix, name, (rows, cols), n_layer)
        w.add_tensor(name, random_blocks(t, rows, cols, rng), raw_dtype=getattr(gguf.GGMLQuantizationType, t.upper()))

    def vector(name, n, ones=False):
        v = np.ones(n, np.float32) if ones else rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)
        w.add_tensor(name, v)

    matrix("token_embd.weight", N_VOCAB, e)
    for i in range(n_layer):
        vector(f"blk.{i}.attn_norm.weight", e, True)
        vector(f"blk.{i}.attn_norm.bias", e)
        matrix(f"blk.{i}.attn_qkv.weight", 3 * e, e, i)
        vector(f"blk.{i}.attn_qkv.bias", 3 * e)
        matrix(f"blk.{i}.attn_output.weight", e, e, i)
        vector(f"blk.{i}.attn_output.bias", e)
        vector(f"blk.{i}.ffn_norm.weight", e, True)
        vector(f"blk.{i}.ffn_norm.bias", e)
        matrix(f"blk.{i}.ffn_up.weight", 4 * e, e, i)
        vector(f"blk.{i}.ffn_up.bias", 4 * e)
        matrix(f"blk.{i}.ffn_down.weight", e, 4 * e, i)
        vector(f"blk.{i}.ffn_down.bias", e)
    vector("output_norm.weight", e, True)
    vector("output_norm.bias", e)
    matrix("output.weight", N_VOCAB, e)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="410M,1.4B")
    ap.add_argument("--mixes", default="q4_K_M,q5_K_M,q6_K,q4_0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=1, help="runs per file; the best is kept")
    ap.add_argument("--out", default="/work/scratch/kquant/gguf")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("| model | mix | file MiB | load s | gen tok/s | llama.cpp gen | prompt(32) tok/s "
          "| prompt(512) tok/s | llama.cpp prompt(512) | load average |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for size in args.sizes.split(","):
        for mix in args.mixes.split(","):
            if mix not in PRESETS:
                raise SystemExit(f"unknown mix {mix!r}: one of {', '.join(PRESETS)}")
            path = out / f"pythia-{size}-{mix}.gguf"
            if not path.exists():
                write_gguf(path, size, mix)
            best = {}
            for _ in range(args.rounds):
                short = run_bench(path, args.threads, 32, args.gen_tokens)
                long = run_bench(path, args.threads, 512, 0)
                if not best or short["gen_tokens_per_s"] > best["gen"]:
                    best["gen"], best["load"] = short["gen_tokens_per_s"], short["load_s"]
                best["p32"] = max(best.get("p32", 0), short["prompt_tokens_per_s"])
                best["p512"] = max(best.get("p512", 0), long["prompt_tokens_per_s"])
            ref = LLAMA_CPP.get((size, mix), ("", ""))
            load = "/".join(f"{v:.1f}" for v in os.getloadavg())
            print(f"| {size} | {mix} | {path.stat().st_size / 2**20:.0f} | {best['load']:.2f} | {best['gen']:.1f} "
                  f"| {ref[0]} | {best['p32']:.1f} | {best['p512']:.1f} | {ref[1]} | {load} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
