"""The "Remote server…" dialog: an address and an optional key, detection, the server's models.

Detecting the server (KoboldCpp, llama.cpp's server or a generic OpenAI-compatible one) and
listing its models are network requests, so they run on a Python thread and the answer comes
back through a queued signal; the dialog stays responsive and can be cancelled meanwhile.
"Use this server" hands the connected `app.remote` backend to the window (`backendChosen`)
and stores the key in the `KeyStore` (the settings keep only the address).
"""
from __future__ import annotations

import threading

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
                               QPushButton, QVBoxLayout)

from app.threads import emit_from_thread


# (label, app.remote.detect's kind): detection, or one API forced when detection guesses wrong
KINDS = (("Detect", None), ("KoboldCpp API", "koboldcpp"), ("llama.cpp server", "llamacpp"),
         ("OpenAI-compatible", "openai"))


def connect_to(url: str, api_key: str | None, kind: str | None = None):
    """Detect the server at `url` and read its model list: (backend, models). Raises RemoteError."""
    from app.remote import detect
    backend = detect(url, api_key or None, kind=kind)
    return backend, backend.models()


class RemoteDialog(QDialog):
    """Connect to a remote text-generation server and pick one of its models."""

    backendChosen = Signal(object)               # a connected app.remote backend, model selected
    detected = Signal(int, object, list, str)    # attempt, backend or None, models, error (from the thread)

    def __init__(self, settings, keystore, parent=None):
        super().__init__(parent)
        self.setObjectName("remoteDialog")
        self.setWindowTitle("Remote server")
        self.settings = settings
        self.keystore = keystore
        self.backend = None
        self._attempt = 0

        self.url_edit = QLineEdit(objectName="remoteUrlEdit")
        self.url_edit.setPlaceholderText("http://192.168.1.5:5001 (KoboldCpp, llama.cpp server, or /v1 OpenAI)")
        self.url_edit.setText(settings.get("remote_url"))
        self.key_edit = QLineEdit(objectName="remoteKeyEdit", echoMode=QLineEdit.Password)
        self.key_edit.setPlaceholderText("optional API key")
        self.connect_button = QPushButton("Connect", objectName="remoteConnectButton")
        self.kind_picker = QComboBox(objectName="remoteKindPicker")
        for label, kind in KINDS:
            self.kind_picker.addItem(label, kind)
        self.kind_picker.setToolTip("Which API to use; Detect asks the server (our own server and KoboldCpp "
                                    "speak both KoboldCpp's and OpenAI's)")
        self.model_picker = QComboBox(objectName="remoteModelPicker", enabled=False)
        self.status = QLabel("Type the server's address and press Connect.", objectName="remoteStatusLabel",
                             wordWrap=True)
        self.key_note = QLabel("", objectName="remoteKeyNote", wordWrap=True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Cancel)
        self.use_button = self.buttons.addButton("Use this server", QDialogButtonBox.AcceptRole)
        self.use_button.setObjectName("remoteUseButton")
        self.use_button.setEnabled(False)

        url_row = QHBoxLayout()
        url_row.addWidget(self.url_edit, 1)
        url_row.addWidget(self.connect_button)
        form = QFormLayout()
        form.addRow("Address", url_row)
        form.addRow("API key", self.key_edit)
        form.addRow("API", self.kind_picker)
        form.addRow("Model", self.model_picker)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.status)
        layout.addWidget(self.key_note)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(self.fontMetrics().horizontalAdvance("M") * 36)

        self.connect_button.clicked.connect(self.on_connect_clicked)
        self.url_edit.returnPressed.connect(self.on_connect_clicked)
        self.url_edit.editingFinished.connect(self.on_url_edit_finished)
        self.buttons.accepted.connect(self.on_use_clicked)
        self.buttons.rejected.connect(self.reject)
        self.detected.connect(self.on_detected)
        self.on_url_edit_finished()

    def on_url_edit_finished(self) -> None:
        """Fill in the key stored for this address, if any (and the field is empty)."""
        url = self.url_edit.text().strip()
        if url and not self.key_edit.text():
            try:
                self.key_edit.setText(self.keystore.get(url) or "")
            except Exception:   # noqa: BLE001 - a malformed address: connecting will say what is wrong
                pass

    def on_connect_clicked(self) -> None:
        self.connect_to_server()

    def connect_to_server(self) -> None:
        """Detect the server on a thread; `on_detected` shows the outcome."""
        url, key, kind = self.url_edit.text().strip(), self.key_edit.text().strip(), self.kind_picker.currentData()
        self._attempt += 1
        self.backend = None
        self.use_button.setEnabled(False)
        self.model_picker.clear()
        self.model_picker.setEnabled(False)
        self.status.setText(f"Connecting to {url}…")
        attempt = self._attempt

        def run():
            try:
                backend, models = connect_to(url, key, kind)
            except Exception as e:   # noqa: BLE001 - RemoteError, or a bad address: shown in the dialog
                emit_from_thread(self.detected, attempt, None, [], str(e) or type(e).__name__)
            else:
                emit_from_thread(self.detected, attempt, backend, models, "")
        threading.Thread(target=run, name="neox-remote-detect", daemon=True).start()

    def on_detected(self, attempt: int, backend, models: list, error: str) -> None:
        if attempt != self._attempt:      # an older attempt answered late
            return
        if backend is None:
            self.status.setText(f"Could not connect: {error}")
            return
        self.backend = backend
        self.model_picker.addItems([str(m) for m in models] or [backend.model or ""])
        if backend.model:
            self.model_picker.setCurrentText(backend.model)
        self.model_picker.setEnabled(len(models) > 1)
        self.status.setText(f"Connected: {backend.describe()}")
        self.use_button.setEnabled(True)
        key = self.key_edit.text().strip()
        if key and not self.keystore.persistent:
            self.key_note.setText(f"The key will be kept in {self.keystore.where}.")

    def on_use_clicked(self) -> None:
        self.use_server()

    def use_server(self) -> None:
        """Hand the connected backend to the window and remember the address (the key: KeyStore)."""
        if self.backend is None:
            return
        if self.model_picker.currentText():
            self.backend.select_model(self.model_picker.currentText())
        url = self.backend.url
        self.keystore.set(url, self.key_edit.text().strip())
        self.settings.set("remote_url", url)
        self.backendChosen.emit(self.backend)
        self.accept()


__all__ = ["RemoteDialog", "connect_to"]
