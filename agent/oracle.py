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
"""

from __future__ import annotations

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
                      t_start: float) -> Decision:
        mask = self.actions.mask(mec.accepts(t_start))
        best = self.actions.local_action if mask[self.actions.local_action] else -1
        best_end = (t_start + self.model.local_latency(workload)) if best >= 0 else float("inf")
        for a in range(self.actions.n_actions):
            if not mask[a] or a == self.actions.local_action:
                continue
            res = simulate_request(self.model, link, self.actions.decision(a, workload),
                                   workload, t_start, mec.copy(), detail=False)
            if res.t_end < best_end:
                best, best_end = a, res.t_end
        return self.actions.decision(best, workload)
