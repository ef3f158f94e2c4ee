"""Every policy's gap to the exact offline optimum on small instances of real traces.

For each instance (model, real trace from ``../shared/traces``, devices x requests per device,
scenario knobs), :func:`agent.optimum.exact_optimum` finds the best joint plan assignment with
full knowledge of the future (branch and bound under the simulator's latency and MEC model),
and every policy runs the same requests (:func:`agent.scenario.run_policy` with
``requests_per_device``). The optimum is found twice: for the mean *response time* (arrival
to final output, what a user waits) and for the mean *service latency* (first computation to
final output; it can be lowered by keeping a device busy so that its next requests start
later, see :mod:`agent.optimum`). Printed: the scenario, each optimum (proven or not, nodes,
seconds), and each policy's mean response time and service latency as ratios to them.
Target: ``default`` and ``greedy`` <= 1.05x the response-time optimum on every instance
(``--objective service`` judges service latency instead); exits 1 when one is missed, 2 when
an input is missing.

Run from the repository root: ``PYTHONPATH=$PWD python benchmarks/agent_optimum.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "traces"
if not SHARED.is_dir():
    SHARED = Path("/work/shared/traces")

#: (model, trace file under ../shared/traces, scale, devices, requests per device, load)
INSTANCES: list[tuple[str, str, float, int, int, float]] = [
    ("gpt2", "mahimahi/TMobile-LTE-short.up", 1.0, 1, 20, 0.5),
    ("gpt2", "mahimahi/TMobile-UMTS-driving.up", 0.1, 3, 6, 0.5),
    ("gpt2", "mahimahi/TMobile-LTE-short.up", 0.1, 3, 6, 4.0),
    ("sd15", "5g/static_B_2020.01.16_10.43.34.csv", 0.01, 1, 20, 0.5),
    ("sd15", "mahimahi/TMobile-UMTS-driving.up", 0.1, 3, 6, 0.5),
]
DELAY_S = 0.010
MEC_SPEEDUP = 10.0
TARGET = 1.05
POLICIES = ("default", "greedy", "fixed", "local", "offload", "oracle")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--node-limit", type=int, default=2_000_000,
                   help="stop a search after this many nodes (then the optimum is unproven)")
    p.add_argument("--seed", type=int, default=3, help="seed of arrivals and link offsets")
    p.add_argument("--default", default="default",
                   help="policy spec in the 'default' row (e.g. a candidate .zip)")
    p.add_argument("--objective", choices=("response", "service"), default="response",
                   help="the optimum the target is judged against")
    p.add_argument("--fallback", type=float, default=None, metavar="F",
                   help="the devices' local fallback after F x the local latency, for the "
                        "optimum and every policy (agent.latency.fallback_start; default off)")
    a = p.parse_args()
    from agent.actions import SplitActions
    from agent.latency import LatencyModel, fallback_label
    from agent.optimum import exact_optimum, make_instance
    from agent.oracle import Oracle
    from agent.policies import make_policy
    from agent.scenario import ScenarioConfig, run_policy
    from profiler.schema import load_profile
    from traces import TraceWarning, load_trace

    missing = [f for _, f, *_ in INSTANCES if not (SHARED / f).is_file()]
    if missing:
        print(f"agent_optimum: missing input: {SHARED / missing[0]}; nothing measured")
        return 2
    ok = True
    print(f"exact offline optimum vs policies; delay {DELAY_S * 1e3:g} ms one-way, "
          f"mec-speedup {MEC_SPEEDUP:g}, 1 MEC slot, queue limit 4, seed {a.seed}"
          + (f", {fallback_label(a.fallback)}" if a.fallback is not None else "") + "; "
          f"target: default and greedy <= {TARGET:g} x the {a.objective} optimum")
    for model_name, fname, scale, n_dev, reqs, load in INSTANCES:
        dev = load_profile(ROOT / "profiles" / f"{model_name}.device.json")
        mec = load_profile(ROOT / "profiles" / f"{model_name}.mec-cpu.json")
        model = LatencyModel(dev, mec, mec_speedup=MEC_SPEEDUP)
        acts = SplitActions(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TraceWarning)
            trace = load_trace(SHARED / fname)
        if scale != 1.0:
            trace = trace.scaled(scale)
        cfg = ScenarioConfig(n_devices=n_dev, mec_slots=1, one_way_delay_s=DELAY_S, load=load,
                             horizon_s=1e12, mec_model="slots", fallback=a.fallback)
        print(f"\n{model_name}: {n_dev} device(s) x {reqs} requests on {fname} x {scale:g}, "
              f"load {load:g}; {acts.n_actions} actions ({', '.join(acts.names)})")
        inst = make_instance(model, trace, cfg, a.seed, reqs)
        opts = {}
        for obj in ("response", "service"):
            t0 = time.perf_counter()
            opt = opts[obj] = exact_optimum(model, acts, inst, cfg, node_limit=a.node_limit,
                                            objective=obj)
            secs = time.perf_counter() - t0
            print(f"  {obj} optimum: mean {opt.mean_s:.4f} s over {opt.n_requests} requests, "
                  f"{'proven' if opt.proven else 'NOT proven (node limit)'}, {opt.nodes} "
                  f"nodes, {secs:.1f} s; static lower bound "
                  f"{opt.lower_bound_s / opt.n_requests:.4f} s")
        opt = opts[a.objective]
        for spec in POLICIES:
            if spec == "oracle":
                pol = Oracle(model, acts)
            else:
                kw: dict[str, object] = {"mec_speedup": MEC_SPEEDUP}
                if spec == "fixed":
                    kw.update(config=ScenarioConfig(n_devices=n_dev, one_way_delay_s=DELAY_S,
                                                    load=load, mec_model="slots"))
                pol = make_policy(a.default if spec == "default" else spec, dev, mec,
                                  **kw)  # type: ignore[assignment]
            res = run_policy(model, acts, pol, trace, cfg, a.seed, requests_per_device=reqs)
            assert len(res) == opt.n_requests
            resp = sum(r.response_s for r in res) / len(res)
            serv = sum(r.latency_s for r in res) / len(res)
            ratio = {"response": resp / opts["response"].mean_s,
                     "service": serv / opts["service"].mean_s}
            name = getattr(pol, "name", spec)
            flag = ""
            if spec in ("default", "greedy"):
                good = ratio[a.objective] <= TARGET and opt.proven
                ok &= good
                flag = "OK" if good else "MISSED"
            print(f"  {spec:<8} {name:<24} response {resp:9.4f} s {ratio['response']:6.3f} x, "
                  f"service {serv:9.4f} s {ratio['service']:6.3f} x optimum {flag}")
    print("\nall targets met" if ok else "\nsome targets MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
