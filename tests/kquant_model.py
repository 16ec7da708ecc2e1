"""Tiny random GPT-NeoX models whose matrices are K-quant or IQ4 tensors, for the backends' tests.

Until a GGUF file can be opened, such a model is the tensors of a legacy f32 file (written with
the project's writer) with the 2-D weights quantized by ``engine.kquants`` into a data file of
their own, behind the same interface as ``GGMLFile`` (``path``, ``tensors``, ``hparams``); the
backends read tensors by offset from ``path`` and never look at the legacy header.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.config import Config
from engine.ggml_file import GGMLFile, TensorInfo
from engine.quants import quantize
from modelgen import write_random_model

HPARAMS = dict(n_vocab=120, n_ctx=64, n_embd=256, n_head=4, n_layer=2, n_rot=16, par_res=1)


class KQuantModelFile:
    """The GGMLFile interface over a data file of K-quant tensors (types chosen per tensor)."""

    def __init__(self, folder: Path, type_of, hparams: dict | None = None, seed: int = 0):
        folder = Path(folder)
        legacy = folder / "f32.bin"
        hp, _, _ = write_random_model(legacy, dict(HPARAMS, **(hparams or {})), seed=seed, ftype="f32")
        source = GGMLFile(legacy)
        self.path = str(folder / "kquants.data")
        self.hparams = dict(source.hparams)
        self.vocab = source.vocab
        self.layout, self.qnt_version, self.weight_type = "gpt-neox", 2, "mixed"
        self.file_size = 0
        pieces, offset, self.tensors = [], 0, {}
        for name, info in source.tensors.items():
            values = info.to_float32()
            if values.ndim == 2:      # a third of modelgen's scale: a calmer model, whose logits
                values = values * np.float32(0.35)   # the 8-bit activations move less
            type_name = type_of(name) if values.ndim == 2 else "f32"
            raw = quantize(type_name, 2, values.reshape(-1))
            pad = -offset % 32
            pieces.append(np.zeros(pad, np.uint8))
            offset += pad
            self.tensors[name] = (name, type_name, tuple(info.shape), offset, raw.size)
            pieces.append(raw)
            offset += raw.size
        source.close()
        np.concatenate(pieces).tofile(self.path)
        self.file_size = offset
        data = np.memmap(self.path, np.uint8, mode="r")
        self.tensors = {n: TensorInfo(n, t, 2, shape, o, size, data[o:o + size])
                        for n, (n, t, shape, o, size) in self.tensors.items()}
        self.config = Config(hp["n_vocab"], hp["n_ctx"], hp["n_embd"], hp["n_head"], hp["n_layer"], hp["n_rot"],
                             bool(hp["par_res"]))

    def close(self):
        pass
