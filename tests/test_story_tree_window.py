"""The story tree in the window (pytest-qt, offscreen, the converted fixture model): N
alternatives, moving between siblings from the keyboard, the tree panel, one undo history,
files that keep the tree, KV-cache reuse across branches, chat swipes, and the bugs of issue 14."""
from __future__ import annotations

import math
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QAction, QTextCursor  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QComboBox, QFileDialog, QMessageBox, QPlainTextEdit, QSpinBox, QTreeView  # noqa: E402

from test_app_window import PROMPT, WAIT, find, generate, home, model_path, window, written  # noqa: E402,F401


def alternatives(window, n: int) -> None:
    find(window, QSpinBox, "alternativesSpin").setValue(n)


def siblings_of_current(window) -> list[int]:
    tree = window.document.story.tree
    return list(tree.siblings(tree.current))


def test_four_alternatives_are_four_siblings_and_alt_right_shows_the_next(qtbot, window):
    alternatives(window, 4)
    assert find(window, QSpinBox, "alternativesToolbarSpin").value() == 4
    generate(qtbot, window, PROMPT, max_tokens=8, seed=11)
    tree = window.document.story.tree
    sibs = siblings_of_current(window)
    assert len(sibs) == 4 and [tree[s].seed for s in sibs] == [11, 12, 13, 14]
    model = find(window, QTreeView, "storyTree").model()
    assert model.rowCount(model.index(0, 0)) == 4                # the panel holds the four siblings
    view = window.story_view
    assert view.toPlainText() == PROMPT + tree[sibs[0]].text     # the first streamed into the view
    view.setFocus()
    QTest.keyClick(view, Qt.Key_Right, Qt.AltModifier)
    assert view.toPlainText() == PROMPT + tree[sibs[1]].text
    assert view.sibling_label.isVisible() and "2/4" in view.sibling_label.text()
    QTest.keyClick(view, Qt.Key_Left, Qt.AltModifier)
    QTest.keyClick(view, Qt.Key_Left, Qt.AltModifier)
    assert view.toPlainText() == PROMPT + tree[sibs[3]].text     # wraps round
    QTest.keyClick(view, Qt.Key_Up, Qt.AltModifier)
    assert view.toPlainText() == PROMPT
    QTest.keyClick(view, Qt.Key_Down, Qt.AltModifier)
    assert view.toPlainText() == PROMPT + tree[sibs[3]].text
    assert "4/4" in window.status.currentMessage()


def test_retry_and_a_chosen_token_add_branches(qtbot, window):
    generate(qtbot, window, PROMPT, max_tokens=10, seed=5)
    with qtbot.waitSignal(window.generationFinished, timeout=WAIT):
        find(window, QAction, "retryAction").trigger()
    assert len(siblings_of_current(window)) == 2
    view = window.story_view
    span = view.tokens[2]
    alternative = next(a for a in span.piece.alternatives if a[1] != span.piece.token)
    with qtbot.waitSignal(window.generationFinished, timeout=WAIT):
        window.on_token_popup_alternative_chosen(2, alternative[0], alternative[1])
    tree = window.document.story.tree
    branch = tree.path()[2]                     # root, the two tokens kept, the new branch
    assert branch.tokens[0].text == alternative[0] and tree.sibling_position(branch.id) == (2, 2)
    assert len(tree.path()[1].tokens) == 2 and len(branch.tokens) > 1   # the generation wrote on in it


def test_undo_and_redo_cross_typing_generation_and_deleting_a_branch(qtbot, window):
    generate(qtbot, window, PROMPT, max_tokens=6, seed=3)
    generated = window.story_view.toPlainText()
    view = window.story_view
    view.setFocus()
    view.moveCursor(QTextCursor.End)
    QTest.keyClicks(view, " And")
    panel = window.branching.panel
    tree = window.document.story.tree
    panel.view.setCurrentIndex(panel.model.index_of(tree.path()[1].id))     # the generated passage
    panel.delete_button.click()
    assert view.toPlainText() == PROMPT and len(tree) == 1
    for expected in (generated + " And", generated, PROMPT):
        QTest.keyClick(view, Qt.Key_Z, Qt.ControlModifier)
        assert view.toPlainText() == expected
    for expected in (generated, generated + " And", PROMPT):
        QTest.keyClick(view, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
        assert view.toPlainText() == expected


def test_save_and_reopen_keep_the_tree_and_the_probabilities(qtbot, window, tmp_path):
    alternatives(window, 2)
    generate(qtbot, window, PROMPT, max_tokens=6, seed=21)
    find(window, QAction, "probabilityAction").setChecked(True)
    assert window.story_view.probabilities
    path = tmp_path / "tree.neoxstory.json"
    with written(qtbot, window, path):
        window.save_to(path)
    saved = window.document.story.to_json()
    window.new_story()
    assert not find(window, QAction, "probabilityAction").isChecked()
    with qtbot.waitSignal(window.storyOpened, timeout=WAIT):
        window.open_story(path)
    story = window.document.story
    assert story.to_json() == saved and len(siblings_of_current(window)) == 2
    assert find(window, QAction, "probabilityAction").isChecked() and window.story_view.probabilities
    tokens = story.tree[story.tree.current].tokens
    assert tokens and all(0 < t.probability <= 1 and not math.isnan(t.probability) for t in tokens)
    assert [s.piece.probability for s in window.story_view.tokens] == [t.probability for t in tokens]
    outline = tmp_path / "tree.md"
    with written(qtbot, window, outline):
        window.document.export_to(outline, "outline")
    text = outline.read_text(encoding="utf-8")
    assert all(story.tree[p].text.strip().split()[0] in text for p in siblings_of_current(window))


def test_generating_on_another_branch_reuses_the_common_prefix(qtbot, window):
    generate(qtbot, window, PROMPT, max_tokens=12, seed=8)
    with qtbot.waitSignal(window.generationFinished, timeout=WAIT):
        find(window, QAction, "retryAction").trigger()          # the engine now holds the second branch
    window.story_view.setFocus()
    QTest.keyClick(window.story_view, Qt.Key_Left, Qt.AltModifier)   # back to the first
    first = window.document.story.tree.text()
    n_prompt = len(window.llm.worker.tokenizer.encode(PROMPT))
    with qtbot.waitSignal(window.generationFinished, timeout=WAIT) as blocker:
        find(window, QAction, "generateAction").trigger()
    done = blocker.args[0].done
    assert n_prompt - 1 <= done.prompt_tokens_reused < done.prompt_tokens   # only the branch's own tokens ran
    assert done.prompt_tokens == len(window.llm.worker.tokenizer.encode(first))
    assert f"({done.prompt_tokens_reused} reused)" in window.status.currentMessage()


def test_a_regenerated_chat_reply_is_a_sibling_to_swipe_to(qtbot, window):
    switch = find(window, QComboBox, "modeSwitch")
    switch.setCurrentIndex(switch.findData("chat"))
    find(window, QPlainTextEdit, "chatInput").setPlainText("Hello there.")
    with qtbot.waitSignal(window.generationFinished, timeout=WAIT):
        find(window, QAction, "generateAction").trigger()
    first = window.chat_view.turns[-1].text
    find(window, QSpinBox, "seedSpin").setValue(77)
    with qtbot.waitSignal(window.generationFinished, timeout=WAIT):
        window.chat_view.regenerate_button.click()
    chat = window.chat_view
    assert chat.transcript.topLevelItem(1).text(0).endswith("2/2")
    chat.activateWindow()
    chat.input.setFocus()
    QTest.keyClick(chat.input, Qt.Key_Left, Qt.AltModifier)
    assert chat.turns[-1].text == first and chat.transcript.topLevelItem(1).text(0).endswith("1/2")


# --- the bugs of issue 14 ---------------------------------------------------------------------

def test_a_failed_open_after_discard_keeps_the_unsaved_story(qtbot, window, tmp_path, monkeypatch):
    window.story_view.setPlainText("unsaved words")
    assert window.windowTitle().startswith("*")
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_bytes(b'{"format": "neox-writer-story", "vers')
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(corrupt), "")))
    with qtbot.waitSignal(window.errorShown, timeout=WAIT):
        find(window, QAction, "openAction").trigger()          # "Discard" is answered, then the read fails
    assert window.windowTitle().startswith("*") and window.document.dirty
    asked = []
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: asked.append(a[2]) or QMessageBox.Cancel))
    window.new_story()
    assert asked and window.story_view.toPlainText() == "unsaved words"
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.Discard))  # let it close


def test_retry_needs_a_generation_and_undo_back_to_the_saved_text_clears_the_star(qtbot, window, tmp_path):
    retry = find(window, QAction, "retryAction")
    assert not retry.isEnabled()                               # an empty story has nothing to retry
    window.story_view.setPlainText(PROMPT)
    assert not retry.isEnabled()
    generate(qtbot, window, None, max_tokens=5, seed=2)
    assert retry.isEnabled()
    path = tmp_path / "saved.neoxstory.json"
    with written(qtbot, window, path):
        window.save_to(path)
    view = window.story_view
    view.setFocus()
    view.moveCursor(QTextCursor.End)
    QTest.keyClicks(view, " More.")
    assert window.windowTitle().startswith("*")
    QTest.keyClick(view, Qt.Key_Z, Qt.ControlModifier)
    assert not window.windowTitle().startswith("*") and not window.document.dirty
