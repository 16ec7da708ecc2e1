"""Keyboard focus for each panel: "Go to" actions (View menu, Ctrl+0 for the story and Ctrl+1…
for the docks) that show a panel, bring its tab to the front and put the cursor in its first
field, and the docks' tab tooltips that name those keys."""
from __future__ import annotations

from functools import partial

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QTabBar, QWidget


def first_focusable(panel: QWidget) -> QWidget:
    """The first widget inside `panel` that takes keyboard focus, in tab order (else the panel)."""
    widget = panel.nextInFocusChain()
    while widget is not None and widget is not panel:
        if panel.isAncestorOf(widget) and widget.isVisibleTo(panel) and widget.isEnabled() \
                and widget.focusPolicy() & Qt.TabFocus:
            return widget
        widget = widget.nextInFocusChain()
    return panel


class PanelFocus:
    """Builds the "Go to" actions of the window's panels and keeps the dock tabs' tooltips."""

    def __init__(self, window, story_target, docks: dict):
        """`story_target()` is the central widget that should get the cursor (the story or the chat)."""
        self.window = window
        self.docks = docks
        self.actions: dict[str, QAction] = {}
        story = QAction("Go to the &story", window, objectName="focusStoryAction")
        story.setShortcut(QKeySequence("Ctrl+0"))
        story.triggered.connect(lambda: story_target().setFocus(Qt.ShortcutFocusReason))
        self.actions["story"] = story
        for n, (key, dock) in enumerate(docks.items(), start=1):
            action = QAction(f"Go to {dock.windowTitle()}", window, objectName=f"focus_{key}Action")
            if n <= 9:
                action.setShortcut(QKeySequence(f"Ctrl+{n}"))
            action.triggered.connect(partial(self.focus_dock, key))
            self.actions[key] = action
        for action in self.actions.values():
            action.setShortcutContext(Qt.WindowShortcut)
            window.addAction(action)         # works with the menu bar hidden (full screen)
            self._tip(action)
        for key, dock in docks.items():
            dock.toggleViewAction().setToolTip(f"Show or hide {dock.windowTitle()} "
                                               f"({self.shortcut_text(key)} goes there)")

    @staticmethod
    def _tip(action: QAction) -> None:
        keys = action.shortcut().toString(QKeySequence.NativeText)
        action.setToolTip(f"{action.text().replace('&', '')} ({keys})" if keys else action.text())

    def shortcut_text(self, key: str) -> str:
        return self.actions[key].shortcut().toString(QKeySequence.NativeText)

    def focus_dock(self, key: str) -> None:
        """Show the dock, bring its tab to the front and put the cursor in its first field."""
        dock = self.docks[key]
        dock.show()
        dock.raise_()
        first_focusable(dock.widget()).setFocus(Qt.ShortcutFocusReason)

    def update_tab_tips(self) -> None:
        """Each tab of tabbed docks says which keys go to it (Qt makes the tab bars as docks are tabbed)."""
        titles = {dock.windowTitle(): key for key, dock in self.docks.items()}
        for bar in self.window.findChildren(QTabBar):
            for i in range(bar.count()):
                key = titles.get(bar.tabText(i).replace("&", ""))
                if key is not None:
                    bar.setTabToolTip(i, f"{bar.tabText(i)} ({self.shortcut_text(key)})")
