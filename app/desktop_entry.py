"""``neox-writer --install-desktop-entry`` / ``--uninstall-desktop-entry``: the Linux menu entry.

A pip or pipx install puts a ``neox-writer`` command on PATH but nothing in the desktop's menu.
Following the XDG Desktop Entry and Icon Theme specifications, the entry goes to
``$XDG_DATA_HOME/applications`` and the icon to ``$XDG_DATA_HOME/icons/hicolor/256x256/apps``
(``~/.local/share`` when ``XDG_DATA_HOME`` is unset): the user's own folders, nothing system-wide
and nothing inside the installation. Desktops watch
that folder, so the entry appears without a cache to rebuild (it declares no MIME types). The entry starts the very command that installed it, by
absolute path, so it keeps working when ``~/.local/bin`` is not on the desktop session's PATH.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from app import __version__
from app.bundled import icon_path

APP_ID = "neox-writer"
ICON_SIZE = "256x256"       # the shipped PNG's size; the icon theme folder must say the same
# Characters that force an Exec argument into double quotes (Desktop Entry spec, "The Exec key").
_RESERVED = set(' \t\n"\'\\><~|&;$*?#()`')


def data_home() -> Path:
    """``$XDG_DATA_HOME``, or ``~/.local/share`` when it is unset or not absolute (as the spec says)."""
    value = os.environ.get("XDG_DATA_HOME", "")
    return Path(value) if value and os.path.isabs(value) else Path.home() / ".local" / "share"


def entry_path() -> Path:
    return data_home() / "applications" / f"{APP_ID}.desktop"


def installed_icon_path() -> Path:
    return data_home() / "icons" / "hicolor" / ICON_SIZE / "apps" / f"{APP_ID}.png"


def launch_command() -> list[str]:
    """How the menu starts this installation: the console script itself when it started us,
    else this Python with ``-m app`` (for ``python -m app --install-desktop-entry``)."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.name.startswith(APP_ID) and script.is_file():
        return [str(script.absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "app"]


def exec_quote(arg: str) -> str:
    """One Exec argument, quoted by the Desktop Entry spec's rules and escaped as a string value."""
    arg = arg.replace("%", "%%")
    if any(ch in _RESERVED for ch in arg):
        arg = '"' + "".join("\\" + ch if ch in '"`$\\' else ch for ch in arg) + '"'
    return arg.replace("\\", "\\\\")     # the general string-value escape, applied after the Exec quoting


def entry_text(command: list[str]) -> str:
    exec_line = " ".join(exec_quote(a) for a in command)
    return "\n".join([
        "[Desktop Entry]",
        "Type=Application",
        "Version=1.4",
        "Name=NeoX Writer",
        "GenericName=Story Writer",
        "Comment=Write stories and chat with local GPT-NeoX (Pythia) models, offline",
        f"Exec={exec_line}",
        "TryExec=" + command[0].replace("\\", "\\\\"),     # a plain path: no Exec quoting, only escapes
        f"Icon={APP_ID}",
        "Terminal=false",
        "Categories=Office;WordProcessor;",
        "Keywords=story;writing;fiction;chat;LLM;Pythia;GPT-NeoX;",
        "StartupNotify=true",
        f"StartupWMClass={APP_ID}",
        f"X-NeoX-Writer-Version={__version__}",
        "",
    ])


def install() -> list[Path]:
    """Writes the entry and the icon; returns the two paths."""
    entry, icon = entry_path(), installed_icon_path()
    entry.parent.mkdir(parents=True, exist_ok=True)
    icon.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(icon_path(), icon)
    tmp = entry.with_suffix(".desktop.tmp")
    tmp.write_text(entry_text(launch_command()), encoding="utf-8")
    os.replace(tmp, entry)
    return [entry, icon]


def uninstall() -> list[Path]:
    """Removes the entry and the icon; returns the paths that were there."""
    removed = []
    for path in (entry_path(), installed_icon_path()):
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed


def main(remove: bool) -> int:
    """The two command-line flags; prints what was done, returns the exit code."""
    try:
        paths = uninstall() if remove else install()
    except OSError as exc:
        print(f"neox-writer: cannot {'remove' if remove else 'write'} the desktop entry: {exc}", file=sys.stderr)
        return 1
    if remove:
        print("removed " + ", ".join(map(str, paths)) if paths else "no desktop entry was installed")
    else:
        print("installed " + ", ".join(map(str, paths)))
    return 0
