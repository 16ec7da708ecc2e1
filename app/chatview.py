"""Chat mode: a transcript of turns, an input box, a template picker, regenerate and edit.

The view only shows turns and collects input; the window turns the transcript into a prompt
with the chosen `ChatTemplate` and streams the bot's reply into the last turn. Double-click
a turn to edit it.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QFont, QKeySequence, QPalette, QShortcut
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QHBoxLayout, QLabel, QLineEdit, QListWidget,
                               QListWidgetItem, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget)

from app.chattemplates import TEMPLATES
from app.story import ChatTurn


class ChatView(QWidget):
    """The chat transcript with its input box; emits what the user asks for."""

    sendRequested = Signal(str)
    regenerateRequested = Signal()
    turnEdited = Signal(int, str)
    templateChanged = Signal(str)
    namesChanged = Signal(str, str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("chatView")
        self.turns: list[ChatTurn] = []
        self.user_name, self.bot_name = "You", "Bot"
        self.template_picker = QComboBox(objectName="chatTemplatePicker")
        for name, template in TEMPLATES.items():
            self.template_picker.addItem(template.label, name)
        self.template_picker.currentIndexChanged.connect(self.on_template_picker_changed)
        self.user_edit = QLineEdit(self.user_name, objectName="chatUserName")
        self.bot_edit = QLineEdit(self.bot_name, objectName="chatBotName")
        for edit in (self.user_edit, self.bot_edit):
            edit.setMaximumWidth(120)
            edit.editingFinished.connect(self.on_name_editing_finished)
        top = QHBoxLayout()
        top.addWidget(QLabel("Template"))
        top.addWidget(self.template_picker, 1)
        top.addWidget(QLabel("You are"))
        top.addWidget(self.user_edit)
        top.addWidget(QLabel("talking to"))
        top.addWidget(self.bot_edit)

        self.transcript = QListWidget(objectName="chatTranscript")
        self.transcript.setWordWrap(True)
        self.transcript.setSpacing(4)
        self.transcript.setVerticalScrollMode(QAbstractItemView.ScrollPerPixel)
        self.transcript.setEditTriggers(QAbstractItemView.DoubleClicked | QAbstractItemView.EditKeyPressed)
        self.transcript.itemChanged.connect(self.on_transcript_item_changed)

        self.input = QPlainTextEdit(objectName="chatInput")
        self.input.setPlaceholderText("Type a message; Ctrl+Enter sends")
        self.input.setMaximumHeight(self.fontMetrics().lineSpacing() * 4 + 12)
        self.send_button = QPushButton("Send", objectName="sendButton")
        self.send_button.clicked.connect(self.on_send_clicked)
        self.regenerate_button = QPushButton("Regenerate", objectName="regenerateButton")
        self.regenerate_button.setToolTip("Write the last reply again")
        self.regenerate_button.clicked.connect(self.regenerateRequested)
        send = QShortcut(QKeySequence("Ctrl+Return"), self.input)
        send.activated.connect(self.on_send_clicked)
        bottom = QHBoxLayout()
        bottom.addWidget(self.input, 1)
        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.regenerate_button)
        bottom.addLayout(buttons)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.transcript, 1)
        layout.addLayout(bottom)
        self._filling = False

    # --- template and names ----------------------------------------------------------
    def template_name(self) -> str:
        return self.template_picker.currentData()

    def set_template(self, name: str) -> None:
        i = self.template_picker.findData(name)
        if i >= 0:
            self.template_picker.setCurrentIndex(i)

    def on_template_picker_changed(self, index: int) -> None:
        self.templateChanged.emit(self.template_picker.itemData(index))

    def set_names(self, user: str, bot: str) -> None:
        self.user_name, self.bot_name = user, bot
        self.user_edit.setText(user)
        self.bot_edit.setText(bot)
        self.set_turns(self.turns)

    def on_name_editing_finished(self) -> None:
        user, bot = self.user_edit.text().strip() or "You", self.bot_edit.text().strip() or "Bot"
        if (user, bot) != (self.user_name, self.bot_name):
            self.user_name, self.bot_name = user, bot
            self.set_turns(self.turns)
            self.namesChanged.emit(user, bot)

    # --- transcript ------------------------------------------------------------------
    def _name(self, role: str) -> str:
        return self.user_name if role == "user" else self.bot_name

    def _make_item(self, turn: ChatTurn) -> QListWidgetItem:
        item = QListWidgetItem(turn.text)
        item.setFlags(item.flags() | Qt.ItemIsEditable)
        item.setToolTip(f"{self._name(turn.role)} — double-click to edit")
        if turn.role == "bot":
            tint = QColor(self.palette().color(QPalette.Highlight))
            tint.setAlpha(36)
            item.setBackground(tint)
        else:
            font = QFont(item.font())
            font.setBold(True)
            item.setFont(font)
        return item

    def set_turns(self, turns: list[ChatTurn]) -> None:
        self._filling = True
        self.turns = [ChatTurn(t.role, t.text) for t in turns]
        self.transcript.clear()
        for turn in self.turns:
            self.transcript.addItem(self._make_item(turn))
        self.transcript.scrollToBottom()
        self._filling = False

    def on_transcript_item_changed(self, item: QListWidgetItem) -> None:
        if self._filling:
            return
        row = self.transcript.row(item)
        if 0 <= row < len(self.turns) and item.text() != self.turns[row].text:
            self.turns[row].text = item.text()
            self.turnEdited.emit(row, item.text())

    def on_send_clicked(self) -> None:
        text = self.input.toPlainText().strip()
        if text and self.send_button.isEnabled():
            self.input.clear()
            self.sendRequested.emit(text)

    def set_busy(self, busy: bool) -> None:
        self.send_button.setEnabled(not busy)
        self.regenerate_button.setEnabled(not busy)
        self.transcript.setEditTriggers(QAbstractItemView.NoEditTriggers if busy else
                                        QAbstractItemView.DoubleClicked | QAbstractItemView.EditKeyPressed)

    def begin_reply(self) -> None:
        """Add an empty bot turn that streamed text will fill."""
        self.turns.append(ChatTurn("bot", ""))
        self._filling = True
        self.transcript.addItem(self._make_item(self.turns[-1]))
        self._filling = False

    def set_reply_text(self, text: str) -> None:
        """Show the streamed reply so far in the last (bot) turn."""
        self.turns[-1].text = text
        self._filling = True
        self.transcript.item(self.transcript.count() - 1).setText(text)
        self._filling = False
        self.transcript.scrollToBottom()
