"""The device's local fallback (agent.latency.fallback_start / apply_fallback, agent.batchsim)
against closed forms on the llm fixture: a request offloaded into an outage is also run locally
from ``start + F x L`` (``L`` its local latency) and ends at ``start + (1 + F) x L``; outputs
the MEC delivered before the outage count; a plan with device computation is left alone; the
MEC session is released when the request ends (slot and batching MEC alike)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from agent.actions import SplitActions
from agent.batchsim import BatchSim
from agent.errors import AgentError
from agent.latency import MecState, simulate_request
from agent.link import Link
from agent.mec_server import BatchServer, MecConfig
from agent.policies import FixedPolicy
from agent.policy import Decision, Workload
from agent.scenario import ScenarioConfig, run_policy
from tests.test_plan_closed_forms import LLM_T, D, R, _link, _llm_times, _model, up
from traces import Trace

FULL = {"prefill": 0, "decode": 0}
LOCAL = {"prefill": 14, "decode": 14}
F = 0.3
T0 = 2.0


def _outage(start: float, end: float = 30.0) -> Link:
    """``R`` both ways except a zero-rate gap ``[start, end)``."""
    return Link(Trace(np.array([0.0, start, end]), np.array([R, 0.0, R]), period_s=100.0),
                None, D)


def _local(m) -> tuple[float, list[float]]:
    d_pre, d_dec, _, _ = _llm_times(m)
    return d_pre + LLM_T * d_dec, [d_pre + i * d_dec for i in range(LLM_T + 1)]


def test_upload_into_an_outage_ends_with_the_local_run() -> None:
    m = _model("llm")
    big, toks = _local(m)
    link = _outage(T0)  # the prompt cannot leave before 30 s
    plain = simulate_request(m, link, Decision(FULL), Workload("llm"), T0)
    assert plain.t_end > 30.0
    res = simulate_request(m, link, Decision(FULL), Workload("llm"), T0, fallback=F)
    assert res.t_end == pytest.approx(T0 + (1 + F) * big, abs=1e-12)
    assert res.fallback_s == pytest.approx(F * big, abs=1e-12)
    assert res.token_times == pytest.approx([T0 + F * big + t for t in toks], abs=1e-12)
    assert res.offloaded and res.to_record()["fallback_s"] == res.fallback_s


def test_outage_mid_stream_keeps_the_tokens_already_delivered() -> None:
    m = _model("llm")
    big, toks = _local(m)
    _, _, m_pre, m_dec = _llm_times(m)
    first = T0 + up(1024) + D + m_pre + up(8) + D  # TTFT closed form (test_plan_closed_forms)
    cut = first + 3.5 * m_dec - D  # tokens 0..3 have left the MEC, token 4 has not
    link = _outage(cut)
    res = simulate_request(m, link, Decision(FULL), Workload("llm"), T0, fallback=F)
    local = [T0 + F * big + t for t in toks]
    mec = [first + i * m_dec for i in range(4)]
    assert res.token_times[:4] == pytest.approx(mec, abs=1e-12)
    assert res.token_times[4:] == pytest.approx(local[4:], abs=1e-12)
    assert res.t_end == pytest.approx(T0 + (1 + F) * big, abs=1e-12)


def test_no_outage_and_device_plans_are_unchanged() -> None:
    m = _model("llm")
    wl = Workload("llm")
    a = simulate_request(m, _link(), Decision(FULL), wl, T0)
    b = simulate_request(m, _link(), Decision(FULL), wl, T0, fallback=F)
    assert a == b and b.fallback_s is None and "fallback_s" not in b.to_record()
    split = {"prefill": 5, "decode": 5}  # computes on the device too: never raced
    link = _outage(T0 + 0.05)
    c = simulate_request(m, link, Decision(split), wl, T0)
    d = simulate_request(m, link, Decision(split), wl, T0, fallback=F)
    assert c == d and d.t_end > T0 + (1 + F) * _local(m)[0]


def test_slot_is_not_held_by_a_request_that_fell_back() -> None:
    m = _model("llm")
    wl = Workload("llm")
    mec = MecState(1)
    simulate_request(m, _outage(T0), Decision(FULL), wl, T0, mec, fallback=F)
    assert mec.free == [0.0]  # its session never started: nothing reserved
    nxt = simulate_request(m, _link(), Decision(FULL), wl, T0 + 0.1, mec, fallback=F)
    assert nxt.mec_wait_s == 0.0
    # without the fallback the slot is reserved until the stalled upload has been served
    mec2 = MecState(1)
    simulate_request(m, _outage(T0), Decision(FULL), wl, T0, mec2)
    assert simulate_request(m, _link(), Decision(FULL), wl, T0 + 0.1, mec2).mec_wait_s > 27.0


def _batch(m) -> tuple[BatchServer, BatchSim]:
    srv = BatchServer.for_model(m, MecConfig("batch", 8, None, "llama7b-gpu"))
    return srv, BatchSim(m, srv, fallback=F)


@pytest.mark.parametrize("stalled", [True, False])
def test_batching_mec_same_as_slots_and_session_leaves(stalled: bool) -> None:
    m = _model("llm")
    wl = Workload("llm")
    _, _, m_pre, m_dec = _llm_times(m)
    first = T0 + up(1024) + D + m_pre + up(8) + D
    link = _outage(T0 if stalled else first + 3.5 * m_dec - D)
    ref = simulate_request(m, link, Decision(FULL), wl, T0, fallback=F)
    srv, sim = _batch(m)
    assert sim.start(0, Decision(FULL), wl, link, T0) is None
    (key, got), = sim.run()
    assert key == 0 and got.t_end == pytest.approx(ref.t_end, abs=1e-12)
    assert got.token_times == pytest.approx(ref.token_times, abs=1e-12)
    assert got.fallback_s == pytest.approx(ref.fallback_s, abs=1e-12)
    assert srv.status(got.t_end).active == 0 and srv.status(got.t_end).queue_len == 0


def test_batching_cut_session_does_not_slow_a_later_one() -> None:
    """A session whose upload is stalled never reaches the MEC: a second device's session
    runs as if alone (batch 1), before and after the first is cut."""
    m = _model("llm")
    wl = Workload("llm")
    alone = simulate_request(m, _link(), Decision(FULL), wl, T0 + 0.1)
    _, sim = _batch(m)
    sim.start(0, Decision(FULL), wl, _outage(T0), T0)
    sim.start(1, Decision(FULL), wl, _link(), T0 + 0.1)
    res = dict(sim.run())
    assert res[1].t_end == pytest.approx(alone.t_end, abs=1e-12)
    assert res[0].t_end == pytest.approx(T0 + (1 + F) * _local(m)[0], abs=1e-12)


@pytest.mark.parametrize("mec_model", ["slots", "batch"])
def test_no_mec_only_request_exceeds_its_bound(mec_model: str) -> None:
    """On a trace with long outages, full offload with the fallback never takes more than
    (1 + F) x L; without it some requests do."""
    m = _model("llm")
    big, _ = _local(m)
    rng = np.random.default_rng(4)
    t = np.arange(0.0, 120.0)
    rates = np.where(rng.random(t.size) < 0.25, 0.0, R)
    trace = Trace(t, rates, period_s=120.0)
    acts = SplitActions(m)
    full = FixedPolicy("offload", acts, acts.offload_action)
    kw: dict[str, Any] = dict(n_devices=3, mec_slots=1, one_way_delay_s=D, load=0.5, horizon_s=120.0,
              mec_model=mec_model)
    on = run_policy(m, acts, full, trace, ScenarioConfig(**kw, fallback=F), 1)
    off = run_policy(m, acts, full, trace, ScenarioConfig(**kw), 1)
    bound = (1 + F) * big + 1e-9
    assert len(on) > 50 and all(r.latency_s <= bound for r in on)
    assert any(r.fallback_s is not None for r in on)
    assert max(r.latency_s for r in off) > bound
    assert all(math.isclose(r.fallback_s, F * big) for r in on if r.fallback_s is not None)


def test_bad_fallback_is_one_line() -> None:
    with pytest.raises(AgentError, match="--fallback must be >= 0"):
        ScenarioConfig(fallback=-1.0)


@pytest.mark.parametrize("mec_model", ["slots", "batch"])
def test_training_env_prices_the_fallback(mec_model: str) -> None:
    """The RL env's step (slot timeline, or the batching MEC's prediction) caps an offloaded
    request at (1 + F) x L too, so a policy trained with --fallback learns what it runs."""
    from pathlib import Path

    from agent.env import AigcSplitEnv

    fix = Path(__file__).parent / "fixtures" / "agent"
    big = _local(_model("llm"))[0]
    rng = np.random.default_rng(4)
    t = np.arange(0.0, 120.0)
    trace = Trace(t, np.where(rng.random(t.size) < 0.25, 0.0, R), period_s=120.0)

    def latencies(fallback: float | None) -> list[float]:
        env = AigcSplitEnv(fix / "llm.device.json", fix / "llm.mec.json", [trace],
                           ScenarioConfig(n_devices=3, mec_model=mec_model, horizon_s=120.0,
                                          fallback=fallback), mec_speedup=4.0)
        env.reset(seed=2)
        out = []
        for _ in range(300):
            a = 0 if env.action_masks()[0] else int(np.flatnonzero(env.action_masks())[-1])
            _, _, _, trunc, info = env.step(a)
            out.append(float(info["latency_s"]))
            if trunc:
                break
        return out

    on, off = latencies(F), latencies(None)
    assert len(on) > 100 and max(on) <= (1 + F) * big + 1e-9
    assert max(off) > (1 + F) * big
