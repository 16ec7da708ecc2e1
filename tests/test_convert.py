"""HF checkpoint -> ggml conversion against transformers' logits, config generations, and the safetensors reader."""
from __future__ import annotations

import argparse
import json
import shutil
import struct

import numpy as np
import pytest
from tokenizers import Tokenizer

import engine
from conftest import FIXTURES_DIR, fixture_models
from engine.commands import convert as convert_command
from engine.convert import convert_hf
from engine.errors import ModelFormatError
from engine.ggml_file import GGMLFile
from engine.safetensors_file import SafetensorsFile, open_safetensors

MODELS = fixture_models()


def rel_err(got, ref) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Each fixture model converted once per type: (name, ftype) -> path."""
    out = tmp_path_factory.mktemp("converted")
    cache = {}

    def get(name, ftype):
        if (name, ftype) not in cache:
            cache[name, ftype] = out / f"{name}-{ftype}.bin"
            convert_hf(FIXTURES_DIR / name, cache[name, ftype], ftype=ftype)
        return cache[name, ftype]
    return get


def test_fixture_set_covers_the_variants():
    assert {"tiny-parallel", "tiny-sequential", "tiny-hd80", "tiny-oldnames", "tiny-bin"} <= set(MODELS)


@pytest.mark.parametrize("ftype, golden, tol", [("f32", "logits.npy", 1e-4), ("f16", "logits_f16w.npy", 1e-3)])
@pytest.mark.parametrize("name", MODELS)
def test_converted_logits_match_transformers(converted, name, ftype, golden, tol):
    model = engine.load_model(converted(name, ftype), backend="reference")
    tokens = np.load(FIXTURES_DIR / name / "tokens.npy")
    ref = np.load(FIXTURES_DIR / name / golden)
    got = model.logits(tokens.tolist())
    assert got.shape == ref.shape and got.dtype == np.float32
    assert rel_err(got, ref) < tol


@pytest.mark.parametrize("name", MODELS)
def test_header_and_vocab(converted, name):
    config = json.loads((FIXTURES_DIR / name / "config.json").read_text())
    tokenizer = Tokenizer.from_file(str(FIXTURES_DIR / name / "tokenizer.json"))
    rotary_pct = config.get("rotary_pct", config.get("rope_parameters", {}).get("partial_rotary_factor"))
    with GGMLFile(converted(name, "f16")) as f:
        h = f.hparams
        assert f.layout == "gpt-neox" and h["ftype_raw"] == 1 and f.qnt_version == 0
        assert (h["n_vocab"], h["n_ctx"], h["n_embd"], h["n_head"], h["n_layer"]) == (
            config["vocab_size"], config["max_position_embeddings"], config["hidden_size"],
            config["num_attention_heads"], config["num_hidden_layers"])
        assert h["n_rot"] == int(rotary_pct * config["hidden_size"] // config["num_attention_heads"])
        assert h["par_res"] == int(config.get("use_parallel_residual", True))
        assert len(f.vocab) == config["vocab_size"]
        n_tok = tokenizer.get_vocab_size()
        assert f.vocab[0] == b"<|endoftext|>"
        for i in range(n_tok):
            assert f.vocab[i] == tokenizer.decode([i], skip_special_tokens=False).encode("utf-8")
        assert all(s == b"" for s in f.vocab[n_tok:])
        assert len(f.tensors) == 12 * config["num_hidden_layers"] + 4


def test_known_header_values(converted):
    """Values worked out by hand: head size 80 -> n_rot 20; int(0.3 * 16) = 4; padded vocab 352."""
    with GGMLFile(converted("tiny-hd80", "f32")) as f:
        assert f.hparams["n_rot"] == 20 and f.hparams["ftype_raw"] == 0
    with GGMLFile(converted("tiny-bin", "f32")) as f:
        assert f.hparams["n_rot"] == 4 and f.hparams["n_vocab"] == 352
    with GGMLFile(converted("tiny-sequential", "f32")) as f:
        assert f.hparams["par_res"] == 0


def test_f16_file_stores_rounded_matrices_and_f32_norms(converted):
    weights = SafetensorsFile(FIXTURES_DIR / "tiny-parallel" / "model.safetensors")
    with GGMLFile(converted("tiny-parallel", "f16")) as f:
        for name, t in f.tensors.items():
            source = weights.array("lm_head.weight" if name == "embed_out.weight" else name)
            if name.endswith(".weight") and len(t.shape) == 2:
                assert t.type == "f16", name
                expected = source.astype(np.float16).astype(np.float32)
            else:
                assert t.type == "f32", name
                expected = source
            np.testing.assert_array_equal(t.to_float32().reshape(t.shape), expected, err_msg=name)


@pytest.mark.parametrize("ftype", ["f32", "f16"])
def test_both_naming_generations_give_identical_files(converted, ftype):
    # tiny-oldnames: embed_out + rotary_pct/rotary_emb_base + no use_parallel_residual + buffers;
    # tiny-parallel: lm_head + rope_parameters. Same weights.
    assert converted("tiny-oldnames", ftype).read_bytes() == converted("tiny-parallel", ftype).read_bytes()


# --- config handling on edited copies of a fixture ------------------------------------------

@pytest.fixture
def hf_copy(tmp_path):
    """A writable copy of a fixture folder and a helper to edit its config.json."""
    def make(name="tiny-oldnames", **changes):
        folder = tmp_path / name
        shutil.copytree(FIXTURES_DIR / name, folder)
        config = json.loads((folder / "config.json").read_text())
        for key, value in changes.items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value
        (folder / "config.json").write_text(json.dumps(config))
        return folder
    return make


@pytest.mark.parametrize("changes, message", [
    (dict(rotary_emb_base=20000), "rotary base 20000 is not 10000"),
    (dict(hidden_act="gelu_new"), "hidden_act 'gelu_new'"),
    (dict(layer_norm_eps=1e-6), "layer_norm_eps"),
    (dict(model_type="llama"), "model_type 'llama'"),
    (dict(hidden_size=None), "missing field 'hidden_size'"),
    (dict(num_attention_heads=5), "not a multiple of num_attention_heads 5"),
    (dict(vocab_size=999), r"shape \[320, 64\], config.json implies \[999, 64\]"),
    (dict(num_hidden_layers=3), "gpt_neox.layers.2.input_layernorm.weight' is missing"),
    (dict(intermediate_size=100), "intermediate_size 100"),
])
def test_config_problems_are_named(hf_copy, tmp_path, changes, message):
    with pytest.raises(ModelFormatError, match=message):
        convert_hf(hf_copy(**changes), tmp_path / "out.bin", "f32")
    assert not (tmp_path / "out.bin").exists()


def test_new_generation_rope_theta_is_checked(hf_copy, tmp_path):
    folder = hf_copy("tiny-parallel", rope_parameters={"rope_type": "default", "rope_theta": 500000,
                                                       "partial_rotary_factor": 0.25})
    with pytest.raises(ModelFormatError, match="rotary base 500000"):
        convert_hf(folder, tmp_path / "out.bin", "f32")


def test_rotary_fraction_from_either_generation(hf_copy, tmp_path):
    new = hf_copy("tiny-parallel", rope_parameters={"rope_type": "default", "rope_theta": 10000,
                                                    "partial_rotary_factor": 0.5})
    convert_hf(new, tmp_path / "new.bin", "f32")
    old = hf_copy("tiny-oldnames", rotary_pct=0.5)
    convert_hf(old, tmp_path / "old.bin", "f32")
    for path in ("new.bin", "old.bin"):
        with GGMLFile(tmp_path / path) as f:
            assert f.hparams["n_rot"] == 8


def test_explicit_sequential_residual_and_missing_tokenizer(hf_copy, tmp_path):
    folder = hf_copy(use_parallel_residual=False)
    (folder / "tokenizer.json").unlink()
    with pytest.warns(UserWarning, match="tokenizer.json not found"):
        convert_hf(folder, tmp_path / "out.bin", "f32")
    with GGMLFile(tmp_path / "out.bin") as f:
        assert f.hparams["par_res"] == 0
        assert f.vocab == [b""] * 320


def write_safetensors(path, tensors: dict, header_extra=None):
    """A .safetensors file by hand: {name: array} (float32/float16, or ("BF16", uint16 array))."""
    header, blobs, offset = {}, [], 0
    for name, value in tensors.items():
        dtype, array = value if isinstance(value, tuple) else (
            {"float32": "F32", "float16": "F16", "bool": "BOOL"}[value.dtype.name], value)
        raw = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header.update(header_extra or {})
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return path


def test_tied_head_uses_embed_in(hf_copy, tmp_path):
    folder = hf_copy("tiny-parallel", tie_word_embeddings=True)
    st = SafetensorsFile(folder / "model.safetensors")
    kept = {n: np.array(st.array(n)) for n in st.names() if n != "lm_head.weight"}
    del st
    write_safetensors(folder / "model.safetensors", kept)
    convert_hf(folder, tmp_path / "out.bin", "f32")
    with GGMLFile(tmp_path / "out.bin") as f:
        head = f.tensors["embed_out.weight"].to_float32()
        np.testing.assert_array_equal(head, f.tensors["gpt_neox.embed_in.weight"].to_float32())


def test_missing_head_and_unknown_tensor(hf_copy, tmp_path):
    folder = hf_copy("tiny-parallel")
    st = SafetensorsFile(folder / "model.safetensors")
    head = np.array(st.array("lm_head.weight"))     # copy before the mmap'd file is rewritten
    kept = {n: np.array(st.array(n)) for n in st.names() if n != "lm_head.weight"}
    del st
    write_safetensors(folder / "model.safetensors", kept)
    with pytest.raises(ModelFormatError, match="embed_out.weight' is missing .*tie_word_embeddings"):
        convert_hf(folder, tmp_path / "out.bin", "f32")
    kept["lm_head.weight"] = head
    kept["gpt_neox.layers.0.attention.extra_scale"] = np.ones(3, np.float32)
    write_safetensors(folder / "model.safetensors", kept)
    with pytest.raises(ModelFormatError, match="unexpected tensors .*extra_scale"):
        convert_hf(folder, tmp_path / "out.bin", "f32")


def test_no_weights_and_no_config(tmp_path):
    with pytest.raises(ModelFormatError, match="config.json not found"):
        convert_hf(tmp_path, tmp_path / "out.bin", "f32")
    shutil.copy(FIXTURES_DIR / "tiny-parallel" / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelFormatError, match="no weights found"):
        convert_hf(tmp_path, tmp_path / "out.bin", "f32")


def test_cli_subcommand(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    convert_command.register(parser.add_subparsers())
    args = parser.parse_args(["convert", str(FIXTURES_DIR / "tiny-bin"), str(tmp_path / "m.bin"), "--type", "f32"])
    assert args.func(args) == 0
    assert "n_rot 4" in capsys.readouterr().out
    with GGMLFile(tmp_path / "m.bin") as f:
        assert f.hparams["ftype_raw"] == 0


# --- the safetensors reader ----------------------------------------------------------------

def test_safetensors_dtypes(tmp_path):
    bf16 = np.array([1.5, -2.25, 3.0e38, 1e-3], np.float32)
    path = write_safetensors(tmp_path / "m.safetensors", {
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "f16": np.array([0.5, -1, 65504], np.float16),
        "bf16": ("BF16", (bf16.view(np.uint32) >> 16).astype(np.uint16)),
        "mask": np.ones((2, 2), bool),
    }, {"__metadata__": {"format": "pt"}})
    f = SafetensorsFile(path)
    assert f.metadata == {"format": "pt"} and f.names() == ["f32", "f16", "bf16", "mask"]
    np.testing.assert_array_equal(f.array("f32"), np.arange(6).reshape(2, 3))
    assert f.array("f16").dtype == np.float16 and f.array("f16")[2] == 65504
    got = f.array("bf16")
    assert got.dtype == np.float32 and got[0] == 1.5 and got[1] == -2.25
    np.testing.assert_array_equal(got, (bf16.view(np.uint32) & 0xFFFF0000).view(np.float32))
    with pytest.raises(ModelFormatError, match="dtype BOOL"):
        f.array("mask")


def test_safetensors_malformed(tmp_path):
    good = write_safetensors(tmp_path / "good.safetensors", {"w": np.zeros((4, 4), np.float32)}).read_bytes()
    n = struct.unpack("<Q", good[:8])[0]
    cases = {
        "short": (good[:5], "too short"),
        "hugelen": (struct.pack("<Q", 1 << 40) + good[8:], "runs past the end"),
        "truncated": (good[:-1], r"fall outside the 63-byte data section"),
        "badjson": (good[:8] + b"\xff" + good[9:], "not valid UTF-8 JSON"),
    }
    header = json.loads(good[8:8 + n])
    for key, entry, message in [("baddtype", {"dtype": "Q4"}, "unknown dtype 'Q4'"),
                                ("badshape", {"shape": [4, -4]}, r"shape \[4, -4\] is not a list of non-negative integers"),
                                ("badsize", {"shape": [4, 5]}, "64 data bytes but shape .* needs 80"),
                                ("badoffsets", {"data_offsets": [8, 4]}, r"data_offsets \[8, 4\] fall outside")]:
        text = json.dumps({"w": {**header["w"], **entry}}).encode()
        cases[key] = (struct.pack("<Q", len(text)) + text + good[8 + n:], "tensor 'w': " + message)
    for key, (data, message) in cases.items():
        path = tmp_path / f"{key}.safetensors"
        path.write_bytes(data)
        with pytest.raises(ModelFormatError, match=message) as err:
            SafetensorsFile(path)
        assert str(path) in str(err.value), key


def test_sharded_safetensors(tmp_path):
    write_safetensors(tmp_path / "a.safetensors", {"x": np.ones(2, np.float32)})
    write_safetensors(tmp_path / "b.safetensors", {"y": np.full(3, 2, np.float16)})
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"x": "a.safetensors", "y": "b.safetensors"}}))
    f = open_safetensors(index)
    assert f.names() == ["x", "y"] and f.array("y").tolist() == [2, 2, 2]
    index.write_text(json.dumps({"weight_map": {"x": "../a.safetensors"}}))
    with pytest.raises(ModelFormatError, match="invalid shard name"):
        open_safetensors(index)
    index.write_text(json.dumps({"weight_map": {"z": "a.safetensors"}}))
    with pytest.raises(ModelFormatError, match="lacks it"):
        open_safetensors(index)


# --- streaming: quantized output, cancel, crash, resume ----------------------------------------

def test_streamed_quantized_output_equals_quantize_of_the_f32_file(converted, tmp_path):
    from engine.commands.quantize import quantize_file
    convert_hf(FIXTURES_DIR / "tiny-parallel", tmp_path / "direct.bin", "q5_1")
    quantize_file(converted("tiny-parallel", "f32"), tmp_path / "twostep.bin", "q5_1")
    assert (tmp_path / "direct.bin").read_bytes() == (tmp_path / "twostep.bin").read_bytes()


def test_cancel_then_crash_then_resume_gives_the_same_file(tmp_path):
    from engine.convert import ConversionCancelled, ConversionControl, partial_paths
    src = FIXTURES_DIR / "tiny-sequential"
    convert_hf(src, tmp_path / "whole.bin", "q8_0")
    out = tmp_path / "out.bin"
    part, journal = partial_paths(out)
    control = ConversionControl()

    def cancel_at(n):
        def on_progress(p):
            if p.tensors_done >= n:
                control.cancel()
        return on_progress
    with pytest.raises(ConversionCancelled):
        convert_hf(src, out, "q8_0", control=control, on_progress=cancel_at(5))
    done = json.loads(journal.read_text())
    assert done["tensors_done"] >= 5 and part.stat().st_size >= done["offset"] and not out.exists()
    with open(part, "ab") as f:                    # a crash in the middle of the next tensor
        f.write(b"\x00garbage" * 100)
    seen = []
    convert_hf(src, out, "q8_0", on_progress=seen.append)
    assert seen[0].resumed_at > 0 and seen[0].tensors_done == done["tensors_done"]
    assert out.read_bytes() == (tmp_path / "whole.bin").read_bytes()
    assert not part.exists() and not journal.exists()


def test_a_journal_of_other_inputs_is_not_resumed(tmp_path):
    from engine.convert import ConversionCancelled, ConversionControl, partial_paths
    src = FIXTURES_DIR / "tiny-parallel"
    out = tmp_path / "out.bin"
    control = ConversionControl()
    control.cancel()
    with pytest.raises(ConversionCancelled):
        convert_hf(src, out, "f16", control=control, source_id="commit-a")
    part, journal = partial_paths(out)
    journal.write_text(json.dumps(dict(json.loads(journal.read_text()), tensors_done=3)))
    seen = []
    convert_hf(src, out, "f16", source_id="commit-b", on_progress=seen.append)     # other inputs: from scratch
    assert seen[0].resumed_at == 0
    convert_hf(src, tmp_path / "ref.bin", "f16")
    assert out.read_bytes() == (tmp_path / "ref.bin").read_bytes()
