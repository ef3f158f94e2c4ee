"""The split agent: latency model, simulator (Gymnasium env), baselines, oracle, RL training
and evaluation.

Modules, one concept each::

    errors        AgentError, PolicyMismatchError, ScenarioFileError
    defaults      the default scenario, scenario files (--scenario FILE) and their resolution
    link          a device's link: traces + propagation delay, fast exact finish times
    latency       the latency model: timeline of one request (LatencyModel, simulate_request)
    mec_server    the batching MEC's rule (admission, iterations, batch time), sim + emulator
    batchsim      many requests on one batching MEC, event by event (run_policy's batch path)
    templates     plan templates per model family (the actions: offload, split:k, kv-down, ...)
    actions       the action space (template index -> Decision), per-action cost constants
    observation   the observation vector shared by the env and live RL policies
    scenario      devices, arrivals, MEC, running a policy with the exact model
    plan          the ordered steps of a request (computations and sends on each side)
    env           the Gymnasium env "AigcSplit-v0"
    oracle        per-request optimum with knowledge of the future
    optimum       the exact offline optimum of a small instance (branch and bound)
    ranges        scenario ranges a policy is trained over, and the check of a run against them
    slo           per-request SLOs (end-to-end, TTFT, TPOT) and goodput
    policies      make_policy(spec, device_profile, mec_profile): local/offload/fixed/greedy/RL
    train         python -m agent.train
    evaluate      python -m agent.evaluate
    sweep         python -m agent.sweep: scenarios x policies x seeds on Ray (_sweep: the core)
    numpy_policy  a trained SB3 actor's decision in numpy, without torch
    policy        (interface) Workload, Observation, Decision, Policy

Importing :mod:`agent` registers the env id ``AigcSplit-v0`` with Gymnasium, except in a process
started with ``AIGC_AGENT_NO_GYM=1`` (the emulator's device and MEC processes: they never make
the env, and importing Gymnasium costs each of them ~40 ms and ~6 MB).
"""

from __future__ import annotations

import os

from agent.errors import AgentError, PolicyMismatchError
from agent.policy import Decision, Observation, Policy, Workload

__all__ = [
    "ENV_ID",
    "AgentError",
    "Decision",
    "Observation",
    "Policy",
    "PolicyMismatchError",
    "Workload",
]

ENV_ID = "AigcSplit-v0"


def _register() -> None:
    try:
        from gymnasium.envs.registration import register, registry
    except ImportError:  # pragma: no cover - gymnasium is a dependency
        return
    if ENV_ID not in registry:
        register(id=ENV_ID, entry_point="agent.env:AigcSplitEnv")


if os.environ.get("AIGC_AGENT_NO_GYM") != "1":
    _register()
