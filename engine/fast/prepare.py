"""Compile the fast path's kernels for a model's weight types into numba's on-disk cache, in a child process.

    python -m engine.fast.prepare MODEL          (the frozen app: neox-writer --prepare-kernels MODEL)

A first start of the fast path compiles for tens of seconds, and numba's compiler holds the GIL
for long stretches, so compiling on a thread of the app would stall the window and the starter
backend writing meanwhile (``engine/staged.py``). A child process compiles instead: it writes a
tiny model with the same weight type and quantization version, runs every evaluation path on it
(a batched prompt, a token, sequences in one pass) and leaves a ``ready`` mark in the cache
folder. The compiled code depends on the arrays' types, not on their sizes, so the real model
then loads every kernel from the cache. The cache folder is per version of the kernels' sources
(``engine/fast/__init__.py``), so a mark never outlives the code it vouches for.
"""
from __future__ import annotations

import os
import sys
import tempfile

import numba
import numpy as np

PREPARE_FLAG = "--prepare-kernels"     # how the frozen app (packaging/launcher.py) is asked to run main()
TINY = dict(n_vocab=128, n_ctx=32, n_embd=128, n_head=4, n_layer=2, n_rot=16)


def kernel_key(ggml_file) -> str:
    """What the compiled kernels depend on: the matrices' types, the quantization version, the CPU's kernels."""
    from engine.fast.simd import MODE
    return f"{ggml_file.weight_type}-v{ggml_file.qnt_version}-{MODE}"


def ready_mark(ggml_file) -> str:
    """The file whose existence says the kernels of this file's types are in the cache."""
    return os.path.join(numba.config.CACHE_DIR, "ready", kernel_key(ggml_file))


def is_ready(ggml_file) -> bool:
    return os.path.isfile(ready_mark(ggml_file))


def child_command(model_path) -> list[str]:
    """The command line of a child that prepares the kernels for this model file."""
    if getattr(sys, "frozen", False):          # a PyInstaller bundle has no `python -m`
        return [sys.executable, PREPARE_FLAG, os.fspath(model_path)]
    return [sys.executable, "-m", "engine.fast.prepare", os.fspath(model_path)]


def warm_up(model) -> None:
    """Run every evaluation path of a FastModel once: a batched prompt, one token, sequences in one pass."""
    model.warm_up()
    if model.config.n_ctx >= 2:               # the prompt's token and one for each sequence
        session = model.new_session(2)
        session.eval([0])
        session.branch(2, 1).eval([0, 0])


def prepare(model_path) -> str:
    """Compile (or find in the cache) the kernels for the file's types; returns the ready mark written."""
    from engine.config import Config
    from engine.fast.session import FastModel
    from engine.ggml_file import GGMLFile, expected_tensors
    from engine.ggml_writer import write_ggml

    source = GGMLFile(model_path)
    try:
        hparams = dict(TINY, par_res=int(source.hparams.get("par_res", 1)))
        weight_type, qnt_version, mark = source.weight_type, source.qnt_version, ready_mark(source)
    finally:
        source.close()
    rng = np.random.default_rng(0)
    tensors = {name: (rng.standard_normal(shape) * 0.02).astype(np.float32)
               for name, shape in expected_tensors(hparams["n_vocab"], hparams["n_embd"], hparams["n_layer"]).items()}
    vocab = [f"<{i}>".encode() for i in range(hparams["n_vocab"])]
    with tempfile.TemporaryDirectory(prefix="neox-kernels-") as folder:
        path = os.path.join(folder, "tiny.bin")
        write_ggml(path, hparams, vocab, tensors, ftype=weight_type, qnt_version=qnt_version)
        tiny = GGMLFile(path)
        try:
            warm_up(FastModel(tiny, Config.from_file(tiny), threads=1))
        finally:
            tiny.close()
    os.makedirs(os.path.dirname(mark), exist_ok=True)
    with open(mark, "w", encoding="utf-8") as f:
        f.write(f"{weight_type} quantization version {qnt_version}\n")
    return mark


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m engine.fast.prepare MODEL", file=sys.stderr)
        return 2
    print(prepare(argv[0]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
