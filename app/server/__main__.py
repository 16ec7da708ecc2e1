"""`python -m app.server --model PATH [--host H] [--port P] [--api-key K]`."""
import sys

from app.server.cli import main

sys.exit(main())
