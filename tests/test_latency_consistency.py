"""The profiler's Neurosurgeon curve and the agent's latency model agree on a constant link.

Two independent computations of the same quantity: ``profiler.report.split_curve`` (a closed
form: device + RTT + bytes / bandwidth + MEC) and ``agent.latency.simulate_request`` (the
trace-driven timeline used by the simulator, baselines, oracle and emulator predictions).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent.latency import LatencyModel, simulate_request
from agent.link import Link
from agent.policy import Decision, Workload
from profiler.report import split_curve
from profiler.schema import load_profile
from traces import Trace

PROFILES = Path(__file__).resolve().parents[1] / "profiles"


@pytest.mark.parametrize("model", ["gpt2", "gpt2-tiny", "sd15-tiny"])
def test_first_pass_of_every_split_matches_the_curve(model: str) -> None:
    dev = load_profile(PROFILES / f"{model}.device.json")
    mec = load_profile(PROFILES / f"{model}.mec-cpu.json")
    mbps, one_way_ms = 20.0, 15.0
    link = Link(up=Trace(times_s=np.array([0.0]), rates_bps=np.array([mbps * 1e6]), period_s=10.0),
                one_way_delay_s=one_way_ms / 1e3)
    lm = LatencyModel(dev, mec, wire_overhead=False)  # the curve prices payload bytes
    first = dev.passes[0]
    # bytes crossing the link, read from the file itself (not through profiler.schema.Pass):
    # the pass input at k = 0, the cut after block k-1 inside, nothing when all is local
    raw = json.loads((PROFILES / f"{model}.device.json").read_text())["passes"][0]
    hand_up = [raw["input_bytes"], *(b["out_bytes"] for b in raw["blocks"][:-1]), 0]
    curve = split_curve(first, mec.pass_named(first.name), mbps, rtt_ms=2 * one_way_ms)
    only_first = {p.name: (1 if p.name == first.name else 0) for p in dev.passes}
    for point in curve:
        splits = {p.name: (point.k if p.name == first.name else p.n_blocks) for p in dev.passes}
        # a request of the first pass alone: its output is the final output (as in the curve)
        res = simulate_request(lm, link, Decision(splits=splits),
                               Workload(model=model, repeats=only_first), 3.0)
        assert res.latency_s * 1e3 == pytest.approx(point.total_ms, rel=1e-9, abs=1e-6), \
            (model, point.k)
        assert res.upload_bytes == hand_up[point.k]
        assert point.up_bytes == hand_up[point.k]
