"""Hugging Face GPT-NeoX checkpoint folder -> legacy ggml file (gpt-neox layout), streamed.

Does what ggml's `examples/gpt-neox/convert-h5-to-ggml.py` and `quantize` did, without torch
and without the model in memory: reads `config.json` in either naming generation (spec §12),
the weights from `model.safetensors` or `pytorch_model.bin` (each single or sharded; the
pickle through the restricted unpickler), the vocab strings from `tokenizer.json`, and writes
the ggml file tensor by tensor, quantizing chunks of rows on the fly, with a journal that lets
a cancelled or crashed conversion continue where it stopped.
"""
from __future__ import annotations

import json
import mmap
import os
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import ModelFormatError
from engine.ggml_file import MAX_CTX, MAX_EMBD, MAX_LAYER, MAX_VOCAB, expected_tensors


# Buffers that some checkpoints save next to the weights; they are recomputed, never stored in ggml.
SKIPPED_SUFFIXES = (".attention.bias", ".attention.masked_bias", "rotary_emb.inv_freq")

# The only rotary base the ggml header can express: it has no field for it.
GGML_ROPE_BASE = 10000.0
# The smallest context worth converting: a prompt token and the token generated after it.
MIN_CTX = 2


class NeoXConfig:
    """The hyper-parameters of a GPT-NeoX checkpoint, read from either generation of config.json."""

    def __init__(self, config: dict, path: Path):
        self.path = path

        def field(name, most, least=1):
            if name not in config:
                raise ModelFormatError(path, None, f"missing field {name!r}")
            value = config[name]
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ModelFormatError(path, None, f"{name} = {value!r:.60} is not a positive integer")
            if value < least:
                raise ModelFormatError(path, None, f"{name} = {value} is too small (at least {least})")
            # the ggml reader's limits: a converted file beyond them would not load, and the
            # sizes here shape every list of tensors made from the config (2**31 layers did)
            if value > most:
                raise ModelFormatError(path, None, f"{name} = {value} is absurd (at most {most})")
            return value

        model_type = config.get("model_type", "gpt_neox")
        if model_type != "gpt_neox":
            raise ModelFormatError(path, None, f"model_type {model_type!r:.60} is not gpt_neox")
        self.n_vocab = field("vocab_size", MAX_VOCAB)
        self.n_ctx = field("max_position_embeddings", MAX_CTX, MIN_CTX)
        self.n_embd = field("hidden_size", MAX_EMBD)
        self.n_head = field("num_attention_heads", MAX_EMBD)
        self.n_layer = field("num_hidden_layers", MAX_LAYER)
        if self.n_embd % self.n_head:
            raise ModelFormatError(path, None, f"hidden_size {self.n_embd} is not a multiple of "
                                               f"num_attention_heads {self.n_head}")
        self.head_dim = self.n_embd // self.n_head
        # The MLP width is not stored in a ggml header: loaders assume 4 * n_embd.
        n_ff = config.get("intermediate_size", 4 * self.n_embd)
        if n_ff != 4 * self.n_embd:
            raise ModelFormatError(path, None, f"intermediate_size {n_ff} is not 4 * hidden_size; "
                                               "the ggml format cannot carry it")

        # Generation 1 (transformers 4.x, the hub's Pythia files): flat rotary_pct / rotary_emb_base.
        # Generation 2 (transformers 5.x): a rope_parameters dict. The defaults are transformers'.
        rope = config.get("rope_parameters") or {}
        if not isinstance(rope, dict):
            raise ModelFormatError(path, None, f"rope_parameters {rope!r} is not an object")
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        scaling = config.get("rope_scaling")
        if rope_type != "default" or scaling:
            raise ModelFormatError(path, None, f"rope scaling ({rope_type!r}, {scaling!r}) cannot be stored in ggml")
        rotary_pct = config.get("rotary_pct", rope.get("partial_rotary_factor", 0.25))
        base = config.get("rotary_emb_base", rope.get("rope_theta", GGML_ROPE_BASE))
        if not isinstance(rotary_pct, (int, float)) or not 0 <= rotary_pct <= 1:
            raise ModelFormatError(path, None, f"rotary fraction {rotary_pct!r} is not in [0, 1]")
        if isinstance(base, bool) or not isinstance(base, (int, float)) or base != GGML_ROPE_BASE:
            raise ModelFormatError(path, None, f"rotary base {base!r} is not 10000; the ggml format has no "
                                               "field for the base, so the file would run with the wrong one")
        # Python truncation, exactly as the original converter: int(0.25 * 80) = 20.
        self.n_rot = int(rotary_pct * self.head_dim)
        if self.n_rot % 2:      # rotary dimensions turn in pairs; transformers could not run it either
            raise ModelFormatError(path, None, f"rotary fraction {rotary_pct!r} of the head size {self.head_dim} "
                                               f"gives an odd number of rotary dimensions ({self.n_rot})")

        self.parallel_residual = bool(config.get("use_parallel_residual", True))
        self.tied_head = bool(config.get("tie_word_embeddings", False))
        self.attention_bias = bool(config.get("attention_bias", True))

        # Our forward pass (like ggml's) hard-codes exact GELU and LayerNorm eps 1e-5.
        act = config.get("hidden_act", "gelu")
        if act != "gelu":
            raise ModelFormatError(path, None, f"hidden_act {act!r} is not 'gelu' (exact erf GELU)")
        eps = config.get("layer_norm_eps", 1e-5)
        # (compared, not subtracted: an int of 400 digits does not convert to a float)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 1e-5 - 1e-12 <= eps <= 1e-5 + 1e-12:
            raise ModelFormatError(path, None, f"layer_norm_eps {eps!r:.60} is not 1e-5, which ggml hard-codes")

    @classmethod
    def from_file(cls, path) -> "NeoXConfig":
        path = Path(path)
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelFormatError(path, None, "config.json not found: not a Hugging Face model folder") from None
        except (OSError, ValueError) as e:      # not UTF-8, not JSON, or an int of more than 4300 digits
            raise ModelFormatError(path, None, f"cannot read config.json ({e})") from None
        except RecursionError:
            raise ModelFormatError(path, None, "config.json is nested too deeply") from None
        if not isinstance(config, dict):
            raise ModelFormatError(path, None, "config.json is not a JSON object")
        return cls(config, path)

    def hparams(self) -> dict:
        """The ggml header fields."""
        return dict(n_vocab=self.n_vocab, n_ctx=self.n_ctx, n_embd=self.n_embd, n_head=self.n_head,
                    n_layer=self.n_layer, n_rot=self.n_rot, par_res=int(self.parallel_residual))

    def ggml_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor of the ggml file, in the HF state_dict order, with its PyTorch shape."""
        return expected_tensors(self.n_vocab, self.n_embd, self.n_layer)


class CheckpointWeights:
    """The weight arrays of an HF folder, whichever file format holds them.

    Arrays are views on memory-mapped files (bfloat16 ones are widened on read); `release`
    hands a tensor's pages back to the kernel once it has been written, so that converting a
    model never keeps more than the tensor at hand resident.
    """

    CANDIDATES = ("model.safetensors.index.json", "model.safetensors",
                  "pytorch_model.bin.index.json", "pytorch_model.bin")

    def __init__(self, hf_dir: Path):
        from engine.safetensors_file import open_safetensors

        for name in self.CANDIDATES:
            path = hf_dir / name
            if path.is_file():
                break
        else:
            raise ModelFormatError(hf_dir, None, f"no weights found (looked for {', '.join(self.CANDIDATES)})")
        self.path = path
        if name.startswith("pytorch_model.bin"):
            shards = _torch_shards(path) if name.endswith(".index.json") else [path]
            state: dict[str, np.ndarray] = {}
            for shard in shards:
                state.update(_load_torch(shard))
            self.names = list(state)
            self.shapes = {k: v.shape for k, v in state.items()}
            self._array = state.__getitem__
        else:
            st = open_safetensors(path)
            self.names = st.names()
            self.shapes = {k: st.tensors[k].shape for k in self.names}
            self._array = st.array
        self.files = ([path.parent / f for f in sorted(set(_weight_map(path).values()))]
                      if name.endswith(".index.json") else [path])

    def array(self, name: str) -> np.ndarray:
        """The tensor as stored: a mapped view (bfloat16 of a pickle as its uint16 bits)."""
        return self._array(name)

    @staticmethod
    def to_float32(values: np.ndarray) -> np.ndarray:
        """Part of a tensor from `array` as float32 (uint16 here can only be bfloat16 bits)."""
        if values.dtype == np.uint16:
            from engine.safetensors_file import bf16_to_float32
            return bf16_to_float32(np.ascontiguousarray(values))
        return np.asarray(values, dtype=np.float32)

    @staticmethod
    def release(array: np.ndarray) -> None:
        """Drop the resident pages of the file mapping under `array` (they are re-read on demand).

        Pages of a mapped file count in the process's resident memory until the kernel needs
        them back; without this a conversion's RSS would grow to the whole checkpoint.
        """
        base = array
        while base is not None and not isinstance(base, mmap.mmap):
            # np.frombuffer(mapping) holds a memoryview, whose .obj is the mapping
            base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
        if base is not None and hasattr(base, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            base.madvise(mmap.MADV_DONTNEED)


def _weight_map(index_path: Path) -> dict[str, str]:
    """The `weight_map` of a sharded checkpoint's index: tensor name -> shard file name."""
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise ModelFormatError(index_path, None, f"not a checkpoint index with a weight_map ({e!r})") from None
    except RecursionError:
        raise ModelFormatError(index_path, None, "the checkpoint index is nested too deeply") from None
    for tensor, shard in weight_map.items():
        # A shard is a file next to the index; a path that would leave the folder is refused.
        if not isinstance(shard, str) or Path(shard).name != shard or shard in (".", ".."):
            raise ModelFormatError(index_path, None, f"tensor {tensor!r} maps to an invalid shard name {shard!r}")
    return weight_map


def _torch_shards(index_path: Path) -> list[Path]:
    """The shard files of a `pytorch_model.bin.index.json`, each checked to exist."""
    shards = []
    for shard in dict.fromkeys(_weight_map(index_path).values()):
        path = index_path.parent / shard
        if not path.is_file():
            raise ModelFormatError(index_path, None, f"shard {shard} listed in the index is missing")
        shards.append(path)
    return shards


def _load_torch(path: Path) -> dict[str, np.ndarray]:
    from engine.torch_pickle import load_torch_state_dict
    return load_torch_state_dict(path, widen_bf16=False)     # bf16 stays mapped: see to_float32


def map_tensor_names(config: NeoXConfig, weights: CheckpointWeights) -> dict[str, str | None]:
    """Match every ggml tensor to a checkpoint tensor, checking names and shapes."""
    available = {n for n in weights.names if not n.endswith(SKIPPED_SUFFIXES)}
    # The head: `embed_out` (4.x), `lm_head` (5.x), or the input embedding when tied.
    head = next((n for n in ("embed_out.weight", "lm_head.weight") if n in available), None)
    if head is None and config.tied_head:
        head = "gpt_neox.embed_in.weight"
    sources: dict[str, str | None] = {}
    expected = config.ggml_shapes()
    for name, shape in expected.items():
        source = head if name == "embed_out.weight" else name
        if source is None or source not in available:
            if not config.attention_bias and name.endswith((".query_key_value.bias", ".attention.dense.bias")):
                sources[name] = None       # attention_bias false: the ggml file needs explicit zeros
                continue
            raise ModelFormatError(weights.path, None, f"tensor {name!r} is missing"
                                   + (" (no embed_out/lm_head and tie_word_embeddings is false)"
                                      if name == "embed_out.weight" else ""))
        got = tuple(weights.shapes[source])
        if got != shape:
            raise ModelFormatError(weights.path, None, f"tensor {source!r} has shape {list(got)}, "
                                                       f"config.json implies {list(shape)}")
        sources[name] = source
    unknown = sorted(available - set(sources.values()) - {"embed_out.weight", "lm_head.weight"})
    if unknown:
        raise ModelFormatError(weights.path, None, f"unexpected tensors for GPT-NeoX: {unknown[:5]}")
    return sources


def read_vocab(hf_dir: Path, n_vocab: int) -> list[bytes]:
    """The ggml vocab strings: `tokenizer.decode([i])` as UTF-8, empty for ids past the tokenizer."""
    path = hf_dir / "tokenizer.json"
    if not path.is_file():
        warnings.warn(f"{path} not found: the converted file gets {n_vocab} empty vocab strings "
                      "and needs a tokenizer.json next to it to be usable", stacklevel=3)
        return [b""] * n_vocab
    from tokenizers import Tokenizer
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for malformed files
        raise ModelFormatError(path, None, f"cannot load tokenizer: {e}") from None
    vocab = []
    for i in range(n_vocab):
        if tokenizer.id_to_token(i) is None:
            vocab.append(b"")      # padding rows past the tokenizer (e.g. Pythia's 50277..50303)
        else:
            vocab.append(tokenizer.decode([i], skip_special_tokens=False).encode("utf-8"))
    return vocab


class ConversionCancelled(Exception):
    """The conversion was cancelled; the partial output and its journal are kept for a resume."""


class ConversionControl:
    """Cancel a running conversion from any thread; it stops between two chunks of a tensor."""

    def __init__(self):
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass
class ConversionProgress:
    """One progress report: values written of the total, the tensor at hand, seconds left (None: unknown)."""
    done: int
    total: int
    tensor: str
    tensors_done: int
    tensors_total: int
    eta: float | None
    resumed_at: int = 0


CHUNK_VALUES = 1 << 21      # values widened and quantized at a time: 8 MiB of float32
JOURNAL_FORMAT = 1


def partial_paths(out_path) -> tuple[Path, Path]:
    """Where a conversion into `out_path` keeps its unfinished output and its journal."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".part"), out_path.with_name(out_path.name + ".convert.json")


def source_fingerprint(weights: CheckpointWeights, hf_dir: Path) -> str:
    """Names, sizes and modification times of the input files: a resume needs the same inputs."""
    files = [hf_dir / "config.json", hf_dir / "tokenizer.json", weights.path, *weights.files]
    parts = []
    for f in dict.fromkeys(files):
        try:
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
        except FileNotFoundError:
            parts.append(f"{f.name}:-")
    return ";".join(parts)


def convert_hf(hf_dir, out_path, ftype: str = "f16", *, qnt_version: int | None = None,
               on_progress=None, control: ConversionControl | None = None,
               source_id: str | None = None) -> dict:
    """Convert a Hugging Face GPT-NeoX folder to a ggml file, tensor by tensor; returns the hparams.

    ftype is the storage type of the 2-D weights: f32, f16, or a quantization (q4_0, q4_1,
    q5_0, q5_1, q8_0; block layout `qnt_version`, default 2 as the quantize command), done on
    the fly in chunks of rows, so the largest buffer is one tensor's mapped source plus a chunk.
    The output is written to `<out>.part` and renamed when complete. After each tensor the
    journal `<out>.convert.json` records how far the fsynced file is good; a cancel
    (ConversionCancelled) or a crash leaves both, and the next call with the same inputs
    (`source_id`, else their sizes and times) continues after the last whole tensor.
    """
    from engine.ggml_writer import GGMLWriter, tensor_type_for
    from engine.quants import WRITABLE_QUANT_TYPES, quantize

    if ftype not in ("f32", "f16") + WRITABLE_QUANT_TYPES:
        raise ValueError(f"--type {ftype!r}: expected one of f32, f16, {', '.join(WRITABLE_QUANT_TYPES)}")
    if qnt_version is None:
        qnt_version = 2 if ftype in WRITABLE_QUANT_TYPES else 0
    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise ModelFormatError(hf_dir, None, "not a directory")
    control = control or ConversionControl()
    config = NeoXConfig.from_file(hf_dir / "config.json")
    weights = CheckpointWeights(hf_dir)
    sources = map_tensor_names(config, weights)
    shapes = config.ggml_shapes()
    vocab = read_vocab(hf_dir, config.n_vocab)
    hparams = config.hparams()
    part, journal_path = partial_paths(out_path)
    journal = {"format": JOURNAL_FORMAT, "type": ftype, "qnt_version": qnt_version,
               "source": source_id or source_fingerprint(weights, hf_dir), "tensors_done": 0, "offset": None}
    done_before = _resumable(journal, part, journal_path)
    writer = GGMLWriter(part, hparams, vocab, layout="gpt-neox", ftype=ftype,
                        qnt_version=qnt_version, resume_offset=done_before["offset"] if done_before else None)
    names = list(sources)
    total = sum(int(np.prod(shapes[n])) for n in names)
    start = done_before["tensors_done"] if done_before else 0
    done = resumed_at = sum(int(np.prod(shapes[n])) for n in names[:start])
    clock = time.monotonic()
    try:
        if start == 0:
            journal.update(tensors_done=0, offset=writer.sync())
            _write_journal(journal_path, journal)
        for index in range(start, len(names)):
            name = names[index]
            shape = shapes[name]
            target = tensor_type_for(name, len(shape), writer.weight_type)
            qv = 0 if target in ("f32", "f16") else qnt_version
            source = sources[name]
            values = (np.zeros(shape, np.float32) if source is None else weights.array(source))
            rows = values.reshape(-1, shape[-1]) if len(shape) > 1 else values.reshape(1, -1)
            step = max(1, CHUNK_VALUES // rows.shape[1])
            writer.begin_record(name, shape, target)
            for r in range(0, rows.shape[0], step):
                if control.cancelled:
                    raise ConversionCancelled(f"conversion to {Path(out_path).name} cancelled after "
                                              f"{index} of {len(names)} tensors; run it again to resume")
                chunk = CheckpointWeights.to_float32(rows[r:r + step])
                writer.write_data(quantize(target, qv, chunk.reshape(-1)))
                done += chunk.size
                if on_progress is not None:
                    elapsed = time.monotonic() - clock
                    rate = (done - resumed_at) / elapsed if elapsed > 0 else 0
                    on_progress(ConversionProgress(done, total, name, index, len(names),
                                                   (total - done) / rate if rate > 0 else None, resumed_at))
            if source is not None:
                CheckpointWeights.release(values)
            del values, rows
            journal.update(tensors_done=index + 1, offset=writer.sync())
            _write_journal(journal_path, journal)
    finally:
        writer.close()
    _replace_durably(part, Path(out_path))
    journal_path.unlink(missing_ok=True)
    return hparams


def _resumable(journal: dict, part: Path, journal_path: Path) -> dict | None:
    """The old journal when it describes this very conversion and its file is intact, else None."""
    try:
        old = json.loads(journal_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = (isinstance(old, dict) and all(old.get(k) == journal[k] for k in ("format", "type", "qnt_version", "source"))
            and isinstance(old.get("offset"), int) and isinstance(old.get("tensors_done"), int)
            and old["tensors_done"] > 0)
    if not same or not part.is_file() or part.stat().st_size < old["offset"]:
        return None
    return old


def _write_journal(path: Path, journal: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(journal, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _replace_durably(src: Path, dest: Path) -> None:
    """Rename the finished file into place and fsync the folder, so the rename survives a crash."""
    os.replace(src, dest)
    fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
