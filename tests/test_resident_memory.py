"""The fast model holds what it uses: KV caches resident where written, the file's pages handed back.

Each check reads one mapping's resident size from /proc/self/smaps (the mapping that holds an
array, or the model file's), so what the rest of the test process holds does not matter. The
whole engine's figures against file + KV + 100 MiB per type are bench/engine_rss.py's.
"""
from __future__ import annotations

import mmap
import os
import sys

import numpy as np
import pytest

from engine import load_model
from engine.resident_memory import lazy_zeros, library_mappings, release_library_pages, trim_heap
from tests.modelgen import write_random_model

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/smaps and madvise: Linux only")


def resident_pages(array: np.ndarray) -> int:
    """Pages of an array's memory mapped in this process (/proc/self/pagemap: bit 63, present)."""
    first = array.ctypes.data // mmap.PAGESIZE
    last = (array.ctypes.data + array.nbytes - 1) // mmap.PAGESIZE
    with open("/proc/self/pagemap", "rb") as pagemap:
        pagemap.seek(first * 8)
        entries = np.frombuffer(pagemap.read((last - first + 1) * 8), np.uint64)
    return int(np.count_nonzero(entries >> np.uint64(63)))


def file_resident_bytes(path) -> int:
    """Rss of this process's mappings of the file at path (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and ":" not in fields[0]:
                inside = len(fields) > 5 and os.path.abspath(fields[5]) == os.path.abspath(path)
            elif inside and line.startswith("Rss:"):
                total += int(fields[1]) * 1024
    return total


def test_lazy_zeros_are_resident_where_written_only():
    a = lazy_zeros((4, 1024, 1024))                          # 16 MiB: numpy would use huge pages
    assert a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable
    assert resident_pages(a) == 0
    a[:, :3] = 1.0                                           # 3 rows of 4 KiB in each of 4 slices
    assert resident_pages(a) * mmap.PAGESIZE == 4 * 3 * 4096
    assert a.sum() == 4 * 3 * 1024 and a[:, 3:].max() == 0
    assert lazy_zeros((2, 0, 8)).shape == (2, 0, 8)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("resident") / "wide-q8_0.bin"
    # wide enough that each layer's keys at 2048 positions are 4 MiB (room for whole huge pages)
    write_random_model(path, dict(n_embd=512, n_head=8, n_rot=16, n_layer=2, n_ctx=2048), ftype="q8_0", qnt_version=2)
    return path


def test_the_kv_cache_holds_the_positions_in_use(model_path):
    model = load_model(model_path, backend="fast")
    session = model.new_session(2048)
    session.reserve(2048)                                    # room for the whole context
    session.eval([int(t) for t in np.random.default_rng(0).integers(0, 96, 40)])
    session.eval([5])
    c = model.config
    in_use = c.n_layer * 41 * c.n_embd * 4                   # 41 positions of float32 keys, per cache
    for cache in (session.kcache, session.vcache):
        assert cache.shape[1] == 2048
        # at most a page more per layer slice (a position's row straddling a page boundary)
        assert resident_pages(cache) * mmap.PAGESIZE <= in_use + c.n_layer * mmap.PAGESIZE
    model.close()


def test_loading_hands_the_file_pages_back(model_path):
    model = load_model(model_path, backend="fast")
    assert file_resident_bytes(model_path) == 0         # vocabulary, small tensors, checked weights
    session = model.new_session(64)
    logits = session.eval([3, 1, 4])
    session.eval([int(np.argmax(logits))])
    assert file_resident_bytes(model_path) == 0              # the embedding rows are read, not mapped
    ref = load_model(model_path, backend="reference")
    embed = ref.file.tensors["gpt_neox.embed_in.weight"]
    assert np.array_equal(model._backend.embed_rows([3, 1, 4]), embed.rows([3, 1, 4]))
    ref.close()
    model.close()


def test_release_library_pages_keeps_the_written_pages(model_path):
    load_model(model_path, backend="fast").close()           # numba loaded: LLVM's library is mapped
    before = library_mappings("libllvmlite")
    written = sum(m.get("Anonymous", 0) for m in before)
    assert written > 0                                       # relocated data: private copies
    release_library_pages("libllvmlite")
    after = library_mappings("libllvmlite")
    assert sum(m.get("Anonymous", 0) for m in after) == written      # kept: advising them would lose them
    clean = sum(m.get("Rss", 0) for m in after if "w" not in m["perms"] and not m.get("Anonymous"))
    assert clean < 1024                                      # KiB: code and read-only data handed back
    assert isinstance(trim_heap(), bool)


def test_a_file_cut_short_after_loading_gives_a_clear_error(model_path, tmp_path):
    """The embedding rows are read as tokens come: a file truncated meanwhile (a download being
    replaced, a full disk) is named in a ModelFormatError, not a crash."""
    import shutil

    from engine.errors import ModelFormatError
    copy = tmp_path / "copy.bin"
    shutil.copyfile(model_path, copy)
    model = load_model(copy, backend="fast")
    embed = model.file.tensors["gpt_neox.embed_in.weight"]
    with open(copy, "r+b") as fh:
        fh.truncate(embed.offset + embed.row_bytes)          # only token 0's row is left
    session = model.new_session(16)
    session.eval([0])
    with pytest.raises(ModelFormatError, match="truncated while reading tensor 'gpt_neox.embed_in.weight'"):
        session.eval([5])
    model.close()
