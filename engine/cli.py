"""``python -m engine``: one argparse parser; each subcommand lives in ``engine/commands/<name>.py``.

A subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func=run``; ``run(args)`` returns the exit code. Errors a user can cause (a malformed file, a bad
setting, a missing file) print as one line without a traceback and exit with code 2.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import engine.commands
from engine.errors import CLIError

# The order subcommands appear in --help; any other module in engine/commands follows.
PREFERRED_ORDER = ["info", "generate", "tokenize", "perplexity", "logits", "bench", "convert", "quantize"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="NeoX Writer's engine: read, convert, quantize and run GPT-NeoX (Pythia) files, legacy ggml and GGUF.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    found = [m.name for m in pkgutil.iter_modules(engine.commands.__path__)]
    names = [n for n in PREFERRED_ORDER if n in found] + sorted(n for n in found if n not in PREFERRED_ORDER)
    for name in names:
        importlib.import_module(f"engine.commands.{name}").register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, OSError) as exc:     # ModelFormatError and SettingsError are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
