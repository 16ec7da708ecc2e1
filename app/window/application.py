"""Starting the desktop program: the QApplication, the main window, the model to open first."""
from __future__ import annotations

import sys

from app.bundled import demo_model, icon_path
from app.paths import is_file
from app.recent import forget_last_story, startup_story


def startup_model(settings) -> str | None:
    """The model to open at start: the last one used if it still exists, else the bundled demo."""
    last = settings.get("last_model")
    if last and is_file(last):
        return last
    demo = demo_model()
    return str(demo) if demo else None


def open_at_start(window, model: str | None, story: str | None) -> None:
    """Open what the command line names, else the last model and the last story. A last story that
    is gone says so (once: it is forgotten) and leaves a new, empty story; one that cannot be read
    says why (the document's error) and is left as it is on disk."""
    model = model or startup_model(window.settings)
    if model:
        window.open_model(model)
    last = window.settings.get("last_story")
    story = story or startup_story(window.settings)
    if story:
        window.open_story(story)
    elif last:
        forget_last_story(window.settings)
        window.write_settings()
        window.dialogs.show_error("Could not reopen the last story",
                                  f"The story you had open last, {last}, is no longer there (moved, renamed "
                                  "or deleted). A new, empty story is open; File › Open… finds the story if it "
                                  "was moved.")


def run_window(args) -> int:
    """Start the Qt application with the main window; returns the exit code."""
    from PySide6.QtCore import QCoreApplication, Qt
    from PySide6.QtGui import QGuiApplication, QIcon
    from PySide6.QtWidgets import QApplication

    from app.window.mainwindow import MainWindow

    QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
    QCoreApplication.setOrganizationName("NeoXWriter")
    QCoreApplication.setApplicationName("NeoX Writer")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setWindowIcon(QIcon(str(icon_path())))
    app.setDesktopFileName("neox-writer")          # matches the entry --install-desktop-entry writes
    window = MainWindow(backend="staged")     # a first start writes at once, full speed follows
    window.show()
    if args.time_first_token:
        from app.window.firsttoken import FirstTokenTimer
        window.first_token_timer = FirstTokenTimer(window, app, args.report)
    open_at_start(window, args.model, args.story)
    if args.screenshot:
        _screenshot_when_ready(window, args.screenshot, app)
    code = app.exec()
    window.shutdown()            # after app.exit() the window may never have been closed
    # What the engine thread sent before it ended (the last tokens of a generation that was running
    # at the exit) is still queued for the story: deliver it while the autosave writer still takes
    # writes, rather than losing it or meeting a closed writer on some later event loop.
    app.sendPostedEvents()
    window.writer.shutdown()
    return code


def _screenshot_when_ready(window, path: str, app) -> None:
    """Grab the window after the model has loaded (or after 60 s if none does), then quit."""
    from PySide6.QtCore import QTimer

    def grab():
        app.processEvents()
        ok = window.grab().save(path)
        print(f"screenshot {'saved to ' + path if ok else 'could not be written to ' + path}", flush=True)
        app.exit(0 if ok else 1)

    window.modelLoaded.connect(lambda *_: QTimer.singleShot(500, grab))
    QTimer.singleShot(60_000, grab)
