"""Mutations of seed files: the byte-level ones every reader gets, and structure-aware ones for JSON.

A mutation draws its choices from a `Chooser`, so one set of operators serves two drivers:
`RandomChooser` (the long run: a seeded `random.Random`, fast and reproducible from the seed)
and `HypothesisChooser` (the quick run in the suite: hypothesis draws, so a failure shrinks to a
small case and is replayed from hypothesis' own seed).

Binary mutations know where a file's fields are (`Seed.fields`: offsets of the integers a
reader trusts, found by parsing the seed once) and write the integers that break readers
(0, -1, 2^31-1, the block sizes, ...) exactly there; blind bit flips and splices cover the rest.
JSON mutations edit the parsed document (swap a value for one of another type, drop or add a
key, nest deeply, huge or non-finite numbers) and sometimes damage the serialized text too.
"""
from __future__ import annotations

import copy
import json
import math
import random
import struct
from dataclasses import dataclass, field

# Integers that sit on the edges readers get wrong: signs, powers of two, block sizes, int32 limits.
BOUNDARY_INTS = (0, 1, -1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 255, 256, 1000, 1001, 2002,
                 4096, 65535, 65536, 1 << 20, (1 << 20) + 1, 1 << 24, 1 << 30, (1 << 31) - 1, -(1 << 31),
                 -(1 << 30), 0x7FFF, 0x8000)

# Float bit patterns (f32) that break arithmetic: infinities, NaN, the largest finite, a denormal.
BOUNDARY_F32 = (math.inf, -math.inf, math.nan, 3.4e38, -3.4e38, 1e-45, 0.0, -0.0, 65504.0, 1e30)
BOUNDARY_F16_BITS = (0x7C00, 0xFC00, 0x7E00, 0x7BFF, 0xFBFF, 0x0001, 0x0000, 0x8000)


class Chooser:
    """Where a mutation's choices come from."""

    def int(self, lo: int, hi: int) -> int:
        raise NotImplementedError

    def pick(self, items):
        return items[self.int(0, len(items) - 1)]

    def chance(self, one_in: int) -> bool:
        return self.int(0, one_in - 1) == 0

    def bytes(self, n: int) -> bytes:
        return bytes(self.int(0, 255) for _ in range(n))


class RandomChooser(Chooser):
    """Choices from a seeded random.Random (the long run)."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def bytes(self, n: int) -> bytes:
        return self.rng.randbytes(n)


class HypothesisChooser(Chooser):
    """Choices drawn by hypothesis (the quick run), so failures shrink."""

    def __init__(self, data):
        from hypothesis import strategies as st
        self.data, self.st = data, st

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(self.st.integers(lo, hi))

    def bytes(self, n: int) -> bytes:
        return self.data.draw(self.st.binary(min_size=n, max_size=n))


@dataclass
class Seed:
    """One seed file: its bytes, the offsets of int32 fields a reader trusts, and of float data."""

    name: str
    data: bytes
    fields: list[int] = field(default_factory=list)      # offsets of little-endian int32 fields
    f32_data: list[tuple[int, int]] = field(default_factory=list)   # (offset, count) of f32 values
    f16_data: list[tuple[int, int]] = field(default_factory=list)   # (offset, count) of f16 values


# -- byte-level mutations ----------------------------------------------------------------------

def _offset(ch: Chooser, data: bytearray, seed: Seed) -> int:
    """A position in the file, half the time a field boundary the seed's structure names."""
    if seed.fields and ch.chance(2):
        return min(ch.pick(seed.fields), max(len(data) - 1, 0))
    return ch.int(0, max(len(data) - 1, 0))


def truncate(ch, data, seed, others):
    cut = _offset(ch, data, seed) + ch.pick((0, 0, 1, 2, 3, 4, 8))
    del data[cut:]


def flip_bits(ch, data, seed, others):
    for _ in range(ch.int(1, 8)):
        if data:
            i = _offset(ch, data, seed)
            data[i] ^= 1 << ch.int(0, 7)


def boundary_int(ch, data, seed, others):
    """Overwrite an int32 field (or any 4 bytes) with a boundary value."""
    i = ch.pick(seed.fields) if seed.fields and not ch.chance(5) else _offset(ch, data, seed)
    value = ch.pick(BOUNDARY_INTS)
    if ch.chance(4):
        value += ch.int(-2, 2)
    packed = struct.pack("<q", value)[:4] if -(1 << 31) <= value < (1 << 32) else b"\xff\xff\xff\x7f"
    data[i:i + 4] = packed


def boundary_u64(ch, data, seed, others):
    """Overwrite 8 bytes (safetensors' header length, zip sizes) with a boundary value."""
    i = _offset(ch, data, seed)
    value = ch.pick((0, 1, 7, 8, 9, len(data), len(data) - 8, len(data) + 1, 1 << 31, 1 << 32, (1 << 63) - 1,
                     (1 << 64) - 1, 100 * 1024 * 1024, (100 * 1024 * 1024) + 1))
    data[i:i + 8] = struct.pack("<Q", value % (1 << 64))


def special_floats(ch, data, seed, others):
    """Write inf, NaN or huge values into a tensor's float data."""
    if seed.f32_data and (not seed.f16_data or ch.chance(2)):
        start, count = ch.pick(seed.f32_data)
        for _ in range(ch.int(1, 4)):
            i = start + 4 * ch.int(0, count - 1)
            data[i:i + 4] = struct.pack("<f", ch.pick(BOUNDARY_F32))
    elif seed.f16_data:
        start, count = ch.pick(seed.f16_data)
        for _ in range(ch.int(1, 4)):
            i = start + 2 * ch.int(0, count - 1)
            data[i:i + 2] = struct.pack("<H", ch.pick(BOUNDARY_F16_BITS))


def overwrite_random(ch, data, seed, others):
    i = _offset(ch, data, seed)
    n = ch.int(1, 16)
    data[i:i + n] = ch.bytes(n)


def insert_bytes(ch, data, seed, others):
    i = _offset(ch, data, seed)
    data[i:i] = ch.bytes(ch.int(1, 16)) if ch.chance(2) else bytes(ch.pick((1, 3, 4, 8)))


def delete_bytes(ch, data, seed, others):
    i = _offset(ch, data, seed)
    del data[i:i + ch.pick((1, 2, 3, 4, 8, 16, 64, 1000))]


def duplicate_chunk(ch, data, seed, others):
    """Repeat a stretch (a record twice, a vocab entry twice)."""
    if len(data) < 2:
        return
    i = _offset(ch, data, seed)
    j = min(len(data), i + ch.int(1, 4096))
    data[j:j] = data[i:j]


def splice(ch, data, seed, others):
    """This file's head with another seed's tail (two eras, two types, two versions)."""
    if not others:
        return
    other = ch.pick(others)
    cut_a = _offset(ch, data, seed)
    cut_b = ch.int(0, max(len(other.data) - 1, 0))
    if other.fields and ch.chance(2):
        cut_b = min(ch.pick(other.fields), len(other.data))
    data[cut_a:] = other.data[cut_b:]


BYTE_MUTATIONS = (truncate, flip_bits, boundary_int, boundary_int, boundary_int, boundary_u64, special_floats,
                  overwrite_random, insert_bytes, delete_bytes, duplicate_chunk, splice)


def mutate_bytes(ch: Chooser, seed: Seed, others: list[Seed] = (), max_steps: int = 4) -> bytes:
    """1..max_steps stacked byte-level mutations of a seed."""
    data = bytearray(seed.data)
    for _ in range(ch.int(1, max_steps)):
        ch.pick(BYTE_MUTATIONS)(ch, data, seed, others)
    return bytes(data)


# -- JSON mutations ----------------------------------------------------------------------------

def _deep(ch: Chooser):
    return _DeepValue(ch.pick((50, 1000, 100_000)))


class _DeepValue:
    """Nested empty lists, kept as a depth and written directly as text (as Python objects they
    would make the mutations themselves recurse too deeply once nested in each other)."""

    def __init__(self, depth: int):
        self.depth = depth


ODD_VALUES = (None, True, False, 0, -1, 1, 2 ** 31, 2 ** 63, -(2 ** 63), 10 ** 400, 1e308, -1e308, 0.5,
              math.inf, -math.inf, math.nan, "", "x" * 1000, "\u0000", "\ud800", "\u202e", [], {}, [None], {"": None},
              "1", "true", "null")


def _odd_value(ch: Chooser):
    if ch.chance(12):
        return _deep(ch)
    return copy.deepcopy(ch.pick(ODD_VALUES))     # a fresh [] or {}: later steps may edit it


def _paths(doc, prefix=()):
    """Every (container, key) in a JSON document, outermost first."""
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((doc, k))
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append((doc, i))
            out += _paths(v, prefix + (i,))
    return out


def _replace_value(ch, doc):
    spots = _paths(doc)
    if spots:
        container, key = ch.pick(spots)
        container[key] = _odd_value(ch)


def _drop_key(ch, doc):
    spots = [(c, k) for c, k in _paths(doc) if isinstance(c, dict)]
    if spots:
        container, key = ch.pick(spots)
        container.pop(key, None)


def _add_key(ch, doc):
    targets = [doc] + [c[k] for c, k in _paths(doc) if isinstance(c[k], dict)]
    target = ch.pick(targets)
    if isinstance(target, dict):
        target[ch.pick(("format", "version", "models", "entries", "x", "", "__proto__", "actions",
                        "prompt", "story", "size"))] = _odd_value(ch)


MAX_JSON_BYTES = 1 << 20    # mutated documents stay small: the rules are about what a reader trusts, not
                            # about parsing a big file, whose memory grows with its (checked) size


def _grow_list(ch, doc):
    lists = [c[k] for c, k in _paths(doc) if isinstance(c[k], list) and c[k]]
    if lists:
        target = ch.pick(lists)
        n = len(target)
        target.extend(target[:1] * ch.pick((1, 2, 100)))
        if len(dumps_lenient(doc)) > MAX_JSON_BYTES:
            del target[n:]


def _number_edge(ch, doc):
    spots = [(c, k) for c, k in _paths(doc) if isinstance(c[k], (int, float)) and not isinstance(c[k], bool)]
    if spots:
        container, key = ch.pick(spots)
        container[key] = ch.pick((0, -1, -(2 ** 31), 2 ** 31, 2 ** 53 + 1, 10 ** 30, 10 ** 400, -10 ** 400,
                                  math.inf, math.nan, 1e308, 0.1, container[key] + 1, container[key] - 1))


def _swap_root(ch, doc):
    return ch.pick(([], [doc], "text", 0, None, {"format": "neox-writer-story"}, {"prompt": 0}))


JSON_MUTATIONS = (_replace_value, _replace_value, _replace_value, _drop_key, _add_key, _grow_list,
                  _number_edge, _number_edge, _swap_root)


def dumps_lenient(doc) -> str:
    """JSON text of a document that may hold NaN/inf, unpaired surrogates and _DeepValue markers."""
    def encode(v):
        if isinstance(v, _DeepValue):
            return "[" * v.depth + "]" * v.depth
        if isinstance(v, dict):
            return "{" + ",".join(json.dumps(str(k)) + ":" + encode(x) for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ",".join(encode(x) for x in v) + "]"
        if isinstance(v, float):
            return "NaN" if v != v else "Infinity" if v == math.inf else "-Infinity" if v == -math.inf else repr(v)
        return json.dumps(v)
    return encode(doc)


def mutate_json(ch: Chooser, seed: Seed, others: list[Seed] = (), max_steps: int = 4) -> bytes:
    """Structure-aware edits of a JSON seed; a quarter of the time the text is damaged as well."""
    doc = json.loads(seed.data)
    for _ in range(ch.int(1, max_steps)):
        result = ch.pick(JSON_MUTATIONS)(ch, doc)
        if result is not None:
            doc = result
    text = dumps_lenient(doc).encode("utf-8", "surrogatepass")
    if len(text) > MAX_JSON_BYTES:
        text = seed.data
    if ch.chance(4):
        text = mutate_bytes(ch, Seed(seed.name, text), others, max_steps=2)
    if ch.chance(20):
        text = b"\xef\xbb\xbf" + text      # a UTF-8 byte order mark, as Windows editors write
    return text
