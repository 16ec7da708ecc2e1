"""Read a PyTorch `pytorch_model.bin` (zip of pickles) without torch and without running its code.

`torch.save` writes a zip whose single top folder (its name varies: `archive`, `pytorch_model`,
...) holds `data.pkl`, the pickled state dict, and `data/<key>`, one raw little-endian file per
storage. The pickle refers to storages through persistent ids and rebuilds tensors by calling
`torch._utils._rebuild_tensor_v2`. A pickle can name any importable callable, so loading one
with the stock unpickler runs arbitrary code. `TensorUnpickler` resolves only the handful of
globals a state dict needs, each mapped to a local function that builds numpy arrays; every other
global is refused with `ModelFormatError` before anything is called.
"""
from __future__ import annotations

import _compat_pickle
import collections
import contextlib
import functools
import io
import pickle
import pickletools
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from engine.errors import ModelFormatError
from engine.safetensors_file import bf16_to_float32

# data.pkl of a state dict is a few hundred KB even for 12B models.
MAX_PICKLE_BYTES = 64 * 1024 * 1024

# What zipfile raises for a damaged archive: bad headers and CRCs, names that are not UTF-8,
# offsets past the end, methods it cannot decompress, encrypted members.
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError, RuntimeError,
              struct.error)

# torch storage classes by name -> numpy dtype of their elements (BFloat16 is read as its
# uint16 bit pattern and widened when a tensor is rebuilt).
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "DoubleStorage": np.dtype("<f8"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class StorageType:
    """Stands in for a `torch.<Name>Storage` class inside the pickle: it only carries the dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


class Storage:
    """One storage file of the archive as a flat numpy array (a view on the mmap'd zip when stored)."""

    def __init__(self, type_: StorageType, values: np.ndarray, limit: int):
        self.type = type_
        self.values = values
        self.limit = limit      # the archive's size in bytes: no view may have more elements


def rebuild_tensor(storage, storage_offset, size, stride, *_ignored, widen_bf16: bool = True) -> np.ndarray:
    """`torch._utils._rebuild_tensor_v2`: a strided view on a storage, bounds-checked.

    bfloat16 values are widened to a float32 copy, unless `widen_bf16` is false: then they stay a
    view of their uint16 bit patterns (the streaming converter widens them a chunk at a time).
    A view may repeat elements (stride 0, as `expand` makes), but never to more elements than
    the archive has bytes: whoever copies such a view would allocate from an unchecked size.
    """
    if not isinstance(storage, Storage):
        raise ValueError(f"tensor storage is a {type(storage).__name__}, not a storage reference")
    size, stride = tuple(size), tuple(stride)
    if len(size) != len(stride):
        raise ValueError(f"tensor size {size} and stride {stride} differ in rank")
    ints = (storage_offset,) + size + stride
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints):
        raise ValueError(f"tensor offset {storage_offset}, size {size}, stride {stride} must be non-negative ints")
    n = len(storage.values)
    largest = max(storage.limit, n)
    elements = 1
    for s in size:
        elements *= s
    if elements > largest:
        raise ValueError(f"tensor of size {size} has {elements} elements, more than the "
                         f"{storage.limit}-byte archive could hold")
    # a dimension or a stride past the archive's size is no real tensor's: a size-1 dimension's
    # stride never moves the view, so the bound below would pass it, and numpy's byte strides
    # overflow a C long (fuzz finding)
    if any(v > largest for v in size + stride):
        raise ValueError(f"tensor of size {size}, stride {stride} has a dimension or stride larger than "
                         f"the {storage.limit}-byte archive")
    if 0 not in size:
        last = storage_offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= n:
            raise ValueError(f"tensor of size {size}, stride {stride} at offset {storage_offset} "
                             f"reaches element {last} of a {n}-element storage")
        values = storage.values
        itemsize = values.dtype.itemsize
        array = np.lib.stride_tricks.as_strided(values[storage_offset:], shape=size,
                                                strides=tuple(st * itemsize for st in stride), writeable=False)
    else:
        array = np.zeros(size, dtype=storage.values.dtype)
    if storage.type.name == "BFloat16Storage" and widen_bf16:
        array = bf16_to_float32(np.ascontiguousarray(array))
    return array


def rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_ignored) -> np.ndarray:
    """`torch._utils._rebuild_parameter`: a Parameter is just its tensor here."""
    return data


# (module, name) -> what the unpickler hands back instead of the real torch object.
ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
    **{("torch", name): StorageType(name) for name in STORAGE_DTYPES},
}


class TensorUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild tensors and dicts; everything else is refused."""

    def __init__(self, data: bytes, archive: "TorchArchive", widen_bf16: bool = True):
        super().__init__(io.BytesIO(data))
        self.archive = archive
        self.storages: dict[str, Storage] = {}
        self.widen_bf16 = widen_bf16

    def find_class(self, module, name):
        # Protocol < 3 pickles spell some globals with Python 2 names (__builtin__, commands);
        # translate them the way the stock unpickler does, so the error names the real target.
        # (Those names never clash with Python 3 modules, so this is safe for any protocol.)
        if isinstance(module, str) and isinstance(name, str):
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        try:
            found = ALLOWED_GLOBALS[(module, name)]
            if found is rebuild_tensor and not self.widen_bf16:
                return functools.partial(rebuild_tensor, widen_bf16=False)
            return found
        except (KeyError, TypeError):
            raise ModelFormatError(self.archive.path, None,
                                   f"{self.archive.pickle_name}: refused global {module}.{name} "
                                   "(only tensor rebuilding is allowed)") from None

    def persistent_load(self, pid):
        # torch writes ('storage', storage_type, key, location, numel)
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], StorageType) and isinstance(pid[2], str)
                and isinstance(pid[4], int) and not isinstance(pid[4], bool) and pid[4] >= 0):
            raise ModelFormatError(self.archive.path, None, f"{self.archive.pickle_name}: unexpected "
                                                            f"persistent id {pid!r:.200}")
        type_, key, numel = pid[1], pid[2], pid[4]
        if key not in self.storages:
            self.storages[key] = Storage(type_, self.archive.storage_array(key, type_.dtype, numel),
                                         self.archive.file_size)
        return self.storages[key]


class TorchArchive:
    """A `torch.save` zip archive: locates `data.pkl` and maps storage files."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self.zip = zipfile.ZipFile(self.path)
        except OSError as e:
            raise ModelFormatError(self.path, None, f"cannot open: {e.strerror or e}") from None
        except ZIP_ERRORS:
            raise ModelFormatError(self.path, 0, "not a zip archive (only the torch.save zip format of "
                                                 "PyTorch >= 1.6 is supported)") from None
        self.file_size = self.path.stat().st_size
        pickles = [n for n in self.zip.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ModelFormatError(self.path, None, f"expected one <folder>/data.pkl in the archive, found {pickles}")
        self.pickle_name = pickles[0]
        self.prefix = self.pickle_name[: -len("data.pkl")]
        byteorder = self.prefix + "byteorder"
        if byteorder in self.zip.namelist():
            order = self.read_member(self.zip.getinfo(byteorder), 64).strip()
            if order != b"little":
                raise ModelFormatError(self.path, None, f"storages are {order!r:.40} endian; only little-endian is supported")
        self._mmap = None

    @contextlib.contextmanager
    def _damage(self, member: str):
        """Turn what zipfile raises for a damaged member into the reader's own error."""
        try:
            yield
        except ZIP_ERRORS as e:
            raise ModelFormatError(self.path, None, f"{member}: damaged archive member ({e})") from None

    def read_member(self, info: zipfile.ZipInfo, limit: int) -> bytes:
        """A whole member (checked against its CRC), refused when it claims more than `limit` bytes,
        or a compressed size that its content or the archive cannot have: zipfile allocates a
        stored member's compressed size in one piece before reading it."""
        if info.file_size > limit:
            raise ModelFormatError(self.path, info.header_offset, f"{info.filename} is {info.file_size} bytes, "
                                                                  f"more than the {limit} it may have")
        if info.compress_size > min(compressed_bound(info), self.file_size - info.header_offset):
            raise ModelFormatError(self.path, info.header_offset,
                                   f"{info.filename}: compressed size {info.compress_size} does not fit its "
                                   f"{info.file_size} bytes of content in the {self.file_size}-byte archive")
        with self._damage(info.filename):
            return self.zip.read(info)

    def read_pickle(self) -> bytes:
        return self.read_member(self.zip.getinfo(self.pickle_name), MAX_PICKLE_BYTES)

    def storage_array(self, key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        """The storage `data/<key>` as a flat array of numel elements, checked against its stored size."""
        name = f"{self.prefix}data/{key}"
        try:
            info = self.zip.getinfo(name)
        except KeyError:
            raise ModelFormatError(self.path, None, f"storage {name} referenced by the pickle is missing") from None
        if info.file_size != numel * dtype.itemsize:
            raise ModelFormatError(self.path, info.header_offset,
                                   f"storage {name} holds {info.file_size} bytes, expected {numel} x {dtype.itemsize}")
        if info.compress_type != zipfile.ZIP_STORED:
            # torch never compresses storages, but a repacked zip might: read it (size checked above).
            return np.frombuffer(self.read_member(info, self.file_size * 1032), dtype=dtype)
        start = self._data_start(info)
        if start + info.file_size > self.file_size:
            raise ModelFormatError(self.path, start, f"storage {name} runs past the end of the file (truncated?)")
        if self._mmap is None:
            self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r")
        return self._mmap[start:start + info.file_size].view(dtype)

    def _data_start(self, info: zipfile.ZipInfo) -> int:
        """Where a stored member's bytes begin: after its 30-byte local header, name and extra field."""
        if info.header_offset < 0:
            raise ModelFormatError(self.path, None, f"bad zip local header offset for {info.filename}")
        with open(self.path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise ModelFormatError(self.path, info.header_offset, f"bad zip local header for {info.filename}")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        return info.header_offset + 30 + name_len + extra_len


def compressed_bound(info: zipfile.ZipInfo) -> int:
    """The most bytes a member of `info.file_size` bytes takes in the archive: its size when stored;
    deflate, bzip2 and lzma add well under 1% + 1 KiB to content they cannot compress."""
    n = info.file_size
    return n if info.compress_type == zipfile.ZIP_STORED else n + n // 100 + 1024


MEMO_OPS = {"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"}


def check_opcodes(data: bytes, archive: TorchArchive) -> None:
    """Walk the pickle's opcodes (pure Python, nothing allocated from their arguments) and refuse
    what would make the C unpickler allocate from an unchecked size: a length running past the
    end (it allocates the length before reading), a memo index beyond any the pickle could fill
    (it grows the memo table to the index)."""
    try:
        for op, arg, pos in pickletools.genops(data):
            if op.name == "FRAME" and arg > len(data) - pos:
                raise ValueError(f"a frame of {arg} bytes at byte {pos} runs past the end")
            if op.name in MEMO_OPS and not 0 <= int(arg) < len(data):
                raise ValueError(f"memo index {arg} at byte {pos} is beyond the {len(data)}-byte pickle")
    except ValueError as e:
        raise ModelFormatError(archive.path, None, f"{archive.pickle_name}: damaged pickle ({e})") from None


def load_torch_state_dict(path, widen_bf16: bool = True) -> dict[str, np.ndarray]:
    """Load a `pytorch_model.bin` state dict as name -> numpy array, without executing pickle code.

    With `widen_bf16` false, bfloat16 tensors are uint16 views of their bits (no storage type
    maps to uint16 otherwise), so nothing is copied and the caller widens them as it goes.
    """
    archive = TorchArchive(path)
    data = archive.read_pickle()
    check_opcodes(data, archive)
    unpickler = TensorUnpickler(data, archive, widen_bf16)
    try:
        state = unpickler.load()
    except ModelFormatError:
        raise
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError, IndexError, KeyError, AttributeError) as e:
        raise ModelFormatError(archive.path, None, f"{archive.pickle_name}: cannot rebuild the state dict ({e})") from None
    if not isinstance(state, dict):
        raise ModelFormatError(archive.path, None, f"{archive.pickle_name} holds a {type(state).__name__}, "
                                                   "not a state dict")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)]
    if bad:
        raise ModelFormatError(archive.path, None, f"{archive.pickle_name}: entries that are not tensors: {bad[:5]}")
    return state
