"""Errors the engine raises for things a user can cause (bad files, bad settings)."""
from __future__ import annotations

import os


class ModelFormatError(ValueError):
    """A model file is malformed: the message names the file, the byte offset and what was expected."""

    def __init__(self, path, offset: int | None, message: str):
        self.path = os.fspath(path) if path is not None else None
        self.offset = offset
        self.detail = message
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{self.path}{where}: {message}")


class SettingsError(ValueError):
    """An invalid generation setting: the message names the setting."""

    def __init__(self, setting: str, message: str):
        self.setting = setting
        super().__init__(f"{setting}: {message}")


class CLIError(Exception):
    """A command-line usage problem that is printed as one line (exit code 2)."""
