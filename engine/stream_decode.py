"""UTF-8-safe incremental detokenizer.

Byte-level BPE tokens are byte strings, and one character (an emoji, a CJK ideograph, an
accented letter) is often split across two or more tokens. Printing each token's bytes as soon
as it arrives would show U+FFFD for the halves; this decoder holds back an incomplete character
until the token that completes it arrives.
"""
from __future__ import annotations

import codecs


class StreamDecoder:
    """Turns token ids, one at a time, into text pieces that are always complete UTF-8.

    Invalid bytes become U+FFFD exactly as `bytes.decode("utf-8", "replace")` does, so the
    concatenation of every `feed` result and the final `flush` equals `tokenizer.decode(ids)`
    (Python's incremental UTF-8 decoder keeps that guarantee however the bytes are split)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        """The text that `token_id` completes (possibly "" while a character is incomplete)."""
        return self._utf8.decode(self.tokenizer.token_bytes(token_id), final=False)

    def pending(self) -> bytes:
        """The bytes of an incomplete character held back so far."""
        return self._utf8.getstate()[0]

    def flush(self) -> str:
        """The held-back remainder (an unfinished character becomes U+FFFD); the decoder is then
        ready for a new stream."""
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return text
