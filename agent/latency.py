"""The latency model: the timeline of one request, shared by simulator, baselines and oracle.

A request of a model is its passes in profile order, each run ``repeats[pass]`` times (an LLM:
``prefill`` once then one ``decode`` per token; a diffusion model: ``text_encoder``, ``unet``
once per step, ``vae_decoder``). Every pass instance with split ``k`` (blocks ``[0, k)`` on the
device, ``[k, N)`` on the MEC) goes through these phases, strictly in sequence::

    device compute   sum of the device profile's block medians [0, k)
    upload           Pass.upload_bytes(k) from the uplink trace: finish time of a fluid transfer
                     started when the device compute ends (exact, zero-capacity gaps stall,
                     the trace loops), plus the one-way propagation delay
    MEC wait         only at the request's first MEC job: the wait for a MEC slot (below)
    MEC compute      sum of the MEC profile's block medians [k, N), divided by ``mec_speedup``
    download         Pass.download_bytes(k) from the downlink trace, plus the one-way delay

A pass with ``k == N`` has only device compute. Every offloaded pass pays its own round trip,
so each LLM decode token and each diffusion step pays one (the next pass needs the previous
pass's output on the device). Compute times are profile medians (deterministic).

The MEC has ``C`` slots. A request that offloads anything takes one slot when its first MEC job
arrives and holds it until its response is delivered (its KV cache / latent stays on the MEC
between passes, as a session). Slots are granted first-come first-served in the order requests
are simulated (their decision order); a request that finds all slots taken waits for the
earliest one to free up (``MEC wait``). A MEC with a queue limit rejects new sessions while
that many are waiting; policies see this as a masked action (see :mod:`agent.actions`).

Not modelled, on purpose: TCP slow start after idle (the emulator sets
``net.ipv4.tcp_slow_start_after_idle=0`` and ``TCP_NODELAY``), packet loss and retransmission,
protocol header overhead, and contention between a device's own uploads and downloads.
Several devices on one shared cell are modelled as each getting an equal, fixed share of the
cell's capacity (the emulator's HTB parent with equal children under saturation).

Times are seconds, sizes bytes, rates bit/s. :func:`simulate_request` returns a
:class:`RequestResult` whose per-pass :class:`PassTiming` rows mirror the emulator's
per-request records field by field, so the two can be compared request by request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.errors import AgentError
from agent.link import Link
from agent.policy import Decision, Workload
from profiler.schema import Profile, check_compatible

__all__ = [
    "LatencyModel",
    "MecState",
    "PassCosts",
    "PassTiming",
    "RequestResult",
    "simulate_request",
]


@dataclass(frozen=True)
class PassCosts:
    """Per-split constants of one pass; index ``k`` in ``0..n_blocks`` (seconds, bytes)."""

    name: str
    n_blocks: int
    block_names: tuple[str, ...]
    repeat: int
    device_s: tuple[float, ...]
    mec_s: tuple[float, ...]
    up_bytes: tuple[int, ...]
    down_bytes: tuple[int, ...]

    @property
    def local_s(self) -> float:
        return self.device_s[self.n_blocks]


class LatencyModel:
    """Per-split constants of a model from its device and MEC profiles.

    :param device: the device-class profile.
    :param mec: the MEC-class profile of the same model and blocks.
    :param mec_speedup: divide every MEC block time by this (scenario knob, default 1; state it
        wherever a result is printed).
    :raises profiler.schema.ProfileError: the profiles are of different models or blocks.
    :raises AgentError: ``mec_speedup`` is not a positive finite number.
    """

    def __init__(self, device: Profile, mec: Profile, *, mec_speedup: float = 1.0) -> None:
        check_compatible(device, mec)
        if not (mec_speedup > 0 and mec_speedup < float("inf")):
            raise AgentError(f"--mec-speedup must be a positive number, got {mec_speedup!r}")
        self.device_profile = device
        self.mec_profile = mec
        self.mec_speedup = float(mec_speedup)
        self.model = device.model.name
        costs = []
        for dp, mp in zip(device.passes, mec.passes, strict=True):
            n = dp.n_blocks
            dms = dp.block_medians_ms()
            mms = mp.block_medians_ms()
            costs.append(PassCosts(
                name=dp.name, n_blocks=n, block_names=tuple(b.name for b in dp.blocks),
                repeat=dp.repeat,
                device_s=tuple(sum(dms[:k]) / 1e3 for k in range(n + 1)),
                mec_s=tuple(sum(mms[k:]) / 1e3 / self.mec_speedup for k in range(n + 1)),
                up_bytes=tuple(dp.upload_bytes(k) for k in range(n + 1)),
                down_bytes=tuple(dp.download_bytes(k) for k in range(n + 1))))
        self.passes: tuple[PassCosts, ...] = tuple(costs)
        self._by_name = {p.name: p for p in self.passes}

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
class PassTiming:
    """One pass instance of a request: the emulator's per-pass record, field by field."""

    name: str
    repetition: int
    split: int
    t_start: float
    device_s: float
    upload_s: float
    upload_bytes: int
    mec_wait_s: float
    mec_s: float
    download_s: float
    download_bytes: int
    t_end: float

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RequestResult:
    """The timeline of one request. ``passes`` is empty when simulated with ``detail=False``."""

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
    passes: tuple[PassTiming, ...] = ()

    @property
    def latency_s(self) -> float:
        return self.t_end - self.t_start

    @property
    def offloaded(self) -> bool:
        return self.upload_bytes > 0 or self.mec_s > 0

    def to_record(self) -> dict[str, Any]:
        """A dict shaped as the emulator's per-request record."""
        return {"device": self.device, "workload": self.workload, "split": self.split,
                "splits": {k: list(v) if isinstance(v, tuple) else v
                           for k, v in self.splits.items()},
                "t_start": self.t_start, "t_end": self.t_end, "latency_s": self.latency_s,
                "phases": {"device_s": self.device_s, "upload_s": self.upload_s,
                           "upload_bytes": self.upload_bytes, "mec_wait_s": self.mec_wait_s,
                           "mec_s": self.mec_s, "download_s": self.download_s,
                           "download_bytes": self.download_bytes},
                "passes": [p.to_json() for p in self.passes]}


def simulate_request(model: LatencyModel, link: Link, decision: Decision, workload: Workload,
                     t_start: float, mec: MecState | None = None, *, device: str = "device0",
                     detail: bool = True) -> RequestResult:
    """Simulate one request started at ``t_start`` and return its timeline.

    ``mec`` is updated (the session's slot is committed) when given; with ``None`` the MEC is
    idle and unlimited. With ``detail=False`` only the totals are kept (faster).
    """
    reps = model.repeats(workload)
    d = link.one_way_delay_s
    up = link.up_finish
    down = link.down_finish
    t = t_start
    slot = -1
    session_start = 0.0
    tot_dev = tot_up = tot_wait = tot_mec = tot_down = 0.0
    tot_ub = tot_db = 0
    rows: list[PassTiming] = []
    for p in model.passes:
        s = decision.splits[p.name]
        n = p.n_blocks
        for r in range(reps[p.name]):
            k = (s[r] if len(s) > 1 else s[0]) if isinstance(s, tuple) else s
            t0 = t
            dev = p.device_s[k]
            t += dev
            if k == n:
                tot_dev += dev
                if detail:
                    rows.append(PassTiming(p.name, r, k, t0, dev, 0.0, 0, 0.0, 0.0, 0.0, 0, t))
                continue
            ub = p.up_bytes[k]
            arrive = up(t, ub) + d
            up_s = arrive - t
            wait = 0.0
            if slot < 0:
                if mec is not None:
                    slot, session_start = mec.acquire(arrive)
                    wait = session_start - arrive
                else:
                    slot, session_start = 0, arrive
            m = p.mec_s[k]
            t_mec_end = arrive + wait + m
            db = p.down_bytes[k]
            t = down(t_mec_end, db) + d
            dn_s = t - t_mec_end
            tot_dev += dev
            tot_up += up_s
            tot_wait += wait
            tot_mec += m
            tot_down += dn_s
            tot_ub += ub
            tot_db += db
            if detail:
                rows.append(PassTiming(p.name, r, k, t0, dev, up_s, ub, wait, m, dn_s, db, t))
    if slot >= 0 and mec is not None:
        mec.commit(slot, session_start, t)
    return RequestResult(device=device, workload=model.model, split=decision.action,
                         splits=decision.splits, t_start=t_start, t_end=t, device_s=tot_dev,
                         upload_s=tot_up, upload_bytes=tot_ub, mec_wait_s=tot_wait,
                         mec_s=tot_mec, download_s=tot_down, download_bytes=tot_db,
                         passes=tuple(rows))
