"""Wall-clock time to profile GPT-2 end to end on the device class, from nothing cached.

    .venv/bin/python benchmarks/profiler_gpt2_e2e.py [--model gpt2] [--limit-s 180]

Runs ``python -m profiler model gpt2 --class device`` with a fresh work directory (export of
both passes, cut, chain check, timing) and prints the elapsed seconds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gpt2")
    ap.add_argument("--limit-s", type=float, default=180.0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="aigc-e2e-") as tmp:
        out = Path(tmp) / "p.json"
        cmd = [sys.executable, "-m", "profiler", "model", a.model, "--class", "device",
               "--out", str(out), "--work-dir", str(Path(tmp) / "work"), "--quiet"]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                           capture_output=True, text=True)
        dt = time.perf_counter() - t0
    if r.returncode != 0:
        print(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed")
        return 1
    print(f"{a.model} device profile end to end (export, cut, check, time): {dt:.1f} s "
          f"({'under' if dt < a.limit_s else 'OVER'} {a.limit_s:g} s)")
    return 0 if dt < a.limit_s else 1


if __name__ == "__main__":
    sys.exit(main())
