"""The legacy ggml GPT-NeoX file reader: header, vocab and tensor records of every 2023 variant.

File layout (spec §1-§3; everything little-endian, no alignment anywhere)::

    magic "lmgg" | 7 int32 (stablelm layout) or 8 int32 (gpt-neox layout: par_res before ftype)
    n_vocab x (uint32 length, bytes)
    records until EOF: n_dims, name_len, type, ne[n_dims], name, data

The file carries no version. The layout is decided by parsing through the vocab to the first
tensor record under both hypotheses (spec §1.4); the block format of each tensor by the layout,
the header ftype and the per-tensor type code, whose meaning changed between ggml commits (§4).
Every size and offset is checked against the file length before it is used, so a hostile file
is refused quickly and without large allocations. Tensor data stays memory-mapped.
"""
from __future__ import annotations

import mmap
import os
import struct
import threading
from dataclasses import dataclass, field

import numpy as np

from engine.errors import ModelFormatError
from engine.quants import block_format, dequantize

MAGIC = 0x67676D6C

# Header ftype ("mostly" type) codes and the type of the big matrices they mean (spec §4.2).
FTYPE_TO_TYPE = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 5: "q4_2", 6: "q4_3", 7: "q8_0", 8: "q5_0", 9: "q5_1"}
TYPE_TO_FTYPE = {v: k for k, v in FTYPE_TO_TYPE.items()}

# Per-tensor type codes by era (spec §4.1, §1.4 step 3).
CODES_E1 = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 5: "q4_2", 6: "q4_3"}      # ftype-style codes
CODES_E2_E3 = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 4: "q4_2", 6: "q5_0", 7: "q5_1", 8: "q8_0"}
CODES_E4 = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 6: "q5_0", 7: "q5_1", 8: "q8_0"}

# Sanity bounds for header values: far above any GPT-NeoX model, far below what would let a
# hostile header make us allocate or loop absurdly.
MAX_VOCAB = 1 << 20
MAX_CTX = 1 << 17
MAX_EMBD = 1 << 16
MAX_LAYER = 1024
MAX_TOKEN_BYTES = 1 << 16
MAX_NAME = 255

# Every weight of a GPT-NeoX file lies within the fp16 range: the models were trained in fp16 and
# the 2023 tools wrote f16 or values quantized from it. Within that bound no float32 attention
# score can reach -inf (LayerNorm bounds each layer's input), so the softmax sums of the kernels
# stay positive; an inf, a NaN or a scale beyond it is damage, refused with the tensor's name.
WEIGHT_LIMIT = 65504.0
# |q| at most, per quantized type: a block's values are d*q (+ m), so |d|*QUANT_MAX + |m| bounds them.
QUANT_MAX = {"q4_0": 8, "q4_1": 15, "q4_2": 8, "q4_3": 15, "q5_0": 16, "q5_1": 31, "q8_0": 128}
CHECK_CHUNK = 1 << 22        # values or blocks per step of the check (bounds its temporaries)

# Buffers the 2023 converter did not always skip; harmless to ignore when present.
IGNORED_SUFFIXES = (".attention.bias", ".attention.masked_bias", "rotary_emb.inv_freq")


def codes_for(layout: str, header_ftype: int, qnt_version: int) -> dict[int, str]:
    """The per-tensor type code table of a file (the meaning of code 6 depends on the era)."""
    if layout == "gpt-neox":
        # qnt_version 0 gpt-neox files predate E4 (ggml_type numbering of E2/E3, Q4_2 still there)
        return CODES_E2_E3 if qnt_version == 0 else CODES_E4
    if header_ftype == 6:          # an E1 q4_3 file: per-tensor codes are ftype-style
        return CODES_E1
    if header_ftype == 5:          # q4_2: code 5 from the E1 quantizer, 4 from E2/E3
        return {0: "f32", 1: "f16", 4: "q4_2", 5: "q4_2"}
    return CODES_E2_E3


def expected_tensors(n_vocab: int, n_embd: int, n_layer: int) -> dict[str, tuple[int, ...]]:
    """Every tensor a GPT-NeoX file must hold, with its PyTorch shape (spec §3.2)."""
    e, v = n_embd, n_vocab
    shapes: dict[str, tuple[int, ...]] = {"gpt_neox.embed_in.weight": (v, e)}
    for i in range(n_layer):
        p = f"gpt_neox.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (e,), p + "input_layernorm.bias": (e,),
            p + "post_attention_layernorm.weight": (e,), p + "post_attention_layernorm.bias": (e,),
            p + "attention.query_key_value.weight": (3 * e, e), p + "attention.query_key_value.bias": (3 * e,),
            p + "attention.dense.weight": (e, e), p + "attention.dense.bias": (e,),
            p + "mlp.dense_h_to_4h.weight": (4 * e, e), p + "mlp.dense_h_to_4h.bias": (4 * e,),
            p + "mlp.dense_4h_to_h.weight": (e, 4 * e), p + "mlp.dense_4h_to_h.bias": (e,),
        })
    shapes["gpt_neox.final_layer_norm.weight"] = (e,)
    shapes["gpt_neox.final_layer_norm.bias"] = (e,)
    shapes["embed_out.weight"] = (v, e)
    return shapes


@dataclass
class TensorInfo:
    """One tensor record: its block format and a zero-copy view of its bytes in the mapped file."""

    name: str
    type: str
    qnt_version: int
    shape: tuple[int, ...]        # PyTorch order: (rows, cols) = (ne1, ne0)
    offset: int                   # of the data, from the start of the file
    nbytes: int
    data: np.ndarray = field(repr=False)   # uint8 view of exactly nbytes

    @property
    def n_values(self) -> int:
        return int(np.prod(self.shape))

    @property
    def display_name(self) -> str:
        """The name the file itself gives the tensor (for messages)."""
        return self.name

    @property
    def type_label(self) -> str:
        """The tensor's stored type, as messages name it."""
        return self.type

    @property
    def row_bytes(self) -> int:
        return self.nbytes // (self.shape[0] if len(self.shape) == 2 else 1)

    def to_float32(self) -> np.ndarray:
        """The whole tensor dequantized to float32 in its PyTorch shape (a new array)."""
        return dequantize(self.type, self.qnt_version, self.data, self.n_values).reshape(self.shape)

    def first_bad_value(self) -> tuple[int, float] | None:
        """(byte offset in the tensor, value) of the first weight that is not finite or beyond
        WEIGHT_LIMIT (for quantized blocks: the bound |d|*QUANT_MAX + |m|), or None."""
        if self.type == "f16":      # every finite f16 is within the limit: look for exponent 31
            bits = self.data.view("<u2")
            for start in range(0, bits.size, CHECK_CHUNK):
                bad = np.flatnonzero((bits[start:start + CHECK_CHUNK] & 0x7C00) == 0x7C00)
                if bad.size:
                    i = start + int(bad[0])
                    return 2 * i, float(bits[i:i + 1].view("<f2")[0])
            return None
        if self.type == "f32":
            values = self.data.view("<f4")
            for start in range(0, values.size, CHECK_CHUNK):
                bad = np.flatnonzero(~(np.abs(values[start:start + CHECK_CHUNK]) <= WEIGHT_LIMIT))
                if bad.size:
                    i = start + int(bad[0])
                    return 4 * i, float(values[i])
            return None
        # Quantized: a cheap integer screen of the scale (and min) bits over all blocks, then the
        # exact bound on the few blocks the screen lets through (none in a sound file). Comparing
        # |x|'s bits is comparing |x| for floats; inf and NaN have the largest exponent and fail.
        fmt = block_format(self.type, self.qnt_version)
        width = 2 if fmt.scale_dtype == "f2" else 4
        float_t, bits_t = np.dtype("<" + fmt.scale_dtype), np.dtype(f"<u{width}")
        sign_off = np.array(0x7FFF if width == 2 else 0x7FFFFFFF, dtype=bits_t)
        d_limit = np.array(WEIGHT_LIMIT / 2 / QUANT_MAX[self.type], dtype=float_t).view(bits_t)
        m_limit = np.array(WEIGHT_LIMIT / 2, dtype=float_t).view(bits_t)
        blocks = self.data.reshape(-1, fmt.nbytes)
        for start in range(0, blocks.shape[0], CHECK_CHUNK):
            chunk = blocks[start:start + CHECK_CHUNK]
            suspect = (chunk[:, :width].view(bits_t)[:, 0] & sign_off) > d_limit
            if fmt.has_min:
                suspect |= (chunk[:, width:2 * width].view(bits_t)[:, 0] & sign_off) > m_limit
            for i in np.flatnonzero(suspect):
                d = float(chunk[i, :width].view(float_t)[0])
                m = float(chunk[i, width:2 * width].view(float_t)[0]) if fmt.has_min else 0.0
                if not abs(d) * QUANT_MAX[self.type] + abs(m) <= WEIGHT_LIMIT:
                    return (start + int(i)) * fmt.nbytes, d if not abs(m) > WEIGHT_LIMIT / 2 else m
        return None

    def rows(self, indices) -> np.ndarray:
        """Selected rows of a 2-D tensor dequantized to float32 (e.g. embedding lookups)."""
        idx, stored = self._stored_rows(indices)
        rows, cols = self.shape
        raw = self.data.reshape(rows, stored)[idx]
        return self._row_values(raw, idx.size * cols).reshape(idx.size, cols)

    def read_row_values(self, read_into, indices) -> np.ndarray:
        """``rows`` by file reads, ``read_into(offset, buffer, name)`` (``MappedModelFile.read_into``),
        rather than through the mapping: the rows read leave no pages of the file in this process's
        resident memory (reading the embedding through the mapping held 19-51 MiB of it after 96
        tokens at 410M-1.4B: the kernel maps a whole folio around each row)."""
        idx, stored = self._stored_rows(indices)
        cols = self.shape[1]
        raw = np.empty((idx.size, stored), np.uint8)
        for n, r in enumerate(idx.tolist()):
            read_into(self.offset + r * stored, memoryview(raw[n]), self.name)
        return self._row_values(raw, idx.size * cols).reshape(idx.size, cols)

    def _stored_rows(self, indices) -> tuple[np.ndarray, int]:
        """The stored rows of the presented ones, and a stored row's bytes."""
        return np.asarray(indices, dtype=np.int64).reshape(-1), self.row_bytes

    def _row_values(self, raw: np.ndarray, n_values: int) -> np.ndarray:
        return dequantize(self.type, self.qnt_version, raw, n_values)

    def read_rows(self, fh, path: str, r0: int, r1: int, scratch: list) -> np.ndarray:
        """Raw bytes of rows r0..r1 as uint8 [r1 - r0, row_bytes], by a file read, not the map
        (the load-time repack reads this way so that the file's pages do not also count in our
        resident memory).

        The bytes land in ``scratch[0]``, grown when too small and reused: fresh memory for every
        chunk cost a page fault per 4 KiB, a third of the load time of a big model.
        """
        row_bytes = self.row_bytes
        return read_file_rows(fh, path, self.name, self.offset + r0 * row_bytes, r1 - r0, row_bytes, scratch)


def read_file_rows(fh, path: str, name: str, offset: int, n_rows: int, row_bytes: int,
                   scratch: list, slot: int = 0) -> np.ndarray:
    """n_rows rows of row_bytes bytes from offset, read into ``scratch[slot]`` (grown when too small)."""
    size = n_rows * row_bytes
    if scratch[slot].size < size:
        scratch[slot] = np.empty(size, dtype=np.uint8)
    buf = scratch[slot][:size]
    fh.seek(offset)
    if fh.readinto(memoryview(buf)) != buf.size:
        raise ModelFormatError(path, offset, f"file truncated while reading tensor {name!r}")
    return buf.reshape(n_rows, row_bytes)


class Cursor:
    """Bounds-checked reads from the mapped file; every failure names the offset and the field."""

    def __init__(self, path: str, buf, size: int, pos: int = 0):
        self.path, self.buf, self.size, self.pos = path, buf, size, pos

    def fail(self, message: str, offset: int | None = None):
        raise ModelFormatError(self.path, self.pos if offset is None else offset, message)

    def need(self, n: int, what: str):
        if n < 0 or self.pos + n > self.size:
            self.fail(f"file truncated: {what} needs {n} bytes but only {self.size - self.pos} remain")

    def i32s(self, n: int, what: str) -> tuple[int, ...]:
        self.need(4 * n, what)
        values = struct.unpack_from(f"<{n}i", self.buf, self.pos)
        self.pos += 4 * n
        return values

    def u32(self, what: str) -> int:
        self.need(4, what)
        (value,) = struct.unpack_from("<I", self.buf, self.pos)
        self.pos += 4
        return value

    def take(self, n: int, what: str) -> bytes:
        self.need(n, what)
        data = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return data


@dataclass
class _Layout:
    """One hypothesis about the header (spec §1.4)."""

    name: str
    hparams: dict
    ftype_raw: int
    vocab_offset: int


class MappedModelFile:
    """A model file mapped read-only, with what every reader shares: opening, the weight check and
    closing. Subclasses parse in ``_parse()`` and fill ``tensors``."""

    format = ""                      # "ggml" or "gguf"
    embedded_tokenizer = None        # a GGUF file's tokenizer metadata (engine.gguf_tokenizer)

    def __init__(self, path):
        self.path = os.fspath(path)
        self._reader_lock = threading.Lock()
        self._reader = None            # the handle of read_into, opened on first use
        try:
            self.file_size = os.path.getsize(self.path)
            fh = open(self.path, "rb")
        except OSError as exc:
            raise ModelFormatError(self.path, None, f"cannot open: {exc.strerror or exc}") from exc
        with fh:
            if self.file_size < 4:
                raise ModelFormatError(self.path, 0, f"file truncated: {self.file_size} bytes, not even a magic number")
            self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self._parse()
        except BaseException:
            self.close()
            raise

    def _parse(self):
        raise NotImplementedError

    def _check_weights(self, fail) -> None:
        """Refuse a weight that is not finite or beyond WEIGHT_LIMIT (``fail(message, offset)``
        raises), handing back the pages the check touched."""
        for info in self.tensors.values():
            bad = info.first_bad_value()
            if bad is not None:
                where = "a value" if info.type in ("f32", "f16") else "the scale of a block"
                fail(f"tensor {info.display_name!r} ({info.type_label}) holds {where} of {bad[1]!r} at byte "
                     f"{bad[0]} of its data: weights must be finite and within +-{WEIGHT_LIMIT:g} (the fp16 range)",
                     info.offset + bad[0])
            self.release_pages(info.offset, info.data.size)

    def release_pages(self, offset: int, nbytes: int) -> None:
        """Drop the mapping's pages in [offset, offset + nbytes) from this process's resident memory.

        The weight check reads every weight through the mapping, and touched pages of a file mapping
        count as the process's own; without this, a 1.4B q4_0 model held its 0.8 GB file resident
        on top of the backend's repacked copy. The pages stay in the page cache, so the repack (or a
        later read through the mapping, as the embedding lookups do) finds them there. Windows has
        no madvise; the OS trims a read-only mapping's pages under pressure there.
        """
        if self._map is None or not hasattr(self._map, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = offset - offset % mmap.PAGESIZE
        end = min(offset + nbytes, self.file_size)
        if end > start:
            self._map.madvise(mmap.MADV_DONTNEED, start, end - start)

    # -- lifetime --------------------------------------------------------------------------------

    def read_into(self, offset: int, buf, name: str = "") -> None:
        """Fill ``buf`` with the file's bytes from ``offset`` by a read (os.preadv where there is one),
        not through the mapping; safe from several threads."""
        with self._reader_lock:
            if getattr(self, "_reader", None) is None:
                self._reader = open(self.path, "rb", buffering=0)
            reader = self._reader
            if not hasattr(os, "preadv"):           # Windows: a seek and a read, under the lock
                reader.seek(offset)
                got = reader.readinto(buf)
        if hasattr(os, "preadv"):
            got = os.preadv(reader.fileno(), [buf], offset)
        if got != len(buf):
            raise ModelFormatError(self.path, offset, f"file truncated while reading tensor {name!r}")

    def close(self):
        """Release the mapping (tensor views must not be used afterwards) and the reader."""
        with self._reader_lock:
            reader, self._reader = getattr(self, "_reader", None), None
        if reader is not None:
            reader.close()
        m = getattr(self, "_map", None)
        if m is not None:
            self.tensors = {}
            self._map = None
            try:
                m.close()
            except BufferError:
                pass        # numpy views still alive: the mapping goes when they do

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class GGMLFile(MappedModelFile):
    """A validated, memory-mapped legacy ggml GPT-NeoX file.

    Attributes: ``path``, ``file_size``, ``layout`` ("stablelm" or "gpt-neox"), ``hparams``
    (n_vocab, n_ctx, n_embd, n_head, n_layer, n_rot, par_res, ftype_raw), ``qnt_version``,
    ``ftype`` (header code without the version), ``weight_type``, ``vocab`` (list of bytes) and
    ``tensors`` (name -> TensorInfo).
    """

    format = "ggml"
    qkv_layout = "interleaved"      # per head [q | k | v], what the backends compute with

    # -- parsing ---------------------------------------------------------------------------------

    def _parse(self):
        cur = Cursor(self.path, self._map, self.file_size)
        (magic,) = struct.unpack_from("<I", self._map, 0)
        if magic != MAGIC:
            if self._map[:4] == b"GGUF":
                cur.fail("this is a GGUF file, not a legacy ggml file (expected magic 0x67676d6c 'lmgg')", 0)
            cur.fail(f"wrong magic 0x{magic:08x}, expected 0x67676d6c (a legacy ggml file)", 0)
        cur.pos = 4
        h = cur.i32s(7, "the header")
        h8 = struct.unpack_from("<i", self._map, 32)[0] if self.file_size >= 36 else None

        hypotheses = []
        if h8 is not None and h[6] in (0, 1):
            hypotheses.append(_Layout("gpt-neox", self._hparams(h[:6], par_res=h[6]), h8, 36))
        hypotheses.append(_Layout("stablelm", self._hparams(h[:6], par_res=1), h[6], 32))

        # Report the failure of the hypothesis that got furthest through the structure (header,
        # vocab, first tensor record, all records): that one describes the real problem. On a tie
        # the first, more plausible, hypothesis wins.
        errors = []
        for hyp in hypotheses:
            try:
                self._parse_as(hyp)
                return
            except ModelFormatError as exc:
                errors.append((getattr(exc, "stage", 0), -len(errors), exc))
        raise max(errors, key=lambda e: e[:2])[2]

    def _hparams(self, h, par_res: int) -> dict:
        n_vocab, n_ctx, n_embd, n_head, n_layer, n_rot = h
        return dict(n_vocab=n_vocab, n_ctx=n_ctx, n_embd=n_embd, n_head=n_head,
                    n_layer=n_layer, n_rot=n_rot, par_res=par_res)

    def _check_hparams(self, cur: Cursor, hp: dict):
        fields = ["n_vocab", "n_ctx", "n_embd", "n_head", "n_layer", "n_rot"]
        bounds = dict(n_vocab=MAX_VOCAB, n_ctx=MAX_CTX, n_embd=MAX_EMBD, n_head=MAX_EMBD, n_layer=MAX_LAYER, n_rot=MAX_EMBD)
        for i, name in enumerate(fields):
            value = hp[name]
            lowest = 0 if name == "n_rot" else 1
            if not lowest <= value <= bounds[name]:
                cur.fail(f"header field {name} = {value} is outside {lowest}..{bounds[name]}", 4 + 4 * i)
        if hp["n_embd"] % hp["n_head"]:
            cur.fail(f"n_embd {hp['n_embd']} is not a multiple of n_head {hp['n_head']}", 16)
        head_dim = hp["n_embd"] // hp["n_head"]
        if hp["n_rot"] > head_dim or hp["n_rot"] % 2:
            cur.fail(f"n_rot {hp['n_rot']} must be even and at most the head size {head_dim}", 24)

    def _parse_as(self, hyp: _Layout):
        cur = Cursor(self.path, self._map, self.file_size)
        try:
            self._parse_stages(cur, hyp)
        except ModelFormatError as exc:
            exc.stage = cur.stage
            raise

    def _parse_stages(self, cur: Cursor, hyp: _Layout):
        cur.stage = 0
        hp = hyp.hparams
        self._check_hparams(cur, hp)
        ftype_raw = hyp.ftype_raw
        qnt_version, ftype = divmod(ftype_raw, 1000) if hyp.name == "gpt-neox" else (0, ftype_raw)
        ftype_offset = hyp.vocab_offset - 4
        if ftype_raw < 0 or ftype not in FTYPE_TO_TYPE or qnt_version > 2:
            cur.fail(f"unknown file type {ftype_raw} in the header ({hyp.name} layout)", ftype_offset)
        if hyp.name == "gpt-neox" and hp["par_res"] not in (0, 1):
            cur.fail(f"par_res must be 0 or 1, got {hp['par_res']}", 28)

        # vocab: n_vocab length-prefixed strings
        cur.pos = hyp.vocab_offset
        vocab = []
        for i in range(hp["n_vocab"]):
            start = cur.pos
            n = cur.u32(f"the length of vocab entry {i}")
            if n > MAX_TOKEN_BYTES:
                cur.fail(f"vocab entry {i} claims {n} bytes (more than {MAX_TOKEN_BYTES})", start)
            vocab.append(cur.take(n, f"vocab entry {i}"))

        cur.stage = 1
        codes = codes_for(hyp.name, ftype, qnt_version)
        expected = expected_tensors(hp["n_vocab"], hp["n_embd"], hp["n_layer"])
        tensors: dict[str, TensorInfo] = {}
        while cur.pos < self.file_size:
            try:
                info = self._parse_record(cur, codes, qnt_version, first=not tensors)
            except ModelFormatError as exc:
                if not tensors and cur.stage == 1:
                    exc.args = (exc.args[0] + f" (the first tensor record should follow the {hp['n_vocab']}"
                                " vocab entries: is n_vocab right?)",)
                raise
            cur.stage = 2
            if info.name in tensors:
                cur.fail(f"tensor {info.name!r} appears twice", info.offset)
            if info.name not in expected:
                if info.name.endswith(IGNORED_SUFFIXES):
                    continue
                cur.fail(f"unknown tensor {info.name!r}", info.offset)
            if info.shape != expected[info.name]:
                cur.fail(f"tensor {info.name!r} has shape {list(info.shape)}, but the header "
                         f"(n_vocab {hp['n_vocab']}, n_embd {hp['n_embd']}) needs {list(expected[info.name])}",
                         info.offset)
            tensors[info.name] = info
        missing = [n for n in expected if n not in tensors]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            cur.fail(f"missing tensors: {', '.join(missing[:3])}{more}", self.file_size)

        self.layout = hyp.name
        self.hparams = dict(hp, ftype_raw=ftype_raw)
        self.qnt_version = qnt_version
        self.ftype = ftype
        self.vocab = vocab
        self.tensors = tensors
        self.weight_type = tensors["gpt_neox.layers.0.attention.query_key_value.weight"].type
        cur.stage = 3
        self._check_weights(cur.fail)

    def _parse_record(self, cur: Cursor, codes: dict, qnt_version: int, first: bool) -> TensorInfo:
        start = cur.pos
        n_dims, name_len, code = cur.i32s(3, "a tensor record header")
        if n_dims not in (1, 2):
            cur.fail(f"tensor record has n_dims = {n_dims}, expected 1 or 2", start)
        if not 1 <= name_len <= MAX_NAME:
            cur.fail(f"tensor name length {name_len} is outside 1..{MAX_NAME}", start + 4)
        if code not in codes:
            cur.fail(f"unknown tensor type code {code} for this file's era", start + 8)
        ne = cur.i32s(n_dims, "the tensor dimensions")
        if any(d <= 0 for d in ne):
            cur.fail(f"impossible tensor dimensions {list(ne)}", start + 12)
        raw_name = cur.take(name_len, "the tensor name")
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            cur.fail("tensor name is not UTF-8", cur.pos - name_len)
        if first and not (name.startswith("gpt_neox.") or name.startswith("embed_out")):
            cur.fail(f"first tensor is named {name[:40]!r}, not a GPT-NeoX tensor", cur.pos - name_len)
        type_name = codes[code]
        fmt = block_format(type_name, qnt_version if type_name not in ("q4_2", "q4_3") else 0)
        n_values = 1
        for d in ne:
            n_values *= d
        if ne[0] % fmt.values:
            cur.fail(f"tensor {name!r}: row length {ne[0]} is not a multiple of the {type_name} block size {fmt.values}", start + 12)
        nbytes = n_values // fmt.values * fmt.nbytes
        offset = cur.pos
        cur.need(nbytes, f"the data of tensor {name!r} ({type_name}, {nbytes} bytes)")
        cur.pos += nbytes
        data = np.frombuffer(self._map, dtype=np.uint8, count=nbytes, offset=offset)
        shape = tuple(reversed(ne))
        return TensorInfo(name, type_name, fmt.qnt_version, shape, offset, nbytes, data)
