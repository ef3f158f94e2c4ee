"""The MEC as an iteration-level batching server: one rule for the simulator and the emulator.

Two MEC models are selectable (``--mec-model``):

* ``batch`` (the default): iteration-level batching as Orca/vLLM/TGI run generative models.
  This module. The shipped policies were trained on ``slots`` and are evaluated on both
  (``policies/README.md``).
* ``slots``: ``C`` exclusive slots, one FIFO queue; a session holds a slot from its first MEC
  computation to its last (:class:`agent.latency.MecState`). Kept for the exact optimum
  (:mod:`agent.optimum`, which searches slot release times), execute mode (real pieces run one
  session at a time) and the scale scenarios measured on it.

The batching rule (:class:`BatchServer`)
    A *session* is a request that computes on the MEC. It *arrives* when its first MEC
    computation is ready and is *admitted* at an iteration boundary when fewer than
    ``max_batch`` sessions are active and the memory budget holds the model's weights plus
    every active session's live state plus its own (its state at its final length, reserved at
    admission as vLLM reserves a sequence's KV blocks); otherwise it waits in one FIFO queue
    (head-of-line: a later, smaller session does not overtake). A MEC with a queue limit
    rejects a new session while that many wait (a masked action, as with slots). An admitted
    session stays active until its last MEC computation ends.

    Each *iteration* runs, as one batch, the next MEC computation of every active session whose
    inputs are on the MEC at the iteration's start; a computation that becomes ready during an
    iteration waits for the next boundary. Computations of different block ranges (a prefill
    and a decode, or different splits) are batched *per block* (selective batching): block
    ``j`` of pass ``p`` runs once on the ``n`` computations that cover it, and the iteration
    lasts ``sum over (p, j) of t_{p,j}(n)``. With one computation this is exactly its batch-1
    time, so the batching MEC at batch 1 prices a request as the slot model does.

Per-block batch time ``t_{p,j}(n)`` (:class:`BatchCost`, ``--mec-batch-curve``)
    * ``auto`` (the default, :func:`resolve_curve`): ``profile`` when the MEC profile measured a
      batch curve, else the model's shipped GPU profile ``profiles/<model>.mec-gpu.json`` (one
      H200, batch 1..32) as a file below, else ``llama7b-gpu``;
    * ``profile``: the MEC profile's own batch curve (``profiler model --batch-sizes``),
      :meth:`profiler.schema.Block.latency_at` (median), linear between measured sizes;
    * a path: another profile file of the same model and blocks that carries batch curves.
    Both are applied as the curve's shape: ``t_{p,j}(n) = t_{p,j}(1) x median_{p,j}(n) /
    median_{p,j}(1)`` of the curve's file, on the run's own batch-1 time (the MEC profile /
    ``mec_speedup``). For the profile's own curve that is its measured time; a file measured
    in another session or on another machine of the same class then joins the run's batch-1
    times without a step at batch 2;
    * ``llama7b-gpu``: the batch-1 profile times a GPU batch-scaling factor, from llama.cpp
      ``batched-bench`` on LLaMA-7B F16, one GPU: decode step 24.1 ms at batch 1, 57.4 ms at 8,
      68.8 ms at 32 (factor 1, 2.382, 2.855; linear between these sizes). Outputs that use it
      say so (``scaled: llama7b-gpu``). The profiles measured here are a CPU, whose batch curve
      is close to linear; this knob shows what a GPU's curve does to contention.

    A measured curve is used padded (:func:`padded`): a batch of ``n`` costs no more than any
    larger measured size, as a server may pad it to that size. A batch size above the largest
    measured size is refused (:class:`MecConfigError` when ``max_batch`` exceeds it), never
    extrapolated. Every time is divided by ``mec_speedup``.

:class:`BatchServer` is a pure state machine with no clock: the simulator
(:func:`agent.batchsim.simulate_batched`) drives it with simulated times, the emulator's MEC
with its own clock. :meth:`BatchServer.next_iteration` says when the next iteration starts,
which computations form it and how long it lasts; :meth:`BatchServer.complete` applies it.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import AgentError
from profiler.schema import Profile, ProfileError, check_compatible, load_profile

if TYPE_CHECKING:
    from agent.latency import LatencyModel
    from agent.plan import Plan

__all__ = ["AUTO_CURVE", "GPU_CURVES", "MEC_MODELS", "BatchCost", "BatchServer", "MecConfig",
           "MecConfigError", "MecStatus", "Work", "curve_label", "padded", "resolve_curve",
           "session_state_bytes"]

MEC_MODELS = ("slots", "batch")

PROFILES_DIR: Path = Path(__file__).resolve().parent.parent / "profiles"

AUTO_CURVE = "auto"

GPU_CURVES: dict[str, tuple[tuple[int, float], ...]] = {
    "llama7b-gpu": ((1, 24.1), (8, 57.4), (32, 68.8)),
}
"""Published GPU batch curves, ``(batch, ms per iteration)``: llama.cpp ``batched-bench``,
LLaMA-7B F16 on one GPU, decode step (issue 11)."""


class MecConfigError(AgentError):
    """A MEC server configuration that cannot be used (batch size, memory, batch profile)."""


@functools.lru_cache(maxsize=16)
def _read_curve(path: str, mtime_ns: int, size: int) -> Profile:
    return load_profile(path)


def _curve_profile(path: Path) -> Profile:
    """The batch-curve profile file at ``path`` (it must exist), parsed once per version of the
    file: a :class:`BatchCost` is built per training episode and per plan the oracle prices,
    and re-reading the file each time took 16.5 s of a 24.2-s oracle run (``agent.evaluate
    --model gpt2 --policies oracle --horizon 300``, one Mahimahi trace, 6 Dec, under
    cProfile). Profiles are frozen, so every caller may share one."""
    st = path.stat()
    return _read_curve(str(path), st.st_mtime_ns, st.st_size)


def resolve_curve(curve: str, mec_profile: Profile) -> str:
    """``--mec-batch-curve`` as used: ``auto`` (the default) is the MEC profile's own batch curve
    when it measured one, else the model's shipped GPU profile ``profiles/<model>.mec-gpu.json``
    (measured batch curves, applied as a shape) when there is one, else ``llama7b-gpu``; any
    other value is itself."""
    if curve != AUTO_CURVE:
        return curve
    if min(p.batch_sizes[-1] for p in mec_profile.passes) > 1:
        return "profile"
    gpu = PROFILES_DIR / f"{mec_profile.model.name}.mec-gpu.json"
    if gpu.is_file():
        try:
            check_compatible(mec_profile, _curve_profile(gpu))
            return str(gpu)
        except ProfileError:
            pass
    return next(iter(GPU_CURVES))


def curve_label(curve: str) -> str:
    """How outputs name a (resolved) curve: a file under ``profiles/`` by its relative path."""
    p = Path(curve)
    if p.is_absolute() and p.parent == PROFILES_DIR:
        return f"profiles/{p.name}"
    return curve


@dataclass(frozen=True)
class MecConfig:
    """The MEC server model and its knobs (scenario keys ``mec_model``, ``mec_max_batch``,
    ``mec_memory_gb``, ``mec_batch_curve``)."""

    model: str = "batch"
    max_batch: int = 8
    memory_gb: float | None = None
    batch_curve: str = AUTO_CURVE

    def __post_init__(self) -> None:
        if self.model not in MEC_MODELS:
            raise MecConfigError(f"--mec-model must be one of {', '.join(MEC_MODELS)}, "
                                 f"got {self.model!r}")
        if self.max_batch < 1:
            raise MecConfigError(f"--mec-max-batch must be >= 1, got {self.max_batch}")
        if self.memory_gb is not None and not (self.memory_gb > 0 and
                                               math.isfinite(self.memory_gb)):
            raise MecConfigError(f"--mec-memory-gb must be a positive number, "
                                 f"got {self.memory_gb}")

    def resolved(self, mec_profile: Profile) -> MecConfig:
        """This configuration with its batch curve resolved (:func:`resolve_curve`)."""
        if self.model == "slots":
            return self
        return dataclasses.replace(self, batch_curve=resolve_curve(self.batch_curve,
                                                                   mec_profile))

    @property
    def label(self) -> str:
        """How outputs name the model (``slots`` or ``batch<=B, curve, mem``); resolve the
        curve first (:meth:`resolved`) to name what ``auto`` stands for."""
        if self.model == "slots":
            return "slots"
        curve = (f"scaled: {self.batch_curve}" if self.batch_curve in GPU_CURVES
                 else f"curve: {curve_label(self.batch_curve)}")
        mem = "" if self.memory_gb is None else f", {self.memory_gb:g} GB"
        return f"batch<={self.max_batch} ({curve}{mem})"


def _interp(points: Sequence[tuple[int, float]], n: int, what: str) -> float:
    """Linear interpolation of ``points`` (ascending batch sizes) at ``n``; refuses above."""
    if n < 1:
        raise MecConfigError(f"{what}: batch size must be >= 1, got {n}")
    if n > points[-1][0]:
        raise MecConfigError(f"{what}: batch size {n} is above the largest measured size "
                             f"{points[-1][0]} (refused, not extrapolated); lower "
                             f"--mec-max-batch or measure larger batches")
    for (b0, v0), (b1, v1) in itertools.pairwise(points):
        if b0 <= n <= b1:
            return v0 + (v1 - v0) * (n - b0) / (b1 - b0)
    return points[0][1]


def padded(median_at: Callable[[int], float], sizes: Sequence[int], n: int) -> float:
    """A measured curve's time at batch ``n`` as a server runs it: the curve at ``n`` (linear
    between measured sizes), or the time of any larger measured size if that is less, since a
    batch of ``n`` can always run padded to a larger one (as vLLM pads to its captured CUDA-graph
    batch sizes). Makes a curve non-decreasing: GPT-2's H200 decode measured 5.43 ms at batch
    2 but 3.02 ms at 4 (``profiles/gpt2.mec-gpu.json``); a batch of 2 then costs 3.02 ms."""
    return min([median_at(n), *(median_at(m) for m in sizes if m > n)])


class BatchCost:
    """Per-block iteration times ``t(pass, block, n)`` in seconds (see the module docstring).

    :raises MecConfigError: the curve is unknown, the profile has no batch curve, or
        ``max_batch`` is above the largest measured batch size.
    :raises profiler.schema.ProfileError: a batch profile of another model or other blocks.
    """

    def __init__(self, model: LatencyModel, curve: str = "profile", max_batch: int = 1) -> None:
        curve = resolve_curve(curve, model.mec_profile)
        self.curve = curve
        self.speedup = model.mec_speedup
        self._t1: dict[str, tuple[float, ...]] = {
            p.name: tuple(p.mec_s[j] - p.mec_s[j + 1] for j in range(p.n_blocks))
            for p in model.passes}
        self._factor: tuple[tuple[int, float], ...] | None = None
        self._prof: Profile | None = None
        if curve in GPU_CURVES:
            pts = GPU_CURVES[curve]
            self._factor = tuple((b, v / pts[0][1]) for b, v in pts)
            top = pts[-1][0]
        else:
            prof = model.mec_profile
            if curve != "profile":
                path = Path(curve)
                if not path.is_file():
                    raise MecConfigError(f"--mec-batch-curve {curve!r}: expected 'profile', "
                                         f"{', '.join(GPU_CURVES)} or a profile file "
                                         f"(no such file)")
                prof = _curve_profile(path)
                if prof.model.name != model.model:
                    raise MecConfigError(f"--mec-batch-curve {curve}: a batch profile of model "
                                         f"{prof.model.name!r}, but the run's model is "
                                         f"{model.model!r}; give the {model.model!r} one")
                try:
                    check_compatible(model.mec_profile, prof)
                except ProfileError as e:
                    raise MecConfigError(f"--mec-batch-curve {curve}: a batch profile of "
                                         f"another model or other blocks: {e}") from None
            sizes = [p.batch_sizes for p in prof.passes]
            top = min(s[-1] for s in sizes)
            if top <= 1:
                src = getattr(prof, "path", None) or f"the {prof.model.name!r} MEC profile"
                raise MecConfigError(f"{src} has no batch curve (measure one with `python -m "
                                     f"profiler model ... --batch-sizes 1,2,4,8`), or pass "
                                     f"--mec-batch-curve {next(iter(GPU_CURVES))}")
            self._prof = prof
        if max_batch > top:
            raise MecConfigError(f"--mec-max-batch {max_batch} is above the largest batch size "
                                 f"the curve {curve!r} measured ({top}); batch sizes beyond "
                                 f"it are refused, not extrapolated")
        self.top = top
        self._cache: dict[tuple[str, int, int], float] = {}
        self._whole_ratio: dict[int, float] = {}

    def block(self, pass_name: str, j: int, n: int) -> float:
        """Seconds block ``j`` of ``pass_name`` takes on a batch of ``n``."""
        key = (pass_name, j, n)
        hit = self._cache.get(key)
        if hit is None:
            if n == 1 or self._prof is None:
                f = 1.0 if n == 1 else _interp(self._factor or ((1, 1.0),), n, self.curve)
            else:  # the curve's shape, on this run's batch-1 time (see the module docstring)
                p = next(x for x in self._prof.passes if x.name == pass_name)
                b = p.blocks[j]

                def block_at(k: int) -> float:
                    return b.latency_at(k).median

                f = padded(block_at, p.batch_sizes, n) / b.latency.median
            hit = self._t1[pass_name][j] * f
            self._cache[key] = hit
        return hit

    def iteration(self, works: Sequence[Work]) -> float:
        """Seconds one iteration of ``works`` takes (per-block selective batching)."""
        if len(works) == 1:
            return works[0].seconds
        count: dict[tuple[str, int], int] = {}
        for w in works:
            for j in range(w.lo, w.hi):
                k = (w.pass_name, j)
                count[k] = count.get(k, 0) + 1
        return sum(self.block(p, j, n) for (p, j), n in count.items())

    def predict(self, seconds: float, n: int) -> float:
        """A batch-1 time ``seconds`` at batch ``n`` (the env's quick prediction: the GPU
        factor, or the profile's whole-range ratio approximated by the first pass's)."""
        if n <= 1:
            return seconds
        n = min(n, self.top)
        if self._factor is not None:
            return seconds * _interp(self._factor, n, self.curve)
        ratio = self._whole_ratio.get(n)
        if ratio is None:  # per env step: the padded curve once per batch size
            assert self._prof is not None
            p = self._prof.passes[-1]
            ratio = self._whole_ratio[n] = \
                padded(lambda k: p.whole_at(k).median, p.batch_sizes, n) / p.whole.median
        return seconds * ratio


def session_state_bytes(model: LatencyModel, plan: Plan) -> int:
    """Live state a session keeps on the MEC at its final length: every block (counted once by
    name) that computes on the MEC and has state, at the request's total token count."""
    from agent.plan import COMPUTE, MEC

    tokens = 0
    blocks: dict[str, tuple[int, int]] = {}
    reps: dict[str, set[int]] = {}
    for s in plan.steps:
        if s.kind == COMPUTE:
            reps.setdefault(s.pass_name, set()).add(s.rep)
        if s.kind != COMPUTE or s.side != MEC:
            continue
        pc = model.pass_costs(s.pass_name)
        for j in range(s.lo, s.hi):
            if j < len(pc.state):
                per, fixed = pc.state[j]
                blocks[pc.block_names[j]] = (per or 0, fixed or 0)
    for name, rs in reps.items():
        tokens += model.pass_costs(name).tokens_appended * len(rs)
    return sum(fixed + per * tokens for per, fixed in blocks.values())


@dataclass
class Work:
    """One MEC computation of a session: blocks ``[lo, hi)`` of ``pass_name``, ready (inputs on
    the MEC) at ``ready``, ``seconds`` at batch 1. ``tag`` is the caller's (its step)."""

    sid: int
    pass_name: str
    lo: int
    hi: int
    seconds: float
    ready: float
    tag: object = None


@dataclass(frozen=True)
class MecStatus:
    """What the MEC reports (observation and replies): active batch, queue, memory headroom,
    predicted iteration time and a new session's predicted wait."""

    active: int
    max_batch: int
    queue_len: int
    memory_headroom_bytes: float
    iteration_s: float
    expected_wait_s: float
    accepts: bool


@dataclass
class _Sess:
    sid: int
    arrival: float
    mem: int
    work: Work | None = None
    admitted_at: float | None = None


@dataclass
class BatchServer:
    """The batching MEC's state (see the module docstring). Times are the caller's clock."""

    cost: BatchCost
    max_batch: int
    memory_bytes: float = math.inf
    weight_bytes: int = 0
    queue_limit: int | None = None
    busy_until: float = -math.inf
    _active: dict[int, _Sess] = field(default_factory=dict)
    _queue: deque[_Sess] = field(default_factory=deque)
    _used: int = 0
    last_iteration_s: float = 0.0

    def __post_init__(self) -> None:
        if self.memory_bytes < self.weight_bytes:
            raise MecConfigError(f"--mec-memory-gb {self.memory_bytes / 1e9:g} is below the "
                                 f"model's weights ({self.weight_bytes / 1e9:.3f} GB); give "
                                 f"at least the weights plus one session's state")

    @classmethod
    def for_model(cls, model: LatencyModel, config: MecConfig,
                  queue_limit: int | None = None) -> BatchServer:
        """The server for ``model`` under ``config`` (weights from the MEC profile)."""
        # passes may share blocks (prefill/decode): count each block name once
        weights = sum({b.name: b.weight_bytes for p in model.mec_profile.passes
                       for b in p.blocks}.values())
        mem = math.inf if config.memory_gb is None else config.memory_gb * 1e9
        return cls(BatchCost(model, config.batch_curve, config.max_batch), config.max_batch,
                   mem, weights, queue_limit)

    # -- sessions ----------------------------------------------------------------------------
    def accepts(self) -> bool:
        """Whether a new session is taken now (the queue is below its limit)."""
        return self.queue_limit is None or len(self._queue) < self.queue_limit

    def arrive(self, sid: int, t: float, mem_bytes: int) -> None:
        """Session ``sid`` arrives at ``t`` (its first MEC computation is ready) needing
        ``mem_bytes`` of live state; the queue stays in arrival order. The queue limit is
        checked at decision time (:meth:`accepts`), as with slots. A session larger than the
        whole budget is refused."""
        if self.weight_bytes + mem_bytes > self.memory_bytes:
            raise MecConfigError(f"a session needs {mem_bytes / 1e9:.3f} GB of state, more than "
                                 f"the MEC memory budget leaves after the weights "
                                 f"({(self.memory_bytes - self.weight_bytes) / 1e9:.3f} GB); "
                                 f"raise --mec-memory-gb")
        q = self._queue
        i = len(q)
        while i > 0 and q[i - 1].arrival > t:
            i -= 1
        q.insert(i, _Sess(sid, t, mem_bytes))

    def submit(self, work: Work) -> None:
        """Session ``work.sid``'s next MEC computation (ready at ``work.ready``)."""
        s = self._active.get(work.sid)
        if s is None:
            s = next(x for x in self._queue if x.sid == work.sid)
        assert s.work is None, "one pending computation per session"
        s.work = work

    def finish(self, sid: int) -> None:
        """Session ``sid`` has no more MEC computations: it leaves (frees its memory)."""
        s = self._active.pop(sid)
        self._used -= s.mem

    def drop(self, sid: int) -> None:
        """Session ``sid`` ended early (the emulator: an error, a release): forget it."""
        if sid in self._active:
            self.finish(sid)
            return
        for s in self._queue:
            if s.sid == sid:
                self._queue.remove(s)
                return

    def _fits(self, s: _Sess) -> bool:
        return (len(self._active) < self.max_batch
                and self.weight_bytes + self._used + s.mem <= self.memory_bytes)

    # -- iterations --------------------------------------------------------------------------
    def next_start(self) -> float:
        """When the next iteration starts given what is known now (``inf``: nothing to run)."""
        t = math.inf
        for s in self._active.values():
            if s.work is not None and s.work.ready < t:
                t = s.work.ready
        if self._queue:
            head = self._queue[0]
            if head.work is not None and head.work.ready < t and self._fits(head):
                t = head.work.ready
        return max(t, self.busy_until) if t < math.inf else math.inf

    def next_iteration(self, at: float | None = None) -> tuple[float, list[Work], float] | None:
        """``(start, works, seconds)`` of the next iteration, admitting queued sessions at its
        boundary; ``None`` when nothing can run. ``at``: a real clock's now (the iteration
        starts no earlier). Call :meth:`complete` with it afterwards."""
        t = self.next_start()
        if t == math.inf:
            return None
        if at is not None and at > t:
            t = at
        while self._queue and self._queue[0].arrival <= t and self._fits(self._queue[0]):
            s = self._queue.popleft()
            s.admitted_at = t
            self._active[s.sid] = s
            self._used += s.mem
        works = [s.work for s in self._active.values()
                 if s.work is not None and s.work.ready <= t]
        if not works:  # the head needs memory an active session holds: wait for a finish
            return None
        secs = self.cost.iteration(works)
        return t, works, secs

    def complete(self, start: float, works: Sequence[Work], seconds: float) -> None:
        """Apply an iteration returned by :meth:`next_iteration`."""
        for w in works:
            self._active[w.sid].work = None
        self.busy_until = start + seconds
        self.last_iteration_s = seconds

    def admitted_at(self, sid: int) -> float | None:
        s = self._active.get(sid)
        return None if s is None else s.admitted_at

    # -- what the MEC reports ----------------------------------------------------------------
    def status(self, now: float) -> MecStatus:
        """Active batch, queue, memory headroom, predicted iteration time (the current batch
        plus one new session, each at its last computation's batch-1 time) and a new session's
        predicted wait (the rest of the running iteration, plus one iteration per queued
        session ahead of it beyond the free batch places)."""
        n = len(self._active)
        per = [s.work.seconds for s in self._active.values() if s.work is not None]
        base = max(per) if per else self.last_iteration_s
        it = self.cost.predict(base, min(n + 1, self.max_batch)) if base > 0 else 0.0
        rest = self.busy_until - now if self.busy_until > now else 0.0
        ahead = len(self._queue) + n - self.max_batch + 1
        wait = rest + (max(ahead, 0) * it)
        head = self.memory_bytes - self.weight_bytes - self._used
        return MecStatus(n, self.max_batch, len(self._queue),
                         head if math.isfinite(head) else -1.0, it, wait, self.accepts())
