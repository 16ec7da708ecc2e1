"""The fast session's key and value caches hold room for the positions in use, grown in chunks.

A session at a 2048-token context that has seen 300 tokens holds 512 positions (two chunks of
256), not 2048; growing copies the cache once per chunk, and the logits of a session that grew
are exactly those of one that had its whole room from the start (prompt path, token path,
branches adopted past a chunk's end).
"""
from __future__ import annotations

import numpy as np
import pytest

from engine import load_model
from engine.fast.session import KV_CHUNK
from tests.modelgen import write_random_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("kv") / "tiny-q8_0.bin"
    write_random_model(path, dict(n_ctx=2048), ftype="q8_0", qnt_version=2)
    return load_model(path, backend="fast")


def tokens(n: int, seed: int = 0) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(0, 96, n)]


def test_the_cache_grows_with_the_context_in_use(model):
    session = model.new_session(2048)
    assert session.capacity == KV_CHUNK
    session.eval(tokens(200))
    assert session.capacity == KV_CHUNK
    session.eval(tokens(100, 1))
    assert session.capacity == 2 * KV_CHUNK          # 300 positions: two chunks, not 2048
    assert session.kcache.shape == (2, 2 * KV_CHUNK, 64) and session.vcache.shape == session.kcache.shape
    session.truncate(10)                              # keeps its room
    assert session.capacity == 2 * KV_CHUNK
    session.eval(tokens(2038, 2))                     # up to the context, never past it
    assert session.capacity == 2048


def test_a_grown_cache_gives_the_same_logits(model):
    ids = tokens(700, 3)
    roomy = model.new_session(2048)
    roomy.reserve(2048)
    grown = model.new_session(2048)
    for piece in (ids[:250], ids[250:258], ids[258:259], ids[259:600], ids[600:]):
        want = roomy.eval(piece, all_logits=True)
        got = grown.eval(piece, all_logits=True)
        assert np.array_equal(got, want)
    assert grown.capacity < 2048 and grown.capacity >= 700


def test_adopting_a_branch_past_the_end_of_a_chunk_grows_the_cache(model):
    ids = tokens(KV_CHUNK - 2, 4)
    roomy, grown = model.new_session(2048), model.new_session(2048)
    roomy.reserve(2048)
    for s in (roomy, grown):
        s.eval(ids)
    branches = [s.branch(2, 6) for s in (roomy, grown)]
    step = [[5, 7]] + [[int(t), int(t) + 1] for t in tokens(5, 5)]
    for pair in step:
        want, got = (b.eval(pair) for b in branches)
        assert np.array_equal(got, want)
    for b in branches:
        b.adopt(1)
    assert grown.capacity > KV_CHUNK and len(grown.tokens) == KV_CHUNK + 4
    assert np.array_equal(grown.eval([9]), roomy.eval([9]))
