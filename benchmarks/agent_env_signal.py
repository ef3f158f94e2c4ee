"""What the ranges training env rewards for reading the predictions: greedy against full offload.

A policy trained with ``agent.train --ranges`` learns from the latencies the env prices. If
always offloading costs little more than choosing by the predicted latencies, the training
signal to read them (and so to keep a request local in an outage) is weak. This runs, in the
training env of each MEC model (``--mec-model slots`` and ``batch``, scenarios drawn from
``agent/ranges.py`` per episode, the generated training traces ``traces/data/train``,
``--mec-speedup 10``), the same episodes (same seeds) with two rules: *greedy* (the feasible
action of least predicted latency, :meth:`agent.env.AigcSplitEnv.predicted`) and *offload*
(full offload when the MEC accepts, else local), and prints each rule's mean latency, the
share of decisions that ran locally, and offload / greedy.

    PYTHONPATH=$PWD python benchmarks/agent_env_signal.py [--model gpt2] [--episodes 60]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.env import AigcSplitEnv  # noqa: E402
from agent.ranges import ScenarioRanges  # noqa: E402
from agent.scenario import ScenarioConfig  # noqa: E402
from profiler.schema import load_profile  # noqa: E402
from traces import DATA_DIR, load_traces  # noqa: E402


def run(env: AigcSplitEnv, rule: str, episodes: int, seed: int) -> tuple[float, float, int]:
    """Mean latency, local share and decisions of ``rule`` over ``episodes`` seeded episodes."""
    acts = env.actions
    lat: list[float] = []
    local = 0
    for ep in range(episodes):
        env.reset(seed=seed + ep)
        done = False
        while not done:
            mask = env.action_masks()
            if rule == "greedy":
                a = int(np.argmin(np.where(mask, env.predicted(), np.inf)))
            else:
                a = acts.offload_action if mask[acts.offload_action] else acts.local_action
            local += a == acts.local_action
            _, _, term, trunc, info = env.step(a)
            lat.append(float(info["latency_s"]))
            done = term or trunc
    return float(np.mean(lat)), local / len(lat), len(lat)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gpt2", help="shipped model (default gpt2)")
    ap.add_argument("--episodes", type=int, default=60, help="episodes per rule (default 60)")
    ap.add_argument("--seed", type=int, default=1000, help="first episode seed (default 1000)")
    a = ap.parse_args()
    dev_p, mec_p = (ROOT / "profiles" / f"{a.model}.{c}.json" for c in ("device", "mec-cpu"))
    if not (dev_p.is_file() and mec_p.is_file()):
        print(f"agent_env_signal: missing profiles for {a.model} (not measured)")
        return 2
    dev, mec = load_profile(dev_p), load_profile(mec_p)
    traces = load_traces(DATA_DIR / "train")
    t0 = time.perf_counter()
    rows = []
    for model in ("slots", "batch"):
        out = {}
        for rule in ("greedy", "offload"):
            env = AigcSplitEnv(dev, mec, traces, ScenarioConfig(mec_model=model),
                               mec_speedup=10.0, ranges=ScenarioRanges())
            out[rule] = run(env, rule, a.episodes, a.seed)
        rows.append((model, out))
    print(f"scenario: {a.model}, ranges training env (agent/ranges.py draws per episode), "
          f"traces/data/train, mec-speedup 10, {a.episodes} episodes per rule (seeds "
          f"{a.seed}..{a.seed + a.episodes - 1}); {time.perf_counter() - t0:.0f} s")
    print(f"{'MEC':<6} {'rule':<8} {'decisions':>9} {'mean s':>8} {'local':>7}")
    for model, out in rows:
        for rule, (mean, loc, n) in out.items():
            print(f"{model:<6} {rule:<8} {n:>9} {mean:>8.4f} {loc:>7.1%}")
        print(f"{model:<6} offload / greedy: {out['offload'][0] / out['greedy'][0]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
