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
    # payload bytes only: the hand timelines here are PLANS.md's (framing: test_agent_wire.py)
    return LatencyModel(load_profile(FIX / f"{name}.device.json"),
                        load_profile(FIX / f"{name}.mec.json"), wire_overhead=False, **kw)


def _const_link(bps: float = 8e6, delay: float = 0.01) -> Link:
    return Link(Trace(np.array([0.0]), np.array([bps]), period_s=10.0), None, delay)


# twoblock: device blocks 100 + 200 ms, MEC 25 + 50 ms; cut after block a: 50 kB; pass input
# 20 kB, output 1 kB; 2 passes per request, a plain chain (pass 2 reads pass 1's output, only
# the last output is user-visible). 8 Mbit/s = 1 MB/s, one-way delay 10 ms.
@pytest.mark.parametrize(("k", "expected"), [
    (2, 2 * 0.300),                                               # local: nothing crosses
    # split after a: each pass sends its cut up; pass 1's output comes down because pass 2's
    # block a runs on the device; pass 2's output comes down as the final output
    (1, 2 * (0.100 + (0.050 + 0.010) + 0.050 + (0.001 + 0.010))),
    # full offload: input up once, both passes back to back on the MEC, final output down
    (0, (0.020 + 0.010) + 0.075 + 0.075 + (0.001 + 0.010)),
])
def test_hand_computed_timeline(k: int, expected: float) -> None:
    m = _model()
    res = simulate_request(m, _const_link(), Decision({"main": k}, action=k),
                           Workload("twoblock"), 5.0)
    assert res.t_start == 5.0
    assert res.latency_s == pytest.approx(expected, abs=1e-9)
    kinds = [(s.kind, s.side, s.what) for s in res.steps]
    if k == 2:
        assert kinds == [("compute", "device", "")] * 2
        assert res.upload_bytes == res.download_bytes == 0
    if k == 1:
        assert kinds == [("compute", "device", ""), ("send", "up", "cut"),
                         ("compute", "mec", ""), ("send", "down", "output")] * 2
        cut = res.steps[1]
        assert (cut.nbytes, cut.t_start, cut.t_end) == pytest.approx((50_000, 5.1, 5.16))
        assert (res.upload_bytes, res.download_bytes) == (100_000, 2_000)
    if k == 0:
        assert kinds == [("send", "up", "input"), ("compute", "mec", ""),
                         ("compute", "mec", ""), ("send", "down", "output")]
        assert (res.upload_bytes, res.download_bytes) == (20_000, 1_000)
    rec = res.to_record()
    assert set(rec) >= {"device", "workload", "split", "t_start", "t_end", "latency_s", "phases",
                        "steps", "ttft_s", "tpot_s", "response_s"}


def test_mec_wait_only_at_session_start_and_slot_is_held() -> None:
    m = _model()
    mec = MecState(slots=1)
    mec.commit(0, 0.0, 1.0)  # busy until t = 1
    res = simulate_request(m, _const_link(), Decision({"main": 0}, action=0),
                           Workload("twoblock"), 0.0, mec)
    # the input is on the MEC at 0.03; the slot frees at 1.0; then both passes back to back
    assert res.mec_wait_s == pytest.approx(0.97)
    mec_steps = [s for s in res.steps if s.kind == "compute"]
    assert mec_steps[0].t_start == pytest.approx(1.0)
    assert mec_steps[1].t_start == pytest.approx(mec_steps[0].t_end)
    assert res.t_end == pytest.approx(1.0 + 0.075 + 0.075 + 0.011)
    # the session holds the slot until its last MEC computation, not until delivery
    assert mec.free[0] == pytest.approx(1.15)
    assert mec.expected_wait(1.0) == pytest.approx(0.15)


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
    assert acts.main_pass == "unet" and acts.n_actions == 11
    d0 = acts.decision(0)
    assert d0.splits == {"text_encoder": 0, "unet": 0, "vae_decoder": 0}
    d3 = acts.decision(acts.index("split:3"))
    assert d3.splits == {"text_encoder": 2, "unet": 3, "vae_decoder": 2}
    assert acts.mask(False).tolist() == [False] * 10 + [True]
    small = SplitActions(_model("diffusion"), device_memory_bytes=250_000_000)
    # full offload and the placements that keep only the small text encoder or VAE on the
    # device fit; local and the hybrid plans (every UNet block on the device) do not
    m = dict(zip(small.names, small.mask().tolist(), strict=True))
    assert m["offload"] and not m["local"] and not m["hybrid:1/2"], m


def test_predict_matches_simulation_on_constant_trace() -> None:
    m = _model("llm")
    acts = SplitActions(m)
    link = _const_link(5e6, 0.02)
    costs = acts.costs(Workload("llm"))
    pred = costs.predict(5e6, 0.04, 0.0)
    for a in range(acts.n_actions):
        res = simulate_request(m, link, acts.decision(a), Workload("llm"), 0.0, detail=False)
        assert pred[a] == pytest.approx(res.latency_s, rel=1e-9)
