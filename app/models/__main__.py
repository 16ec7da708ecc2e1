"""Entry point of `python -m app.models` (see cli.py)."""
import sys

from .cli import main

sys.exit(main())
