"""Legacy ggml -> GGUF: the file read back by the `gguf` package (metadata, names, types, QKV order,
every weight), the tokenizer metadata, what the converter reports, and bad input."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from conftest import FIXTURES_DIR  # noqa: E402
from engine.cli import main as cli_main  # noqa: E402
from engine.errors import ModelFormatError  # noqa: E402
from engine.ggml_file import GGMLFile  # noqa: E402
from engine.gguf_constants import KEY_QKV_LAYOUT, QKV_SPLIT, TokenType, tensor_name_map  # noqa: E402
from engine.gguf_convert import convert_legacy_to_gguf, qkv_row_order  # noqa: E402
from engine.gguf_vocab import vocab_from_legacy, vocab_from_tokenizer_json  # noqa: E402
from engine.gguf_writer import GGUFWriter, TensorPlan, string  # noqa: E402
from modelgen import converted_tiny_model, write_random_model  # noqa: E402

HPARAMS = dict(n_vocab=96, n_ctx=64, n_embd=64, n_head=4, n_layer=2, n_rot=8, par_res=1)

# (type, qnt_version, layout, what the converter must do, GGUF type of the big matrices)
ERAS = [
    ("f32", 0, "gpt-neox", "copy", "F32"),
    ("f16", 0, "gpt-neox", "copy", "F16"),
    ("q4_0", 2, "gpt-neox", "copy", "Q4_0"),
    ("q4_1", 2, "gpt-neox", "copy", "Q4_1"),
    ("q5_0", 2, "gpt-neox", "copy", "Q5_0"),
    ("q5_1", 2, "gpt-neox", "copy", "Q5_1"),
    ("q8_0", 2, "gpt-neox", "copy", "Q8_0"),
    ("q5_1", 1, "gpt-neox", "copy", "Q5_1"),
    ("q5_0", 0, "gpt-neox", "repack", "Q5_0"),
    ("q4_0", 1, "gpt-neox", "fp16-scales", "Q4_0"),
    ("q4_1", 0, "gpt-neox", "fp16-scales", "Q4_1"),
    ("q8_0", 1, "gpt-neox", "fp16-scales", "Q8_0"),
    ("q4_0", 0, "stablelm", "fp16-scales", "Q4_0"),
    ("q4_2", 0, "stablelm", "convert", "F16"),
    ("q4_3", 0, "stablelm", "convert", "F16"),
]


def field(reader, key):
    f = reader.get_field(key)
    assert f is not None, key
    return f.contents()


def legacy_layout(array: np.ndarray, hp: dict) -> np.ndarray:
    """GGUF [Q|K|V] rows back in the legacy per-head interleaved order."""
    out = np.empty_like(array)
    out[qkv_row_order(hp["n_embd"], hp["n_head"])] = array
    return out


@pytest.mark.parametrize("ftype, qv, layout, how, gguf_type", ERAS)
def test_every_era_round_trips_through_the_gguf_package(tmp_path, ftype, qv, layout, how, gguf_type):
    src, out = tmp_path / "m.bin", tmp_path / "m.gguf"
    hp, _, _ = write_random_model(src, HPARAMS, ftype=ftype, qnt_version=qv, layout=layout)
    report = convert_legacy_to_gguf(src, out)
    assert not (tmp_path / "m.gguf.part").exists()

    reader = gguf.GGUFReader(out)
    assert field(reader, "GGUF.version") == 3
    assert field(reader, "general.architecture") == "gptneox"
    assert field(reader, "gptneox.embedding_length") == hp["n_embd"]
    assert field(reader, "gptneox.block_count") == hp["n_layer"]
    assert field(reader, "gptneox.context_length") == hp["n_ctx"]
    assert field(reader, "gptneox.feed_forward_length") == 4 * hp["n_embd"]
    assert field(reader, "gptneox.attention.head_count") == hp["n_head"]
    assert field(reader, "gptneox.rope.dimension_count") == hp["n_rot"]
    assert field(reader, "gptneox.use_parallel_residual") is True
    assert field(reader, "gptneox.attention.layer_norm_epsilon") == pytest.approx(1e-5)
    assert field(reader, KEY_QKV_LAYOUT) == QKV_SPLIT
    assert len(field(reader, "tokenizer.ggml.tokens")) == hp["n_vocab"]
    assert reader.get_field("gptneox.attention.head_count").types == [gguf.GGUFValueType.UINT32]

    names = tensor_name_map(hp["n_layer"])
    assert [t.name for t in reader.tensors] == list(names)
    tolerance = {"copy": 0, "repack": 0, "fp16-scales": 2.0 ** -10, "convert": 2.0 ** -11}[how]
    measured = 0.0
    with GGMLFile(src) as legacy:
        for t in reader.tensors:
            info = legacy.tensors[names[t.name]]
            assert tuple(int(d) for d in t.shape[::-1]) == info.shape
            want_type = gguf_type if len(info.shape) == 2 else "F32"
            assert t.tensor_type.name == want_type, t.name
            got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(info.shape)
            if "attn_qkv" in t.name:
                got = legacy_layout(got, hp)
            ref = info.to_float32()
            if len(info.shape) == 1 or how == "copy" or how == "repack":
                np.testing.assert_array_equal(got, ref, err_msg=t.name)
            else:
                assert np.abs(got - ref).max() <= tolerance * np.abs(ref).max() + 1e-7, t.name
                measured = max(measured, float(np.abs(got.astype(np.float64) - ref).max()))
            if how == "copy" and len(info.shape) == 2 and "attn_qkv" not in t.name:
                assert bytes(t.data.reshape(-1)) == bytes(info.data), t.name

    lines = report.lines()
    weights = next(line for line in lines if line.startswith(ftype))
    assert f"-> {gguf_type.lower()}: {28 if ftype == 'f32' else 10} tensors" in weights
    if how == "copy":
        assert "copied byte for byte" in weights and report.lossless
    elif how == "repack":
        assert "lossless" in weights and report.lossless
    else:
        assert "largest change of a weight" in weights and not report.lossless
        # the figure printed is the change the weights really underwent
        assert f"largest change of a weight {measured:.3g}" in weights
    assert any("re-ordered to [Q|K|V]" in line for line in lines)


def test_old_quants_can_be_widened_or_requantized(tmp_path):
    src = tmp_path / "m.bin"
    write_random_model(src, HPARAMS, ftype="q4_0", qnt_version=1)
    for choice, gguf_type in (("f16", "F16"), ("q8_0", "Q8_0")):
        out = tmp_path / f"{choice}.gguf"
        report = convert_legacy_to_gguf(src, out, old_quants=choice)
        reader = gguf.GGUFReader(out)
        qkv = next(t for t in reader.tensors if t.name == "blk.0.attn_qkv.weight")
        assert qkv.tensor_type.name == gguf_type
        assert any(line.startswith(f"q4_0 (version 1) -> {choice}") for line in report.lines())
    with pytest.raises(ValueError, match="old_quants"):
        convert_legacy_to_gguf(src, tmp_path / "x.gguf", old_quants="q2_K")


def test_qkv_rows_are_grouped_q_then_k_then_v():
    # 2 heads of 3 dims: legacy rows are [q0 k0 v0 | q1 k1 v1] per head
    perm = qkv_row_order(6, 2)
    legacy = [f"{s}{h}.{d}" for h in range(2) for s in "qkv" for d in range(3)]
    assert [legacy[i] for i in perm] == [f"{s}{h}.{d}" for s in "qkv" for h in range(2) for d in range(3)]


def test_tokenizer_json_beside_the_model_is_stored_exactly(tmp_path):
    import json
    src = converted_tiny_model(tmp_path)              # tiny.bin with tokenizer.json beside it
    out = tmp_path / "tiny.gguf"
    report = convert_legacy_to_gguf(src, out)
    tok = json.loads((tmp_path / "tokenizer.json").read_text())
    reader = gguf.GGUFReader(out)
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    merges = field(reader, "tokenizer.ggml.merges")
    for text, i in tok["model"]["vocab"].items():
        assert tokens[i] == text
    assert types[0] == TokenType.CONTROL and tokens[0] == "<|endoftext|>"
    assert all(t == TokenType.NORMAL for t in types[1:len(tok["model"]["vocab"])])
    assert merges == [" ".join(m) if isinstance(m, list) else m for m in tok["model"]["merges"]]
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert field(reader, "tokenizer.ggml.eos_token_id") == 0
    assert field(reader, "tokenizer.ggml.add_bos_token") is False
    assert "(exact)" in report.lines()[-1] or any("(exact)" in line for line in report.lines())


def test_rebuilt_vocab_merges_tokenize_like_the_rebuilt_tokenizer(tmp_path):
    """Without a tokenizer.json the GGUF tokens and merges, run as a plain BPE (HF tokenizers,
    the algorithm llama.cpp runs), give the ids our rebuilt tokenizer gives."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from engine.tokenizer import RebuiltBPETokenizer

    src = converted_tiny_model(tmp_path)
    with GGMLFile(src) as f:
        vocab = f.vocab
    built = vocab_from_legacy(vocab)
    ids = {t: i for i, t in enumerate(built.tokens) if built.token_types[i] == TokenType.NORMAL}
    bpe = Tokenizer(models.BPE(ids, [tuple(m.split(" ")) for m in built.merges]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    ours = RebuiltBPETokenizer(vocab)
    texts = ["the theory of the thing", "Hello there, she said. 12345 !!", "ünïcode and emoji \U0001F600", "a  b   c"]
    for text in texts:
        assert bpe.encode(text).ids == ours.encode(text), text
    assert built.pre == "gpt-2" and built.source.startswith("rebuilt")


def test_neox_tokenizer_gets_llama_cpps_pre_tokenizer_name(tmp_path):
    from pathlib import Path
    ref = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "gpt-neox-20b-tokenizer.json"
    ref = Path("/work/shared/reference/gpt-neox-20b-tokenizer.json") if not ref.is_file() else ref
    if not ref.is_file():
        pytest.skip("the GPT-NeoX-20B reference tokenizer is not on this machine")
    vocab = vocab_from_tokenizer_json(ref, 50304)
    assert vocab.pre == "olmo"
    assert len(vocab.tokens) == len(set(vocab.tokens)) == 50304
    assert vocab.tokens[50276] == "  " and vocab.token_types[50276] == TokenType.USER_DEFINED
    assert vocab.token_types[1] == TokenType.CONTROL
    assert vocab.tokens[50300] == "[PAD50300]" and vocab.token_types[50300] == TokenType.UNUSED
    assert len(vocab.merges) == 50009


def test_cli_prints_what_it_did(tmp_path, capsys):
    src = tmp_path / "m.bin"
    write_random_model(src, HPARAMS, ftype="q8_0", qnt_version=1)
    assert cli_main(["convert-gguf", str(src), str(tmp_path / "m.gguf")]) == 0
    out = capsys.readouterr().out
    assert "GGUF v3" in out and "q8_0 (version 1) -> q8_0: 10 tensors, quants kept" in out
    assert "f32 -> f32: 18 tensors, copied" in out


def test_bad_input_is_named_and_leaves_nothing(tmp_path, capsys):
    src = tmp_path / "m.bin"
    write_random_model(src, HPARAMS, ftype="f16")
    out = tmp_path / "m.gguf"
    convert_legacy_to_gguf(src, out)
    # a GGUF input is not a legacy file
    assert cli_main(["convert-gguf", str(out), str(tmp_path / "again.gguf")]) == 2
    assert "GGUF file" in capsys.readouterr().err
    # a truncated legacy file
    cut = tmp_path / "cut.bin"
    cut.write_bytes(src.read_bytes()[:-100])
    with pytest.raises(ModelFormatError, match="truncated"):
        convert_legacy_to_gguf(cut, tmp_path / "cut.gguf")
    assert not (tmp_path / "cut.gguf").exists() and not (tmp_path / "cut.gguf.part").exists()
    with pytest.raises(ValueError, match="different file"):
        convert_legacy_to_gguf(src, src)
    with pytest.raises(FileNotFoundError):
        convert_legacy_to_gguf(src, tmp_path / "t.gguf", tokenizer_json=tmp_path / "missing.json")
    shutil.copy(FIXTURES_DIR / "tiny-parallel" / "config.json", tmp_path / "bad.json")
    with pytest.raises(ModelFormatError, match="cannot read the tokenizer"):
        convert_legacy_to_gguf(src, tmp_path / "t.gguf", tokenizer_json=tmp_path / "bad.json")
    assert not (tmp_path / "t.gguf").exists()


def test_writer_checks_the_plan(tmp_path):
    plan = [TensorPlan("a", (2, 32), "q8_0"), TensorPlan("b", (4,), "f32")]
    w = GGUFWriter(tmp_path / "x.gguf", {"general.name": string("x")}, plan)
    w.begin("a")
    with pytest.raises(ValueError, match="more than its 68 bytes"):
        w.write(np.zeros(69, np.uint8))
    w.write(np.zeros(68, np.uint8))
    with pytest.raises(ValueError, match="out of order"):
        w.begin("c")
    w.close()
    assert not (tmp_path / "x.gguf.part").exists() and not (tmp_path / "x.gguf").exists()
    with pytest.raises(ValueError, match="whole number of q4_0 blocks"):
        TensorPlan("c", (2, 48), "q4_0").nbytes
    with GGUFWriter(tmp_path / "y.gguf", {}, plan, alignment=64) as w:
        w.begin("a")
        w.write(np.full(68, 3, np.uint8))
        w.begin("b")
        w.write(np.arange(4, dtype="<f4"))
        w.finish()
    reader = gguf.GGUFReader(tmp_path / "y.gguf")
    assert field(reader, "general.alignment") == 64
    assert reader.tensors[1].data_offset % 64 == 0
    np.testing.assert_array_equal(reader.tensors[1].data, np.arange(4, dtype=np.float32))


def test_conversion_streams_without_holding_the_model(tmp_path):
    """Peak memory of a conversion grows by about one tensor, not by the file: a 112 MiB f16 model
    converts in a child process whose resident set rises by less than a third of it."""
    import subprocess
    import sys
    src = tmp_path / "big.bin"
    write_random_model(src, dict(n_vocab=8192, n_ctx=64, n_embd=512, n_head=8, n_layer=16, n_rot=16, par_res=1),
                       ftype="f16")
    size = src.stat().st_size
    # VmHWM, not ru_maxrss: the latter keeps the forked pytest's peak across exec
    script = (
        "import sys\n"
        "from engine.gguf_convert import convert_legacy_to_gguf\n"
        "from engine.commands.bench import current_rss_mib\n"
        "before = current_rss_mib()\n"
        "convert_legacy_to_gguf(sys.argv[1], sys.argv[2])\n"
        "hwm = next(line for line in open('/proc/self/status') if line.startswith('VmHWM'))\n"
        "print(int(hwm.split()[1]) / 1024 - before)\n")
    done = subprocess.run([sys.executable, "-c", script, str(src), str(tmp_path / "big.gguf")],
                          capture_output=True, text=True, check=True)
    grew_mib = float(done.stdout.strip().splitlines()[-1])
    assert size > 100 * 2**20
    assert grew_mib < size / 2**20 / 3, f"the conversion's resident set grew by {grew_mib:.0f} MiB"
