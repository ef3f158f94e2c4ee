"""Profiled compute: the lognormal fit, the precise wait, payload sizes; the live estimator."""

from __future__ import annotations

import time

import numpy as np
import pytest

from agent.policy import Workload
from emulator.compute import ProfiledCompute, lognormal_params, output_bytes, wait_until
from emulator.observe import LinkEstimator
from emulator.synthetic import synthetic_profile


def test_lognormal_has_the_profile_median_and_std() -> None:
    mu, sigma = lognormal_params(20.0, 4.0)
    x = np.random.default_rng(0).lognormal(mu, sigma, 200_000)
    assert np.median(x) == pytest.approx(20.0, rel=0.01)
    assert x.std() == pytest.approx(4.0, rel=0.02)
    assert lognormal_params(5.0, 0.0) == (pytest.approx(np.log(5.0)), 0.0)


def test_wait_until_is_close() -> None:
    # never early, in any round; late by < 5 ms in the best of five rounds (one preemption on
    # a shared, loaded CPU costs more than that: seen 8 and 10 ms in full-suite runs on a fresh
    # machine; a wait_until that is always late still fails); the benchmark gives real figures
    worst = []
    for _ in range(5):
        errs = []
        for target in (0.001, 0.005, 0.02):
            t0 = time.perf_counter()
            wait_until(t0 + target)
            errs.append(time.perf_counter() - t0 - target)
        assert min(errs) >= 0
        worst.append(max(errs))
    assert min(worst) < 0.005, worst


def test_sampling_is_seeded_and_centred() -> None:
    prof = synthetic_profile(block_ms=10.0, cv=0.1)
    a = ProfiledCompute(prof, np.random.default_rng(3))
    b = ProfiledCompute(prof, np.random.default_rng(3))
    xa = [a.sample_s(0, 0, 4) for _ in range(2000)]
    assert xa[:5] == [b.sample_s(0, 0, 4) for _ in range(5)]
    assert np.median(xa) == pytest.approx(0.040, rel=0.02)
    none = ProfiledCompute(prof, np.random.default_rng(0), jitter="none")
    assert none.sample_s(0, 1, 3) == pytest.approx(0.020)
    assert none.sample_s(0, 2, 2) == 0.0


def test_payload_sizes_follow_the_profile() -> None:
    prof = synthetic_profile(cut_bytes=1234, decode_cut_bytes=56)
    pc = ProfiledCompute(prof, np.random.default_rng(0), jitter="none")
    p = prof.passes[0]
    assert output_bytes(p, 0, 0) == p.input_bytes == prof.passes[0].upload_bytes(0)
    assert len(pc.payload(0, 0, 2)) == 1234 == p.upload_bytes(2)
    assert len(pc.payload(0, 2, 4)) == p.output_bytes == p.download_bytes(2)
    assert len(pc.payload(1, 0, 3)) == 56
    target, out = pc.run(0, 0, 1)
    assert target == pytest.approx(0.005) and len(out) == 1234


def test_estimator_harmonic_mean_probe_and_observation() -> None:
    est = LinkEstimator(window=4, min_sample_bytes=1000, probe_after_s=2.0)
    assert est.needs_probe(0.0) and est.throughput_bps() == 0.0
    est.add_upload(500, 1.0, 0.0)  # too small: measures delay, not rate
    assert est.throughput_bps() == 0.0
    est.add_upload(10_000, 0.01, 1.0)  # 8 Mbit/s
    est.add_upload(10_000, 0.04, 1.5)  # 2 Mbit/s
    assert est.throughput_bps() == pytest.approx(2 / (1 / 8e6 + 1 / 2e6))
    assert not est.needs_probe(2.0) and est.needs_probe(3.6)
    est.add_rtt(0.02)
    obs = est.observation(Workload("toy"), 4.0)
    assert obs.rtt_s == 0.02 and obs.recent_throughputs_bps == (8e6, 2e6) and obs.time_s == 4.0


def test_background_thread_yields_to_the_run() -> None:
    """A device's after-run checks leave SCHED_FIFO (where a run's devices compute) for
    SCHED_IDLE, or at least nice 19, in that thread only."""
    import os
    import threading

    from emulator.compute import background_thread, realtime_thread

    got: dict[str, object] = {}

    def body() -> None:
        got["rt"] = realtime_thread()
        got["policy"] = background_thread()
        got["sched"] = os.sched_getscheduler(0)
        got["nice"] = os.getpriority(os.PRIO_PROCESS, 0)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert got["policy"] in ("idle", "nice"), got
    if got["policy"] == "idle":
        assert got["sched"] == os.SCHED_IDLE
    else:
        assert got["sched"] == os.SCHED_OTHER and got["nice"] == 19
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the calling thread is untouched
