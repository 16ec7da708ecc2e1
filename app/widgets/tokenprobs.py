"""The token alternatives popup: a clicked token's top candidates with their probabilities.

Local tokens come with ids; a remote server's alternatives are text only (id -1), so the
chosen one is recognised by its id when there is one and by its text otherwise.

Picking a different candidate emits `alternativeChosen`; the window then replaces the token
with it and generates again from there. The popup works from the keyboard too: it opens with the
list focused on the token as written, the arrows move, Enter chooses, Esc closes it (Qt closes a
popup on Esc) and the cursor is back in the story.
"""
from __future__ import annotations

import math

from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtWidgets import QFrame, QLabel, QListWidget, QListWidgetItem, QVBoxLayout


def show_token(text: str) -> str:
    """A token's text made visible: spaces as '·', newlines as '↵'."""
    return text.replace(" ", "·").replace("\n", "↵").replace("\t", "→") or "∅"


def percent(p: float) -> str:
    """A probability as a percentage; "?" when the server did not say (NaN)."""
    return "?" if math.isnan(p) else f"{p:.1%}"


class TokenProbsPopup(QFrame):
    """A small popup list of alternatives for one generated token."""

    alternativeChosen = Signal(int, str, int)    # token index, replacement text, token id (-1: text only)

    def __init__(self, parent=None):
        super().__init__(parent, Qt.Popup)
        self.setObjectName("tokenProbsPopup")
        self.setFrameShape(QFrame.StyledPanel)
        self.title = QLabel()
        self.hint = QLabel("↑ ↓ to move, Enter to choose, Esc to close", objectName="tokenPopupHint")
        self.hint.setEnabled(False)                 # the palette's quieter text
        self.list = QListWidget(objectName="tokenAlternatives")
        self.list.itemActivated.connect(self.on_list_item_activated)
        self.list.itemClicked.connect(self.on_list_item_activated)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.title)
        layout.addWidget(self.list)
        layout.addWidget(self.hint)
        self._index = -1

    def show_for(self, index: int, piece, at: QPoint | None = None) -> None:
        """Fill the list for token `index` (a chatllm.TokenPiece) and show it at `at`."""
        self._index = index
        self.title.setText(f"Token {show_token(piece.text)!s} — {percent(piece.probability)}")
        self.list.clear()
        current = 0
        for text, token, prob in piece.alternatives:
            item = QListWidgetItem(f"{show_token(text)}    {percent(prob):>6}")
            item.setData(Qt.UserRole, (text, token))
            chosen = token == piece.token if token >= 0 else text == piece.text
            if chosen:
                current = self.list.count()
                font = item.font()
                font.setBold(True)
                item.setFont(font)
            self.list.addItem(item)
        rows = min(self.list.count(), 10)
        self.list.setFixedHeight(self.list.sizeHintForRow(0) * rows + 8 if rows else 24)
        self.adjustSize()
        if at is not None:
            self.move(at)
        self.show()
        self.list.setCurrentRow(current)            # the keys start from the token as written
        self.list.setFocus(Qt.PopupFocusReason)

    def choose(self, row: int) -> None:
        """Pick alternative `row` (what a click does)."""
        text, token = self.list.item(row).data(Qt.UserRole)
        self.hide()
        self.alternativeChosen.emit(self._index, text, token)

    def on_list_item_activated(self, item: QListWidgetItem) -> None:
        self.choose(self.list.row(item))
