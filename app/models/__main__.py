"""Entry point of `python -m app.models` (see cli.py)."""
import sys

from app.models.cli import main

sys.exit(main())
