"""What every backend's session shares: the cached token ids and the checks on new ones.

A leaf module: ``engine.reference`` and ``engine.fast`` subclass ``Session`` without importing
``engine.model``, which imports them to choose a backend.
"""
from __future__ import annotations

from engine.config import Config


def check_tokens(tokens, n_vocab: int) -> list[int]:
    """Token ids as ints, each within 0..n_vocab-1 (ValueError naming the first bad one)."""
    out = [int(t) for t in tokens]
    for t in out:
        if not 0 <= t < n_vocab:
            raise ValueError(f"token id {t} is outside the vocabulary (0..{n_vocab - 1})")
    return out


class Session:
    """What every backend's session shares: the cached token ids and the checks on new ones.

    A backend's session adds the KV cache and ``eval(tokens, all_logits=False)``.
    """

    def __init__(self, config: Config, n_ctx: int):
        self.config = config
        self.n_ctx = n_ctx
        self.tokens: list[int] = []     # the ids whose keys and values are cached, in order
        self.evaluated = 0              # tokens run through the model (for reuse accounting)

    def truncate(self, n: int) -> None:
        """Forget cached positions from n on (the cache of a common prefix stays valid)."""
        if n < len(self.tokens):
            del self.tokens[max(n, 0):]

    def check_new(self, tokens) -> tuple[list[int], int]:
        """Validated new ids and the number already cached (ValueError past n_ctx)."""
        tokens = check_tokens(tokens, self.config.n_vocab)
        if not tokens:
            raise ValueError("eval needs at least one token")
        n_past = len(self.tokens)
        if n_past + len(tokens) > self.n_ctx:
            raise ValueError(f"{n_past} cached + {len(tokens)} new tokens exceed the context of {self.n_ctx}")
        return tokens, n_past
