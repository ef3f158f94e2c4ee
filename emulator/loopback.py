"""A stand-in for :class:`emulator.net.EmulatedNetwork` on loopback: no namespaces, no shaping.

Same small interface the ``run`` command uses (``mec``, ``devices``, ``popen``,
``start_shaping``, ``capacity_at``, ``link_rows``, ``shaper_stats``, ``delay_method``,
``run_id``), so the device and MEC processes and the whole command can be developed and tested
without root (``python -m emulator.run --network loopback``). Nothing is shaped: the trace is
only reported, and records will not follow it.
"""

from __future__ import annotations

import contextlib
import subprocess
from types import TracebackType
from typing import Any

from traces import Trace

__all__ = ["LoopbackHost", "LoopbackNetwork"]


class LoopbackHost:
    """A 'host' that is just this machine's loopback address."""

    def __init__(self, name: str) -> None:
        self.name = name

    def IP(self) -> str:
        return "127.0.0.1"


class LoopbackNetwork:
    """Plain subprocesses on 127.0.0.1; kills what it started on exit."""

    delay_method = "none (loopback)"

    def __init__(self, n_devices: int, uplink: Trace, run_id: str = "loop") -> None:
        self.run_id = run_id
        self.trace = uplink
        self.mec = LoopbackHost("mec")
        self.devices = [LoopbackHost(f"d{i}") for i in range(n_devices)]
        self._procs: list[subprocess.Popen[Any]] = []

    def __enter__(self) -> LoopbackNetwork:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                  tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for p in self._procs:
            if p.poll() is None:
                p.kill()
        for p in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)

    def popen(self, host: LoopbackHost, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
        p: subprocess.Popen[Any] = subprocess.Popen(argv, start_new_session=True, **kw)
        self._procs.append(p)
        return p

    def start_shaping(self, t0_monotonic: float | None = None) -> None:
        pass

    def stop_shaping(self) -> None:
        pass

    def capacity_at(self, device_index: int, t_trace: float) -> float:
        return float(self.trace.capacity_at(max(t_trace, 0.0)))

    def link_rows(self) -> list[dict[str, Any]]:
        return []

    def shaper_stats(self) -> dict[str, Any]:
        return {"shaping": "none (loopback network)", "delay_method": self.delay_method}
