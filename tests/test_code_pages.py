"""LLVM's clean pages are handed back once the kernels are loaded, and LLVM still works afterwards.

Run in a child process (the test process's own numba state must not matter): after a fast
model's first token the code and read-only data of libllvmlite hold almost nothing resident, and a
function compiled afterwards (LLVM running again, reading its pages back) gives the right answer.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.modelgen import write_random_model

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys
from engine import load_model
from engine.resident_memory import library_mappings

def resident_kib():
    # the clean file-backed pages: code and read-only data (written copies are never handed back)
    return sum(m.get("Rss", 0) for m in library_mappings("libllvmlite") if "w" not in m["perms"] and not m.get("Anonymous"))

import numba
before_load = resident_kib()
model = load_model(sys.argv[1], backend="fast")
session = model.new_session(32)
session.eval(list(range(8)))
session.eval([1])
after_tokens = resident_kib()

@numba.njit
def twice_plus_one(x):
    return 2 * x + 1

mapped = sum(m["end"] - m["start"] for m in library_mappings("libllvmlite")) // 1024
print(json.dumps(dict(before_load=before_load, after_tokens=after_tokens, mapped=mapped, compiled=twice_plus_one(20))))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and madvise: Linux only")
def test_llvm_code_is_released_after_the_kernels_load_and_still_runs(tmp_path):
    path = tmp_path / "tiny-q4_0.bin"
    write_random_model(path, ftype="q4_0", qnt_version=2)
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["mapped"] > 10_000                       # the library is there (tens of MiB of code)
    assert r["before_load"] > 10_000                  # importing numba alone touches much of it
    assert r["after_tokens"] < r["before_load"] // 4  # handed back once both paths had loaded
    assert r["compiled"] == 41                        # LLVM reads its pages back when it runs again
