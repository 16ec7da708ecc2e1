"""`quantize` to GGUF: llama.cpp's per-tensor type mixes, the data written, requantizing, bad requests."""
from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from engine.cli import main as cli_main  # noqa: E402
from engine.errors import CLIError  # noqa: E402
from engine.ggml_file import GGMLFile  # noqa: E402
from engine.gguf_constants import tensor_name_map  # noqa: E402
from engine.gguf_convert import qkv_row_order  # noqa: E402
from engine.gguf_mix import PRESETS, more_bits, preset_name, tensor_type  # noqa: E402
from engine.gguf_quantize import quantize_to_gguf  # noqa: E402
from engine.quants import quantize  # noqa: E402
from modelgen import write_random_model  # noqa: E402

HPARAMS = dict(n_vocab=96, n_ctx=64, n_embd=64, n_head=4, n_layer=2, n_rot=8, par_res=1)
PYTHIA_410M = dict(n_embd=1024, n_layer=24, n_vocab=50304)


def pythia_types(preset: str, pure: bool = False, embd=1024, n_layer=24) -> dict[str, str]:
    from engine.ggml_file import expected_tensors
    shapes = expected_tensors(50304, embd, n_layer)
    return {g: tensor_type(preset, g, shapes[h], n_layer, pure=pure) for g, h in tensor_name_map(n_layer).items()}


def test_more_bits_layers_of_a_24_layer_model():
    assert [i for i in range(24) if more_bits(i, 24)] == [0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]


def test_q4_k_m_mix_of_pythia_410m():
    types = pythia_types("q4_K_M")
    more = {0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23}
    assert types["output.weight"] == "q6_K"
    assert types["token_embd.weight"] == "q4_K"
    for i in range(24):
        assert types[f"blk.{i}.attn_qkv.weight"] == ("q6_K" if i in more else "q4_K")
        assert types[f"blk.{i}.ffn_down.weight"] == ("q6_K" if i in more else "q4_K")
        assert types[f"blk.{i}.attn_output.weight"] == "q4_K"
        assert types[f"blk.{i}.ffn_up.weight"] == "q4_K"
        assert types[f"blk.{i}.attn_norm.weight"] == types[f"blk.{i}.attn_qkv.bias"] == "f32"
    q5 = pythia_types("q5_K_M")
    assert q5["blk.3.attn_qkv.weight"] == "q5_K" and q5["blk.2.ffn_down.weight"] == "q6_K"
    assert q5["output.weight"] == "q6_K" and q5["token_embd.weight"] == "q5_K"


def test_legacy_presets_put_the_output_in_q6_k_except_q8_0():
    assert pythia_types("q4_0")["output.weight"] == "q6_K"
    assert pythia_types("q4_0")["blk.0.ffn_down.weight"] == "q4_0"
    assert set(pythia_types("q8_0").values()) == {"q8_0", "f32"}
    assert set(pythia_types("q4_0", pure=True).values()) == {"q4_0", "f32"}
    assert set(pythia_types("f16").values()) == {"f16", "f32"}


def test_tiny_widths_fall_back_as_llama_cpp_does():
    # rows of 64 values: no K-quant block fits, llama.cpp's fallbacks do
    types = pythia_types("q4_K_M", embd=64, n_layer=2)
    assert types["blk.0.attn_output.weight"] == "q5_0"       # q4_K -> q5_0
    assert types["blk.1.attn_qkv.weight"] == "q8_0"          # q6_K (last layer) -> q8_0
    assert types["output.weight"] == "q8_0"
    assert pythia_types("q5_K_S", embd=64, n_layer=2)["blk.1.ffn_up.weight"] == "q5_1"
    assert pythia_types("iq4_xs", embd=64, n_layer=2)["blk.1.ffn_up.weight"] == "iq4_nl"


def test_preset_names():
    assert preset_name("Q4_K_M") == "q4_K_M" and preset_name("q8_0") == "q8_0"
    with pytest.raises(ValueError, match="unknown quantization type 'q7_K'"):
        preset_name("q7_K")
    assert len(PRESETS) == 18


def test_f16_legacy_to_q8_0_gguf(tmp_path, capsys):
    src, out = tmp_path / "m.bin", tmp_path / "m.gguf"
    hp, _, _ = write_random_model(src, HPARAMS, ftype="f16")
    assert cli_main(["quantize", str(src), str(out), "--type", "Q8_0"]) == 0
    printed = capsys.readouterr().out
    assert "f16 -> q8_0: 10 tensors, re-encoded as q8_0; largest change" in printed
    reader = gguf.GGUFReader(out)
    assert reader.get_field("general.file_type").contents() == PRESETS["q8_0"][0]
    names = tensor_name_map(hp["n_layer"])
    perm = qkv_row_order(hp["n_embd"], hp["n_head"])
    with GGMLFile(src) as legacy:
        for t in reader.tensors:
            info = legacy.tensors[names[t.name]]
            ref = info.to_float32()
            if "attn_qkv" in t.name:
                ref = ref[perm]
            if len(info.shape) == 2:
                assert t.tensor_type.name == "Q8_0"
                assert bytes(t.data.reshape(-1)) == bytes(quantize("q8_0", 2, ref)), t.name
            else:
                assert t.tensor_type.name == "F32"
                np.testing.assert_array_equal(t.data, ref)


def test_pure_q4_0_from_legacy_and_copy_of_matching_blocks(tmp_path):
    src = tmp_path / "m.bin"
    write_random_model(src, HPARAMS, ftype="f32")
    out = tmp_path / "q4.gguf"
    report = quantize_to_gguf(src, out, "q4_0", pure=True)
    assert report.preset == "q4_0"
    reader = gguf.GGUFReader(out)
    assert {t.tensor_type.name for t in reader.tensors} == {"Q4_0", "F32"}
    # an already-q4_0 (version 2) input quantized to q4_0 is copied, not requantized
    legacy_q4 = tmp_path / "q4.bin"
    write_random_model(legacy_q4, HPARAMS, ftype="q4_0", qnt_version=2)
    again = quantize_to_gguf(legacy_q4, tmp_path / "again.gguf", "q4_0", pure=True)
    assert any(line.startswith("q4_0 -> q4_0: 10 tensors, copied") for line in again.lines())


def test_requantizing_needs_to_be_asked_for(tmp_path):
    src = tmp_path / "q4.bin"
    write_random_model(src, HPARAMS, ftype="q4_0", qnt_version=2)
    out = tmp_path / "q8.gguf"
    with pytest.raises(CLIError, match="already q4_0: quantizing it again to q8_0"):
        quantize_to_gguf(src, out, "q8_0")
    assert not out.exists() and not (tmp_path / "q8.gguf.part").exists()
    report = quantize_to_gguf(src, out, "q8_0", allow_requantize=True)
    assert any(line.startswith("q4_0 -> q8_0: 10 tensors, re-encoded") for line in report.lines())


def test_format_choice_and_errors(tmp_path, capsys):
    src = tmp_path / "m.bin"
    write_random_model(src, HPARAMS, ftype="f16")
    # the legacy path is unchanged
    assert cli_main(["quantize", str(src), str(tmp_path / "q.bin"), "--type", "q5_1"]) == 0
    with GGMLFile(tmp_path / "q.bin") as f:
        assert f.weight_type == "q5_1"
    assert cli_main(["quantize", str(src), str(tmp_path / "k.bin"), "--type", "q4_K_M"]) == 2
    assert "write a .gguf for the K-quants" in capsys.readouterr().err
    assert cli_main(["quantize", str(src), str(tmp_path / "x.bin"), "--type", "q8_0", "--format", "gguf"]) == 0
    assert (tmp_path / "x.bin").read_bytes()[:4] == b"GGUF"
    assert cli_main(["quantize", str(tmp_path / "x.bin"), str(tmp_path / "y.bin"), "--type", "q8_0",
                     "--format", "ggml"]) == 2
    assert "is a GGUF file" in capsys.readouterr().err
    assert cli_main(["quantize", str(src), str(tmp_path / "z.gguf"), "--type", "q9"]) == 2
    assert "unknown quantization type 'q9'" in capsys.readouterr().err
    assert cli_main(["quantize", str(src), str(src), "--type", "q8_0", "--format", "gguf"]) == 2
