"""The tree panel and its item model: every passage under its parent, the current path marked,
clicks and deletions emitted as intents, the model kept in step as the tree changes."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QModelIndex, Qt  # noqa: E402
from PySide6.QtTest import QAbstractItemModelTester  # noqa: E402

from app.widgets.storytree import ON_PATH_ROLE, PASSAGE_ID_ROLE, StoryTreeModel, StoryTreePanel  # noqa: E402
from app.story import Story  # noqa: E402
from storymaker import with_siblings  # noqa: E402


def four_siblings() -> Story:
    s = with_siblings("The door opened and", (" a cat came in.", " the wind howled.", " nobody was there.",
                                              " she smiled."), current=1)
    s.add_generation(" Then silence.")
    return s


def test_the_model_holds_every_passage_under_its_parent(qtbot):
    s = four_siblings()
    model = StoryTreeModel(s.tree)
    QAbstractItemModelTester(model, QAbstractItemModelTester.FailureReportingMode.Fatal)
    assert model.rowCount() == 1
    root = model.index(0, 0)
    assert root.data() == "The door opened and" and model.rowCount(root) == 4
    second = model.index(1, 0, root)
    assert second.data() == "the wind howled." and model.rowCount(second) == 1
    assert model.parent(model.index(0, 0, second)) == second
    assert [model.index(r, 0, root).data(ON_PATH_ROLE) for r in range(4)] == [False, True, False, False]
    assert model.index(1, 0, root).data(Qt.FontRole).bold()
    assert "alternative 2/4" in second.data(Qt.ToolTipRole)


def test_the_model_follows_changes_of_text_and_shape(qtbot):
    s = four_siblings()
    model = StoryTreeModel(s.tree)
    QAbstractItemModelTester(model, QAbstractItemModelTester.FailureReportingMode.Fatal)
    changed = []
    model.dataChanged.connect(lambda a, b: changed.append(a.data(PASSAGE_ID_ROLE)))
    s.tree.update(s.tree.current, text=" Then a long silence.")   # no change of shape: only a repaint
    assert not model.refresh() and changed == [s.tree.current]
    left = s.tree.current
    s.tree.move_parent()
    changed.clear()
    assert not model.refresh() and changed == [left]            # it left the current path
    with qtbot.waitSignal(model.modelReset):
        s.tree.delete(s.tree.root.children[0])
        assert model.refresh()
    assert model.rowCount(model.index(0, 0)) == 3
    s.tree.set_bookmark(0)
    model.refresh()
    assert model.index(0, 0).data().startswith("★ ")


def test_a_passage_streaming_past_its_first_words_is_not_repainted(qtbot):
    # each repaint asks the Python model for every role of the row, a wait for the GIL each
    # while the engine thread runs: only a row that reads differently is repainted
    s = four_siblings()
    model = StoryTreeModel(s.tree)
    changed = []
    model.dataChanged.connect(lambda a, b: changed.append(a.data(PASSAGE_ID_ROLE)))
    current = s.tree.current
    s.tree.update(current, text=" Then a long silence fell over the house.")    # more than six words
    model.refresh()
    assert changed == [current]
    label = model.index_of(current).data()
    for more in (" It lasted.", " It lasted all night."):                     # the first six words stay
        s.tree.update(current, text=s.tree.nodes[current].text + more)
        assert not model.refresh()
    assert changed == [current] and model.index_of(current).data() == label
    assert "It lasted all night." in model.index_of(current).data(Qt.ToolTipRole)   # asked for on hover
    s.tree.set_bookmark(current)
    model.refresh()
    assert changed == [current, current] and model.index_of(current).data().startswith("★ ")


def test_the_panel_emits_intents_and_marks_the_current_passage(qtbot):
    s = four_siblings()
    panel = StoryTreePanel()
    qtbot.addWidget(panel)
    panel.resize(300, 400)
    panel.show()
    panel.set_tree(s.tree)
    view = panel.view
    assert view.objectName() == "storyTree"
    assert view.currentIndex().data(PASSAGE_ID_ROLE) == s.tree.current
    target = panel.model.index(2, 0, panel.model.index(0, 0))
    with qtbot.waitSignal(panel.passageActivated) as clicked:
        qtbot.mouseClick(view.viewport(), Qt.LeftButton, pos=view.visualRect(target).center())
    assert clicked.args == [target.data(PASSAGE_ID_ROLE)]
    with qtbot.waitSignal(panel.deleteRequested) as deleted:
        panel.delete_button.click()
    assert deleted.args == [target.data(PASSAGE_ID_ROLE)]
    with qtbot.waitSignal(panel.bookmarkRequested) as marked:
        panel.bookmark_button.click()
    assert marked.args == [target.data(PASSAGE_ID_ROLE), True]
    view.setCurrentIndex(panel.model.index(0, 0))
    with qtbot.assertNotEmitted(panel.deleteRequested):
        panel.delete_button.click()                    # the root is never deleted
    s.tree.go_to(target.data(PASSAGE_ID_ROLE))
    panel.refresh()
    assert view.currentIndex().data(PASSAGE_ID_ROLE) == s.tree.current
    assert view.currentIndex().data(ON_PATH_ROLE) and not view.currentIndex() == QModelIndex()
