"""``open_model_file(path)``: the reader a model file needs, chosen by its magic number.

A legacy ggml file (magic "lmgg") goes to ``GGMLFile``, a GGUF file to ``GGUFFile``; both present
the hparams, vocab and tensors the backends take, so nothing downstream asks which one it got
(``file.format`` says, for display).
"""
from __future__ import annotations

import os
import struct

from engine.ggml_file import FTYPE_TO_TYPE, MAGIC as GGML_MAGIC, GGMLFile, MappedModelFile
from engine.gguf_constants import MAGIC as GGUF_MAGIC
from engine.gguf_file import GGUFFile

MODEL_SUFFIXES = (".bin", ".gguf")
# The names the catalog and the status bar give the legacy quantization versions
LEGACY_ERAS = {0: "ggml (first quantization)", 1: "ggmlv2", 2: "ggmlv3"}


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


def sniff_format(path) -> str:
    """The format in a few words from the first 40 bytes, for lists ("GGUF v3", "ggmlv3", ...; ""
    when the file is neither or cannot be read). Nothing is validated: opening the file does that."""
    try:
        with open(os.fspath(path), "rb") as fh:
            head = fh.read(40)
    except OSError:
        return ""
    if head[:4] == GGUF_MAGIC and len(head) >= 8:
        return f"GGUF v{struct.unpack_from('<I', head, 4)[0]}"
    if len(head) < 40 or struct.unpack_from("<I", head)[0] != GGML_MAGIC:
        return ""
    # gpt-neox layout: par_res (0/1), a known ftype, then the first vocab entry's (short) length
    par_res, ftype, first_token = struct.unpack_from("<iiI", head, 28)
    if (par_res in (0, 1) and ftype >= 0 and ftype % 1000 in FTYPE_TO_TYPE and ftype // 1000 in LEGACY_ERAS
            and first_token <= 1024):
        return LEGACY_ERAS[ftype // 1000]
    return "ggml (stablelm layout)"


def format_label(file: MappedModelFile) -> str:
    """The file format in words: "GGUF v3", or the legacy era ("ggml, gpt-neox layout, quantization v2")."""
    if file.format == "gguf":
        return f"GGUF v{file.version}"
    if file.layout == "stablelm":
        return "ggml, stablelm layout"
    return f"ggml, gpt-neox layout, quantization v{file.qnt_version}"
