"""Recent stories: the files the writer opened or saved last, newest first (File › Recent
stories), and the one reopened at start. Kept in the settings; no Qt."""
from __future__ import annotations

from pathlib import Path

from app.paths import is_file

MAX_RECENT = 8


def remember(settings, path) -> None:
    """`path` was opened or saved: it goes to the top of the list and is reopened next start."""
    path = str(Path(path).resolve())
    others = [p for p in settings.get("recent_stories") if isinstance(p, str) and p != path]
    settings.set("recent_stories", [path, *others][:MAX_RECENT])
    settings.set("last_story", path)


def recent_stories(settings) -> list[str]:
    """The remembered stories that still exist, newest first."""
    return [p for p in settings.get("recent_stories") if isinstance(p, str) and is_file(p)]


def startup_story(settings) -> str | None:
    """The story to reopen at start: the last one opened or saved, if it still exists."""
    last = settings.get("last_story")
    return last if last and is_file(last) else None


def forget_last_story(settings) -> None:
    """Nothing to reopen next start (the last story is gone)."""
    settings.set("last_story", "")
