"""Training over scenario ranges: draws, the env's exact latency under a drawn scenario, and a
policy asked for a scenario outside its ranges (a warning naming the range, not a refusal)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent.defaults import resolve_scenario
from agent.env import AigcSplitEnv
from agent.errors import AgentError
from agent.latency import LatencyModel, MecState, simulate_request
from agent.plan import SEMANTICS
from agent.policies import SB3Policy, ScenarioWarning, make_policy
from agent.ranges import ScenarioRanges
from agent.scenario import ScenarioConfig
from profiler.schema import load_profile
from traces import DATA_DIR, load_traces

FIX = Path(__file__).parent / "fixtures" / "agent"


def test_draws_stay_in_ranges_and_round_trip() -> None:
    r = ScenarioRanges()
    rng = np.random.default_rng(0)
    draws = [r.draw(rng) for _ in range(2000)]
    for k in ("scale", "delay_ms", "devices", "mec_slots", "load", "mec_speedup",
              "device_speed"):
        lo, hi = getattr(r, k)
        vals = [d[k] for d in draws]
        assert lo * (1 - 1e-9) <= min(vals) and max(vals) <= hi * (1 + 1e-9), k
    # log-uniform scale: the share of draws below 0.1 and above 1 is the share of the decades
    # (0.003-100: 1.52 and 2 of 4.52 decades)
    below = sum(d["scale"] < 0.1 for d in draws) / len(draws)
    above = sum(d["scale"] > 1.0 for d in draws) / len(draws)
    decades = np.log10(100 / 0.003)
    assert abs(below - np.log10(0.1 / 0.003) / decades) < 0.04
    assert abs(above - 2 / decades) < 0.04
    assert {d["devices"] for d in draws} == set(map(float, range(1, 17)))
    assert set(d["mec_speedup"] for d in draws) == set(r.mec_speedup_grid())
    assert ScenarioRanges.from_json(json.loads(json.dumps(r.to_json()))) == r
    assert r.outside({"scale": 0.5, "delay_ms": 10.0}) == []
    assert r.outside({"scale": 200.0}) == [
        "--scale 200 is outside the policy's training range 0.003-100; its decisions there are "
        "extrapolated"]
    with pytest.raises(AgentError, match="scenario range load"):
        ScenarioRanges(load=(1.0, 0.5))


def test_batch_limit_is_drawn_only_for_the_batching_mec() -> None:
    r = ScenarioRanges()
    slots = r.draw(np.random.default_rng(3))
    assert "mec_max_batch" not in slots
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    batch = [r.draw(rng_a, batching=True) for _ in range(500)]
    assert {d["mec_max_batch"] for d in batch} == set(map(float, range(1, 17)))
    # the batching draw adds one value at the end: every other knob is what a slot draw gives
    first_slot, first_batch = r.draw(rng_b), batch[0]
    assert {k: v for k, v in first_batch.items() if k != "mec_max_batch"} == first_slot


def test_env_under_drawn_scenarios_is_the_exact_model() -> None:
    dev, mec = load_profile(FIX / "llm.device.json"), load_profile(FIX / "llm.mec.json")
    env = AigcSplitEnv(dev, mec, load_traces(DATA_DIR / "train")[:2],
                       ScenarioConfig(horizon_s=60.0, mec_model="slots"), mec_speedup=4.0,
                       ranges=ScenarioRanges())
    rng = np.random.default_rng(1)
    seen = set()
    errs = []
    for ep in range(6):
        env.reset(seed=ep)
        s = env.scenario
        seen.add((s["mec_speedup"], s["device_speed"], s["devices"]))
        assert env.config.n_devices == int(s["devices"]) == len(env._links)
        assert env._links[0].one_way_delay_s == pytest.approx(s["delay_ms"] / 1e3)
        model = LatencyModel(dev, mec, mec_speedup=s["mec_speedup"],
                             device_speed=s["device_speed"])
        assert env.time_scale_s == pytest.approx(model.local_latency(env.variants[0]))
        for _ in range(30):
            i, t = env._dev, env._t
            wl = env.variants[env._fleet.variant[i]]  # type: ignore[union-attr]
            m: MecState = env._mec.copy()
            a = int(rng.choice(np.flatnonzero(env.action_masks())))
            exact = simulate_request(model, env._links[i], env._actions_now.decision(a, wl), wl,
                                     t, m, detail=False)
            _, _, _, trunc, info = env.step(a)
            errs.append(abs(info["latency_s"] - exact.latency_s) / exact.latency_s)
            if trunc:
                break
    assert len(seen) >= 4 and errs and max(errs) < 1e-9


def test_policy_trained_over_ranges_warns_outside(tmp_path: Path) -> None:
    from sb3_contrib import MaskablePPO

    dev, mec = load_profile(FIX / "llm.device.json"), load_profile(FIX / "llm.mec.json")
    env = AigcSplitEnv(dev, mec, load_traces(DATA_DIR / "train")[:1],
                       ScenarioConfig(horizon_s=20.0), ranges=ScenarioRanges())
    algo = MaskablePPO("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=1, device="cpu")
    algo.learn(64)
    zp = tmp_path / "r.zip"
    algo.save(str(zp))
    side = {"model": "llm", "mec_speedup": 1.0, "semantics": SEMANTICS,
            "action_set": env.actions.action_set, "ranges": ScenarioRanges().to_json(),
            "scale": 1.0, "scenario": {"n_devices": 4, "one_way_delay_s": 0.01}}
    zp.with_suffix(".json").write_text(json.dumps(side))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pol = make_policy(str(zp), dev, mec, mec_speedup=12.0)  # inside: no warning
    assert isinstance(pol, SB3Policy) and pol.warnings == []
    with pytest.warns(ScenarioWarning, match=r"--mec-speedup 100 is outside the policy's "
                      r"training range 3-30"):
        make_policy(str(zp), dev, mec, mec_speedup=100.0)
    given = {"delay_ms": 200.0, "mec_speedup": None, "devices": 8.0, "mec_slots": None,
             "load": None, "scale": None}
    _, warns, _ = resolve_scenario(given, str(zp), "llm")
    assert len(warns) == 1 and "--delay-ms 200 is outside the policy's training range 1-50" \
        in warns[0]
