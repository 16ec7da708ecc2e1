"""The writer's tools around the story (pytest-qt, offscreen): find and replace, the word count,
full screen, the centred page and its font, recent stories, the panels' focus keys, the room the
story keeps in a small window, and the small fixes of issue 17 (title, file names, file modes,
max new tokens, the chat context, the theme)."""
from __future__ import annotations

import os
import stat

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QPalette, QTextCursor  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication, QMessageBox, QTabBar  # noqa: E402

from app.prompt import Context, ContextPart  # noqa: E402
from app.recent import recent_stories, remember, startup_story  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.window.dialogs import file_stem  # noqa: E402
from app.wordcount import count_words, describe  # noqa: E402
from writer_window import home, window  # noqa: E402,F401

WAIT = 60_000
STORY = "The sea was calm. The ship sailed on, and the sea stayed calm all night."


def type_story(qtbot, window, text=STORY):
    window.story_view.setFocus()
    window.story_view.setPlainText(text)          # as typed: the view reports it to the document
    qtbot.waitUntil(lambda: window.document.story.text == text)


def test_find_next_and_replace_all_edit_the_story(qtbot, window):
    type_story(qtbot, window)
    QTest.keyClick(window, Qt.Key_F, Qt.ControlModifier)
    bar = window.writing.find_bar
    assert bar.isVisible() and bar.find_edit.hasFocus() and not bar.replace_edit.isVisible()
    QTest.keyClicks(bar.find_edit, "sea")
    assert bar.count_label.text() == "2 found"
    QTest.keyClick(bar.find_edit, Qt.Key_Return)
    first = window.story_view.textCursor()
    assert first.selectedText() == "sea" and first.selectionStart() == STORY.index("sea")
    QTest.keyClick(bar.find_edit, Qt.Key_Return)
    assert window.story_view.textCursor().selectionStart() == STORY.rindex("sea")
    QTest.keyClick(bar.find_edit, Qt.Key_Escape)                  # Esc closes the bar, not Stop
    assert not bar.isVisible() and window.story_view.hasFocus()

    QTest.keyClick(window, Qt.Key_H, Qt.ControlModifier)
    assert bar.isVisible() and bar.replace_edit.isVisible()
    bar.replace_edit.setText("ocean")
    assert bar.replace_all() == 2
    expected = STORY.replace("sea", "ocean")
    qtbot.waitUntil(lambda: window.document.story.text == expected)
    assert window.document.dirty
    window.document.undo()                                       # the story's own history has it
    assert window.document.story.text != expected


def test_the_word_and_token_count_of_the_story_and_the_selection(qtbot, window):
    assert count_words("Don't stop — the well-known sea, l’amour.") == 6
    type_story(qtbot, window)
    label = window.writing.count_label
    qtbot.waitUntil(lambda: label.text() == "15 words", timeout=WAIT)    # no model: no tokenizer
    cursor = QTextCursor(window.story_view.document())
    cursor.setPosition(len("The sea was calm."), QTextCursor.KeepAnchor)
    window.story_view.setTextCursor(cursor)
    qtbot.waitUntil(lambda: label.text() == "4 of 15 words selected", timeout=WAIT)
    qtbot.wait(2 * window.document.edit_timer.interval())     # the typing's undo step keeps the selection
    assert window.story_view.textCursor().selectedText() == "The sea was calm."
    assert describe(1234, 1702) == "1,234 words · 1,702 tokens"
    assert describe(1234, 1702, (12, 15)) == "12 of 1,234 words · 15 tokens selected"


def test_f11_is_a_distraction_free_full_screen_and_back(qtbot, window):
    docks = [d for d in window.docks.values() if d.isVisible()]
    assert docks
    QTest.keyClick(window, Qt.Key_F11)
    assert window.isFullScreen() and window.writing.full_screen.isChecked()
    assert not window.menuBar().isVisible() and not window.commands.toolbar.isVisible()
    assert not any(d.isVisible() for d in window.docks.values()) and window.story_view.isVisible()
    QTest.keyClick(window, Qt.Key_F, Qt.ControlModifier)           # the keys still work without menus
    assert window.writing.find_bar.isVisible()
    QTest.keyClick(window.writing.find_bar.find_edit, Qt.Key_Escape)
    QTest.keyClick(window, Qt.Key_F11)
    assert not window.isFullScreen() and window.menuBar().isVisible()
    assert all(d.isVisible() for d in docks)


def test_the_story_is_a_centred_page_of_adjustable_width_in_serif_or_sans(qtbot, window):
    window.resize(1920, 1080)
    qtbot.waitUntil(lambda: window.story_view.viewportMargins().left() > 0)
    view, tools = window.story_view, window.writing
    margins = view.viewportMargins()
    assert margins.left() == margins.right()
    chars = view.viewport().width() // view.fontMetrics().averageCharWidth()
    assert 72 <= chars <= 80                                  # about 72 characters a line, with the margin
    tools.step_page(8)
    assert window.settings.get("page_chars") == 80 and view.viewportMargins().left() < margins.left()
    tools.set_page_chars(0)                                   # the whole width
    assert view.viewportMargins().left() == 0
    assert window.settings.get("story_font") == "serif" and tools.serif.isChecked()
    assert view.font().styleHint() == view.font().StyleHint.Serif
    tools.serif.trigger()
    from app.window.writing import FONTS
    assert window.settings.get("story_font") == "sans" and view.font().family() in FONTS["sans"]


def test_recent_stories_and_the_story_reopened_at_start(qtbot, window, tmp_path):
    type_story(qtbot, window)
    path = tmp_path / "voyage.neoxstory.json"
    with qtbot.waitSignal(window.storySaved, timeout=WAIT):
        window.save_to(path)
    window.writer.wait()
    assert recent_stories(window.settings) == [str(path.resolve())]
    assert startup_story(window.settings) == str(path.resolve())
    menu = window.writing.recent_menu
    menu.aboutToShow.emit()
    assert [a.text() for a in menu.actions()] == ["&1 voyage.neoxstory.json"]
    window.document.new()
    with qtbot.waitSignal(window.storyOpened, timeout=WAIT):
        menu.actions()[0].trigger()
    assert window.document.story.text == STORY

    settings = Settings()
    for n in range(10):
        (tmp_path / f"s{n}.json").write_text("{}")
        remember(settings, tmp_path / f"s{n}.json")
    remember(settings, tmp_path / "s3.json")
    stories = recent_stories(settings)
    assert len(stories) == 8 and stories[0].endswith("s3.json") and stories.count(stories[0]) == 1
    (tmp_path / "s3.json").unlink()
    assert startup_story(settings) is None and not any(s.endswith("s3.json") for s in recent_stories(settings))


def test_each_panel_has_a_focus_key_shown_in_the_view_menu_and_tooltips(qtbot, window):
    go = window.findChild(type(window.writing.recent_menu), "goToMenu")
    texts = {a.text(): a.shortcut().toString() for a in go.actions()}
    assert texts["Go to the &story"] == "Ctrl+0" and texts["Go to Sampling"] == "Ctrl+2"
    QTest.keyClick(window, Qt.Key_2, Qt.ControlModifier)
    focused = QApplication.focusWidget()
    assert focused is not None and window.sampling.isAncestorOf(focused)
    QTest.keyClick(window, Qt.Key_3, Qt.ControlModifier)          # a tab behind: brought to the front
    assert window.memory.isAncestorOf(QApplication.focusWidget()) and window.memory.isVisible()
    QTest.keyClick(window, Qt.Key_0, Qt.ControlModifier)
    assert window.story_view.hasFocus()
    window.writing.focus.update_tab_tips()
    tips = [bar.tabToolTip(i) for bar in window.findChildren(QTabBar) for i in range(bar.count())]
    assert "Sampling (Ctrl+2)" in tips
    assert "Ctrl+2" in window.docks["sampling"].toggleViewAction().toolTip()


def test_tab_leaves_fields_where_a_tab_character_makes_no_sense(qtbot, window):
    memory = window.memory.memory_edit
    window.writing.focus.focus_dock("memory")
    memory.setFocus()
    QTest.keyClick(memory, Qt.Key_Tab)
    assert not memory.hasFocus() and "\t" not in memory.toPlainText()


@pytest.mark.parametrize("size", [(1024, 700), (1366, 768), (1920, 1080)])
def test_the_story_keeps_room_and_no_dock_tab_label_is_cut(qtbot, home, size):
    from app.window.mainwindow import MainWindow
    from app.window.writing import STORY_MIN_CHARS
    w = MainWindow(backend="reference", check_recovery=False)
    qtbot.addWidget(w)
    w.resize(*size)
    w.show()
    qtbot.waitExposed(w)
    tools, chars = w.writing, w.settings.get("page_chars")
    qtbot.waitUntil(lambda: w.width() == size[0] and w.centralWidget().width() >= tools.story_room(STORY_MIN_CHARS))
    if size[0] >= 1366:        # the whole page between the docks, the model list in sight on the left
        qtbot.waitUntil(lambda: w.centralWidget().width() >= tools.story_room(chars))
        assert w.dockWidgetArea(w.docks["models"]) == Qt.LeftDockWidgetArea and w.docks["models"].isVisible()
        assert not w.docks["models"].visibleRegion().isEmpty()
    else:                      # too narrow for three columns: the left docks wait in the right's tabs
        assert w.dockWidgetArea(w.docks["models"]) == Qt.RightDockWidgetArea
    if size[0] >= 1920:        # a first run: the model list wide enough for all its columns
        qtbot.waitUntil(lambda: w.model_picker.tree.topLevelItemCount() > 0)
        qtbot.waitUntil(lambda: w.model_picker.tree.horizontalScrollBar().maximum() == 0)
        assert w.centralWidget().width() >= tools.story_room(chars)
    for bar in w.findChildren(QTabBar):
        if not bar.isVisible():
            continue
        for i in range(bar.count()):
            rect, text = bar.tabRect(i), bar.tabText(i)
            room = max(rect.width(), rect.height())          # the tabs run down the side
            assert room >= bar.fontMetrics().horizontalAdvance(text), f"tab {text!r} is cut at {size}"
    if size[0] == 1024:        # wide again: the model list goes back to the left
        w.resize(1366, 768)
        qtbot.waitUntil(lambda: w.dockWidgetArea(w.docks["models"]) == Qt.LeftDockWidgetArea)
        qtbot.waitUntil(lambda: w.centralWidget().width() >= tools.story_room(chars))
    w.close()


def test_max_new_tokens_stays_below_the_context(qtbot, window):
    sampling = window.sampling
    sampling.context_spin.setValue(512)
    sampling.max_tokens_spin.setValue(2000)
    assert sampling.max_tokens_spin.value() == 511
    assert "511" in sampling.max_tokens_spin.toolTip()
    sampling.context_spin.setValue(2048)
    sampling.apply_values({"n_ctx": 1024, "max_new_tokens": 1000})
    assert (sampling.context_spin.value(), sampling.max_tokens_spin.value()) == (1024, 1000)


def test_the_chat_context_is_labelled_chat_and_follows_the_mode(qtbot, window):
    view = window.context_view
    context = Context([ContextPart("memory", "A ship.\n", 3), ContextPart("story", "You: Hi\nBot:", 5)], 8, 400, 0)
    view.show_context(context)
    assert "story: 5" in view.summary.text()
    window.commands.set_mode("chat")
    assert view.mode == "chat" and "Load a model" in view.summary.text()     # not the stale story context
    view.show_context(context)
    assert "chat: 5" in view.summary.text() and "⟦chat, 5 tokens⟧" in view.text.toPlainText()
    assert "story" not in view.text.toPlainText()


def test_the_title_names_the_markdown_export_and_the_suggested_file(qtbot, window, tmp_path):
    type_story(qtbot, window)
    title = window.memory.title_edit
    title.setFocus()
    QTest.keyClicks(title, "The Calm Sea")
    assert window.document.story.title == "The Calm Sea" and window.windowTitle().startswith("*The Calm Sea")
    assert file_stem(window.document.story) == "The Calm Sea"
    out = tmp_path / "calm.md"
    window.document.export_to(out, "markdown")
    window.writer.wait()
    assert out.read_text(encoding="utf-8").startswith("# The Calm Sea")
    mode = stat.S_IMODE(out.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask                      # as any new file, not private 0600
    window.document.story.title = ""
    assert file_stem(window.document.story) == "The sea was calm. The ship"
    window.document.story.text = ""
    assert file_stem(window.document.story) == "Untitled story"
    window.document.story.title = 'a/b: "c"?'
    assert file_stem(window.document.story) == "a b   c"


def test_dark_turns_the_model_list_dark_at_once_and_the_sampling_panel_stays_whole(qtbot, window):
    from PySide6.QtWidgets import QScrollArea
    from app.widgets.modelpicker import ACTION
    picker = window.model_picker
    qtbot.waitUntil(lambda: picker.item_for("pythia-70m-deduped-q4_0") is not None, timeout=WAIT)
    window.appearance.set_theme("light")
    qtbot.wait(10)
    link = picker.item_for("pythia-70m-deduped-q4_0").foreground(ACTION).color()
    window.appearance.set_theme("dark")
    qtbot.waitUntil(lambda: picker.tree.palette().color(QPalette.Base).lightness() < 128)
    viewport = picker.tree.viewport()              # what the list is painted on, after one switch
    assert viewport.palette().color(viewport.backgroundRole()).lightness() < 128
    assert viewport.palette().color(QPalette.Text).lightness() > 128
    assert window.story_view.palette().color(QPalette.Base).lightness() < 128
    qtbot.waitUntil(lambda: QApplication.palette().color(QPalette.Highlight).name() in
                    window.commands.toolbar.styleSheet())          # the designed look, in dark colours
    assert window.story_view.styleSheet() == ""                    # the writer's font stays the story's
    dark_link = picker.item_for("pythia-70m-deduped-q4_0").foreground(ACTION).color()
    assert dark_link == picker.palette().color(QPalette.Link) and dark_link != link   # the links follow
    scroll = window.sampling.findChild(QScrollArea)
    inner = scroll.widget()
    qtbot.waitUntil(lambda: scroll.minimumWidth() >= inner.minimumSizeHint().width())
    qtbot.waitUntil(lambda: window.sampling.width() >= inner.minimumSizeHint().width())   # nothing cut
    window.appearance.set_theme("light")


def test_follow_the_system_after_dark_gives_the_platform_style_back(qtbot, home):
    from app.window.mainwindow import MainWindow
    app = QApplication.instance()
    before = app.style().name()
    app.setStyle("Windows")                      # as a platform style would be at start
    try:
        w = MainWindow(backend="reference", check_recovery=False)
        qtbot.addWidget(w)
        w.appearance.set_theme("dark", save=False)
        assert QApplication.palette().color(QPalette.Window).lightness() < 128
        stood_in = app.style().name() == "fusion"    # where the platform does not switch itself
        w.appearance.set_theme("system", save=False)
        assert QApplication.palette().color(QPalette.Window).lightness() > 128
        assert app.style().name() == "windows" or not stood_in
        w.shutdown()
    finally:
        app.setStyle(before)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from modelgen import converted_tiny_model
    return converted_tiny_model(tmp_path_factory.mktemp("model"))


def test_with_a_model_loaded_its_row_is_marked_tokens_are_counted_and_threads_reload_it(
        qtbot, window, model_path, monkeypatch):
    with qtbot.waitSignal(window.modelLoaded, timeout=WAIT):
        window.open_model(model_path)
    assert window.model_picker._loaded_path == str(model_path)
    type_story(qtbot, window, "Once upon a time")
    n_tokens = len(window.llm.worker.tokenizer.encode("Once upon a time"))
    qtbot.waitUntil(lambda: window.writing.count_label.text() == f"4 words · {n_tokens} tokens", timeout=WAIT)

    waiting = []
    window.generation.busyChanged.connect(lambda busy: waiting.append(window.status.wait_progress.isVisibleTo(
        window.status)))
    window.sampling.max_tokens_spin.setValue(5)
    with qtbot.waitSignal(window.generationFinished, timeout=WAIT):
        window.commands.generate.trigger()
    assert waiting[0] is True                                 # a bar moved until the first token came
    assert not window.status.wait_progress.isVisibleTo(window.status)

    from PySide6.QtWidgets import QInputDialog
    monkeypatch.setattr(QInputDialog, "getInt", staticmethod(lambda *a, **k: (1, True)))
    with qtbot.waitSignal(window.modelLoaded, timeout=WAIT):  # "the model is loaded again with them"
        window.commands.threads.trigger()
    assert window.llm.worker.threads == 1 and window.settings.get("threads") == 1


def test_every_menu_opens_from_the_keyboard_and_the_preset_box_is_whole(qtbot, window):
    titles = [a.text() for a in window.menuBar().actions()]
    assert titles and all("&" in t for t in titles)          # Alt+letter opens each menu
    picker = window.sampling.preset_picker
    for name in (picker.itemText(i) for i in range(picker.count()) if picker.itemText(i)):
        picker.setCurrentText(name)
        if len(name) <= picker.minimumContentsLength():
            assert picker.width() >= picker.fontMetrics().horizontalAdvance(name), name


def test_save_suggests_the_title_as_the_file_name(qtbot, window, monkeypatch):
    from PySide6.QtWidgets import QFileDialog
    asked = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: asked.append(a[2]) or ("", "")))
    window.document.story.title = "The Calm Sea"
    assert window.dialogs.save_as() is False
    window.dialogs.export("markdown")
    assert [os.path.basename(p) for p in asked] == ["The Calm Sea.neoxstory.json", "The Calm Sea.md"]


def test_work_deferred_to_the_next_turn_is_dropped_when_the_window_is_gone(qtbot, home):
    # the first run's dock sizes and the model list's fitting (started by statuses from a thread)
    # wait for the next turn of the event loop; they ran on a deleted window when it had closed
    # meanwhile (a RuntimeError in a later test of the suite)
    from PySide6.QtCore import QEvent
    from app.window.mainwindow import MainWindow
    w = MainWindow(backend="reference", check_recovery=False)
    w.writing._fit_models = True
    w.writing.on_model_picker_statuses_ready([], "")
    w.close()
    w.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.DeferredDelete)     # gone before the zero timer fires
    qtbot.wait(20)                               # an exception here fails the test (pytest-qt)
