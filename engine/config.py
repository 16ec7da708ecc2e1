"""The hyper-parameters of a GPT-NeoX model: a leaf both backends and ``engine.model`` share."""
from __future__ import annotations

from dataclasses import dataclass

from engine.ggml_file import MappedModelFile


@dataclass(frozen=True)
class Config:
    """The hyper-parameters of a GPT-NeoX model as the file states them."""

    n_vocab: int
    n_ctx: int
    n_embd: int
    n_head: int
    n_layer: int
    n_rot: int
    parallel_residual: bool

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_file(cls, f: MappedModelFile) -> "Config":
        hp = f.hparams
        return cls(hp["n_vocab"], hp["n_ctx"], hp["n_embd"], hp["n_head"], hp["n_layer"],
                   hp["n_rot"], bool(hp["par_res"]))
