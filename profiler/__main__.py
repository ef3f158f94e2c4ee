"""``python -m profiler``: see :mod:`profiler.cli`."""

import sys

from .cli import main

sys.exit(main())
