"""The exact offline optimum of a small instance: the best joint plan assignment for every request
of every device, with full knowledge of the future, under the simulator's latency and MEC model.

An *instance* is a scenario run cut to each device's first ``R`` requests (arrivals, workloads
and link offsets from the seed, exactly as :func:`agent.scenario.run_policy` draws them with
``requests_per_device=R``). A joint assignment gives every request one action of the model's
action set (:mod:`agent.templates`); requests start as in ``run_policy`` (when they have
arrived and their device is free, decided in start order; a request that finds the MEC queue
at its limit runs locally). The objective is the sum (mean) of the requests' *response
times* (arrival to final output, :attr:`agent.latency.RequestResult.response_s`; the default,
``objective="response"``) or of their *service latencies* (first computation to final output,
``latency_s``; ``objective="service"``).

Why response time: service latency does not count the time a request waits for its own device,
so it can be lowered by keeping a device busy. On the gpt2 instance of
``benchmarks/agent_optimum.py`` with 3 devices at load 4 (Mahimahi LTE x 0.1, seed 3) the
service-latency optimum runs one device's first request locally (1.69 s where offload took
0.25 s): that device's next five requests then start 0.6-1.4 s after they arrived, when the
MEC is mostly free, and their service latencies drop; mean service latency 0.278 s against 0.319 s
for full offload, but mean response time 0.592 s against 0.415 s. Under response time no such
trade pays unless the users gain.

Search: depth-first branch and bound over the decisions in start order, children in increasing
latency (so the first leaf is the per-request oracle's assignment), pruned by

* the bound ``cost so far + cost of the best child + sum of every later request's lower
  bound``, where a request's lower bound is its best action's latency on a constant link at
  the trace's peak capacity (both directions), with the scenario's delay and an idle MEC (the
  latency model is monotone in link capacity and MEC wait, so this never overestimates; a
  response time is at least the service latency);
* exact state dominance: two partial assignments reaching the same future state (every device's
  next start, the MEC's slot release times and queued session starts, clamped at the decision
  time, where earlier values no longer matter) keep only the cheaper one.

With the devices' local fallback (``config.fallback``, :func:`agent.latency.fallback_start`)
each child is priced with it: the state is still the slot release times and queued starts (a
request its fallback ended releases its slot then), and the lower bounds stay valid (a request
that falls back takes at least its local latency, which the bound's minimum includes).

The result says whether the search finished (``proven``); with a node limit it may stop early
and then only gives the best assignment found.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from agent.actions import SplitActions
from agent.errors import AgentError
from agent.latency import LatencyModel, MecState, run_plan, simulate_request
from agent.link import Link
from agent.policy import Workload
from agent.scenario import Fleet, ScenarioConfig, _mean_gap, make_links
from traces import Trace

__all__ = ["OBJECTIVES", "Instance", "OptimumResult", "exact_optimum", "make_instance"]


@dataclass(frozen=True)
class Instance:
    """Each device's first ``requests_per_device`` requests: arrival times and workloads."""

    arrivals: tuple[tuple[float, ...], ...]
    workloads: tuple[tuple[Workload, ...], ...]
    links: tuple[Link, ...]
    requests_per_device: int

    @property
    def n_requests(self) -> int:
        return sum(len(a) for a in self.arrivals)


def make_instance(model: LatencyModel, trace: Trace, config: ScenarioConfig, seed: int,
                  requests_per_device: int) -> Instance:
    """The instance ``run_policy(..., seed, requests_per_device=R)`` runs (same draws)."""
    if requests_per_device < 1:
        raise AgentError(f"requests per device must be >= 1, got {requests_per_device}")
    rng = np.random.default_rng(seed)
    phase = float(rng.random())
    links = make_links(trace, config, phase)
    variants = config.variants(model)
    fleet = Fleet(config, len(variants), _mean_gap(model, config), rng)
    arr: list[tuple[float, ...]] = []
    wls: list[tuple[Workload, ...]] = []
    for i in range(fleet.n):
        a: list[float] = []
        w: list[Workload] = []
        for _ in range(requests_per_device):
            a.append(fleet.arrival[i])
            w.append(variants[fleet.variant[i]])
            fleet._draw(i, fleet.arrival[i])
        arr.append(tuple(a))
        wls.append(tuple(w))
    return Instance(tuple(arr), tuple(wls), tuple(links), requests_per_device)


@dataclass
class OptimumResult:
    """The best joint assignment found; ``proven`` when the search finished."""

    total_s: float
    n_requests: int
    assignment: dict[tuple[int, int], int] = field(default_factory=dict)
    """(device, its request index) -> action index."""
    proven: bool = True
    nodes: int = 0
    lower_bound_s: float = 0.0
    """Sum of the requests' static lower bounds (the search's weakest bound)."""
    objective: str = "response"
    """What ``total_s`` sums: ``response`` (arrival to final output) or ``service`` latency."""

    @property
    def mean_s(self) -> float:
        return self.total_s / max(self.n_requests, 1)


def _peak_link(link: Link) -> Link:
    from traces import synth

    up = float(np.max(link.up.rates_bps))
    down = float(np.max(link.down_trace.rates_bps))
    return Link(synth.constant(3600.0, up / 1e6), synth.constant(3600.0, down / 1e6),
                link.one_way_delay_s, 0.0)


OBJECTIVES = ("response", "service")


def exact_optimum(model: LatencyModel, actions: SplitActions, inst: Instance,
                  config: ScenarioConfig, *, node_limit: int = 2_000_000,
                  objective: str = "response") -> OptimumResult:
    """Branch and bound over joint assignments of ``inst`` (see the module docstring).

    :param objective: ``response`` (arrival to final output) or ``service`` (first computation
        to final output) time, summed over the requests.
    :raises AgentError: an unknown ``objective``."""
    if objective not in OBJECTIVES:
        raise AgentError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if config.mec_model != "slots":
        raise AgentError("the exact optimum searches the slot MEC (its state dominance is over "
                         "slot release times); give the scenario mec_model='slots' "
                         "(--mec-model slots)")
    response = objective == "response"
    n_dev = len(inst.arrivals)
    r_max = inst.requests_per_device
    # static lower bound of every request
    lb_cache: dict[tuple[int, tuple[tuple[str, int], ...]], float] = {}
    lb: list[list[float]] = []
    for i in range(n_dev):
        peak = _peak_link(inst.links[i])
        row = []
        for wl in inst.workloads[i]:
            key = (i, tuple(sorted(model.repeats(wl).items())))
            v = lb_cache.get(key)
            if v is None:
                v = min(run_plan(model.plan(actions.decision(a, wl), wl), peak, 0.0, None,
                                 detail=False)[0] for a in range(actions.n_actions))
                lb_cache[key] = v
            row.append(v)
        lb.append(row)
    total_lb = float(sum(sum(r) for r in lb))
    best = [math.inf]
    best_path: list[dict[tuple[int, int], int]] = [{}]
    path: dict[tuple[int, int], int] = {}
    memo: dict[tuple[object, ...], float] = {}
    nodes = [0]
    stopped = [False]

    def visit(free: list[float], idx: list[int], mec: MecState, cost: float,
              rest_lb: float) -> None:
        if stopped[0]:
            return
        nodes[0] += 1
        if nodes[0] > node_limit:
            stopped[0] = True
            return
        i, t = -1, math.inf
        for j in range(n_dev):
            if idx[j] >= r_max:
                continue
            a = inst.arrivals[j][idx[j]]
            s = a if a > free[j] else free[j]
            if s < t:
                i, t = j, s
        if i < 0:
            if cost < best[0]:
                best[0] = cost
                best_path[0] = dict(path)
            return
        key = (tuple(idx),
               tuple(max(inst.arrivals[j][idx[j]], free[j]) if idx[j] < r_max else -1.0
                     for j in range(n_dev)),
               tuple(sorted(max(f, t) for f in mec.free)),
               tuple(sorted(p for p in mec._pending if p > t)))
        seen = memo.get(key)
        if seen is not None and seen <= cost:
            return
        memo[key] = cost
        j = idx[i]
        wl = inst.workloads[i][j]
        mask = actions.mask(mec.accepts(t))
        kids = []
        for a in range(actions.n_actions):
            if not mask[a]:
                continue
            m2 = mec.copy()
            res = simulate_request(model, inst.links[i], actions.decision(a, wl), wl, t, m2,
                                   detail=False, fallback=config.fallback)
            # a response time is the service latency plus the same wait for every child
            kids.append((res.t_end - inst.arrivals[i][j] if response else res.latency_s, a,
                         res.t_end, m2))
        kids.sort(key=lambda k: (k[0], k[1]))
        rest = rest_lb - lb[i][j]
        for lat, a, t_end, m2 in kids:
            if cost + lat + rest >= best[0] * (1 - 1e-12):
                break
            f2 = list(free)
            f2[i] = t_end
            x2 = list(idx)
            x2[i] += 1
            path[(i, j)] = a
            visit(f2, x2, m2, cost + lat, rest)
            del path[(i, j)]

    import sys

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 10 * inst.n_requests + 100))
    try:
        visit([0.0] * n_dev, [0] * n_dev, MecState(config.mec_slots, config.mec_queue_limit),
              0.0, total_lb)
    finally:
        sys.setrecursionlimit(old)
    return OptimumResult(total_s=best[0], n_requests=inst.n_requests, assignment=best_path[0],
                         proven=not stopped[0], nodes=nodes[0], lower_bound_s=total_lb,
                         objective=objective)
