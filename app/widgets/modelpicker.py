"""The model picker: installed models first, then the catalog with sizes and Download, "Open file…"
and "Remote server…" (the window opens `app.widgets.remotedialog`), "Add from Hugging Face…"
(`app.widgets.hfadddialog`) and "Compare checkpoints…" (`app.widgets.comparisonview`).

Models converted from Hugging Face are grouped under their repository, one row per installed
revision; a row's tooltip shows its provenance (revision, commit, output type, source files).

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


def provenance(record) -> str:
    """A converted model's origin in words, for its tooltip."""
    recorded = record.source_sha256 if isinstance(record.source_sha256, dict) else {}
    sources = "\n".join(f"  {path}  {str(sha)[:16]}…" for path, sha in sorted(recorded.items()))
    return (f"{record.repo} @ {record.revision}\ncommit {record.commit}\noutput {record.output_type}, "
            f"converted by {record.engine_version} on {record.installed_at}\nsources (SHA-256):\n{sources}")


class ModelPicker(QWidget):
    """Lists installed and downloadable models; emits `modelChosen(path, tokenizer_json)`."""

    modelChosen = Signal(str, str)              # model file, tokenizer.json ("" = find or rebuild)
    remoteRequested = Signal()                  # "Remote server…": the window opens the connect dialog
    statusesReady = Signal(list, str)           # [(kind, id, label, size, path, tokenizer, group, info)], error
    downloadProgress = Signal(str, int, int, str)   # id, done, total (0 unknown), phase
    downloadFinished = Signal(str, str)         # id, error ("" = success)

    def __init__(self, manager_factory=None, parent=None, *, settings=None, save_settings=None):
        super().__init__(parent)
        self.setObjectName("modelPicker")
        self._factory = manager_factory
        self._manager = None
        self._controls: dict = {}               # id -> DownloadControl of running downloads
        self._items: dict[str, QTreeWidgetItem] = {}
        self.tree = QTreeWidget(objectName="modelTree")
        self.tree.setHeaderLabels(["Model", "Size", ""])
        self.tree.setRootIsDecorated(False)   # sections and repository groups are always expanded
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
        add_hf = QPushButton("Add from Hugging Face…", objectName="addHuggingFaceButton")
        add_hf.setToolTip("Download a GPT-NeoX checkpoint (e.g. a Pythia training step) and convert it")
        add_hf.clicked.connect(self.on_add_hf_clicked)
        compare = QPushButton("Compare checkpoints…", objectName="compareCheckpointsButton")
        compare.setToolTip("Run one prompt on several revisions of a model, side by side")
        compare.clicked.connect(self.on_compare_clicked)
        buttons = QHBoxLayout()
        buttons.addWidget(open_button)
        buttons.addWidget(remote)
        buttons.addWidget(refresh)
        buttons.addStretch(1)
        hf_buttons = QHBoxLayout()
        hf_buttons.addWidget(add_hf)
        hf_buttons.addWidget(compare)
        hf_buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        layout.addLayout(hf_buttons)
        self.settings = settings                # the window's Settings, for remembered answers
        self.save_settings = save_settings      # and how to write them
        self._installer = None
        self.hf_dialog = None
        self.comparison = None
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
                         str(tok) if tok.is_file() else "", "", ""))
        try:
            manager = self.manager()
            for s in manager.statuses():
                label = s.entry.name if s.entry else s.id
                if s.installed is not None and s.file is not None:
                    tok = s.installed.tokenizer or ""
                    if not tok:
                        found = manager.tokenizer_path(s.id)
                        tok = str(found) if found else ""
                    record = s.installed
                    group, info = "", ""
                    if record.commit:          # converted from Hugging Face: grouped under its repository
                        group, label = record.repo, f"{record.revision} · {record.output_type}"
                        info = provenance(record)
                    rows.append(("installed", s.id, label, record.size, str(s.file), tok, group, info))
                elif s.entry is not None:
                    rows.append(("catalog", s.id, label, s.entry.size or s.entry.approx_size, "", "", "", ""))
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
        groups: dict[str, QTreeWidgetItem] = {}
        for kind, model_id, label, size, path, tok, group, info in rows:
            downloading = model_id in self._controls
            action = "Load" if kind == "installed" else ("Cancel" if downloading else "Download")
            item = QTreeWidgetItem([label, (human_bytes(size) if size else "?"), action])
            item.setData(0, Qt.UserRole, (kind, model_id, path, tok))
            item.setToolTip(0, info or f"{label}\n{path or model_id}")
            item.setToolTip(2, "Load this model" if kind == "installed" else "Download (click again to cancel)")
            item.setForeground(2, link)
            font = item.font(2)
            font.setUnderline(True)
            item.setFont(2, font)
            parent = sections[kind]
            if group:
                if group not in groups:
                    groups[group] = QTreeWidgetItem([group, "", ""])
                    groups[group].setFlags(Qt.ItemIsEnabled)
                    groups[group].setToolTip(0, f"{group}: the installed revisions")
                    parent.addChild(groups[group])
                parent = groups[group]
            parent.addChild(item)
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

    # --- Hugging Face ----------------------------------------------------------------
    def installer(self):
        """The one HFInstall controller of this picker (installs run one at a time)."""
        if self._installer is None:
            from app.hfinstall import HFInstall
            self._installer = HFInstall(self.manager, self)
            self._installer.finished.connect(self.on_installer_finished)
        return self._installer

    def on_add_hf_clicked(self) -> None:
        self.open_hf_dialog()

    def open_hf_dialog(self, repo: str = "", revision: str = ""):
        """Show "Add from Hugging Face" (non-modal), preset to `repo` when given."""
        from app.widgets.hfadddialog import HFAddDialog
        if self.hf_dialog is None:
            self.hf_dialog = HFAddDialog(self.installer(), self.settings, self.save_settings, self, repo, revision)
        elif repo:
            self.hf_dialog.repo.setCurrentText(repo)
            if revision:
                self.hf_dialog.revision.setCurrentText(revision)
        self.hf_dialog.show()
        self.hf_dialog.raise_()
        return self.hf_dialog

    def on_installer_finished(self, model_id: str, error: str) -> None:
        if not error:
            self.refresh()
            if self.comparison is not None:
                self.comparison.reload()

    def on_compare_clicked(self) -> None:
        self.open_comparison()

    def open_comparison(self):
        """Show "Compare checkpoints" (non-modal); it lists the installed revisions on a thread."""
        from app.widgets.comparisonview import ComparisonView
        if self.comparison is None:
            self.comparison = ComparisonView(self.manager, self)
            self.comparison.addRequested.connect(self.on_comparison_add_requested)
        self.comparison.reload()
        self.comparison.show()
        self.comparison.raise_()
        return self.comparison

    def on_comparison_add_requested(self, repo: str) -> None:
        self.open_hf_dialog(repo)

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
