"""The fast session's key and value caches hold room for the positions in use, grown in chunks.

A session at a 2048-token context that has seen 300 tokens holds 512 positions (two chunks of
256), not 2048; growing copies the cache once per chunk, and the logits of a session that grew
are exactly those of one that had its whole room from the start (prompt path, token path,
branches adopted past a chunk's end).

The caches hold fp16 by default (float32 with NEOX_WRITER_KV=f32): the conversion rounds to nearest
even like numpy's, on both of its routes (F16C and integer arithmetic); every evaluation path
stores the rounded values of what a float32 cache would hold; its logits stay within fp16's reach
of the float32 cache's, and a trained model's perplexity moves by less than 0.1 %.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numba import njit

from engine import load_model
from engine.fast import simd
from engine.fast.session import KV_CHUNK, kv_dtype_from_env, kv_floats, kv_stored
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


@njit
def _to_half(x, out, f16c):
    for i in range(x.size):
        out[i] = simd._float_to_half_f16c(x[i]) if f16c else simd._float_to_half_bits(x[i])


@pytest.mark.parametrize("f16c", [True, False])
def test_float_to_half_rounds_as_numpy_does(f16c):
    if f16c and not simd.HAS_F16C:
        pytest.skip("this CPU has no F16C")
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.standard_normal(20000).astype(np.float32) * np.float32(s)
                        for s in (1e-9, 1e-7, 1e-5, 1e-3, 1, 1e3, 3e4)] + [np.array(
                            [0, -0.0, 65504, 65519, 65520, 1e6, -1e6, np.inf, -np.inf, 2 ** -24, 2 ** -25,
                             1.5 * 2 ** -25, 2 ** -14, 2 ** -14 - 2 ** -25, 1 + 2 ** -11, 1 + 3 * 2 ** -11], np.float32)])
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).view(np.uint16)
    got = np.zeros(x.size, np.uint16)
    _to_half(x, got, f16c)
    assert np.array_equal(got, want), x[got != want][:5]
    finite = np.isfinite(x) & (np.abs(x) <= 65504)
    assert np.array_equal(kv_stored(x, np.uint16)[finite], want[finite])
    assert np.array_equal(kv_stored(np.array([1e6, -np.inf], np.float32), np.uint16).view(np.float16), [65504, -65504])
    nan = np.zeros(1, np.uint16)
    _to_half(np.array([np.nan], np.float32), nan, f16c)
    assert np.isnan(nan.view(np.float16)[0])


def test_the_cache_type_comes_from_neox_writer_kv(monkeypatch):
    monkeypatch.delenv("NEOX_WRITER_KV", raising=False)
    assert kv_dtype_from_env() == np.uint16
    monkeypatch.setenv("NEOX_WRITER_KV", "F32")
    assert kv_dtype_from_env() == np.float32
    monkeypatch.setenv("NEOX_WRITER_KV", "f16")
    assert kv_dtype_from_env() == np.uint16
    monkeypatch.setenv("NEOX_WRITER_KV", "bf16")
    with pytest.raises(ValueError, match="NEOX_WRITER_KV='bf16'"):
        kv_dtype_from_env()


def every_path(model, ids):
    """Logits and caches of a long prompt, a short one, single tokens and four branches, in turn."""
    session = model.new_session(512)
    out = [session.eval(ids[:100], all_logits=True),            # the batched prompt path
           session.eval(ids[100:130], all_logits=True),         # rows of one call (short prompt)
           np.stack([session.eval([t]) for t in ids[130:140]])]  # the token path
    branches = session.branch(4, 8)
    rows = branches.eval(ids[140:144])
    out.append(np.concatenate([rows, branches.eval(ids[144:148])]))
    branches.adopt(2)                          # a kept branch's keys and values copied into the session
    out.append(session.eval([int(ids[0])]))
    return out, session, branches


def test_fp16_caches_hold_the_rounded_float32_values_and_stay_close(monkeypatch, tmp_path):
    path = tmp_path / "tiny-f32.bin"
    write_random_model(path, dict(n_ctx=512), ftype="f32")
    ids = tokens(148, 6)
    runs = {}
    for kv in ("f32", "f16"):
        monkeypatch.setenv("NEOX_WRITER_KV", kv)
        runs[kv] = every_path(load_model(path, backend="fast"), ids)
    (want, wide, wide_branches), (got, half, half_branches) = runs["f32"], runs["f16"]
    assert half.kcache.dtype == np.uint16 and wide.kcache.dtype == np.float32
    assert half.kcache.nbytes * 2 == wide.kcache.nbytes
    assert half.vcache.dtype == half_branches.kb.dtype == half_branches.vb.dtype == np.uint16
    # layer 0's keys and values come from the same embeddings: exactly the float32 cache rounded
    for name in ("kcache", "vcache"):
        a, b = getattr(half, name)[0, :140], getattr(wide, name)[0, :140]
        assert np.array_equal(a, kv_stored(b, np.uint16)), name
        scale = np.abs(kv_floats(getattr(wide, name)[:, :140])).max()
        assert np.abs(kv_floats(getattr(half, name)[:, :140]) - getattr(wide, name)[:, :140]).max() < 1e-2 * scale
    for own in ("kb", "vb"):
        np.testing.assert_array_equal(getattr(half_branches, own)[0, :, :2],
                                      kv_stored(getattr(wide_branches, own)[0, :, :2], np.uint16))
    # the adopted branch's two positions follow the prefix in the session, as they were in the branch
    assert half.tokens[140:143] == wide.tokens[140:143] == [ids[142], ids[146], ids[0]]
    np.testing.assert_array_equal(half.vcache[:, 140:142], half_branches.vb[:, 2, :2])
    for path_name, a, b in zip(("batched", "short", "token", "rows", "adopted"), got, want):
        assert np.abs(a - b).max() < 2e-2 * np.abs(b).max(), path_name


def test_fp16_caches_cost_a_trained_model_almost_no_perplexity(monkeypatch):
    """The demo model over 512 tokens of held-out Austen: measured 44.5113 against 44.5144 over the
    whole text (`python -m engine perplexity`, docs/benchmarks.md)."""
    from app.bundled import demo_dir
    from engine.tokenizer import load_tokenizer

    model_file = next(demo_dir().glob("demo-*.bin"))
    text = (Path(__file__).resolve().parent / "fixtures" / "demo" / "persuasion-ch22-24.txt").read_text("utf-8")
    nll = {}
    for kv in ("f32", "f16"):
        monkeypatch.setenv("NEOX_WRITER_KV", kv)
        model = load_model(model_file, backend="fast")
        ids = load_tokenizer(model.vocab, demo_dir() / "tokenizer.json").encode(text)[:513]
        logits = model.new_session(512).eval(ids[:512], all_logits=True).astype(np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        nll[kv] = -float(np.mean(logp[np.arange(512), ids[1:513]]))
    assert nll["f32"] < 5.0                     # a trained model (perplexity about 45, not 50000)
    assert abs(np.exp(nll["f16"] - nll["f32"]) - 1) < 1e-3, nll


def test_fp16_caches_saturate_instead_of_overflowing(monkeypatch, tmp_path):
    """Keys and values past fp16's range are stored as +-65504, not inf (whose softmax is NaN)."""
    monkeypatch.setenv("NEOX_WRITER_KV", "f16")
    path = tmp_path / "tiny-f32.bin"
    write_random_model(path, dict(n_ctx=64), ftype="f32")
    model = load_model(path, backend="fast")
    model._backend.b_qkv[:] = 1e6            # every q, k and v far past 65504
    session = model.new_session(64)
    for piece in (tokens(20, 7), tokens(3, 8), [5]):
        logits = session.eval(piece)
        assert np.isfinite(logits).all()
    stored = kv_floats(session.kcache[:, :24])
    assert np.isfinite(stored).all() and np.abs(stored).max() == 65504
