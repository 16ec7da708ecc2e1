"""Misspelt words underlined in an editor, checked only where the writer can see them.

`SpellHighlighter` is a QSyntaxHighlighter on a `QPlainTextEdit`'s document. Qt calls it for the
blocks (paragraphs) an edit touched; a long story replaced whole (a passage switched, a story
opened) calls it for every block, so it checks only the blocks on screen and marks the others
unchecked (the block state). After an edit, a scroll or a resize a zero-delay timer checks the
visible blocks still unchecked, one by one. Typing in a long story thus costs one paragraph's
check; the word lookups are cached by the `app.spelling.Speller`. While a generation streams in
(the editor is read-only) nothing is checked: the GUI thread's time goes to the stream, and the
owner calls `check_visible` when it ends.
"""
from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtGui import QColor, QSyntaxHighlighter, QTextCharFormat

from app.widgets.storyview import utf16_len

UNCHECKED, CHECKED = 1, 2          # block states (Qt's default, -1, is unchecked too)
UNDERLINE = QColor(220, 50, 47)    # red in light and dark alike


class SpellHighlighter(QSyntaxHighlighter):
    """Underlines the words the speller does not know in `editor` (a QPlainTextEdit with
    `visible_block_range()`); `set_speller(None)` turns it off."""

    def __init__(self, editor):
        super().__init__(editor.document())
        self.editor = editor
        self.speller = None
        self.checked_blocks = 0                  # blocks checked so far (tests see what was done)
        self._visible = range(0)
        self._format = QTextCharFormat()
        self._format.setUnderlineStyle(QTextCharFormat.SpellCheckUnderline)
        self._format.setUnderlineColor(UNDERLINE)
        self.timer = QTimer(self, singleShot=True, interval=0)
        self.timer.timeout.connect(self.check_visible)
        editor.document().contentsChange.connect(self.on_document_contents_change)
        editor.verticalScrollBar().valueChanged.connect(lambda value: self.timer.start())   # not start(value) ms
        editor.installEventFilter(self)      # a taller view shows more blocks (the editor, not its
                                             # viewport: that one has a paint event every streamed batch)

    def set_speller(self, speller) -> None:
        """Check with `speller` (an app.spelling.Speller), or stop underlining (None)."""
        self.speller = speller
        self.recheck()

    def recheck(self) -> None:
        """Everything again (a new dictionary, a word added): the visible blocks now, the rest
        as they come into view."""
        self._visible = self.editor.visible_block_range()
        self.rehighlight()

    def on_document_contents_change(self, position: int, removed: int, added: int) -> None:
        if (removed or added) and not self.editor.isReadOnly():   # a stream: checked when it ends
            self.timer.start()

    def check_visible(self) -> None:
        """Check the blocks on screen that are not checked yet (after a scroll, a resize, an edit)."""
        if self.speller is None or self.editor.isReadOnly():   # a stream: re-laying out its paragraph
            return                                               # each batch would cost the GUI thread
        self._visible = self.editor.visible_block_range()
        document = self.document()
        for number in self._visible:
            block = document.findBlockByNumber(number)
            if block.isValid() and block.userState() != CHECKED:
                self.rehighlightBlock(block)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Resize:
            self.timer.start()
        return False

    def highlightBlock(self, text: str) -> None:
        if self.speller is None:
            self.setCurrentBlockState(-1)
            return
        if self.currentBlock().blockNumber() not in self._visible or self.editor.isReadOnly():
            self.setCurrentBlockState(UNCHECKED)     # off screen, or text streaming in: checked later
            return
        self.checked_blocks += 1
        if text.isascii():
            spans = self.speller.misspelt(text)
        else:                                    # Qt counts UTF-16 units, Python code points
            spans = [(utf16_len(text[:s]), utf16_len(text[s:s + n])) for s, n in self.speller.misspelt(text)]
        for start, length in spans:
            self.setFormat(start, length, self._format)
        self.setCurrentBlockState(CHECKED)

    def misspelt_at(self, position: int) -> tuple[int, int, str] | None:
        """(start, end, word) of the misspelt word at document position `position` (Qt positions), or None."""
        if self.speller is None:
            return None
        block = self.document().findBlock(position)
        text = block.text()
        offset = position - block.position()
        for start, length in self.speller.misspelt(text):
            a, n = (start, length) if text.isascii() else (utf16_len(text[:start]),
                                                            utf16_len(text[start:start + length]))
            if a <= offset <= a + n:
                return block.position() + a, block.position() + a + n, text[start:start + length]
        return None

