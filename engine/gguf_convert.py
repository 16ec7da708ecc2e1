"""A model file (legacy ggml of any era, or GGUF) -> a GGUF v3 file of architecture ``gptneox``.

What llama.cpp's converter writes (spec §1.2-§1.4): the hyper-parameters under ``gptneox.*``,
the tokenizer under ``tokenizer.ggml.*`` (engine/gguf_vocab.py), the tensors under their GGUF
names, and the fused QKV weight and bias re-ordered from the per-head interleaved rows of the
legacy files to [all Q | all K | all V]. ``neox_writer.qkv_layout = "split"`` marks files we
wrote, so our reader need not guess their layout (files of the 2023 converter carry no marker).

Each tensor keeps its data where GGUF has the same block format, else it is re-encoded, and
every change is measured and reported, never silent:

* f32, f16 and the version-2 blocks (q4_0, q4_1, q5_0, q5_1, q8_0 of ggml from 2023-05-20 on,
  which is GGUF's own layout) are copied byte for byte; q5_0/q5_1 of version 1 are the same bytes;
* version-0 q5_0/q5_1 (interleaved nibbles, fp16 scales) are repacked to split halves: lossless;
* version-0/1 q4_0, q4_1 and q8_0 keep their quants and have their fp32 scales rounded to fp16,
  the only difference from GGUF's block ("fp16-scales", the default; at most 2^-11 of each
  block's scale), or are widened to f16 or requantized to q8_0 (``old_quants``);
* q4_2 and q4_3 (blocks of 16, which GGUF never had) become f16, or q8_0 when asked.

Streaming: the header is written from the plan (shapes and types), then each tensor in chunks of
rows, so memory holds one chunk, never the model; the output appears under its name only when
complete (engine/gguf_writer.py).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine import gguf_file
from engine.convert import CheckpointWeights
from engine.gguf_constants import (ARCHITECTURE, FileType, KEY_ARCHITECTURE, KEY_BLOCK_COUNT, KEY_BOS_ID,
                                   KEY_CONTEXT_LENGTH, KEY_EMBEDDING_LENGTH, KEY_EOS_ID, KEY_FEED_FORWARD_LENGTH,
                                   KEY_FILE_TYPE, KEY_HEAD_COUNT, KEY_LAYER_NORM_EPS, KEY_MERGES, KEY_NAME, KEY_QKV_LAYOUT,
                                   KEY_QUANTIZATION_VERSION, KEY_ROPE_DIMENSION_COUNT, KEY_TOKEN_TYPE, KEY_TOKENIZER_MODEL,
                                   KEY_TOKENIZER_PRE, KEY_TOKENS, KEY_USE_PARALLEL_RESIDUAL, KEY_ADD_BOS,
                                   QKV_SPLIT, TOKENIZER_MODEL_GPT2, TYPE_CODES, ValueType, tensor_name_map)
from engine.gguf_writer import GGUFWriter, TensorPlan, Value, array, boolean, float32, string, uint32
from engine.gguf_vocab import GGUFVocab
from engine.quants import block_format, dequantize, quantize

LAYER_NORM_EPS = 1e-5           # what every legacy GPT-NeoX file was run with (ggml hard-codes it)
CHUNK_VALUES = 1 << 21          # values handled at a time: 8 MiB of float32
OLD_QUANT_CHOICES = ("fp16-scales", "f16", "q8_0")
# Legacy block formats GGUF has byte for byte (version 2; q5 of version 1 is the same layout).
GGUF_LEGACY_TYPES = ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0")


def qkv_row_order(n_embd: int, n_head: int) -> np.ndarray:
    """perm with gguf_rows = legacy_rows[perm]: GGUF row r = s*E + h*hd + d (s = q/k/v) comes
    from legacy row h*3*hd + s*hd + d (spec §1.1); the inverse of the reader's order."""
    return np.argsort(gguf_file.qkv_row_order(n_embd, n_head))


def is_qkv(gguf_name: str) -> bool:
    return gguf_name.endswith((".attn_qkv.weight", ".attn_qkv.bias"))


# -- what happens to each tensor ----------------------------------------------------------------

@dataclass
class Step:
    """One tensor's conversion: its source, its plan in the GGUF file, and how it gets there."""

    source: object              # the reader's TensorInfo (type, qnt_version, shape, data)
    plan: TensorPlan
    how: str                    # "copy" | "repack" | "fp16-scales" | "convert"


def choose_how(src_type: str, src_qv: int, target: str) -> str:
    """How a tensor of (src_type, src_qv) becomes `target` in a GGUF file (src_type is the stored
    type: "bf16" from a GGUF input)."""
    if src_type == target:
        if src_type in ("f32", "f16") or src_type not in GGUF_LEGACY_TYPES or src_qv == 2:
            return "copy"
        if src_type in ("q5_0", "q5_1"):
            return "copy" if src_qv == 1 else "repack"
        return "fp16-scales"
    return "convert"


def legacy_target(src_type: str, src_qv: int, old_quants: str) -> str:
    """The GGUF type a legacy tensor is written as: its own where GGUF has the block format."""
    if src_type in ("q4_2", "q4_3"):
        return "q8_0" if old_quants == "q8_0" else "f16"
    if src_type in ("q4_0", "q4_1", "q8_0") and src_qv != 2 and old_quants != "fp16-scales":
        return old_quants
    return src_type


# -- re-encoding old blocks into GGUF's --------------------------------------------------------

def to_gguf_blocks(type_name: str, qnt_version: int, raw: np.ndarray) -> np.ndarray:
    """Blocks of a legacy (type, version) re-encoded as GGUF's (version 2) block: nibbles to split
    halves, fp32 scales (and mins) rounded to fp16; the quants themselves are kept."""
    src = block_format(type_name, qnt_version)
    dst = block_format(type_name, 2)
    blocks = np.asarray(raw, dtype=np.uint8).reshape(-1, src.nbytes)
    width = 2 if src.scale_dtype == "f2" else 4
    n_scales = 2 if src.has_min else 1
    parts = []
    for k in range(n_scales):
        s = np.ascontiguousarray(blocks[:, k * width:(k + 1) * width]).view("<" + src.scale_dtype)
        parts.append(s.astype("<f2").view(np.uint8))
    pos = n_scales * width
    if src.has_qh:
        parts.append(blocks[:, pos:pos + 4])
        pos += 4
    qs = blocks[:, pos:]
    if src.interleaved and type_name != "q8_0":
        values = np.stack([qs & np.uint8(15), qs >> np.uint8(4)], axis=-1).reshape(qs.shape[0], -1)
        half = values.shape[1] // 2
        qs = values[:, :half] | (values[:, half:] << np.uint8(4))
    parts.append(qs)
    out = np.concatenate(parts, axis=1)
    assert out.shape[1] == dst.nbytes
    return out.reshape(-1)


# -- the report -----------------------------------------------------------------------------

@dataclass
class Change:
    """What happened to the tensors of one (source type -> GGUF type, how) group."""

    source: str
    target: str
    how: str
    tensors: int = 0
    values: int = 0
    max_error: float = 0.0          # largest |new - old| of a weight
    max_relative: float = 0.0       # the same, over the largest |weight| of its tensor

    def describe(self) -> str:
        what = {
            "copy": "copied byte for byte (GGUF has the same block format)",
            "repack": "nibbles repacked to GGUF's order",
            "fp16-scales": "quants kept, fp32 block scales rounded to fp16 (GGUF's block format)",
            "convert": f"re-encoded as {self.target}",
        }[self.how]
        line = f"{self.source} -> {self.target}: {self.tensors} tensors, {what}"
        if self.how != "copy" and self.max_error == 0:
            line += "; lossless (no weight changed)"
        elif self.how != "copy":
            line += (f"; largest change of a weight {self.max_error:.3g}"
                     f" ({self.max_relative:.3g} of its tensor's largest weight)")
        return line


@dataclass
class ConversionReport:
    """The GGUF file written and, per group of tensors, what was done to them."""

    path: Path
    changes: dict[tuple[str, str, str], Change] = field(default_factory=dict)
    reordered_qkv: int = 0
    vocab: GGUFVocab | None = None
    seconds: float = 0.0
    preset: str = ""                # the quantization preset, when quantize wrote the file

    def add(self, source: str, target: str, how: str) -> Change:
        key = (source, target, how)
        if key not in self.changes:
            self.changes[key] = Change(source, target, how)
        return self.changes[key]

    @property
    def lossless(self) -> bool:
        return all(c.max_error == 0 for c in self.changes.values())

    def lines(self) -> list[str]:
        out = [c.describe() for c in self.changes.values()]
        if self.reordered_qkv:
            out.append(f"attn_qkv: {self.reordered_qkv} tensors (weight and bias) re-ordered to [Q|K|V] rows, "
                       f"marked {KEY_QKV_LAYOUT} = {QKV_SPLIT!r}")
        if self.vocab is not None:
            out.append(f"tokenizer: {len(self.vocab.tokens)} tokens, {len(self.vocab.merges)} merges, "
                       f"{self.vocab.source}")
            out.extend(self.vocab.notes)
        return out


# -- metadata -------------------------------------------------------------------------------

def gguf_metadata(hparams: dict, vocab: GGUFVocab, file_type: int, name: str) -> dict[str, Value]:
    """The key/value pairs llama.cpp needs for a GPT-NeoX model (spec §1.2, §1.3)."""
    n_embd = hparams["n_embd"]
    meta = {
        KEY_ARCHITECTURE: string(ARCHITECTURE),
        KEY_NAME: string(name),
        KEY_FILE_TYPE: uint32(file_type),
        KEY_QUANTIZATION_VERSION: uint32(2),
        KEY_CONTEXT_LENGTH: uint32(hparams["n_ctx"]),
        KEY_EMBEDDING_LENGTH: uint32(n_embd),
        KEY_BLOCK_COUNT: uint32(hparams["n_layer"]),
        KEY_FEED_FORWARD_LENGTH: uint32(hparams.get("n_ff", 4 * n_embd)),
        KEY_ROPE_DIMENSION_COUNT: uint32(hparams["n_rot"]),
        KEY_HEAD_COUNT: uint32(hparams["n_head"]),
        KEY_USE_PARALLEL_RESIDUAL: boolean(bool(hparams.get("par_res", 1))),
        KEY_LAYER_NORM_EPS: float32(hparams.get("norm_eps", LAYER_NORM_EPS)),
        KEY_QKV_LAYOUT: string(QKV_SPLIT),
        KEY_TOKENIZER_MODEL: string(TOKENIZER_MODEL_GPT2),
        KEY_TOKENIZER_PRE: string(vocab.pre),
        KEY_TOKENS: array(ValueType.STRING, vocab.tokens),
        KEY_TOKEN_TYPE: array(ValueType.INT32, vocab.token_types),
        KEY_MERGES: array(ValueType.STRING, vocab.merges),
        KEY_BOS_ID: uint32(vocab.eos_id),
        KEY_EOS_ID: uint32(vocab.eos_id),
        KEY_ADD_BOS: boolean(False),          # GPT-NeoX models were trained without one
    }
    return meta


MOSTLY = {"f32": FileType.ALL_F32, "f16": FileType.MOSTLY_F16, "q4_0": FileType.MOSTLY_Q4_0,
          "q4_1": FileType.MOSTLY_Q4_1, "q5_0": FileType.MOSTLY_Q5_0, "q5_1": FileType.MOSTLY_Q5_1,
          "q8_0": FileType.MOSTLY_Q8_0, "q6_K": FileType.MOSTLY_Q6_K, "iq4_nl": FileType.MOSTLY_IQ4_NL,
          "iq4_xs": FileType.MOSTLY_IQ4_XS, "bf16": FileType.MOSTLY_BF16}


def file_type_of(plans: list[TensorPlan]) -> int:
    """general.file_type of a file: the type of its attention weights, as llama.cpp's quantizer
    records the type it was asked for (mixes name theirs explicitly)."""
    qkv = next(p.type for p in plans if p.name.endswith("attn_qkv.weight"))
    return int(MOSTLY.get(qkv, FileType.MOSTLY_F16))


# -- the conversion -------------------------------------------------------------------------

def write_gguf(model, out_path, steps: list[Step], vocab: GGUFVocab, *, file_type: int | None = None,
               name: str | None = None, on_tensor=None) -> ConversionReport:
    """Write the steps' tensors as a GGUF file, streamed chunk by chunk; returns the report."""
    started = time.monotonic()
    hp = model.hparams
    plans = [s.plan for s in steps]
    meta = gguf_metadata(hp, vocab, file_type_of(plans) if file_type is None else file_type,
                         name or Path(out_path).stem)
    report = ConversionReport(Path(out_path), vocab=vocab)
    perm = qkv_row_order(hp["n_embd"], hp["n_head"])
    with GGUFWriter(out_path, meta, plans) as writer:
        for index, step in enumerate(steps):
            if on_tensor is not None:
                on_tensor(index, len(steps), step.plan.name)
            writer.begin(step.plan.name)
            reorder = is_qkv(step.plan.name) and not stored_in_split_order(step.source)
            _write_tensor(writer, step, perm if reorder else None,
                          report.add(_type_label(step.source), step.plan.type, step.how))
            report.reordered_qkv += reorder
            # hand the input's pages back: touched pages of a mapping count as ours until then
            CheckpointWeights.release(step.source.data)
        writer.finish()
    report.seconds = time.monotonic() - started
    return report


def stored_type(info) -> str:
    """The type of a source tensor's bytes (a GGUF reader presents bf16 as f32 but keeps the bytes)."""
    return getattr(info, "stored_type", "") or info.type


def stored_in_split_order(info) -> bool:
    """Whether a source QKV tensor's bytes already hold GGUF's [Q|K|V] rows (a GGUF input whose
    reader presents them re-ordered through ``row_order``)."""
    return getattr(info, "row_order", None) is not None


def source_values(info, raw: np.ndarray, n_values: int) -> np.ndarray:
    """float32 values of raw bytes of a source tensor, in its stored type."""
    if stored_type(info) == "bf16":
        return (np.ascontiguousarray(raw).view("<u2").astype(np.uint32) << np.uint32(16)).view(np.float32)
    return dequantize(info.type, info.qnt_version, raw, n_values)


def _type_label(info) -> str:
    if stored_type(info) == "bf16":
        return "bf16"
    if info.type in GGUF_LEGACY_TYPES + ("q4_2", "q4_3") and info.qnt_version != 2:
        return f"{info.type} (version {info.qnt_version})"
    return info.type


def _write_tensor(writer: GGUFWriter, step: Step, perm: np.ndarray | None, change: Change) -> None:
    """One tensor's data in chunks of rows (the QKV rows taken in GGUF order), re-encoded and
    measured unless it is copied."""
    info, plan = step.source, step.plan
    shape = tuple(info.shape)
    if len(shape) == 2:
        n_rows, per_row = shape
    elif is_qkv(plan.name):                  # the QKV bias: each value is a row
        n_rows, per_row = shape[0], 1
    else:
        n_rows, per_row = 1, shape[0]
    rows = info.data.reshape(n_rows, -1)
    chunk_rows = max(1, CHUNK_VALUES // per_row)
    change.tensors += 1
    change.values += n_rows * per_row
    largest = worst = 0.0
    for start in range(0, n_rows, chunk_rows):
        idx = perm[start:start + chunk_rows] if perm is not None else slice(start, start + chunk_rows)
        raw = np.ascontiguousarray(rows[idx]).reshape(-1)
        if step.how == "copy":
            writer.write(raw)
            continue
        n_values = (raw.size // rows.shape[1]) * per_row
        old = source_values(info, raw, n_values)
        if step.how in ("repack", "fp16-scales"):
            new_raw = to_gguf_blocks(info.type, info.qnt_version, raw)
        else:
            new_raw = quantize(plan.type, 2, old)
        writer.write(new_raw)
        new = dequantize(plan.type, 2, new_raw, n_values)
        largest = max(largest, float(np.max(np.abs(old))))
        worst = max(worst, float(np.max(np.abs(new.astype(np.float64) - old))))
    change.max_error = max(change.max_error, worst)
    if largest > 0:
        change.max_relative = max(change.max_relative, worst / largest)


def legacy_steps(model, old_quants: str = "fp16-scales") -> list[Step]:
    """The GGUF tensors of a legacy file, in llama.cpp's order, each in the type it keeps."""
    if old_quants not in OLD_QUANT_CHOICES:
        raise ValueError(f"old_quants {old_quants!r}: expected one of {', '.join(OLD_QUANT_CHOICES)}")
    steps = []
    for gguf_name, legacy_name in tensor_name_map(model.hparams["n_layer"]).items():
        info = model.tensors[legacy_name]
        target = legacy_target(info.type, info.qnt_version, old_quants)
        steps.append(Step(info, TensorPlan(gguf_name, tuple(info.shape), target),
                          choose_how(stored_type(info), info.qnt_version, target)))
    return steps


def vocab_for(model_path, vocab: list[bytes], n_rows: int, tokenizer_json=None) -> GGUFVocab:
    """The tokenizer to write: the tokenizer.json named or found beside the model, else the one
    rebuilt from the legacy vocab."""
    from engine.gguf_vocab import vocab_from_legacy, vocab_from_tokenizer_json
    from engine.loaded import find_tokenizer_json

    path = Path(tokenizer_json) if tokenizer_json else find_tokenizer_json(model_path)
    if tokenizer_json and not path.is_file():
        raise FileNotFoundError(f"no such tokenizer file: {path}")
    if path is not None:
        return vocab_from_tokenizer_json(path, n_rows)
    return vocab_from_legacy(vocab)


def convert_legacy_to_gguf(src, out_path, *, old_quants: str = "fp16-scales", tokenizer_json=None,
                           on_tensor=None) -> ConversionReport:
    """Convert a legacy ggml GPT-NeoX file (any era) to GGUF; see the module docstring."""
    from engine.ggml_file import GGMLFile

    if os.path.abspath(src) == os.path.abspath(out_path):
        raise ValueError("the output must be a different file from the input")
    with GGMLFile(src) as model:
        vocab = vocab_for(src, model.vocab, model.hparams["n_vocab"], tokenizer_json)
        return write_gguf(model, out_path, legacy_steps(model, old_quants), vocab, on_tensor=on_tensor)
