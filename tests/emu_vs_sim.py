"""Emulator against simulator, request by request: the helper the root test and the benchmark share.

:func:`replay` takes the records of an emulation run (``requests.jsonl``) and replays every
request through the public latency API (:func:`agent.latency.simulate_request`): the same start
time, the same decision (the split of every pass repetition), the same workload, on the trace
read from its file (not the shaper's resampled copy), with one :class:`agent.latency.MecState`
shared by all devices in the order the requests started, so the MEC wait is predicted too (the
emulator's own ``predicted_latency_s`` assumes an idle MEC). :func:`compare` turns the pairs
into the relative errors ``(measured - predicted) / predicted``, and their median and p95 of
the absolute value.

The reference is the record's measured ``latency_s`` (``t_end - t_start``, device clock). When
the execution semantics change (a request's passes no longer each round-trip; the MEC keeps
the loop and streams tokens), only :func:`replay`'s call of the latency API has to follow.

Not modelled here: a shared cell (each device is given the whole trace; use it with
``--shared-cell`` only with that in mind) and the policy's own observation time before
``t_start``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.latency import LatencyModel, MecState, simulate_request
from agent.link import Link
from agent.policy import Decision, Workload
from profiler.schema import Profile
from traces import Trace

__all__ = ["Pair", "compare", "replay"]


@dataclass(frozen=True)
class Pair:
    """One request: measured by the emulator, predicted by the simulator."""

    device: int
    t_start: float
    offloaded: bool
    measured_s: float
    predicted_s: float
    measured_wait_s: float
    predicted_wait_s: float

    @property
    def rel_error(self) -> float:
        return (self.measured_s - self.predicted_s) / self.predicted_s


def replay(records: Iterable[Mapping[str, Any]], device: Profile, mec: Profile, *,
           up: Trace, down: Trace | None, one_way_delay_s: float, mec_slots: int,
           mec_speedup: float) -> list[Pair]:
    """Predict every recorded request (see the module docstring); pairs in start order."""
    model = LatencyModel(device, mec, mec_speedup=mec_speedup)
    link = Link(up=up, down=down, one_way_delay_s=one_way_delay_s)
    state = MecState(slots=mec_slots)
    out = []
    for rec in sorted(records, key=lambda r: float(r["t_start"])):
        splits = {k: tuple(v) if isinstance(v, list) else int(v)
                  for k, v in rec["splits"].items()}
        res = simulate_request(model, link, Decision(splits, int(rec.get("split", -1))),
                               Workload(rec["workload"], dict(rec["repeats"])),
                               float(rec["t_start"]), state, device=str(rec["device"]),
                               detail=False)
        ph = rec["phases"]
        out.append(Pair(int(rec["device"]), float(rec["t_start"]),
                        ph["upload_bytes"] > 0 or ph["mec_s"] > 0, float(rec["latency_s"]),
                        res.latency_s, float(ph["mec_wait_s"]), res.mec_wait_s))
    return out


def compare(pairs: Sequence[Pair]) -> dict[str, float]:
    """``n``, median and p95 of ``|relative error|``, median signed error, and the MEC wait
    measured and predicted in total (seconds)."""
    if not pairs:
        return {"n": 0, "median_abs": float("nan"), "p95_abs": float("nan"),
                "median": float("nan"), "wait_measured_s": 0.0, "wait_predicted_s": 0.0}
    e = np.array([p.rel_error for p in pairs])
    return {"n": len(pairs), "median_abs": float(np.median(np.abs(e))),
            "p95_abs": float(np.percentile(np.abs(e), 95)), "median": float(np.median(e)),
            "wait_measured_s": float(sum(p.measured_wait_s for p in pairs)),
            "wait_predicted_s": float(sum(p.predicted_wait_s for p in pairs))}
