"""The model list (pytest-qt, offscreen): its columns and groups, the loaded model's mark,
download progress with speed and time left, and failures that stay on their row with Retry."""
from __future__ import annotations

import os
import socket

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from app.models.manager import ModelManager  # noqa: E402
from app.units import human_bytes  # noqa: E402
from app.widgets.modelpicker import ACTION, FORMAT, NAME, QUANT, RAM, SIZE, ModelPicker, download_text  # noqa: E402

WAIT = 60_000


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("NEOX_WRITER_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def listed(qtbot, manager) -> ModelPicker:
    picker = ModelPicker(manager_factory=lambda: manager)
    qtbot.addWidget(picker)
    with qtbot.waitSignal(picker.statusesReady, timeout=WAIT):
        picker.refresh()
    return picker


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_shipped_catalog_is_grouped_by_model_with_its_facts_in_columns(qtbot, home):
    picker = listed(qtbot, ModelManager())
    item = picker.item_for("pythia-70m-deduped-q4_0")
    group = item.parent()
    assert group.text(NAME) == "Pythia 70M deduped" and group.parent().text(NAME) == "Download"
    assert group.childCount() > 1                            # its quantizations below one name
    assert item.text(NAME) == "q4_0 (ggmlv3)"
    assert (item.text(QUANT), item.text(FORMAT)) == ("q4_0", "ggmlv3")
    entry = ModelManager().catalog.get("pythia-70m-deduped-q4_0")
    assert item.text(SIZE) == f"~{human_bytes(entry.approx_size)}"   # estimated, as `app.models list` says
    assert item.text(RAM).endswith("MB") and item.text(ACTION) == "Download"


def test_a_download_without_connection_stays_failed_on_its_row_with_retry(qtbot, home, tmp_path):
    from test_models_manager import write_catalog
    manager = ModelManager(tmp_path / "models", f"http://127.0.0.1:{closed_port()}",
                           catalog_path=write_catalog(tmp_path / "catalog.json"), retries=0, backoff=0.01)
    picker = listed(qtbot, manager)
    item = picker.item_for("tiny")
    with qtbot.waitSignal(picker.downloadFinished, timeout=WAIT):
        picker.tree.itemClicked.emit(item, ACTION)
    item = picker.item_for("tiny")
    assert item.text(SIZE) == "⚠ no connection to the hub" and item.text(ACTION) == "Retry"
    assert "127.0.0.1" in item.toolTip(SIZE)
    assert "no connection to the hub" in picker.status.text()
    with qtbot.waitSignal(picker.statusesReady, timeout=WAIT):
        picker.refresh()                                      # a refresh of the list keeps it
    assert picker.item_for("tiny").text(ACTION) == "Retry"
    assert "no connection to the hub" in picker.status.text()


def test_a_missing_file_says_not_found_and_retry_succeeds_once_it_is_there(qtbot, home, tmp_path):
    from http_fixture_server import HubFixture
    from modelgen import write_random_model
    from test_models_manager import GGML_REPO, TOKENIZER, write_catalog
    model = tmp_path / "tiny.bin"
    write_random_model(model, ftype="f32")
    with HubFixture() as hub:
        hub.add_file("test/tok-70m", "main", "tokenizer.json", TOKENIZER, lfs=False)
        manager = ModelManager(tmp_path / "models", hub.endpoint, catalog_path=write_catalog(tmp_path / "c.json"),
                               retries=0, backoff=0.01)
        picker = listed(qtbot, manager)
        with qtbot.waitSignal(picker.downloadFinished, timeout=WAIT):
            picker.tree.itemClicked.emit(picker.item_for("tiny"), ACTION)
        assert picker.item_for("tiny").text(SIZE) == "⚠ not found"
        hub.add_file(GGML_REPO, "main", "tiny.bin", model.read_bytes())
        with qtbot.waitSignal(picker.downloadFinished, timeout=WAIT) as done:
            picker.tree.itemClicked.emit(picker.item_for("tiny"), ACTION)     # Retry
        assert done.args == ["tiny", ""]
        qtbot.waitUntil(lambda: picker.item_for("tiny").text(ACTION) == "Load", timeout=WAIT)
        assert "not found" not in picker.status.text()

        path = str(manager.installed_path("tiny"))
        picker.set_loaded(path)
        assert picker.item_for("tiny").text(ACTION) == "Loaded" and picker.item_for("tiny").text(NAME).startswith("●")
        picker.set_loaded("")
        assert picker.item_for("tiny").text(ACTION) == "Load"


def test_download_progress_shows_speed_and_time_left():
    assert download_text(500_000, 2_000_000, "downloading", 0.5, 500_000) == "25%"     # too early to tell
    assert download_text(1_000_000, 3_000_000, "downloading", 2.0, 1_000_000) == "33% · 500.0 kB/s · 0:04 left"
    assert download_text(100, 0, "checking", 3.0, 100) == "checking 100 B"


def test_enter_on_a_row_does_its_action(qtbot, home):
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    from app.bundled import demo_model
    if demo_model() is None:
        pytest.skip("no bundled demo model")
    picker = listed(qtbot, ModelManager())
    picker.show()
    picker.tree.setFocus()
    picker.tree.setCurrentItem(picker.item_for("demo"))
    with qtbot.waitSignal(picker.modelChosen) as chosen:
        QTest.keyClick(picker.tree, Qt.Key_Return)
    assert chosen.args[0] == str(demo_model())
