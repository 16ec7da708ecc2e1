"""Saves survive a kill, a full disk and a read-only folder.

The kill test runs tests/save_kill.py: 500 times a process saving and autosaving a story is
killed with SIGKILL at a random moment; the story file must always be an old or a new complete
version that opens, and the autosave always recoverable. A failed save (no space left, a folder
that cannot be written) keeps the story open with its changes, says so, leaves the old file as
it was and keeps the autosave.
"""
from __future__ import annotations

import contextlib
import errno
import gc
import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QObject  # noqa: E402

from app.autosave import FileWriter, autosave_path, find_recovery  # noqa: E402
from app.document import StoryDocument  # noqa: E402
from app.story import load_story  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KILLS = 500


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill test forks (POSIX)")
def test_a_story_and_its_autosave_survive_500_kills_at_random_moments(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "save_kill.py"), "--trials", str(KILLS),
                          "--folder", str(tmp_path), "--seed", "16"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["trials"] == KILLS
    assert result["violations"] == []
    # the kills really landed inside writes (a temp file was left behind), not only between them
    assert result["kills_inside_a_write"] >= KILLS // 10, result


# -- a save that fails --------------------------------------------------------------------------

@contextlib.contextmanager
def mounted_tmpfs(folder: Path, size_kb: int):
    """A real small filesystem at `folder` (needs root and a kernel that lets us mount); None if not."""
    folder.mkdir()
    if os.geteuid() != 0:
        yield False
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture
def document(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("NEOX_WRITER_HOME", str(tmp_path / "home"))
    owner = QObject()
    writer = FileWriter(owner)
    doc = StoryDocument(writer, parent=owner)
    yield doc
    writer.shutdown()
    del owner


def save(qtbot, document, path):
    with qtbot.waitSignal(document.writer.written, timeout=10_000):
        document.save_to(path)


def first_save(qtbot, document, folder: Path, text: str) -> tuple[Path, bytes]:
    """The story saved once, while the folder can still be written: its path and bytes."""
    path = folder / "story.json"
    document.edit_text(text)
    save(qtbot, document, path)
    return path, path.read_bytes()


def failed_save(qtbot, document, path) -> str:
    """Save to `path`, which must fail; returns the message the user is shown."""
    with qtbot.waitSignal(document.problem, timeout=10_000) as problem:
        document.save_to(path)
    assert problem.args[0] == "Could not save the story"
    document.writer.wait()           # the autosave the failure asked for
    return problem.args[1]


def assert_kept(document, path, old: bytes, text: str):
    """The story is open with its changes and marked unsaved; the file is the old one; the autosave has it."""
    assert document.story.text == text and document.dirty and document.title().startswith("*")
    assert path.read_bytes() == old
    recovery = find_recovery(autosave_path())
    assert recovery is not None and recovery.story.text == text


def test_a_full_disk_keeps_the_story_in_memory_and_the_old_file_intact(qtbot, document, tmp_path, monkeypatch):
    folder = tmp_path / "small"
    with mounted_tmpfs(folder, 64) as real:
        path, old = first_save(qtbot, document, folder, "A short first draft.")
        if real:             # fill the filesystem up
            with open(folder / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 4096)
        else:                # no mount here: the disk says it is full when a file in the folder is written
            real_fdopen = os.fdopen

            def full(fd, *args, **kw):
                f = real_fdopen(fd, *args, **kw)
                if Path(os.readlink(f"/proc/self/fd/{fd}")).parent == folder:
                    def write(data):
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    f.write = write
                return f
            monkeypatch.setattr("app.autosave.os.fdopen", full)
        text = "A longer second draft. " * 400
        document.edit_text(text)
        message = failed_save(qtbot, document, path)
        assert "No space left on device" in message and "still open" in message and str(path) in message
        assert_kept(document, path, old, text)
        assert [p.name for p in folder.iterdir() if p.name != "filler"] == ["story.json"]   # no temp file left
        assert load_story(path).text == "A short first draft."


def test_a_read_only_folder_keeps_the_story_in_memory_and_the_old_file_intact(qtbot, document, tmp_path):
    folder = tmp_path / "readonly"
    with mounted_tmpfs(folder, 1024) as real:
        path, old = first_save(qtbot, document, folder, "Written while the folder could be written.")
        if real:
            assert subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True).returncode == 0
        elif os.geteuid() != 0:
            folder.chmod(0o500)
        else:
            pytest.skip("root ignores folder permissions and cannot mount here")
        try:
            document.edit_text("Changed after the folder became read-only.")
            message = failed_save(qtbot, document, path)
        finally:
            if not real:
                folder.chmod(0o700)
        assert ("Read-only file system" in message or "Permission denied" in message) and "still open" in message
        assert_kept(document, path, old, "Changed after the folder became read-only.")


def test_a_save_that_succeeds_removes_the_autosave_only_then(qtbot, document, tmp_path):
    document.edit_text("draft")
    document.autosave_now()
    document.writer.wait()
    assert autosave_path().exists()
    save(qtbot, document, tmp_path / "s.json")
    document.writer.wait()
    assert not autosave_path().exists() and not document.dirty


# -- a long story's save leaves the GUI thread free ------------------------------------------


def test_saving_a_million_character_story_builds_its_bytes_off_the_gui_thread(qtbot, document, tmp_path,
                                                                              monkeypatch):
    """The first save of a 1,000,000-character story (10 passages with a token every 4 characters
    and 5 alternatives each, 32 MB of JSON) took 6.1 s of the GUI thread to build its bytes: now
    the GUI thread only takes a snapshot and the writer thread builds and writes them. Checked
    where it matters: no passage is serialised on the GUI thread, the event loop keeps turning
    (a 5 ms timer ticks through the save, no gap near the old seconds), and the file is the
    story as it was when saved, although the story changed right after."""
    from app import story as story_module
    from bench.story_tree import make_story
    from event_loop_gaps import EventLoopGaps

    story = make_story(1_000_000, 10)
    document.show(story, None)
    built_on = set()
    real = story_module._passage_json

    def spy(p, tokens=True):
        built_on.add(threading.get_ident())
        return real(p, tokens)
    monkeypatch.setattr(story_module, "_passage_json", spy)
    path = tmp_path / "long.json"
    # The objects the suite's earlier tests left behind are set aside from the collector: a full
    # collection over them, started by the save's allocations on the writer thread, held the GIL
    # for 294 ms in a whole-suite run on a slower VM, where this test alone stalled 47-69 ms.
    # What is measured here is where the save's own work runs.
    gc.collect()
    gc.freeze()
    try:
        with EventLoopGaps(5) as loop, qtbot.waitSignal(document.writer.written, timeout=120_000):
            document.save_to(path)
            document.edit_text(document.story.text + " and more, typed during the save")
    finally:
        gc.unfreeze()
    assert built_on and threading.get_ident() not in built_on
    assert len(loop.gaps) >= 10, "the timer hardly ticked: the GUI thread was held"
    print(f"save of {path.stat().st_size / 1e6:.1f} MB: {len(loop.gaps)} ticks, worst gaps {loop.worst()} ms "
          f"({loop.longest_wall * 1000:.0f} ms by the wall clock)")
    assert loop.longest < 0.25, f"the GUI thread stalled {loop.longest * 1000:.0f} ms during the save"
    saved = load_story(path)
    assert len(saved.text) >= 1_000_000 and saved.text + " and more, typed during the save" == document.story.text
    assert sum(len(p.tokens) for _, p in saved.tree.depth_first()) == sum(
        len(p.tokens) for _, p in story.tree.depth_first())


def test_a_story_written_token_by_token_is_what_json_dumps_writes():
    """Tokens are written as text directly (no lists for json.dumps, no long C call): the file is
    byte for byte one json.dumps of the story, for unknown and infinite probabilities, ids of -1,
    quotes, control characters and text outside the BMP too."""
    from app import story as story_module
    from app.passages import MODEL, Token
    from bench.story_tree import make_story
    story = make_story(20_000, 3)
    odd = (Token('"q"\n\t\x01', -1, math.nan, (("é", 3, 0.25), ("😀", 4, math.nan)), 0),
           Token("x", 2**40, 1.0, (("y", 0, 0),), 7), Token("z", 5, 5e-324, (("w", 1, math.inf),), 8))
    story.tree.add_child(story.tree.current, "".join(t.text for t in odd), MODEL, tokens=odd)
    text = story_module.story_json_text(story)
    whole = json.dumps(story.to_json(), ensure_ascii=False)
    assert text == whole
