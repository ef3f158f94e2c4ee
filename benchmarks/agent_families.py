"""The shipped default policies on every real trace family, at bandwidth scales 0.1, 1 and 10.

For each model (gpt2, sd15), trace family of ``../shared/traces`` (Mahimahi LTE/UMTS, Pensieve
FCC+Norway, 5G driving/static; at most ``--files`` files per family, a seeded choice) and
bandwidth scale, every policy runs the same requests (:func:`agent.evaluate.evaluate_policies`,
common random numbers) in the default scenario (4 devices sharing one MEC slot, queue limit 4,
10 ms one-way, ``--mec-speedup 10``, load 0.5), with the horizon grown until every cell has at
least ``--min-requests`` requests per policy. Printed: one table, mean latency per policy and
``default`` as a ratio to the per-request oracle and to the best baseline (local, offload,
fixed, greedy).

Targets (exit 1 when one is missed, 2 when the traces are missing): in every cell ``default``
<= 1.05 x the per-request oracle and <= the best baseline (1e-9 relative slack for ties).

Run from the repository root: ``PYTHONPATH=$PWD python benchmarks/agent_families.py``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "traces"
if not SHARED.is_dir():
    SHARED = Path("/work/shared/traces")

FAMILIES = {"mahimahi": "*.up", "pensieve": "*", "5g": "*.csv"}
SCALES = (0.1, 1.0, 10.0)
BASELINES = ("greedy", "local", "offload", "fixed")
TARGET = 1.05


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="gpt2,sd15")
    p.add_argument("--files", type=int, default=8, help="trace files per family (seeded choice)")
    p.add_argument("--min-requests", type=int, default=200, help="requests per cell and policy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--default", default="default",
                   help="policy spec in the 'default' column (e.g. a candidate .zip)")
    a = p.parse_args()
    from agent.actions import SplitActions
    from agent.evaluate import build_policies, evaluate_policies
    from agent.latency import LatencyModel
    from agent.policy import Workload
    from agent.scenario import ScenarioConfig
    from profiler.schema import load_profile
    from traces import DATA_DIR, TraceWarning, load_trace, load_traces

    if not SHARED.is_dir():
        print(f"agent_families: missing input: {SHARED}; nothing measured")
        return 2
    rng = np.random.default_rng(a.seed)
    fam_files: dict[str, list[Path]] = {}
    for fam, pat in FAMILIES.items():
        files = sorted(f for f in (SHARED / fam).glob(pat)
                       if f.is_file() and "readme" not in f.name.lower())
        if not files:
            print(f"agent_families: missing input: no trace files in {SHARED / fam}")
            return 2
        pick = sorted(rng.permutation(len(files))[:a.files].tolist())
        fam_files[fam] = [files[i] for i in pick]
    ok = True
    rows = []
    t0 = time.perf_counter()
    for model_name in a.models.split(","):
        dev = load_profile(ROOT / "profiles" / f"{model_name}.device.json")
        mec = load_profile(ROOT / "profiles" / f"{model_name}.mec-cpu.json")
        model = LatencyModel(dev, mec, mec_speedup=10.0)
        acts = SplitActions(model)
        local = model.local_latency(Workload(model_name))
        # fixed: the best single template on the bundled training traces, chosen once
        pols = build_policies([f"default:{a.default}" if a.default != "default" else "default",
                               *BASELINES, "oracle"], dev, mec, model, acts,
                              mec_speedup=10.0, train_traces=load_traces(DATA_DIR / "train"),
                              config=ScenarioConfig(n_devices=4, load=0.5), seed=a.seed)
        for fam, files in fam_files.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TraceWarning)
                base = [load_trace(f, warn_gap_s=None) for f in files]
            for scale in SCALES:
                traces = [t.scaled(scale) for t in base]
                # requests per device ~ horizon / (mean gap + service): start from the gap
                per = math.ceil(a.min_requests / (4 * len(traces)))
                horizon = per * local / 0.5 * 1.2
                while True:
                    cfg = ScenarioConfig(n_devices=4, mec_slots=1, mec_queue_limit=4,
                                         one_way_delay_s=0.010, load=0.5, horizon_s=horizon)
                    lat = evaluate_policies(model, acts, pols, traces, cfg, a.seed)
                    n = min(sum(len(x) for x in v) for v in lat.values())
                    if n >= a.min_requests:
                        break
                    horizon *= 1.5 * a.min_requests / max(n, 1)
                means = {k: float(np.mean(np.concatenate([np.asarray(x) for x in v])))
                         for k, v in lat.items()}
                best_base = min(means[b] for b in BASELINES)
                r_orc = means["default"] / means["oracle"]
                r_base = means["default"] / best_base
                good = r_orc <= TARGET and r_base <= 1 + 1e-9
                ok &= good
                rows.append((model_name, fam, scale, n, means, r_orc, r_base, good))
                print(f"{model_name:<5} {fam:<9} x{scale:<4g} n={n:<5d} "
                      + " ".join(f"{getattr(pols[k], 'name', k)} {v:.3f}"
                                 for k, v in means.items())
                      + f" | default/oracle {r_orc:.3f} default/best-baseline {r_base:.3f} "
                      + ("OK" if good else "MISSED"), flush=True)
    print(f"\nscenario: 4 devices, 1 MEC slot (queue limit 4), 10 ms one-way, mec-speedup 10, "
          f"load 0.5; {a.files} files per family (seed {a.seed}); mean latency in s; "
          f"{time.perf_counter() - t0:.0f} s")
    head = (f"{'model':<5} {'family':<9} {'scale':>5} {'n':>5} " + " ".join(
        f"{k:>9}" for k in ("default", *BASELINES, "oracle")) + f" {'/oracle':>8} {'/best':>6}")
    print(head)
    print("-" * len(head))
    for model_name, fam, scale, n, means, r_orc, r_base, good in rows:
        print(f"{model_name:<5} {fam:<9} {scale:>5g} {n:>5d} " + " ".join(
            f"{means[k]:9.3f}" for k in ("default", *BASELINES, "oracle"))
            + f" {r_orc:8.3f} {r_base:6.3f} {'' if good else 'MISSED'}")
    met = sum(r[-1] for r in rows)
    print(f"\n{met}/{len(rows)} cells meet both targets (default <= {TARGET:g} x oracle and "
          "<= best baseline)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
