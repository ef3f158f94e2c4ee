"""Precomputed request timelines that make the env step O(1).

For one trace, one workload variant and every offloading action ``a``, :class:`RemainderTable`
holds ``R_a(s)``: the time from the start of the request's first MEC job, at trace time ``s``,
to the end of the request (MEC compute, download, then every later pass with its device
compute, upload, MEC compute and download), computed with the exact vectorised
:meth:`traces.Trace.finish_time` on a grid of ``s`` with step ``dt_s`` (default 50 ms) and read
back by linear interpolation. The part before the first MEC job (device compute, first upload,
MEC wait) is computed exactly at step time, so only the remainder is interpolated. Grid chunks
of ``points`` (2048) grid steps are built for all actions at once on first use and cached as
compact ``array('d')`` rows (long traces cost only what is used). The env picks ``dt_s`` as 1/25 of the fully-local
latency, clamped to [0.02, 1] s.

Since the MEC wait happens only at the first MEC job (session slots, see :mod:`agent.latency`),
``t_end = start + R_a(start)`` equals the exact model up to the interpolation error (tested:
below 1% of the latency on the bundled traces).
"""

from __future__ import annotations

from array import array

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
                 one_way_delay_s: float, *, dt_s: float = 0.05, points: int = 2048) -> None:
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
        self._chunks: dict[int, list[array[float]]] = {}
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

    def _build(self, c: int) -> list[array[float]]:
        """Build ``R_a`` of every offloading action on chunk ``c`` (one row per action)."""
        g = np.arange(self.per_chunk + 1) * self.dt + c * self.chunk_s
        s = np.broadcast_to(g, (len(self.offloading), g.size))
        t = s.copy()
        d = self.delay
        up, down = self.up.finish_array, self.down.finish_array
        j0 = int(self._first.min())
        for j, (dev, mec, ub, db, off) in enumerate(self._inst[j0:], start=j0):
            is_first = (self._first == j)[:, None]
            after = (self._first < j)[:, None]
            offl = off[:, None]
            t_dev = t + dev[:, None]
            t_mec = np.where(is_first, s, up(t_dev, np.where(offl, ub[:, None], 0.0)) + d)
            t_down = down(t_mec + mec[:, None], db[:, None]) + d
            t = np.where(is_first | (after & offl), t_down, np.where(after, t_dev, t))
        rows = []
        for r in t - s:
            a = array("d")
            a.frombytes(np.ascontiguousarray(r).tobytes())
            rows.append(a)
        self._chunks[c] = rows
        return rows

    def remaining(self, action: int, s: float) -> float:
        """``R_a(s)`` in seconds; ``s`` is trace time (looped)."""
        x = s % self.period
        chunk_s = self.chunk_s
        c = int(x // chunk_s)
        rows = self._chunks.get(c)
        if rows is None:
            rows = self._build(c)
        row = rows[self._row[action]]
        u = (x - c * chunk_s) / self.dt
        i = int(u)
        per_chunk = self.per_chunk
        if i >= per_chunk:
            i = per_chunk - 1
        f = u - i
        return row[i] + f * (row[i + 1] - row[i])
