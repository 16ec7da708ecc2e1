"""How long the GUI thread's event loop goes without turning: a timer in the GUI thread whose
ticks are timed, for the tests that hold it to a number of frames (tests/test_gui_latency.py,
the event-loop tests of test_app_window.py and test_saves.py).

Each gap between two ticks is recorded twice: by the wall clock, and less the time the OS kept
the GUI thread runnable but waiting for a processor (Linux's /proc/<pid>/task/<tid>/schedstat,
the run-queue wait). That wait is another process's doing on a loaded machine; on a quiet one it
is zero and the two are the same. Waiting for the GIL (held by another thread of the program)
is a sleep, not a run-queue wait, so it stays in the corrected gap: it is the program's doing.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

from PySide6.QtCore import QTimer


def run_queue_wait() -> float:
    """Seconds this thread has spent ready to run but waiting for a processor (0 where unknown)."""
    try:
        fields = Path(f"/proc/self/task/{threading.get_native_id()}/schedstat").read_text().split()
        return int(fields[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class EventLoopGaps:
    """A `interval_ms` timer in the calling (GUI) thread; `walls` and `gaps` (the wall-clock
    gaps less the run-queue wait) in seconds. The first tick starts the clock: before it the
    test itself held the thread."""

    def __init__(self, interval_ms: int = 5):
        self.walls: list[float] = []
        self.gaps: list[float] = []
        self._last = None
        self.timer = QTimer(interval=interval_ms)
        self.timer.timeout.connect(self.on_timer_timeout)

    def on_timer_timeout(self) -> None:
        now, waited = time.perf_counter(), run_queue_wait()
        if self._last is not None:
            self.walls.append(now - self._last[0])
            self.gaps.append(self.walls[-1] - (waited - self._last[1]))
        self._last = (now, waited)

    def __enter__(self) -> "EventLoopGaps":
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.stop()

    @property
    def longest(self) -> float:
        return max(self.gaps, default=0.0)

    @property
    def longest_wall(self) -> float:
        return max(self.walls, default=0.0)

    def worst(self, n: int = 3) -> list[float]:
        """The n longest corrected gaps in milliseconds, longest last."""
        return [round(g * 1000, 1) for g in sorted(self.gaps)[-n:]]
