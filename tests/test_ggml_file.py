"""The reader on every layout and era, and the writer that makes those files."""
import os
import subprocess
import sys

import numpy as np
import pytest

import engine
from engine.ggml_file import GGMLFile
from engine.ggml_writer import write_ggml
from modelgen import random_tensors, random_vocab, DEFAULT_HPARAMS

# (layout, weight type, quantization version, era) of every variant published in 2023 (spec §0)
VARIANTS = [
    ("gpt-neox", "f32", 0, None), ("gpt-neox", "f16", 0, None),
    ("stablelm", "f32", 0, None), ("stablelm", "f16", 0, None),
    ("stablelm", "q4_3", 0, "E1"), ("stablelm", "q4_2", 0, "E1"), ("stablelm", "q4_0", 0, "E1"),
    ("stablelm", "q4_2", 0, "E3"), ("stablelm", "q4_0", 0, "E3"), ("stablelm", "q4_1", 0, "E3"),
    ("stablelm", "q5_0", 0, "E3"), ("stablelm", "q5_1", 0, "E3"), ("stablelm", "q8_0", 0, "E3"),
    ("gpt-neox", "q4_0", 0, None), ("gpt-neox", "q5_1", 0, None),
] + [("gpt-neox", t, v, None) for t in ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0") for v in (1, 2)]

HP = dict(DEFAULT_HPARAMS)
TOKENS = [5, 17, 3, 90, 44, 44, 0, 63, 12, 7, 81, 2]


def variant_id(v):
    return "-".join(str(x) for x in v if x is not None)


@pytest.fixture(scope="module")
def weights():
    return random_tensors(HP, seed=11), random_vocab(HP["n_vocab"])


def rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_every_variant_loads_and_matches_a_forward_on_its_dequantized_weights(tmp_path, weights, variant):
    layout, wtype, version, era = variant
    tensors, vocab = weights
    path = tmp_path / "model.bin"
    write_ggml(path, HP, vocab, tensors, layout=layout, ftype=wtype, qnt_version=version, era=era)
    model = engine.load_model(path, backend="reference")
    info = model.info()
    assert info["layout"] == layout and info["weight_type"] == wtype and info["qnt_version"] == version
    assert (info["n_vocab"], info["n_embd"], info["n_head"], info["n_layer"], info["n_rot"]) == (96, 64, 4, 2, 4)
    assert info["parallel_residual"] is True and info["file_size"] == path.stat().st_size
    assert model.vocab == vocab
    # the same weights, dequantized, in an f32 gpt-neox file
    deq = {name: t.to_float32() for name, t in model.file.tensors.items()}
    f32_path = tmp_path / "dequantized.bin"
    write_ggml(f32_path, HP, vocab, deq, ftype="f32")
    expected = engine.load_model(f32_path, backend="reference").logits(TOKENS)
    assert rel_err(model.logits(TOKENS), expected) < 1e-4


@pytest.mark.parametrize("wtype", ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "f16"])
def test_stablelm_and_gpt_neox_layouts_of_the_same_blocks_give_identical_logits(tmp_path, weights, wtype):
    tensors, vocab = weights
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    write_ggml(a, HP, vocab, tensors, layout="stablelm", ftype=wtype, era="E3")
    write_ggml(b, HP, vocab, tensors, layout="gpt-neox", ftype=wtype, qnt_version=0)
    la = engine.load_model(a, backend="reference").logits(TOKENS)
    lb = engine.load_model(b, backend="reference").logits(TOKENS)
    assert np.array_equal(la, lb)


def test_q4_2_tensor_codes_of_both_eras_mean_the_same(tmp_path, weights):
    tensors, vocab = weights
    write_ggml(tmp_path / "e1.bin", HP, vocab, tensors, layout="stablelm", ftype="q4_2", era="E1")
    write_ggml(tmp_path / "e3.bin", HP, vocab, tensors, layout="stablelm", ftype="q4_2", era="E3")
    e1, e3 = GGMLFile(tmp_path / "e1.bin"), GGMLFile(tmp_path / "e3.bin")
    name = "gpt_neox.layers.0.mlp.dense_h_to_4h.weight"
    assert e1.tensors[name].type == e3.tensors[name].type == "q4_2"
    assert np.array_equal(e1.tensors[name].data, e3.tensors[name].data)


def test_code_6_is_q4_3_in_an_e1_file_and_q5_0_in_an_e3_file(tmp_path, weights):
    tensors, vocab = weights
    write_ggml(tmp_path / "q43.bin", HP, vocab, tensors, layout="stablelm", ftype="q4_3", era="E1")
    write_ggml(tmp_path / "q50.bin", HP, vocab, tensors, layout="stablelm", ftype="q5_0", era="E3")
    raw43 = (tmp_path / "q43.bin").read_bytes()
    raw50 = (tmp_path / "q50.bin").read_bytes()
    name = b"gpt_neox.layers.0.attention.dense.weight"
    for raw in (raw43, raw50):      # the record's type field, just before ne0, ne1 and the name
        at = raw.index(name) - 8 - 4
        assert int.from_bytes(raw[at:at + 4], "little") == 6
    assert GGMLFile(tmp_path / "q43.bin").weight_type == "q4_3"
    assert GGMLFile(tmp_path / "q50.bin").weight_type == "q5_0"


def test_header_collision_stablelm_file_whose_first_token_length_is_a_valid_ftype(tmp_path, weights):
    """stablelm f32: h[6] = 0 looks like par_res and token 0 '<0>' has length 3 = a valid ftype."""
    tensors, vocab = weights
    assert len(vocab[0]) == 3
    path = tmp_path / "m.bin"
    write_ggml(path, HP, vocab, tensors, layout="stablelm", ftype="f32")
    f = GGMLFile(path)
    assert f.layout == "stablelm" and f.hparams["ftype_raw"] == 0


def test_head_size_80_with_n_rot_20_and_sequential_residual(tmp_path):
    hp = dict(HP, n_embd=160, n_head=2, n_rot=20, par_res=0)
    tensors, vocab = random_tensors(hp, seed=3), random_vocab(hp["n_vocab"])
    path = tmp_path / "hd80.bin"
    write_ggml(path, hp, vocab, tensors, ftype="q8_0", qnt_version=2)
    model = engine.load_model(path, backend="reference")
    assert model.config.head_dim == 80 and model.info()["parallel_residual"] is False
    # incremental evaluation through the KV cache equals the whole-sequence pass
    full = model.logits(TOKENS)
    s = model.new_session()
    parts = [s.eval(TOKENS[:5], all_logits=True), s.eval(TOKENS[5:6], all_logits=True), s.eval(TOKENS[6:], all_logits=True)]
    assert rel_err(np.concatenate(parts), full) < 1e-5


def test_session_truncate_reuses_the_cached_prefix(tmp_path, weights):
    tensors, vocab = weights
    path = tmp_path / "m.bin"
    write_ggml(path, HP, vocab, tensors, ftype="f16")
    model = engine.load_model(path, backend="reference")
    s = model.new_session(32)
    s.eval(TOKENS)
    s.truncate(6)
    assert s.tokens == TOKENS[:6]
    again = s.eval([9, 10])
    assert rel_err(again, model.logits(TOKENS[:6] + [9, 10])[-1]) < 1e-5
    with pytest.raises(ValueError, match="exceed the context"):
        s.eval(list(range(30)))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        s.eval([96])


def test_quantize_command_matches_the_quantizer(tmp_path, weights):
    from engine.commands.quantize import quantize_file
    from engine.quants import quantize
    tensors, vocab = weights
    src = tmp_path / "f16.bin"
    write_ggml(src, HP, vocab, tensors, ftype="f16")
    for version in (1, 2):
        out = tmp_path / f"q5_1-v{version}.bin"
        quantize_file(src, out, "q5_1", version)
        f = GGMLFile(out)
        assert f.hparams["ftype_raw"] == 1000 * version + 9 and f.qnt_version == version
        t = f.tensors["embed_out.weight"]
        src_values = GGMLFile(src).tensors["embed_out.weight"].to_float32()
        assert np.array_equal(t.data, quantize("q5_1", version, src_values))
        ln = "gpt_neox.layers.1.input_layernorm.bias"
        assert f.tensors[ln].type == "f32" and np.array_equal(f.tensors[ln].data, GGMLFile(src).tensors[ln].data)


@pytest.mark.skipif(not hasattr(__import__("mmap"), "MADV_DONTNEED") or not os.path.exists("/proc/self/status"),
                    reason="resident memory is read from /proc and released with madvise")
def test_the_weight_check_leaves_the_file_out_of_resident_memory(tmp_path):
    # The reader checks every weight through its mapping; touched file pages count as resident, so
    # without releasing them a model's whole file stayed resident beside the backend's own copy.
    path = tmp_path / "big-f16.bin"
    hp = dict(DEFAULT_HPARAMS, n_embd=768, n_head=12, n_rot=16, n_layer=4)
    write_ggml(path, hp, random_vocab(hp["n_vocab"]), random_tensors(hp), ftype=1)
    size = path.stat().st_size
    assert size > 50 * 2**20
    script = ("import sys\n"
              "from engine.ggml_file import GGMLFile\n"
              "def rss():\n"
              "    for line in open('/proc/self/status'):\n"
              "        if line.startswith('VmRSS'): return int(line.split()[1]) * 1024\n"
              "before = rss(); f = GGMLFile(sys.argv[1]); after = rss()\n"
              "print(after - before)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    grown = int(proc.stdout.strip())
    assert grown < size // 4, f"opening a {size >> 20} MiB file left {grown >> 20} MiB resident"
