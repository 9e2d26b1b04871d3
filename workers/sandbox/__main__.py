"""Run the sandbox with `python -m workers.sandbox`, the same as `push-server sandbox`."""

from __future__ import annotations

import sys

from workers.sandbox.server import main

sys.exit(main(sys.argv[1:]))
