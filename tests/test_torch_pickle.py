"""The restricted unpickler: real torch.save archives load, code-running pickles are refused."""
from __future__ import annotations

import builtins
import os
import pickle
import struct
import subprocess
import zipfile

import numpy as np
import pytest

from engine.errors import ModelFormatError
from engine.torch_pickle import load_torch_state_dict


def write_archive(path, pickle_bytes, storages=(), folder="archive"):
    """A zip laid out like torch.save: <folder>/data.pkl + <folder>/data/<key>."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{folder}/data.pkl", pickle_bytes)
        z.writestr(f"{folder}/byteorder", "little")
        for key, raw in storages:
            z.writestr(f"{folder}/data/{key}", raw)
    return path


def _str(s: str) -> bytes:
    b = s.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(b)) + b


def _int(i: int) -> bytes:
    if -(1 << 31) <= i < 1 << 31:
        return pickle.BININT + struct.pack("<i", i)
    return pickle.LONG1 + bytes([8]) + struct.pack("<q", i)      # what pickle writes past 32 bits


def _tuple(items) -> bytes:
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def tensor_pickle(tensors: dict) -> bytes:
    """Protocol-2 pickle bytes of {name: (storage_type, key, numel, offset, size, stride)}, as torch
    writes them (built by hand, since the tests run without torch)."""
    out = [pickle.PROTO + b"\x02", pickle.GLOBAL + b"collections\nOrderedDict\n", pickle.EMPTY_TUPLE,
           pickle.REDUCE]
    for name, (stype, key, numel, offset, size, stride) in tensors.items():
        storage = _tuple([_str("storage"), pickle.GLOBAL + f"torch\n{stype}\n".encode(), _str(key),
                          _str("cpu"), _int(numel)]) + pickle.BINPERSID
        args = _tuple([storage, _int(offset), _tuple(map(_int, size)), _tuple(map(_int, stride)),
                       pickle.NEWFALSE, pickle.EMPTY_DICT])
        out += [_str(name), pickle.GLOBAL + b"torch._utils\n_rebuild_tensor_v2\n", args, pickle.REDUCE,
                pickle.SETITEM]
    return b"".join(out) + pickle.STOP


def test_real_torch_archive_loads_views_and_dtypes(fixtures_dir):
    state = load_torch_state_dict(fixtures_dir / "torch_pickle" / "views.bin")
    expected = np.load(fixtures_dir / "torch_pickle" / "views.npz")
    assert sorted(state) == sorted(expected.files)
    for name in expected.files:
        assert state[name].dtype == expected[name].dtype, name
        np.testing.assert_array_equal(state[name], expected[name], err_msg=name)
    assert state["transposed"].shape == (6, 4)
    assert state["bfloat16"][1] == -2.25           # bf16 widened exactly


def test_real_checkpoint_loads_every_tensor(fixtures_dir):
    state = load_torch_state_dict(fixtures_dir / "tiny-bin" / "pytorch_model.bin")
    assert state["gpt_neox.embed_in.weight"].shape == (352, 64)
    assert state["gpt_neox.embed_in.weight"].dtype == np.float16
    assert state["gpt_neox.layers.1.attention.bias"].dtype == np.bool_
    assert state["gpt_neox.layers.0.attention.masked_bias"].shape == ()
    assert np.isfinite(state["embed_out.weight"].astype(np.float32)).all()


def test_hand_made_strided_tensor(tmp_path):
    raw = np.arange(6, dtype="<f4").tobytes()
    path = write_archive(tmp_path / "m.bin", tensor_pickle(
        {"t": ("FloatStorage", "0", 6, 1, (2, 2), (1, 2))}), [("0", raw)], folder="weird_name")
    t = load_torch_state_dict(path)["t"]
    np.testing.assert_array_equal(t, [[1, 3], [2, 4]])


class RunsCode:
    """A payload whose unpickling would call `func(*args)`."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("func, refused", [
    (os.system, "system"),
    (builtins.eval, "builtins.eval"),
    (subprocess.call, "subprocess.call"),
])
def test_pickle_that_runs_code_is_refused(tmp_path, func, refused):
    marker = tmp_path / "pwned"
    arg = f"touch {marker}" if func is not builtins.eval else f"open({str(marker)!r}, 'w')"
    if func is subprocess.call:
        arg = ["touch", str(marker)]
    payload = pickle.dumps({"x": RunsCode(func, arg)}, protocol=2)
    path = write_archive(tmp_path / "evil.bin", payload)
    with pytest.raises(ModelFormatError, match="refused global .*" + refused) as err:
        load_torch_state_dict(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_nested_malicious_global_inside_tensor_args_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(RunsCode(os.system, f"touch {marker}"), protocol=2)[2:-1]   # strip PROTO/STOP
    good = tensor_pickle({"t": ("FloatStorage", "0", 1, 0, (1,), (1,))})
    # Put the payload where the storage offset should be.
    poisoned = good.replace(_int(0) + pickle.MARK + _int(1), evil + pickle.MARK + _int(1), 1)
    assert poisoned != good
    path = write_archive(tmp_path / "evil.bin", poisoned, [("0", b"\0" * 4)])
    with pytest.raises(ModelFormatError, match="refused global"):
        load_torch_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("numel, offset, size, stride, raw_len, message", [
    (4, 2, (3,), (1,), 16, "reaches element 4 of a 4-element storage"),
    (4, 0, (2, 3), (3, 1), 16, "reaches element 5"),
    (5, 0, (1,), (1,), 16, "holds 16 bytes, expected 5 x 4"),
])
def test_out_of_bounds_views_are_refused(tmp_path, numel, offset, size, stride, raw_len, message):
    path = write_archive(tmp_path / "m.bin", tensor_pickle(
        {"t": ("FloatStorage", "0", numel, offset, size, stride)}), [("0", b"\0" * raw_len)])
    with pytest.raises(ModelFormatError, match=message):
        load_torch_state_dict(path)


def test_missing_storage_and_bad_archives(tmp_path):
    path = write_archive(tmp_path / "m.bin", tensor_pickle({"t": ("FloatStorage", "7", 1, 0, (1,), (1,))}))
    with pytest.raises(ModelFormatError, match="archive/data/7 .* missing"):
        load_torch_state_dict(path)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelFormatError, match="not a zip"):
        load_torch_state_dict(raw)
    path = write_archive(tmp_path / "notdict.bin", pickle.dumps([1, 2], protocol=2))
    with pytest.raises(ModelFormatError, match="not a state dict"):
        load_torch_state_dict(path)
    path = write_archive(tmp_path / "notensor.bin", pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(ModelFormatError, match="not tensors"):
        load_torch_state_dict(path)
    with zipfile.ZipFile(tmp_path / "empty.bin", "w") as z:
        z.writestr("x/other.txt", "hi")
    with pytest.raises(ModelFormatError, match="data.pkl"):
        load_torch_state_dict(tmp_path / "empty.bin")


def test_truncated_archive_is_refused(fixtures_dir, tmp_path):
    data = (fixtures_dir / "tiny-bin" / "pytorch_model.bin").read_bytes()
    for cut in (100, len(data) // 2, len(data) - 30):
        path = tmp_path / f"cut{cut}.bin"
        path.write_bytes(data[:cut])
        with pytest.raises(ModelFormatError):
            load_torch_state_dict(path)
