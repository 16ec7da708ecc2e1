"""The API server toggle: serve the app's loaded model to SillyTavern, Kobold Lite, the openai client...

`LocalServer` starts and stops an `app.server.ApiServer` on the model the engine thread
already holds, through the same worker (`LLMWorker.engine_lock` keeps the GUI's and the
server's generations apart, and a newly loaded model is handed to the server by the worker).
Starting is a socket bind, done in the GUI thread; stopping cancels the server's jobs and
joins its threads, which may wait for a token in progress, so it runs on a Python thread.

`ServerPanel` is the widget: on/off, address and port, the API key (kept in the `KeyStore`,
never in the settings file), the address to give clients, and a warning when the server is
reachable from other machines.
"""
from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QLabel, QLineEdit, QSpinBox, QVBoxLayout,
                               QWidget)

from app.modelpicker import emit_from_thread

# The local server's key is stored in the KeyStore under this name, not a real address.
KEY_NAME = "neox-writer.local-server"
HOSTS = ("127.0.0.1", "0.0.0.0", "::1", "::")


def is_loopback(host: str) -> bool:
    from app.server.security import is_loopback as check
    return check(host)


class LocalServer(QObject):
    """The API server's life cycle around the engine thread's worker: `start`, `stop`, signals."""

    started = Signal(str)          # the base URL clients use
    stopped = Signal()
    failed = Signal(str)           # why it could not start

    def __init__(self, worker, parent=None):
        super().__init__(parent)
        self.worker = worker       # chatllm.LLMWorker
        self.server = None         # app.server.ApiServer while running
        self.stopping = False

    @property
    def running(self) -> bool:
        return self.server is not None

    @property
    def url(self) -> str:
        return self.server.url if self.server is not None else ""

    def start(self, host: str, port: int, api_key: str | None) -> bool:
        """Serve the worker's local model on host:port; False (and `failed`) if that cannot be done."""
        from app.server import ApiServer, EngineWorker, ServerConfig
        if self.running or self.stopping:
            return self.running
        local = self.worker.local          # one attribute read: the model, tokenizer and generator belong together
        if local is None:
            self.failed.emit("Load a local model first: the server serves the model loaded in this window.")
            return False
        engine = EngineWorker(local.model, local.tokenizer, local.generator, lock=self.worker.engine_lock,
                              model_name=Path(local.path).stem)
        try:
            server = ApiServer(engine, ServerConfig(host=host, port=int(port), api_key=api_key or None))
            url = server.start()
        except (OSError, ValueError) as e:
            self.failed.emit(_bind_message(host, port, e))
            return False
        self.server = server
        self.worker.served = engine        # from now on a model swap is handed to the server too
        self.started.emit(url)
        return True

    def stop(self, wait: bool = False) -> None:
        """Close the port and cancel the server's generations, on a thread (`stopped` follows);
        `wait` blocks until done (used at exit, after the GUI's own generation was stopped)."""
        server, self.server = self.server, None
        if server is None:
            return
        self.worker.served = None
        self.stopping = True
        thread = threading.Thread(target=self._stop, args=(server,), name="neox-server-stop", daemon=True)
        thread.start()
        if wait:
            thread.join()

    def _stop(self, server) -> None:
        try:
            server.stop()
        finally:
            self.stopping = False
            emit_from_thread(self.stopped)


def _bind_message(host: str, port: int, error: Exception) -> str:
    if isinstance(error, OSError):
        reason = error.strerror or str(error)
        return f"Cannot listen on {host}:{port}: {reason}. Is another server using that port?"
    return f"Cannot start the server: {error}"


class ServerPanel(QWidget):
    """On/off for the local API server, with its address, port and key."""

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

    def on_server_failed(self, message: str) -> None:
        self._show_checked(False)
        self.settings.set("server_enabled", False)
        self.address_label.setText(message)

    def on_server_stopped(self) -> None:
        self.toggle.setEnabled(True)
        self.action.setEnabled(True)
        if not self.server.running:
            self.address_label.setText("Off")

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


__all__ = ["KEY_NAME", "LocalServer", "ServerPanel"]
