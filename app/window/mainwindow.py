"""The main window: builds the widgets and the controllers, and wires one to the other.

Data flows one way: the engine thread (`ChatLLM`) reports to the `GenerationController` and
the `ModelLoader`; a finished generation goes to the `StoryDocument`, which owns the story and
says when it changed; the widgets show what the controllers and the document say. The window
holds no story state of its own and never waits for the engine, the disk or the network.
"""
from __future__ import annotations

from functools import partial

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QMainWindow, QStackedWidget

from app.autosave import FileWriter
from app.chatllm import ChatLLM, freeze_heap
from app.chattemplates import template_for_model
from app.document import StoryDocument
from app.generation import GenerationController
from app.keystore import KeyStore
from app.localserver import LocalServer
from app.modelloader import ModelLoader
from app.settings import Settings, settings_path
from app.textsource import model_label
from app.widgets.chatview import ChatView
from app.widgets.contextview import ContextView
from app.widgets.memorypanel import MemoryPanel
from app.widgets.modelpicker import ModelPicker
from app.widgets.samplingpanel import SamplingPanel
from app.widgets.serverpanel import ServerPanel
from app.widgets.storyview import StoryView
from app.widgets.tokenprobs import TokenProbsPopup
from app.window.actions import Actions
from app.window.appearance import Appearance, dock_panels
from app.window.branching import Branching
from app.window.dialogs import Dialogs
from app.window.statusbar import StatusBar
from app.window.writing import WritingTools


class MainWindow(QMainWindow):
    """NeoX Writer's window: write a story or chat with a local GPT-NeoX model."""

    modelLoaded = Signal(dict)           # the model's info() when a load succeeds
    modelLoadFailed = Signal(str)        # the engine's message
    generationFinished = Signal(object)  # generation.Generated
    storyOpened = Signal(str)            # path
    storySaved = Signal(str)             # path
    errorShown = Signal(str)             # every error dialog's text (tests listen here)
    contextShown = Signal(object)        # the Context the context view now shows
    resized = Signal()                   # (not an event filter: that runs in Python at every paint,
                                         # five a streamed batch, each a wait for the engine's GIL)

    def __init__(self, settings: Settings | None = None, *, check_recovery: bool = True, backend: str = "auto"):
        """`backend` is the engine's ("auto", "fast", "reference" or "staged": the program's, which
        writes at once on a first start while the fast kernels compile); `check_recovery` looks for
        an autosave left by a crash."""
        super().__init__(objectName="mainWindow")
        self.settings = settings or Settings.load()
        self.keystore = KeyStore()             # API keys (remote servers, our server) stay out of settings
        self.writer = FileWriter(self)
        self.llm = ChatLLM(self.settings.get("threads") or None, self, backend=backend)
        self._build_widgets()
        self.document = StoryDocument(self.writer, self.sampling.save_to, self)
        self.generation = GenerationController(self.llm, self.document, self.sampling.options, self)
        self.models = ModelLoader(self.llm, self.settings, self)
        self.dialogs = Dialogs(self, self.document, self.settings, self.keystore)
        self.commands = Actions(self, self.docks, self.server_panel.action, self.settings.get("theme"))
        self.status = StatusBar(self)
        self.setStatusBar(self.status)
        self.branching = Branching(self)       # the story tree: panel, alternatives, moves
        self.appearance = Appearance(self.settings, self.story_view, self.write_settings)
        self.autosave_timer = QTimer(self, interval=max(5, self.settings.get("autosave_seconds")) * 1000)
        self._connect_signals()
        self._apply_settings()
        self.writing = WritingTools(self)      # page, find, counts, full screen, recent stories, focus keys
        self.on_document_story_replaced()
        self.autosave_timer.start()
        self.model_picker.refresh()
        freeze_heap()
        if check_recovery:
            self.document.look_for_recovery()

    # --- building --------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        self.story_view = StoryView()
        self.chat_view = ChatView()
        self.stack = QStackedWidget()
        self.stack.addWidget(self.story_view)
        self.stack.addWidget(self.chat_view)
        self.setCentralWidget(self.stack)
        self.token_popup = TokenProbsPopup(self)
        self.sampling = SamplingPanel()
        self.memory = MemoryPanel()
        self.context_view = ContextView()
        self.model_picker = ModelPicker(settings=self.settings, save_settings=self.write_settings)
        self.local_server = LocalServer(self.llm.worker, self)
        self.server_panel = ServerPanel(self.local_server, self.settings, self.keystore, self.write_settings)
        self.docks = dock_panels(self, {"models": self.model_picker, "sampling": self.sampling,
                                        "memory": self.memory, "context": self.context_view,
                                        "server": self.server_panel})

    def _connect_signals(self) -> None:
        """The one place where controllers, document, widgets and actions meet."""
        for connections in (self._engine_connections(), self._document_connections(),
                            self._widget_connections(), self._action_connections()):
            for signal, slot in connections:
                signal.connect(slot)

    def _engine_connections(self) -> list:
        g, m, worker = self.generation, self.models, self.llm.worker
        return [(m.loading, self.on_models_loading), (m.stage, self.status.show_stage),
                (m.loaded, g.on_model_changed), (m.loaded, self.on_models_loaded), (m.failed, self.on_models_failed),
                (m.confirmNeeded, self.dialogs.ask), (m.problem, self.dialogs.show_error),
                (self.dialogs.remoteChosen, m.use_remote),
                (g.storyStarted, self.story_view.begin_generation), (g.piecesReady, self.story_view.append_pieces),
                (g.replyStarted, self.chat_view.begin_reply), (g.replyChanged, self.chat_view.set_reply_text),
                (g.finished, self.document.record), (g.finished, self.story_view.end_generation),
                (g.finished, self.on_generation_finished),
                (g.failed, self.document.record), (g.failed, self.story_view.end_generation),
                (g.busyChanged, self.chat_view.set_busy), (g.busyChanged, self._update_actions),
                (g.problem, self.dialogs.show_error), (g.notice, self.status.show_notice),
                (worker.speedChanged, self.status.show_speed), (worker.backendChanged, self.status.show_backend),
                (worker.contextReady, self.context_view.show_context),
                (worker.contextReady, self.contextShown), (worker.contextFailed, self.context_view.show_error),
                (self.server_panel.statusChanged, self.status.show_server),
                (self.local_server.failed, self.status.show_notice)]

    def _document_connections(self) -> list:
        d = self.document
        return [(d.storyReplaced, self.on_document_story_replaced), (d.textReplaced, self.on_document_text_replaced),
                (d.chatChanged, self.on_document_chat_changed), (d.historyChanged, self._update_actions),
                (d.dirtyChanged, self._update_title), (d.saved, self.storySaved), (d.opened, self.storyOpened),
                (d.problem, self.dialogs.show_error), (d.recoveryFound, self.on_document_recovery_found),
                (self.dialogs.errorShown, self.errorShown), (self.autosave_timer.timeout, d.autosave_now)]

    def _widget_connections(self) -> list:
        d, g, chat = self.document, self.generation, self.chat_view
        return [(self.story_view.userEdited, self.on_story_view_user_edited),
                (self.story_view.undoRequested, d.undo), (self.story_view.redoRequested, d.redo),
                (self.story_view.tokenClicked, self.on_story_view_token_clicked),
                (self.token_popup.alternativeChosen, self.on_token_popup_alternative_chosen),
                (chat.sendRequested, g.send), (chat.regenerateRequested, g.regenerate),
                (chat.turnEdited, d.edit_turn), (chat.templateChanged, d.set_chat_template),
                (chat.namesChanged, d.set_names),
                (self.sampling.presetSaved, self.on_sampling_preset_saved), (self.memory.changed, self.on_memory_changed),
                (self.context_view.refresh_button.clicked, lambda: self.refresh_context()),
                (self.docks["context"].visibilityChanged, self.refresh_context),
                (self.model_picker.modelChosen, self.models.open),
                (self.model_picker.remoteRequested, self.dialogs.open_remote)]

    def _action_connections(self) -> list:
        a, g, d = self.commands, self.generation, self.document
        return [(a.generate.triggered, self.on_generate_triggered), (a.stop.triggered, g.stop),
                (a.retry.triggered, g.retry), (a.undo.triggered, d.undo), (a.redo.triggered, d.redo),
                (a.new.triggered, self.new_story), (a.open.triggered, self.on_open_triggered),
                (a.import_kobold.triggered, partial(self.on_open_triggered, kobold=True)),
                (a.save.triggered, self.dialogs.save), (a.save_as.triggered, self.dialogs.save_as),
                *[(action.triggered, partial(self.dialogs.export, kind)) for kind, action in a.export.items()],
                (a.open_model.triggered, self.model_picker.on_open_file_clicked),
                (a.remote.triggered, self.dialogs.open_remote), (a.quit.triggered, self.close),
                (a.toggle_mode.triggered, a.flip_mode),
                (a.mode_switch.currentIndexChanged, self.on_mode_switch_changed),
                (a.zoom_in.triggered, partial(self.appearance.zoom, 1)),
                (a.zoom_out.triggered, partial(self.appearance.zoom, -1)),
                (a.theme_group.triggered, self.appearance.on_theme_group_triggered),
                (a.threads.triggered, self.dialogs.ask_threads), (self.dialogs.threadsChosen, self.models.set_threads),
                (self.dialogs.threadsChosen, self.write_settings)]

    def _apply_settings(self) -> None:
        self.sampling.restore(self.settings)
        self.appearance.restore(self, self.docks)
        self.document.story.mode = "chat" if self.settings.get("mode") == "chat" else "story"

    # --- what the controllers and the document report ----------------------------------------
    def on_models_loaded(self, info: dict) -> None:
        remote, name = bool(info.get("remote")), model_label(info)
        self.status.show_model(info)
        self.sampling.set_model(info)
        self.document.story.model_id = name
        if not self.document.story.chat_turns:
            self.chat_view.set_template(template_for_model(info.get("model", name) if remote else name).name)
        self.write_settings()
        self.server_panel.on_model_loaded(info)
        self._update_actions()
        freeze_heap()
        self.modelLoaded.emit(info)
        if self.docks["context"].isVisible():
            self.refresh_context()

    def on_models_loading(self, text: str) -> None:
        self.status.show_loading(text)
        self._update_actions()

    def on_models_failed(self, message: str) -> None:
        self.status.show_load_failed()
        self._update_actions()
        self.dialogs.show_error("Could not load the model", message)
        self.modelLoadFailed.emit(message)

    def on_generation_finished(self, generated) -> None:
        self.status.show_generated(generated, self.sampling.values()["n_ctx"])
        self.generationFinished.emit(generated)
        if self.docks["context"].isVisible():
            self.refresh_context()

    def on_document_story_replaced(self) -> None:
        story = self.document.story
        self.memory.load_from(story)
        self.sampling.load_from(story, opened=self.document.path is not None)
        self.chat_view.load_from(story)
        self.commands.set_mode(story.mode)
        self.on_document_text_replaced()
        self.llm.reset()
        self._update_title()
        self._update_actions()

    def on_document_text_replaced(self) -> None:
        self.story_view.show_tree(self.document.story.tree)

    def on_document_chat_changed(self) -> None:
        self.chat_view.set_turns(self.document.story.chat_turns, self.document.story.chat_positions())

    def on_document_recovery_found(self, recovery) -> None:
        self.dialogs.ask(recovery.describe(), self.accept_recovery, self.document.decline_recovery,
                         title="Recover story")

    def accept_recovery(self) -> None:
        if not self.generation.busy() and self._confirm_discard():
            self.document.recover()

    # --- what the widgets report -------------------------------------------------------------
    def on_story_view_user_edited(self) -> None:
        self.document.edit_text(self.story_view.toPlainText())    # typing: the one way from view to story

    def on_story_view_token_clicked(self, index: int, at) -> None:
        if not self.generation.busy():
            self.token_popup.show_for(index, self.story_view.tokens[index].piece, at)

    def on_token_popup_alternative_chosen(self, index: int, text: str, token: int) -> None:
        if index < len(self.story_view.tokens):
            self.generation.choose_alternative(self.story_view.token_start_offset(index), text, token)

    def on_memory_changed(self) -> None:
        self.memory.save_to(self.document.story)
        self.document.mark_changed()

    def on_mode_switch_changed(self, index: int) -> None:
        mode = self.commands.mode_switch.itemData(index)
        self.stack.setCurrentIndex(1 if mode == "chat" else 0)
        self.document.story.mode = mode
        self._update_actions()
        (self.chat_view.input if mode == "chat" else self.story_view).setFocus()

    def on_generate_triggered(self) -> None:
        if self.commands.mode() == "chat" and self.chat_view.input.toPlainText().strip():
            self.chat_view.on_send_clicked()        # what the writer typed is sent first
        else:
            self.generation.generate()

    def refresh_context(self, visible: bool = True) -> None:
        """Ask the engine thread for the context the next generation would see (when the
        context dock is visible: `visible` is its visibilityChanged argument)."""
        if not visible:
            return
        if self.models.info is None:
            self.context_view.show_error("Load a model to see the context.")
        else:
            self.generation.preview()

    # --- settings ------------------------------------------------------------------------------
    def on_sampling_preset_saved(self, name: str, values: dict) -> None:
        self.settings.set("user_presets", {**self.settings.get("user_presets"), name: values})
        self.write_settings()

    def write_settings(self) -> None:
        """Write the settings file now (on the writer thread)."""
        self.writer.write(settings_path(), self.settings.to_bytes())

    def save_settings(self) -> None:
        self.appearance.save(self)
        self.sampling.remember(self.settings)
        self.settings.set("mode", self.commands.mode())
        self.write_settings()

    def _update_actions(self, *args) -> None:
        loaded = self.models.info is not None and not self.llm.loading
        self.commands.update(self.generation.busy(), loaded, self.document.story)
        self.memory.setEnabled(not self.generation.busy())

    def _update_title(self, *args) -> None:
        self.setWindowTitle(f"{self.document.title()} — NeoX Writer")

    # --- files -----------------------------------------------------------------------------------
    def open_model(self, path, tokenizer_json: str = "") -> None:
        """Load a model file on the engine thread; `modelLoaded` fires when it is ready."""
        self.models.open(path, tokenizer_json)

    def open_story(self, path, imported: bool = False) -> None:
        """Read a story (native or Kobold) on a thread; `storyOpened` fires when it is shown."""
        self.document.open(path, imported)

    def save_to(self, path) -> None:
        """Write the story atomically on the writer thread (`storySaved` fires)."""
        self.dialogs.save_to(path)

    def on_open_triggered(self, checked: bool = False, kobold: bool = False) -> None:
        if not self.generation.busy() and self._confirm_discard():
            self.dialogs.open_story(kobold)

    def new_story(self) -> None:
        if not self.generation.busy() and self._confirm_discard():
            self.document.new()

    def _confirm_discard(self) -> str | None:
        return self.dialogs.confirm_discard(self.document.dirty, self.dialogs.save)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self.resized.emit()

    # --- closing -----------------------------------------------------------------------------------
    def closeEvent(self, event) -> None:
        answer = self._confirm_discard()
        if answer is None:
            event.ignore()
            return
        self.generation.stop()
        self.model_picker.cancel_downloads()
        self.autosave_timer.stop()
        self.document.close(discard=answer == "discard")
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


__all__ = ["MainWindow"]
