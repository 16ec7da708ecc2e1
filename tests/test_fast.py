"""The numba fast path against the numpy reference: every weight type and quantization version.

Models are the golden fixtures converted with the project's converter and quantizer, plus random
stablelm-era files for q4_2/q4_3. Speed is not tested here (bench/ measures it); what is:
logits (batched prompt path and token by token), greedy continuations, the KV cache (truncate,
prefix reuse, context limit) and that a generation leaves the GIL to other threads.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES_DIR
from engine import load_model
from engine.commands.quantize import quantize_file
from engine.convert import convert_hf
from modelgen import write_random_model

from engine.fast.repack import layout_of

REL_TOL = 1e-3        # the float kernels and BLAS compute in float32 like the reference
# The integer kernels (token and prompt paths) quantize activations to 8 bits per block of 32, as
# ggml does; issue 3 allows 2e-2 for that (measured: 0.009-0.012 on the three fixtures, every type).
INT8_TOL = 2e-2


def tol(type_name: str) -> float:
    return INT8_TOL if layout_of(type_name) == "lanes" else REL_TOL


@pytest.fixture(autouse=True)
def float32_caches(monkeypatch):
    """The kernels against the reference at float32 precision: float32 key and value caches, not the
    default fp16 ones. fp16 caches round each key and value (2**-11 relative), which alone moves a
    random tiny model's logits by 1e-3 to 1e-2; tests/test_kv_cache.py tests those against these."""
    monkeypatch.setenv("NEOX_WRITER_KV", "f32")


TYPES = [("f32", 0), ("f16", 0)] + [(t, v) for t in ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0") for v in (0, 1, 2)]
MODELS = ["tiny-parallel", "tiny-sequential", "tiny-hd80"]


def rel_err(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(model, type, version) -> path of that fixture converted/quantized, made on first use."""
    folder = tmp_path_factory.mktemp("fast")
    made = {}

    def get(name, type_name, version):
        key = (name, type_name, version)
        if key not in made:
            f32 = folder / f"{name}-f32.bin"
            if not f32.exists():
                convert_hf(FIXTURES_DIR / name, f32, "f32")
            if type_name == "f32":
                made[key] = f32
            elif type_name == "f16":
                made[key] = folder / f"{name}-f16.bin"
                convert_hf(FIXTURES_DIR / name, made[key], "f16")
            else:
                made[key] = folder / f"{name}-{type_name}-v{version}.bin"
                quantize_file(f32, made[key], type_name, version)
        return made[key]

    return get


def tokens_of(name):
    return np.load(FIXTURES_DIR / name / "tokens.npy").tolist()


@pytest.mark.parametrize("type_name,version", TYPES)
def test_logits_match_reference_every_type(converted, type_name, version):
    path = converted("tiny-parallel", type_name, version)
    tokens = tokens_of("tiny-parallel")
    ref = load_model(path, backend="reference").logits(tokens)
    fast = load_model(path, backend="fast")
    assert fast.info()["backend"] == "fast"
    assert rel_err(fast.logits(tokens), ref) < tol(type_name)    # 40 tokens: the short-prompt path (test_short_prompt.py)
    session = fast.new_session()
    stepped = np.stack([session.eval([t]) for t in tokens])      # compiled per-token path
    assert rel_err(stepped, ref) < tol(type_name)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("type_name,version", [("f32", 0), ("q4_0", 2), ("q5_1", 1)])
def test_logits_match_reference_every_fixture(converted, name, type_name, version):
    path = converted(name, type_name, version)
    tokens = tokens_of(name)
    ref = load_model(path, backend="reference").logits(tokens)
    assert rel_err(load_model(path, backend="fast").logits(tokens), ref) < tol(type_name)


@pytest.mark.parametrize("name", MODELS)
def test_f32_matches_transformers(converted, name):
    """The golden logits of transformers itself, not only our reference."""
    golden = np.load(FIXTURES_DIR / name / "logits.npy")
    fast = load_model(converted(name, "f32", 0), backend="fast").logits(tokens_of(name))
    assert rel_err(fast, golden) < REL_TOL


@pytest.mark.parametrize("type_name,qk_layout", [("q4_2", "E3"), ("q4_3", "E1")])
def test_stablelm_era_16_value_blocks(tmp_path, type_name, qk_layout):
    path = tmp_path / f"{type_name}.bin"
    write_random_model(path, dict(n_embd=64, n_vocab=96), layout="stablelm", ftype=type_name, era=qk_layout)
    tokens = list(range(3, 30))
    ref = load_model(path, backend="reference").logits(tokens)
    fast = load_model(path, backend="fast")
    assert rel_err(fast.logits(tokens), ref) < REL_TOL
    s = fast.new_session()
    assert rel_err(np.stack([s.eval([t]) for t in tokens]), ref) < REL_TOL


def greedy(session, prompt, n):
    out = []
    logits = session.eval(prompt)
    for _ in range(n):
        out.append(int(np.argmax(logits)))
        logits = session.eval([out[-1]])
    return out


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("type_name,version", [("f16", 0), ("q4_0", 2), ("q8_0", 0)])
def test_greedy_continuations_agree(converted, name, type_name, version):
    """Where the reference's top-2 margin exceeds 0.5 at every step, 16 greedy tokens agree."""
    path = converted(name, type_name, version)
    prompt = tokens_of(name)[:20]
    ref = load_model(path, backend="reference").new_session()
    fast = load_model(path, backend="fast").new_session()
    logits_ref = ref.eval(prompt)
    logits_fast = fast.eval(prompt)
    for _ in range(16):
        top2 = np.sort(logits_ref)[-2:]
        if top2[1] - top2[0] <= 0.5:
            break          # too close to call: float rounding may pick either
        token = int(np.argmax(logits_ref))
        assert int(np.argmax(logits_fast)) == token
        logits_ref = ref.eval([token])
        logits_fast = fast.eval([token])


def test_truncate_and_prefix_reuse(converted):
    path = converted("tiny-parallel", "q5_0", 2)
    model = load_model(path, backend="fast")
    a, b, c = list(range(10, 30)), list(range(40, 50)), list(range(60, 70))
    session = model.new_session()
    session.eval(a + b)
    assert session.tokens == a + b
    session.truncate(len(a))
    assert session.tokens == a
    reused = session.eval(c, all_logits=True)
    fresh = model.new_session().eval(a + c, all_logits=True)[len(a):]
    assert rel_err(reused, fresh) < 1e-5
    # token by token after a batched prompt gives the same as all at once
    s2 = model.new_session()
    s2.eval(a)
    step = np.stack([s2.eval([t]) for t in c])
    assert rel_err(step, fresh) < (INT8_TOL if layout_of("q5_0") == "lanes" else 1e-4)


def test_context_limit(converted):
    model = load_model(converted("tiny-parallel", "q4_1", 1), backend="fast")
    session = model.new_session(8)
    session.eval(list(range(8)))
    with pytest.raises(ValueError, match="exceed the context"):
        session.eval([1])
    with pytest.raises(ValueError):
        session.eval([model.config.n_vocab])     # not a token id
    with pytest.raises(ValueError):
        model.new_session(model.config.n_ctx + 1)


def test_threads_setting(converted):
    from engine.errors import SettingsError
    path = converted("tiny-parallel", "q4_0", 1)
    tokens = tokens_of("tiny-parallel")
    one = load_model(path, backend="fast", threads=1).logits(tokens)
    two = load_model(path, backend="fast", threads=2).logits(tokens)
    assert rel_err(one, two) < 1e-5
    with pytest.raises(SettingsError):
        load_model(path, backend="fast", threads=0)


def test_generation_leaves_the_gil(tmp_path):
    """A thread ticking every 10 ms keeps ticking (no gap over 50 ms) while another generates."""
    path = tmp_path / "gil.bin"
    write_random_model(path, dict(n_embd=256, n_head=4, n_layer=4, n_vocab=4096, n_ctx=256), ftype="q4_0",
                       qnt_version=2)
    model = load_model(path, backend="fast")
    model.warm_up()                                   # compile every path first: compiling holds the GIL
    gaps, stop = [], threading.Event()

    def tick():
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = threading.Thread(target=tick)
    session = model.new_session()
    ticker.start()
    try:
        t_end = time.perf_counter() + 1.0
        greedy(session, list(range(1, 100)), 20)
        while time.perf_counter() < t_end:            # a full second of generating
            if len(session.tokens) >= 250:
                session.truncate(100)
            session.eval([int(len(session.tokens) % 4096)])
    finally:
        stop.set()
        ticker.join()
    assert len(gaps) > 20
    assert max(gaps) < 0.05 + 0.02, f"longest gap {max(gaps) * 1000:.0f} ms"     # 20 ms of scheduler slack


def test_thread_chooser_follows_the_faster_mode():
    """Generation drops to 1 thread when 2 are slower (a busy machine) and comes back when not."""
    from engine.fast.threads import ThreadChooser
    chooser = ThreadChooser(2)
    busy = {1: 0.010, 2: 0.200}              # seconds per token: barriers stalled by other programs
    used = []
    for _ in range(300):
        n = chooser.choose()
        used.append(n)
        chooser.record(n, busy[n])
    assert used[-100:].count(1) >= 98        # settled on 1 thread, probing 2 rarely
    assert chooser.interval > ThreadChooser.MIN_INTERVAL
    idle = {1: 0.010, 2: 0.006}
    for _ in range(600):
        n = chooser.choose()
        used.append(n)
        chooser.record(n, idle[n])
    assert used[-100:].count(2) >= 90        # back on 2 threads once they are faster
    # bound by memory bandwidth: 1 thread nearly as fast, the timings noisy. A probe that wins by
    # noise alone must not move generation to 1 thread.
    rng = np.random.default_rng(0)
    for _ in range(600):
        n = chooser.choose()
        used.append(n)
        chooser.record(n, (0.100 if n == 2 else 0.103) * rng.uniform(0.9, 1.1))
    assert used[-300:].count(2) >= 270
    single = ThreadChooser(1)
    assert {single.choose() for _ in range(5)} == {1}


def test_thread_chooser_probes_rarely_when_one_thread_is_clearly_slower_and_at_once_on_a_spike():
    """Bound by memory bandwidth on a quiet machine one thread is 1.65x slower: the probes space out
    (they cost 4% of the speed at one in 17 tokens); a sudden load is still noticed on the next token."""
    from engine.fast.threads import ThreadChooser
    chooser = ThreadChooser(2)
    quiet = {1: 0.0165, 2: 0.010}
    used = []
    for _ in range(1000):
        n = chooser.choose()
        used.append(n)
        chooser.record(n, quiet[n])
    assert used.count(1) <= 8 and used[-400:].count(1) <= 2
    assert chooser.interval == ThreadChooser.MAX_INTERVAL
    busy = {1: 0.020, 2: 0.400}              # other programs now hold the cores: 2 threads stall
    after = []
    for _ in range(20):
        n = chooser.choose()
        after.append(n)
        chooser.record(n, busy[n])
    assert after[:3] == [2, 1, 1] and after[3:].count(1) >= 16


@pytest.mark.parametrize("has_min", [False, True], ids=["q5_0", "q5_1"])
def test_q5_kernel_matches_dequantized_matrix(has_min):
    """The 5-bit kernel (fifth bits through per-vector tables) against a plain float matrix product.

    Every bit of every qh field is random, so each of the four table bytes is exercised.
    """
    from engine.fast.forward import products
    from engine.fast.matvec import xsum_floats
    from engine.fast.repack import TILE

    rng = np.random.default_rng(5)
    rows, cols = 2 * TILE, 96
    tiles, nb = rows // TILE, cols // 32
    qs = rng.integers(0, 256, (1, tiles, nb, 16, TILE), dtype=np.uint8)
    qh = rng.integers(0, 2 ** 32, (1, tiles, nb, TILE), dtype=np.uint32)
    d16 = rng.uniform(0.01, 0.1, (1, tiles, nb, TILE)).astype(np.float16)
    m16 = rng.uniform(-1, 1, (1, tiles, nb, TILE)).astype(np.float16)
    m = m16.view(np.uint16) if has_min else np.zeros((1, 1, 1, 1), np.uint16)
    w = (qs, d16.view(np.uint16), m, qh)
    # the matrix as floats: element j of a block is its byte's low nibble (j < 16) or high
    # nibble (j >= 16), plus 16 times bit j of qh
    nib = np.concatenate([qs & 15, qs >> 4], axis=3).astype(np.float32)         # [1, T, nb, 32, TILE]
    bits = (qh[:, :, :, None, :] >> np.arange(32, dtype=np.uint32)[None, None, None, :, None]) & 1
    q = nib + 16 * bits
    d, mins = d16.astype(np.float32)[:, :, :, None, :], m16.astype(np.float32)[:, :, :, None, :]
    vals = d * q + mins if has_min else d * (q - 16)
    dense = vals[0].transpose(0, 3, 1, 2).reshape(rows, cols)                     # [T, TILE, nb, 32]
    x = rng.standard_normal(cols).astype(np.float32)
    expected = dense.astype(np.float64) @ x.astype(np.float64)
    xsum = np.zeros(xsum_floats(cols, True), np.float32)
    out = np.zeros(rows, np.float32)
    products(1, w, 0, x.copy(), xsum, out, w, -1, x.copy(), xsum, out, np.zeros(0, np.float32))
    assert np.max(np.abs(out - expected)) < 1e-4 * np.max(np.abs(expected))


def quantize_dequantize_x(x):
    """What the integer kernels multiply by: x in 8-bit blocks of 32 (ggml's q8_0), as floats."""
    blocks = x.reshape(-1, 32).astype(np.float32)
    d = np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127.0)
    inv = np.where(d > 0, np.float32(1.0) / np.where(d > 0, d, 1), 0).astype(np.float32)
    return (np.rint(blocks * inv) * d).ravel()


@pytest.mark.skipif(layout_of("q4_0") != "lanes", reason="this CPU has no AVX2: the float kernels run")
@pytest.mark.parametrize("type_name,version", [("q4_0", 0), ("q4_0", 2), ("q4_1", 1), ("q4_1", 2), ("q5_0", 2),
                                               ("q5_1", 1), ("q5_1", 2), ("q8_0", 1), ("q8_0", 2)])
def test_integer_kernels_compute_the_dequantized_matrix_times_quantized_x(tmp_path, type_name, version):
    """The lanes kernels against numpy: every row, fp16 and fp32 scales, a row count that is no multiple of 64;
    then the prompt path's kernel (4 tokens at a time) against the token kernel."""
    from engine.fast.forward import products
    from engine.fast.gemm import gemm_lanes, quantize_rows
    from engine.fast.matvec import xsum_floats
    from engine.fast.repack import pack_matrices
    from engine.ggml_file import GGMLFile
    path = tmp_path / "m.bin"
    write_random_model(path, dict(n_embd=96, n_head=3, n_layer=1, n_rot=4, n_vocab=200), ftype=type_name,
                       qnt_version=version, seed=3)
    f = GGMLFile(path)
    for name in ("gpt_neox.layers.0.attention.query_key_value.weight", "embed_out.weight"):
        info = f.tensors[name]
        pm = pack_matrices(str(path), [info])
        assert pm.layout == "lanes"
        dense = info.to_float32().astype(np.float64)
        x = np.random.default_rng(1).standard_normal(pm.cols).astype(np.float32) * 3
        expected = dense @ quantize_dequantize_x(x).astype(np.float64)
        out = np.zeros(pm.padded_rows, np.float32)
        xs = np.zeros(xsum_floats(pm.cols, False), np.float32)
        for parts in (1, 2):
            out[:] = np.nan
            products(parts, pm.arrays, 0, x.copy(), xs, out, pm.arrays, -1, x.copy(), xs, out,
                     np.zeros(0, np.float32))
            assert np.max(np.abs(out[:pm.rows] - expected)) < 1e-5 * np.max(np.abs(expected)), name
        # the prompt path's kernel: 4 tokens at a time plus a tail, each row as the token kernel computes it
        tokens = np.random.default_rng(2).standard_normal((11, pm.cols)).astype(np.float32)
        xq = np.zeros((11, xs.size), np.float32)
        quantize_rows(tokens, 0, 11, xq)
        got = np.full((11, pm.padded_rows), np.nan, np.float32)
        gemm_lanes(*pm.arrays, 0, xq, got, 0, pm.padded_rows // 64)
        for n in range(11):
            products(1, pm.arrays, 0, tokens[n].copy(), xs, out, pm.arrays, -1, x, xs, out, np.zeros(0, np.float32))
            assert np.max(np.abs(got[n] - out)) <= 1e-6 * np.max(np.abs(out)), (name, n)


_OTHER_KERNELS_SCRIPT = """
import sys, numpy as np
from engine import fast, load_model
assert fast.KERNELS == sys.argv[1], fast.KERNELS
worst = 0.0
tokens = np.load(sys.argv[2]).tolist()
for path in sys.argv[3:]:
    ref = load_model(path, backend="reference").logits(tokens)
    model = load_model(path, backend="fast")
    batched = model.logits(tokens)
    s = model.new_session()
    stepped = np.stack([s.eval([t]) for t in tokens])
    for got in (batched, stepped):
        worst = max(worst, float(np.abs(got - ref).max() / np.abs(ref).max()))
print(worst)
"""


@pytest.mark.parametrize("kernels", ["avx2", "float"])
def test_the_other_kernel_choices_on_this_machine(converted, kernels):
    """NEOX_WRITER_KERNELS lowers the choice: the AVX2 integer kernels and the portable float ones run here too."""
    import os
    import subprocess
    import sys

    from engine.fast import simd
    if simd._MODES.index(simd.MODE) < simd._MODES.index(kernels):
        pytest.skip(f"this CPU cannot run the {kernels} kernels")
    paths = [str(converted("tiny-parallel", t, v)) for t, v in (("q4_0", 2), ("q4_1", 1), ("q5_1", 2), ("q8_0", 2),
                                                                  ("f16", 0))]
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, NEOX_WRITER_KERNELS=kernels, PYTHONPATH=str(root))
    done = subprocess.run([sys.executable, "-c", _OTHER_KERNELS_SCRIPT, kernels,
                           str(FIXTURES_DIR / "tiny-parallel" / "tokens.npy"), *paths], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.split()[-1]) < (INT8_TOL if kernels != "float" else REL_TOL)


@pytest.mark.parametrize("features,forced,expected", [
    ({"avx2": True, "fma": True, "f16c": True, "avx512vnni": True, "avx512vl": True}, None, "vnni"),
    ({"avx2": True, "fma": True, "f16c": True, "avxvnni": True}, None, "vnni"),
    ({"avx2": True, "fma": True, "f16c": True, "avx512vnni": True}, None, "avx2"),   # no 256-bit form
    ({"avx2": True, "fma": True, "f16c": True}, None, "avx2"),
    ({"avx": True, "f16c": True}, None, "float"),
    ({}, None, "float"),                                                              # an ARM Mac
    ({"avx2": True, "fma": True, "f16c": True, "avxvnni": True}, "avx2", "avx2"),
    ({"avx2": True, "fma": True, "f16c": True}, "float", "float"),
    ({"avx2": True, "fma": True, "f16c": True}, "vnni", "avx2"),                     # never above the CPU
    ({"avx2": True, "fma": True, "f16c": True}, "nonsense", "avx2"),
])
def test_kernel_choice_follows_the_cpu(features, forced, expected):
    from engine.fast.simd import _choose_mode
    assert _choose_mode(features, forced) == expected


def test_float32_erf_of_the_gelu_is_within_a_few_ulp_of_erf():
    import math

    from numba import njit

    from engine.fast.forward import erf32

    @njit
    def erf_all(x, out):
        for i in range(x.size):
            out[i] = erf32(x[i])

    x = np.concatenate([np.linspace(-12, 12, 400001), [0.0, -0.0, 1e-30, -1e-30, 3.99, 4.0, 4.01]]).astype(np.float32)
    got = np.empty_like(x)
    erf_all(x, got)
    exact = np.array([math.erf(float(v)) for v in x])
    assert np.max(np.abs(got - exact)) < 5e-7


def test_softmax_exp_is_within_a_few_ulp_of_exp_and_zero_below_its_floor():
    """forward.exp_nonpositive, the softmax's vectorisable exp(score - max), against float64 exp."""
    from numba import njit

    from engine.fast.forward import EXP_FLOOR, exp_nonpositive

    @njit
    def exp_all(x, out):
        for i in range(x.size):
            out[i] = exp_nonpositive(x[i])

    x = np.concatenate([-np.linspace(0, 90, 900001), [0.0, -0.0, -1e-30, -86.99, -87.0, -87.01, -1e4,
                                                      -np.inf]]).astype(np.float32)
    got = np.empty_like(x)
    exp_all(x, got)
    exact = np.exp(x.astype(np.float64))
    kept = x >= EXP_FLOOR
    assert np.max(np.abs(got[kept] - exact[kept]) / exact[kept]) < 5e-7
    assert np.all(got[~kept] == 0.0)
    assert got[0] == 1.0


def test_long_prompt_attention_matches_token_by_token(tmp_path):
    """A long prompt after cached tokens (the batched path's causal attention over the cache and the
    batch's own past, heads split over two workers) equals the token-by-token path."""
    path = tmp_path / "long.bin"
    write_random_model(path, dict(n_embd=64, n_head=4, n_layer=2, n_vocab=96, n_ctx=512), ftype="f32", seed=8)
    model = load_model(path, backend="fast", threads=2)
    tokens = np.random.default_rng(3).integers(0, 96, 326).tolist()
    first = 50
    batched = model.new_session()
    batched.eval(tokens[:first])
    got = batched.eval(tokens[first:], all_logits=True)
    stepped = model.new_session()
    want = np.stack([stepped.eval([t]) for t in tokens])[first:]
    assert rel_err(got, want) < 1e-4


def test_warm_up_runs_on_every_backend(tmp_path):
    """Model.warm_up is what the app calls while loading: it must work whatever the backend,
    including a context too short for the long-prompt path."""
    path = tmp_path / "warm.bin"
    for n_ctx in (1, 2, 6):
        write_random_model(path, dict(n_embd=64, n_head=2, n_layer=1, n_vocab=300, n_ctx=n_ctx), ftype="q4_0",
                           qnt_version=2)
        for backend in ("reference", "fast"):
            model = load_model(path, backend=backend)
            try:
                model.warm_up()
                assert model.new_session().eval([1]).shape == (300,)
            finally:
                model.close()


@pytest.mark.parametrize("hd,n_rot", [(8, 4), (32, 8), (80, 20)])
@pytest.mark.parametrize("n_past,n", [(0, 1), (0, 7), (3, 2), (37, 5), (64, 33)])
def test_prompt_attention_kernel_against_numpy(hd, n_rot, n_past, n):
    """forward.attend_prompt_heads (RoPE, the cache rows, causal softmax attention; a short last block
    of queries, a head width that is and is not a multiple of the 32-float vectors, positions already
    cached) against the same arithmetic in float64 numpy, one head range at a time."""
    from engine.fast.forward import attend_prompt_heads, rope_tables
    n_head, n_ctx = 3, 128
    e = n_head * hd
    rng = np.random.default_rng(hd * 1000 + n_past * 10 + n)
    qkv = rng.standard_normal((n, 3 * e)).astype(np.float32)
    kc = np.zeros((n_ctx, e), np.float32)
    vc = np.zeros((n_ctx, e), np.float32)
    kc[:n_past] = rng.standard_normal((n_past, e))
    vc[:n_past] = rng.standard_normal((n_past, e))
    cos, sin = rope_tables(n_ctx, n_rot)
    want_q = qkv.reshape(n, n_head, 3, hd)[:, :, 0].astype(np.float64).copy()
    want_k = qkv.reshape(n, n_head, 3, hd)[:, :, 1].astype(np.float64).copy()
    half = n_rot // 2
    for arr in (want_q, want_k):
        pos = np.arange(n_past, n_past + n)
        c, s = cos[pos][:, None, :], sin[pos][:, None, :]
        a, b = arr[:, :, :half].copy(), arr[:, :, half:n_rot].copy()
        arr[:, :, :half], arr[:, :, half:n_rot] = a * c - b * s, b * c + a * s
    out = np.zeros((n, e), np.float32)
    attend_prompt_heads(qkv, n, n_past, cos, sin, n_head, n_rot, kc, vc, out, 0, 2)
    attend_prompt_heads(qkv, n, n_past, cos, sin, n_head, n_rot, kc, vc, out, 2, 3)
    keys = kc[:n_past + n].reshape(-1, n_head, hd).astype(np.float64)
    values = vc[:n_past + n].reshape(-1, n_head, hd).astype(np.float64)
    np.testing.assert_allclose(keys[n_past:], want_k, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(values[n_past:], qkv.reshape(n, n_head, 3, hd)[:, :, 2])
    for i in range(n):
        seen = n_past + i + 1
        scores = np.einsum("hd,jhd->hj", want_q[i], keys[:seen]) / np.sqrt(hd)
        p = np.exp(scores - scores.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        want = np.einsum("hj,jhd->hd", p, values[:seen]).reshape(e)
        np.testing.assert_allclose(out[i], want, rtol=2e-4, atol=2e-5)
