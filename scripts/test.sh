#!/usr/bin/env bash
# Sets up (scripts/setup.sh --dev) and runs every check: ruff, mypy, pytest.
# Tests marked `root` run only as root (they create network namespaces); CI runs as root.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
echo "== ruff";  .venv/bin/ruff check profiler emulator agent traces tests benchmarks
echo "== mypy";  .venv/bin/mypy
echo "== pytest"; .venv/bin/python -m pytest -q "$@"
