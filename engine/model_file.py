"""``open_model_file(path)``: the reader a model file needs, chosen by its magic number.

A legacy ggml file (magic "lmgg") goes to ``GGMLFile``, a GGUF file to ``GGUFFile``; both present
the hparams, vocab and tensors the backends take, so nothing downstream asks which one it got
(``file.format`` says, for display).
"""
from __future__ import annotations

import os

from engine.ggml_file import GGMLFile, MappedModelFile
from engine.gguf_constants import MAGIC as GGUF_MAGIC
from engine.gguf_file import GGUFFile

MODEL_SUFFIXES = (".bin", ".gguf")


def is_gguf(path) -> bool:
    """Whether the file starts with the GGUF magic (False when it cannot be read)."""
    try:
        with open(os.fspath(path), "rb") as fh:
            return fh.read(4) == GGUF_MAGIC
    except OSError:
        return False


def open_model_file(path) -> MappedModelFile:
    """The validated, mapped file (ModelFormatError when it is malformed or cannot be opened)."""
    return GGUFFile(path) if is_gguf(path) else GGMLFile(path)


def format_label(file: MappedModelFile) -> str:
    """The file format in words: "GGUF v3", or the legacy era ("ggml, gpt-neox layout, quantization v2")."""
    if file.format == "gguf":
        return f"GGUF v{file.version}"
    if file.layout == "stablelm":
        return "ggml, stablelm layout"
    return f"ggml, gpt-neox layout, quantization v{file.qnt_version}"
