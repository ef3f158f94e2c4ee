"""make_policy specs, greedy and oracle behaviour, SB3 training smoke test and the RL wrapper."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from agent.actions import SplitActions
from agent.errors import AgentError, PolicyMismatchError
from agent.latency import LatencyModel
from agent.oracle import Oracle
from agent.policies import FixedPolicy, GreedyPolicy, SB3Policy, make_policy
from agent.policy import Observation, Policy, Workload
from agent.scenario import ScenarioConfig, run_policy
from profiler.schema import Profile, load_profile
from traces import DATA_DIR, load_traces

FIX = Path(__file__).parent / "fixtures" / "agent"


def _profiles(name: str) -> tuple[Profile, Profile]:
    return load_profile(FIX / f"{name}.device.json"), load_profile(FIX / f"{name}.mec.json")


def _obs(model: str, bps: float, wait: float = 0.0, accepts: bool = True) -> Observation:
    return Observation(Workload(model), throughput_bps=bps, recent_throughputs_bps=(bps,),
                       rtt_s=0.02, mec_expected_wait_s=wait, mec_accepts=accepts)


def test_basic_specs() -> None:
    dev, mec = _profiles("diffusion")
    local = make_policy("local", dev, mec)
    off = make_policy("offload", dev, mec)
    fix = make_policy("fixed:3", dev, mec)
    for p in (local, off, fix):
        assert isinstance(p, Policy)
    o = _obs("diffusion", 1e7)
    assert local.decide(o).splits == {"text_encoder": 2, "unet": 6, "vae_decoder": 2}
    assert off.decide(o).splits == {"text_encoder": 0, "unet": 0, "vae_decoder": 0}
    assert fix.decide(o).split_for("unet") == 3
    assert off.decide(_obs("diffusion", 1e7, accepts=False)).action == 6


def test_greedy_follows_throughput_and_wait() -> None:
    dev, mec = _profiles("diffusion")
    g = make_policy("greedy", dev, mec, mec_speedup=4.0)
    assert isinstance(g, GreedyPolicy)
    assert g.decide(_obs("diffusion", 1e3)).action == 6          # link too slow: local
    assert g.decide(_obs("diffusion", 1e8)).action == 0          # fast link: offload
    assert g.decide(_obs("diffusion", 1e8, wait=1e4)).action == 6  # MEC jammed: local
    assert g.decide(_obs("diffusion", 0.0)).action == 6          # nothing measured yet


def test_bad_specs() -> None:
    dev, mec = _profiles("llm")
    with pytest.raises(AgentError, match=re.escape("Did you mean 'greedy'?")):
        make_policy("gredy", dev, mec)
    with pytest.raises(AgentError, match="out of range"):
        make_policy("fixed:99", dev, mec)
    with pytest.raises(AgentError, match="integer"):
        make_policy("fixed:x", dev, mec)
    with pytest.raises(AgentError, match="not found"):
        make_policy("/nonexistent/policy.zip", dev, mec)
    with pytest.raises(AgentError, match="mec-speedup"):
        make_policy("local", dev, mec, mec_speedup=-1)


def test_fixed_picks_best_split_on_training_traces() -> None:
    dev, mec = _profiles("twoblock")
    traces = load_traces(DATA_DIR / "train")[:2]
    cfg = ScenarioConfig(n_devices=1, horizon_s=30.0)
    p = make_policy("fixed", dev, mec, traces=traces, config=cfg)
    assert isinstance(p, FixedPolicy)
    model = LatencyModel(dev, mec)
    acts = SplitActions(model)
    means = [np.mean([r.latency_s for j, tr in enumerate(traces) for r in run_policy(
        model, acts, FixedPolicy("f", acts, a), tr, cfg, j)]) for a in range(acts.n_actions)]
    assert p.action == int(np.argmin(means))


@pytest.mark.parametrize("name", ["llm", "diffusion"])
def test_oracle_lower_bound_request_by_request(name: str) -> None:
    """One device: same arrivals for every policy, and the oracle is never later."""
    dev, mec = _profiles(name)
    model = LatencyModel(dev, mec, mec_speedup=4.0)
    acts = SplitActions(model)
    tr = load_traces(DATA_DIR / "train")[0]
    cfg = ScenarioConfig(n_devices=1, horizon_s=300.0, one_way_delay_s=0.01, load=0.8)
    orc = run_policy(model, acts, Oracle(model, acts), tr, cfg, 5)
    assert len(orc) >= 8
    for spec in ("local", "offload", "greedy", "fixed:2"):
        res = run_policy(model, acts, make_policy(spec, dev, mec, mec_speedup=4.0), tr, cfg, 5)
        n = min(len(res), len(orc))
        ends_o = np.array([r.t_end for r in orc[:n]])
        ends_p = np.array([r.t_end for r in res[:n]])
        assert np.all(ends_o <= ends_p + 1e-9), spec


def test_sb3_smoke_train_and_wrap(tmp_path: Path) -> None:
    from sb3_contrib import MaskablePPO

    from agent.env import AigcSplitEnv

    dev, mec = _profiles("llm")
    env = AigcSplitEnv(dev, mec, load_traces(DATA_DIR / "train")[:1],
                       ScenarioConfig(horizon_s=30.0))
    algo = MaskablePPO("MlpPolicy", env, n_steps=128, batch_size=64, n_epochs=1, seed=0,
                       device="cpu")
    algo.learn(256)
    path = tmp_path / "p.zip"
    algo.save(str(path))
    pol = make_policy(str(path), dev, mec)
    assert isinstance(pol, SB3Policy)
    d = pol.decide(_obs("llm", 5e6))
    assert 0 <= d.action <= 14
    assert pol.decide(_obs("llm", 5e6, accepts=False)).action == 14
    # another model's profiles: the observation space does not fit
    dev2, mec2 = _profiles("diffusion")
    with pytest.raises(PolicyMismatchError, match="observation space"):
        make_policy(str(path), dev2, mec2)
    (tmp_path / "p.json").write_text('{"model": "other", "mec_speedup": 1.0}')
    with pytest.raises(PolicyMismatchError, match="trained for model"):
        make_policy(str(path), dev, mec)


@pytest.mark.parametrize("model", ["gpt2", "sd15"])
def test_shipped_default_policy_fits_profiles(model: str) -> None:
    root = Path(__file__).resolve().parent.parent
    dev_p, mec_p = root / "profiles" / f"{model}.device.json", root / "profiles" / f"{model}.mec-cpu.json"
    if not (dev_p.is_file() and mec_p.is_file()):
        pytest.skip(f"profiles of {model} not present")
    dev, mec = load_profile(dev_p), load_profile(mec_p)
    pol = make_policy("default", dev, mec, mec_speedup=10.0)
    assert isinstance(pol, SB3Policy)
    assert (root / "policies" / f"{model}.zip").stat().st_size < 2_000_000
    o = Observation(Workload(model), throughput_bps=1e6, recent_throughputs_bps=(1e6,) * 4,
                    rtt_s=0.02)
    a = pol.decide(o).action
    assert 0 <= a < pol.actions.n_actions
    with pytest.raises(PolicyMismatchError, match="mec-speedup"):
        make_policy("default", dev, mec, mec_speedup=1.0)
