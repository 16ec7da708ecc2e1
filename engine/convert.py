"""Hugging Face GPT-NeoX checkpoint folder -> legacy ggml f32/f16 file (gpt-neox layout).

Does what ggml's `examples/gpt-neox/convert-h5-to-ggml.py` did, without torch: reads
`config.json` in either naming generation (spec §12), the weights from `model.safetensors`
(single or sharded) or `pytorch_model.bin` (restricted unpickler), the vocab strings from
`tokenizer.json`, and hands everything to `engine.ggml_writer.write_ggml`.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from engine.errors import ModelFormatError
from engine.ggml_file import expected_tensors

FTYPES = {"f32": 0, "f16": 1}

# Buffers that some checkpoints save next to the weights; they are recomputed, never stored in ggml.
SKIPPED_SUFFIXES = (".attention.bias", ".attention.masked_bias", "rotary_emb.inv_freq")

# The only rotary base the ggml header can express: it has no field for it.
GGML_ROPE_BASE = 10000.0


class NeoXConfig:
    """The hyper-parameters of a GPT-NeoX checkpoint, read from either generation of config.json."""

    def __init__(self, config: dict, path: Path):
        self.path = path

        def field(name, kind=int):
            if name not in config:
                raise ModelFormatError(path, None, f"missing field {name!r}")
            value = config[name]
            if kind is int and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise ModelFormatError(path, None, f"{name} = {value!r} is not a positive integer")
            return value

        model_type = config.get("model_type", "gpt_neox")
        if model_type != "gpt_neox":
            raise ModelFormatError(path, None, f"model_type {model_type!r} is not gpt_neox")
        self.n_vocab = field("vocab_size")
        self.n_ctx = field("max_position_embeddings")
        self.n_embd = field("hidden_size")
        self.n_head = field("num_attention_heads")
        self.n_layer = field("num_hidden_layers")
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
        if float(base) != GGML_ROPE_BASE:
            raise ModelFormatError(path, None, f"rotary base {base!r} is not 10000; the ggml format has no "
                                               "field for the base, so the file would run with the wrong one")
        # Python truncation, exactly as the original converter: int(0.25 * 80) = 20.
        self.n_rot = int(rotary_pct * self.head_dim)

        self.parallel_residual = bool(config.get("use_parallel_residual", True))
        self.tied_head = bool(config.get("tie_word_embeddings", False))
        self.attention_bias = bool(config.get("attention_bias", True))

        # Our forward pass (like ggml's) hard-codes exact GELU and LayerNorm eps 1e-5.
        act = config.get("hidden_act", "gelu")
        if act != "gelu":
            raise ModelFormatError(path, None, f"hidden_act {act!r} is not 'gelu' (exact erf GELU)")
        eps = config.get("layer_norm_eps", 1e-5)
        if not isinstance(eps, (int, float)) or abs(eps - 1e-5) > 1e-12:
            raise ModelFormatError(path, None, f"layer_norm_eps {eps!r} is not 1e-5, which ggml hard-codes")

    @classmethod
    def from_file(cls, path) -> "NeoXConfig":
        path = Path(path)
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelFormatError(path, None, "config.json not found: not a Hugging Face model folder") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelFormatError(path, None, f"cannot read config.json ({e})") from None
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
    """The weight arrays of an HF folder, whichever file format holds them."""

    def __init__(self, hf_dir: Path):
        from engine.safetensors_file import open_safetensors
        from engine.torch_pickle import load_torch_state_dict

        candidates = ["model.safetensors.index.json", "model.safetensors", "pytorch_model.bin"]
        for name in candidates:
            path = hf_dir / name
            if path.is_file():
                break
        else:
            if (hf_dir / "pytorch_model.bin.index.json").is_file():
                raise ModelFormatError(hf_dir / "pytorch_model.bin.index.json", None,
                                       "sharded pytorch_model.bin checkpoints are not supported; "
                                       "use the model.safetensors files")
            raise ModelFormatError(hf_dir, None, f"no weights found (looked for {', '.join(candidates)})")
        self.path = path
        if name == "pytorch_model.bin":
            state = load_torch_state_dict(path)
            self.names = list(state)
            self.shapes = {k: v.shape for k, v in state.items()}
            self._array = state.__getitem__
        else:
            st = open_safetensors(path)
            self.names = st.names()
            self.shapes = {k: st.tensors[k].shape for k in self.names}
            self._array = st.array

    def array(self, name: str) -> np.ndarray:
        return self._array(name)


class ConvertedTensors(Mapping):
    """ggml name -> float32 array, widened one tensor at a time when the writer asks for it.

    Keeping the values lazy means converting a 12B fp16 checkpoint does not hold a float32 copy
    of the whole model in memory.
    """

    def __init__(self, weights: CheckpointWeights, sources: dict[str, str | None], shapes: dict):
        self.weights = weights
        self.sources = sources        # ggml name -> checkpoint name (None: zero bias)
        self.shapes = shapes

    def __getitem__(self, name: str) -> np.ndarray:
        source = self.sources[name]
        if source is None:
            return np.zeros(self.shapes[name], dtype=np.float32)
        return np.asarray(self.weights.array(source), dtype=np.float32)

    def __iter__(self):
        return iter(self.sources)

    def __len__(self):
        return len(self.sources)


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


def convert_hf(hf_dir, out_path, ftype: str = "f16") -> dict:
    """Convert a Hugging Face GPT-NeoX folder to a ggml file; returns the header hparams written."""
    if ftype not in FTYPES:
        raise ValueError(f"--type {ftype!r}: expected one of {', '.join(FTYPES)}")
    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise ModelFormatError(hf_dir, None, "not a directory")
    config = NeoXConfig.from_file(hf_dir / "config.json")
    weights = CheckpointWeights(hf_dir)
    sources = map_tensor_names(config, weights)
    tensors = ConvertedTensors(weights, sources, config.ggml_shapes())
    vocab = read_vocab(hf_dir, config.n_vocab)
    hparams = config.hparams()
    from engine.ggml_writer import write_ggml
    write_ggml(out_path, hparams, vocab, tensors, layout="gpt-neox", ftype=FTYPES[ftype], qnt_version=0)
    return hparams
