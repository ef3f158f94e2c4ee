"""The numpy actor (no torch) picks what SB3 picks, on observations and masks recorded from
the shipped policies running in the simulator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.numpy_policy import NumpyActor

ROOT = Path(__file__).resolve().parent.parent


def _recorded(model: str, scale: float) -> tuple[Any, list[tuple[np.ndarray, np.ndarray, int]]]:
    from agent.actions import SplitActions
    from agent.latency import LatencyModel
    from agent.policies import SB3Policy
    from agent.scenario import ScenarioConfig, run_policy
    from profiler.schema import load_profile
    from traces import DATA_DIR, load_trace

    dev = load_profile(ROOT / "profiles" / f"{model}.device.json")
    mec = load_profile(ROOT / "profiles" / f"{model}.mec-cpu.json")
    lm = LatencyModel(dev, mec, mec_speedup=10)
    actions = SplitActions(lm)
    pol = SB3Policy(ROOT / "policies" / f"{model}.zip", actions, mec_speedup=10)
    seen: list[tuple[np.ndarray, np.ndarray, int]] = []
    predict = pol.sb3.predict

    def spy(obs: np.ndarray, **kw: Any) -> Any:
        act, state = predict(obs, **kw)
        mask = kw.get("action_masks")
        seen.append((np.array(obs), np.ones(actions.n_actions, bool) if mask is None
                     else np.array(mask), int(act)))
        return act, state

    pol.sb3.predict = spy  # type: ignore[method-assign]
    trace = load_trace(DATA_DIR / "cellular_120s.csv", scale=scale)
    cfg = ScenarioConfig(n_devices=4, mec_slots=1, load=0.5, horizon_s=120 if model == "gpt2"
                         else 8000)
    run_policy(lm, actions, pol, trace, cfg, seed=0, detail=False)
    return pol.sb3, seen


@pytest.mark.parametrize(("model", "scale"), [("gpt2", 1.0), ("sd15", 0.01)])
def test_numpy_actor_matches_sb3_on_recorded_observations(model: str, scale: float) -> None:
    import torch

    sb3, seen = _recorded(model, scale)
    assert len(seen) >= 20
    actor = NumpyActor(ROOT / "policies" / f"{model}.zip")
    obs = np.stack([o for o, _, _ in seen]).astype(np.float32)
    with torch.no_grad():
        t = torch.as_tensor(obs)
        feats = sb3.policy.extract_features(t, sb3.policy.pi_features_extractor)
        ref = sb3.policy.action_net(sb3.policy.mlp_extractor.forward_actor(feats)).numpy()
    np.testing.assert_allclose(actor.logits(obs), ref, rtol=1e-5, atol=1e-5)
    mismatches = [(i, a, actor.predict(o, m)) for i, (o, m, a) in enumerate(seen)
                  if actor.predict(o, m) != a]
    assert mismatches == []


@pytest.mark.parametrize("model", ["gpt2", "sd15"])
def test_numpy_actor_matches_sb3_on_random_observations_and_masks(model: str) -> None:
    from sb3_contrib import MaskablePPO

    path = ROOT / "policies" / f"{model}.zip"
    sb3 = MaskablePPO.load(path, device="cpu")
    actor = NumpyActor(path)
    rng = np.random.default_rng(0)
    obs = rng.uniform(0.0, 2.0, (300, actor.obs_size)).astype(np.float32)
    masks = rng.random((300, actor.n_actions)) < 0.5  # the favourite action masked at times
    masks[np.arange(300), rng.integers(0, actor.n_actions, 300)] = True
    chosen = set()
    for o, m in zip(obs, masks, strict=True):
        assert actor.predict(o) == int(sb3.predict(o, deterministic=True)[0])
        a = actor.predict(o, m)
        assert a == int(sb3.predict(o, deterministic=True, action_masks=m)[0])
        chosen.add(a)
    assert len(chosen) >= 3  # masks moved the choice: the comparison is not of one action


def test_the_numpy_actor_imports_no_torch() -> None:
    code = ("import sys; from agent.numpy_policy import NumpyActor; "
            f"a = NumpyActor({str(ROOT / 'policies' / 'gpt2.zip')!r}); "
            "import numpy as np; a.predict(np.zeros(a.obs_size)); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=60)
    assert r.returncode == 0, r.stderr


def test_a_file_that_is_not_a_policy_is_one_error(tmp_path: Path) -> None:
    from agent.errors import AgentError

    p = tmp_path / "x.zip"
    p.write_bytes(b"not a zip")
    with pytest.raises(AgentError, match="not a readable SB3 policy"):
        NumpyActor(p)


@pytest.mark.parametrize(("model", "scale"), [("gpt2", 1.0), ("sd15", 0.01)])
def test_the_numpy_backend_decides_as_sb3_on_recorded_observations(model: str,
                                                                   scale: float) -> None:
    """What a device process runs (``SB3Policy(backend="numpy")``) against the SB3 backend,
    on the Observation objects the SB3 policy saw in the simulator."""
    from agent.actions import SplitActions
    from agent.latency import LatencyModel
    from agent.policies import SB3Policy
    from agent.policy import Observation
    from agent.scenario import ScenarioConfig, run_policy
    from profiler.schema import load_profile
    from traces import DATA_DIR, load_trace

    dev = load_profile(ROOT / "profiles" / f"{model}.device.json")
    mec = load_profile(ROOT / "profiles" / f"{model}.mec-cpu.json")
    actions = SplitActions(LatencyModel(dev, mec, mec_speedup=10))
    ref = SB3Policy(ROOT / "policies" / f"{model}.zip", actions, mec_speedup=10)
    light = SB3Policy(ROOT / "policies" / f"{model}.zip", actions, mec_speedup=10,
                      backend="numpy")
    assert light.sb3 is None and light.maskable == ref.maskable
    seen: list[tuple[Observation, int]] = []
    decide = ref.decide

    def spy(obs: Observation) -> Any:
        d = decide(obs)
        seen.append((obs, d.action))
        return d

    ref.decide = spy  # type: ignore[method-assign]
    trace = load_trace(DATA_DIR / "cellular_120s.csv", scale=scale)
    cfg = ScenarioConfig(n_devices=4, mec_slots=1, load=0.5,
                         horizon_s=120 if model == "gpt2" else 8000)
    run_policy(actions.model, actions, ref, trace, cfg, seed=1, detail=False)
    assert len(seen) >= 20
    assert [light.decide(o).action for o, _ in seen] == [a for _, a in seen]


def test_a_device_process_loads_the_shipped_policy_without_torch() -> None:
    """emulator.policies.load_policy(light=True), as emulator.device calls it."""
    code = ("import sys; from emulator.policies import load_policy; "
            "from profiler.schema import load_profile; "
            "d = load_profile('profiles/gpt2.device.json'); "
            "m = load_profile('profiles/gpt2.mec-cpu.json'); "
            "p, note = load_policy('default', d, m, light=True, mec_speedup=10); "
            "assert p.backend == 'numpy' and not note, note; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=60)
    assert r.returncode == 0, r.stderr
