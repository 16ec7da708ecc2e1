"""Small random GPT-NeoX models written with the project's own writer, for tests that need a file.

The weights are random (including LayerNorm gains and biases) so that a mistake in any tensor's
use changes the logits; shapes follow the header exactly as the real files do.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from engine.ggml_file import expected_tensors
from engine.ggml_writer import write_ggml

DEFAULT_HPARAMS = dict(n_vocab=96, n_ctx=64, n_embd=64, n_head=4, n_layer=2, n_rot=4, par_res=1)


def random_tensors(hparams: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """float32 tensors in PyTorch shape for every name a file of these hparams needs."""
    rng = np.random.default_rng(seed)
    shapes = expected_tensors(hparams["n_vocab"], hparams["n_embd"], hparams["n_layer"])
    out = {}
    for name, shape in shapes.items():
        scale = 0.5 / np.sqrt(shape[-1]) * 4 if len(shape) == 2 else 0.1
        t = rng.standard_normal(shape).astype(np.float32) * np.float32(scale)
        if name.endswith("layernorm.weight") or name.endswith("final_layer_norm.weight"):
            t += np.float32(1.0)
        out[name] = t
    return out


def random_vocab(n_vocab: int) -> list[bytes]:
    return [f"<{i}>".encode() for i in range(n_vocab)]


def write_random_model(path, hparams: dict | None = None, seed: int = 0, **writer_args):
    """Write a random model; returns (hparams, vocab, tensors) so tests can write variants of it."""
    hp = dict(DEFAULT_HPARAMS, **(hparams or {}))
    tensors = random_tensors(hp, seed)
    vocab = random_vocab(hp["n_vocab"])
    write_ggml(path, hp, vocab, tensors, **writer_args)
    return hp, vocab, tensors


TINY_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tiny-parallel"


def converted_tiny_model(folder: Path) -> Path:
    """The tiny-parallel golden fixture converted to ggml f32, its tokenizer.json beside it."""
    from engine.convert import convert_hf
    path = Path(folder) / "tiny.bin"
    if not path.exists():
        convert_hf(TINY_FIXTURE, path, ftype="f32")
        shutil.copy(TINY_FIXTURE / "tokenizer.json", Path(folder) / "tokenizer.json")
    return path
