"""What-if: :mod:`benchmarks.agent_families` with two changes to the simulated system that the
per-cell analysis (``agent_families.py --explain``) points at. Neither is in the simulator;
this script patches them in for the measurement only.

``--backfill``
    The slot MEC grants a session the earliest idle gap of a slot that fits it, instead of
    the slot's end after every session decided before it. The simulator grants slots in
    decision order (:mod:`agent.latency`): a request whose upload stalls in an outage reserves
    the slot from when its upload will have arrived, and every later request waits behind
    that reservation although the MEC is idle meanwhile; the emulator's MEC
    (:mod:`emulator.mec`) queues a session only when its first computation is ready, so it
    does not. A session takes the earliest gap it fits (priced at that start; up to 8 tries,
    then after every reservation); the script counts sessions that still overlap (none
    expected).
``--fallback-s T``
    The device falls back to running the request locally when an offloading plan's final
    output has not arrived ``T`` seconds after the start: the request ends at
    ``min(end of the plan, start + T + local latency)`` and, when the local run wins, its MEC
    session is cut at that time (not held at all when it had not started). Every policy,
    the oracle included, runs with it.

Run from the repository root: ``PYTHONPATH=$PWD python benchmarks/agent_whatif.py --backfill
--fallback-s 0.5 [agent_families options]``; prints agent_families' table and exits with its
code. With ``--instances`` it runs the small instances of ``benchmarks/agent_optimum.py``
instead and prints each policy's mean response time as a ratio to the per-request oracle's
(the exact optimum's state dominance does not know the patched MEC, so it is not run).
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import agent.latency as lat  # noqa: E402
import agent.oracle as oracle  # noqa: E402
import agent.scenario as scenario  # noqa: E402

COUNTS = [0, 0]
"""Sessions that did not fit their gap, and sessions committed (copies included)."""


class BackfillMec(lat.MecState):
    """Slots granted to the earliest idle gap that fits (see the module docstring)."""

    __slots__ = ("intervals", "length")

    def __init__(self, slots: int = 1, queue_limit: int | None = None) -> None:
        super().__init__(slots, queue_limit)
        self.intervals: list[list[tuple[float, float]]] = [[] for _ in range(slots)]
        self.length = 0.0

    def _fit(self, slot: int, ready: float, length: float) -> float:
        t = ready
        for a, b in self.intervals[slot]:
            if b <= t:
                continue
            if a >= t + length:
                return t
            t = max(t, b)
        return t

    def fits(self, slot: int, start: float, end: float) -> bool:
        return not any(a < end - 1e-12 and start < b - 1e-12 for a, b in self.intervals[slot])

    def acquire(self, arrival: float) -> tuple[int, float]:
        starts = [self._fit(s, arrival, self.length) for s in range(self.slots)]
        slot = min(range(self.slots), key=starts.__getitem__)
        return slot, starts[slot]

    def commit(self, slot: int, start: float, end: float) -> None:
        COUNTS[1] += 1
        if not self.fits(slot, start, end):
            COUNTS[0] += 1
        bisect.insort(self.intervals[slot], (start, end))
        self._pending.append(start)
        self.free[slot] = max(self.free[slot], end)

    def expected_wait(self, now: float) -> float:
        return min(self._fit(s, now, 0.0) for s in range(self.slots)) - now

    def busy_slots(self, now: float) -> int:
        return sum(any(a <= now < b for a, b in iv) for iv in self.intervals)

    def status(self, now: float) -> tuple[int, int, float, bool]:
        q = self.queue_len(now)
        return (q, self.busy_slots(now), self.expected_wait(now),
                self.queue_limit is None or q < self.queue_limit)

    def copy(self) -> BackfillMec:
        m = BackfillMec(self.slots, self.queue_limit)
        m.intervals = [list(iv) for iv in self.intervals]
        m._pending = list(self._pending)
        m.free = list(self.free)
        m.length = self.length
        return m


_ORIGINAL = lat.simulate_request
_FALLBACK: list[float | None] = [None]


def simulate_request(model: Any, link: Any, decision: Any, workload: Any, t_start: float,
                     mec: Any = None, **kw: Any) -> Any:
    """:func:`agent.latency.simulate_request` with the patched MEC and fallback."""
    plan = model.plan(decision, workload)
    if isinstance(mec, BackfillMec):  # find a gap the session really fits
        *_, slot, s0, s1 = lat.run_plan(plan, link, t_start, None, detail=False)
        length = (s1 - s0) if slot >= 0 else 0.0
        for _ in range(8):
            mec.length = length
            *_, slot, s0, s1 = lat.run_plan(plan, link, t_start, mec.copy(), detail=False)
            if slot < 0 or mec.fits(slot, s0, s1):
                break
            length = max(s1 - s0, 2 * length)
        else:
            mec.length = float("inf")  # after every reservation
    fb = _FALLBACK[0]
    if fb is None or mec is None or not plan.offloaded:
        return _ORIGINAL(model, link, decision, workload, t_start, mec, **kw)
    res = _ORIGINAL(model, link, decision, workload, t_start, mec.copy(), **kw)
    final = min(res.t_end, t_start + fb + model.local_latency(workload))
    *_, slot, s0, s1 = lat.run_plan(plan, link, t_start, mec.copy(), detail=False)
    if slot >= 0 and s0 < final:
        mec.commit(slot, s0, min(s1, final))
    return dataclasses.replace(res, t_end=final) if final < res.t_end else res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backfill", action="store_true", help="slot MEC grants idle gaps")
    p.add_argument("--fallback-s", type=float, help="device falls back to local after T s")
    p.add_argument("--instances", action="store_true",
                   help="the small instances of agent_optimum.py, against the oracle")
    a, rest = p.parse_known_args()
    if a.fallback_s is not None and not a.fallback_s >= 0:
        print(f"agent_whatif: --fallback-s must be >= 0 s, got {a.fallback_s}")
        return 2
    _FALLBACK[0] = a.fallback_s
    for mod in (lat, scenario, oracle):
        mod.simulate_request = simulate_request  # type: ignore[attr-defined]
    if a.backfill:
        scenario.MecState = BackfillMec  # type: ignore[misc]
    if a.instances:
        code = instances()
    else:
        import agent_families

        sys.argv = ["agent_families.py", *rest]
        code = agent_families.main()
    print(f"what-if: backfill {'on' if a.backfill else 'off'}, fallback "
          f"{'off' if a.fallback_s is None else f'{a.fallback_s:g} s'}"
          + (f"; {COUNTS[0]} of {COUNTS[1]} sessions committed did not fit their gap"
             if a.backfill else ""))
    return code


def instances() -> int:
    """Response-time ratios to the per-request oracle on agent_optimum's instances."""
    import warnings

    import agent_optimum

    from agent.actions import SplitActions
    from agent.policies import make_policy
    from profiler.schema import load_profile
    from traces import TraceWarning, load_trace

    for model_name, fname, scale, n_dev, reqs, load in agent_optimum.INSTANCES:
        dev = load_profile(ROOT / "profiles" / f"{model_name}.device.json")
        mec = load_profile(ROOT / "profiles" / f"{model_name}.mec-cpu.json")
        model = lat.LatencyModel(dev, mec, mec_speedup=agent_optimum.MEC_SPEEDUP)
        acts = SplitActions(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TraceWarning)
            trace = load_trace(agent_optimum.SHARED / fname)
        trace = trace.scaled(scale) if scale != 1.0 else trace
        cfg = scenario.ScenarioConfig(n_devices=n_dev, mec_slots=1,
                                      one_way_delay_s=agent_optimum.DELAY_S, load=load,
                                      horizon_s=1e12, mec_model="slots")
        means = {}
        for spec in ("default", "greedy", "offload", "oracle"):
            pol: Any = (oracle.Oracle(model, acts) if spec == "oracle" else
                        make_policy(spec, dev, mec, mec_speedup=agent_optimum.MEC_SPEEDUP))
            res = scenario.run_policy(model, acts, pol, trace, cfg, 3, requests_per_device=reqs)
            means[spec] = sum(r.response_s for r in res) / len(res)
        print(f"{model_name} {fname} x {scale:g}, {n_dev} x {reqs}, load {load:g}: oracle "
              f"{means['oracle']:.4f} s; " + ", ".join(
                  f"{k} {v / means['oracle']:.3f}x" for k, v in means.items() if k != "oracle"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
