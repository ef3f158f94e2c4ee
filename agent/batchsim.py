"""Event-driven simulation of many requests sharing one batching MEC (:mod:`agent.mec_server`).

With exclusive slots a request's timeline is fixed once its slot is granted, so
:func:`agent.latency.simulate_request` prices requests one at a time. With batching, an
iteration's length depends on every session in it, so a request's MEC steps are only known when
the concurrent sessions are: :class:`BatchSim` runs every request's plan as a coroutine
(:func:`_timeline`, the pricing rules of :func:`agent.latency.run_plan` step for step: device
and link steps are the request's own; each MEC computation is handed to the shared
:class:`agent.mec_server.BatchServer`) and advances the server one iteration at a time.

Used by :func:`run_policy_batched` (the exact runner behind :func:`agent.scenario.run_policy`
when the scenario's MEC model is ``batch``) and by the parity replay
(:func:`emulator.parity.replay_with`). The RL env does not run this: at decision time it
prices a request with the slot-free timeline and the MEC's predicted iteration time
(:meth:`agent.mec_server.BatchServer.status`), a cheaper approximation (see :mod:`agent.env`).
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.errors import AgentError
from agent.latency import LatencyModel, RequestResult, StepTiming
from agent.link import Link
from agent.mec_server import BatchServer, Work, session_state_bytes
from agent.plan import COMPUTE, DEVICE, Plan
from agent.policy import Decision, Workload

if TYPE_CHECKING:
    from agent.actions import SplitActions
    from agent.scenario import ScenarioConfig
    from traces import Trace

__all__ = ["BatchSim", "run_policy_batched"]

_SIDE = ("device", "mec")
_DIR = ("up", "down")

_Gen = Generator[tuple[float, Any], tuple[float, float], tuple[float, list[float],
                                                              dict[str, float], list[StepTiming]]]


def _timeline(plan: Plan, link: Link, t_start: float, detail: bool) -> _Gen:
    """:func:`agent.latency.run_plan`'s rules as a coroutine: yields ``(ready, step)`` for each
    MEC computation and is sent back its ``(start, end)``; returns ``(t_end, token_times,
    totals, steps)``."""
    inf = float("inf")
    n = len(plan.item_names)
    on = ([inf] * n, [inf] * n)
    for i in plan.initial:
        on[DEVICE][i] = t_start
    d = link.one_way_delay_s
    finish = (link.up_finish, link.down_finish)
    free = [t_start, -inf]
    link_free = [-inf, -inf]
    first = True
    dev_s = mec_s = wait = up_s = down_s = 0.0
    up_b = down_b = 0
    rows: list[StepTiming] = []
    for st in plan.steps:
        side = st.side
        have = on[side]
        if st.kind == COMPUTE:
            ready = t_start
            for it in st.needs:
                x = have[it]
                if x > ready:
                    ready = x
            if side == DEVICE:
                start = ready if ready > free[0] else free[0]
                end = start + st.seconds
                dev_s += st.seconds
            else:
                r = ready if ready > free[1] else free[1]
                start, end = yield (r, st)
                if first:
                    wait = start - ready
                    first = False
                mec_s += end - start
            free[side] = end
            for it in st.makes:
                have[it] = end
        else:
            ready = t_start
            for it in st.items:
                x = have[it]
                if x > ready:
                    ready = x
            lf = link_free[side]
            start = ready if ready > lf else lf
            done = finish[side](start, st.wire_bytes)
            link_free[side] = done
            end = done + d
            there = on[1 - side]
            for it in st.items:
                if end < there[it]:
                    there[it] = end
            if side == DEVICE:
                up_s += end - start
                up_b += st.nbytes
            else:
                down_s += end - start
                down_b += st.nbytes
        if detail:
            rows.append(StepTiming("compute" if st.kind == COMPUTE else "send",
                                   _SIDE[side] if st.kind == COMPUTE else _DIR[side],
                                   st.pass_name, st.rep, st.lo, st.hi, st.what, st.nbytes,
                                   ready, start, end))
    dev_on = on[DEVICE]
    totals = {"device_s": dev_s, "mec_s": mec_s, "mec_wait_s": wait, "upload_s": up_s,
              "download_s": down_s, "upload_bytes": float(up_b), "download_bytes": float(down_b)}
    return dev_on[plan.final], [dev_on[i] for i in plan.outputs], totals, rows


@dataclass
class _Req:
    key: Any
    gen: _Gen
    decision: Decision
    t_start: float
    device: str
    t_arrival: float | None
    started: bool = False


@dataclass
class BatchSim:
    """Many requests on one :class:`~agent.mec_server.BatchServer` (see the module docstring).

    :meth:`start` adds a request at its start time (non-decreasing across calls, and never
    before an iteration already run); :meth:`next_time` is when the next iteration starts;
    :meth:`step` runs it and returns the requests that thereby finished."""

    model: LatencyModel
    server: BatchServer
    detail: bool = False
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
        gen = _timeline(plan, link, t_start, self.detail)
        sid = self._next
        self._next += 1
        req = _Req(key, gen, decision, t_start, device, t_arrival)
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

    def next_time(self) -> float:
        """Start of the next iteration (``inf``: no session has work)."""
        return self.server.next_start() if self._reqs else math.inf

    @property
    def active(self) -> int:
        return len(self._reqs)

    def step(self) -> list[tuple[Any, RequestResult]]:
        """Run the next iteration; the requests it finished, as ``(key, result)``."""
        it = self.server.next_iteration()
        if it is None:
            return []
        t0, works, secs = it
        self.server.complete(t0, works, secs)
        done: list[tuple[Any, RequestResult]] = []
        for w in works:
            req = self._reqs[w.sid]
            try:
                ready, st = req.gen.send((t0, t0 + secs))
            except StopIteration as stop:
                self.server.finish(w.sid)
                del self._reqs[w.sid]
                done.append((req.key, self._result(req, stop.value)))
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


def run_policy_batched(model: LatencyModel, actions: SplitActions, policy: Any, trace: Trace,
                       config: ScenarioConfig, seed: int, *, detail: bool = False,
                       requests_per_device: int | None = None) -> list[RequestResult]:
    """:func:`agent.scenario.run_policy` on a batching MEC: the same arrivals, workloads, links
    and observations (the MEC's :class:`~agent.mec_server.MecStatus` in place of the slots'),
    with every request's MEC computations priced by the shared server, event by event. A
    device's next request starts when its previous one has ended, so requests are decided in
    start order as there. Returns the requests in start order."""
    from agent.observation import harmonic_mean
    from agent.policy import Observation
    from agent.scenario import Fleet, _mean_gap, make_links

    if hasattr(policy, "decide_future"):
        raise AgentError("the oracle looks ahead with the slot model; run it with "
                         "--mec-model slots")
    rng = np.random.default_rng(seed)
    phase = float(rng.random())
    links = make_links(trace, config, phase)
    variants = config.variants(model)
    fleet = Fleet(config, len(variants), _mean_gap(model, config), rng)
    server = BatchServer.for_model(model, config.mec_config, config.mec_queue_limit)
    sim = BatchSim(model, server, detail)
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
        decision = policy.decide(obs)
        if not st.accepts and decision.action != actions.local_action:
            decision = actions.decision(actions.local_action, wl)
        fleet.free[i] = math.inf  # in flight: the device starts nothing else until it ends
        now = sim.start(i, decision, wl, link, t, device=f"device{i}",
                        t_arrival=fleet.arrival[i])
        if now is not None:
            done(i, now)
    return sorted(out, key=lambda r: r.t_start)
