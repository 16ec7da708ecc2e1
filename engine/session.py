"""What every backend's session shares: the cached token ids and the checks on new ones.

A leaf module: ``engine.reference`` and ``engine.fast`` subclass ``Session`` without importing
``engine.model``, which imports them to choose a backend.
"""
from __future__ import annotations

import numpy as np

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

    BRANCHES = None      # the backend's Branches class

    def __init__(self, config: Config, n_ctx: int):
        self.config = config
        self.n_ctx = n_ctx
        self.tokens: list[int] = []     # the ids whose keys and values are cached, in order
        self.evaluated = 0              # tokens run through the model (for reuse accounting)
        self.changes = 0                # counts changes of the cache (branches of an older state are stale)

    def truncate(self, n: int) -> None:
        """Forget cached positions from n on (the cache of a common prefix stays valid)."""
        if n < len(self.tokens):
            del self.tokens[max(n, 0):]
            self.changes += 1

    def branch(self, n: int, max_new: int) -> "Branches":
        """n sequences continuing this session's tokens, each with room for max_new tokens of its own
        (see ``Branches``); the backend's session supplies the class."""
        if self.BRANCHES is None:
            raise NotImplementedError(f"{type(self).__name__} cannot branch")
        return self.BRANCHES(self, n, max_new)

    def check_new(self, tokens) -> tuple[list[int], int]:
        """Validated new ids and the number already cached (ValueError past n_ctx)."""
        tokens = check_tokens(tokens, self.config.n_vocab)
        if not tokens:
            raise ValueError("eval needs at least one token")
        n_past = len(self.tokens)
        if n_past + len(tokens) > self.n_ctx:
            raise ValueError(f"{n_past} cached + {len(tokens)} new tokens exceed the context of {self.n_ctx}")
        self.changes += 1
        return tokens, n_past


MAX_BRANCHES = 8


class Branches:
    """N sequences that continue one session's tokens (the prefix) in one pass over the weights.

    ``session.branch(n, max_new)`` makes them. The prefix's keys and values stay in the session's
    cache and serve every sequence; each sequence keeps only the keys and values of its own new
    tokens (room for ``max_new``), so memory grows by n x new tokens, never by a copy of the prefix.

    - ``eval(tokens, seqs=None)``: token ``tokens[j]`` is the next one of sequence ``seqs[j]``
      (default: one for each sequence, in order); returns float32 logits [len(tokens), n_vocab],
      row j for sequence seqs[j]. One pass evaluates them all: the weights are read once.
    - ``tokens[i]``: the ids sequence i has evaluated after the prefix.
    - ``adopt(i)``: append sequence i's tokens (and their keys and values) to the session, which
      then continues that sequence as if it had evaluated it alone.

    Branches belong to one state of the session: once the session evaluates or truncates,
    using them raises ValueError. A backend supplies ``_forward`` and ``_copy_to_session``.
    """

    def __init__(self, session: Session, n: int, max_new: int):
        n, max_new = _count("n", n), _count("max_new", max_new)
        if not 1 <= n <= MAX_BRANCHES:
            raise ValueError(f"the number of sequences must be within 1..{MAX_BRANCHES}, got {n}")
        room = session.n_ctx - len(session.tokens)
        if not 1 <= max_new <= room:
            raise ValueError(f"max_new must be within 1..{room} (the context left after "
                             f"{len(session.tokens)} cached tokens), got {max_new}")
        self.session = session
        self.n = n
        self.max_new = max_new
        self.n_prefix = len(session.tokens)
        self.tokens: list[list[int]] = [[] for _ in range(n)]
        self._changes = session.changes

    @property
    def stale(self) -> bool:
        """True once the session has evaluated or truncated since the branches were made."""
        return self.session.changes != self._changes

    def _check_current(self) -> None:
        if self.stale:
            raise ValueError("these branches are stale: their session has evaluated or truncated since")

    def eval(self, tokens, seqs=None) -> np.ndarray:
        """One new token for each listed sequence; logits [len(tokens), n_vocab] in that order."""
        self._check_current()
        tokens = check_tokens(tokens, self.session.config.n_vocab)
        seqs = list(range(self.n)) if seqs is None else [_count("sequence index", s) for s in seqs]
        if not tokens or len(tokens) != len(seqs):
            raise ValueError(f"eval needs one token per sequence: {len(tokens)} tokens for {len(seqs)} sequences")
        if len(set(seqs)) != len(seqs) or not all(0 <= s < self.n for s in seqs):
            raise ValueError(f"sequence indices must be distinct and within 0..{self.n - 1}, got {seqs}")
        for s in seqs:
            if len(self.tokens[s]) >= self.max_new:
                raise ValueError(f"sequence {s} is full: it has evaluated its max_new={self.max_new} tokens")
        logits = self._forward(tokens, seqs)
        for s, t in zip(seqs, tokens):
            self.tokens[s].append(t)
        return logits

    def adopt(self, i: int) -> None:
        """Make the session hold sequence i: its tokens and their keys and values follow the prefix."""
        self._check_current()
        if not 0 <= i < self.n:
            raise ValueError(f"sequence index must be within 0..{self.n - 1}, got {i}")
        self._copy_to_session(i, len(self.tokens[i]))
        self.session.tokens.extend(self.tokens[i])
        self.session.changes += 1

    def _forward(self, tokens: list[int], seqs: list[int]) -> np.ndarray:
        raise NotImplementedError

    def _copy_to_session(self, i: int, count: int) -> None:
        raise NotImplementedError


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)
