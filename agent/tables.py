"""Precomputed request timelines that make the env step O(1).

For one trace, one workload variant and every offloading action ``a``, :class:`RemainderTable`
holds ``R_a(s)``: the time from the start of the request's first MEC job, at trace time ``s``,
to the end of the request (MEC compute, download, then every later pass with its device
compute, upload, MEC compute and download), computed with the exact vectorised
:meth:`traces.Trace.finish_time` on a grid of ``s`` with step ``dt_s`` (default 50 ms) and read
back by linear interpolation. The part before the first MEC job (device compute, first upload,
MEC wait) is computed exactly at step time, so only the remainder is interpolated. Grid chunks
of ``points`` grid steps are built per action on first use and cached (long traces and
actions a policy never takes cost nothing). The env picks ``dt_s`` as 1/25 of the fully-local
latency, clamped to [0.02, 1] s.

Since the MEC wait happens only at the first MEC job (session slots, see :mod:`agent.latency`),
``t_end = start + R_a(start)`` equals the exact model up to the interpolation error (tested:
below 1% of the latency on the bundled traces).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from agent.actions import ActionCosts, SplitActions
from agent.link import fast_trace
from traces import Trace

__all__ = ["RemainderTable"]

F64 = npt.NDArray[np.float64]


class RemainderTable:
    """``R_a(s)`` for one (uplink trace, downlink trace, workload variant)."""

    def __init__(self, actions: SplitActions, costs: ActionCosts, up: Trace, down: Trace,
                 one_way_delay_s: float, *, dt_s: float = 0.05, points: int = 256) -> None:
        self.actions = actions
        self.up = fast_trace(up)
        self.down = fast_trace(down)
        self.delay = float(one_way_delay_s)
        self.dt = float(dt_s)
        self.per_chunk = int(points)
        self.chunk_s = self.per_chunk * self.dt
        self.period = float(up.period_s)
        self.offloading = np.flatnonzero(costs.offloads)
        self._row = {int(a): j for j, a in enumerate(self.offloading)}
        self._chunks: dict[tuple[int, int], list[float]] = {}
        reps = dict(costs.repeats)
        model = actions.model
        # one entry per pass instance: per offloading action (device s, MEC s, up B, down B,
        # offloaded?)
        inst = []
        for p in model.passes:
            ks = [actions._split(p.name, p.n_blocks, int(a)) for a in self.offloading]
            dev = np.array([p.device_s[k] for k in ks])
            mec = np.array([p.mec_s[k] if k < p.n_blocks else 0.0 for k in ks])
            ub = np.array([float(p.up_bytes[k]) for k in ks])
            db = np.array([float(p.down_bytes[k]) for k in ks])
            off = np.array([k < p.n_blocks for k in ks])
            inst.extend([(dev, mec, ub, db, off)] * reps[p.name])
        self._inst = inst
        first = np.full(len(self.offloading), -1)
        for j, (_, _, _, _, off) in enumerate(inst):
            first = np.where((first < 0) & off, j, first)
        self._first = first

    def _build(self, c: int, action: int) -> list[float]:
        """Build ``R_action`` on chunk ``c`` (a list of ``points + 1`` floats)."""
        row = self._row[action]
        g = np.arange(self.per_chunk + 1) * self.dt + c * self.chunk_s
        t = g
        d = self.delay
        up, down = self.up.finish_array, self.down.finish_array
        first = int(self._first[row])
        for dev, mec, ub, db, off in self._inst[first:]:
            if t is g:  # the first MEC job: starts at s
                t = down(g + mec[row], db[row]) + d
            elif off[row]:
                t = down(up(t + dev[row], ub[row]) + d + mec[row], db[row]) + d
            else:
                t = t + dev[row]
        out: list[float] = (t - g).tolist()
        self._chunks[(c, action)] = out
        return out

    def remaining(self, action: int, s: float) -> float:
        """``R_a(s)`` in seconds; ``s`` is trace time (looped)."""
        x = s % self.period
        c = int(x // self.chunk_s)
        row = self._chunks.get((c, action))
        if row is None:
            row = self._build(c, action)
        u = (x - c * self.chunk_s) / self.dt
        i = int(u)
        if i >= self.per_chunk:
            i = self.per_chunk - 1
        f = u - i
        return row[i] + f * (row[i + 1] - row[i])
