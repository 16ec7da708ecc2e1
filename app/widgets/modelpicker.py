"""The model picker: installed models first, then the catalog with sizes and Download, "Open file…"
and "Remote server…" (the window opens `app.widgets.remotedialog`), "Add from Hugging Face…"
(`app.widgets.hfadddialog`) and "Compare checkpoints…" (`app.widgets.comparisonview`).

Models converted from Hugging Face are grouped under their repository, one row per installed
revision; a row's tooltip shows its provenance (revision, commit, output type, source files).
The catalog's GGUF files sit under their model beside its legacy files (format "GGUF", the
llama.cpp type, a size only once the hub has said it, else an em dash); Download runs the
pinned, verified install of `ModelManager.add_gguf`, and a type our reader refuses says so by name.

Each row's last column is its action (Load, Download, Cancel while downloading; the size
column shows the progress), drawn as link text rather than a button widget per row, so
rebuilding the list stays cheap for the GUI thread.

It sits on `app.models.ModelManager` (no Qt there). Everything that touches the disk or the
network — reading the manifest and catalog, downloading, importing — runs on a Python
thread; results come back through this widget's signals, which Qt queues to the GUI thread.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from PySide6.QtCore import QEvent, QSize, Qt, Signal
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (QFileDialog, QGridLayout, QHeaderView, QLabel, QPushButton, QTreeWidget,
                               QTreeWidgetItem, QVBoxLayout, QWidget)

from app.bundled import demo_model
from app.threads import emit_from_thread
from app.units import human_bytes
from engine.model_file import sniff_format

COLUMNS = ("Model", "Quant", "Format", "Size", "RAM", "")
MODEL_FILE_FILTER = "Models (*.gguf *.bin);;GGUF models (*.gguf);;Legacy ggml models (*.bin);;All files (*)"
NAME, QUANT, FORMAT, SIZE, RAM, ACTION = range(len(COLUMNS))


@dataclass(frozen=True)
class Row:
    """One model of the list, as the listing thread found it."""
    kind: str              # "installed" or "catalog"
    id: str
    label: str
    size: int | None
    path: str = ""         # the installed file
    tok: str = ""          # its tokenizer.json ("" = find or rebuild)
    group: str = ""        # the model (or Hugging Face repository) it is grouped under
    info: str = ""         # a converted model's provenance (tooltip)
    quant: str = ""
    fmt: str = ""          # the file format: "GGUF v3", or the legacy ggml era
    ram: int | None = None
    approx: bool = False   # `size` is estimated from the format (the hub has not said yet)
    refused: str = ""      # why this catalog file cannot run here ("" = it can)


def provenance(record) -> str:
    """A converted model's origin in words, for its tooltip."""
    recorded = record.source_sha256 if isinstance(record.source_sha256, dict) else {}
    sources = "\n".join(f"  {path}  {str(sha)[:16]}…" for path, sha in sorted(recorded.items()))
    return (f"{record.repo} @ {record.revision}\ncommit {record.commit}\noutput {record.output_type}, "
            f"converted by {record.engine_version} on {record.installed_at}\nsources (SHA-256):\n{sources}")


def size_text(row: Row) -> str:
    """The size column: exact, "~" estimated, or an em dash while only the hub could say it."""
    if not row.size:
        return "—"
    return ("~" if row.approx else "") + human_bytes(row.size)


class ModelPicker(QWidget):
    """Lists installed and downloadable models; emits `modelChosen(path, tokenizer_json)`."""

    modelChosen = Signal(str, str)              # model file, tokenizer.json ("" = find or rebuild)
    remoteRequested = Signal()                  # "Remote server…": the window opens the connect dialog
    statusesReady = Signal(list, str)           # [Row], error
    downloadProgress = Signal(str, int, int, str)   # id, done, total (0 unknown), phase
    downloadFinished = Signal(str, str)         # id, error ("" = success)

    def __init__(self, manager_factory=None, parent=None, *, settings=None, save_settings=None):
        super().__init__(parent)
        self.setObjectName("modelPicker")
        self._factory = manager_factory
        self._manager = None
        self._controls: dict = {}               # id -> DownloadControl of running downloads
        self._items: dict[str, QTreeWidgetItem] = {}
        self._rows: dict[str, Row] = {}
        self._failures: dict[str, tuple[str, str]] = {}   # id -> (cause, full message) of a failed download
        self._started: dict[str, tuple[float, int]] = {}  # id -> (time, bytes) when its download began
        self._loaded_path = ""
        self.tree = QTreeWidget(objectName="modelTree")
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setRootIsDecorated(False)   # sections and model groups are always expanded
        self.tree.setIndentation(10)
        self.tree.setUniformRowHeights(True)
        header = self.tree.header()
        header.setStretchLastSection(True)         # the action takes what is left over
        header.setMinimumSectionSize(24)
        for column in (NAME, QUANT, FORMAT, SIZE, RAM):   # never cut: a narrow dock scrolls sideways instead
            header.setSectionResizeMode(column, QHeaderView.ResizeToContents)
        self.tree.itemDoubleClicked.connect(self.on_tree_item_double_clicked)
        self.tree.installEventFilter(self)       # Enter on a row: its action, as a click on it
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
        buttons = QGridLayout()       # two a row: the dock stays narrow enough for a small window
        for n, button in enumerate((open_button, remote, add_hf, refresh, compare)):
            buttons.addWidget(button, n // 2, n % 2)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.settings = settings                # the window's Settings, for remembered answers
        self.save_settings = save_settings      # and how to write them
        self._installer = None
        self.hf_dialog = None
        self.comparison = None
        self.statusesReady.connect(self.on_statuses_ready)
        self.downloadProgress.connect(self.on_download_progress)
        self.downloadFinished.connect(self.on_download_finished)

    def sizeHint(self) -> QSize:
        # wide enough for "q5_1 (ggmlv3)" under its group, the facts' columns and the action
        return QSize(self.fontMetrics().horizontalAdvance("M") * 40, 420)

    def columns_width(self) -> int:
        """The picker's width with every column of the list in sight: what the list now scrolls
        sideways is what it lacks."""
        return self.width() + self.tree.horizontalScrollBar().maximum()

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
            rows.append(Row("installed", "demo", "Demo model (bundled)", demo.stat().st_size, str(demo),
                            str(tok) if tok.is_file() else "", fmt=sniff_format(demo)))
        try:
            manager = self.manager()
            rows += [row for s in manager.statuses() if (row := self._row(manager, s)) is not None]
        except Exception as e:   # noqa: BLE001 - a broken manifest must not stop the picker
            error = f"Model list unavailable: {e}"
        rows.sort(key=lambda r: r.kind != "installed")
        emit_from_thread(self.statusesReady, rows, error)

    @staticmethod
    def _row(manager, s) -> Row | None:
        """The list's row for one ModelStatus (None: neither installed nor in the catalog)."""
        e, facts, label = s.entry, {}, s.id
        if e is not None:    # "Pythia 70M deduped q4_0 (ggmlv3)": grouped under "Pythia 70M deduped"
            group = e.name.split(f" {e.quant}")[0].strip() or e.model
            facts = dict(quant=e.quant, fmt=e.era, ram=e.ram_estimate, group=group)
            label = e.name[len(group):].strip() or e.name
            if e.format == "gguf":
                facts["info"] = f"{e.repo} / {e.path} @ {e.revision}\n" + (
                    f"not supported: {e.refused}" if e.refused else
                    "size and SHA-256 from the hub's tree API when it is downloaded")
        if s.installed is not None and s.file is not None:
            record, tok = s.installed, s.installed.tokenizer or ""
            if not tok:
                found = manager.tokenizer_path(s.id)
                tok = str(found) if found else ""
            if record.commit and record.origin == "huggingface":   # converted: grouped under its repository
                facts = dict(quant=record.output_type, fmt=sniff_format(s.file), group=record.repo,
                             info=provenance(record))
                label = f"{record.revision} · {record.output_type}"
            elif record.commit:        # a GGUF file of the hub: with its catalog facts, else under its repository
                info = (f"{record.repo} / {record.path} @ {record.revision}\ncommit {record.commit}\n"
                        f"SHA-256 {record.sha256}\ninstalled {record.installed_at}")
                if e is None:
                    facts = dict(quant=record.output_type or "", fmt=sniff_format(s.file), group=record.repo)
                    label = record.path or s.id
                facts["info"] = info
            elif e is None:
                facts = dict(fmt=sniff_format(s.file), info=f"{s.id}\n{s.file}\nimported {record.installed_at[:10]}")
            return Row("installed", s.id, label, record.size, str(s.file), tok, **facts)
        if e is None:
            return None
        size = e.size or e.approx_size
        return Row("catalog", s.id, label, size, approx=not e.size, refused=e.refused, **facts)

    def _section(self, title: str) -> QTreeWidgetItem:
        section = QTreeWidgetItem([title])
        font = section.font(0)
        font.setBold(True)
        section.setFont(0, font)
        section.setFlags(Qt.ItemIsEnabled)
        self.tree.addTopLevelItem(section)
        section.setFirstColumnSpanned(True)
        return section

    def _group(self, groups: dict, parent: QTreeWidgetItem, title: str) -> QTreeWidgetItem:
        """The model's (or repository's) group under a section: one per model, its files below."""
        key = (id(parent), title)
        if key not in groups:
            groups[key] = QTreeWidgetItem([title])
            groups[key].setFlags(Qt.ItemIsEnabled)
            groups[key].setToolTip(NAME, f"{title}: its files")
            parent.addChild(groups[key])
            groups[key].setFirstColumnSpanned(True)
        return groups[key]

    def on_statuses_ready(self, rows: list, error: str) -> None:
        self.tree.clear()
        self._items.clear()
        self._rows = {row.id: row for row in rows}
        sections = {"installed": self._section("Installed"), "catalog": self._section("Download")}
        groups: dict = {}
        for row in rows:
            item = QTreeWidgetItem([row.label, row.quant, row.fmt, size_text(row),
                                    human_bytes(row.ram) if row.ram else "", ""])
            item.setData(0, Qt.UserRole, (row.kind, row.id, row.path, row.tok))
            item.setToolTip(NAME, row.info or f"{row.group} {row.label}".strip() + f"\n{row.path or row.id}")
            item.setToolTip(RAM, "Memory needed to run it with the full context (estimate)")
            for column in (SIZE, RAM):
                item.setTextAlignment(column, Qt.AlignRight | Qt.AlignVCenter)
            parent = sections[row.kind]
            (self._group(groups, parent, row.group) if row.group else parent).addChild(item)
            self._items[row.id] = item
            self._show_state(row.id)
        self.tree.expandAll()
        self._show_summary(error)

    def _show_summary(self, error: str = "") -> None:
        rows = self._rows.values()
        failed = [f"{model_id}: {message}" for model_id, (_, message) in self._failures.items()]
        refused = sum(r.kind == "catalog" and bool(r.refused) for r in rows)
        self.status.setText("\n".join([error or f"{sum(r.kind == 'installed' for r in rows)} installed, "
                                                 f"{sum(r.kind == 'catalog' for r in rows) - refused} to download"
                                                 + (f", {refused} not supported" if refused else ""), *failed]))

    def _show_state(self, model_id: str, progress: str = "") -> None:
        """A row's action and state: Load / Loaded, Download, Cancel with the progress, or the
        failure's cause with Retry (it stays until the next attempt)."""
        item, row = self._items.get(model_id), self._rows.get(model_id)
        if item is None or row is None:
            return
        loaded = row.kind == "installed" and self._loaded_path and row.path == self._loaded_path
        cause = self._failures.get(model_id, ("", ""))[0]
        if row.kind == "installed":
            action, tip = ("Loaded" if loaded else "Load"), "Load this model"
        elif row.refused:
            action, tip = "Not supported", f"{row.quant}: {row.refused}"
        elif model_id in self._controls:
            action, tip = "Cancel", "Cancel the download (what arrived is deleted)"
        else:
            action, tip = ("Retry" if cause else "Download"), "Download (click again to cancel)"
        item.setText(ACTION, action)
        item.setToolTip(ACTION, tip)
        state = progress or (f"⚠ {cause}" if cause and model_id not in self._controls else "")
        item.setText(SIZE, state or size_text(row))
        if cause and not progress:
            item.setToolTip(SIZE, self._failures[model_id][1])
            item.setForeground(SIZE, QColor("#d14b4b"))
        else:
            item.setData(SIZE, Qt.ForegroundRole, None)
        role = QPalette.PlaceholderText if row.refused and row.kind != "installed" else QPalette.Link
        item.setForeground(ACTION, QColor(self.palette().color(role)))
        for column in range(len(COLUMNS)):
            font = item.font(column)
            font.setBold(bool(loaded))
            font.setUnderline(column == ACTION and not loaded and action != "Not supported")
            item.setFont(column, font)
        item.setText(NAME, ("● " if loaded else "") + row.label)

    def changeEvent(self, event) -> None:
        """A theme switch: the rows' link and warning colours follow the new palette at once."""
        super().changeEvent(event)
        if event.type() == QEvent.PaletteChange:
            for model_id in self._items:
                self._show_state(model_id)

    def set_loaded(self, path: str) -> None:
        """Mark the row of the model now loaded (`path`; "" for none or a remote server)."""
        previous, self._loaded_path = self._loaded_path, str(path or "")
        for model_id, row in self._rows.items():
            if row.path and row.path in (previous, self._loaded_path):
                self._show_state(model_id)

    def item_for(self, model_id: str) -> QTreeWidgetItem | None:
        """The row of a model in the current list."""
        return self._items.get(model_id)

    def on_tree_item_clicked(self, item: QTreeWidgetItem, column: int) -> None:
        """The last column is the row's action: Load, Download, Cancel or Retry."""
        data = item.data(0, Qt.UserRole)
        if data is None or column != ACTION:
            return
        kind, model_id, path, tok = data
        if kind == "installed":
            self.modelChosen.emit(path, tok)
        elif not getattr(self._rows.get(model_id), "refused", ""):
            self.toggle_download(model_id)

    def eventFilter(self, watched, event) -> bool:
        if watched is self.tree and event.type() == QEvent.KeyPress and event.key() in (Qt.Key_Return, Qt.Key_Enter) \
                and self.tree.currentItem() is not None:
            self.on_tree_item_clicked(self.tree.currentItem(), ACTION)
            return True
        return super().eventFilter(watched, event)

    def on_tree_item_double_clicked(self, item: QTreeWidgetItem, column: int) -> None:
        data = item.data(0, Qt.UserRole)
        if data is None:          # a section header
            return
        kind, model_id, path, tok = data
        if kind == "installed":
            self.modelChosen.emit(path, tok)

    def on_open_file_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a model", "", MODEL_FILE_FILTER)
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

    def on_comparison_add_requested(self, repo: str, revision: str) -> None:
        self.open_hf_dialog(repo, revision)

    # --- downloads -------------------------------------------------------------------
    def toggle_download(self, model_id: str) -> None:
        """Start downloading a catalog model, or cancel its running download."""
        if model_id in self._controls:
            self._controls[model_id].cancel()
            return
        from app.models.download import DownloadControl
        control = DownloadControl()
        self._controls[model_id] = control
        self._failures.pop(model_id, None)
        self._started[model_id] = (time.monotonic(), 0)
        self._show_state(model_id, "starting…")
        self._show_summary()
        threading.Thread(target=self._download, args=(model_id, control), name="neox-download",
                         daemon=True).start()

    def _download(self, model_id: str, control) -> None:
        from app.models.download import DownloadStopped, failure_cause

        def progress(p):
            emit_from_thread(self.downloadProgress, model_id, int(p.done), int(p.total or 0), p.phase)
        try:
            self.manager().download(model_id, on_progress=progress, control=control)
        except DownloadStopped:
            emit_from_thread(self.downloadFinished, model_id, "cancelled")
        except Exception as e:   # noqa: BLE001 - shown on the row, with Retry
            message = str(e) or type(e).__name__
            emit_from_thread(self.downloadFinished, model_id, f"{failure_cause(e)}\n{message}")
        else:
            emit_from_thread(self.downloadFinished, model_id, "")

    def on_download_progress(self, model_id: str, done: int, total: int, phase: str) -> None:
        start, first = self._started.get(model_id, (time.monotonic(), done))
        if phase != "downloading" or done < first:
            self._started[model_id] = (time.monotonic(), done)     # speed counts this run's bytes only
        self._show_state(model_id, download_text(done, total, phase, time.monotonic() - start, done - first))

    def on_download_finished(self, model_id: str, error: str) -> None:
        """A failure stays on its row (cause, Retry) and in the status line until the next attempt."""
        self._controls.pop(model_id, None)
        self._started.pop(model_id, None)
        if error and error != "cancelled":
            cause, _, message = error.partition("\n")
            self._failures[model_id] = (cause, message or cause)
        self._show_state(model_id)
        self._show_summary()
        if not error:
            self.refresh()

    def cancel_downloads(self) -> None:
        """Pause running downloads (their .part files stay for a resume)."""
        for control in self._controls.values():
            control.pause()


def download_text(done: int, total: int, phase: str, seconds: float, new_bytes: int) -> str:
    """A download's progress for its row: "42% · 3.1 MB/s · 0:12 left" (speed and time left once
    a second of this run has passed)."""
    text = f"{100 * done // total}%" if total > 0 else human_bytes(done)
    text = text if phase == "downloading" else f"{phase} {text}"
    if phase == "downloading" and seconds >= 1.0 and new_bytes > 0:
        speed = new_bytes / seconds
        text += f" · {human_bytes(speed)}/s"
        if total > done:
            left = int((total - done) / speed)
            text += f" · {left // 60}:{left % 60:02d} left"
    return text
