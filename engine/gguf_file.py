"""The GGUF reader: versions 2 and 3, architecture ``gptneox``, validated and memory-mapped.

Layout (``engine.gguf_constants``; spec ``shared/spec/gguf-gptneox.md``)::

    "GGUF" | uint32 version | uint64 n_tensors | uint64 n_kv
    n_kv x (string key, uint32 type, value) | n_tensors x (string name, uint32 n_dims,
    uint64 ne[n_dims], uint32 ggml type, uint64 offset) | padding | tensor data (aligned)

The reader presents what the backends take from a legacy ``GGMLFile``: the same hparams, a
vocab of bytes, and ``tensors`` under the legacy (Hugging Face) names with PyTorch shapes, so
``load_model`` and both backends run a GGUF file unchanged. Three differences are absorbed here:

* BF16 tensors are widened exactly to float32 (they are presented as "f32");
* the QKV rows of llama.cpp's converter ([all Q | all K | all V]) are presented in the per-head
  interleaved order the backends compute with: a permutation of whole rows (``row_order``),
  applied wherever the rows are read; which order a file has is ``qkv_layout``;
* the tokenizer comes from the metadata (``embedded_tokenizer``), exact, not rebuilt.

Every count, length and offset is checked against the file size before anything is allocated
or looped over, and every failure is a ModelFormatError naming the field or tensor.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from engine import gguf_constants as C
from engine.errors import ModelFormatError
from engine.ggml_file import (
    CHECK_CHUNK, MAX_CTX, MAX_EMBD, MAX_LAYER, MAX_VOCAB, WEIGHT_LIMIT, Cursor, MappedModelFile, TensorInfo,
    expected_tensors, read_file_rows,
)
from engine.gguf_tokenizer import EmbeddedTokenizer, vocab_bytes
from engine.quants import block_format, dequantize

MAX_STRING = 1 << 24         # bytes of one string value (a chat template is a few KB)
MAX_KEY = 1 << 16            # bytes of a key (the GGUF spec's limit)
MAX_NAME = 255               # bytes of a tensor name (ggml allows 63)
MAX_ARRAY = 1 << 24          # elements of one array
MAX_ARRAY_DEPTH = 3          # arrays of arrays of arrays
MAX_ENTRIES = 1 << 16        # metadata entries or tensors (a 1024-layer model has 12292 tensors)
MAX_DIMS = 4                 # GGML_MAX_DIMS
MAX_ALIGNMENT = 1 << 16
MIN_KV_BYTES = 8 + 4 + 1     # an empty key, a type, the smallest value
MIN_TENSOR_BYTES = 8 + 4 + 8 + 4 + 8
LN_EPS = 1e-5                # the only LayerNorm epsilon the backends compute with
ROPE_BASE = 10000.0          # likewise for the RoPE frequency base

# For types without a scale the legacy check knows: (byte offset of an fp16 scale in the block,
# the largest factor a value can have on it). A block's values are bounded by the sum of |scale| x
# factor, the rule the legacy reader applies to q4_0 .. q8_0 (|d| q_max + |m|).
SCALE_BOUNDS = {
    "q2_K": ((80, 15 * 3), (82, 15)),
    "q3_K": ((108, 32 * 4),),
    "q4_K": ((0, 63 * 15), (2, 63)),
    "q5_K": ((0, 63 * 31), (2, 63)),
    "q6_K": ((208, 128 * 32),),
    "iq4_nl": ((0, 127),),
    "iq4_xs": ((0, 32 * 127),),
}
BF16_LIMIT_BITS = 0x477F
KNOWN_VALUE_TYPES = frozenset(int(t) for t in C.ValueType)
KNOWN_GGML_TYPES = frozenset(int(t) for t in C.GGMLType)     # the largest bf16 magnitude within +-65504 (65280)


def qkv_row_order(n_embd: int, n_head: int) -> np.ndarray:
    """For each row of the interleaved QKV layout (head h, part s = q/k/v, dim d at row
    h*3*hd + s*hd + d), the row of the split layout that holds it (s*n_embd + h*hd + d)."""
    hd = n_embd // n_head
    j = np.arange(3 * n_embd, dtype=np.int64)
    h, s, d = j // (3 * hd), (j // hd) % 3, j % hd
    return s * n_embd + h * hd + d


def _runs(order: np.ndarray):
    """(position, first source row, length) of each run of consecutive source rows in order."""
    breaks = np.flatnonzero(np.diff(order) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [order.size]])
    return [(int(a), int(order[a]), int(b - a)) for a, b in zip(starts, ends)]


def _widen_bf16(raw: np.ndarray) -> np.ndarray:
    """bf16 bytes -> float32 values, exactly (bf16 is the top half of a float32)."""
    return (np.ascontiguousarray(raw).view("<u2").astype(np.uint32) << np.uint32(16)).view(np.float32)


@dataclass
class GGUFTensor(TensorInfo):
    """A GGUF tensor under its legacy name, as the backends read it.

    ``data`` is the stored bytes in file order. BF16 is presented as "f32" (``nbytes`` and
    ``row_bytes`` are then the float32 sizes); ``row_order``, when set, maps each presented row (or
    element, for the QKV bias) to the stored one.
    """

    gguf_name: str = ""
    stored_type: str = ""                    # the type name of the stored bytes ("bf16", "q4_K", ...)
    row_order: np.ndarray | None = None

    @property
    def display_name(self) -> str:
        return self.gguf_name

    @property
    def type_label(self) -> str:
        return C.TYPE_CODES[self.stored_type].name

    @property
    def stored_row_bytes(self) -> int:
        return self.data.size // (self.shape[0] if len(self.shape) == 2 else 1)

    def _stored_float32(self, raw: np.ndarray, n_values: int) -> np.ndarray:
        if self.stored_type == "bf16":
            return _widen_bf16(raw)
        return dequantize(self.type, self.qnt_version, raw, n_values)

    def to_float32(self) -> np.ndarray:
        x = self._stored_float32(self.data, self.n_values).reshape(self.shape)
        return x if self.row_order is None else x[self.row_order]

    def _stored_rows(self, indices) -> tuple[np.ndarray, int]:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return (idx if self.row_order is None else self.row_order[idx]), self.stored_row_bytes

    def _row_values(self, raw: np.ndarray, n_values: int) -> np.ndarray:
        return self._stored_float32(raw, n_values)

    def read_rows(self, fh, path: str, r0: int, r1: int, scratch: list) -> np.ndarray:
        stored = self.stored_row_bytes
        if self.row_order is None:
            raw = read_file_rows(fh, path, self.gguf_name, self.offset + r0 * stored, r1 - r0, stored, scratch)
        else:
            if scratch[0].size < (r1 - r0) * stored:
                scratch[0] = np.empty((r1 - r0) * stored, dtype=np.uint8)
            raw = scratch[0][:(r1 - r0) * stored].reshape(r1 - r0, stored)
            part = [np.empty(0, np.uint8)]
            for at, src, n in _runs(self.row_order[r0:r1]):
                part[0] = raw[at:at + n].reshape(-1)      # read straight into place
                read_file_rows(fh, path, self.gguf_name, self.offset + src * stored, n, stored, part)
        if self.stored_type == "bf16":
            return _widen_bf16(raw).view(np.uint8).reshape(r1 - r0, -1)
        return raw

    def first_bad_value(self) -> tuple[int, float] | None:
        if self.stored_type == "bf16":
            bits = self.data.view("<u2")
            for start in range(0, bits.size, CHECK_CHUNK):
                bad = np.flatnonzero((bits[start:start + CHECK_CHUNK] & 0x7FFF) > BF16_LIMIT_BITS)
                if bad.size:
                    i = start + int(bad[0])
                    return 2 * i, float(_widen_bf16(self.data[2 * i:2 * i + 2])[0])
            return None
        if self.stored_type not in SCALE_BOUNDS:
            return super().first_bad_value()
        nbytes = C.BLOCK_SIZES[C.TYPE_CODES[self.stored_type]][1]
        fields = SCALE_BOUNDS[self.stored_type]
        blocks = self.data.reshape(-1, nbytes)
        for start in range(0, blocks.shape[0], CHECK_CHUNK):
            chunk = blocks[start:start + CHECK_CHUNK]
            parts = [np.abs(np.ascontiguousarray(chunk[:, offset:offset + 2]).view("<f2")[:, 0].astype(np.float32))
                     * np.float32(factor) for offset, factor in fields]
            bad = np.flatnonzero(~(sum(parts) <= WEIGHT_LIMIT))
            if bad.size:
                i = int(bad[0])
                worst = max(range(len(fields)), key=lambda k: parts[k][i] if np.isfinite(parts[k][i]) else np.inf)
                offset = fields[worst][0]
                return (start + i) * nbytes + offset, float(chunk[i, offset:offset + 2].view("<f2")[0])
        return None


class GGUFCursor(Cursor):
    """Cursor reads of GGUF's fields: 64-bit counts, strings and typed values."""

    def u64(self, what: str) -> int:
        self.need(8, what)
        (value,) = struct.unpack_from("<Q", self.buf, self.pos)
        self.pos += 8
        return value

    def count(self, what: str, limit: int, min_bytes: int) -> int:
        """A uint64 count of things that each take at least min_bytes: checked before any loop."""
        start = self.pos
        n = self.u64(what)
        if n > limit or n * min_bytes > self.size - self.pos:
            self.fail(f"{what} is {n}, more than {'the file can hold' if n <= limit else limit}", start)
        return n

    def string(self, what: str, limit: int = MAX_STRING) -> str:
        start = self.pos
        n = self.u64(f"the length of {what}")
        if n > limit:
            self.fail(f"{what} claims {n} bytes (more than {limit})", start)
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"{what} is not UTF-8", start + 8)

    def value(self, vtype: int, key: str, depth: int = 0):
        """One metadata value of type vtype (arrays: numpy for numbers, lists otherwise)."""
        start = self.pos
        if vtype not in KNOWN_VALUE_TYPES:
            self.fail(f"metadata {key!r} has unknown value type {vtype}", start - 4)
        vtype = C.ValueType(vtype)
        if vtype == C.ValueType.STRING:
            return self.string(f"the value of {key!r}")
        if vtype != C.ValueType.ARRAY:
            dtype = np.dtype(C.SCALAR_DTYPES[vtype])
            self.need(dtype.itemsize, f"the value of {key!r}")
            value = np.frombuffer(self.buf, dtype, 1, self.pos)[0]
            self.pos += dtype.itemsize
            if vtype == C.ValueType.BOOL:
                if value > 1:
                    self.fail(f"metadata {key!r} is a bool of value {value}, not 0 or 1", start)
                return bool(value)
            return value.item()
        etype = self.u32(f"the element type of {key!r}")
        if etype not in KNOWN_VALUE_TYPES:
            self.fail(f"metadata {key!r} is an array of unknown value type {etype}", start)
        etype = C.ValueType(etype)
        if etype == C.ValueType.ARRAY and depth + 1 >= MAX_ARRAY_DEPTH:
            self.fail(f"metadata {key!r} nests arrays deeper than {MAX_ARRAY_DEPTH}", start)
        itemsize = np.dtype(C.SCALAR_DTYPES[etype]).itemsize if etype in C.SCALAR_DTYPES else None
        n = self.count(f"the length of array {key!r}", MAX_ARRAY, itemsize or 8 + (4 if etype == C.ValueType.ARRAY else 0))
        if itemsize is not None:
            self.need(n * itemsize, f"the elements of {key!r}")
            values = np.frombuffer(self.buf, np.dtype(C.SCALAR_DTYPES[etype]), n, self.pos).copy()
            self.pos += n * itemsize
            if etype == C.ValueType.BOOL:
                if values.size and values.max() > 1:
                    self.fail(f"metadata {key!r} holds a bool that is not 0 or 1", start)
                values = values.astype(bool)
            return values
        if etype == C.ValueType.STRING:
            return [self.string(f"element {i} of {key!r}") for i in range(n)]
        return [self.value(C.ValueType.ARRAY, key, depth + 1) for _ in range(n)]


@dataclass
class _TensorRecord:
    name: str
    ne: tuple[int, ...]
    code: int
    offset: int             # from the start of the data section
    record_at: int          # file offset of the record (for messages)


class GGUFFile(MappedModelFile):
    """A validated, memory-mapped GGUF file of a GPT-NeoX model.

    The attributes of ``GGMLFile`` (``path``, ``file_size``, ``layout`` = "gguf", ``hparams``,
    ``qnt_version`` = 2, ``ftype``, ``weight_type``, ``vocab``, ``tensors`` under the legacy
    names), plus ``version``, ``metadata`` (key -> value), ``metadata_types`` (key -> ValueType),
    ``alignment``, ``embedded_tokenizer``, and ``qkv_layout`` ("split" or "interleaved") with
    ``qkv_layout_source`` ("marker", or "unknown" until ``engine.qkv_layout`` decides).
    """

    format = "gguf"
    layout = "gguf"

    def _parse(self):
        cur = GGUFCursor(self.path, self._map, self.file_size)
        if bytes(self._map[:4]) != C.MAGIC:
            (magic,) = struct.unpack_from("<I", self._map, 0)
            cur.fail(f"wrong magic 0x{magic:08x}, expected 'GGUF'", 0)
        cur.pos = 4
        version = cur.u32("the version")
        if version not in C.READ_VERSIONS:
            if version == 1:
                cur.fail("GGUF version 1 (August 2023) is not supported: convert the model again", 4)
            if struct.unpack("<I", struct.pack(">I", version))[0] in C.READ_VERSIONS:
                cur.fail("this is a big-endian GGUF file; only little-endian files are supported", 4)
            cur.fail(f"unknown GGUF version {version} (versions 2 and 3 are supported)", 4)
        self.version = version
        n_tensors = cur.count("the tensor count", MAX_ENTRIES, MIN_TENSOR_BYTES)
        n_kv = cur.count("the metadata count", MAX_ENTRIES, MIN_KV_BYTES)
        self._read_metadata(cur, n_kv)
        records = [self._read_tensor_record(cur, i) for i in range(n_tensors)]
        self.alignment = self._alignment(cur)
        data_start = -(-cur.pos // self.alignment) * self.alignment
        if data_start > self.file_size:
            cur.fail(f"file truncated: the tensor data should start at byte {data_start}", cur.pos)
        self._read_hparams(cur)
        self._read_vocab(cur)
        self.tensors = self._make_tensors(cur, records, data_start)
        self._check_extents(cur)
        qkv = self.tensors["gpt_neox.layers.0.attention.query_key_value.weight"]
        self.weight_type = self._weight_type()
        self.qnt_version = C.BLOCK_QNT_VERSION
        self.ftype = self.hparams["ftype_raw"]
        self._qkv_order = qkv_row_order(self.hparams["n_embd"], self.hparams["n_head"])
        self._read_qkv_marker(cur)
        self._check_weights(cur.fail)

    # -- metadata --------------------------------------------------------------------------------

    def _read_metadata(self, cur: GGUFCursor, n_kv: int) -> None:
        self.metadata: dict = {}
        self.metadata_types: dict = {}
        self._key_offsets: dict[str, int] = {}
        for i in range(n_kv):
            start = cur.pos
            key = cur.string(f"the key of metadata entry {i}", MAX_KEY)
            if key in self.metadata:
                cur.fail(f"metadata key {key!r} appears twice", start)
            vtype = cur.u32(f"the value type of {key!r}")
            self.metadata[key] = cur.value(vtype, key)
            self.metadata_types[key] = C.ValueType(vtype)
            self._key_offsets[key] = start

    def _fail_key(self, cur: GGUFCursor, key: str, message: str):
        cur.fail(f"metadata {key!r} {message}", self._key_offsets.get(key))

    def _get(self, cur: GGUFCursor, key: str, kinds: tuple, required: bool = True, default=None):
        if key not in self.metadata:
            if required:
                cur.fail(f"metadata {key!r} is missing", None)
            return default
        vtype = self.metadata_types[key]
        if vtype not in kinds:
            self._fail_key(cur, key, f"has type {vtype.name}, expected {' or '.join(k.name for k in kinds)}")
        return self.metadata[key]

    def _int(self, cur, key, lowest: int, highest: int, required: bool = True, default=None):
        value = self._get(cur, key, tuple(C.INTEGER_TYPES), required, default)
        if key in self.metadata and not lowest <= value <= highest:
            self._fail_key(cur, key, f"= {value} is outside {lowest}..{highest}")
        return value

    def _alignment(self, cur: GGUFCursor) -> int:
        alignment = self._get(cur, C.KEY_ALIGNMENT, (C.ValueType.UINT32,), False, C.DEFAULT_ALIGNMENT)
        if not 1 <= alignment <= MAX_ALIGNMENT or alignment & (alignment - 1):
            self._fail_key(cur, C.KEY_ALIGNMENT, f"= {alignment} is not a power of two within 1..{MAX_ALIGNMENT}")
        return alignment

    def _read_hparams(self, cur: GGUFCursor) -> None:
        arch = self._get(cur, C.KEY_ARCHITECTURE, (C.ValueType.STRING,))
        if arch != C.ARCHITECTURE:
            self._fail_key(cur, C.KEY_ARCHITECTURE, f"is {arch!r}: only GPT-NeoX models ({C.ARCHITECTURE!r}) are supported")
        n_embd = self._int(cur, C.KEY_EMBEDDING_LENGTH, 1, MAX_EMBD)
        n_head = self._int(cur, C.KEY_HEAD_COUNT, 1, MAX_EMBD)
        if n_embd % n_head:
            self._fail_key(cur, C.KEY_HEAD_COUNT, f"= {n_head} does not divide the embedding length {n_embd}")
        head_dim = n_embd // n_head
        n_rot = self._int(cur, C.KEY_ROPE_DIMENSION_COUNT, 0, head_dim, False, head_dim)
        if n_rot % 2:
            self._fail_key(cur, C.KEY_ROPE_DIMENSION_COUNT, f"= {n_rot} is odd")
        n_ff = self._int(cur, C.KEY_FEED_FORWARD_LENGTH, 1, 4 * MAX_EMBD)
        if n_ff != 4 * n_embd:
            self._fail_key(cur, C.KEY_FEED_FORWARD_LENGTH, f"= {n_ff}: GPT-NeoX models have 4 x n_embd = {4 * n_embd}")
        kv = self._int(cur, C.KEY_HEAD_COUNT_KV, 1, MAX_EMBD, False, n_head)
        if kv != n_head:
            self._fail_key(cur, C.KEY_HEAD_COUNT_KV, f"= {kv}: grouped-query attention is not GPT-NeoX (heads {n_head})")
        eps = self._get(cur, C.KEY_LAYER_NORM_EPS, (C.ValueType.FLOAT32, C.ValueType.FLOAT64))
        if not math.isclose(eps, LN_EPS, rel_tol=1e-6):
            self._fail_key(cur, C.KEY_LAYER_NORM_EPS, f"= {eps:g}: this engine runs GPT-NeoX models with {LN_EPS:g} only")
        base = self._get(cur, C.KEY_ROPE_FREQ_BASE, (C.ValueType.FLOAT32, C.ValueType.FLOAT64), False, ROPE_BASE)
        if base != ROPE_BASE:
            self._fail_key(cur, C.KEY_ROPE_FREQ_BASE, f"= {base:g}: this engine runs RoPE with base {ROPE_BASE:g} only")
        par_res = self._get(cur, C.KEY_USE_PARALLEL_RESIDUAL, (C.ValueType.BOOL,))
        ftype = self._int(cur, C.KEY_FILE_TYPE, 0, 1 << 16, False, -1)
        self.hparams = dict(
            n_vocab=0, n_ctx=self._int(cur, C.KEY_CONTEXT_LENGTH, 1, MAX_CTX), n_embd=n_embd, n_head=n_head,
            n_layer=self._int(cur, C.KEY_BLOCK_COUNT, 1, MAX_LAYER), n_rot=n_rot, par_res=int(par_res),
            ftype_raw=ftype,
        )

    def _read_vocab(self, cur: GGUFCursor) -> None:
        tokens = self._get(cur, C.KEY_TOKENS, (C.ValueType.ARRAY,))
        if not isinstance(tokens, list) or (tokens and not isinstance(tokens[0], str)):
            self._fail_key(cur, C.KEY_TOKENS, "is not an array of strings")
        n_vocab = len(tokens)
        if not 1 <= n_vocab <= MAX_VOCAB:
            self._fail_key(cur, C.KEY_TOKENS, f"holds {n_vocab} tokens, outside 1..{MAX_VOCAB}")
        types = self._get(cur, C.KEY_TOKEN_TYPE, (C.ValueType.ARRAY,), False)
        if types is not None:
            if not isinstance(types, np.ndarray) or types.dtype.kind not in "iu" or types.size != n_vocab:
                self._fail_key(cur, C.KEY_TOKEN_TYPE, f"must be {n_vocab} integers, one per token")
            if types.size and not (types.min() >= 0 and types.max() <= max(C.TokenType)):
                self._fail_key(cur, C.KEY_TOKEN_TYPE, f"holds a token type outside 0..{max(C.TokenType)}")
            types = [int(t) for t in types]
        merges = self._get(cur, C.KEY_MERGES, (C.ValueType.ARRAY,), False)
        if merges is not None and (not isinstance(merges, list) or (merges and not isinstance(merges[0], str))):
            self._fail_key(cur, C.KEY_MERGES, "is not an array of strings")
        ids = {}
        for name, key in (("bos", C.KEY_BOS_ID), ("eos", C.KEY_EOS_ID), ("unk", C.KEY_UNK_ID), ("pad", C.KEY_PAD_ID)):
            ids[name] = self._int(cur, key, 0, n_vocab - 1, False)
        model = self._get(cur, C.KEY_TOKENIZER_MODEL, (C.ValueType.STRING,), False, C.TOKENIZER_MODEL_GPT2)
        self.hparams["n_vocab"] = n_vocab
        self.embedded_tokenizer = EmbeddedTokenizer(model=model, tokens=tokens, token_types=types, merges=merges,
                                                     source=self.path, **{f"{k}_id": v for k, v in ids.items()})
        self.vocab = vocab_bytes(tokens, types)

    # -- tensors ---------------------------------------------------------------------------------

    def _read_tensor_record(self, cur: GGUFCursor, i: int) -> _TensorRecord:
        start = cur.pos
        name = cur.string(f"the name of tensor {i}", MAX_NAME)
        n_dims = cur.u32(f"the dimension count of {name!r}")
        if not 1 <= n_dims <= MAX_DIMS:
            cur.fail(f"tensor {name!r} has {n_dims} dimensions, expected 1..{MAX_DIMS}", cur.pos - 4)
        ne = tuple(cur.u64(f"the dimensions of {name!r}") for _ in range(n_dims))
        if any(not 1 <= d <= 1 << 40 for d in ne):
            cur.fail(f"tensor {name!r} has impossible dimensions {list(ne)}", cur.pos - 8 * n_dims)
        code = cur.u32(f"the type of {name!r}")
        offset = cur.u64(f"the data offset of {name!r}")
        return _TensorRecord(name, ne, code, offset, start)

    def _make_tensors(self, cur: GGUFCursor, records: list, data_start: int) -> dict:
        hp = self.hparams
        names = C.tensor_name_map(hp["n_layer"])
        expected = expected_tensors(hp["n_vocab"], hp["n_embd"], hp["n_layer"])
        tensors: dict[str, GGUFTensor] = {}
        for r in records:
            if r.name not in names:
                cur.fail(f"unknown tensor {r.name!r} (not a GPT-NeoX tensor of {hp['n_layer']} layers)", r.record_at)
            legacy = names[r.name]
            if legacy in tensors:
                cur.fail(f"tensor {r.name!r} appears twice", r.record_at)
            type_name = self._type_name(cur, r)
            ne = list(r.ne)
            while len(ne) > 1 and ne[-1] == 1:          # [n, 1] is a vector too
                ne.pop()
            shape = tuple(reversed(ne))
            if shape != expected[legacy]:
                cur.fail(f"tensor {r.name!r} has shape {list(r.ne)} (ggml order), but the metadata (n_vocab "
                         f"{hp['n_vocab']}, n_embd {hp['n_embd']}) needs {list(reversed(expected[legacy]))}", r.record_at)
            values, nbytes = C.BLOCK_SIZES[C.GGMLType(r.code)]
            if ne[0] % values:
                cur.fail(f"tensor {r.name!r}: row length {ne[0]} is not a multiple of the "
                         f"{C.GGMLType(r.code).name} block size {values}", r.record_at)
            n_values = math.prod(shape)
            stored = n_values // values * nbytes
            if r.offset % self.alignment:
                cur.fail(f"tensor {r.name!r}: data offset {r.offset} is not a multiple of the alignment "
                         f"{self.alignment}", r.record_at)
            offset = data_start + r.offset
            if offset + stored > self.file_size:
                cur.fail(f"tensor {r.name!r} ({C.GGMLType(r.code).name}, {stored} bytes at byte {offset}) "
                         f"runs past the end of the file ({self.file_size} bytes)", r.record_at)
            data = np.frombuffer(self._map, dtype=np.uint8, count=stored, offset=offset)
            presented = "f32" if type_name == "bf16" else type_name
            tensors[legacy] = GGUFTensor(legacy, presented, C.BLOCK_QNT_VERSION, shape, offset,
                                         stored * 2 if type_name == "bf16" else stored, data,
                                         gguf_name=r.name, stored_type=type_name)
        missing = [g for g, h in names.items() if h not in tensors]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            cur.fail(f"missing tensors: {', '.join(missing[:3])}{more}", None)
        return {h: tensors[h] for h in names.values()}

    def _type_name(self, cur: GGUFCursor, r: _TensorRecord) -> str:
        """The engine type name of a record's type, or a ModelFormatError naming type and tensor."""
        if r.code not in KNOWN_GGML_TYPES:
            cur.fail(f"tensor {r.name!r} has unknown ggml type code {r.code}", r.record_at)
        code = C.GGMLType(r.code)
        supported = ", ".join(c.name for c in C.TYPE_NAMES)
        if code not in C.TYPE_NAMES:
            cur.fail(f"tensor {r.name!r} has type {code.name}, which NeoX Writer does not run "
                     f"(supported: {supported})", r.record_at)
        name = C.TYPE_NAMES[code]
        if name not in ("f32", "f16", "bf16"):
            try:
                block_format(name, C.BLOCK_QNT_VERSION)
            except ValueError:
                cur.fail(f"tensor {r.name!r} has type {code.name}, which this version of NeoX Writer "
                         "cannot run yet", r.record_at)
        return name

    def _check_extents(self, cur: GGUFCursor) -> None:
        """Tensor data must not overlap (a hostile file could alias one tensor's bytes as another's)."""
        spans = sorted((t.offset, t.offset + t.data.size, t.gguf_name) for t in self.tensors.values())
        for (a0, a1, a), (b0, b1, b) in zip(spans, spans[1:]):
            if b0 < a1:
                cur.fail(f"the data of tensors {a!r} and {b!r} overlap", b0)

    def _weight_type(self) -> str:
        """The type most of the matrices' bytes have (files such as Q4_K_M mix types per tensor)."""
        total: dict[str, int] = {}
        for t in self.tensors.values():
            if len(t.shape) == 2 and t.name != "gpt_neox.embed_in.weight":
                total[t.stored_type] = total.get(t.stored_type, 0) + t.data.size
        return max(total, key=total.get)

    # -- the QKV row order -------------------------------------------------------------------------

    def _read_qkv_marker(self, cur: GGUFCursor) -> None:
        marker = self._get(cur, C.KEY_QKV_LAYOUT, (C.ValueType.STRING,), False)
        if marker is None:
            self.qkv_layout_source = "unknown"
            self.set_qkv_layout(C.QKV_SPLIT)          # llama.cpp's converter since mid-2024
            return
        if marker not in (C.QKV_SPLIT, C.QKV_INTERLEAVED):
            self._fail_key(cur, C.KEY_QKV_LAYOUT, f"is {marker!r}, expected {C.QKV_SPLIT!r} or {C.QKV_INTERLEAVED!r}")
        self.qkv_layout_source = "marker"
        self.set_qkv_layout(marker)

    def set_qkv_layout(self, layout: str) -> None:
        """Read the QKV weight and bias rows as stored in ``layout`` ("split" or "interleaved")."""
        if layout not in (C.QKV_SPLIT, C.QKV_INTERLEAVED):
            raise ValueError(f"unknown QKV layout {layout!r}")
        order = self._qkv_order if layout == C.QKV_SPLIT else None
        for i in range(self.hparams["n_layer"]):
            for part in ("weight", "bias"):
                self.tensors[f"gpt_neox.layers.{i}.attention.query_key_value.{part}"].row_order = order
        self.qkv_layout = layout
