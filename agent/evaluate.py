"""``python -m agent.evaluate``: compare policies on traces with the exact latency model.

Every policy runs on every trace with the same seed per trace, so all see the same arrivals,
workloads and trace starting points (common random numbers). Prints a table (mean, p50, p95
latency, ratio to the oracle's mean, deadline misses with ``--deadline``) and writes
``OUT/summary.json`` (per policy and per trace, plus provenance), ``OUT/latency_cdf.png`` and
``OUT/per_trace.png``.

Policies: ``default``, ``greedy``, ``local``, ``offload``, ``fixed`` (best single split on
``--train-traces``, default the bundled training traces), ``fixed:K``, ``oracle``,
``NAME:FILE.zip`` or ``FILE.zip`` (an SB3 policy from ``python -m agent.train``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent._cli import (
    add_common_args,
    file_sha256,
    load_profiles,
    load_trace_files,
    parse_with_scenario,
    provenance,
    resolve_args,
    run_main,
    scenario_from_args,
    show_path,
    trace_paths,
)
from agent.actions import SplitActions
from agent.defaults import HelpFormatter, mec_model_note, resolved_scenario
from agent.errors import AgentError
from agent.latency import LatencyModel, fallback_label
from agent.oracle import Oracle
from agent.policies import make_policy
from agent.policy import Policy
from agent.scenario import FuturePolicy, ScenarioConfig, run_policy
from agent.slo import Slo, goodput
from traces import Trace

__all__ = ["evaluate_policies", "main", "summarise"]


def evaluate_policies(model: LatencyModel, actions: SplitActions,
                      policies: Mapping[str, Policy | FuturePolicy], traces: Sequence[Trace],
                      config: ScenarioConfig, seed: int,
                      offloaded: dict[str, float] | None = None,
                      metrics: dict[str, dict[str, list[float]]] | None = None,
                      slo: Slo | None = None, goodputs: dict[str, float] | None = None
                      ) -> dict[str, list[list[float]]]:
    """Latencies of every request, per policy and per trace (same seed per trace). With
    ``offloaded`` given, it receives each policy's fraction of requests that offloaded; with
    ``metrics``, each policy's per-request ``ttft``, ``tpot`` (requests with two or more
    outputs) and ``response`` (arrival to result) values; with ``slo`` and ``goodputs``, each
    policy's goodput (share of requests meeting the SLO, :mod:`agent.slo`)."""
    out: dict[str, list[list[float]]] = {}
    for name, pol in policies.items():
        runs = [run_policy(model, actions, pol, tr, config, seed + j, detail=False)
                for j, tr in enumerate(traces)]
        out[name] = [[r.latency_s for r in rs] for rs in runs]
        if offloaded is not None:
            flags = [r.offloaded for rs in runs for r in rs]
            offloaded[name] = float(np.mean(flags)) if flags else 0.0
        if slo is not None and goodputs is not None:
            goodputs[name] = goodput(slo, [r for rs in runs for r in rs])
        if metrics is not None:
            flat = [r for rs in runs for r in rs]
            metrics[name] = {"ttft": [r.ttft_s for r in flat],
                             "tpot": [t for r in flat if (t := r.tpot_s) is not None],
                             "response": [r.response_s for r in flat]}
    return out


def summarise(lat: Mapping[str, list[list[float]]], deadline_s: float | None = None,
              metrics: Mapping[str, Mapping[str, list[float]]] | None = None
              ) -> dict[str, dict[str, Any]]:
    """Mean, p50, p95, ratio to the oracle (when present), deadline misses, per-trace means;
    with ``metrics`` (from :func:`evaluate_policies`) also TTFT, TPOT and response time p50/p95."""
    oracle_mean = None
    if "oracle" in lat:
        oracle_mean = float(np.mean(np.concatenate([np.asarray(x) for x in lat["oracle"]])))
    res: dict[str, dict[str, Any]] = {}
    for name, per_trace in lat.items():
        flat = np.concatenate([np.asarray(x, dtype=np.float64) for x in per_trace])
        if flat.size == 0:
            raise AgentError("no requests were simulated; use longer traces or --horizon")
        mean = float(flat.mean())
        d: dict[str, Any] = {
            "mean_latency_s": mean, "p50_latency_s": float(np.percentile(flat, 50)),
            "p95_latency_s": float(np.percentile(flat, 95)), "requests": int(flat.size),
            "ratio_to_oracle": (mean / oracle_mean) if oracle_mean else None,
            "per_trace_mean_s": [float(np.mean(x)) if len(x) else math.nan for x in per_trace],
        }
        if deadline_s is not None:
            d["deadline_miss_rate"] = float(np.mean(flat > deadline_s))
        for key, vals in ((metrics or {}).get(name) or {}).items():
            if vals:
                d[f"{key}_mean_s"] = float(np.mean(vals))
                d[f"{key}_p50_s"] = float(np.percentile(vals, 50))
                d[f"{key}_p95_s"] = float(np.percentile(vals, 95))
        res[name] = d
    return res


def format_table(summary: Mapping[str, Mapping[str, Any]], deadline: float | None) -> str:
    """One row per policy: n, latency mean/p50/p95, ratio to the oracle, offloaded share, and
    TTFT/TPOT p50/p95 when the model streams outputs (an LLM)."""
    tokens = any("tpot_p50_s" in d for d in summary.values())
    head = (f"{'policy':<24} {'n':>6} {'mean s':>9} {'p50 s':>9} {'p95 s':>9} {'/oracle':>8} "
            f"{'offload':>7}")
    if tokens:
        head += f" {'TTFT p50':>9} {'TTFT p95':>9} {'TPOT p50':>9} {'TPOT p95':>9}"
    if deadline is not None:
        head += f" {'miss':>6}"
    slo = any("goodput" in d for d in summary.values())
    if slo:
        head += f" {'goodput':>7}"
    lines = [head, "-" * len(head)]
    nan = float("nan")
    for name, d in summary.items():
        r = d["ratio_to_oracle"]
        line = (f"{name:<24} {d['requests']:6d} {d['mean_latency_s']:9.3f} "
                f"{d['p50_latency_s']:9.3f} {d['p95_latency_s']:9.3f} "
                f"{r if r is not None else nan:8.3f} {d.get('offload_fraction', nan):7.1%}")
        if tokens:
            line += "".join(f" {d.get(k, nan):9.4f}" for k in (
                "ttft_p50_s", "ttft_p95_s", "tpot_p50_s", "tpot_p95_s"))
        if deadline is not None:
            line += f" {d['deadline_miss_rate']:6.1%}"
        if slo:
            line += f" {d.get('goodput', nan):7.1%}"
        lines.append(line)
    return "\n".join(lines)


_PER_TRACE_MAX_IN = 14.0


def _plots(lat: Mapping[str, list[list[float]]], names: Sequence[str], out: Path,
           title: str, metrics: Mapping[str, Mapping[str, list[float]]] | None = None) -> None:
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    title = "\n".join(textwrap.wrap(title, 90))
    import matplotlib.pyplot as plt

    panels: list[tuple[str, dict[str, list[float]]]] = [
        ("end-to-end latency (s)", {k: [x for v in pt for x in v] for k, pt in lat.items()})]
    if metrics and any(m.get("tpot") for m in metrics.values()):
        for key, label in (("ttft", "time to first token (s)"),
                           ("tpot", "time per output token (s)")):
            panels.append((label, {k: list(m.get(key, [])) for k, m in metrics.items()}))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (label, data) in zip(axes[0], panels, strict=True):
        for name, vals in data.items():
            flat = np.sort(np.asarray(vals, dtype=np.float64))
            if flat.size:
                ax.plot(flat, np.arange(1, flat.size + 1) / flat.size,
                        label=f"{name} (n={flat.size})")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("CDF")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "latency_cdf.png", dpi=120)
    plt.close(fig)
    # at most _PER_TRACE_MAX_IN inches wide whatever the number of traces: grouped bars with
    # names while they fit, else one marker per policy and trace over the trace index
    n = len(names)
    fig, ax = plt.subplots(figsize=(min(_PER_TRACE_MAX_IN, max(6, 0.25 * n * len(lat))), 4))
    x = np.arange(n)
    means = {name: [float(np.mean(v)) if len(v) else 0.0 for v in per_trace]
             for name, per_trace in lat.items()}
    if n * len(lat) <= 4 * _PER_TRACE_MAX_IN:
        width = 0.8 / max(len(lat), 1)
        for j, (name, m) in enumerate(means.items()):
            ax.bar(x + j * width, m, width, label=name)
        ax.set_xticks(x + 0.4 - width / 2, names, rotation=90, fontsize=6)
    else:
        for name, m in means.items():
            ax.plot(x, m, ".", ms=4, label=name)
        ax.set_xlabel(f"trace index (0..{n - 1}; names in summary.json 'traces')")
        ax.set_yscale("log")
    ax.set_ylabel("mean latency (s)")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "per_trace.png", dpi=120)
    plt.close(fig)


def build_policies(specs: Sequence[str], dev: Any, mec: Any, model: LatencyModel,
                   actions: SplitActions, *, mec_speedup: float, train_traces: Sequence[Trace],
                   config: ScenarioConfig, seed: int) -> dict[str, Policy | FuturePolicy]:
    out: dict[str, Policy | FuturePolicy] = {}
    for spec in specs:
        spec = spec.strip()
        if not spec:
            continue
        if spec == "oracle":
            out["oracle"] = Oracle(model, actions)
            continue
        name = spec
        path = spec
        if ":" in spec and not spec.startswith("fixed:"):
            name, _, path = spec.partition(":")
        kw: dict[str, Any] = {"mec_speedup": mec_speedup}
        if path == "fixed":
            kw.update(traces=train_traces, config=config, seed=seed)
        out[name] = make_policy(path, dev, mec, **kw)
    if not out:
        raise AgentError("--policies is empty")
    return out


def _scenario_spec(policies: str) -> str:
    """The policy whose training scenario the evaluation follows: ``default`` when listed,
    else the first ``.zip``, else none (the model's shipped policy's scenario, no warnings)."""
    specs = [s.strip().partition(":")[2] if ":" in s and not s.strip().startswith("fixed:")
             else s.strip() for s in policies.split(",")]
    if "default" in specs:
        return "default"
    return next((s for s in specs if s.endswith(".zip")), "baselines")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.evaluate", description=__doc__,
                                formatter_class=HelpFormatter)
    add_common_args(p)
    p.add_argument("--policies", default="default,greedy,local,offload,fixed,oracle",
                   help="comma-separated policy specs (see above)")
    p.add_argument("--train-traces", nargs="+",
                   help="traces on which 'fixed' picks its split (default: traces/data/train)")
    p.add_argument("--deadline", type=float, help="deadline in seconds: report the miss rate")
    p.add_argument("--slo-e2e", type=float, metavar="S",
                   help="SLO: end-to-end latency bound per request, seconds (goodput column)")
    p.add_argument("--slo-ttft", type=float, metavar="S",
                   help="SLO: time-to-first-token bound per request, seconds")
    p.add_argument("--slo-tpot", type=float, metavar="S",
                   help="SLO: mean time-per-output-token bound per request, seconds")
    p.add_argument("--seed", type=int, default=0, help="base seed (trace j uses seed + j)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    a, scenario_file = parse_with_scenario(p, argv)
    if a.deadline is not None and not a.deadline > 0:
        raise AgentError(f"--deadline must be > 0 s, got {a.deadline}")
    slo = Slo(a.slo_e2e, a.slo_ttft, a.slo_tpot)
    dev, mec, prof_paths = load_profiles(a)
    resolve_args(a, dev.model.name, _scenario_spec(a.policies), "agent.evaluate")
    config = scenario_from_args(a)
    model = LatencyModel(dev, mec, mec_speedup=a.mec_speedup)
    if config.mec_model == "batch":  # the curve, batch sizes and memory fit the profiles
        from agent.mec_server import BatchServer

        config = dataclasses.replace(  # 'auto' named as what it stands for, in every output
            config, mec_batch_curve=config.mec_config.resolved(mec).batch_curve)
        BatchServer.for_model(model, config.mec_config)
    for spec in dict.fromkeys(x.strip() for x in a.policies.split(",")):
        note = mec_model_note(spec, dev.model.name, config.mec_model)
        if note:
            print(f"agent.evaluate: {note}", file=sys.stderr)
    actions = SplitActions(model)
    paths = trace_paths(a.traces)
    traces = load_trace_files(paths, a.scale)
    if a.train_traces:
        train = load_trace_files(trace_paths(a.train_traces), a.scale)
    else:
        from traces import DATA_DIR

        train = load_trace_files(trace_paths([str(DATA_DIR / "train")]), a.scale)
    pols = build_policies(a.policies.split(","), dev, mec, model, actions,
                          mec_speedup=a.mec_speedup, train_traces=train, config=config,
                          seed=a.seed)
    t0 = time.perf_counter()
    offl: dict[str, float] = {}
    extra: dict[str, dict[str, list[float]]] = {}
    good: dict[str, float] = {}
    lat = evaluate_policies(model, actions, pols, traces, config, a.seed, offl, extra,
                            slo if slo.active else None, good)
    summary = summarise(lat, a.deadline, extra)
    for k, v in offl.items():
        summary[k]["offload_fraction"] = v
    for k, v in good.items():
        summary[k]["goodput"] = v
    scen = (f"model {model.model}, {len(traces)} traces, scale {a.scale:g}, mec-speedup "
            f"{a.mec_speedup:g}, {config.n_devices} devices, "
            f"{config.mec_slots if config.mec_model == 'slots' else ''}"
            f"{' MEC slot(s)' if config.mec_model == 'slots' else 'MEC ' + config.mec_config.label}, "
            f"delay {config.one_way_delay_s * 1e3:g} ms one-way, load {config.load:g}"
            + (f", {fallback_label(config.fallback)}" if config.fallback is not None else "")
            + (f"; SLO {slo.describe()}" if slo.active else ""))
    print(scen)
    print(format_table(summary, a.deadline))
    a.out.mkdir(parents=True, exist_ok=True)
    names = [pth.name for pth in paths]
    doc = {"policies": summary, "traces": names,
           "scenario": {**config.to_json(), "scale": a.scale, "mec_speedup": a.mec_speedup},
           "resolved_scenario": resolved_scenario(scenario_file, a, "agent"),
           "slo": {"e2e_s": slo.e2e_s, "ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s},
           "provenance": provenance(
               ["agent.evaluate", *(argv if argv is not None else sys.argv[1:])], seed=a.seed,
               model=model.model,
               profiles={show_path(q): file_sha256(q) for q in prof_paths},
               trace_sha256={n: t.sha256() for n, t in zip(names, traces, strict=True)},
               policy_names={k: getattr(v, "name", k) for k, v in pols.items()},
               seconds=time.perf_counter() - t0)}
    (a.out / "summary.json").write_text(json.dumps(doc, indent=1) + "\n")
    if not a.no_plots:
        _plots(lat, names, a.out, scen, extra)
    print(f"wrote {a.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main("agent.evaluate", main))
