"""The "Add from Hugging Face" dialog: repository, revision (Pythia's steps in a picker), output type.

The repository box lists the GPT-NeoX repositories we know and accepts any other `owner/name`
(its config.json decides). For a Pythia repository the revision box offers the 154 training
steps; any branch, tag or commit may be typed. The install itself runs in the `HFInstall`
controller, off the GUI thread; this widget only shows its progress. Whether to delete the
downloaded checkpoint afterwards is asked when the install ends, and the answer can be kept
("hf_checkpoint_policy" in the settings: ask, keep or delete).
"""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QFormLayout, QHBoxLayout, QLabel, QProgressBar,
                               QPushButton, QVBoxLayout)

from app.models.hf_checkpoint import OUTPUT_TYPES, default_output_type
from app.models.hf_repos import KNOWN_REPOS, is_pythia, pythia_steps
from app.units import free_ram_bytes, human_bytes

AUTOMATIC = "automatic (from free RAM)"


class HFAddDialog(QDialog):
    """Chooses repo@revision and type, runs the install through an HFInstall, reports the outcome."""

    installed = Signal(str)                      # the new model's id

    def __init__(self, installer, settings=None, save_settings=None, parent=None, repo: str = "",
                 revision: str = ""):
        super().__init__(parent)
        self.setObjectName("hfAddDialog")
        self.setWindowTitle("Add from Hugging Face")
        self.installer = installer
        self.settings = settings
        self.save_settings = save_settings or (lambda: None)
        self.repo = QComboBox(objectName="hfRepo", editable=True)
        self.repo.addItems(KNOWN_REPOS)
        self.repo.setToolTip("A GPT-NeoX repository (owner/name); any other one whose config.json says "
                             "GPTNeoXForCausalLM works too")
        self.revision = QComboBox(objectName="hfRevision", editable=True)
        self.revision.setToolTip("A branch, tag or commit; Pythia's training checkpoints are step0 … step143000")
        self.out_type = QComboBox(objectName="hfType")
        self.out_type.addItems([AUTOMATIC, *OUTPUT_TYPES])
        self.out_type.setToolTip(f"Weights type; automatic picks {default_output_type(1_400_000_000, free_ram_bytes())} "
                                 "for a 1.4B model on this machine's free RAM")
        form = QFormLayout()
        form.addRow("Repository", self.repo)
        form.addRow("Revision", self.revision)
        form.addRow("Output type", self.out_type)
        self.status = QLabel("", objectName="hfStatus", wordWrap=True)
        self.bar = QProgressBar(objectName="hfProgress")
        self.bar.setVisible(False)
        self.install_button = QPushButton("Install", objectName="hfInstallButton", default=True)
        self.cancel_button = QPushButton("Cancel", objectName="hfCancelButton", enabled=False)
        close = QPushButton("Close", objectName="hfCloseButton")
        self.install_button.clicked.connect(self.on_install_button_clicked)
        self.cancel_button.clicked.connect(self.on_cancel_button_clicked)
        close.clicked.connect(self.reject)
        # asked when an install ends (unless the answer was kept)
        self.ask = QLabel("Delete the downloaded checkpoint? The converted model stays.", objectName="hfAsk")
        self.delete_button = QPushButton("Delete it", objectName="hfDeleteButton")
        self.keep_button = QPushButton("Keep it", objectName="hfKeepButton")
        self.remember = QCheckBox("Remember my answer", objectName="hfRemember")
        self.delete_button.clicked.connect(self.on_delete_button_clicked)
        self.keep_button.clicked.connect(self.on_keep_button_clicked)
        ask_row = QHBoxLayout()
        for w in (self.ask, self.delete_button, self.keep_button, self.remember):
            ask_row.addWidget(w)
        self._show_question(False)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for b in (self.install_button, self.cancel_button, close):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.bar)
        layout.addWidget(self.status)
        layout.addLayout(ask_row)
        layout.addLayout(buttons)
        self.repo.currentTextChanged.connect(self.on_repo_current_text_changed)
        installer.planned.connect(self.on_installer_planned)
        installer.progress.connect(self.on_installer_progress)
        installer.finished.connect(self.on_installer_finished)
        installer.checkpointDeleted.connect(self.on_installer_checkpoint_deleted)
        self.repo.setCurrentText(repo or KNOWN_REPOS[0])
        self.on_repo_current_text_changed(self.repo.currentText())
        if revision:
            self.revision.setCurrentText(revision)

    def policy(self) -> str:
        return self.settings.get("hf_checkpoint_policy") if self.settings is not None else "ask"

    def on_repo_current_text_changed(self, repo: str) -> None:
        """Pythia repositories get the step list; others start at main."""
        current = self.revision.currentText()
        self.revision.clear()
        self.revision.addItems(["main", *pythia_steps()] if is_pythia(repo.strip()) else ["main"])
        if current:
            self.revision.setCurrentText(current)

    def chosen_type(self) -> str | None:
        text = self.out_type.currentText()
        return None if text == AUTOMATIC else text

    def on_install_button_clicked(self) -> None:
        repo, revision = self.repo.currentText().strip(), self.revision.currentText().strip() or "main"
        self._show_question(False)
        self.install_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.bar.setVisible(True)
        self.bar.setRange(0, 0)
        self.status.setText(f"Resolving {repo}@{revision}…")
        if not self.installer.start(repo, revision, self.chosen_type(), keep_checkpoint=self.policy() != "delete"):
            self.install_button.setEnabled(True)
            self.status.setText("Another install is still running")

    def on_cancel_button_clicked(self) -> None:
        self.installer.cancel()
        self.status.setText("Stopping… (Install again resumes where it stopped)")

    def on_installer_planned(self, text: str) -> None:
        self.status.setText(text)

    def on_installer_progress(self, phase: str, done: int, total: int, text: str) -> None:
        if total > 0:
            # QProgressBar counts in int: scale gigabytes of bytes to per-mille
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(1000 * done / total))
        self.bar.setFormat(("Downloading" if phase == "download" else "Converting") + " %p%")
        self.status.setText(text)

    def on_installer_finished(self, model_id: str, error: str) -> None:
        self.install_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.bar.setVisible(False)
        if error:
            self.status.setText(error)
            return
        result = self.installer.last
        where = ""
        if result is not None and result.checkpoint_dir is not None:
            where = (f"; the downloaded checkpoint ({human_bytes(self.installer.checkpoint_bytes)}) "
                     f"is in {result.checkpoint_dir}")
            self._show_question(self.policy() == "ask")
        self.status.setText(f"Installed {model_id}{where}")
        self.installed.emit(model_id)

    def on_delete_button_clicked(self) -> None:
        self._answer("delete")
        self.installer.delete_checkpoint()

    def on_keep_button_clicked(self) -> None:
        self._answer("keep")

    def _answer(self, answer: str) -> None:
        self._show_question(False)
        if self.remember.isChecked() and self.settings is not None:
            self.settings.set("hf_checkpoint_policy", answer)
            self.save_settings()

    def on_installer_checkpoint_deleted(self, deleted: bool) -> None:
        self.status.setText(self.status.text().split(";")[0] + ("; downloaded checkpoint deleted" if deleted else ""))

    def _show_question(self, visible: bool) -> None:
        for w in (self.ask, self.delete_button, self.keep_button, self.remember):
            w.setVisible(visible)
