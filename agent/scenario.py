"""A scenario: several devices sharing one MEC, request arrivals, and running a policy in it.

Arrivals are open-loop: device ``i`` draws exponential inter-arrival times with mean
``local_latency / load`` (the fully-local latency of the model's default workload divided by
the offered ``load``) and a workload variant per request from its own generator, spawned from
the run's seed. A request starts when it has arrived and the device's previous request is
done; requests are decided in start order. Since each device's draws depend only on the seed,
every policy sees the same arrivals and workloads (common random numbers).

Links: every device replays the same trace from its own starting point (offsets spread evenly
around the trace from a seeded random phase), or, with ``shared_cell``, all devices replay the
trace from the same point with ``1 / n_devices`` of its capacity each.

Throughput samples: at each decision the device adds the mean uplink capacity of the last
``probe_window_s`` (1 s) to its history (what its recent transfers, or a probe, measured);
the predictions read them through :func:`agent.observation.throughput_estimate` (their mean,
outages included); ``Observation.throughput_bps`` is only its fallback when there are none.

:func:`run_policy` simulates with the exact latency model (:func:`agent.latency.simulate_request`);
:class:`agent.env.AigcSplitEnv` runs the same fleet and the same model, one step per request.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from agent.actions import SplitActions
from agent.defaults import DEFAULTS
from agent.errors import AgentError
from agent.latency import LatencyModel, MecState, RequestResult, simulate_request
from agent.link import Link
from agent.mec_server import MecConfig
from agent.observation import HISTORY, harmonic_mean
from agent.policy import Decision, Observation, Policy, Workload
from traces import Trace

__all__ = ["FuturePolicy", "ScenarioConfig", "best_fixed_split", "make_links", "run_policy"]


@dataclass(frozen=True)
class ScenarioConfig:
    """Scenario parameters (seconds, counts). Validated on construction."""

    n_devices: int = int(DEFAULTS["devices"])
    mec_slots: int = int(DEFAULTS["mec_slots"])
    mec_queue_limit: int | None = 4
    one_way_delay_s: float = DEFAULTS["delay_ms"] / 1e3
    load: float = DEFAULTS["load"]
    shared_cell: bool = False
    horizon_s: float = 300.0
    probe_window_s: float = 1.0
    mask_budget: float | None = None
    """Mask actions whose predicted latency (from the device's own estimates) exceeds this many
    times the request's fully-local latency (a latency budget; local is always allowed);
    ``None``: off. Used by the env and by trained policies (stored in their sidecar)."""
    workloads: tuple[Mapping[str, int], ...] = field(default_factory=tuple)
    """Workload variants as pass repeats (each request draws one uniformly); empty: the
    profile's default repeats."""
    mec_model: str = "batch"
    """The MEC server model: ``batch`` (iteration-level batching, :mod:`agent.mec_server`; the
    default) or ``slots`` (exclusive slots)."""
    mec_max_batch: int = 8
    mec_memory_gb: float | None = None
    mec_batch_curve: str = "auto"
    fallback: float | None = None
    """The device's local fallback (:func:`agent.latency.fallback_start`): a request whose plan
    computes only on the MEC is also run locally once this many times its local latency has
    passed without its final output; the first to finish ends it. ``None``: off."""

    @property
    def mec_config(self) -> MecConfig:
        """The MEC server model and its knobs."""
        return MecConfig(self.mec_model, self.mec_max_batch, self.mec_memory_gb,
                         self.mec_batch_curve)

    def __post_init__(self) -> None:
        checks = [
            (self.n_devices >= 1, f"--devices must be >= 1, got {self.n_devices}"),
            (self.mec_slots >= 1, f"--mec-slots must be >= 1, got {self.mec_slots}"),
            (self.mec_queue_limit is None or self.mec_queue_limit >= 0,
             f"--mec-queue must be >= 0, got {self.mec_queue_limit}"),
            (math.isfinite(self.one_way_delay_s) and self.one_way_delay_s >= 0,
             f"--delay-ms must be >= 0, got {self.one_way_delay_s * 1e3}"),
            (math.isfinite(self.load) and 0 < self.load <= 10,
             f"--load must be in (0, 10], got {self.load}"),
            (math.isfinite(self.horizon_s) and self.horizon_s > 0,
             f"--horizon must be > 0 s, got {self.horizon_s}"),
            (self.probe_window_s > 0, f"probe window must be > 0 s, got {self.probe_window_s}"),
            (self.mask_budget is None or self.mask_budget >= 1.0,
             f"--mask-budget must be >= 1 (times the local latency), got {self.mask_budget}"),
            (self.fallback is None or (math.isfinite(self.fallback) and self.fallback >= 0),
             f"--fallback must be >= 0 (times the local latency), got {self.fallback}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise AgentError(msg)
        self.mec_config  # noqa: B018  (validates the MEC knobs)

    def variants(self, model: LatencyModel) -> list[Workload]:
        if not self.workloads:
            return [Workload(model.model)]
        out = [Workload(model.model, dict(w)) for w in self.workloads]
        for w in out:
            model.repeats(w)
        return out

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["workloads"] = [dict(w) for w in self.workloads]
        return d


class FuturePolicy(Protocol):
    """A policy that may look at the future (the oracle): decides with the link and MEC."""

    name: str

    def decide_future(self, link: Link, mec: MecState, workload: Workload,
                      t_start: float) -> Decision:
        """The decision; with the scenario's local fallback on, called with ``fallback=F``
        too (:meth:`agent.oracle.Oracle.decide_future`)."""


_SCALED: dict[tuple[int, int], tuple[Trace, Trace]] = {}


def make_links(trace: Trace, config: ScenarioConfig, phase: float) -> list[Link]:
    """The devices' links on ``trace`` for a run whose random phase is ``phase`` in [0, 1)."""
    n = config.n_devices
    if config.shared_cell:
        key = (id(trace), n)
        hit = _SCALED.get(key)
        if hit is None or hit[0] is not trace:
            hit = (trace, trace.scaled(1.0 / n) if n > 1 else trace)
            _SCALED[key] = hit
        return [Link(hit[1], None, config.one_way_delay_s, phase * trace.period_s)
                for _ in range(n)]
    return [Link(trace, None, config.one_way_delay_s, ((phase + i / n) % 1.0) * trace.period_s)
            for i in range(n)]


class Fleet:
    """Arrivals, device availability and throughput histories of one run (shared by the exact
    runner and the env)."""

    def __init__(self, config: ScenarioConfig, n_variants: int, mean_gap_s: float,
                 rng: np.random.Generator) -> None:
        self.config = config
        self.n = config.n_devices
        self.rngs = rng.spawn(self.n)
        self.mean_gap_s = mean_gap_s
        self.n_variants = n_variants
        self.free = [0.0] * self.n
        self.arrival = [0.0] * self.n
        self.variant = [0] * self.n
        self.history: list[deque[float]] = [deque(maxlen=HISTORY) for _ in range(self.n)]
        self._gaps: list[list[float]] = [[] for _ in range(self.n)]
        self._vars: list[list[int]] = [[] for _ in range(self.n)]
        for i in range(self.n):
            self._draw(i, 0.0)

    def _draw(self, i: int, after: float) -> None:
        gaps = self._gaps[i]
        if not gaps:  # draw in blocks (fast); each device's sequence depends only on the seed
            g = self.rngs[i]
            gaps.extend(reversed(g.exponential(self.mean_gap_s, size=256).tolist()))
            # integers(1) draws nothing from the generator (all 0): skip it, same stream
            self._vars[i].extend(reversed(g.integers(self.n_variants, size=256).tolist())
                                 if self.n_variants > 1 else [0] * 256)
        self.arrival[i] = after + gaps.pop()
        self.variant[i] = self._vars[i].pop()

    def next_device(self, horizon: float = math.inf) -> tuple[int, float]:
        """The device whose request starts next, and when, among requests that arrived before
        ``horizon``; ``(-1, inf)`` when none is left. Arrivals do not depend on the policy, so
        every policy runs the same requests (each one to completion)."""
        # the first device with the earliest start (as min() then index() would pick it)
        arrival, free = self.arrival, self.free
        best, when = -1, math.inf
        for j in range(self.n):
            a = arrival[j]
            if a >= horizon:
                continue
            f = free[j]
            s = a if a > f else f
            if s < when:
                best, when = j, s
        return best, when

    def done(self, i: int, t_end: float) -> None:
        """Device ``i`` finished its request at ``t_end``; draw its next arrival."""
        self.free[i] = t_end
        self._draw(i, self.arrival[i])


def _mean_gap(model: LatencyModel, config: ScenarioConfig) -> float:
    return model.local_latency(Workload(model.model)) / config.load


def run_policy(model: LatencyModel, actions: SplitActions, policy: Policy | FuturePolicy,
               trace: Trace, config: ScenarioConfig, seed: int, *,
               detail: bool = False, requests_per_device: int | None = None,
               on_decision: Callable[[int, Link, MecState, Observation, Decision], None]
               | None = None) -> list[RequestResult]:
    """Run ``policy`` on ``trace`` with the exact latency model: every request that arrives
    before ``config.horizon_s`` runs to completion (the trace loops when needed); returns them
    in start order. Arrivals and workloads depend only on ``seed``, so every policy gets the
    same requests. With ``requests_per_device``, only each device's first that many requests
    run (the small instances of :mod:`agent.optimum`). With ``config.mec_model == "batch"``
    the MEC is the batching server, simulated event by event (:mod:`agent.batchsim`).
    ``on_decision(device, link, mec, observation, decision)`` (slot MEC only), when given, is
    called before each request is simulated, with the MEC's state as the request finds it and
    the observation a live policy sees (a diagnostic hook: ``benchmarks/agent_families.py
    --explain``; it must not change ``mec``)."""
    if config.mec_model == "batch":
        if on_decision is not None:
            raise AgentError("on_decision is only supported with the slot MEC")
        from agent.batchsim import run_policy_batched

        return run_policy_batched(model, actions, policy, trace, config, seed, detail=detail,
                                  requests_per_device=requests_per_device)
    rng = np.random.default_rng(seed)
    phase = float(rng.random())
    links = make_links(trace, config, phase)
    variants = config.variants(model)
    fleet = Fleet(config, len(variants), _mean_gap(model, config), rng)
    mec = MecState(config.mec_slots, config.mec_queue_limit)
    horizon = config.horizon_s
    window = config.probe_window_s
    future = hasattr(policy, "decide_future")
    # a look-ahead policy prices with the device's fallback (only asked of one when it is on)
    fb = {"fallback": config.fallback} if config.fallback is not None else {}
    out: list[RequestResult] = []
    count = [0] * fleet.n
    while True:
        i, t = fleet.next_device(horizon)
        if i < 0:
            break
        link = links[i]
        hist = fleet.history[i]
        hist.append(link.recent_up_bps(t, window))
        wl = variants[fleet.variant[i]]
        accepts = mec.accepts(t)
        obs = None
        if not future or on_decision is not None:
            obs = Observation(workload=wl, throughput_bps=harmonic_mean(hist),
                              recent_throughputs_bps=tuple(hist), rtt_s=link.rtt_s,
                              mec_queue_len=mec.queue_len(t), mec_busy_slots=mec.busy_slots(t),
                              mec_slots=mec.slots, mec_expected_wait_s=mec.expected_wait(t),
                              time_s=t, mec_accepts=accepts)
        decision = (policy.decide_future(link, mec, wl, t, **fb)  # type: ignore[union-attr]
                    if future else policy.decide(obs))  # type: ignore[union-attr,arg-type]
        if not accepts and decision.action != actions.local_action:
            decision = actions.decision(actions.local_action, wl)
        if on_decision is not None:
            assert obs is not None
            on_decision(i, link, mec, obs, decision)
        res = simulate_request(model, link, decision, wl, t, mec, device=f"device{i}",
                               detail=detail, t_arrival=fleet.arrival[i],
                               fallback=config.fallback)
        out.append(res)
        fleet.done(i, res.t_end)
        count[i] += 1
        if requests_per_device is not None and count[i] >= requests_per_device:
            fleet.arrival[i] = math.inf  # this device's share of the instance is done
    return out


def best_fixed_split(model: LatencyModel, actions: SplitActions, *,
                     traces: Sequence[Trace] | None = None,
                     config: ScenarioConfig | None = None, seed: int = 0) -> int:
    """The split with the lowest mean latency over ``traces`` (default: the bundled training
    traces ``traces/data/train``), every request at that split."""
    from agent.policies import FixedPolicy

    if traces is None:
        from traces import DATA_DIR, load_traces

        traces = load_traces(DATA_DIR / "train")
    if not traces:
        raise AgentError("no traces to choose the best fixed split on")
    cfg = config or ScenarioConfig()
    best, best_mean = actions.local_action, math.inf
    mask = actions.mask(True)
    for a in range(actions.n_actions):
        if not mask[a]:
            continue
        pol = FixedPolicy(f"fixed:{a}", actions, a)
        lat = [r.latency_s for j, tr in enumerate(traces)
               for r in run_policy(model, actions, pol, tr, cfg, seed + j)]
        m = float(np.mean(lat)) if lat else math.inf
        if m < best_mean:
            best, best_mean = a, m
    return best
