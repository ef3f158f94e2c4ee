"""The Trace: link capacity over time, piecewise constant, looping at its end as Mahimahi does.

A trace is a list of segments ``[times_s[i], times_s[i+1])`` (the last one ends at ``period_s``),
each with a constant capacity ``rates_bps[i]`` in bit/s. Past ``period_s`` the trace follows its
end-of-trace policy ``end``:

- ``"loop"`` (default, as Mahimahi): time ``t`` reads the trace at ``t mod period_s``;
- ``"hold"``: the last segment's rate continues for ever;
- ``"stop"``: capacity is zero after ``period_s`` (a transfer that needs more never finishes).

All queries are exact and vectorised: the bytes deliverable up to ``t`` are a prefix sum over
segments plus a partial segment, and the finish time of ``B`` bytes inverts that prefix sum with a
binary search (``numpy.searchsorted``), across loop points and through zero-capacity gaps, with no
time stepping. Inputs may be floats or numpy arrays (broadcast together); a float in gives a float
out. Times are seconds since the start of the trace and must be ``>= 0``.

Example::

    >>> import numpy as np
    >>> from traces import Trace
    >>> tr = Trace(np.array([0.0, 1.0]), np.array([8e6, 0.0]), period_s=2.0, name="demo")
    >>> tr.capacity_at(0.5), tr.capacity_at(2.5)       # 8 Mbit/s, then loops
    (8000000.0, 8000000.0)
    >>> tr.bytes_between(0.0, 4.0)                     # two periods of 1 MB
    2000000.0
    >>> tr.finish_time(0.5, 1_000_000)                 # 0.5 MB now, 0.5 MB after the gap
    2.5
    >>> tr.finish_time(np.array([0.0, 1.0]), 500_000).tolist()
    [0.5, 2.5]
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from traces._search import BucketIndex
from traces.errors import TraceError

__all__ = ["END_POLICIES", "EndPolicy", "Trace"]

EndPolicy = Literal["loop", "hold", "stop"]
END_POLICIES: tuple[str, ...] = ("loop", "hold", "stop")
#: relative tolerance in bytes of finish_time (a transfer within this fraction is complete)
_SNAP = 1e-12
# vectorised queries use a bucket index (traces/_search.py) above these sizes
_BUCKET_MIN_SEGMENTS = 16
_BUCKET_MIN_QUERIES = 256

ArrayLike = float | int | npt.ArrayLike
FloatOrArray = float | npt.NDArray[np.float64]


def _as_float_array(x: Any, what: str) -> npt.NDArray[np.float64]:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TraceError(f"{what} must be a number or an array of numbers, got {x!r}") from exc
    return arr


def _out(x: npt.NDArray[np.float64], scalar: bool) -> FloatOrArray:
    return float(x) if scalar else x


@dataclass(frozen=True)
class Trace:
    """Piecewise-constant capacity in bit/s over time.

    :param times_s: segment start times in seconds, float64, ``times_s[0] == 0``, strictly
        increasing.
    :param rates_bps: capacity of each segment in bit/s, float64, finite and ``>= 0``.
    :param period_s: length of the trace; the last segment ends here and the trace loops with
        this period (``> times_s[-1]``).
    :param name: short name (file stem or generator kind).
    :param source: provenance: the file path or the generator and its parameters and seed.
    :param end: end-of-trace policy, ``"loop"`` (default), ``"hold"`` or ``"stop"``.
    :param mahimahi_at_zero: Mahimahi files only: how many delivery opportunities the file lists
        at timestamp 0. Those share the loop's last millisecond slot with the ones at the period
        timestamp; keeping the split lets :func:`traces.write_trace` reproduce the file exactly.
        It has no effect on capacity and derived traces reset it to 0.

    The arrays are copied and made read-only. Equality and hashing use the content (arrays,
    period, policy), not the name or source; :meth:`sha256` gives the content hash for
    provenance records.
    """

    times_s: npt.NDArray[np.float64]
    rates_bps: npt.NDArray[np.float64]
    period_s: float
    name: str = ""
    source: str = ""
    end: EndPolicy = "loop"
    mahimahi_at_zero: int = 0
    _cum: npt.NDArray[np.float64] = field(init=False, repr=False, compare=False)
    # the same data as Python lists, for the scalar fast path (bisect beats numpy on one query)
    _lists: tuple[list[float], list[float], list[float], list[float]] = field(
        init=False, repr=False, compare=False
    )
    _dur: npt.NDArray[np.float64] = field(init=False, repr=False, compare=False)
    # bucket indexes for large vectorised queries, built on first use
    _index: dict[str, BucketIndex] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        label = self.label
        times = np.array(self.times_s, dtype=np.float64, copy=True)
        rates = np.array(self.rates_bps, dtype=np.float64, copy=True)
        if times.ndim != 1 or rates.ndim != 1 or times.shape != rates.shape or times.size == 0:
            raise TraceError(
                f"{label}: times_s and rates_bps must be 1-D arrays of the same non-zero length, "
                f"got shapes {times.shape} and {rates.shape}"
            )
        if not np.all(np.isfinite(times)) or times[0] != 0.0:
            raise TraceError(f"{label}: times_s must be finite and start at 0, got {float(times[0])!r}")
        steps = np.diff(times)
        if np.any(steps <= 0):
            i = int(np.argmax(steps <= 0)) + 1
            raise TraceError(
                f"{label}: times_s must be strictly increasing; segment {i} starts at "
                f"{float(times[i])!r} after {float(times[i - 1])!r}"
            )
        bad = ~np.isfinite(rates) | (rates < 0)
        if np.any(bad):
            i = int(np.argmax(bad))
            raise TraceError(
                f"{label}: rates_bps must be finite and >= 0; segment {i} has {float(rates[i])!r}"
            )
        period = float(self.period_s)
        if not math.isfinite(period) or period <= times[-1]:
            raise TraceError(
                f"{label}: period_s must be finite and greater than the last segment start "
                f"{float(times[-1])!r}, got {self.period_s!r}"
            )
        if self.end not in END_POLICIES:
            raise TraceError(f"{label}: end must be one of {END_POLICIES}, got {self.end!r}")
        if self.mahimahi_at_zero < 0:
            raise TraceError(f"{label}: mahimahi_at_zero must be >= 0")
        times.setflags(write=False)
        rates.setflags(write=False)
        ends = np.append(times[1:], period)
        cum = np.zeros(times.size + 1)
        np.cumsum(rates * (ends - times) / 8.0, out=cum[1:])
        cum.setflags(write=False)
        object.__setattr__(self, "times_s", times)
        object.__setattr__(self, "rates_bps", rates)
        object.__setattr__(self, "period_s", period)
        object.__setattr__(self, "_cum", cum)
        object.__setattr__(self, "_dur", ends - times)
        object.__setattr__(
            self, "_lists", (times.tolist(), rates.tolist(), cum.tolist(), (ends - times).tolist())
        )
        object.__setattr__(self, "_index", {})

    # ------------------------------------------------------------------ identity
    @property
    def label(self) -> str:
        """How messages name this trace: its name, else its source, else ``<trace>``."""
        return self.name or self.source or "<trace>"

    @property
    def duration_s(self) -> float:
        """Length of one pass through the trace (same as ``period_s``)."""
        return self.period_s

    @property
    def bytes_per_period(self) -> float:
        """Bytes deliverable in one full period."""
        return float(self._cum[-1])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trace):
            return NotImplemented
        return (
            self.period_s == other.period_s
            and self.end == other.end
            and np.array_equal(self.times_s, other.times_s)
            and np.array_equal(self.rates_bps, other.rates_bps)
        )

    def __hash__(self) -> int:
        return hash(self.sha256())

    def sha256(self) -> str:
        """Hex SHA-256 of the content (times, rates, period, end policy), for provenance."""
        h = hashlib.sha256()
        h.update(b"trace-v1\0")
        h.update(self.times_s.astype("<f8").tobytes())
        h.update(self.rates_bps.astype("<f8").tobytes())
        h.update(repr(self.period_s).encode())
        h.update(self.end.encode())
        return h.hexdigest()

    # ------------------------------------------------------------------ core math
    def _check_times(self, t: npt.NDArray[np.float64], what: str) -> None:
        if t.size and not (np.all(t >= 0) and np.all(np.isfinite(t))):
            bad = t[~(np.isfinite(t) & (t >= 0))].ravel()[0]
            raise TraceError(
                f"{self.label}: {what} must be finite and >= 0 (seconds since trace start), "
                f"got {float(bad)!r}"
            )

    def _search(
        self, key: Literal["times", "cum"], q: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.intp]:
        """``searchsorted`` (times: right, cum: left); bucketed for big arrays, same result."""
        xs = self.times_s if key == "times" else self._cum
        side: Literal["left", "right"] = "right" if key == "times" else "left"
        if xs.size < _BUCKET_MIN_SEGMENTS or q.size < _BUCKET_MIN_QUERIES:
            return np.searchsorted(xs, q, side=side)
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = BucketIndex(xs, side)
        return index(q)

    def _segment_index(self, u: npt.NDArray[np.float64]) -> npt.NDArray[np.intp]:
        i = self._search("times", u) - 1
        return np.clip(i, 0, self.times_s.size - 1)

    def _wrap(self, t: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], ...]:
        """Split t into (whole periods k, offset u in [0, period]) for the loop policy."""
        k = np.floor(t / self.period_s)
        u = np.clip(t - k * self.period_s, 0.0, self.period_s)
        return k, u

    def _cum_within(self, u: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Bytes deliverable in [0, u) for 0 <= u <= period."""
        i = self._segment_index(u)
        return self._cum[i] + self.rates_bps[i] * (u - self.times_s[i]) / 8.0

    def _end_rate(self) -> float:
        if self.end == "hold":
            return float(self.rates_bps[-1])
        return 0.0

    def _cum_bytes(self, t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Bytes deliverable in [0, t) (t >= 0), following the end policy."""
        if self.end == "loop":
            k, u = self._wrap(t)
            return k * self._cum[-1] + self._cum_within(u)
        inside = np.minimum(t, self.period_s)
        extra = np.maximum(t - self.period_s, 0.0) * self._end_rate() / 8.0
        return self._cum_within(inside) + extra

    def _time_within(
        self, rem: npt.NDArray[np.float64], slack: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """Earliest u in [0, period] with cum(u) >= rem + slack, where the segment is located
        with rem alone (0 < rem <= bytes_per_period) and the position is clamped to its end."""
        cum = self._cum
        j = np.clip(self._search("cum", rem), 1, self.times_s.size)
        i = j - 1
        rate = self.rates_bps[i]
        safe = np.where(rate > 0, rate, 1.0)
        dt = np.where(rate > 0, np.minimum((rem + slack - cum[i]) * 8.0 / safe, self._dur[i]), 0.0)
        return np.asarray(self.times_s[i] + dt, dtype=np.float64)

    def _inverse(
        self, target: npt.NDArray[np.float64], slack: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """Earliest t with cum_bytes(t) >= target + slack, locating the segment by target alone
        (so float noise of size slack cannot jump a gap), for target > 0."""
        per = self._cum[-1]
        if self.end == "loop":
            k = np.floor(target / per)
            rem = target - k * per
            low = rem <= 0.0
            k = np.where(low, k - 1, k)
            rem = np.where(low, rem + per, rem)
            high = rem > per
            k = np.where(high, k + 1, k)
            rem = np.where(high, rem - per, rem)
            return np.asarray(k * self.period_s + self._time_within(rem, slack), dtype=np.float64)
        inside = target <= per
        rate = self._end_rate()
        past = self.period_s + (target + slack - per) * 8.0 / (rate if rate > 0 else 1.0)
        within = self._time_within(np.clip(target, np.finfo(float).tiny, per), slack)
        return np.asarray(np.where(inside, within, past), dtype=np.float64)

    # ------------------------------------------------------------------ scalar fast path
    # The same arithmetic as the vectorised code above, operation for operation, on Python
    # floats (IEEE doubles, so results are identical); ~50x faster for a single query.
    def _s_check(self, t: float, what: str) -> None:
        if not (t >= 0.0 and math.isfinite(t)):
            raise TraceError(
                f"{self.label}: {what} must be finite and >= 0 (seconds since trace start), "
                f"got {t!r}"
            )

    def _s_cum_within(self, u: float) -> float:
        times, rates, cum, _ = self._lists
        i = min(max(bisect_right(times, u) - 1, 0), len(times) - 1)
        return cum[i] + rates[i] * (u - times[i]) / 8.0

    def _s_cum_bytes(self, t: float) -> float:
        if self.end == "loop":
            k = math.floor(t / self.period_s)
            u = min(max(t - k * self.period_s, 0.0), self.period_s)
            return k * self._lists[2][-1] + self._s_cum_within(u)
        inside = min(t, self.period_s)
        extra = max(t - self.period_s, 0.0) * self._end_rate() / 8.0
        return self._s_cum_within(inside) + extra

    def _s_time_within(self, rem: float, slack: float) -> float:
        times, rates, cum, dur = self._lists
        i = min(max(bisect_left(cum, rem), 1), len(times)) - 1
        rate = rates[i]
        return times[i] + (min((rem + slack - cum[i]) * 8.0 / rate, dur[i]) if rate > 0 else 0.0)

    def _s_inverse(self, target: float, slack: float) -> float:
        per = self._lists[2][-1]
        if self.end == "loop":
            k = math.floor(target / per)
            rem = target - k * per
            if rem <= 0.0:
                k, rem = k - 1, rem + per
            if rem > per:
                k, rem = k + 1, rem - per
            return k * self.period_s + self._s_time_within(rem, slack)
        if target <= per:
            return self._s_time_within(min(max(target, np.finfo(float).tiny), per), slack)
        rate = self._end_rate()
        return self.period_s + (target + slack - per) * 8.0 / (rate if rate > 0 else 1.0)

    def _s_finish(self, t0: float, n: float) -> float:
        self._s_check(t0, "t0")
        if not (n >= 0.0 and math.isfinite(n)):
            raise TraceError(f"{self.label}: nbytes must be finite and >= 0")
        if n == 0.0:
            return t0
        start = self._s_cum_bytes(t0)
        target = start + n
        per = self._lists[2][-1]
        if per <= 0.0 and (self.end != "hold" or self._end_rate() <= 0.0):
            self._never_any(np.array(n))
        if self.end != "loop" and self._end_rate() <= 0.0 and target > per * (1 + 1e-12):
            self._never_one(t0, n, start)
        slack = min(_SNAP * target, 0.5 * n)
        return max(self._s_inverse(max(target - slack, 0.0), slack), t0)

    def _never_any(self, n: npt.NDArray[np.float64]) -> None:
        raise TraceError(
            f"{self.label}: the trace has zero capacity everywhere, so a transfer of "
            f"{float(np.max(n)):.0f} bytes never finishes; use a trace with some capacity"
        )

    def _never_one(self, t0: float, n: float, start: float) -> None:
        raise TraceError(
            f"{self.label}: end policy {self.end!r}: {n:.0f} bytes started at {t0!r} s never "
            f"finish (only {max(self._lists[2][-1] - start, 0.0):.0f} bytes remain before the "
            f"trace ends at {self.period_s} s)"
        )

    # ------------------------------------------------------------------ public queries
    def capacity_at(self, t: ArrayLike) -> FloatOrArray:
        """Capacity in bit/s at time ``t`` (seconds; float or array)."""
        if isinstance(t, float | int):
            tf = float(t)
            self._s_check(tf, "t")
            times, rates, _, _ = self._lists
            if self.end == "loop":
                k = math.floor(tf / self.period_s)
                uf = min(max(tf - k * self.period_s, 0.0), self.period_s)
                uf = 0.0 if uf >= self.period_s else uf
            elif tf >= self.period_s:
                return self._end_rate()
            else:
                uf = tf
            return rates[min(max(bisect_right(times, uf) - 1, 0), len(times) - 1)]
        ta = _as_float_array(t, "t")
        self._check_times(ta, "t")
        if self.end == "loop":
            _, u = self._wrap(ta)
            u = np.where(u >= self.period_s, 0.0, u)
            out = self.rates_bps[self._segment_index(u)]
        else:
            inside = self.rates_bps[self._segment_index(np.minimum(ta, self.period_s))]
            out = np.where(ta >= self.period_s, self._end_rate(), inside)
        return _out(np.asarray(out, dtype=np.float64), ta.ndim == 0)

    def bytes_between(self, t0: ArrayLike, t1: ArrayLike) -> FloatOrArray:
        """Bytes deliverable in ``[t0, t1)``; requires ``t1 >= t0``."""
        if isinstance(t0, float | int) and isinstance(t1, float | int):
            a0, b0 = float(t0), float(t1)
            self._s_check(a0, "t0")
            self._s_check(b0, "t1")
            if b0 < a0:
                raise TraceError(f"{self.label}: bytes_between needs t1 >= t0")
            return max(self._s_cum_bytes(b0) - self._s_cum_bytes(a0), 0.0)
        a = _as_float_array(t0, "t0")
        b = _as_float_array(t1, "t1")
        self._check_times(a, "t0")
        self._check_times(b, "t1")
        if np.any(b < a):
            raise TraceError(f"{self.label}: bytes_between needs t1 >= t0")
        out = np.maximum(self._cum_bytes(b) - self._cum_bytes(a), 0.0)
        return _out(np.asarray(out, dtype=np.float64), a.ndim == 0 and b.ndim == 0)

    def finish_time(self, t0: ArrayLike, nbytes: ArrayLike) -> FloatOrArray:
        """Absolute time (s) at which ``nbytes`` started at ``t0`` have all been delivered.

        Exact for the piecewise-constant model (the bytes flow as a fluid at the capacity). A
        transfer that ends within a relative 1e-12 of the cumulative bytes (at most half of
        ``nbytes``) of a segment's end finishes at that end, so float noise cannot push it
        across a following zero-capacity gap.
        ``nbytes == 0`` gives ``t0``. Raises :class:`TraceError` when a transfer never
        finishes: the trace is all zero, or (policies ``stop``/``hold`` with a final rate of 0)
        fewer bytes than requested remain after ``t0``.
        """
        if isinstance(t0, float | int) and isinstance(nbytes, float | int):
            return self._s_finish(float(t0), float(nbytes))
        a = _as_float_array(t0, "t0")
        n = _as_float_array(nbytes, "nbytes")
        self._check_times(a, "t0")
        if n.size and not (np.all(np.isfinite(n)) and np.all(n >= 0)):
            raise TraceError(f"{self.label}: nbytes must be finite and >= 0")
        a, n = np.broadcast_arrays(a, n)
        positive = n > 0
        start = self._cum_bytes(a)
        target = start + n
        if np.any(positive):
            per = self._cum[-1]
            if per <= 0.0 and (self.end != "hold" or self._end_rate() <= 0.0):
                self._never_any(n)
            if self.end != "loop" and self._end_rate() <= 0.0:
                never = positive & (target > per * (1 + 1e-12))
                if np.any(never):
                    k = int(np.argmax(never))
                    self._never_one(float(a.ravel()[k]), float(n.ravel()[k]),
                                    float(start.ravel()[k]))
            # float noise in the prefix sums (~1e-16 relative) must not push a target that sits
            # exactly on a boundary past a zero-capacity gap: the segment is located with the
            # target less a slack of _SNAP, the position within it computed with the full target
            slack = np.where(positive, np.minimum(_SNAP * target, 0.5 * n), 0.0)
            safe_target = np.where(positive, target - slack, np.maximum(per, 1.0))
            done = np.maximum(self._inverse(np.maximum(safe_target, 0.0), slack), a)
            out = np.where(positive, done, a)
        else:
            out = a.astype(np.float64, copy=True)
        return _out(np.asarray(out, dtype=np.float64), out.ndim == 0)

    def transfer_time(self, t0: ArrayLike, nbytes: ArrayLike) -> FloatOrArray:
        """Seconds needed to deliver ``nbytes`` started at ``t0`` (``finish_time - t0``)."""
        if isinstance(t0, float | int) and isinstance(nbytes, float | int):
            return self._s_finish(float(t0), float(nbytes)) - float(t0)
        a = _as_float_array(t0, "t0")
        done = np.asarray(self.finish_time(a, nbytes), dtype=np.float64)
        return _out(done - a, done.ndim == 0)

    def segments(self, t0: float, t1: float) -> Iterator[tuple[float, float, float]]:
        """Yield ``(start_s, end_s, rate_bps)`` pieces covering ``[t0, t1)`` in order.

        Follows the end policy (loops by default); the first and last pieces are clipped to
        ``t0`` and ``t1``. Consecutive pieces may have equal rates (they are not merged).
        """
        a = float(t0)
        b = float(t1)
        self._check_times(np.array([a, b]), "segments bounds")
        if b < a:
            raise TraceError(f"{self.label}: segments needs t1 >= t0, got {a} > {b}")
        n = self.times_s.size
        times = self.times_s.tolist()
        rates = self.rates_bps.tolist()
        ends = [*times[1:], self.period_s]
        if self.end == "loop":
            k = math.floor(a / self.period_s)
            base = k * self.period_s
        else:
            k, base = 0, 0.0
        u = min(max(a - base, 0.0), self.period_s)
        i = int(np.searchsorted(self.times_s, u, side="right")) - 1
        i = min(max(i, 0), n - 1)
        while a < b:
            if self.end != "loop" and base >= self.period_s:
                yield (a, b, self._end_rate())
                return
            seg_end = min(base + ends[i], b)
            if seg_end > a:
                yield (a, seg_end, rates[i])
                a = seg_end
            i += 1
            if i == n:
                i = 0
                k += 1
                base = k * self.period_s
                if self.end == "loop":
                    a = max(a, base)

    # ------------------------------------------------------------------ statistics
    def mean_bps(self) -> float:
        """Time-weighted mean capacity over one period, bit/s."""
        return float(self._cum[-1] * 8.0 / self.period_s)

    def _durations(self) -> npt.NDArray[np.float64]:
        return np.diff(np.append(self.times_s, self.period_s))

    def percentile_bps(self, q: float, *, window_s: float | None = None) -> float:
        """Time-weighted percentile ``q`` (0-100) of capacity over one period, bit/s.

        The smallest rate ``r`` such that the trace is at or below ``r`` for at least ``q``% of
        the period (inverted CDF; equal to ``numpy.percentile(..., method="inverted_cdf")`` when
        all segments have the same length). With ``window_s`` the trace is first resampled to
        that averaging window (e.g. 1 s for Mahimahi traces, whose 1 ms bins are bursty).
        """
        if not 0.0 <= float(q) <= 100.0:
            raise TraceError(f"{self.label}: percentile q must be in [0, 100], got {q!r}")
        tr = self if window_s is None else self.resampled(window_s)
        order = np.argsort(tr.rates_bps, kind="stable")
        cw = np.cumsum(tr._durations()[order])
        idx = int(np.searchsorted(cw, float(q) / 100.0 * cw[-1], side="left"))
        return float(tr.rates_bps[order[min(idx, order.size - 1)]])

    def outage_fraction(self, threshold_bps: float = 0.0, *, window_s: float | None = None) -> float:
        """Fraction of the period with capacity ``<= threshold_bps`` (optionally per window)."""
        tr = self if window_s is None else self.resampled(window_s)
        d = tr._durations()
        return float(d[tr.rates_bps <= threshold_bps].sum() / d.sum())

    def zero_gaps(self, min_s: float = 0.0) -> list[tuple[float, float]]:
        """Zero-capacity intervals ``(start_s, end_s)`` of at least ``min_s`` within one period.

        With the loop policy a gap at the end joins one at the start, so it is reported once as
        starting before ``period_s`` and ending after it.
        """
        zero = self.rates_bps == 0.0
        if not np.any(zero):
            return []
        ends = np.append(self.times_s[1:], self.period_s)
        gaps: list[tuple[float, float]] = []
        i, n = 0, zero.size
        while i < n:
            if zero[i]:
                j = i
                while j + 1 < n and zero[j + 1]:
                    j += 1
                gaps.append((float(self.times_s[i]), float(ends[j])))
                i = j + 1
            else:
                i += 1
        if self.end == "loop" and len(gaps) > 1 and zero[0] and zero[-1]:
            first = gaps.pop(0)
            last = gaps.pop()
            gaps.append((last[0], self.period_s + first[1]))
        elif self.end == "loop" and len(gaps) == 1 and zero.all():
            gaps = [(0.0, self.period_s)]
        return [g for g in gaps if g[1] - g[0] >= min_s]

    # ------------------------------------------------------------------ derived traces
    def _derive(
        self,
        times: npt.NDArray[np.float64],
        rates: npt.NDArray[np.float64],
        period: float,
        note: str,
    ) -> Trace:
        return Trace(
            times,
            rates,
            period,
            name=self.name,
            source=f"{self.source} | {note}" if self.source else note,
            end=self.end,
        )

    def scaled(self, factor: float) -> Trace:
        """The same trace with every rate multiplied by ``factor`` (finite, ``>= 0``)."""
        f = float(factor)
        if not math.isfinite(f) or f < 0:
            raise TraceError(f"{self.label}: scale factor must be finite and >= 0, got {factor!r}")
        return self._derive(self.times_s, self.rates_bps * f, self.period_s, f"scaled({f!r})")

    def shifted(self, offset_s: float) -> Trace:
        """The trace as seen from ``offset_s`` on: ``new.capacity_at(t) == old.capacity_at(t +
        offset_s)``. With the loop policy the offset is taken modulo the period (a rotation);
        otherwise it must lie in ``[0, period_s)`` and the result is shorter."""
        o = float(offset_s)
        if not math.isfinite(o):
            raise TraceError(f"{self.label}: offset must be finite, got {offset_s!r}")
        if self.end == "loop":
            o = o % self.period_s
            cut = self._cut(o, o + self.period_s)
        else:
            if not 0.0 <= o < self.period_s:
                raise TraceError(
                    f"{self.label}: with end policy {self.end!r} the offset must be in "
                    f"[0, {self.period_s}), got {offset_s!r}"
                )
            cut = self._cut(o, self.period_s)
        return self._derive(*cut, f"shifted({o!r})")

    def sliced(self, t0: float, t1: float) -> Trace:
        """The part ``[t0, t1)`` as a new trace starting at 0 with period ``t1 - t0`` (``t1``
        may exceed ``period_s``: the slice follows the end policy). Keeps the end policy."""
        a, b = float(t0), float(t1)
        if not b > a:
            raise TraceError(f"{self.label}: sliced needs t1 > t0, got [{a}, {b})")
        return self._derive(*self._cut(a, b), f"sliced({a!r}, {b!r})")

    def _cut(self, a: float, b: float) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float]:
        starts: list[float] = []
        rates: list[float] = []
        for s, e, r in self.segments(a, b):
            rel = s - a
            if e - a <= rel:
                continue
            if starts and (rel <= starts[-1] or r == rates[-1]):
                continue
            starts.append(rel)
            rates.append(r)
        if not starts:
            starts, rates = [0.0], [float(self.capacity_at(a))]
        starts[0] = 0.0
        return np.array(starts), np.array(rates), b - a

    def resampled(self, dt_s: float) -> Trace:
        """Average capacity over bins of ``dt_s`` seconds (bytes per period preserved exactly;
        the last bin is shorter when ``period_s`` is not a multiple of ``dt_s``)."""
        dt = float(dt_s)
        if not math.isfinite(dt) or dt <= 0:
            raise TraceError(f"{self.label}: resample step must be finite and > 0, got {dt_s!r}")
        nbins = max(1, math.ceil(self.period_s / dt - 1e-9))
        edges = np.append(np.arange(nbins) * dt, self.period_s)
        if edges[-1] - edges[-2] <= 1e-9 * dt and nbins > 1:
            edges = np.delete(edges, -2)
        cum = self._cum_within(edges)
        rates = np.maximum(np.diff(cum), 0.0) * 8.0 / np.diff(edges)
        return self._derive(edges[:-1].copy(), rates, self.period_s, f"resampled({dt!r})")

    def with_end(self, end: EndPolicy) -> Trace:
        """The same trace with another end-of-trace policy (``loop``, ``hold`` or ``stop``)."""
        return Trace(
            self.times_s, self.rates_bps, self.period_s, name=self.name, source=self.source,
            end=end, mahimahi_at_zero=self.mahimahi_at_zero,
        )

    def __repr__(self) -> str:
        return (
            f"Trace(name={self.name!r}, segments={self.times_s.size}, period_s={self.period_s:g}, "
            f"mean_mbps={self.mean_bps() / 1e6:.3f}, end={self.end!r})"
        )
