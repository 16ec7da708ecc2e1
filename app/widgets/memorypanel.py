"""Memory, author's note and world info editors for the open story.

Memory is always at the top of the context; the author's note goes a chosen number of
tokens before the end; a world info entry enters the context when one of its keys
(comma-separated) occurs in the recent story, or always when "Always" is ticked.
"""
from __future__ import annotations

from dataclasses import replace

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QFormLayout, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QPlainTextEdit, QPushButton, QSpinBox, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

from app.story import Story, WorldInfoEntry

KEYS, CONTENT, ALWAYS = range(3)


class MemoryPanel(QWidget):
    """Edits a story's title, memory, author's note (with its depth) and world info entries."""

    changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("memoryPanel")
        lines = self.fontMetrics().lineSpacing()
        self.title_edit = QLineEdit(objectName="storyTitleEdit")
        self.title_edit.setPlaceholderText("The story's title (Markdown export, suggested file name)")
        self.memory_edit = QPlainTextEdit(objectName="memoryEdit")
        self.memory_edit.setPlaceholderText("Facts the model should always remember (kept at the top of the context)")
        self.memory_edit.setMinimumHeight(lines * 4)
        self.note_edit = QPlainTextEdit(objectName="authorsNoteEdit")
        self.note_edit.setPlaceholderText("Style or direction, e.g. 'Tense, noir atmosphere.'")
        self.note_edit.setMaximumHeight(lines * 4)
        self.depth_spin = QSpinBox(objectName="authorsNoteDepthSpin", minimum=0, maximum=2048, value=80)
        self.depth_spin.setSuffix(" tokens before the end")
        self.depth_spin.setToolTip("Where the author's note is inserted: smaller is stronger")

        self.world = QTableWidget(0, 3, objectName="worldInfoTable")
        self.world.setHorizontalHeaderLabels(["Keys", "Content", "Always"])
        self.world.horizontalHeaderItem(KEYS).setToolTip("Comma-separated; the entry is used when one occurs "
                                                         "in the recent story")
        header = self.world.horizontalHeader()
        header.setSectionResizeMode(KEYS, QHeaderView.Interactive)
        header.setSectionResizeMode(CONTENT, QHeaderView.Stretch)
        header.setSectionResizeMode(ALWAYS, QHeaderView.ResizeToContents)
        self.world.verticalHeader().setVisible(False)
        self.world.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.world.setWordWrap(True)
        add = QPushButton("Add entry", objectName="addWorldInfoButton")
        remove = QPushButton("Remove", objectName="removeWorldInfoButton")
        add.clicked.connect(self.on_add_clicked)
        remove.clicked.connect(self.on_remove_clicked)
        buttons = QHBoxLayout()
        buttons.addWidget(add)
        buttons.addWidget(remove)
        buttons.addStretch(1)

        for edit in (self.memory_edit, self.note_edit):
            edit.setTabChangesFocus(True)      # Tab moves to the next field: these are prompts, not tables
        form = QFormLayout()
        form.addRow("<b>Title</b>", self.title_edit)
        form.addRow(QLabel("<b>Memory</b>"))
        form.addRow(self.memory_edit)
        form.addRow(QLabel("<b>Author's note</b>"))
        form.addRow(self.note_edit)
        form.addRow("Insert", self.depth_spin)
        form.addRow(QLabel("<b>World info</b>"))
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.world, 1)
        layout.addLayout(buttons)

        self.title_edit.textEdited.connect(self.changed)
        self.memory_edit.textChanged.connect(self.changed)
        self.note_edit.textChanged.connect(self.changed)
        self.depth_spin.valueChanged.connect(self.changed)
        self.world.itemChanged.connect(self.changed)

    def _add_row(self, entry: WorldInfoEntry) -> None:
        row = self.world.rowCount()
        self.world.insertRow(row)
        keys = QTableWidgetItem(", ".join(entry.keys))
        keys.setData(Qt.UserRole, entry)      # the fields the table does not show (comment, Lite's) stay with the row
        self.world.setItem(row, KEYS, keys)
        self.world.setItem(row, CONTENT, QTableWidgetItem(entry.content))
        always = QTableWidgetItem()
        always.setFlags(Qt.ItemIsUserCheckable | Qt.ItemIsEnabled | Qt.ItemIsSelectable)
        always.setCheckState(Qt.Checked if entry.always_on else Qt.Unchecked)
        self.world.setItem(row, ALWAYS, always)

    def on_add_clicked(self) -> None:
        self._add_row(WorldInfoEntry())
        self.world.editItem(self.world.item(self.world.rowCount() - 1, KEYS))

    def on_remove_clicked(self) -> None:
        rows = sorted({i.row() for i in self.world.selectedIndexes()}, reverse=True)
        for row in rows:
            self.world.removeRow(row)
        if rows:
            self.changed.emit()

    def world_info(self) -> list[WorldInfoEntry]:
        entries = []
        for row in range(self.world.rowCount()):
            keys = [k.strip() for k in (self.world.item(row, KEYS).text() if self.world.item(row, KEYS) else "")
                    .split(",") if k.strip()]
            content = self.world.item(row, CONTENT).text() if self.world.item(row, CONTENT) else ""
            always = self.world.item(row, ALWAYS)
            shown = self.world.item(row, KEYS).data(Qt.UserRole) if self.world.item(row, KEYS) else None
            entries.append(replace(shown if isinstance(shown, WorldInfoEntry) else WorldInfoEntry(), keys=keys,
                                   content=content, always_on=bool(always and always.checkState() == Qt.Checked)))
        return entries

    def load_from(self, story: Story) -> None:
        """Show a story's memory, note and world info (without emitting `changed`)."""
        self.blockSignals(True)
        self.world.blockSignals(True)
        self.title_edit.setText(story.title)
        self.memory_edit.setPlainText(story.memory)
        self.note_edit.setPlainText(story.authors_note)
        self.depth_spin.setValue(story.authors_note_depth)
        self.world.setRowCount(0)
        for entry in story.world_info:
            self._add_row(entry)
        self.world.blockSignals(False)
        self.blockSignals(False)

    def save_to(self, story: Story) -> None:
        story.title = self.title_edit.text().strip()
        story.memory = self.memory_edit.toPlainText()
        story.authors_note = self.note_edit.toPlainText()
        story.authors_note_depth = self.depth_spin.value()
        story.world_info = self.world_info()
