"""The status bar: the model in use, loading progress, context use, speed, the API server, RAM."""
from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QLabel, QProgressBar, QStatusBar

from app.units import human_bytes

MESSAGE_MS = 8000
WAITING = "Waiting for the first token…"


def resident_bytes() -> int | None:
    """This process's resident memory (Linux /proc, else the peak from getrusage)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if os.uname().sysname == "Darwin" else peak * 1024
    except (ImportError, OSError, AttributeError):
        return None


def era_label(info: dict) -> str:
    """The file format: "GGUF v3", or which 2023 ggml generation a legacy model comes from (spec §1:
    the eras and the quantization versions)."""
    if str(info.get("format", "")).startswith("GGUF"):
        return info["format"]
    if info.get("layout") == "stablelm":
        return "stablelm layout (Apr–May 2023)"
    names = {0: "gpt-neox, first quantization", 1: "ggmlv2 quantization", 2: "ggmlv3 quantization"}
    return names.get(info.get("qnt_version"), f"gpt-neox, quantization v{info.get('qnt_version')}")


class StatusBar(QStatusBar):
    """Shows what the loader, the generation controller and the server report."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model_label = QLabel("No model", objectName="modelLabel")
        self.context_label = QLabel("", objectName="contextLabel")
        self.tokens_per_second_label = QLabel("– tok/s", objectName="tokensPerSecondLabel")
        self.memory_label = QLabel("", objectName="memoryLabel")
        self.server_label = QLabel("", objectName="serverLabel", visible=False)
        self.load_progress = QProgressBar(objectName="loadProgress", visible=False, maximumWidth=120)
        self.load_progress.setRange(0, 0)
        # a generation's first token can take long (a remote server loading its model, a long
        # prompt): until it comes, a moving bar says that something is happening
        self.wait_progress = QProgressBar(objectName="firstTokenProgress", visible=False, maximumWidth=120)
        self.wait_progress.setRange(0, 0)
        self.insertPermanentWidget(0, self.wait_progress)     # permanent: the message beside it would hide it
        for w in (self.model_label, self.load_progress):
            self.addWidget(w)
        for w in (self.server_label, self.context_label, self.tokens_per_second_label, self.memory_label):
            self.addPermanentWidget(w)
        self.model_info: dict | None = None
        self.warming = False            # the local model runs on the starter backend (a first start)
        self.speed: float | None = None  # the last tokens per second shown
        self.memory_timer = QTimer(self, interval=2000)
        self.memory_timer.timeout.connect(self.on_memory_timer_timeout)
        self.memory_timer.start()
        self.on_memory_timer_timeout()

    def show_loading(self, text: str) -> None:
        self.load_progress.setVisible(True)
        self.model_label.setText(text)

    def show_stage(self, text: str) -> None:
        self.model_label.setText(text)

    def show_model(self, info: dict) -> None:
        self.model_info = info
        self.warming = info.get("backend") == "starter"
        self.load_progress.setVisible(False)
        self._show_model_label(info)
        self.context_label.setText(f"context 0 / {info.get('n_ctx')}")

    def show_load_failed(self, message: str = "") -> None:
        """A load failed: the previous model (if any) is still the one in use."""
        self.load_progress.setVisible(False)
        if self.model_info:
            self._show_model_label(self.model_info)
        else:
            self.model_label.setText("No model")

    def _show_model_label(self, info: dict) -> None:
        if info.get("remote"):
            self.model_label.setText(f"{info.get('model') or '?'} · {info.get('kind')} · {info.get('path')}")
            self.model_label.setToolTip(info.get("describe", ""))
            return
        self.model_label.setText(f"{Path(info.get('path', '')).name} · {era_label(info)} · "
                                 f"{info.get('weight_type', '?')}")
        self.model_label.setToolTip(f"{info.get('path')}\nbackend: {info.get('backend')}\n"
                                    f"tokenizer: {info.get('tokenizer')}")

    def show_busy(self, busy: bool) -> None:
        """A generation began (waiting for its first token) or ended."""
        self.wait_progress.setVisible(busy)
        if busy:
            self.showMessage(WAITING)
        elif self.currentMessage() == WAITING:
            self.clearMessage()

    def show_first_token(self, *args) -> None:
        """Text arrived: the wait is over."""
        if self.wait_progress.isVisible():
            self.wait_progress.setVisible(False)
            if self.currentMessage() == WAITING:
                self.clearMessage()

    def show_speed(self, tokens_per_second: float) -> None:
        """Tokens per second; on the starter backend (a first start) it says full speed is coming."""
        self.speed = tokens_per_second
        if self.warming:
            self.tokens_per_second_label.setText(f"warming up: {tokens_per_second:.1f} tok/s, full speed soon")
        else:
            self.tokens_per_second_label.setText(f"{tokens_per_second:.1f} tok/s")

    def show_backend(self, name: str) -> None:
        """The engine moved to another backend: the staged model reached full speed."""
        self.warming = name == "starter"
        if self.model_info:
            self.model_info = dict(self.model_info, backend=name)
            self._show_model_label(self.model_info)
        if self.speed is not None:
            self.show_speed(self.speed)
        if not self.warming:
            self.showMessage("The engine runs at full speed now.", MESSAGE_MS)

    def show_generated(self, generated, n_ctx: int) -> None:
        """A generation ended: its speed, the context it used, and a summary for a while."""
        done = generated.done
        self.show_speed(done.gen_tokens_per_s if done is not None else 0.0)
        prompt, reused = (done.prompt_tokens, done.prompt_tokens_reused) if done is not None else (0, 0)
        self.context_label.setText(f"context {prompt + generated.gen_tokens} / {n_ctx}")
        self.showMessage(f"{generated.gen_tokens} tokens ({generated.stop_reason}), seed {generated.seed}, "
                         f"prompt {prompt} tokens ({reused} reused)", MESSAGE_MS)

    def show_server(self, text: str) -> None:
        self.server_label.setText(text)
        self.server_label.setVisible(bool(text))

    def show_notice(self, text: str) -> None:
        self.showMessage(text, MESSAGE_MS)

    def on_memory_timer_timeout(self) -> None:
        self.memory_label.setText(f"RAM {human_bytes(resident_bytes())}")
