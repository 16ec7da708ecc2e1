"""engine.gguf_constants agrees with the gguf package (the reference implementation's numbers)."""
import pytest

from engine import gguf_constants as C

gguf = pytest.importorskip("gguf")


def test_block_sizes_and_codes_match_the_gguf_package():
    for code, size in C.BLOCK_SIZES.items():
        assert gguf.GGMLQuantizationType[code.name] == code
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(code)] == size


def test_value_types_match():
    for vt in C.ValueType:
        assert gguf.GGUFValueType[vt.name] == vt


def test_metadata_keys_match():
    k = gguf.Keys
    arch = C.ARCHITECTURE
    assert C.KEY_ARCHITECTURE == k.General.ARCHITECTURE
    assert C.KEY_ALIGNMENT == k.General.ALIGNMENT
    assert C.KEY_FILE_TYPE == k.General.FILE_TYPE
    assert C.KEY_QUANTIZATION_VERSION == k.General.QUANTIZATION_VERSION
    assert C.KEY_CONTEXT_LENGTH == k.LLM.CONTEXT_LENGTH.format(arch=arch)
    assert C.KEY_EMBEDDING_LENGTH == k.LLM.EMBEDDING_LENGTH.format(arch=arch)
    assert C.KEY_BLOCK_COUNT == k.LLM.BLOCK_COUNT.format(arch=arch)
    assert C.KEY_FEED_FORWARD_LENGTH == k.LLM.FEED_FORWARD_LENGTH.format(arch=arch)
    assert C.KEY_USE_PARALLEL_RESIDUAL == k.LLM.USE_PARALLEL_RESIDUAL.format(arch=arch)
    assert C.KEY_HEAD_COUNT == k.Attention.HEAD_COUNT.format(arch=arch)
    assert C.KEY_HEAD_COUNT_KV == k.Attention.HEAD_COUNT_KV.format(arch=arch)
    assert C.KEY_LAYER_NORM_EPS == k.Attention.LAYERNORM_EPS.format(arch=arch)
    assert C.KEY_ROPE_DIMENSION_COUNT == k.Rope.DIMENSION_COUNT.format(arch=arch)
    assert C.KEY_ROPE_FREQ_BASE == k.Rope.FREQ_BASE.format(arch=arch)
    t = k.Tokenizer
    assert (C.KEY_TOKENIZER_MODEL, C.KEY_TOKENIZER_PRE, C.KEY_TOKENS, C.KEY_TOKEN_TYPE, C.KEY_MERGES) == (
        t.MODEL, t.PRE, t.LIST, t.TOKEN_TYPE, t.MERGES)
    assert (C.KEY_BOS_ID, C.KEY_EOS_ID, C.KEY_UNK_ID, C.KEY_PAD_ID) == (t.BOS_ID, t.EOS_ID, t.UNK_ID, t.PAD_ID)
    assert (C.KEY_ADD_BOS, C.KEY_ADD_EOS, C.KEY_CHAT_TEMPLATE) == (t.ADD_BOS, t.ADD_EOS, t.CHAT_TEMPLATE)


def test_file_types_and_token_types_match():
    for ft in C.FileType:
        assert gguf.LlamaFileType[ft.name] == ft
    for tt in C.TokenType:
        assert gguf.TokenType[tt.name] == tt


def test_tensor_names_match_the_gguf_tensor_mapping():
    n_layer = 2
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GPTNEOX, n_layer)
    names = C.tensor_name_map(n_layer)
    assert len(names) == 4 + 12 * n_layer
    for gguf_name, legacy in names.items():
        base, suffix = legacy.rsplit(".", 1)
        assert tmap.get_name(base) + "." + suffix == gguf_name
