"""The "Compare checkpoints" window: one prompt on up to 6 revisions of a model, side by side.

Pick a model (installed revisions are grouped under their repository), tick up to six of its
revisions ("Add revision…" offers the missing ones, for Pythia its training steps, and installs
the one chosen), write a prompt and run: each revision is
opened, scored and continued in turn on a worker thread (`app.comparison`), and its column
fills in as soon as it is done: the prompt's perplexity, the continuation, then one row per
generated token with the probability that revision gave it (shaded: darker is surer).
Markdown and CSV exports are written off the GUI thread too.
"""
from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QComboBox, QDialog, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QListWidget,
                               QListWidgetItem, QPlainTextEdit, QPushButton, QSpinBox, QTableWidget,
                               QTableWidgetItem, QVBoxLayout)

from app.comparison import MAX_REVISIONS, Checkpoint, Cancelled, compare, to_csv, to_markdown
from app.models.hf_repos import is_pythia, pythia_steps
from app.threads import emit_from_thread

FIXED_ROWS = ("commit", "prompt perplexity", "continuation")


class ComparisonView(QDialog):
    """Runs one prompt on several installed revisions of a model and shows the results side by side."""

    modelsReady = Signal(dict, str)             # repo -> [record dicts], error
    resultReady = Signal(int, object)           # column, RevisionResult
    runFinished = Signal(str)                   # error ("" = done or stopped)
    exported = Signal(str, str)                 # path, error
    addRequested = Signal(str, str)             # repo, revision: the picker opens "Add from Hugging Face"

    def __init__(self, manager_factory, parent=None):
        super().__init__(parent)
        self.setObjectName("comparisonView")
        self.setWindowTitle("Compare checkpoints")
        self._factory = manager_factory
        self._models: dict[str, list[dict]] = {}
        self._stop = threading.Event()
        self._running = False
        self.results: list = []
        self.model = QComboBox(objectName="compareModel")
        self.revisions = QListWidget(objectName="compareRevisions")
        self.revisions.setMaximumHeight(96)
        self.missing = QComboBox(objectName="compareMissing", editable=True)
        self.missing.setToolTip("A revision of this model that is not installed yet (Pythia: its training steps)")
        self.missing.lineEdit().setPlaceholderText("revision to add")
        self.missing.setMinimumContentsLength(12)
        add = QPushButton("Add revision…", objectName="compareAddButton")
        add.setToolTip("Install this revision of the model from Hugging Face")
        self.prompt = QPlainTextEdit(objectName="comparePrompt")
        self.prompt.setPlaceholderText("The prompt every revision continues")
        self.prompt.setMaximumHeight(70)
        self.n_tokens = QSpinBox(objectName="compareTokens", minimum=1, maximum=256, value=12)
        self.seed = QSpinBox(objectName="compareSeed", minimum=-1, maximum=2**31 - 1, value=-1)
        self.seed.setSpecialValueText("greedy")
        self.seed.setToolTip("greedy, or sample with this seed (the same random stream for every revision)")
        self.run_button = QPushButton("Run", objectName="compareRunButton", default=True)
        self.stop_button = QPushButton("Stop", objectName="compareStopButton", enabled=False)
        self.md_button = QPushButton("Export Markdown…", objectName="compareExportMarkdown", enabled=False)
        self.csv_button = QPushButton("Export CSV…", objectName="compareExportCsv", enabled=False)
        self.table = QTableWidget(objectName="compareTable")
        self.table.setWordWrap(True)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.status = QLabel("", objectName="compareStatus", wordWrap=True)
        top = QHBoxLayout()
        top.addWidget(QLabel("Model"))
        top.addWidget(self.model, 1)
        top.addWidget(self.missing)
        top.addWidget(add)
        options = QHBoxLayout()
        options.addWidget(QLabel("New tokens"))
        options.addWidget(self.n_tokens)
        options.addWidget(QLabel("Seed"))
        options.addWidget(self.seed)
        options.addStretch(1)
        for b in (self.run_button, self.stop_button, self.md_button, self.csv_button):
            options.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(QLabel(f"Revisions (up to {MAX_REVISIONS})"))
        layout.addWidget(self.revisions)
        layout.addWidget(self.prompt)
        layout.addLayout(options)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)
        self.model.currentTextChanged.connect(self.on_model_current_text_changed)
        self.revisions.itemChanged.connect(self.on_revisions_item_changed)
        add.clicked.connect(self.on_add_clicked)
        self.run_button.clicked.connect(self.on_run_button_clicked)
        self.stop_button.clicked.connect(self.on_stop_button_clicked)
        self.md_button.clicked.connect(self.on_md_button_clicked)
        self.csv_button.clicked.connect(self.on_csv_button_clicked)
        self.modelsReady.connect(self.on_models_ready)
        self.resultReady.connect(self.on_result_ready)
        self.runFinished.connect(self.on_run_finished)
        self.exported.connect(self.on_exported)
        self.resize(980, 640)

    # --- choosing ----------------------------------------------------------------------
    def reload(self) -> None:
        """Read the installed revisions on a thread (the manifest is a file)."""
        self.status.setText("Reading the installed models…")

        def work():
            models, error = {}, ""
            try:
                manager = self._factory()
                for record in sorted(manager.manifest.models.values(), key=lambda m: m.installed_at):
                    if record.repo and record.commit:
                        models.setdefault(record.repo, []).append({
                            "label": f"{record.revision} ({record.output_type})", "revision": record.revision,
                            "path": str(manager.manifest.file_path(record)), "tokenizer": record.tokenizer or "",
                            "commit": record.commit})
            except Exception as exc:   # noqa: BLE001 - shown in the status line
                error = f"Installed models unavailable: {exc}"
            emit_from_thread(self.modelsReady, models, error)
        threading.Thread(target=work, name="neox-compare-list", daemon=True).start()

    def on_models_ready(self, models: dict, error: str) -> None:
        current = self.model.currentText()
        self._models = models
        self.model.blockSignals(True)
        self.model.clear()
        self.model.addItems(sorted(models))
        self.model.blockSignals(False)
        if current in models:
            self.model.setCurrentText(current)
        self.on_model_current_text_changed(self.model.currentText())
        self.status.setText(error or ("" if models else "No Hugging Face models installed yet: add one first"))

    def on_model_current_text_changed(self, repo: str) -> None:
        self.revisions.blockSignals(True)
        self.revisions.clear()
        for i, rev in enumerate(self._models.get(repo, [])):
            item = QListWidgetItem(rev["label"])
            item.setData(Qt.UserRole, rev)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Checked if i < MAX_REVISIONS else Qt.Unchecked)
            self.revisions.addItem(item)
        self.revisions.blockSignals(False)
        installed = {rev["revision"] for rev in self._models.get(repo, [])}
        offered = ["main", *pythia_steps()] if is_pythia(repo) else ["main"]
        self.missing.clear()
        self.missing.addItems([r for r in offered if r not in installed])

    def on_revisions_item_changed(self, item: QListWidgetItem) -> None:
        if item.checkState() == Qt.Checked and len(self.chosen()) > MAX_REVISIONS:
            item.setCheckState(Qt.Unchecked)
            self.status.setText(f"At most {MAX_REVISIONS} revisions at a time")

    def chosen(self) -> list[Checkpoint]:
        out = []
        for i in range(self.revisions.count()):
            item = self.revisions.item(i)
            if item.checkState() == Qt.Checked:
                rev = item.data(Qt.UserRole)
                out.append(Checkpoint(rev["revision"], rev["path"], rev["tokenizer"] or None, rev["commit"]))
        return out

    def on_add_clicked(self) -> None:
        self.addRequested.emit(self.model.currentText(), self.missing.currentText().strip())

    # --- running -----------------------------------------------------------------------
    def on_run_button_clicked(self) -> None:
        checkpoints, prompt = self.chosen(), self.prompt.toPlainText()
        if not checkpoints or not prompt.strip():
            self.status.setText("Tick at least one revision and write a prompt")
            return
        self.results = [None] * len(checkpoints)
        self.table.clear()
        self.table.setColumnCount(len(checkpoints))
        self.table.setHorizontalHeaderLabels([c.label for c in checkpoints])
        self.table.setRowCount(len(FIXED_ROWS) + self.n_tokens.value())
        self.table.setVerticalHeaderLabels([*FIXED_ROWS, *(str(i + 1) for i in range(self.n_tokens.value()))])
        self._set_running(True)
        self._stop.clear()
        seed = None if self.seed.value() < 0 else self.seed.value()
        self._seed = seed
        self.status.setText(f"Running {checkpoints[0].label}…")

        def work(n_tokens=self.n_tokens.value()):
            done = [0]

            def on_result(result):
                emit_from_thread(self.resultReady, done[0], result)
                done[0] += 1
            try:
                compare(checkpoints, prompt, n_tokens, seed, self._stop.is_set, on_result)
            except Cancelled:
                emit_from_thread(self.runFinished, "stopped")
            except Exception as exc:   # noqa: BLE001 - shown in the status line
                emit_from_thread(self.runFinished, str(exc))
            else:
                emit_from_thread(self.runFinished, "")
        threading.Thread(target=work, name="neox-compare", daemon=True).start()

    def on_stop_button_clicked(self) -> None:
        self._stop.set()

    def on_result_ready(self, column: int, result) -> None:
        self.results[column] = result
        ppl = f"{result.perplexity:.2f}" if result.perplexity is not None else "n/a"
        cells = [(result.checkpoint.commit or "")[:12], ppl if not result.error else "error",
                 result.error or result.text]
        for row, text in enumerate(cells):
            self.table.setItem(row, column, QTableWidgetItem(text))
        for i, step in enumerate(result.steps):
            item = QTableWidgetItem(f"{step.text!r}  {step.prob:.3f}")
            item.setToolTip(f"token {step.id}, probability {step.prob:.4f}")
            item.setBackground(QColor.fromHsvF(0.33, 0.15 + 0.6 * step.prob, 0.95))
            item.setForeground(QColor(20, 20, 20))
            self.table.setItem(len(FIXED_ROWS) + i, column, item)
        self.table.resizeRowToContents(2)
        following = column + 1
        if following < len(self.results):
            self.status.setText(f"Running {self.table.horizontalHeaderItem(following).text()}…")

    def on_run_finished(self, error: str) -> None:
        self._set_running(False)
        done = [r for r in self.results if r is not None]
        self.results = done
        self.md_button.setEnabled(bool(done))
        self.csv_button.setEnabled(bool(done))
        self.status.setText(f"Stopped after {len(done)} revision(s)" if error == "stopped" else
                            error or f"{len(done)} revision(s) compared")

    def _set_running(self, running: bool) -> None:
        self._running = running
        self.run_button.setEnabled(not running)
        self.stop_button.setEnabled(running)

    # --- exports -----------------------------------------------------------------------
    def on_md_button_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export Markdown", "comparison.md", "Markdown (*.md)")
        if path:
            self.export(path, "markdown")

    def on_csv_button_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export CSV", "comparison.csv", "CSV (*.csv)")
        if path:
            self.export(path, "csv")

    def export(self, path: str, kind: str) -> None:
        """Write the results as Markdown or CSV, on a thread."""
        text = (to_markdown(self.results, self.prompt.toPlainText(), getattr(self, "_seed", None))
                if kind == "markdown" else to_csv(self.results))

        def work():
            try:
                Path(path).write_text(text, encoding="utf-8")
            except OSError as exc:
                emit_from_thread(self.exported, path, exc.strerror or str(exc))
            else:
                emit_from_thread(self.exported, path, "")
        threading.Thread(target=work, name="neox-compare-export", daemon=True).start()

    def on_exported(self, path: str, error: str) -> None:
        self.status.setText(f"Cannot write {path}: {error}" if error else f"Exported {path}")

    def closeEvent(self, event) -> None:
        self._stop.set()
        super().closeEvent(event)
