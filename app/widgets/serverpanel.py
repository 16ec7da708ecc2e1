"""The API server panel: on/off, address and port, the API key (kept in the `KeyStore`, never in
the settings file), the address to give clients, and a warning when the server is reachable
from other machines. The server's life cycle is `app.localserver.LocalServer`.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QLabel, QLineEdit, QSpinBox, QVBoxLayout,
                               QWidget)

from app.localserver import LocalServer, is_loopback

# The local server's key is stored in the KeyStore under this name, not a real address.
KEY_NAME = "neox-writer.local-server"
HOSTS = ("127.0.0.1", "0.0.0.0", "::1", "::")


class ServerPanel(QWidget):
    """On/off for the local API server, with its address, port and key."""

    statusChanged = Signal(str)        # status_text() after the server started, failed or stopped

    def __init__(self, server: LocalServer, settings, keystore, save_settings, parent=None):
        """`save_settings()` writes the settings file (the window's atomic writer)."""
        super().__init__(parent)
        self.setObjectName("serverPanel")
        self.server = server
        self.settings = settings
        self.keystore = keystore
        self._save_settings = save_settings
        self.model_name = ""

        self.action = QAction("Serve the model over &HTTP", self, objectName="serverAction", checkable=True)
        self.action.setToolTip("Serve the loaded model to other programs (KoboldCpp- and OpenAI-compatible API)")
        self.action.setStatusTip(self.action.toolTip())
        self.toggle = QCheckBox("Serve the loaded model", objectName="serverToggle")
        self.toggle.setToolTip(self.action.toolTip())
        self.host_edit = QComboBox(objectName="serverHostEdit", editable=True)
        self.host_edit.addItems(HOSTS)
        self.host_edit.setToolTip("127.0.0.1: only this computer. 0.0.0.0: every network interface "
                                  "(needs an API key)")
        self.host_edit.setCurrentText(settings.get("server_host"))
        self.port_spin = QSpinBox(objectName="serverPortSpin", minimum=0, maximum=65535)
        self.port_spin.setValue(settings.get("server_port"))
        self.port_spin.setToolTip("5001 is KoboldCpp's port, which clients try first (0 = any free port)")
        self.key_edit = QLineEdit(objectName="serverKeyEdit", echoMode=QLineEdit.Password)
        self.key_edit.setPlaceholderText("none (only allowed on 127.0.0.1)")
        self.key_edit.setText(keystore.get(KEY_NAME) or "")
        self.address_label = QLabel("Off", objectName="serverAddressLabel",
                                    textInteractionFlags=Qt.TextSelectableByMouse)
        self.address_label.setWordWrap(True)
        self.warning_label = QLabel("", objectName="serverWarningLabel", wordWrap=True)
        self.warning_label.setStyleSheet("color: #d97706;")
        self.key_note = QLabel("", objectName="serverKeyNote", wordWrap=True)

        form = QFormLayout()
        form.addRow(self.toggle)
        form.addRow("Address", self.host_edit)
        form.addRow("Port", self.port_spin)
        form.addRow("API key", self.key_edit)
        form.addRow("Clients use", self.address_label)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.warning_label)
        layout.addWidget(self.key_note)
        layout.addStretch(1)

        self.toggle.toggled.connect(self.on_toggle_toggled)
        self.action.toggled.connect(self.on_action_toggled)
        self.host_edit.currentTextChanged.connect(self.on_host_edit_changed)
        server.started.connect(self.on_server_started)
        server.stopped.connect(self.on_server_stopped)
        server.failed.connect(self.on_server_failed)
        self.on_host_edit_changed(self.host_edit.currentText())

    # --- user input ----------------------------------------------------------------------
    def on_toggle_toggled(self, on: bool) -> None:
        self.set_serving(on)

    def on_action_toggled(self, on: bool) -> None:
        self.set_serving(on)

    def on_host_edit_changed(self, host: str) -> None:
        host = host.strip()
        if host and not is_loopback(host):
            self.warning_label.setText(f"{host} makes the model reachable from other machines on the network: "
                                       "an API key is required, and clients must send it.")
        else:
            self.warning_label.setText("")

    def set_serving(self, on: bool) -> None:
        """Start or stop the server (what the toggle and the menu action do)."""
        self._show_checked(on)
        if on == (self.server.running or self.server.stopping):
            return
        if on:
            host, port, key = self.host_edit.currentText().strip() or "127.0.0.1", self.port_spin.value(), \
                self.key_edit.text().strip()
            self._remember(host, port, key, enabled=True)
            self.address_label.setText("Starting…")
            self.server.start(host, port, key)
        else:
            self._remember(enabled=False)
            self.address_label.setText("Stopping…")
            self.toggle.setEnabled(False)
            self.action.setEnabled(False)
            self.server.stop()

    def _remember(self, host=None, port=None, key=None, *, enabled: bool) -> None:
        s = self.settings
        if host is not None:
            s.set("server_host", host)
            s.set("server_port", int(port))
            self.keystore.set(KEY_NAME, key)
            self.key_note.setText("" if self.keystore.persistent or not key
                                  else f"The key is kept in {self.keystore.where}.")
        s.set("server_enabled", enabled)
        self._save_settings()

    def _show_checked(self, on: bool) -> None:
        for widget in (self.toggle, self.action):
            if widget.isChecked() != on:
                widget.blockSignals(True)
                widget.setChecked(on)
                widget.blockSignals(False)
        for widget in (self.host_edit, self.port_spin, self.key_edit):
            widget.setEnabled(not on)

    # --- the server's answers ------------------------------------------------------------
    def on_server_started(self, url: str) -> None:
        self.address_label.setText(f"{url}  (KoboldCpp: {url}/api, OpenAI: {url}/v1)")
        self.address_label.setToolTip(f"serving {self.model_name or 'the loaded model'}")
        self.statusChanged.emit(self.status_text())

    def on_server_failed(self, message: str) -> None:
        self._show_checked(False)
        self.settings.set("server_enabled", False)
        self.address_label.setText(message)
        self.statusChanged.emit(self.status_text())

    def on_server_stopped(self) -> None:
        self.toggle.setEnabled(True)
        self.action.setEnabled(True)
        if not self.server.running:
            self.address_label.setText("Off")
        self.statusChanged.emit(self.status_text())

    def on_model_loaded(self, info: dict) -> None:
        """A model is ready: start the server if it was on when the app last closed."""
        if not info.get("remote"):
            self.model_name = Path(info.get("path", "")).stem
            if self.server.running:
                self.address_label.setToolTip(f"serving {self.model_name}")
        if self.settings.get("server_enabled") and not self.server.running and self.server.worker.local:
            self.set_serving(True)

    def status_text(self) -> str:
        """A short text for the status bar ("" when off)."""
        return f"API {self.server.url}" if self.server.running else ""


__all__ = ["KEY_NAME", "ServerPanel"]
