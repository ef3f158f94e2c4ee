"""AigcSplit-v0: Gymnasium compliance, determinism, masks, truncation, agreement with the exact
latency model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import agent
from agent.env import AigcSplitEnv
from agent.latency import MecState, simulate_request
from agent.scenario import ScenarioConfig
from traces import DATA_DIR, load_traces

FIX = Path(__file__).parent / "fixtures" / "agent"


def _env(name: str = "llm", **cfg: object) -> AigcSplitEnv:
    traces = load_traces(DATA_DIR / "train")[:2]
    return AigcSplitEnv(FIX / f"{name}.device.json", FIX / f"{name}.mec.json", traces,
                        ScenarioConfig(**{"mec_model": "slots", **cfg}),  # type: ignore[arg-type]
                        mec_speedup=4.0)


@pytest.mark.parametrize("name", ["llm", "diffusion"])
def test_check_env_clean(name: str) -> None:
    env = _env(name, horizon_s=60.0)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=1)
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)


def test_registered() -> None:
    env = gym.make(agent.ENV_ID, device_profile=FIX / "llm.device.json",
                   mec_profile=FIX / "llm.mec.json")
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    env.close()


def _rollout(env: AigcSplitEnv, seed: int, n: int) -> list[tuple[float, float]]:
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = int(rng.choice(np.flatnonzero(env.action_masks())))
        obs, r, term, trunc, _info = env.step(a)
        assert not term
        out.append((r, float(obs.sum())))
        if trunc:
            env.reset()
    return out


def test_deterministic_under_seed() -> None:
    assert _rollout(_env(), 7, 300) == _rollout(_env(), 7, 300)
    assert _rollout(_env(), 7, 50) != _rollout(_env(), 8, 50)


def test_truncated_at_horizon_never_terminated() -> None:
    env = _env(horizon_s=20.0, n_devices=2)
    env.reset(seed=0)
    steps = 0
    while True:
        _, _, term, trunc, info = env.step(env.actions.local_action)
        steps += 1
        assert not term
        assert info["latency_s"] == pytest.approx(env.model.local_latency(env.variants[0]))
        if trunc:
            break
    assert env._t >= 20.0
    assert steps > 5


def test_env_latency_matches_exact_model() -> None:
    """The env's table-based latency vs simulate_request on the same link, time and MEC."""
    env = _env(n_devices=3, mec_slots=1)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    errs = []
    for _ in range(400):
        i, t = env._dev, env._t
        link = env._links[i]
        wl = env.variants[env._fleet.variant[i]]  # type: ignore[union-attr]
        mec: MecState = env._mec.copy()
        a = int(rng.choice(np.flatnonzero(env.action_masks())))
        exact = simulate_request(env.model, link, env.actions.decision(a), wl, t, mec,
                                 detail=False)
        _, _, _, trunc, info = env.step(a)
        errs.append(abs(info["latency_s"] - exact.latency_s) / exact.latency_s)
        if trunc:
            env.reset()
    assert max(errs) < 0.01


def test_mask_blocks_offload_when_queue_full() -> None:
    env = _env(n_devices=4, mec_slots=1, mec_queue_limit=0, load=5.0)
    env.reset(seed=0)
    seen_blocked = False
    for _ in range(200):
        m = env.action_masks()
        if not m[0]:
            seen_blocked = True
            assert m.tolist() == [a == env.actions.local_action for a in range(m.size)]
        env.step(0)
    assert seen_blocked


def test_budget_mask_allows_only_actions_within_budget() -> None:
    env = _env("diffusion", mask_budget=1.0, n_devices=1)
    env.reset(seed=0)
    for _ in range(20):
        m = env.action_masks()
        pred = env.encoder._pred  # normalised predicted latencies of the last observation
        assert m[env.actions.local_action]
        assert np.all(pred[m & (np.arange(m.size) != env.actions.local_action)] <= 1.0)
        _, _, _, trunc, _ = env.step(int(np.flatnonzero(m)[0]))
        if trunc:
            env.reset()


def test_env_observation_is_the_live_encoding() -> None:
    """The env's fast path (history scaled once per sample, obs buffers reused) gives the same
    vector as encoding a live Observation, and every step returns a fresh array."""
    from agent.observation import harmonic_mean
    from agent.policies import GreedyPolicy
    from agent.policy import Observation

    env = _env(horizon_s=60.0)
    env.reset(seed=3)
    rng = np.random.default_rng(3)
    prev = None
    for _ in range(200):
        a = int(rng.choice(np.flatnonzero(env.action_masks())))
        obs, _r, _term, trunc, _info = env.step(a)
        if trunc:
            obs, _ = env.reset()
        fleet, i, t = env._fleet, env._dev, env._t
        assert fleet is not None
        hist = tuple(fleet.history[i])
        mec = env._mec.copy()
        live = Observation(workload=env.variants[fleet.variant[i]],
                           throughput_bps=harmonic_mean(hist), recent_throughputs_bps=hist,
                           rtt_s=env._links[i].rtt_s, mec_queue_len=mec.queue_len(t),
                           mec_busy_slots=mec.busy_slots(t), mec_slots=mec.slots,
                           mec_expected_wait_s=mec.expected_wait(t), time_s=t)
        expect = env.encoder.encode(live)
        assert np.array_equal(obs, expect)
        # the env's predicted latencies order the actions as greedy's: same choice
        pred = env.predicted()
        assert pred is not env.predicted() and pred.shape == (env.actions.n_actions,)
        fast = int(np.argmin(np.where(env.action_masks(), pred, np.inf)))
        greedy = GreedyPolicy(env.actions).decide(dataclasses.replace(
            live, mec_accepts=bool(env.action_masks()[env.actions.offload_action])))
        assert fast == greedy.action
        if prev is not None:
            assert prev is not obs
        prev = obs


def test_next_device_picks_the_first_earliest() -> None:
    from agent.scenario import Fleet

    fleet = Fleet(ScenarioConfig(n_devices=3), 1, 1.0, np.random.default_rng(0))
    fleet.arrival, fleet.free = [2.0, 1.0, 0.5], [0.0, 3.0, 1.0]
    assert fleet.next_device() == (2, 1.0)
    fleet.arrival, fleet.free = [1.0, 0.5, 1.0], [0.0, 1.0, 0.0]
    assert fleet.next_device() == (0, 1.0)
