"""StoryDocument: the open story, its file, whether it has unsaved changes, autosave and recovery.

The document owns the `Story` object and is the only code that changes it; everything else
asks (`edit_text`, `record`, `undo`, ...) and hears back through signals: `storyReplaced` when
another story became the open one, `textReplaced` when the text changed other than by typing
(undo, redo, retry, a chosen alternative), `chatChanged`, `historyChanged`, `dirtyChanged`.
It never calls the window or a widget. Files are read on a Python thread and built and written
by the background `FileWriter` (a save costs the GUI thread a snapshot of the story), so the GUI
thread never waits on the disk or on a long story's JSON.

`collect` is a callable the window gives: it copies what only widgets hold (sampler values,
stop sequences) into the story before the story is written.
"""
from __future__ import annotations

import threading
from functools import partial
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from app.alternatives import AlternativesRun
from app.autosave import autosave_bytes, autosave_path, find_recovery
from app.branches import Branches
from app.story import ChatTurn, Story, StoryFormatError, kobold_bytes, load_story, story_bytes, take_snapshot
from app.threads import emit_from_thread

EDIT_PAUSE_MS = 800           # typing pauses this long become one undo step
TREE_FOLLOW_MS = 250          # while a generation streams, the story tree follows at most this often
EXPORTERS = {"kobold": kobold_bytes,
             "text": lambda story: story.to_plain_text().encode("utf-8"),
             "markdown": lambda story: story.to_markdown().encode("utf-8"),
             "outline": lambda story: story.to_markdown(whole_tree=True).encode("utf-8")}
# What a native save or an autosave costs the GUI thread is a snapshot (app/story.py's
# StorySnapshot: one reference per passage); the JSON, seconds for a story of a million
# characters with its tokens, is built on the writer thread.


class StoryDocument(QObject):
    """The open story and its file; changes it on request and says so with signals."""

    storyReplaced = Signal()               # another story is open (new, opened, imported, recovered)
    textReplaced = Signal()                # the text changed, not by typing: show it again
    chatChanged = Signal()                 # the chat transcript changed
    treeChanged = Signal()                 # passages grew or appeared (streaming alternatives)
    historyChanged = Signal()              # what undo/redo can do may have changed
    dirtyChanged = Signal(bool)            # unsaved changes or not (the title's "*")
    opened = Signal(str)                   # path ("" for an import)
    saved = Signal(str)                    # path
    problem = Signal(str, str)             # title, message for the user
    recoveryFound = Signal(object)         # autosave.Recovery left by a crash
    _read = Signal(object, str, str)       # from the reader thread: Story or None, path, error
    _found = Signal(object)                # from the recovery thread: autosave.Recovery

    def __init__(self, writer, collect=None, parent=None):
        """`writer` is the app's FileWriter; `collect(story)` fills in what widgets hold."""
        super().__init__(parent)
        self.writer = writer
        self.collect = collect or (lambda story: None)
        self.story = Story()
        self.path: str | None = None
        self.dirty = False                 # changes not in a saved file
        self.autosave_due = False          # changes not in the autosave either
        self.locked = False                # a generation is writing: no undo, no other story
        self.recovery = None
        self.run: AlternativesRun | None = None       # the alternatives a running Generate writes
        self.branches = Branches(lambda: self.story, self)   # moves, deletions, bookmarks
        self.branches.changed.connect(self.on_branches_changed)
        self.edit_timer = QTimer(self, singleShot=True, interval=EDIT_PAUSE_MS)
        self.edit_timer.timeout.connect(self.on_edit_timer_timeout)
        self._tree_timer = QTimer(self, singleShot=True, interval=TREE_FOLLOW_MS)
        self._tree_timer.timeout.connect(self.treeChanged)
        self._read.connect(self.on_read)
        self._found.connect(self.on_found)
        writer.failed.connect(self.on_writer_failed)

    # --- changes -------------------------------------------------------------------------
    def mark_changed(self) -> None:
        self.dirty = True
        self.autosave_due = True
        self.dirtyChanged.emit(True)

    def set_locked(self, locked: bool) -> None:
        """While a generation runs the text is the generator's: undo and replacing wait."""
        self.locked = locked

    def edit_text(self, text: str) -> None:
        """The writer typed: `text` is the whole new text. A pause in typing makes an undo step."""
        if text == self.story.text:
            return
        self.story.text = text             # the tree gives the change to the passages it touches
        self.mark_changed()
        self.edit_timer.start()
        self.historyChanged.emit()

    def on_edit_timer_timeout(self) -> None:
        if not self.locked and self.story.checkpoint("edit"):
            self.textReplaced.emit()           # the typed passage's tokens and marks, as the tree has them
            self.historyChanged.emit()

    def checkpoint(self) -> None:
        """Record typing not yet in the history (before a generation changes the text)."""
        self.edit_timer.stop()
        self.story.checkpoint("edit")

    def go_to_retry_point(self) -> bool:
        """For Retry: move to the parent of the current generation, whose new child will be its
        sibling; False when the story does not end with a generation."""
        self.checkpoint()
        if self.story.retry_point() is None:
            return False
        self.textReplaced.emit()
        return True

    def branch_with_token(self, offset: int, text: str, token: int = -1) -> int:
        """A new branch at `offset` (a Python offset into the text) starting with the chosen
        alternative token `text`; the old continuation stays in the tree. Returns its passage."""
        self.checkpoint()
        branch = self.story.branch_with_token(offset, text, token)
        self.story.checkpoint("token choice")
        self.textReplaced.emit()
        return branch.id

    def on_branches_changed(self, message: str) -> None:
        self._step(True)

    # --- alternatives ----------------------------------------------------------------------
    def begin_run(self, n: int, seed, sampler: dict, model: str, into: int | None = None,
                  batched: bool = False) -> AlternativesRun:
        """A Generate of `n` alternatives (or one continuing passage `into`) starts: its passages
        appear in the tree at once. (Typing was recorded before; a Retry's move to the parent is
        part of this Generate's undo step.)"""
        self.run = AlternativesRun(self.story, n, seed=seed, sampler=sampler, model=model, into=into,
                                   batched=batched)
        self.treeChanged.emit()
        return self.run

    def add_pieces(self, pieces) -> None:
        """Streamed tokens of the running alternative. The tree is told a few times a second, not
        every batch: its refresh walks every passage, a cost the stream's batches need not pay."""
        if self.run is not None:
            self.run.add_pieces(pieces)
            if not self._tree_timer.isActive():
                self._tree_timer.start()

    def end_sequence(self, done) -> None:
        """One continuation of a batched run ended."""
        if self.run is not None and done is not None:
            self.run.finish_sequence(done.index, done.seed)

    def end_alternative(self, done) -> bool:
        """One alternative's request ended; True when the next one should start (not after Stop)."""
        if self.run is None:
            return False
        more = self.run.finish_one(done.seed if done is not None else None)
        return more and done is not None and done.stop_reason != "cancelled"

    def record(self, generated) -> None:
        """A generation ended (finished, stopped or failed): make its text part of the story."""
        if generated.mode == "story":
            self._record_story(generated)
        elif generated.done is not None or generated.pieces:
            self.story.chat_turns = [*self.story.chat_turns, ChatTurn("bot", generated.text)]
            self.chatChanged.emit()
        else:
            self.chatChanged.emit()        # nothing came: the empty reply goes away
        self.mark_changed()
        self.autosave_now()

    def _record_story(self, generated) -> None:
        """The last alternative ended: the empty ones go, one undo step is recorded."""
        run, self.run = self.run, None
        if run is not None:
            run.finish()
        self.textReplaced.emit()
        self._tree_timer.stop()
        self.treeChanged.emit()
        self.historyChanged.emit()

    def undo(self) -> None:
        if not self.locked:
            self.edit_timer.stop()
            self._step(self.story.undo())

    def redo(self) -> None:
        if not self.locked:
            self._step(self.story.redo())

    def _step(self, moved: bool) -> None:
        if moved:
            self.textReplaced.emit()
            self.chatChanged.emit()
            if self.story.matches_saved():     # back to what the file holds: nothing unsaved
                self.dirty = self.autosave_due = False
                self.dirtyChanged.emit(False)
            else:
                self.mark_changed()
        self.historyChanged.emit()

    # --- chat ------------------------------------------------------------------------------
    def add_user_turn(self, text: str) -> None:
        self.story.chat_turns = [*self.story.chat_turns, ChatTurn("user", text)]
        self.mark_changed()
        self.chatChanged.emit()

    def drop_last_bot_turn(self) -> None:
        """Before a regenerated reply: the last reply goes (if the last turn is one)."""
        turns = self.story.chat_turns
        if turns and turns[-1].role == "bot":
            self.story.chat_turns = turns[:-1]     # the new reply becomes the old one's sibling
            self.chatChanged.emit()

    def edit_turn(self, index: int, text: str) -> None:
        if 0 <= index < len(self.story.chat_turns):
            self.story.edit_chat_turn(index, text)
            self.mark_changed()

    def set_chat_template(self, name: str) -> None:
        if name != self.story.chat_template:
            self.story.chat_template = name
            self.mark_changed()

    def set_names(self, user: str, bot: str) -> None:
        self.story.user_name, self.story.bot_name = user, bot
        self.mark_changed()

    # --- files -----------------------------------------------------------------------------
    def show(self, story: Story, path: str | None) -> None:
        """Make `story` the open story; unsaved changes of the old one are gone now, not before."""
        self.story, self.path = story, path
        self.edit_timer.stop()
        self.dirty = self.autosave_due = False
        self.storyReplaced.emit()
        self.dirtyChanged.emit(False)
        self.historyChanged.emit()

    def new(self) -> None:
        if not self.locked:
            self.writer.remove(autosave_path())
            self.show(Story(), None)

    def open(self, path, imported: bool = False) -> None:
        """Read a story (native or Kobold) on a thread; `opened` follows, or `problem` naming why not.
        A corrupt file or one from a newer version leaves the open story alone."""
        path = str(path)

        def read():
            try:
                story = load_story(path)
            except StoryFormatError as e:
                emit_from_thread(self._read, None, path, str(e))
            else:
                emit_from_thread(self._read, story, "" if imported else path, "")
        threading.Thread(target=read, name="neox-story-read", daemon=True).start()

    def on_read(self, story, path: str, error: str) -> None:
        if story is None or self.locked:
            self.problem.emit("Could not open the story", error or "A generation is running; stop it first.")
            return
        self.show(story, path or None)
        if not path:            # an import is a new, unsaved story
            self.mark_changed()
        self.opened.emit(path)

    def save_to(self, path) -> None:
        """Write the story atomically on the writer thread; once it is written the autosave is
        obsolete (if the write fails, the autosave stays and `on_writer_failed` says so)."""
        path = str(path)
        self.collect(self.story)
        self.path = path
        self.writer.write(path, partial(story_bytes, take_snapshot(self.story)), obsoletes=autosave_path())
        self.story.mark_saved()
        self.dirty = self.autosave_due = False
        self.dirtyChanged.emit(False)
        self.saved.emit(path)

    def export_to(self, path, kind: str) -> None:
        """Export as "kobold" (Kobold Lite JSON), "text" or "markdown"."""
        self.collect(self.story)
        self.writer.write(str(path), EXPORTERS[kind](self.story))

    def on_writer_failed(self, path: str, message: str) -> None:
        """A write failed (a full disk, a read-only folder): the file on disk is as it was, since
        writes replace files whole. A failed save leaves the story unsaved, and autosaved now."""
        if path != self.path:
            self.problem.emit("Could not write a file", message)
            return
        self.problem.emit("Could not save the story",
                          f"{message}\n\nThe story is still open here with all its changes, and the file on "
                          "disk is unchanged. Free some space, or save it somewhere else (Save As).")
        self.mark_changed()
        self.autosave_now()

    def title(self) -> str:
        name = Path(self.path).name if self.path else (self.story.title or "Untitled")
        return f"{'*' if self.dirty else ''}{name}"

    # --- autosave and recovery -------------------------------------------------------------
    def autosave_now(self) -> None:
        """Write the open story to the autosave file if it has changes not saved anywhere."""
        if not self.autosave_due or not self.dirty:
            return
        self.autosave_due = False
        self.collect(self.story)
        self.writer.write(autosave_path(), partial(autosave_bytes, take_snapshot(self.story), self.path))

    def look_for_recovery(self) -> None:
        """Look for an autosave left by a crash, on a thread; `recoveryFound` follows if there is one."""
        def look():
            recovery = find_recovery()
            if recovery is not None:
                emit_from_thread(self._found, recovery)
        threading.Thread(target=look, name="neox-recovery", daemon=True).start()

    def on_found(self, recovery) -> None:
        self.recovery = recovery
        self.recoveryFound.emit(recovery)

    def recover(self) -> None:
        """Open the story the crash left (the writer said yes)."""
        recovery, self.recovery = self.recovery, None
        if recovery is not None and not self.locked:
            self.show(recovery.story, recovery.story_path)
            self.mark_changed()

    def decline_recovery(self) -> None:
        self.recovery = None
        self.forget_autosave()

    def forget_autosave(self) -> None:
        self.writer.remove(autosave_path())

    def close(self, discard: bool) -> None:
        """The app is closing: keep unsaved changes in the autosave unless the writer discarded them."""
        if discard or not self.dirty:
            self.forget_autosave()
        else:
            self.autosave_due = True
            self.autosave_now()
