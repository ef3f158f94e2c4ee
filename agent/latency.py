"""The latency model: the timeline of one request, shared by simulator, baselines and oracle.

A request runs its :class:`agent.plan.Plan` (built by :func:`agent.plan.build_plan` from the
profiles, the decision and the workload: which computations run on which side and which bytes
cross the link, in order). This module prices a plan on a link (:func:`simulate_request`):

* a computation starts when its side is free and everything it needs is on that side; it
  lasts its profile medians (device profile for the device, MEC profile divided by
  ``mec_speedup`` for the MEC);
* a send starts when its items exist on the sender and the link direction is free (each
  direction is a FIFO); it finishes when the trace has delivered its bytes, the payload with
  the framing and TCP/IP headers that carry it (:mod:`agent.wire`) (fluid, exact,
  zero-capacity gaps stall, the trace loops), and its items are on the receiver one one-way
  delay later;
* the device and the MEC work in parallel: the MEC keeps running the loop while tokens stream;
* the request ends when its final output is on the device; every user-visible output's arrival
  is recorded (LLM: each token, for TTFT and TPOT).

The MEC has ``C`` slots. A request that computes anything on the MEC takes one slot when its
first MEC computation is ready and holds it until its last MEC computation ends (its KV cache,
latent and context stay there between computations, as a session). Slots are granted
first-come first-served in the order requests are simulated (their decision order); a request
that finds all slots taken waits for the earliest one to free up (``MEC wait``). A MEC with a
queue limit rejects new sessions while that many are waiting; policies see this as a masked
action (see :mod:`agent.actions`).

This is the exclusive-slot MEC (``--mec-model slots``). The iteration-level batching MEC
(``--mec-model batch``, the default) is :mod:`agent.mec_server`; its requests are priced with
the same step rules by :mod:`agent.batchsim`, all together, since an iteration's length
depends on every session in it.

**Local fallback** (optional, ``--fallback F``; the device runtime's rule, owned here by
:func:`fallback_start` and :func:`apply_fallback`): a request whose plan computes only on the
MEC (:attr:`agent.plan.Plan.mec_only`) and whose final output is not on the device ``F`` times
its local latency after its start is also run locally from that time, from scratch; it ends
with whichever run finishes first (each user-visible output counts when the first of the two
has it), and its MEC session is released then (a slot is held only until then; a batching
session leaves the batch). So no such request takes more than ``(1 + F)`` times its local
latency. The emulator's device does the same (:mod:`emulator.device`).

Not modelled, on purpose: TCP slow start after idle (the emulator sets
``net.ipv4.tcp_slow_start_after_idle=0`` and ``TCP_NODELAY``), packet loss and retransmission,
the ACKs and control messages that are not steps of the plan (:mod:`agent.wire`), and
contention between a device's own uploads and downloads.
Several devices on one shared cell are modelled as each getting an equal, fixed share of the
cell's capacity (the emulator's HTB parent with equal children under saturation).

Times are seconds, sizes bytes, rates bit/s. :func:`simulate_request` returns a
:class:`RequestResult` whose per-step :class:`StepTiming` rows mirror the emulator's
per-request records field by field, so the two can be compared request by request.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any

from agent.errors import AgentError
from agent.link import Link
from agent.plan import COMPUTE, DEVICE, Plan, build_plan, tokens_appended
from agent.policy import Decision, Workload
from profiler.schema import Profile, check_compatible

__all__ = [
    "LatencyModel",
    "MecState",
    "PassCosts",
    "PlanGen",
    "RequestResult",
    "StepTiming",
    "apply_fallback",
    "fallback_after",
    "fallback_label",
    "fallback_start",
    "local_decision",
    "local_run",
    "plan_timeline",
    "run_plan",
    "simulate_request",
]


@dataclass(frozen=True)
class PassCosts:
    """Per-split constants of one pass; index ``k`` in ``0..n_blocks`` (seconds, bytes).

    ``device_s[k]`` is the device time of blocks ``[0, k)``, ``mec_s[k]`` the MEC time of
    ``[k, N)``; ``cut_bytes[k]`` the tensors crossing after block ``k-1`` (``0 < k < N``);
    ``state[j]`` block ``j``'s persistent state as ``(bytes per token, fixed bytes)``, ``None``
    when the profile does not say (schema 1)."""

    name: str
    n_blocks: int
    block_names: tuple[str, ...]
    repeat: int
    device_s: tuple[float, ...]
    mec_s: tuple[float, ...]
    input_bytes: int = 0
    output_bytes: int = 0
    cut_bytes: tuple[int, ...] = ()
    state: tuple[tuple[int | None, int | None], ...] = ()
    tokens_appended: int = 0

    @property
    def local_s(self) -> float:
        return self.device_s[self.n_blocks]


class LatencyModel:
    """Per-split constants of a model from its device and MEC profiles.

    :param device: the device-class profile.
    :param mec: the MEC-class profile of the same model and blocks.
    :param mec_speedup: divide every MEC block time by this (scenario knob, default 1; state it
        wherever a result is printed).
    :param device_speed: divide every device block time by this (a device this many times as
        fast as the profiled device class; default 1).
    :param wire_overhead: price every send with the framing and TCP/IP headers that carry it
        (:mod:`agent.wire`, default); ``False`` prices payload bytes only (the closed forms of
        ``shared/PLANS.md``).
    :raises profiler.schema.ProfileError: the profiles are of different models or blocks.
    :raises AgentError: ``mec_speedup`` or ``device_speed`` is not a positive finite number.
    """

    def __init__(self, device: Profile, mec: Profile, *, mec_speedup: float = 1.0,
                 device_speed: float = 1.0, wire_overhead: bool = True) -> None:
        check_compatible(device, mec)
        if not (mec_speedup > 0 and mec_speedup < float("inf")):
            raise AgentError(f"--mec-speedup must be a positive number, got {mec_speedup!r}")
        if not (device_speed > 0 and device_speed < float("inf")):
            raise AgentError(f"device_speed must be a positive number, got {device_speed!r}")
        self.device_profile = device
        self.mec_profile = mec
        self.mec_speedup = float(mec_speedup)
        self.device_speed = float(device_speed)
        self.wire_overhead = bool(wire_overhead)
        self.model = device.model.name
        costs = []
        params = device.model.parameters
        for dp, mp in zip(device.passes, mec.passes, strict=True):
            n = dp.n_blocks
            dms = dp.block_medians_ms()
            mms = mp.block_medians_ms()
            costs.append(PassCosts(
                name=dp.name, n_blocks=n, block_names=tuple(b.name for b in dp.blocks),
                repeat=dp.repeat,
                device_s=tuple(sum(dms[:k]) / 1e3 / self.device_speed for k in range(n + 1)),
                mec_s=tuple(sum(mms[k:]) / 1e3 / self.mec_speedup for k in range(n + 1)),
                input_bytes=dp.input_bytes, output_bytes=dp.output_bytes,
                cut_bytes=(0, *(b.out_bytes for b in dp.blocks[:-1]), 0),
                state=tuple((getattr(b, "state_bytes_per_token", None),
                             getattr(b, "state_bytes_fixed", None)) for b in dp.blocks),
                tokens_appended=tokens_appended(dp.name, params, dp.input_bytes)))
        self.passes: tuple[PassCosts, ...] = tuple(costs)
        self._by_name = {p.name: p for p in self.passes}
        self._plans: dict[Any, Plan] = {}

    def plan(self, decision: Decision, workload: Workload) -> Plan:
        """The plan of ``workload`` under ``decision`` (:func:`agent.plan.build_plan`), cached."""
        key = (tuple(sorted((k, v) for k, v in decision.splits.items())),
               tuple(sorted(workload.repeats.items())), workload.model)
        hit = self._plans.get(key)
        if hit is None:
            hit = build_plan(self, decision, workload)
            if len(self._plans) > 4096:
                self._plans.clear()
            self._plans[key] = hit
        return hit

    def state_missing_message(self, block: str) -> str:
        """The one-line error for a plan that moves ``block``'s state on a schema-1 profile."""
        src = getattr(self.device_profile, "path", None) or f"the {self.model!r} device profile"
        return (f"{src}: the plan moves block {block!r}'s state (its KV cache) between device "
                f"and MEC, but the profile (schema 1) has no state bytes; upgrade it with "
                f"`python -m profiler upgrade FILE` or regenerate it with `python -m profiler "
                f"model {self.model} --class device` (and the MEC profile likewise)")

    def pass_costs(self, name: str) -> PassCosts:
        return self._by_name[name]

    def repeats(self, workload: Workload) -> dict[str, int]:
        """Repetitions of every pass for ``workload`` (its overrides, else the profile's)."""
        if workload.model != self.model:
            raise AgentError(f"workload is of model {workload.model!r} but the profiles are of "
                             f"{self.model!r}; use profiles of the model the request runs")
        out = {}
        for p in self.passes:
            r = int(workload.repeats.get(p.name, p.repeat))
            if r < 0:
                raise AgentError(f"workload repeats of pass {p.name!r} must be >= 0, got {r}")
            out[p.name] = r
        unknown = set(workload.repeats) - set(out)
        if unknown:
            raise AgentError(f"workload names passes {sorted(unknown)} that the {self.model!r} "
                             f"profile does not have (it has {sorted(out)})")
        return out

    def local_latency(self, workload: Workload) -> float:
        """Latency of the whole request on the device (no link, no MEC)."""
        reps = self.repeats(workload)
        return sum(p.local_s * reps[p.name] for p in self.passes)

    def check_decision(self, decision: Decision, workload: Workload) -> None:
        """Raise :class:`AgentError` unless ``decision`` gives a valid split for every pass."""
        reps = self.repeats(workload)
        for p in self.passes:
            if p.name not in decision.splits:
                raise AgentError(f"decision has no split for pass {p.name!r}")
            s = decision.splits[p.name]
            ks = s if isinstance(s, tuple) else (s,)
            if isinstance(s, tuple) and len(s) not in (1, reps[p.name]):
                raise AgentError(f"decision gives {len(s)} splits for pass {p.name!r}, which "
                                 f"runs {reps[p.name]} times")
            for k in ks:
                if not 0 <= k <= p.n_blocks:
                    raise AgentError(f"split {k} of pass {p.name!r} is out of range "
                                     f"0..{p.n_blocks}")


class MecState:
    """The MEC's slots: ``slots`` concurrent sessions, FIFO in decision order, optional queue
    limit. Times are absolute seconds of the simulation."""

    __slots__ = ("_pending", "free", "queue_limit", "slots")

    def __init__(self, slots: int = 1, queue_limit: int | None = None) -> None:
        if slots < 1:
            raise AgentError(f"the MEC needs at least 1 slot, got {slots}")
        if queue_limit is not None and queue_limit < 0:
            raise AgentError(f"MEC queue limit must be >= 0, got {queue_limit}")
        self.slots = slots
        self.queue_limit = queue_limit
        self.free = [0.0] * slots
        self._pending: list[float] = []

    def expected_wait(self, now: float) -> float:
        """How long a session arriving ``now`` would wait for a slot."""
        w = min(self.free) - now
        return w if w > 0.0 else 0.0

    def queue_len(self, now: float) -> int:
        """Sessions granted a slot that start after ``now`` (waiting)."""
        if self._pending:
            self._pending = [s for s in self._pending if s > now]
        return len(self._pending)

    def busy_slots(self, now: float) -> int:
        """Slots held (or reserved) past ``now``."""
        return sum(1 for f in self.free if f > now)

    def status(self, now: float) -> tuple[int, int, float, bool]:
        """``(queue_len, busy_slots, expected_wait, accepts)`` at ``now`` in one pass."""
        pending = self._pending
        if pending:
            pending = self._pending = [s for s in pending if s > now]
        q = len(pending)
        busy = 0
        low = self.free[0]
        for f in self.free:
            if f > now:
                busy += 1
            if f < low:
                low = f
        lim = self.queue_limit
        return q, busy, (low - now if low > now else 0.0), lim is None or q < lim

    def accepts(self, now: float) -> bool:
        """Whether the MEC takes a new session now (its queue is below the limit)."""
        return self.queue_limit is None or self.queue_len(now) < self.queue_limit

    def acquire(self, arrival: float) -> tuple[int, float]:
        """The slot a session arriving at ``arrival`` gets, and when it starts."""
        free = self.free
        slot = 0 if len(free) == 1 else min(range(len(free)), key=free.__getitem__)
        f = free[slot]
        return slot, (f if f > arrival else arrival)

    def commit(self, slot: int, start: float, end: float) -> None:
        """Hold ``slot`` from ``start`` until ``end``."""
        self.free[slot] = end
        self._pending.append(start)

    def copy(self) -> MecState:
        m = MecState(self.slots, self.queue_limit)
        m.free = list(self.free)
        m._pending = list(self._pending)
        return m


@dataclass(frozen=True)
class StepTiming:
    """One step of a request's plan as it ran: the emulator's per-step record, field by field.

    ``kind`` is ``compute`` or ``send``; ``side`` is ``device``/``mec`` for a computation and
    ``up``/``down`` for a send. A computation was ready (its inputs on its side) at ``t_ready``,
    ran ``[t_start, t_end)``; a send's items were ready at ``t_ready``, it left at ``t_start``
    (FIFO behind earlier sends) and was on the receiver at ``t_end`` (delay included)."""

    kind: str
    side: str
    pass_name: str
    rep: int
    lo: int
    hi: int
    what: str
    nbytes: int
    t_ready: float
    t_start: float
    t_end: float

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RequestResult:
    """The timeline of one request. ``steps`` is empty when simulated with ``detail=False``.

    ``token_times`` are the absolute times at which each user-visible output was on the device
    (LLM: every token; diffusion: the image)."""

    device: str
    workload: str
    split: int
    splits: Mapping[str, int | tuple[int, ...]]
    t_start: float
    t_end: float
    device_s: float
    upload_s: float
    upload_bytes: int
    mec_wait_s: float
    mec_s: float
    download_s: float
    download_bytes: int
    token_times: tuple[float, ...] = ()
    steps: tuple[StepTiming, ...] = ()
    t_arrival: float | None = None
    fallback_s: float | None = None
    """The local fallback won: the device started running the request itself this long after
    ``t_start`` and finished before the MEC's final output came (``None``: it did not)."""

    @property
    def latency_s(self) -> float:
        """Service latency: start of the request's first computation to its final output."""
        return self.t_end - self.t_start

    @property
    def response_s(self) -> float:
        """Response time: arrival to final output (waiting for the device included)."""
        return self.t_end - (self.t_start if self.t_arrival is None else self.t_arrival)

    @property
    def ttft_s(self) -> float:
        """Time to the first user-visible output (first token), from the start."""
        return (self.token_times[0] if self.token_times else self.t_end) - self.t_start

    @property
    def tpot_s(self) -> float | None:
        """Mean gap between user-visible outputs after the first (``None`` with fewer than 2)."""
        tt = self.token_times
        return (tt[-1] - tt[0]) / (len(tt) - 1) if len(tt) > 1 else None

    @property
    def offloaded(self) -> bool:
        """Whether its plan used the MEC (a request its local fallback ended counts)."""
        return self.upload_bytes > 0 or self.mec_s > 0 or self.fallback_s is not None

    def to_record(self) -> dict[str, Any]:
        """A dict shaped as the emulator's per-request record."""
        return {"device": self.device, "workload": self.workload, "split": self.split,
                "splits": {k: list(v) if isinstance(v, tuple) else v
                           for k, v in self.splits.items()},
                "t_arrival": self.t_arrival, "t_start": self.t_start, "t_end": self.t_end,
                "latency_s": self.latency_s, "response_s": self.response_s,
                "ttft_s": self.ttft_s, "tpot_s": self.tpot_s,
                "token_times": [t - self.t_start for t in self.token_times],
                "phases": {"device_s": self.device_s, "upload_s": self.upload_s,
                           "upload_bytes": self.upload_bytes, "mec_wait_s": self.mec_wait_s,
                           "mec_s": self.mec_s, "download_s": self.download_s,
                           "download_bytes": self.download_bytes},
                "steps": [s.to_json() for s in self.steps],
                **({"fallback_s": self.fallback_s} if self.fallback_s is not None else {})}


_SIDE = ("device", "mec")
_DIR = ("up", "down")


PlanGen = Generator[tuple[float, Any], tuple[float, float], tuple[float, list[float],
                                                              dict[str, float], list[StepTiming]]]


def plan_timeline(plan: Plan, link: Link, t_start: float, detail: bool = True,
                  device_on: list[float] | None = None) -> PlanGen:
    """The pricing rules of a plan (the module docstring), as a coroutine: yields ``(ready,
    step)`` for each MEC computation (``ready``: when its inputs are on the MEC and this
    session's previous MEC work is done) and is sent back its ``(start, seconds)``; returns
    ``(t_end, token_times, totals, steps)``. ``device_on`` (``inf`` for every item, when
    given) is filled as the timeline goes with when each item is on the device (a caller that
    ends the request early reads the outputs already there).

    The one owner of the rules: :func:`run_plan` drives it with an exclusive MEC slot,
    :class:`agent.batchsim.BatchSim` with the shared batching server."""
    inf = float("inf")
    n = len(plan.item_names)
    on = (device_on if device_on is not None else [inf] * n, [inf] * n)
    for i in plan.initial:
        on[DEVICE][i] = t_start
    d = link.one_way_delay_s
    finish = (link.up_finish, link.down_finish)
    free = [t_start, -inf]
    link_free = [-inf, -inf]
    first = True
    dev_s = mec_s = wait = up_s = down_s = 0.0
    up_b = down_b = 0
    rows: list[StepTiming] = []
    for st in plan.steps:
        side = st.side
        have = on[side]
        if st.kind == COMPUTE:
            ready = t_start
            for it in st.needs:
                x = have[it]
                if x > ready:
                    ready = x
            if side == DEVICE:
                start = ready if ready > free[0] else free[0]
                end = start + st.seconds
                dev_s += st.seconds
            else:
                r = ready if ready > free[1] else free[1]
                start, secs = yield (r, st)
                end = start + secs
                if first:
                    wait = start - ready
                    first = False
                mec_s += secs
            free[side] = end
            for it in st.makes:
                have[it] = end
        else:
            ready = t_start
            for it in st.items:
                x = have[it]
                if x > ready:
                    ready = x
            lf = link_free[side]
            start = ready if ready > lf else lf
            done = finish[side](start, st.wire_bytes)
            link_free[side] = done
            end = done + d
            there = on[1 - side]
            for it in st.items:
                if end < there[it]:
                    there[it] = end
            if side == DEVICE:
                up_s += end - start
                up_b += st.nbytes
            else:
                down_s += end - start
                down_b += st.nbytes
        if detail:
            rows.append(StepTiming("compute" if st.kind == COMPUTE else "send",
                                   _SIDE[side] if st.kind == COMPUTE else _DIR[side],
                                   st.pass_name, st.rep, st.lo, st.hi, st.what, st.nbytes,
                                   ready, start, end))
    dev_on = on[DEVICE]
    totals = {"device_s": dev_s, "mec_s": mec_s, "mec_wait_s": wait, "upload_s": up_s,
              "download_s": down_s, "upload_bytes": float(up_b), "download_bytes": float(down_b)}
    return dev_on[plan.final], [dev_on[i] for i in plan.outputs], totals, rows



def run_plan(plan: Plan, link: Link, t_start: float, mec: MecState | None = None, *,
             detail: bool = True) -> tuple[float, list[float], dict[str, float], list[StepTiming],
                                           int, float, float]:
    """Price ``plan`` started at ``t_start`` with an exclusive MEC slot (:func:`plan_timeline`).

    The session's first MEC computation acquires a slot from ``mec`` (an idle, unlimited MEC
    when ``None``); it then runs its MEC work back to back as its inputs arrive.
    Returns ``(t_end, token_times, totals, steps, slot, session_start, session_end)``; the
    caller commits the slot (``slot`` is -1 when nothing ran on the MEC)."""
    gen = plan_timeline(plan, link, t_start, detail)
    slot = -1
    sess_start = sess_end = 0.0
    try:
        ready, st = next(gen)
        while True:
            if slot < 0:
                slot, start = mec.acquire(ready) if mec is not None else (0, ready)
                sess_start = start
            else:
                start = ready
            sess_end = start + st.seconds
            ready, st = gen.send((start, st.seconds))
    except StopIteration as stop:
        t_end, tokens, totals, rows = stop.value
    return t_end, tokens, totals, rows, slot, sess_start, sess_end


def fallback_start(model: LatencyModel, plan: Plan, workload: Workload, t_start: float,
                   fallback: float | None) -> float:
    """When the device starts its local fallback run of ``plan`` started at ``t_start`` if the
    final output is not there by then (``inf``: no fallback for this plan; see the module
    docstring)."""
    if fallback is None or not plan.mec_only:  # no local latency summed on the common path
        return float("inf")
    return t_start + fallback_after(plan, model.local_latency(workload), fallback)


def fallback_label(fallback: float | None) -> str:
    """How outputs name the fallback: ``local fallback after F x the local latency`` (empty
    when off)."""
    return "" if fallback is None else f"local fallback after {fallback:g} x the local latency"


def fallback_after(plan: Plan, local_s: float, fallback: float | None) -> float:
    """How long after its start a request of ``plan`` whose local latency is ``local_s``
    starts its local fallback run (``inf``: never; :func:`fallback_start`)."""
    if fallback is None or not plan.mec_only:
        return float("inf")
    return fallback * local_s


def local_decision(model: LatencyModel) -> Decision:
    """Every block of every pass on the device (what a local fallback runs)."""
    return Decision({p.name: p.n_blocks for p in model.passes})


def local_run(model: LatencyModel, workload: Workload, link: Link,
              t0: float) -> tuple[float, list[float]]:
    """``(t_end, token_times)`` of the whole request run on the device from ``t0``."""
    plan = model.plan(local_decision(model), workload)
    t_end, tokens, *_ = run_plan(plan, link, t0, None, detail=False)
    return t_end, tokens


def apply_fallback(model: LatencyModel, res: RequestResult, workload: Workload, link: Link,
                   t_fallback: float) -> RequestResult:
    """``res`` (the plan's own timeline) raced by a local run from ``t_fallback``: unchanged
    when the plan's final output comes first, else ending when the local run does."""
    if t_fallback >= res.t_end:
        return res
    t_end, tokens = local_run(model, workload, link, t_fallback)
    if t_end >= res.t_end:
        return res
    if len(tokens) != len(res.token_times):
        raise AssertionError("a local run and the plan see different outputs")
    return RequestResult(
        device=res.device, workload=res.workload, split=res.split, splits=res.splits,
        t_start=res.t_start, t_end=t_end, device_s=res.device_s + (t_end - t_fallback),
        upload_s=res.upload_s, upload_bytes=res.upload_bytes, mec_wait_s=res.mec_wait_s,
        mec_s=res.mec_s, download_s=res.download_s, download_bytes=res.download_bytes,
        token_times=tuple(min(a, b) for a, b in zip(res.token_times, tokens, strict=True)),
        steps=res.steps, t_arrival=res.t_arrival, fallback_s=t_fallback - res.t_start)


def simulate_request(model: LatencyModel, link: Link, decision: Decision, workload: Workload,
                     t_start: float, mec: MecState | None = None, *, device: str = "device0",
                     detail: bool = True, t_arrival: float | None = None,
                     fallback: float | None = None) -> RequestResult:
    """Simulate one request started at ``t_start`` and return its timeline.

    ``mec`` is updated (the session's slot is committed) when given; with ``None`` the MEC is
    idle and unlimited. With ``detail=False`` the per-step rows are not kept (faster).
    ``fallback``: the device's local fallback (module docstring); when the local run wins, the
    slot is held only until the request ends (not at all when its session had not started).
    ``steps`` stay the plan's own timeline.
    """
    plan = model.plan(decision, workload)
    t_end, tokens, tot, rows, slot, s0, s1 = run_plan(plan, link, t_start, mec, detail=detail)
    res = _result(model, decision, device, t_start, t_end, tokens, tot, rows, t_arrival)
    t_fb = fallback_start(model, plan, workload, t_start, fallback)
    if t_fb < t_end:
        res = apply_fallback(model, res, workload, link, t_fb)
        s1 = min(s1, res.t_end)
        if s0 >= res.t_end:
            slot = -1
    if slot >= 0 and mec is not None:
        mec.commit(slot, s0, s1)
    return res


def _result(model: LatencyModel, decision: Decision, device: str, t_start: float,
            t_end: float, tokens: list[float], tot: dict[str, float], rows: list[StepTiming],
            t_arrival: float | None) -> RequestResult:
    return RequestResult(device=device, workload=model.model, split=decision.action,
                         splits=decision.splits, t_start=t_start, t_end=t_end,
                         device_s=tot["device_s"], upload_s=tot["upload_s"],
                         upload_bytes=int(tot["upload_bytes"]), mec_wait_s=tot["mec_wait_s"],
                         mec_s=tot["mec_s"], download_s=tot["download_s"],
                         download_bytes=int(tot["download_bytes"]), token_times=tuple(tokens),
                         steps=tuple(rows), t_arrival=t_arrival)
