"""``python -m agent.sweep``: a grid of scenarios x policies x seeds in the simulator, as Ray
tasks.

Each run is ``python -m agent.evaluate --scenario FILE --policies POLICY --seed S`` (its own
outputs, resolved scenario included, under ``OUT/cells/``). Results: ``OUT/results.csv`` (a
row per run, appended as each finishes; a rerun skips the finished ones), ``OUT/summary.csv``
(mean and 95% confidence interval over seeds per scenario and policy) and
``OUT/comparison.png``. Ray starts on this machine unless ``--address HOST:PORT`` names a
running cluster (``ray start --head``; every node needs this project installed with
``pip install -e .[sweep]`` and the scenario and trace files at the same paths).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

from agent._cli import run_main
from agent._sweep import Cell, add_sweep_args, interruptible, make_cells, run_sweep
from agent.defaults import HelpFormatter

__all__ = ["COLUMNS", "main", "run_cell"]

COLUMNS = ("status", "requests", "mean_s", "p50_s", "p95_s", "offload_fraction",
           "response_mean_s", "wall_s", "out", "error")
_METRICS = (("mean_s", "mean latency (s)"), ("p95_s", "p95 latency (s)"))


def run_cell(cell: Cell, out: str) -> dict[str, Any]:
    """One simulator run (a Ray task): ``agent.evaluate`` in this process."""
    interruptible()
    from agent.evaluate import main as evaluate

    cell_dir = Path(out) / "cells" / cell.slug
    argv = ["--scenario", cell.scenario_file, "--policies", cell.policy, "--seed",
            str(cell.seed), "--out", str(cell_dir), "--no-plots"]
    argv += cell.overrides.split()
    err = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = run_main("agent.evaluate", evaluate, argv)
    wall = time.perf_counter() - t0
    if rc != 0:
        lines = [x for x in err.getvalue().splitlines() if x.strip()]
        return {"status": "failed", "error": lines[-1] if lines else f"exit status {rc}",
                "wall_s": round(wall, 2), "out": str(cell_dir)}
    doc = json.loads((cell_dir / "summary.json").read_text())
    (d,) = doc["policies"].values()
    return {"status": "ok", "requests": d["requests"], "mean_s": d["mean_latency_s"],
            "p50_s": d["p50_latency_s"], "p95_s": d["p95_latency_s"],
            "offload_fraction": d.get("offload_fraction"),
            "response_mean_s": d.get("response_mean_s"), "wall_s": round(wall, 2),
            "out": str(cell_dir), "error": ""}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.sweep", description=__doc__,
                                formatter_class=HelpFormatter)
    add_sweep_args(p, "default,greedy,local,offload")
    p.add_argument("--horizon", type=float, default=None,
                   help="seconds simulated per trace, for every run (default: each "
                        "scenario's run.horizon_s, else agent.evaluate's)")
    a = p.parse_args(argv)
    over = ["--horizon", f"{a.horizon:g}"] if a.horizon is not None else []
    cells = make_cells(a.scenarios, a.policies, a.seeds, over)
    from agent import sweep  # by its module name, not __main__: Ray workers import it

    return run_sweep(cells, sweep.run_cell, [], a.out, COLUMNS, _METRICS,
                     prog="agent.sweep", address=a.address, num_cpus=a.num_cpus)


if __name__ == "__main__":
    sys.exit(run_main("agent.sweep", main))
