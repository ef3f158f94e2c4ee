"""The sweep of issue 13 through Ray on this machine: 3 scenarios (lte-8, 5g-32, 6g-64) x 4
policies (default, greedy, local, offload) x 3 seeds = 36 simulator runs. Prints the table
(mean over seeds and 95% CI half-width) and the wall time; ``--out`` keeps results.csv,
summary.csv and comparison.png (default: a temporary folder, printed).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/sweep_ray.py [--out runs/sweep] [--address HOST:PORT]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from agent._cli import run_main
from agent.sweep import main as sweep

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--address", default=None)
    a = ap.parse_args()
    out = a.out or Path(tempfile.mkdtemp(prefix="sweep_ray."))
    argv = ["--scenarios", *(str(ROOT / "scenarios" / f"{s}.toml")
                             for s in ("lte-8", "5g-32", "6g-64")),
            "--policies", "default,greedy,local,offload", "--seeds", "0", "1", "2",
            "--out", str(out)]
    if a.address:
        argv += ["--address", a.address]
    t0 = time.perf_counter()
    rc = run_main("agent.sweep", sweep, argv)
    print(f"sweep_ray: exit {rc}, {time.perf_counter() - t0:.1f} s wall; outputs in {out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
