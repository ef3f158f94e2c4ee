"""Seeded synthetic traces with documented models.

Every generator takes a :class:`numpy.random.Generator` (never global seeding) and returns a
:class:`traces.Trace` whose ``source`` records the model and its parameters; :func:`make` builds
the generator from a seed and records the seed too. Rates are rounded to 1 kbit/s so the CSV
files stay short.

Models
------
``cellular`` (:func:`markov_cellular`)
    A Markov-modulated rate. A hidden state walks over ``levels_mbps`` (sorted): every ``dt_s``
    it stays with probability ``stay``, else moves one level up or down (equally likely; at the
    ends it stays). It starts at a uniformly drawn level (the walk's stationary distribution).
    The rate of a step is its level times log-normal fading ``exp(sigma*N(0,1) - sigma^2/2)``
    (mean 1), clipped to ``[min_mbps, max_mbps]``. Defaults: levels 3, 7, 13, 20, 32 Mbit/s,
    ``stay=0.9``, ``sigma=0.3``, clip 0.5-60 Mbit/s, ``dt_s=1``: mean ~15 Mbit/s, 5th-95th
    percentile ~3-40 Mbit/s, the range where offloading a GPT-2 / SD split is sometimes best.
``mmwave`` / ``subthz`` (:func:`blockage`)
    Line of sight alternating with blockage (a semi-Markov on/off process). Line-of-sight
    periods last ``Exp(los_mean_s)``; blockages last log-normal durations with median
    ``block_median_s`` and log-sd ``block_sigma`` (people and vehicles crossing the beam). In
    line of sight the rate is ``los_mbps`` times log-normal fading (``sigma``), clipped to
    ``[0.2, 1.5] x los_mbps``; blocked, it drops to ``blocked_mbps`` (fallback beam or band)
    times the same fading. The state of a ``dt_s`` step is the state at its start.
    ``mmwave``: 2000 Mbit/s LOS, 50 Mbit/s blocked, LOS mean 5 s, blockage median 0.5 s.
    ``subthz``: 20000 Mbit/s LOS, 100 Mbit/s blocked, LOS mean 2 s, blockage median 0.3 s.
``constant`` (:func:`constant`)
    One rate for the whole trace.
``step`` (:func:`step`)
    Cycles through ``levels_mbps``, ``step_s`` seconds each.

Example::

    >>> import numpy as np
    >>> from traces import synth
    >>> tr = synth.markov_cellular(300, np.random.default_rng(7))
    >>> round(tr.period_s)
    300
    >>> synth.make("cellular", 300, seed=7) == tr        # same model, same seed, same trace
    True
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from traces.errors import TraceError
from traces.trace import Trace

__all__ = ["KINDS", "blockage", "constant", "make", "markov_cellular", "step"]

KINDS: tuple[str, ...] = ("cellular", "mmwave", "subthz", "constant", "step")

_BANDS: dict[str, dict[str, float]] = {
    "mmwave": {"los_mbps": 2000.0, "blocked_mbps": 50.0, "los_mean_s": 5.0, "block_median_s": 0.5},
    "subthz": {"los_mbps": 20000.0, "blocked_mbps": 100.0, "los_mean_s": 2.0, "block_median_s": 0.3},
}


def _grid(seconds: float, dt_s: float) -> npt.NDArray[np.float64]:
    if not (math.isfinite(seconds) and seconds > 0):
        raise TraceError(f"seconds must be finite and > 0, got {seconds!r}")
    if not (math.isfinite(dt_s) and 0 < dt_s <= seconds):
        raise TraceError(f"dt_s must be in (0, seconds], got {dt_s!r}")
    n = max(1, math.ceil(seconds / dt_s - 1e-9))
    # i / (1/dt) keeps decimal steps tidy (0.3, not 0.30000000000000004) in the CSV files
    inv = 1.0 / dt_s
    grid = np.arange(n) / round(inv) if abs(inv - round(inv)) < 1e-9 else np.arange(n) * dt_s
    return np.asarray(grid, dtype=np.float64)


def _fading(rng: np.random.Generator, n: int, sigma: float) -> npt.NDArray[np.float64]:
    if not (math.isfinite(sigma) and sigma >= 0):
        raise TraceError(f"sigma must be finite and >= 0, got {sigma!r}")
    return np.asarray(np.exp(sigma * rng.standard_normal(n) - sigma * sigma / 2.0), dtype=np.float64)


def _kbit(rates_mbps: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.round(rates_mbps * 1e3) * 1e3


def _fmt(params: Mapping[str, object]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def markov_cellular(
    seconds: float,
    rng: np.random.Generator,
    *,
    dt_s: float = 1.0,
    levels_mbps: Sequence[float] = (3.0, 7.0, 13.0, 20.0, 32.0),
    stay: float = 0.9,
    sigma: float = 0.3,
    min_mbps: float = 0.5,
    max_mbps: float = 60.0,
) -> Trace:
    """Markov-modulated cellular trace (see the module docstring for the model)."""
    times = _grid(seconds, dt_s)
    levels = np.sort(np.asarray(levels_mbps, dtype=np.float64))
    if levels.size == 0 or np.any(~np.isfinite(levels)) or np.any(levels < 0):
        raise TraceError(f"levels_mbps must be non-empty, finite and >= 0, got {levels_mbps!r}")
    if not 0.0 <= stay <= 1.0:
        raise TraceError(f"stay must be a probability, got {stay!r}")
    if not 0.0 <= min_mbps <= max_mbps:
        raise TraceError(f"need 0 <= min_mbps <= max_mbps, got {min_mbps!r}, {max_mbps!r}")
    n = times.size
    moves = rng.random(n)
    ups = rng.random(n) < 0.5
    state = np.empty(n, dtype=np.int64)
    s = int(rng.integers(levels.size))
    for i in range(n):
        if i and moves[i] >= stay:
            s = min(max(s + (1 if ups[i] else -1), 0), levels.size - 1)
        state[i] = s
    rates = np.clip(levels[state] * _fading(rng, n, sigma), min_mbps, max_mbps)
    params = {"seconds": seconds, "dt_s": dt_s, "levels_mbps": ",".join(f"{x:g}" for x in levels),
              "stay": stay, "sigma": sigma, "min_mbps": min_mbps, "max_mbps": max_mbps}
    return Trace(times, _kbit(rates), float(seconds), name="cellular",
                 source=f"synth cellular (Markov-modulated) {_fmt(params)}")


def blockage(
    seconds: float,
    rng: np.random.Generator,
    *,
    band: str = "mmwave",
    dt_s: float = 0.1,
    los_mbps: float | None = None,
    blocked_mbps: float | None = None,
    los_mean_s: float | None = None,
    block_median_s: float | None = None,
    block_sigma: float = 0.6,
    sigma: float = 0.2,
) -> Trace:
    """mmWave / sub-THz line of sight with blockage (see the module docstring for the model).

    ``band`` (``"mmwave"`` or ``"subthz"``) picks the defaults; any parameter given overrides.
    """
    if band not in _BANDS:
        raise TraceError(f"band must be one of {', '.join(_BANDS)}, got {band!r}")
    d = _BANDS[band]
    los = d["los_mbps"] if los_mbps is None else float(los_mbps)
    low = d["blocked_mbps"] if blocked_mbps is None else float(blocked_mbps)
    los_mean = d["los_mean_s"] if los_mean_s is None else float(los_mean_s)
    med = d["block_median_s"] if block_median_s is None else float(block_median_s)
    if not (0 <= low <= los and los_mean > 0 and med > 0 and block_sigma >= 0):
        raise TraceError("need 0 <= blocked_mbps <= los_mbps, los_mean_s > 0, block_median_s > 0")
    times = _grid(seconds, dt_s)
    # alternate LOS / blocked periods in continuous time until the trace is covered
    edges = [0.0]
    blocked_flags = [False]
    t = 0.0
    while t < seconds:
        dur = rng.exponential(los_mean) if not blocked_flags[-1] else rng.lognormal(
            math.log(med), block_sigma)
        t += dur
        edges.append(t)
        blocked_flags.append(not blocked_flags[-1])
    idx = np.searchsorted(np.asarray(edges), times, side="right") - 1
    blocked = np.asarray(blocked_flags)[idx]
    fade = _fading(rng, times.size, sigma)
    rates = np.where(blocked, low * fade, np.clip(los * fade, 0.2 * los, 1.5 * los))
    params = {"seconds": seconds, "dt_s": dt_s, "los_mbps": los, "blocked_mbps": low,
              "los_mean_s": los_mean, "block_median_s": med, "block_sigma": block_sigma,
              "sigma": sigma}
    return Trace(times, _kbit(rates), float(seconds), name=band,
                 source=f"synth {band} (LOS/blockage) {_fmt(params)}")


def constant(seconds: float, rate_mbps: float) -> Trace:
    """A constant-rate trace of ``seconds`` seconds."""
    if not (math.isfinite(rate_mbps) and rate_mbps >= 0):
        raise TraceError(f"rate_mbps must be finite and >= 0, got {rate_mbps!r}")
    _grid(seconds, seconds)
    return Trace(np.zeros(1), np.array([rate_mbps * 1e6]), float(seconds), name="constant",
                 source=f"synth constant seconds={seconds} rate_mbps={rate_mbps}")


def step(seconds: float, levels_mbps: Sequence[float], step_s: float) -> Trace:
    """Cycle through ``levels_mbps``, ``step_s`` seconds each, for ``seconds`` seconds."""
    levels = np.asarray(levels_mbps, dtype=np.float64)
    if levels.size == 0 or np.any(~np.isfinite(levels)) or np.any(levels < 0):
        raise TraceError(f"levels_mbps must be non-empty, finite and >= 0, got {levels_mbps!r}")
    times = _grid(seconds, step_s)
    rates = levels[np.arange(times.size) % levels.size] * 1e6
    return Trace(times, rates, float(seconds), name="step",
                 source=f"synth step seconds={seconds} step_s={step_s} "
                        f"levels_mbps={','.join(f'{x:g}' for x in levels)}")


def make(kind: str, seconds: float, seed: int = 0, **params: object) -> Trace:
    """Build a synthetic trace of ``kind`` (one of :data:`KINDS`) from an integer ``seed``.

    ``params`` go to the generator (e.g. ``dt_s``, ``levels_mbps``, ``rate_mbps``, ``step_s``).
    The seed is recorded in the trace's ``source`` and the name becomes ``<kind>-s<seed>``.
    """
    rng = np.random.default_rng(seed)
    try:
        if kind == "cellular":
            tr = markov_cellular(seconds, rng, **params)  # type: ignore[arg-type]
        elif kind in _BANDS:
            tr = blockage(seconds, rng, band=kind, **params)  # type: ignore[arg-type]
        elif kind == "constant":
            tr = constant(seconds, **params)  # type: ignore[arg-type]
        elif kind == "step":
            tr = step(seconds, **params)  # type: ignore[arg-type]
        else:
            hint = difflib.get_close_matches(kind, KINDS, n=1)
            raise TraceError(
                f"unknown synthetic kind {kind!r}; use one of {', '.join(KINDS)}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
            )
    except TypeError as exc:
        raise TraceError(f"synth {kind}: bad parameters {sorted(params)}: {exc}") from None
    return Trace(tr.times_s, tr.rates_bps, tr.period_s, name=f"{kind}-s{seed}",
                 source=f"{tr.source} seed={seed}")
