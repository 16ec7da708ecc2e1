"""A terminal progress bar for downloads: bytes, speed and time left, on one updating line.

On a terminal the line is redrawn in place; when output goes to a file or pipe a line is
printed every 10% instead, so logs stay short. Retry and phase messages get lines of their own.
"""
from __future__ import annotations

import sys
import time

from app.models.download import Progress
from app.units import human_bytes


def human_time(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class TerminalProgress:
    """Callable that renders Progress reports for one file at a time."""

    WIDTH = 28

    def __init__(self, stream=None, interval: float = 0.1):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = interval
        self.label = ""
        self._last_draw = 0.0
        self._last_decile = -1
        self._open_line = False

    def start(self, label: str) -> None:
        self.finish_line()
        self.label = label
        self._last_decile = -1

    def __call__(self, p: Progress) -> None:
        if p.file and p.file != self.label:
            self.start(p.file)
        if p.phase == "retrying":
            self._line(f"{self.label}: {p.message}")
        elif p.phase == "checking":
            if p.done == p.total or p.done == 0:
                self._line(f"{self.label}: {p.message}")
        elif p.phase == "verifying":
            self._draw(p, force=True)
            self._line(f"{self.label}: {p.message}")
        elif p.phase == "downloading":
            self._draw(p)

    def conversion(self, p) -> None:
        """Render an engine ConversionProgress: tensors written, the tensor at hand, time left."""
        label = "converting"
        if label != self.label:
            self.start(label)
        fraction = min(p.done / p.total, 1.0) if p.total else 1.0
        self._render(f"{label} {self._bar(fraction)} tensor {p.tensors_done + 1}/{p.tensors_total} "
                     f"{p.tensor[:40]} ETA {human_time(p.eta)}", int(fraction * 10), p.done == p.total)

    def _bar(self, fraction: float) -> str:
        filled = int(fraction * self.WIDTH)
        return f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] {fraction * 100:5.1f}%"

    def _draw(self, p: Progress, force: bool = False) -> None:
        if p.total:
            fraction = min(p.done / p.total, 1.0)
            text = (f"{self.label} {self._bar(fraction)} {human_bytes(p.done)}/{human_bytes(p.total)} "
                    f"{human_bytes(p.speed)}/s ETA {human_time(p.eta)}")
            decile = int(fraction * 10)
        else:
            text = f"{self.label} {human_bytes(p.done)} {human_bytes(p.speed)}/s"
            decile = self._last_decile
        self._render(text, decile, force)

    def _render(self, text: str, decile: int, force: bool) -> None:
        if self.tty:
            now = time.monotonic()
            if force or now - self._last_draw >= self.interval:
                self._last_draw = now
                self.stream.write("\r" + text.ljust(100)[:max(len(text), 100)])
                self.stream.flush()
                self._open_line = True
        elif decile != self._last_decile:
            self._last_decile = decile
            self.stream.write(text + "\n")
            self.stream.flush()

    def _line(self, text: str) -> None:
        self.finish_line()
        self.stream.write(text + "\n")
        self.stream.flush()

    def finish_line(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False
