"""What a device observes live about its link and the MEC, turned into a policy Observation.

* Throughput, passively, from the device's own uploads (requests' transfers and probes): the
  upload time runs from the first byte sent to the MEC's receive stamp of the last byte (one
  monotonic clock); half the latest echo RTT (the propagation delay) is taken off it. A
  transfer counts when what is left is at least 2 ms and a quarter of the upload time (then it
  measures the rate, not the delay: a 1.3 KB GPT-2 prefill input does on a link below a few
  Mbit/s with 10 ms one-way); else, if it carries at least ``min_sample_bytes``, its plain
  ``bytes * 8 / upload time`` counts (as before the correction). The estimate is the harmonic
  mean of the last ``window`` samples (robust to one lucky burst, as in MPC/Pensieve bandwidth
  predictors).
* Probe: only when no sample is younger than ``probe_after_s``, the next echo carries a probe
  just large enough to be measured at the current estimate (its transfer about the one-way
  delay long; 4 KiB..``probe_bytes``; ``probe_bytes`` before any estimate), so a device that
  runs everything locally still learns the rate. A probe's bytes and seconds are charged to
  the request it preceded (its record's ``probe``; ``summary.json``'s ``probe`` totals) and its
  time is part of that request's response time.
* Outage: an echo without payload that is not answered within the device's echo deadline
  (``--echo-deadline``, 1 s: the simulator's sampling window) adds a 0 bit/s sample, and the
  device decides without waiting for the link (a later reply to it is discarded).
* RTT: the round trip of the per-request echo without payload (latest sample).
* MEC state: the queue state in the MEC's latest reply.
"""

from __future__ import annotations

from collections import deque

from agent.policy import Observation, Workload
from emulator.protocol import QueueState

__all__ = ["LinkEstimator"]

_MIN_SERIAL_S = 0.002
_MIN_PROBE_BYTES = 4096


class LinkEstimator:
    """Keeps recent throughput and RTT samples and the MEC's last queue state."""

    def __init__(self, window: int = 4, min_sample_bytes: int = 16_384,
                 probe_after_s: float = 3.0, probe_bytes: int = 32_768) -> None:
        self.window = window
        self.min_sample_bytes = min_sample_bytes
        self.probe_after_s = probe_after_s
        self.probe_bytes = probe_bytes
        self._thr: deque[float] = deque(maxlen=window)
        self._last_sample_t = -float("inf")
        self.rtt_s = 0.0
        self.queue = QueueState(0, 0, 1, 0.0)
        self._probe_bytes = 0
        self._probe_s = 0.0
        self._probe_on_link: list[list[float]] = []

    def add_upload(self, nbytes: int, seconds: float, now: float) -> None:
        """Record a finished upload (``seconds`` from first byte sent to last byte received)."""
        if nbytes <= 0 or seconds <= 0:
            return
        serial = seconds - self.rtt_s / 2
        if self.rtt_s > 0 and serial >= max(_MIN_SERIAL_S, 0.25 * seconds):
            self._thr.append(nbytes * 8.0 / serial)
        elif nbytes >= self.min_sample_bytes:
            self._thr.append(nbytes * 8.0 / seconds)
        else:
            return
        self._last_sample_t = now

    def probe_size(self) -> int:
        """Bytes of the next probe: about one one-way delay of transfer at the current
        estimate (4 KiB..``probe_bytes``), ``probe_bytes`` before any estimate."""
        thr = self.throughput_bps()
        if thr <= 0:
            return self.probe_bytes
        want = thr / 8.0 * max(self.rtt_s / 2, 2 * _MIN_SERIAL_S)
        return int(min(self.probe_bytes, max(_MIN_PROBE_BYTES, want)))

    def charge_probe(self, nbytes: int, seconds: float,
                     on_link: tuple[float, float] | None = None) -> None:
        """A probe of ``nbytes`` took ``seconds`` (send to reply): charged to the next record.
        ``on_link``: (first byte written, last byte received by the MEC), in the caller's
        time base, kept for the record (the only time the probe's bytes were on the link)."""
        self._probe_bytes += nbytes
        self._probe_s += seconds
        if on_link is not None:
            self._probe_on_link.append([float(on_link[0]), float(on_link[1])])

    def take_probe(self) -> dict[str, object]:
        """The probe cost since the last call (``bytes``, ``s``, and ``on_link``: each probe's
        [sent, received] when the caller gave it), for a request's record."""
        out: dict[str, object] = {"bytes": self._probe_bytes, "s": self._probe_s}
        if self._probe_on_link:
            out["on_link"] = self._probe_on_link
        self._probe_bytes, self._probe_s, self._probe_on_link = 0, 0.0, []
        return out

    def add_rtt(self, seconds: float) -> None:
        self.rtt_s = max(seconds, 0.0)

    def needs_probe(self, now: float) -> bool:
        """Whether the next echo should carry a probe payload (no fresh throughput sample)."""
        return self.probe_bytes > 0 and now - self._last_sample_t > self.probe_after_s

    def add_outage(self, now: float) -> None:
        """Nothing came back over the link for a while (an echo unanswered past its deadline):
        a 0 bit/s sample, as the simulator counts a second without delivery
        (:func:`agent.observation.throughput_estimate` reads it as an outage)."""
        self._thr.append(0.0)
        self._last_sample_t = now

    def throughput_bps(self) -> float:
        """Harmonic mean of the recent samples, bit/s (0 if none yet, or with an outage)."""
        if not self._thr or min(self._thr) <= 0.0:
            return 0.0
        return len(self._thr) / sum(1.0 / x for x in self._thr)

    def observation(self, workload: Workload, time_s: float) -> Observation:
        q = self.queue
        return Observation(workload=workload, throughput_bps=self.throughput_bps(),
                           recent_throughputs_bps=tuple(self._thr), rtt_s=self.rtt_s,
                           mec_queue_len=q.queue_len, mec_busy_slots=q.busy_slots,
                           mec_slots=q.slots, mec_expected_wait_s=q.expected_wait_s,
                           mec_memory_headroom_bytes=(-1.0 if q.memory_headroom_bytes is None
                                                      else q.memory_headroom_bytes),
                           mec_iteration_s=q.iteration_s or 0.0, time_s=time_s)
