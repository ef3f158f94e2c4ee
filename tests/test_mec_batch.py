"""The batching MEC (agent/mec_server.py, agent/batchsim.py) against closed forms.

Expected values are written from the fixture's profile numbers and the published GPU curve
(llama.cpp batched-bench LLaMA-7B F16: 24.1 ms at batch 1, 57.4 at 8, 68.8 at 32), not from the
server's code: two sessions in one iteration take ``f(2) x`` their batch-1 time, where ``f`` is
linear between the published points.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.actions import SplitActions
from agent.batchsim import BatchSim
from agent.latency import simulate_request
from agent.mec_server import (
    BatchCost,
    BatchServer,
    MecConfig,
    MecConfigError,
    session_state_bytes,
)
from agent.policies import FixedPolicy
from agent.policy import Decision, Workload
from agent.scenario import ScenarioConfig, run_policy
from tests.test_plan_closed_forms import KV, LLM_P, LLM_T, D, _link, _llm_times, _model, up
from traces import Trace

ROOT = Path(__file__).resolve().parent.parent
F8 = 57.4 / 24.1
FULL = {"prefill": 0, "decode": 0}


def f(n: int) -> float:
    """The published curve's factor over batch 1, linear in between (1 <= n <= 8)."""
    return 1.0 + (F8 - 1.0) * (n - 1) / 7.0


def _sim(max_batch: int = 8, memory_gb: float | None = None, kv: int | None = None):
    m = _model("llm", kv)
    srv = BatchServer.for_model(m, MecConfig("batch", max_batch, memory_gb, "llama7b-gpu"))
    return m, srv, BatchSim(m, srv, detail=True)


def test_two_identical_sessions_together_closed_form() -> None:
    m, _, sim = _sim()
    _, _, m_pre, m_dec = _llm_times(m)
    for k in range(2):
        assert sim.start(k, Decision(FULL), Workload("llm"), _link(), 2.0) is None
    res = dict(sim.run())
    want = up(1024) + D + f(2) * m_pre + LLM_T * f(2) * m_dec + up(8) + D
    for k in range(2):
        assert res[k].latency_s == pytest.approx(want, abs=1e-9)
        assert res[k].tpot_s == pytest.approx(f(2) * m_dec, abs=1e-9)
        assert res[k].mec_wait_s == pytest.approx(0.0, abs=1e-12)


def test_four_sessions_use_interpolated_batch_time() -> None:
    m, _, sim = _sim()
    _, _, m_pre, m_dec = _llm_times(m)
    for k in range(4):
        sim.start(k, Decision(FULL), Workload("llm"), _link(), 2.0)
    res = dict(sim.run())
    want = up(1024) + D + f(4) * (m_pre + LLM_T * m_dec) + up(8) + D
    assert all(r.latency_s == pytest.approx(want, abs=1e-9) for r in res.values())


@pytest.mark.parametrize("splits", [FULL, {"prefill": 6, "decode": 3},
                                    {"prefill": 14, "decode": 0}, {"prefill": 14, "decode": 14}])
def test_one_session_is_the_slot_model(splits: dict[str, int]) -> None:
    """At batch 1 every iteration is the computation's own time: the slot model's timeline."""
    m, _, sim = _sim(kv=KV)
    got = sim.start(0, Decision(splits), Workload("llm"), _link(), 2.0)
    got = got if got is not None else sim.run()[0][1]
    ref = simulate_request(m, _link(), Decision(splits), Workload("llm"), 2.0)
    assert got.steps == ref.steps
    assert got.token_times == ref.token_times and got.t_end == ref.t_end


def _queued_closed_form(m) -> tuple[float, float]:
    _, _, m_pre, m_dec = _llm_times(m)
    alone = up(1024) + D + m_pre + LLM_T * m_dec + up(8) + D
    return alone, alone + m_pre + LLM_T * m_dec


def test_max_batch_one_queues_fifo() -> None:
    m, _, sim = _sim(max_batch=1)
    for k in range(2):
        sim.start(k, Decision(FULL), Workload("llm"), _link(), 2.0)
    res = dict(sim.run())
    first, second = _queued_closed_form(m)
    assert res[0].latency_s == pytest.approx(first, abs=1e-9)
    assert res[1].latency_s == pytest.approx(second, abs=1e-9)
    _, _, m_pre, m_dec = _llm_times(m)
    assert res[1].mec_wait_s == pytest.approx(m_pre + LLM_T * m_dec, abs=1e-9)


def test_memory_budget_admits_one_session() -> None:
    m = _model("llm", KV)
    per_session = 12 * KV * (LLM_P + LLM_T)  # 12 layers x KV per token x final length
    plan = m.plan(Decision(FULL), Workload("llm"))
    assert session_state_bytes(m, plan) == per_session
    weights = BatchServer.for_model(m, MecConfig("batch", 8, None, "llama7b-gpu")).weight_bytes
    gb = (weights + 1.5 * per_session) / 1e9
    m2, _, sim = _sim(memory_gb=gb, kv=KV)
    for k in range(2):
        sim.start(k, Decision(FULL), Workload("llm"), _link(), 2.0)
    res = dict(sim.run())
    first, second = _queued_closed_form(m2)
    assert res[0].latency_s == pytest.approx(first, abs=1e-9)
    assert res[1].latency_s == pytest.approx(second, abs=1e-9)


def test_late_session_joins_at_the_next_boundary() -> None:
    """B's prefill is ready mid-way through A's decode iterations: it waits for the boundary,
    then each shared iteration takes the per-block selective batch time."""
    m, srv, sim = _sim()
    _, _, m_pre, m_dec = _llm_times(m)
    t_a = 2.0
    ready_a = t_a + up(1024) + D
    t_b = t_a + m_pre + 2.5 * m_dec  # B's input lands 2.5 decode steps after A's prefill ends
    sim.start(0, Decision(FULL), Workload("llm"), _link(), t_a)
    while sim.next_time() < t_b:
        sim.step()
    sim.start(1, Decision(FULL), Workload("llm"), _link(), t_b)
    res = dict(sim.run())
    ready_b = t_b + up(1024) + D
    boundary = ready_a + m_pre + 3 * m_dec  # A's 3rd decode ends after B is ready
    assert boundary >= ready_b > boundary - m_dec
    assert res[1].mec_wait_s == pytest.approx(boundary - ready_b, abs=1e-9)
    # first shared iteration: A's decode (every block once) with B's prefill (every block)
    pre, dec = m.pass_costs("prefill"), m.pass_costs("decode")
    shared = sum(srv.cost.block("prefill", j, 1) + srv.cost.block("decode", j, 1)
                 for j in range(pre.n_blocks))
    assert shared == pytest.approx(m_pre + m_dec, abs=1e-12)  # different passes: no sharing
    b_first = next(s for s in res[1].steps if s.kind == "compute")
    assert b_first.t_end - b_first.t_start == pytest.approx(m_pre + m_dec, abs=1e-9)
    assert dec.n_blocks == pre.n_blocks


def test_one_device_batch_equals_slots() -> None:
    """One device never has two sessions: the batching MEC runs every iteration at batch 1."""
    m = _model("llm", KV)
    acts = SplitActions(m)
    trace = _link().up
    assert isinstance(trace, Trace)
    for a in (acts.local_action, 0, 3):
        pol = FixedPolicy(f"fixed:{a}", acts, a)
        cfg = ScenarioConfig(n_devices=1, horizon_s=20.0)
        slots = run_policy(m, acts, pol, trace, cfg, 1)
        batch = run_policy(m, acts, pol, trace, ScenarioConfig(
            n_devices=1, horizon_s=20.0, mec_model="batch", mec_batch_curve="llama7b-gpu"), 1)
        assert [r.t_end for r in batch] == pytest.approx([r.t_end for r in slots], abs=1e-9)


def test_64_concurrent_sessions_all_finish() -> None:
    m, srv, sim = _sim()
    srv.max_batch = 32
    for k in range(64):
        sim.start(k, Decision(FULL), Workload("llm"), _link(), 2.0)
    res = dict(sim.run())
    assert sorted(res) == list(range(64))
    assert all(len(r.token_times) == LLM_T + 1 and math.isfinite(r.t_end) for r in res.values())
    # 32 run together (f(32) = 68.8/24.1), the other 32 after them, each batch alike
    _, _, m_pre, m_dec = _llm_times(m)
    f32 = 68.8 / 24.1
    mec = m_pre + LLM_T * m_dec
    lat = sorted(r.latency_s for r in res.values())
    assert lat[0] == pytest.approx(up(1024) + D + f32 * mec + up(8) + D, abs=1e-9)
    assert lat[-1] == pytest.approx(up(1024) + D + 2 * f32 * mec + up(8) + D, abs=1e-9)


def test_config_errors() -> None:
    m = _model("llm")
    with pytest.raises(MecConfigError, match="above the largest batch size"):
        BatchServer.for_model(m, MecConfig("batch", 33, None, "llama7b-gpu"))
    with pytest.raises(MecConfigError, match="below the model's weights"):
        BatchServer.for_model(m, MecConfig("batch", 8, 1e-6, "llama7b-gpu"))
    with pytest.raises(MecConfigError, match="has no batch curve"):
        BatchServer.for_model(m, MecConfig("batch", 8, None, "profile"))
    with pytest.raises(MecConfigError, match="--mec-model"):
        MecConfig("fifo")


@pytest.mark.parametrize("args, words", [
    (["--mec-max-batch", "64", "--mec-batch-curve", "llama7b-gpu"], "above the largest"),
    (["--mec-memory-gb", "0.1", "--mec-batch-curve", "llama7b-gpu"], "below the model's weights"),
    (["--mec-batch-curve", str(ROOT / "profiles" / "sd15.mec-cpu.json")], "a batch profile of model 'sd15'"),
])
def test_cli_bad_input_one_line(args: list[str], words: str, tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "agent.evaluate", "--model", "gpt2", "--traces",
                        str(ROOT / "traces" / "data" / "cellular_120s.csv"), "--horizon", "5",
                        "--policies", "local", "--mec-model", "batch", *args, "--out",
                        str(tmp_path), "--no-plots"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], p.stderr


def test_observation_mec_features_are_opt_in() -> None:
    from agent.observation import MEMORY_SCALE_BYTES, OBS_HIGH, ObservationEncoder
    from agent.policy import Observation

    m = _model("llm", KV)
    acts = SplitActions(m)
    base, extra = ObservationEncoder(acts), ObservationEncoder(acts, mec_features=True)
    obs = Observation(Workload("llm"), 1e7, (1e7,), 0.02, mec_queue_len=2, mec_busy_slots=3,
                      mec_slots=8, mec_expected_wait_s=0.1, mec_memory_headroom_bytes=2.5e9,
                      mec_iteration_s=0.05)
    v0, v1 = base.encode(obs), extra.encode(obs)
    assert extra.size == base.size + 2 == len(v1) and len(v0) == base.size
    assert list(v1[:-2]) == list(v0)  # the slot layout is untouched
    assert v1[-2] == pytest.approx(2.5e9 / MEMORY_SCALE_BYTES)
    assert v1[-1] == pytest.approx(0.05 / extra.time_scale_s, rel=1e-6)
    unbounded = Observation(Workload("llm"), 1e7, mec_memory_headroom_bytes=-1.0)
    assert extra.encode(unbounded)[-2] == OBS_HIGH


def test_batch_status_reports_what_the_policy_sees() -> None:
    _, srv, sim = _sim(max_batch=2)
    st0 = srv.status(0.0)
    assert (st0.active, st0.queue_len, st0.max_batch, st0.expected_wait_s) == (0, 0, 2, 0.0)
    for k in range(3):
        sim.start(k, Decision(FULL), Workload("llm"), _link(), 2.0)
    t_first = sim.next_time()
    sim.step()  # the first iteration admits two, the third waits
    st = srv.status(t_first)
    assert (st.active, st.queue_len) == (2, 1)
    assert st.iteration_s > 0 and st.expected_wait_s > 0


def test_env_prediction_prices_a_session_against_the_ones_decided_before() -> None:
    # agent.batchsim.PredictedBatchMec (the env's decision-time price): the first session is
    # priced alone; the second pays the curve's factor at 2 on each MEC computation that
    # starts while the first is still on the MEC, batch 1 after it (a rule computed by hand)
    from agent.batchsim import PredictedBatchMec

    m, srv, _ = _sim()
    _, _, m_pre, m_dec = _llm_times(m)
    mec = PredictedBatchMec(srv.cost, 8)
    plan = m.plan(Decision(FULL), Workload("llm"))
    a_end, a_slot, a0, a1 = mec.run(plan, _link(), 2.0)
    ready = 2.0 + up(1024) + D
    assert (a0, a1) == pytest.approx((ready, ready + m_pre + LLM_T * m_dec), abs=1e-12)
    assert a_end == pytest.approx(a1 + up(8) + D, abs=1e-12) and a_slot >= 0
    t = ready
    for secs in [m_pre] + [m_dec] * LLM_T:
        t += secs * (f(2) if t < a1 else 1.0)
    b_end, _, b0, b1 = mec.run(plan, _link(), 2.0)
    assert b0 == pytest.approx(ready, abs=1e-12)
    assert b1 == pytest.approx(t, abs=1e-9) and b_end == pytest.approx(t + up(8) + D, abs=1e-9)
    assert a1 < b1 < ready + f(2) * (m_pre + LLM_T * m_dec)  # partly batched, partly alone
    assert mec.on_mec(ready) == 2 and mec.on_mec(b1) == 0


def test_env_prediction_admits_at_most_max_batch() -> None:
    # a third session while two are on a MEC of max batch 2 starts when the first one leaves
    from agent.batchsim import PredictedBatchMec

    m, srv, _ = _sim()
    mec = PredictedBatchMec(srv.cost, 2)
    plan = m.plan(Decision(FULL), Workload("llm"))
    spans = [mec.run(plan, _link(), 2.0)[2:] for _ in range(3)]
    assert spans[2][0] == pytest.approx(min(spans[0][1], spans[1][1]), abs=1e-12)


def test_env_batch_with_max_batch_one_is_the_one_slot_env() -> None:
    # at most one session on the MEC: no batch ever forms, so the batching env prices every
    # request exactly as the one-slot env (same seed, same actions)
    from agent.env import AigcSplitEnv

    m = _model("llm")
    link = _link()
    latencies = []
    for cfg in (ScenarioConfig(mec_slots=1, n_devices=4, load=0.9, mec_model="slots"),
                ScenarioConfig(mec_model="batch", mec_max_batch=1, n_devices=4, load=0.9,
                               mec_batch_curve="llama7b-gpu")):
        env = AigcSplitEnv(m.device_profile, m.mec_profile, [link.up],  # type: ignore[list-item]
                           cfg)
        env.reset(seed=3)
        rng = np.random.default_rng(0)
        out = []
        for _ in range(300):
            allowed = np.flatnonzero(env.action_masks())
            _, _, _, trunc, info = env.step(int(rng.choice(allowed)))
            out.append((info["action"], info["latency_s"]))
            if trunc:
                env.reset()
        latencies.append(out)
    assert latencies[0] == latencies[1]
    assert sum(1 for a, _ in latencies[0] if a == 0) > 10  # offloads happened (the MEC was used)


def test_pinned_mec_arrival_shifts_the_session() -> None:
    """A replay of a measured arrival at the MEC: the session starts there, the rest follows."""
    m, _, sim = _sim()
    _, _, m_pre, m_dec = _llm_times(m)
    late = 2.0 + up(1024) + D + 0.05
    sim.start(0, Decision(FULL), Workload("llm"), _link(), 2.0, mec_arrival=late)
    res = sim.run()[0][1]
    assert res.latency_s == pytest.approx(up(1024) + D + 0.05 + m_pre + LLM_T * m_dec
                                          + up(8) + D, abs=1e-9)


def _with_batch_curve(factor4: float):
    """The llm fixture with a measured batch-4 curve: every block (and pass) ``factor4`` x its
    batch-1 median at batch 4."""
    import dataclasses

    from profiler.schema import LatencyStats, load_profile
    from tests.test_plan_closed_forms import FIX

    def at4(s: LatencyStats) -> dict[int, LatencyStats]:
        return {4: dataclasses.replace(s, median=s.median * factor4)}

    mec = load_profile(FIX / "llm.mec.json")
    passes = tuple(dataclasses.replace(
        p, blocks=tuple(dataclasses.replace(b, batch_latency=at4(b.latency)) for b in p.blocks),
        batch_whole=at4(p.whole)) for p in mec.passes)
    from agent.latency import LatencyModel

    return LatencyModel(load_profile(FIX / "llm.device.json"),
                        dataclasses.replace(mec, passes=passes),
                        wire_overhead=False)  # the closed forms price payload bytes


def test_profile_batch_curve_interpolates_between_measured_sizes() -> None:
    m = _with_batch_curve(2.0)
    _, _, m_pre, m_dec = _llm_times(m)
    srv = BatchServer.for_model(m, MecConfig("batch", 4, None, "profile"))
    sim = BatchSim(m, srv)
    for k in range(2):
        sim.start(k, Decision(FULL), Workload("llm"), _link(), 2.0)
    res = dict(sim.run())
    g2 = 1.0 + (2.0 - 1.0) * (2 - 1) / (4 - 1)  # linear between batch 1 (x1) and 4 (x2)
    want = up(1024) + D + g2 * (m_pre + LLM_T * m_dec) + up(8) + D
    assert res[0].latency_s == pytest.approx(want, abs=1e-9)
    with pytest.raises(MecConfigError, match="above the largest batch size"):
        BatchServer.for_model(m, MecConfig("batch", 5, None, "profile"))


def test_a_batch_curve_file_applies_its_shape_to_the_runs_batch_1_times(tmp_path: Path) -> None:
    """A batch profile file measured elsewhere (here: every block twice as slow at batch 1 and
    3x its own batch 1 at batch 4) gives the run's batch-1 times x its ratio, not its own
    absolute times: no step between batch 1 and 2."""
    import dataclasses

    from profiler.schema import LatencyStats, save_profile

    m = _model("llm", KV)

    def slower(s: LatencyStats) -> LatencyStats:
        return dataclasses.replace(s, median=2.0 * s.median)

    mec = m.mec_profile
    passes = tuple(dataclasses.replace(
        p, whole=slower(p.whole),
        batch_whole={4: dataclasses.replace(p.whole, median=6.0 * p.whole.median)},
        blocks=tuple(dataclasses.replace(
            b, latency=slower(b.latency),
            batch_latency={4: dataclasses.replace(b.latency, median=6.0 * b.latency.median)},
            state_bytes_per_token=b.state_bytes_per_token or 0,
            state_bytes_fixed=b.state_bytes_fixed or 0)
            for b in p.blocks)) for p in mec.passes)
    path = tmp_path / "llm.mec-other.batch.json"
    save_profile(dataclasses.replace(mec, passes=passes), path)
    _, _, m_pre, m_dec = _llm_times(m)  # the run's batch-1 MEC times, from the fixture
    cost = BatchCost(m, str(path), max_batch=4)
    for name, t1 in (("prefill", m_pre), ("decode", m_dec)):
        n_blocks = next(p.n_blocks for p in m.passes if p.name == name)
        for n, want in ((1, t1), (4, 3.0 * t1), (2, (1 + 2 / 3) * t1)):  # linear in 1..4
            got = sum(cost.block(name, j, n) for j in range(n_blocks))
            assert got == pytest.approx(want), (name, n)


def _varying_trace() -> Trace:
    from traces import DATA_DIR, load_trace

    return load_trace(DATA_DIR / "cellular_120s.csv")


def test_batch_oracle_with_one_device_is_the_slot_oracle() -> None:
    """One device never shares an iteration, so pricing each plan by replaying the batching
    MEC must pick what the slot oracle picks, at the same times (a varying generated trace)."""
    from agent.oracle import Oracle

    m = _model("llm", KV)
    acts = SplitActions(m)
    tr = _varying_trace()
    for scale in (0.02, 1.0):
        cfg = ScenarioConfig(n_devices=1, horizon_s=60.0)
        t = tr.scaled(scale)
        slots = run_policy(m, acts, Oracle(m, acts), t, cfg, 2)
        batch = run_policy(m, acts, Oracle(m, acts), t, ScenarioConfig(
            n_devices=1, horizon_s=60.0, mec_model="batch", mec_batch_curve="llama7b-gpu"), 2)
        assert [r.split for r in batch] == [r.split for r in slots]
        assert [r.t_end for r in batch] == pytest.approx([r.t_end for r in slots], abs=1e-9)
        assert len({r.split for r in slots}) >= 1 and len(slots) > 10


def test_batch_oracle_prices_what_then_happens_when_nothing_joins_later() -> None:
    """The oracle's price of its chosen plan is the request's end as simulated whenever no
    later request starts before that end (nothing it did not know can change it); sessions
    do overlap on the MEC here (4 devices at load 2), and its choice is never
    worse than any other plan priced the same way."""
    from agent.oracle import Oracle

    m = _model("llm", KV)
    acts = SplitActions(m)
    priced: list[tuple[float, float]] = []  # (start, price of the chosen plan)

    class Recording(Oracle):
        def decide_with(self, end, accepts, workload, t_start):  # type: ignore[no-untyped-def]
            costs = {a: end(acts.decision(a, workload)) for a in range(acts.n_actions)
                     if acts.mask(accepts)[a] and a != acts.local_action}
            d = super().decide_with(end, accepts, workload, t_start)
            best = min(costs.values(), default=math.inf)
            local = t_start + m.local_latency(workload)
            chosen = local if d.action == acts.local_action else costs[d.action]
            assert chosen <= min(best, local) + 1e-12
            priced.append((t_start, chosen))
            return d

    cfg = ScenarioConfig(n_devices=4, horizon_s=20.0, load=2.0, mec_model="batch",
                         mec_batch_curve="llama7b-gpu")
    res = run_policy(m, acts, Recording(m, acts), _varying_trace().scaled(0.3), cfg, 4,
                     detail=True)
    assert len(res) == len(priced) > 20
    first_mec = {r.t_start: min((s.t_start for s in r.steps if s.side == "mec"),
                                default=math.inf) for r in res}
    checked = 0
    for r in res:
        p = dict(priced)[r.t_start]
        # a later request can only change r's end through the MEC, before r ends
        if all(first_mec[s] >= r.t_end for s in first_mec if s > r.t_start):
            assert r.t_end == pytest.approx(p, abs=1e-9)
            checked += 1
    assert checked >= 3
    on_mec = sorted((r.t_start, r.t_end) for r in res if r.mec_s > 0)
    assert any(b[0] < a[1] for a, b in itertools.pairwise(on_mec))  # sessions overlapped


def test_auto_curve_resolution() -> None:
    """``auto``: the profile's own curve, else the model's shipped GPU profile, else the
    published GPU curve; the label names what was used."""
    from agent.mec_server import resolve_curve
    from profiler.schema import load_profile

    gpu = load_profile(ROOT / "profiles" / "gpt2.mec-gpu.json")
    cpu = load_profile(ROOT / "profiles" / "gpt2.mec-cpu.json")
    assert resolve_curve("auto", gpu) == "profile"
    assert resolve_curve("auto", cpu) == str(ROOT / "profiles" / "gpt2.mec-gpu.json")
    assert resolve_curve("auto", _model("llm").mec_profile) == "llama7b-gpu"  # no llm GPU file
    assert resolve_curve("llama7b-gpu", cpu) == "llama7b-gpu"
    label = MecConfig("batch", 8, None, "auto").resolved(cpu).label
    assert label == "batch<=8 (curve: profiles/gpt2.mec-gpu.json)"
    assert MecConfig().model == "batch" and ScenarioConfig().mec_model == "batch"


def test_a_measured_curve_runs_padded_to_a_faster_larger_batch() -> None:
    """A batch of n may run padded to any larger measured size: the time used is the least of
    the curve at n and every larger measured size (never decreasing in n)."""
    from agent.mec_server import padded

    pts = {1: 2.0, 2: 5.0, 4: 3.0, 8: 3.5}

    def at(k: int) -> float:  # linear between measured sizes
        return float(np.interp(k, list(pts), list(pts.values())))

    sizes = sorted(pts)
    assert padded(at, sizes, 1) == 2.0
    assert padded(at, sizes, 2) == 3.0  # batch 4 is faster than the measured 2
    assert padded(at, sizes, 6) == pytest.approx(3.25)
    assert padded(at, sizes, 8) == 3.5
    got = [padded(at, sizes, n) for n in range(1, 9)]
    assert got == sorted(got)
    # the shipped H200 GPT-2 decode: every block 1.9x at batch 2, 1.05x at 4; used: batch 4's
    from agent.latency import LatencyModel
    from profiler.schema import load_profile

    dev = load_profile(ROOT / "profiles" / "gpt2.device.json")
    gpu = load_profile(ROOT / "profiles" / "gpt2.mec-gpu.json")
    cost = BatchCost(LatencyModel(dev, gpu), "profile", 8)
    dec = next(p for p in gpu.passes if p.name == "decode")
    j = 1
    assert dec.blocks[j].latency_at(2).median > dec.blocks[j].latency_at(4).median
    assert cost.block("decode", j, 2) == pytest.approx(cost.block("decode", j, 4), rel=1e-12)
    assert cost.block("decode", j, 4) == pytest.approx(
        dec.blocks[j].latency_at(4).median / 1e3, rel=1e-9)


def test_exact_optimum_refuses_the_batching_mec() -> None:
    from agent.errors import AgentError
    from agent.optimum import exact_optimum, make_instance

    m = _model("llm")
    acts = SplitActions(m)
    cfg = ScenarioConfig(n_devices=1, horizon_s=1e12)
    inst = make_instance(m, _link().up, cfg, 0, 2)  # type: ignore[arg-type]
    with pytest.raises(AgentError, match="searches the slot MEC"):
        exact_optimum(m, acts, inst, cfg)


def test_a_curve_file_is_read_once_per_version(tmp_path: Path) -> None:
    """BatchCost is built per episode and per priced plan: the curve file is parsed once, and
    again when the file changes."""
    import shutil

    from agent.mec_server import _curve_profile

    src = Path(__file__).resolve().parent.parent / "profiles" / "gpt2.mec-cpu.batch.json"
    f = tmp_path / "curve.json"
    shutil.copy(src, f)
    first = _curve_profile(f)
    assert _curve_profile(f) is first
    text = f.read_text()
    f.write_text(text.replace('"command"', '"command" ', 1))  # another version, same content
    again = _curve_profile(f)
    assert again is not first and again == first
