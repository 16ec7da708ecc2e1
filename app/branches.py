"""Branches: the writer's moves through the open story's trees, each one step of its undo history.

The moves come from the story view's keys (Alt+Left/Right: the passage at the cursor for its
previous/next sibling; Alt+Up/Down: parent/child), the tree panel (click, delete a branch,
bookmark) and the chat view (Alt+Left/Right on a turn: swipe between its regenerations). Each
changes the story, records an undo step and emits `changed` with a sentence for the status
bar; the window then shows the story again. Undo and Redo live here too, because the story has
one history for typing, generations, moves and deletions.

No widgets: `story_of` returns the open story (it changes when another story is opened).
"""
from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, Signal

from app.passages import StoryTree, TreeError
from app.story import Story


class Branches(QObject):
    """Moves, deletions, bookmarks, undo and redo on the open story (see the module docstring)."""

    changed = Signal(str)      # the story changed; a sentence for the status bar ("" if none)

    def __init__(self, story_of: Callable[[], Story], parent=None):
        super().__init__(parent)
        self._story_of = story_of

    @property
    def story(self) -> Story:
        return self._story_of()

    def _done(self, label: str, message: str = "") -> bool:
        self.story.checkpoint(label)
        self.changed.emit(message)
        return True

    def _where(self, tree: StoryTree, passage_id: int, what: str = "Alternative") -> str:
        index, count = tree.sibling_position(passage_id)
        return f"{what} {index}/{count}"

    # --- the story's passages ------------------------------------------------------------
    def go_to(self, passage_id: int) -> bool:
        tree = self.story.tree
        if passage_id not in tree or passage_id == tree.current:
            return False
        tree.go_to(passage_id)
        return self._done("move", self._where(tree, passage_id, "Passage"))

    def move_sibling(self, passage_id: int, step: int) -> bool:
        """Show the previous (step -1) or next (+1) sibling of `passage_id` and its remembered branch."""
        tree = self.story.tree
        if passage_id not in tree or not tree.move_sibling(step, passage_id):
            return False
        shown = next(p.id for p in tree.path() if p.parent == tree[passage_id].parent)
        return self._done("move", self._where(tree, shown))

    def move_parent(self) -> bool:
        tree = self.story.tree
        return tree.move_parent() and self._done("move", self._where(tree, tree.current, "Up to passage"))

    def move_child(self) -> bool:
        tree = self.story.tree
        return tree.move_child() and self._done("move", self._where(tree, tree.current, "Down to alternative"))

    def delete(self, passage_id: int) -> bool:
        """Delete a passage and its branch (Undo brings them back)."""
        try:
            removed = self.story.tree.delete(passage_id)
        except TreeError:
            return False
        n = len(removed)
        return self._done("delete", f"Deleted {n} passage{'s' if n != 1 else ''} (Undo brings "
                                    f"{'them' if n != 1 else 'it'} back)")

    def set_bookmark(self, passage_id: int, on: bool) -> bool:
        tree = self.story.tree
        if passage_id not in tree or tree[passage_id].bookmarked == on:
            return False
        tree.set_bookmark(passage_id, on)
        return self._done("bookmark", "Bookmarked" if on else "Bookmark cleared")

    # --- chat turns ----------------------------------------------------------------------
    def swipe_turn(self, turn_index: int, step: int) -> bool:
        """Show the previous/next regeneration of chat turn `turn_index` (0 is the first turn)."""
        chat = self.story.chat
        path = chat.path()[1:]
        if not 0 <= turn_index < len(path) or not chat.move_sibling(step, path[turn_index].id):
            return False
        return self._done("move", self._where(chat, chat.path()[1 + turn_index].id, "Reply"))

    # --- one history ---------------------------------------------------------------------
    def undo(self) -> bool:
        if not self.story.undo():
            return False
        self.changed.emit("Undone")
        return True

    def redo(self) -> bool:
        if not self.story.redo():
            return False
        self.changed.emit("Redone")
        return True
