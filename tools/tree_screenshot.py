"""Make docs/screenshot-tree.png: the window writing in branches with the bundled demo model.

Runs offscreen in a throwaway NEOX_WRITER_HOME: types an opening, generates three alternatives,
switches to the second (Alt+Right), retries once from there, turns on the probability colours
and grabs the window (QWidget.grab). The numpy reference backend is used, so there is no JIT
warm-up; the demo model is small enough for it.

    QT_QPA_PLATFORM=offscreen python tools/tree_screenshot.py [OUT.png]
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

OPENING = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
           "must be in want of a wife. When Mr. Darcy came to Netherfield,")


def main(out: str) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["NEOX_WRITER_HOME"] = tempfile.mkdtemp(prefix="neox-shot-")
    from PySide6.QtCore import QEventLoop, Qt, QTimer
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from app.bundled import demo_model
    from app.window.mainwindow import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = MainWindow(backend="reference", check_recovery=False)
    window.resize(1360, 820)
    window.show()

    def wait_for(signal, seconds: int = 300) -> None:
        loop = QEventLoop()
        signal.connect(loop.quit)
        QTimer.singleShot(seconds * 1000, loop.quit)
        loop.exec()

    window.open_model(str(demo_model()))
    wait_for(window.modelLoaded)
    window.sampling.max_tokens_spin.setValue(28)
    window.sampling.seed_spin.setValue(1813)
    window.sampling.alternatives_spin.setValue(3)
    window.story_view.setPlainText(OPENING)
    window.generation.generate()
    wait_for(window.generationFinished)
    window.story_view.setFocus()
    QTest.keyClick(window.story_view, Qt.Key_Right, Qt.AltModifier)
    window.sampling.alternatives_spin.setValue(1)
    window.generation.generate()
    wait_for(window.generationFinished)
    window.branching.probabilities.setChecked(True)
    window.branching.dock.raise_()
    settle = QEventLoop()                  # the status bar's word count waits for a pause, then counts on a thread
    QTimer.singleShot(1500, settle.quit)
    settle.exec()
    ok = window.grab().save(out)
    print(f"screenshot {'saved to ' + out if ok else 'could not be written to ' + out}")
    window.document.dirty = False          # nothing to ask about: the story is a throwaway
    window.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[1]
                                                             / "docs" / "screenshot-tree.png")))
