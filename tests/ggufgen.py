"""GGUF fixtures for the tests, written with the `gguf` package's own GGUFWriter (the reference
implementation, so our reader is checked against llama.cpp's format rather than against itself).

`write_gguf(path, hparams, vocab, tensors, ...)` takes what tests/modelgen.py makes for the legacy
writer (float32 tensors under the legacy names, in the interleaved QKV order of Hugging Face) and
writes the same model as GGUF: QKV re-ordered the way llama.cpp's converter does it (or kept, for
an "old" file), each 2-D weight stored as `weight_type`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine import gguf_constants as C
from engine.tokenizer import alphabet_order, bytes_to_unicode

gguf = __import__("pytest").importorskip("gguf")


def split_qkv(t: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter: view [H, 3, hd, ...], concatenate the q, k and v slices of all heads."""
    rest = t.shape[1:]
    hd = t.shape[0] // 3 // n_head
    v = t.reshape(n_head, 3, hd, *rest)
    return np.concatenate([v[:, s].reshape(n_head * hd, *rest) for s in range(3)], axis=0)


def byte_level_tokens(n_vocab: int) -> tuple[list[str], list[int]]:
    """A byte-level vocabulary: <|endoftext|>, then single bytes in the trainers' order."""
    table = bytes_to_unicode()
    singles = [table[b] for b in alphabet_order()]
    tokens = ["<|endoftext|>"] + singles[:n_vocab - 1]
    tokens += [f"[PAD{i}]" for i in range(len(tokens), n_vocab)]
    types = [C.TokenType.CONTROL] + [C.TokenType.NORMAL] * min(n_vocab - 1, 256)
    types += [C.TokenType.UNUSED] * (n_vocab - len(types))
    return tokens, [int(t) for t in types]


def stored(name: str, t: np.ndarray, weight_type: str, types: dict | None):
    """(array, raw_dtype) of one tensor as the writer stores it."""
    kind = (types or {}).get(name, weight_type if t.ndim == 2 else "f32")
    if kind == "f32":
        return t.astype(np.float32), None
    if kind == "f16":
        return t.astype(np.float16), None
    qtype = C.TYPE_CODES[kind]
    raw = gguf.quants.quantize(t.astype(np.float32), gguf.GGMLQuantizationType(int(qtype)))
    return raw, gguf.GGMLQuantizationType(int(qtype))


def write_gguf(path, hparams: dict, tensors: dict, *, weight_type: str = "f16", types: dict | None = None,
               qkv_layout: str = C.QKV_SPLIT, marker: bool = True, tokens=None, token_types=None,
               merges=None, extra=None, version: int = 3, raw: dict | None = None) -> None:
    """Write a GGUF gptneox file of these weights (legacy names, HF QKV order).

    `types` overrides the stored type of single tensors (legacy name -> type name); `raw` gives a
    tensor's stored bytes directly (legacy name -> (uint8 array, type name)); `extra` adds
    metadata (key -> value, written with the writer's type inference); version 2 patches the
    version word (v2 and v3 are the same layout for little-endian files).
    """
    hp = hparams
    w = gguf.GGUFWriter(str(path), C.ARCHITECTURE)
    w.add_context_length(hp["n_ctx"])
    w.add_embedding_length(hp["n_embd"])
    w.add_block_count(hp["n_layer"])
    w.add_feed_forward_length(4 * hp["n_embd"])
    w.add_rope_dimension_count(hp["n_rot"])
    w.add_head_count(hp["n_head"])
    w.add_parallel_residual(bool(hp["par_res"]))
    w.add_layer_norm_eps(1e-5)
    if tokens is None:
        tokens, token_types = byte_level_tokens(hp["n_vocab"])
    w.add_tokenizer_model(C.TOKENIZER_MODEL_GPT2)
    w.add_token_list(tokens)
    if token_types is not None:
        w.add_token_types(token_types)
    if merges:
        w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    if marker:
        w.add_string(C.KEY_QKV_LAYOUT, qkv_layout)
    for key, value in (extra or {}).items():
        w.add_key_value(key, value, _value_type(value))
    names = {legacy: g for g, legacy in C.tensor_name_map(hp["n_layer"]).items()}
    for legacy, t in tensors.items():
        split = "query_key_value" in legacy and qkv_layout == C.QKV_SPLIT
        if split:
            t = split_qkv(t, hp["n_head"])
        if raw and legacy in raw:
            data, kind = raw[legacy]
            data = split_qkv(data, hp["n_head"]) if split else data     # whole rows move
            w.add_tensor(names[legacy], data, raw_dtype=gguf.GGMLQuantizationType(int(C.TYPE_CODES[kind])))
            continue
        data, qtype = stored(legacy, t, weight_type, types)
        if qtype is None:
            w.add_tensor(names[legacy], data)
        else:
            w.add_tensor(names[legacy], data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if version != 3:
        with open(path, "r+b") as f:
            f.seek(4)
            f.write(int(version).to_bytes(4, "little"))


def _value_type(value):
    if isinstance(value, bool):
        return gguf.GGUFValueType.BOOL
    if isinstance(value, int):
        return gguf.GGUFValueType.UINT32
    if isinstance(value, float):
        return gguf.GGUFValueType.FLOAT32
    if isinstance(value, str):
        return gguf.GGUFValueType.STRING
    return gguf.GGUFValueType.ARRAY


# -- raw files: every field under the test's control (duplicates, bad offsets, huge counts) --------

def gguf_string(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return len(raw).to_bytes(8, "little") + raw


def kv_entry(key: str, vtype: int, payload: bytes) -> bytes:
    return gguf_string(key) + int(vtype).to_bytes(4, "little") + payload


def u32_kv(key: str, value: int) -> bytes:
    return kv_entry(key, C.ValueType.UINT32, int(value).to_bytes(4, "little"))


def str_kv(key: str, value: str) -> bytes:
    return kv_entry(key, C.ValueType.STRING, gguf_string(value))


def str_array_kv(key: str, values: list[str]) -> bytes:
    payload = int(C.ValueType.STRING).to_bytes(4, "little") + len(values).to_bytes(8, "little")
    return kv_entry(key, C.ValueType.ARRAY, payload + b"".join(gguf_string(v) for v in values))


def tensor_record(name: str, ne: tuple, code: int, offset: int) -> bytes:
    out = gguf_string(name) + len(ne).to_bytes(4, "little")
    out += b"".join(int(d).to_bytes(8, "little") for d in ne)
    return out + int(code).to_bytes(4, "little") + int(offset).to_bytes(8, "little")


def raw_gguf(kvs: list[bytes], records: list[bytes], data: bytes, *, version: int = 3,
             n_kv: int | None = None, n_tensors: int | None = None, alignment: int = C.DEFAULT_ALIGNMENT) -> bytes:
    head = C.MAGIC + int(version).to_bytes(4, "little")
    head += (len(records) if n_tensors is None else n_tensors).to_bytes(8, "little")
    head += (len(kvs) if n_kv is None else n_kv).to_bytes(8, "little")
    head += b"".join(kvs) + b"".join(records)
    return head + b"\0" * (-len(head) % alignment) + data


RAW_HPARAMS = dict(n_vocab=8, n_ctx=8, n_embd=8, n_head=2, n_layer=1, n_rot=4, par_res=1)


def raw_model_parts(seed: int = 0, alignment: int = C.DEFAULT_ALIGNMENT):
    """(kvs, records, data) of a valid all-F32 one-layer model, for tests to damage."""
    from engine.ggml_file import expected_tensors
    hp = RAW_HPARAMS
    rng = np.random.default_rng(seed)
    kvs = [
        str_kv(C.KEY_ARCHITECTURE, C.ARCHITECTURE),
        u32_kv(C.KEY_CONTEXT_LENGTH, hp["n_ctx"]), u32_kv(C.KEY_EMBEDDING_LENGTH, hp["n_embd"]),
        u32_kv(C.KEY_BLOCK_COUNT, hp["n_layer"]), u32_kv(C.KEY_FEED_FORWARD_LENGTH, 4 * hp["n_embd"]),
        u32_kv(C.KEY_ROPE_DIMENSION_COUNT, hp["n_rot"]), u32_kv(C.KEY_HEAD_COUNT, hp["n_head"]),
        kv_entry(C.KEY_USE_PARALLEL_RESIDUAL, C.ValueType.BOOL, b"\x01"),
        kv_entry(C.KEY_LAYER_NORM_EPS, C.ValueType.FLOAT32, np.float32(1e-5).tobytes()),
        str_kv(C.KEY_TOKENIZER_MODEL, "gpt2"),
        str_array_kv(C.KEY_TOKENS, list("abcdefgh")),
        str_kv(C.KEY_QKV_LAYOUT, C.QKV_SPLIT),
    ]
    shapes = expected_tensors(hp["n_vocab"], hp["n_embd"], hp["n_layer"])
    records, blobs, offset = [], [], 0
    for gguf_name, legacy in C.tensor_name_map(hp["n_layer"]).items():
        shape = shapes[legacy]
        values = (rng.standard_normal(shape) * 0.3).astype("<f4").tobytes()
        records.append(tensor_record(gguf_name, tuple(reversed(shape)), C.GGMLType.F32, offset))
        blobs.append(values + b"\0" * (-len(values) % alignment))
        offset += len(blobs[-1])
    return kvs, records, b"".join(blobs)


DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"


def write_demo_gguf(folder, layout: str, marker: bool = False) -> Path:
    """The trained demo model as GGUF: its q5_1 blocks copied byte for byte, its tokenizer.json in
    the metadata, QKV in `layout`, with or without the marker. Written once per folder."""
    import json
    from engine.ggml_file import GGMLFile
    path = Path(folder) / f"demo-{layout}-{'marked' if marker else 'unmarked'}.gguf"
    if path.exists():
        return path
    with GGMLFile(DEMO / "demo-austen-q5_1.bin") as f:
        hp = dict(f.hparams)
        tensors = {n: t.to_float32() for n, t in f.tensors.items()}
        raw = {n: (np.array(t.data).reshape(t.shape[0], -1), t.type) for n, t in f.tensors.items() if len(t.shape) == 2}
    doc = json.loads((DEMO / "tokenizer.json").read_text(encoding="utf-8"))
    by_id = {i: t for t, i in doc["model"]["vocab"].items()}
    added = {a["id"]: a["content"] for a in doc["added_tokens"]}
    tokens = [added.get(i, by_id.get(i)) for i in range(hp["n_vocab"])]
    types = [int(C.TokenType.CONTROL if i in added else C.TokenType.NORMAL) for i in range(hp["n_vocab"])]
    merges = [" ".join(m) if isinstance(m, list) else m for m in doc["model"]["merges"]]
    write_gguf(path, hp, tensors, raw=raw, qkv_layout=layout, marker=marker, tokens=tokens, token_types=types,
               merges=merges)
    return path
