"""Chat mode's keys and turns (pytest-qt, offscreen): Ctrl+Enter sends from the input although
Generate shares the keys, a long reply is shown whole and edited in a multi-line editor."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QMessageBox, QPlainTextEdit  # noqa: E402

from app.story import ChatTurn  # noqa: E402
from app.widgets.chatview import TEXT, ChatView  # noqa: E402

LONG_REPLY = "\n".join(f"Line {i} of a long reply that goes on and on about the sea." for i in range(30))


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    from app.window.mainwindow import MainWindow
    monkeypatch.setenv("NEOX_WRITER_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.Discard))
    w = MainWindow(backend="reference", check_recovery=False)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.close()


def test_ctrl_enter_in_the_chat_input_sends_once(qtbot, window):
    window.commands.set_mode("chat")
    window.commands.generate.setEnabled(True)        # as with a model loaded: Generate claims Ctrl+Enter too
    generated, sent = [], []
    window.commands.generate.triggered.connect(lambda *a: generated.append(1))
    window.chat_view.sendRequested.disconnect()      # no model: only count what is asked
    window.chat_view.sendRequested.connect(sent.append)
    chat_input = window.chat_view.input
    chat_input.setFocus()
    qtbot.waitUntil(chat_input.hasFocus)
    for key in (Qt.Key_Return, Qt.Key_Enter):
        chat_input.setPlainText("Hello there")
        QTest.keyClick(chat_input, key, Qt.ControlModifier | (Qt.KeypadModifier if key == Qt.Key_Enter else
                                                               Qt.NoModifier))
    assert sent == ["Hello there", "Hello there"] and generated == []
    assert chat_input.toPlainText() == ""
    QTest.keyClick(chat_input, Qt.Key_Tab)           # Tab leaves the input rather than typing a tab
    assert not chat_input.hasFocus() and "\t" not in chat_input.toPlainText()


def test_a_long_reply_is_shown_whole_and_edited_over_many_lines(qtbot):
    view = ChatView()
    qtbot.addWidget(view)
    view.resize(700, 500)
    view.show()
    view.set_turns([ChatTurn("user", "Tell me about the sea"), ChatTurn("bot", LONG_REPLY)])
    qtbot.waitExposed(view)
    item = view.transcript.topLevelItem(1)
    height = view.transcript.visualItemRect(item).height()
    assert height >= 30 * view.fontMetrics().lineSpacing()       # all 30 lines, not 3 and "…"
    edited = []
    view.turnEdited.connect(lambda row, text: edited.append((row, text)))
    view.transcript.editItem(item, TEXT)
    editor = view.transcript.findChild(QPlainTextEdit, "turnEditor")
    assert editor is not None and editor.toPlainText() == LONG_REPLY
    editor.moveCursor(editor.textCursor().MoveOperation.End)
    QTest.keyClick(editor, Qt.Key_Return)                        # Enter: a new line, still editing
    QTest.keyClicks(editor, "The end.")
    assert not edited
    QTest.keyClick(editor, Qt.Key_Return, Qt.ControlModifier)    # Ctrl+Enter keeps the edit
    assert edited == [(1, LONG_REPLY + "\nThe end.")]


def test_a_turn_is_edited_from_the_keyboard(qtbot):
    view = ChatView()
    qtbot.addWidget(view)
    view.show()
    view.set_turns([ChatTurn("user", "Hello"), ChatTurn("bot", "Hi there")])
    view.transcript.setFocus()
    view.transcript.setCurrentItem(view.transcript.topLevelItem(1))
    QTest.keyClick(view.transcript, Qt.Key_F2)
    editor = view.transcript.findChild(QPlainTextEdit, "turnEditor")
    assert editor is not None and editor.toPlainText() == "Hi there"
