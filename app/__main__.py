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
    parser.add_argument("--self-test", action="store_true",
                        help="load the demo (or --model) model offscreen, generate 16 tokens, print a report, exit")
    parser.add_argument("--report", metavar="FILE", help="with --self-test: also write the report line to FILE")
    parser.add_argument("--server", action="store_true",
                        help="serve --model over KoboldCpp- and OpenAI-compatible APIs, headless "
                             "(options: neox-writer --server --help)")
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
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--server" in argv:                       # the server has its own options (host, port, key, ...)
        from app.server.cli import main as server_main
        return server_main(argv)
    args = build_parser().parse_args(argv)
    if args.self_test:
        from app.selftest import run_self_test
        return run_self_test(args.model, args.report)
    return run_window(args)


if __name__ == "__main__":
    sys.exit(main())
