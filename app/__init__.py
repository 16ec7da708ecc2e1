"""NeoX Writer desktop application: the PySide6 program and the headless model manager."""


def __getattr__(name):
    # `app.MainWindow` imports Qt only when asked for, so `python -m app.models` stays Qt-free.
    if name == "MainWindow":
        from app.mainwindow import MainWindow
        return MainWindow
    raise AttributeError(f"module 'app' has no attribute {name!r}")
