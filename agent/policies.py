"""Policies and the factory that both the evaluator and the emulator use.

``make_policy(spec, device_profile, mec_profile, **kw)`` where ``spec`` is one of:

``local``       every pass on the device.
``offload``     every pass on the MEC (split 0), unless the MEC rejects the session.
``fixed:K``     the plan template ``split:K`` (``K`` = 0: ``offload``, ``K`` = N: ``local``) of the
                model's action set (:mod:`agent.templates`) for every request.
``fixed:NAME``  the plan template ``NAME`` (e.g. ``fixed:kv-down``, ``fixed:hybrid:1/2``) for
                every request.
``fixed``       the single template with the lowest mean latency on the training traces
                (``traces=`` keyword, default the bundled ``traces/data/train``), found by
                simulating every template with :func:`agent.scenario.run_policy`.
``greedy``      Neurosurgeon-style: the template minimising the latency the shared model
                predicts from the device's throughput estimate (the mean of its recent
                transfers), its RTT and the MEC's expected wait (the same set the oracle and
                trained policies choose from).
``default``     the shipped RL policy of the model, ``policies/<model>.zip``.
a path          an SB3 ``.zip`` (MaskablePPO, PPO, DQN or A2C) trained by ``python -m agent.train``.

Keywords: ``mec_speedup`` (default 1.0) must match the scenario the policy runs in (a policy
trained over scenario ranges takes any value and warns, :class:`ScenarioWarning`, outside its
range); ``device_speed`` (default 1.0) is the device's speed as a factor on its profile;
``device_memory_bytes`` masks splits whose device part needs more weight memory.
Every failure is an :class:`~agent.errors.AgentError` (or a ``ProfileError``) naming the fix.
"""

from __future__ import annotations

import difflib
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from agent.actions import SplitActions
from agent.defaults import POLICIES_DIR  # the shipped policies: <model>.zip plus <model>.json
from agent.errors import AgentError, PolicyMismatchError
from agent.latency import LatencyModel
from agent.observation import ESTIMATE, ObservationEncoder, throughput_estimate
from agent.plan import SEMANTICS
from agent.policy import Decision, Observation, Policy
from agent.ranges import ScenarioRanges
from profiler.schema import Profile

__all__ = [
    "POLICIES_DIR",
    "SPECS",
    "FixedPolicy",
    "GreedyPolicy",
    "SB3Policy",
    "ScenarioWarning",
    "load_sidecar",
    "make_policy",
]

SPECS = ("local", "offload", "fixed", "fixed:K", "greedy", "default", "PATH.zip")


class ScenarioWarning(UserWarning):
    """A trained policy is asked for a scenario outside its training ranges."""


class FixedPolicy:
    """The same action for every request (local, full offload, or a fixed split)."""

    def __init__(self, name: str, actions: SplitActions, action: int) -> None:
        if not 0 <= action < actions.n_actions:
            raise AgentError(f"action {action} is out of range 0..{actions.n_actions - 1} for "
                             f"{actions.model.model!r} (templates {', '.join(actions.names)})")
        self.name = name
        self.actions = actions
        self.action = action

    def decide(self, obs: Observation) -> Decision:
        a = self.action
        if not obs.mec_accepts and a != self.actions.local_action:
            a = self.actions.local_action
        return self.actions.decision(a, obs.workload)


class GreedyPolicy:
    """Minimise the predicted latency (throughput estimate, RTT, MEC expected wait)."""

    def __init__(self, actions: SplitActions, name: str = "greedy") -> None:
        self.name = name
        self.actions = actions

    def decide(self, obs: Observation) -> Decision:
        costs = self.actions.costs(obs.workload)
        est = throughput_estimate(obs.recent_throughputs_bps, obs.throughput_bps)
        pred = costs.predict(est, obs.rtt_s, obs.mec_expected_wait_s)
        pred[~self.actions.mask(obs.mec_accepts)] = np.inf
        return self.actions.decision(int(np.argmin(pred)), obs.workload)


def load_sidecar(path: str | Path) -> dict[str, Any]:
    """The JSON provenance sidecar next to a policy ``.zip`` (``{}`` when there is none)."""
    side = Path(path).with_suffix(".json")
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise AgentError(f"{side}: unreadable policy sidecar ({e})") from None
    return data if isinstance(data, dict) else {}


def _load_sb3(path: Path, algo: str | None) -> Any:
    from sb3_contrib import MaskablePPO
    from stable_baselines3 import A2C, DQN, PPO

    loaders: dict[str, Any] = {"maskable-ppo": MaskablePPO, "ppo": PPO, "dqn": DQN, "a2c": A2C}
    order = [algo] if algo in loaders else list(loaders)
    last: Exception | None = None
    for name in order:
        try:
            return loaders[name].load(str(path), device="cpu")
        except Exception as e:  # SB3 raises many kinds on a file of another algorithm
            last = e
    raise AgentError(f"{path}: not a stable-baselines3 policy file this version can load "
                     f"({type(last).__name__}: {last}); train one with python -m agent.train")


class SB3Policy:
    """A trained SB3 policy behind the :class:`~agent.policy.Policy` protocol.

    Builds its observation with :class:`~agent.observation.ObservationEncoder` (the env's own
    function) and calls ``predict(obs, deterministic=True, action_masks=mask)``; algorithms
    without masks that pick an infeasible action fall back to the local action.
    """

    def __init__(self, path: str | Path, actions: SplitActions, name: str | None = None,
                 mec_speedup: float = 1.0, backend: str = "sb3") -> None:
        p = Path(path)
        if not p.is_file():
            raise AgentError(f"{p}: policy file not found (train one with python -m agent.train, "
                             "or use one of: local, offload, fixed, fixed:K, greedy, default)")
        if not zipfile.is_zipfile(p):
            raise AgentError(f"{p}: not an SB3 policy .zip file")
        side = load_sidecar(p)
        model_name = actions.model.model
        if side.get("model") not in (None, model_name):
            raise PolicyMismatchError(f"{p}: policy was trained for model {side['model']!r}, "
                                      f"not {model_name!r}; use a policy of this model")
        if side and side.get("semantics") != SEMANTICS:
            raise PolicyMismatchError(
                f"{p}: policy was trained on execution semantics "
                f"{side.get('semantics', 'before plans (every offloaded pass a round trip)')!r}"
                f", not {SEMANTICS!r} (agent/plan.py); retrain it with the command in its "
                f"sidecar {p.with_suffix('.json').name} (see policies/README.md)")
        if side and side.get("action_set") != actions.action_set:
            raise PolicyMismatchError(
                f"{p}: policy was trained on action set "
                f"{side.get('action_set', 'split indices of the main pass (before templates)')!r}"
                f", not {actions.action_set!r} (agent/templates.py); retrain it with the "
                f"command in its sidecar {p.with_suffix('.json').name} (see policies/README.md)")
        scales = side.get("obs_scales")
        est = scales.get("estimate", "harmonic mean") if isinstance(scales, dict) else ESTIMATE
        if est != ESTIMATE:
            raise PolicyMismatchError(
                f"{p}: policy was trained with throughput estimate {est!r}, not {ESTIMATE!r} "
                f"(agent/observation.py); retrain it with the command in its sidecar "
                f"{p.with_suffix('.json').name} (see policies/README.md)")
        trained_speedup = side.get("mec_speedup")
        rng = side.get("ranges")
        self.ranges = ScenarioRanges.from_json(rng) if isinstance(rng, dict) else None
        self.warnings: list[str] = []
        if self.ranges is not None:
            self.warnings = [f"{p}: {w}" for w in self.ranges.outside(
                {"mec_speedup": mec_speedup, "device_speed": actions.model.device_speed})]
            for w in self.warnings:
                warnings.warn(w, ScenarioWarning, stacklevel=3)
        elif trained_speedup is not None and float(trained_speedup) != mec_speedup:
            raise PolicyMismatchError(f"{p}: policy was trained with --mec-speedup "
                                      f"{trained_speedup}, not {mec_speedup}; use the same value")
        self.encoder = ObservationEncoder(actions)
        self.actions = actions
        self.backend = backend
        self.actor: Any = None
        self.sb3: Any = None
        shape: Any
        n: Any
        if backend == "numpy":  # no torch in the process (agent/numpy_policy.py)
            from agent.numpy_policy import NumpyActor

            self.actor = NumpyActor(p)
            shape, n = (self.actor.obs_size,), self.actor.n_actions
        else:
            self.sb3 = _load_sb3(p, side.get("algo"))
            shape = getattr(self.sb3.observation_space, "shape", None)
            n = getattr(self.sb3.action_space, "n", None)
        if shape != (self.encoder.size,) or n != actions.n_actions:
            raise PolicyMismatchError(
                f"{p}: policy observation space {shape} / {n} actions does not match the "
                f"profiles ({self.encoder.size},) / {actions.n_actions} actions of "
                f"{model_name!r}; train a policy with these profiles")
        self.maskable = (self.actor.maskable if self.actor is not None
                         else type(self.sb3).__name__ == "MaskablePPO")
        budget = (side.get("scenario") or {}).get("mask_budget")
        self.mask_budget: float | None = float(budget) if budget is not None else None
        self.name = name or p.stem
        self.path = p
        self.sidecar = side

    def decide(self, obs: Observation) -> Decision:
        vec = self.encoder.encode(obs)
        mask = self.actions.mask(obs.mec_accepts)
        if self.mask_budget is not None:
            mask &= self.encoder.within_budget(self.mask_budget)
            mask[self.actions.local_action] = True
        if self.actor is not None:
            act = self.actor.predict(vec, mask if self.maskable else None)
        elif self.maskable:
            act, _ = self.sb3.predict(vec, deterministic=True, action_masks=mask)
        else:
            act, _ = self.sb3.predict(vec, deterministic=True)
        a = int(act)
        if not mask[a]:
            a = self.actions.local_action
        return self.actions.decision(a, obs.workload)


def make_policy(spec: str, device_profile: Profile, mec_profile: Profile, **kw: Any) -> Policy:
    """Build a policy from ``spec`` (see the module docstring).

    :raises AgentError: unknown spec, bad split, missing or mismatched policy file.
    :raises profiler.schema.ProfileError: the profiles do not fit each other.
    """
    mec_speedup = float(kw.pop("mec_speedup", 1.0))
    device_speed = float(kw.pop("device_speed", 1.0))
    memory = kw.pop("device_memory_bytes", None)
    backend = str(kw.pop("policy_backend", "sb3"))  # "numpy": a trained policy without torch
    model = LatencyModel(device_profile, mec_profile, mec_speedup=mec_speedup,
                         device_speed=device_speed)
    actions = SplitActions(model, device_memory_bytes=memory)
    s = spec.strip()
    if s == "local":
        return FixedPolicy("local", actions, actions.local_action)
    if s == "offload":
        return FixedPolicy("offload", actions, actions.offload_action)
    if s.startswith("fixed:"):
        arg = s.split(":", 1)[1]
        if arg.isdigit():
            k = int(arg)
            name = {0: "offload", actions.n_blocks: "local"}.get(k, f"split:{k}")
            if name not in actions.names and actions.family == "chain":
                raise AgentError(f"policy spec {spec!r}: K in fixed:K must be a split "
                                 f"0..{actions.n_blocks} of {model.model!r}")
        else:
            name = arg
        return FixedPolicy(f"fixed:{arg}", actions, actions.index(name))
    if s == "fixed":
        from agent.scenario import best_fixed_split

        k = best_fixed_split(model, actions, **kw)
        return FixedPolicy(f"fixed({actions.names[k]})", actions, k)
    if s == "greedy":
        return GreedyPolicy(actions)
    if s == "default":
        path = POLICIES_DIR / f"{model.model}.zip"
        if not path.is_file():
            raise AgentError(f"no shipped default policy for model {model.model!r} "
                             f"({path} is missing); see policies/README.md")
        return SB3Policy(path, actions, name="default", mec_speedup=mec_speedup,
                         backend=backend)
    if s.endswith(".zip") or "/" in s:
        return SB3Policy(s, actions, mec_speedup=mec_speedup, backend=backend)
    near = difflib.get_close_matches(s, ["local", "offload", "fixed", "greedy", "default",
                                         "oracle"], n=1)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    raise AgentError(f"unknown policy spec {spec!r}; use one of {', '.join(SPECS)}.{hint}")
