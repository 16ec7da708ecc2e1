"""Counting a story's words (and, with a tokenizer, its tokens) for the status bar; no Qt."""
from __future__ import annotations

import re

WORD = re.compile(r"\w+(?:['’\-]\w+)*")      # "don't", "well-known" and "l’amour" are one word each


def count_words(text: str) -> int:
    return sum(1 for _ in WORD.finditer(text))


def count_tokens(tokenizer, text: str) -> int | None:
    """Tokens of `text` for the loaded model's tokenizer (None without one)."""
    return len(tokenizer.encode(text)) if tokenizer is not None and text else (0 if tokenizer else None)


def describe(words: int, tokens: int | None, selected: tuple[int, int | None] | None = None) -> str:
    """ "1,234 words · 1,702 tokens", or "12 of 1,234 words · 15 tokens selected"."""
    if selected is not None:
        sel_words, sel_tokens = selected
        tail = f" · {sel_tokens:,} tokens" if sel_tokens is not None else ""
        return f"{sel_words:,} of {words:,} words{tail} selected"
    tail = f" · {tokens:,} tokens" if tokens is not None else ""
    return f"{words:,} word{'s' if words != 1 else ''}{tail}"
