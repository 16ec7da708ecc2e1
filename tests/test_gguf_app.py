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


def test_the_list_shows_the_catalogs_gguf_files_and_downloads_one_with_progress(qtbot, home, tmp_path, gguf_path):
    from app.widgets.modelpicker import ACTION, NAME, QUANT, RAM, SIZE
    from http_fixture_server import HubFixture
    from test_gguf_install import FILE, MODEL_ID, REPO, write_catalog
    with HubFixture() as hub:
        hub.add_file(REPO, "main", FILE, gguf_path.read_bytes())
        manager = ModelManager(tmp_path / "models", hub.endpoint, catalog_path=write_catalog(tmp_path / "c.json"),
                               cache_dir=tmp_path / "cache", retries=0, backoff=0.01)
        picker = ModelPicker(manager_factory=lambda: manager)
        qtbot.addWidget(picker)
        with qtbot.waitSignal(picker.statusesReady, timeout=WAIT):
            picker.refresh()
        item = picker.item_for(MODEL_ID)
        assert item.parent().text(NAME) == "Demo Austen" and item.text(NAME) == "Q5_1 GGUF (test)"
        assert (item.text(QUANT), item.text(FORMAT), item.text(SIZE)) == ("Q5_1", "GGUF", "—")   # not known yet
        assert item.text(RAM) and item.text(ACTION) == "Download"
        missing = picker.item_for("test--demo-austen.Q8_0")        # listed, but not in the repository
        with qtbot.waitSignal(picker.downloadFinished, timeout=WAIT):
            picker.tree.itemClicked.emit(missing, ACTION)
        missing = picker.item_for("test--demo-austen.Q8_0")
        assert missing.text(SIZE) == "⚠ not found" and "has no file 'demo-austen.Q8_0.gguf'" in missing.toolTip(SIZE)
        refused = picker.item_for("test--demo-austen.IQ3_M")
        assert refused.text(ACTION) == "Not supported" and "IQ3_S" in refused.toolTip(ACTION)
        with qtbot.assertNotEmitted(picker.downloadProgress, wait=200):
            picker.tree.itemClicked.emit(refused, ACTION)          # nothing to download
        phases = []
        picker.downloadProgress.connect(lambda model_id, done, total, phase: phases.append((phase, total)))
        with qtbot.waitSignal(picker.downloadFinished, timeout=WAIT) as finished:
            picker.tree.itemClicked.emit(item, ACTION)
        assert finished.args == [MODEL_ID, ""]
        assert ("downloading", gguf_path.stat().st_size) in phases and phases[-1][0] == "done"
        qtbot.waitUntil(lambda: picker.item_for(MODEL_ID).text(ACTION) == "Load", timeout=WAIT)
        row = picker.item_for(MODEL_ID)
        assert row.parent().parent().text(NAME) == "Installed" and row.text(FORMAT) == "GGUF"
        assert row.text(SIZE) != "—" and hub.commit_of(REPO, "main") in row.toolTip(NAME)


def test_the_shipped_catalogs_gguf_files_are_listed_under_their_models(qtbot, home, tmp_path):
    from app.widgets.modelpicker import ACTION, NAME, QUANT, SIZE
    from test_gguf_install import SHIPPED
    manager = ModelManager(tmp_path / "models", "http://127.0.0.1:9", catalog_path=SHIPPED,
                           cache_dir=tmp_path / "cache")
    picker = ModelPicker(manager_factory=lambda: manager)
    qtbot.addWidget(picker)
    with qtbot.waitSignal(picker.statusesReady, timeout=WAIT):
        picker.refresh()
    item = picker.item_for("mradermacher--pythia-410m.Q4_K_M")
    assert item.parent().text(NAME) == "Pythia 410M" and item.text(NAME) == "Q4_K_M GGUF (mradermacher)"
    assert (item.text(QUANT), item.text(FORMAT), item.text(SIZE), item.text(ACTION)) == ("Q4_K_M", "GGUF", "—",
                                                                                         "Download")
    deduped = picker.item_for("mradermacher--pythia-70m-deduped.Q8_0").parent()
    assert deduped.text(NAME) == "Pythia 70M deduped"       # beside the legacy files of the same model
    assert {deduped.child(i).text(FORMAT) for i in range(deduped.childCount())} >= {"GGUF", "ggmlv3"}
    assert picker.item_for("mradermacher--dolly-v2-3b.Q4_0_4_4").text(ACTION) == "Not supported"
