"""`python -m engine` end to end: info, logits, quantize, and one-line errors with exit code 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import engine
from modelgen import write_random_model

ROOT = Path(__file__).resolve().parents[1]


def run(*args, check=True):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "engine", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def f16_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "f16.bin"
    write_random_model(path, ftype="f16")
    return path


def test_help_lists_the_commands():
    out = run("--help").stdout
    for command in ("info", "logits", "convert", "quantize"):
        assert command in out


def test_info_json_has_the_documented_keys(f16_model):
    info = json.loads(run("info", f16_model, "--json").stdout)
    for key in ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer", "n_rot"):
        assert isinstance(info[key], int)
    assert info["parallel_residual"] is True and info["layout"] == "gpt-neox"
    assert info["qnt_version"] == 0 and info["weight_type"] == "f16" and info["file_size"] == f16_model.stat().st_size


def test_quantize_then_logits(tmp_path, f16_model):
    out = tmp_path / "q8.bin"
    run("quantize", f16_model, out, "--type", "q8_0", "--qnt-version", "1")
    info = json.loads(run("info", out, "--json").stdout)
    assert info["weight_type"] == "q8_0" and info["qnt_version"] == 1 and info["ftype"] == 1007
    npy = tmp_path / "l.npy"
    run("logits", out, "--tokens", "1,2,3,4", "--out", npy, "--backend", "reference")
    logits = np.load(npy)
    assert logits.shape == (4, 96) and logits.dtype == np.float32
    expected = engine.load_model(out, backend="reference").logits([1, 2, 3, 4])
    assert np.allclose(logits, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("args,needle", [
    (["info", "/nonexistent/model.bin"], "cannot open"),
    (["logits", "{model}", "--tokens", "1,x", "--out", "o.npy"], "--tokens"),
    (["logits", "{model}", "--tokens", "1,500", "--out", "o.npy"], "outside the vocabulary"),
    (["quantize", "{q8}", "{tmp}/x.bin", "--type", "q4_0"], "must be an f32 or f16 file"),
])
def test_errors_are_one_line_and_exit_2(tmp_path, f16_model, args, needle):
    q8 = tmp_path / "q8.bin"
    write_random_model(q8, ftype="q8_0", qnt_version=2)
    args = [a.format(model=f16_model, q8=q8, tmp=tmp_path) for a in args]
    proc = run(*args, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr


def test_bad_file_names_file_and_offset(tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"lmgg" + b"\x00" * 40)
    proc = run("info", bad, check=False)
    assert proc.returncode == 2 and str(bad) in proc.stderr and "at byte" in proc.stderr
