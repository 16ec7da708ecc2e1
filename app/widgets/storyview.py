"""The story view: one editable document where generated tokens stream in at the end.

The newest generation is tinted until the user edits; each of its tokens remembers its
alternatives, so clicking one can offer them (`tokenClicked`). While a generation runs the
view is read-only. Qt measures text in UTF-16 code units and Python in code points, so
token spans here are kept in Qt positions and converted only where the story (Python) needs them.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtGui import QColor, QFont, QPalette, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QPlainTextEdit, QTextEdit


def utf16_len(text: str) -> int:
    """Length of `text` in Qt positions (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True)
class TokenSpan:
    """Where one generated token sits in the document (Qt positions) and what it was."""
    start: int
    end: int
    piece: object        # chatllm.TokenPiece


class StoryView(QPlainTextEdit):
    """The story editor with streaming, the newest-generation mark and clickable tokens."""

    userEdited = Signal()                        # the user changed the text (not the model)
    tokenClicked = Signal(int, QPoint)           # index into `tokens`, global position

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("storyView")
        self.setPlaceholderText("Write the beginning of your story, then press Generate (Ctrl+Enter).")
        self.setLineWrapMode(QPlainTextEdit.WidgetWidth)
        self.setTabChangesFocus(False)
        self.tokens: list[TokenSpan] = []        # tokens of the marked (newest) generation
        self._mark: tuple[int, int] | None = None
        self._programmatic = 0
        self._generating = False
        self._end = 0                            # Qt position where streamed text goes
        self._updates = 0                        # token batches shown (tests check streaming)
        self.document().contentsChange.connect(self.on_document_contents_change)
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

    def set_story(self, text: str, mark: tuple[int, int] | None = None, tokens=None) -> None:
        """Replace the whole text (open, undo, redo); `mark` is a (start, end) in Python offsets."""
        with self._edit():
            self.setPlainText(text)
        self.tokens = []
        self._mark = None
        if mark is not None:
            start = utf16_len(text[:mark[0]])
            end = start + utf16_len(text[mark[0]:mark[1]])
            self._mark = (start, end)
            if tokens:
                self.tokens = self._spans(start, tokens)
        self._refresh_mark()
        self.moveCursor(QTextCursor.End)
        self.ensureCursorVisible()

    @staticmethod
    def _spans(start: int, pieces) -> list[TokenSpan]:
        spans, pos = [], start
        for p in pieces:
            n = utf16_len(p.text)
            spans.append(TokenSpan(pos, pos + n, p))
            pos += n
        return spans

    def begin_generation(self) -> None:
        """Lock editing and start a new marked generation at the end of the text."""
        self._generating = True
        self.setReadOnly(True)
        self._end = self.document().characterCount() - 1
        self.tokens = []
        self._mark = (self._end, self._end)
        self._refresh_mark()

    def append_pieces(self, pieces) -> None:
        """Add a batch of streamed tokens at the end (one document edit per batch)."""
        text = "".join(p.text for p in pieces)
        self.tokens.extend(self._spans(self._end, pieces))
        if text:
            bar = self.verticalScrollBar()
            follow = bar.value() >= bar.maximum() - 4
            cursor = QTextCursor(self.document())
            cursor.setPosition(self._end)
            with self._edit():
                cursor.insertText(text)
            self._end += utf16_len(text)
            self._mark = (self._mark[0], self._end)
            self._refresh_mark()
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

    # --- the mark --------------------------------------------------------------------
    def clear_mark(self) -> None:
        self._mark = None
        self.tokens = []
        self._refresh_mark()

    def has_mark(self) -> bool:
        return self._mark is not None and self._mark[1] > self._mark[0]

    def refresh_mark(self) -> None:
        """Redraw the newest-generation tint (after a palette change)."""
        self._refresh_mark()

    def _refresh_mark(self) -> None:
        if not self.has_mark():
            self.setExtraSelections([])
            return
        sel = QTextEdit.ExtraSelection()
        fmt = QTextCharFormat()
        highlight = self.palette().color(QPalette.Highlight)
        tint = QColor(highlight)
        tint.setAlpha(48)
        fmt.setBackground(tint)
        sel.format = fmt
        cursor = QTextCursor(self.document())
        cursor.setPosition(self._mark[0])
        cursor.setPosition(min(self._mark[1], self.document().characterCount() - 1), QTextCursor.KeepAnchor)
        sel.cursor = cursor
        self.setExtraSelections([sel])

    def on_document_contents_change(self, position: int, removed: int, added: int) -> None:
        if self._programmatic or (removed == 0 and added == 0):
            return
        self.clear_mark()
        self.userEdited.emit()

    # --- clicking a token ------------------------------------------------------------
    def token_at(self, position: int) -> int | None:
        """Index of the marked generation's token covering Qt position `position`, or None."""
        for i, span in enumerate(self.tokens):
            if span.start <= position < span.end:
                return i
        return None

    def token_start_offset(self, index: int) -> int:
        """The Python offset in the text where token `index` begins."""
        text = self.toPlainText()
        target = self.tokens[index].start
        # walk code points until their UTF-16 length reaches the Qt position
        pos16 = 0
        for i, ch in enumerate(text):
            if pos16 >= target:
                return i
            pos16 += 2 if ord(ch) > 0xFFFF else 1
        return len(text)

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

    def set_font_size(self, points: int) -> None:
        font = QFont(self.font())
        font.setPointSize(points)
        self.setFont(font)
