"""Atomic file writes off the GUI thread, and the crash-recovery autosave of the open story.

Every file the app writes goes through `write_atomic`: the bytes go to a temporary file in
the same folder, are fsynced, and the temporary file is renamed over the target, so a crash
leaves either the old file or the new one, never half of each. `FileWriter` runs those
writes on one background thread (in order) and reports back with queued signals.

The autosave lives at ``data_dir()/autosave/story.json``. It exists only while the open
story has changes that are not in a saved file; a clean exit removes it, so finding it at
start-up means the previous run ended without saving (a crash) and the app offers it back.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app import paths
from app.story import Story, StoryFormatError, StorySnapshot, read_json_file, story_json_text

AUTOSAVE_FORMAT = "neox-writer-autosave"
UMASK = os.umask(0o022)     # read once at start-up (os.umask can only be read by setting it) and put back
os.umask(UMASK)
log = logging.getLogger(__name__)
MAX_TIMESTAMP = 32503680000     # the year 3000: a later "saved_at" is damage, the file's mtime serves instead


def write_atomic(path, data: bytes) -> None:
    """Write `data` to `path` via temp file + fsync + rename (same folder, so the rename is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); a story or an export gets the mode the file had,
        # else the one any new file would (0666 less the umask), so other programs can read it
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:
            mode = 0o666 & ~UMASK
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if hasattr(os, "O_DIRECTORY"):   # make the rename itself durable (POSIX)
        try:
            dfd = os.open(path.parent, os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass


def save_file(path, data: bytes, obsoletes=None) -> None:
    """`write_atomic`, then delete `obsoletes` (the autosave a save makes unneeded) only once the
    new file is in place: killed at any moment, this leaves the story's old or new file and, until
    the new one is complete, the autosave."""
    write_atomic(path, data)
    if obsoletes is not None:
        try:
            os.unlink(obsoletes)
        except OSError:
            pass            # already gone, or not removable: a stale autosave only asks once


class FileWriter(QObject):
    """Writes files atomically on one background thread; results come back as queued signals."""

    written = Signal(str)          # path (emitted in the thread that owns the writer)
    failed = Signal(str, str)      # path, message
    _finished = Signal(str, str)   # from the pool thread: path, message ("" = ok)

    def __init__(self, parent=None):
        super().__init__(parent)
        # relay through a slot of this object so listeners are called in its thread, not the pool's
        self._finished.connect(self.on_finished)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neox-writer-files")
        self._pending = 0
        self._lock = threading.Lock()

    def write(self, path, data, obsoletes=None) -> None:
        """Queue a write; returns at once. `data` is the bytes, or a function that makes them on
        the writer thread (a long story's JSON takes seconds to build: not on the GUI thread).
        `obsoletes` is a file the write makes unneeded (the autosave of a story being saved): it
        is deleted after the write succeeds, and kept if it fails."""
        with self._lock:
            self._pending += 1
        self._pool.submit(self._write, str(path), data, None if obsoletes is None else str(obsoletes))

    def remove(self, path) -> None:
        """Queue a delete (after any queued writes, so a late autosave cannot resurrect it)."""
        with self._lock:
            self._pending += 1
        self._pool.submit(self._remove, str(path))

    def _write(self, path: str, data, obsoletes: str | None = None) -> None:
        try:
            save_file(path, data() if callable(data) else data, obsoletes)
        except OSError as e:
            self._finished.emit(path, f"{path}: {e.strerror or e}")
        except Exception as e:      # building the bytes failed (a bug): say so rather than lose it in the pool
            log.exception("could not build %s", path)
            self._finished.emit(path, f"{path}: could not be written ({type(e).__name__}: {e})")
        else:
            self._finished.emit(path, "")
        finally:
            with self._lock:
                self._pending -= 1

    def _remove(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            self._finished.emit(path, f"{path}: {e.strerror or e}")
        finally:
            with self._lock:
                self._pending -= 1

    def on_finished(self, path: str, message: str) -> None:
        if message:
            self.failed.emit(path, message)
        else:
            self.written.emit(path)

    def pending(self) -> int:
        with self._lock:
            return self._pending

    def wait(self) -> None:
        """Block until queued writes are done (only at exit, after the window has closed)."""
        self._pool.submit(lambda: None).result()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


def autosave_path() -> Path:
    return paths.data_dir() / "autosave" / "story.json"


def autosave_bytes(story: "Story | StorySnapshot", story_path: str | None) -> bytes:
    """The autosave record: the story (or a snapshot of it) plus where it was last saved (if
    anywhere) and when."""
    head = json.dumps({"format": AUTOSAVE_FORMAT, "version": 1, "saved_at": time.time(),
                       "story_path": story_path}, ensure_ascii=False)
    # the story's JSON text comes from story_json_text, which only serialises what changed
    return (head[:-1] + ', "story": ' + story_json_text(story) + "}").encode("utf-8")


class Recovery:
    """A story found in the autosave folder at start-up: what the previous run left unsaved."""

    def __init__(self, story: Story, story_path: str | None, saved_at: float):
        self.story = story
        self.story_path = story_path
        self.saved_at = saved_at

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.saved_at))
        where = self.story_path or "an unsaved story"
        words = len(self.story.text.split())
        return f"NeoX Writer did not close normally. Recover {where} ({words} words, autosaved {when})?"


def find_recovery(path: Path | None = None) -> Recovery | None:
    """The autosaved story of a run that ended without saving, or None. A broken autosave is ignored.

    `path` is the autosave file (default: `autosave_path()`)."""
    path = autosave_path() if path is None else Path(path)
    if not path.exists():
        return None
    try:
        record = read_json_file(path)
        if not isinstance(record, dict) or record.get("format") != AUTOSAVE_FORMAT:
            return None
        story = Story.from_json(record.get("story"), path)
        saved_at = record.get("saved_at")
        story_path = record.get("story_path")
        if not (isinstance(saved_at, (int, float)) and not isinstance(saved_at, bool)
                and 0 <= saved_at <= MAX_TIMESTAMP):     # NaN fails this too
            saved_at = path.stat().st_mtime
        return Recovery(story, story_path if isinstance(story_path, str) else None, float(saved_at))
    except (StoryFormatError, OSError, RecursionError):
        return None
