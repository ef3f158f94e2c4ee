"""Trace arithmetic against hand-computed values and a brute-force 1 ms stepping reference."""

from __future__ import annotations

import dataclasses
import itertools
import math
import re

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import traces
from traces import Trace, TraceError
from traces._search import BucketIndex
from traces.readers import trace_from_mahimahi


def _trace(starts: list[float], rates_mbps: list[float], period: float, **kw: object) -> Trace:
    return Trace(np.array(starts, float), np.array(rates_mbps, float) * 1e6, period, **kw)  # type: ignore[arg-type]


# 8 Mbit/s = 1 MB/s for 1 s, then 1 s of nothing, then 4 Mbit/s = 0.5 MB/s for 2 s; period 4 s
ON_OFF = _trace([0.0, 1.0, 2.0], [8.0, 0.0, 4.0], 4.0, name="on-off")


def test_public_api_is_locked() -> None:
    assert set(traces.__all__) == {
        "DATA_DIR", "END_POLICIES", "FORMATS", "WRITE_FORMATS", "ZERO_GAP_WARN_S", "EndPolicy",
        "Trace", "TraceError", "TraceWarning", "detect_format", "load_trace", "load_traces",
        "synth", "write_trace",
    }
    assert issubclass(TraceError, ValueError)


def test_capacity_at_loops() -> None:
    t = np.array([0.0, 0.999, 1.0, 1.5, 2.0, 3.999, 4.0, 5.0, 6.5, 401.2])
    want = np.array([8, 8, 0, 0, 4, 4, 8, 0, 4, 0]) * 1e6
    np.testing.assert_array_equal(ON_OFF.capacity_at(t), want)
    assert ON_OFF.capacity_at(9.0) == 0.0
    assert isinstance(ON_OFF.capacity_at(0.5), float)


def test_bytes_between_hand_values() -> None:
    assert ON_OFF.bytes_between(0.0, 4.0) == pytest.approx(2_000_000)
    assert ON_OFF.bytes_between(0.5, 2.5) == pytest.approx(500_000 + 250_000)
    assert ON_OFF.bytes_between(3.0, 13.0) == pytest.approx(500_000 + 2 * 2_000_000 + 1_000_000)
    assert ON_OFF.bytes_between(1.2, 1.8) == 0.0
    got = ON_OFF.bytes_between(np.array([0.0, 1.0]), np.array([[1.0], [2.0]]))
    np.testing.assert_allclose(got, [[1e6, 0.0], [1e6, 0.0]])


def test_finish_time_hand_values() -> None:
    assert ON_OFF.finish_time(0.0, 1_000_000) == pytest.approx(1.0)
    # 1 MB from 0.5: 0.5 MB by 1.0, gap to 2.0, 0.5 MB at 0.5 MB/s -> 3.0
    assert ON_OFF.finish_time(0.5, 1_000_000) == pytest.approx(3.0)
    # started in the gap: waits for 2.0
    assert ON_OFF.finish_time(1.5, 250_000) == pytest.approx(2.5)
    # across the loop point: 0.5 MB left of the period at 3.0, then 1 MB/s after 4.0
    assert ON_OFF.finish_time(3.0, 1_000_000) == pytest.approx(4.5)
    # several periods: 2 MB per period
    assert ON_OFF.finish_time(0.0, 2_000_000 * 10 + 1_000_000) == pytest.approx(41.0)
    assert ON_OFF.transfer_time(3.0, 1_000_000) == pytest.approx(1.5)


def test_finish_time_zero_bytes_is_t0_even_in_a_gap() -> None:
    assert ON_OFF.finish_time(1.25, 0) == 1.25
    np.testing.assert_array_equal(ON_OFF.finish_time(np.array([1.25, 7.0]), 0.0), [1.25, 7.0])


def test_exact_finish_at_end_of_period_is_earliest() -> None:
    # the whole period's bytes finish at 4.0 exactly (not at 4.0 + the next leading gap)
    tr = _trace([0.0, 1.0], [0.0, 8.0], 2.0)
    assert tr.finish_time(0.0, 1_000_000) == pytest.approx(2.0)
    assert tr.finish_time(0.0, 2_000_000) == pytest.approx(4.0)


def test_all_zero_trace_never_finishes() -> None:
    tr = _trace([0.0], [0.0], 10.0, name="dead")
    with pytest.raises(TraceError, match=re.escape("dead: the trace has zero capacity everywhere")):
        tr.finish_time(0.0, 1)
    assert tr.finish_time(3.0, 0) == 3.0


def test_end_policies() -> None:
    hold = ON_OFF.with_end("hold")
    stop = ON_OFF.with_end("stop")
    assert hold.capacity_at(100.0) == 4e6 and stop.capacity_at(100.0) == 0.0
    assert hold.bytes_between(3.0, 10.0) == pytest.approx(0.5e6 * 7)
    assert hold.finish_time(3.0, 1_000_000) == pytest.approx(5.0)
    assert stop.finish_time(3.0, 500_000) == pytest.approx(4.0)
    with pytest.raises(TraceError, match="end policy 'stop'"):
        stop.finish_time(3.0, 500_001)
    assert list(stop.segments(3.5, 6.0)) == [(3.5, 4.0, 4e6), (4.0, 6.0, 0.0)]


def test_bad_queries_raise_trace_error() -> None:
    with pytest.raises(TraceError, match=">= 0"):
        ON_OFF.capacity_at(-1.0)
    with pytest.raises(TraceError, match="t1 >= t0"):
        ON_OFF.bytes_between(2.0, 1.0)
    with pytest.raises(TraceError, match="nbytes"):
        ON_OFF.finish_time(0.0, float("nan"))
    with pytest.raises(TraceError, match=">= 0"):
        ON_OFF.finish_time(np.array([0.0, np.inf]), 1.0)


@pytest.mark.parametrize(
    ("times", "rates", "period", "match"),
    [
        ([0.0, 2.0, 1.0], [1, 1, 1], 3.0, "strictly increasing"),
        ([0.5, 1.0], [1, 1], 3.0, "start at 0"),
        ([0.0, 1.0], [1, -1], 3.0, "segment 1 has -1.0"),
        ([0.0, 1.0], [1, float("nan")], 3.0, "finite and >= 0"),
        ([0.0, 1.0], [1, 1], 1.0, "period_s must be"),
        ([], [], 1.0, "same non-zero length"),
    ],
)
def test_constructor_validates(times: list[float], rates: list[float], period: float, match: str) -> None:
    with pytest.raises(TraceError, match=match):
        Trace(np.array(times, float), np.array(rates, float), period)


def test_frozen_readonly_equality_and_hash() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ON_OFF.period_s = 3.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        ON_OFF.rates_bps[0] = 1.0
    same = _trace([0.0, 1.0, 2.0], [8.0, 0.0, 4.0], 4.0, name="other name")
    assert same == ON_OFF and hash(same) == hash(ON_OFF) and same.sha256() == ON_OFF.sha256()
    assert ON_OFF.scaled(2.0).sha256() != ON_OFF.sha256()
    assert len(ON_OFF.sha256()) == 64


def test_statistics() -> None:
    assert ON_OFF.mean_bps() == pytest.approx(4e6)
    # time-weighted: 0 for 25 %, 4 Mbit/s for 50 %, 8 Mbit/s for 25 %
    assert ON_OFF.percentile_bps(20) == 0.0
    assert ON_OFF.percentile_bps(50) == 4e6
    assert ON_OFF.percentile_bps(80) == 8e6
    assert ON_OFF.outage_fraction() == pytest.approx(0.25)
    with pytest.raises(TraceError, match="percentile"):
        ON_OFF.percentile_bps(101)


def test_percentile_matches_numpy_for_equal_segments() -> None:
    rng = np.random.default_rng(3)
    rates = rng.uniform(0, 50e6, 37)
    tr = Trace(np.arange(37.0), rates, 37.0)
    for q in (0, 5, 33.3, 50, 95, 100):
        assert tr.percentile_bps(q) == np.percentile(rates, q, method="inverted_cdf")


def test_zero_gaps_join_across_the_loop() -> None:
    tr = _trace([0.0, 1.0, 7.0], [0.0, 5.0, 0.0], 10.0)
    assert tr.zero_gaps() == [(7.0, 11.0)]
    assert tr.with_end("stop").zero_gaps() == [(0.0, 1.0), (7.0, 10.0)]
    assert tr.zero_gaps(min_s=5.0) == []


def test_segments_cover_interval_and_sum_to_bytes() -> None:
    pieces = list(ON_OFF.segments(0.5, 9.25))
    assert pieces[0][0] == 0.5 and pieces[-1][1] == 9.25
    for (_, e, _), (s, _, _) in itertools.pairwise(pieces):
        assert e == s
    total = sum((e - s) * r / 8 for s, e, r in pieces)
    assert total == pytest.approx(ON_OFF.bytes_between(0.5, 9.25))
    assert [r for _, _, r in pieces[:4]] == [8e6, 0.0, 4e6, 8e6]


def test_derived_traces() -> None:
    assert ON_OFF.scaled(0.5).mean_bps() == pytest.approx(2e6)
    with pytest.raises(TraceError):
        ON_OFF.scaled(-1)
    sh = ON_OFF.shifted(1.5)
    t = np.linspace(0, 12, 97)
    np.testing.assert_array_equal(sh.capacity_at(t), ON_OFF.capacity_at(t + 1.5))
    assert sh.period_s == 4.0 and sh.mean_bps() == pytest.approx(ON_OFF.mean_bps())
    sl = ON_OFF.sliced(0.5, 6.5)
    assert sl.period_s == 6.0
    np.testing.assert_array_equal(sl.capacity_at(t[t < 6]), ON_OFF.capacity_at(t[t < 6] + 0.5))
    rs = ON_OFF.resampled(0.75)
    assert rs.bytes_per_period == pytest.approx(ON_OFF.bytes_per_period)
    # bin [0.75, 1.5): 0.25 s at 8 Mbit/s -> 8/3 Mbit/s average
    assert rs.capacity_at(1.0) == pytest.approx(8e6 / 3)
    assert rs.times_s[-1] == 3.75  # last bin is 0.25 s long


# ---------------------------------------------------------------- brute-force reference
@st.composite
def ms_traces(draw: st.DrawFn) -> tuple[list[int], list[float], int]:
    """Traces with segment boundaries on whole milliseconds, zeros allowed (>= 1 positive)."""
    n = draw(st.integers(1, 7))
    durations = draw(st.lists(st.integers(1, 40), min_size=n, max_size=n))
    rates = draw(
        st.lists(st.sampled_from([0.0, 0.0, 1.0e5, 8.0e5, 3.3e6, 1.2e7, 9.7e7]), min_size=n, max_size=n)
    )
    if not any(rates):
        rates[draw(st.integers(0, n - 1))] = 2.5e6
    starts = [sum(durations[:i]) for i in range(n)]
    return starts, rates, sum(durations)


def _brute_finish(starts: list[int], rates: list[float], period_ms: int, t0: float, nbytes: float) -> float:
    """Step 1 ms slots from t0 (the rate of slot m is that of the segment holding m mod period)."""
    if nbytes == 0:
        return t0
    t, left, m = t0, nbytes, math.floor(t0 * 1000)
    slack = 1e-9 * nbytes  # float sums of slot bytes drift by ~1e-16 relative
    while True:
        u = m % period_ms
        rate = rates[max(i for i, s in enumerate(starts) if s <= u)]
        slot_end = (m + 1) / 1000
        can = rate * (slot_end - t) / 8
        if rate > 0 and can >= left - slack:
            return t + max(left, 0.0) * 8 / rate
        left -= can
        t, m = slot_end, m + 1


def _brute_bytes(starts: list[int], rates: list[float], period_ms: int, t0: float, t1: float) -> float:
    total, t, m = 0.0, t0, math.floor(t0 * 1000)
    while t < t1:
        rate = rates[max(i for i, s in enumerate(starts) if s <= m % period_ms)]
        end = min((m + 1) / 1000, t1)
        total += rate * (end - t) / 8
        t, m = end, m + 1
    return total


@settings(max_examples=300, deadline=None)
@given(ms_traces(), st.floats(0.0, 3.0), st.floats(0.0, 2.5), st.booleans())
def test_finish_time_matches_brute_force(
    spec: tuple[list[int], list[float], int], t0_frac: float, periods: float, whole: bool
) -> None:
    starts, rates, period_ms = spec
    tr = Trace(np.array(starts) / 1000, np.array(rates), period_ms / 1000)
    t0 = t0_frac * period_ms / 1000
    nbytes = periods * tr.bytes_per_period
    if whole:  # exact multiples of a period's bytes hit the loop point exactly
        nbytes = round(periods) * tr.bytes_per_period
    got = tr.finish_time(t0, nbytes)
    # finish time jumps across zero gaps as nbytes grows: compare with the reference at
    # nbytes -/+ 1e-9 of the cumulative bytes (finish_time's documented tolerance is 1e-12),
    # so float rounding at a knife edge cannot decide the outcome
    slack = 1e-9 * (nbytes + tr.bytes_per_period * (t0_frac + 1))
    lo = _brute_finish(starts, rates, period_ms, t0, max(nbytes - slack, 0.0))
    hi = _brute_finish(starts, rates, period_ms, t0, nbytes + slack)
    assert lo - 1e-6 <= got <= hi + 1e-6  # well inside the 1 ms resolution of the reference
    assert got >= t0
    assert tr.bytes_between(t0, got) == pytest.approx(nbytes, rel=1e-9, abs=1e-3)


@settings(max_examples=60, deadline=None)
@given(ms_traces(), st.floats(0.0, 2.0), st.floats(0.0, 2.0))
def test_bytes_between_matches_brute_force(
    spec: tuple[list[int], list[float], int], a: float, b: float
) -> None:
    starts, rates, period_ms = spec
    tr = Trace(np.array(starts) / 1000, np.array(rates), period_ms / 1000)
    t0, t1 = sorted((a * period_ms / 1000, b * period_ms / 1000))
    want = _brute_bytes(starts, rates, period_ms, t0, t1)
    assert tr.bytes_between(t0, t1) == pytest.approx(want, rel=1e-9, abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(ms_traces(), st.lists(st.floats(0.0, 5.0), min_size=1, max_size=20), st.floats(0.0, 3.0))
def test_vectorised_equals_scalar(
    spec: tuple[list[int], list[float], int], t0s: list[float], periods: float
) -> None:
    starts, rates, period_ms = spec
    tr = Trace(np.array(starts) / 1000, np.array(rates), period_ms / 1000)
    t0 = np.array(t0s)
    nbytes = periods * tr.bytes_per_period * np.linspace(0, 1, t0.size)
    vec = tr.finish_time(t0, nbytes)
    assert isinstance(vec, np.ndarray) and vec.shape == t0.shape
    np.testing.assert_array_equal(vec, [tr.finish_time(a, b) for a, b in zip(t0s, nbytes, strict=True)])
    np.testing.assert_array_equal(tr.capacity_at(t0), [tr.capacity_at(a) for a in t0s])


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.floats(0.0, 100.0), min_size=1, max_size=300),
    st.lists(st.floats(-10.0, 110.0), min_size=1, max_size=60),
    st.sampled_from(["left", "right"]),
)
@example(xs=[0.0, 2.225073858507203e-309], qs=[0.0], side="left")  # subnormal span: scale = inf
def test_bucket_index_equals_searchsorted(xs: list[float], qs: list[float], side: str) -> None:
    arr = np.sort(np.array(xs + xs[: len(xs) // 3]))  # with duplicates, as cum bytes over gaps
    q = np.concatenate([np.array(qs), arr, np.nextafter(arr, np.inf), np.nextafter(arr, -np.inf)])
    got = BucketIndex(arr, side)(q)  # type: ignore[arg-type]
    np.testing.assert_array_equal(got, np.searchsorted(arr, q, side=side))  # type: ignore[call-overload]


def test_large_vectorised_queries_equal_scalar_ones() -> None:
    # > 16 segments and > 256 queries: the bucket-index path, on a bursty 1 ms trace with gaps
    rng = np.random.default_rng(4)
    stamps = np.sort(np.concatenate([rng.integers(0, 3000, 4000), rng.integers(5000, 9000, 3000)]))
    stamps[-1] = 9500
    tr = trace_from_mahimahi(stamps)
    t0 = rng.uniform(0, 40, 3000)
    nbytes = rng.uniform(0, 3 * tr.bytes_per_period, 3000)
    vec = tr.finish_time(t0, nbytes)
    np.testing.assert_array_equal(vec, [tr.finish_time(a, b) for a, b in zip(t0.tolist(), nbytes.tolist(), strict=True)])
    np.testing.assert_array_equal(tr.capacity_at(t0), [tr.capacity_at(a) for a in t0.tolist()])
    t1 = t0 + rng.uniform(0, 20, 3000)
    np.testing.assert_array_equal(
        tr.bytes_between(t0, t1), [tr.bytes_between(a, b) for a, b in zip(t0.tolist(), t1.tolist(), strict=True)]
    )
    assert np.all(vec >= t0)


def test_pickle_and_replace_keep_behaviour() -> None:
    import pickle

    big = trace_from_mahimahi(np.arange(0, 4001, 3))  # > 16 segments: has a bucket index
    big.finish_time(np.zeros(300), 1e5)  # build the index before pickling
    for tr in (ON_OFF, big):
        back = pickle.loads(pickle.dumps(tr))
        assert back == tr and back.finish_time(0.5, 1e6) == tr.finish_time(0.5, 1e6)
    renamed = dataclasses.replace(ON_OFF, name="renamed")
    assert renamed.name == "renamed" and renamed.finish_time(0.5, 1e6) == pytest.approx(3.0)


def test_shifted_without_loop_is_shorter() -> None:
    stop = ON_OFF.with_end("stop").shifted(1.5)
    assert stop.period_s == 2.5 and stop.end == "stop"
    assert stop.capacity_at(0.25) == 0.0 and stop.capacity_at(1.0) == 4e6
    assert stop.capacity_at(3.0) == 0.0
    with pytest.raises(TraceError, match="offset must be in"):
        ON_OFF.with_end("hold").shifted(4.0)
