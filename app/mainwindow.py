"""The main window: story and chat views, sampler/memory/context docks, model picker, status bar.

The window owns the open `Story` and wires the widgets to the engine thread (`ChatLLM`).
It never waits for the engine, the disk or the network: model loads and generations are
queued to the engine thread, story files are read on a Python thread and written by the
background `FileWriter`, and every answer comes back as a signal.
"""
from __future__ import annotations

import gc
import os
import threading
from pathlib import Path

from PySide6.QtCore import QByteArray, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QColor, QGuiApplication, QKeySequence, QPalette
from PySide6.QtWidgets import (QApplication, QComboBox, QDockWidget, QFileDialog, QInputDialog, QLabel, QMainWindow,
                               QMessageBox, QProgressBar, QStackedWidget, QToolBar, QToolButton)

from app import paths
from app.autosave import FileWriter, autosave_bytes, autosave_path, find_recovery
from app.chatllm import ChatLLM, GenerationRequest
from app.chattemplates import TEMPLATES, strip_reply, template_for_model
from app.widgets.chatview import ChatView
from app.widgets.contextview import ContextView
from app.keystore import KeyStore
from app.localserver import LocalServer
from app.bundled import demo_model
from app.widgets.memorypanel import MemoryPanel
from app.widgets.modelpicker import ModelPicker
from app.widgets.remotedialog import RemoteDialog
from app.widgets.samplingpanel import SamplingPanel
from app.widgets.serverpanel import ServerPanel
from app.settings import Settings, settings_path
from app.story import ChatTurn, Story, StoryFormatError, kobold_bytes, load_story, story_bytes
from app.widgets.storyview import StoryView
from app.textsource import model_label
from app.threads import emit_from_thread
from app.units import free_ram_bytes
from app.widgets.tokenprobs import TokenProbsPopup

STORY_FILTER = "NeoX Writer stories (*.neoxstory.json *.json);;All files (*)"
KOBOLD_FILTER = "KoboldAI / Kobold Lite saves (*.json);;All files (*)"
EDIT_PAUSE_MS = 800           # typing pauses this long become one undo step


def dark_palette() -> QPalette:
    """A dark palette for platforms that do not switch schemes themselves."""
    p = QPalette()
    base, window, text, mid = QColor(30, 31, 34), QColor(43, 45, 48), QColor(223, 225, 229), QColor(70, 73, 78)
    for role, colour in ((QPalette.Window, window), (QPalette.WindowText, text), (QPalette.Base, base),
                         (QPalette.AlternateBase, window), (QPalette.Text, text), (QPalette.Button, window),
                         (QPalette.ButtonText, text), (QPalette.ToolTipBase, window), (QPalette.ToolTipText, text),
                         (QPalette.PlaceholderText, QColor(130, 133, 138)), (QPalette.Mid, mid),
                         (QPalette.Highlight, QColor(66, 133, 244)), (QPalette.HighlightedText, QColor(255, 255, 255)),
                         (QPalette.Link, QColor(110, 168, 254))):
        p.setColor(role, colour)
    for role in (QPalette.WindowText, QPalette.Text, QPalette.ButtonText):
        p.setColor(QPalette.Disabled, role, QColor(120, 123, 128))
    return p


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


def freeze_heap() -> None:
    """Move every object alive now (Qt wrappers, numpy, numba, the model) out of the garbage
    collector's reach. A full collection otherwise walks them all and holds the GIL for
    50-100 ms, which stalls the GUI in the middle of streaming; new objects are still collected."""
    gc.collect()
    gc.freeze()


def era_label(info: dict) -> str:
    """Which 2023 file generation a model comes from (spec §1: the eras and the quantization versions)."""
    if info.get("layout") == "stablelm":
        return "stablelm layout (Apr–May 2023)"
    names = {0: "gpt-neox, first quantization", 1: "ggmlv2 quantization", 2: "ggmlv3 quantization"}
    return names.get(info.get("qnt_version"), f"gpt-neox, quantization v{info.get('qnt_version')}")


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1048576:.0f} MB"


class MainWindow(QMainWindow):
    """NeoX Writer's window: write a story or chat with a local GPT-NeoX model."""

    modelLoaded = Signal(dict)           # the model's info() when a load succeeds
    modelLoadFailed = Signal(str)        # the engine's message
    generationFinished = Signal(dict)    # stop reason, seed, speeds
    storyOpened = Signal(str)            # path
    storySaved = Signal(str)             # path
    errorShown = Signal(str)             # every error dialog's text (tests listen here)
    contextShown = Signal(object)        # the Context the context view now shows
    storyRead = Signal(object, str, str)     # Story or None, path, error (from the reader thread)
    recoveryFound = Signal(object)       # autosave.Recovery

    def __init__(self, settings: Settings | None = None, *, check_recovery: bool = True, backend: str = "auto"):
        """`backend` is the engine's ("auto", "fast" or "reference"); `check_recovery` looks for
        an autosave left by a crash."""
        super().__init__()
        self.setObjectName("mainWindow")
        self.settings = settings or Settings.load()
        self.story = Story()
        self.story_path: str | None = None
        self.dirty = False                     # changes not in a saved file
        self._autosave_due = False             # changes not in the autosave either
        self.model_info: dict | None = None
        self.model_path = ""
        self._request_id = 0
        self._gen: dict | None = None          # the running generation's bookkeeping
        self._gen_count = 0
        self.recovery = None
        self.error_box: QMessageBox | None = None
        self._questions: dict = {}             # open question boxes -> (on_yes, on_no)
        self.keystore = KeyStore()             # API keys (remote servers, our server) stay out of settings
        self.remote_dialog: RemoteDialog | None = None

        self.writer = FileWriter(self)
        self.writer.failed.connect(self.on_writer_failed)
        self.llm = ChatLLM(self.settings.get("threads") or None, self, backend=backend)
        worker = self.llm.worker
        worker.modelLoaded.connect(self.on_worker_model_loaded)
        worker.loadFailed.connect(self.on_worker_load_failed)
        worker.loadStage.connect(self.on_worker_load_stage)
        worker.tokensReady.connect(self.on_worker_tokens_ready)
        worker.speedChanged.connect(self.on_worker_speed_changed)
        worker.generationWaiting.connect(self.on_worker_generation_waiting)
        worker.generationFinished.connect(self.on_worker_generation_finished)
        worker.generationFailed.connect(self.on_worker_generation_failed)
        worker.contextReady.connect(self.on_worker_context_ready)
        worker.contextFailed.connect(self.on_worker_context_failed)

        self._build_widgets()
        self._build_actions()
        self._build_status_bar()
        self._apply_settings()
        self.storyRead.connect(self.on_story_read)
        self.recoveryFound.connect(self.on_recovery_found)

        self.autosave_timer = QTimer(self, interval=max(5, self.settings.get("autosave_seconds")) * 1000)
        self.autosave_timer.timeout.connect(self.on_autosave_timer_timeout)
        self.autosave_timer.start()
        self.edit_timer = QTimer(self, singleShot=True, interval=EDIT_PAUSE_MS)
        self.edit_timer.timeout.connect(self.on_edit_timer_timeout)
        self.memory_timer = QTimer(self, interval=2000)
        self.memory_timer.timeout.connect(self.on_memory_timer_timeout)
        self.memory_timer.start()
        self._update_title()
        self._update_actions()
        self.model_picker.refresh()
        freeze_heap()
        if check_recovery:
            threading.Thread(target=lambda: emit_from_thread(self.recoveryFound, find_recovery()),
                             name="neox-recovery", daemon=True).start()

    # --- building --------------------------------------------------------------------
    def _build_widgets(self) -> None:
        self.story_view = StoryView()
        self.story_view.userEdited.connect(self.on_story_view_user_edited)
        self.story_view.tokenClicked.connect(self.on_story_view_token_clicked)
        self.story_view.undoRequested.connect(self.undo)
        self.story_view.redoRequested.connect(self.redo)
        self.chat_view = ChatView()
        self.chat_view.sendRequested.connect(self.on_chat_view_send_requested)
        self.chat_view.regenerateRequested.connect(self.on_chat_view_regenerate_requested)
        self.chat_view.turnEdited.connect(self.on_chat_view_turn_edited)
        self.chat_view.templateChanged.connect(self.on_chat_view_template_changed)
        self.chat_view.namesChanged.connect(self.on_chat_view_names_changed)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.story_view)
        self.stack.addWidget(self.chat_view)
        self.setCentralWidget(self.stack)
        self.token_popup = TokenProbsPopup(self)
        self.token_popup.alternativeChosen.connect(self.on_token_popup_alternative_chosen)

        self.sampling = SamplingPanel()
        self.sampling.presetSaved.connect(self.on_sampling_preset_saved)
        self.memory = MemoryPanel()
        self.memory.changed.connect(self.on_memory_changed)
        self.context_view = ContextView()
        self.context_view.refresh_button.clicked.connect(self.on_context_refresh_clicked)
        self.model_picker = ModelPicker()
        self.model_picker.modelChosen.connect(self.on_model_picker_model_chosen)
        self.model_picker.remoteRequested.connect(self.on_model_picker_remote_requested)
        self.local_server = LocalServer(self.llm.worker, self)
        self.local_server.started.connect(self.on_local_server_changed)
        self.local_server.stopped.connect(self.on_local_server_changed)
        self.local_server.failed.connect(self.on_local_server_failed)
        self.server_panel = ServerPanel(self.local_server, self.settings, self.keystore, self.write_settings)

        self.docks = {}
        for key, title, widget, area in (("models", "Models", self.model_picker, Qt.LeftDockWidgetArea),
                                         ("sampling", "Sampling", self.sampling, Qt.RightDockWidgetArea),
                                         ("memory", "Memory · World info", self.memory, Qt.RightDockWidgetArea),
                                         ("context", "Context", self.context_view, Qt.RightDockWidgetArea),
                                         ("server", "API server", self.server_panel, Qt.RightDockWidgetArea)):
            dock = QDockWidget(title, self, objectName=f"{key}Dock")
            dock.setWidget(widget)
            self.addDockWidget(area, dock)
            self.docks[key] = dock
        self.tabifyDockWidget(self.docks["sampling"], self.docks["memory"])
        self.tabifyDockWidget(self.docks["memory"], self.docks["context"])
        self.tabifyDockWidget(self.docks["context"], self.docks["server"])
        self.docks["sampling"].raise_()
        self.docks["context"].visibilityChanged.connect(self.on_context_dock_visibility_changed)

    def _action(self, text, slot, shortcut=None, tip=None, name=None) -> QAction:
        action = QAction(text, self)
        if shortcut:
            shortcuts = shortcut if isinstance(shortcut, list) else [shortcut]
            action.setShortcuts([QKeySequence(s) for s in shortcuts])
        if tip:
            action.setToolTip(tip)
            action.setStatusTip(tip)
        if name:
            action.setObjectName(name)
        action.triggered.connect(slot)
        return action

    def _build_actions(self) -> None:
        a = self._action
        self.generate_action = a("Generate", self.on_generate_triggered, ["Ctrl+Return", "Ctrl+Enter"],
                                 "Continue the story (Ctrl+Enter)", "generateAction")
        self.stop_action = a("Stop", self.on_stop_triggered, "Esc", "Stop generating (Esc)", "stopAction")
        self.retry_action = a("Retry", self.on_retry_triggered, "Ctrl+R", "Replace the last generation with a new one (Ctrl+R)",
                              "retryAction")
        self.undo_action = a("Undo", self.on_undo_triggered, QKeySequence.Undo, "Step back one generation or edit", "undoAction")
        self.redo_action = a("Redo", self.on_redo_triggered, [QKeySequence(QKeySequence.Redo).toString(), "Ctrl+Y"],
                             "Step forward again", "redoAction")
        for action in (self.generate_action, self.stop_action, self.retry_action, self.undo_action,
                       self.redo_action):
            action.setShortcutContext(Qt.WindowShortcut)
        # the editor's own undo would fight the story history
        self.story_view.setUndoRedoEnabled(False)

        toolbar = QToolBar("Main", self, objectName="mainToolBar")
        toolbar.setMovable(False)
        toolbar.setToolButtonStyle(Qt.ToolButtonTextOnly)
        self.mode_switch = QComboBox(objectName="modeSwitch")
        self.mode_switch.addItem("Story", "story")
        self.mode_switch.addItem("Chat", "chat")
        self.mode_switch.setToolTip("Switch between story writing and chat (Ctrl+M)")
        self.mode_switch.currentIndexChanged.connect(self.on_mode_switch_changed)
        toolbar.addWidget(self.mode_switch)
        toolbar.addSeparator()
        self.buttons = {}
        for action, name in ((self.generate_action, "generateButton"), (self.stop_action, "stopButton"),
                             (self.retry_action, "retryButton"), (self.undo_action, "undoButton"),
                             (self.redo_action, "redoButton")):
            button = QToolButton(objectName=name)
            button.setDefaultAction(action)
            toolbar.addWidget(button)
            self.buttons[name] = button
        self.addToolBar(Qt.TopToolBarArea, toolbar)

        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        file_menu.addAction(a("&New story", self.on_new_triggered, QKeySequence.New, name="newAction"))
        file_menu.addAction(a("&Open…", self.on_open_triggered, QKeySequence.Open, name="openAction"))
        file_menu.addAction(a("&Save", self.on_save_triggered, QKeySequence.Save, name="saveAction"))
        file_menu.addAction(a("Save &as…", self.on_save_as_triggered, QKeySequence.SaveAs, name="saveAsAction"))
        file_menu.addSeparator()
        file_menu.addAction(a("&Import KoboldAI / Kobold Lite…", self.on_import_kobold_triggered,
                              "Ctrl+I", name="importKoboldAction"))
        file_menu.addAction(a("&Export Kobold Lite JSON…", self.on_export_kobold_triggered,
                              "Ctrl+Shift+E", name="exportKoboldAction"))
        file_menu.addAction(a("Export plain &text…", self.on_export_text_triggered, "Ctrl+Shift+T", name="exportTextAction"))
        file_menu.addAction(a("Export &Markdown…", self.on_export_markdown_triggered, "Ctrl+Shift+D",
                              name="exportMarkdownAction"))
        file_menu.addSeparator()
        file_menu.addAction(a("Open &model file…", self.model_picker.on_open_file_clicked, "Ctrl+Shift+O",
                              name="openModelAction"))
        file_menu.addAction(a("&Remote server…", self.on_model_picker_remote_requested,
                              tip="Write with a model on a KoboldCpp, llama.cpp or OpenAI-compatible server",
                              name="remoteServerAction"))
        file_menu.addSeparator()
        file_menu.addAction(a("&Quit", self.close, QKeySequence.Quit, name="quitAction"))
        edit_menu = menu.addMenu("&Edit")
        for action in (self.undo_action, self.redo_action):
            edit_menu.addAction(action)
        gen_menu = menu.addMenu("&Generate")
        for action in (self.generate_action, self.stop_action, self.retry_action):
            gen_menu.addAction(action)
        gen_menu.addAction(a("Switch story/chat", self.on_toggle_mode_triggered, "Ctrl+M", name="toggleModeAction"))
        server_menu = menu.addMenu("&Server")
        server_menu.addAction(self.server_panel.action)
        server_menu.addAction(self.docks["server"].toggleViewAction())
        view_menu = menu.addMenu("&View")
        for dock in self.docks.values():
            view_menu.addAction(dock.toggleViewAction())
        view_menu.addSeparator()
        view_menu.addAction(a("Larger text", self.on_zoom_in_triggered,
                              QKeySequence.ZoomIn, name="zoomInAction"))
        view_menu.addAction(a("Smaller text", self.on_zoom_out_triggered,
                              QKeySequence.ZoomOut, name="zoomOutAction"))
        theme_menu = view_menu.addMenu("Theme")
        self.theme_group = QActionGroup(self, exclusive=True)
        for key, label in (("system", "Follow the system"), ("light", "Light"), ("dark", "Dark")):
            action = theme_menu.addAction(label)
            action.setObjectName(f"theme_{key}")
            action.setData(key)
            action.setCheckable(True)
            action.setChecked(key == self.settings.get("theme"))
            self.theme_group.addAction(action)
        self.theme_group.triggered.connect(self.on_theme_group_triggered)
        view_menu.addAction(a("Engine threads…", self.on_threads_triggered, name="threadsAction"))

    # action slots: thin, so the same operations stay callable by name (tests, other code)
    def on_generate_triggered(self) -> None:
        self.generate()

    def on_stop_triggered(self) -> None:
        self.stop()

    def on_retry_triggered(self) -> None:
        self.retry()

    def on_undo_triggered(self) -> None:
        self.undo()

    def on_redo_triggered(self) -> None:
        self.redo()

    def on_new_triggered(self) -> None:
        self.new_story()

    def on_save_triggered(self) -> None:
        self.save()

    def on_zoom_in_triggered(self) -> None:
        self.set_font_size(self.settings.get("font_size") + 1)

    def on_zoom_out_triggered(self) -> None:
        self.set_font_size(self.settings.get("font_size") - 1)

    def on_context_refresh_clicked(self) -> None:
        self.refresh_context()

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.model_label = QLabel("No model", objectName="modelLabel")
        self.context_label = QLabel("", objectName="contextLabel")
        self.tokens_per_second_label = QLabel("– tok/s", objectName="tokensPerSecondLabel")
        self.memory_label = QLabel("", objectName="memoryLabel")
        self.server_label = QLabel("", objectName="serverLabel", visible=False)
        self.load_progress = QProgressBar(objectName="loadProgress", visible=False, maximumWidth=120)
        self.load_progress.setRange(0, 0)
        for w in (self.model_label, self.load_progress):
            bar.addWidget(w)
        for w in (self.server_label, self.context_label, self.tokens_per_second_label, self.memory_label):
            bar.addPermanentWidget(w)
        self.on_memory_timer_timeout()

    def _apply_settings(self) -> None:
        s = self.settings
        self.sampling.set_user_presets(s.get("user_presets"))
        if s.get("preset"):
            self.sampling.preset_picker.setCurrentText(s.get("preset"))
        self.sampling.apply_values(s.get("sampler"))
        self.set_font_size(s.get("font_size"), save=False)
        self.set_theme(s.get("theme"), save=False)
        for key, setter in (("window_geometry", self.restoreGeometry), ("window_state", self.restoreState)):
            if s.get(key):
                setter(QByteArray.fromBase64(s.get(key).encode("ascii")))
        if not s.get("window_geometry"):
            self.resize(1280, 800)
        if not s.get("window_state"):   # first run: room for model names and sampler labels
            em = self.fontMetrics().horizontalAdvance("M")
            QTimer.singleShot(0, lambda: self.resizeDocks([self.docks["models"], self.docks["sampling"]],
                                                          [em * 32, em * 30], Qt.Horizontal))
        self.mode_switch.setCurrentIndex(1 if s.get("mode") == "chat" else 0)

    # --- settings --------------------------------------------------------------------
    def save_settings(self) -> None:
        s = self.settings
        s.set("window_geometry", bytes(self.saveGeometry().toBase64()).decode("ascii"))
        s.set("window_state", bytes(self.saveState().toBase64()).decode("ascii"))
        s.set("sampler", self.sampling.values())
        s.set("preset", self.sampling.preset_picker.currentText())
        s.set("mode", self.mode())
        if self.model_path:
            s.set("last_model", self.model_path)
        self.writer.write(settings_path(), s.to_bytes())

    def write_settings(self) -> None:
        """Write the settings file now (on the writer thread)."""
        self.writer.write(settings_path(), self.settings.to_bytes())

    def set_font_size(self, points: int, save: bool = True) -> None:
        points = max(7, min(40, int(points)))
        self.settings.set("font_size", points)
        self.story_view.set_font_size(points)
        if save:
            self.writer.write(settings_path(), self.settings.to_bytes())

    def set_theme(self, theme: str, save: bool = True) -> None:
        """"system" follows the desktop's light/dark scheme; "light"/"dark" force one.

        Qt (6.8+) switches the platform style itself where it can; where the platform ignores
        the request, the Fusion style with our own palette stands in.
        """
        theme = theme if theme in ("system", "light", "dark") else "system"
        hints = QGuiApplication.styleHints()
        wanted = {"light": Qt.ColorScheme.Light, "dark": Qt.ColorScheme.Dark}.get(theme, Qt.ColorScheme.Unknown)
        if hasattr(hints, "setColorScheme"):
            hints.setColorScheme(wanted)
        app = QApplication.instance()
        if theme != "system" and hints.colorScheme() != wanted:
            app.setStyle("Fusion")
            app.setPalette(dark_palette() if theme == "dark" else app.style().standardPalette())
            self._own_palette = True
        elif getattr(self, "_own_palette", False):
            app.setPalette(app.style().standardPalette())
            self._own_palette = False
        self.story_view.refresh_mark()
        self.settings.set("theme", theme)
        if save:
            self.writer.write(settings_path(), self.settings.to_bytes())

    def on_theme_group_triggered(self, action: QAction) -> None:
        self.set_theme(action.data())

    def on_threads_triggered(self) -> None:
        n, ok = QInputDialog.getInt(self, "Engine threads", "Threads (0 = automatic; applies to the next model "
                                    "load):", self.settings.get("threads"), 0, 256)
        if ok:
            self.settings.set("threads", n)
            self.llm.worker.threads = n or None
            self.writer.write(settings_path(), self.settings.to_bytes())

    def on_sampling_preset_saved(self, name: str, values: dict) -> None:
        presets = dict(self.settings.get("user_presets"))
        presets[name] = values
        self.settings.set("user_presets", presets)
        self.writer.write(settings_path(), self.settings.to_bytes())

    # --- models ----------------------------------------------------------------------
    def open_model(self, path, tokenizer_json: str = "") -> None:
        """Load a model file on the engine thread; `modelLoaded` fires when it is ready."""
        path = str(path)
        free = free_ram_bytes()
        try:
            size = os.stat(path).st_size
        except OSError:
            size = 0   # the engine reports the missing file
        if free is not None and size > free:
            self._ask(f"{Path(path).name} is {_mb(size)} but only {_mb(free)} of memory is free. "
                      "Loading it may make the computer swap heavily. Load it anyway?",
                      lambda: self._start_load(path, tokenizer_json))
            return
        self._start_load(path, tokenizer_json)

    def _start_load(self, path: str, tokenizer_json: str) -> None:
        self.load_progress.setVisible(True)
        self.model_label.setText(f"Loading {Path(path).name}…")
        self.llm.load(path, tokenizer_json)
        self._update_actions()

    def on_worker_load_stage(self, message: str) -> None:
        """The engine thread reports what a running load is doing (e.g. compiling on first start)."""
        if self.llm.loading:
            self.model_label.setText(message)

    def on_model_picker_model_chosen(self, path: str, tokenizer_json: str) -> None:
        self.open_model(path, tokenizer_json)

    def on_worker_model_loaded(self, info: dict) -> None:
        self.load_progress.setVisible(False)
        self.model_info = info
        remote = bool(info.get("remote"))
        name = model_label(info)
        self._show_model_label(info)
        self.sampling.set_context_limit(int(info.get("n_ctx", 2048)))
        self.sampling.set_supported(frozenset(info.get("supported_samplers", ())) if remote else None,
                                    info.get("kind", ""))
        self.context_label.setText(f"context 0 / {info.get('n_ctx')}")
        self.story.model_id = name
        template = template_for_model(info.get("model", name) if remote else name)
        if not self.story.chat_turns:
            self.chat_view.set_template(template.name)
        if not remote:             # a server address is remembered by the remote dialog instead
            self.model_path = info.get("path", "")
            self.settings.set("last_model", self.model_path)
        self.write_settings()
        self.server_panel.on_model_loaded(info)
        self._update_actions()
        freeze_heap()
        self.modelLoaded.emit(info)
        if self.docks["context"].isVisible():
            self.refresh_context()

    def _show_model_label(self, info: dict) -> None:
        if info.get("remote"):
            self.model_label.setText(f"{info.get('model') or '?'} · {info.get('kind')} · {info.get('path')}")
            self.model_label.setToolTip(info.get("describe", ""))
            return
        era = era_label(info)
        self.model_label.setText(f"{Path(info.get('path', '')).name} · {era} · {info.get('weight_type', '?')}")
        self.model_label.setToolTip(f"{info.get('path')}\nbackend: {info.get('backend')}\n"
                                    f"tokenizer: {info.get('tokenizer')}")

    def on_worker_load_failed(self, path: str, message: str) -> None:
        self.load_progress.setVisible(False)
        if self.model_info:
            self._show_model_label(self.model_info)
        else:
            self.model_label.setText("No model")
        self._update_actions()
        self.show_error("Could not load the model", message)
        self.modelLoadFailed.emit(message)

    def on_model_picker_remote_requested(self) -> None:
        self.open_remote_dialog()

    def open_remote_dialog(self) -> RemoteDialog:
        """Show the "Remote server…" dialog (non-modal); choosing a server calls `use_remote`."""
        if self.remote_dialog is not None:
            self.remote_dialog.deleteLater()
        dialog = RemoteDialog(self.settings, self.keystore, self)
        dialog.backendChosen.connect(self.on_remote_dialog_backend_chosen)
        dialog.open()
        self.remote_dialog = dialog
        return dialog

    def on_remote_dialog_backend_chosen(self, backend) -> None:
        self.use_remote(backend)

    def use_remote(self, backend) -> None:
        """Generate through a connected remote backend; `modelLoaded` fires with its info."""
        if self.busy():
            self.show_error("Remote server", "A generation is running; stop it first.")
            return
        self.model_label.setText(f"Connecting to {backend.url}…")
        self.llm.use_remote(backend)
        self.write_settings()
        self._update_actions()

    # --- the local API server ----------------------------------------------------------
    def on_local_server_changed(self, *args) -> None:
        text = self.server_panel.status_text()
        self.server_label.setText(text)
        self.server_label.setVisible(bool(text))

    def on_local_server_failed(self, message: str) -> None:
        self.on_local_server_changed()
        self.statusBar().showMessage(message, 8000)

    # --- generation ------------------------------------------------------------------
    def mode(self) -> str:
        return self.mode_switch.currentData()

    def busy(self) -> bool:
        return self._gen is not None

    def _request(self, text: str, stops: list[str]) -> GenerationRequest | None:
        self.memory.save_to(self.story)
        try:
            settings = self.sampling.sampler_settings()
        except ValueError as e:
            self.show_error("Invalid sampler setting", str(e))
            return None
        self._request_id += 1
        values = self.sampling.values()
        return GenerationRequest(self._request_id, text, self.story.memory, self.story.authors_note,
                                 self.story.authors_note_depth, list(self.story.world_info), settings,
                                 values["max_new_tokens"], values["n_ctx"], stops)

    def generate(self) -> None:
        """Continue the story at the end (story mode) or answer in the chat (chat mode)."""
        if self.busy() or self.llm.loading:
            return
        if self.model_info is None:
            self.show_error("No model", "Load a model first (Models panel, or File › Open model file…).")
            return
        if self.mode() == "chat":
            text = self.chat_view.input.toPlainText().strip()
            if text:
                self.chat_view.on_send_clicked()
            elif self.story.chat_turns and self.story.chat_turns[-1].role == "bot":
                self.on_chat_view_regenerate_requested()
            else:
                self._generate_reply()
            return
        self._sync_story_from_view()
        self.story.checkpoint("edit")
        self._start_story_generation()

    def _start_story_generation(self) -> None:
        request = self._request(self.story.text, self.sampling.stop_sequences())
        if request is None:
            return
        self._gen = {"id": request.request_id, "mode": "story", "start": len(self.story.text), "pieces": []}
        self.story_view.begin_generation()
        self.llm.generate(request)
        self._update_actions()

    def retry(self) -> None:
        """Generate a sibling of the last generation (the old one stays in the story tree)."""
        if self.busy() or self.model_info is None:
            return
        if self.mode() == "chat":
            self.on_chat_view_regenerate_requested()
            return
        self._sync_story_from_view()
        self.story.checkpoint("edit")
        if self.story.retry_point() is None:
            self.statusBar().showMessage("Nothing to retry: the story does not end with a generation", 4000)
            return
        self.story_view.show_tree(self.story.tree)
        self._start_story_generation()

    def stop(self) -> None:
        """End the running generation within one token."""
        if self.busy():
            self.llm.stop()

    def on_worker_tokens_ready(self, request_id: int, pieces: list) -> None:
        gen = self._gen
        if gen is None or gen["id"] != request_id:
            return
        gen["pieces"].extend(pieces)
        if gen["mode"] == "story":
            self.story_view.append_pieces(pieces)
        else:
            text = "".join(p.text for p in gen["pieces"])
            self.chat_view.set_reply_text(strip_reply(text, gen["stops"]) if text.strip() else "…")

    def on_worker_generation_waiting(self, request_id: int, message: str) -> None:
        if self._gen is not None and self._gen["id"] == request_id:
            self.statusBar().showMessage(message)

    def on_worker_speed_changed(self, tokens_per_second: float) -> None:
        self.tokens_per_second_label.setText(f"{tokens_per_second:.1f} tok/s")

    def on_worker_generation_finished(self, request_id: int, summary: dict) -> None:
        gen = self._gen
        if gen is None or gen["id"] != request_id:
            return
        self._gen = None
        text = "".join(p.text for p in gen["pieces"])
        if gen["mode"] == "story":
            self.story_view.end_generation()
            # the view's text is authoritative: Qt turns a generated "\r" or U+2029 into "\n"
            written = self.story_view.toPlainText()[gen["start"]:]
            if written:
                self.story.add_generation(written, tokens=gen["pieces"], seed=summary.get("seed"),
                                          sampler=self.sampling.values())
            self.story.checkpoint("generation")
        else:
            reply = strip_reply(text, gen["stops"])
            self.chat_view.set_reply_text(reply)
            self.story.chat_turns = [ChatTurn(t.role, t.text) for t in self.chat_view.turns]
            self.chat_view.set_busy(False)
        self._gen_count += 1
        tps = summary.get("tokens_per_second", 0.0)
        self.tokens_per_second_label.setText(f"{tps:.1f} tok/s")
        if self.model_info:
            used = summary.get("prompt_tokens", 0) + summary.get("gen_tokens", 0)
            self.context_label.setText(f"context {used} / {self.sampling.values()['n_ctx']}")
        self.statusBar().showMessage(
            f"{summary.get('gen_tokens', 0)} tokens ({summary.get('stop_reason')}), seed {summary.get('seed')}, "
            f"prompt {summary.get('prompt_tokens', 0)} tokens ({summary.get('prompt_tokens_reused', 0)} reused)",
            8000)
        self._mark_changed()
        self.autosave_now()
        self._update_actions()
        self.generationFinished.emit(summary)
        if self.docks["context"].isVisible():
            self.refresh_context()

    def on_worker_generation_failed(self, request_id: int, message: str) -> None:
        gen = self._gen
        if gen is None or gen["id"] != request_id:
            return
        self._gen = None
        if gen["mode"] == "story":
            self.story_view.end_generation()
            self._sync_story_from_view()
        else:
            self.chat_view.set_busy(False)
            if self.chat_view.turns and self.chat_view.turns[-1].role == "bot" and not gen["pieces"]:
                self.chat_view.set_turns(self.chat_view.turns[:-1])
            self.story.chat_turns = [ChatTurn(t.role, t.text) for t in self.chat_view.turns]
        self._update_actions()
        self.show_error("Generation failed", message)

    # --- token alternatives ----------------------------------------------------------
    def on_story_view_token_clicked(self, index: int, at) -> None:
        if not self.busy():
            self.token_popup.show_for(index, self.story_view.tokens[index].piece, at)

    def on_token_popup_alternative_chosen(self, index: int, text: str, token: int) -> None:
        self.choose_alternative(index, text, token)

    def choose_alternative(self, index: int, text: str, token: int = -1) -> None:
        """Start a new branch at generated token `index` of the marked generation with `text` in its
        place, and generate from there (the old continuation stays in the tree)."""
        if self.busy() or index >= len(self.story_view.tokens):
            return
        cut = self.story_view.token_start_offset(index)
        self._sync_story_from_view()
        self.story.checkpoint("edit")
        self.story.branch_with_token(cut, text, token)
        self.story.checkpoint("token choice")
        self.story_view.show_tree(self.story.tree)
        self._start_story_generation()

    # --- chat --------------------------------------------------------------------------
    def on_chat_view_send_requested(self, text: str) -> None:
        if self.busy() or self.model_info is None:
            if self.model_info is None:
                self.show_error("No model", "Load a model first.")
            return
        self.chat_view.turns.append(ChatTurn("user", text))
        self.chat_view.set_turns(self.chat_view.turns)
        self.story.chat_turns = [ChatTurn(t.role, t.text) for t in self.chat_view.turns]
        self._mark_changed()
        self._generate_reply()

    def on_chat_view_regenerate_requested(self) -> None:
        if self.busy() or self.model_info is None:
            return
        turns = self.chat_view.turns
        if turns and turns[-1].role == "bot":
            self.chat_view.set_turns(turns[:-1])
        self._generate_reply()

    def _generate_reply(self) -> None:
        template = TEMPLATES.get(self.chat_view.template_name(), TEMPLATES["plain"])
        user, bot = self.chat_view.user_name, self.chat_view.bot_name
        prompt = template.prompt(self.chat_view.turns, user, bot)
        stops = template.stop_sequences(user, bot) + self.sampling.stop_sequences()
        request = self._request(prompt, stops)
        if request is None:
            return
        self._gen = {"id": request.request_id, "mode": "chat", "pieces": [], "stops": stops}
        self.chat_view.begin_reply()
        self.chat_view.set_busy(True)
        self.llm.generate(request)
        self._update_actions()

    def on_chat_view_turn_edited(self, index: int, text: str) -> None:
        self.story.edit_chat_turn(index, text)
        self._mark_changed()

    def on_chat_view_template_changed(self, name: str) -> None:
        self.story.chat_template = name
        self._mark_changed()

    def on_chat_view_names_changed(self, user: str, bot: str) -> None:
        self.story.user_name, self.story.bot_name = user, bot
        self._mark_changed()

    def on_mode_switch_changed(self, index: int) -> None:
        mode = self.mode_switch.itemData(index)
        self.stack.setCurrentIndex(1 if mode == "chat" else 0)
        if self.story.mode != mode:
            self.story.mode = mode
        self._update_actions()
        (self.chat_view.input if mode == "chat" else self.story_view).setFocus()

    def on_toggle_mode_triggered(self) -> None:
        if not self.busy():
            self.mode_switch.setCurrentIndex(1 - self.mode_switch.currentIndex())

    # --- undo / redo and edits ---------------------------------------------------------
    def _sync_story_from_view(self) -> None:
        text = self.story_view.toPlainText()
        if text != self.story.text:
            self.story.text = text

    def _show_story_text(self) -> None:
        self.story_view.show_tree(self.story.tree)

    def undo(self) -> None:
        if self.busy():
            return
        self._sync_story_from_view()
        if self.story.undo():
            self._show_story_text()
            self._mark_changed()
        self._update_actions()

    def redo(self) -> None:
        if self.busy():
            return
        self._sync_story_from_view()
        if self.story.redo():
            self._show_story_text()
            self._mark_changed()
        self._update_actions()

    def on_story_view_user_edited(self) -> None:
        self._mark_changed()
        self.edit_timer.start()
        self.undo_action.setEnabled(True)
        self.redo_action.setEnabled(False)

    def on_edit_timer_timeout(self) -> None:
        if not self.busy():
            self._sync_story_from_view()
            self.story.checkpoint("edit")
            self.story_view.show_tree(self.story.tree)
            self._update_actions()

    def on_memory_changed(self) -> None:
        self._mark_changed()

    def _mark_changed(self) -> None:
        self.dirty = True
        self._autosave_due = True
        self._update_title()

    def _update_actions(self) -> None:
        busy = self.busy()
        story_mode = self.mode() == "story"
        loaded = self.model_info is not None and not self.llm.loading
        self.generate_action.setEnabled(loaded and not busy)
        self.stop_action.setEnabled(busy)
        self.retry_action.setEnabled(loaded and not busy)
        self.undo_action.setEnabled(story_mode and not busy and self.story.can_undo())
        self.redo_action.setEnabled(story_mode and not busy and self.story.can_redo())
        self.mode_switch.setEnabled(not busy)
        self.memory.setEnabled(not busy)

    def _update_title(self) -> None:
        name = Path(self.story_path).name if self.story_path else (self.story.title or "Untitled")
        self.setWindowTitle(f"{'*' if self.dirty else ''}{name} — NeoX Writer")

    # --- context view ------------------------------------------------------------------
    def on_context_dock_visibility_changed(self, visible: bool) -> None:
        if visible:
            self.refresh_context()

    def refresh_context(self) -> None:
        """Ask the engine thread for the context the next generation would see."""
        if self.model_info is None:
            self.context_view.show_error("Load a model to see the context.")
            return
        if self.mode() == "chat":
            template = TEMPLATES.get(self.chat_view.template_name(), TEMPLATES["plain"])
            text = template.prompt(self.chat_view.turns, self.chat_view.user_name, self.chat_view.bot_name)
        else:
            self._sync_story_from_view() if not self.busy() else None
            text = self.story.text
        request = self._request(text, [])
        if request is not None:
            self.llm.preview(request)

    def on_worker_context_ready(self, context) -> None:
        self.context_view.show_context(context)
        self.contextShown.emit(context)

    def on_worker_context_failed(self, message: str) -> None:
        self.context_view.show_error(message)

    # --- files -------------------------------------------------------------------------
    def _collect_story(self) -> Story:
        """The open story with everything the widgets hold (view text, memory, sampler, chat)."""
        if not self.busy():
            self._sync_story_from_view()
        self.memory.save_to(self.story)
        self.story.sampler = self.sampling.values()
        self.story.stop_sequences = self.sampling.stop_sequences()
        self.story.mode = self.mode()
        self.story.chat_template = self.chat_view.template_name()
        self.story.user_name, self.story.bot_name = self.chat_view.user_name, self.chat_view.bot_name
        self.story.chat_turns = [ChatTurn(t.role, t.text) for t in self.chat_view.turns]
        return self.story

    def show_story(self, story: Story, path: str | None) -> None:
        """Make `story` the open story (after open, import, recovery or New)."""
        self.story = story
        self.story_path = path
        self.memory.load_from(story)
        if story.sampler:
            self.sampling.apply_values(story.sampler)
        if story.stop_sequences or path:
            self.sampling.set_stop_sequences(story.stop_sequences)
        self.chat_view.set_names(story.user_name, story.bot_name)
        self.chat_view.set_turns(story.chat_turns)
        if story.chat_template:
            self.chat_view.set_template(story.chat_template)
        self.mode_switch.setCurrentIndex(1 if story.mode == "chat" else 0)
        self._show_story_text()
        self.llm.reset()
        self.dirty = False
        self._update_title()
        self._update_actions()

    def _confirm_discard(self) -> bool:
        """Ask before unsaved changes would be lost: Save, Discard or Cancel. True = go ahead."""
        if not self.dirty:
            return True
        answer = QMessageBox.question(
            self, "Unsaved changes", "The story has unsaved changes. Save them first?",
            QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel, QMessageBox.Save)
        if answer == QMessageBox.Save:
            return self.save()
        if answer == QMessageBox.Discard:
            self.dirty = False      # the user chose to lose them: no autosave either
            self._autosave_due = False
            return True
        return False

    def new_story(self) -> None:
        if self.busy() or not self._confirm_discard():
            return
        self.writer.remove(autosave_path())
        self.show_story(Story(), None)

    def on_open_triggered(self) -> None:
        if self.busy() or not self._confirm_discard():
            return
        path, _ = QFileDialog.getOpenFileName(self, "Open a story", self._story_dir(), STORY_FILTER)
        if path:
            self.open_story(path)

    def on_import_kobold_triggered(self) -> None:
        if self.busy() or not self._confirm_discard():
            return
        path, _ = QFileDialog.getOpenFileName(self, "Import a KoboldAI / Kobold Lite save", self._story_dir(),
                                              KOBOLD_FILTER)
        if path:
            self.open_story(path, imported=True)

    def open_story(self, path, imported: bool = False) -> None:
        """Read a story (native or Kobold) on a background thread; `storyOpened` fires when shown.

        A corrupt file or one from a newer version shows a message and leaves the open story alone.
        """
        path = str(path)

        def read():
            try:
                story = load_story(path)
            except StoryFormatError as e:
                emit_from_thread(self.storyRead, None, path, str(e))
            else:
                emit_from_thread(self.storyRead, story, "" if imported else path, "")
        threading.Thread(target=read, name="neox-story-read", daemon=True).start()

    def on_story_read(self, story, path: str, error: str) -> None:
        if story is None:
            self.show_error("Could not open the story", error)
            return
        if self.busy():
            self.show_error("Could not open the story", "A generation is running; stop it first.")
            return
        self.show_story(story, path or None)
        if not path:            # an import is a new, unsaved story
            self._mark_changed()
        self.storyOpened.emit(path)

    def _story_dir(self) -> str:
        last = self.settings.get("last_story_dir")
        return last if last and Path(last).is_dir() else str(paths.stories_dir())

    def save(self) -> bool:
        """Save to the story's file (asks for a name the first time). Returns False if cancelled."""
        if self.story_path is None:
            return self.on_save_as_triggered()
        self.save_to(self.story_path)
        return True

    def on_save_as_triggered(self) -> bool:
        paths.ensure(paths.stories_dir())
        path, _ = QFileDialog.getSaveFileName(self, "Save the story", self._story_dir(), STORY_FILTER)
        if not path:
            return False
        if not path.endswith(".json"):
            path += ".neoxstory.json"
        self.save_to(path)
        return True

    def save_to(self, path) -> None:
        """Write the story atomically on the writer thread; the autosave is then obsolete."""
        path = str(path)
        data = story_bytes(self._collect_story())
        self.story_path = path
        self.writer.write(path, data)
        self.writer.remove(autosave_path())
        self.dirty = False
        self._autosave_due = False
        self.settings.set("last_story_dir", str(Path(path).parent))
        self._update_title()
        self.storySaved.emit(path)

    def export_to(self, path, kind: str) -> None:
        """Export as "kobold" (Kobold Lite JSON), "text" or "markdown"."""
        story = self._collect_story()
        data = {"kobold": kobold_bytes, "text": lambda s: s.to_plain_text().encode("utf-8"),
                "markdown": lambda s: s.to_markdown().encode("utf-8")}[kind](story)
        self.writer.write(str(path), data)

    def _export_dialog(self, kind: str, title: str, file_filter: str, suffix: str) -> None:
        path, _ = QFileDialog.getSaveFileName(self, title, self._story_dir(), file_filter)
        if path:
            self.export_to(path if Path(path).suffix else path + suffix, kind)

    def on_export_kobold_triggered(self) -> None:
        self._export_dialog("kobold", "Export Kobold Lite JSON", KOBOLD_FILTER, ".json")

    def on_export_text_triggered(self) -> None:
        self._export_dialog("text", "Export plain text", "Text (*.txt)", ".txt")

    def on_export_markdown_triggered(self) -> None:
        self._export_dialog("markdown", "Export Markdown", "Markdown (*.md)", ".md")

    def on_writer_failed(self, path: str, message: str) -> None:
        self.show_error("Could not write a file", message)
        if path == self.story_path:
            self.dirty = True
            self._update_title()

    # --- autosave and recovery --------------------------------------------------------
    def autosave_now(self) -> None:
        """Write the open story to the autosave file if it has changes not saved anywhere."""
        if not self._autosave_due or not self.dirty:
            return
        self._autosave_due = False
        self.writer.write(autosave_path(), autosave_bytes(self._collect_story(), self.story_path))

    def on_autosave_timer_timeout(self) -> None:
        self.autosave_now()

    def on_recovery_found(self, recovery) -> None:
        if recovery is None:
            return
        self.recovery = recovery
        self._ask(recovery.describe(), self.accept_recovery, self.decline_recovery, title="Recover story")

    def accept_recovery(self) -> None:
        recovery, self.recovery = self.recovery, None
        if recovery is None or self.busy() or not self._confirm_discard():
            return
        self.show_story(recovery.story, recovery.story_path)
        self._mark_changed()

    def decline_recovery(self) -> None:
        self.recovery = None
        self.writer.remove(autosave_path())

    # --- dialogs ---------------------------------------------------------------------
    def show_error(self, title: str, message: str) -> None:
        """A non-blocking error dialog (the GUI keeps running; tests read `errorShown`)."""
        if self.error_box is not None:
            self.error_box.deleteLater()
        box = QMessageBox(QMessageBox.Warning, title, message, QMessageBox.Ok, self)
        box.setObjectName("errorBox")
        box.setWindowModality(Qt.WindowModal)
        box.open()
        self.error_box = box
        self.errorShown.emit(message)

    def _ask(self, text: str, on_yes, on_no=None, title: str = "NeoX Writer") -> None:
        """A non-blocking Yes/No question; the answer calls `on_yes` or `on_no`."""
        box = QMessageBox(QMessageBox.Question, title, text, QMessageBox.Yes | QMessageBox.No, self)
        box.setObjectName("questionBox")
        self._questions[box] = (on_yes, on_no)
        box.finished.connect(self.on_question_box_finished)
        box.open()

    def on_question_box_finished(self, result: int) -> None:
        box = self.sender()
        on_yes, on_no = self._questions.pop(box, (None, None))
        yes = box.standardButton(box.clickedButton()) == QMessageBox.Yes
        box.hide()
        box.deleteLater()
        if yes and on_yes is not None:
            on_yes()
        elif not yes and on_no is not None:
            on_no()

    # --- closing ---------------------------------------------------------------------
    def closeEvent(self, event) -> None:
        if not self._confirm_discard():
            event.ignore()
            return
        if self.busy():
            self.llm.stop()
        self.model_picker.cancel_downloads()
        self.autosave_timer.stop()
        if not self.dirty:
            self.writer.remove(autosave_path())
        else:
            self._autosave_due = True
            self.autosave_now()
        self.save_settings()
        self.shutdown()
        event.accept()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """End the engine thread and finish queued file writes (idempotent; also for an exit
        that did not go through closeEvent)."""
        self.autosave_timer.stop()
        self.llm.stop()               # the server's generation may be waiting for ours
        self.local_server.stop(wait=True)
        self.llm.shutdown()
        self.writer.wait()

    def on_memory_timer_timeout(self) -> None:
        self.memory_label.setText(f"RAM {_mb(resident_bytes())}")


def startup_model(settings: Settings) -> str | None:
    """The model to open at start: the last one used if it still exists, else the bundled demo."""
    last = settings.get("last_model")
    if last and Path(last).is_file():
        return last
    demo = demo_model()
    return str(demo) if demo else None


__all__ = ["MainWindow", "startup_model"]
