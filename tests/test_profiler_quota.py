"""The slower device class: a cgroup CPU quota entered and left cleanly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from profiler.hardware import pinned, resolve_class
from profiler.quota import cpu_quota, quota_mechanism
from profiler.schema import ProfileError

needs_cgroup = pytest.mark.skipif(os.geteuid() != 0 or quota_mechanism() is None,
                                  reason="needs root and the cgroup cpu controller")


@pytest.mark.root
@needs_cgroup
def test_quota_moves_the_process_and_back() -> None:
    before = Path("/proc/self/cgroup").read_text()
    with cpu_quota(0.5) as desc:
        inside = Path("/proc/self/cgroup").read_text()
        assert f"aigc-offload-emu-profiler-{os.getpid()}" in inside
        assert "50% of one core" in desc
    assert Path("/proc/self/cgroup").read_text() == before


@pytest.mark.root
@needs_cgroup
def test_quota_class_is_labelled() -> None:
    hw = resolve_class("device", quota=0.25)
    assert hw.label == "device-q25"
    assert "25% of that core" in hw.describe().description
    with pinned(hw):
        assert len(os.sched_getaffinity(0)) == 1


def test_quota_rejected_outside_device_class_and_range() -> None:
    with pytest.raises(ProfileError, match="device class only"):
        resolve_class("mec", quota=0.5)
    with pytest.raises(ProfileError, match="fraction of one"):
        resolve_class("device", quota=1.5)
