"""What a device observes live about its link and the MEC, turned into a policy Observation.

* Throughput: from the device's own uploads, ``bytes * 8 / upload time`` where the upload time
  runs from the first byte sent to the MEC's stamp of the last byte received (one monotonic
  clock). Only transfers of at least ``min_sample_bytes`` count (a 3 KB decode hidden state
  measures the round-trip delay, not the rate). The estimate is the harmonic mean of the last
  ``window`` samples (robust to one lucky burst, as in MPC/Pensieve bandwidth predictors).
  When no sample is younger than ``probe_after_s`` the device's next echo carries a probe
  payload of ``probe_bytes`` so a device that runs everything locally still learns the rate.
* RTT: the round trip of the per-request echo without payload (latest sample).
* MEC state: the queue state in the MEC's latest reply.
"""

from __future__ import annotations

from collections import deque

from agent.policy import Observation, Workload
from emulator.protocol import QueueState

__all__ = ["LinkEstimator"]


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

    def add_upload(self, nbytes: int, seconds: float, now: float) -> None:
        """Record a finished upload (``seconds`` from first byte sent to last byte received)."""
        if nbytes >= self.min_sample_bytes and seconds > 0:
            self._thr.append(nbytes * 8.0 / seconds)
            self._last_sample_t = now

    def add_rtt(self, seconds: float) -> None:
        self.rtt_s = max(seconds, 0.0)

    def needs_probe(self, now: float) -> bool:
        """Whether the next echo should carry a probe payload (no fresh throughput sample)."""
        return self.probe_bytes > 0 and now - self._last_sample_t > self.probe_after_s

    def throughput_bps(self) -> float:
        """Harmonic mean of the recent samples, bit/s (0 if none yet)."""
        if not self._thr:
            return 0.0
        return len(self._thr) / sum(1.0 / x for x in self._thr)

    def observation(self, workload: Workload, time_s: float) -> Observation:
        q = self.queue
        return Observation(workload=workload, throughput_bps=self.throughput_bps(),
                           recent_throughputs_bps=tuple(self._thr), rtt_s=self.rtt_s,
                           mec_queue_len=q.queue_len, mec_busy_slots=q.busy_slots,
                           mec_slots=q.slots, mec_expected_wait_s=q.expected_wait_s,
                           time_s=time_s)
