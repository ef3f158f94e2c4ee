"""Throughput and latency of one MEC under load: iteration-level batching against exclusive slots.

For 1, 2, 4, 8, 16, 32 devices that offload every request in full (split 0 for every pass) to
one MEC, the simulator's requests/s and p50/p95 latency (and TTFT/TPOT p50 for an LLM), with
the batching MEC (:mod:`agent.mec_server`, ``--max-batch``, curve ``--curve``; default the
llama.cpp LLaMA-7B F16 GPU curve on the batch-1 profile, labelled ``scaled: llama7b-gpu``) and
with the exclusive-slot model (``--slots`` slots), both with ``--mec-speedup``:

* closed loop: every device starts its next request when the previous one ends;
* Poisson: every device's requests arrive at ``--rate`` per second (exponential gaps, seeded);
  latency is the response time (arrival to last output), throughput the completed requests
  per second of the horizon.

Every device has its own constant link (``--mbps`` both ways, ``--delay-ms`` one way). A plot
(requests/s and p95 against devices) is written to ``--out``.

Targets (exit 1 when missed): with one device the two models agree (batch 1 is the slot
model); in closed loop batching serves at least as many requests/s as the slots at every size.

Run from the repository root: ``PYTHONPATH=$PWD python benchmarks/mec_load.py [--model gpt2]``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.batchsim import BatchSim
from agent.latency import LatencyModel, MecState, RequestResult, simulate_request
from agent.link import Link
from agent.mec_server import BatchServer, MecConfig
from agent.policy import Decision, Workload
from profiler.schema import load_profile
from traces import synth

ROOT = Path(__file__).resolve().parent.parent
SIZES = (1, 2, 4, 8, 16, 32)


def _run(model: LatencyModel, mode: str, n: int, arrivals: str, args: argparse.Namespace,
         seed: int) -> list[RequestResult]:
    """Every request that arrives before the horizon, run to completion."""
    link = Link(synth.constant(3600.0, args.mbps * 1e6), None, args.delay_ms / 1e3)
    wl = Workload(model.model)
    decision = Decision({p.name: 0 for p in model.passes}, 0)
    rng = np.random.default_rng(seed)
    arrival = ([0.0] * n if arrivals == "closed" else
               rng.exponential(1.0 / args.rate, size=n).tolist())
    free = [0.0] * n
    busy = [False] * n
    out: list[RequestResult] = []
    mec = MecState(args.slots)
    sim = (BatchSim(model, BatchServer.for_model(model, MecConfig("batch", args.max_batch,
                                                                   None, args.curve)))
           if mode == "batch" else None)

    def done(i: int, res: RequestResult) -> None:
        out.append(res)
        busy[i] = False
        free[i] = res.t_end
        arrival[i] = (res.t_end if arrivals == "closed"
                      else arrival[i] + float(rng.exponential(1.0 / args.rate)))

    while True:
        cand = [(max(arrival[i], free[i]), i) for i in range(n)
                if not busy[i] and arrival[i] < args.horizon]
        t, i = min(cand) if cand else (math.inf, -1)
        tn = sim.next_time() if sim is not None else math.inf
        if i < 0 and tn == math.inf:
            break
        if sim is not None and (i < 0 or tn < t):
            for key, res in sim.step():
                done(key, res)
            continue
        if sim is None:
            done(i, simulate_request(model, link, decision, wl, t, mec, detail=False,
                                     t_arrival=arrival[i]))
            continue
        busy[i] = True
        now = sim.start(i, decision, wl, link, t, t_arrival=arrival[i])
        if now is not None:
            done(i, now)
    return out


def _row(res: list[RequestResult], horizon: float, arrivals: str) -> dict[str, float]:
    lat = np.array([r.response_s if arrivals == "poisson" else r.latency_s for r in res])
    span = max(r.t_end for r in res)
    ttft = [r.ttft_s for r in res]
    tpot = [r.tpot_s for r in res if r.tpot_s is not None]
    return {"n": len(res), "rps": len(res) / span, "p50": float(np.median(lat)),
            "p95": float(np.percentile(lat, 95)), "ttft50": float(np.median(ttft)),
            "tpot50": float(np.median(tpot)) if tpot else float("nan")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gpt2", help="shipped model (profiles/MODEL.*.json)")
    ap.add_argument("--mec-speedup", type=float, default=10.0,
                    help="divide MEC block times by X (default 10; use 1 with a GPU profile)")
    ap.add_argument("--mec-class", default="mec-cpu",
                    help="MEC profile profiles/MODEL.CLASS.json: mec-cpu (default) or mec-gpu "
                    "(measured on an H200 with its own batch curve: use --curve profile)")
    ap.add_argument("--slots", type=int, default=1, help="slot model: concurrent sessions")
    ap.add_argument("--max-batch", type=int, default=32, help="batching: most active sessions")
    ap.add_argument("--curve", default="llama7b-gpu", help="batching: --mec-batch-curve")
    ap.add_argument("--rate", type=float, default=2.0, help="Poisson: requests/s per device")
    ap.add_argument("--horizon", type=float, default=30.0, help="seconds of arrivals")
    ap.add_argument("--mbps", type=float, default=50.0, help="link rate, Mbit/s each way")
    ap.add_argument("--delay-ms", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("/tmp/mec_load"))
    a = ap.parse_args(argv)
    try:
        model = LatencyModel(load_profile(ROOT / "profiles" / f"{a.model}.device.json"),
                             load_profile(ROOT / "profiles" / f"{a.model}.{a.mec_class}.json"),
                             mec_speedup=a.mec_speedup)
        BatchServer.for_model(model, MecConfig("batch", a.max_batch, None, a.curve))
    except ValueError as e:
        print(f"mec_load: {e}", file=sys.stderr)
        return 2
    label = MecConfig("batch", a.max_batch, None, a.curve).label
    print(f"# {a.model}, MEC profile {a.mec_class}, MEC speedup {a.mec_speedup:g}, full offload, {a.mbps:g} Mbit/s, "
          f"{a.delay_ms:g} ms one way, horizon {a.horizon:g} s; batch = {label}; slots = "
          f"{a.slots} exclusive slot(s); Poisson {a.rate:g}/s per device; latency: service "
          f"(closed loop) or response (Poisson), s")
    print(f"{'arrivals':8} {'N':>3} {'model':6} {'req':>6} {'req/s':>8} {'p50':>8} {'p95':>8} "
          f"{'TTFT50':>8} {'TPOT50':>8}")
    rows: dict[tuple[str, str, int], dict[str, float]] = {}
    t0 = time.perf_counter()
    for arrivals in ("closed", "poisson"):
        for n in SIZES:
            for mode in ("batch", "slots"):
                r = _row(_run(model, mode, n, arrivals, a, a.seed + n), a.horizon, arrivals)
                rows[(arrivals, mode, n)] = r
                print(f"{arrivals:8} {n:3d} {mode:6} {r['n']:6d} {r['rps']:8.2f} "
                      f"{r['p50']:8.4f} {r['p95']:8.4f} {r['ttft50']:8.4f} {r['tpot50']:8.4f}",
                      flush=True)
    print(f"# {time.perf_counter() - t0:.1f} s")
    _plot(rows, a.out, f"{a.model}: {label} vs {a.slots} slot(s)")
    bad = []
    for arrivals in ("closed", "poisson"):
        b, s = rows[(arrivals, "batch", 1)], rows[(arrivals, "slots", 1)]
        if abs(b["p50"] - s["p50"]) > 1e-9 * max(s["p50"], 1.0):
            bad.append(f"{arrivals}: one device, batch p50 {b['p50']} != slots {s['p50']}")
    for n in SIZES:
        b, s = rows[("closed", "batch", n)], rows[("closed", "slots", n)]
        if b["rps"] < s["rps"] * (1 - 1e-9):
            bad.append(f"closed loop, {n} devices: batch {b['rps']:.2f} req/s < slots "
                       f"{s['rps']:.2f}")
    for msg in bad:
        print(f"MISSED: {msg}")
    return 1 if bad else 0


def _plot(rows: dict[tuple[str, str, int], dict[str, Any]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for arrivals, ls in (("closed", "-"), ("poisson", "--")):
        for mode, c in (("batch", "tab:blue"), ("slots", "tab:red")):
            xs = list(SIZES)
            ax[0].plot(xs, [rows[(arrivals, mode, n)]["rps"] for n in xs], ls, color=c,
                       marker="o", label=f"{mode}, {arrivals}")
            ax[1].plot(xs, [rows[(arrivals, mode, n)]["p95"] for n in xs], ls, color=c,
                       marker="o", label=f"{mode}, {arrivals}")
    for x, yl in zip(ax, ("requests/s", "p95 latency, s"), strict=True):
        x.set_xscale("log", base=2)
        x.set_xlabel("devices")
        x.set_ylabel(yl)
        x.grid(alpha=0.3)
    ax[1].set_yscale("log")
    ax[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "mec_load.png", dpi=120)
    plt.close(fig)
    print(f"# plot: {out / 'mec_load.png'}")


if __name__ == "__main__":
    sys.exit(main())
