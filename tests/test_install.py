"""NeoX Writer installs like any Python application: the wheel carries `resources/` as the
package `app.resources`, an installed copy runs its self-test without the source tree and writes
nothing inside itself, `--version` and the Linux desktop entry work.

`packaging/check-wheel.sh` (run by `.ci/run`) does the same with a fresh virtual environment and
its own dependencies; here the wheel is installed with `pip --target` beside this environment's
dependencies, which needs no network.
"""
from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import app
from app import bundled, desktop_entry

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ["app/resources/catalog.json", "app/resources/demo/tokenizer.json",
           "app/resources/icons/neox-writer.png"]


def clean_env(home: Path, **extra) -> dict:
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "QT_QPA_PLATFORM": "offscreen"}
    env.update(extra)
    return env


def snapshot(folder: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools", minversion="77")
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(out), str(REPO)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = out.glob("neox_writer-*.whl")
    return path


def test_the_wheel_carries_the_resources_inside_the_app_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in SHIPPED:
        assert name in names, f"{name} missing from {wheel.name}"
    assert any(n.startswith("app/resources/demo/demo-") and n.endswith(".bin") for n in names)
    assert not any(n.startswith("resources/") for n in names), "a top-level resources package"
    assert not any(n.startswith("tests/") for n in names)


def test_the_wheel_metadata_is_complete(wheel):
    with zipfile.ZipFile(wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = zf.read(meta_name).decode()
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in zf.namelist())
    assert f"Version: {app.__version__}" in meta
    for field in ("Requires-Python: >=3.10", "License-Expression: Apache-2.0", "License-File: LICENSE",
                  "Classifier: Programming Language :: Python :: 3.11", "Project-URL: ",
                  "Description-Content-Type: text/markdown", "Requires-Dist: numba"):
        assert field in meta, field
    assert "# NeoX Writer" in meta                      # the README is the long description


def test_an_installed_wheel_runs_without_the_source_tree_and_writes_nothing_inside(wheel, tmp_path):
    target, home, elsewhere = tmp_path / "site", tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                           str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    before = snapshot(target)
    for path in [target, *target.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)           # read-only, as far as the user goes
    try:
        where = subprocess.run(
            [sys.executable, "-c", "import app.bundled as b, engine; print(b.resources_dir()); print(engine.__file__)"],
            cwd=elsewhere, env=clean_env(home, PYTHONPATH=str(target)), capture_output=True, text=True, timeout=60)
        assert where.returncode == 0, where.stderr
        assert where.stdout.split() == [str(target / "app" / "resources"), str(target / "engine" / "__init__.py")]
        run = subprocess.run([sys.executable, "-m", "app", "--self-test"], cwd=elsewhere,
                             env=clean_env(home, PYTHONPATH=str(target)), capture_output=True, text=True,
                             timeout=900)
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.stdout.startswith("self-test OK: demo-"), run.stdout
    finally:
        for path in [target, *target.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    assert snapshot(target) == before, "the program wrote inside its installation"
    assert (home / ".cache").is_dir(), "the kernel cache should be in the user's cache folder"


def test_version_flag_prints_the_package_version():
    proc = subprocess.run([sys.executable, "-m", "app", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"neox-writer {app.__version__}"
    assert importlib.metadata.version("neox-writer") == app.__version__


def test_resources_are_found_through_the_package():
    folder = bundled.resources_dir()
    assert (folder / "__init__.py").is_file()
    assert bundled.demo_model() is not None and bundled.demo_model().parent == bundled.demo_dir()
    assert bundled.icon_path().read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(bundled.MissingResourceError, match="nothing/here.json is missing"):
        bundled.resource("nothing", "here.json")


@pytest.mark.parametrize("arg, quoted", [
    ("/usr/bin/neox-writer", "/usr/bin/neox-writer"),
    ("/home/a b/bin/neox-writer", '"/home/a b/bin/neox-writer"'),
    ("/opt/100%/x", "/opt/100%%/x"),
    ('/tmp/say "hi" $HOME', '"/tmp/say \\\\"hi\\\\" \\\\$HOME"'),
    ("C:\\x", '"C:\\\\\\\\x"'),
])
def test_exec_arguments_are_quoted_by_the_desktop_entry_rules(arg, quoted):
    assert desktop_entry.exec_quote(arg) == quoted


def test_desktop_entry_installs_validates_and_uninstalls(tmp_path):
    data = tmp_path / "data home"
    env = clean_env(tmp_path, XDG_DATA_HOME=str(data), PYTHONPATH=os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "app", "--install-desktop-entry"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    entry = data / "applications" / "neox-writer.desktop"
    icon = data / "icons" / "hicolor" / "256x256" / "apps" / "neox-writer.png"
    assert icon.read_bytes() == bundled.icon_path().read_bytes()
    text = entry.read_text()
    assert f"Exec={sys.executable} -m app\n" in text
    assert "Icon=neox-writer\n" in text
    if shutil.which("desktop-file-validate"):
        check = subprocess.run(["desktop-file-validate", str(entry)], capture_output=True, text=True)
        assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr
    proc = subprocess.run([sys.executable, "-m", "app", "--uninstall-desktop-entry"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "removed" in proc.stdout
    assert not entry.exists() and not icon.exists()
