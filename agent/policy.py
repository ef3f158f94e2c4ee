"""The policy interface: where the agent (simulator, baselines, trained RL) and the emulator meet.

Before every request a device builds an :class:`Observation` from what it can observe live
(never the future trace) and asks its :class:`Policy` for a :class:`Decision`. The simulator
builds the same observation from its own bookkeeping, so one policy object runs in both.

A decision gives, for every pass of the workload (``Profile.passes``), the split ``k``: blocks
``[0, k)`` on the device, ``[k, N)`` on the MEC (``k == N``: local, ``k == 0``: full offload).
``splits[name]`` is either one split applied to every repetition of the pass, or one split per
repetition (step-level placement, e.g. some diffusion steps on the MEC and the rest local).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["Decision", "Observation", "Policy", "Workload"]


@dataclass(frozen=True)
class Workload:
    """What a request asks for. ``repeats`` overrides a pass's profiled ``repeat`` (e.g. the
    number of decode tokens T or diffusion steps S of this request)."""

    model: str
    repeats: Mapping[str, int] = field(default_factory=dict)
    deadline_s: float | None = None


@dataclass(frozen=True)
class Observation:
    """What a device knows when it decides. Units: seconds, bit/s, counts."""

    workload: Workload
    throughput_bps: float
    """Estimate of uplink throughput from the device's own recent transfers (0 if none yet)."""
    recent_throughputs_bps: tuple[float, ...] = ()
    """Throughputs of the most recent transfers, newest last."""
    rtt_s: float = 0.0
    """Recent round-trip time to the MEC (propagation, no payload)."""
    mec_queue_len: int = 0
    """Jobs waiting at the MEC (not counting those running), as last reported by the MEC."""
    mec_busy_slots: int = 0
    mec_slots: int = 1
    mec_expected_wait_s: float = 0.0
    """The MEC's own estimate of how long a new job would wait before it starts."""
    time_s: float = 0.0
    """Time since the start of the run (for logging; policies should not need it)."""
    mec_memory_headroom_bytes: float = -1.0
    """Batching MEC: memory left after weights and live state (-1: no budget, or slots)."""
    mec_iteration_s: float = 0.0
    """Batching MEC: predicted time of its next iteration with one more session (0: slots)."""
    mec_accepts: bool = True
    """False while the MEC rejects new sessions (its queue is at its limit): offloading is
    then infeasible and policies must run the request locally."""


@dataclass(frozen=True)
class Decision:
    """Where each pass of a request runs."""

    splits: Mapping[str, int | tuple[int, ...]]
    action: int = -1
    """The policy's own action index, for records (-1 if not an indexed policy)."""

    def split_for(self, pass_name: str, repetition: int = 0) -> int:
        s = self.splits[pass_name]
        if isinstance(s, tuple):
            return s[repetition] if len(s) > 1 else s[0]
        return s


@runtime_checkable
class Policy(Protocol):
    """Anything that picks a split for a request from a live observation."""

    name: str

    def decide(self, obs: Observation) -> Decision:
        """Return the decision for the request described by ``obs.workload``."""
        ...
