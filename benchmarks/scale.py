"""Scale (issue 13): 8, 16, 32 and 64 devices on one shared cell, at full fidelity? (root)

For every device count this runs the issue's command (``emulator.run --shared-cell --policy
offload --mec-speedup 10 --mec-model slots --mec-slots 4``, the bundled cellular trace, ``--duration`` s) under
:func:`benchmarks.process_cpu.profile_run` and prints

* CPU: device seconds per process after trace time 0 (start-up excluded), the machine's mean
  and worst 1 s busy fraction after t0 (every core, everyone's work), the run's cores used;
* memory: device RSS and PSS per process (PSS shares library pages among the devices);
* requests: recorded, unfinished when the run stopped (recorded as such), lost (started,
  neither: must be 0);
* per-request error, emulator against simulator, MEC wait included: every recorded request
  replayed through :mod:`emulator.parity` against the MEC sessions the records show
  (``summary.json`` ``simulator_replay.mec_measured``), |relative error| median and p95; and
  the same with the cell's sharing as measured (:func:`emulator.parity.replay_shared_cell`:
  each transfer gets the cell's capacity divided among the transfers the records show at the
  same time, instead of the simulator's fixed 1/N share; each direction shared is the cell
  less what the sockets sent that no plan step prices: pure ACKs, ``ECHO``, ``PLAN``,
  ``RELEASE``, ``ECHO_REPLY``, from the kernel's counters; the figure without that is printed
  below the row);
* link windows: 1 s windows of the cell's uplink and downlink (``link.csv``) whose measured
  goodput is at most 5% above the trace's capacity (the shaper never hands out more than the
  trace; whether a window got all it should have depends on demand, which only a saturated
  calibration, ``emulator.calibrate``, can show), and the shaper's lag p95.

Compute runs at the profile's block medians (``--jitter none``, as in
``benchmarks/emulator_parity.py``): the simulator prices medians, and the default lognormal
draws would add their own spread (and a mean above the median) to every request's error;
``-- --jitter lognormal`` draws them. Arguments after ``--`` go to every ``emulator.run``.

Target at the largest count (64): p95 error <= 5% (shared cell replay), >= 95% of windows
within 5%, no request lost. Exit 1 when missed.

    sudo PYTHONPATH=$PWD flock /tmp/quiet.lock .venv/bin/python benchmarks/scale.py
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
for p in (str(_ROOT), str(_ROOT / "benchmarks")):
    if p not in sys.path:
        sys.path.insert(0, p)

from process_cpu import profile_run  # noqa: E402


def _windows(link_csv: Path, tol: float) -> tuple[int, int]:
    """(windows at most ``tol`` above capacity, windows with capacity >= 0.1 Mbit/s) of the
    cell, both directions: per 1 s window the cell's goodput (its ``device -1`` row, else the
    devices' rows summed) against the cell's capacity."""
    try:
        rows = list(csv.DictReader(link_csv.open()))
    except OSError:
        return 0, 0
    total = [r for r in rows if r.get("device") == "-1"]  # the cell's own row, when written
    cells: dict[tuple[str, str], list[float]] = {}
    for r in total or rows:
        try:
            cap, got = float(r["capacity_mbps"]), float(r["goodput_mbps"])
        except (KeyError, ValueError):
            continue
        c = cells.setdefault((r.get("direction", ""), r["t_s"]), [0.0, 0.0])
        c[0] = max(c[0], cap)
        c[1] += got
    used = [(cap, got) for cap, got in cells.values() if cap >= 0.1]
    return sum(got <= cap * (1 + tol) for cap, got in used), len(used)


def _shared_cell_error(run: Path) -> tuple[dict[str, float], dict[str, float]]:
    """The measured-sharing replay's error with and without the unpriced traffic counted."""
    from agent.latency import LatencyModel
    from emulator.parity import averaged, compare, replay_shared_cell
    from profiler.schema import load_profile
    from traces import load_trace

    s = json.loads((run / "summary.json").read_text())
    inp = s["provenance"]["inputs"]
    recs = [json.loads(x) for x in (run / "requests.jsonl").read_text().splitlines()]
    model = LatencyModel(load_profile(inp["device_profile"]["path"]),
                         load_profile(inp["mec_profile"]["path"]), mec_speedup=s["mec_speedup"])
    cell = averaged(load_trace(inp["trace"]["path"], inp["trace"]["format"],
                               scale=inp["trace"]["scale"]))
    down = cell if inp["downlink"] == "same" else None
    with_, without = (compare(replay_shared_cell(
        model, recs, up=cell, down=down, one_way_delay_s=inp["delay_ms"] / 1e3,
        mec_slots=s["mec_slots"], count_unpriced=c)) for c in (True, False))
    return with_, without


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="keep the runs here")
    ap.add_argument("--tol", type=float, default=0.05)
    ap.add_argument("run_args", nargs=argparse.REMAINDER,
                    help="-- then more emulator.run arguments")
    a = ap.parse_args()
    extra = [x for x in a.run_args if x != "--"]
    if not any(x == "--jitter" or x.startswith("--jitter=") for x in extra):
        extra = ["--jitter", "none", *extra]  # compute at the profile's medians, as priced
    out = a.out or Path(tempfile.mkdtemp(prefix="scale."))
    with open("/proc/loadavg") as f:
        print(f"scale: load average before {f.read().split()[:3]}, {os.cpu_count()} cores; "
              f"runs in {out}")
    head = (f"{'N':>3} {'dev CPU s':>9} {'busy':>5} {'max':>5} {'cores':>5} {'RSS':>6} "
            f"{'PSS':>6} {'reqs':>5} {'unfin':>5} {'lost':>4} {'err med':>8} {'p95':>7} "
            f"{'cell med':>8} {'p95':>7} {'windows':>9} {'lag p95':>8}")
    lines = []
    missed: list[str] = []
    for n in a.devices:
        run = out / f"n{n}"
        args = ["--devices", str(n), "--shared-cell", "--policy", "offload", "--mec-speedup",
                "10", "--mec-model", "slots", "--mec-slots", "4", "--duration", f"{a.duration:g}", "--seed",
                str(a.seed), *extra]
        res = profile_run(args, run)
        try:
            s: dict[str, Any] = json.loads((run / "summary.json").read_text())
        except (OSError, ValueError):
            print(f"scale: {n} devices: no summary.json ({res['last_line']})")
            missed.append(f"{n} devices: run failed")
            continue
        dev = res["kinds"].get("device", {"procs": 1, "run_cpu_s": 0.0, "rss_mib_per_proc": 0.0,
                                          "pss_mib_per_proc": 0.0})
        total = sum(k["cpu_s"] for k in res["kinds"].values())
        rep = (s.get("simulator_replay") or {}).get("mec_measured") or {}
        cell, bare = _shared_cell_error(run) if s.get("requests") else ({}, {})
        ok, nw = _windows(run / "link.csv", a.tol)
        lag = (s.get("shaper") or {}).get("lag_ms", {}).get("p95", float("nan"))
        line = (f"{n:>3} {dev['run_cpu_s'] / dev['procs']:9.3f} {res['run_busy_mean']:5.0%} "
                f"{res['run_busy_max']:5.0%} {total / res['wall_s']:5.2f} "
                f"{dev['rss_mib_per_proc']:6.1f} {dev['pss_mib_per_proc']:6.1f} "
                f"{s.get('requests', 0):>5} {s.get('unfinished', 0):>5} {s.get('lost', 0):>4} "
                f"{rep.get('median_abs', float('nan')):8.1%} {rep.get('p95_abs', float('nan')):7.1%} "
                f"{cell.get('median_abs', float('nan')):8.1%} {cell.get('p95_abs', float('nan')):7.1%} "
                f"{ok:>4}/{nw:<4} {lag:6.2f}ms")
        lines.append(line)
        print(head if len(lines) == 1 else "", end="\n" if len(lines) == 1 else "")
        print(line, flush=True)
        if bare:
            print(f"     measured sharing without the unpriced traffic (ACKs, control messages): "
                  f"median {bare['median_abs']:.1%}, p95 {bare['p95_abs']:.1%}", flush=True)
        print("     CPU s (after t0) by kind: " + ", ".join(
            f"{name} {k['cpu_s']:.1f} ({k['run_cpu_s']:.1f})" for name, k in
            sorted(res["kinds"].items(), key=lambda kv: -kv[1]["cpu_s"])), flush=True)
        if n == max(a.devices):
            if s.get("lost", 0):
                missed.append(f"{s['lost']} request(s) lost")
            if not cell.get("p95_abs", 1.0) <= a.tol:
                missed.append(f"p95 error {cell.get('p95_abs', float('nan')):.1%} > {a.tol:.0%}")
            if not (nw and ok / nw >= 0.95):
                missed.append(f"windows within {a.tol:.0%}: {ok}/{nw} < 95%")
    print("columns: device CPU s/process after t0; machine busy after t0, mean and worst 1 s; "
          "cores used by the run's processes over the whole run; device RSS, PSS MiB/process; "
          "requests recorded, unfinished, lost; |error| median and p95 against the MEC "
          "sessions the records show with the simulator's 1/N cell share, then with the "
          "cell's measured sharing; cell windows at most 5% above capacity; shaper lag p95")
    with open("/proc/loadavg") as f:
        print(f"scale: load average after {f.read().split()[:3]}")
    print(f"scale: {'targets met' if not missed else 'MISSED: ' + '; '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
