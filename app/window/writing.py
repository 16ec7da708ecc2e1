"""The writer's tools around the story: the page, find and replace, the word and token count,
distraction-free full screen, the story font, spell checking, recent stories, the panels' focus keys, and the
room the story keeps in a small window.

`WritingTools` builds them on a finished `MainWindow` and wires them to what the window already
has (its document, controllers and widgets), so that the main window only creates it.
"""
from __future__ import annotations

import threading
from functools import partial
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QFont, QFontDatabase, QKeySequence, QPalette
from PySide6.QtWidgets import QApplication, QFrame, QInputDialog, QLabel, QMenu, QVBoxLayout, QWidget

from app.recent import recent_stories, remember
from app.threads import emit_from_thread
from app.widgets.findbar import FindBar
from app.window.focus import PanelFocus
from app.window.look import style_sheet
from app.window.spelling import Spelling
from app.wordcount import count_tokens, count_words, describe

FONTS = {"serif": ["Literata", "Georgia", "Charter", "Noto Serif", "DejaVu Serif", "Times New Roman", "serif"],
         "sans": ["Inter", "Segoe UI", "Noto Sans", "Cantarell", "DejaVu Sans", "Helvetica", "Arial", "sans-serif"]}
PAGE_CHARS = (40, 160)           # the page's width in characters: the range the writer may choose
STORY_SHARE = 0.5                # the docks need not shrink once the story has this share of the window
STORY_MIN_CHARS = 60             # fewer characters a line than this, and the left docks fold into tabs
TAB_BAR = 48                     # about the width of the side tabs and the docks' separators
DOCK_SLACK = 4                   # a shrunk dock's width beyond its minimum
COUNT_DELAY_MS = 400             # the count waits for a pause in the typing


def story_font(kind: str, points: int) -> QFont:
    """The story's font: the first installed family of the kind (the style hint where none is)."""
    families = FONTS.get(kind, FONTS["serif"])
    installed = set(QFontDatabase.families())
    font = QFont()
    font.setStyleHint(QFont.Serif if kind == "serif" else QFont.SansSerif)
    font.setFamily(next((f for f in families if f in installed), families[-1]))
    font.setPointSize(points)
    return font


class WritingTools(QObject):
    """The writer's conveniences of one main window (see the module's docstring)."""

    countReady = Signal(int, str)    # request number, the status bar's count text (from a thread)

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.settings = window.settings
        self.view = window.story_view
        self._count_request = 0
        self._full_screen_hidden: list[QWidget] = []
        self._moved: list = []                     # docks this window moved to the right's tabs (narrow)
        self._fit_models = not self.settings.get("window_state")   # first run: the model list's columns in sight
        self._build_find_bar()
        self._build_actions()
        self._build_menus()
        self.count_label = QLabel("", objectName="wordCountLabel")
        window.status.addPermanentWidget(self.count_label)
        self.count_timer = QTimer(self, singleShot=True, interval=COUNT_DELAY_MS)
        self._connect()
        self.set_story_font(self.settings.get("story_font"), save=False)
        self.view.setFrameShape(QFrame.NoFrame)      # a page, not a text box
        self.view.setAutoFillBackground(True)      # the margins beside the page: the window's colour,
        self.view.setBackgroundRole(QPalette.Window)   # the page itself (the viewport) the text's
        self.view.installEventFilter(self)
        window.resized.connect(self.on_window_resized)
        self.apply_look()
        self.on_count_timer_timeout()

    # --- building --------------------------------------------------------------------------
    def _build_find_bar(self) -> None:
        """The find bar goes under the story and chat stack (the central widget becomes both)."""
        stack = self.window.takeCentralWidget()
        self.find_bar = FindBar(self.view)
        page = QWidget(objectName="centralPage")
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(stack, 1)
        layout.addWidget(self.find_bar)
        self.window.setCentralWidget(page)

    def _action(self, text: str, shortcut: str | None, name: str, slot, checkable: bool = False) -> QAction:
        action = QAction(text, self.window, objectName=name, checkable=checkable)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
            action.setToolTip(f"{text.replace('&', '').rstrip('…')} ({action.shortcut().toString()})")
        action.setShortcutContext(Qt.WindowShortcut)
        action.triggered.connect(slot)
        self.window.addAction(action)      # reachable with the menu bar hidden too
        return action

    def _build_actions(self) -> None:
        a = self._action
        self.find = a("&Find…", "Ctrl+F", "findAction", lambda: self.open_find(False))
        self.replace = a("&Replace…", "Ctrl+H", "replaceAction", lambda: self.open_find(True))
        self.full_screen = a("&Distraction-free full screen", "F11", "fullScreenAction", self.set_full_screen,
                             checkable=True)
        self.wider = a("Wider page", "Ctrl+Alt+Right", "widerPageAction", partial(self.step_page, 8))
        self.narrower = a("Narrower page", "Ctrl+Alt+Left", "narrowerPageAction", partial(self.step_page, -8))
        self.page_width = a("Page width…", None, "pageWidthAction", self.ask_page_width)
        self.serif = a("Serif story font", None, "serifFontAction",
                       lambda on: self.set_story_font("serif" if on else "sans"), checkable=True)
        self.focus = PanelFocus(self.window, self._story_target, self.window.docks)
        self.recent_menu = QMenu("Recent stories", self.window, objectName="recentStoriesMenu")
        self.recent_menu.aboutToShow.connect(self.on_recent_menu_about_to_show)

    def _menu(self, title: str) -> QMenu | None:
        for action in self.window.menuBar().actions():
            if action.menu() is not None and action.menu().title().replace("&", "") == title:
                return action.menu()
        return None

    def _build_menus(self) -> None:
        commands = self.window.commands
        file_menu, edit_menu, view_menu = self._menu("File"), self._menu("Edit"), self._menu("View")
        file_menu.insertMenu(commands.save, self.recent_menu)
        edit_menu.addSeparator()
        edit_menu.addActions([self.find, self.replace])
        first = view_menu.actions()[0] if view_menu.actions() else None
        go = QMenu("&Go to", view_menu, objectName="goToMenu")
        go.addActions(list(self.focus.actions.values()))
        view_menu.insertMenu(first, go)
        view_menu.insertSeparator(first)
        view_menu.addSeparator()
        view_menu.addActions([self.full_screen, self.wider, self.narrower, self.page_width, self.serif])
        self.spelling = Spelling(self.window, view_menu)
        for menu in (file_menu, edit_menu, view_menu, *(self._menu(t) for t in ("Generate", "Server"))):
            if menu is not None:   # every menu action works from the keyboard, menu bar shown or not
                self.window.addActions([action for action in menu.actions() if not action.isSeparator()])

    def _connect(self) -> None:
        w = self.window
        for signal, slot in ((w.models.loaded, self.on_models_loaded),
                             (w.commands.mode_switch.currentIndexChanged, self.on_mode_switch_changed),
                             (w.generation.busyChanged, w.status.show_busy),
                             (w.generation.piecesReady, w.status.show_first_token),
                             (w.generation.replyChanged, w.status.show_first_token),
                             (w.document.opened, self.on_document_stored), (w.document.saved, self.on_document_stored),
                             (self.view.textChanged, self.count_timer.start),
                             (self.view.selectionChanged, self.count_timer.start),
                             (self.count_timer.timeout, self.on_count_timer_timeout),
                             (self.countReady, self.on_count_ready),
                             (w.memory.changed, self.on_memory_changed),
                             (w.model_picker.statusesReady, self.on_model_picker_statuses_ready)):
            signal.connect(slot)

    def _story_target(self) -> QWidget:
        return self.window.chat_view.input if self.window.commands.mode() == "chat" else self.view

    # --- what the window reports -----------------------------------------------------------
    def on_models_loaded(self, info: dict) -> None:
        self.window.model_picker.set_loaded("" if info.get("remote") else info.get("path", ""))
        self.on_count_timer_timeout()        # the new tokenizer counts differently

    def on_mode_switch_changed(self, index: int) -> None:
        """The context view follows the mode at once (chat context, labelled as chat)."""
        mode = self.window.commands.mode_switch.itemData(index)
        self.window.context_view.set_mode(mode)
        self.window.refresh_context(self.window.docks["context"].isVisible())

    def on_document_stored(self, path: str) -> None:
        if not path:           # an import: a new story with no file of its own yet (not the working folder)
            return
        remember(self.settings, path)
        self.window.write_settings()

    def on_model_picker_statuses_ready(self, *args) -> None:
        if self._fit_models:
            self._fit_models = False
            QTimer.singleShot(0, self, self.fit_model_list)    # once the list has laid out its columns (not if the window closed)

    def on_memory_changed(self) -> None:
        self.window.setWindowTitle(f"{self.window.document.title()} — NeoX Writer")   # the title may be new

    # --- find and replace ------------------------------------------------------------------
    def open_find(self, replace: bool) -> None:
        if self.window.commands.mode() == "chat":
            self.window.commands.set_mode("story")
        self.find_bar.open_find(replace)

    # --- word and token count --------------------------------------------------------------
    def on_count_timer_timeout(self) -> None:
        """Count on a thread (a long story's tokens take a moment); the newest request wins."""
        self._count_request += 1
        worker = self.window.llm.worker
        tokenizer = worker.tokenizer if worker.source is not None and worker.source is worker.local else None
        text = self.view.toPlainText()
        selected = self.view.textCursor().selectedText().replace("\u2029", "\n")
        threading.Thread(target=self._count, args=(self._count_request, tokenizer, text, selected),
                         name="neox-word-count", daemon=True).start()

    def _count(self, request: int, tokenizer, text: str, selected: str) -> None:
        try:
            words, tokens = count_words(text), count_tokens(tokenizer, text)
            chosen = (count_words(selected), count_tokens(tokenizer, selected)) if selected else None
        except Exception:   # noqa: BLE001 - a tokenizer swapped mid-count: words only
            words, tokens, chosen = count_words(text), None, None
        emit_from_thread(self.countReady, request, describe(words, tokens, chosen))

    def on_count_ready(self, request: int, text: str) -> None:
        if request == self._count_request:
            self.count_label.setText(text)

    # --- the page ----------------------------------------------------------------------------
    def page_margin(self) -> int:
        """Side margin that leaves a centred page of `page_chars` characters (0: the whole width)."""
        chars = self.settings.get("page_chars")
        if not chars:
            return 0
        page = chars * self.view.fontMetrics().averageCharWidth() + 2 * int(self.view.document().documentMargin())
        return max(0, (self.view.width() - self.view.verticalScrollBar().sizeHint().width() - page) // 2)

    def apply_page(self) -> None:
        margin = self.page_margin()
        self.view.setViewportMargins(margin, 0, margin, 0)

    def set_page_chars(self, chars: int) -> None:
        self.settings.set("page_chars", 0 if chars <= 0 else max(PAGE_CHARS[0], min(PAGE_CHARS[1], chars)))
        self.apply_page()
        self.window.write_settings()

    def step_page(self, step: int) -> None:
        self.set_page_chars((self.settings.get("page_chars") or PAGE_CHARS[1]) + step)

    def ask_page_width(self) -> None:
        chars, ok = QInputDialog.getInt(self.window, "Page width", "Characters per line (0 = the whole window):",
                                        self.settings.get("page_chars"), 0, PAGE_CHARS[1])
        if ok:
            self.set_page_chars(chars)

    def set_story_font(self, kind: str, save: bool = True) -> None:
        kind = kind if kind in FONTS else "serif"
        self.settings.set("story_font", kind)
        self.view.setFont(story_font(kind, self.settings.get("font_size")))
        self.serif.setChecked(kind == "serif")
        if save:
            self.window.write_settings()

    def apply_look(self, *args) -> None:
        """The designed look in the current theme's colours (after the theme's palette is set)."""
        sheet = style_sheet(QApplication.palette())
        w = self.window
        for widget in (w.commands.toolbar, w.status, self.find_bar, *w.docks.values()):
            widget.setStyleSheet(sheet)

    # --- full screen -------------------------------------------------------------------------
    def set_full_screen(self, on: bool) -> None:
        """Only the story (and a find bar) on the whole screen; F11 again brings everything back."""
        w = self.window
        if on and not self._full_screen_hidden:
            self._full_screen_hidden = [bar for bar in (w.menuBar(), w.commands.toolbar, w.status, *w.docks.values())
                                        if bar.isVisible()]
            for widget in self._full_screen_hidden:
                widget.hide()
            w.showFullScreen()
            self._story_target().setFocus(Qt.ShortcutFocusReason)
        elif not on and self._full_screen_hidden:
            for widget in self._full_screen_hidden:
                widget.show()
            self._full_screen_hidden = []
            w.showNormal()
        self.full_screen.setChecked(bool(self._full_screen_hidden))

    # --- recent stories ----------------------------------------------------------------------
    def on_recent_menu_about_to_show(self) -> None:
        self.recent_menu.clear()
        for n, path in enumerate(recent_stories(self.settings), start=1):
            action = self.recent_menu.addAction(f"&{n} {Path(path).name}" if n < 10 else Path(path).name)
            action.setToolTip(path)
            action.triggered.connect(partial(self.open_recent, path))
        if self.recent_menu.isEmpty():
            self.recent_menu.addAction("No recent stories").setEnabled(False)

    def open_recent(self, path: str) -> None:
        w = self.window
        if not w.generation.busy() and w._confirm_discard():
            w.open_story(path)

    # --- room for the story ------------------------------------------------------------------
    def story_room(self, chars: int) -> int:
        """Pixels the story view needs for lines of `chars` characters (its margins and scroll bar too)."""
        return (chars * self.view.fontMetrics().averageCharWidth() + 2 * int(self.view.document().documentMargin())
                + self.view.verticalScrollBar().sizeHint().width())

    def keep_story_room(self) -> None:
        """The docks give way to the story's page: first they shrink to their narrowest; where the
        story would still get fewer than `STORY_MIN_CHARS` a line, the left ones join the right's
        tabs (and come back once the window is wide enough again). At 1366x768 the whole page fits
        between the two sides; at 1024x700 the left docks fold away."""
        w = self.window
        width = w.width()
        chars = self.settings.get("page_chars") or PAGE_CHARS[1]
        page, least = self.story_room(chars), self.story_room(min(chars, STORY_MIN_CHARS))
        if self._moved and least <= width - TAB_BAR - self.window.docks["sampling"].minimumSizeHint().width() \
                - max(d.minimumSizeHint().width() for d in self._moved):
            for dock in self._moved:              # wide again: the docks moved away go back to their side
                w.addDockWidget(Qt.LeftDockWidgetArea, dock, Qt.Vertical)
                dock.show()
            self._moved = []
        if w.centralWidget().width() >= min(page, width * STORY_SHARE):
            return
        visible = [d for d in w.docks.values() if d.isVisible() and not d.isFloating()]
        left = [d for d in visible if w.dockWidgetArea(d) == Qt.LeftDockWidgetArea]
        right = [d for d in visible if w.dockWidgetArea(d) == Qt.RightDockWidgetArea][:1]
        if left and right and least > width - TAB_BAR - right[0].minimumSizeHint().width() \
                - max(d.minimumSizeHint().width() for d in left):
            for dock in left:                        # too narrow for two columns of docks: one, tabbed
                w.tabifyDockWidget(right[0], dock)
            right[0].raise_()
            self._moved += left
            left = []
        docks = left + right       # as narrow as they go without cutting anything
        w.resizeDocks(docks, [d.minimumSizeHint().width() + DOCK_SLACK for d in docks], Qt.Horizontal)

    def fit_model_list(self) -> None:
        """On a first run, widen the model list until every column shows, as far as the story's
        whole page still fits beside it (a 1920-pixel window: all of it; 1366: no wider)."""
        w, dock = self.window, self.window.docks["models"]
        if w.dockWidgetArea(dock) != Qt.LeftDockWidgetArea or not dock.isVisible():
            return
        spare = w.centralWidget().width() - self.story_room(self.settings.get("page_chars") or PAGE_CHARS[1])
        width = min(w.model_picker.columns_width(), dock.width() + spare)
        if width > dock.width():
            w.resizeDocks([dock], [width], Qt.Horizontal)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        kind = event.type()
        if watched is self.view and kind in (QEvent.Resize, QEvent.FontChange):
            self.apply_page()
        elif watched is self.view and kind == QEvent.PaletteChange:    # the application's, passed on
            self.apply_look()                                # a theme switch: the sheet in its colours
        return False

    def on_window_resized(self) -> None:
        QTimer.singleShot(0, self, self.keep_story_room)      # after the layout has placed the docks
        QTimer.singleShot(0, self, self.focus.update_tab_tips)
