"""`python -m app` is the `openrouter-proxy` command."""

import sys

from app.cli import main

sys.exit(main())
