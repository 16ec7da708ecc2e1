"""Tokenizers: the exact Hugging Face `tokenizer.json` one, and a byte-level BPE rebuilt from a
legacy ggml file's vocab strings for when no tokenizer.json is at hand.

Both speak bytes: `token_bytes(id)` is a token's raw bytes and `decode(ids)` is always
`b"".join(token_bytes) .decode("utf-8", "replace")`, so the streaming decoder (stream_decode.py)
and whole-text decode agree byte for byte whichever tokenizer is used.

Why rebuild instead of ggml's greedy longest-match: greedy matching splits names such as
" Alice" or " Hakurei" differently from the BPE the model was trained with. The facts that make
a rebuild work for Pythia's GPT-NeoX-20B tokenizer (see shared/reference/README.md):
  - the merge of rank k produced id 245 + k, so "merge the adjacent pair whose concatenation has
    the lowest id" is the real BPE; tokenizers' BpeTrainer assigns ids the same way (specials,
    then the byte alphabet in code point order, then one id per merge), so small vocabs trained
    with it work too;
  - NFC normalization, then the added tokens (specials; runs of 2..24 spaces, leftmost-longest),
    then the GPT-2 pre-tokenizer regex, then BPE inside each piece;
  - the vocab strings are `tokenizer.decode([i])`, which turned every partial UTF-8 token into
    U+FFFD: the single bytes are repaired from their position (the alphabet follows GPT-2's
    bytes_to_unicode code point order), the multi-byte fragments cannot be and are left out.
"""
from __future__ import annotations

import heapq
import os
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

REPLACEMENT = "\ufffd".encode("utf-8")   # what decode([i]) wrote for partial UTF-8
SPECIAL_RE = re.compile(rb"<\|[^|<>\s]{1,64}\|>")
# Bytes that never occur in valid UTF-8; GPT-NeoX-20B's alphabet lacks exactly these.
NON_UTF8_BYTES = frozenset([0xC0, 0xC1, *range(0xF5, 0x100)])
# transformers' clean_up_tokenization removed the space before these (" ." -> ".").
CLEANUP_STARTS = tuple(".,!?")
# GPT-NeoX-20B: id 964 is " ." (a raw vocab) or "." (written with clean_up_tokenization).
NEOX_SIZE, NEOX_DOT_SPACE_ID = 50277, 964


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table used by byte-level BPE token strings."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


@lru_cache(maxsize=1)
def unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def alphabet_order() -> list[int]:
    """The 256 bytes in the order BPE trainers number them: by their bytes_to_unicode code point."""
    table = bytes_to_unicode()
    return sorted(range(256), key=lambda b: ord(table[b]))


class Tokenizer:
    """What the engine and the app need from a tokenizer. Subclasses set the attributes below and
    implement `encode` and `token_bytes`; `decode` is defined here once for all of them."""

    n_vocab: int            # the real tokenizer size; ids >= n_vocab are padding rows, never sampled
    eos_id: int = 0         # <|endoftext|>
    approximate: bool = False
    description: str = ""

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def token_bytes(self, token_id: int) -> bytes:
        raise NotImplementedError

    def decode(self, ids) -> str:
        """The text of `ids`; bytes that are not valid UTF-8 become U+FFFD (Python's 'replace')."""
        return b"".join(self.token_bytes(i) for i in ids).decode("utf-8", "replace")

    def _check_id(self, token_id: int, rows: int) -> None:
        if not 0 <= token_id < rows:
            raise ValueError(f"token id {token_id} is outside the vocabulary (0..{rows - 1})")


class HFTokenizer(Tokenizer):
    """A Hugging Face `tokenizer.json` run by the `tokenizers` library: the exact tokenizer."""

    def __init__(self, hf, source: str = "tokenizer.json", n_vocab: int | None = None):
        """`n_vocab`: the ids the tokenizer covers (default: as many as it has tokens). An id at or
        past it is refused (ValueError naming the token): the encoder would produce it, and no
        model row or byte table holds it."""
        self._hf = hf
        self.n_vocab = hf.get_vocab_size(with_added_tokens=True) if n_vocab is None else n_vocab
        token, top = max(hf.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1], default=("", -1))
        if top >= self.n_vocab:
            raise ValueError(f"{source}: token {token!r:.60} has id {top}, outside the {self.n_vocab} ids "
                             f"the tokenizer covers (0..{self.n_vocab - 1})")
        eos = hf.token_to_id("<|endoftext|>")
        self.eos_id = 0 if eos is None else eos
        self.approximate = False
        self.description = f"exact tokenizer from {source}"
        self._bytes = self._token_byte_table(hf, self.n_vocab)

    @classmethod
    def from_file(cls, path) -> HFTokenizer:
        from tokenizers import Tokenizer as RustTokenizer
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ValueError(f"{path}: tokenizer file not found")
        try:
            hf = RustTokenizer.from_file(path)
        except Exception as e:   # tokenizers raises a bare Exception for malformed files
            raise ValueError(f"{path}: not a usable tokenizer.json: {e}") from None
        return cls(hf, source=path)

    @staticmethod
    def _token_byte_table(hf, n_vocab: int) -> list[bytes]:
        """Raw bytes of every id: byte-level tokens through the inverse GPT-2 table, added tokens
        (which are stored as plain text, not byte-level characters) literally."""
        added = {i: t.content for i, t in hf.get_added_tokens_decoder().items()}
        u2b = unicode_to_bytes()
        table = []
        for i in range(n_vocab):
            if i in added:
                table.append(added[i].encode("utf-8"))
                continue
            token = hf.id_to_token(i)
            if token is None:
                table.append(b"")
            elif all(c in u2b for c in token):
                table.append(bytes(u2b[c] for c in token))
            else:   # not a byte-level vocab: the token string is the text itself
                table.append(token.encode("utf-8"))
        return table

    def encode(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids

    def token_bytes(self, token_id: int) -> bytes:
        if token_id >= self.n_vocab:
            if token_id < 0:
                self._check_id(token_id, self.n_vocab)
            return b""   # padding row of the model's embedding
        self._check_id(token_id, self.n_vocab)
        return self._bytes[token_id]


@dataclass
class VocabRepair:
    """What could be recovered from a ggml vocab: each id's real bytes and its role.

    `usable[i]` says whether the encoder may produce id i (lossy fragments, padding and specials
    are never produced by BPE; specials are matched literally instead)."""

    token_bytes: list[bytes]
    usable: list[bool]
    n_real: int                                   # ids past the last non-empty string are padding
    specials: dict[bytes, int] = field(default_factory=dict)
    space_runs: dict[int, int] = field(default_factory=dict)   # run length -> added token id
    repaired_bytes: int = 0                       # lossy single-byte tokens placed from their position
    unplaced_bytes: int = 0                       # lossy single-byte tokens that could not be placed
    lost_fragments: int = 0                       # lossy multi-byte fragments, unusable
    restored_cleanup: int = 0                     # " ." style tokens restored from a cleanup vocab
    cleanup_variant: bool = False
    neox_like: bool = False


def repair_vocab(vocab: list[bytes]) -> VocabRepair:
    """Recovers real token bytes from the strings a ggml converter stored (`decode([i])`)."""
    vocab = [bytes(v) for v in vocab]
    n_real = len(vocab)
    while n_real > 0 and vocab[n_real - 1] == b"":
        n_real -= 1
    tb = list(vocab)
    usable = [False] * len(vocab)
    rep = VocabRepair(token_bytes=tb, usable=usable, n_real=n_real)

    for i in range(n_real):
        if SPECIAL_RE.fullmatch(vocab[i]):
            rep.specials.setdefault(vocab[i], i)

    # Whitespace-run added tokens: the block of space-only strings at the end of the real vocab.
    i = n_real - 1
    while i >= 0 and len(vocab[i]) >= 2 and vocab[i] == b" " * len(vocab[i]):
        rep.space_runs.setdefault(len(vocab[i]), i)
        i -= 1
    added_start = i + 1

    base_ids = _repair_alphabet(vocab, rep)
    for i in range(n_real):
        s = vocab[i]
        if i in base_ids:
            usable[i] = True
        elif s == b"" or i >= added_start or SPECIAL_RE.fullmatch(s):
            pass
        elif REPLACEMENT in s:
            rep.lost_fragments += 1    # partial UTF-8 whose bytes decode([i]) destroyed
        else:
            usable[i] = True
    _restore_cleanup(rep)
    rep.neox_like = (n_real == NEOX_SIZE and vocab[0] == b"<|endoftext|>"
                     and vocab[1] == b"<|padding|>" and len(rep.space_runs) == 23)
    return rep


def _repair_alphabet(vocab: list[bytes], rep: VocabRepair) -> set[int]:
    """Finds the single-byte alphabet ids and gives the lossy ones (stored as U+FFFD) their byte.

    Trainers number the alphabet in bytes_to_unicode code point order, starting right after the
    specials. The ASCII entries anchor the alignment; the high bytes in between are taken to be
    either all 128 or the 115 that can occur in UTF-8 (GPT-NeoX-20B), whichever lines up."""
    singles = [i for i in range(rep.n_real) if len(vocab[i]) == 1]
    if not singles:
        return set()
    start = singles[0]
    ascii_present = {vocab[i][0] for i in singles if vocab[i][0] < 0x80}
    order = alphabet_order()
    for high in (set(range(0x80, 0x100)), set(range(0x80, 0x100)) - NON_UTF8_BYTES):
        expected = [b for b in order if b in ascii_present or b in high]
        ids = range(start, start + len(expected))
        if ids.stop > rep.n_real:
            continue
        if all(vocab[i] == (bytes([b]) if b < 0x80 else REPLACEMENT) for i, b in zip(ids, expected)):
            for i, b in zip(ids, expected):
                rep.token_bytes[i] = bytes([b])
            rep.repaired_bytes = sum(1 for b in expected if b >= 0x80)
            return set(ids)
    # No alignment: keep the ASCII singles; lossy single bytes stay unusable.
    rep.unplaced_bytes = sum(1 for i in range(start, rep.n_real) if vocab[i] == REPLACEMENT)
    return {i for i in singles if vocab[i][0] < 0x80}


def _restore_cleanup(rep: VocabRepair) -> None:
    """Undoes transformers' clean_up_tokenization (" ." -> "."), which made merged tokens collide
    with the punctuation tokens they were built from. Within a collision the lowest id keeps the
    literal string (true for 27 of GPT-NeoX-20B's 29 changed tokens; 2 stay swapped, 1 does
    not collide and cannot be found)."""
    first: dict[bytes, int] = {}
    for i, s in enumerate(rep.token_bytes):
        if not rep.usable[i]:
            continue
        if s in first and s.startswith(tuple(c.encode() for c in CLEANUP_STARTS)):
            spaced = b" " + s
            rep.cleanup_variant = True
            if spaced not in first:
                rep.token_bytes[i] = spaced
                rep.restored_cleanup += 1
                first[spaced] = i
        else:
            first.setdefault(s, i)


class RebuiltBPETokenizer(Tokenizer):
    """Byte-level BPE rebuilt from a legacy ggml vocab (`decode([i])` strings, no merges stored).

    Rank of a merge = id of its result, so each word is encoded by repeatedly merging the adjacent
    pair whose concatenation has the lowest id. Ids the vocab lost (partial UTF-8 fragments) are
    never produced; text that needs them falls back to smaller tokens, hence `approximate`."""

    def __init__(self, vocab: list[bytes], source: str = "the model file"):
        from tokenizers import pre_tokenizers   # the real GPT-2 regex, in Rust
        rep = repair_vocab(vocab)
        if not any(rep.usable[i] and len(rep.token_bytes[i]) == 1 for i in range(rep.n_real)):
            raise ValueError(f"{source}: the stored vocabulary has no single-byte tokens, so it is not a "
                             "byte-level BPE the tokenizer can be rebuilt from; give a tokenizer.json")
        self._repair = rep
        self._rows = len(rep.token_bytes)
        self.n_vocab = rep.n_real
        self.eos_id = rep.specials.get(b"<|endoftext|>", 0)
        self._ids: dict[bytes, int] = {}
        for i, s in enumerate(rep.token_bytes):
            if rep.usable[i]:
                self._ids.setdefault(s, i)      # lowest id wins: it is the earliest merge
        self._byte_ids = [self._ids.get(bytes([b])) for b in range(256)]
        self._pretokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        self._u2b = unicode_to_bytes()
        self._word_cache: dict[str, list[int]] = {}
        self._special_re = (re.compile("|".join(re.escape(s.decode()) for s in
                                                 sorted(rep.specials, key=len, reverse=True)))
                            if rep.specials else None)
        # Longest first: Python's alternation then matches leftmost-longest like HF's added tokens.
        self._space_re = (re.compile("|".join(" " * n for n in sorted(rep.space_runs, reverse=True)))
                          if rep.space_runs else None)
        # Bytes that cannot occur in UTF-8 text need no token; any other missing byte is dropped.
        self._missing_bytes = [b for b, i in enumerate(self._byte_ids) if i is None and b not in NON_UTF8_BYTES]
        self.approximate = bool(rep.lost_fragments or rep.unplaced_bytes or self._missing_bytes)
        self.description = self._describe(source)

    def _describe(self, source: str) -> str:
        rep = self._repair
        parts = [f"rebuilt from the vocabulary in {source} (no tokenizer.json)"]
        if rep.neox_like:
            parts.append("GPT-NeoX-20B vocab" + (", transformers clean-up variant" if rep.cleanup_variant else ""))
        if rep.repaired_bytes:
            parts.append(f"{rep.repaired_bytes} single-byte tokens repaired")
        if rep.lost_fragments:
            parts.append(f"approximate: {rep.lost_fragments} tokens are stored only as U+FFFD in the file, "
                         "so some emoji, CJK and rare accented characters split into more tokens "
                         "than the model was trained with")
        if self._missing_bytes:
            parts.append(f"approximate: {len(self._missing_bytes)} bytes have no token and are dropped when encoding")
        if rep.cleanup_variant:
            parts.append(f"{rep.restored_cleanup} clean-up damaged tokens restored")
        return "; ".join(parts)

    # -- encoding ---------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        # Lone surrogates (possible in a Python str) cannot be UTF-8: they become "?".
        text = text.encode("utf-8", "replace").decode("utf-8")
        ids: list[int] = []
        for piece, special in _split(text, self._special_re):
            if special:
                ids.append(self._repair.specials[piece.encode()])
                continue
            piece = unicodedata.normalize("NFC", piece)
            for chunk, run in _split(piece, self._space_re):
                if run:
                    ids.append(self._repair.space_runs[len(chunk)])
                    continue
                for word, _ in self._pretokenizer.pre_tokenize_str(chunk):
                    ids.extend(self._encode_word(word))
        return ids

    def _encode_word(self, word: str) -> list[int]:
        """BPE of one pre-token (given in byte-level characters), cached per word."""
        cached = self._word_cache.get(word)
        if cached is not None:
            return cached
        u2b, ranks = self._u2b, self._ids
        parts = [bytes([u2b[c]]) for c in word]
        parts = [p for p in parts if self._byte_ids[p[0]] is not None]
        parts = _merge_short(parts, ranks) if len(parts) <= LONG_WORD else _merge_long(parts, ranks)
        ids = [ranks[p] for p in parts]
        if len(self._word_cache) < 200_000:
            self._word_cache[word] = ids
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        self._check_id(token_id, self._rows)
        return self._repair.token_bytes[token_id]


LONG_WORD = 48   # bytes; longer pre-tokens (base64, long runs of letters) use the heap merge


def _merge_short(parts: list[bytes], ranks: dict[bytes, int]) -> list[bytes]:
    """BPE by rescanning: merge the adjacent pair with the lowest rank (leftmost on ties) until
    no pair is in the vocab. Quadratic, but fastest for the short words of ordinary prose."""
    while len(parts) > 1:
        best, best_rank = -1, None
        for k in range(len(parts) - 1):
            r = ranks.get(parts[k] + parts[k + 1])
            if r is not None and (best_rank is None or r < best_rank):
                best, best_rank = k, r
        if best < 0:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return parts


def _merge_long(parts: list[bytes], ranks: dict[bytes, int]) -> list[bytes]:
    """The same merges as `_merge_short` in O(n log n): candidate pairs sit in a heap ordered by
    (rank, position) over a linked list of parts; entries made stale by a merge are skipped."""
    n = len(parts)
    nxt = list(range(1, n + 1))
    nxt[-1] = -1
    prv = list(range(-1, n - 1))
    heap = []
    for i in range(n - 1):
        r = ranks.get(parts[i] + parts[i + 1])
        if r is not None:
            heap.append((r, i, parts[i], parts[i + 1]))
    heapq.heapify(heap)
    alive = [True] * n
    while heap:
        _, i, a, b = heapq.heappop(heap)
        j = nxt[i]
        # Parts only grow, so unchanged bytes at i and at its right neighbour mean a valid entry.
        if not alive[i] or parts[i] != a or j < 0 or parts[j] != b:
            continue
        parts[i] = a + b
        alive[j] = False
        nxt[i] = nxt[j]
        if nxt[j] >= 0:
            prv[nxt[j]] = i
        for left in (prv[i], i):
            right = nxt[left] if left >= 0 else -1
            if left >= 0 and right >= 0:
                r = ranks.get(parts[left] + parts[right])
                if r is not None:
                    heapq.heappush(heap, (r, left, parts[left], parts[right]))
    return [parts[i] for i in range(n) if alive[i]]


def _split(text: str, pattern):
    """Yields (piece, matched) for the stretches of `text` between matches of `pattern` and the
    matches themselves, in order, skipping empty stretches."""
    if pattern is None:
        if text:
            yield text, False
        return
    pos = 0
    for m in pattern.finditer(text):
        if m.start() > pos:
            yield text[pos:m.start()], False
        yield m.group(), True
        pos = m.end()
    if pos < len(text):
        yield text[pos:], False


def load_tokenizer(vocab: list[bytes] | None, tokenizer_json=None, source: str = "the model file",
                   embedded=None) -> Tokenizer:
    """The exact tokenizer when a tokenizer.json is given, else the one a GGUF file's metadata holds
    (`embedded`, an engine.gguf_tokenizer.EmbeddedTokenizer), else the BPE rebuilt from `vocab`."""
    if tokenizer_json:
        return HFTokenizer.from_file(tokenizer_json)
    if embedded is not None:
        return embedded.build()
    if not vocab:
        raise ValueError(f"{source} has no vocabulary and no tokenizer.json was given")
    return RebuiltBPETokenizer(vocab, source=source)
