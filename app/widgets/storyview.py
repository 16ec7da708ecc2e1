"""The story view: one editable document showing the current path of the story tree.

Model-written text is tinted, token by token, for as long as the writer leaves it alone: a
passage keeps its tint, probabilities and alternatives after typing elsewhere, and an edited
passage keeps them on the tokens the edit did not touch (`show_tree`). With "colour by
probability" on, each generated token is coloured from red (unlikely) to green (likely)
instead. Clicking a generated token offers its alternatives (`tokenClicked`); so does the key of
the window's "Token alternatives" action for the token at the cursor (`offer_alternatives_at_cursor`).

The writer moves through the tree from the keyboard: Alt+Left / Alt+Right switch the passage
at the cursor for its previous / next sibling, Alt+Up / Alt+Down go to the parent / child, and
Ctrl+Z / Ctrl+Shift+Z (Ctrl+Y) are the story's one undo history, not the editor's own (which
is off: the story history covers typing too). The view only asks (`siblingRequested`, ...);
the owner changes the story and shows it again. A small "2/4" near the cursor says which of
its siblings the cursor's passage is.

While a generation runs the view is read-only and tokens stream in at the end. Qt measures
text in UTF-16 code units and Python in code points, so spans here are kept in Qt positions
and converted only where the story (Python) needs them.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

from PySide6.QtCore import QEvent, QPoint, Qt, Signal
from PySide6.QtGui import QColor, QFont, QKeySequence, QPalette, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QLabel, QMenu, QPlainTextEdit, QTextEdit

TINT_ALPHA = 48              # the model's text: the palette's highlight colour, this transparent
PROBABILITY_ALPHA = 90       # probability colours
PROBABILITY_STEPS = 20       # probabilities are shown in steps of 1/20: neighbouring tokens of one
                             # step share one mark (each mark costs every repaint of its paragraph)


def utf16_len(text: str) -> int:
    """Length of `text` in Qt positions (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def probability_colour(p: float) -> QColor:
    """Red for unlikely tokens through yellow to green for likely ones; grey when unknown (NaN)."""
    if math.isnan(p):
        return QColor(128, 128, 128, PROBABILITY_ALPHA)
    step = round(max(0.0, min(1.0, p)) * PROBABILITY_STEPS) / PROBABILITY_STEPS
    colour = QColor.fromHsvF(step / 3.0, 0.85, 0.95)       # hue 0 (red) .. 1/3 (green)
    colour.setAlpha(PROBABILITY_ALPHA)
    return colour


@dataclass(frozen=True)
class TokenSpan:
    """Where one generated token sits in the document (Qt positions) and what it was."""
    start: int
    end: int
    piece: object        # app.passages.Token or chatllm.TokenPiece: text, token, probability, alternatives


@dataclass(frozen=True)
class PassageSpan:
    """Where one passage of the shown path sits (Qt positions), and its place among its siblings."""
    start: int
    end: int
    passage_id: int
    sibling: int
    siblings: int


class StoryView(QPlainTextEdit):
    """The story editor: the tree's current path, tinted tokens, streaming, keyboard tree moves."""

    userEdited = Signal()                        # the user changed the text (not the model)
    tokenClicked = Signal(int, QPoint)           # index into `tokens`, global position
    siblingRequested = Signal(int, int)          # passage id at the cursor, step (-1 previous, +1 next)
    parentRequested = Signal()
    childRequested = Signal()
    undoRequested = Signal()
    redoRequested = Signal()
    menuAboutToShow = Signal(QMenu, int)         # the context menu (others add entries), its Qt position

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("storyView")
        self.setPlaceholderText("Write the beginning of your story, then press Generate (Ctrl+Enter).")
        self.setLineWrapMode(QPlainTextEdit.WidgetWidth)
        self.setTabChangesFocus(False)
        self.setUndoRedoEnabled(False)           # the story's history undoes typing (one history)
        self.tokens: list[TokenSpan] = []        # every generated token on the shown path
        self.passages: list[PassageSpan] = []
        self.probabilities = False               # colour tokens by probability instead of the tint
        self._tinted: list[tuple[int, int]] = []  # model text without tokens (imports, version 1 files)
        self._stream: tuple[int, int] | None = None
        self._selections: list = []               # the marks shown (QPlainTextEdit extra selections)
        self._marks: list[tuple[int, int, QColor]] = []   # their ranges and colours
        self._programmatic = 0
        self._generating = False
        self._end = 0                            # Qt position where streamed text goes
        self._updates = 0                        # token batches shown (tests check streaming)
        self.sibling_label = QLabel(self.viewport(), objectName="siblingCount")
        self.sibling_label.setAutoFillBackground(True)
        self.sibling_label.setToolTip("Alternatives of this passage: Alt+Left / Alt+Right to switch")
        self.sibling_label.hide()
        self.document().contentsChange.connect(self.on_document_contents_change)
        self.cursorPositionChanged.connect(self.on_self_cursor_position_changed)
        self.document().setDocumentMargin(18)

    # --- programmatic changes --------------------------------------------------------
    @contextmanager
    def _edit(self):
        """Changes made inside this block are the program's, not the user's (no `userEdited`)."""
        self._programmatic += 1
        try:
            yield
        finally:
            self._programmatic -= 1

    def show_tree(self, tree, cursor_passage: int | None = None) -> None:
        """Show `tree`'s current path (an app.passages.StoryTree): its text, the model's tokens and
        passages. The cursor goes to the end of `cursor_passage`; by default it stays where it is
        when the text is unchanged (the writer is typing) and goes to the end otherwise."""
        spans = tree.spans()
        text = "".join(s.passage.text for s in spans)
        same = text == self.toPlainText()
        kept = self.textCursor()          # the writer's cursor and selection, while the text is unchanged
        keep = kept.position() if same and cursor_passage is None else None
        if not same:
            with self._edit():
                self.setPlainText(text)
        self.tokens, self.passages, self._tinted = [], [], []
        pos = 0
        for span in spans:
            p = span.passage
            n = utf16_len(p.text)
            self.passages.append(PassageSpan(pos, pos + n, p.id, *tree.sibling_position(p.id)))
            if p.tokens:
                self.tokens.extend(TokenSpan(pos + a, pos + b, t) for a, b, t in _qt_token_offsets(p.text, p.tokens))
            elif p.generated and not p.edited and p.text:
                self._tinted.append((pos, pos + n))
            pos += n
        self._stream = None
        self._refresh_mark()
        target = next((s.end for s in self.passages if s.passage_id == cursor_passage), keep)
        cursor = self.textCursor()
        if keep is not None and target == keep and kept.hasSelection():
            cursor.setPosition(min(kept.anchor(), pos))
            cursor.setPosition(min(keep, pos), QTextCursor.KeepAnchor)
        else:
            cursor.setPosition(min(target, pos) if target is not None else pos)
        self.setTextCursor(cursor)
        self.ensureCursorVisible()
        self.on_self_cursor_position_changed()

    def set_story(self, text: str, mark: tuple[int, int] | None = None, tokens=None) -> None:
        """Replace the whole text with no tree behind it; `mark` is a (start, end) in Python offsets
        of model text, `tokens` its pieces laid end to end."""
        with self._edit():
            self.setPlainText(text)
        self.tokens, self.passages, self._tinted, self._stream = [], [], [], None
        if mark is not None:
            start = utf16_len(text[:mark[0]])
            end = start + utf16_len(text[mark[0]:mark[1]])
            if tokens:
                self.tokens = self._spans(start, tokens)
            else:
                self._tinted = [(start, end)]
        self._refresh_mark()
        self.moveCursor(QTextCursor.End)
        self.ensureCursorVisible()
        self.sibling_label.hide()

    @staticmethod
    def _spans(start: int, pieces) -> list[TokenSpan]:
        spans, pos = [], start
        for p in pieces:
            n = utf16_len(p.text)
            spans.append(TokenSpan(pos, pos + n, p))
            pos += n
        return spans

    def begin_generation(self) -> None:
        """Lock editing and start streaming at the end of the text."""
        self._generating = True
        self.setReadOnly(True)
        self._end = self.document().characterCount() - 1
        self._stream = (self._end, self._end)
        self.sibling_label.hide()
        self._refresh_mark()

    def append_pieces(self, pieces) -> None:
        """Add a batch of streamed tokens at the end (one document edit per batch). Only the new
        text gets marks: rebuilding every token's mark each batch (a selection per token when
        probabilities are shown) cost the GUI thread time growing with the story, a frame's
        worth after a few thousand tokens."""
        text = "".join(p.text for p in pieces)
        spans = self._spans(self._end, pieces)
        self.tokens.extend(spans)
        if text:
            bar = self.verticalScrollBar()
            follow = bar.value() >= bar.maximum() - 4
            cursor = QTextCursor(self.document())
            cursor.setPosition(self._end)
            with self._edit():
                cursor.insertText(text)
            start, self._end = self._end, self._end + utf16_len(text)
            self._stream = (self._stream[0], self._end)
            if self.probabilities:
                new = [(s.start, s.end, probability_colour(s.piece.probability)) for s in spans]
            else:
                new = [(start, self._end, self._tint())]
            self._add_marks(new)
            if follow:
                bar.setValue(bar.maximum())
        self._updates += 1

    def end_generation(self) -> None:
        self._generating = False
        self.setReadOnly(False)
        self.moveCursor(QTextCursor.End)

    @property
    def generating(self) -> bool:
        return self._generating

    # --- the marks -------------------------------------------------------------------
    def clear_mark(self) -> None:
        self.tokens, self._tinted, self._stream = [], [], None
        self._refresh_mark()

    def has_mark(self) -> bool:
        """True when some model text is shown tinted (or coloured)."""
        return bool(self.tokens or self._tinted or (self._stream and self._stream[1] > self._stream[0]))

    def set_probabilities(self, on: bool) -> None:
        """Colour generated tokens by their probability (True) or tint them all alike (False)."""
        self.probabilities = on
        self._refresh_mark()

    def refresh_mark(self) -> None:
        """Redraw the tints (after a palette change)."""
        self._refresh_mark()

    def _tint(self) -> QColor:
        tint = QColor(self.palette().color(QPalette.Highlight))
        tint.setAlpha(TINT_ALPHA)
        return tint

    def _refresh_mark(self) -> None:
        """Every mark built again (after an edit, a new tree, a palette or mode change). While
        streaming, the text tokens are in the runs already, so the stream adds only what the
        runs lack (streamed text without tokens): one tint, as append_pieces gives it."""
        tint = self._tint()
        ranges = [(a, b, tint) for a, b in self._tinted]
        if self.probabilities:
            ranges += [(s.start, s.end, probability_colour(s.piece.probability)) for s in self.tokens]
        else:
            runs = _runs((s.start, s.end) for s in self.tokens)
            ranges += [(a, b, tint) for a, b in runs]
            if self._stream:
                covered = max([b for a, b in runs if a <= self._stream[0] <= b] + [self._stream[0]])
                ranges.append((covered, self._stream[1], tint))
        self._set_marks(ranges)

    # Why marks are merged: QPlainTextEdit draws each extra selection over every line of its
    # paragraph (measured on a 1,800-character paragraph: 1.8 ms a repaint bare, 3.2 with one
    # mark, 7.9 with 50), and a stream repaints its paragraph every batch of tokens.
    def _set_marks(self, ranges) -> None:
        """Show `ranges` ((start, end, colour)) as the marks, touching ones of one colour as one."""
        self._marks = _merged(ranges)
        self._selections = self._make_selections(self._marks)
        self.setExtraSelections(self._selections)

    def _add_marks(self, ranges) -> None:
        """Marks for streamed text after the others; the last one grows where the first new one touches it."""
        new = _merged(ranges)
        keep = len(self._marks)
        if keep and new and self._marks[-1][1] == new[0][0] and self._marks[-1][2] == new[0][2]:
            keep -= 1
            new[0] = (self._marks[keep][0], new[0][1], new[0][2])
        self._marks = self._marks[:keep] + new
        self._selections = self._selections[:keep] + self._make_selections(new)
        self.setExtraSelections(self._selections)

    def _make_selections(self, ranges) -> list:
        last = self.document().characterCount() - 1
        selections = []
        for start, end, colour in ranges:
            if end <= start:
                continue
            sel = QTextEdit.ExtraSelection()
            fmt = QTextCharFormat()
            fmt.setBackground(colour)
            sel.format = fmt
            cursor = QTextCursor(self.document())
            cursor.setPosition(min(start, last))
            cursor.setPosition(min(end, last), QTextCursor.KeepAnchor)
            sel.cursor = cursor
            selections.append(sel)
        return selections

    def on_document_contents_change(self, position: int, removed: int, added: int) -> None:
        if self._programmatic or (removed == 0 and added == 0):
            return
        # the tints are extra selections, whose cursors follow the edit; token spans are plain
        # offsets, so the ones after the edit move with it and the ones it touched are dropped
        # until the owner shows the tree again
        shift = added - removed
        end = position + removed
        self.tokens = [s if s.end <= position else TokenSpan(s.start + shift, s.end + shift, s.piece)
                       for s in self.tokens if s.end <= position or s.start >= end]
        self._tinted = [(a, b) if b <= position else (a + shift, b + shift)
                        for a, b in self._tinted if b <= position or a >= end]
        self.passages = []
        self.sibling_label.hide()
        self._refresh_mark()
        self.userEdited.emit()

    # --- the passage at the cursor ---------------------------------------------------
    def passage_at_cursor(self) -> PassageSpan | None:
        """The shown passage holding the cursor (at a boundary: the one before it)."""
        pos = self.textCursor().position()
        for span in self.passages:
            if span.start < pos <= span.end or (pos == 0 and span.start == 0):
                return span
        return self.passages[-1] if self.passages else None

    def on_self_cursor_position_changed(self) -> None:
        span = None if self._generating else self.passage_at_cursor()      # (each batch moves the cursor)
        if span is None or span.siblings < 2:
            self.sibling_label.hide()
            return
        self.sibling_label.setText(f" ‹ {span.sibling}/{span.siblings} › ")
        self.sibling_label.adjustSize()
        rect = self.cursorRect()
        x = self.viewport().width() - self.sibling_label.width() - 4
        self.sibling_label.move(max(0, x), max(0, rect.top()))
        self.sibling_label.show()

    # --- keys ------------------------------------------------------------------------
    def event(self, event) -> bool:
        # the editor claims Ctrl+Z itself even with its own undo off; these keys are the story's
        if event.type() == QEvent.ShortcutOverride and self._tree_key(event) is not None:
            event.accept()
            return True
        return super().event(event)

    def keyPressEvent(self, event) -> None:
        signal = self._tree_key(event)
        if signal is None:
            super().keyPressEvent(event)
        elif not self._generating:
            signal()

    def _tree_key(self, event):
        """The request a key press makes of the story tree, as a callable, or None."""
        if event.matches(QKeySequence.Undo):
            return self.undoRequested.emit
        if event.matches(QKeySequence.Redo) or (event.key() == Qt.Key_Y and event.modifiers() == Qt.ControlModifier):
            return self.redoRequested.emit
        if event.modifiers() != Qt.AltModifier:
            return None
        key = event.key()
        if key in (Qt.Key_Left, Qt.Key_Right):
            span = self.passage_at_cursor()
            step = -1 if key == Qt.Key_Left else 1
            return (lambda: self.siblingRequested.emit(span.passage_id, step)) if span else (lambda: None)
        if key == Qt.Key_Up:
            return self.parentRequested.emit
        if key == Qt.Key_Down:
            return self.childRequested.emit
        return None

    # --- clicking a token ------------------------------------------------------------
    def token_at(self, position: int) -> int | None:
        """Index of the generated token covering Qt position `position`, or None."""
        for i, span in enumerate(self.tokens):
            if span.start <= position < span.end:
                return i
        return None

    def token_at_cursor(self) -> int | None:
        """The generated token (with alternatives) the cursor is in, or None; at a boundary the one
        before it (the token just typed over or read), as for passages."""
        position = self.textCursor().position()
        for at in (position - 1, position):
            index = self.token_at(at)
            if index is not None and self.tokens[index].piece.alternatives:
                return index
        return None

    def offer_alternatives_at_cursor(self) -> bool:
        """From the keyboard: `tokenClicked` for the token at the cursor, the popup to open just
        under it. False when there is none (or a generation runs)."""
        index = None if self._generating else self.token_at_cursor()
        if index is None:
            return False
        cursor = QTextCursor(self.document())
        cursor.setPosition(self.tokens[index].start)
        rect = self.cursorRect(cursor)
        self.tokenClicked.emit(index, self.viewport().mapToGlobal(rect.bottomLeft()))
        return True

    def token_start_offset(self, index: int) -> int:
        """The Python offset in the text where token `index` begins."""
        return python_offset(self.toPlainText(), self.tokens[index].start)

    def mouseReleaseEvent(self, event) -> None:
        super().mouseReleaseEvent(event)
        if (event.button() != Qt.LeftButton or self._generating or not self.tokens
                or self.textCursor().hasSelection()):
            return
        point = event.position().toPoint()
        cursor = self.cursorForPosition(point)
        position = cursor.position()
        if point.x() < self.cursorRect(cursor).x() and position > 0:
            position -= 1     # the click was on the right half of the character before the cursor
        index = self.token_at(position)
        if index is not None and self.tokens[index].piece.alternatives:
            self.tokenClicked.emit(index, event.globalPosition().toPoint())

    # --- what is on screen, the context menu ------------------------------------------------
    def visible_block_range(self) -> range:
        """The numbers of the blocks (paragraphs) on screen, wholly or partly."""
        block = self.firstVisibleBlock()
        first = block.blockNumber()
        offset, height = self.contentOffset(), self.viewport().height()
        last = first
        while block.isValid() and self.blockBoundingGeometry(block).translated(offset).top() <= height:
            last = block.blockNumber()
            block = block.next()
        return range(first, last + 1)

    def contextMenuEvent(self, event) -> None:
        """Qt's editing menu, with what others add for the place clicked (or the cursor's, from
        the keyboard: the Menu key, Shift+F10)."""
        menu = self.createStandardContextMenu()
        if event.reason() == event.Reason.Mouse:
            position = self.cursorForPosition(event.pos()).position()
        else:
            position = self.textCursor().position()
        self.menuAboutToShow.emit(menu, position)
        menu.exec(event.globalPos())
        menu.deleteLater()

    def set_font_size(self, points: int) -> None:
        font = QFont(self.font())
        font.setPointSize(points)
        self.setFont(font)


def python_offset(text: str, position: int) -> int:
    """The code-point offset in `text` of Qt position `position`."""
    pos16 = 0
    for i, ch in enumerate(text):
        if pos16 >= position:
            return i
        pos16 += 2 if ord(ch) > 0xFFFF else 1
    return len(text)


def _qt_token_offsets(text: str, tokens):
    """(start, end, token) in Qt positions within `text` for tokens given in code points."""
    if utf16_len(text) == len(text):          # no character outside the BMP: the offsets agree
        return [(t.start, t.end, t) for t in tokens]
    return [(utf16_len(text[:t.start]), utf16_len(text[:t.end]), t) for t in tokens]


def _merged(ranges) -> list:
    """(start, end, colour) ranges in document order, empty ones left out and touching ones of
    one colour joined."""
    out = []
    for a, b, colour in sorted(ranges, key=lambda r: r[0]):
        if b <= a:
            continue
        if out and out[-1][1] == a and out[-1][2] == colour:
            out[-1] = (out[-1][0], b, colour)
        else:
            out.append((a, b, colour))
    return out


def _runs(spans):
    """Touching (start, end) spans merged, so a long generation is one tint, not hundreds."""
    out = []
    for a, b in spans:
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out
