"""One press of Generate with N alternatives: N sibling passages filled one request after another.

`AlternativesRun` is the story side of it, without Qt: it adds the N empty model passages under
the passage being continued at once (so the tree shows all N from the start), makes the first
one current (it streams into the story view), puts each streamed token into the passage of the
request that is running, and at the end removes the passages that stayed empty and records one
undo step. Whoever runs the requests (the generation controller) asks it for the next seed and
calls `finish_one` after each request.

With the local engine the N requests are one: `batched` runs take the tokens of all N at once,
each piece saying which continuation it belongs to (`index`).

Seeds follow the engine's many-continuations convention: with a fixed seed s, alternative i uses
s + i, so a run can be reproduced one alternative at a time; with a random seed each request
draws its own.
"""
from __future__ import annotations

from app.passages import MODEL
from app.story import Story


class AlternativesRun:
    """The N passages of one Generate and which of them is being written (see the module docstring)."""

    def __init__(self, story: Story, n: int, *, seed: int | None = None, sampler=None, model: str = "",
                 into: int | None = None, batched: bool = False):
        """N new passages under the current one; or, with `into`, one request that writes on at the
        end of that (model) passage, as after a chosen token alternative."""
        if not 1 <= n <= 8 or (into is not None and n != 1):
            raise ValueError(f"alternatives must be 1..8 (1 when continuing a passage), got {n}")
        self.story = story
        self.batched = batched
        self.seed = seed if seed is not None and seed >= 0 else None
        if into is not None:
            self.parent = story.tree[into].parent
            story.tree.update(into, seed=self.seed, sampler=dict(sampler or {}))
            self.passages = [into]
        else:
            self.parent = story.tree.current
            self.passages = [story.tree.add_child(self.parent, "", MODEL, sampler=sampler,
                                                  model=model or story.model_id, seed=self.seed_of(i)).id
                             for i in range(n)]
        self.index = 0
        story.tree.go_to(self.passages[0])

    @property
    def prompt(self) -> str:
        """The text the requests continue: the path to the passages' parent (and, when continuing a
        passage, that passage's text so far)."""
        first = self.story.tree[self.passages[0]]
        return self.story.tree.text(self.parent) + (first.text if len(self.passages) == 1 else "")

    @property
    def active(self) -> int:
        """The passage the running request writes into."""
        return self.passages[self.index]

    @property
    def shown(self) -> bool:
        """True while the running request is the one shown in the story view (the first)."""
        return self.index == 0

    def seed_of(self, i: int) -> int | None:
        return None if self.seed is None else self.seed + i

    def add_pieces(self, pieces) -> int:
        """Streamed tokens of the running request (of a batched run: each to its continuation's
        passage); returns the passage the last ones went into."""
        if not self.batched:
            self.story.tree.append_tokens(self.active, pieces)
            return self.active
        for i in sorted({p.index for p in pieces}):
            self.story.tree.append_tokens(self.passages[i], [p for p in pieces if p.index == i])
        return self.passages[pieces[-1].index] if pieces else self.active

    def finish_sequence(self, index: int, seed: int | None) -> None:
        """Continuation `index` of a batched run ended (with this seed)."""
        if seed is not None and self.passages[index] in self.story.tree:
            self.story.tree.update(self.passages[index], seed=seed)

    def finish_one(self, seed: int | None = None) -> bool:
        """The running request ended (its actual seed, if known). Returns True when another follows."""
        if seed is not None and self.active in self.story.tree:
            self.story.tree.update(self.active, seed=seed)
        self.index += 1
        return self.index < len(self.passages)

    def finish(self, cancelled: bool = False) -> int:
        """All done (or Stop): the empty passages go, one undo step is recorded. Returns how many
        alternatives were written."""
        tree = self.story.tree
        for pid in self.passages:
            if pid in tree and not tree[pid].text:
                tree.delete(pid)
        written = [pid for pid in self.passages if pid in tree]
        if not written:
            tree.go_to(self.parent)            # nothing came: back where the writer was
        elif tree.current not in written:
            tree.go_to(written[0])             # the shown one came back empty: show the first that did not
        self.story.checkpoint("generation")
        return len(written)
