"""Malformed and hostile model files: each is refused with a ModelFormatError that names the file,
the byte offset and what was expected, quickly and without large allocations."""
import struct
import time
import tracemalloc

import numpy as np
import pytest

import engine
from engine import ModelFormatError
from engine.ggml_file import GGMLFile
from modelgen import write_random_model

HEADER_FIELDS = ["n_vocab", "n_ctx", "n_embd", "n_head", "n_layer", "n_rot"]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "good.bin"
    write_random_model(path, ftype="q4_0", qnt_version=2)
    return path.read_bytes()


def record_starts(path):
    """Byte offsets of every tensor record header, and of every record's name and data."""
    f = GGMLFile(path)
    out = []
    for t in f.tensors.values():
        name_len = len(t.name.encode())
        start = t.offset - name_len - 4 * len(t.shape) - 12
        out.append((start, t.offset - name_len, t.offset))
    f.close()
    return sorted(out)


def refused(tmp_path, data: bytes, match: str | None = None) -> ModelFormatError:
    path = tmp_path / "bad.bin"
    path.write_bytes(data)
    with pytest.raises(ModelFormatError) as info:
        engine.load_model(path, backend="reference")
    err = info.value
    assert isinstance(err, ValueError)
    assert str(path) in str(err) and "at byte" in str(err)
    if match:
        assert match in str(err), str(err)
    return err


def patch_i32(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + struct.pack("<i", value) + data[offset + 4:]


def test_the_good_file_loads(tmp_path, good):
    p = tmp_path / "ok.bin"
    p.write_bytes(good)
    assert engine.load_model(p, backend="reference").info()["weight_type"] == "q4_0"


def test_truncation_at_every_section_boundary(tmp_path, good):
    p = tmp_path / "ok.bin"
    p.write_bytes(good)
    cuts = set(range(0, 40)) | {36 + 7 * 3, 300, 400}           # header and vocab
    for start, name_at, data_at in record_starts(p):
        cuts |= {start + 1, start + 8, start + 12, name_at, name_at + 3, data_at, data_at + 1}
    cuts |= {len(good) - 1, len(good) - 17}
    for cut in sorted(c for c in cuts if c < len(good)):
        err = refused(tmp_path, good[:cut])
        assert err.offset is not None and err.offset <= len(good)


def test_wrong_magic_and_gguf(tmp_path, good):
    refused(tmp_path, b"abcd" + good[4:], "wrong magic")
    refused(tmp_path, b"GGUF" + good[4:], "GGUF")
    refused(tmp_path, b"", "truncated")


@pytest.mark.parametrize("field", HEADER_FIELDS)
@pytest.mark.parametrize("value", [0, -1, 1 << 30])
def test_zero_negative_or_absurd_header_values(tmp_path, good, field, value):
    if field == "n_rot" and value == 0:
        pytest.skip("n_rot = 0 is legal (no rotary dims)")
    offset = 4 + 4 * HEADER_FIELDS.index(field)
    err = refused(tmp_path, patch_i32(good, offset, value))
    assert err.offset is not None


def test_inconsistent_header_values(tmp_path, good):
    refused(tmp_path, patch_i32(good, 16, 5), "not a multiple of n_head")     # n_head 5 with n_embd 64
    refused(tmp_path, patch_i32(good, 24, 3), "n_rot")                        # odd
    refused(tmp_path, patch_i32(good, 24, 18), "n_rot")                       # above head size 16
    refused(tmp_path, patch_i32(good, 4, 95), "is n_vocab right")            # n_vocab off by one
    refused(tmp_path, patch_i32(good, 20, 3), "missing tensors")              # a layer more than the file has
    refused(tmp_path, patch_i32(good, 20, 1), "unknown tensor")               # fewer layers than the file has


def test_unknown_file_type_and_tensor_type_codes(tmp_path, good):
    refused(tmp_path, patch_i32(good, 32, 2004), "unknown file type")
    refused(tmp_path, patch_i32(good, 32, 3002), "unknown file type")
    p = tmp_path / "ok.bin"
    p.write_bytes(good)
    start, _, _ = record_starts(p)[0]
    for code in (4, 5, 9, 99, -1):
        refused(tmp_path, patch_i32(good, start + 8, code), "type code")


def test_impossible_dims_and_name_lengths(tmp_path, good):
    p = tmp_path / "ok.bin"
    p.write_bytes(good)
    start, _, _ = record_starts(p)[0]
    refused(tmp_path, patch_i32(good, start, 3), "n_dims")
    refused(tmp_path, patch_i32(good, start, 0), "n_dims")
    refused(tmp_path, patch_i32(good, start + 12, 0), "dimensions")
    refused(tmp_path, patch_i32(good, start + 12, -64), "dimensions")
    refused(tmp_path, patch_i32(good, start + 12, 48), "")                    # 48 values per row: shape or block size
    refused(tmp_path, patch_i32(good, start + 4, 0), "name length")
    refused(tmp_path, patch_i32(good, start + 4, 1 << 30), "name length")
    refused(tmp_path, patch_i32(good, start + 4, 200))                       # name runs into the data


def test_vocab_entry_longer_than_the_file(tmp_path, good):
    refused(tmp_path, good[:36] + struct.pack("<I", 0xFFFFFFF0) + good[40:], "vocab entry 0")
    refused(tmp_path, good[:36] + struct.pack("<I", 50_000) + good[40:])


def test_missing_duplicate_and_misshapen_tensors(tmp_path, good):
    p = tmp_path / "ok.bin"
    p.write_bytes(good)
    records = record_starts(p)
    (s0, _, d0), (s1, _, _) = records[0], records[1]
    first = good[s0:s1]
    refused(tmp_path, good[:s0] + good[s1:], "missing tensors")               # drop one record
    refused(tmp_path, good + first, "appears twice")                          # repeat one record
    # a misshapen tensor: swap its two dims (only meaningful for 2-D records)
    for start, name_at, data_at in records:
        n_dims = struct.unpack_from("<i", good, start)[0]
        ne0, ne1 = struct.unpack_from("<2i", good, start + 12) if n_dims == 2 else (0, 0)
        if n_dims == 2 and ne0 != ne1 and ne1 % 32 == 0:
            bad = good[:start + 12] + struct.pack("<2i", ne1, ne0) + good[start + 20:]
            refused(tmp_path, bad, "shape")
            break


def test_rejection_is_fast_and_allocates_nothing_large(tmp_path, good):
    hostile = [
        patch_i32(good, 4, 1 << 20),                                # huge vocab count
        good[:36] + struct.pack("<I", 0xFFFFFFF0) + good[40:],      # huge vocab entry
        patch_i32(good, 8, 1 << 20),
    ]
    p = tmp_path / "ok.bin"
    p.write_bytes(good)
    start, _, _ = record_starts(p)[0]
    hostile.append(good[:start + 12] + struct.pack("<2i", 1 << 30, 1 << 30) + good[start + 20:])
    for data in hostile:
        tracemalloc.start()
        t0 = time.perf_counter()
        refused(tmp_path, data)
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 8 << 20, f"peak allocation {peak} bytes"
        assert elapsed < 5


def test_a_directory_or_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelFormatError, match="cannot open"):
        engine.load_model(tmp_path / "nope.bin")
    with pytest.raises(ModelFormatError):
        engine.load_model(tmp_path)
