"""Spell checking in the window: the View menu's "Check spelling" (F7) and "Spelling language",
the underlines in the story (`SpellHighlighter`), and the story's context menu offering
corrections and "Add to dictionary".

The dictionary is read on a thread (a moment for English, more for the larger ones); suggestions
that need the slow search (edit distance 2) fill the open menu when they are ready. The personal
word list is written by the window's FileWriter, never on the GUI thread.
"""
from __future__ import annotations

import threading

import shiboken6
from PySide6.QtCore import QLocale, QObject, Qt, Signal
from PySide6.QtGui import QAction, QActionGroup, QFont, QKeySequence, QTextCursor
from PySide6.QtWidgets import QMenu

from app.spelling import (SpellingError, Speller, available_languages, personal_words_bytes,
                          personal_words_path)
from app.threads import emit_from_thread
from app.widgets.spellcheck import SpellHighlighter

MAX_SUGGESTIONS = 6


def language_name(code: str) -> str:
    """"English", "Deutsch", "français"...: the language's own name (the code if Qt knows none)."""
    name = QLocale(code).nativeLanguageName()
    return f"{name[:1].upper()}{name[1:]} ({code})" if name and QLocale(code).language() != QLocale.C else code


class Spelling(QObject):
    """The story view's spell checking (see the module's docstring)."""

    loaded = Signal(int, object, str)           # request, Speller or None, error (from a thread)
    suggested = Signal(object, str, list)       # menu, word, suggestions (from a thread)

    def __init__(self, window, view_menu: QMenu):
        super().__init__(window)
        self.window = window
        self.settings = window.settings
        self.view = window.story_view
        self.highlighter = SpellHighlighter(self.view)
        self.speller: Speller | None = None
        self._request = 0
        self._placeholder: QAction | None = None
        self._span = (0, 0)                      # the misspelt word the open menu is about
        self.toggle = QAction("Check &spelling", window, objectName="spellCheckAction", checkable=True)
        self.toggle.setShortcut(QKeySequence("F7"))
        self.toggle.setShortcutContext(Qt.WindowShortcut)
        self.toggle.setToolTip("Underline misspelt words in the story; right-click one (or the Menu key) "
                               "for corrections (F7)")
        self.toggle.setChecked(bool(self.settings.get("spell_check")))
        window.addAction(self.toggle)
        self.language_menu = QMenu("Spelling &language", window, objectName="spellLanguageMenu")
        self.languages = QActionGroup(self, exclusive=True)
        for code in available_languages():
            action = self.language_menu.addAction(language_name(code))
            action.setCheckable(True)
            action.setData(code)
            action.setChecked(code == self.settings.get("spell_language"))
            self.languages.addAction(action)
        view_menu.addSeparator()
        view_menu.addAction(self.toggle)
        view_menu.addMenu(self.language_menu)
        for signal, slot in ((self.toggle.toggled, self.on_toggle_toggled),
                             (self.languages.triggered, self.on_languages_triggered),
                             (self.loaded, self.on_loaded), (self.suggested, self.on_suggested),
                             (self.view.menuAboutToShow, self.on_view_menu_about_to_show),
                             (window.generation.busyChanged, self.on_generation_busy_changed)):
            signal.connect(slot)
        if self.toggle.isChecked():
            self.load()

    # --- the dictionary ---------------------------------------------------------------------
    def load(self) -> None:
        """Read the chosen language's dictionary and the personal words on a thread."""
        self._request += 1
        request, language = self._request, self.settings.get("spell_language")

        def read():
            try:
                emit_from_thread(self.loaded, request, Speller.load(language), "")
            except (SpellingError, OSError, ValueError) as e:
                emit_from_thread(self.loaded, request, None, str(e))
        threading.Thread(target=read, name="neox-spelling", daemon=True).start()

    def on_loaded(self, request: int, speller, error: str) -> None:
        if request != self._request or not self.toggle.isChecked():
            return
        if speller is None:
            self.window.status.show_notice(f"Spell checking is off: {error}")
            self.toggle.setChecked(False)
            return
        self.speller = speller
        self.highlighter.set_speller(speller)

    def on_toggle_toggled(self, on: bool) -> None:
        self.settings.set("spell_check", on)
        self.window.write_settings()
        if on:
            self.load()
        else:
            self._request += 1
            self.speller = None
            self.highlighter.set_speller(None)

    def on_languages_triggered(self, action: QAction) -> None:
        self.settings.set("spell_language", action.data())
        self.window.write_settings()
        if self.toggle.isChecked():
            self.load()
        else:
            self.toggle.setChecked(True)

    def on_generation_busy_changed(self, busy: bool) -> None:
        if not busy:           # what streamed in unchecked (see SpellHighlighter) is checked now
            self.highlighter.timer.start()

    # --- the context menu -------------------------------------------------------------------
    def on_view_menu_about_to_show(self, menu: QMenu, position: int) -> None:
        """Corrections for the misspelt word at `position`, and "Add to dictionary", on top."""
        hit = self.highlighter.misspelt_at(position)
        if hit is None or self.view.isReadOnly():
            return
        start, end, word = hit
        self._span = (start, end)
        first = menu.actions()[0] if menu.actions() else None
        found = self.speller.suggestions(word, MAX_SUGGESTIONS)
        for suggestion in found:
            menu.insertAction(first, self._replace_action(menu, start, end, suggestion))
        if not found:
            self._placeholder = QAction("Looking for suggestions…", menu, enabled=False)
            menu.insertAction(first, self._placeholder)
            speller = self.speller
            threading.Thread(target=lambda: emit_from_thread(
                self.suggested, menu, word, speller.suggestions(word, MAX_SUGGESTIONS, thorough=True)),
                name="neox-suggestions", daemon=True).start()
        add = QAction(f"Add “{word}” to the dictionary", menu, objectName="addToDictionaryAction")
        add.triggered.connect(lambda: self.add_word(word))
        menu.insertAction(first, add)
        menu.insertSeparator(first)

    def _replace_action(self, menu: QMenu, start: int, end: int, suggestion: str) -> QAction:
        action = QAction(suggestion, menu)
        font = QFont(action.font())
        font.setBold(True)
        action.setFont(font)
        action.triggered.connect(lambda: self.replace(start, end, suggestion))
        return action

    def on_suggested(self, menu: QMenu, word: str, found: list) -> None:
        """The slow search's suggestions, into the menu if it is still open."""
        placeholder, self._placeholder = self._placeholder, None
        if placeholder is None or not shiboken6.isValid(menu) or not shiboken6.isValid(placeholder):
            return
        for suggestion in found:
            menu.insertAction(placeholder, self._replace_action(menu, *self._span, suggestion))
        if found:
            menu.removeAction(placeholder)
        else:
            placeholder.setText("No suggestions")

    def replace(self, start: int, end: int, text: str) -> None:
        """The writer's correction: an edit like typing, one step of the story's undo history."""
        self.window.document.checkpoint()            # the typing before it is a step of its own
        cursor = QTextCursor(self.view.document())
        cursor.setPosition(start)
        cursor.setPosition(end, QTextCursor.KeepAnchor)
        cursor.insertText(text)
        self.window.document.checkpoint()

    def add_word(self, word: str) -> None:
        """`word` is right from now on, in every story: kept in the personal word list."""
        if self.speller is None:
            return
        self.speller.add(word)
        self.window.writer.write(personal_words_path(), personal_words_bytes(self.speller.personal))
        self.highlighter.recheck()
        self.window.status.show_notice(f"“{word}” added to your dictionary ({personal_words_path()})")
