"""Plan templates as actions: the action set of each model family, the plans they make, what is
masked, and the bad input (a template that does not fit, a policy of another action set)."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from agent.actions import SplitActions
from agent.errors import AgentError, PolicyMismatchError
from agent.latency import LatencyModel, MecState, simulate_request
from agent.link import Link
from agent.oracle import Oracle
from agent.plan import COMPUTE, DEVICE, MEC, SEND
from agent.policies import make_policy
from agent.policy import Workload
from agent.templates import action_set_id, family, hybrid_steps
from profiler.schema import load_profile
from traces import Trace

ROOT = Path(__file__).resolve().parent.parent
FIX = Path(__file__).parent / "fixtures" / "agent"


def _fix(name: str, **kw: float) -> LatencyModel:
    return LatencyModel(load_profile(FIX / f"{name}.device.json"),
                        load_profile(FIX / f"{name}.mec.json"), **kw)


def _real(name: str) -> LatencyModel:
    dev, mec = ROOT / "profiles" / f"{name}.device.json", ROOT / "profiles" / f"{name}.mec-cpu.json"
    if not (dev.is_file() and mec.is_file()):
        pytest.skip(f"profiles of {name} not present")
    return LatencyModel(load_profile(dev), load_profile(mec), mec_speedup=10.0)


def _link(bps: float, delay: float = 0.01) -> Link:
    return Link(Trace(np.array([0.0]), np.array([bps]), period_s=100.0), None, delay)


def test_action_sets_per_family() -> None:
    gpt2 = SplitActions(_real("gpt2"))
    assert gpt2.family == "llm"
    assert gpt2.names == ("offload", *(f"split:{k}" for k in range(1, 14)), "kv-down", "kv-up",
                          "local")
    sd = SplitActions(_real("sd15"))
    assert sd.family == "diffusion"
    assert sd.names[:7] == ("offload", "offload/vae-local", "offload/te-local", "unet-mec",
                            "hybrid:1/4", "hybrid:1/2", "hybrid:3/4")
    assert sd.names[-1] == "local" and sum(n.startswith("split:") for n in sd.names) == 3
    # schema-1 LLM fixture: no KV bytes, so the plans that move the KV cache are left out
    llm = SplitActions(_fix("llm"))
    assert "kv-down" not in llm.names and "kv-down" in llm.left_out
    assert family(_fix("twoblock")) == "chain"
    assert SplitActions(_fix("twoblock")).names == ("offload", "split:1", "local")
    assert action_set_id(_fix("twoblock")) == "templates-1:chain:offload,split:1,local"


@pytest.mark.parametrize(("steps", "frac", "m"), [(20, Fraction(1, 4), 5), (20, Fraction(3, 4), 15),
                                                  (10, Fraction(1, 4), 2), (3, Fraction(3, 4), 2),
                                                  (2, Fraction(1, 4), 1), (1, Fraction(1, 2), 1)])
def test_hybrid_steps_for_any_step_count(steps: int, frac: Fraction, m: int) -> None:
    assert hybrid_steps(frac, steps) == m


def test_hybrid_plan_moves_latent_and_embedding_down_once() -> None:
    model = _fix("diffusion")
    acts = SplitActions(model)
    wl = Workload("diffusion", {"unet": 8})
    d = acts.decision(acts.index("hybrid:1/4"), wl)
    assert d.splits["unet"] == (0, 0, 6, 6, 6, 6, 6, 6)
    assert d.splits["text_encoder"] == 0 and d.splits["vae_decoder"] == 2
    plan = model.plan(d, wl)
    downs = [s for s in plan.steps if s.kind == SEND and s.side == MEC]
    # the text encoder's output (the UNet's context) and step 1's latent, nothing else
    assert [(s.pass_name, s.rep, s.nbytes) for s in downs] == [("text_encoder", 0, 236544),
                                                                 ("unet", 1, 65536)]
    ups = [s for s in plan.steps if s.kind == SEND and s.side == DEVICE]
    assert len(ups) == 1 and ups[0].what == "input"
    mec_steps = [s for s in plan.steps if s.kind == COMPUTE and s.side == MEC]
    assert [(s.pass_name, s.rep) for s in mec_steps] == [("text_encoder", 0), ("unet", 0),
                                                          ("unet", 1)]


def test_kv_down_moves_the_cache_at_prompt_length() -> None:
    model = _real("gpt2")
    acts = SplitActions(model)
    wl = Workload("gpt2")
    plan = model.plan(acts.decision(acts.index("kv-down")), wl)
    states = [s for s in plan.steps if s.kind == SEND and s.what == "state"]
    assert len(states) == 1 and states[0].side == MEC
    dev = load_profile(ROOT / "profiles" / "gpt2.device.json")
    prefill = dev.passes[0]
    assert states[0].nbytes == prefill.state_bytes(0, prefill.n_blocks, 128)
    up = model.plan(acts.decision(acts.index("kv-up")), wl)
    st_up = [s for s in up.steps if s.kind == SEND and s.what == "state"]
    assert len(st_up) == 1 and st_up[0].side == DEVICE and st_up[0].nbytes == states[0].nbytes


def test_greedy_and_oracle_choose_from_the_same_set() -> None:
    """A busy MEC (one long session queued): on a fast link the greedy estimate and the oracle
    both leave full offload for a plan that keeps some work on the device."""
    model = _fix("diffusion", mec_speedup=4.0)
    acts = SplitActions(model)
    link = _link(1e8)
    wl = Workload("diffusion")
    busy = MecState(1)
    busy.commit(0, 0.0, 1.0)
    orc = Oracle(model, acts).decide_future(link, busy, wl, 0.0)
    ends = {}
    for a in range(acts.n_actions):
        ends[acts.names[a]] = simulate_request(model, link, acts.decision(a, wl), wl, 0.0,
                                               busy.copy(), detail=False).t_end
    assert acts.names[orc.action] == min(ends, key=ends.__getitem__)
    costs = acts.costs(wl)
    assert costs.predict(1e8, 0.02, 1.0).shape == (acts.n_actions,)


def test_memory_mask_and_admission() -> None:
    acts = SplitActions(_real("sd15"), device_memory_bytes=600_000_000)
    m = dict(zip(acts.names, acts.mask().tolist(), strict=True))
    assert m["offload"] and m["offload/vae-local"] and m["offload/te-local"]
    assert not m["local"] and not m["hybrid:1/2"]
    # local does not fit either: with the MEC refusing sessions, the memory mask still holds
    assert acts.mask(False).tolist() == acts.mask().tolist()
    fits = SplitActions(_real("sd15"))
    assert fits.mask(False).tolist() == [False] * (fits.n_actions - 1) + [True]


def test_bad_templates_and_policy_of_another_action_set(tmp_path: Path) -> None:
    model = _fix("llm")
    with pytest.raises(AgentError, match=re.escape("plan template 'kv-up' does not fit the 'llm' "
                                                   "profiles: ")):
        SplitActions(model, names=["kv-up"])
    with pytest.raises(AgentError, match=re.escape("'hybrid:1/2' is not a plan template of the "
                                                   "'llm' (llm) action set")):
        SplitActions(model, names=["hybrid:1/2"])
    only = SplitActions(model, names=["split:3"])
    assert only.names == ("offload", "split:3", "local")
    # a policy zip recorded with another action set: one line naming the retrain command
    from sb3_contrib import MaskablePPO

    from agent.env import AigcSplitEnv
    from agent.scenario import ScenarioConfig
    from traces import DATA_DIR, load_traces

    env = AigcSplitEnv(FIX / "llm.device.json", FIX / "llm.mec.json",
                       load_traces(DATA_DIR / "train")[:1], ScenarioConfig(horizon_s=20.0))
    algo = MaskablePPO("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=1, device="cpu")
    zp = tmp_path / "p.zip"
    algo.save(str(zp))
    from agent.plan import SEMANTICS

    side = {"model": "llm", "mec_speedup": 1.0, "semantics": SEMANTICS,
            "action_set": "templates-0:llm:offload,local"}
    zp.with_suffix(".json").write_text(json.dumps(side))
    dev, mec = load_profile(FIX / "llm.device.json"), load_profile(FIX / "llm.mec.json")
    with pytest.raises(PolicyMismatchError, match=re.escape(
            "policy was trained on action set 'templates-0:llm:offload,local', not "
            "'templates-1:llm:offload,")):
        make_policy(str(zp), dev, mec)
    side["action_set"] = env.actions.action_set
    zp.with_suffix(".json").write_text(json.dumps(side))
    assert make_policy(str(zp), dev, mec).decide  # the same action set loads
