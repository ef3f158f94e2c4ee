"""The action space: one plan template per action, and what each costs before it runs.

Action ``a`` is the ``a``-th plan template of the model's family that fits its profiles
(:mod:`agent.templates`: e.g. GPT-2's ``offload``, ``split:k``, ``kv-down``, ``kv-up``,
``local``; SD's ``offload``, VAE and text-encoder placements, ``hybrid:F`` step splits, UNet
``split:k``, ``local``). Action ``0`` is full offload, the last action fully local. A template
may depend on the request's workload (``hybrid:F`` puts ``round(F x S)`` of its ``S`` steps on
the MEC), so :meth:`SplitActions.decision` takes the workload.

:meth:`SplitActions.costs` gives per-action constants for one workload (compute, bytes, round
trips), from which :meth:`ActionCosts.predict` is the latency the shared model predicts under
a constant throughput estimate: what the greedy baseline minimises and what the RL observation
carries as features.

Masks (:meth:`SplitActions.mask`): an action is infeasible when the MEC rejects new sessions
(its queue is at its limit; then only the local action is allowed), or when the blocks it puts
on the device need more weight memory than ``device_memory_bytes`` (optional; the largest
weights of any one pass on the device).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.errors import AgentError
from agent.latency import LatencyModel, MecState, run_plan
from agent.link import Link
from agent.plan import Plan
from agent.policy import Decision, Workload
from agent.templates import Template, action_set_id, family, fitting_templates

__all__ = ["OUTAGE_BELOW_BPS", "OUTAGE_BPS", "OUTAGE_WAIT_S", "REF_BPS", "ActionCosts", "SplitActions",
           "outage_inputs"]

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ActionCosts:
    """Per-action constants of one workload (arrays of length ``n_actions``).

    The plan of every action is priced exactly (:func:`agent.latency.run_plan`) on constant
    links at a reference point and linearised there: ``latency ~ compute_s + xfer_bytes x 8 /
    throughput + round_trips x rtt + offloads x wait``. The coefficients are those of the plan's
    critical path at the reference (:data:`REF_BPS`, no delay, no wait), so the prediction is
    exact on a constant link whenever the critical path is the same as there (tested)."""

    compute_s: F64
    """Computation on the critical path (device and MEC)."""
    xfer_bytes: F64
    """Bytes whose transfer is on the critical path."""
    round_trips: F64
    """Round trips of propagation delay on the critical path (one-way delays / 2)."""
    offloads: npt.NDArray[np.bool_]
    """Whether the action computes anything on the MEC."""
    wait_coef: F64
    """How much of a MEC wait at the session's start reaches the end of the request (1 when
    the MEC work is on the critical path, less when the device works meanwhile)."""
    local_s: float
    """Latency of the fully local request."""
    repeats: tuple[tuple[str, int], ...]
    basis: F64
    """``(n_actions, 4)`` matrix, so that ``basis @ [1, 8/thr, rtt, wait]`` is the prediction
    divided by ``local_s`` (the observation's fast path)."""

    def predict(self, throughput_bps: float, rtt_s: float, wait_s: float) -> F64:
        """Predicted latency of every action with a constant throughput (up and down); an
        estimate of at most :data:`OUTAGE_BELOW_BPS` (an outage in the recent samples) is read
        as :func:`outage_inputs` says."""
        thr, wait = outage_inputs(throughput_bps, wait_s)
        out: F64 = (self.compute_s + self.xfer_bytes * (8.0 / thr) + self.round_trips * rtt_s
                    + self.wait_coef * wait)
        return out


OUTAGE_BELOW_BPS = 1e4
"""An estimate at or below this (10 kbit/s, slower than GPRS) is read as an outage."""
OUTAGE_WAIT_S = 10.0
"""Expected rest of an outage (s) when every recent throughput sample was zero."""
OUTAGE_BPS = 1e6
"""Throughput (bit/s) assumed after such an outage."""


def outage_inputs(throughput_bps: float, wait_s: float) -> tuple[float, float]:
    """The throughput and MEC wait a prediction uses: the estimate and the wait as given, or,
    when the estimate is at most :data:`OUTAGE_BELOW_BPS` (the link was down, or nearly, in
    the recent samples), the outage is taken to end after :data:`OUTAGE_WAIT_S` (added to the
    wait of every offloading action) and the link to run at :data:`OUTAGE_BPS` after it.

    Before, a transfer was priced at the estimate however low (clamped to 1 bit/s): every
    offloading action was predicted to take hours, so one 1-s outage snapshot sent SD 1.5
    local (326 s) where full offload took about 20 s, on the 5G and LTE traces of
    ``../shared/traces``. The constants were chosen on those benchmark traces (greedy, scales
    0.1-10; policies/README.md): a rest of 5 - 30 s gives the same decisions (GPT-2's local run,
    1.7 s, is still chosen in an outage, SD's is not); a threshold of 3 - 10 kbit/s helps, 30
    kbit/s hurts on Pensieve x 0.1 where such rates persist.
    """
    if throughput_bps > OUTAGE_BELOW_BPS:
        return throughput_bps, wait_s
    return OUTAGE_BPS, wait_s + OUTAGE_WAIT_S


REF_BPS = 10e6
"""Reference throughput (bit/s) of the linearisation in :class:`ActionCosts`."""
_PROBE_DELAY_S = 0.05
_PROBE_WAIT_S = 1.0


def _const_link(bps: float, delay_s: float) -> Link:
    from traces import synth

    return Link(synth.constant(3600.0, bps / 1e6), None, delay_s, 0.0)


class _Waiting(MecState):
    """A MEC that starts every session ``wait_s`` after its first computation is ready."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(1)
        self.wait_s = wait_s

    def acquire(self, arrival: float) -> tuple[int, float]:
        return 0, arrival + self.wait_s


def _price(plan: Plan, link: Link, wait_s: float = 0.0) -> float:
    mec = _Waiting(wait_s) if wait_s > 0 else None
    return run_plan(plan, link, 0.0, mec, detail=False)[0]


class SplitActions:
    """Maps action indices to :class:`~agent.policy.Decision` s (plan templates) for one model.

    :param names: keep only these templates (by name, in this order; ``local`` and
        ``offload`` are added when missing); default: every template that fits.
    :raises AgentError: a name is not a template of the model's family, or its plan does not
        fit the profiles.
    """

    def __init__(self, model: LatencyModel, *, device_memory_bytes: int | None = None,
                 names: list[str] | None = None) -> None:
        self.model = model
        self.family = family(model)
        fit, left = fitting_templates(model)
        if names is not None:
            by = {t.name: t for t in fit}
            chosen: list[Template] = []
            for nm in ["offload", *names, "local"]:
                if nm in by and by[nm] not in chosen:
                    chosen.append(by[nm])
                elif nm in left:
                    raise AgentError(f"plan template {nm!r} does not fit the {model.model!r} "
                                     f"profiles: {left[nm]}")
                elif nm not in by:
                    raise AgentError(f"{nm!r} is not a plan template of the {model.model!r} "
                                     f"({self.family}) action set; use one of "
                                     f"{', '.join(by)} (agent/templates.py)")
            loc = chosen.pop(chosen.index(by["local"]))
            fit = [*chosen, loc]
        self.templates: tuple[Template, ...] = tuple(fit)
        self.names: tuple[str, ...] = tuple(t.name for t in fit)
        self.left_out = left
        self.action_set = (action_set_id(model) if names is None
                           else f"{action_set_id(model)}|only:{','.join(self.names)}")
        default = Workload(model.model)
        reps = model.repeats(default)
        main = max(model.passes, key=lambda p: p.local_s * max(reps[p.name], 1))
        self.main_pass = main.name
        self.n_blocks = main.n_blocks
        self.n_actions = len(fit)
        self.local_action = self.n_actions - 1
        self.offload_action = 0
        self._dcache: dict[tuple[int, tuple[tuple[str, int], ...]], Decision] = {}
        self._default_reps = reps
        self._cache: dict[tuple[tuple[str, int], ...], ActionCosts] = {}
        mask = np.ones(self.n_actions, dtype=bool)
        if device_memory_bytes is not None:
            for a in range(self.n_actions):
                d = self.decision(a)
                need = 0
                for p, dp in zip(model.passes, model.device_profile.passes, strict=True):
                    s = d.splits[p.name]
                    k = max(s) if isinstance(s, tuple) else s
                    need = max(need, sum(b.weight_bytes for b in dp.blocks[:k]))
                mask[a] = need <= device_memory_bytes
            if not mask.any():
                mask[0] = True
        self._static_mask = mask
        self._local_only = np.zeros(self.n_actions, dtype=bool)
        self._local_only[self.local_action] = True
        if not self._static_mask[self.local_action]:
            self._local_only = self._static_mask.copy()

    def index(self, name: str) -> int:
        """The action index of template ``name``.

        :raises AgentError: no such template in this action set (the message lists them)."""
        if name in self.names:
            return self.names.index(name)
        why = self.left_out.get(name)
        if why is not None:
            raise AgentError(f"plan template {name!r} does not fit the {self.model.model!r} "
                             f"profiles: {why}")
        raise AgentError(f"{name!r} is not a plan template of the {self.model.model!r} "
                         f"({self.family}) action set; use one of {', '.join(self.names)} "
                         f"(agent/templates.py)")

    def decision(self, action: int, workload: Workload | None = None) -> Decision:
        """The decision for action index ``action`` on ``workload`` (default: the profile's
        repeats)."""
        a = int(action)
        reps = self._default_reps if workload is None else self.model.repeats(workload)
        t = self.templates[a]
        key = (a, tuple(sorted(reps.items())) if t.per_request else ())
        hit = self._dcache.get(key)
        if hit is None:
            hit = self._dcache[key] = t.decision(reps, a)
        return hit

    def mask(self, mec_accepts: bool = True) -> npt.NDArray[np.bool_]:
        """Feasible actions (a fresh boolean array)."""
        return (self._static_mask if mec_accepts else self._local_only).copy()

    def costs(self, workload: Workload | Mapping[str, int]) -> ActionCosts:
        """Per-action constants for a workload (or a mapping of pass repeats); cached."""
        reps = (self.model.repeats(workload) if isinstance(workload, Workload)
                else self.model.repeats(Workload(self.model.model, dict(workload))))
        key = tuple(sorted(reps.items()))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        n = self.n_actions
        comp, xfer, rts = np.zeros(n), np.zeros(n), np.zeros(n)
        offl = np.zeros(n, dtype=bool)
        wcoef = np.zeros(n)
        wl = Workload(self.model.model, dict(reps))
        base, fast = _const_link(REF_BPS, 0.0), _const_link(2 * REF_BPS, 0.0)
        slow = _const_link(REF_BPS, _PROBE_DELAY_S)
        for a in range(n):
            plan = self.model.plan(self.decision(a, wl), wl)
            f0 = _price(plan, base)
            per_bit = (f0 - _price(plan, fast)) / (8.0 / REF_BPS - 8.0 / (2 * REF_BPS))
            xfer[a] = max(per_bit, 0.0)
            comp[a] = f0 - xfer[a] * 8.0 / REF_BPS
            rts[a] = max((_price(plan, slow) - f0) / (2 * _PROBE_DELAY_S), 0.0)
            offl[a] = plan.offloaded
            if offl[a]:
                wcoef[a] = max((_price(plan, base, _PROBE_WAIT_S) - f0) / _PROBE_WAIT_S, 0.0)
        local_s = float(comp[self.local_action])
        basis = np.stack([comp, xfer, rts, wcoef], axis=1)
        basis /= max(local_s, 1e-9)
        c = ActionCosts(compute_s=comp, xfer_bytes=xfer, round_trips=rts, offloads=offl,
                        wait_coef=wcoef, local_s=local_s, repeats=key, basis=basis)
        self._cache[key] = c
        return c
