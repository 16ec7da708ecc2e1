"""Settings that persist between runs, kept as one JSON file under `config_dir()`.

JSON instead of QSettings so the file is readable, lands under ``NEOX_WRITER_HOME`` like
every other file, and can be written atomically by the background `FileWriter`.
Unknown or mistyped values fall back to their defaults, and so do numbers outside the range
the app uses them in (a Qt spin box or timer holds a C int: a font size of 10**12 would stop
the window from opening), and so do paths no file system could hold (a name of thousands of
characters made the start-up's `stat` raise): a hand-edited or damaged settings file must never stop the program
from starting. The fuzzing harness (tests/fuzz, target "settings") holds the reader to that.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

from app import paths

DEFAULTS = {
    "version": 1,
    "window_geometry": "",        # base64 of QMainWindow.saveGeometry()
    "window_state": "",           # base64 of QMainWindow.saveState()
    "splitter_state": "",
    "last_model": "",
    "last_story_dir": "",
    "sampler": {},                # the sampling panel's values
    "preset": "",
    "user_presets": {},           # name -> sampler values
    "theme": "system",            # "system", "light" or "dark"
    "font_size": 12,
    "threads": 0,                 # 0 = the engine's choice
    "mode": "story",
    "autosave_seconds": 30,
    "server_enabled": False,      # the local API server was on: start it with the next model
    "server_host": "127.0.0.1",
    "server_port": 5001,          # its key is in the KeyStore, never here
    "remote_url": "",             # the last remote server connected to (its key: KeyStore)
    "last_story": "",             # reopened at start when it still exists
    "recent_stories": [],         # newest first (File › Recent stories)
    "story_font": "serif",        # "serif" or "sans"
    "spell_check": True,          # underline misspelt words in the story
    "spell_language": "en",       # one of pyspellchecker's dictionaries
    "page_chars": 72,             # the story page's width in characters (0: the whole window)
    "hf_checkpoint_policy": "ask",  # after an add-hf: "ask", "keep" or "delete" the downloaded checkpoint
}


# The numbers' ranges: what the widgets that show them accept (appearance.py's font sizes,
# writing.py's page widths, the server panel's port box, the threads box, a QTimer's interval).
RANGES = {
    "version": (1, 1 << 31), "font_size": (7, 40), "threads": (0, 256), "autosave_seconds": (5, 24 * 3600),
    "server_port": (0, 65535), "page_chars": (0, 160),
}
# The settings that hold a path (the app stats them at start); recent_stories holds a list of them.
PATH_KEYS = ("last_model", "last_story_dir", "last_story")


def settings_path() -> Path:
    return paths.config_dir() / "settings.json"


class Settings:
    """The app's persistent settings: `get`, `set`, and `to_bytes` for the atomic writer."""

    def __init__(self, values: dict | None = None):
        self.values = copy.deepcopy(DEFAULTS)
        for key, value in (values or {}).items():
            if key in DEFAULTS and _usable(key, value):
                self.values[key] = value

    @classmethod
    def load(cls, path: Path | None = None) -> "Settings":
        """Read the settings file; a missing or unreadable file gives the defaults."""
        path = path or settings_path()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):    # (JSON nested past the parser's depth)
            return cls()
        return cls(data if isinstance(data, dict) else None)

    def get(self, key: str):
        return self.values[key]

    def set(self, key: str, value) -> None:
        if key not in DEFAULTS:
            raise KeyError(f"unknown setting {key!r}")
        self.values[key] = value

    def to_bytes(self) -> bytes:
        return json.dumps(self.values, indent=1, sort_keys=True).encode("utf-8")


def _usable(key: str, value) -> bool:
    """Whether a value read from the file can stand for the setting: the default's type, within
    RANGES, a path any file system could hold, and for the containers the shapes the app reads
    (lists of such paths, presets of values)."""
    default = DEFAULTS[key]
    if type(value) is not type(default):
        return False
    if key in RANGES:
        low, high = RANGES[key]
        return low <= value <= high
    if key in PATH_KEYS:
        return paths.plausible_path(value)
    if key == "recent_stories":
        return all(isinstance(p, str) and paths.plausible_path(p) for p in value)
    if key == "user_presets":
        return all(isinstance(v, dict) for v in value.values())
    return True
