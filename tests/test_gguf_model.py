"""GGUF files through load_model and both backends: the same logits as the legacy file of the same
weights, every supported type within 2e-2 of a float forward of the file's own weights, and the QKV
order of a file without a marker found by scoring a text (on the trained demo model)."""
from __future__ import annotations

import numpy as np
import pytest

from engine import gguf_constants as C
from engine.fast.repack import layout_of
from engine.ggml_file import GGMLFile
from engine.ggml_writer import write_ggml
from engine.model import load_model
from conftest import FIXTURES_DIR
from ggufgen import DEMO, write_demo_gguf, write_gguf
from modelgen import DEFAULT_HPARAMS, random_tensors, random_vocab

TOKENS = [1, 5, 7, 2, 9, 3, 4, 8, 60, 95, 0, 11]
TYPES = ("f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0")


def rel_err(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def weights():
    hp = dict(DEFAULT_HPARAMS, par_res=0)      # a sequential-residual model: the other kind than the demo
    return hp, random_tensors(hp, seed=7)


@pytest.mark.parametrize("backend", ["reference", "fast"])
@pytest.mark.parametrize("layout", [C.QKV_SPLIT, C.QKV_INTERLEAVED])
def test_a_gguf_f16_file_gives_the_logits_of_the_legacy_f16_file(tmp_path, weights, backend, layout):
    hp, tensors = weights
    write_ggml(tmp_path / "m.bin", hp, random_vocab(hp["n_vocab"]), tensors, ftype="f16")
    write_gguf(tmp_path / "m.gguf", hp, tensors, weight_type="f16", qkv_layout=layout)
    legacy = load_model(tmp_path / "m.bin", backend=backend)
    model = load_model(tmp_path / "m.gguf", backend=backend)
    try:
        assert rel_err(model.logits(TOKENS), legacy.logits(TOKENS)) <= 1e-3
        info = model.info()
        assert info["format"] == "GGUF v3" and info["qkv_layout"] == f"{layout} (marker)"
        assert info["weight_type"] == "f16" and info["backend"] == backend
    finally:
        legacy.close()
        model.close()


@pytest.fixture(scope="module")
def fixture_weights(tmp_path_factory):
    """name -> (hparams, float32 tensors, tokens) of a golden HF fixture converted to f32: weights of
    a trained shape, on which the integer kernels' 2e-2 bound is measured (random weights of
    modelgen's scale reach 3e-2 through the 8-bit activations, legacy files alike)."""
    from engine.convert import convert_hf
    folder = tmp_path_factory.mktemp("fixtures-f32")
    made = {}

    def get(name):
        if name not in made:
            path = folder / f"{name}.bin"
            convert_hf(FIXTURES_DIR / name, path, "f32")
            with GGMLFile(path) as f:
                tensors = {n: t.to_float32() for n, t in f.tensors.items()}
                made[name] = (dict(f.hparams), tensors, np.load(FIXTURES_DIR / name / "tokens.npy").tolist())
        return made[name]

    return get


@pytest.mark.parametrize("name,type_name", [("tiny-parallel", t) for t in TYPES]
                         + [("tiny-sequential", t) for t in ("bf16", "q4_1", "q8_0")])
def test_every_type_runs_within_2e_2_of_a_float_forward_of_its_own_weights(tmp_path, fixture_weights, name,
                                                                            type_name):
    hp, tensors, tokens = fixture_weights(name)
    path = tmp_path / f"m-{type_name}.gguf"
    write_gguf(path, hp, tensors, weight_type=type_name)
    model = load_model(path, backend="fast")
    try:
        # the oracle: the reference forward of exactly the weights the GGUF file holds
        own = {n: t.to_float32() for n, t in model.file.tensors.items()}
        write_ggml(tmp_path / "own.bin", hp, random_vocab(hp["n_vocab"]), own, ftype="f32")
        reference = load_model(tmp_path / "own.bin", backend="reference")
        expected = reference.logits(tokens)
        reference.close()
        tol = 2e-2 if layout_of(type_name) == "lanes" else 1e-3
        assert rel_err(model.logits(tokens), expected) <= tol
        # the token path and the many-continuations path as well as the batched prompt
        session = model.new_session()
        session.eval(tokens[:4])
        assert rel_err(session.eval(tokens[4:6], all_logits=True), expected[4:6]) <= tol
        branches = session.branch(2, 2)
        rows = branches.eval(tokens[6:8])
        assert rel_err(rows[0], expected[6]) <= tol
    finally:
        model.close()


def test_a_legacy_quantized_file_copied_block_for_block_into_gguf_runs_identically(tmp_path, demo_gguf):
    """The q5_1 blocks of the (version 2) legacy demo file, copied byte for byte: same logits."""
    legacy = load_model(DEMO / "demo-austen-q5_1.bin", backend="fast")
    model = load_model(demo_gguf(C.QKV_SPLIT, marker=True), backend="fast")
    try:
        tokens = list(range(10, 40))
        np.testing.assert_array_equal(model.logits(tokens), legacy.logits(tokens))
        assert model.info()["weight_type"] == "q5_1"
    finally:
        legacy.close()
        model.close()


@pytest.fixture(scope="module")
def demo_gguf(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo-gguf")
    return lambda layout, marker=False: write_demo_gguf(folder, layout, marker)


@pytest.mark.parametrize("backend", ["fast", "reference"])
@pytest.mark.parametrize("layout", [C.QKV_SPLIT, C.QKV_INTERLEAVED])
def test_the_qkv_order_of_an_unmarked_file_is_detected(demo_gguf, layout, backend):
    model = load_model(demo_gguf(layout), backend=backend)
    legacy = load_model(DEMO / "demo-austen-q5_1.bin", backend=backend)
    try:
        f = model.file
        assert f.qkv_layout == layout and f.qkv_layout_source == "detected"
        other = C.QKV_INTERLEAVED if layout == C.QKV_SPLIT else C.QKV_SPLIT
        assert f.qkv_losses[layout] < f.qkv_losses[other]
        assert model.info()["qkv_layout"].startswith(f"{layout} (detected: loss ")
        tokens = list(range(100, 120))
        assert rel_err(model.logits(tokens), legacy.logits(tokens)) <= 1e-6
    finally:
        model.close()
        legacy.close()


def test_a_random_model_without_marker_or_tokenizer_keeps_the_converters_order(tmp_path, weights):
    hp, tensors = weights
    path = tmp_path / "m.gguf"
    # no merges and no single-byte tokens: no tokenizer can spell the probe text
    write_gguf(path, hp, tensors, marker=False, tokens=[f"<{i}>" for i in range(hp["n_vocab"])],
               token_types=[1] * hp["n_vocab"])
    model = load_model(path, backend="reference")
    try:
        assert model.file.qkv_layout == C.QKV_SPLIT
        assert model.info()["qkv_layout"].startswith("split (assumed")
    finally:
        model.close()


@pytest.mark.parametrize("ftype", ["f16", "q4_0", "q5_1", "q8_0"])
def test_files_of_convert_gguf_run_with_the_logits_of_their_legacy_source(tmp_path, ftype):
    """The project's GGUF writer and reader agree: blocks kept byte for byte, QKV re-ordered and marked."""
    from engine.commands.quantize import quantize_file
    from engine.gguf_convert import convert_legacy_to_gguf
    from modelgen import converted_tiny_model
    f32 = converted_tiny_model(tmp_path)          # a tokenizer.json beside it, for the metadata
    legacy = tmp_path / f"tiny-{ftype}.bin"
    quantize_file(f32, legacy, ftype, 2)
    out = tmp_path / f"tiny-{ftype}.gguf"
    convert_legacy_to_gguf(legacy, out)
    tokens = np.load(FIXTURES_DIR / "tiny-parallel" / "tokens.npy").tolist()
    ours, theirs = load_model(out, backend="fast"), load_model(legacy, backend="fast")
    try:
        assert ours.info()["qkv_layout"] == "split (marker)"
        np.testing.assert_array_equal(ours.logits(tokens), theirs.logits(tokens))
    finally:
        ours.close()
        theirs.close()
