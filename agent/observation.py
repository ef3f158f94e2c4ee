"""The observation vector: built from :class:`agent.policy.Observation` by the env and by every
RL policy at run time, with the same function (:func:`encode`), so simulator and emulator agree.

Only what a device has live goes in: the throughputs of its own recent transfers (never the
future trace), its RTT, what the MEC reports about its queue, and the request's workload.
Every feature is scaled by a fixed, documented constant and clipped to ``[0, OBS_HIGH]``::

    [0, H)          throughput history, newest last, each  log10(1 + bps / 1e5) / 4
                    (1 Mbit/s -> 0.26, 10 Mbit/s -> 0.50, 1 Gbit/s -> 1.0); missing -> 0
    H               the throughput estimate (:func:`throughput_estimate`: the arithmetic mean
                    of the history samples, zeros included; Observation.throughput_bps only
                    when there is no history), same scale
    H+1             RTT / RTT_SCALE_S (0.1 s)
    H+2             MEC queue length / QUEUE_SCALE (8)
    H+3             MEC busy slots / MEC slots
    H+4             MEC expected wait / time_scale_s
    H+5 .. +P       repeats of each pass / (4 x its profiled repeat)
    then A values   the latency the shared model predicts for each action from the throughput
                    estimate, RTT and expected wait (agent.actions.ActionCosts.predict),
                    divided by the request's fully-local latency

With ``mec_features=True`` (a policy for the batching MEC, :mod:`agent.mec_server`; its
sidecar records ``obs_scales["mec_features"]``) two features follow the actions::

    +1              MEC memory headroom / MEMORY_SCALE_BYTES (1 GB); no budget -> OBS_HIGH
    +2              MEC predicted iteration time / time_scale_s

With the batching MEC the slot features read: queue length (sessions waiting for admission),
active batch / maximum batch, and the predicted wait of a new session. Without
``mec_features`` (the default, and every shipped policy) the vector is unchanged, so policies
trained on the slot model load as before.

``H = HISTORY`` (4), ``P`` passes, ``A`` actions; ``time_scale_s`` is the fully-local latency of
the model's default workload (stored in every policy sidecar as ``obs_scales``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.actions import (
    OUTAGE_BELOW_BPS,
    OUTAGE_BPS,
    OUTAGE_WAIT_S,
    ActionCosts,
    SplitActions,
)
from agent.policy import Observation, Workload

__all__ = [
    "ESTIMATE",
    "HISTORY",
    "MEMORY_SCALE_BYTES",
    "OBS_HIGH",
    "QUEUE_SCALE",
    "RTT_SCALE_S",
    "ObservationEncoder",
    "harmonic_mean",
    "history_feature",
    "throughput_estimate",
    "throughput_feature",
]

HISTORY = 4
OBS_HIGH = 10.0
RTT_SCALE_S = 0.1
QUEUE_SCALE = 8.0
MEMORY_SCALE_BYTES = 1e9
F32 = npt.NDArray[np.float32]
ESTIMATE = "mean of history; <= 10 kbit/s: 10 s outage, then 1 Mbit/s"
"""The throughput estimator of the predictions (recorded in policy sidecars' ``obs_scales``)."""


def throughput_feature(bps: float) -> float:
    """Scaled throughput: ``log10(1 + bps / 1e5) / 4``."""
    return math.log10(1.0 + max(bps, 0.0) / 1e5) / 4.0


def history_feature(bps: float) -> float:
    """One history sample scaled as :func:`throughput_feature`, written as the observation
    has always computed it (``log10(1 + bps * 1e-5) * 0.25``; 0 when not positive)."""
    return math.log10(1.0 + bps * 1e-5) * 0.25 if bps > 0.0 else 0.0


def throughput_estimate(history: Sequence[float], fallback_bps: float = 0.0) -> float:
    """The throughput the predictions use: the arithmetic mean of the recent samples (zeros,
    i.e. outages, included), ``fallback_bps`` when there are none.

    The mean rather than the harmonic mean: the samples are 1-s snapshots taken at decision
    times (seconds to minutes apart), and a transfer that lasts longer than a snapshot sees the
    link's average rate; the harmonic mean is ruled by one slow snapshot (on the 5G and LTE
    traces of ``../shared/traces`` it made greedy and the trained policies run SD locally,
    326 s, when full offload took about 20 s; see policies/README.md)."""
    n = len(history)
    if n == 0:
        return fallback_bps
    tot = 0.0
    for v in history:
        if v > 0.0:
            tot += v
    return tot / n


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean of the positive values (0 when there are none)."""
    n = 0
    inv = 0.0
    for v in values:
        if v > 0.0:
            n += 1
            inv += 1.0 / v
    return n / inv if n else 0.0


class ObservationEncoder:
    """Encodes observations for one model's action space (see the module docstring)."""

    def __init__(self, actions: SplitActions, *, mec_features: bool = False) -> None:
        self.actions = actions
        self.mec_features = mec_features
        model = actions.model
        self.pass_names = tuple(p.name for p in model.passes)
        self.profile_repeats = tuple(max(p.repeat, 1) for p in model.passes)
        self.time_scale_s = max(model.local_latency(Workload(model.model)), 1e-6)
        self.size = HISTORY + 5 + len(self.pass_names) + actions.n_actions
        self._repeat_scale = tuple(4.0 * r for r in self.profile_repeats)
        self._reps_cache: dict[tuple[tuple[str, int], ...], list[float]] = {}
        self._nf = HISTORY + 5 + len(self.pass_names)
        self._buf = np.zeros(self.size, dtype=np.float64)
        self._pred = self._buf[self._nf:]  # a contiguous view: np.dot writes into it
        self._vec = np.array([1.0, 0.0, 0.0, 0.0])
        self._high = np.full(self.size, OBS_HIGH)
        self._clipped = np.empty(self.size)
        self._zeros = [0.0] * HISTORY
        if mec_features:
            self.size += 2  # appended by encode() after the base vector

    def scales(self) -> dict[str, Any]:
        """The fixed scales, for provenance sidecars."""
        return {"history": HISTORY, "throughput": "log10(1 + bps/1e5)/4", "estimate": ESTIMATE,
                "rtt_s": RTT_SCALE_S,
                "queue": QUEUE_SCALE, "time_scale_s": self.time_scale_s,
                "repeats": dict(zip(self.pass_names, self.profile_repeats, strict=True)),
                "high": OBS_HIGH, "size": self.size,
                **({"mec_features": True, "memory_bytes": MEMORY_SCALE_BYTES}
                   if self.mec_features else {})}

    def encode(self, obs: Observation) -> F32:
        """The observation vector of a live :class:`~agent.policy.Observation`."""
        costs = self.actions.costs(obs.workload)
        est = throughput_estimate(obs.recent_throughputs_bps, obs.throughput_bps)
        vec = self.encode_raw(obs.recent_throughputs_bps, est, obs.rtt_s, obs.mec_queue_len,
                              obs.mec_busy_slots, max(obs.mec_slots, 1),
                              obs.mec_expected_wait_s, costs)
        if not self.mec_features:
            return vec
        head = obs.mec_memory_headroom_bytes
        extra = np.array([OBS_HIGH if head < 0 else min(head / MEMORY_SCALE_BYTES, OBS_HIGH),
                          min(obs.mec_iteration_s / self.time_scale_s, OBS_HIGH)],
                         dtype=np.float32)
        out: F32 = np.concatenate([vec, extra])
        return out

    def encode_raw(self, history: Sequence[float], estimate_bps: float, rtt_s: float,
                   queue_len: int, busy_slots: int, slots: int, wait_s: float,
                   costs: ActionCosts) -> F32:
        """The same vector from its parts."""
        return self.encode_scaled([history_feature(b) for b in list(history)[-HISTORY:]],
                                  estimate_bps, rtt_s, queue_len, busy_slots, slots, wait_s, costs)

    def encode_scaled(self, history_features: Sequence[float], estimate_bps: float, rtt_s: float,
                      queue_len: int, busy_slots: int, slots: int, wait_s: float,
                      costs: ActionCosts) -> F32:
        """:meth:`encode_raw` with the history already scaled by :func:`history_feature` (at
        most ``HISTORY`` values, newest last): the env's fast path, which scales each sample
        once. Returns a fresh array."""
        thr = estimate_bps if estimate_bps > 1.0 else 1.0
        buf = self._buf
        buf[: self._nf] = [*self._zeros[len(history_features):], *history_features,
                           math.log10(1.0 + thr * 1e-5) * 0.25, rtt_s / RTT_SCALE_S,
                           queue_len / QUEUE_SCALE, busy_slots / slots,
                           wait_s / self.time_scale_s, *self._repeat_features(costs)]
        vec = self._vec
        # agent.actions.outage_inputs: an outage estimate predicts a wait, then OUTAGE_BPS
        vec[1] = 8.0 / thr if estimate_bps > OUTAGE_BELOW_BPS else 8.0 / OUTAGE_BPS
        vec[2] = rtt_s
        vec[3] = wait_s if estimate_bps > OUTAGE_BELOW_BPS else wait_s + OUTAGE_WAIT_S
        costs.basis.dot(vec, out=self._pred)
        # clip in float64, then round: the same as clipping the float32 values (rounding is
        # monotone and OBS_HIGH is exact), at a third less cost; _pred stays unclipped
        clipped = self._clipped
        np.minimum(buf, self._high, out=clipped)
        out: F32 = clipped.astype(np.float32)
        return out

    def within_budget(self, budget: float) -> npt.NDArray[np.bool_]:
        """Actions whose predicted latency in the last encoded vector is at most ``budget``
        times the fully-local latency."""
        out: npt.NDArray[np.bool_] = self._pred <= budget
        return out

    def _repeat_features(self, costs: ActionCosts) -> list[float]:
        hit = self._reps_cache.get(costs.repeats)
        if hit is None:
            reps = dict(costs.repeats)
            hit = [reps[n] / s for n, s in zip(self.pass_names, self._repeat_scale, strict=True)]
            self._reps_cache[costs.repeats] = hit
        return hit
