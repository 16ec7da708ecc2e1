"""`python -m app [--model PATH] [--story FILE]` and the `neox-writer` console script.

All command-line options are declared in `build_parser`, so later flags (``--self-test``,
``--server``) are one `add_argument` and one branch in `main` away.
"""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    """The one argument parser of the desktop program."""
    parser = argparse.ArgumentParser(prog="neox-writer",
                                     description="Offline story writing and chat with local GPT-NeoX models.")
    parser.add_argument("--model", metavar="PATH", help="ggml model file to load at start")
    parser.add_argument("--story", metavar="FILE", help="story file (NeoX Writer or KoboldAI JSON) to open")
    return parser


def run_window(args) -> int:
    """Start the Qt application with the main window; returns the exit code."""
    from PySide6.QtCore import QCoreApplication, Qt
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    from app.mainwindow import MainWindow, startup_model

    QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
    QCoreApplication.setOrganizationName("NeoXWriter")
    QCoreApplication.setApplicationName("NeoX Writer")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = MainWindow()
    window.show()
    model = args.model or startup_model(window.settings)
    if model:
        window.open_model(model)
    if args.story:
        window.open_story(args.story)
    code = app.exec()
    window.writer.shutdown()
    return code


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_window(args)


if __name__ == "__main__":
    sys.exit(main())
