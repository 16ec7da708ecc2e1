"""engine.gguf_file: GGUF v2/v3 gptneox files read, presented like legacy files, and every kind of
damage refused with a ModelFormatError that names the field or the tensor."""
from __future__ import annotations

import numpy as np
import pytest

from engine import gguf_constants as C
from engine.errors import ModelFormatError
from engine.gguf_file import GGUFFile, qkv_row_order
from engine.model_file import format_label, open_model_file
from engine.quants import block_format
from ggufgen import (
    RAW_HPARAMS, gguf, kv_entry, raw_gguf, raw_model_parts, split_qkv, str_array_kv, str_kv, tensor_record,
    u32_kv, write_gguf,
)
from modelgen import DEFAULT_HPARAMS, random_tensors

LEGACY_TYPES = ("f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0")
K_TYPES = ("q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "iq4_nl", "iq4_xs")


def kquants_registered() -> bool:
    try:
        block_format("q4_K", 2)
        return True
    except ValueError:
        return False


@pytest.fixture(scope="module")
def model_tensors():
    return random_tensors(DEFAULT_HPARAMS, seed=3)


def write_raw(tmp_path, data: bytes, name: str = "m.gguf"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def refused(path, *words):
    with pytest.raises(ModelFormatError) as info:
        GGUFFile(path).close()
    for w in words:
        assert w in str(info.value), str(info.value)
    return info.value


# -- what a good file looks like ------------------------------------------------------------------

@pytest.mark.parametrize("version", [2, 3])
def test_a_file_is_presented_like_a_legacy_one(tmp_path, model_tensors, version):
    path = tmp_path / "m.gguf"
    write_gguf(path, DEFAULT_HPARAMS, model_tensors, weight_type="f32", version=version)
    with open_model_file(path) as f:
        assert isinstance(f, GGUFFile) and f.version == version
        assert format_label(f) == f"GGUF v{version}"
        hp = {k: f.hparams[k] for k in DEFAULT_HPARAMS}
        assert hp == DEFAULT_HPARAMS
        assert f.qnt_version == 2 and f.weight_type == "f32"
        assert f.qkv_layout == C.QKV_SPLIT and f.qkv_layout_source == "marker"
        assert set(f.tensors) == set(model_tensors)             # the legacy names
        for name, t in model_tensors.items():
            info = f.tensors[name]
            assert info.shape == t.shape
            np.testing.assert_array_equal(info.to_float32(), t)  # QKV back in the interleaved order
        embed = f.tensors["gpt_neox.embed_in.weight"]
        np.testing.assert_array_equal(embed.rows([5, 1]), model_tensors["gpt_neox.embed_in.weight"][[5, 1]])
        assert len(f.vocab) == DEFAULT_HPARAMS["n_vocab"] and f.vocab[0] == b"<|endoftext|>"


def test_qkv_row_order_undoes_the_converters_split():
    rng = np.random.default_rng(0)
    for n_embd, n_head in ((8, 2), (64, 4), (96, 3)):
        w = rng.standard_normal((3 * n_embd, 5))
        np.testing.assert_array_equal(split_qkv(w, n_head)[qkv_row_order(n_embd, n_head)], w)


@pytest.mark.parametrize("layout", [C.QKV_SPLIT, C.QKV_INTERLEAVED])
def test_qkv_rows_read_by_the_repacker_are_in_the_interleaved_order(tmp_path, model_tensors, layout):
    """The fast backend reads rows with file reads (read_rows): runs of rows gathered in place."""
    path = tmp_path / "m.gguf"
    write_gguf(path, DEFAULT_HPARAMS, model_tensors, weight_type="f32", qkv_layout=layout)
    with GGUFFile(path) as f, open(path, "rb") as fh:
        info = f.tensors["gpt_neox.layers.1.attention.query_key_value.weight"]
        want = model_tensors["gpt_neox.layers.1.attention.query_key_value.weight"]
        scratch = [np.empty(0, np.uint8)]
        for r0, r1 in ((0, 192), (17, 100), (63, 64)):
            rows = info.read_rows(fh, f.path, r0, r1, scratch).view("<f4")
            np.testing.assert_array_equal(rows, want[r0:r1])


@pytest.mark.parametrize("type_name", LEGACY_TYPES)
def test_the_block_formats_are_read_bit_for_bit_like_the_gguf_package(tmp_path, model_tensors, type_name):
    """Q4_0..Q8_0 inside GGUF are engine.quants' version-2 blocks; BF16 widens exactly."""
    path = tmp_path / "m.gguf"
    write_gguf(path, DEFAULT_HPARAMS, model_tensors, weight_type=type_name, qkv_layout=C.QKV_INTERLEAVED)
    reader = gguf.GGUFReader(str(path))
    with GGUFFile(path) as f:
        names = C.tensor_name_map(DEFAULT_HPARAMS["n_layer"])
        for t in reader.tensors:
            theirs = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            ours = f.tensors[names[t.name]]
            assert ours.type_label == t.tensor_type.name
            np.testing.assert_array_equal(ours.to_float32(), theirs.reshape(ours.shape))


def test_bf16_is_presented_as_exact_float32(tmp_path, model_tensors):
    path = tmp_path / "m.gguf"
    write_gguf(path, DEFAULT_HPARAMS, model_tensors, weight_type="bf16")
    with GGUFFile(path) as f:
        info = f.tensors["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"]
        assert (info.type, info.stored_type, info.type_label) == ("f32", "bf16", "BF16")
        assert info.nbytes == 2 * info.data.size
        x = info.to_float32()
        assert np.array_equal(x.view(np.uint32) & 0xFFFF, np.zeros_like(x, np.uint32))   # bf16 values
        want = model_tensors["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"]
        assert np.abs(x - want).max() <= np.abs(want).max() * 2 ** -8


def test_mixed_types_per_tensor_and_the_weight_type_by_bytes(tmp_path, model_tensors):
    types = {n: "q8_0" for n in model_tensors if "dense_4h_to_h.weight" in n}
    path = tmp_path / "m.gguf"
    write_gguf(path, DEFAULT_HPARAMS, model_tensors, weight_type="q4_0", types=types)
    with GGUFFile(path) as f:
        assert f.tensors["gpt_neox.layers.0.mlp.dense_4h_to_h.weight"].type == "q8_0"
        assert f.tensors["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"].type == "q4_0"
        assert f.weight_type == "q4_0"


@pytest.mark.parametrize("type_name", K_TYPES)
def test_k_and_i_quants_are_handed_on_or_refused_naming_type_and_tensor(tmp_path, model_tensors, type_name):
    """Without engine.quants' block formats for them, the file is refused cleanly."""
    hp = dict(DEFAULT_HPARAMS, n_embd=256, n_head=4, n_rot=16, n_layer=1)
    tensors = random_tensors(hp, seed=1)
    code = C.TYPE_CODES[type_name]
    values, nbytes = C.BLOCK_SIZES[code]
    w = tensors["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"]
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, size=(w.shape[0], w.shape[1] // values, nbytes), dtype=np.uint8)
    for offset, _ in __import__("engine.gguf_file", fromlist=["SCALE_BOUNDS"]).SCALE_BOUNDS[type_name]:
        blocks[:, :, offset:offset + 2] = np.frombuffer(np.float16(1e-3).tobytes(), np.uint8)
    raw = {"gpt_neox.layers.0.mlp.dense_h_to_4h.weight": (blocks.reshape(w.shape[0], -1), type_name)}
    path = tmp_path / "m.gguf"
    write_gguf(path, hp, tensors, weight_type="f16", raw=raw)
    if kquants_registered():
        with GGUFFile(path) as f:
            info = f.tensors["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"]
            assert info.type == type_name and info.type_label == code.name
            theirs = gguf.quants.dequantize(blocks.reshape(w.shape[0], -1), gguf.GGMLQuantizationType(int(code)))
            np.testing.assert_array_equal(info.to_float32(), theirs)
    else:
        refused(path, "blk.0.ffn_up.weight", code.name, "cannot run yet")


def test_a_k_quant_scale_beyond_the_fp16_range_is_refused(tmp_path):
    if not kquants_registered():
        pytest.skip("the K-quant block formats are not registered in engine.quants")
    hp = dict(DEFAULT_HPARAMS, n_embd=256, n_head=4, n_rot=16, n_layer=1)
    tensors = random_tensors(hp, seed=1)
    w = tensors["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"]
    blocks = np.zeros((w.shape[0], w.shape[1] // 256, 210), np.uint8)
    blocks[3, 0, 208:210] = np.frombuffer(np.float16(100.0).tobytes(), np.uint8)    # 100 * 4096 > 65504
    path = tmp_path / "m.gguf"
    write_gguf(path, hp, tensors, raw={"gpt_neox.layers.0.mlp.dense_h_to_4h.weight": (blocks.reshape(w.shape[0], -1), "q6_K")})
    refused(path, "blk.0.ffn_up.weight", "Q6_K", "100.0")


@pytest.mark.parametrize("code", [C.GGMLType.IQ2_XXS, C.GGMLType.Q8_1, C.GGMLType.TQ1_0, C.GGMLType.F64])
def test_other_types_are_refused_naming_type_and_tensor(tmp_path, code):
    kvs, records, data = raw_model_parts()
    e = RAW_HPARAMS["n_embd"]
    records[3] = tensor_record("blk.0.attn_qkv.weight", (e, 3 * e), code, 0)
    path = write_raw(tmp_path, raw_gguf(kvs, records, data))
    refused(path, "blk.0.attn_qkv.weight", code.name)


# -- the file's structure -------------------------------------------------------------------------

def test_the_raw_fixture_is_valid(tmp_path):
    with GGUFFile(write_raw(tmp_path, raw_gguf(*raw_model_parts()))) as f:
        assert f.hparams["n_vocab"] == 8 and f.alignment == 32


@pytest.mark.parametrize("version,words", [
    (1, ["version 1", "convert the model again"]),
    (4, ["unknown GGUF version 4"]),
    (3 << 24, ["big-endian"]),
])
def test_versions(tmp_path, version, words):
    refused(write_raw(tmp_path, raw_gguf(*raw_model_parts(), version=version)), *words)


def test_counts_are_checked_against_the_file_size_before_any_loop(tmp_path):
    kvs, records, data = raw_model_parts()
    refused(write_raw(tmp_path, raw_gguf(kvs, records, data, n_tensors=1 << 40)), "tensor count", "65536")
    refused(write_raw(tmp_path, raw_gguf(kvs, records, data, n_kv=60000)), "metadata count", "more than the file")
    kvs[0] = (1 << 60).to_bytes(8, "little") + kvs[0][8:]
    refused(write_raw(tmp_path, raw_gguf(kvs, records, data)), "key of metadata entry 0", "claims")


def test_array_lengths_are_bounded(tmp_path):
    kvs, records, data = raw_model_parts()
    kvs.append(kv_entry("junk", C.ValueType.ARRAY, int(C.ValueType.UINT64).to_bytes(4, "little") + (1 << 30).to_bytes(8, "little")))
    refused(write_raw(tmp_path, raw_gguf(kvs, records, data)), "array 'junk'")
    kvs[-1] = kv_entry("junk", C.ValueType.ARRAY, int(C.ValueType.STRING).to_bytes(4, "little") + (1 << 23).to_bytes(8, "little"))
    refused(write_raw(tmp_path, raw_gguf(kvs, records, data)), "array 'junk'", "more than the file can hold")


def test_unknown_value_types_and_duplicate_keys(tmp_path):
    kvs, records, data = raw_model_parts()
    refused(write_raw(tmp_path, raw_gguf(kvs + [kv_entry("odd", 13, b"")], records, data)), "'odd'", "unknown value type 13")
    refused(write_raw(tmp_path, raw_gguf(kvs + [u32_kv(C.KEY_BLOCK_COUNT, 1)], records, data)),
            "'gptneox.block_count' appears twice")
    bad_bool = kv_entry("flag", C.ValueType.BOOL, b"\x07")
    refused(write_raw(tmp_path, raw_gguf(kvs + [bad_bool], records, data)), "'flag'", "bool")


def test_nested_arrays_are_read_to_a_bounded_depth(tmp_path):
    kvs, records, data = raw_model_parts()
    inner = int(C.ValueType.UINT8).to_bytes(4, "little") + (2).to_bytes(8, "little") + b"\1\2"
    nested = int(C.ValueType.ARRAY).to_bytes(4, "little") + (1).to_bytes(8, "little") + inner
    with GGUFFile(write_raw(tmp_path, raw_gguf(kvs + [kv_entry("nest", C.ValueType.ARRAY, nested)], records, data))) as f:
        assert [list(a) for a in f.metadata["nest"]] == [[1, 2]]
    deep = nested
    for _ in range(3):
        deep = int(C.ValueType.ARRAY).to_bytes(4, "little") + (1).to_bytes(8, "little") + deep
    refused(write_raw(tmp_path, raw_gguf(kvs + [kv_entry("deep", C.ValueType.ARRAY, deep)], records, data)), "nests arrays")


@pytest.mark.parametrize("key,payload,words", [
    (C.KEY_ARCHITECTURE, str_kv(C.KEY_ARCHITECTURE, "llama"), ["'llama'", "GPT-NeoX"]),
    (C.KEY_BLOCK_COUNT, str_kv(C.KEY_BLOCK_COUNT, "one"), ["'gptneox.block_count'", "STRING", "expected"]),
    (C.KEY_EMBEDDING_LENGTH, u32_kv(C.KEY_EMBEDDING_LENGTH, 0), ["embedding_length", "outside"]),
    (C.KEY_HEAD_COUNT, u32_kv(C.KEY_HEAD_COUNT, 3), ["head_count", "does not divide"]),
    (C.KEY_ROPE_DIMENSION_COUNT, u32_kv(C.KEY_ROPE_DIMENSION_COUNT, 5), ["dimension_count", "outside"]),
    (C.KEY_FEED_FORWARD_LENGTH, u32_kv(C.KEY_FEED_FORWARD_LENGTH, 24), ["feed_forward_length", "4 x n_embd"]),
    (C.KEY_LAYER_NORM_EPS, kv_entry(C.KEY_LAYER_NORM_EPS, C.ValueType.FLOAT32, np.float32(1e-6).tobytes()),
     ["layer_norm_epsilon", "1e-05 only"]),
    (C.KEY_TOKENS, str_array_kv(C.KEY_TOKENS, list("abcdefg")), ["token_embd.weight", "n_vocab 7"]),
    (C.KEY_QKV_LAYOUT, str_kv(C.KEY_QKV_LAYOUT, "sideways"), [C.KEY_QKV_LAYOUT, "'sideways'"]),
])
def test_hyper_parameters_are_checked_naming_the_key(tmp_path, key, payload, words):
    kvs, records, data = raw_model_parts()
    kvs = [payload if kv[8:8 + len(key)] == key.encode() and int.from_bytes(kv[:8], "little") == len(key) else kv
           for kv in kvs]
    refused(write_raw(tmp_path, raw_gguf(kvs, records, data)), *words)


def test_required_keys(tmp_path):
    kvs, records, data = raw_model_parts()
    for i, key in [(7, C.KEY_USE_PARALLEL_RESIDUAL), (8, C.KEY_LAYER_NORM_EPS), (10, C.KEY_TOKENS)]:
        refused(write_raw(tmp_path, raw_gguf(kvs[:i] + kvs[i + 1:], records, data)), f"'{key}' is missing")


def test_extra_keys_and_optional_ones(tmp_path):
    kvs, records, data = raw_model_parts()
    kvs += [u32_kv(C.KEY_HEAD_COUNT_KV, 1)]
    refused(write_raw(tmp_path, raw_gguf(kvs, records, data)), "head_count_kv", "grouped-query")
    kvs[-1] = kv_entry(C.KEY_ROPE_FREQ_BASE, C.ValueType.FLOAT32, np.float32(5e5).tobytes())
    refused(write_raw(tmp_path, raw_gguf(kvs, records, data)), "freq_base")
    kvs[-1] = str_kv("general.name", "anything")
    with GGUFFile(write_raw(tmp_path, raw_gguf(kvs, records, data))) as f:
        assert f.metadata["general.name"] == "anything"


def test_alignment(tmp_path):
    kvs, records, data = raw_model_parts()
    refused(write_raw(tmp_path, raw_gguf(kvs + [u32_kv(C.KEY_ALIGNMENT, 24)], records, data)), "alignment", "power of two")
    refused(write_raw(tmp_path, raw_gguf(kvs + [str_kv(C.KEY_ALIGNMENT, "32")], records, data)), "alignment", "UINT32")
    refused(write_raw(tmp_path, raw_gguf(kvs + [u32_kv(C.KEY_ALIGNMENT, 64)], records, data, alignment=64)),
            "not a multiple of the alignment 64")
    kvs, records, data = raw_model_parts(alignment=64)
    with GGUFFile(write_raw(tmp_path, raw_gguf(kvs + [u32_kv(C.KEY_ALIGNMENT, 64)], records, data, alignment=64))) as f:
        assert f.alignment == 64


def test_tensor_offsets_must_be_aligned_inside_the_file_and_disjoint(tmp_path):
    kvs, records, data = raw_model_parts()
    e = RAW_HPARAMS["n_embd"]
    bad = list(records)
    bad[1] = tensor_record("blk.0.attn_norm.weight", (e,), C.GGMLType.F32, 8)
    refused(write_raw(tmp_path, raw_gguf(kvs, bad, data)), "blk.0.attn_norm.weight", "not a multiple of the alignment")
    bad[1] = tensor_record("blk.0.attn_norm.weight", (e,), C.GGMLType.F32, len(data))
    refused(write_raw(tmp_path, raw_gguf(kvs, bad, data)), "blk.0.attn_norm.weight", "past the end")
    bad[1] = tensor_record("blk.0.attn_norm.weight", (e,), C.GGMLType.F32, 0)
    refused(write_raw(tmp_path, raw_gguf(kvs, bad, data)), "overlap", "token_embd.weight", "blk.0.attn_norm.weight")


def test_tensor_names_shapes_and_dimensions(tmp_path):
    kvs, records, data = raw_model_parts()
    e = RAW_HPARAMS["n_embd"]
    refused(write_raw(tmp_path, raw_gguf(kvs, records + [records[1]], data)), "'blk.0.attn_norm.weight' appears twice")
    refused(write_raw(tmp_path, raw_gguf(kvs, records[:-1], data)), "missing tensors", "output.weight")
    extra = tensor_record("blk.1.attn_norm.weight", (e,), C.GGMLType.F32, 0)
    refused(write_raw(tmp_path, raw_gguf(kvs, records + [extra], data)), "unknown tensor 'blk.1.attn_norm.weight'")
    bad = list(records)
    bad[1] = tensor_record("blk.0.attn_norm.weight", (e + 1,), C.GGMLType.F32, 0)
    refused(write_raw(tmp_path, raw_gguf(kvs, bad, data)), "blk.0.attn_norm.weight", "shape")
    bad[1] = tensor_record("blk.0.attn_norm.weight", (e, 1, 1, 1, 1), C.GGMLType.F32, 0)
    refused(write_raw(tmp_path, raw_gguf(kvs, bad, data)), "5 dimensions")
    bad[1] = tensor_record("blk.0.attn_norm.weight", (0,), C.GGMLType.F32, 0)
    refused(write_raw(tmp_path, raw_gguf(kvs, bad, data)), "impossible dimensions")
    bad[1] = tensor_record("blk.0.attn_norm.weight", (e,), 99, 0)
    refused(write_raw(tmp_path, raw_gguf(kvs, bad, data)), "blk.0.attn_norm.weight", "unknown ggml type code 99")
    with GGUFFile(write_raw(tmp_path, raw_gguf(kvs, records[:1] + [tensor_record(
            "blk.0.attn_norm.weight", (e, 1), C.GGMLType.F32, int.from_bytes(records[1][-8:], "little"))] + records[2:],
            data))) as f:
        assert f.tensors["gpt_neox.layers.0.input_layernorm.weight"].shape == (e,)     # [n, 1] is a vector


def test_a_weight_out_of_the_fp16_range_is_refused_naming_the_tensor(tmp_path, model_tensors):
    bad = dict(model_tensors)
    w = bad["gpt_neox.layers.1.attention.dense.weight"].copy()
    w[2, 3] = np.inf
    bad["gpt_neox.layers.1.attention.dense.weight"] = w
    path = tmp_path / "m.gguf"
    write_gguf(path, DEFAULT_HPARAMS, bad, weight_type="bf16")
    refused(path, "blk.1.attn_output.weight", "BF16", "inf")
    write_gguf(path, DEFAULT_HPARAMS, bad, weight_type="f32")
    refused(path, "blk.1.attn_output.weight", "inf")


def test_truncations_are_refused(tmp_path):
    data = raw_gguf(*raw_model_parts())
    for cut in (3, 4, 10, 30, 100, 400, len(data) - 1):
        path = write_raw(tmp_path, data[:cut])
        with pytest.raises(ModelFormatError):
            open_model_file(path).close()


@pytest.mark.parametrize("type_name", K_TYPES)
def test_the_k_quant_scale_bound(type_name):
    """|d| x the largest factor a value can have on it (+ |dmin| x its own) must stay within the fp16
    range: checked on the blocks directly, whether or not the type's kernels are registered."""
    from engine.gguf_file import SCALE_BOUNDS, GGUFTensor
    values, nbytes = C.BLOCK_SIZES[C.TYPE_CODES[type_name]]
    blocks = np.zeros((4, nbytes), np.uint8)
    tensor = GGUFTensor("w", type_name, 2, (4 * values,), 0, blocks.size, blocks.reshape(-1), gguf_name="blk.0.w",
                        stored_type=type_name)
    for offset, factor in SCALE_BOUNDS[type_name]:
        blocks[:] = 0
        blocks[2, offset:offset + 2] = np.frombuffer(np.float16(65504 / factor * 0.99).tobytes(), np.uint8)
        assert tensor.first_bad_value() is None
        blocks[2, offset:offset + 2] = np.frombuffer(np.float16(65504 / factor * 1.02).tobytes(), np.uint8)
        at, value = tensor.first_bad_value()
        assert at == 2 * nbytes + offset and value == pytest.approx(65504 / factor * 1.02, rel=1e-3)
        blocks[2, offset:offset + 2] = np.frombuffer(np.float16(np.nan).tobytes(), np.uint8)
        assert tensor.first_bad_value()[0] == 2 * nbytes + offset
