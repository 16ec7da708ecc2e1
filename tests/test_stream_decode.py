"""Streaming decode: pieces are complete UTF-8 and their concatenation is exactly decode(ids),
however a character's bytes are split across tokens."""
from __future__ import annotations

import itertools

import pytest
from tokenizers import Tokenizer as RustTokenizer

from conftest import FIXTURES_DIR
from engine.stream_decode import StreamDecoder
from engine.tokenizer import HFTokenizer, Tokenizer

SAMPLES = ["😀", "漢字", "Zoë", "é😀漢", "👍🏽", "Å—“q”", "❤️", "한국어"]
INVALID = [b"\xff", b"\xf0\x9f\x98", b"a\xe2\x28\xa1", b"\xed\xa0\x80", b"\xc3", b"\xe6\xbc", b"\x80\x80z"]


class ByteTableTokenizer(Tokenizer):
    """A tokenizer whose tokens are arbitrary byte strings given by the test."""

    def __init__(self, tokens: list[bytes]):
        self.tokens = tokens
        self.n_vocab = len(tokens)

    def token_bytes(self, token_id: int) -> bytes:
        return self.tokens[token_id]


def splits(data: bytes):
    """Every way to cut `data` into consecutive non-empty pieces (2**(n-1) of them)."""
    n = len(data)
    for cuts in itertools.product((False, True), repeat=n - 1):
        pieces, start = [], 0
        for k, cut in enumerate(cuts, start=1):
            if cut:
                pieces.append(data[start:k])
                start = k
        pieces.append(data[start:])
        yield pieces


def stream(tokenizer, ids) -> list[str]:
    d = StreamDecoder(tokenizer)
    return [d.feed(i) for i in ids] + [d.flush()]


@pytest.mark.parametrize("data", [s.encode("utf-8") for s in SAMPLES] + INVALID)
def test_every_split_concatenates_to_the_decode(data):
    assert len(data) <= 14   # 2**13 splits at most
    for pieces in splits(data):
        tok = ByteTableTokenizer(pieces)
        ids = list(range(len(pieces)))
        out = stream(tok, ids)
        assert "".join(out) == tok.decode(ids) == data.decode("utf-8", "replace")


@pytest.mark.parametrize("text", SAMPLES)
def test_pieces_are_whole_characters(text):
    """Byte by byte, nothing is emitted until a character is complete and no U+FFFD appears."""
    data = text.encode("utf-8")
    tok = ByteTableTokenizer([bytes([b]) for b in data])
    d = StreamDecoder(tok)
    pieces = [d.feed(i) for i in range(len(data))]
    assert d.flush() == ""
    assert "\ufffd" not in "".join(pieces)
    assert [p for p in pieces if p] == list(text)
    assert d.pending() == b""


def test_flush_ends_an_unfinished_character_and_resets():
    tok = ByteTableTokenizer([b"ab\xe6", b"\xbc", b"x"])
    d = StreamDecoder(tok)
    assert d.feed(0) == "ab" and d.feed(1) == "" and d.pending() == b"\xe6\xbc"
    assert d.flush() == "\ufffd"
    assert d.feed(2) == "x"       # a new stream after flush


def test_padding_ids_stream_nothing():
    rust = RustTokenizer.from_file(str(FIXTURES_DIR / "tokenizer.json"))
    tok = HFTokenizer(rust)
    text = "Zoë 😀 漢字 Ångström"
    ids = tok.encode(text)
    with_padding = ids[:2] + [tok.n_vocab, tok.n_vocab + 5] + ids[2:]
    out = stream(tok, with_padding)
    assert "".join(out) == tok.decode(with_padding) == text
    assert all("\ufffd" not in piece for piece in out)
    # The fixture vocab is small: the emoji and CJK take several tokens, some of them partial.
    assert any(p == "" for p in out[:-1])
