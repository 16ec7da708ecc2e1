"""Files shipped inside the program: the model catalog, the demo model and the icon.

They live in the repository's top-level ``resources/`` folder, which is installed as the package
``app.resources``. ``importlib.resources`` finds that package the same way in an editable
install (setuptools' editable finder maps it to ``resources/``), an installed wheel and the
PyInstaller bundle (collected as ``app/resources``), so no code here knows where the source tree
is. The files are always real files on disk in those three cases (the demo model is mapped into
memory, which needs one), so a package that is not a plain folder is reported, not worked around.
"""
from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from pathlib import Path


class MissingResourceError(FileNotFoundError):
    """A file the installation should have shipped is not there (a broken or partial install)."""


@lru_cache(maxsize=1)
def resources_dir() -> Path:
    """The folder that holds the shipped data files."""
    try:
        root = files("app.resources")
    except ModuleNotFoundError as exc:
        raise MissingResourceError("the program's data files (package app.resources) are not installed; "
                                   "reinstall NeoX Writer") from exc
    folder = Path(str(root))
    if not isinstance(root, Path) and not folder.is_dir():
        raise MissingResourceError(f"the program's data files are not a folder on disk ({root!r}); "
                                   "reinstall NeoX Writer")
    return folder


def resource(*parts: str) -> Path:
    """Path of one shipped file, for example ``resource("icons", "neox-writer.png")``."""
    path = resources_dir().joinpath(*parts)
    if not path.exists():
        raise MissingResourceError(f"{'/'.join(parts)} is missing from the installation "
                                   f"({resources_dir()}); reinstall NeoX Writer")
    return path


def demo_dir() -> Path:
    """The folder of the bundled demo model and its tokenizer."""
    return resources_dir() / "demo"


def demo_model() -> Path | None:
    """The bundled demo model file, or None in an installation without one."""
    folder = demo_dir()
    models = sorted(folder.glob("*.bin")) if folder.is_dir() else []
    return models[0] if models else None


def icon_path() -> Path:
    """The application icon (256x256 PNG)."""
    return resource("icons", "neox-writer.png")
