"""Spell checking (pytest-qt, offscreen): which words count, the speller and the personal word list,
the underlines in the story (only where the writer can see them), the corrections in the context
menu (mouse and keyboard), "Add to dictionary", the F7 toggle and the language menu."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtCore import Qt, QTimer  # noqa: E402
from PySide6.QtGui import QContextMenuEvent, QTextCharFormat  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication, QMenu, QMessageBox  # noqa: E402

from app import spelling  # noqa: E402
from writer_window import home, window  # noqa: E402,F401
from app.spelling import Speller, SpellingError, available_languages, read_personal_words, words  # noqa: E402

WAIT = 60_000
TEXT = "The sea was calm. Teh ship sailed on, and the sea stayed clam all nihgt."


def test_the_words_worth_checking():
    found = [w for _, w in words("Don't stop: NASA's R2D2 met l’amour at 3rd 'dogs' x o'clock — Straße")]
    assert found == ["Don't", "stop", "met", "l’amour", "at", "dogs", "o'clock", "Straße"]
    assert list(words("  'quoted'")) == [(3, "quoted")]


def test_the_speller_knows_words_suggests_corrections_and_keeps_personal_words(tmp_path):
    assert {"en", "de", "fr", "es"} <= set(available_languages())
    personal = tmp_path / "dictionary.txt"
    personal.write_text("Dashwood\n\nWilloughby\n", encoding="utf-8")
    speller = Speller.load("en", personal)
    assert speller.misspelt(TEXT) == [(TEXT.index("Teh"), 3), (TEXT.index("nihgt"), 5)]
    assert speller.misspelt("Dashwood and dashwood, Willoughby; Zenobrax") == [(35, 8)]
    assert "The" in speller.suggestions("Teh") and speller.suggestions("recieve")[0] == "receive"
    assert speller.suggestions("qwertyuiopasdf") == []          # quick: distance 1 only, nothing close
    assert speller.suggestions("blorf", thorough=True)            # distance 2 finds something
    speller.add("Zenobrax")
    assert speller.misspelt("zenobrax") == [] and "Zenobrax" in speller.personal
    assert spelling.personal_words_bytes(speller.personal) == b"Dashwood\nWilloughby\nZenobrax\n"
    french = Speller.load("fr", personal)
    assert french.misspelt("l'amour de la mer, aujourd’hui qu'il") == []
    with pytest.raises(SpellingError, match="No spelling dictionary for 'xx'"):
        Speller.load("xx", personal)


def test_a_personal_word_list_too_large_is_refused_and_left_alone(tmp_path, monkeypatch):
    path = tmp_path / "dictionary.txt"
    assert read_personal_words(path) == set()
    monkeypatch.setattr(spelling, "PERSONAL_WORDS_MAX_BYTES", 10)
    path.write_text("Dashwood\nElinor\n", encoding="utf-8")
    with pytest.raises(SpellingError, match=r"dictionary.txt is 16 bytes; a word list is at most 10"):
        read_personal_words(path)
    assert path.read_text(encoding="utf-8") == "Dashwood\nElinor\n"


@pytest.fixture
def spelling_ready(qtbot, window):
    """The window's spelling dictionary is read."""
    qtbot.waitUntil(lambda: window.writing.spelling.speller is not None, timeout=WAIT)


def underlined(view, block_number: int = 0) -> list[str]:
    """The words of a block the highlighter underlines."""
    block = view.document().findBlockByNumber(block_number)
    return [block.text()[r.start:r.start + r.length] for r in block.layout().formats()
            if r.format.underlineStyle() == QTextCharFormat.SpellCheckUnderline]


def type_text(qtbot, window, text):
    window.story_view.setFocus()
    window.story_view.setPlainText(text)
    qtbot.waitUntil(lambda: window.document.story.text == text)


def test_misspelt_words_are_underlined_and_corrected_from_the_menu(qtbot, window, spelling_ready):
    view, tool = window.story_view, window.writing.spelling
    type_text(qtbot, window, TEXT)
    qtbot.waitUntil(lambda: underlined(view) == ["Teh", "clam", "nihgt"] or underlined(view) == ["Teh", "nihgt"])
    assert underlined(view) == ["Teh", "nihgt"]       # "clam" is a word: only a reader catches that one
    menu = QMenu()
    tool.on_view_menu_about_to_show(menu, TEXT.index("Teh") + 1)
    texts = [a.text() for a in menu.actions()]
    assert texts[0] == "The" and "Add “Teh” to the dictionary" in texts
    assert menu.actions()[0].font().bold()
    menu.actions()[0].trigger()
    expected = TEXT.replace("Teh", "The")
    qtbot.waitUntil(lambda: window.document.story.text == expected)     # an edit like typing
    qtbot.waitUntil(lambda: underlined(view) == ["nihgt"])
    window.document.undo()
    assert window.document.story.text == TEXT
    menu = QMenu()
    tool.on_view_menu_about_to_show(menu, TEXT.index("calm"))           # a known word: Qt's menu alone
    assert not any("dictionary" in a.text() for a in menu.actions())


def test_a_word_without_quick_suggestions_gets_them_in_the_open_menu(qtbot, window, spelling_ready):
    view, tool = window.story_view, window.writing.spelling
    type_text(qtbot, window, "The blorf sang.")
    qtbot.waitUntil(lambda: underlined(view) == ["blorf"])
    menu = QMenu()
    with qtbot.waitSignal(tool.suggested, timeout=WAIT):
        tool.on_view_menu_about_to_show(menu, 6)
        assert menu.actions()[0].text() == "Looking for suggestions…" and not menu.actions()[0].isEnabled()
    texts = [a.text() for a in menu.actions()]
    assert "Looking for suggestions…" not in texts and texts[0] != "Looking for suggestions…"
    assert texts.index("Add “blorf” to the dictionary") > 0


def test_add_to_dictionary_keeps_the_word_in_the_personal_list(qtbot, window, spelling_ready, home):
    view, tool = window.story_view, window.writing.spelling
    type_text(qtbot, window, "Marianne met Willoughby on the downs.")
    qtbot.waitUntil(lambda: underlined(view) == ["Willoughby"])
    menu = QMenu()
    tool.on_view_menu_about_to_show(menu, 15)
    next(a for a in menu.actions() if a.objectName() == "addToDictionaryAction").trigger()
    qtbot.waitUntil(lambda: underlined(view) == [])
    window.writer.wait()
    path = spelling.personal_words_path()
    assert path.parent == home / "config" and path.read_text(encoding="utf-8") == "Willoughby\n"
    assert Speller.load("en").misspelt("Willoughby") == []              # the next start knows it too


def test_the_menu_key_offers_corrections_at_the_cursor(qtbot, window, spelling_ready):
    view = window.story_view
    type_text(qtbot, window, TEXT)
    qtbot.waitUntil(lambda: "nihgt" in underlined(view))
    cursor = view.textCursor()
    cursor.setPosition(TEXT.index("nihgt") + 2)
    view.setTextCursor(cursor)
    seen = []

    def look():
        popup = QApplication.activePopupWidget()
        if popup is None:
            QTimer.singleShot(20, look)
            return
        seen.extend(a.text() for a in popup.actions())
        QTest.keyClick(popup, Qt.Key_Down)           # the first correction, chosen with the keys
        QTest.keyClick(popup, Qt.Key_Return)
    QTimer.singleShot(0, look)
    at = view.cursorRect().center()                  # where Qt opens a menu asked for from the keyboard
    QApplication.sendEvent(view.viewport(), QContextMenuEvent(QContextMenuEvent.Keyboard, at, view.mapToGlobal(at)))
    assert seen[0] == "night" and "Add “nihgt” to the dictionary" in seen
    qtbot.waitUntil(lambda: window.document.story.text == TEXT.replace("nihgt", "night"))


def test_only_the_blocks_on_screen_are_checked_in_a_long_story(qtbot, window, spelling_ready):
    view, highlighter = window.story_view, window.writing.spelling.highlighter
    paragraphs = [f"Paragraph {n} has a mispelt word in it." for n in range(3000)]
    highlighter.checked_blocks = 0
    type_text(qtbot, window, "\n".join(paragraphs))
    qtbot.waitUntil(lambda: underlined(view, 10) == ["mispelt"])       # the top is on screen
    on_screen = len(view.visible_block_range())
    assert 5 < on_screen < 80 and highlighter.checked_blocks < 4 * on_screen     # not 3000
    last = view.document().blockCount() - 1
    assert underlined(view, last) == []                                 # off screen: not checked yet
    highlighter.checked_blocks = 0
    view.verticalScrollBar().setValue(view.verticalScrollBar().maximum())
    qtbot.waitUntil(lambda: underlined(view, last) == ["mispelt"])     # scrolled to: checked then
    assert highlighter.checked_blocks < 4 * on_screen
    cursor = view.textCursor()
    cursor.setPosition(view.document().findBlockByNumber(last - 3).position())
    view.setTextCursor(cursor)
    highlighter.checked_blocks = 0
    QTest.keyClicks(view, "Wrod ")                                      # typing checks its paragraph
    qtbot.waitUntil(lambda: underlined(view, last - 3) == ["Wrod", "mispelt"])
    assert highlighter.checked_blocks <= 10


def test_f7_turns_it_off_and_on_and_the_language_menu_lists_the_dictionaries(qtbot, window, spelling_ready):
    view, tool = window.story_view, window.writing.spelling
    type_text(qtbot, window, "Das Haus am Meer. Teh end.")
    qtbot.waitUntil(lambda: underlined(view) == ["Das", "Haus", "Meer", "Teh"])
    assert "spellCheckAction" in [a.objectName() for a in window.commands.view_menu.actions()]
    assert "F7" in tool.toggle.toolTip()
    QTest.keyClick(window, Qt.Key_F7)
    qtbot.waitUntil(lambda: underlined(view) == [])
    assert window.settings.get("spell_check") is False
    QTest.keyClick(window, Qt.Key_F7)
    qtbot.waitUntil(lambda: underlined(view) == ["Das", "Haus", "Meer", "Teh"])
    names = {a.data(): a.text() for a in tool.language_menu.actions()}
    assert set(names) == set(available_languages()) and names["de"].startswith("Deutsch")
    next(a for a in tool.language_menu.actions() if a.data() == "de").trigger()
    qtbot.waitUntil(lambda: underlined(view) == ["Teh", "end"])
    assert window.settings.get("spell_language") == "de"


def test_a_dictionary_that_cannot_be_read_turns_checking_off_and_says_why(qtbot, window, spelling_ready,
                                                                          monkeypatch):
    notices = []
    monkeypatch.setattr(window.status, "show_notice", notices.append)
    window.settings.set("spell_language", "xx")               # a hand-edited settings file
    window.writing.spelling.load()
    qtbot.waitUntil(lambda: not window.writing.spelling.toggle.isChecked())
    assert notices and "No spelling dictionary for 'xx'" in notices[0]


def test_text_streaming_in_is_checked_once_the_generation_ends(qtbot, window, spelling_ready):
    from types import SimpleNamespace
    view, highlighter = window.story_view, window.writing.spelling.highlighter
    type_text(qtbot, window, "The sea was calm.")
    view.begin_generation()
    highlighter.checked_blocks = 0
    for word in (" Teh", " ship", " saled", " on."):
        view.append_pieces([SimpleNamespace(text=word, probability=float("nan"), alternatives=[])])
        qtbot.wait(5)
    assert underlined(view) == [] and highlighter.checked_blocks == 0     # the stream costs no checking
    view.end_generation()
    window.generation.busyChanged.emit(False)
    qtbot.waitUntil(lambda: underlined(view) == ["Teh", "saled"])
