"""Phrase bans: text that must never appear in a generation, enforced by backtracking.

KoboldCpp's `banned_tokens` (SillyTavern's `banned_strings`, KoboldCpp's "anti-slop"): a phrase
is usually several tokens, and which tokens spell it depends on the text around it, so no
logit ban can prevent it. Instead the generator holds back every generated token that could
still be the start of a banned phrase. When a phrase is completed, the generator rewinds to
the token where it began, bans that token at that position, and samples again from there.
Held-back text is never emitted, so a banned phrase never reaches the reader.

As in KoboldCpp, phrases are compared case-insensitively (ASCII letters) on the bytes of the
tokens, and a ban of a single character bans every token containing it instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Backtracking stops (the generation ends as if out of tokens) after this many rewinds per
# generated token: a model that insists on a banned phrase cannot spin forever.
MAX_REWINDS_PER_TOKEN = 8


class PhraseBans:
    """The banned phrases of one request, prepared for a tokenizer.

    `token_ids` are the tokens banned outright (those containing a banned single character);
    `phrases` are the lower-cased byte strings the generator watches for.
    """

    def __init__(self, phrases, tokenizer):
        self.phrases: list[bytes] = []
        single: list[bytes] = []
        for phrase in phrases:
            word = phrase.encode("utf-8").lower()
            if not word:
                continue
            if len(word) < 2 and len(tokenizer.encode(word.decode("utf-8", errors="ignore"))) == 1:
                single.append(word)
            elif word not in self.phrases:
                self.phrases.append(word)
        ids = []
        if single:
            for token in range(int(tokenizer.n_vocab)):
                text = tokenizer.token_bytes(token).lower()
                if any(ch in text for ch in single):
                    ids.append(token)
        self.token_ids = np.asarray(ids, dtype=np.int64)

    def __bool__(self) -> bool:
        return bool(self.phrases) or len(self.token_ids) > 0


@dataclass
class Held:
    """A generated token not yet released: the sample, and the logits it was drawn from
    (needed to draw again at its position after a rewind)."""

    token: int
    sample: object
    logits: np.ndarray
    text: bytes                      # its bytes, lower-cased


class PhraseGuard:
    """One generation's held-back tokens and the per-position bans its rewinds added.

    The generator `push`es every sampled token (except end-of-text), asks `violation()`, and on
    a violation calls `rewind(index)`; otherwise it emits what `release()` returns. Positions
    are indexes into the generation's token history.
    """

    def __init__(self, bans: PhraseBans, tokenizer, max_tokens: int):
        self.phrases = bans.phrases
        self.tokenizer = tokenizer
        self.held: list[Held] = []
        self.bans: dict[int, set] = {}
        self.rewinds = 0
        self.max_rewinds = MAX_REWINDS_PER_TOKEN * max(1, max_tokens)

    def banned_at(self, position: int) -> set:
        return self.bans.get(position, set())

    def push(self, token: int, sample, logits) -> None:
        self.held.append(Held(token, sample, np.array(logits, copy=True),
                              self.tokenizer.token_bytes(token).lower()))

    def violation(self) -> int | None:
        """The index (into the held tokens) of the first token of the shortest run of newest
        held tokens whose text contains a banned phrase, or None."""
        if not self.phrases:
            return None
        text = b""
        for index in range(len(self.held) - 1, -1, -1):
            text = self.held[index].text + text
            if any(phrase in text for phrase in self.phrases):
                return index
        return None

    @property
    def exhausted(self) -> bool:
        return self.rewinds >= self.max_rewinds

    def rewind(self, index: int, position: int) -> Held:
        """Drop the held tokens from `index` on (the first of them was generated at `position`)
        and ban that first token there; returns it (its logits are where sampling resumes).
        Bans further on were made for a continuation that no longer exists: they go."""
        first = self.held[index]
        del self.held[index:]
        self.rewinds += 1
        for later in [p for p in self.bans if p > position]:
            del self.bans[later]
        self.bans.setdefault(position, set()).add(first.token)
        return first

    def release(self, everything: bool = False) -> list[Held]:
        """The held tokens that can no longer begin a banned phrase (all of them when the
        generation ends), oldest first; they leave the guard."""
        if everything or not self.phrases:
            out, self.held = self.held, []
            return out
        text = b"".join(h.text for h in self.held)
        hold_from = len(text)
        for start in range(len(text)):
            tail = text[start:]
            if any(phrase.startswith(tail) for phrase in self.phrases):
                hold_from = start
                break
        out, end = [], 0
        for h in self.held:
            end += len(h.text)
            if end > hold_from:
                break
            out.append(h)
        del self.held[:len(out)]
        return out
