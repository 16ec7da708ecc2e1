"""Make the window's screenshots: docs/screenshot.png (1366x768, light), docs/screenshot-dark.png
(1920x1080, dark) and docs/screenshot-small.png (1024x700, light), and with --all the other three
(each size in the other theme) to look at, each with the bundled demo model loaded and a story it
continued (seed 7, so the text is the same each time).

    QT_QPA_PLATFORM=offscreen python tools/screenshot_window.py [--out-dir docs] [--all]

A fresh settings folder is used (NEOX_WRITER_HOME in a temporary folder): the window starts as a
first run does.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPT = ("Chapter One\n\nThe Dashwoods had not been a week at Barton Cottage when Marianne, walking alone "
          "on the downs above the village, saw a stranger coming up the path with a letter in his hand.")
SHOTS = {"screenshot.png": ((1366, 768), "light"), "screenshot-dark.png": ((1920, 1080), "dark")}
SMALL = {"screenshot-small.png": ((1024, 700), "light")}
OTHERS = {"screenshot-small-dark.png": ((1024, 700), "dark"), "screenshot-1366-dark.png": ((1366, 768), "dark"),
          "screenshot-1920-light.png": ((1920, 1080), "light")}     # to look at, not kept in docs/


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    parser.add_argument("--all", action="store_true", help="every size in both themes")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["NEOX_WRITER_HOME"] = tempfile.mkdtemp(prefix="neox-shot-")
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from app.bundled import demo_model
    from app.window.mainwindow import MainWindow

    app = QApplication(sys.argv[:1])
    window = MainWindow(check_recovery=False)
    window.resize(*SHOTS["screenshot.png"][0])
    window.show()

    def wait_for(signal, ms=300_000):
        loop = QEventLoop()
        signal.connect(loop.quit)
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    window.open_model(demo_model())
    wait_for(window.modelLoaded)
    window.document.story.title = "Barton Cottage"
    window.memory.load_from(window.document.story)
    window.story_view.setPlainText(PROMPT)
    window.sampling.seed_spin.setValue(7)
    window.sampling.max_tokens_spin.setValue(120)
    window.commands.generate.trigger()
    wait_for(window.generationFinished)
    shots = {**SHOTS, **SMALL, **(OTHERS if args.all else {})}
    for name, (size, theme) in shots.items():
        window.appearance.set_theme(theme, save=False)
        window.writing.apply_look()
        window.resize(*size)
        end = QEventLoop()
        QTimer.singleShot(1500, end.quit)     # the layout, the page's margins and the word count settle
        end.exec()
        window.writing.fit_model_list()       # the model list as a first run at this size lays it out
        QTimer.singleShot(300, end.quit)
        end.exec()
        path = args.out_dir / name
        print(f"{path}: {'saved' if window.grab().save(str(path)) else 'NOT saved'}", flush=True)
    window.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
