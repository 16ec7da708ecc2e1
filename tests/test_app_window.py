"""The desktop window on a converted fixture model (pytest-qt, offscreen).

Every test gets its own NEOX_WRITER_HOME, so nothing touches the user's folders. Dialogs
are non-modal (`show_error` uses QMessageBox.open), and the one blocking question (unsaved
changes) is answered by monkeypatching QMessageBox.question.
"""
from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QPoint, Qt  # noqa: E402
from PySide6.QtGui import QTextCursor  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QComboBox, QMessageBox, QPlainTextEdit, QSlider, QSpinBox, QWidget  # noqa: E402

from app.autosave import autosave_path  # noqa: E402
from app.widgets.modelpicker import ACTION, SIZE  # noqa: E402
from app.window.mainwindow import MainWindow  # noqa: E402
from event_loop_gaps import EventLoopGaps  # noqa: E402

PROMPT = "Once upon a time"
WAIT = 60_000     # ms; a generous bound for a loaded CI machine, not a speed assertion


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from modelgen import converted_tiny_model
    return converted_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("NEOX_WRITER_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.Discard))
    return tmp_path / "home"


def make_window(qtbot, **kw) -> MainWindow:
    # the numpy reference backend: no JIT warm-up, the same streaming, Stop and seeds
    window = MainWindow(backend="reference", **kw)
    qtbot.addWidget(window)
    window.show()
    return window


@pytest.fixture
def window(qtbot, home, model_path):
    w = make_window(qtbot, check_recovery=False)
    with qtbot.waitSignal(w.modelLoaded, timeout=WAIT):
        w.open_model(model_path)
    # let the start-up model list (a background thread) settle before measuring anything
    qtbot.waitUntil(lambda: w.model_picker.tree.topLevelItemCount() > 0, timeout=WAIT)
    yield w
    w.close()


def find(window, cls, name):
    widget = window.findChild(cls, name)
    assert widget is not None, f"no {cls.__name__} named {name!r}"
    return widget


def generate(qtbot, window, prompt=None, max_tokens=30, seed=None) -> dict:
    if prompt is not None:
        window.story_view.setPlainText(prompt)
    find(window, QSpinBox, "maxTokensSpin").setValue(max_tokens)
    if seed is not None:
        find(window, QSpinBox, "seedSpin").setValue(seed)
    with qtbot.waitSignal(window.generationFinished, timeout=WAIT) as blocker:
        find(window, QWidget, "generateButton").click()
    return blocker.args[0]


def written(qtbot, window, path):
    """Wait for the background writer to finish `path` (other files, e.g. settings, may come first)."""
    return qtbot.waitSignal(window.writer.written, timeout=WAIT, check_params_cb=lambda p: p == str(path))


def test_object_names_exist(window):
    for name in ("modelPicker", "storyView", "generateButton", "stopButton", "retryButton", "undoButton",
                 "redoButton", "temperatureSlider", "topKSlider", "topPSlider", "repetitionPenaltySlider",
                 "maxTokensSpin", "seedSpin", "presetPicker", "memoryEdit", "authorsNoteEdit", "modeSwitch",
                 "chatInput", "tokensPerSecondLabel"):
        find(window, QWidget, name)
    slider = find(window, QSlider, "temperatureSlider")
    slider.setValue(35)
    assert window.sampling.sampler_settings().temperature == pytest.approx(0.35)


def test_tokens_stream_in_over_many_updates(qtbot, window):
    changes = []
    window.story_view.document().contentsChange.connect(lambda pos, rem, add: changes.append(add))
    summary = generate(qtbot, window, PROMPT, max_tokens=90, seed=7)   # seed 7 runs to the length limit
    streamed = [c for c in changes[1:] if c]     # changes[0] is setting the prompt
    assert summary.gen_tokens == 90
    assert len(streamed) >= 2 and max(streamed) < sum(streamed)
    text = window.story_view.toPlainText()
    assert text.startswith(PROMPT) and len(text) > len(PROMPT)
    assert window.document.story.generations[-1].text == text[len(PROMPT):]
    assert window.story_view.has_mark() and not window.story_view.isReadOnly()
    assert "tok/s" in find(window, QWidget, "tokensPerSecondLabel").text()


def test_stop_ends_a_long_generation_within_one_token(qtbot, window):
    worker = window.llm.worker
    seen = {}

    def stop_at_first_batch(request_id, pieces):
        # runs in the engine thread between two tokens, so the count is exact
        if not seen:
            window.generation.stop()
            seen["tokens"] = worker.tokens_generated
    worker.tokensReady.connect(stop_at_first_batch, Qt.DirectConnection)
    summary = generate(qtbot, window, PROMPT, max_tokens=100, seed=7)
    assert summary.stop_reason == "cancelled"
    assert summary.gen_tokens <= seen["tokens"] + 1 < 100
    assert not window.story_view.isReadOnly() and window.commands.generate.isEnabled()


def test_untouched_generated_text_keeps_its_mark_and_tokens(qtbot, window):
    generate(qtbot, window, PROMPT, max_tokens=10, seed=7)
    view = window.story_view
    tokens = list(view.tokens)
    assert view.has_mark() and tokens
    view.setFocus()
    view.moveCursor(QTextCursor.End)
    QTest.keyClicks(view, " And")
    assert view.tokens == tokens and view.toPlainText().endswith(" And")
    window.document.on_edit_timer_timeout()      # the typing pause: one undo step, the view shows the tree
    assert [s.piece.token for s in view.tokens] == [s.piece.token for s in tokens]
    assert window.document.story.tree[window.document.story.tree.current].text == " And"   # the writer's own passage
    view.moveCursor(QTextCursor.Start)
    QTest.keyClicks(view, "So. ")
    assert [s.start for s in view.tokens] == [s.start + 4 for s in tokens]  # moved with the text


def test_ctrl_z_in_the_story_undoes_typing_and_generations(qtbot, window):
    generate(qtbot, window, PROMPT, max_tokens=5, seed=7)
    view = window.story_view
    generated = view.toPlainText()
    view.setFocus()
    view.moveCursor(QTextCursor.End)
    QTest.keyClicks(view, " Then")
    QTest.keyClick(view, Qt.Key_Z, Qt.ControlModifier)
    assert view.toPlainText() == generated
    QTest.keyClick(view, Qt.Key_Z, Qt.ControlModifier)
    assert view.toPlainText() == PROMPT
    QTest.keyClick(view, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert view.toPlainText() == generated and view.has_mark()
    QTest.keyClick(view, Qt.Key_Y, Qt.ControlModifier)
    assert view.toPlainText() == generated + " Then"


def test_editing_is_blocked_while_generating(qtbot, window):
    blocked = []
    window.story_view.setPlainText(PROMPT)
    window.story_view.document().contentsChange.connect(lambda *a: blocked.append(window.story_view.isReadOnly()))
    generate(qtbot, window, None, max_tokens=40, seed=7)
    assert len(blocked) >= 2 and all(blocked)


def test_retry_undo_redo(qtbot, window):
    first = generate(qtbot, window, PROMPT, seed=1).text
    find(window, QSpinBox, "seedSpin").setValue(2)
    with qtbot.waitSignal(window.generationFinished, timeout=WAIT):
        find(window, QWidget, "retryButton").click()
    second = window.story_view.toPlainText()[len(PROMPT):]
    assert second != first and window.story_view.toPlainText() == PROMPT + second
    undo, redo = find(window, QWidget, "undoButton"), find(window, QWidget, "redoButton")
    undo.click()
    assert window.story_view.toPlainText() == PROMPT + first
    assert window.story_view.has_mark()                     # the older generation is marked again
    undo.click()
    assert window.story_view.toPlainText() == PROMPT
    redo.click()
    redo.click()
    assert window.story_view.toPlainText() == PROMPT + second
    assert not window.commands.redo.isEnabled()


def test_a_seed_reproduces_the_text(qtbot, window):
    a = generate(qtbot, window, PROMPT, seed=1234)
    with qtbot.waitSignal(window.generationFinished, timeout=WAIT) as blocker:
        window.generation.retry()
    b = blocker.args[0]
    assert a.seed == b.seed == 1234 and a.text == b.text and a.text


def test_choosing_an_alternative_token_regenerates_from_there(qtbot, window):
    generate(qtbot, window, PROMPT, max_tokens=20, seed=5)
    view = window.story_view
    index = 3
    span = view.tokens[index]
    alternative = next(a for a in span.piece.alternatives if a[1] != span.piece.token)
    cursor = view.textCursor()
    cursor.setPosition(span.start)
    rect = view.cursorRect(cursor)                      # click just right of the token's first character
    QTest.mouseClick(view.viewport(), Qt.LeftButton, Qt.NoModifier, QPoint(rect.x() + 2, rect.center().y()))
    assert window.token_popup.isVisible() and window.token_popup.list.count() == len(span.piece.alternatives)
    row = [a[1] for a in span.piece.alternatives].index(alternative[1])
    prefix = view.toPlainText()[:view.token_start_offset(index)]
    with qtbot.waitSignal(window.generationFinished, timeout=WAIT):
        window.token_popup.choose(row)
    assert view.toPlainText().startswith(prefix + alternative[0])


def test_the_token_alternatives_open_and_choose_from_the_keyboard(qtbot, window):
    generate(qtbot, window, PROMPT, max_tokens=20, seed=5)
    view, popup, action = window.story_view, window.token_popup, window.branching.alternatives_action
    edit_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Edit")
    assert action in edit_menu.actions() and "Alt+Return" in action.toolTip()
    notices = []
    window.status.show_notice = notices.append
    cursor = view.textCursor()
    cursor.setPosition(2)                                   # in the writer's prompt: no token there
    view.setTextCursor(cursor)
    view.setFocus()
    QTest.keyClick(view, Qt.Key_Return, Qt.AltModifier)
    assert not popup.isVisible() and "No generated token at the cursor" in notices[0]
    index = 3
    span = view.tokens[index]
    alternatives = [a[1] for a in span.piece.alternatives]
    target = next(i for i, a in enumerate(alternatives) if a != span.piece.token)
    cursor.setPosition(span.end)                            # just after the token, as after typing it
    view.setTextCursor(cursor)
    QTest.keyClick(view, Qt.Key_Return, Qt.AltModifier)
    assert popup.isVisible() and popup.list.currentRow() == alternatives.index(span.piece.token)
    assert "Esc" in popup.hint.text()
    QTest.keyClick(popup.list, Qt.Key_Escape)               # closed, nothing changed
    assert not popup.isVisible()
    text = view.toPlainText()
    QTest.keyClick(view, Qt.Key_Return, Qt.AltModifier)
    assert popup.isVisible() and view.toPlainText() == text
    step = Qt.Key_Down if target > popup.list.currentRow() else Qt.Key_Up
    while popup.list.currentRow() != target:
        QTest.keyClick(popup.list, step)
    prefix = view.toPlainText()[:view.token_start_offset(index)]
    chosen_text, chosen_token, _ = span.piece.alternatives[target]
    chosen = []
    popup.alternativeChosen.connect(lambda *args: chosen.append(args))
    with qtbot.waitSignal(window.generationFinished, timeout=WAIT):
        QTest.keyClick(popup.list, Qt.Key_Return)
    assert chosen == [(index, chosen_text, chosen_token)]          # the row the keys chose
    assert not popup.isVisible() and view.toPlainText().startswith(prefix + chosen_text)
    assert view.toPlainText() != text                          # regenerated from the chosen token


def test_invalid_model_shows_the_error_and_keeps_the_old_one(qtbot, window, model_path, tmp_path):
    bad = tmp_path / "broken.bin"
    bad.write_bytes(model_path.read_bytes()[:300])
    with qtbot.waitSignal(window.errorShown, timeout=WAIT) as blocker:
        window.open_model(bad)
    assert str(bad) in blocker.args[0]
    assert window.dialogs.error_box is not None and window.dialogs.error_box.isVisible()
    assert str(bad) in window.dialogs.error_box.text()
    window.dialogs.error_box.close()
    assert window.models.info["path"] == str(model_path)
    assert generate(qtbot, window, PROMPT, max_tokens=5, seed=7).gen_tokens == 5


def test_save_and_open_round_trip(qtbot, window, tmp_path):
    find(window, QPlainTextEdit, "memoryEdit").setPlainText("The hero is brave.")
    find(window, QPlainTextEdit, "authorsNoteEdit").setPlainText("Cheerful.")
    generate(qtbot, window, PROMPT, max_tokens=10, seed=3)
    path = tmp_path / "story.neoxstory.json"
    with written(qtbot, window, path):
        window.save_to(path)
    saved = window.document.story.to_json()
    assert not window.document.dirty and not window.windowTitle().startswith("*")
    window.new_story()
    assert window.story_view.toPlainText() == ""
    with qtbot.waitSignal(window.storyOpened, timeout=WAIT):
        window.open_story(path)
    assert window.document.story.to_json() == saved
    assert window.story_view.toPlainText() == saved["text"]
    assert find(window, QPlainTextEdit, "memoryEdit").toPlainText() == "The hero is brave."
    assert window.sampling.values()["seed"] == 3


def test_dry_xtc_dynatemp_smoothing_and_phrase_bans_on_the_panel(qtbot, window, tmp_path):
    """The newer samplers reach the engine from the panel, a banned phrase never reaches the
    story view, and the story file keeps them all."""
    first = generate(qtbot, window, PROMPT, max_tokens=16, seed=5)
    written_text = window.story_view.toPlainText()[len(PROMPT):]
    phrase = written_text[3:9]
    assert len(phrase) == 6 and first.gen_tokens == 16
    for name, steps in (("dryMultiplierSlider", 80), ("xtcThresholdSlider", 10), ("xtcProbabilitySlider", 50),
                        ("dynatempRangeSlider", 30), ("smoothingFactorSlider", 25)):
        find(window, QSlider, name).setValue(steps)
    find(window, QPlainTextEdit, "bannedPhrasesEdit").setPlainText(phrase.replace("\n", "\\n"))
    settings = window.sampling.sampler_settings()
    assert (settings.dry_multiplier, settings.xtc_threshold, settings.xtc_probability) == (0.8, 0.1, 0.5)
    assert (settings.dynatemp_range, settings.smoothing_factor) == (0.3, 0.25)
    assert settings.banned_phrases == (phrase,) and "\n" in settings.dry_sequence_breakers
    generate(qtbot, window, PROMPT, max_tokens=16, seed=5)
    assert phrase.lower() not in window.story_view.toPlainText()[len(PROMPT):].lower()
    path = tmp_path / "samplers.neoxstory.json"
    with written(qtbot, window, path):
        window.save_to(path)
    window.new_story()
    find(window, QComboBox, "presetPicker").setCurrentText("Creative (DRY + XTC)")   # changes DRY, keeps bans
    assert window.sampling.sampler_settings().banned_phrases == (phrase,)
    find(window, QPlainTextEdit, "bannedPhrasesEdit").setPlainText("")
    with qtbot.waitSignal(window.storyOpened, timeout=WAIT):
        window.open_story(path)
    reopened = window.sampling.sampler_settings()
    assert (reopened.dry_multiplier, reopened.xtc_probability, reopened.smoothing_factor) == (0.8, 0.5, 0.25)
    assert reopened.banned_phrases == (phrase,)


@pytest.mark.parametrize("content, needle", [
    (b'{"format": "neox-writer-story", "version": 99, "text": "x"}', "newer"),
    (b'{"format": "neox-writer-story", "vers', "not valid JSON"),
])
def test_bad_story_file_leaves_the_open_story_alone(qtbot, window, tmp_path, content, needle):
    window.story_view.setPlainText("my precious story")
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with qtbot.waitSignal(window.errorShown, timeout=WAIT) as blocker:
        window.open_story(path)
    assert needle in blocker.args[0] and str(path) in blocker.args[0]
    assert window.story_view.toPlainText() == "my precious story"


def test_kobold_lite_import_and_export(qtbot, window, tmp_path):
    lite = {"gamestarted": True, "prompt": "The cave was dark.", "memory": "You are a knight.",
            "authorsnote": "", "actions": [" A dragon woke.", " It roared."],
            "worldinfo": [{"key": "dragon", "content": "Dragons hate knights.", "constant": False}]}
    src = tmp_path / "lite.json"
    src.write_text(json.dumps(lite), encoding="utf-8")
    with qtbot.waitSignal(window.storyOpened, timeout=WAIT):
        window.open_story(src, imported=True)
    assert window.story_view.toPlainText() == "The cave was dark. A dragon woke. It roared."
    assert window.document.path is None and window.document.dirty           # an import is a new, unsaved story
    assert window.memory.world_info()[0].keys == ["dragon"]
    out = tmp_path / "export.json"
    with written(qtbot, window, out):
        window.document.export_to(out, "kobold")
    exported = json.loads(out.read_text(encoding="utf-8"))
    assert exported["prompt"] == "The cave was dark."
    assert exported["actions"] == [" A dragon woke.", " It roared."]
    assert exported["memory"] == "You are a knight." and exported["worldinfo"][0]["content"] == "Dragons hate knights."
    for kind, name in (("text", "s.txt"), ("markdown", "s.md")):
        with written(qtbot, window, tmp_path / name):
            window.document.export_to(tmp_path / name, kind)
    assert (tmp_path / "s.txt").read_text(encoding="utf-8") == window.story_view.toPlainText()
    assert (tmp_path / "s.md").read_text(encoding="utf-8").startswith("# ")


def test_autosave_recovery_after_a_crash(qtbot, home, model_path):
    crashed = make_window(qtbot, check_recovery=False)
    crashed.story_view.setPlainText("Words that were never saved.")
    find(crashed, QPlainTextEdit, "memoryEdit").setPlainText("Remember me.")
    with written(qtbot, crashed, autosave_path()):
        crashed.document.autosave_now()
    assert autosave_path().is_file() and str(autosave_path()).startswith(str(home))
    # the crash: no closeEvent, no clean-up of the autosave
    crashed.llm.shutdown()
    crashed.hide()

    again = make_window(qtbot)
    qtbot.waitUntil(lambda: again.document.recovery is not None, timeout=WAIT)
    question = again.findChild(QMessageBox, "questionBox")
    assert question is not None and question.isVisible()
    question.button(QMessageBox.Yes).click()
    assert again.story_view.toPlainText() == "Words that were never saved."
    assert find(again, QPlainTextEdit, "memoryEdit").toPlainText() == "Remember me."
    assert again.document.dirty
    again.document.dirty = False                   # a clean exit without changes removes the autosave
    again.close()
    assert not autosave_path().exists()


def test_event_loop_never_stalls_while_generating(qtbot, window):
    # The gaps less the time the OS kept the GUI thread waiting for a processor (another
    # process's doing on a loaded CI machine; zero on a quiet one): tests/event_loop_gaps.py.
    with EventLoopGaps(5) as loop:
        generate(qtbot, window, PROMPT, max_tokens=100, seed=7)
        # a fast machine writes the tiny model's 100 tokens in a few tens of milliseconds, too short
        # for a handful of ticks; the timer runs on for 100 ms after the finish so that the count
        # below proves the timer was alive from the start of the generation to past its end
        qtbot.wait(100)
    assert len(loop.gaps) >= 5
    assert loop.longest < 0.050, (f"the GUI thread stalled for {loop.longest * 1000:.0f} ms "
                                  f"({loop.longest_wall * 1000:.0f} ms by the wall clock)")


def test_chat_mode_uses_the_template(qtbot, window):
    requests = []
    window.llm.generateRequested.connect(requests.append)
    switch = find(window, QComboBox, "modeSwitch")
    switch.setCurrentIndex(switch.findData("chat"))
    window.chat_view.set_template("dolly")
    find(window, QPlainTextEdit, "chatInput").setPlainText("Name a colour.")
    with qtbot.waitSignal(window.generationFinished, timeout=WAIT):
        find(window, QWidget, "generateButton").click()
    request = requests[-1]
    assert request.text.endswith("### Instruction:\nName a colour.\n\n### Response:\n")
    assert "### End" in request.stop and "### Instruction:" in request.stop
    turns = window.chat_view.turns
    assert [t.role for t in turns] == ["user", "bot"] and turns[0].text == "Name a colour."
    assert "### End" not in turns[1].text and turns[1].text == turns[1].text.strip()
    assert window.document.story.chat_turns[-1].text == turns[1].text
    with qtbot.waitSignal(window.generationFinished, timeout=WAIT):
        window.chat_view.regenerate_button.click()
    assert [t.role for t in window.chat_view.turns] == ["user", "bot"]
    first = window.chat_view.transcript.topLevelItem(0)       # editing a turn (what a double-click opens)
    assert first.text(0) == window.chat_view.user_name
    first.setText(1, "Name a fruit.")
    assert window.document.story.chat_turns[0].text == "Name a fruit." and window.document.dirty
    with qtbot.waitSignal(window.generationFinished, timeout=WAIT):
        window.chat_view.regenerate_button.click()
    assert "### Instruction:\nName a fruit." in requests[-1].text


def test_context_view_shows_memory_note_and_world_info(qtbot, window):
    window.story_view.setPlainText("The dragon slept in the cave. " * 5)
    find(window, QSpinBox, "maxTokensSpin").setValue(20)     # the fixture model has a 128-token context
    find(window, QPlainTextEdit, "memoryEdit").setPlainText("A tale of fire.")
    find(window, QPlainTextEdit, "authorsNoteEdit").setPlainText("Tense.")
    window.memory._add_row(__import__("app.story", fromlist=["WorldInfoEntry"]).WorldInfoEntry(
        ["dragon"], "Dragons hoard gold."))
    # (a preview asked for when the model loaded may still be on its way: wait for ours)
    with qtbot.waitSignal(window.contextShown, timeout=WAIT,
                          check_params_cb=lambda c: any(p.kind == "memory" for p in c.parts)) as blocker:
        window.refresh_context()
    context = blocker.args[0]
    kinds = [p.kind for p in context.parts]
    assert kinds[:2] == ["memory", "world info"] and "author's note" in kinds
    assert "Dragons hoard gold." in window.context_view.text.toPlainText()
    assert f"/ {context.budget}" in window.context_view.summary.text()


def test_settings_persist_between_runs(qtbot, home, model_path):
    first = make_window(qtbot, check_recovery=False)
    with qtbot.waitSignal(first.modelLoaded, timeout=WAIT):
        first.open_model(model_path)
    find(first, QSlider, "topKSlider").setValue(17)
    first.appearance.set_font_size(15)
    first.close()
    second = make_window(qtbot, check_recovery=False)
    assert find(second, QSlider, "topKSlider").value() == 17
    assert second.settings.get("last_model") == str(model_path) and second.settings.get("font_size") == 15
    assert (home / "config" / "settings.json").is_file()
    second.close()


def test_dark_theme_applies_and_persists(qtbot, home):
    from PySide6.QtGui import QPalette
    from PySide6.QtWidgets import QApplication
    w = make_window(qtbot, check_recovery=False)

    def window_lightness():
        return QApplication.palette().color(QPalette.Window).lightness()
    next(a for a in w.commands.theme_group.actions() if a.data() == "dark").trigger()
    assert window_lightness() < 100 and w.settings.get("theme") == "dark"
    next(a for a in w.commands.theme_group.actions() if a.data() == "system").trigger()
    assert window_lightness() > 150 and w.settings.get("theme") == "system"
    w.close()


def test_unsaved_changes_are_never_discarded_without_asking(qtbot, home, monkeypatch):
    w = make_window(qtbot, check_recovery=False)
    w.story_view.setPlainText("a draft")
    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        staticmethod(lambda *a, **k: asked.append(a[2]) or QMessageBox.Cancel))
    w.close()
    assert asked and w.isVisible() and w.story_view.toPlainText() == "a draft"
    w.new_story()
    assert len(asked) == 2 and w.story_view.toPlainText() == "a draft"
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.Discard))
    w.close()
    assert not w.isVisible() and not autosave_path().exists()


def test_a_model_larger_than_free_memory_asks_first(qtbot, window, model_path, monkeypatch):
    monkeypatch.setattr("app.modelloader.free_ram_bytes", lambda: 1000)
    window.open_model(model_path)
    question = window.findChild(QMessageBox, "questionBox")
    assert question is not None and "memory" in question.text()
    question.button(QMessageBox.No).click()
    assert not window.llm.loading and window.models.info["path"] == str(model_path)


def test_model_picker_lists_installed_then_catalog(qtbot, home):
    from app.bundled import demo_model
    from app.widgets.modelpicker import ModelPicker
    picker = ModelPicker()
    qtbot.addWidget(picker)
    with qtbot.waitSignal(picker.statusesReady, timeout=WAIT):
        picker.refresh()
    sections = [picker.tree.topLevelItem(i) for i in range(picker.tree.topLevelItemCount())]
    assert [s.text(0) for s in sections] == ["Installed", "Download"]
    assert sections[1].childCount() > 0                      # the shipped catalog, with sizes
    assert all(sections[1].child(i).text(0) for i in range(sections[1].childCount()))   # the models' groups
    assert all(group.child(i).text(SIZE) for group in (sections[1].child(j) for j in range(sections[1].childCount()))
               for i in range(group.childCount()))
    if demo_model() is not None:
        demo = sections[0].child(0)
        assert demo.text(ACTION) == "Load"
        with qtbot.waitSignal(picker.modelChosen) as blocker:
            picker.tree.itemClicked.emit(demo, ACTION)
        assert blocker.args[0] == str(demo_model())
    assert sections[1].child(0).child(0).text(ACTION) == "Download"
    assert str(home) in str(picker.manager().models_dir)   # NEOX_WRITER_HOME moved it


def test_presets_and_user_presets(qtbot, window):
    picker = find(window, QComboBox, "presetPicker")
    picker.setCurrentText("Deterministic")
    assert window.sampling.sampler_settings().temperature == 0
    find(window, QSlider, "topKSlider").setValue(23)
    window.sampling.save_preset("mine")
    assert window.settings.get("user_presets")["mine"]["top_k"] == 23
    picker.setCurrentText("KoboldCpp default")
    assert window.sampling.sampler_settings().top_k == 100
    picker.setCurrentText("mine")
    assert window.sampling.sampler_settings().top_k == 23
    assert find(window, QSpinBox, "contextSizeSpin").maximum() == window.models.info["n_ctx"]


def test_model_picker_downloads_with_progress_and_cancel(qtbot, home, tmp_path):
    from http_fixture_server import Fault, HubFixture
    from modelgen import write_random_model

    from app.models.manager import ModelManager
    from app.widgets.modelpicker import ModelPicker
    from test_models_manager import GGML_REPO, TOKENIZER, write_catalog

    model = tmp_path / "tiny.bin"
    write_random_model(model, ftype="f32")
    with HubFixture() as hub:
        hub.add_file(GGML_REPO, "main", "tiny.bin", model.read_bytes())
        hub.add_file(GGML_REPO, "main", "notok.bin", model.read_bytes())
        hub.add_file("test/tok-70m", "main", "tokenizer.json", TOKENIZER, lfs=False)
        catalog = write_catalog(tmp_path / "catalog.json")
        manager = ModelManager(None, hub.endpoint, catalog_path=catalog, stall_timeout=5.0, retries=0, backoff=0.01)
        picker = ModelPicker(manager_factory=lambda: manager)
        qtbot.addWidget(picker)
        with qtbot.waitSignal(picker.statusesReady, timeout=WAIT):
            picker.refresh()

        def row(model_id):
            item = picker.item_for(model_id)
            section = item.parent() if item.parent().parent() is None else item.parent().parent()
            return item, section.text(0)
        item, section = row("tiny")
        assert section == "Download" and item.text(ACTION) == "Download"
        progress = []
        picker.downloadProgress.connect(lambda *a: progress.append(a))
        with qtbot.waitSignal(picker.downloadFinished, timeout=WAIT) as done:
            picker.tree.itemClicked.emit(item, ACTION)
            assert item.text(ACTION) == "Cancel"
        assert done.args == ["tiny", ""] and progress
        qtbot.waitUntil(lambda: row("tiny")[1] == "Installed", timeout=WAIT)
        assert row("tiny")[0].text(ACTION) == "Load"

        hub.inject(Fault("stall", after=1000, seconds=30))
        item, _ = row("no-tokenizer")
        with qtbot.waitSignal(picker.downloadFinished, timeout=WAIT) as done:
            picker.tree.itemClicked.emit(item, ACTION)
            qtbot.waitUntil(lambda: bool(progress) and progress[-1][0] == "no-tokenizer", timeout=WAIT)
            picker.tree.itemClicked.emit(item, ACTION)       # Cancel
        assert done.args[0] == "no-tokenizer" and done.args[1]
        qtbot.waitUntil(lambda: row("no-tokenizer")[0].text(ACTION) == "Download", timeout=WAIT)


def test_a_bad_setting_is_reported_and_the_story_stays_editable(qtbot, window):
    window.story_view.setPlainText(PROMPT)
    find(window, QSpinBox, "maxTokensSpin").setValue(500)          # more than the 128-token context:
    assert find(window, QSpinBox, "maxTokensSpin").value() < window.sampling.context_spin.value()   # refused
    window.memory.memory_edit.setPlainText("the sea " * 200)      # a memory larger than the context
    with qtbot.waitSignal(window.errorShown, timeout=WAIT) as blocker:
        window.generation.generate()
    assert "memory" in blocker.args[0]
    assert not window.generation.busy() and not window.story_view.isReadOnly()
    assert window.story_view.toPlainText() == PROMPT and window.commands.generate.isEnabled()


def test_loading_says_when_it_prepares_the_engine(qtbot, home, model_path):
    w = make_window(qtbot, check_recovery=False)
    stages = []
    w.llm.worker.loadStage.connect(stages.append)
    with qtbot.waitSignal(w.modelLoaded, timeout=WAIT):
        w.open_model(model_path)
    assert any(s.startswith("Preparing the engine") for s in stages)
    assert not w.status.model_label.text().startswith("Preparing")     # replaced once the model is ready
    w.close()
