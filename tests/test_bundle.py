"""The built one-folder bundle passes its self-test and opens its window (opt-in: it needs a build).

Build first with ``packaging/build.sh``, then:
    NEOX_TEST_BUNDLE=dist/NeoXWriter .venv/bin/python -m pytest tests/test_bundle.py
The bundle runs from another working directory with a clean HOME, as a user's double-click would.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

BUNDLE = os.environ.get("NEOX_TEST_BUNDLE")
pytestmark = pytest.mark.skipif(not BUNDLE, reason="set NEOX_TEST_BUNDLE to a built bundle folder")


def executable() -> Path:
    folder = Path(BUNDLE).resolve()
    if sys.platform == "darwin" and folder.suffix == ".app":
        return folder / "Contents" / "MacOS" / "neox-writer"
    return folder / ("neox-writer.exe" if sys.platform == "win32" else "neox-writer")


def clean_env(home: Path) -> dict:
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "QT_QPA_PLATFORM": "offscreen", "LANG": "C.UTF-8"}
    if sys.platform == "win32":
        env.update(SYSTEMROOT=os.environ.get("SYSTEMROOT", r"C:\Windows"), USERPROFILE=str(home))
    return env


def test_bundle_self_test_passes_twice_from_another_folder(tmp_path):
    home, cwd = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    cwd.mkdir()
    for run in ("first start (compiles)", "second start (cached)"):
        proc = subprocess.run([str(executable()), "--self-test"], cwd=cwd, env=clean_env(home),
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{run}: {proc.stdout}{proc.stderr}"
        assert proc.stdout.startswith("self-test OK"), proc.stdout
    # the numba cache went to the user cache folder, not into the (possibly read-only) bundle
    assert any((home / ".cache").rglob("*.nbi"))


def test_bundle_window_opens_offscreen(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    shot = tmp_path / "window.png"
    proc = subprocess.run([str(executable()), "--screenshot", str(shot)], cwd=tmp_path, env=clean_env(home),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert shot.stat().st_size > 10_000
