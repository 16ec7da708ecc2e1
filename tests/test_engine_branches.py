"""Branches: N sequences after one prompt, one new token each per pass (engine.model.Branches).

What is tested, on both backends and every weight type: greedy continuations of N sequences
started from N different forced first tokens equal the single-sequence greedy continuation from
that token, their logits within the fast path's tolerance of the single-sequence ones; sequences
advancing in smaller batches; adopting one sequence into the session; the checks on bad input.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import load_model
from modelgen import write_random_model
from test_fast import MODELS, TYPES, converted, rel_err, tokens_of, tol  # noqa: F401  (converted: a fixture)

STEPS = 32


def forced_starts(model, prompt, n):
    """n different first tokens: the prompt's n most likely next tokens (so the runs are plausible)."""
    logits = model.new_session().eval(prompt)
    return [int(t) for t in np.argsort(logits)[::-1][:n]]


def single_greedy(model, prompt, first, steps):
    """The single-sequence run: greedy tokens after prompt + [first], and the logits of each step."""
    session = model.new_session()
    session.eval(prompt)
    logits = session.eval([first])
    tokens, rows = [], []
    for _ in range(steps):
        rows.append(logits)
        tokens.append(int(np.argmax(logits)))
        logits = session.eval([tokens[-1]])
    return tokens, rows


def check_branches_match_single(model, prompt, n, tolerance, exact=False):
    """N branches, greedy for STEPS tokens after N forced first tokens, against N single runs.

    A sequence is compared token by token; if two candidates are closer than the tolerance allows
    (float rounding may pick either), the comparison of that sequence stops there. With ``exact``
    (the fast backend: a row's products, attention and norms are summed as the single token's)
    every row's logits must equal the single run's to the bit, so no sequence may stop.
    """
    starts = forced_starts(model, prompt, n)
    singles = [single_greedy(model, prompt, t, STEPS) for t in starts]
    session = model.new_session()
    session.eval(prompt)
    branches = session.branch(n, STEPS + 1)
    logits = branches.eval(starts)
    live = list(range(n))
    for step in range(STEPS):
        tokens = []
        for row, i in enumerate(live):
            want_tokens, want_rows = singles[i]
            assert rel_err(logits[row], want_rows[step]) < tolerance, (i, step)
            if exact:
                assert np.array_equal(logits[row], want_rows[step]), (i, step, rel_err(logits[row], want_rows[step]))
            token = int(np.argmax(logits[row]))
            if token != want_tokens[step]:
                top2 = np.sort(want_rows[step])[-2:]
                assert top2[1] - top2[0] < 2 * tolerance * np.abs(want_rows[step]).max(), (i, step)
                token = None
            tokens.append(token)
        live = [i for i, t in zip(live, tokens) if t is not None]
        if not live or step == STEPS - 1:
            break
        logits = branches.eval([t for t in tokens if t is not None], seqs=live)
    assert len(live) >= n - 1, "nearly every sequence should run its 32 tokens without a near tie"
    for i in live:
        assert branches.tokens[i] == [starts[i]] + singles[i][0][:STEPS - 1]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("type_name,version", TYPES)
def test_greedy_branches_equal_single_sequences_every_type(converted, name, type_name, version):
    model = load_model(converted(name, type_name, version), backend="fast")
    check_branches_match_single(model, tokens_of(name)[:20], 5, tol(type_name), exact=True)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("type_name,version", [("q4_0", 2), ("q5_1", 1), ("q8_0", 2), ("f16", 0)])
def test_every_batch_size(converted, n, type_name, version):
    model = load_model(converted("tiny-parallel", type_name, version), backend="fast")
    check_branches_match_single(model, tokens_of("tiny-parallel")[:12], n, tol(type_name), exact=True)


@pytest.mark.parametrize("type_name,qk_layout", [("q4_2", "E3"), ("q4_3", "E1")])
def test_stablelm_era_16_value_blocks(tmp_path, type_name, qk_layout):
    path = tmp_path / f"{type_name}.bin"
    write_random_model(path, dict(n_embd=64, n_vocab=96), layout="stablelm", ftype=type_name, era=qk_layout)
    check_branches_match_single(load_model(path, backend="fast"), list(range(3, 20)), 4, 1e-3, exact=True)


@pytest.fixture(scope="module")
def wide_gguf(tmp_path_factory):
    """preset -> a GGUF file of that llama.cpp preset (K-quants, iq4), from a random model 256 wide
    (the K-quants' super-blocks need rows of 256)."""
    from engine.gguf_quantize import quantize_to_gguf
    folder = tmp_path_factory.mktemp("wide")
    src = folder / "wide-f32.bin"
    write_random_model(src, dict(n_embd=256, n_vocab=300, n_layer=2))

    def get(preset):
        path = folder / f"wide-{preset}.gguf"
        if not path.exists():
            quantize_to_gguf(src, path, preset)
        return path
    return get


@pytest.mark.parametrize("preset", ["q4_K_M", "q5_K_M", "q6_K", "q3_K_M", "q2_K", "iq4_xs", "iq4_nl"])
def test_k_quants_and_iq4_in_gguf_files(wide_gguf, preset):
    check_branches_match_single(load_model(wide_gguf(preset), backend="fast"), list(range(3, 20)), 4, 2e-2,
                                exact=True)


@pytest.mark.parametrize("kv", ["f16", "f32"])
@pytest.mark.parametrize("name,type_name,version", [("tiny-sequential", "q4_1", 1), ("tiny-hd80", "f16", 0),
                                                    ("tiny-parallel", "q5_0", 2)])
def test_both_cache_types_reproduce_the_single_generation(converted, monkeypatch, kv, name, type_name, version):
    """fp16 caches round each key and value: a last-bit difference between a branch's key and its single
    generation's would round to another half, so the branches must sum exactly as the token does."""
    monkeypatch.setenv("NEOX_WRITER_KV", kv)
    model = load_model(converted(name, type_name, version), backend="fast")
    assert model.new_session().kcache.dtype == {"f16": np.uint16, "f32": np.float32}[kv]
    check_branches_match_single(model, tokens_of(name)[:20], 5, tol(type_name), exact=True)


@pytest.mark.parametrize("name", MODELS)
def test_reference_backend(converted, name):
    model = load_model(converted(name, "q4_0", 2), backend="reference")
    check_branches_match_single(model, tokens_of(name)[:10], 3, 1e-4)


def test_fast_branches_match_the_reference(converted):
    path = converted("tiny-sequential", "q5_1", 2)
    prompt = tokens_of("tiny-sequential")[:16]
    got = []
    for backend in ("reference", "fast"):
        session = load_model(path, backend=backend).new_session()
        session.eval(prompt)
        branches = session.branch(3, 4)
        got.append(np.concatenate([branches.eval([5, 6, 7]), branches.eval([8, 9], seqs=[2, 0])]))
    assert rel_err(got[1], got[0]) < tol("q5_1")


_FLOAT_KERNELS_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
from engine import load_model, fast
from test_engine_branches import check_branches_match_single
assert fast.KERNELS == sys.argv[2], fast.KERNELS
prompt = list(range(3, 15))
for path in sys.argv[3:]:
    check_branches_match_single(load_model(path, backend="fast"), prompt, 5, 2e-2 if sys.argv[2] != "float" else 1e-3,
                                exact=True)
print("ok")
"""


@pytest.mark.parametrize("kernels", ["avx2", "float"])
def test_the_other_kernel_choices_on_this_machine(converted, kernels):
    """NEOX_WRITER_KERNELS lowers the choice: branches on the AVX2 integer kernels and the portable float ones."""
    from engine.fast import simd
    if simd._MODES.index(simd.MODE) < simd._MODES.index(kernels):
        pytest.skip(f"this CPU cannot run the {kernels} kernels")
    paths = [str(converted("tiny-parallel", t, v)) for t, v in (("q4_0", 2), ("q5_1", 2), ("q8_0", 0))]
    tests = Path(__file__).resolve().parent
    env = dict(os.environ, NEOX_WRITER_KERNELS=kernels, PYTHONPATH=str(tests.parent))
    done = subprocess.run([sys.executable, "-c", _FLOAT_KERNELS_SCRIPT, str(tests), kernels, *paths], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "ok"


@pytest.mark.parametrize("backend", ["fast", "reference"])
def test_adopting_a_sequence_continues_it_in_the_session(converted, backend):
    model = load_model(converted("tiny-parallel", "q8_0", 2), backend=backend)
    prompt = tokens_of("tiny-parallel")[:14]
    session = model.new_session()
    session.eval(prompt)
    branches = session.branch(3, 8)
    branches.eval([10, 11, 12])
    branches.eval([20, 21], seqs=[1, 2])
    branches.eval([30], seqs=[1])
    branches.adopt(1)
    assert session.tokens == prompt + [11, 20, 30]
    evaluated = session.evaluated
    got = session.eval([40, 41], all_logits=True)
    assert session.evaluated == evaluated + 2            # only the tokens it had not seen
    alone = model.new_session()
    want = alone.eval(prompt + [11, 20, 30, 40, 41], all_logits=True)[-2:]
    assert rel_err(got, want) < tol("q8_0")
    with pytest.raises(ValueError, match="stale"):
        branches.eval([1, 2, 3])
    with pytest.raises(ValueError, match="stale"):
        branches.adopt(0)


def test_bad_input_is_refused_with_a_clear_error(converted):
    model = load_model(converted("tiny-parallel", "q4_0", 2), backend="fast")
    session = model.new_session(24)
    session.eval(list(range(3, 13)))
    for n, max_new, match in [(0, 4, "within 1..8"), (9, 4, "within 1..8"), (2, 15, "max_new"),
                              (2, 0, "max_new"), (2.5, 4, "integer"), (True, 4, "integer")]:
        with pytest.raises(ValueError, match=match):
            session.branch(n, max_new)
    branches = session.branch(3, 2)
    with pytest.raises(ValueError, match="one token per sequence"):
        branches.eval([1, 2])
    with pytest.raises(ValueError, match="distinct"):
        branches.eval([1, 2], seqs=[0, 0])
    with pytest.raises(ValueError, match="distinct"):
        branches.eval([1], seqs=[3])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        branches.eval([1, 2, model.config.n_vocab])
    assert branches.tokens == [[], [], []]               # nothing was evaluated by the refused calls
    branches.eval([1, 2, 3])
    branches.eval([4], seqs=[0])
    with pytest.raises(ValueError, match="full"):
        branches.eval([5], seqs=[0])
    branches.eval([6], seqs=[2])                         # the others still have room
    with pytest.raises(ValueError, match="within 0..2"):
        branches.adopt(3)


def test_branch_memory_grows_with_the_tokens_evaluated(converted):
    """The branches' own cache is mapped lazily: a large max_new costs nothing until tokens fill it."""
    model = load_model(converted("tiny-parallel", "f32", 0), backend="fast")
    session = model.new_session()
    session.eval(tokens_of("tiny-parallel")[:8])
    branches = session.branch(8, 100)
    c = model.config
    # room for the own tokens only, no prefix copy ([layer, sequence, position, n_embd])
    assert branches.kb.shape == (c.n_layer, 8, 100, c.n_embd)
