"""What we write, read back by our own GGUF reader: the same model as the legacy file it came from
(logits equal), the QKV marker recognised, and GGUF -> GGUF quantization equal to legacy -> GGUF."""
from __future__ import annotations

import numpy as np
import pytest

gguf_file = pytest.importorskip("engine.gguf_file")

import engine  # noqa: E402
from engine import gguf_constants as C  # noqa: E402
from engine.gguf_convert import convert_legacy_to_gguf  # noqa: E402
from engine.gguf_quantize import quantize_to_gguf  # noqa: E402
from modelgen import write_random_model  # noqa: E402

HPARAMS = dict(n_vocab=96, n_ctx=64, n_embd=64, n_head=4, n_layer=2, n_rot=8, par_res=1)
TOKENS = [3, 17, 42, 8, 95, 0, 61, 12]


@pytest.mark.parametrize("ftype, qv, layout, backend", [
    ("f32", 0, "gpt-neox", "reference"), ("f16", 0, "gpt-neox", "reference"),
    ("q4_0", 2, "gpt-neox", "fast"), ("q5_1", 2, "gpt-neox", "fast"), ("q8_0", 2, "gpt-neox", "fast"),
    ("q5_0", 0, "gpt-neox", "fast"),
])
def test_converted_file_gives_the_legacy_files_logits(tmp_path, ftype, qv, layout, backend):
    src, out = tmp_path / "m.bin", tmp_path / "m.gguf"
    write_random_model(src, HPARAMS, ftype=ftype, qnt_version=qv, layout=layout)
    assert convert_legacy_to_gguf(src, out).lossless
    with gguf_file.GGUFFile(out) as f:
        assert f.qkv_layout == C.QKV_SPLIT and f.qkv_layout_source == "marker"
    legacy = engine.load_model(src, backend=backend)
    ours = engine.load_model(out, backend=backend)
    try:
        np.testing.assert_array_equal(ours.logits(TOKENS), legacy.logits(TOKENS))
    finally:
        legacy.close()
        ours.close()


def test_old_blocks_with_fp16_scales_stay_within_the_reported_change(tmp_path):
    src, out = tmp_path / "m.bin", tmp_path / "m.gguf"
    write_random_model(src, HPARAMS, ftype="q4_0", qnt_version=1)
    report = convert_legacy_to_gguf(src, out)
    assert not report.lossless
    legacy = engine.load_model(src, backend="reference")
    ours = engine.load_model(out, backend="reference")
    try:
        a, b = legacy.logits(TOKENS), ours.logits(TOKENS)
    finally:
        legacy.close()
        ours.close()
    assert np.abs(a - b).max() <= 1e-2 * np.abs(a).max()


def test_quantizing_a_gguf_equals_quantizing_its_legacy_source(tmp_path):
    src = tmp_path / "m.bin"
    write_random_model(src, HPARAMS, ftype="f16")
    f16_gguf = tmp_path / "m-f16.gguf"
    convert_legacy_to_gguf(src, f16_gguf)
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    quantize_to_gguf(src, a, "q8_0")
    report = quantize_to_gguf(f16_gguf, b, "q8_0")
    assert report.reordered_qkv == 0          # the GGUF input's rows are already [Q|K|V]
    with gguf_file.GGUFFile(a) as fa, gguf_file.GGUFFile(b) as fb:
        for name, ta in fa.tensors.items():
            assert bytes(ta.data) == bytes(fb.tensors[name].data), name
        assert fa.vocab == fb.vocab


def test_quantizing_a_gguf_keeps_its_tokenizer_metadata(tmp_path):
    import gguf
    from modelgen import converted_tiny_model
    folder = tmp_path / "with-tokenizer"
    folder.mkdir()
    src = converted_tiny_model(folder)
    f32_gguf = tmp_path / "tiny.gguf"               # no tokenizer.json beside this one
    convert_legacy_to_gguf(src, f32_gguf)
    out = tmp_path / "tiny-q8.gguf"
    report = quantize_to_gguf(f32_gguf, out, "q8_0")
    assert any("tokenizer metadata of" in line for line in report.lines())
    a, b = gguf.GGUFReader(f32_gguf), gguf.GGUFReader(out)
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                "tokenizer.ggml.pre", "tokenizer.ggml.eos_token_id"):
        assert a.get_field(key).contents() == b.get_field(key).contents(), key
    assert len(b.get_field("tokenizer.ggml.merges").contents()) == 63
