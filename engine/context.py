"""Fitting a long story into the model's context: pinned memory + the newest story text.

A request is `memory` (always kept, KoboldCpp's "memory" field) followed by the story. When
memory + story + the tokens to generate do not fit the context, the oldest story tokens are
dropped. They are dropped in chunks (an extra quarter of the story budget) and the same cut is
kept for the next requests while it still fits, so that continuing a story keeps the same
window start and the generator can reuse the KV cache of the shared prefix instead of
re-reading the whole window after every new sentence (KoboldCpp's "smart context" idea).
"""
from __future__ import annotations

from dataclasses import dataclass

from engine.errors import SettingsError

# How many story tokens must still agree at the old cut for it to be reused.
ANCHOR_TOKENS = 16


@dataclass(frozen=True)
class Window:
    """The prompt tokens of one request and how they were made."""

    tokens: list          # memory tokens + the kept story tokens
    memory_tokens: int    # how many of `tokens` are the pinned memory
    dropped_tokens: int   # oldest story tokens left out


class ContextShifter:
    """Builds the prompt window for each request, remembering where it last cut the story."""

    def __init__(self, shift_fraction: float = 0.25):
        if not 0.0 <= shift_fraction < 1.0:
            raise ValueError(f"shift_fraction must be within [0, 1), got {shift_fraction}")
        self.shift_fraction = shift_fraction
        self._cut = 0
        self._memory: list = []
        self._anchor: list = []

    def fit(self, memory: list, story: list, n_ctx: int, max_new_tokens: int) -> Window:
        """The window for `memory` + `story` (token ids) leaving room for `max_new_tokens`.

        Raises SettingsError naming `max_tokens` or `memory` when no story token could fit.
        """
        if max_new_tokens >= n_ctx:
            raise SettingsError("max_tokens", f"{max_new_tokens} new tokens leave no room for a prompt "
                                              f"in a context of {n_ctx} tokens")
        budget = n_ctx - max_new_tokens - len(memory)
        if budget < 1 and (story or budget < 0):
            raise SettingsError("memory", f"the memory takes {len(memory)} tokens; with {max_new_tokens} "
                                          f"tokens to generate nothing of the story fits in a context of "
                                          f"{n_ctx} tokens")
        cut = self._choose_cut(memory, story, budget)
        self._cut, self._memory, self._anchor = cut, list(memory), list(story[cut:cut + ANCHOR_TOKENS])
        return Window(list(memory) + list(story[cut:]), len(memory), cut)

    def _choose_cut(self, memory, story, budget) -> int:
        if len(story) <= budget:
            return 0
        need = len(story) - budget
        previous = self._cut
        if (need <= previous < len(story) and list(memory) == self._memory
                and list(story[previous:previous + ANCHOR_TOKENS]) == self._anchor):
            return previous
        slack = min(int(budget * self.shift_fraction), budget - 1)
        return need + slack

    def reset(self):
        """Forget the previous cut (a different story is loaded)."""
        self._cut, self._memory, self._anchor = 0, [], []
