"""The oracle: knows the future trace and the MEC's state, and picks for every request the
action with the earliest completion by enumerating all feasible actions with the exact latency
model (:func:`agent.latency.simulate_request` on a copy of the MEC state).

With one device (or no MEC contention) this is a lower bound request by request on every
policy that sees the same arrivals: the model's completion time is non-decreasing in the start
time, so by induction no policy's request can start or finish earlier. With several devices
sharing the MEC it is myopic (it does not trade its own latency for others' waits), so it is a
reference rather than a strict bound there: a *per-request* oracle. The exact optimum of a
small instance (the best joint assignment) is :func:`agent.optimum.exact_optimum`; it searches
the same action set (plan templates, :mod:`agent.templates`).

On a batching MEC (``--mec-model batch``) a request's MEC time depends on every session it
shares iterations with, so each feasible plan is priced by :meth:`Oracle.decide_with` with a
caller's pricing function: :func:`agent.batchsim.run_policy_batched` replays the sessions still
on the MEC together with the candidate, event by event (:class:`agent.batchsim.BatchSim`), and
takes the candidate's end; requests that arrive later are not known to it, as with slots.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.actions import SplitActions
from agent.latency import LatencyModel, MecState, simulate_request
from agent.link import Link
from agent.policy import Decision, Workload

__all__ = ["Oracle"]


class Oracle:
    """Per-request optimal actions by enumeration, with knowledge of the future."""

    name = "oracle"

    def __init__(self, model: LatencyModel, actions: SplitActions) -> None:
        self.model = model
        self.actions = actions

    def decide_future(self, link: Link, mec: MecState, workload: Workload,
                      t_start: float, *, fallback: float | None = None) -> Decision:
        """The slot MEC: each plan priced on a copy of the MEC's reservations (with the
        device's local ``fallback``, :func:`agent.latency.fallback_start`)."""
        def end(d: Decision) -> float:
            return simulate_request(self.model, link, d, workload, t_start, mec.copy(),
                                    detail=False, fallback=fallback).t_end

        return self.decide_with(end, mec.accepts(t_start), workload, t_start)

    def decide_with(self, end: Callable[[Decision], float], accepts: bool,
                    workload: Workload, t_start: float) -> Decision:
        """The feasible action whose plan ends first, ``end(decision)`` pricing each (local is
        priced from the profile; ties keep the lower action index, local first)."""
        mask = self.actions.mask(accepts)
        best = self.actions.local_action if mask[self.actions.local_action] else -1
        best_end = (t_start + self.model.local_latency(workload)) if best >= 0 else float("inf")
        for a in range(self.actions.n_actions):
            if not mask[a] or a == self.actions.local_action:
                continue
            t_end = end(self.actions.decision(a, workload))
            if t_end < best_end:
                best, best_end = a, t_end
        return self.actions.decision(best, workload)
