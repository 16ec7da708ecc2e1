"""Which type each tensor of a GPT-NeoX GGUF file gets for a quantization preset, as llama.cpp picks it.

The rules are those of ``llama_tensor_get_type_impl`` in llama.cpp's ``src/llama-quant.cpp``
(the copy vendored in llama-cpp-python 0.3.36), read for architecture gptneox: one fused
``attn_qkv`` per layer (llama.cpp counts it as an attention-V tensor), no grouped-query
attention, no experts, no importance matrix. Only 2-D ``*.weight`` tensors other than the norms
are quantized; norms and biases stay f32. For ``n_layer`` = n and layer i,
``more_bits(i) = i < n/8 or i >= 7n/8 or (i - n/8) % 3 == 2``:

============  ===========  =================================  ===========  ==============  ===========
preset        output       attn_qkv                           attn_output  ffn_down        other
============  ===========  =================================  ===========  ==============  ===========
Q4_0 ... Q5_1 q6_K         preset                             preset       preset          preset
Q8_0          q8_0         q8_0                               q8_0         q8_0            q8_0
Q2_K          q6_K         q3_K                               q3_K         q3_K            q2_K
Q3_K_S        q6_K         q3_K                               q3_K         q3_K            q3_K
Q3_K_M        q6_K         q5_K for i < 2, else q4_K          q4_K         q5_K if i<n/16  q3_K
                                                                           else q4_K
Q3_K_L        q6_K         q5_K                               q5_K         q5_K            q3_K
Q4_K_S        q6_K         q5_K for i < 4, else q4_K          q4_K         q5_K if i<n/8   q4_K
Q4_K_M        q6_K         q6_K if more_bits(i), else q4_K    q4_K         q6_K if more    q4_K
Q5_K_S        q6_K         q5_K                               q5_K         q5_K            q5_K
Q5_K_M        q6_K         q6_K if more_bits(i), else q5_K    q5_K         q6_K if more    q5_K
Q6_K          q6_K         q6_K                               q6_K         q6_K            q6_K
IQ4_NL, IQ4_XS q6_K        preset                             preset       q5_K if i<n/8   preset
============  ===========  =================================  ===========  ==============  ===========

("other" is token_embd and ffn_up.) A row length the chosen type's blocks do not divide falls
back as llama.cpp's ``tensor_type_fallback`` does (q4_K -> q5_0, q5_K -> q5_1, q6_K -> q8_0,
q2_K/q3_K -> q4_0, iq4_xs -> iq4_nl, then f16): only tiny test models meet it; every Pythia
width is a multiple of 256. ``pure`` (llama-quantize --pure) gives every quantized tensor the
preset's base type.
"""
from __future__ import annotations

from engine.gguf_constants import BLOCK_SIZES, TYPE_CODES, FileType

# preset name -> (general.file_type, base type)
PRESETS: dict[str, tuple[FileType, str]] = {
    "f32": (FileType.ALL_F32, "f32"),
    "f16": (FileType.MOSTLY_F16, "f16"),
    "q4_0": (FileType.MOSTLY_Q4_0, "q4_0"),
    "q4_1": (FileType.MOSTLY_Q4_1, "q4_1"),
    "q5_0": (FileType.MOSTLY_Q5_0, "q5_0"),
    "q5_1": (FileType.MOSTLY_Q5_1, "q5_1"),
    "q8_0": (FileType.MOSTLY_Q8_0, "q8_0"),
    "q2_K": (FileType.MOSTLY_Q2_K, "q2_K"),
    "q3_K_S": (FileType.MOSTLY_Q3_K_S, "q3_K"),
    "q3_K_M": (FileType.MOSTLY_Q3_K_M, "q3_K"),
    "q3_K_L": (FileType.MOSTLY_Q3_K_L, "q3_K"),
    "q4_K_S": (FileType.MOSTLY_Q4_K_S, "q4_K"),
    "q4_K_M": (FileType.MOSTLY_Q4_K_M, "q4_K"),
    "q5_K_S": (FileType.MOSTLY_Q5_K_S, "q5_K"),
    "q5_K_M": (FileType.MOSTLY_Q5_K_M, "q5_K"),
    "q6_K": (FileType.MOSTLY_Q6_K, "q6_K"),
    "iq4_nl": (FileType.MOSTLY_IQ4_NL, "iq4_nl"),
    "iq4_xs": (FileType.MOSTLY_IQ4_XS, "iq4_xs"),
}
FALLBACK = {"q4_K": "q5_0", "q5_K": "q5_1", "q6_K": "q8_0", "q2_K": "q4_0", "q3_K": "q4_0", "iq4_xs": "iq4_nl"}


def preset_name(name: str) -> str:
    """The preset a user typed, in any case ("Q4_K_M", "q4_k_m"), or ValueError naming the choices."""
    for preset in PRESETS:
        if preset.lower() == name.lower():
            return preset
    raise ValueError(f"unknown quantization type {name!r}: expected one of {', '.join(PRESETS)}")


def more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def quantizable(name: str, ndim: int) -> bool:
    """llama.cpp quantizes 2-D tensors named *weight except the norms."""
    return ndim == 2 and name.endswith("weight") and "_norm.weight" not in name


def _layer(name: str) -> int:
    return int(name.split(".")[1])


def mixed_type(preset: str, name: str, n_layer: int) -> str:
    """The type llama.cpp gives a quantizable tensor `name` under `preset` (before any fallback)."""
    base = PRESETS[preset][1]
    if base in ("f32", "f16"):
        return base
    if name == "output.weight":
        return "q8_0" if base == "q8_0" else "q6_K"
    if name.endswith("attn_qkv.weight"):
        i = _layer(name)
        return {"q2_K": "q3_K", "q3_K_M": "q5_K" if i < 2 else "q4_K", "q3_K_L": "q5_K",
                "q4_K_M": "q6_K" if more_bits(i, n_layer) else base,
                "q5_K_M": "q6_K" if more_bits(i, n_layer) else base,
                "q4_K_S": "q5_K" if i < 4 else base}.get(preset, base)
    if name.endswith("ffn_down.weight"):
        i = _layer(name)
        return {"q2_K": "q3_K", "q3_K_M": "q5_K" if i < n_layer // 16 else "q4_K", "q3_K_L": "q5_K",
                "q4_K_M": "q6_K" if more_bits(i, n_layer) else base,
                "iq4_nl": "q5_K" if i < n_layer // 8 else base,
                "iq4_xs": "q5_K" if i < n_layer // 8 else base,
                "q5_K_M": "q6_K" if more_bits(i, n_layer) else base,
                "q4_K_S": "q5_K" if i < n_layer // 8 else base}.get(preset, base)
    if name.endswith("attn_output.weight"):
        return {"q2_K": "q3_K", "q3_K_M": "q4_K", "q3_K_L": "q5_K"}.get(preset, base)
    return base


def fits(type_name: str, row_length: int) -> bool:
    return row_length % BLOCK_SIZES[TYPE_CODES[type_name]][0] == 0


def tensor_type(preset: str, name: str, shape: tuple[int, ...], n_layer: int, *, pure: bool = False) -> str:
    """The stored type of tensor `name` (GGUF name, PyTorch shape) in a file of this preset."""
    if not quantizable(name, len(shape)):
        return "f32"
    chosen = PRESETS[preset][1] if pure else mixed_type(preset, name, n_layer)
    if not fits(chosen, shape[-1]):
        chosen = FALLBACK.get(chosen, chosen)
        if not fits(chosen, shape[-1]):
            chosen = "f16"
    return chosen
