"""The model picker: installed models first, then the catalog with sizes and Download, "Open file…"
and "Remote server…" (the window opens `app.widgets.remotedialog`).

Each row's last column is its action (Load, Download, Cancel while downloading; the size
column shows the progress), drawn as link text rather than a button widget per row, so
rebuilding the list stays cheap for the GUI thread.

It sits on `app.models.ModelManager` (no Qt there). Everything that touches the disk or the
network — reading the manifest and catalog, downloading, importing — runs on a Python
thread; results come back through this widget's signals, which Qt queues to the GUI thread.
"""
from __future__ import annotations

import threading

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QHeaderView, QLabel, QPushButton, QTreeWidget,
                               QTreeWidgetItem, QVBoxLayout, QWidget)

from app.bundled import demo_model
from app.threads import emit_from_thread
from app.units import human_bytes


class ModelPicker(QWidget):
    """Lists installed and downloadable models; emits `modelChosen(path, tokenizer_json)`."""

    modelChosen = Signal(str, str)              # model file, tokenizer.json ("" = find or rebuild)
    remoteRequested = Signal()                  # "Remote server…": the window opens the connect dialog
    statusesReady = Signal(list, str)           # [(kind, id, label, size, path, tokenizer)], error
    downloadProgress = Signal(str, int, int, str)   # id, done, total (0 unknown), phase
    downloadFinished = Signal(str, str)         # id, error ("" = success)

    def __init__(self, manager_factory=None, parent=None):
        super().__init__(parent)
        self.setObjectName("modelPicker")
        self._factory = manager_factory
        self._manager = None
        self._controls: dict = {}               # id -> DownloadControl of running downloads
        self._items: dict[str, QTreeWidgetItem] = {}
        self.tree = QTreeWidget(objectName="modelTree")
        self.tree.setHeaderLabels(["Model", "Size", ""])
        self.tree.setRootIsDecorated(False)
        self.tree.setIndentation(8)
        self.tree.setStyleSheet("QTreeView::item { padding: 2px 0px; }")
        self.tree.header().setStretchLastSection(False)
        self.tree.header().setSectionResizeMode(0, QHeaderView.Stretch)
        self.tree.header().setSectionResizeMode(1, QHeaderView.ResizeToContents)
        self.tree.header().setSectionResizeMode(2, QHeaderView.ResizeToContents)
        self.tree.itemDoubleClicked.connect(self.on_tree_item_double_clicked)
        self.tree.itemClicked.connect(self.on_tree_item_clicked)
        self.status = QLabel("", objectName="modelPickerStatus")
        self.status.setWordWrap(True)
        open_button = QPushButton("Open file…", objectName="openModelFileButton")
        open_button.clicked.connect(self.on_open_file_clicked)
        refresh = QPushButton("Refresh", objectName="refreshModelsButton")
        refresh.clicked.connect(self.on_refresh_clicked)
        remote = QPushButton("Remote server…", objectName="remoteServerButton")
        remote.setToolTip("Write with a model on a KoboldCpp, llama.cpp or OpenAI-compatible server")
        remote.clicked.connect(self.remoteRequested)
        buttons = QHBoxLayout()
        buttons.addWidget(open_button)
        buttons.addWidget(remote)
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
        # wide enough for "Pythia 410M deduped q5_1 (ggmlv3)" next to its size and action
        return QSize(self.fontMetrics().horizontalAdvance("M") * 38, 420)

    def manager(self):
        if self._manager is None:
            if self._factory is not None:
                self._manager = self._factory()
            else:
                from app.models.manager import ModelManager
                self._manager = ModelManager()
        return self._manager

    # --- listing ---------------------------------------------------------------------
    def on_refresh_clicked(self) -> None:
        self.refresh()

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
        self._items.clear()
        sections = {"installed": self._section("Installed"), "catalog": self._section("Download")}
        link = QColor(self.palette().color(QPalette.Link))
        for kind, model_id, label, size, path, tok in rows:
            downloading = model_id in self._controls
            action = "Load" if kind == "installed" else ("Cancel" if downloading else "Download")
            item = QTreeWidgetItem([label, (human_bytes(size) if size else "?"), action])
            item.setData(0, Qt.UserRole, (kind, model_id, path, tok))
            item.setToolTip(0, f"{label}\n{path or model_id}")
            item.setToolTip(2, "Load this model" if kind == "installed" else "Download (click again to cancel)")
            item.setForeground(2, link)
            font = item.font(2)
            font.setUnderline(True)
            item.setFont(2, font)
            sections[kind].addChild(item)
            self._items[model_id] = item
        self.tree.expandAll()
        self.status.setText(error or f"{sum(r[0] == 'installed' for r in rows)} installed, "
                                     f"{sum(r[0] == 'catalog' for r in rows)} to download")

    def item_for(self, model_id: str) -> QTreeWidgetItem | None:
        """The row of a model in the current list."""
        return self._items.get(model_id)

    def on_tree_item_clicked(self, item: QTreeWidgetItem, column: int) -> None:
        """The third column is the row's action: Load, Download or Cancel."""
        data = item.data(0, Qt.UserRole)
        if data is None or column != 2:
            return
        kind, model_id, path, tok = data
        if kind == "installed":
            self.modelChosen.emit(path, tok)
        else:
            self.toggle_download(model_id)

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
    def toggle_download(self, model_id: str) -> None:
        """Start downloading a catalog model, or cancel its running download."""
        if model_id in self._controls:
            self._controls[model_id].cancel()
            return
        from app.models.download import DownloadControl
        control = DownloadControl()
        self._controls[model_id] = control
        item = self._items.get(model_id)
        if item is not None:
            item.setText(2, "Cancel")
            item.setText(1, "starting…")
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
        item = self._items.get(model_id)
        if item is not None:
            item.setText(1, f"{phase} {100 * done // total}%" if total > 0 else f"{phase} {human_bytes(done)}")

    def on_download_finished(self, model_id: str, error: str) -> None:
        self._controls.pop(model_id, None)
        self.status.setText(f"{model_id}: {error}" if error else f"{model_id} downloaded")
        self.refresh()

    def cancel_downloads(self) -> None:
        """Pause running downloads (their .part files stay for a resume)."""
        for control in self._controls.values():
            control.pause()
