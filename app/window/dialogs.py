"""The window's dialogs: errors and questions (never blocking the event loop, except the one
unsaved-changes question), the story's file choosers and small prompts."""
from __future__ import annotations

import os
import re
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QFileDialog, QInputDialog, QMessageBox

from app import paths
from app.widgets.remotedialog import RemoteDialog

STORY_FILTER = "NeoX Writer stories (*.neoxstory.json *.json);;All files (*)"
KOBOLD_FILTER = "KoboldAI / Kobold Lite saves (*.json);;All files (*)"
EXPORTS = {"kobold": ("Export Kobold Lite JSON", KOBOLD_FILTER, ".json"),
           "text": ("Export plain text", "Text (*.txt)", ".txt"),
           "markdown": ("Export Markdown", "Markdown (*.md)", ".md"),
           "outline": ("Export the story tree as a Markdown outline", "Markdown (*.md)", ".md")}


def file_stem(story) -> str:
    """A file name for a story never saved: its title, else its first words ("Untitled story"
    for an empty one), without the characters file systems refuse."""
    words = (story.title or " ".join(story.text.split()[:6])).strip()
    stem = re.sub(r'[\\/:*?"<>|\x00-\x1f]+', " ", words).strip(" .")[:60].strip()
    return stem or "Untitled story"


class Dialogs(QObject):
    """Shows dialogs over `window`; `errorShown` carries every error's text (tests listen).
    The file choosers hand what the writer chose to the `document`."""

    errorShown = Signal(str)
    remoteChosen = Signal(object)          # a connected app.remote backend from the remote dialog
    threadsChosen = Signal(int)            # engine threads for the next load (0: automatic)

    def __init__(self, window, document, settings, keystore):
        super().__init__(window)
        self.window = window
        self.document = document
        self.settings = settings
        self.keystore = keystore               # the remote dialog keeps servers' keys there
        self.error_box: QMessageBox | None = None
        self.remote_dialog: RemoteDialog | None = None
        self._questions: dict = {}             # open question boxes -> (on_yes, on_no)

    def show_error(self, title: str, message: str) -> None:
        """A non-blocking error dialog (the GUI keeps running)."""
        if self.error_box is not None:
            self.error_box.deleteLater()
        box = QMessageBox(QMessageBox.Warning, title, message, QMessageBox.Ok, self.window)
        box.setObjectName("errorBox")
        box.setWindowModality(Qt.WindowModal)
        box.open()
        self.error_box = box
        self.errorShown.emit(message)

    def ask(self, text: str, on_yes, on_no=None, title: str = "NeoX Writer") -> None:
        """A non-blocking Yes/No question; the answer calls `on_yes` or `on_no`."""
        box = QMessageBox(QMessageBox.Question, title, text, QMessageBox.Yes | QMessageBox.No, self.window)
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

    def confirm_discard(self, dirty: bool, save) -> str | None:
        """Before unsaved changes would be lost: Save (calls `save()`, which says whether it
        saved), Discard or Cancel. Returns "clean", "saved", "discard", or None to stop."""
        if not dirty:
            return "clean"
        answer = QMessageBox.question(
            self.window, "Unsaved changes", "The story has unsaved changes. Save them first?",
            QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel, QMessageBox.Save)
        if answer == QMessageBox.Save:
            return "saved" if save() else None
        return "discard" if answer == QMessageBox.Discard else None

    def folder(self) -> str:
        """Where the file choosers start: the folder of the last story saved, else the stories folder."""
        last = self.settings.get("last_story_dir")
        return last if last and paths.is_dir(last) else str(paths.stories_dir())

    def save_to(self, path) -> None:
        self.settings.set("last_story_dir", str(Path(path).parent))
        self.document.save_to(path)

    def save(self) -> bool:
        """Save to the story's file (asks for a name the first time). Returns False if cancelled."""
        if self.document.path is None:
            return self.save_as()
        self.save_to(self.document.path)
        return True

    def save_as(self) -> bool:
        paths.ensure(paths.stories_dir())
        suggested = str(Path(self.folder()) / (file_stem(self.document.story) + ".neoxstory.json"))
        path = QFileDialog.getSaveFileName(self.window, "Save the story", suggested, STORY_FILTER)[0]
        if path:
            self.save_to(path if path.endswith(".json") else path + ".neoxstory.json")
        return bool(path)

    def open_story(self, kobold: bool = False) -> None:
        title = "Import a KoboldAI / Kobold Lite save" if kobold else "Open a story"
        path = QFileDialog.getOpenFileName(self.window, title, self.folder(), KOBOLD_FILTER if kobold else STORY_FILTER)[0]
        if path:
            self.document.open(path, imported=kobold)

    def export(self, kind: str) -> None:
        title, file_filter, suffix = EXPORTS[kind]
        suggested = str(Path(self.folder()) / (file_stem(self.document.story) + suffix))
        path = QFileDialog.getSaveFileName(self.window, title, suggested, file_filter)[0]
        if path:
            self.document.export_to(path if Path(path).suffix else path + suffix, kind)

    def ask_threads(self) -> None:
        cores = os.cpu_count() or 1
        n, ok = QInputDialog.getInt(self.window, "Engine threads", f"This computer has {cores} cores.\nThreads "
                                    "(0 = automatic); the model is loaded again with them:",
                                    self.settings.get("threads"), 0, 256)
        if ok:
            self.threadsChosen.emit(n)

    def open_remote(self) -> RemoteDialog:
        """Show the "Remote server…" dialog (non-modal); `remoteChosen` says which server."""
        if self.remote_dialog is not None:
            self.remote_dialog.deleteLater()
        self.remote_dialog = RemoteDialog(self.settings, self.keystore, self.window)
        self.remote_dialog.backendChosen.connect(self.remoteChosen)
        self.remote_dialog.open()
        return self.remote_dialog
