"""Event-driven simulation of many requests sharing one batching MEC (:mod:`agent.mec_server`).

With exclusive slots a request's timeline is fixed once its slot is granted, so
:func:`agent.latency.simulate_request` prices requests one at a time. With batching, an
iteration's length depends on every session in it, so a request's MEC steps are only known when
the concurrent sessions are: :class:`BatchSim` runs every request's plan as a coroutine
(:func:`agent.latency.plan_timeline`, the one owner of the pricing rules: device
and link steps are the request's own; each MEC computation is handed to the shared
:class:`agent.mec_server.BatchServer`) and advances the server one iteration at a time.

Used by :func:`run_policy_batched` (the exact runner behind :func:`agent.scenario.run_policy`
when the scenario's MEC model is ``batch``) and by the parity replay
(:func:`emulator.parity.replay_with`). The RL env does not run this: at decision time it
prices a request with the slot-free timeline and the MEC's predicted iteration time
(:meth:`agent.mec_server.BatchServer.status`), a cheaper approximation (see :mod:`agent.env`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.errors import AgentError
from agent.latency import (
    LatencyModel,
    MecState,
    PlanGen,
    RequestResult,
    StepTiming,
    fallback_start,
    local_run,
    plan_timeline,
)
from agent.link import Link
from agent.mec_server import BatchCost, BatchServer, Work, session_state_bytes
from agent.plan import Plan
from agent.policy import Decision, Workload

if TYPE_CHECKING:
    from agent.actions import SplitActions
    from agent.scenario import ScenarioConfig
    from traces import Trace

__all__ = ["BatchSim", "PredictedBatchMec", "run_policy_batched"]


class PredictedBatchMec(MecState):
    """The batching MEC as the RL env sees it at decision time (one request priced per step).

    A request's MEC iterations depend on requests decided after it, which the env does not
    know yet, so it predicts them from the sessions decided so far: admission is at most
    ``max_batch`` sessions (a session holds its place from its first MEC computation to its
    last, FIFO in decision order: :class:`MecState` with ``max_batch`` slots) and each MEC
    computation takes its batch-1 time scaled by the batch curve at ``1 +`` the number of
    earlier-decided sessions on the MEC when it starts (:meth:`BatchCost.predict`). Later
    arrivals that join its iterations, per-block selective batching and the memory budget are
    left to the exact :class:`BatchSim` that ``agent.evaluate`` runs.
    """

    __slots__ = ("_cost", "_spans")

    def __init__(self, cost: BatchCost, max_batch: int, queue_limit: int | None = None) -> None:
        super().__init__(max_batch, queue_limit)
        self._cost = cost
        self._spans: list[tuple[float, float]] = []  # committed sessions' MEC (start, end)

    def on_mec(self, t: float) -> int:
        """Sessions decided so far that are on the MEC at ``t``."""
        return sum(1 for a, b in self._spans if a <= t < b)

    def run(self, plan: Plan, link: Link, t_start: float,
            fallback_end: float = math.inf) -> tuple[float, int, float, float]:
        """Price ``plan`` started at ``t_start``: ``(t_end, slot, session_start, session_end)``
        (slot -1: nothing ran on the MEC); commits the session. ``fallback_end``: when the
        device's local fallback run would end (the request ends then at the latest, and its
        session with it)."""
        gen = plan_timeline(plan, link, t_start, False)
        slot = -1
        s0 = s1 = 0.0
        try:
            ready, st = next(gen)
            while True:
                if slot < 0:
                    self._spans = [x for x in self._spans if x[1] > ready]
                    slot, start = self.acquire(ready)
                    s0 = start
                else:
                    start = ready
                secs = self._cost.predict(st.seconds, 1 + self.on_mec(start))
                s1 = start + secs
                ready, st = gen.send((start, secs))
        except StopIteration as stop:
            t_end = stop.value[0]
        if t_end > fallback_end:
            t_end = fallback_end
            s1 = min(s1, t_end)
            if s0 >= t_end:
                slot = -1
        if slot >= 0:
            self.commit(slot, s0, s1)
            self._spans.append((s0, s1))
        return t_end, slot, s0, s1


@dataclass
class _Req:
    key: Any
    gen: PlanGen
    decision: Decision
    t_start: float
    device: str
    t_arrival: float | None
    plan: Plan | None = None
    device_on: list[float] | None = None
    """When each item is on the device, as far as the plan's timeline got (fallback only)."""
    t_fallback: float = math.inf
    """When the local fallback run starts (``inf``: none)."""
    local_end: float = math.inf
    """When the local fallback run ends: the request ends then unless the plan did first."""
    local_tokens: tuple[float, ...] = ()


@dataclass
class BatchSim:
    """Many requests on one :class:`~agent.mec_server.BatchServer` (see the module docstring).

    :meth:`start` adds a request at its start time (non-decreasing across calls, and never
    before an iteration already run); :meth:`next_time` is when the next iteration starts;
    :meth:`step` runs it (or ends a request whose local fallback run finished first) and
    returns the requests that thereby finished. ``fallback``: the device's local fallback
    (:func:`agent.latency.fallback_start`); a request it ends leaves the batch then."""

    model: LatencyModel
    server: BatchServer
    detail: bool = False
    fallback: float | None = None
    _reqs: dict[int, _Req] = field(default_factory=dict)
    _next: int = 0

    def start(self, key: Any, decision: Decision, workload: Workload, link: Link,
              t_start: float, *, device: str = "device0",
              t_arrival: float | None = None,
              mec_arrival: float | None = None) -> RequestResult | None:
        """Start a request; its result when it never computes on the MEC (else ``None``: it
        comes out of :meth:`step`). ``mec_arrival`` pins when its first MEC computation is
        ready (a replay of measured arrivals at the MEC) instead of the link's prediction."""
        plan = self.model.plan(decision, workload)
        t_fb = fallback_start(self.model, plan, workload, t_start, self.fallback)
        on = [math.inf] * len(plan.item_names) if t_fb < math.inf else None
        gen = plan_timeline(plan, link, t_start, self.detail, on)
        sid = self._next
        self._next += 1
        req = _Req(key, gen, decision, t_start, device, t_arrival, plan, on, t_fb)
        if t_fb < math.inf:
            end, tokens = local_run(self.model, workload, link, t_fb)
            req.local_end, req.local_tokens = end, tuple(tokens)
        try:
            ready, st = next(gen)
        except StopIteration as stop:
            return self._result(req, stop.value)
        if mec_arrival is not None:
            ready = mec_arrival
        self.server.arrive(sid, ready, session_state_bytes(self.model, plan))
        self.server.submit(Work(sid, st.pass_name, st.lo, st.hi, st.seconds, ready, st))
        self._reqs[sid] = req
        return None

    def _next_fallback(self) -> tuple[float, int]:
        """The earliest end of a local fallback run still racing the MEC, and its session."""
        best, sid = math.inf, -1
        for k, r in self._reqs.items():
            if r.local_end < best:
                best, sid = r.local_end, k
        return best, sid

    def next_time(self) -> float:
        """Start of the next iteration, or the end of a local fallback run that wins, if
        earlier (``inf``: no session has work)."""
        if not self._reqs:
            return math.inf
        return min(self.server.next_start(), self._next_fallback()[0])

    @property
    def active(self) -> int:
        return len(self._reqs)

    def step(self) -> list[tuple[Any, RequestResult]]:
        """Run the next iteration, or end the request whose local fallback run finishes before
        it starts; the requests that finished, as ``(key, result)``."""
        t_fb, sid = self._next_fallback()
        if sid >= 0 and t_fb <= self.server.next_start():
            req = self._reqs.pop(sid)
            self.server.drop(sid)
            return [(req.key, self._fell_back(req))]
        it = self.server.next_iteration()
        if it is None:
            return []
        t0, works, secs = it
        self.server.complete(t0, works, secs)
        done: list[tuple[Any, RequestResult]] = []
        for w in works:
            req = self._reqs[w.sid]
            try:
                ready, st = req.gen.send((t0, secs))
            except StopIteration as stop:
                self.server.finish(w.sid)
                del self._reqs[w.sid]
                res = self._result(req, stop.value)
                done.append((req.key, self._fell_back(req, res) if req.local_end < res.t_end
                             else res))
                continue
            self.server.submit(Work(w.sid, st.pass_name, st.lo, st.hi, st.seconds, ready, st))
        return done

    def run(self) -> list[tuple[Any, RequestResult]]:
        """Run iterations until every started request is done."""
        out: list[tuple[Any, RequestResult]] = []
        while self._reqs:
            got = self.step()
            if not got and self.next_time() == math.inf:
                raise AssertionError("batching MEC stalled with sessions left")
            out.extend(got)
        return out

    def _fell_back(self, req: _Req, res: RequestResult | None = None) -> RequestResult:
        """``req`` ended by its local fallback run. With ``res`` (the plan had ended too, later)
        its totals are the plan's; without (the run was cut when the local run ended) they
        are not tracked: only the device's (its local run) is set. Either way the outputs the
        MEC had delivered by the end count where they came first."""
        assert req.plan is not None and req.device_on is not None
        mec = ([req.device_on[i] for i in req.plan.outputs] if res is None
               else list(res.token_times))
        tokens = tuple(min(a, b) for a, b in zip(mec, req.local_tokens, strict=True))
        local_s = req.local_end - req.t_fallback
        if res is not None:
            return dataclasses.replace(res, t_end=req.local_end, token_times=tokens,
                                       device_s=res.device_s + local_s,
                                       fallback_s=req.t_fallback - req.t_start)
        return RequestResult(device=req.device, workload=self.model.model,
                             split=req.decision.action, splits=req.decision.splits,
                             t_start=req.t_start, t_end=req.local_end, device_s=local_s,
                             upload_s=0.0, upload_bytes=0, mec_wait_s=0.0, mec_s=0.0,
                             download_s=0.0, download_bytes=0, token_times=tokens, steps=(),
                             t_arrival=req.t_arrival,
                             fallback_s=req.t_fallback - req.t_start)

    def _result(self, req: _Req, value: tuple[float, list[float], dict[str, float],
                                               list[StepTiming]]) -> RequestResult:
        t_end, tokens, tot, rows = value
        return RequestResult(device=req.device, workload=self.model.model,
                             split=req.decision.action, splits=req.decision.splits,
                             t_start=req.t_start, t_end=t_end, device_s=tot["device_s"],
                             upload_s=tot["upload_s"], upload_bytes=int(tot["upload_bytes"]),
                             mec_wait_s=tot["mec_wait_s"], mec_s=tot["mec_s"],
                             download_s=tot["download_s"],
                             download_bytes=int(tot["download_bytes"]),
                             token_times=tuple(tokens), steps=tuple(rows),
                             t_arrival=req.t_arrival)


class _Replay:
    """What the per-request oracle needs to price a plan on the batching MEC: the requests
    started since the MEC last had no session (in start order) and the server's state then
    (its busy-until time, last iteration). Replaying them on a fresh server with a candidate
    reproduces the run's iterations exactly up to the candidate's start (the simulation is
    deterministic and nothing before that epoch is on the MEC), and then prices the candidate
    with every session it shares iterations with; later requests are unknown, as with slots."""

    def __init__(self, model: LatencyModel, config: ScenarioConfig,
                 server: BatchServer) -> None:
        self.model = model
        self.config = config
        self.server = server
        self.reqs: list[tuple[Decision, Workload, Link, float]] = []
        self.busy_until = -math.inf
        self.last_iteration_s = 0.0

    def reset(self) -> None:
        self.reqs.clear()
        self.busy_until = self.server.busy_until
        self.last_iteration_s = self.server.last_iteration_s

    def add(self, decision: Decision, workload: Workload, link: Link, t: float) -> None:
        self.reqs.append((decision, workload, link, t))

    def end(self, decision: Decision, workload: Workload, link: Link, t: float) -> float:
        """When ``decision`` started at ``t`` ends, given the requests of this epoch."""
        server = BatchServer.for_model(self.model, self.config.mec_config,
                                       self.config.mec_queue_limit)
        server.busy_until = self.busy_until
        server.last_iteration_s = self.last_iteration_s
        sim = BatchSim(self.model, server, fallback=self.config.fallback)
        for k, (d, wl, lk, t0) in enumerate(self.reqs):
            while sim.next_time() < t0:
                sim.step()
            sim.start(k, d, wl, lk, t0)
        while sim.next_time() < t:
            sim.step()
        now = sim.start(-1, decision, workload, link, t)
        if now is not None:
            return now.t_end
        while True:
            for key, res in sim.step():
                if key == -1:
                    return res.t_end
            if sim.next_time() == math.inf:
                raise AssertionError("batching MEC stalled before the candidate ended")


def run_policy_batched(model: LatencyModel, actions: SplitActions, policy: Any, trace: Trace,
                       config: ScenarioConfig, seed: int, *, detail: bool = False,
                       requests_per_device: int | None = None) -> list[RequestResult]:
    """:func:`agent.scenario.run_policy` on a batching MEC: the same arrivals, workloads, links
    and observations (the MEC's :class:`~agent.mec_server.MecStatus` in place of the slots'),
    with every request's MEC computations priced by the shared server, event by event. A
    device's next request starts when its previous one has ended, so requests are decided in
    start order as there. A per-request oracle (a policy with ``decide_with``,
    :class:`agent.oracle.Oracle`) prices every feasible plan by replaying the sessions on the
    MEC with it (:class:`_Replay`). Returns the requests in start order."""
    from agent.observation import harmonic_mean
    from agent.policy import Observation
    from agent.scenario import Fleet, _mean_gap, make_links

    oracle = hasattr(policy, "decide_future")
    if oracle and not hasattr(policy, "decide_with"):
        raise AgentError(f"policy {getattr(policy, 'name', policy)!r} looks ahead with the "
                         f"slot model only; run it with --mec-model slots")
    rng = np.random.default_rng(seed)
    phase = float(rng.random())
    links = make_links(trace, config, phase)
    variants = config.variants(model)
    fleet = Fleet(config, len(variants), _mean_gap(model, config), rng)
    server = BatchServer.for_model(model, config.mec_config, config.mec_queue_limit)
    sim = BatchSim(model, server, detail, config.fallback)
    replay = _Replay(model, config, server)
    horizon, window = config.horizon_s, config.probe_window_s
    out: list[RequestResult] = []
    count = [0] * fleet.n

    def done(i: int, res: RequestResult) -> None:
        out.append(res)
        fleet.done(i, res.t_end)
        count[i] += 1
        if requests_per_device is not None and count[i] >= requests_per_device:
            fleet.arrival[i] = math.inf

    while True:
        i, t = fleet.next_device(horizon)
        tn = sim.next_time()
        if i < 0 and tn == math.inf:
            break
        if i < 0 or tn < t:
            for key, res in sim.step():
                done(key, res)
            continue
        link = links[i]
        hist = fleet.history[i]
        hist.append(link.recent_up_bps(t, window))
        wl = variants[fleet.variant[i]]
        st = server.status(t)
        obs = Observation(workload=wl, throughput_bps=harmonic_mean(hist),
                          recent_throughputs_bps=tuple(hist), rtt_s=link.rtt_s,
                          mec_queue_len=st.queue_len, mec_busy_slots=st.active,
                          mec_slots=st.max_batch, mec_expected_wait_s=st.expected_wait_s,
                          mec_memory_headroom_bytes=st.memory_headroom_bytes,
                          mec_iteration_s=st.iteration_s, time_s=t, mec_accepts=st.accepts)
        if sim.active == 0:  # nothing on the MEC: earlier requests no longer matter to it
            replay.reset()
        if oracle:
            decision = policy.decide_with(
                lambda d, link=link, wl=wl, t=t: replay.end(d, wl, link, t), st.accepts, wl, t)
        else:
            decision = policy.decide(obs)
        if not st.accepts and decision.action != actions.local_action:
            decision = actions.decision(actions.local_action, wl)
        fleet.free[i] = math.inf  # in flight: the device starts nothing else until it ends
        now = sim.start(i, decision, wl, link, t, device=f"device{i}",
                        t_arrival=fleet.arrival[i])
        if now is None:
            replay.add(decision, wl, link, t)
        if now is not None:
            done(i, now)
    return sorted(out, key=lambda r: r.t_start)
