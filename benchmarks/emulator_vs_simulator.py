"""Emulator against simulator on a real trace, request by request (root; ~1.5 minutes).

Runs ``python -m emulator.run`` on a real Mahimahi uplink trace from ``--traces-dir`` (default
``/work/shared/traces``: ``mahimahi/Verizon-LTE-short.up``, 5.9 Mbit/s mean, outages; it is not
part of the repository) with the shipped gpt2 profiles, ``--policy greedy`` (a mix of local and
offloaded requests), 4 devices sharing one MEC slot, ``--mec-speedup 10``, 10 ms one-way delay,
Poisson arrivals, then replays every recorded request through ``agent.latency`` with its start
time, decision and workload against the MEC occupancy the records show, so the prediction
includes the MEC wait (``emulator/parity.py``). Two traces, both computed here from the file:
the file averaged onto the emulator's 0.1 s replay grid (what the emulator promises to
reproduce: the gated figure), and the file as it is (printed: a Mahimahi file has 1 ms
delivery opportunities and sub-second gaps that the averaging smooths away, so small transfers
on the emulator beat the simulator's reading of the raw file).

Targets (offloaded requests; local ones only wait out profiled compute): median
``|measured - predicted| / predicted`` <= 5% and p95 <= 40%, the bounds of the root test
``tests/test_emu_vs_sim.py``; at least ``--min-offloaded`` (10) offloaded requests. Exit status 1
when a target is missed, 2 when an input is missing (one line saying which) or the run fails.

    sudo .venv/bin/python benchmarks/emulator_vs_simulator.py [--duration 60] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emulator.parity import Pair, averaged, compare, replay  # noqa: E402
from emulator.records import read_records  # noqa: E402
from profiler.schema import load_profile  # noqa: E402
from traces import Trace, load_trace  # noqa: E402

MEDIAN_BOUND = 0.05
P95_BOUND = 0.40


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces-dir", type=Path, default=Path("/work/shared/traces"))
    ap.add_argument("--trace", default="mahimahi/Verizon-LTE-short.up",
                    help="trace file under --traces-dir")
    ap.add_argument("--model", default="gpt2", help="shipped model (profiles/MODEL.*.json)")
    ap.add_argument("--policy", default="greedy")
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--mec-slots", type=int, default=1)
    ap.add_argument("--mec-speedup", type=float, default=10.0)
    ap.add_argument("--delay-ms", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=0.3, help="Poisson requests/s per device")
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--min-offloaded", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None, help="run directory (default: temporary)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("emulator_vs_simulator: needs root: sudo .venv/bin/python "
              "benchmarks/emulator_vs_simulator.py (not measured)")
        return 2
    trace_path = a.traces_dir / a.trace
    dev_p = ROOT / "profiles" / f"{a.model}.device.json"
    mec_p = ROOT / "profiles" / f"{a.model}.mec-cpu.json"
    missing = [str(p) for p in (trace_path, dev_p, mec_p) if not p.is_file()]
    if missing:
        print(f"emulator_vs_simulator: missing input: {', '.join(missing)} (not measured)")
        return 2
    out = a.out or Path(tempfile.mkdtemp(prefix="emu_vs_sim_")) / "run"
    cmd = [sys.executable, "-m", "emulator.run", "--trace", str(trace_path), "--model", a.model,
           "--policy", a.policy, "--devices", str(a.devices), "--mec-model", "slots",
           "--mec-slots", str(a.mec_slots),
           "--mec-speedup", str(a.mec_speedup), "--delay-ms", str(a.delay_ms), "--rate",
           str(a.rate), "--duration", str(a.duration), "--seed", str(a.seed), "--quiet",
           "--out", str(out)]
    print("$", " ".join(cmd[1:]), flush=True)
    res = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    if res.returncode != 0:
        print(f"emulator_vs_simulator: the run failed (exit {res.returncode}): "
              f"{res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ''}")
        return 2
    recs = read_records(out / "requests.jsonl")
    trace = load_trace(trace_path)
    grid = averaged(trace, 0.1)

    def pairs_on(tr: Trace) -> list[Pair]:
        return replay(recs, load_profile(dev_p), load_profile(mec_p), up=tr, down=tr,
                      one_way_delay_s=a.delay_ms / 1e3, mec_slots=a.mec_slots,
                      mec_speedup=a.mec_speedup)

    pairs = pairs_on(grid)
    raw = compare([p for p in pairs_on(trace) if p.offloaded])
    off = [p for p in pairs if p.offloaded]
    loc = [p for p in pairs if not p.offloaded]
    c, cl = compare(off), compare(loc)
    idle = [abs(r["latency_s"] - r["predicted_latency_s"]) / r["predicted_latency_s"]
            for r in recs if r.get("predicted_latency_s") and
            (r["phases"]["upload_bytes"] > 0 or r["phases"]["mec_s"] > 0)]
    print(f"{trace.name} ({trace.mean_bps() / 1e6:.1f} Mbit/s mean), {a.model}, policy "
          f"{a.policy}, {a.devices} devices, {a.mec_slots} MEC slot(s), mec-speedup "
          f"{a.mec_speedup:g}, {a.delay_ms:g} ms, {a.duration:g} s: {len(pairs)} requests, "
          f"{len(off)} offloaded")
    print(f"offloaded, file averaged onto 0.1 s: |error| median {c['median_abs']:.1%}, p95 "
          f"{c['p95_abs']:.1%} (signed median {c['median']:+.1%}); MEC wait measured "
          f"{c['wait_measured_s']:.2f} s, predicted {c['wait_predicted_s']:.2f} s in total")
    print(f"offloaded, raw file (not gated): |error| median {raw['median_abs']:.1%}, p95 "
          f"{raw['p95_abs']:.1%} (signed median {raw['median']:+.1%})")
    if idle:
        print(f"(the run's own idle-MEC prediction, offloaded: |error| median "
              f"{np.median(idle):.1%}, p95 {np.percentile(idle, 95):.1%})")
    if loc:
        print(f"local: |error| median {cl['median_abs']:.1%}, p95 {cl['p95_abs']:.1%} "
              "(profiled compute drawn around the median)")
    checks = {f">= {a.min_offloaded} offloaded requests": len(off) >= a.min_offloaded,
              f"median |error| <= {MEDIAN_BOUND:.0%}": c["median_abs"] <= MEDIAN_BOUND,
              f"p95 |error| <= {P95_BOUND:.0%}": c["p95_abs"] <= P95_BOUND}
    for what, ok in checks.items():
        print(f"target {what}: {'met' if ok else 'NOT met'}")
    print(f"records: {out / 'requests.jsonl'}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
