"""``python -m agent.train``: train an SB3 split policy in the simulator (``AigcSplit-v0``).

The trace files are shuffled with the seed and split into training and validation files
(``--val-fraction``, default 0.2). Training runs in :class:`agent.env.AigcSplitEnv` on the
training files; afterwards the policy and the greedy baseline run on the validation files with
the exact latency model and both means are printed and stored. Writes ``OUT.zip`` (SB3) and
``OUT.json`` (provenance: command line, versions, seed, algorithm, trace files and hashes,
scale, MEC speedup, scenario, observation scales, validation results), and TensorBoard logs
under ``--tensorboard`` (default ``runs/tb``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent._cli import (
    add_common_args,
    file_sha256,
    load_profiles,
    load_trace_files,
    parse_with_scenario,
    provenance,
    resolve_args,
    run_main,
    scenario_from_args,
    show_path,
    trace_paths,
)
from agent.defaults import HelpFormatter, resolved_scenario
from agent.errors import AgentError
from agent.observation import ObservationEncoder
from agent.plan import SEMANTICS
from agent.ranges import ScenarioRanges

__all__ = ["ALGOS", "main", "make_algo"]

ALGOS = ("maskable-ppo", "ppo", "dqn", "a2c")


def make_algo(algo: str, env: Any, seed: int, tensorboard: str | None, lr: float,
              gamma: float = 0.95, n_envs: int = 1) -> Any:
    """An SB3 model with this project's hyperparameters."""
    from sb3_contrib import MaskablePPO
    from stable_baselines3 import A2C, DQN, PPO

    pk = {"net_arch": [64, 64]}
    common: dict[str, Any] = {"seed": seed, "tensorboard_log": tensorboard, "verbose": 0,
                              "policy_kwargs": pk, "device": "cpu", "learning_rate": lr}
    if algo in ("maskable-ppo", "ppo"):
        cls = MaskablePPO if algo == "maskable-ppo" else PPO
        return cls("MlpPolicy", env, n_steps=max(2048 // n_envs, 16), batch_size=256,
                   n_epochs=5, gamma=gamma,
                   gae_lambda=0.9, ent_coef=0.01, **common)
    if algo == "dqn":
        return DQN("MlpPolicy", env, buffer_size=50_000, learning_starts=1000, gamma=gamma,
                   exploration_fraction=0.3, target_update_interval=1000, train_freq=4,
                   **common)
    if algo == "a2c":
        return A2C("MlpPolicy", env, n_steps=16, gamma=gamma, ent_coef=0.01, **common)
    raise AgentError(f"--algo {algo!r}: use one of {', '.join(ALGOS)}")


def split_files(paths: list[Path], frac: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Shuffle ``paths`` with ``seed``; the first ``round(frac * n)`` are validation."""
    if not 0.0 <= frac < 1.0:
        raise AgentError(f"--val-fraction must be in [0, 1), got {frac}")
    order = np.random.default_rng(seed).permutation(len(paths))
    n_val = round(frac * len(paths))
    if frac > 0 and len(paths) >= 2:
        n_val = max(n_val, 1)
    n_val = min(n_val, len(paths) - 1)
    val = sorted(paths[i] for i in order[:n_val])
    train = sorted(paths[i] for i in order[n_val:])
    return train, val


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.train", description=__doc__,
                                formatter_class=HelpFormatter)
    add_common_args(p)
    p.add_argument("--algo", default="maskable-ppo", choices=ALGOS, help="SB3 algorithm")
    p.add_argument("--steps", type=int, required=True, help="environment steps to train")
    p.add_argument("--seed", type=int, default=0, help="seed (env, policy, file split)")
    p.add_argument("--lr", type=float, default=3e-4, help="learning rate")
    p.add_argument("--n-envs", type=int, default=8,
                   help="env copies stepped together (one batched policy call per step of all; "
                   "they share the per-action plans)")
    p.add_argument("--gamma", type=float, default=0.95,
                   help="discount per request (>0 lets a request weigh the MEC waits it causes)")
    p.add_argument("--max-trace-s", type=float,
                   help="use only the first S seconds of each training trace")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="fraction of trace files held out for validation")
    p.add_argument("--ranges", action="store_true",
                   help="train over a distribution of scenarios (agent.ranges.ScenarioRanges: "
                   "scale 0.003-100 of the traces as given, delay 1-50 ms, 1-16 devices, 1-4 MEC slots, load 0.05-1, "
                   "MEC speed-up 3-30, device speed 0.3-3), one drawn per episode; the "
                   "scenario flags then only set the validation scenario")
    p.add_argument("--out", type=Path, required=True, help="output policy FILE.zip")
    p.add_argument("--tensorboard", default="runs/tb",
                   help="TensorBoard log folder ('' to disable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    a, scenario_file = parse_with_scenario(p, argv)
    if a.steps < 1:
        raise AgentError(f"--steps must be >= 1, got {a.steps}")
    if not (a.lr > 0 and math.isfinite(a.lr)):
        raise AgentError(f"--lr must be > 0, got {a.lr}")
    if not 1 <= a.n_envs <= 64:
        raise AgentError(f"--n-envs must be in 1..64, got {a.n_envs}")
    if not 0.0 <= a.gamma <= 1.0:
        raise AgentError(f"--gamma must be in [0, 1], got {a.gamma}")
    if a.max_trace_s is not None and not a.max_trace_s > 0:
        raise AgentError(f"--max-trace-s must be > 0, got {a.max_trace_s}")
    if a.out.suffix != ".zip":
        raise AgentError(f"--out must name a .zip file, got {a.out}")
    dev, mec, prof_paths = load_profiles(a)
    resolve_args(a, dev.model.name, "train", "agent.train")
    config = scenario_from_args(a)
    paths = trace_paths(a.traces)
    train_paths, val_paths = split_files(paths, a.val_fraction, a.seed)
    # with --ranges every episode draws its own scale of the traces as given; --scale then only
    # sets the validation scenario (it does not compound with the drawn scale)
    train = load_trace_files(train_paths, 1.0 if a.ranges else a.scale)
    val = load_trace_files(val_paths, a.scale)
    if a.max_trace_s is not None:
        train = [t.sliced(0.0, a.max_trace_s) if t.period_s > a.max_trace_s else t
                 for t in train]

    import torch
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from agent.env import AigcSplitEnv

    torch.set_num_threads(1)
    ranges = ScenarioRanges() if a.ranges else None
    env = AigcSplitEnv(dev, mec, train, config, mec_speedup=a.mec_speedup, ranges=ranges)
    envs = [env]
    for _ in range(a.n_envs - 1):
        e = AigcSplitEnv(dev, mec, train, config, mec_speedup=a.mec_speedup, ranges=ranges)
        e.share_tables(env)
        envs.append(e)
    vec = DummyVecEnv([lambda e=e: Monitor(e) for e in envs])  # type: ignore[misc]
    enc: ObservationEncoder = env.encoder
    algo = make_algo(a.algo, vec, a.seed, a.tensorboard or None, a.lr, a.gamma, a.n_envs)
    print(f"training {a.algo} on {env.model.model}: {len(train)} training / {len(val)} "
          f"validation trace files, scale {a.scale:g}, mec-speedup {a.mec_speedup:g}, "
          f"{a.steps} steps, seed {a.seed}", flush=True)
    t0 = time.perf_counter()
    algo.learn(total_timesteps=a.steps, progress_bar=not a.no_progress,
               tb_log_name=a.out.stem)
    train_s = time.perf_counter() - t0
    a.out.parent.mkdir(parents=True, exist_ok=True)
    algo.save(str(a.out))
    side: dict[str, Any] = provenance(
        ["agent.train", *(argv if argv is not None else sys.argv[1:])],
        model=env.model.model, algo=a.algo, seed=a.seed, steps=a.steps, lr=a.lr,
        gamma=a.gamma, max_trace_s=a.max_trace_s, n_envs=a.n_envs,
        scale=a.scale, mec_speedup=a.mec_speedup, scenario=config.to_json(),
        obs_scales=enc.scales(), obs_size=enc.size, n_actions=env.actions.n_actions,
        main_pass=env.actions.main_pass, semantics=SEMANTICS,
        action_set=env.actions.action_set, actions=list(env.actions.names),
        ranges=ranges.to_json() if ranges else None,
        profiles={show_path(q): file_sha256(q) for q in prof_paths},
        train_traces={q.name: t.sha256() for q, t in zip(train_paths, train, strict=True)},
        val_traces={q.name: t.sha256() for q, t in zip(val_paths, val, strict=True)},
        train_seconds=round(train_s, 1), torch_threads=1,
        resolved_scenario=resolved_scenario(scenario_file, a, "agent"))
    a.out.with_suffix(".json").write_text(json.dumps(side, indent=1) + "\n")
    if val:
        from agent.evaluate import evaluate_policies, summarise
        from agent.policies import GreedyPolicy, SB3Policy

        pol = SB3Policy(a.out, env.actions, name="trained", mec_speedup=a.mec_speedup)
        lat = evaluate_policies(env.model, env.actions,
                                {"trained": pol, "greedy": GreedyPolicy(env.actions)}, val,
                                config, a.seed)
        summ = summarise(lat)
        side["validation"] = {k: v["mean_latency_s"] for k, v in summ.items()}
        print("validation mean latency: " + ", ".join(
            f"{k} {v:.3f} s" for k, v in side["validation"].items()))
    a.out.with_suffix(".json").write_text(json.dumps(side, indent=1) + "\n")
    print(f"wrote {a.out} and {a.out.with_suffix('.json')} ({train_s:.0f} s training)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main("agent.train", main))
