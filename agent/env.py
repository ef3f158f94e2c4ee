"""``AigcSplit-v0``: the split decision as a Gymnasium environment.

One step is one request: several devices (``ScenarioConfig.n_devices``) share one MEC, requests
arrive open-loop per device (see :mod:`agent.scenario`), and the agent decides for the request
that starts next, whichever device it is on (one shared policy, as every device runs the same
policy live).

Observation
    :class:`agent.observation.ObservationEncoder` (float32, fixed documented scales, clipped to
    ``[0, 10]``): throughput history and estimate of the deciding device, RTT, MEC queue, busy
    slots and expected wait, workload repeats, and the latency the shared model predicts for
    each action. The same encoder builds the vector from a live ``Observation``.
Action
    ``Discrete(A)``: one of the model's plan templates (:mod:`agent.templates`, e.g. GPT-2's
    ``offload``, ``split:k``, ``kv-down``, ``kv-up``, ``local``). ``action_masks()``
    marks infeasible actions (MEC queue at its limit, device memory, and with
    ``ScenarioConfig.mask_budget`` actions predicted to exceed that many times the local
    latency); an infeasible action taken anyway runs locally.
Reward
    ``-min(latency_s / time_scale_s, REWARD_CLIP)``: the request's latency (start to response,
    the quantity the evaluator averages) in units of the fully-local latency of the default
    workload, clipped at ``REWARD_CLIP`` (10) so that exploring an absurd split (e.g. 20 x 27 MB
    over a slow link) does not swamp the value estimates; no optimal action comes near the clip.
Episode
    A trace drawn from the training set, devices starting at seeded random points of it; the
    episode is ``truncated`` (never ``terminated``) when the next request would start after
    ``horizon_s`` or the end of the trace. With ``ranges`` (:class:`agent.ranges.ScenarioRanges`)
    every episode also draws its scenario: trace scale, delay, devices, MEC slots, load, MEC
    speed-up and device speed (the reward is then in units of that scenario's local latency).

The timeline of a request is the shared latency model, exactly: the action's plan
(:meth:`agent.latency.LatencyModel.plan`, built once per action and workload variant) priced by
:func:`agent.latency.run_plan` on the device's link and the shared MEC.
``info`` carries ``latency_s``, ``action``, ``device`` and ``offloaded``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from gymnasium import spaces

from agent.actions import (
    OUTAGE_BELOW_BPS,
    OUTAGE_BPS,
    OUTAGE_WAIT_S,
    ActionCosts,
    SplitActions,
)
from agent.errors import AgentError
from agent.latency import LatencyModel, MecState, fallback_after, run_plan
from agent.link import FastTrace, Link
from agent.observation import (
    HISTORY,
    OBS_HIGH,
    QUEUE_SCALE,
    RTT_SCALE_S,
    ObservationEncoder,
)
from agent.plan import Plan
from agent.policy import Workload
from agent.ranges import ScenarioRanges
from agent.scenario import Fleet, ScenarioConfig, make_links
from profiler.schema import Profile, load_profile
from traces import Trace

__all__ = ["REWARD_CLIP", "AigcSplitEnv"]

REWARD_CLIP = 10.0


def _profile(p: Profile | str | Path) -> Profile:
    return p if isinstance(p, Profile) else load_profile(p)


class AigcSplitEnv(gym.Env[npt.NDArray[np.float32], np.int64]):
    """Split decisions for requests of several devices sharing a MEC (see module docstring).

    :param device_profile: device profile (object or path).
    :param mec_profile: MEC profile of the same model (object or path).
    :param traces: training traces (default: the bundled ``traces/data/train``).
    :param config: scenario (devices, MEC slots and queue, delay, load, horizon, workloads).
    :param mec_speedup: divide MEC block times by this (scenario knob, default 1).
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(self, device_profile: Profile | str | Path, mec_profile: Profile | str | Path,
                 traces: Sequence[Trace] | None = None, config: ScenarioConfig | None = None,
                 *, mec_speedup: float = 1.0, ranges: ScenarioRanges | None = None) -> None:
        super().__init__()
        self._dev_p, self._mec_p = _profile(device_profile), _profile(mec_profile)
        self.ranges = ranges
        self.model = LatencyModel(self._dev_p, self._mec_p, mec_speedup=mec_speedup)
        self.actions = SplitActions(self.model)
        self.encoder = ObservationEncoder(self.actions)
        self.config = config or ScenarioConfig()
        # a batching MEC is priced at decision time from the sessions decided so far
        # (agent.batchsim.PredictedBatchMec); agent.evaluate runs the exact BatchSim
        self._batching = self.config.mec_model == "batch"
        if self._batching:
            self._new_mec(self.model)  # bad batch knobs fail here, not at the first reset
        self._base_config = self.config
        self._tables: dict[tuple[object, ...], Any] = {}
        self._scaled: dict[tuple[int, float], Trace] = {}
        self.scenario: dict[str, float] = {}
        self._model_now: LatencyModel = self.model
        self._actions_now: SplitActions = self.actions
        """The scenario drawn for the current episode (empty without ``ranges``)."""
        if traces is None:
            from traces import DATA_DIR, load_traces

            traces = load_traces(DATA_DIR / "train")
        self.traces = list(traces)
        if not self.traces:
            raise AgentError("the env needs at least one training trace")
        self.variants = self.config.variants(self.model)
        self._costs: list[ActionCosts] = []
        self._plans: list[list[Plan]] = []
        self._fast: list[tuple[list[bool], float]] = []
        self.time_scale_s = self.encoder.time_scale_s
        self._mean_gap = 0.0
        self.observation_space = spaces.Box(0.0, OBS_HIGH, shape=(self.encoder.size,),
                                            dtype=np.float32)
        self.action_space = spaces.Discrete(self.actions.n_actions)
        self._local = self.actions.local_action
        self._use_tables()
        self._mask_all = self.actions.mask(True)
        self._mask_local = self.actions.mask(False)
        self._mask_all_l: list[bool] = self._mask_all.tolist()
        self._mask_local_l: list[bool] = self._mask_local.tolist()
        self._accepts = True
        self._budget = self.config.mask_budget
        self._mask = self._mask_all
        self._mask_l = self._mask_all_l
        self._window = self.config.probe_window_s
        enc = self.encoder
        self._buf, self._pred, self._vec = enc._buf, enc._pred, enc._vec
        self._high, self._clipped, self._nf = enc._high, enc._clipped, enc._nf
        self._zeros = enc._zeros
        self._var_obs: list[tuple[list[float], npt.NDArray[np.float64]]] = []
        self._obs_consts()
        self._links: list[Link] = []
        # per episode and device: uplink, trace offset, RTT, scaled history
        self._ups: list[FastTrace] = []
        self._offsets: list[float] = []
        self._rtts: list[float] = []
        self._delays: list[float] = []
        self._hist_feats: list[deque[float]] = []
        self._fleet: Fleet | None = None
        self._mec = MecState(self.config.mec_slots, self.config.mec_queue_limit)
        self._horizon = 0.0
        self._dev = 0
        self._t = 0.0

    def _new_mec(self, model: LatencyModel) -> MecState:
        """An idle MEC for an episode: exclusive slots, or the batching MEC's prediction."""
        if not self._batching:
            return MecState(self.config.mec_slots, self.config.mec_queue_limit)
        from agent.batchsim import PredictedBatchMec
        from agent.mec_server import BatchServer

        server = BatchServer.for_model(model, self.config.mec_config, self.config.mec_queue_limit)
        return PredictedBatchMec(server.cost, server.max_batch, self.config.mec_queue_limit)

    def share_tables(self, other: AigcSplitEnv) -> None:
        """Use ``other``'s per-action costs and plans (same profiles and scenario), so env
        copies stepped together build them once."""
        if (other.model.model != self.model.model or other._base_config != self._base_config
                or other.model.mec_speedup != self.model.mec_speedup
                or other.ranges != self.ranges):
            raise AgentError("share_tables needs envs of the same profiles and scenario")
        self._tables = other._tables
        self._scaled = other._scaled
        self._use_tables()

    # ------------------------------------------------------------------ helpers
    def _use_tables(self, mec_speedup: float | None = None,
                    device_speed: float | None = None) -> None:
        """Per-action costs and plans of every workload variant for the MEC speed-up and device
        speed (built once per pair), and the scenario's mean inter-arrival gap."""
        ms = self.model.mec_speedup if mec_speedup is None else mec_speedup
        ds = self.model.device_speed if device_speed is None else device_speed
        key = (ms, ds, tuple(tuple(sorted(w.items())) for w in self.config.workloads))
        hit = self._tables.get(key)
        if hit is None:
            if (ms, ds) == (self.model.mec_speedup, self.model.device_speed):
                model, actions = self.model, self.actions
            else:
                model = LatencyModel(self._dev_p, self._mec_p, mec_speedup=ms, device_speed=ds)
                actions = SplitActions(model)
            variants = self.config.variants(model)
            costs = [actions.costs(w) for w in variants]
            # python lists: numpy scalars would slow every later float operation of the step
            plans = [[model.plan(actions.decision(a, w), w) for a in range(actions.n_actions)]
                     for w in variants]
            fast = [(c.offloads.tolist(), c.local_s) for c in costs]
            local = model.local_latency(Workload(model.model))
            hit = self._tables[key] = (model, actions, variants, costs, plans, fast, local)
        (self._model_now, self._actions_now, self.variants, self._costs, self._plans,
         self._fast, local) = hit
        self.time_scale_s = max(local, 1e-6)
        self._mean_gap = local / self.config.load
        self._obs_consts()

    def _draw_scenario(self, rng: np.random.Generator, trace_idx: int) -> Trace:
        """With ``ranges``: this episode's scenario (config, tables) and scaled trace."""
        trace = self.traces[trace_idx]
        if self.ranges is None:
            return trace
        s = self.ranges.draw(rng, batching=self._batching)
        base = self._base_config
        self.config = ScenarioConfig(
            n_devices=int(s["devices"]), mec_slots=int(s["mec_slots"]),
            mec_queue_limit=base.mec_queue_limit, one_way_delay_s=s["delay_ms"] / 1e3,
            load=s["load"], shared_cell=base.shared_cell, horizon_s=base.horizon_s,
            probe_window_s=base.probe_window_s, mask_budget=base.mask_budget,
            workloads=base.workloads, mec_model=base.mec_model,
            mec_max_batch=(int(s["mec_max_batch"]) if self._batching else base.mec_max_batch),
            mec_memory_gb=base.mec_memory_gb, mec_batch_curve=base.mec_batch_curve,
            fallback=base.fallback)
        self._use_tables(s["mec_speedup"], s["device_speed"])
        key = (trace_idx, s["scale"])
        scaled = self._scaled.get(key)
        if scaled is None:
            scaled = self._scaled[key] = trace.scaled(s["scale"])
        self.scenario = s
        return scaled

    def _obs_consts(self) -> None:
        """Per variant: the repeat features and the prediction basis (the encoder's)."""
        enc = self.encoder
        self._var_obs = [(enc._repeat_features(c), c.basis) for c in self._costs]

    def _observe(self) -> npt.NDArray[np.float32]:
        # Fleet.next_device, MecState.status, throughput_estimate and ObservationEncoder.encode_scaled,
        # inlined (same operations in the same order: identical values)
        fleet = self._fleet
        assert fleet is not None
        arrival, free = fleet.arrival, fleet.free
        a, f = arrival[0], free[0]
        i, t = 0, (a if a > f else f)
        for j in range(1, fleet.n):
            a, f = arrival[j], free[j]
            s = a if a > f else f
            if s < t:
                i, t = j, s
        self._dev, self._t = i, t
        hist = fleet.history[i]
        o = self._offsets[i]
        # Link.recent_up_bps, inlined
        bps = self._ups[i].mean_bps(t + o - self._window, t + o)
        hist.append(bps)
        feats = self._hist_feats[i]
        feats.append(math.log10(1.0 + bps * 1e-5) * 0.25 if bps > 0.0 else 0.0)
        mec = self._mec
        pending = mec._pending
        if pending:
            pending = mec._pending = [x for x in pending if x > t]
        q = len(pending)
        busy = 0
        slots_free = mec.free
        low = slots_free[0]
        for f in slots_free:
            if f > t:
                busy += 1
            if f < low:
                low = f
        wait = low - t if low > t else 0.0
        lim = mec.queue_limit
        accepts = self._accepts = lim is None or q < lim
        tot = 0.0
        for x in hist:
            if x > 0.0:
                tot += x
        est = tot / len(hist)
        thr = est if est > 1.0 else 1.0
        reps, basis = self._var_obs[fleet.variant[i]]
        rtt = self._rtts[i]
        nh = len(feats)
        self._buf[: self._nf] = [*(feats if nh == HISTORY else [*self._zeros[nh:], *feats]),
                                 math.log10(1.0 + thr * 1e-5) * 0.25, rtt / RTT_SCALE_S,
                                 q / QUEUE_SCALE, busy / mec.slots, wait / self.time_scale_s,
                                 *reps]
        vec = self._vec
        # agent.actions.outage_inputs
        vec[1] = 8.0 / thr if est > OUTAGE_BELOW_BPS else 8.0 / OUTAGE_BPS
        vec[2] = rtt
        vec[3] = wait if est > OUTAGE_BELOW_BPS else wait + OUTAGE_WAIT_S
        basis.dot(vec, out=self._pred)
        # clip in float64, then round (as encode_scaled)
        clipped = self._clipped
        np.minimum(self._buf, self._high, out=clipped)
        obs: npt.NDArray[np.float32] = clipped.astype(np.float32)
        if self._budget is None:
            if accepts:
                self._mask, self._mask_l = self._mask_all, self._mask_all_l
            else:
                self._mask, self._mask_l = self._mask_local, self._mask_local_l
        else:
            m = (self._mask_all if accepts else self._mask_local) \
                & self.encoder.within_budget(self._budget)
            m[self._local] = True
            self._mask = m
            self._mask_l = m.tolist()
        return obs

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
        super().reset(seed=seed)
        rng = self.np_random
        idx = int(rng.integers(len(self.traces)))
        if options and "trace_index" in options:
            idx = int(options["trace_index"])
        trace = self._draw_scenario(rng, idx)
        self._links = links = make_links(trace, self.config, float(rng.random()))
        self._ups = [ln.fast_up for ln in links]
        self._offsets = [ln.offset_s for ln in links]
        self._rtts = [ln.rtt_s for ln in links]
        self._delays = [ln.one_way_delay_s for ln in links]
        self._hist_feats = [deque(maxlen=HISTORY) for _ in links]
        self._fleet = Fleet(self.config, len(self.variants), self._mean_gap, rng)
        self._mec = self._new_mec(self._model_now)
        self._horizon = min(self.config.horizon_s, trace.period_s)
        obs = self._observe()
        return obs, {"trace": trace.label, "trace_index": idx}

    def predicted(self) -> npt.NDArray[np.float64]:
        """The current decision's per-action predicted latencies (unclipped, in the
        observation's units: the same order as greedy's, whose argmin over the feasible
        actions is greedy's choice); a copy."""
        return np.array(self._pred, dtype=np.float64)

    def action_masks(self) -> npt.NDArray[np.bool_]:
        """Feasible actions for the current decision (sb3-contrib's MaskablePPO calls this)."""
        return self._mask.copy()

    def step(self, action: np.int64 | int) -> tuple[npt.NDArray[np.float32], float, bool, bool,
                                                   dict[str, Any]]:
        fleet = self._fleet
        if fleet is None:
            raise AgentError("call reset() before step()")
        a = int(action)
        i, t = self._dev, self._t
        v = fleet.variant[i]
        offloads, local_s = self._fast[v]
        mask = self._mask_l
        if not 0 <= a < len(mask) or not mask[a]:
            a = self._local
        if offloads[a]:
            mec = self._mec
            plan = self._plans[v][a]
            # the device's local fallback (agent.latency.fallback_start), when the scenario has it
            fb_end = t + fallback_after(plan, local_s, self.config.fallback) + local_s
            if self._batching:
                t_end = mec.run(plan, self._links[i], t, fb_end)[0]  # type: ignore[attr-defined]
            else:
                t_end, _, _, _, slot, s0, s1 = run_plan(plan, self._links[i], t, mec,
                                                        detail=False)
                if t_end > fb_end:
                    t_end = fb_end
                    s1 = min(s1, t_end)
                    slot = slot if s0 < t_end else -1
                if slot >= 0:
                    mec.commit(slot, s0, s1)
            offloaded = True
        else:
            t_end = t + local_s
            offloaded = False
        latency = t_end - t
        # Fleet.done, inlined
        fleet.free[i] = t_end
        fleet._draw(i, fleet.arrival[i])
        obs = self._observe()
        truncated = self._t >= self._horizon
        info = {"latency_s": latency, "action": a, "device": i, "offloaded": offloaded}
        reward = latency / self.time_scale_s
        return obs, -(reward if reward < REWARD_CLIP else REWARD_CLIP), False, truncated, info
