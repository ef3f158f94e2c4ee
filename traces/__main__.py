"""Entry point of ``python -m traces`` (see :mod:`traces.cli`)."""

from __future__ import annotations

import sys

from traces.cli import main

if __name__ == "__main__":
    sys.exit(main())
