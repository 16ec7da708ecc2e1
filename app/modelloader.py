"""ModelLoader: which model the app writes with, a local file or a remote server, and loading it.

Loads run on the engine thread (`ChatLLM`); a file larger than the free memory is not loaded
before the writer agreed (`confirmNeeded` carries the question and what to do on Yes).
The loader remembers the active model's info and the last local model for the settings, and
reports with signals; it never calls the window.
"""
from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.units import free_ram_bytes, human_bytes


class ModelLoader(QObject):
    """Loads model files and connects remote servers through the engine thread."""

    loading = Signal(str)                  # what is being loaded or connected, for the status bar
    stage = Signal(str)                    # what a running load is doing now
    loaded = Signal(dict)                  # the active source's info
    failed = Signal(str)                   # the engine's message (the previous model stays)
    confirmNeeded = Signal(str, object)    # a question, and what to call on Yes
    problem = Signal(str, str)             # title, message for the user

    def __init__(self, llm, settings, parent=None):
        super().__init__(parent)
        self.llm = llm
        self.settings = settings
        self.info: dict | None = None      # the active model's (or server's) info
        self.path = ""                     # the local model file last loaded
        self.tokenizer_json = ""           # and the tokenizer it was loaded with ("" = found or rebuilt)
        self._asked = ("", "")             # the (path, tokenizer) of the load in progress
        worker = llm.worker
        worker.modelLoaded.connect(self.on_worker_model_loaded)
        worker.loadFailed.connect(self.on_worker_load_failed)
        worker.loadStage.connect(self.on_worker_load_stage)

    def open(self, path, tokenizer_json: str = "") -> None:
        """Load a model file; asks first (`confirmNeeded`) when it is larger than the free memory."""
        path = str(path)
        free = free_ram_bytes()
        try:
            size = os.stat(path).st_size
        except OSError:
            size = 0   # the engine reports the missing file
        if free is not None and size > free:
            self.confirmNeeded.emit(f"{Path(path).name} is {human_bytes(size)} but only {human_bytes(free)} of "
                                    "memory is free. Loading it may make the computer swap heavily. Load it anyway?",
                                    lambda: self.load_now(path, tokenizer_json))
            return
        self.load_now(path, tokenizer_json)

    def load_now(self, path: str, tokenizer_json: str = "") -> None:
        self._asked = (path, tokenizer_json)
        self.loading.emit(f"Loading {Path(path).name}…")
        self.llm.load(path, tokenizer_json)

    def use_remote(self, backend) -> None:
        """Generate through a connected remote backend; `loaded` follows with its info."""
        if self.llm.generating:
            self.problem.emit("Remote server", "A generation is running; stop it first.")
            return
        self.loading.emit(f"Connecting to {backend.url}…")
        self.llm.use_remote(backend)

    def set_threads(self, n: int) -> None:
        """The engine threads (0: automatic): the local model in use is loaded again with them
        (not while a generation runs: then they apply to the next load)."""
        changed = (n or None) != self.llm.worker.threads
        self.settings.set("threads", n)
        self.llm.worker.threads = n or None
        if changed and self.path and self.info is not None and not self.info.get("remote") \
                and not self.llm.generating and not self.llm.loading:
            self.load_now(self.path, self.tokenizer_json)

    def on_worker_load_stage(self, message: str) -> None:
        if self.llm.loading:
            self.stage.emit(message)

    def on_worker_model_loaded(self, info: dict) -> None:
        self.info = info
        if not info.get("remote"):     # a server address is remembered by the remote dialog instead
            self.path = info.get("path", "")
            asked_path, asked_tokenizer = self._asked
            self.tokenizer_json = asked_tokenizer if asked_path == self.path else ""
            self.settings.set("last_model", self.path)
        self.loaded.emit(info)

    def on_worker_load_failed(self, path: str, message: str) -> None:
        self.failed.emit(message)
