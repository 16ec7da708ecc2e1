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

