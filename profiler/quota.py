"""A slower device class: this process under a CPU quota in its own cgroup.

``cpu_quota(0.5)`` moves the process into a fresh cgroup limited to half of one core (cgroup
v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us`` where only v1 is mounted, as on the build machine)
and moves it back and removes the group on exit. The period is 10 ms, so runs much longer
than 10 ms slow down by about ``1 / fraction``; shorter runs are throttled unevenly. Needs root
(or a delegated cgroup); otherwise a :class:`ProfileError` says what is missing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .schema import ProfileError

__all__ = ["PERIOD_US", "cpu_quota", "quota_mechanism"]

PERIOD_US = 10_000
_V2 = Path("/sys/fs/cgroup")
_V1 = Path("/sys/fs/cgroup/cpu")


def quota_mechanism() -> str | None:
    """``"cgroup v2"``, ``"cgroup v1"`` or ``None`` when neither cpu controller is usable."""
    if (_V2 / "cgroup.controllers").is_file() and "cpu" in (_V2 / "cgroup.controllers").read_text():
        return "cgroup v2"
    if (_V1 / "cpu.cfs_quota_us").is_file():
        return "cgroup v1"
    return None


def _own_group(v2: bool) -> Path:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        num, ctrls, path = line.split(":", 2)
        if (v2 and num == "0" and not ctrls) or (not v2 and "cpu" in ctrls.split(",")):
            return (_V2 if v2 else _V1) / path.lstrip("/")
    return _V2 if v2 else _V1


@contextlib.contextmanager
def cpu_quota(fraction: float) -> Iterator[str]:
    """Run the body limited to ``fraction`` of one core; yields a description of the limit."""
    if not 0.01 <= fraction <= 1.0:
        raise ProfileError(f"--cpu-quota must be within 0.01..1 (a fraction of one core), "
                           f"got {fraction}")
    mech = quota_mechanism()
    if mech is None:
        raise ProfileError("--cpu-quota needs the cgroup cpu controller (v2 cpu.max or v1 "
                           "cpu.cfs_quota_us under /sys/fs/cgroup), which this machine lacks")
    quota = max(1000, int(fraction * PERIOD_US))
    name = f"aigc-offload-emu-profiler-{os.getpid()}"
    home = _own_group(mech == "cgroup v2")
    group = home / name
    if mech == "cgroup v2":
        limit, value = "cpu.max", f"{quota} {PERIOD_US}"
    else:
        limit, value = "cpu.cfs_quota_us", str(quota)
    try:
        group.mkdir()
        if mech == "cgroup v1":
            (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (group / limit).write_text(value)
        (group / "cgroup.procs").write_text(str(os.getpid()))
    except OSError as e:
        with contextlib.suppress(OSError):
            group.rmdir()
        raise ProfileError(f"cannot set a CPU quota in {group} ({e.strerror or e}); it needs "
                           "root or a delegated cgroup") from None
    try:
        yield (f"CPU quota {quota} us per {PERIOD_US} us ({100 * quota / PERIOD_US:.0f}% of one "
               f"core, {mech})")
    finally:
        with contextlib.suppress(OSError):
            (home / "cgroup.procs").write_text(str(os.getpid()))
        with contextlib.suppress(OSError):
            group.rmdir()
