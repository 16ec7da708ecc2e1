"""The model picker: installed models first, then the catalog with Download buttons, and "Open file…".

It sits on `app.models.ModelManager` (no Qt there). Everything that touches the disk or the
network — reading the manifest and catalog, downloading, importing — runs on a Python
thread; results come back through this widget's signals, which Qt queues to the GUI thread.
"""
from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QHeaderView, QLabel, QProgressBar, QPushButton,
                               QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

DEMO_DIR = Path(__file__).resolve().parent.parent / "resources" / "demo"


def human_size(n: int | None) -> str:
    if not n:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def emit_from_thread(signal, *args) -> None:
    """Emit from a background thread; the widget may have been closed meanwhile (then nobody listens)."""
    try:
        signal.emit(*args)
    except RuntimeError:
        pass


def demo_model() -> Path | None:
    """The small bundled model the app opens when nothing else is installed."""
    if DEMO_DIR.is_dir():
        for path in sorted(DEMO_DIR.glob("*.bin")):
            return path
    return None


class ModelPicker(QWidget):
    """Lists installed and downloadable models; emits `modelChosen(path, tokenizer_json)`."""

    modelChosen = Signal(str, str)              # model file, tokenizer.json ("" = find or rebuild)
    statusesReady = Signal(list, str)           # [(kind, id, label, size, path, tokenizer)], error
    downloadProgress = Signal(str, int, int, str)   # id, done, total (0 unknown), phase
    downloadFinished = Signal(str, str)         # id, error ("" = success)

    def __init__(self, manager_factory=None, parent=None):
        super().__init__(parent)
        self.setObjectName("modelPicker")
        self._factory = manager_factory
        self._manager = None
        self._controls: dict = {}               # id -> DownloadControl of running downloads
        self._bars: dict[str, QProgressBar] = {}
        self.tree = QTreeWidget(objectName="modelTree")
        self.tree.setHeaderLabels(["Model", "Size", ""])
        self.tree.setRootIsDecorated(False)
        self.tree.setIndentation(8)
        self.tree.header().setStretchLastSection(False)
        self.tree.header().setSectionResizeMode(0, QHeaderView.Stretch)
        self.tree.header().setSectionResizeMode(1, QHeaderView.ResizeToContents)
        self.tree.header().setSectionResizeMode(2, QHeaderView.ResizeToContents)
        self.tree.itemDoubleClicked.connect(self.on_tree_item_double_clicked)
        self.status = QLabel("", objectName="modelPickerStatus")
        self.status.setWordWrap(True)
        open_button = QPushButton("Open file…", objectName="openModelFileButton")
        open_button.clicked.connect(self.on_open_file_clicked)
        refresh = QPushButton("Refresh", objectName="refreshModelsButton")
        refresh.clicked.connect(self.refresh)
        buttons = QHBoxLayout()
        buttons.addWidget(open_button)
        buttons.addWidget(refresh)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.statusesReady.connect(self.on_statuses_ready)
        self.downloadProgress.connect(self.on_download_progress)
        self.downloadFinished.connect(self.on_download_finished)

    def sizeHint(self) -> QSize:
        # wide enough for "Pythia 410M deduped q5_1 (ggmlv3)" next to its size and button
        return QSize(self.fontMetrics().horizontalAdvance("M") * 34, 420)

    def manager(self):
        if self._manager is None:
            if self._factory is not None:
                self._manager = self._factory()
            else:
                from app.models.manager import ModelManager
                self._manager = ModelManager()
        return self._manager

    # --- listing ---------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-read installed models and the catalog on a background thread."""
        self.status.setText("Reading the model list…")
        threading.Thread(target=self._list, name="neox-model-list", daemon=True).start()

    def _list(self) -> None:
        rows, error = [], ""
        demo = demo_model()
        if demo is not None:
            tok = demo.parent / "tokenizer.json"
            rows.append(("installed", "demo", "Demo model (bundled)", demo.stat().st_size, str(demo),
                         str(tok) if tok.is_file() else ""))
        try:
            manager = self.manager()
            for s in manager.statuses():
                label = s.entry.name if s.entry else s.id
                if s.installed is not None and s.file is not None:
                    tok = s.installed.tokenizer or ""
                    if not tok:
                        found = manager.tokenizer_path(s.id)
                        tok = str(found) if found else ""
                    rows.append(("installed", s.id, label, s.installed.size, str(s.file), tok))
                elif s.entry is not None:
                    rows.append(("catalog", s.id, label, s.entry.size or s.entry.approx_size, "", ""))
        except Exception as e:   # noqa: BLE001 - a broken manifest must not stop the picker
            error = f"Model list unavailable: {e}"
        rows.sort(key=lambda r: r[0] != "installed")
        emit_from_thread(self.statusesReady, rows, error)

    def _section(self, title: str) -> QTreeWidgetItem:
        section = QTreeWidgetItem([title, "", ""])
        font = section.font(0)
        font.setBold(True)
        section.setFont(0, font)
        section.setFlags(Qt.ItemIsEnabled)
        section.setFirstColumnSpanned(False)
        self.tree.addTopLevelItem(section)
        return section

    def on_statuses_ready(self, rows: list, error: str) -> None:
        self.tree.clear()
        self._bars.clear()
        sections = {"installed": self._section("Installed"), "catalog": self._section("Download")}
        for kind, model_id, label, size, path, tok in rows:
            item = QTreeWidgetItem([label, human_size(size), ""])
            item.setData(0, Qt.UserRole, (kind, model_id, path, tok))
            item.setToolTip(0, f"{label}\n{path or model_id}")
            sections[kind].addChild(item)
            if kind == "installed":
                button = QPushButton("Load")
                button.clicked.connect(lambda _=False, p=path, t=tok: self.modelChosen.emit(p, t))
                self.tree.setItemWidget(item, 2, button)
            else:
                self.tree.setItemWidget(item, 2, self._download_cell(model_id))
        self.tree.expandAll()
        self.status.setText(error or f"{sum(r[0] == 'installed' for r in rows)} installed, "
                                     f"{sum(r[0] == 'catalog' for r in rows)} to download")

    def _download_cell(self, model_id: str) -> QWidget:
        cell = QWidget()
        lay = QHBoxLayout(cell)
        lay.setContentsMargins(0, 0, 0, 0)
        bar = QProgressBar(visible=False, textVisible=True)
        bar.setMaximumWidth(120)
        button = QPushButton("Download")
        button.setObjectName(f"download:{model_id}")
        button.clicked.connect(lambda _=False: self.on_download_button_clicked(model_id, button, bar))
        lay.addWidget(bar)
        lay.addWidget(button)
        self._bars[model_id] = bar
        return cell

    def on_tree_item_double_clicked(self, item: QTreeWidgetItem, column: int) -> None:
        data = item.data(0, Qt.UserRole)
        if data is None:          # a section header
            return
        kind, model_id, path, tok = data
        if kind == "installed":
            self.modelChosen.emit(path, tok)

    def on_open_file_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a ggml model", "", "ggml models (*.bin);;All files (*)")
        if path:
            self.modelChosen.emit(path, "")

    # --- downloads -------------------------------------------------------------------
    def on_download_button_clicked(self, model_id: str, button: QPushButton, bar: QProgressBar) -> None:
        if model_id in self._controls:          # the button says "Cancel" while downloading
            self._controls[model_id].cancel()
            return
        from app.models.download import DownloadControl
        control = DownloadControl()
        self._controls[model_id] = control
        button.setText("Cancel")
        bar.setVisible(True)
        bar.setRange(0, 0)
        threading.Thread(target=self._download, args=(model_id, control), name="neox-download",
                         daemon=True).start()

    def _download(self, model_id: str, control) -> None:
        def progress(p):
            emit_from_thread(self.downloadProgress, model_id, int(p.done), int(p.total or 0), p.phase)
        try:
            self.manager().download(model_id, on_progress=progress, control=control)
        except Exception as e:   # noqa: BLE001 - shown in the status line
            emit_from_thread(self.downloadFinished, model_id, str(e) or type(e).__name__)
        else:
            emit_from_thread(self.downloadFinished, model_id, "")

    def on_download_progress(self, model_id: str, done: int, total: int, phase: str) -> None:
        bar = self._bars.get(model_id)
        if bar is None:
            return
        if total > 0:
            bar.setRange(0, 1000)
            bar.setValue(int(1000 * done / total))
            bar.setFormat(f"{phase} %p%")
        else:
            bar.setRange(0, 0)

    def on_download_finished(self, model_id: str, error: str) -> None:
        self._controls.pop(model_id, None)
        self.status.setText(f"{model_id}: {error}" if error else f"{model_id} downloaded")
        self.refresh()

    def cancel_downloads(self) -> None:
        """Pause running downloads (their .part files stay for a resume)."""
        for control in self._controls.values():
            control.pause()
