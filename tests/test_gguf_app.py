"""The desktop app and GGUF files (pytest-qt, offscreen): the file dialog offers .gguf, the model
list and the status bar show the format, an imported GGUF keeps its suffix, and the window loads
and writes with a GGUF model."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtWidgets import QFileDialog, QMessageBox  # noqa: E402

from app.models.manager import ModelManager  # noqa: E402
from app.widgets.modelpicker import FORMAT, ModelPicker  # noqa: E402
from app.window.statusbar import era_label  # noqa: E402
from engine import gguf_constants as C  # noqa: E402
from engine.model_file import sniff_format  # noqa: E402
from ggufgen import write_demo_gguf  # noqa: E402
from modelgen import write_random_model  # noqa: E402

WAIT = 60_000


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("NEOX_WRITER_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.Discard))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory):
    return write_demo_gguf(tmp_path_factory.mktemp("gguf-app"), C.QKV_SPLIT, marker=True)


def test_the_open_file_dialog_offers_gguf(qtbot, home, monkeypatch, gguf_path):
    seen = {}

    def chooser(parent, title, folder, filters):
        seen["filters"] = filters
        return str(gguf_path), filters.split(";;")[0]

    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(chooser))
    picker = ModelPicker(manager_factory=lambda: ModelManager())
    qtbot.addWidget(picker)
    with qtbot.waitSignal(picker.modelChosen) as chosen:
        picker.on_open_file_clicked()
    assert chosen.args == [str(gguf_path), ""]
    assert "*.gguf" in seen["filters"].split(";;")[0] and "*.bin" in seen["filters"].split(";;")[0]


def test_sniffed_formats(tmp_path, gguf_path):
    assert sniff_format(gguf_path) == "GGUF v3"
    for version, era in ((0, "ggml (first quantization)"), (1, "ggmlv2"), (2, "ggmlv3")):
        path = tmp_path / f"v{version}.bin"
        write_random_model(path, ftype="q4_0", qnt_version=version)
        assert sniff_format(path) == era
    write_random_model(tmp_path / "s.bin", ftype="f16", layout="stablelm")
    assert sniff_format(tmp_path / "s.bin") == "ggml (stablelm layout)"
    (tmp_path / "x.txt").write_text("hello")
    assert sniff_format(tmp_path / "x.txt") == "" and sniff_format(tmp_path / "missing") == ""


def test_an_imported_gguf_keeps_its_suffix_and_the_list_shows_its_format(qtbot, home, tmp_path, gguf_path):
    manager = ModelManager(tmp_path / "models")
    record = manager.import_file(gguf_path)
    assert record.file.endswith(".gguf")
    legacy = tmp_path / "old.bin"
    write_random_model(legacy, ftype="q8_0", qnt_version=1)
    manager.import_file(legacy)
    picker = ModelPicker(manager_factory=lambda: manager)
    qtbot.addWidget(picker)
    with qtbot.waitSignal(picker.statusesReady, timeout=WAIT):
        picker.refresh()
    assert picker.item_for(record.id).text(FORMAT) == "GGUF v3"
    assert picker.item_for("local-old").text(FORMAT) == "ggmlv2"


def test_the_status_bar_names_the_format():
    assert era_label({"format": "GGUF v2", "layout": "gguf", "qnt_version": 2}) == "GGUF v2"
    assert era_label({"format": "ggml, gpt-neox layout, quantization v2", "layout": "gpt-neox",
                      "qnt_version": 2}) == "ggmlv3 quantization"


def test_the_window_loads_a_gguf_model_and_writes_with_it(qtbot, home, gguf_path):
    from app.window.mainwindow import MainWindow
    window = MainWindow(backend="reference", check_recovery=False)
    qtbot.addWidget(window)
    window.show()
    try:
        with qtbot.waitSignal(window.modelLoaded, timeout=WAIT):
            window.open_model(gguf_path)
        info = window.status.model_info
        assert info["format"] == "GGUF v3" and info["tokenizer"] == "from the GGUF file's metadata"
        assert "GGUF v3" in window.status.model_label.text()
    finally:
        window.close()
