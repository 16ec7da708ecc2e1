"""The starter backend: the reference forward pass, quick to start, for the first words of a first start.

On a first start the fast path's kernels take tens of seconds to compile (``engine/staged.py``
compiles them in a child process meanwhile). This backend needs one small kernel instead
(``engine/fast/blocks.py``: about a second to compile) and otherwise runs the numpy reference
forward pass, with two changes that make it usable for generation rather than only as an oracle:

- a weight matrix is decoded a few MiB of rows at a time, each slice multiplied at once, so no
  whole float32 matrix (the 1.4B model's output matrix would be 400 MiB) is ever held;
- a small model (the bundled demo: 27 MiB of float32) keeps its matrices decoded, so its tokens
  come at a few milliseconds rather than at the cost of decoding every weight for each;
- GELU uses a polynomial erf (Abramowitz and Stegun 7.1.26, error under 1.5e-7) on whole arrays
  instead of ``math.erf`` value by value, which took seconds on a long prompt.

Its sessions are the reference's (``ReferenceSession``), whose key and value caches hold the same
numbers in the same order as the fast path's, so a session can move to the fast backend without
evaluating its tokens again.
"""
from __future__ import annotations

import numpy as np

from engine.quants import TYPE_NAMES
from engine.reference import ReferenceBackend

DECODE_FLOATS = 1 << 20      # 4 MiB of decoded weights per slice: stays in the cache for BLAS
KEEP_BYTES = 64 << 20        # a model whose matrices decode to at most this keeps them decoded

_P = 0.3275911
_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU x * Phi(x) with erf from Abramowitz and Stegun 7.1.26, computed on whole arrays."""
    z = np.abs(x) * np.float32(1 / np.sqrt(2))
    t = 1 / (1 + np.float32(_P) * z)
    poly = t * (np.float32(_A[0]) + t * (np.float32(_A[1]) + t * (np.float32(_A[2]) + t * (
        np.float32(_A[3]) + t * np.float32(_A[4])))))
    erf = 1 - poly * np.exp(-z * z)
    return (0.5 * x * (1 + np.copysign(erf, x))).astype(np.float32)


def can_start(file) -> bool:
    """True for the files the starter decodes straight from their bytes: legacy ggml files of the
    block types of ``engine.quants`` (a GGUF file's QKV rows may need reordering, and its K-quants
    have no decoder here: those start on the fast path directly)."""
    return getattr(file, "format", "ggml") != "gguf" and all(
        t.type in TYPE_NAMES for t in file.tensors.values() if len(t.shape) == 2)


class StarterBackend(ReferenceBackend):
    """The reference forward pass with weights decoded by one small compiled kernel, a slice at a time."""

    name = "starter"

    def __init__(self, file, config):
        super().__init__(file, config)
        from engine.fast.blocks import decode_rows      # numba: imported only when this backend is used
        from engine.fast.threads import single_threaded_blas
        single_threaded_blas()      # OpenBLAS's spinning threads would fight the compiling child for the cores
        self._decode_rows = decode_rows
        matrices = [t for t in file.tensors.values() if len(t.shape) == 2 and t.name != "gpt_neox.embed_in.weight"]
        self._keep = sum(4 * t.shape[0] * t.shape[1] for t in matrices) <= KEEP_BYTES
        self._decoded: dict[str, np.ndarray] = {}

    def product(self, x: np.ndarray, name: str) -> np.ndarray:
        tensor = self.file.tensors[name]
        rows, cols = tensor.shape
        if self._keep:
            if name not in self._decoded:
                self._decoded[name] = self._decode_rows(tensor, 0, rows)
            return x @ self._decoded[name].T
        step = max(1, DECODE_FLOATS // cols)
        out = np.empty((x.shape[0], rows), np.float32)
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            out[:, r0:r1] = x @ self._decode_rows(tensor, r0, r1).T    # (matmul's out= into a column slice skips BLAS)
        return out

    gelu = staticmethod(gelu)
