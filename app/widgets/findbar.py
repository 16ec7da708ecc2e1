"""The find and replace bar under the story: Ctrl+F finds, Ctrl+H also replaces.

It works on the story view's document through text cursors, so a replacement is an edit like
the writer's own typing: the view reports it (`userEdited`) and the story records it in its
history. While a generation runs the view is read-only and nothing is replaced.
"""
from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QTextCursor, QTextDocument
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QToolButton, QWidget


class FindBar(QWidget):
    """Find (next, previous, match case) and replace (one, all) in a QPlainTextEdit."""

    def __init__(self, editor: QPlainTextEdit, parent=None):
        super().__init__(parent)
        self.setObjectName("findBar")
        self.editor = editor
        self.find_edit = QLineEdit(objectName="findEdit", placeholderText="Find")
        self.replace_edit = QLineEdit(objectName="replaceEdit", placeholderText="Replace with")
        self.case_box = QCheckBox("Match case", objectName="matchCaseBox")
        self.count_label = QLabel("", objectName="findCountLabel")
        buttons = {}
        for name, text, tip, slot in (
                ("findPreviousButton", "↑", "Previous match (Shift+Enter)", self.find_previous),
                ("findNextButton", "↓", "Next match (Enter)", self.find_next),
                ("replaceButton", "Replace", "Replace this match and find the next", self.replace_one),
                ("replaceAllButton", "All", "Replace every match", self.replace_all),
                ("closeFindButton", "✕", "Close (Esc)", self.close_bar)):
            buttons[name] = QToolButton(objectName=name, text=text, toolTip=tip)
            buttons[name].clicked.connect(slot)
        self.replace_widgets = [self.replace_edit, buttons["replaceButton"], buttons["replaceAllButton"]]
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 4, 8, 4)
        for widget in (self.find_edit, buttons["findPreviousButton"], buttons["findNextButton"], self.case_box,
                       self.count_label, self.replace_edit, buttons["replaceButton"], buttons["replaceAllButton"]):
            layout.addWidget(widget, 1 if isinstance(widget, QLineEdit) else 0)
        layout.addWidget(buttons["closeFindButton"])
        self.find_edit.returnPressed.connect(self.find_next)
        self.replace_edit.returnPressed.connect(self.replace_one)
        self.find_edit.textChanged.connect(self.on_find_edit_text_changed)
        self.case_box.toggled.connect(self.on_find_edit_text_changed)
        self.installEventFilter(self)
        for edit in (self.find_edit, self.replace_edit):
            edit.installEventFilter(self)
        self.hide()

    # --- showing ---------------------------------------------------------------------
    def open_find(self, replace: bool = False) -> None:
        """Show the bar (with the replace field when `replace`), the selection as what to find."""
        selected = self.editor.textCursor().selectedText()
        if selected and "\u2029" not in selected:
            self.find_edit.setText(selected)
        for widget in self.replace_widgets:
            widget.setVisible(replace)
        self.show()
        self.find_edit.setFocus(Qt.ShortcutFocusReason)
        self.find_edit.selectAll()

    def close_bar(self) -> None:
        self.hide()
        self.editor.setFocus(Qt.ShortcutFocusReason)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.ShortcutOverride and event.key() == Qt.Key_Escape:
            event.accept()            # Esc closes the bar here (elsewhere it is Stop)
            return True
        if event.type() == QEvent.KeyPress and event.key() == Qt.Key_Escape:
            self.close_bar()
            return True
        if (watched is self.find_edit and event.type() == QEvent.KeyPress
                and event.key() in (Qt.Key_Return, Qt.Key_Enter) and event.modifiers() & Qt.ShiftModifier):
            self.find_previous()
            return True
        return super().eventFilter(watched, event)

    # --- finding ---------------------------------------------------------------------
    def _flags(self, backward: bool = False) -> QTextDocument.FindFlag:
        flags = QTextDocument.FindFlag(0)
        if self.case_box.isChecked():
            flags |= QTextDocument.FindCaseSensitively
        if backward:
            flags |= QTextDocument.FindBackward
        return flags

    def matches(self) -> int:
        """How many times the text occurs in the story."""
        needle = self.find_edit.text()
        if not needle:
            return 0
        text = self.editor.toPlainText()
        return text.count(needle) if self.case_box.isChecked() else text.casefold().count(needle.casefold())

    def on_find_edit_text_changed(self, *args) -> None:
        n = self.matches()
        self.count_label.setText("" if not self.find_edit.text() else (f"{n} found" if n else "not found"))

    def _find(self, backward: bool) -> bool:
        """Select the next (previous) match after (before) the cursor, wrapping around."""
        needle = self.find_edit.text()
        if not needle:
            return False
        doc = self.editor.document()
        found = doc.find(needle, self.editor.textCursor(), self._flags(backward))
        if found.isNull():
            start = QTextCursor(doc)
            start.movePosition(QTextCursor.End if backward else QTextCursor.Start)
            found = doc.find(needle, start, self._flags(backward))
        if found.isNull():
            self.count_label.setText("not found")
            return False
        self.editor.setTextCursor(found)
        self.editor.ensureCursorVisible()
        return True

    def find_next(self) -> bool:
        return self._find(backward=False)

    def find_previous(self) -> bool:
        return self._find(backward=True)

    # --- replacing -------------------------------------------------------------------
    def _selection_matches(self) -> bool:
        selected = self.editor.textCursor().selectedText()
        needle = self.find_edit.text()
        return bool(needle) and (selected == needle if self.case_box.isChecked()
                                 else selected.casefold() == needle.casefold())

    def replace_one(self) -> None:
        """Replace the selected match (finding it first when the selection is not one), then find the next."""
        if self.editor.isReadOnly():
            return
        if not self._selection_matches() and not self.find_next():
            return
        self.editor.textCursor().insertText(self.replace_edit.text())
        self.find_next()
        self.on_find_edit_text_changed()

    def replace_all(self) -> int:
        """Replace every match, as one edit; returns how many."""
        needle = self.find_edit.text()
        if not needle or self.editor.isReadOnly():
            return 0
        doc, n = self.editor.document(), 0
        cursor = QTextCursor(doc)
        edit = QTextCursor(doc)
        edit.beginEditBlock()
        while not (cursor := doc.find(needle, cursor, self._flags())).isNull():
            cursor.insertText(self.replace_edit.text())
            n += 1
        edit.endEditBlock()
        self.count_label.setText(f"{n} replaced")
        return n
