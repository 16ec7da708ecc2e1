"""Where every file the application writes lives.

The platform's user folders come from platformdirs (app name "NeoXWriter"):
data (models, stories), cache (catalog cache, tokenizers) and config (settings).
Setting the environment variable ``NEOX_WRITER_HOME`` moves all of them under that one
folder, which is how tests and portable installs keep the user's real folders untouched.

Functions return paths without creating them; callers create what they write to
(``ensure(path)`` is a convenience for that).
"""
from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "NeoXWriter"
HOME_ENV = "NEOX_WRITER_HOME"


def _user_folder(name: str, platform_folder) -> Path:
    """`$NEOX_WRITER_HOME/<name>` when that is set, else the platform's folder for us."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser() / name
    return Path(platform_folder(APP_NAME, appauthor=False))


def data_dir() -> Path:
    """User data folder: models and stories live below it."""
    return _user_folder("data", platformdirs.user_data_dir)


def cache_dir() -> Path:
    """User cache folder: small metadata that can be fetched again (catalog, tokenizers)."""
    return _user_folder("cache", platformdirs.user_cache_dir)


def config_dir() -> Path:
    """User config folder: settings files."""
    return _user_folder("config", platformdirs.user_config_dir)


def models_dir() -> Path:
    """Default folder for model files (a setting may point elsewhere)."""
    return data_dir() / "models"


def stories_dir() -> Path:
    """Default folder for saved stories and chats."""
    return data_dir() / "stories"


def tokenizers_dir() -> Path:
    """Cached tokenizer.json files, one folder per tokenizer repository."""
    return cache_dir() / "tokenizers"


def ensure(path: Path) -> Path:
    """Create `path` (a folder) with its parents if missing and return it."""
    path.mkdir(parents=True, exist_ok=True)
    return path



# What Linux and macOS allow (PATH_MAX, NAME_MAX); Windows allows less, and then `stat` says so.
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255


def plausible_path(text: str) -> bool:
    """Whether `text` could name a file at all: encodable, no NUL, not longer than a path or
    one of its names may be. A settings file holding anything else (damaged or hand-edited) has
    the setting read as its default, so no later `stat` fails on it."""
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:          # a lone surrogate that no file name can hold
        return False
    return (b"\0" not in raw and len(raw) <= MAX_PATH_BYTES
            and all(len(name) <= MAX_NAME_BYTES for name in raw.split(os.fsencode(os.sep))))


def is_file(path) -> bool:
    """Whether `path` is an existing file; one the system cannot even look at (a folder on the
    way we may not enter, a name too long) is not, where Path.is_file would raise."""
    try:
        return Path(path).is_file()
    except OSError:
        return False


def is_dir(path) -> bool:
    """Whether `path` is an existing folder (False where it cannot be looked at; see is_file)."""
    try:
        return Path(path).is_dir()
    except OSError:
        return False
