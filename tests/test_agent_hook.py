"""run_policy's on_decision hook sees each request's state before it runs: pricing the chosen
plan there on a copy of the MEC gives the run's own latency, request by request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.actions import SplitActions
from agent.errors import AgentError
from agent.latency import LatencyModel, simulate_request
from agent.policies import GreedyPolicy
from agent.scenario import ScenarioConfig, run_policy
from profiler.schema import load_profile
from traces import DATA_DIR, load_traces

FIX = Path(__file__).parent / "fixtures" / "agent"


def test_hook_prices_what_runs() -> None:
    model = LatencyModel(load_profile(FIX / "llm.device.json"), load_profile(FIX / "llm.mec.json"),
                         mec_speedup=3.0)
    acts = SplitActions(model)
    cfg = ScenarioConfig(n_devices=3, mec_slots=1, mec_queue_limit=2, one_way_delay_s=0.01,
                         load=2.0, horizon_s=20.0, mec_model="slots")
    trace = load_traces(DATA_DIR / "train")[0].scaled(0.2)
    seen: list[tuple[str, float, float]] = []

    def hook(i: int, link: Any, mec: Any, obs: Any, decision: Any) -> None:
        res = simulate_request(model, link, decision, obs.workload, obs.time_s, mec.copy(),
                               detail=False)
        seen.append((f"device{i}", obs.time_s, res.latency_s))

    res = run_policy(model, acts, GreedyPolicy(acts), trace, cfg, 5, on_decision=hook)
    assert len(res) == len(seen) > 10
    assert any(r.mec_wait_s > 0 for r in res)  # the MEC state matters here
    for r, (dev, t, lat) in zip(res, seen, strict=True):
        assert (r.device, r.t_start) == (dev, t)
        assert r.latency_s == pytest.approx(lat, rel=1e-12)
    with pytest.raises(AgentError, match="on_decision is only supported with the slot MEC"):
        run_policy(model, acts, GreedyPolicy(acts), trace,
                   ScenarioConfig(mec_model="batch", horizon_s=5.0), 5, on_decision=hook)
