"""The story tree in the window: the tree panel, the alternatives spin on the toolbar, the
probability colours toggle, the key that opens a token's alternatives at the cursor, and every
move through the tree wired to the document's `Branches`.

Moves come from the story view (Alt+Left/Right/Up/Down), the tree panel (click, delete,
bookmark) and the chat view (swipes); none is taken while a generation runs. After a sibling
move the cursor stays in the passage that was switched, so Alt+Right again shows the next one.
"""
from __future__ import annotations

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDockWidget, QLabel, QSpinBox

from app.widgets.storytree import StoryTreePanel

ALTERNATIVES_KEY = "Alt+Return"      # like an editor's quick fix: what else could stand here


class Branching(QObject):
    """Builds the tree's widgets into the window and connects them (see the module docstring)."""

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.document, self.view = window.document, window.story_view
        self.panel = StoryTreePanel()
        self.dock = QDockWidget("Story tree", window, objectName="treeDock")
        self.dock.setWidget(self.panel)
        window.addDockWidget(Qt.LeftDockWidgetArea, self.dock)
        window.docks["tree"] = self.dock
        self.alternatives_spin = self._toolbar_spin(window.commands.toolbar, window.sampling.alternatives_spin)
        self.probabilities = QAction("Colour by probability", window, objectName="probabilityAction", checkable=True)
        self.probabilities.setToolTip("Colour each generated token by how likely the model found it (red: unlikely)")
        window.commands.toolbar.addAction(self.probabilities)
        window.commands.view_menu.insertAction(window.commands.view_menu.actions()[0], self.dock.toggleViewAction())
        window.commands.view_menu.addAction(self.probabilities)
        self.alternatives_action = QAction("Token &alternatives at the cursor…", window,
                                           objectName="tokenAlternativesAction")
        self.alternatives_action.setShortcut(QKeySequence(ALTERNATIVES_KEY))
        self.alternatives_action.setShortcutContext(Qt.WindowShortcut)
        key = self.alternatives_action.shortcut().toString(QKeySequence.NativeText)
        self.alternatives_action.setToolTip(f"The model's other choices for the generated token at the cursor ({key}); "
                                            "clicking a token does the same")
        window.addAction(self.alternatives_action)
        edit_menu = next(a.menu() for a in window.menuBar().actions() if a.menu() and a.text() == "&Edit")
        edit_menu.addAction(self.alternatives_action)
        self._connect()
        self.on_document_story_replaced()

    @staticmethod
    def _toolbar_spin(toolbar, panel_spin: QSpinBox) -> QSpinBox:
        """A second view of the sampling panel's alternatives setting, kept in step with it."""
        spin = QSpinBox(objectName="alternativesToolbarSpin", minimum=panel_spin.minimum(),
                        maximum=panel_spin.maximum(), value=panel_spin.value())
        spin.setToolTip(panel_spin.toolTip())
        spin.valueChanged.connect(panel_spin.setValue)
        panel_spin.valueChanged.connect(spin.setValue)
        toolbar.addWidget(QLabel(" Alternatives "))
        toolbar.addWidget(spin)
        return spin

    def _connect(self) -> None:
        d, b, view, panel = self.document, self.document.branches, self.view, self.panel
        for signal, slot in ((view.siblingRequested, self.on_story_view_sibling_requested),
                             (view.parentRequested, self._unless_busy(b.move_parent)),
                             (view.childRequested, self._unless_busy(b.move_child)),
                             (panel.passageActivated, self._unless_busy(b.go_to)),
                             (panel.deleteRequested, self._unless_busy(b.delete)),
                             (panel.bookmarkRequested, self._unless_busy(b.set_bookmark)),
                             (self.window.chat_view.swipeRequested, self._unless_busy(b.swipe_turn)),
                             (b.changed, self.window.status.show_notice),
                             (d.storyReplaced, self.on_document_story_replaced),
                             (d.textReplaced, panel.refresh), (d.treeChanged, panel.refresh),
                             (d.historyChanged, panel.refresh),
                             (self.probabilities.toggled, self.on_probabilities_toggled),
                             (self.alternatives_action.triggered, self.on_alternatives_action_triggered)):
            signal.connect(slot)

    def _unless_busy(self, move):
        """`move`, except while a generation runs (the tree is the generator's then)."""
        def guarded(*args):
            if not self.window.generation.busy():
                self.document.checkpoint()     # typing not yet recorded stays one undo step
                move(*args)
        return guarded

    def on_story_view_sibling_requested(self, passage_id: int, step: int) -> None:
        if self.window.generation.busy():
            return
        tree = self.document.story.tree
        parent = tree[passage_id].parent if passage_id in tree else None
        self.document.checkpoint()
        if self.document.branches.move_sibling(passage_id, step):
            shown = next(p.id for p in tree.path() if p.parent == parent)
            self.view.show_tree(tree, cursor_passage=shown)

    def on_alternatives_action_triggered(self) -> None:
        """The keyboard's way to the token popup (the mouse clicks the token)."""
        if self.window.commands.mode() != "story":
            return
        self.view.setFocus(Qt.ShortcutFocusReason)
        if not self.view.offer_alternatives_at_cursor():
            self.window.status.show_notice("No generated token at the cursor: put it in the model's text "
                                           f"({self.alternatives_action.shortcut().toString(QKeySequence.NativeText)} "
                                           "then shows the token's alternatives)")

    def on_document_story_replaced(self) -> None:
        story = self.document.story
        self.panel.set_tree(story.tree)
        self.probabilities.setChecked(story.show_probabilities)
        self.view.set_probabilities(story.show_probabilities)

    def on_probabilities_toggled(self, on: bool) -> None:
        self.view.set_probabilities(on)
        if self.document.story.show_probabilities != on:
            self.document.story.show_probabilities = on
            self.document.mark_changed()
