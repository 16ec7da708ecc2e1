"""A minimal safetensors reader (no torch, no safetensors package): header checks and mmap'd arrays.

The format: an 8-byte little-endian header length N, N bytes of JSON mapping each tensor name
to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the byte after the
header), an optional "__metadata__" entry, then the raw little-endian tensor bytes.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from engine.errors import ModelFormatError

# The header of a real checkpoint is a few hundred KB at most; anything much larger is
# a corrupt length field, and we refuse it before reading (never allocate from an unchecked size).
MAX_HEADER_BYTES = 100 * 1024 * 1024

# Every dtype the format defines, with its item size, so that any valid file parses even when
# it holds buffers we never read (e.g. a BOOL attention mask).
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}

# Far beyond any real tensor, and small enough that every number checked against it prints (Python
# refuses to format an int of more than 4300 digits) and fits numpy's shapes.
MAX_DIM = 1 << 48
MAX_RANK = 8

# The dtypes we can turn into numbers for a model; BF16 is widened to float32 on read.
_NUMPY_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "F64": np.dtype("<f8")}


def _show(value) -> str:
    """A short repr of a header value for a message (some ints are too long for Python to print)."""
    try:
        return repr(value)[:100]
    except ValueError:
        return "a number too long to print"


def bf16_to_float32(raw: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bit patterns (uint16) to float32 exactly: bf16 is the top half of an f32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


class SafetensorsTensor:
    """One tensor record of a safetensors header: name, dtype, shape and its byte range in the file."""

    def __init__(self, name: str, dtype: str, shape: tuple[int, ...], offset: int, nbytes: int):
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.offset = offset          # absolute byte offset in the file
        self.nbytes = nbytes


class SafetensorsFile:
    """A validated, memory-mapped `.safetensors` file; `array(name)` returns its values."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self.file_size = os.path.getsize(self.path)
            f = open(self.path, "rb")
        except OSError as e:
            raise ModelFormatError(self.path, None, f"cannot open: {e.strerror or e}") from None
        except ValueError as e:       # a NUL or an unpaired surrogate in the name (from an index file)
            raise ModelFormatError(self.path, None, f"cannot open: invalid file name ({e})") from None
        with f:
            if self.file_size < 8:
                raise ModelFormatError(self.path, 0, f"file is {self.file_size} bytes, too short for the 8-byte header length")
            header_len = int.from_bytes(f.read(8), "little")
            if header_len > self.file_size - 8:
                raise ModelFormatError(self.path, 0, f"header length {header_len} runs past the end of the "
                                                     f"{self.file_size}-byte file (truncated?)")
            if header_len > MAX_HEADER_BYTES:
                raise ModelFormatError(self.path, 0, f"header length {header_len} is absurd (cap {MAX_HEADER_BYTES})")
            raw_header = f.read(header_len)
        try:
            header = json.loads(raw_header.decode("utf-8"))
        except ValueError as e:      # not UTF-8, not JSON, or an integer of more than 4300 digits
            raise ModelFormatError(self.path, 8, f"header is not valid UTF-8 JSON ({e})") from None
        except RecursionError:
            raise ModelFormatError(self.path, 8, "header JSON is nested too deeply") from None
        if not isinstance(header, dict):
            raise ModelFormatError(self.path, 8, "header JSON is not an object")
        self.data_start = 8 + header_len
        self.metadata = header.pop("__metadata__", None) or {}
        self.tensors: dict[str, SafetensorsTensor] = {}
        for name, entry in header.items():
            self.tensors[name] = self._parse_entry(name, entry)
        self._mmap = None

    def _parse_entry(self, name: str, entry) -> SafetensorsTensor:
        """Check one header entry against the format and the file size."""
        def bad(message):
            return ModelFormatError(self.path, 8, f"tensor {name!r}: {message}")
        if not isinstance(entry, dict):
            raise bad("header entry is not an object")
        dtype = entry.get("dtype")
        if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
            raise bad(f"unknown dtype {_show(dtype)}")
        shape = entry.get("shape")
        if (not isinstance(shape, list) or len(shape) > MAX_RANK
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_DIM for d in shape)):
            raise bad(f"shape {_show(shape)} is not a list of non-negative integers "
                      f"(at most {MAX_RANK} of them, each at most 2^48)")
        offsets = entry.get("data_offsets")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) and abs(o) <= MAX_DIM for o in offsets)):
            raise bad(f"data_offsets {_show(offsets)} is not a pair of integers (each at most 2^48)")
        begin, end = offsets
        data_size = self.file_size - self.data_start
        if not 0 <= begin <= end <= data_size:
            raise bad(f"data_offsets [{begin}, {end}] fall outside the {data_size}-byte data section (truncated?)")
        expected = int(np.prod(shape, dtype=object)) * DTYPE_SIZES[dtype]
        if end - begin != expected:
            raise bad(f"{end - begin} data bytes but shape {shape} of {dtype} needs {expected}")
        return SafetensorsTensor(name, dtype, tuple(shape), self.data_start + begin, end - begin)

    def names(self) -> list[str]:
        return list(self.tensors)

    def array(self, name: str) -> np.ndarray:
        """The tensor's values: a read-only mmap view for F32/F16/F64, a float32 copy for BF16."""
        t = self.tensors[name]
        if self._mmap is None:
            self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r")
        raw = self._mmap[t.offset:t.offset + t.nbytes]
        if t.dtype == "BF16":
            return bf16_to_float32(raw.view("<u2")).reshape(t.shape)
        if t.dtype not in _NUMPY_DTYPES:
            raise ModelFormatError(self.path, t.offset, f"tensor {name!r} has dtype {t.dtype}, "
                                                        "not a floating-point type this reader supports")
        return raw.view(_NUMPY_DTYPES[t.dtype]).reshape(t.shape)


class ShardedSafetensors:
    """A checkpoint split over several files, described by `model.safetensors.index.json`."""

    def __init__(self, index_path):
        self.path = Path(index_path)
        try:
            index = json.loads(self.path.read_text(encoding="utf-8"))
            weight_map = index["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelFormatError(self.path, None, f"not a safetensors index with a weight_map ({e!r})") from None
        except RecursionError:
            raise ModelFormatError(self.path, None, "not a safetensors index: its JSON is nested too deeply") from None
        self.shards: dict[str, SafetensorsFile] = {}
        self._where: dict[str, SafetensorsFile] = {}
        for name, shard in weight_map.items():
            # A shard name is a file next to the index; refuse paths that would escape the folder.
            if not isinstance(shard, str) or Path(shard).name != shard or shard in ("", ".", ".."):
                raise ModelFormatError(self.path, None, f"tensor {name!r} maps to an invalid shard name {_show(shard)}")
            if shard not in self.shards:
                self.shards[shard] = SafetensorsFile(self.path.parent / shard)
            if name not in self.shards[shard].tensors:
                raise ModelFormatError(self.shards[shard].path, None, f"index lists tensor {name!r} but the shard lacks it")
            self._where[name] = self.shards[shard]
        self.tensors = {name: f.tensors[name] for name, f in self._where.items()}

    def names(self) -> list[str]:
        return list(self._where)

    def array(self, name: str) -> np.ndarray:
        return self._where[name].array(name)


def open_safetensors(path):
    """Open a single `.safetensors` file or a `*.safetensors.index.json` of shards."""
    path = Path(path)
    if path.name.endswith(".index.json"):
        return ShardedSafetensors(path)
    return SafetensorsFile(path)
