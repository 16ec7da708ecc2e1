"""One module per ``python -m engine`` subcommand (see engine/cli.py)."""
