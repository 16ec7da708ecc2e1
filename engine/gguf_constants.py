"""The GGUF format's fixed numbers and names, shared by the reader and the writer.

Facts from ``shared/spec/gguf-gptneox.md`` (§1.2-§1.4, §3.3), checked against the ``gguf``
0.19.0 package. A GGUF file is little-endian::

    magic "GGUF" | uint32 version | uint64 tensor_count | uint64 kv_count
    kv_count x (string key, uint32 value type, value)
    tensor_count x (string name, uint32 n_dims, uint64 ne[n_dims], uint32 ggml type, uint64 offset)
    padding to general.alignment | tensor data (each tensor at data start + offset, aligned)

A string is a uint64 length and that many UTF-8 bytes; an array is a uint32 element type, a
uint64 count and the elements. Version 1 (uint32 counts and lengths) was replaced within weeks in
2023 and is not read.
"""
from __future__ import annotations

from enum import IntEnum

MAGIC = b"GGUF"
READ_VERSIONS = (2, 3)
WRITE_VERSION = 3
DEFAULT_ALIGNMENT = 32
ARCHITECTURE = "gptneox"


class ValueType(IntEnum):
    """The type tag of a metadata value (``gguf_type`` in ggml)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# The little-endian numpy dtype of each fixed-size value type (STRING and ARRAY have none).
SCALAR_DTYPES = {
    ValueType.UINT8: "<u1", ValueType.INT8: "<i1", ValueType.UINT16: "<u2", ValueType.INT16: "<i2",
    ValueType.UINT32: "<u4", ValueType.INT32: "<i4", ValueType.FLOAT32: "<f4", ValueType.BOOL: "<u1",
    ValueType.UINT64: "<u8", ValueType.INT64: "<i8", ValueType.FLOAT64: "<f8",
}
INTEGER_TYPES = frozenset({ValueType.UINT8, ValueType.INT8, ValueType.UINT16, ValueType.INT16,
                           ValueType.UINT32, ValueType.INT32, ValueType.UINT64, ValueType.INT64})


class GGMLType(IntEnum):
    """The storage type code of a tensor (``ggml_type``). 4, 5 (Q4_2, Q4_3) and 31-33 (the
    Q4_0_x_y repacks) were removed from ggml and never appear in a file we accept."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41


QK_K = 256   # values per K-quant / i-quant super-block

# (values per block, bytes per block) of every type code (the gguf package's GGML_QUANT_SIZES).
BLOCK_SIZES: dict[GGMLType, tuple[int, int]] = {
    GGMLType.F32: (1, 4),
    GGMLType.F16: (1, 2),
    GGMLType.Q4_0: (32, 2 + 16),
    GGMLType.Q4_1: (32, 2 + 2 + 16),
    GGMLType.Q5_0: (32, 2 + 4 + 16),
    GGMLType.Q5_1: (32, 2 + 2 + 4 + 16),
    GGMLType.Q8_0: (32, 2 + 32),
    GGMLType.Q8_1: (32, 4 + 4 + 32),
    GGMLType.Q2_K: (QK_K, 2 + 2 + QK_K // 16 + QK_K // 4),
    GGMLType.Q3_K: (QK_K, 2 + QK_K // 4 + QK_K // 8 + 12),
    GGMLType.Q4_K: (QK_K, 2 + 2 + QK_K // 2 + 12),
    GGMLType.Q5_K: (QK_K, 2 + 2 + QK_K // 2 + QK_K // 8 + 12),
    GGMLType.Q6_K: (QK_K, 2 + QK_K // 2 + QK_K // 4 + QK_K // 16),
    GGMLType.Q8_K: (QK_K, 4 + QK_K + QK_K // 8),
    GGMLType.IQ2_XXS: (QK_K, 2 + QK_K // 4),
    GGMLType.IQ2_XS: (QK_K, 2 + QK_K // 4 + QK_K // 32),
    GGMLType.IQ3_XXS: (QK_K, 2 + QK_K // 4 + QK_K // 8),
    GGMLType.IQ1_S: (QK_K, 2 + QK_K // 8 + QK_K // 16),
    GGMLType.IQ4_NL: (32, 2 + 16),
    GGMLType.IQ3_S: (QK_K, 2 + QK_K // 4 + QK_K // 8 + QK_K // 32 + 4),
    GGMLType.IQ2_S: (QK_K, 2 + QK_K // 4 + QK_K // 16),
    GGMLType.IQ4_XS: (QK_K, 2 + 2 + QK_K // 2 + QK_K // 64),
    GGMLType.I8: (1, 1),
    GGMLType.I16: (1, 2),
    GGMLType.I32: (1, 4),
    GGMLType.I64: (1, 8),
    GGMLType.F64: (1, 8),
    GGMLType.IQ1_M: (QK_K, QK_K // 8 + QK_K // 16 + QK_K // 32),
    GGMLType.BF16: (1, 2),
    GGMLType.TQ1_0: (QK_K, 2 + 4 * 13),
    GGMLType.TQ2_0: (QK_K, 2 + 64),
    GGMLType.MXFP4: (32, 1 + 16),
    GGMLType.NVFP4: (64, 4 + 32),
    GGMLType.Q1_0: (128, 2 + 16),
}

# The engine's type name (engine.quants) of each GGUF type the project reads or writes. The legacy
# block formats are engine.quants' quantization version 2 (split halves, fp16 scales).
TYPE_NAMES: dict[GGMLType, str] = {
    GGMLType.F32: "f32", GGMLType.F16: "f16", GGMLType.BF16: "bf16",
    GGMLType.Q4_0: "q4_0", GGMLType.Q4_1: "q4_1", GGMLType.Q5_0: "q5_0", GGMLType.Q5_1: "q5_1",
    GGMLType.Q8_0: "q8_0",
    GGMLType.Q2_K: "q2_K", GGMLType.Q3_K: "q3_K", GGMLType.Q4_K: "q4_K", GGMLType.Q5_K: "q5_K",
    GGMLType.Q6_K: "q6_K", GGMLType.IQ4_NL: "iq4_nl", GGMLType.IQ4_XS: "iq4_xs",
}
TYPE_CODES: dict[str, GGMLType] = {name: code for code, name in TYPE_NAMES.items()}
BLOCK_QNT_VERSION = 2       # engine.quants version of the legacy block formats inside GGUF


class FileType(IntEnum):
    """``general.file_type`` (llama_ftype): the "mostly" type the quantizer was asked for."""

    ALL_F32 = 0
    MOSTLY_F16 = 1
    MOSTLY_Q4_0 = 2
    MOSTLY_Q4_1 = 3
    MOSTLY_Q8_0 = 7
    MOSTLY_Q5_0 = 8
    MOSTLY_Q5_1 = 9
    MOSTLY_Q2_K = 10
    MOSTLY_Q3_K_S = 11
    MOSTLY_Q3_K_M = 12
    MOSTLY_Q3_K_L = 13
    MOSTLY_Q4_K_S = 14
    MOSTLY_Q4_K_M = 15
    MOSTLY_Q5_K_S = 16
    MOSTLY_Q5_K_M = 17
    MOSTLY_Q6_K = 18
    MOSTLY_IQ4_NL = 25
    MOSTLY_IQ4_XS = 30
    MOSTLY_BF16 = 32


class TokenType(IntEnum):
    """``tokenizer.ggml.token_type`` values."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


# -- metadata keys ------------------------------------------------------------------------------
KEY_ARCHITECTURE = "general.architecture"
KEY_NAME = "general.name"
KEY_ALIGNMENT = "general.alignment"
KEY_FILE_TYPE = "general.file_type"
KEY_QUANTIZATION_VERSION = "general.quantization_version"

KEY_CONTEXT_LENGTH = f"{ARCHITECTURE}.context_length"
KEY_EMBEDDING_LENGTH = f"{ARCHITECTURE}.embedding_length"
KEY_BLOCK_COUNT = f"{ARCHITECTURE}.block_count"
KEY_FEED_FORWARD_LENGTH = f"{ARCHITECTURE}.feed_forward_length"
KEY_ROPE_DIMENSION_COUNT = f"{ARCHITECTURE}.rope.dimension_count"
KEY_ROPE_FREQ_BASE = f"{ARCHITECTURE}.rope.freq_base"
KEY_HEAD_COUNT = f"{ARCHITECTURE}.attention.head_count"
KEY_HEAD_COUNT_KV = f"{ARCHITECTURE}.attention.head_count_kv"
KEY_LAYER_NORM_EPS = f"{ARCHITECTURE}.attention.layer_norm_epsilon"
KEY_USE_PARALLEL_RESIDUAL = f"{ARCHITECTURE}.use_parallel_residual"

KEY_TOKENIZER_MODEL = "tokenizer.ggml.model"
KEY_TOKENIZER_PRE = "tokenizer.ggml.pre"
KEY_TOKENS = "tokenizer.ggml.tokens"
KEY_TOKEN_TYPE = "tokenizer.ggml.token_type"
KEY_MERGES = "tokenizer.ggml.merges"
KEY_BOS_ID = "tokenizer.ggml.bos_token_id"
KEY_EOS_ID = "tokenizer.ggml.eos_token_id"
KEY_UNK_ID = "tokenizer.ggml.unknown_token_id"
KEY_PAD_ID = "tokenizer.ggml.padding_token_id"
KEY_ADD_BOS = "tokenizer.ggml.add_bos_token"
KEY_ADD_EOS = "tokenizer.ggml.add_eos_token"
KEY_CHAT_TEMPLATE = "tokenizer.chat_template"

# The row order of blk.N.attn_qkv (weight and bias). llama.cpp's converter has written "split"
# since mid-2024 (rows [all Q | all K | all V]); older converters kept Hugging Face's per-head
# "interleaved" order. llama.cpp records neither, so our writer states it under this key of its own
# (the reader detects the order of files without it).
KEY_QKV_LAYOUT = "neox_writer.qkv_layout"
QKV_SPLIT = "split"
QKV_INTERLEAVED = "interleaved"

TOKENIZER_MODEL_GPT2 = "gpt2"      # byte-level BPE, the only tokenizer GPT-NeoX models use

# -- tensor names -------------------------------------------------------------------------------
# GGUF name -> legacy / Hugging Face name (spec §1.4). Per-layer names hold "{i}".
GLOBAL_TENSOR_NAMES = {
    "token_embd.weight": "gpt_neox.embed_in.weight",
    "output_norm.weight": "gpt_neox.final_layer_norm.weight",
    "output_norm.bias": "gpt_neox.final_layer_norm.bias",
    "output.weight": "embed_out.weight",
}
LAYER_TENSOR_NAMES = {
    "blk.{i}.attn_norm.weight": "gpt_neox.layers.{i}.input_layernorm.weight",
    "blk.{i}.attn_norm.bias": "gpt_neox.layers.{i}.input_layernorm.bias",
    "blk.{i}.attn_qkv.weight": "gpt_neox.layers.{i}.attention.query_key_value.weight",
    "blk.{i}.attn_qkv.bias": "gpt_neox.layers.{i}.attention.query_key_value.bias",
    "blk.{i}.attn_output.weight": "gpt_neox.layers.{i}.attention.dense.weight",
    "blk.{i}.attn_output.bias": "gpt_neox.layers.{i}.attention.dense.bias",
    "blk.{i}.ffn_norm.weight": "gpt_neox.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.ffn_norm.bias": "gpt_neox.layers.{i}.post_attention_layernorm.bias",
    "blk.{i}.ffn_up.weight": "gpt_neox.layers.{i}.mlp.dense_h_to_4h.weight",
    "blk.{i}.ffn_up.bias": "gpt_neox.layers.{i}.mlp.dense_h_to_4h.bias",
    "blk.{i}.ffn_down.weight": "gpt_neox.layers.{i}.mlp.dense_4h_to_h.weight",
    "blk.{i}.ffn_down.bias": "gpt_neox.layers.{i}.mlp.dense_4h_to_h.bias",
}


def tensor_name_map(n_layer: int) -> dict[str, str]:
    """GGUF tensor name -> legacy name for a model of n_layer layers, in the legacy file order."""
    names = {"token_embd.weight": GLOBAL_TENSOR_NAMES["token_embd.weight"]}
    for i in range(n_layer):
        names.update({g.format(i=i): h.format(i=i) for g, h in LAYER_TENSOR_NAMES.items()})
    names.update({g: h for g, h in GLOBAL_TENSOR_NAMES.items() if g != "token_embd.weight"})
    return names
