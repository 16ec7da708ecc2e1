"""Chat mode: a transcript of turns, an input box, a template picker, regenerate and edit.

The view only shows turns (speaker, text) and collects input; the window turns the transcript
into a prompt with the chosen `ChatTemplate` and streams the bot's reply into the last turn.
Double-click a turn to edit its text. A turn that was regenerated shows which of its
alternatives it is ("Bot 2/3"); Alt+Left / Alt+Right swipe between them (the selected turn,
or the last one), as SillyTavern users expect.
"""
from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QKeySequence, QPalette, QShortcut, QTextDocument, QTextOption
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QGridLayout, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QPlainTextEdit, QPushButton, QStyledItemDelegate, QTreeWidget, QTreeWidgetItem,
                               QVBoxLayout, QWidget)

from app.chattemplates import TEMPLATES
from app.story import ChatTurn

NAME, TEXT = range(2)     # transcript columns


def is_send_key(event) -> bool:
    """Ctrl+Enter (either Enter key): send a message, or finish editing a turn."""
    return (event.key() in (Qt.Key_Return, Qt.Key_Enter)
            and event.modifiers() & ~Qt.KeypadModifier == Qt.ControlModifier)


class TurnDelegate(QStyledItemDelegate):
    """Shows a turn's whole text, wrapped to its column (a long reply is never cut), and edits it
    in a multi-line editor: Enter starts a new line, Ctrl+Enter or leaving the editor keeps the
    edit, Esc drops it."""

    def __init__(self, view: QTreeWidget):
        super().__init__(view)
        self.view = view

    def _document(self, text: str, font, width: int) -> QTextDocument:
        doc = QTextDocument()
        doc.setDefaultFont(font)
        doc.setDefaultTextOption(QTextOption(Qt.AlignLeft | Qt.AlignTop))
        doc.setPlainText(text)
        doc.setTextWidth(max(40, width))
        return doc

    def sizeHint(self, option, index) -> QSize:
        hint = super().sizeHint(option, index)
        if index.column() != TEXT:
            return hint
        padding = 12          # the item's own padding (the style sheet's 4 px) and the document's margin
        doc = self._document(index.data() or "", option.font, self.view.header().sectionSize(TEXT) - 16)
        return QSize(hint.width(), max(hint.height(), int(doc.size().height()) + padding))

    def createEditor(self, parent, option, index):
        if index.column() != TEXT:
            return super().createEditor(parent, option, index)
        editor = QPlainTextEdit(parent, objectName="turnEditor")
        editor.setTabChangesFocus(True)
        editor.installEventFilter(self)
        return editor

    def setEditorData(self, editor, index) -> None:
        if isinstance(editor, QPlainTextEdit):
            editor.setPlainText(index.data() or "")
        else:
            super().setEditorData(editor, index)

    def setModelData(self, editor, model, index) -> None:
        if isinstance(editor, QPlainTextEdit):
            model.setData(index, editor.toPlainText())
        else:
            super().setModelData(editor, model, index)

    def updateEditorGeometry(self, editor, option, index) -> None:
        rect = option.rect
        rect.setHeight(max(rect.height(), option.fontMetrics.lineSpacing() * 4 + 12))   # room to add lines
        editor.setGeometry(rect)

    def eventFilter(self, editor: QObject, event: QEvent) -> bool:
        if isinstance(editor, QPlainTextEdit) and event.type() == QEvent.KeyPress and is_send_key(event):
            self.commitData.emit(editor)
            self.closeEditor.emit(editor)
            return True
        return super().eventFilter(editor, event)


class ChatView(QWidget):
    """The chat transcript with its input box; emits what the user asks for."""

    sendRequested = Signal(str)
    regenerateRequested = Signal()
    turnEdited = Signal(int, str)
    templateChanged = Signal(str)
    namesChanged = Signal(str, str)
    swipeRequested = Signal(int, int)      # turn index, step (-1 previous, +1 next alternative)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("chatView")
        self.turns: list[ChatTurn] = []
        self.positions: list[tuple[int, int]] = []      # each turn's (alternative, of how many)
        self.user_name, self.bot_name = "You", "Bot"
        self.template_picker = QComboBox(objectName="chatTemplatePicker")
        for name, template in TEMPLATES.items():
            self.template_picker.addItem(template.label, name)
        self.template_picker.currentIndexChanged.connect(self.on_template_picker_changed)
        # the picker may shrink below its longest name: the chat then fits a small window
        self.template_picker.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.template_picker.setMinimumContentsLength(10)
        self.user_edit = QLineEdit(self.user_name, objectName="chatUserName")
        self.bot_edit = QLineEdit(self.bot_name, objectName="chatBotName")
        for edit in (self.user_edit, self.bot_edit):
            edit.setMinimumWidth(self.fontMetrics().horizontalAdvance("Wentw") + 16)
            edit.setMaximumWidth(160)
            edit.editingFinished.connect(self.on_name_editing_finished)
        top = QGridLayout()         # two rows: the chat fits beside the docks of a small window
        top.addWidget(QLabel("Template"), 0, 0)
        top.addWidget(self.template_picker, 0, 1, 1, 3)
        for column, widget in enumerate((QLabel("You are"), self.user_edit, QLabel("talking to"), self.bot_edit)):
            top.addWidget(widget, 1, column)
        top.setColumnStretch(4, 1)

        self.transcript = QTreeWidget(objectName="chatTranscript")
        self.transcript.setColumnCount(2)
        self.transcript.setHeaderHidden(True)
        self.transcript.setRootIsDecorated(False)
        self.transcript.setWordWrap(True)
        self.transcript.setUniformRowHeights(False)
        self.transcript.setVerticalScrollMode(QAbstractItemView.ScrollPerPixel)
        self.transcript.setEditTriggers(QAbstractItemView.NoEditTriggers)   # only the text column, see below
        self.transcript.header().setSectionResizeMode(NAME, QHeaderView.ResizeToContents)
        self.transcript.header().setSectionResizeMode(TEXT, QHeaderView.Stretch)
        self.transcript.setTextElideMode(Qt.ElideNone)
        self.transcript.setItemDelegate(TurnDelegate(self.transcript))
        self.transcript.header().sectionResized.connect(self.on_transcript_section_resized)
        self.transcript.setStyleSheet("QTreeView::item { padding: 4px 6px; }")
        self.transcript.itemChanged.connect(self.on_transcript_item_changed)
        self.transcript.itemDoubleClicked.connect(self.on_transcript_item_double_clicked)
        self.transcript.installEventFilter(self)      # F2 or Enter edits the selected turn
        self._editable = True

        self.input = QPlainTextEdit(objectName="chatInput")
        self.input.setPlaceholderText("Type a message; Ctrl+Enter sends")
        self.input.setTabChangesFocus(True)           # Tab moves on; a message needs no tab characters
        self.input.installEventFilter(self)           # Ctrl+Enter: ours, not the window's Generate
        self.input.setMaximumHeight(self.fontMetrics().lineSpacing() * 4 + 12)
        for keys, step in (("Alt+Left", -1), ("Alt+Right", 1)):
            swipe = QShortcut(QKeySequence(keys), self, context=Qt.WidgetWithChildrenShortcut)
            swipe.activated.connect(lambda step=step: self.on_swipe_activated(step))
        self.send_button = QPushButton("Send", objectName="sendButton")
        self.send_button.clicked.connect(self.on_send_clicked)
        self.regenerate_button = QPushButton("Regenerate", objectName="regenerateButton")
        self.regenerate_button.setToolTip("Write the last reply again")
        self.regenerate_button.clicked.connect(self.regenerateRequested)
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

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """The input claims Ctrl+Enter before the window's shortcuts see it (Generate shares the
        keys: two claimants and Qt would run neither), and sends the message."""
        if watched is self.transcript and event.type() == QEvent.KeyPress \
                and event.key() in (Qt.Key_F2, Qt.Key_Return, Qt.Key_Enter) and self.transcript.currentItem():
            self.on_transcript_item_double_clicked(self.transcript.currentItem(), TEXT)
            return True
        if watched is self.input and event.type() in (QEvent.ShortcutOverride, QEvent.KeyPress) \
                and is_send_key(event):
            event.accept()
            if event.type() == QEvent.KeyPress:
                self.on_send_clicked()
            return True
        return super().eventFilter(watched, event)

    def on_transcript_section_resized(self, index: int, old: int, new: int) -> None:
        if index == TEXT:
            self.transcript.doItemsLayout()      # rows re-measure their wrapped text at the new width

    def load_from(self, story) -> None:
        """Show a story's chat: its names, turns and template (the template the view shows
        becomes the story's when it has none)."""
        self.set_names(story.user_name, story.bot_name)
        self.set_turns(story.chat_turns, story.chat_positions())
        if story.chat_template:
            self.set_template(story.chat_template)
        story.chat_template = self.template_name()

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
        self.set_turns(self.turns, self.positions)

    def on_name_editing_finished(self) -> None:
        user, bot = self.user_edit.text().strip() or "You", self.bot_edit.text().strip() or "Bot"
        if (user, bot) != (self.user_name, self.bot_name):
            self.user_name, self.bot_name = user, bot
            self.set_turns(self.turns, self.positions)
            self.namesChanged.emit(user, bot)

    # --- transcript ------------------------------------------------------------------
    def _name(self, role: str) -> str:
        return self.user_name if role == "user" else self.bot_name

    def _make_item(self, turn: ChatTurn, position: tuple[int, int] = (1, 1)) -> QTreeWidgetItem:
        name = self._name(turn.role) + (f" {position[0]}/{position[1]}" if position[1] > 1 else "")
        item = QTreeWidgetItem([name, turn.text])
        item.setFlags(item.flags() | Qt.ItemIsEditable)
        item.setToolTip(TEXT, "Double-click to edit")
        item.setTextAlignment(NAME, Qt.AlignRight | Qt.AlignTop)
        font = QFont(item.font(NAME))
        font.setBold(True)
        item.setFont(NAME, font)
        if turn.role == "bot":
            tint = QColor(self.palette().color(QPalette.Highlight))
            tint.setAlpha(36)
            for column in (NAME, TEXT):
                item.setBackground(column, tint)
        return item

    def set_turns(self, turns: list[ChatTurn], positions=None) -> None:
        """Show `turns`; `positions` gives each turn's (alternative, of how many) when it has siblings."""
        self._filling = True
        self.turns = [ChatTurn(t.role, t.text) for t in turns]
        known = list(positions or ())[:len(self.turns)]
        self.positions = known + [(1, 1)] * (len(self.turns) - len(known))
        self.transcript.clear()
        for turn, position in zip(self.turns, self.positions):
            self.transcript.addTopLevelItem(self._make_item(turn, position))
        self.transcript.scrollToBottom()
        self._filling = False

    def on_transcript_item_double_clicked(self, item: QTreeWidgetItem, column: int) -> None:
        if self._editable:
            self.transcript.editItem(item, TEXT)

    def on_transcript_item_changed(self, item: QTreeWidgetItem, column: int) -> None:
        if self._filling or column != TEXT:
            return
        row = self.transcript.indexOfTopLevelItem(item)
        if 0 <= row < len(self.turns) and item.text(TEXT) != self.turns[row].text:
            self.turns[row].text = item.text(TEXT)
            self.turnEdited.emit(row, item.text(TEXT))

    def on_swipe_activated(self, step: int) -> None:
        if not self._editable or not self.turns:
            return
        row = self.transcript.indexOfTopLevelItem(self.transcript.currentItem()) \
            if self.transcript.currentItem() is not None and self.transcript.hasFocus() else len(self.turns) - 1
        self.swipeRequested.emit(row, step)

    def on_send_clicked(self) -> None:
        text = self.input.toPlainText().strip()
        if text and self.send_button.isEnabled():
            self.input.clear()
            self.sendRequested.emit(text)

    def set_busy(self, busy: bool) -> None:
        self.send_button.setEnabled(not busy)
        self.regenerate_button.setEnabled(not busy)
        self._editable = not busy

    def begin_reply(self) -> None:
        """Add an empty bot turn that streamed text will fill."""
        self.turns.append(ChatTurn("bot", ""))
        self.positions.append((1, 1))
        self._filling = True
        self.transcript.addTopLevelItem(self._make_item(self.turns[-1]))
        self._filling = False

    def set_reply_text(self, text: str) -> None:
        """Show the streamed reply so far in the last (bot) turn."""
        self.turns[-1].text = text
        self._filling = True
        self.transcript.topLevelItem(self.transcript.topLevelItemCount() - 1).setText(TEXT, text)
        self._filling = False
        self.transcript.scrollToBottom()
