"""The API server's life cycle in the app: serve the loaded model to SillyTavern, Kobold Lite, ...

`LocalServer` starts and stops an `app.server.ApiServer` on the model the engine thread
already holds, through the same worker (`LLMWorker.engine_lock` keeps the GUI's and the
server's generations apart, and a newly loaded model is handed to the server by the worker).
Starting is a socket bind, done in the GUI thread; stopping cancels the server's jobs and
joins its threads, which may wait for a token in progress, so it runs on a Python thread.
"""
from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.threads import emit_from_thread


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
