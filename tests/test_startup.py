"""Starting the program (pytest-qt, offscreen): `run_window`, as `neox-writer` runs it, reopens the
last story; a last story that is gone or cannot be read gives a clear message and an empty story,
and nothing on disk is lost or changed."""
from __future__ import annotations

import json
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.recent import recent_stories  # noqa: E402
from app.settings import Settings, settings_path  # noqa: E402
from app.story import Story, story_bytes  # noqa: E402

WAIT = 60_000


@pytest.fixture
def home(qapp, tmp_path, monkeypatch):
    monkeypatch.setenv("NEOX_WRITER_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("app.window.application.startup_model", lambda settings: None)   # no model: the story only
    return tmp_path / "home"


def write_settings(**values) -> None:
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values), encoding="utf-8")


def start(until, argv=()):
    """Run `run_window` as the program does until `until(window)` holds; returns the window."""
    from app.__main__ import build_parser
    from app.window.application import run_window
    from app.window.mainwindow import MainWindow
    app = QApplication.instance()
    # The widgets themselves, held, not their id()s: a wrapper made for this list alone is freed at
    # once, and the new window's wrapper could then get its id and be taken for an old window
    # (the test would wait its whole WAIT and fail, as it did now and then in full runs).
    before = QApplication.topLevelWidgets()
    found = {}

    def poll():
        new = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and not any(w is b for b in before)]
        if new and until(new[0]):
            found["window"] = new[0]
            app.exit(0)
        else:
            poller.start()
    poller = QTimer(singleShot=True, interval=20)
    poller.timeout.connect(poll)
    give_up = QTimer(singleShot=True, interval=WAIT)
    give_up.timeout.connect(lambda: app.exit(1))
    poller.start()
    give_up.start()
    try:
        code = run_window(build_parser().parse_args(list(argv)))
    finally:
        poller.stop()
        give_up.stop()
    window = found.get("window")
    assert code == 0 and window is not None, "the window never got there"
    window.hide()
    window.deleteLater()
    return window


def test_a_window_started_with_a_last_story_reopens_it(home, tmp_path):
    story = Story()
    story.text = "The sea was calm."
    story.title = "Calm"
    path = tmp_path / "calm.neoxstory.json"
    path.write_bytes(story_bytes(story))
    write_settings(last_story=str(path), recent_stories=[str(path)])
    window = start(lambda w: w.document.path is not None)
    assert window.document.path == str(path) and window.story_view.toPlainText() == "The sea was calm."
    assert not window.document.dirty and window.windowTitle().startswith("calm.neoxstory.json")


def test_a_last_story_that_is_gone_says_so_and_starts_empty(home, tmp_path):
    gone = tmp_path / "moved.neoxstory.json"
    write_settings(last_story=str(gone), recent_stories=[str(gone)])
    window = start(lambda w: w.dialogs.error_box is not None)
    box = window.dialogs.error_box
    assert box.windowTitle() == "Could not reopen the last story" and str(gone) in box.text()
    assert "no longer there" in box.text() and "A new, empty story is open" in box.text()
    assert window.document.path is None and window.story_view.toPlainText() == ""
    assert Settings.load().get("last_story") == ""           # said once, not at every start


def test_a_last_story_that_cannot_be_read_says_why_and_is_left_alone(home, tmp_path):
    broken = tmp_path / "broken.neoxstory.json"
    damaged = b'{"format": "neox-writer-story", "version": 2, "text": "The sea'    # cut off mid-write
    broken.write_bytes(damaged)
    write_settings(last_story=str(broken), recent_stories=[str(broken)])
    window = start(lambda w: w.dialogs.error_box is not None)
    box = window.dialogs.error_box
    assert box.windowTitle() == "Could not open the story" and str(broken) in box.text()
    assert window.document.path is None and window.story_view.toPlainText() == "" and not window.document.dirty
    assert broken.read_bytes() == damaged                      # nothing written over it
    assert recent_stories(Settings.load()) == [str(broken)]    # still offered in File › Recent stories


def test_a_story_named_on_the_command_line_wins_over_the_last_one(home, tmp_path):
    paths = []
    for name in ("last", "named"):
        story = Story()
        story.text = f"The {name} story."
        paths.append(tmp_path / f"{name}.neoxstory.json")
        paths[-1].write_bytes(story_bytes(story))
    write_settings(last_story=str(paths[0]))
    window = start(lambda w: w.document.path is not None, ["--story", str(paths[1])])
    assert window.story_view.toPlainText() == "The named story."
