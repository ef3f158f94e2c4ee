"""The latency model against hand-computed timelines, and the link's fast finish times."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.actions import SplitActions
from agent.errors import AgentError
from agent.latency import LatencyModel, MecState, simulate_request
from agent.link import FastTrace, Link
from agent.policy import Decision, Workload
from profiler.schema import ProfileError, load_profile
from traces import Trace

FIX = Path(__file__).parent / "fixtures" / "agent"


def _model(name: str = "twoblock", **kw: float) -> LatencyModel:
    return LatencyModel(load_profile(FIX / f"{name}.device.json"),
                        load_profile(FIX / f"{name}.mec.json"), **kw)


def _const_link(bps: float = 8e6, delay: float = 0.01) -> Link:
    return Link(Trace(np.array([0.0]), np.array([bps]), period_s=10.0), None, delay)


# twoblock: device blocks 100 + 200 ms, MEC 25 + 50 ms; cut after block a: 50 kB; pass input
# 20 kB, output 1 kB; 2 passes per request. 8 Mbit/s = 1 MB/s, one-way delay 10 ms.
@pytest.mark.parametrize(("k", "expected"), [
    (2, 2 * 0.300),                                               # local
    (1, 2 * (0.100 + (0.050 + 0.010) + 0.050 + (0.001 + 0.010))),  # split after block a
    (0, 2 * ((0.020 + 0.010) + 0.075 + (0.001 + 0.010))),          # full offload
])
def test_hand_computed_timeline(k: int, expected: float) -> None:
    m = _model()
    res = simulate_request(m, _const_link(), Decision({"main": k}, action=k),
                           Workload("twoblock"), 5.0)
    assert res.t_start == 5.0
    assert res.latency_s == pytest.approx(expected, abs=1e-9)
    assert len(res.passes) == 2
    if k == 1:
        p = res.passes[0]
        assert (p.device_s, p.upload_s, p.upload_bytes, p.mec_s, p.download_s,
                p.download_bytes) == pytest.approx((0.1, 0.06, 50_000, 0.05, 0.011, 1_000))
        assert res.passes[1].t_start == pytest.approx(p.t_end)
    rec = res.to_record()
    assert set(rec) >= {"device", "workload", "split", "t_start", "t_end", "latency_s", "phases",
                        "passes"}


def test_mec_wait_only_at_session_start_and_slot_is_held() -> None:
    m = _model()
    mec = MecState(slots=1)
    mec.commit(0, 0.0, 1.0)  # busy until t = 1
    res = simulate_request(m, _const_link(), Decision({"main": 0}, action=0),
                           Workload("twoblock"), 0.0, mec)
    assert res.passes[0].mec_wait_s == pytest.approx(0.97)
    assert res.passes[1].mec_wait_s == 0.0
    assert res.t_end == pytest.approx(1.0 + 0.075 + 0.011 + 0.030 + 0.075 + 0.011)
    assert mec.free[0] == pytest.approx(res.t_end)
    assert mec.expected_wait(1.0) == pytest.approx(res.t_end - 1.0)


def test_mec_speedup_divides_mec_time() -> None:
    m = _model(mec_speedup=5.0)
    res = simulate_request(m, _const_link(), Decision({"main": 0}, action=0),
                           Workload("twoblock"), 0.0)
    assert res.mec_s == pytest.approx(2 * 0.075 / 5)


def test_upload_stalls_in_zero_capacity_gap() -> None:
    tr = Trace(np.array([0.0, 1.0]), np.array([8e6, 0.0]), period_s=3.0)
    link = Link(tr, None, 0.0)
    # 50 kB after 0.98 s of device work: 20 kB before the gap, the rest after t = 3
    assert link.up_finish(0.98, 50_000) == pytest.approx(3.03)


def test_fast_trace_matches_trace_finish_time() -> None:
    rng = np.random.default_rng(3)
    times = np.concatenate([[0.0], np.sort(rng.uniform(0.1, 50, 40))])
    rates = rng.choice([0.0, 1e5, 2e6, 3e7], size=times.size)
    rates[0] = 1e6
    tr = Trace(times, rates, period_s=60.0)
    ft = FastTrace(tr)
    t0 = rng.uniform(0, 500, 300)
    nb = rng.uniform(0, 3e7, 300)
    ours = np.array([ft.finish(a, b) for a, b in zip(t0, nb, strict=True)])
    np.testing.assert_allclose(ours, tr.finish_time(t0, nb), rtol=1e-9, atol=1e-9)


def test_bad_inputs() -> None:
    with pytest.raises(ProfileError):
        LatencyModel(load_profile(FIX / "llm.device.json"),
                     load_profile(FIX / "twoblock.mec.json"))
    with pytest.raises(AgentError, match="mec-speedup"):
        _model(mec_speedup=0.0)
    m = _model()
    with pytest.raises(AgentError, match="model"):
        m.repeats(Workload("llm"))
    with pytest.raises(AgentError, match="out of range"):
        m.check_decision(Decision({"main": 7}), Workload("twoblock"))


def test_actions_and_masks() -> None:
    acts = SplitActions(_model("diffusion"))
    assert acts.main_pass == "unet" and acts.n_actions == 7
    d0 = acts.decision(0)
    assert d0.splits == {"text_encoder": 0, "unet": 0, "vae_decoder": 0}
    d3 = acts.decision(3)
    assert d3.splits == {"text_encoder": 2, "unet": 3, "vae_decoder": 2}
    assert acts.mask(False).tolist() == [False] * 6 + [True]
    small = SplitActions(_model("diffusion"), device_memory_bytes=250_000_000)
    assert small.mask().tolist()[:2] == [True, True] and not small.mask()[6]


def test_predict_matches_simulation_on_constant_trace() -> None:
    m = _model("llm")
    acts = SplitActions(m)
    link = _const_link(5e6, 0.02)
    costs = acts.costs(Workload("llm"))
    pred = costs.predict(5e6, 0.04, 0.0)
    for a in range(acts.n_actions):
        res = simulate_request(m, link, acts.decision(a), Workload("llm"), 0.0, detail=False)
        assert pred[a] == pytest.approx(res.latency_s, rel=1e-9)
