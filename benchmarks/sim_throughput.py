"""Simulator throughput: single-process env steps per second of AigcSplit-v0.

Measures ``AigcSplitEnv.step`` (the raw env, as SB3 drives it through DummyVecEnv) after a
warm-up that builds the remainder tables of the traces used, with random feasible actions
drawn beforehand, episodes reset on truncation. Also reports the rate through ``gym.make``
(which adds Gymnasium's order-enforcing and passive-checker wrappers). Reports steps per
wall-clock second and per CPU second of the process (on a shared machine the wall clock counts
other jobs' time too). Target: >= 50k steps/s.

    python benchmarks/sim_throughput.py [--model gpt2] [--seconds 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import agent
from agent.env import AigcSplitEnv
from agent.scenario import ScenarioConfig
from profiler.machine import cpu_model
from traces import DATA_DIR, load_traces

ROOT = Path(__file__).resolve().parent.parent


def _profiles(model: str) -> tuple[Path, Path]:
    dev, mec = ROOT / "profiles" / f"{model}.device.json", ROOT / "profiles" / f"{model}.mec-cpu.json"
    if not dev.is_file():
        fix = ROOT / "tests" / "fixtures" / "agent"
        print(f"(profiles/{model}.* missing: using the test fixture llm profiles)")
        return fix / "llm.device.json", fix / "llm.mec.json"
    return dev, mec


def _rate(env: gym.Env, actions: list[int], seconds: float) -> tuple[float, float]:
    """(steps per wall-clock second, steps per CPU second of this process)."""
    env.reset(seed=0)
    n = 0
    c0 = time.process_time()
    t0 = time.perf_counter()
    deadline = t0 + seconds
    step = env.step
    while True:
        for a in actions:
            _, _, _, trunc, _ = step(a)
            if trunc:
                env.reset()
        n += len(actions)
        if time.perf_counter() > deadline:
            break
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gpt2", help="profiles/MODEL.{device,mec-cpu}.json")
    p.add_argument("--seconds", type=float, default=5.0, help="measuring time per run")
    p.add_argument("--mec-speedup", type=float, default=10.0, help="scenario knob (stated)")
    a = p.parse_args()
    dev, mec = _profiles(a.model)
    traces = load_traces(DATA_DIR / "train")
    cfg = ScenarioConfig(one_way_delay_s=0.01)
    env = AigcSplitEnv(dev, mec, traces, cfg, mec_speedup=a.mec_speedup)
    rng = np.random.default_rng(0)
    acts = [int(x) for x in rng.integers(0, env.actions.n_actions, 10_000)]
    t0 = time.perf_counter()
    for i in range(len(traces)):  # warm-up: every table chunk of every training trace
        env.reset(seed=i, options={"trace_index": i})
        for a_ in acts[:3000]:
            if env.step(a_)[3]:
                break
    print(f"warm-up (tables) {time.perf_counter() - t0:.1f} s")
    cpu = cpu_model()
    raw = [_rate(env, acts, a.seconds) for _ in range(3)]
    wrapped_env = gym.make(agent.ENV_ID, device_profile=dev, mec_profile=mec, traces=traces,
                           config=cfg, mec_speedup=a.mec_speedup)
    _rate(wrapped_env, acts, 1.0)
    wrapped, wrapped_cpu = _rate(wrapped_env, acts, a.seconds)
    print(f"model {a.model}, {env.actions.n_actions} actions, obs {env.encoder.size} floats, "
          f"{cfg.n_devices} devices, mec-speedup {a.mec_speedup:g}, machine: {cpu} "
          f"(shared, load average {Path('/proc/loadavg').read_text().split()[0]})")
    best = max(r[0] for r in raw)
    best_cpu = max(r[1] for r in raw)
    print(f"raw env: {best:,.0f} steps/s wall clock, best of 3 "
          f"({', '.join(f'{r[0]:,.0f}' for r in raw)}); {best_cpu:,.0f} steps per CPU second "
          "(the step's cost without other jobs' contention)")
    print(f"gym.make (wrappers): {wrapped:,.0f} steps/s wall clock, {wrapped_cpu:,.0f} per CPU s")
    print(f"target >= 50,000 steps/s: wall clock {'met' if best >= 50_000 else 'NOT met'}, "
          f"CPU time {'met' if best_cpu >= 50_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
