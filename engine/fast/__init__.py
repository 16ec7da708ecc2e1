"""The numba fast path: fused dequantize-and-dot kernels and a compiled per-token forward.

``build(ggml_file, config, threads=None)`` repacks the weight matrices once into a tile layout
the kernels stream through (``repack.py``), and returns a ``FastModel`` whose ``new_session()``
gives a ``FastSession`` with a preallocated KV cache (``session.py``). One token runs as one call
into compiled code over all layers (``forward.py``); a prompt runs many tokens per pass through
dequantized weight tiles and numpy's BLAS.

numba's on-disk cache lives under the user cache dir (or ``$NEOX_WRITER_HOME/cache``), in a folder
per version of these sources, so only the first run of a weight type pays for compilation. That has to be decided before numba is
imported, hence the code above the imports.
"""
from __future__ import annotations

import os


def _sources_digest() -> str:
    """A digest of this package's sources.

    numba checks a cached function against its own file's timestamp only, not against the files
    of the functions it calls: after an edit of matvec.py the cached forward pass of forward.py
    would still run the old kernels. A cache folder per version of the sources rules that out.
    """
    import hashlib
    folder = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha1()
    # the kernel choice (simd.py) is made at import, so a lowered choice needs its own cache
    digest.update(os.environ.get("NEOX_WRITER_KERNELS", "").encode() + b"\0")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()[:12]


def _cache_dir() -> str:
    home = os.environ.get("NEOX_WRITER_HOME")
    if home:
        base = os.path.join(home, "cache", "numba")
    else:
        from platformdirs import user_cache_dir
        base = os.path.join(user_cache_dir("NeoXWriter"), "numba")
    return os.path.join(base, _sources_digest())


if not os.environ.get("NUMBA_CACHE_DIR"):
    os.environ["NUMBA_CACHE_DIR"] = _cache_dir()

import numba  # noqa: E402  (after NUMBA_CACHE_DIR is set)

if not numba.config.CACHE_DIR:
    # numba was imported before us (its config was read without our variable): set it directly.
    numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]

from engine.fast.session import FastModel, FastSession  # noqa: E402
from engine.fast.simd import MODE as KERNELS  # noqa: E402  ("vnni", "avx2" integer kernels or "float")


def build(ggml_file, config, threads: int | None = None) -> FastModel:
    """Repack the file's weights for the kernels; the result makes sessions (``new_session``)."""
    return FastModel(ggml_file, config, threads=threads)


__all__ = ["KERNELS", "FastModel", "FastSession", "build"]
