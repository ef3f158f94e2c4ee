"""The step-response reader of the fidelity benchmark, on counts with a known lag and rate."""

from __future__ import annotations

import numpy as np
import pytest

from tests.wire import step_lags
from traces import Trace

SQUARE = Trace(np.array([0.0, 1.0]), np.array([4e6, 16e6]), 2.0, name="square4-16")


def _counts(lag_s: float, gain: float, seconds: float = 12.0, window_s: float = 0.001,
            seed: int = 0) -> list[float]:
    """Bytes per window of a link that follows SQUARE ``lag_s`` late at ``gain`` x its rate,
    delivered in whole 1472-byte datagrams (a receiver sees packets, not a fluid)."""
    n = round(seconds / window_s)
    edges = np.arange(n + 1) * window_s - lag_s
    fluid = gain * np.asarray(SQUARE.bytes_between(np.maximum(edges[:-1], 0.0),
                                                   np.maximum(edges[1:], 0.0)))
    jitter = np.random.default_rng(seed).uniform(0, 1472, n)  # where packet edges fall
    whole = np.floor((np.cumsum(fluid) + jitter) / 1472) * 1472
    return list(np.diff(np.concatenate([[0.0], whole])))


@pytest.mark.parametrize(("lag_s", "gain"), [(0.0, 1.0), (0.007, 1.0), (0.050, 0.8)])
def test_step_lags_recovers_a_known_lag_and_rate(lag_s: float, gain: float) -> None:
    steps = step_lags(_counts(lag_s, gain), 0.001, SQUARE)
    assert len(steps) == 11  # changes at 1, 2, ..., 11 s (the fits need 0.6 s either side)
    for s in steps:
        assert s["lag_ms"] == pytest.approx(lag_s * 1e3, abs=0.5), s
        for w in ("before", "after"):
            assert s[f"rate_{w}_mbps"] == pytest.approx(gain * s[f"trace_{w}_mbps"], rel=0.01)
