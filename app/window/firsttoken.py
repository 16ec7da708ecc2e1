"""``neox-writer --time-first-token``: how long a new user waits for the first word.

The program starts as it always does (the last model or the bundled demo, the staged backend), and
this object then presses Generate once the model has loaded and reports, on stdout (and in
``--report FILE``, for the Windows bundle, which has no console):

    shown_at 1733520000.123     the moment the window was shown (seconds since the epoch, so that
                                a parent process can add the time from its own start)
    loaded 0.41                 seconds after shown: the model was ready
    first 0.77                  seconds after shown: the first generated token reached the story
    fast 81.20                  seconds after shown: the fast kernels took over (full speed)

then quits without asking to save the generated text. This is the figure of issue 19's first
target, measured through the real start-up path, which is why it lives in the program rather than
in a bench script: a bundle has no ``python -c`` for a script to drive the window with.
"""
from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Slot

TIMEOUT_S = 900       # a first start compiles the fast kernels in the background for a minute or two


class FirstTokenTimer(QObject):
    """Generates once the model is loaded, reports when the first token and full speed came, quits."""

    def __init__(self, window, app, report_file: str | None = None):
        super().__init__(window)
        self.window = window
        self.app = app
        self.report_file = report_file
        self.shown = time.time()
        self.first: float | None = None
        self.fast: float | None = None
        self.lines: list[str] = []
        self._say(f"shown_at {self.shown:.3f}")
        # The worker's signals are emitted on its thread; this object lives on the GUI thread, so
        # they arrive queued and the slots run here, between the window's own events.
        window.modelLoaded.connect(self.on_model_loaded)
        window.generation.piecesReady.connect(self.on_pieces_ready)
        window.llm.worker.backendChanged.connect(self.on_backend_changed)
        window.llm.worker.loadFailed.connect(self.on_load_failed)
        QTimer.singleShot(TIMEOUT_S * 1000, self.on_timeout)

    def _say(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)
        if self.report_file:
            Path(self.report_file).write_text("\n".join(self.lines) + "\n", encoding="utf-8")

    def _since_shown(self) -> str:
        return f"{time.time() - self.shown:.2f}"

    @Slot(dict)
    def on_model_loaded(self, info: dict) -> None:
        self._say(f"loaded {self._since_shown()}")
        if info.get("backend") not in (None, "starter"):
            self.fast = time.time()          # a warm cache: the fast kernels were there from the start
        self.window.generation.generate()

    @Slot(list)
    def on_pieces_ready(self, _pieces: list) -> None:
        if self.first is None:
            self.first = time.time()
            self._say(f"first {self._since_shown()}")
            self._finish_if_done()

    @Slot(str)
    def on_backend_changed(self, name: str) -> None:
        if name and name != "starter" and self.fast is None:
            self.fast = time.time()
            self._finish_if_done()

    @Slot(str, str)
    def on_load_failed(self, path: str, message: str) -> None:
        self._say(f"failed loading {path}: {message}")
        self.app.exit(1)

    @Slot()
    def on_timeout(self) -> None:
        self._say(f"failed: no first token and full speed within {TIMEOUT_S} s")
        self.app.exit(1)

    def _finish_if_done(self) -> None:
        if self.first is None or self.fast is None:
            return
        self._say(f"fast {self.fast - self.shown:.2f}")
        self.window.generation.stop()
        self.window.document.dirty = False     # the timing's text is not the user's: no "discard?" dialog
        self.app.exit(0)
