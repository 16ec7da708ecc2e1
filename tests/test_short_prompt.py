"""Short prompts through the one-call compiled path (forward.forward_prompt_rows) against the old paths.

Up to session.SHORT_PROMPT new tokens run as rows of one sequence in one compiled call; longer
ones take the batched path of prompt.py, a single token the per-token path. Checked at every
weight type: the logits of every new position against the old paths (SHORT_PROMPT set to 0) and the
reference, after an empty and a filled cache; the keys and values written; and that generation
continuing from that cache picks the same tokens as after the old paths.
"""
from __future__ import annotations

import numba
import numpy as np
import pytest

import engine.fast.session as fast_session
from conftest import FIXTURES_DIR
from engine import load_model
from test_fast import MODELS, TYPES, converted, rel_err, tol  # noqa: F401  (converted is a fixture)


@pytest.fixture(autouse=True)
def float32_caches(monkeypatch):
    """float32 key and value caches, not the default fp16: these compare caches and logits with the
    reference's (or with each other's float32 copies) at float32 tolerance; tests/test_kv_cache.py
    covers the fp16 caches on every path."""
    monkeypatch.setenv("NEOX_WRITER_KV", "f32")

LENGTHS = [1, 2, 5, 31, 32, 33, 64, fast_session.SHORT_PROMPT, fast_session.SHORT_PROMPT + 1]
N_PAST = [0, 17]


def prompt_tokens(model, count, seed=5):
    return np.random.default_rng(seed).integers(0, model.config.n_vocab, count).tolist()


def old_paths(monkeypatch):
    monkeypatch.setattr(fast_session, "SHORT_PROMPT", 0)


def evaluate(model, tokens, n_past, n, monkeypatch, short: bool):
    """(logits of the n new positions, the session) after tokens[:n_past] then tokens[n_past:n_past + n]."""
    with monkeypatch.context() as m:
        if not short:
            old_paths(m)
        s = model.new_session()
        if n_past:
            s.eval(tokens[:n_past])
        return s.eval(tokens[n_past:n_past + n], all_logits=True), s


@pytest.mark.parametrize("type_name,version", TYPES)
def test_short_prompt_logits_and_cache_every_type(converted, type_name, version, monkeypatch):
    path = converted("tiny-parallel", type_name, version)
    fast = load_model(path, backend="fast")
    tokens = prompt_tokens(fast, max(N_PAST) + max(LENGTHS))
    ref = load_model(path, backend="reference").logits(tokens)
    for n_past in N_PAST:
        for n in LENGTHS:
            new, s_new = evaluate(fast, tokens, n_past, n, monkeypatch, short=True)
            old, s_old = evaluate(fast, tokens, n_past, n, monkeypatch, short=False)
            where = f"n_past {n_past}, {n} tokens"
            assert new.shape == old.shape == (n, fast.config.n_vocab), where
            assert rel_err(new, old) < tol(type_name), where
            assert rel_err(new, ref[n_past:n_past + n]) < tol(type_name), where
            used = n_past + n
            for cache in ("kcache", "vcache"):
                a, b = getattr(s_new, cache)[:, :used], getattr(s_old, cache)[:, :used]
                assert rel_err(a, b) < tol(type_name), (where, cache)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("type_name,version", [("f32", 0), ("f16", 0), ("q4_0", 2), ("q5_1", 1), ("q8_0", 0)])
def test_generation_after_a_short_prompt_matches_the_old_paths(converted, name, type_name, version, monkeypatch):
    """Greedy tokens after a fixture prompt (and after a second short prompt on a filled cache) equal
    those after the old paths, wherever the old path's top-2 margin makes the choice clear."""
    fast = load_model(converted(name, type_name, version), backend="fast")
    fixture = np.load(FIXTURES_DIR / name / "tokens.npy").tolist()
    new, old = fast.new_session(), None
    with monkeypatch.context() as m:
        old_paths(m)
        old = fast.new_session()
        logits_old = old.eval(fixture[:20])
    logits_new = new.eval(fixture[:20])
    for step in range(24):
        if step == 12:     # a second short prompt after 32 positions
            with monkeypatch.context() as m:
                old_paths(m)
                logits_old = old.eval(fixture[20:40])
            logits_new = new.eval(fixture[20:40])
        top2 = np.sort(logits_old)[-2:]
        token = int(np.argmax(logits_old))
        if top2[1] - top2[0] > 0.5:
            assert int(np.argmax(logits_new)) == token, step
        logits_old = old.eval([token])
        logits_new = new.eval([token])


@pytest.mark.parametrize("threads", range(1, min(3, numba.config.NUMBA_NUM_THREADS) + 1))
def test_short_prompt_any_thread_count(converted, threads, monkeypatch):
    """The attention deals (row, head) pairs out to the threads in turn: every count covers each once."""
    path = converted("tiny-sequential", "q4_0", 2)
    fast = load_model(path, backend="fast", threads=threads)
    chooser = fast._backend.prompt_chooser
    monkeypatch.setattr(chooser, "choose", lambda: threads)      # not a probe of the other mode
    tokens = prompt_tokens(fast, 50, seed=9)
    ref = load_model(path, backend="reference").logits(tokens)
    new, _ = evaluate(fast, tokens, 10, 40, monkeypatch, short=True)
    assert rel_err(new, ref[10:50]) < tol("q4_0")
    if threads > 1:          # (one thread has nothing to choose)
        assert chooser.average[threads] is not None      # the prompt's time was recorded for its mode


@pytest.mark.parametrize("type_name,version", TYPES)
def test_every_type_takes_the_one_call_path_for_a_short_prompt(converted, type_name, version, monkeypatch):
    """f16/f32 short prompts went batched while the one-call path multiplied their matrices a row
    of weights at a time per token (a 32-token 410M f16 prompt: 2.1 s against 0.15 s batched);
    since ``floatgemm`` does them (70M f16, 32 tokens: 2155 tokens/s one call, 1101 batched), every
    type takes the one call."""
    fast = load_model(converted("tiny-parallel", type_name, version), backend="fast")
    calls = []
    cls = type(fast.new_session())
    real = cls._eval_short
    monkeypatch.setattr(cls, "_eval_short", lambda self, *a: calls.append(a) or real(self, *a))
    fast.new_session().eval(prompt_tokens(fast, 32))
    assert calls, type_name
