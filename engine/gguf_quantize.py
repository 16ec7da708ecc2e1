"""Quantize a model (legacy ggml or GGUF) into a GGUF file, each tensor in the type llama.cpp picks.

The types come from engine/gguf_mix.py; the writing, streaming and reporting from
engine/gguf_convert.py. A tensor already in its target type is copied byte for byte; a tensor of
another type is dequantized and quantized in chunks of rows. An input that is already quantized
is refused unless asked (quantizing twice loses more than quantizing the f16 model once), as
llama-quantize refuses it without --allow-requantize.
"""
from __future__ import annotations

import os
from pathlib import Path

from engine.errors import CLIError
from engine.gguf_constants import KEY_TOKENIZER_PRE, TokenType, tensor_name_map
from engine.gguf_convert import ConversionReport, Step, choose_how, stored_type, vocab_for, write_gguf
from engine.gguf_mix import PRESETS, preset_name, tensor_type
from engine.gguf_vocab import GGUFVocab, pre_tokenizer_name
from engine.gguf_writer import TensorPlan

FLOAT_TYPES = ("f32", "f16", "bf16")


def quantize_steps(model, preset: str, *, pure: bool = False, allow_requantize: bool = False) -> list[Step]:
    """Every tensor of `model` (legacy names, legacy QKV order) with its GGUF name and target type."""
    n_layer = model.hparams["n_layer"]
    steps = []
    for gguf_name, legacy_name in tensor_name_map(n_layer).items():
        info = model.tensors[legacy_name]
        shape = tuple(info.shape)
        target = tensor_type(preset, gguf_name, shape, n_layer, pure=pure)
        if info.type == "f16" and target == "f32":
            target = "f16"        # llama.cpp keeps an f16 norm as it is; never widen for nothing
        source_type = stored_type(info)
        how = choose_how(source_type, info.qnt_version, target)
        if how == "convert" and source_type not in FLOAT_TYPES and not allow_requantize:
            raise CLIError(f"{legacy_name} is already {source_type}: quantizing it again to {target} loses more "
                           "than quantizing the f16 or f32 model (--allow-requantize to do it anyway)")
        steps.append(Step(info, TensorPlan(gguf_name, shape, target), how))
    return steps


def open_model_file(path):
    """The reader of a model file: GGUF by its magic, else the legacy ggml reader."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic == b"GGUF":
        from engine.gguf_file import GGUFFile
        return GGUFFile(path)
    from engine.ggml_file import GGMLFile
    return GGMLFile(path)


def source_vocab(model, path, tokenizer_json=None) -> GGUFVocab:
    """The tokenizer metadata to write: a GGUF input's own (its tokens, types and merges as
    stored), else as convert-gguf finds it (a tokenizer.json beside the input, else rebuilt)."""
    embedded = getattr(model, "embedded_tokenizer", None)
    if embedded is None or tokenizer_json:
        return vocab_for(path, model.vocab, model.hparams["n_vocab"], tokenizer_json)
    tokens = list(embedded.tokens)
    types = [int(t) for t in embedded.token_types] if embedded.token_types is not None \
        else [int(TokenType.NORMAL)] * len(tokens)
    pre = getattr(model, "metadata", {}).get(KEY_TOKENIZER_PRE) or pre_tokenizer_name(tokens)
    eos = embedded.eos_id if embedded.eos_id is not None else 0
    return GGUFVocab(tokens, types, list(embedded.merges or []), eos, pre, f"the tokenizer metadata of {path}")


def quantize_to_gguf(src, out_path, type_name: str, *, pure: bool = False, allow_requantize: bool = False,
                     tokenizer_json=None, on_tensor=None) -> ConversionReport:
    """Write `src` as a GGUF file of preset `type_name` (see engine/gguf_mix.py)."""
    preset = preset_name(type_name)
    if os.path.abspath(src) == os.path.abspath(out_path):
        raise CLIError("the output must be a different file from the input")
    model = open_model_file(src)
    try:
        steps = quantize_steps(model, preset, pure=pure, allow_requantize=allow_requantize)
        vocab = source_vocab(model, src, tokenizer_json)
        report = write_gguf(model, out_path, steps, vocab, file_type=int(PRESETS[preset][0]),
                            name=Path(out_path).stem, on_tensor=on_tensor)
    finally:
        model.close()
    report.preset = preset
    return report
