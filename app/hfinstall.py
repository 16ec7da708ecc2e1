"""HFInstall: the controller behind "Add from Hugging Face": one add-hf at a time, off the GUI thread.

It runs `ModelManager.plan_hf` and `add_hf` on a Python thread and reports through Qt signals
(queued to the GUI thread): the plan once the revision is resolved, download and conversion
progress, and the outcome. `cancel()` pauses the download (its .part stays) or cancels the
conversion (its journal stays): starting the same install again resumes either.
"""
from __future__ import annotations

import threading

from PySide6.QtCore import QObject, Signal

from app.threads import emit_from_thread
from app.units import human_bytes


class HFInstall(QObject):
    """Runs one Hugging Face install at a time for a ModelManager; emits its progress and outcome."""

    planned = Signal(str)                       # "repo@revision is commit …: N files, size"
    progress = Signal(str, int, int, str)       # phase ("download"/"convert"), done, total, text
    finished = Signal(str, str)                 # installed model id ("" on failure), error ("" = success)
    checkpointDeleted = Signal(bool)

    def __init__(self, manager_factory, parent=None):
        super().__init__(parent)
        self._factory = manager_factory
        self._thread: threading.Thread | None = None
        # Busy from start() until just before `finished` is emitted, not while the thread lives:
        # the thread outlives its last emit by a moment, and an install started from the slot of
        # `finished` (or a click right after it) must not be dropped for that (it was, under load,
        # leaving the dialog's Install button disabled with nothing running).
        self._busy = False
        self._download = None
        self._conversion = None
        self.last = None                        # the HFInstall result of the last success
        self.checkpoint_bytes = 0               # what its downloaded checkpoint occupies

    @property
    def running(self) -> bool:
        return self._busy

    def start(self, repo: str, revision: str, out_type: str | None, keep_checkpoint: bool) -> bool:
        """Begin installing `repo@revision`; False (and nothing started) while another install runs."""
        if self._busy:
            return False
        self._busy = True
        from app.models.download import DownloadControl
        from engine.convert import ConversionControl
        self._download, self._conversion = DownloadControl(), ConversionControl()
        self._thread = threading.Thread(target=self._run, args=(repo, revision, out_type, keep_checkpoint),
                                        name="neox-hf-install", daemon=True)
        self._thread.start()
        return True

    def cancel(self) -> None:
        if self._download is not None:
            self._download.pause()
        if self._conversion is not None:
            self._conversion.cancel()

    def delete_checkpoint(self) -> None:
        """Delete the downloaded files of the last install (on a thread: they may be gigabytes)."""
        record = self.last.record if self.last is not None else None
        if record is None:
            return

        def work():
            emit_from_thread(self.checkpointDeleted, self._factory().delete_checkpoint(record.repo, record.commit))
        threading.Thread(target=work, name="neox-hf-delete", daemon=True).start()

    def _run(self, repo: str, revision: str, out_type: str | None, keep_checkpoint: bool) -> None:
        def on_download(p):
            text = f"{p.file}: {p.phase} {human_bytes(p.done)}" + (f" of {human_bytes(p.total)}" if p.total else "")
            emit_from_thread(self.progress, "download", int(p.done), int(p.total or 0), text)

        def on_convert(p):
            eta = f", {p.eta:.0f} s left" if p.eta is not None else ""
            emit_from_thread(self.progress, "convert", int(p.done), int(p.total),
                             f"converting tensor {p.tensors_done + 1} of {p.tensors_total}{eta}")
        try:
            manager = self._factory()
            plan = manager.plan_hf(repo, revision, on_download, self._download)
            emit_from_thread(self.planned, f"{plan.repo}@{plan.revision} is commit {plan.commit[:12]}: "
                                           f"{len(plan.weights)} weight file(s), {human_bytes(plan.download_bytes)}")
            result = manager.add_hf(plan.repo, plan.revision, out_type, on_progress=on_download,
                                    control=self._download, on_convert=on_convert, conversion=self._conversion,
                                    keep_checkpoint=keep_checkpoint, plan=plan)
        except Exception as exc:   # noqa: BLE001 - every failure is shown to the user as text
            self._busy = False
            emit_from_thread(self.finished, "", str(exc) or type(exc).__name__)
            return
        self.last = result
        self.checkpoint_bytes = plan.download_bytes
        self._busy = False
        emit_from_thread(self.finished, result.record.id, "")
