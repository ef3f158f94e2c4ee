"""The exact offline optimum: branch and bound equals brute force over every joint assignment on
a small instance with MEC contention, and no policy beats it."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from agent.actions import SplitActions
from agent.errors import AgentError
from agent.latency import LatencyModel, MecState, RequestResult
from agent.link import Link
from agent.optimum import exact_optimum, make_instance
from agent.oracle import Oracle
from agent.policies import FixedPolicy, GreedyPolicy
from agent.policy import Decision, Workload
from agent.scenario import ScenarioConfig, run_policy
from profiler.schema import load_profile
from traces import DATA_DIR, load_traces

FIX = Path(__file__).parent / "fixtures" / "agent"


class _Sequence:
    """Decides the k-th request (in start order) with ``seq[k]``."""

    name = "sequence"

    def __init__(self, acts: SplitActions, seq: tuple[int, ...]) -> None:
        self.acts, self.seq, self.k = acts, seq, 0

    def decide_future(self, link: Link, mec: MecState, wl: Workload, t: float,
                      **_kw: object) -> Decision:
        a = self.seq[self.k]
        self.k += 1
        return self.acts.decision(a, wl)


class _Replay:
    """Follows a joint assignment {(device, request index): action}; devices told apart by
    their link's trace offset."""

    name = "replay"

    def __init__(self, acts: SplitActions, offsets: list[float],
                 assignment: dict[tuple[int, int], int]) -> None:
        self.acts, self.offsets, self.assignment = acts, offsets, assignment
        self.count = [0] * len(offsets)

    def decide_future(self, link: Link, mec: MecState, wl: Workload, t: float,
                      **_kw: object) -> Decision:
        i = self.offsets.index(link.offset_s)
        a = self.assignment[(i, self.count[i])]
        self.count[i] += 1
        return self.acts.decision(a, wl)


def _setup() -> tuple[LatencyModel, SplitActions, ScenarioConfig]:
    model = LatencyModel(load_profile(FIX / "llm.device.json"), load_profile(FIX / "llm.mec.json"),
                         mec_speedup=3.0)
    acts = SplitActions(model, names=["split:7"])
    # heavy load on one MEC slot: requests queue behind each other's sessions
    cfg = ScenarioConfig(n_devices=2, mec_slots=1, mec_queue_limit=1, one_way_delay_s=0.01,
                         load=4.0, horizon_s=1e12, mec_model="slots")
    return model, acts, cfg


def _cost(res: list[RequestResult], objective: str) -> float:
    return sum(r.response_s if objective == "response" else r.latency_s for r in res)


@pytest.mark.parametrize("objective", ["service", "response"])
def test_branch_and_bound_equals_brute_force(objective: str) -> None:
    model, acts, cfg = _setup()
    trace = load_traces(DATA_DIR / "train")[0].scaled(0.2)
    inst = make_instance(model, trace, cfg, 2, 3)
    opt = exact_optimum(model, acts, inst, cfg, objective=objective)
    assert opt.proven and opt.n_requests == 6 and opt.objective == objective
    best = min(
        _cost(run_policy(model, acts, _Sequence(acts, seq), trace, cfg, 2,
                         requests_per_device=3), objective)
        for seq in itertools.product(range(acts.n_actions), repeat=6))
    assert opt.total_s == pytest.approx(best, rel=1e-12)
    # the optimum's own assignment, replayed by the simulator, costs what it says
    rep = _Replay(acts, [ln.offset_s for ln in inst.links], opt.assignment)
    res = run_policy(model, acts, rep, trace, cfg, 2, requests_per_device=3)
    assert _cost(res, objective) == pytest.approx(opt.total_s, rel=1e-12)
    # no policy is below it; the per-request oracle is not always at it
    pols = [Oracle(model, acts), GreedyPolicy(acts), FixedPolicy("local", acts, acts.local_action),
            FixedPolicy("offload", acts, 0)]
    means = []
    for p in pols:
        res = run_policy(model, acts, p, trace, cfg, 2, requests_per_device=3)
        assert len(res) == 6
        means.append(_cost(res, objective))
    assert min(means) >= opt.total_s * (1 - 1e-12)
    # in service latency the per-request oracle is not optimal here (it does not trade its own
    # latency for the queue it causes): the test could tell a myopic search from the optimum.
    # In response time it is (that trade delays the device's own next requests; on these
    # training traces at scales 0.05-0.5, seeds 2-7, the oracle was always at the optimum)
    if objective == "service":
        assert means[0] > opt.total_s * 1.01, (means[0], opt.total_s)
    assert opt.lower_bound_s <= opt.total_s


def test_branch_and_bound_equals_brute_force_with_fallback() -> None:
    """With the devices' local fallback every child is priced with it (a request offloaded
    into an outage ends (1 + F) x L after its start and frees its slot): still the brute
    force's best, on a link dark in 40% of its seconds where full offload falls back."""
    import dataclasses

    import numpy as np

    from traces import Trace

    model, acts, cfg = _setup()
    cfg = dataclasses.replace(cfg, fallback=0.1)
    rng = np.random.default_rng(5)
    t = np.arange(0.0, 60.0)
    trace = Trace(t, np.where(rng.random(t.size) < 0.4, 0.0, 8e6), period_s=60.0)
    inst = make_instance(model, trace, cfg, 3, 3)
    opt = exact_optimum(model, acts, inst, cfg)
    assert opt.proven
    runs = {seq: run_policy(model, acts, _Sequence(acts, seq), trace, cfg, 3,
                            requests_per_device=3)
            for seq in itertools.product(range(acts.n_actions), repeat=6)}
    # the instance exercises it: full offload falls back twice
    assert sum(r.fallback_s is not None for r in runs[(0,) * 6]) == 2
    assert opt.total_s == pytest.approx(min(_cost(r, "response") for r in runs.values()),
                                        rel=1e-12)
    rep = _Replay(acts, [ln.offset_s for ln in inst.links], opt.assignment)
    res = run_policy(model, acts, rep, trace, cfg, 3, requests_per_device=3)
    assert _cost(res, "response") == pytest.approx(opt.total_s, rel=1e-12)


def test_objectives_differ_and_bad_objective() -> None:
    """Each optimum is best under its own objective (so neither search ignores its argument),
    and an unknown objective is one clear error."""
    model, acts, cfg = _setup()
    trace = load_traces(DATA_DIR / "train")[0].scaled(0.2)
    inst = make_instance(model, trace, cfg, 2, 3)
    costs = {}
    for obj in ("service", "response"):
        opt = exact_optimum(model, acts, inst, cfg, objective=obj)
        rep = _Replay(acts, [ln.offset_s for ln in inst.links], opt.assignment)
        res = run_policy(model, acts, rep, trace, cfg, 2, requests_per_device=3)
        costs[obj] = {o: _cost(res, o) for o in ("service", "response")}
    assert costs["service"]["service"] <= costs["response"]["service"] * (1 + 1e-12)
    assert costs["response"]["response"] <= costs["service"]["response"] * (1 + 1e-12)
    with pytest.raises(AgentError, match="objective must be one of response, service"):
        exact_optimum(model, acts, inst, cfg, objective="tail")


def test_instance_matches_run_policy_arrivals() -> None:
    model, acts, cfg = _setup()
    trace = load_traces(DATA_DIR / "train")[1]
    inst = make_instance(model, trace, cfg, 3, 4)
    res = run_policy(model, acts, FixedPolicy("local", acts, acts.local_action), trace, cfg, 3,
                     requests_per_device=4)
    got = sorted((int(r.device[6:]), r.t_arrival) for r in res)
    want = sorted((i, a) for i, arr in enumerate(inst.arrivals) for a in arr)
    assert got == want
    with pytest.raises(AgentError, match="requests per device must be >= 1"):
        make_instance(model, trace, cfg, 3, 0)


def test_node_limit_says_unproven() -> None:
    model, acts, cfg = _setup()
    trace = load_traces(DATA_DIR / "train")[0].scaled(0.05)
    inst = make_instance(model, trace, cfg, 2, 3)
    opt = exact_optimum(model, acts, inst, cfg, node_limit=3)
    assert not opt.proven


