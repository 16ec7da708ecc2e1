"""The fast path on K-quant and IQ4 matrices of GGUF files against the numpy reference (which
dequantizes them exactly): the rewritten blocks (kquant_repack.py), the token kernel, the prompt
path, the rows of a batched generation, and matrices whose layers mix types (a "q4_K_M" file's
attn_qkv and ffn_down)."""
from __future__ import annotations

import numpy as np
import pytest

from engine import load_model
from engine.fast.kquant_repack import K_NATIVE, STAND_IN, convert_rows, stand_in
from engine.fast.repack import layout_of, pack_matrices
from engine.kquants import BLOCK_SIZES, K_TYPES
from engine.quants import block_format, dequantize, quantize
from kquant_model import kquant_gguf

# 8-bit activations per block of 32 (the integer kernels) as for the legacy types; the float
# kernels (no AVX2) compute in float32, and the q8_0 re-quantization of q2_K/q3_K/q6_K adds at
# most 1/254 of a block's largest weight
INT8_TOL = 2e-2
TOKENS = [5, 17, 3, 99, 42, 7, 64, 1, 88, 23, 11, 70]


def rel_err(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def gaussian(n, seed=0):
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32) * np.float32(0.05)


@pytest.mark.parametrize("type_name", K_TYPES)
def test_rewritten_blocks_hold_the_same_weights(type_name):
    """The stand-in blocks dequantize to the K-quant's values: exactly for iq4_nl, within fp16
    rounding of the sub-block scales for q4_K, q5_K, iq4_xs, within q8_0's rounding for the rest."""
    qk = BLOCK_SIZES[type_name][0]
    rows, cols = 4, 512
    x = gaussian(rows * cols, seed=K_TYPES.index(type_name))
    raw = quantize(type_name, 2, x).reshape(rows, -1)
    target = (STAND_IN[type_name], 2)       # what a CPU without the integer kernels runs
    assert stand_in([(type_name, 2)]) == ((type_name, 2) if type_name in K_NATIVE else target)
    out = convert_rows(type_name, 2, raw, target)
    assert out.shape == (rows, cols // 32 * block_format(target[0], 2).nbytes)
    want = dequantize(type_name, 2, raw.reshape(-1), rows * cols)
    got = dequantize(target[0], 2, out.reshape(-1), rows * cols)
    scale = np.abs(want).reshape(-1, 32).max(axis=1).repeat(32)
    if type_name == "iq4_nl":
        assert np.array_equal(got, want)
    elif type_name in ("q4_K", "q5_K", "iq4_xs"):
        assert np.all(np.abs(got - want) <= scale * 2.0 ** -10 + 1e-9)
    else:
        # d/2, plus 127 times the fp16 rounding of q8_0's d
        assert np.all(np.abs(got - want) <= scale / 254 * 1.15 + 1e-9)
    assert qk in (32, 256)


def test_layers_of_mixed_types_share_one_kernel_type():
    assert stand_in([("q4_K", 2), ("q4_K", 2)]) == (("q4_K", 2) if K_NATIVE else ("q4_1", 2))
    assert stand_in([("q4_K", 2), ("q6_K", 2)]) == ("q8_0", 2)
    assert stand_in([("q4_0", 0), ("q4_0", 0)]) == ("q4_0", 0)
    assert stand_in([("f16", 2), ("f32", 0)]) == ("f32", 0)
    assert stand_in([("f16", 2), ("q4_K", 2)]) == ("q8_0", 2)
    x = gaussian(2 * 256, seed=4)
    q4 = convert_rows("q4_K", 2, quantize("q4_K", 2, x).reshape(2, -1), ("q8_0", 2))
    want = dequantize("q4_K", 2, quantize("q4_K", 2, x), x.size)
    got = dequantize("q8_0", 2, q4.reshape(-1), x.size)
    assert np.abs(got - want).max() <= np.abs(want).max() / 254 * 1.15


def all_paths(path):
    """(reference logits, fast prompt-path logits, fast token-by-token logits, branch rows, reference rows)."""
    ref, fm = load_model(path, backend="reference"), load_model(path, backend="fast", threads=2)
    try:
        expected = ref.new_session(64).eval(TOKENS, all_logits=True)
        prompt = fm.new_session(64).eval(TOKENS, all_logits=True)
        session = fm.new_session(64)
        stepped = np.stack([session.eval([t]) for t in TOKENS])
        # three continuations of the first 8 tokens in one pass (gemm.matmat), against the reference's
        fast_s, ref_s = fm.new_session(64), ref.new_session(64)
        fast_s.eval(TOKENS[:8])
        ref_s.eval(TOKENS[:8])
        rows = fast_s.branch(3, 4).eval([9, 30, 2])
        ref_rows = ref_s.branch(3, 4).eval([9, 30, 2])
    finally:
        ref.close()
        fm.close()
    return expected, prompt, stepped, rows, ref_rows


@pytest.mark.parametrize("type_name", K_TYPES)
def test_every_path_matches_the_reference(tmp_path, type_name):
    path = kquant_gguf(tmp_path, lambda name: type_name, seed=K_TYPES.index(type_name))
    expected, prompt, stepped, rows, ref_rows = all_paths(path)
    assert rel_err(prompt, expected) < INT8_TOL
    assert rel_err(stepped, expected) < INT8_TOL
    assert rel_err(rows, ref_rows) < INT8_TOL
    assert layout_of(STAND_IN[type_name]) in ("lanes", "tiles")


def q4_k_m(name: str) -> str:
    """llama.cpp's Q4_K_M choice for GPT-NeoX tensors: q5_K for attn_qkv, q6_K for the head and
    for ffn_down in the first layer of two (its use_more_bits), q4_K for the rest."""
    if name == "embed_out.weight":
        return "q6_K"
    if "query_key_value" in name:
        return "q5_K"
    if "dense_4h_to_h" in name and ".layers.0." in name:
        return "q6_K"
    return "q4_K"


def test_a_q4_k_m_mix_matches_the_reference(tmp_path):
    path = kquant_gguf(tmp_path, q4_k_m, seed=9)
    model = load_model(path, backend="reference")
    tensors = model.file.tensors
    assert tensors["gpt_neox.layers.0.mlp.dense_4h_to_h.weight"].type == "q6_K"
    assert tensors["gpt_neox.layers.1.mlp.dense_4h_to_h.weight"].type == "q4_K"
    down = pack_matrices(model.file.path, [tensors[f"gpt_neox.layers.{i}.mlp.dense_4h_to_h.weight"] for i in range(2)])
    model.close()
    if K_NATIVE:       # each layer in its own type: layer 0 the first of the q6_K ones, layer 1 the first q4_K
        assert down.type == "q6_K+q4_K" and down.select.tolist() == [0, -1]
        assert down.for_layer(1) == (down.second.arrays, 0)
        assert down.nbytes < 1.04 * sum(tensors[f"gpt_neox.layers.{i}.mlp.dense_4h_to_h.weight"].nbytes
                                        for i in range(2))
    else:
        assert down.type == "q8_0"
    expected, prompt, stepped, rows, ref_rows = all_paths(path)
    assert rel_err(prompt, expected) < INT8_TOL
    assert rel_err(stepped, expected) < INT8_TOL
    assert rel_err(rows, ref_rows) < INT8_TOL


@pytest.mark.skipif(layout_of("q8_0") != "lanes", reason="this CPU has no AVX2: the float kernels run")
@pytest.mark.parametrize("type_name", K_TYPES)
def test_token_and_prompt_kernels_on_a_k_quant_matrix(tmp_path, type_name):
    """The packed matrix times 8-bit x equals the matrix its rewritten blocks hold times x rounded
    to 8 bits per block of 32 (both kernels), and that matrix is the K-quant's within its rewrite."""
    from engine.fast.forward import products
    from engine.fast.gemm import gemm_lanes, quantize_rows
    from engine.fast.matvec import xsum_floats
    model = load_model(kquant_gguf(tmp_path, lambda name: type_name, seed=2), backend="reference")
    info = model.file.tensors["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"]
    pm = pack_matrices(model.file.path, [info])
    raw = np.asarray(info.data).reshape(info.shape[0], -1)
    held = dequantize(pm.type, 2, convert_rows(type_name, 2, raw, (pm.type, 2)).reshape(-1), info.n_values)
    held = held.reshape(info.shape).astype(np.float64)
    assert rel_err(held, info.to_float32()) < 1e-2
    x = np.random.default_rng(1).standard_normal(pm.cols).astype(np.float32) * 3
    blocks = x.reshape(-1, 32)
    dx = np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)
    x8 = (np.rint(blocks / dx) * dx).ravel().astype(np.float64)
    expected = held @ x8
    out = np.full(pm.padded_rows, np.nan, np.float32)
    xs = np.zeros(xsum_floats(pm.cols, False), np.float32)
    products(1, pm.arrays, 0, x.copy(), xs, out, pm.arrays, -1, x.copy(), xs, out, np.zeros(0, np.float32))
    assert np.max(np.abs(out[:pm.rows] - expected)) < 1e-5 * np.max(np.abs(expected))
    tokens = np.stack([x, -x, 2 * x, x, x])
    xq = np.zeros((5, xs.size), np.float32)
    quantize_rows(tokens, 0, 5, xq)
    got = np.full((5, pm.padded_rows), np.nan, np.float32)
    gemm_lanes(*pm.arrays, 0, xq, got, 0, pm.padded_rows // 64)
    for n, scale in enumerate((1, -1, 2, 1, 1)):
        assert np.max(np.abs(got[n, :pm.rows] - scale * expected)) < 2e-5 * np.max(np.abs(expected))
    model.close()


# bits a weight in the kernels' layouts where the integer kernels run each type as it is (the file's
# own in parentheses): the 6-bit scales and mins of q4_K/q5_K, and q2_K's 4-bit ones, take a byte each,
# and q3_K's and q2_K's super-block scales are float32 (d / 16: the kernels widen their quants to 16 u)
NATIVE_BITS = {"q2_K": 3.25, "q3_K": 3.625, "q4_K": 4.625, "q5_K": 5.625, "q6_K": 6.5625,   # 2.625 3.4375 4.5 5.5
               "iq4_nl": 4.5, "iq4_xs": 4.3125}                                             # 6.5625 4.5 4.25


@pytest.mark.skipif(not K_NATIVE, reason="this CPU has no AVX2: the float kernels run")
@pytest.mark.parametrize("type_name", K_TYPES)
def test_the_native_layouts_hold_about_the_files_bits(tmp_path, type_name):
    """No K-quant is widened at load where the integer kernels are: q2_K and q3_K took q8_0's 8.5 bits a
    weight before they had kernels of their own."""
    model = load_model(kquant_gguf(tmp_path, lambda name: type_name, seed=5), backend="reference")
    info = model.file.tensors["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"]
    pm = pack_matrices(model.file.path, [info])
    model.close()
    assert pm.type == type_name
    assert pm.nbytes * 8 / info.n_values <= NATIVE_BITS[type_name] * 1.01 + 0.001
    assert info.nbytes * 8 / info.n_values <= NATIVE_BITS[type_name]


_AVX2_SCRIPT = """
import sys
from engine import fast
from test_kquant_fast import all_paths, rel_err
assert fast.KERNELS == "avx2", fast.KERNELS
worst = 0.0
for path in sys.argv[1:]:
    expected, prompt, stepped, rows, ref_rows = all_paths(path)
    worst = max(worst, rel_err(prompt, expected), rel_err(stepped, expected), rel_err(rows, ref_rows))
print(worst)
"""


def test_the_native_k_quant_kernels_on_avx2(tmp_path):
    """q4_K, q5_K, q6_K, iq4_nl and iq4_xs on the 256-bit kernels (NEOX_WRITER_KERNELS=avx2: vpmaddubsw, and the
    batched rows through ``gemm`` per tile, not the 512-bit rows kernel): every path as with VNNI."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from engine.fast import simd
    if simd._MODES.index(simd.MODE) < simd._MODES.index("avx2"):
        pytest.skip("this CPU cannot run the avx2 kernels")
    paths = []
    for t in K_NATIVE:
        (tmp_path / t).mkdir()
        paths.append(str(kquant_gguf(tmp_path / t, lambda name, t=t: t, seed=3)))
    tests = Path(__file__).resolve().parent
    env = dict(os.environ, NEOX_WRITER_KERNELS="avx2", PYTHONPATH=os.pathsep.join([str(tests.parent), str(tests)]))
    done = subprocess.run([sys.executable, "-c", _AVX2_SCRIPT, *paths], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.split()[-1]) < INT8_TOL
