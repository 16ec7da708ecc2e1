"""What the engine does to keep its resident memory near file + KV cache (issue 19, part 3).

Three things, each measured with /proc/self/smaps on a 410M q4_0 model (bench/engine_rss.py):

* ``lazy_zeros``: arrays whose pages become resident only where they are written, for the KV
  caches. numpy asks for transparent huge pages on every array of 4 MiB or more, so writing one
  position of a layer's keys made its whole 2 MiB page resident: a cache with room for 256
  positions holding 96 kept all 256 resident (+30 MiB at 410M, +60 MiB at 1.4B). An anonymous
  mapping with MADV_NOHUGEPAGE is paged 4 KiB at a time, the size of one position's keys at 410M.
* ``after_first_use``: once an evaluation path has run for the first time (its kernels linked
  from numba's cache, with LLVM's help), the clean file-backed pages of LLVM's library are dropped
  (code and read-only data, 55-60 MiB resident after ``import numba`` and the linking, though
  generation never runs LLVM again) and malloc's free memory goes back to the system.
* The model file's pages touched while loading (the vocabulary, the small tensors) are dropped
  once the weights are repacked (``MappedModelFile.release_pages``, called by the fast model).

Dropping clean file-backed pages (MADV_DONTNEED on a mapping that was never written) loses
nothing: a page touched again is read back from the file, from the page cache usually, as on
first use (LLVM does when a model of another type compiles). Pages a process wrote to (private
copies: relocated data) are never advised, since MADV_DONTNEED would throw their contents away.
All of it is Linux only (glibc for the heap); elsewhere these functions do nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import re
import sys

import numpy as np

LLVM_LIBRARY = "libllvmlite"
_MAPPING = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$")

_libc = None


def _c_library():
    """glibc through ctypes, or None (another C library, another system)."""
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
                _libc = libc
            except (OSError, AttributeError):
                pass
    return _libc or None


def library_mappings(library: str) -> list[dict]:
    """The mappings of files whose name contains ``library``: start, end, perms, path and the
    smaps fields in KiB (Rss, Anonymous, ...). Empty where /proc/self/smaps is missing."""
    found, current = [], None
    try:
        with open("/proc/self/smaps", encoding="utf-8", errors="replace") as smaps:
            for line in smaps:
                head = _MAPPING.match(line)
                if head:
                    start, end, perms, path = head.groups()
                    current = None
                    if library in path.rsplit("/", 1)[-1]:
                        current = dict(start=int(start, 16), end=int(end, 16), perms=perms, path=path)
                        found.append(current)
                elif current is not None:
                    key, _, value = line.partition(":")
                    fields = value.split()
                    if len(fields) == 2 and fields[1] == "kB":
                        current[key] = int(fields[0])
    except OSError:
        return []
    return found


def release_library_pages(library: str = LLVM_LIBRARY) -> int:
    """Drop a library's clean file-backed pages from this process (its mappings that are not
    writable and hold no private copy); returns the bytes of the mappings advised."""
    libc = _c_library()
    if libc is None:
        return 0
    total = 0
    for m in library_mappings(library):
        if "w" in m["perms"] or m.get("Anonymous", 1) != 0 or m.get("Rss", 0) == 0:
            continue        # written pages (relocations) would be lost; an empty one needs nothing
        if libc.madvise(m["start"], m["end"] - m["start"], mmap.MADV_DONTNEED) == 0:
            total += m["end"] - m["start"]
    return total


def trim_heap() -> bool:
    """Hand malloc's free memory back to the system (glibc's malloc_trim); True when some was."""
    libc = _c_library()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    return bool(trim(0)) if trim is not None else False


_used: set[str] = set()


def after_first_use(path: str) -> None:
    """Call after each evaluation path ran: the first time a path ran (its kernels just linked,
    with LLVM's help) LLVM's pages and malloc's free memory are handed back; later calls cost a
    set lookup."""
    if path not in _used:
        _used.add(path)
        release_library_pages(LLVM_LIBRARY)
        trim_heap()


def lazy_zeros(shape, dtype=np.float32) -> np.ndarray:
    """A zeroed C-contiguous array whose pages become resident only where written, 4 KiB at a time
    (no transparent huge pages): for a cache with room for more than it holds."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    if count == 0:
        return np.zeros(shape, dtype)
    if hasattr(mmap, "MAP_PRIVATE"):
        # private and anonymous: zero pages, mapped on first write (a shared one would be shmem)
        area = mmap.mmap(-1, count * dtype.itemsize, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    else:
        area = mmap.mmap(-1, count * dtype.itemsize)    # Windows: demand-zero pages as well
    if hasattr(area, "madvise") and hasattr(mmap, "MADV_NOHUGEPAGE"):
        try:
            area.madvise(mmap.MADV_NOHUGEPAGE)
        except OSError:
            pass        # a kernel without transparent huge pages
    return np.frombuffer(area, dtype, count).reshape(shape)
