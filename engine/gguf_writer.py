"""Writes GGUF version 3 files: the metadata and the tensor table first, then each tensor's data.

A GGUF file states every tensor's offset in its header, before any data. The data sizes follow
from the shapes and types alone, so the writer is told the whole plan up front (name, shape, type
per tensor) and then takes the data one tensor at a time, in any number of pieces: a converter
never holds more than the piece at hand. The file is written to ``<out>.part`` and renamed when
every tensor is complete, so a failed or cancelled write never leaves half a model under the
final name. Layout (engine/gguf_constants.py has the numbers)::

    "GGUF" | uint32 3 | uint64 n_tensors | uint64 n_kv | key/value pairs | tensor infos
    | zero padding to the alignment | tensor data, each tensor starting on the alignment
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.gguf_constants import (DEFAULT_ALIGNMENT, KEY_ALIGNMENT, MAGIC, TYPE_CODES, WRITE_VERSION,
                                   ValueType, BLOCK_SIZES)

# The little-endian struct code of each scalar value type.
_SCALAR_CODES = {
    ValueType.UINT8: "B", ValueType.INT8: "b", ValueType.UINT16: "H", ValueType.INT16: "h",
    ValueType.UINT32: "I", ValueType.INT32: "i", ValueType.FLOAT32: "f", ValueType.BOOL: "?",
    ValueType.UINT64: "Q", ValueType.INT64: "q", ValueType.FLOAT64: "d",
}


@dataclass(frozen=True)
class Value:
    """One metadata value with its GGUF type; ``item_type`` is the element type of an ARRAY."""

    type: ValueType
    value: object
    item_type: ValueType | None = None


def string(s: str) -> Value:
    return Value(ValueType.STRING, s)


def uint32(n: int) -> Value:
    return Value(ValueType.UINT32, int(n))


def float32(x: float) -> Value:
    return Value(ValueType.FLOAT32, float(x))


def boolean(b: bool) -> Value:
    return Value(ValueType.BOOL, bool(b))


def array(item_type: ValueType, items) -> Value:
    return Value(ValueType.ARRAY, list(items), item_type)


def _encode_string(s: str) -> bytes:
    data = s.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def _encode_scalar(vtype: ValueType, value) -> bytes:
    if vtype == ValueType.STRING:
        return _encode_string(value)
    return struct.pack("<" + _SCALAR_CODES[vtype], value)


def encode_value(v: Value) -> bytes:
    """The bytes of a value after its key: the type tag, then the value (arrays: element type, count)."""
    head = struct.pack("<I", v.type)
    if v.type != ValueType.ARRAY:
        return head + _encode_scalar(v.type, v.value)
    if v.item_type in (ValueType.ARRAY, None):
        raise ValueError("a GGUF array needs a scalar or string element type")
    items = v.value
    head += struct.pack("<IQ", v.item_type, len(items))
    if v.item_type == ValueType.STRING:
        return head + b"".join(_encode_string(s) for s in items)
    code = _SCALAR_CODES[v.item_type]
    return head + struct.pack(f"<{len(items)}{code}", *items)


def type_nbytes(type_name: str, shape: tuple[int, ...]) -> int:
    """Bytes a tensor of this engine type name and PyTorch shape takes in a GGUF file."""
    if type_name not in TYPE_CODES:
        raise ValueError(f"GGUF has no tensor type {type_name!r}")
    per_block, block_bytes = BLOCK_SIZES[TYPE_CODES[type_name]]
    if shape[-1] % per_block:
        raise ValueError(f"a row of {shape[-1]} values is not a whole number of {type_name} blocks of {per_block}")
    return int(np.prod(shape, dtype=np.int64)) // per_block * block_bytes


@dataclass(frozen=True)
class TensorPlan:
    """One tensor of the file to be written: its GGUF name, PyTorch shape and engine type name."""

    name: str
    shape: tuple[int, ...]
    type: str

    @property
    def nbytes(self) -> int:
        return type_nbytes(self.type, self.shape)


def _align(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


class GGUFWriter:
    """Streams a GGUF v3 file: ``metadata`` (key -> Value, in order) and the tensor ``plan`` go in
    the header at once; then ``begin(name)`` / ``write(raw)`` per tensor, in plan order, and
    ``finish()`` renames the finished file into place. ``close()`` without ``finish()`` (or an
    exception in a ``with`` block) removes the partial file."""

    def __init__(self, path, metadata: dict[str, Value], plan: list[TensorPlan], *,
                 alignment: int = DEFAULT_ALIGNMENT):
        if alignment <= 0 or alignment & (alignment - 1):
            raise ValueError(f"alignment {alignment} is not a power of two")
        names = [t.name for t in plan]
        if len(set(names)) != len(names):
            raise ValueError("a tensor name appears twice in the plan")
        metadata = dict(metadata)
        if alignment != DEFAULT_ALIGNMENT:
            metadata[KEY_ALIGNMENT] = uint32(alignment)
        self.path = Path(path)
        self.part = self.path.with_name(self.path.name + ".part")
        self.plan = list(plan)
        self.alignment = alignment
        self._index = -1              # the tensor being written
        self._written = 0             # bytes of it so far
        self._fh = open(self.part, "wb")
        try:
            self._write_header(metadata)
        except BaseException:
            self.close()
            raise

    def _write_header(self, metadata: dict[str, Value]) -> None:
        out = [MAGIC, struct.pack("<IQQ", WRITE_VERSION, len(self.plan), len(metadata))]
        for key, value in metadata.items():
            out.append(_encode_string(key))
            out.append(encode_value(value))
        offset = 0
        for t in self.plan:
            ne = list(reversed(t.shape))          # ggml order: ne0 is the row length
            out.append(_encode_string(t.name))
            out.append(struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, TYPE_CODES[t.type], offset))
            offset = _align(offset + t.nbytes, self.alignment)
        header = b"".join(out)
        self._fh.write(header)
        self._pad(len(header))
        self.data_start = _align(len(header), self.alignment)

    def _pad(self, position: int) -> None:
        self._fh.write(b"\0" * (_align(position, self.alignment) - position))

    def begin(self, name: str) -> TensorPlan:
        """Start the next tensor of the plan (which must be `name`); returns its plan entry."""
        self._end_tensor()
        self._index += 1
        if self._index >= len(self.plan) or self.plan[self._index].name != name:
            expected = self.plan[self._index].name if self._index < len(self.plan) else "none"
            raise ValueError(f"tensor {name!r} written out of order (the plan says {expected})")
        self._written = 0
        return self.plan[self._index]

    def write(self, raw) -> None:
        """Append part of the current tensor's data (bytes already in its GGUF block format)."""
        raw = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
        t = self.plan[self._index]
        if self._written + raw.size > t.nbytes:
            raise ValueError(f"tensor {t.name!r}: more than its {t.nbytes} bytes written")
        raw.tofile(self._fh)
        self._written += raw.size

    def _end_tensor(self) -> None:
        if self._index < 0:
            return
        t = self.plan[self._index]
        if self._written != t.nbytes:
            raise ValueError(f"tensor {t.name!r}: {self._written} of its {t.nbytes} bytes written")
        self._pad(t.nbytes)

    def finish(self) -> Path:
        """Check every tensor was written, flush, fsync and rename the file into place."""
        self._end_tensor()
        if self._index != len(self.plan) - 1:
            raise ValueError(f"only {self._index + 1} of {len(self.plan)} tensors were written")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        os.replace(self.part, self.path)
        return self.path

    def close(self) -> None:
        """Abandon an unfinished file (the partial output is removed)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            self.part.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
