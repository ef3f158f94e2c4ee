"""The parity replay (:mod:`emulator.parity`) against records whose MEC order is known.

The "measured" records are made by the simulator itself on a FIFO MEC (sessions granted in the
order they reach the MEC), so a replay against the measured sessions must give every request
back exactly; it fails when it commits the sessions in another order than the MEC granted
them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.latency import LatencyModel, MecState, simulate_request
from agent.link import Link
from agent.policy import Decision, Workload
from emulator.parity import compare, replay_with
from profiler.schema import load_profile
from traces import Trace

FIX = Path(__file__).parent / "fixtures" / "agent"


def _record(model: LatencyModel, link: Link, device: int, splits: dict[str, int],
            t_start: float, mec: MecState) -> dict[str, Any]:
    """One request as the emulator records it, run on ``mec`` (its session committed)."""
    wl = Workload("llm")
    res = simulate_request(model, link, Decision(splits), wl, t_start, mec, device=str(device))
    rec = res.to_record()
    rec.update(device=device, repeats={p.name: p.repeat for p in model.passes})
    return rec


def test_replay_follows_the_order_the_mec_granted_sessions() -> None:
    model = LatencyModel(load_profile(FIX / "llm.device.json"), load_profile(FIX / "llm.mec.json"))
    link = Link(Trace(np.array([0.0]), np.array([8e6]), period_s=100.0), None, 0.01)
    mec = MecState(slots=1)
    # B starts after A but reaches the MEC first (a 1 KB prompt against A's 393 KB cut): the
    # MEC serves B, then A (the FIFO a real MEC keeps); records made in that order
    b = _record(model, link, 1, {"prefill": 0, "decode": 0}, 0.05, mec)
    a = _record(model, link, 0, {"prefill": 5, "decode": 5}, 0.0, mec)
    first_mec = [next(s["t_start"] for s in r["steps"] if s["side"] == "mec") for r in (a, b)]
    assert first_mec[1] < first_mec[0]  # the scenario: B granted first
    assert b["phases"]["mec_wait_s"] == 0.0 and a["phases"]["mec_wait_s"] > 0.3

    pairs = replay_with(model, link, [a, b], mec_slots=1, mec_sessions="measured")
    assert [p.device for p in pairs] == [0, 1]  # in start order
    for p, rec in zip(pairs, (a, b), strict=True):
        assert p.predicted_s == pytest.approx(rec["latency_s"], abs=1e-9)
        assert p.predicted_wait_s == pytest.approx(rec["phases"]["mec_wait_s"], abs=1e-9)
    assert compare(pairs)["p95_abs"] == pytest.approx(0.0, abs=1e-9)
