"""Peak resident memory and time of the streaming conversion, on a synthetic checkpoint of a real shape.

    python bench/convert_memory.py [--shape 1.4b] [--types f16,q8_0,q5_1,q4_0] [--folder DIR]

Writes an f16 `model.safetensors` of the shape (Pythia 1.4B: about 2.8 GB) into a temporary
folder, converts it in a child process per output type, and prints a table: the child's peak
RSS (ru_maxrss: the mapped checkpoint pages it touched count too), the bound the conversion
promises (3 x the largest tensor in f32 + 256 MiB), and the seconds it took. The folder is
deleted afterwards unless --folder names one to keep.
"""
from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.ggml_file import expected_tensors  # noqa: E402

SHAPES = {   # Pythia's published configs (vocab padded to a multiple of 128)
    "70m": dict(vocab_size=50304, hidden_size=512, num_hidden_layers=6, num_attention_heads=8),
    "410m": dict(vocab_size=50304, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16),
    "1.4b": dict(vocab_size=50304, hidden_size=2048, num_hidden_layers=24, num_attention_heads=16),
}
MiB = 1024 * 1024

CHILD = """
import resource, sys, time
from engine.convert import convert_hf
start = time.monotonic()
convert_hf(sys.argv[1], sys.argv[2], sys.argv[3])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, time.monotonic() - start)
"""


def config_for(shape: str) -> dict:
    c = SHAPES[shape]
    return dict(c, architectures=["GPTNeoXForCausalLM"], model_type="gpt_neox", max_position_embeddings=2048,
                intermediate_size=4 * c["hidden_size"], rotary_pct=0.25, rotary_emb_base=10000,
                use_parallel_residual=True, hidden_act="gelu", layer_norm_eps=1e-5, tie_word_embeddings=False)


def write_synthetic_checkpoint(folder: Path, shape: str = "1.4b") -> int:
    """config.json + an f16 model.safetensors of the shape, written tensor by tensor; returns the
    largest tensor's value count. The values are a random block repeated (cheap, not constant)."""
    config = config_for(shape)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    shapes = expected_tensors(config["vocab_size"], config["hidden_size"], config["num_hidden_layers"])
    header, offset = {}, 0
    for name, dims in shapes.items():
        n = int(np.prod(dims)) * 2
        header[name] = {"dtype": "F16", "shape": list(dims), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header).encode()
    block = (np.random.default_rng(0).standard_normal(1 << 20) * 0.02).astype(np.float16)
    with open(folder / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name, dims in shapes.items():
            left = int(np.prod(dims))
            while left:
                step = min(left, block.size)
                block[:step].tofile(f)
                left -= step
    return max(int(np.prod(d)) for d in shapes.values())


def measure(folder: Path, out: Path, out_type: str) -> tuple[int, float]:
    """(peak RSS in bytes, seconds) of converting `folder` to `out_type` in a fresh child process."""
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", CHILD, str(folder), str(out), out_type],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    rss, seconds = done.stdout.split()[-2:]
    return int(rss), float(seconds)


def bound(largest_values: int) -> int:
    return 3 * largest_values * 4 + 256 * MiB


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="1.4b", choices=sorted(SHAPES))
    parser.add_argument("--types", default="f16,q8_0,q5_1,q4_0")
    parser.add_argument("--folder", type=Path, help="keep the synthetic checkpoint here (default: a temp folder)")
    args = parser.parse_args(argv)
    folder = args.folder or Path(tempfile.mkdtemp(prefix="neox-convert-mem-"))
    try:
        start = time.monotonic()
        largest = write_synthetic_checkpoint(folder / "hf", args.shape)
        size = (folder / "hf" / "model.safetensors").stat().st_size
        print(f"synthetic {args.shape} checkpoint: {size / 1e9:.2f} GB f16 written in {time.monotonic() - start:.1f} s; "
              f"largest tensor {largest * 4 / MiB:.0f} MiB in f32, bound {bound(largest) / MiB:.0f} MiB")
        print(f"{'type':6} {'peak RSS MiB':>13} {'bound MiB':>10} {'seconds':>8}")
        for out_type in args.types.split(","):
            out = folder / f"out-{out_type}.bin"
            rss, seconds = measure(folder / "hf", out, out_type)
            out.unlink()
            print(f"{out_type:6} {rss / MiB:13.0f} {bound(largest) / MiB:10.0f} {seconds:8.1f}")
    finally:
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
