"""The context view: exactly what the model will see, part by part, with token counts.

The parts come from `app.prompt` (the prompt policy); this module only shows them.
"""
from __future__ import annotations

from PySide6.QtGui import QColor, QFont, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from app.prompt import Context

PART_COLOURS = {"memory": "#3b82f6", "world info": "#10b981", "author's note": "#f59e0b", "story": None}


class ContextView(QWidget):
    """Shows exactly what the model will see, part by part, with token counts."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("contextView")
        self.mode = "story"          # in chat mode the prompt's text is the chat, and is named so
        self.summary = QLabel("Load a model to see the context.", objectName="contextSummary")
        self.summary.setWordWrap(True)
        self.refresh_button = QPushButton("Refresh", objectName="contextRefreshButton")
        self.text = QPlainTextEdit(objectName="contextText", readOnly=True)
        self.text.setLineWrapMode(QPlainTextEdit.WidgetWidth)
        top = QHBoxLayout()
        top.addWidget(self.summary, 1)
        top.addWidget(self.refresh_button)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.text, 1)

    def set_mode(self, mode: str) -> None:
        """Story or chat: what the next context will be of (the shown one is stale until it comes)."""
        if mode != self.mode:
            self.mode = mode
            self.show_error(f"Reading the {mode} context…")

    def _name(self, kind: str) -> str:
        return "chat" if kind == "story" and self.mode == "chat" else kind

    def show_context(self, context: Context) -> None:
        counts = [f"{self._name(kind)}: {context.count(kind)}"
                  for kind in ("memory", "world info", "author's note", "story") if context.count(kind)]
        total = context.n_tokens
        dropped = f"; {context.dropped_tokens} tokens of early story left out" if context.dropped_tokens else ""
        if context.note_dropped:
            dropped += "; the author's note does not fit (shorten the memory or the new tokens)"
        self.summary.setText(f"{total} / {context.budget} prompt tokens ({', '.join(counts) or 'empty'}){dropped}")
        self.text.clear()
        cursor = self.text.textCursor()
        for part in context.parts:
            label = QTextCharFormat()
            label.setFontWeight(QFont.Bold)
            colour = PART_COLOURS.get(part.kind)
            if colour:
                label.setForeground(QColor(colour))
            cursor.insertText(f"⟦{self._name(part.kind)}, {part.n_tokens} tokens⟧\n", label)
            body = QTextCharFormat()
            if colour:
                body.setForeground(QColor(colour))
            cursor.insertText(part.text if part.text.endswith("\n") else part.text + "\n", body)
        self.text.moveCursor(QTextCursor.End)

    def show_error(self, message: str) -> None:
        self.summary.setText(message)
        self.text.clear()
