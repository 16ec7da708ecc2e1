"""Branches: the writer's moves through the story tree, each an undo step, each announced."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from app.branches import Branches  # noqa: E402
from app.story import ChatTurn, Story  # noqa: E402
from storymaker import with_siblings  # noqa: E402


def story_with_siblings() -> Story:
    return with_siblings("It was", (" dark.", " late.", " over.", " raining."))


def test_moves_are_undo_steps_and_say_where_they_went(qtbot):
    s = story_with_siblings()
    branches = Branches(lambda: s)
    with qtbot.waitSignal(branches.changed) as moved:
        assert branches.move_sibling(s.tree.current, +1)
    assert s.text == "It was late." and moved.args == ["Alternative 2/4"]
    assert branches.move_sibling(s.tree.current, -1) and branches.move_sibling(s.tree.current, -1)
    assert s.text == "It was raining."                      # wraps round
    assert branches.move_parent() and s.text == "It was" and branches.move_child() and s.text == "It was raining."
    assert not branches.move_child() and not branches.go_to(s.tree.current)
    assert branches.undo() and s.text == "It was"
    assert branches.undo() and branches.undo() and s.text == "It was dark."
    assert branches.undo() and s.text == "It was late."
    assert branches.redo() and s.text == "It was dark."


def test_delete_and_bookmark_are_undoable(qtbot):
    s = story_with_siblings()
    branches = Branches(lambda: s)
    doomed = s.tree.current
    with qtbot.waitSignal(branches.changed) as deleted:
        assert branches.delete(doomed)
    assert "Deleted 1 passage" in deleted.args[0] and doomed not in s.tree and s.text == "It was late."
    assert not branches.delete(0) and not branches.delete(999)
    assert branches.set_bookmark(0, True) and s.tree.bookmarks() == [0]
    assert not branches.set_bookmark(0, True)
    assert branches.undo() and s.tree.bookmarks() == []
    assert branches.undo() and doomed in s.tree and s.text == "It was dark."


def test_chat_swipes_move_between_regenerated_replies(qtbot):
    s = Story()
    s.chat_turns = [ChatTurn("user", "Hi"), ChatTurn("bot", "Hello!")]
    s.chat_turns = [ChatTurn("user", "Hi"), ChatTurn("bot", "Hey.")]
    s.checkpoint("generation")
    branches = Branches(lambda: s)
    with qtbot.waitSignal(branches.changed) as swiped:
        assert branches.swipe_turn(1, -1)
    assert s.chat_turns[-1].text == "Hello!" and swiped.args == ["Reply 1/2"]
    assert not branches.swipe_turn(0, 1) and not branches.swipe_turn(5, 1)
    assert branches.undo() and s.chat_turns[-1].text == "Hey."


def test_the_chat_view_shows_alternatives_and_asks_for_swipes(qtbot):
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    from app.widgets.chatview import ChatView
    s = Story()
    s.chat_turns = [ChatTurn("user", "Hi"), ChatTurn("bot", "Hello!")]
    s.chat_turns = [ChatTurn("user", "Hi"), ChatTurn("bot", "Hey.")]
    view = ChatView()
    qtbot.addWidget(view)
    view.show()
    view.activateWindow()
    qtbot.waitUntil(view.isActiveWindow)
    view.set_turns(s.chat_turns, s.chat_positions())
    assert [view.transcript.topLevelItem(i).text(0) for i in range(2)] == ["You", "Bot 2/2"]
    view.set_names("Ann", "Max")                   # renaming keeps the count
    assert view.transcript.topLevelItem(1).text(0) == "Max 2/2"
    view.load_from(s)
    assert view.transcript.topLevelItem(1).text(0) == "Bot 2/2"
    view.input.setFocus()
    with qtbot.waitSignal(view.swipeRequested) as swipe:
        QTest.keyClick(view.input, Qt.Key_Left, Qt.AltModifier)
    assert swipe.args == [1, -1]
