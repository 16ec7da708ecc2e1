"""Tiny random GPT-NeoX models stored as GGUF files whose matrices are K-quant or IQ4 tensors.

The weights are modelgen's random ones at a third of its scale (a calmer model, whose logits the
8-bit activations of the integer kernels move about as much as on the golden fixtures: 0.009-0.011
for the legacy types), each 2-D weight quantized by ``engine.kquants`` into the type ``type_of``
gives its name, written with the tests' GGUF writer (``ggufgen.write_gguf``, QKV rows split as
llama.cpp's converter stores them).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.quants import quantize
from ggufgen import write_gguf
from modelgen import random_tensors

HPARAMS = dict(n_vocab=120, n_ctx=64, n_embd=256, n_head=4, n_layer=2, n_rot=16, par_res=1)


def kquant_gguf(folder: Path, type_of, seed: int = 0) -> Path:
    """Write the model (type_of(legacy name) -> type of each 2-D weight); returns its path."""
    path = Path(folder) / "kquants.gguf"
    tensors = random_tensors(HPARAMS, seed)
    raw = {}
    for name, t in tensors.items():
        if t.ndim == 2:
            tensors[name] = t = t * np.float32(0.35)
            raw[name] = (quantize(type_of(name), 2, t.reshape(-1)).reshape(t.shape[0], -1), type_of(name))
    write_gguf(path, HPARAMS, tensors, raw=raw)
    return path
