"""A shared-cell run with 8 devices: is every finished request recorded? (root)

Runs ``python -m emulator.run --shared-cell --devices 8`` on the bundled cellular trace (the
cell's capacity, shared by all devices) and prints, per device, the requests the device
process says it finished against the records in ``requests.jsonl``, plus the cell's measured
goodput against its capacity. Exits 1 if any finished request is missing from the records,
if a device has no finished count in the summary (a missing count is a failure, not 0), if no
request finished at all, or if the run fails.

Usage: ``sudo .venv/bin/python benchmarks/shared_cell.py [--devices 8] [--duration 20]
[--model PROFILE.json --mec-profile P] [--policy fixed:2] [--rate 0.25] [--out DIR]``. Without
``--model`` it uses synthetic LLM-shaped profiles (200 KB prefill cut, 4 decode tokens).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=8, help="devices in the cell")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of arrivals")
    ap.add_argument("--rate", type=float, default=0.25, help="Poisson requests/s per device")
    ap.add_argument("--policy", default="fixed:2", help="policy spec (fixed:2 uploads 200 KB "
                    "per synthetic request)")
    ap.add_argument("--model", default=None, help="device profile (default: synthetic)")
    ap.add_argument("--mec-profile", default=None, help="MEC profile")
    ap.add_argument("--seed", type=int, default=1, help="run seed")
    ap.add_argument("--out", default=None, help="output directory (default: a temporary one)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("shared_cell: needs root: sudo .venv/bin/python benchmarks/shared_cell.py "
              "(not measured)")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="shared_cell_"))
    if args.model is None:
        from emulator.synthetic import write_synthetic_pair

        dev, mec = write_synthetic_pair(tmp)
        model = ["--model", str(dev), "--mec-profile", str(mec)]
    else:
        model = ["--model", args.model] + (["--mec-profile", args.mec_profile]
                                           if args.mec_profile else [])
    out = Path(args.out) if args.out else tmp / "run"
    cmd = [sys.executable, "-m", "emulator.run", "--shared-cell", "--devices", str(args.devices),
           *model, "--policy", args.policy, "--rate", str(args.rate), "--duration",
           str(args.duration), "--seed", str(args.seed), "--quiet", "--out", str(out)]
    print("$", " ".join(cmd[1:]), flush=True)
    res = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True)
    sys.stderr.write(res.stderr[-2000:])
    if res.returncode != 0:
        print(f"run failed with exit status {res.returncode}")
        return 1
    recs = [json.loads(x) for x in (out / "requests.jsonl").read_text().splitlines()]
    s = json.loads((out / "summary.json").read_text())
    per_dev = Counter(int(r["device"]) for r in recs)
    print(f"status {s['status']}, {args.devices} devices, shared cell, policy {args.policy}, "
          f"{args.duration:g} s, delay method {s['delay_method']}")
    missing = 0
    uncounted = []
    for i in range(args.devices):
        info = s.get("device_counts", {}).get(f"device-{i}", {})
        if not isinstance(info.get("done"), int):
            uncounted.append(i)
            print(f"  device {i}: no finished count in summary.json (recorded {per_dev[i]})")
            continue
        done = int(info["done"])
        missing += abs(done - per_dev[i])
        print(f"  device {i}: started {info.get('started')}, finished {done}, recorded "
              f"{per_dev[i]}")
    lat = s["latency"]
    print(f"requests recorded {len(recs)} (offloaded {s['offloaded']}, local {s['local']}); "
          f"finished but unrecorded {s['unrecorded']}; unparsable lines "
          f"{s['unparsable_lines']}")
    if lat["n"]:
        print(f"latency mean {lat['mean_s']:.3f} s, p50 {lat['p50_s']:.3f} s, "
              f"p95 {lat['p95_s']:.3f} s")
    with (out / "link.csv").open() as f:
        cell = [r for r in csv.DictReader(f) if r["device"] == "-1" and r["direction"] == "up"]
    if cell:
        busy = [r for r in cell if float(r["goodput_mbps"]) > 0.5 * float(r["capacity_mbps"])]
        print(f"cell uplink: {len(cell)} intervals, mean capacity "
              f"{sum(float(r['capacity_mbps']) for r in cell) / len(cell):.2f} Mbit/s, mean "
              f"goodput {sum(float(r['goodput_mbps']) for r in cell) / len(cell):.2f} Mbit/s, "
              f"{len(busy)} intervals above half capacity")
    print(f"results in {out}")
    ok = missing == 0 and not uncounted and s["unrecorded"] == 0 and len(recs) > 0
    print(f"every finished request recorded: {'YES' if ok else 'NO'} (records {len(recs)}, "
          f"count/record mismatches {missing}, devices without a count {len(uncounted)})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
