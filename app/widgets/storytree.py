"""The tree panel: every branch of the story with its first words, the current path in bold.

`StoryTreeModel` is a read-only Qt item model over an `app.passages.StoryTree`; the panel's
QTreeView (objectName `storyTree`) shows it. The panel never changes the story itself: a click
or a menu choice is emitted as an intent (`passageActivated`, `deleteRequested`,
`bookmarkRequested`) and whoever owns the story applies it and calls `refresh()`, so the data
keeps flowing one way (story -> model -> view).
"""
from __future__ import annotations

from PySide6.QtCore import QAbstractItemModel, QModelIndex, QPoint, Qt, Signal
from PySide6.QtGui import QAction, QFont, QKeySequence, QPalette
from PySide6.QtWidgets import QAbstractItemView, QHBoxLayout, QMenu, QToolButton, QTreeView, QVBoxLayout, QWidget

from app.passages import StoryTree

PASSAGE_ID_ROLE = Qt.UserRole + 1      # the passage id of an index
ON_PATH_ROLE = Qt.UserRole + 2         # True for passages on the current path
TOOLTIP_CHARS = 400


class StoryTreeModel(QAbstractItemModel):
    """A read-only item model of a StoryTree: one column, one item per passage, children under parents.

    The index's internal id is the passage id. Call `refresh()` after the tree changed: a change of
    shape (a passage added, deleted, split) resets the model, anything else (text streaming in, a
    move, a bookmark) only repaints.
    """

    def __init__(self, tree: StoryTree | None = None, parent=None):
        super().__init__(parent)
        self._tree = tree or StoryTree()
        self._shape = self._shape_of(self._tree)
        self._on_path: set[int] = {p.id for p in self._tree.path()}
        self._shown = dict(self._tree.nodes)       # the passages as last shown (they are frozen)

    @property
    def tree(self) -> StoryTree:
        return self._tree

    def set_tree(self, tree: StoryTree) -> None:
        self.beginResetModel()
        self._tree = tree
        self._shape = self._shape_of(tree)
        self._on_path = {p.id for p in tree.path()}
        self._shown = dict(tree.nodes)
        self.endResetModel()

    @staticmethod
    def _shape_of(tree: StoryTree) -> tuple:
        return tuple(sorted((pid, p.children) for pid, p in tree.nodes.items()))

    def refresh(self) -> bool:
        """Show the tree as it is now. Returns True when its shape changed (the model was reset)."""
        shape = self._shape_of(self._tree)
        on_path = {p.id for p in self._tree.path()}
        moved, self._on_path = on_path ^ self._on_path, on_path
        shown, self._shown = self._shown, dict(self._tree.nodes)
        if shape != self._shape:
            self.beginResetModel()
            self._shape = shape
            self.endResetModel()
            return True
        # only the passages whose row reads differently (or that left or joined the path) are
        # repainted: a passage streaming in keeps its first words after its first batches, and
        # each repaint calls data() in Python for every role, a GIL wait each while the engine runs
        for pid, node in self._tree.nodes.items():
            old = shown.get(pid)
            if pid in moved or (old is not node and (old is None or _row_text(old) != _row_text(node))):
                index = self.index_of(pid)
                self.dataChanged.emit(index, index)
        return False

    # --- the Qt model interface ------------------------------------------------------------
    def index_of(self, passage_id: int) -> QModelIndex:
        node = self._tree.nodes.get(passage_id)
        if node is None:
            return QModelIndex()
        row = 0 if node.parent is None else self._tree.nodes[node.parent].children.index(passage_id)
        return self.createIndex(row, 0, passage_id)

    def index(self, row: int, column: int, parent: QModelIndex = QModelIndex()) -> QModelIndex:
        if column != 0 or row < 0:
            return QModelIndex()
        if not parent.isValid():
            return self.createIndex(0, 0, StoryTree.ROOT) if row == 0 else QModelIndex()
        children = self._tree.nodes[parent.internalId()].children
        return self.createIndex(row, 0, children[row]) if row < len(children) else QModelIndex()

    def parent(self, index: QModelIndex = QModelIndex()) -> QModelIndex:
        if not index.isValid():
            return QModelIndex()
        node = self._tree.nodes.get(index.internalId())
        if node is None or node.parent is None:
            return QModelIndex()
        return self.index_of(node.parent)

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:
        if not parent.isValid():
            return 1
        node = self._tree.nodes.get(parent.internalId())
        return len(node.children) if node is not None else 0

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 1

    def flags(self, index: QModelIndex):
        return Qt.ItemIsEnabled | Qt.ItemIsSelectable if index.isValid() else Qt.NoItemFlags

    def data(self, index: QModelIndex, role: int = Qt.DisplayRole):
        if not index.isValid():
            return None
        node = self._tree.nodes.get(index.internalId())
        if node is None:
            return None
        if role == Qt.DisplayRole:
            return _row_text(node)
        if role == Qt.ToolTipRole:
            return self._tooltip(node)
        if role == Qt.FontRole and node.id in self._on_path:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ForegroundRole and node.id not in self._on_path:
            return QPalette().brush(QPalette.Disabled, QPalette.Text)
        if role == PASSAGE_ID_ROLE:
            return node.id
        if role == ON_PATH_ROLE:
            return node.id in self._on_path
        return None

    def _tooltip(self, node) -> str:
        text = node.text if len(node.text) <= TOOLTIP_CHARS else node.text[:TOOLTIP_CHARS] + " …"
        index, count = self._tree.sibling_position(node.id)
        about = ["written by the model" if node.generated else "written by you"]
        if node.generated and node.seed is not None:
            about.append(f"seed {node.seed}")
        if node.edited:
            about.append("edited")
        about.append(f"alternative {index}/{count}")
        return f"{text}\n\n({', '.join(about)})"


def _row_text(node) -> str:
    """What a passage's row says: its first words, a star when bookmarked, a pencil when edited."""
    return ("★ " if node.bookmarked else "") + node.label() + (" ✎" if node.edited else "")


class StoryTreePanel(QWidget):
    """The tree of passages beside the story: click to go there, delete a branch, bookmark."""

    passageActivated = Signal(int)          # go to this passage
    deleteRequested = Signal(int)           # delete this passage and its branch
    bookmarkRequested = Signal(int, bool)   # set or clear this passage's bookmark

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model = StoryTreeModel(parent=self)
        self.view = QTreeView(objectName="storyTree")
        self.view.setModel(self.model)
        self.view.setHeaderHidden(True)
        self.view.setUniformRowHeights(True)
        self.view.setSelectionMode(QAbstractItemView.SingleSelection)
        self.view.setContextMenuPolicy(Qt.CustomContextMenu)
        self.view.clicked.connect(self.on_view_clicked)
        self.view.customContextMenuRequested.connect(self.on_view_custom_context_menu_requested)
        self.delete_button = QToolButton(text="Delete branch", objectName="deleteBranchButton")
        self.delete_button.setToolTip("Delete the selected passage and everything after it (Undo brings it back)")
        self.delete_button.clicked.connect(self.on_delete_button_clicked)
        self.bookmark_button = QToolButton(text="★ Bookmark", objectName="bookmarkButton")
        self.bookmark_button.setToolTip("Bookmark the selected passage (or clear its bookmark)")
        self.bookmark_button.clicked.connect(self.on_bookmark_button_clicked)
        delete = QAction("Delete branch", self.view)
        delete.setShortcut(QKeySequence.Delete)
        delete.setShortcutContext(Qt.WidgetShortcut)
        delete.triggered.connect(self.on_delete_button_clicked)
        self.view.addAction(delete)
        buttons = QHBoxLayout()
        buttons.addWidget(self.bookmark_button)
        buttons.addWidget(self.delete_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view, 1)
        layout.addLayout(buttons)

    def set_tree(self, tree: StoryTree) -> None:
        """Show another story's tree."""
        self.model.set_tree(tree)
        self._after_change(True)

    def refresh(self) -> None:
        """The tree changed (a generation, a move, an undo...): show it and select the current passage."""
        self._after_change(self.model.refresh())

    def _after_change(self, reshaped: bool) -> None:
        if reshaped:
            self.view.expandAll()
        current = self.model.index_of(self.model.tree.current)
        if not reshaped and self.view.currentIndex() == current:
            return          # (a stream's refresh) scrolling to it again would ask the model for every row above
        self.view.setCurrentIndex(current)
        self.view.scrollTo(current)

    def selected_passage(self) -> int | None:
        index = self.view.currentIndex()
        return index.data(PASSAGE_ID_ROLE) if index.isValid() else None

    def on_view_clicked(self, index: QModelIndex) -> None:
        if index.isValid():
            self.passageActivated.emit(index.data(PASSAGE_ID_ROLE))

    def on_delete_button_clicked(self) -> None:
        pid = self.selected_passage()
        if pid is not None and pid != StoryTree.ROOT:
            self.deleteRequested.emit(pid)

    def on_bookmark_button_clicked(self) -> None:
        pid = self.selected_passage()
        if pid is not None:
            self.bookmarkRequested.emit(pid, not self.model.tree[pid].bookmarked)

    def on_view_custom_context_menu_requested(self, point: QPoint) -> None:
        index = self.view.indexAt(point)
        if not index.isValid():
            return
        self.view.setCurrentIndex(index)
        pid = index.data(PASSAGE_ID_ROLE)
        menu = QMenu(self)
        menu.addAction("Go here", lambda: self.passageActivated.emit(pid))
        marked = self.model.tree[pid].bookmarked
        menu.addAction("Clear bookmark" if marked else "Bookmark", lambda: self.bookmarkRequested.emit(pid, not marked))
        if pid != StoryTree.ROOT:
            menu.addAction("Delete branch", lambda: self.deleteRequested.emit(pid))
        menu.popup(self.view.viewport().mapToGlobal(point))
