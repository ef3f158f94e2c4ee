"""Reading a link's behaviour from what a receiver counted (no shaper involved).

:func:`step_lags` finds, for every scheduled rate change of a trace, when the new rate shows in
a receiver's byte counts and what rates were delivered before and after. Used by
``benchmarks/emulator_fidelity.py`` and unit-tested on synthetic counts in
``tests/test_wire.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from traces import Trace

__all__ = ["step_lags"]


def step_lags(counts: Sequence[float], window_s: float, trace: Trace, fit_s: tuple[float, float] = (
        0.1, 0.6)) -> list[dict[str, float]]:
    """Per scheduled rate change of ``trace`` inside the counted span: the time the new rate
    shows on the wire and the delivered rates before and after.

    ``counts`` are bytes per window from trace time 0. Lines are fitted (least squares) to the
    cumulative count over ``[t - fit_s[1], t - fit_s[0]]`` and ``[t + fit_s[0], t + fit_s[1]]``
    around each change at ``t``; they cross at ``t + lag``.
    """
    cum = np.cumsum(np.asarray(counts, dtype=np.float64))
    ends = (np.arange(cum.size) + 1) * window_s
    span = cum.size * window_s
    out = []
    loops = int(span / trace.period_s) + 1
    changes = [m * trace.period_s + float(t) for m in range(loops + 1) for t in trace.times_s]
    for t in changes[1:]:
        if t - fit_s[1] < 0.0 or t + fit_s[1] > span:
            continue
        before = (ends >= t - fit_s[1]) & (ends <= t - fit_s[0])
        after = (ends >= t + fit_s[0]) & (ends <= t + fit_s[1])
        k0, c0 = np.polyfit(ends[before], cum[before], 1)
        k1, c1 = np.polyfit(ends[after], cum[after], 1)
        cross = (c0 - c1) / (k1 - k0)
        r0 = float(trace.capacity_at(t - 0.01))
        r1 = float(trace.capacity_at(t + 0.01))
        out.append({"t_s": t, "lag_ms": (cross - t) * 1e3, "rate_before_mbps": k0 * 8 / 1e6,
                    "rate_after_mbps": k1 * 8 / 1e6, "trace_before_mbps": r0 / 1e6,
                    "trace_after_mbps": r1 / 1e6})
    return out
