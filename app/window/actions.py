"""The window's actions (with their shortcuts), the toolbar and the menus.

`Actions` only builds them; the main window connects each action's `triggered` to the
controller or window slot that does the work.
"""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QComboBox, QToolBar, QToolButton

from app.window.appearance import THEMES

THEME_LABELS = {"system": "Follow the system", "light": "Light", "dark": "Dark"}


class Actions:
    """Every QAction of the window, the toolbar with the story/chat switch, and the menu bar."""

    def __init__(self, window, docks: dict, server_action: QAction, theme: str):
        self.window = window
        a = self._action
        self.generate = a("Generate", ["Ctrl+Return", "Ctrl+Enter"], "Continue the story (Ctrl+Enter)", "generateAction")
        self.stop = a("Stop", "Esc", "Stop generating (Esc)", "stopAction")
        self.retry = a("Retry", "Ctrl+R", "Write another continuation beside the last one (Ctrl+R); "
                       "Alt+Left / Alt+Right switch between them", "retryAction")
        self.undo = a("Undo", QKeySequence.Undo, "Step back one generation or edit", "undoAction")
        self.redo = a("Redo", [QKeySequence(QKeySequence.Redo).toString(), "Ctrl+Y"], "Step forward again", "redoAction")
        for action in (self.generate, self.stop, self.retry, self.undo, self.redo):
            action.setShortcutContext(Qt.WindowShortcut)
        self.new = a("&New story", QKeySequence.New, name="newAction")
        self.open = a("&Open…", QKeySequence.Open, name="openAction")
        self.save = a("&Save", QKeySequence.Save, name="saveAction")
        self.save_as = a("Save &as…", QKeySequence.SaveAs, name="saveAsAction")
        self.import_kobold = a("&Import KoboldAI / Kobold Lite…", "Ctrl+I", name="importKoboldAction")
        self.export = {"kobold": a("&Export Kobold Lite JSON…", "Ctrl+Shift+E", name="exportKoboldAction"),
                       "text": a("Export plain &text…", "Ctrl+Shift+T", name="exportTextAction"),
                       "markdown": a("Export &Markdown…", "Ctrl+Shift+D", name="exportMarkdownAction"),
                       "outline": a("Export the story t&ree as a Markdown outline…", name="exportOutlineAction")}
        self.open_model = a("Open &model file…", "Ctrl+Shift+O", name="openModelAction")
        self.remote = a("&Remote server…", tip="Write with a model on a KoboldCpp, llama.cpp or OpenAI-compatible "
                                               "server", name="remoteServerAction")
        self.quit = a("&Quit", QKeySequence.Quit, name="quitAction")
        self.toggle_mode = a("Switch story/chat", "Ctrl+M", name="toggleModeAction")
        self.zoom_in = a("Larger text", QKeySequence.ZoomIn, name="zoomInAction")
        self.zoom_out = a("Smaller text", QKeySequence.ZoomOut, name="zoomOutAction")
        self.threads = a("Engine threads…", name="threadsAction")
        self.theme_group = self._theme_group(theme)
        self._build_toolbar()
        self._build_menus(docks, server_action)

    def _action(self, text, shortcut=None, tip=None, name=None) -> QAction:
        action = QAction(text, self.window)
        if shortcut:
            shortcuts = shortcut if isinstance(shortcut, list) else [shortcut]
            action.setShortcuts([QKeySequence(s) for s in shortcuts])
        if tip:
            action.setToolTip(tip)
            action.setStatusTip(tip)
        if name:
            action.setObjectName(name)
        return action

    def _theme_group(self, theme: str) -> QActionGroup:
        group = QActionGroup(self.window, exclusive=True)
        for key in THEMES:
            action = QAction(THEME_LABELS[key], self.window, objectName=f"theme_{key}", checkable=True)
            action.setData(key)
            action.setChecked(key == theme)
            group.addAction(action)
        return group

    def _build_toolbar(self) -> None:
        toolbar = QToolBar("Main", self.window, objectName="mainToolBar")
        toolbar.setMovable(False)
        toolbar.setToolButtonStyle(Qt.ToolButtonTextOnly)
        self.mode_switch = QComboBox(objectName="modeSwitch")
        self.mode_switch.addItem("Story", "story")
        self.mode_switch.addItem("Chat", "chat")
        self.mode_switch.setToolTip("Switch between story writing and chat (Ctrl+M)")
        toolbar.addWidget(self.mode_switch)
        toolbar.addSeparator()
        self.buttons = {}
        for action, name in ((self.generate, "generateButton"), (self.stop, "stopButton"),
                             (self.retry, "retryButton"), (self.undo, "undoButton"), (self.redo, "redoButton")):
            button = QToolButton(objectName=name)
            button.setDefaultAction(action)
            toolbar.addWidget(button)
            self.buttons[name] = button
        self.toolbar = toolbar
        self.window.addToolBar(Qt.TopToolBarArea, toolbar)

    def _build_menus(self, docks: dict, server_action: QAction) -> None:
        menu = self.window.menuBar()
        groups = (("&File", [self.new, self.open, self.save, self.save_as, None, self.import_kobold,
                             *self.export.values(), None, self.open_model, self.remote, None, self.quit]),
                  ("&Edit", [self.undo, self.redo]),
                  ("&Generate", [self.generate, self.stop, self.retry, self.toggle_mode]),
                  ("&Server", [server_action, docks["server"].toggleViewAction()]),
                  ("&View", [d.toggleViewAction() for d in docks.values()] + [None, self.zoom_in, self.zoom_out]))
        for title, actions in groups:
            sub = menu.addMenu(title)
            for action in actions:
                sub.addSeparator() if action is None else sub.addAction(action)
        self.view_menu = sub
        theme_menu = sub.addMenu("Theme")
        theme_menu.addActions(self.theme_group.actions())
        sub.addAction(self.threads)

    def update(self, busy: bool, loaded: bool, story) -> None:
        """Enable what can be done now: generate with a model, stop while busy, retry a
        generation still intact, undo and redo in story mode."""
        story_mode = self.mode() == "story"
        self.generate.setEnabled(loaded and not busy)
        self.stop.setEnabled(busy)
        self.retry.setEnabled(loaded and not busy and (not story_mode or story.can_retry()))
        self.undo.setEnabled(story_mode and not busy and story.can_undo())
        self.redo.setEnabled(story_mode and not busy and story.can_redo())
        self.mode_switch.setEnabled(not busy)

    def flip_mode(self) -> None:
        """Story to chat or back (not while a generation runs: the switch is disabled then)."""
        if self.mode_switch.isEnabled():
            self.set_mode("chat" if self.mode() == "story" else "story")

    def set_mode(self, mode: str) -> None:
        self.mode_switch.setCurrentIndex(1 if mode == "chat" else 0)

    def mode(self) -> str:
        return self.mode_switch.currentData()
