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


def _home() -> Path | None:
    home = os.environ.get(HOME_ENV)
    return Path(home).expanduser() if home else None


def data_dir() -> Path:
    """User data folder: models and stories live below it."""
    home = _home()
    if home is not None:
        return home / "data"
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    """User cache folder: small metadata that can be fetched again (catalog, tokenizers)."""
    home = _home()
    if home is not None:
        return home / "cache"
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def config_dir() -> Path:
    """User config folder: settings files."""
    home = _home()
    if home is not None:
        return home / "config"
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


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
