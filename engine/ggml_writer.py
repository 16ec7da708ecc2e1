"""Writes legacy ggml GPT-NeoX files: the gpt-neox layout of today's files, and for tests the older ones.

The rules follow the 2023 tools (spec §3.2): with a quantized or f16 file type, 2-D tensors named
``*.weight`` get the big type and everything else stays f32. The header ftype is
``1000 * qnt_version + code`` for quantized gpt-neox files and the plain code otherwise; the
stablelm layout has no ``par_res`` field and (at commit 05f3079, "E1") ftype-style per-tensor
type codes.
"""
from __future__ import annotations

import os
import struct
from typing import Iterable

import numpy as np

from engine.ggml_file import CODES_E1, CODES_E2_E3, CODES_E4, FTYPE_TO_TYPE, MAGIC, TYPE_TO_FTYPE
from engine.quants import QUANTIZED_TYPES, quantize, tensor_nbytes


def _type_name(ftype) -> str:
    if isinstance(ftype, str):
        if ftype not in TYPE_TO_FTYPE:
            raise ValueError(f"unknown file type {ftype!r}")
        return ftype
    if ftype not in FTYPE_TO_TYPE:
        raise ValueError(f"unknown file type code {ftype}")
    return FTYPE_TO_TYPE[ftype]


def tensor_type_for(name: str, ndim: int, weight_type: str) -> str:
    """The stored type of a tensor in a file whose big matrices are weight_type."""
    if weight_type != "f32" and name.endswith(".weight") and ndim == 2:
        return weight_type
    return "f32"


class GGMLWriter:
    """Streams a ggml file: header and vocab first, then one tensor record at a time.

    ``era`` picks the per-tensor type code table for the stablelm layout: "E1" (05f3079:
    ftype-style codes, q4_2 = 5, q4_3 = 6) or "E3" (5dd92f4/ff6e03c: ggml_type codes).

    ``resume_offset`` reopens a file this writer began earlier (same arguments) instead of
    starting it: the file is cut at that offset, which must be the end of a whole record (the
    streaming converter journals those), and the next record is appended there.
    """

    def __init__(self, path, hparams: dict, vocab: Iterable, *, layout: str = "gpt-neox",
                 ftype="f16", qnt_version: int = 0, era: str | None = None, resume_offset: int | None = None):
        self.weight_type = _type_name(ftype)
        quantized = self.weight_type in QUANTIZED_TYPES
        if layout not in ("gpt-neox", "stablelm"):
            raise ValueError(f"unknown layout {layout!r}")
        if layout == "stablelm" and qnt_version != 0:
            raise ValueError("the stablelm layout has no quantization version (it is always 0)")
        if self.weight_type in ("q4_2", "q4_3") and qnt_version != 0:
            raise ValueError(f"{self.weight_type} exists only in quantization version 0")
        self.layout = layout
        self.qnt_version = qnt_version if quantized else 0
        if era is None:
            era = "E1" if self.weight_type == "q4_3" else "E3"
        if layout == "gpt-neox":
            codes = CODES_E2_E3 if self.qnt_version == 0 else CODES_E4
        else:
            codes = CODES_E1 if era == "E1" else CODES_E2_E3
        self.code_of = {}
        for code, tname in codes.items():
            self.code_of.setdefault(tname, code)
        if era == "E1" and self.weight_type == "q4_2":
            self.code_of["q4_2"] = 5
        if self.weight_type not in self.code_of:
            raise ValueError(f"{self.weight_type} cannot be written in the {layout} layout of era {era}")

        code = TYPE_TO_FTYPE[self.weight_type]
        ftype_raw = 1000 * self.qnt_version + code if (layout == "gpt-neox" and quantized) else code
        hp = hparams
        ints = [hp["n_vocab"], hp["n_ctx"], hp["n_embd"], hp["n_head"], hp["n_layer"], hp["n_rot"]]
        if layout == "gpt-neox":
            ints.append(int(bool(hp.get("par_res", 1))))
        ints.append(ftype_raw)

        self.path = os.fspath(path)
        vocab = list(vocab)
        if len(vocab) != hp["n_vocab"]:
            raise ValueError(f"vocab has {len(vocab)} entries, the header says n_vocab = {hp['n_vocab']}")
        if resume_offset is not None:
            self._fh = open(self.path, "r+b")
            self._fh.seek(resume_offset)
            self._fh.truncate()
            return
        self._fh = open(self.path, "wb")
        self._fh.write(struct.pack("<I", MAGIC))
        self._fh.write(struct.pack(f"<{len(ints)}i", *ints))
        for token in vocab:
            data = token.encode("utf-8") if isinstance(token, str) else bytes(token)
            self._fh.write(struct.pack("<I", len(data)))
            self._fh.write(data)

    def write_raw(self, name: str, shape: tuple[int, ...], type_name: str, raw) -> None:
        """Write one record whose data is already in the target block format."""
        raw = np.asarray(raw, dtype=np.uint8).reshape(-1)
        n_values = int(np.prod(shape))
        if raw.size != self.record_nbytes(shape, type_name):
            raise ValueError(f"{name}: {raw.size} bytes do not hold {n_values} {type_name} values")
        self.begin_record(name, shape, type_name)
        raw.tofile(self._fh)

    def record_nbytes(self, shape: tuple[int, ...], type_name: str) -> int:
        """The data bytes of a record of this shape and stored type."""
        qv = 0 if type_name in ("q4_2", "q4_3") else self.qnt_version
        return tensor_nbytes(type_name, qv, int(np.prod(shape, dtype=np.int64)))

    def begin_record(self, name: str, shape: tuple[int, ...], type_name: str) -> None:
        """Write a record's header; its data follows through write_data (streamed) or write_raw."""
        ne = list(reversed(shape))
        encoded = name.encode("utf-8")
        self._fh.write(struct.pack(f"<3i{len(ne)}i", len(ne), len(encoded), self.code_of[type_name], *ne))
        self._fh.write(encoded)

    def write_data(self, raw: np.ndarray) -> None:
        """Append part of the current record's data (whole blocks, in order)."""
        np.ascontiguousarray(raw, dtype=np.uint8).tofile(self._fh)

    def sync(self) -> int:
        """Flush and fsync what was written; returns the file offset (the end of the last record)."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return self._fh.tell()

    def write_tensor(self, name: str, array: np.ndarray) -> None:
        """Write a float32 tensor (PyTorch shape), stored as this file's type for its kind."""
        array = np.asarray(array, dtype=np.float32)
        tname = tensor_type_for(name, array.ndim, self.weight_type)
        qv = 0 if tname in ("q4_2", "q4_3") else self.qnt_version
        self.write_raw(name, array.shape, tname, quantize(tname, qv, array.reshape(-1)))

    def close(self):
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *rest):
        self.close()
        if exc_type is not None:
            try:
                os.unlink(self.path)      # never leave half a model behind
            except OSError:
                pass


def write_ggml(path, hparams: dict, vocab, tensors: dict, *, layout: str = "gpt-neox",
               ftype="f16", qnt_version: int = 0, era: str | None = None) -> None:
    """Write a whole model: tensors maps ggml names to float32 arrays in PyTorch shape."""
    with GGMLWriter(path, hparams, vocab, layout=layout, ftype=ftype,
                    qnt_version=qnt_version, era=era) as writer:
        for name, array in tensors.items():
            writer.write_tensor(name, array)
