"""Profiled compute: blocks take the time measured in a profile, waited out precisely.

How a block's time is drawn (``jitter="lognormal"``, the default): a lognormal distribution
with the profile's **median** ``m`` and **standard deviation** ``s`` (``latency_ms``): its
``mu = ln m`` and ``sigma = sqrt(ln x)`` with ``x = (1 + sqrt(1 + 4 s^2 / m^2)) / 2``, which
is the unique lognormal with that median and that std. It is positive and right-skewed, as
measured block times are. ``jitter="none"`` uses the median exactly. A range of blocks draws
each block independently and waits once for the sum.

Waiting: :func:`wait_until` sleeps until ``spin_s`` before the deadline (2 ms, 0.5 ms in a
``SCHED_FIFO`` thread), then spins on ``time.perf_counter()``; ``benchmarks/emulator_compute.py`` measures how close it gets (within
1 ms or 2% of the target is the bar). This is how a MEC GPU is emulated on a CPU-only host:
its measured times are waited out, not computed.

Scheduling: on a shared 2-core machine a normal thread is sometimes preempted for several ms
in the middle of a wait. :func:`realtime_thread` moves the calling thread to ``SCHED_FIFO``
priority :data:`RT_PRIORITY` (5: below the network's shaper, 10, and delay relay, 20, so
emulated compute never delays the network) when allowed (root); the spin is bounded by
``spin_s`` per wait and the kernel's RT throttling still applies. Device and MEC processes call
it unless started with ``--no-realtime``.

Payloads are real bytes of the profiled size (zeros, from one preallocated buffer).
"""

from __future__ import annotations

import math
import os
import time
from typing import Literal

import numpy as np

from profiler.schema import Pass, Profile

__all__ = [
    "JITTERS",
    "RT_PRIORITY",
    "Jitter",
    "ProfiledCompute",
    "lognormal_params",
    "output_bytes",
    "realtime_thread",
    "wait_until",
]

Jitter = Literal["lognormal", "none"]
JITTERS: tuple[str, ...] = ("lognormal", "none")
_DEFAULT_SPIN_S = 0.002
_RT_SPIN_S = 0.0005
"""The spin of a ``SCHED_FIFO`` thread: such a thread has no timer slack and preempts normal
threads, so its sleep ends close to when asked (a 3 ms sleep 82 us late at p50, 210 us at p99,
457 us at most in 400 on the 2-core build machine at load 4; a normal thread: 132 us, 3.9 ms,
4.9 ms). Spinning 2 ms of every wait kept a MEC of 64 streaming sessions a whole core busy
(28.8 s of CPU in a 30 s run, ``benchmarks/scale.py``) and its threads fighting for the GIL."""
RT_PRIORITY = 5


def _is_realtime() -> bool:
    try:
        return os.sched_getscheduler(0) == os.SCHED_FIFO
    except (OSError, AttributeError):
        return False


def realtime_thread(priority: int = RT_PRIORITY) -> bool:
    """Put the calling thread on ``SCHED_FIFO`` at ``priority``; False when not allowed."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError):
        return False
    return True


def background_thread() -> str:
    """Put the calling thread on ``SCHED_IDLE`` (``nice 19`` where that is not allowed): work
    that must not take the CPU from a run still going, such as a device's after-run checks of
    its generated outputs, which had run at the device's ``SCHED_FIFO`` priority and slowed
    the other devices' still-running requests. Returns the policy it got."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return "idle"
    except (OSError, AttributeError):
        pass
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        os.setpriority(os.PRIO_PROCESS, 0, 19)
        return "nice"
    except (OSError, AttributeError):
        return "unchanged"


def wait_until(deadline: float, spin_s: float | None = None) -> float:
    """Wait until ``time.perf_counter() >= deadline``: sleep, then spin for the last ``spin_s``
    (default: 0.5 ms in a ``SCHED_FIFO`` thread, see :data:`_RT_SPIN_S`, else 2 ms).

    Returns the overshoot in seconds (``>= 0``).
    """
    if spin_s is None:
        spin_s = _RT_SPIN_S if _is_realtime() else _DEFAULT_SPIN_S
    while True:
        rem = deadline - time.perf_counter()
        if rem <= 0:
            return -rem
        if rem > spin_s:
            time.sleep(rem - spin_s)
        else:
            while time.perf_counter() < deadline:
                # let the process's other threads run: a bare spin holds the GIL for up to
                # the switch interval (5 ms), which delayed the MEC's sends and its other
                # slots by milliseconds with many sessions (benchmarks/scale.py)
                time.sleep(0)


def lognormal_params(median: float, std: float) -> tuple[float, float]:
    """``(mu, sigma)`` of the lognormal with this median and std (``median > 0``)."""
    if median <= 0:
        raise ValueError(f"median must be > 0, got {median}")
    r2 = (std / median) ** 2
    x = (1.0 + math.sqrt(1.0 + 4.0 * r2)) / 2.0
    return math.log(median), math.sqrt(math.log(x))


def output_bytes(p: Pass, lo: int, hi: int) -> int:
    """Bytes produced by running blocks ``[lo, hi)`` of pass ``p``.

    Running to the end gives the pass output; stopping at ``hi`` gives the cut after block
    ``hi - 1``; an empty range at 0 hands on the pass input.
    """
    n = p.n_blocks
    assert 0 <= lo <= hi <= n
    if hi == n:
        return p.output_bytes
    if hi == 0:
        return p.input_bytes
    return p.blocks[hi - 1].out_bytes


class ProfiledCompute:
    """Waits out profiled block times; one instance per process, seeded generator passed in.

    ``speedup`` divides every block time (the latency model's ``mec_speedup``: a MEC faster
    than the hardware it was profiled on, e.g. a GPU emulated from a CPU profile).
    """

    def __init__(
        self,
        profile: Profile,
        rng: np.random.Generator,
        jitter: Jitter = "lognormal",
        spin_s: float | None = None,
        speedup: float = 1.0,
    ) -> None:
        if jitter not in JITTERS:
            raise ValueError(f"jitter must be one of {JITTERS}, got {jitter!r}")
        if not (speedup > 0 and math.isfinite(speedup)):
            raise ValueError(f"speedup must be a positive number, got {speedup!r}")
        self.speedup = float(speedup)
        self.profile = profile
        self.rng = rng
        self.jitter = jitter
        self.spin_s = spin_s
        self._median_s: list[np.ndarray] = []
        self._mu: list[np.ndarray] = []
        self._sigma: list[np.ndarray] = []
        for p in profile.passes:
            med = np.array([b.latency.median for b in p.blocks]) / 1e3 / self.speedup
            self._median_s.append(med)
            mus, sigmas = [], []
            for b in p.blocks:
                if b.latency.median > 0:
                    mu, sg = lognormal_params(b.latency.median / 1e3 / self.speedup,
                                              b.latency.std / 1e3 / self.speedup)
                else:
                    mu, sg = -math.inf, 0.0
                mus.append(mu)
                sigmas.append(sg)
            self._mu.append(np.array(mus))
            self._sigma.append(np.array(sigmas))
        biggest = max(
            max(p.input_bytes, p.output_bytes, *(b.out_bytes for b in p.blocks))
            for p in profile.passes
        )
        self._zeros = memoryview(bytearray(biggest))

    def expected_s(self, pass_index: int, lo: int, hi: int) -> float:
        """Sum of the profiled medians of blocks ``[lo, hi)`` (seconds)."""
        return float(self._median_s[pass_index][lo:hi].sum())

    def sample_s(self, pass_index: int, lo: int, hi: int) -> float:
        """Draw the duration of blocks ``[lo, hi)`` (seconds)."""
        if hi <= lo:
            return 0.0
        if self.jitter == "none":
            return self.expected_s(pass_index, lo, hi)
        mu = self._mu[pass_index][lo:hi]
        sigma = self._sigma[pass_index][lo:hi]
        draws = np.where(
            np.isfinite(mu), np.exp(mu + sigma * self.rng.standard_normal(mu.size)), 0.0
        )
        return float(draws.sum())

    def payload(self, pass_index: int, lo: int, hi: int) -> memoryview:
        """Zero bytes of the size produced by blocks ``[lo, hi)``."""
        n = output_bytes(self.profile.passes[pass_index], lo, hi)
        return self._zeros[:n]

    def run(self, pass_index: int, lo: int, hi: int,
            start: float | None = None) -> tuple[float, memoryview]:
        """Wait out a drawn duration of blocks ``[lo, hi)``, counted from ``start``
        (``time.monotonic()``; default now); returns (target_s, output bytes)."""
        now = time.perf_counter()
        start = now if start is None else start + (now - time.monotonic())
        target = self.sample_s(pass_index, lo, hi)
        if target > 0:
            wait_until(start + target, self.spin_s)
        return target, self.payload(pass_index, lo, hi)
