"""The plan semantics against the closed forms of shared/PLANS.md, on a constant link.

Every expected value is written from the profile numbers by hand (PLANS.md's formulas), not
from the simulator: ``up(B) = 8B/R``, ``d`` one-way delay, ``D``/``M`` device/MEC times.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from agent.errors import AgentError
from agent.latency import LatencyModel, simulate_request
from agent.link import Link
from agent.plan import COMPUTE, DEVICE, MEC, SEND
from agent.policy import Decision, Workload
from profiler.schema import load_profile
from traces import Trace

FIX = Path(__file__).parent / "fixtures" / "agent"
R = 8e6  # bit/s: 1 MB/s
D = 0.01  # one-way delay


def up(nbytes: float) -> float:
    return 8.0 * nbytes / R


def _link() -> Link:
    return Link(Trace(np.array([0.0]), np.array([R]), period_s=100.0), None, D)


def _model(name: str, kv_per_token: int | None = None) -> LatencyModel:
    m = LatencyModel(load_profile(FIX / f"{name}.device.json"),
                     load_profile(FIX / f"{name}.mec.json"),
                     wire_overhead=False)  # PLANS.md's closed forms price payload bytes
    if kv_per_token is not None:  # hand-set state: every h.* layer keeps a KV cache
        passes = tuple(dataclasses.replace(p, state=tuple(
            (kv_per_token if b.startswith("h.") else 0, 0) for b in p.block_names))
            for p in m.passes)
        m.passes = passes
        m._by_name = {p.name: p for p in passes}
    return m


# llm fixture (ms): prefill embed 1 + 12 x 19 + head 91 = 320 device; decode 0.2 + 12 x 2.4 +
# 3.6 = 32.6; MEC = the mec fixture. P = 1024 B / 8 = 128 prompt tokens, T = 32 decodes.
LLM_T = 32
LLM_P = 128
KV = 6144  # 2 x 768 x 4 B per layer per token (GPT-2 small fp32)


def _llm_times(m: LatencyModel) -> tuple[float, float, float, float]:
    pre, dec = m.pass_costs("prefill"), m.pass_costs("decode")
    return pre.device_s[14], dec.device_s[14], pre.mec_s[0], dec.mec_s[0]


def _run(m: LatencyModel, splits: dict[str, int | tuple[int, ...]], wl: str):
    return simulate_request(m, _link(), Decision(splits), Workload(wl), 2.0)


def test_gpt2_full_offload_streams_tokens() -> None:
    m = _model("llm")
    _, _, m_pre, m_dec = _llm_times(m)
    assert m_pre == pytest.approx(0.001 * (0.6 + 12 * 11.4 + 54.6))  # hand sum of the fixture
    assert m_dec == pytest.approx(0.001 * (0.12 + 12 * 1.44 + 2.16))
    res = _run(m, {"prefill": 0, "decode": 0}, "llm")
    ttft = up(1024) + D + m_pre + up(8) + D
    assert res.ttft_s == pytest.approx(ttft, abs=1e-12)
    assert res.tpot_s == pytest.approx(m_dec, abs=1e-12)
    assert res.latency_s == pytest.approx(up(1024) + D + m_pre + LLM_T * m_dec + up(8) + D,
                                          abs=1e-12)
    assert res.upload_bytes == 1024 and res.download_bytes == 8 * (LLM_T + 1)
    assert len(res.token_times) == LLM_T + 1
    # one send up, no device computation, every token a one-way message
    sends = [s for s in res.steps if s.kind == "send"]
    assert [s.side for s in sends] == ["up"] + ["down"] * (LLM_T + 1)
    assert not any(s.kind == "compute" and s.side == "device" for s in res.steps)


def test_gpt2_local_has_no_transfer() -> None:
    m = _model("llm")
    d_pre, d_dec, _, _ = _llm_times(m)
    res = _run(m, {"prefill": 14, "decode": 14}, "llm")
    assert res.latency_s == pytest.approx(d_pre + LLM_T * d_dec, abs=1e-12)
    assert res.ttft_s == pytest.approx(d_pre, abs=1e-12)
    assert res.tpot_s == pytest.approx(d_dec, abs=1e-12)
    assert res.upload_bytes == res.download_bytes == 0
    assert all(s.kind == "compute" for s in res.steps)


def test_gpt2_split_pays_a_round_trip_per_token() -> None:
    m = _model("llm", KV)
    pre, dec = m.pass_costs("prefill"), m.pass_costs("decode")
    k = 5
    per_pre = pre.device_s[k] + up(393216) + D + pre.mec_s[k] + up(8) + D
    per_dec = dec.device_s[k] + up(3072) + D + dec.mec_s[k] + up(8) + D
    res = _run(m, {"prefill": k, "decode": k}, "llm")
    assert res.ttft_s == pytest.approx(per_pre, abs=1e-12)
    assert res.latency_s == pytest.approx(per_pre + LLM_T * per_dec, abs=1e-12)
    # the KV caches stay with their layers: no state crosses
    assert not any(s.what == "state" for s in res.steps)


def test_prefill_on_mec_then_decode_on_device_moves_the_cache_down() -> None:
    m = _model("llm", KV)
    _, d_dec, m_pre, _ = _llm_times(m)
    res = _run(m, {"prefill": 0, "decode": 14}, "llm")
    kv = 12 * KV * LLM_P
    assert kv == 9_437_184  # PLANS.md: 9.4 MB at 128 tokens
    ttft = up(1024) + D + m_pre + up(8) + D
    assert res.ttft_s == pytest.approx(ttft, abs=1e-12)
    # token and caches share the downlink back to back (the cache queues behind the token)
    assert res.latency_s == pytest.approx(ttft + up(kv) + LLM_T * d_dec, abs=1e-9)
    states = [s for s in res.steps if s.what == "state"]
    assert len(states) == 1 and states[0].side == "down" and states[0].nbytes == kv


def test_prefill_on_device_then_decode_on_mec_moves_the_cache_up() -> None:
    m = _model("llm", KV)
    d_pre, _, _, m_dec = _llm_times(m)
    res = _run(m, {"prefill": 14, "decode": 0}, "llm")
    kv = 12 * KV * LLM_P
    assert res.ttft_s == pytest.approx(d_pre, abs=1e-12)
    start_dec = d_pre + up(kv + 8) + D
    assert res.latency_s == pytest.approx(start_dec + LLM_T * m_dec + up(8) + D, abs=1e-9)
    assert res.upload_bytes == kv + 8


def test_mid_request_migration_costs_the_cache_at_that_length() -> None:
    m = _model("llm", KV)
    r = 5  # decodes 0..4 on the device, 5.. on the MEC
    splits = {"prefill": 14, "decode": tuple([14] * r + [0] * (LLM_T - r))}
    res = _run(m, splits, "llm")
    moved = [s for s in res.steps if s.what == "state"]
    assert len(moved) == 1
    assert moved[0].nbytes == 12 * KV * (LLM_P + r)  # the cache holds P + r tokens then
    assert res.upload_bytes == 12 * KV * (LLM_P + r) + 8  # plus the token that feeds decode r


def test_schema1_profile_refuses_a_plan_that_moves_state() -> None:
    m = _model("llm")  # the fixture has no state bytes (schema 1)
    with pytest.raises(AgentError, match=r"schema 1.*upgrade"):
        _run(m, {"prefill": 0, "decode": 14}, "llm")
    # plans that keep every layer on one side stay valid
    _run(m, {"prefill": 0, "decode": 0}, "llm")
    _run(m, {"prefill": 4, "decode": 4}, "llm")


# diffusion fixture: text encoder 2 blocks, UNet 6 blocks x S = 10 steps, VAE 2 blocks;
# emb = 236544 B, latent 65536 B, image 786432 B, prompt 616 B.
S = 10


def _sd(m: LatencyModel) -> tuple[float, ...]:
    te, un, va = (m.pass_costs(n) for n in ("text_encoder", "unet", "vae_decoder"))
    return te.mec_s[0], un.mec_s[0], va.mec_s[0], te.local_s, un.local_s, va.local_s


def test_sd_full_offload_sends_prompt_up_and_image_down() -> None:
    m = _model("diffusion")
    m_te, m_un, m_va, *_ = _sd(m)
    res = _run(m, {"text_encoder": 0, "unet": 0, "vae_decoder": 0}, "diffusion")
    assert res.latency_s == pytest.approx(
        up(616) + D + m_te + S * m_un + m_va + up(786432) + D, abs=1e-9)
    assert (res.upload_bytes, res.download_bytes) == (616, 786432)


def test_sd_local() -> None:
    m = _model("diffusion")
    *_, d_te, d_un, d_va = _sd(m)
    res = _run(m, {"text_encoder": 2, "unet": 6, "vae_decoder": 2}, "diffusion")
    assert res.latency_s == pytest.approx(d_te + S * d_un + d_va, abs=1e-9)
    assert res.upload_bytes == res.download_bytes == 0


def test_sd_hybrid_first_m_steps_on_mec() -> None:
    m = _model("diffusion")
    m_te, m_un, _, _, d_un, d_va = _sd(m)
    steps = 3
    res = _run(m, {"text_encoder": 0, "unet": tuple([0] * steps + [6] * (S - steps)),
                   "vae_decoder": 2}, "diffusion")
    # PLANS.md 8, with the prompt embedding sent as soon as the text encoder made it (eager):
    # it travels while the MEC runs its steps, so only the latent is on the critical path
    # (here up(emb) = 0.24 s < 3 MEC steps); PLANS.md's "lat + emb after the m steps" is the
    # lazy variant, 8 x emb / R slower.
    t_mec_done = up(616) + D + m_te + steps * m_un
    assert up(236544) + D < steps * m_un
    expected = t_mec_done + up(65536) + D + (S - steps) * d_un + d_va
    assert res.latency_s == pytest.approx(expected, abs=1e-9)
    assert res.download_bytes == 65536 + 236544


def test_plan_orders_each_side_consistently() -> None:
    """Every computation's inputs are made or received before it, on its own side."""
    m = _model("llm", KV)
    splits = {"prefill": 3, "decode": tuple([14, 0, 7, 0] * 8)}
    plan = m.plan(Decision(splits), Workload("llm"))
    have = {DEVICE: set(plan.initial), MEC: set()}
    for st in plan.steps:
        if st.kind == COMPUTE:
            assert set(st.needs) <= have[st.side], st
            have[st.side] |= set(st.makes)
        else:
            assert st.kind == SEND and set(st.items) <= have[st.side], st
            have[1 - st.side] |= set(st.items)
    assert set(plan.outputs) <= have[DEVICE]
