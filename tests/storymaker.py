"""Stories with branches, built the way the app builds them, for the tree tests."""
from __future__ import annotations

from app.story import Story


def with_siblings(prefix: str, continuations, current: int = 0) -> Story:
    """A story whose root `prefix` has one model-written child per continuation; the path ends
    at child `current` and the history starts there."""
    s = Story(prefix)
    for text in continuations:
        s.tree.go_to(0)
        s.add_generation(text)
    s.tree.go_to(s.tree.root.children[current])
    s.checkpoint("generation")
    return s
