"""`python -m app [--model PATH] [--story FILE]` and the `neox-writer` console script.

All command-line options are declared in `build_parser`, so later flags (``--self-test``,
``--server``) are one `add_argument` and one branch in `main` away.
"""
from __future__ import annotations

import argparse
import sys

from app import __version__


def build_parser() -> argparse.ArgumentParser:
    """The one argument parser of the desktop program."""
    parser = argparse.ArgumentParser(prog="neox-writer",
                                     description="Offline story writing and chat with local GPT-NeoX models.")
    parser.add_argument("--model", metavar="PATH", help="ggml model file to load at start")
    parser.add_argument("--story", metavar="FILE", help="story file (NeoX Writer or KoboldAI JSON) to open")
    parser.add_argument("--self-test", action="store_true",
                        help="load the demo (or --model) model offscreen, generate 16 tokens, print a report, exit")
    parser.add_argument("--report", metavar="FILE",
                        help="with --self-test or --time-first-token: also write the report to FILE")
    parser.add_argument("--time-first-token", action="store_true",
                        help="start the window as usual, press Generate once the model is loaded, print when "
                             "the first token and full speed came (seconds after the window was shown), quit")
    parser.add_argument("--screenshot", metavar="PNG",
                        help="save a picture of the main window once the model is loaded, then quit "
                             "(a smoke test of the window, also offscreen)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--install-desktop-entry", action="store_true",
                        help="add NeoX Writer to the desktop's application menu (Linux: a .desktop file and "
                             "the icon in the user's XDG folders), then exit")
    parser.add_argument("--uninstall-desktop-entry", action="store_true",
                        help="remove what --install-desktop-entry wrote, then exit")
    parser.add_argument("--server", action="store_true",
                        help="serve --model over KoboldCpp- and OpenAI-compatible APIs, headless "
                             "(options: neox-writer --server --help)")
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--server" in argv:                       # the server has its own options (host, port, key, ...)
        from app.server.cli import main as server_main
        return server_main(argv)
    args = build_parser().parse_args(argv)
    if args.install_desktop_entry or args.uninstall_desktop_entry:
        from app.desktop_entry import main as desktop_entry_main
        return desktop_entry_main(remove=args.uninstall_desktop_entry)
    if args.self_test:
        from app.selftest import run_self_test
        return run_self_test(args.model, args.report)
    from app.window.application import run_window
    return run_window(args)


if __name__ == "__main__":
    sys.exit(main())
