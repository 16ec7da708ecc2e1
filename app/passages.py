"""The story tree: passages joined parent to child, and the path from the root that is on screen.

A story is written in branches. The root passage is what the writer wrote first; each
generation adds a child of the passage it continued; the text on screen is the path from the
root to the *current* passage. Siblings are the alternatives a writer chooses between.

Text the writer types belongs to a passage (see `StoryTree.edit_text`, and docs/story-format.md):
- typing inside a passage edits that passage; a model-written one is then marked `edited`, and
  the tokens the edit did not touch keep their probabilities and alternatives;
- typing at the very end of the path extends the current passage when the writer wrote it and
  nothing continues it yet, and otherwise starts a writer-written child of it;
- at the boundary between two passages, the writer's passage takes the text (the earlier one
  when both are the writer's), otherwise the earlier passage does.

Passages are frozen: every change puts a new `Passage` in the tree's `nodes` dict. A snapshot
of the whole tree is then only a copy of that dict (`TreeState`), which is what makes one undo
history over typing, generations, branch moves and deletions cheap (see app.story.History).

Plain Python, no Qt: the tree panel's item model (app.widgets.storytree) reads it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

WRITER = "writer"
MODEL = "model"


@dataclass(frozen=True)
class Token:
    """One token the model wrote: its text, id (-1 when a server gave text only), probability
    (NaN when unknown), the top alternatives ((text, id, probability), ...) and where it starts
    in its passage's text (code points)."""
    text: str
    token: int = -1
    probability: float = math.nan
    alternatives: tuple = ()
    start: int = 0

    @property
    def end(self) -> int:
        return self.start + len(self.text)

    def __eq__(self, other):      # NaN probabilities must not make a token unequal to itself
        if not isinstance(other, Token):
            return NotImplemented
        return (self.text, self.token, self.start, self.alternatives) == \
               (other.text, other.token, other.start, other.alternatives) and \
               _same_float(self.probability, other.probability)

    __hash__ = None


def _same_float(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


# characters a plain-text editor changes, changed as it does, one for one: a passage's text is
# what the writer sees, so typing next to a generated "\r" does not look like an edit of it
_PLAIN = str.maketrans({"\r": "\n", "\u2028": "\n", "\u2029": "\n", "\xa0": " "})


def plain_text(text: str) -> str:
    return text.translate(_PLAIN)


def tokens_from_pieces(pieces, start: int = 0) -> tuple[Token, ...]:
    """Tokens laid end to end from `start`, from anything with text/token/probability/alternatives
    (the worker's TokenPiece, a remote server's pieces); their text as an editor shows it."""
    out, pos = [], start
    for p in pieces:
        text = plain_text(p.text)
        out.append(Token(text, int(p.token), float(p.probability), tuple(tuple(a) for a in p.alternatives), pos))
        pos += len(text)
    return tuple(out)


@dataclass(frozen=True)
class Passage:
    """One node of the story tree: a stretch of text and who wrote it.

    `children` are in the order they were made (the order siblings are counted in, "2/4");
    `chosen` is the child the writer last went down (Alt+Down follows it). A model-written
    passage keeps its tokens, the seed, the sampler settings and the model it came from;
    `edited` says the writer has since changed its text. In chat, `role` is "user" or "bot".
    """
    id: int
    parent: int | None
    text: str = ""
    author: str = WRITER
    children: tuple[int, ...] = ()
    chosen: int | None = None
    tokens: tuple[Token, ...] = ()
    edited: bool = False
    seed: int | None = None
    sampler: dict = field(default_factory=dict)
    model: str = ""
    role: str = ""
    bookmarked: bool = False

    __hash__ = None

    @property
    def generated(self) -> bool:
        return self.author == MODEL

    def label(self, words: int = 6) -> str:
        """The passage's first words, for the tree panel."""
        parts = self.text.split()
        text = " ".join(parts[:words])
        return (text + " …" if len(parts) > words else text) or "(empty)"


@dataclass(frozen=True)
class PathSpan:
    """Where one passage of the current path sits in the path's text."""
    start: int
    end: int
    passage: Passage


@dataclass(frozen=True)
class TreeState:
    """A snapshot of a tree (the passages and which one is current), for undo."""
    nodes: dict
    current: int

    __hash__ = None

    def __eq__(self, other):
        # Passages are shared between snapshots, so this is mostly identity checks
        return isinstance(other, TreeState) and self.current == other.current and self.nodes == other.nodes


class TreeError(ValueError):
    """An operation named a passage that is not in the tree, or would break the tree."""


class StoryTree:
    """A tree of passages with a current passage; the text on screen is the path to it."""

    ROOT = 0

    def __init__(self, root_text: str = "", role: str = ""):
        self.nodes: dict[int, Passage] = {self.ROOT: Passage(self.ROOT, None, root_text, WRITER, role=role)}
        self.current = self.ROOT
        self._next_id = 1

    @classmethod
    def from_passages(cls, nodes: dict, current: int) -> "StoryTree":
        """A tree of already checked passages (the file reader builds them)."""
        tree = cls()
        tree.nodes = dict(nodes)
        tree.current = current
        tree._next_id = max(nodes) + 1
        return tree

    # --- reading -----------------------------------------------------------------------
    def __getitem__(self, node_id: int) -> Passage:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise TreeError(f"no passage {node_id} in the story tree") from None

    def __contains__(self, node_id) -> bool:
        return node_id in self.nodes

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def root(self) -> Passage:
        return self.nodes[self.ROOT]

    def path(self, node_id: int | None = None) -> list[Passage]:
        """The passages from the root to `node_id` (default: the current passage)."""
        node = self[self.current if node_id is None else node_id]
        out = [node]
        while node.parent is not None:
            node = self.nodes[node.parent]
            out.append(node)
        out.reverse()
        return out

    def text(self, node_id: int | None = None) -> str:
        """The text on screen: the path's passages joined."""
        return "".join(p.text for p in self.path(node_id))

    def spans(self) -> list[PathSpan]:
        """Each passage of the current path with its offsets in `text()`."""
        out, pos = [], 0
        for p in self.path():
            out.append(PathSpan(pos, pos + len(p.text), p))
            pos += len(p.text)
        return out

    def passage_at(self, offset: int) -> Passage:
        """The passage of the current path that holds text offset `offset` (the last one at the end)."""
        spans = self.spans()
        for span in spans:
            if span.start <= offset < span.end:
                return span.passage
        return spans[-1].passage

    def token_spans(self) -> list[tuple[int, int, Token, int]]:
        """(start, end, token, passage id) of every model token on the current path, in path offsets."""
        out = []
        for span in self.spans():
            for t in span.passage.tokens:
                out.append((span.start + t.start, span.start + t.end, t, span.passage.id))
        return out

    def siblings(self, node_id: int) -> tuple[int, ...]:
        node = self[node_id]
        return (node_id,) if node.parent is None else self.nodes[node.parent].children

    def sibling_position(self, node_id: int) -> tuple[int, int]:
        """(1-based index, count) of `node_id` among its siblings: the "2/4" of the story view."""
        sibs = self.siblings(node_id)
        return sibs.index(node_id) + 1, len(sibs)

    def descend(self, node_id: int) -> int:
        """Follow the chosen children down from `node_id` to where the writer last was."""
        node = self[node_id]
        while node.chosen is not None and node.chosen in self.nodes:
            node = self.nodes[node.chosen]
        return node.id

    def leaves(self) -> list[int]:
        return [n.id for n in self.nodes.values() if not n.children]

    def bookmarks(self) -> list[int]:
        return [n.id for n in self.nodes.values() if n.bookmarked]

    def depth_first(self) -> list[tuple[int, Passage]]:
        """(depth, passage) for every passage, parents before children, siblings in order."""
        out, stack = [], [(0, self.ROOT)]
        while stack:
            depth, node_id = stack.pop()
            node = self.nodes[node_id]
            out.append((depth, node))
            stack.extend((depth + 1, c) for c in reversed(node.children))
        return out

    # --- snapshots -----------------------------------------------------------------------
    def state(self) -> TreeState:
        return TreeState(dict(self.nodes), self.current)

    def restore(self, state: TreeState) -> None:
        self.nodes = dict(state.nodes)
        self.current = state.current
        self._next_id = max(self._next_id, max(self.nodes) + 1)

    # --- building ------------------------------------------------------------------------
    def _put(self, node: Passage) -> Passage:
        self.nodes[node.id] = node
        return node

    def add_child(self, parent: int, text: str = "", author: str = WRITER, *, tokens=(), seed=None,
                  sampler=None, model: str = "", role: str = "") -> Passage:
        """A new last child of `parent` (the current passage does not move)."""
        parent_node = self[parent]
        if author not in (WRITER, MODEL):
            raise TreeError(f"a passage's author is {WRITER!r} or {MODEL!r}, not {author!r}")
        node = Passage(self._next_id, parent, text, author, tokens=tuple(tokens), seed=seed,
                       sampler=dict(sampler or {}), model=model, role=role)
        self._next_id += 1
        self._put(node)
        self._put(replace(parent_node, children=parent_node.children + (node.id,)))
        return node

    def append_tokens(self, node_id: int, pieces) -> Passage:
        """Stream more model tokens onto the end of passage `node_id`."""
        node = self[node_id]
        tokens = tokens_from_pieces(pieces, len(node.text))
        return self._put(replace(node, text=node.text + "".join(t.text for t in tokens),
                                 tokens=node.tokens + tokens))

    def update(self, node_id: int, **changes) -> Passage:
        """Change a passage's own fields (seed, sampler, model, text...); not its place in the tree."""
        if {"id", "parent", "children"} & changes.keys():
            raise TreeError("a passage's place in the tree is changed by add_child, delete and split")
        return self._put(replace(self[node_id], **changes))

    # --- moving --------------------------------------------------------------------------
    def go_to(self, node_id: int) -> None:
        """Make `node_id` current; every passage on its path remembers the way down."""
        path = self.path(node_id)
        for parent, child in zip(path, path[1:]):
            if parent.chosen != child.id:
                self._put(replace(parent, chosen=child.id))
        self.current = node_id

    def move_sibling(self, step: int, node_id: int | None = None) -> bool:
        """Switch `node_id` (default: current) for its sibling `step` places on (wrapping), then go
        down that sibling's remembered path. Returns False when it has no sibling."""
        node_id = self.current if node_id is None else node_id
        sibs = self.siblings(node_id)
        if len(sibs) < 2:
            return False
        target = sibs[(sibs.index(node_id) + step) % len(sibs)]
        self.go_to(self.descend(target))
        return True

    def move_parent(self) -> bool:
        parent = self[self.current].parent
        if parent is None:
            return False
        self.go_to(parent)
        return True

    def move_child(self) -> bool:
        """Go down to the chosen child (or the first one)."""
        node = self[self.current]
        if not node.children:
            return False
        self.go_to(node.chosen if node.chosen in node.children else node.children[0])
        return True

    # --- changing the shape --------------------------------------------------------------
    def delete(self, node_id: int) -> list[int]:
        """Remove `node_id` and everything below it; returns the removed ids. If the current
        passage was among them, a neighbouring sibling's branch (or else the parent) becomes current."""
        node = self[node_id]
        if node.parent is None:
            raise TreeError("the root passage cannot be deleted")
        removed = [n.id for _, n in self._subtree(node_id)]
        parent = self.nodes[node.parent]
        sibs = parent.children
        index = sibs.index(node_id)
        children = sibs[:index] + sibs[index + 1:]
        chosen = parent.chosen if parent.chosen != node_id else None
        self._put(replace(parent, children=children, chosen=chosen))
        for rid in removed:
            del self.nodes[rid]
        if self.current in removed:
            if children:
                self.go_to(self.descend(children[min(index, len(children) - 1)]))
            else:
                self.go_to(parent.id)
        return removed

    def _subtree(self, node_id: int) -> list[tuple[int, Passage]]:
        out, stack = [], [(0, node_id)]
        while stack:
            depth, nid = stack.pop()
            out.append((depth, self.nodes[nid]))
            stack.extend((depth + 1, c) for c in self.nodes[nid].children)
        return out

    def split(self, node_id: int, offset: int) -> Passage:
        """Cut passage `node_id` at `offset`: it keeps the text before, a new only child takes the
        text after (and its tokens, and the old children). Returns the new lower passage."""
        node = self[node_id]
        if not 0 < offset < len(node.text):
            raise TreeError(f"cannot split passage {node_id} at {offset} (its text is {len(node.text)} long)")
        head = tuple(t for t in node.tokens if t.end <= offset)
        tail = tuple(replace(t, start=t.start - offset) for t in node.tokens if t.start >= offset)
        lower = Passage(self._next_id, node_id, node.text[offset:], node.author, node.children, node.chosen,
                        tail, node.edited, node.seed, dict(node.sampler), node.model, node.role)
        self._next_id += 1
        self._put(lower)
        for child in node.children:
            self._put(replace(self.nodes[child], parent=lower.id))
        self._put(replace(node, text=node.text[:offset], tokens=head, children=(lower.id,), chosen=lower.id))
        if self.current == node_id:
            self.current = lower.id
        return lower

    def branch_at(self, offset: int) -> int:
        """The passage a new branch at path offset `offset` grows from: the passage holding that
        offset is split there if needed, and the part before the cut is returned (the new branch
        becomes a sibling of the part after it)."""
        for span in self.spans():
            if span.start < offset <= span.end:
                if offset < span.end:
                    self.split(span.passage.id, offset - span.start)
                return span.passage.id
        return self.ROOT

    def set_bookmark(self, node_id: int, on: bool = True) -> None:
        self._put(replace(self[node_id], bookmarked=on))

    # --- typing --------------------------------------------------------------------------
    def edit_text(self, new_text: str) -> bool:
        """Make the path's text `new_text`, giving the change to the passages it touches (see the
        module docstring). Returns False when nothing changed."""
        old = self.text()
        if new_text == old:
            return False
        a = _common_prefix(old, new_text)
        s = _common_suffix(old, new_text, limit=min(len(old), len(new_text)) - a)
        b = len(old) - s
        inserted = new_text[a:len(new_text) - s]
        if a == b == len(old):
            self._append_typed(inserted)
        elif a == b:
            span = self._insertion_span(a)
            self._replace_in(span.passage.id, a - span.start, a - span.start, inserted)
        else:
            first = True
            for span in self.spans():
                if span.start < b and span.end > a:
                    lo, hi = max(a, span.start) - span.start, min(b, span.end) - span.start
                    self._replace_in(span.passage.id, lo, hi, inserted if first else "")
                    first = False
        return True

    def _append_typed(self, text: str) -> None:
        node = self[self.current]
        if node.author == WRITER and not node.children:
            self._put(replace(node, text=node.text + text))
        else:
            self.go_to(self.add_child(node.id, text, WRITER, role=node.role).id)

    def _insertion_span(self, offset: int) -> PathSpan:
        candidates = [s for s in self.spans() if s.start <= offset <= s.end]
        writers = [s for s in candidates if s.passage.author == WRITER]
        inside = [s for s in candidates if s.start < offset < s.end]
        return (inside or writers or candidates)[0]

    def _replace_in(self, node_id: int, lo: int, hi: int, inserted: str) -> None:
        node = self.nodes[node_id]
        shift = len(inserted) - (hi - lo)
        # tokens the change does not touch keep their probabilities; the ones it cuts lose them
        tokens = tuple(t if t.end <= lo else replace(t, start=t.start + shift)
                       for t in node.tokens if t.end <= lo or t.start >= hi)
        self._put(replace(node, text=node.text[:lo] + inserted + node.text[hi:], tokens=tokens,
                          edited=node.edited or node.author == MODEL))


def _common_prefix(a: str, b: str) -> int:
    """Length of the common prefix, by bisection on slice comparisons (C speed on long stories)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _common_suffix(a: str, b: str, limit: int) -> int:
    """Length of the common suffix, at most `limit`."""
    lo, hi = 0, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[len(a) - mid:] == b[len(b) - mid:]:
            lo = mid
        else:
            hi = mid - 1
    return lo


__all__ = ["Token", "Passage", "PathSpan", "TreeState", "StoryTree", "TreeError", "tokens_from_pieces", "plain_text",
           "WRITER", "MODEL"]
