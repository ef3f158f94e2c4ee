"""Whole-machine CPU load per window from ``/proc/stat``: emulators under-deliver when CPU-bound.

:class:`CpuWatch` is a thread that samples ``/proc/stat`` every ``window_s`` (aligned to ``t0``
when given) and flags windows at or above :data:`CPU_BUSY_WARN` busy. ``EmulatedNetwork``
runs one during live shaping and prints a warning at teardown; ``emulator.calibrate`` adds the
busy fraction to every ``link.csv`` row.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

__all__ = ["CPU_BUSY_WARN", "CpuWatch"]

#: a window at or above this busy fraction (all CPUs) counts as saturated
CPU_BUSY_WARN: float = 0.95


def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(x) for x in parts]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals[:8]), idle


class CpuWatch:
    """Whole-machine CPU busy fraction per ``window_s`` (a thread reading ``/proc/stat``)."""

    def __init__(self, window_s: float = 1.0, t0: float | None = None) -> None:
        self.window_s = window_s
        self.t0 = t0
        self.busy: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t = time.monotonic() if self.t0 is None else self.t0
        if self._stop.wait(max(0.0, t - time.monotonic())):
            return
        prev = _cpu_times()
        while True:
            t += self.window_s
            if self._stop.wait(max(0.0, t - time.monotonic())):
                return
            cur = _cpu_times()
            total = cur[0] - prev[0]
            self.busy.append(1.0 - (cur[1] - prev[1]) / total if total > 0 else 0.0)
            prev = cur

    def __enter__(self) -> CpuWatch:
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)

    def saturated(self) -> int:
        """Windows at or above :data:`CPU_BUSY_WARN`."""
        return sum(b >= CPU_BUSY_WARN for b in self.busy)

    def warning(self) -> str | None:
        """A one-line warning when any window was CPU-saturated, else ``None``."""
        n = self.saturated()
        if not n:
            return None
        return (
            f"warning: CPU >= {CPU_BUSY_WARN:.0%} busy in {n} of {len(self.busy)} windows "
            f"(max {max(self.busy):.0%}): the emulator may under-deliver the trace there"
        )
