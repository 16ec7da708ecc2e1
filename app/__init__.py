"""NeoX Writer desktop application: the PySide6 program and the headless model manager."""

# The one place the version is written: pyproject.toml reads it from here (setuptools dynamic
# version), `neox-writer --version` prints it, packaging/build.sh names the archives after it.
__version__ = "0.1.0"


def __getattr__(name):
    # `app.MainWindow` imports Qt only when asked for, so `python -m app.models` stays Qt-free.
    if name == "MainWindow":
        from app.window.mainwindow import MainWindow
        return MainWindow
    raise AttributeError(f"module 'app' has no attribute {name!r}")
