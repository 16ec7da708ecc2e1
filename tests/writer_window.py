"""The main window as a writer meets it, for the GUI tests of the writing tools: a fresh settings
folder (`home`) and a shown 1366x768 window (`window`). Test modules import both fixtures."""
from __future__ import annotations

import pytest
from PySide6.QtWidgets import QMessageBox


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("NEOX_WRITER_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.Discard))
    return tmp_path / "home"


@pytest.fixture
def window(qtbot, home):
    from app.window.mainwindow import MainWindow
    w = MainWindow(backend="reference", check_recovery=False)
    qtbot.addWidget(w)
    w.resize(1366, 768)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.close()
