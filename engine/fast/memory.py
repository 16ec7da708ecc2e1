"""Hand LLVM's machine code pages back to the system once the kernels are loaded.

numba's compiler is llvmlite's copy of LLVM, a 90 MiB library. Loading the kernels from the
cache runs parts of it (linking the cached objects), which leaves about 50 MiB of its code
resident for the life of the process, though generation never calls it again: a third of the
engine's overhead over file + KV cache on a 410M model. Those pages are the library's read-only,
executable mapping, never written, so ``madvise(MADV_DONTNEED)`` only drops them from this
process: should LLVM run again (a model of another type compiled on first use), the pages are
read back from the file (the page cache, usually) as on first use. Linux only; elsewhere a no-op.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

MADV_DONTNEED = 4
LIBRARY = "libllvmlite"


def code_mappings(library: str = LIBRARY) -> list[tuple[int, int]]:
    """(start, end) of the executable, read-only mappings of a library in this process."""
    found = []
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
            for line in maps:
                parts = line.split()
                if len(parts) >= 6 and parts[1] == "r-xp" and library in parts[5].rsplit("/", 1)[-1]:
                    start, end = (int(v, 16) for v in parts[0].split("-"))
                    found.append((start, end))
    except OSError:
        return []
    return found


def release_code_pages(library: str = LIBRARY) -> int:
    """Drop the library's code pages from this process; returns the bytes of the mappings advised."""
    if not sys.platform.startswith("linux"):
        return 0
    mappings = code_mappings(library)
    if not mappings:
        return 0
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    total = 0
    for start, end in mappings:
        if libc.madvise(start, end - start, MADV_DONTNEED) == 0:
            total += end - start
    return total


_used: set[str] = set()


def after_first_use(path: str) -> None:
    """Call after each evaluation path ran: the first time a path ran (its kernels just loaded,
    with LLVM's help) the code pages are released; later calls cost a set lookup."""
    if path not in _used:
        _used.add(path)
        release_code_pages()
