"""Reads R lazy-load data (`data/Rdata.rdb` + `Rdata.rdx`) without R.

An installed R package keeps its data sets as a lazy-load database: `Rdata.rdx` is an index
(an R serialization of `list(variables=, references=, compressed=)`, written gzip-compressed by
saveRDS) whose `variables` map each object name to `c(offset, length)` inside `Rdata.rdb`.
Each record there is a 4-byte big-endian uncompressed length followed by a zlib stream (or, for
`compressed=2/3`, a type byte and a bzip2/xz stream) holding the object's XDR serialization.

Only the part of the serialization format that data sets use is implemented: vectors (logical,
integer, double, character, list), pairlists (attributes), symbols, back references and the
special singletons. Anything else (closures, environments, byte code, external pointers) raises
RDataError naming the type and the byte offset, instead of guessing.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

# SEXP type codes (R's Rinternals.h) and the pseudo types of serialize.c.
NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 0, 1, 2, 3, 4, 5, 6
CHARSXP, LGLSXP, INTSXP, REALSXP, CPLXSXP, STRSXP = 9, 10, 13, 14, 15, 16
DOTSXP, VECSXP, EXPRSXP, RAWSXP = 17, 19, 20, 24
ALTREP_SXP, ATTRLANGSXP, ATTRLISTSXP = 238, 240, 239
EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP = 242, 241, 253
MISSINGARG_SXP, UNBOUNDVALUE_SXP, NILVALUE_SXP, REFSXP = 251, 252, 254, 255

IS_OBJECT, HAS_ATTR, HAS_TAG = 1 << 8, 1 << 9, 1 << 10
NA_INTEGER = -(2**31)
# A CHARSXP longer than this in a data set is certainly a corrupt length, not text.
MAX_STRING_BYTES = 1 << 30


class RDataError(ValueError):
    """Malformed or unsupported R serialization: names the source, the byte offset and the problem."""

    def __init__(self, source: str, offset: int | None, message: str):
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{source}{where}: {message}")


@dataclass
class RObject:
    """A deserialized R value: `value` holds the Python form, `attributes` R's attribute pairlist."""

    type: int
    value: object
    attributes: dict = field(default_factory=dict)

    @property
    def names(self) -> list | None:
        """The `names` attribute as a list of str, if present."""
        names = self.attributes.get("names")
        return names.value if names is not None else None


@dataclass
class Symbol:
    """An R symbol (a name); kept distinct from character data."""

    name: str


class XDRReader:
    """Decodes one XDR ('X\\n') R serialization stream into RObject / Symbol / None values."""

    def __init__(self, data: bytes, source: str):
        self.data = data
        self.source = source
        self.pos = 0
        self.refs: list = []  # objects that later REFSXP items point back to (1-based)

    # -- primitive reads ------------------------------------------------------------------
    def _need(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.data):
            raise RDataError(self.source, self.pos, f"needs {n} bytes, only {len(self.data) - self.pos} left")

    def int32(self) -> int:
        self._need(4)
        (v,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return v

    def length(self) -> int:
        n = self.int32()
        if n == -1:  # long vector: two more ints, upper and lower 32 bits
            n = (self.int32() << 32) + (self.int32() & 0xFFFFFFFF)
        if n < 0:
            raise RDataError(self.source, self.pos - 4, f"negative vector length {n}")
        return n

    def array(self, fmt: str, n: int, item_size: int) -> list:
        self._need(n * item_size)  # checked before any allocation
        values = list(struct.unpack_from(f">{n}{fmt}", self.data, self.pos))
        self.pos += n * item_size
        return values

    # -- the stream -------------------------------------------------------------------------
    def read_stream(self):
        """Reads the header and the one top-level object of the stream."""
        if self.data[:2] != b"X\n":
            raise RDataError(self.source, 0, f"expected XDR serialization header b'X\\n', got {self.data[:2]!r}")
        self.pos = 2
        version = self.int32()
        self.int32()  # R version that wrote it
        self.int32()  # minimal R version that can read it
        if version == 3:
            n = self.int32()
            if not 0 <= n <= 64:
                raise RDataError(self.source, self.pos - 4, f"native encoding name length {n} out of range")
            self._need(n)
            self.pos += n
        elif version != 2:
            raise RDataError(self.source, 2, f"unsupported serialization version {version} (expected 2 or 3)")
        return self.item()

    def item(self):
        at = self.pos
        flags = self.int32()
        kind = flags & 0xFF
        levels = flags >> 12
        if kind == NILVALUE_SXP:
            return None
        if kind in (EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP, MISSINGARG_SXP, UNBOUNDVALUE_SXP):
            return RObject(kind, None)
        if kind == REFSXP:
            index = flags >> 8 or self.int32()
            if not 1 <= index <= len(self.refs):
                raise RDataError(self.source, at, f"back reference {index} outside table of {len(self.refs)}")
            return self.refs[index - 1]
        if kind == SYMSXP:
            chars = self.item()
            symbol = Symbol(chars.value if isinstance(chars, RObject) else "")
            self.refs.append(symbol)
            return symbol
        if kind in (LISTSXP, LANGSXP, ATTRLISTSXP, ATTRLANGSXP, DOTSXP):
            return self.pairlist(flags)
        if kind == CHARSXP:
            return RObject(CHARSXP, self.charsxp(levels))
        if kind == ALTREP_SXP:
            return self.altrep(at)
        if kind in (LGLSXP, INTSXP):
            n = self.length()
            value = [None if v == NA_INTEGER else v for v in self.array("i", n, 4)]
        elif kind == REALSXP:
            value = self.array("d", self.length(), 8)
        elif kind == RAWSXP:
            n = self.length()
            self._need(n)
            value = self.data[self.pos:self.pos + n]
            self.pos += n
        elif kind == STRSXP:
            n = self.length()
            self._need(n * 4)  # every element takes at least its 4-byte flags word
            value = []
            for _ in range(n):
                element = self.item()
                if not isinstance(element, RObject) or element.type != CHARSXP:
                    raise RDataError(self.source, self.pos, "character vector element is not a CHARSXP")
                value.append(element.value)
        elif kind in (VECSXP, EXPRSXP):
            n = self.length()
            self._need(n * 4)
            value = [self.item() for _ in range(n)]
        else:
            raise RDataError(self.source, at, f"unsupported R object type {kind} (flags 0x{flags:x})")
        obj = RObject(kind, value)
        if flags & HAS_ATTR:
            obj.attributes = self.attributes()
        return obj

    def charsxp(self, levels: int) -> str | None:
        n = self.int32()
        if n == -1:
            return None  # NA_character_
        if not 0 <= n <= MAX_STRING_BYTES:
            raise RDataError(self.source, self.pos - 4, f"string length {n} out of range")
        self._need(n)
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        latin1 = bool(levels & (1 << 2))
        return raw.decode("latin-1" if latin1 else "utf-8", errors="strict" if not latin1 else "replace")

    def pairlist(self, flags: int) -> RObject:
        """A pairlist (attributes, argument lists), read iteratively along its CDR chain."""
        entries: list[tuple[str | None, object]] = []
        attributes: dict = {}
        kind = flags & 0xFF
        while True:
            if flags & HAS_ATTR:
                attributes = self.attributes()
            tag = self.item() if flags & HAS_TAG else None
            entries.append((tag.name if isinstance(tag, Symbol) else None, self.item()))
            at = self.pos
            flags = self.int32()
            if flags & 0xFF == NILVALUE_SXP:
                break
            if flags & 0xFF not in (LISTSXP, LANGSXP, ATTRLISTSXP, ATTRLANGSXP, DOTSXP):
                # A CDR that is not a pairlist cell: rewind and store it as a final untagged entry.
                self.pos = at
                entries.append((None, self.item()))
                break
        return RObject(kind, entries, attributes)

    def attributes(self) -> dict:
        attrs = self.item()
        if not isinstance(attrs, RObject) or not isinstance(attrs.value, list):
            raise RDataError(self.source, self.pos, "attributes are not a pairlist")
        return {name: value for name, value in attrs.value}

    def altrep(self, at: int) -> RObject:
        """ALTREP objects: only the compact integer/real sequences data frames use for row names."""
        info = self.item()
        state = self.item()
        attributes = self.item()
        class_name = info.value[0][1].name if isinstance(info, RObject) and info.value else "?"
        if class_name in ("compact_intseq", "compact_realseq") and isinstance(state, RObject):
            n, start, step = (int(v) for v in state.value[:3])
            if n < 0 or n > 1 << 40:
                raise RDataError(self.source, at, f"compact sequence length {n} out of range")
            obj = RObject(INTSXP if class_name == "compact_intseq" else REALSXP,
                          [start + i * step for i in range(n)])
        elif class_name == "wrap_string" and isinstance(state, RObject):
            obj = state.value[0]
        else:
            raise RDataError(self.source, at, f"unsupported ALTREP class {class_name!r}")
        if isinstance(attributes, RObject):
            obj.attributes = {name: value for name, value in attributes.value}
        return obj


def unserialize(data: bytes, source: str):
    """Decodes one R serialization (XDR) into RObject / Symbol / None."""
    return XDRReader(data, source).read_stream()


class LazyLoadDB:
    """An R package's lazy-load data base: `names()` lists the objects, `get(name)` decodes one."""

    def __init__(self, rdb_path: str | Path):
        self.rdb_path = Path(rdb_path)
        self.rdx_path = self.rdb_path.with_suffix(".rdx")
        index = unserialize(self._read_index(), str(self.rdx_path))
        parts = dict(zip(index.names or [], index.value))
        variables = parts.get("variables")
        if variables is None:
            raise RDataError(str(self.rdx_path), None, "index has no 'variables' element")
        self.compressed = int(parts["compressed"].value[0]) if "compressed" in parts else 1
        self.variables = {name: tuple(int(v) for v in entry.value)
                          for name, entry in zip(variables.names, variables.value)}

    def _read_index(self) -> bytes:
        raw = self.rdx_path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # saveRDS output: a gzip file
            return gzip.decompress(raw)
        return self._inflate(raw, self.rdx_path, 0, compressed=1)

    def names(self) -> list[str]:
        return list(self.variables)

    def get(self, name: str):
        if name not in self.variables:
            raise KeyError(f"{self.rdb_path}: no object {name!r} (has {', '.join(self.variables)})")
        offset, length = self.variables[name]
        with open(self.rdb_path, "rb") as f:
            f.seek(offset)
            record = f.read(length)
        if len(record) != length:
            raise RDataError(str(self.rdb_path), offset, f"record of {length} bytes truncated to {len(record)}")
        return unserialize(self._inflate(record, self.rdb_path, offset, self.compressed), f"{self.rdb_path}[{name}]")

    @staticmethod
    def _inflate(record: bytes, path: Path, offset: int, compressed: int) -> bytes:
        """Undoes R's R_compress1/2/3 framing: BE length, [type byte], compressed stream."""
        if len(record) < 5:
            raise RDataError(str(path), offset, "record shorter than its 4-byte length header")
        (size,) = struct.unpack_from(">I", record, 0)
        body = record[4:]
        if compressed in (2, 3):
            kind, body = body[:1], body[1:]
            if kind == b"0":
                data = body
            elif kind == b"2":
                data = bz2.decompress(body)
            elif kind == b"Z":
                data = lzma.decompress(body)
            else:
                data = zlib.decompress(body)
        else:
            data = zlib.decompress(body)
        if len(data) != size:
            raise RDataError(str(path), offset, f"record inflates to {len(data)} bytes, header says {size}")
        return data
