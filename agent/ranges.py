"""Scenario ranges: the distribution of scenarios a policy is trained over, and the check that a
run's scenario lies inside them.

A policy trained with ranges (``python -m agent.train --ranges``) sees a new scenario at every
episode, drawn from :class:`ScenarioRanges`:

* ``scale`` (trace rates x): 0.003 - 100, log-uniform on a 36-point log grid
* ``delay_ms`` (one way): 1 - 50 ms, uniform
* ``devices`` sharing the MEC: 1 - 16, uniform integer
* ``mec_slots`` (concurrent MEC sessions, slot MEC): 1 - 4, uniform integer
* ``mec_max_batch`` (most active sessions, batching MEC): 1 - 16, uniform integer
* ``load`` (local latency / mean inter-arrival gap): 0.05 - 1, log-uniform
* ``mec_speedup`` (x the MEC profile): 3 - 30, log-uniform on a 5-point log grid
* ``device_speed`` (x the device profile): 0.3 - 3, log-uniform on a 5-point log grid

The grids keep the per-scenario tables (plans, per-action costs, scaled traces) few enough to
build once. The scenario reaches the policy through its observation: the latency each action
is predicted to take under the run's MEC and device speeds, throughput and RTT (ratios to the
local latency, log throughput), and the MEC's queue and expected wait. A run outside a range
still works; :meth:`ScenarioRanges.outside` names the knob and the range for a warning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from agent.errors import AgentError

__all__ = ["ScenarioRanges"]

_FLAGS = {"scale": "--scale", "delay_ms": "--delay-ms", "devices": "--devices",
          "mec_slots": "--mec-slots", "load": "--load", "mec_speedup": "--mec-speedup",
          "device_speed": "device_speed", "mec_max_batch": "--mec-max-batch"}


def _grid(lo: float, hi: float, n: int) -> list[float]:
    if n < 2 or lo == hi:
        return [lo]
    return [float(x) for x in np.geomspace(lo, hi, n)]


@dataclass(frozen=True)
class ScenarioRanges:
    """Inclusive ranges of the scenario knobs (see the module docstring)."""

    scale: tuple[float, float] = (0.003, 100.0)
    delay_ms: tuple[float, float] = (1.0, 50.0)
    devices: tuple[int, int] = (1, 16)
    mec_slots: tuple[int, int] = (1, 4)
    load: tuple[float, float] = (0.05, 1.0)
    mec_speedup: tuple[float, float] = (3.0, 30.0)
    device_speed: tuple[float, float] = (0.3, 3.0)
    mec_max_batch: tuple[int, int] = (1, 16)
    scale_points: int = 36
    speed_points: int = 5

    def __post_init__(self) -> None:
        for name in _FLAGS:
            lo, hi = getattr(self, name)
            if not (0 < lo <= hi and math.isfinite(hi)):
                raise AgentError(f"scenario range {name} must be 0 < low <= high, got "
                                 f"({lo}, {hi})")

    def scale_grid(self) -> list[float]:
        return _grid(*self.scale, self.scale_points)

    def mec_speedup_grid(self) -> list[float]:
        return _grid(*self.mec_speedup, self.speed_points)

    def device_speed_grid(self) -> list[float]:
        return _grid(*self.device_speed, self.speed_points)

    def draw(self, rng: np.random.Generator, batching: bool = False) -> dict[str, float]:
        """One scenario: ``scale``, ``mec_speedup`` and ``device_speed`` as grid values,
        the others continuous (integers for counts); ``mec_max_batch`` only when ``batching``
        (so a slot-MEC draw sequence is the one the shipped policies were trained on)."""
        def logu(lo: float, hi: float) -> float:
            return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))

        def pick(grid: list[float]) -> float:
            return grid[int(rng.integers(len(grid)))]

        d = {"scale": pick(self.scale_grid()),
             "delay_ms": float(rng.uniform(*self.delay_ms)),
             "devices": float(rng.integers(self.devices[0], self.devices[1] + 1)),
             "mec_slots": float(rng.integers(self.mec_slots[0], self.mec_slots[1] + 1)),
             "load": logu(*self.load),
             "mec_speedup": pick(self.mec_speedup_grid()),
             "device_speed": pick(self.device_speed_grid())}
        if batching:
            d["mec_max_batch"] = float(rng.integers(self.mec_max_batch[0],
                                                    self.mec_max_batch[1] + 1))
        return d

    def outside(self, values: Mapping[str, float | None]) -> list[str]:
        """One line per knob in ``values`` outside its range, naming the range."""
        out = []
        for k, v in values.items():
            if k not in _FLAGS or v is None:
                continue
            lo, hi = getattr(self, k)
            if not lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9):
                out.append(f"{_FLAGS[k]} {v:g} is outside the policy's training range "
                           f"{lo:g}-{hi:g}; its decisions there are extrapolated")
        return out

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ScenarioRanges:
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k in _FLAGS:
                kw[k] = (type(cls.__dataclass_fields__[k].default[0])(v[0]),  # type: ignore[index]
                         type(cls.__dataclass_fields__[k].default[1])(v[1]))  # type: ignore[index]
            elif k in ("scale_points", "speed_points"):
                kw[k] = int(v)
        return cls(**kw)
