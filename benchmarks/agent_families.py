"""The shipped default policies on every real trace family, at bandwidth scales 0.1, 1 and 10.

For each model (gpt2, sd15), trace family of ``../shared/traces`` (Mahimahi LTE/UMTS, Pensieve
FCC+Norway, 5G driving/static; at most ``--files`` files per family, a seeded choice) and
bandwidth scale, every policy runs the same requests (:func:`agent.evaluate.evaluate_policies`,
common random numbers) in the default scenario (4 devices sharing one batching MEC, batch <= 8,
the model's measured H200 batch curve as a shape, queue limit 4, 10 ms one-way,
``--mec-speedup 10``, load 0.5; ``--mec-model slots``: one exclusive MEC slot instead), with
the horizon grown until every cell has at
least ``--min-requests`` requests per policy. Printed: one table, mean latency per policy and
``default`` as a ratio to the per-request oracle and to the best baseline (local, offload,
fixed, greedy).

Targets (exit 1 when one is missed, 2 when the traces are missing): in every cell ``default``
<= 1.05 x the per-request oracle and <= the best baseline (1e-9 relative slack for ties).

Noise: every policy runs the same requests, so each cell also prints the paired difference
``default - best baseline`` (mean over the requests, matched by trace, device and arrival) and
twice its standard error; a miss whose difference is inside that band is marked ``~`` (the
cell's requests cannot tell the two apart; the target still counts it as missed).

``--explain`` adds, for each missed cell, why (the default policy's run replayed decision by
decision with :func:`agent.scenario.run_policy`'s ``on_decision`` hook): at each decision
every feasible plan is priced exactly on the state the request finds (its link's future and
the MEC's reservations, as the per-request oracle does), which splits the gap to the oracle
into *own regret* (the request's latency minus the best plan's at the same state, by chosen
and best plan) and *knock-on* (the rest: later requests that find other states, e.g. a MEC
slot reserved by a request whose upload stalled); also how often ``default`` chose as
``greedy``, the realized / predicted latency of its choices, the regret of decisions made
with a single throughput sample, and the observation features at their clip.

Run from the repository root: ``PYTHONPATH=$PWD python benchmarks/agent_families.py``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

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
    p.add_argument("--explain", action="store_true",
                   help="print why each missed cell misses (see above; slot MEC only)")
    p.add_argument("--mec-model", choices=("slots", "batch"), default="batch",
                   help="MEC server model: iteration-level batching (the default scenario's), "
                        "or one exclusive slot")
    p.add_argument("--mec-max-batch", type=int, default=8, help="batching MEC: most sessions")
    p.add_argument("--mec-batch-curve", default="auto",
                   help="batching MEC: batch curve (default auto: the model's measured H200 "
                        "profile, profiles/<model>.mec-gpu.json, as a shape on the CPU "
                        "profile / 10)")
    p.add_argument("--fallback", type=float, default=None, metavar="F",
                   help="the devices' local fallback after F x the local latency, for every "
                        "policy (agent.latency.fallback_start; default off)")
    a = p.parse_args()
    if a.explain and a.mec_model != "slots":
        p.error("--explain needs --mec-model slots")
    from agent.actions import SplitActions
    from agent.evaluate import build_policies
    from agent.latency import LatencyModel, fallback_label
    from agent.policy import Workload
    from agent.scenario import ScenarioConfig, run_policy
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
        mec_kw: dict[str, Any] = {"mec_model": a.mec_model, "mec_max_batch": a.mec_max_batch,
                                  "mec_batch_curve": a.mec_batch_curve,
                                  "fallback": a.fallback}
        # fixed: the best single template on the bundled training traces, chosen once
        pols = build_policies([f"default:{a.default}" if a.default != "default" else "default",
                               *BASELINES, "oracle"], dev, mec, model, acts,
                              mec_speedup=10.0, train_traces=load_traces(DATA_DIR / "train"),
                              config=ScenarioConfig(n_devices=4, load=0.5, **mec_kw),
                              seed=a.seed)
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
                                         one_way_delay_s=0.010, load=0.5, horizon_s=horizon,
                                         **mec_kw)
                    res = {k: [run_policy(model, acts, pol, tr, cfg, a.seed + j)
                               for j, tr in enumerate(traces)] for k, pol in pols.items()}
                    n = min(sum(len(x) for x in v) for v in res.values())
                    if n >= a.min_requests:
                        break
                    horizon *= 1.5 * a.min_requests / max(n, 1)
                lat = {k: {(j, r.device, r.t_arrival): r.latency_s
                           for j, rs in enumerate(v) for r in rs} for k, v in res.items()}
                means = {k: float(np.mean(list(v.values()))) for k, v in lat.items()}
                best = min(BASELINES, key=means.__getitem__)
                diff = np.array([lat["default"][q] - lat[best][q] for q in lat["default"]])
                band = 2 * float(diff.std(ddof=1)) / math.sqrt(diff.size)
                r_orc = means["default"] / means["oracle"]
                r_base = means["default"] / means[best]
                good = r_orc <= TARGET and r_base <= 1 + 1e-9
                noise = not good and r_orc <= TARGET and float(diff.mean()) <= band
                ok &= good
                rows.append((model_name, fam, scale, n, means, r_orc, r_base, good, noise,
                             float(diff.mean()), band))
                print(f"{model_name:<5} {fam:<9} x{scale:<4g} n={n:<5d} "
                      + " ".join(f"{getattr(pols[k], 'name', k)} {v:.3f}"
                                 for k, v in means.items())
                      + f" | default/oracle {r_orc:.3f} default/best-baseline {r_base:.3f} "
                      + f"(default - {best}: {diff.mean():+.4f} s, 2 SE {band:.4f} s) "
                      + ("OK" if good else "MISSED"), flush=True)
                if a.fallback is not None:
                    print("    " + fallback_line(model, [r for rs in res["default"] for r in rs],
                                                 a.fallback * local), flush=True)
                if a.explain and not good:
                    for line in explain(model, acts, pols["default"], traces, cfg, a.seed,
                                        means["oracle"]):
                        print("    " + line, flush=True)
    mec_text = ("1 MEC slot" if a.mec_model == "slots" else
                f"one batching MEC, batch <= {a.mec_max_batch}, curve {a.mec_batch_curve}"
                + (" (profiles/<model>.mec-gpu.json)" if a.mec_batch_curve == "auto" else ""))
    print(f"\nscenario: 4 devices, {mec_text} (queue limit 4), 10 ms one-way, mec-speedup 10, "
          f"load 0.5"
          + (f", {fallback_label(a.fallback)}" if a.fallback is not None else "")
          + f"; {a.files} files per family (seed {a.seed}); mean latency in s; "
          f"{time.perf_counter() - t0:.0f} s")
    head = (f"{'model':<5} {'family':<9} {'scale':>5} {'n':>5} " + " ".join(
        f"{k:>9}" for k in ("default", *BASELINES, "oracle")) + f" {'/oracle':>8} {'/best':>6}"
        + f" {'d-best':>8} {'2 SE':>7}")
    print(head)
    print("-" * len(head))
    for model_name, fam, scale, n, means, r_orc, r_base, good, noise, dm, band in rows:
        print(f"{model_name:<5} {fam:<9} {scale:>5g} {n:>5d} " + " ".join(
            f"{means[k]:9.3f}" for k in ("default", *BASELINES, "oracle"))
            + f" {r_orc:8.3f} {r_base:6.3f} {dm:+8.4f} {band:7.4f} "
            + ("" if good else "MISSED~" if noise else "MISSED"))
    met = sum(r[7] for r in rows)
    print(f"\n{met}/{len(rows)} cells meet both targets (default <= {TARGET:g} x oracle and "
          f"<= best baseline); {sum(r[8] for r in rows)} more miss only the baseline, by less "
          "than twice the standard error of the paired difference (MISSED~)")
    return 0 if ok else 1


def fallback_line(model: Any, results: list[Any], after_s: float) -> str:
    """What the local fallback cost the default policy in one cell: the requests whose local
    run started (a MEC-only plan still running ``after_s`` after its start), those it ended,
    and the device time of the runs the MEC beat (work thrown away)."""
    from agent.policy import Decision, Workload

    started = won = 0
    lost_s = 0.0
    for r in results:
        if not model.plan(Decision(r.splits), Workload(r.workload)).mec_only:
            continue
        if r.fallback_s is not None:
            started += 1
            won += 1
        elif r.latency_s > after_s:
            started += 1
            lost_s += r.latency_s - after_s
    n = len(results)
    return (f"fallback (default): local run started for {started}/{n} requests "
            f"({100 * started / n:.1f}%), ended {won}; device time of the runs the MEC beat "
            f"{lost_s / n * 1e3:.1f} ms per request")


def explain(model: Any, acts: Any, policy: Any, traces: list[Any], cfg: Any, seed: int,
            oracle_mean: float) -> list[str]:
    """Why ``policy`` misses in one cell (see the module docstring), as printable lines."""
    from agent.latency import simulate_request
    from agent.observation import OBS_HIGH, throughput_estimate
    from agent.policies import GreedyPolicy
    from agent.scenario import run_policy

    greedy = GreedyPolicy(acts)
    enc = getattr(policy, "encoder", None)
    rows: list[tuple[int, int, float, float, float, int, bool]] = []
    clipped: list[Any] = []

    def hook(i: int, link: Any, mec: Any, obs: Any, decision: Any) -> None:
        wl = obs.workload
        mask = acts.mask(obs.mec_accepts)
        real = np.full(acts.n_actions, np.inf)
        for k in range(acts.n_actions):
            if mask[k]:
                real[k] = simulate_request(model, link, acts.decision(k, wl), wl, obs.time_s,
                                           mec.copy(), detail=False).t_end - obs.time_s
        est = throughput_estimate(obs.recent_throughputs_bps, obs.throughput_bps)
        pred = acts.costs(wl).predict(est, obs.rtt_s, obs.mec_expected_wait_s)
        ch = decision.action
        rows.append((ch, int(np.argmin(real)), float(real[ch]), float(real.min()),
                     float(real[ch] / max(pred[ch], 1e-9)), len(obs.recent_throughputs_bps),
                     greedy.decide(obs).action == ch))
        if enc is not None:
            clipped.append(enc.encode(obs) >= OBS_HIGH)

    lats = [r.latency_s for j, tr in enumerate(traces)
            for r in run_policy(model, acts, policy, tr, cfg, seed + j, on_decision=hook)]
    n = len(rows)
    mean = float(np.mean(lats))
    own = sum(r[2] - r[3] for r in rows) / n
    pairs: dict[tuple[int, int], list[float]] = {}
    for ch, bst, rc, rb, *_ in rows:
        if rc > rb:
            pairs.setdefault((ch, bst), []).append(rc - rb)
    top = sorted(pairs.items(), key=lambda kv: -sum(kv[1]))[:3]
    one = sum(r[2] - r[3] for r in rows if r[5] <= 1) / max(n * own, 1e-12)
    ratio = np.array([r[4] for r in rows])
    out = [f"why: gap to the oracle {mean - oracle_mean:+.4f} s = own regret {own:.4f} s "
           f"({own / oracle_mean:.1%} of the oracle) + knock-on "
           f"{mean - oracle_mean - own:+.4f} s ({(mean - oracle_mean - own) / oracle_mean:+.1%})",
           "  own regret by chosen -> best plan at the same state: " + "; ".join(
               f"{acts.names[c]} -> {acts.names[b]} x{len(v)} {sum(v) / n:.4f} s/request"
               for (c, b), v in top),
           f"  chose as greedy {sum(r[6] for r in rows)}/{n}; realized/predicted latency of "
           f"the choice p50 {np.percentile(ratio, 50):.2f} p90 {np.percentile(ratio, 90):.2f} "
           f"max {ratio.max():.1f}; decisions on a single throughput sample hold "
           f"{one:.0%} of the own regret"]
    if clipped:
        frac = np.mean(np.array(clipped), axis=0)
        hot = {int(k): round(float(frac[k]), 2) for k in np.flatnonzero(frac > 0.01)}
        out.append(f"  observation features at the clip ({OBS_HIGH:g}) in > 1% of decisions "
                   f"(index: share): {hot or 'none'}")
    return out


if __name__ == "__main__":
    sys.exit(main())
