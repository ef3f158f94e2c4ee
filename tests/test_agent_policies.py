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
from agent.policies import FixedPolicy, GreedyPolicy, SB3Policy, ScenarioWarning, make_policy
from agent.policy import Observation, Policy, Workload
from agent.scenario import ScenarioConfig, run_policy
from profiler.schema import (
    Block,
    Hardware,
    LatencyStats,
    ModelInfo,
    Pass,
    Profile,
    load_profile,
)
from traces import DATA_DIR, Trace, load_traces

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
    assert off.decide(_obs("diffusion", 1e7, accepts=False)).action == 10  # local, the last


def test_greedy_follows_throughput_and_wait() -> None:
    dev, mec = _profiles("diffusion")
    g = make_policy("greedy", dev, mec, mec_speedup=4.0)
    assert isinstance(g, GreedyPolicy)
    loc = 10
    assert g.decide(_obs("diffusion", 2e4)).action == loc          # link too slow: local
    assert g.decide(_obs("diffusion", 1e8)).action == 0            # fast link: offload
    assert g.decide(_obs("diffusion", 1e8, wait=1e4)).action == loc  # MEC jammed: local
    # nothing measured, or outages (<= OUTAGE_BELOW_BPS): read as an outage of OUTAGE_WAIT_S,
    # then OUTAGE_BPS (here that offloads: 10 s + 21.7 s x 1/4 < 21.7 s local)
    from agent.actions import OUTAGE_BELOW_BPS, OUTAGE_BPS, OUTAGE_WAIT_S

    out = g.decide(_obs("diffusion", OUTAGE_BPS, wait=OUTAGE_WAIT_S)).action
    assert g.decide(_obs("diffusion", 0.0)).action == out != loc
    assert g.decide(_obs("diffusion", OUTAGE_BELOW_BPS)).action == out


def test_bad_specs() -> None:
    dev, mec = _profiles("llm")
    with pytest.raises(AgentError, match=re.escape("Did you mean 'greedy'?")):
        make_policy("gredy", dev, mec)
    with pytest.raises(AgentError, match=re.escape("'split:99' is not a plan template of the "
                                                   "'llm' (llm) action set; use one of offload,")):
        make_policy("fixed:99", dev, mec)
    with pytest.raises(AgentError, match="'x' is not a plan template"):
        make_policy("fixed:x", dev, mec)
    # a template of the family that the profile cannot express: one line saying why
    with pytest.raises(AgentError, match=re.escape("plan template 'kv-down' does not fit the "
                                                   "'llm' profiles: ")):
        make_policy("fixed:kv-down", dev, mec)
    with pytest.raises(AgentError, match="not found"):
        make_policy("/nonexistent/policy.zip", dev, mec)
    with pytest.raises(AgentError, match="mec-speedup"):
        make_policy("local", dev, mec, mec_speedup=-1)


def _hand_twoblock() -> tuple[Profile, Profile]:
    """One pass, two blocks, numbers chosen so that each split wins on some constant link.

    Device: a 40 ms, b 500 ms; MEC: a 10 ms, b 50 ms; input 1 MB (a raw image), cut after
    a 10 kB, output 100 B. Per request on a constant link of R bit/s with one-way delay d:
    local = 0.540 s; split 1 = 0.040 + 8e4/R + d + 0.050 + 800/R + d;
    offload = 8e6/R + d + 0.060 + 800/R + d.
    """
    def prof(cls: str, a_ms: float, b_ms: float) -> Profile:
        blocks = (Block("a", LatencyStats(a_ms, a_ms, a_ms, 0.0, 5), 10_000, 0),
                  Block("b", LatencyStats(b_ms, b_ms, b_ms, 0.0, 5), 100, 0))
        whole = LatencyStats(a_ms + b_ms, a_ms + b_ms, a_ms + b_ms, 0.0, 5)
        return Profile(ModelInfo("handtwo", "hand-made in the test"),
                       Hardware(cls, "hand", None, 1, "hand"),
                       (Pass("main", 1, blocks, whole, input_bytes=1_000_000, output_bytes=100),))

    return prof("device", 40.0, 500.0), prof("mec", 10.0, 50.0)


@pytest.mark.parametrize(("mbps", "best"), [
    # 0.05 Mbit/s: split 1 = 0.04 + 1.6 + 0.01 + 0.05 + 0.016 + 0.01 = 1.726 s > local 0.54 s
    (0.05, 2),
    # 10 Mbit/s: offload 0.8 + 0.08 + 0.02 = 0.90 s; split 1 = 0.04 + 0.008 + 0.05 + 0.02
    # + 0.00008 = 0.118 s; local 0.54 s
    (10.0, 1),
    # 1 Gbit/s: offload 0.008 + 0.06 + 0.02 = 0.088 s; split 1 = 0.04 + 0.05 + 0.02 = 0.110 s
    (1000.0, 0),
])
def test_fixed_picks_the_split_known_by_hand(mbps: float, best: int) -> None:
    dev, mec = _hand_twoblock()
    link = Trace(np.array([0.0]), np.array([mbps * 1e6]), 60.0, name=f"const{mbps:g}")
    cfg = ScenarioConfig(n_devices=1, horizon_s=30.0, one_way_delay_s=0.010)
    p = make_policy("fixed", dev, mec, traces=[link], config=cfg)
    assert isinstance(p, FixedPolicy)
    assert p.decide(_obs("handtwo", mbps * 1e6)).split_for("main") == best
    # and the simulator's latency of that split is the hand value above (one device, idle MEC;
    # payload bytes only, as the hand values)
    model = LatencyModel(dev, mec, wire_overhead=False)
    acts = SplitActions(model)
    got = run_policy(model, acts, p, link, cfg, 0)
    assert got
    r, d = mbps * 1e6, 0.010
    hand = {2: 0.540, 1: 0.040 + 8e4 / r + d + 0.050 + 800 / r + d,
            0: 8e6 / r + d + 0.060 + 800 / r + d}[best]
    assert all(x.latency_s == pytest.approx(hand, rel=1e-9) for x in got), hand


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
    if pol.ranges is None:  # trained for one scenario: another MEC speed-up is refused
        with pytest.raises(PolicyMismatchError, match="mec-speedup"):
            make_policy("default", dev, mec, mec_speedup=1.0)
    else:  # trained over ranges: any speed-up runs, one outside the range warns
        with pytest.warns(ScenarioWarning, match="--mec-speedup 1 is outside"):
            make_policy("default", dev, mec, mec_speedup=1.0)
        assert make_policy("default", dev, mec, mec_speedup=5.0).decide(o).action >= 0


def test_throughput_estimate_is_the_mean_of_the_samples() -> None:
    from agent.observation import throughput_estimate

    # a 1-s outage snapshot among 10 Mbit/s ones: the link averaged 7.5 Mbit/s over the four
    # seconds (the harmonic mean would be ruled by the slow sample: ~ 1 kbit/s)
    assert throughput_estimate((1e7, 1e7, 1e3, 1e7)) == pytest.approx((3e7 + 1e3) / 4)
    assert throughput_estimate((1e7, 0.0)) == pytest.approx(5e6)  # an outage counts as 0
    assert throughput_estimate((), 2e6) == 2e6  # no samples: the device's own estimate
    # greedy and the observation use it: one slow snapshot no longer sends SD local
    dev, mec = _profiles("diffusion")
    g = make_policy("greedy", dev, mec, mec_speedup=4.0)
    slow = Observation(Workload("diffusion"), throughput_bps=2e4,
                       recent_throughputs_bps=(2e4,) * 4, rtt_s=0.02)
    mixed = Observation(Workload("diffusion"), throughput_bps=2.7e4,
                        recent_throughputs_bps=(1e8, 1e8, 1e8, 2e4), rtt_s=0.02)
    assert g.decide(slow).action == 10 and g.decide(mixed).action == 0


def test_policy_of_another_throughput_estimate_is_refused(tmp_path: Path) -> None:
    import json

    from sb3_contrib import MaskablePPO

    from agent.env import AigcSplitEnv
    from agent.observation import ESTIMATE
    from agent.plan import SEMANTICS

    dev, mec = _profiles("llm")
    env = AigcSplitEnv(dev, mec, load_traces(DATA_DIR / "train")[:1],
                       ScenarioConfig(horizon_s=20.0))
    algo = MaskablePPO("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=1, device="cpu")
    zp = tmp_path / "old.zip"
    algo.save(str(zp))
    scales = env.encoder.scales()
    side = {"model": "llm", "mec_speedup": 1.0, "semantics": SEMANTICS,
            "action_set": env.actions.action_set, "obs_scales": scales}
    zp.with_suffix(".json").write_text(json.dumps(side))
    assert make_policy(str(zp), dev, mec).decide  # the same estimate loads
    del scales["estimate"]  # a sidecar from before the estimate was recorded: harmonic mean
    zp.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(PolicyMismatchError, match=re.escape(
            f"policy was trained with throughput estimate 'harmonic mean', not {ESTIMATE!r} "
            "(agent/observation.py); retrain it with the command in its sidecar old.json")):
        make_policy(str(zp), dev, mec)


@pytest.mark.parametrize("bps", [0.0, 5e3, 1e4, 2e4, 1e7])
def test_observation_predictions_read_outages_as_greedy_does(bps: float) -> None:
    from agent.observation import OBS_HIGH, ObservationEncoder

    dev, mec = _profiles("diffusion")
    g = make_policy("greedy", dev, mec, mec_speedup=4.0)
    assert isinstance(g, GreedyPolicy)
    enc = ObservationEncoder(g.actions)
    costs = g.actions.costs(Workload("diffusion"))
    vec = enc.encode_raw((bps,), bps, 0.02, 0, 0, 1, 1.5, costs)
    want = np.minimum(costs.predict(bps, 0.02, 1.5) / costs.local_s, OBS_HIGH)
    assert np.allclose(vec[-g.actions.n_actions:], want, rtol=1e-5)
