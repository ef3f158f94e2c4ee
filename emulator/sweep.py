"""``sudo .venv/bin/python -m emulator.sweep``: a grid of scenarios x policies x seeds of real
emulator runs, as Ray tasks, one at a time per machine.

Each run is ``python -m emulator.run --scenario FILE --policy POLICY --seed S`` in its own
process (its outputs, resolved scenario included, under ``OUT/cells/``). An emulator run needs
root and the machine's CPU, so every task asks for the custom Ray resource ``emulator_host``,
of which each machine has one: started here, Ray gives this machine one; on a cluster start
every node with ``ray start ... --resources='{"emulator_host": 1}'``. Results, resuming,
confidence intervals and the plot are as in ``agent.sweep`` (:mod:`agent._sweep`).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agent._cli import run_main
from agent._sweep import Cell, add_sweep_args, interruptible, make_cells, run_sweep
from agent.defaults import HelpFormatter
from agent.errors import AgentError

__all__ = ["COLUMNS", "RESOURCE", "main", "run_cell"]

RESOURCE = "emulator_host"
COLUMNS = ("status", "requests", "mean_s", "p50_s", "p95_s", "response_mean_s",
           "response_p95_s", "offload_fraction", "unrecorded", "unfinished", "payload_scale",
           "sim_p95_abs_rel_error",
           "wall_s", "out", "error")
_METRICS = (("mean_s", "mean service latency (s)"), ("response_mean_s", "mean response time (s)"))
_ROOT = Path(__file__).resolve().parent.parent


def _die_with_parent() -> None:
    """In the child: SIGINT and SIGTERM delivered (a Ray worker may block or ignore them, and
    children inherit both), and SIGTERM (an orderly stop) when the worker dies."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(OSError):  # PR_SET_PDEATHSIG
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def run_cell(cell: Cell, out: str) -> dict[str, Any]:
    """One emulator run (a Ray task): ``emulator.run`` as a child process; a cancelled task
    stops it with SIGINT and waits for its cleanup."""
    interruptible()
    cell_dir = Path(out) / "cells" / cell.slug
    if (cell_dir / "requests.jsonl").exists():  # an earlier, unfinished attempt
        stamp = time.strftime("%Y%m%d-%H%M%S")
        cell_dir.rename(cell_dir.with_name(f"{cell_dir.name}.aborted-{stamp}"))
    cmd = [sys.executable, "-m", "emulator.run", "--scenario", cell.scenario_file,
           "--policy", cell.policy, "--seed", str(cell.seed), "--out", str(cell_dir),
           "--quiet", *cell.overrides.split()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        x for x in (str(_ROOT), os.environ.get("PYTHONPATH", "")) if x)}
    t0 = time.perf_counter()
    cell_dir.parent.mkdir(parents=True, exist_ok=True)
    with (cell_dir.parent / f"{cell.slug}.log").open("w") as log:
        # its own session: Ray stops a worker by killing the worker's process group, which
        # must not SIGKILL the run (it would leave its network behind); the run gets SIGTERM
        # when the worker dies instead (_die_with_parent), and SIGINT when cancelled
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=str(_ROOT), preexec_fn=_die_with_parent,
                                start_new_session=True)
        try:
            # polled, not proc.wait(): Ray delivers a cancel as an exception between bytecodes
            while (rc := proc.poll()) is None:
                time.sleep(0.2)
        except BaseException as e:  # cancelled (KeyboardInterrupt) or the worker is stopping
            print(f"emulator.sweep: {type(e).__name__}: stopping the run", file=log, flush=True)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
    wall = round(time.perf_counter() - t0, 1)
    summ_path = cell_dir / "summary.json"
    if rc != 0 or not summ_path.is_file():
        lines = [x for x in (cell_dir.parent / f"{cell.slug}.log").read_text().splitlines()
                 if x.strip()]
        return {"status": "failed", "wall_s": wall, "out": str(cell_dir),
                "error": lines[-1] if lines else f"exit status {rc}"}
    s = json.loads(summ_path.read_text())
    lat, resp = s.get("latency", {}), s.get("response", {})
    n = int(s.get("requests") or 0)
    sim = s.get("simulator") or {}
    return {"status": "ok" if s.get("status") == "completed" else str(s.get("status")),
            "requests": n, "mean_s": lat.get("mean_s"), "p50_s": lat.get("p50_s"),
            "p95_s": lat.get("p95_s"), "response_mean_s": resp.get("mean_s"),
            "response_p95_s": resp.get("p95_s"),
            "offload_fraction": (int(s.get("offloaded") or 0) / n) if n else None,
            "unrecorded": s.get("unrecorded"), "unfinished": s.get("unfinished"),
            "payload_scale": (s.get("high_rate") or {}).get("payload_scale", 1.0),
            "sim_p95_abs_rel_error": sim.get("p95_abs_rel_error_given_mec_wait"),
            "wall_s": wall, "out": str(cell_dir), "error": s.get("error", "")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sudo .venv/bin/python -m emulator.sweep",
                                description=__doc__, formatter_class=HelpFormatter)
    add_sweep_args(p, "default,greedy,local,offload")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds of arrivals of every run (default: each scenario's "
                        "run.duration_s, else emulator.run's)")
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        raise AgentError("emulator runs need root (network namespaces and tc): run "
                         "sudo .venv/bin/python -m emulator.sweep ...")
    extra = ["--duration", f"{a.duration:g}"] if a.duration is not None else []
    cells = make_cells(a.scenarios, a.policies, a.seeds, extra)
    from emulator import sweep  # by its module name, not __main__: Ray workers import it

    return run_sweep(cells, sweep.run_cell, [], a.out, COLUMNS, _METRICS,
                     prog="emulator.sweep", address=a.address, num_cpus=a.num_cpus,
                     task_options={"num_cpus": 1, "resources": {RESOURCE: 1}},
                     local_resources={RESOURCE: 1})


if __name__ == "__main__":
    sys.exit(run_main("emulator.sweep", main))
