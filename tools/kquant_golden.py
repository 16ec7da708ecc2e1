"""Make tests/fixtures/kquants/golden.npz: llama.cpp's own K-quant and IQ4 bytes for fixed inputs.

The quantizers of ``engine/kquants.py`` follow llama.cpp's; this records what llama.cpp itself
writes, so the tests compare against it without needing a C compiler. It compiles
``ggml/src/ggml-quants.c`` from the llama.cpp sources vendored in the llama-cpp-python source
package (``pip download --no-binary :all: --no-deps llama-cpp-python==0.3.36``, then unpack) into a
small shared library, with ``-ffp-contract=off`` (no fused multiply-add: the float32 rounding of
the C source as written), and calls ``quantize_row_q{2..6}_K_ref``, ``quantize_iq4_nl`` and
``quantize_iq4_xs`` (no importance matrix, as ``llama-quantize`` without ``--imatrix``).

    python tools/kquant_golden.py /path/to/llama_cpp_python-0.3.36/vendor/llama.cpp
"""
from __future__ import annotations

import ctypes
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.kquants import BLOCK_SIZES, K_TYPES  # noqa: E402

_STUBS = """
#include <stdlib.h>
#include <stddef.h>
void ggml_abort(const char *file, int line, const char *fmt, ...) { abort(); }
size_t ggml_row_size(int type, long n) { abort(); }
const char *ggml_type_name(int type) { return ""; }
size_t ggml_type_size(int type) { abort(); }
"""


def build_library(llama_cpp: Path, out: Path) -> ctypes.CDLL:
    ggml = llama_cpp / "ggml"
    stubs = out / "stubs.c"
    stubs.write_text(_STUBS)
    lib = out / "libkquants.so"
    subprocess.run(["gcc", "-O2", "-ffp-contract=off", "-fPIC", "-shared", f"-I{ggml / 'include'}",
                    f"-I{ggml / 'src'}", str(ggml / "src" / "ggml-quants.c"), str(stubs), "-lm", "-o", str(lib)],
                   check=True)
    return ctypes.CDLL(str(lib))


def llama_quantize(lib: ctypes.CDLL, type_name: str, x: np.ndarray) -> np.ndarray:
    qk, nbytes = BLOCK_SIZES[type_name]
    x = np.ascontiguousarray(x, np.float32)
    out = np.zeros(x.size // qk * nbytes, np.uint8)
    src, dst = x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p)
    if type_name.endswith("_K"):
        getattr(lib, f"quantize_row_{type_name}_ref")(src, dst, ctypes.c_int64(x.size))
    else:
        getattr(lib, f"quantize_{type_name}")(src, dst, ctypes.c_int64(1), ctypes.c_int64(x.size), None)
    return out.reshape(-1, nbytes)


def inputs(seed: int = 18) -> np.ndarray:
    """12 super-blocks: an all-zero, a constant, a negative constant, small integers, tiny values,
    one huge outlier, then Gaussian rows of random spread (the common case)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((12, 256)) * rng.uniform(0.01, 3, size=(12, 256))).astype(np.float32)
    x[0] = 0
    x[1] = 0.3
    x[2] = -0.2
    x[3] = rng.integers(-3, 4, 256) * 0.125
    x[4] = rng.standard_normal(256) * 1e-4
    x[5, 17] = 40.0
    return x


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        lib = build_library(Path(sys.argv[1]), Path(tmp))
        x = inputs()
        arrays = {"x": x}
        for t in K_TYPES:
            arrays[t] = llama_quantize(lib, t, x.reshape(-1))
    target = ROOT / "tests" / "fixtures" / "kquants" / "golden.npz"
    np.savez_compressed(target, **arrays)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
