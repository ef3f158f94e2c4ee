"""As root: the device's local fallback in a real emulator run (``emulator.run --fallback F``).
One device offloads every request of a synthetic LLM with 500 tokens (local latency ``L`` =
2.02 s) over a 10 Mbit/s link that goes dark for 10 s 0.2 s after one request (its arrival time
taken from the device's seeded arrival stream) has started streaming: that request is run on
the device too from ``F x L`` after its start and ends ``(1 + F) x L`` after it (the
simulator's :func:`agent.latency.fallback_start` rule, which the run's own replay also
prices); the tokens the MEC streamed before the outage count; the MEC drops its session when
the device releases it, what the MEC sends for it after the link comes back is ignored, and
the requests after the outage offload as before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emulator.synthetic import write_synthetic_pair

ROOT = Path(__file__).resolve().parent.parent
F = 0.5
TOKENS = 500
SEED = 3

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")]


def _arrival_after(t: float) -> float:
    """Device 0's first arrival after ``t`` at 1 request/s (emulator.device's seeded stream)."""
    from emulator.device import arrivals

    seq = np.random.SeedSequence([SEED, 0, 0x444556])
    rng = np.random.default_rng(seq.spawn(2)[0])
    prev = 0.0
    for a in arrivals(rng, 1.0):
        assert a is not None
        if a > t:
            assert a - prev > 1.0  # the device is idle when it comes (requests take ~0.55 s)
            return a
        prev = a
    raise AssertionError("unreachable")


def _run_outage(tmp_path: Path, dev: Path, mec: Path, outage: tuple[float, float],
                *extra: str) -> tuple[str, list[dict[str, Any]], Path]:
    """``emulator.run``, one device at 1 request/s (seed ``SEED``, medians), 10 ms, on a
    10 Mbit/s link dark during ``outage``: its stderr, records and output directory."""
    trace = tmp_path / "outage.csv"
    trace.write_text(f"time_s,mbps\n0,10\n{outage[0]:.3f},0\n{outage[1]:.3f},10\n"
                     "# period_s=60\n")
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "emulator.run", "--trace", str(trace), "--model", str(dev),
         "--mec-profile", str(mec), "--devices", "1", "--rate", "1", "--delay-ms", "10",
         "--seed", str(SEED), "--jitter", "none", "--quiet", "--out", str(out), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    recs = [json.loads(x) for x in (out / "requests.jsonl").read_text().splitlines()]
    return res.stderr, recs, out


def test_request_caught_by_an_outage_falls_back(tmp_path: Path) -> None:
    dev, mec = write_synthetic_pair(tmp_path)
    from agent.latency import LatencyModel
    from agent.policy import Workload
    from profiler.schema import load_profile

    big = LatencyModel(load_profile(dev), load_profile(mec)).local_latency(
        Workload("toy", {"decode": TOKENS}))
    assert big == pytest.approx(0.020 + TOKENS * 0.004)  # 4 x 5 ms prefill, 4 x 1 ms a token
    a = _arrival_after(2.0)
    outage = (a + 0.2, a + 10.2)
    stderr, recs, out = _run_outage(
        tmp_path, dev, mec, outage, "--policy", "offload", "--repeat", f"decode={TOKENS}",
        "--duration", f"{outage[1] + 3:.1f}", "--mec-speedup", "1", "--fallback", f"{F:g}")
    assert f"local fallback after {F:g} x the local latency" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["provenance"]["inputs"]["fallback"] == F
    fell = [r for r in recs if "fallback_s" in r]
    # the request caught by the outage, and the ones the device started inside it (their echo
    # read the outage after its deadline; "offload" offloads anyway, and falls back)
    assert fell[0]["t_arrival"] == pytest.approx(a, abs=1e-6), fell
    assert all(outage[0] < x["t_start"] < outage[1] for x in fell[1:]), fell
    assert all(x["latency_s"] == pytest.approx((1 + F) * big, rel=0.02) for x in fell)
    r = fell[0]
    assert r["t_start"] < outage[0] < r["t_end"] < outage[1]
    # the local run starts F x L after the start (+ the wait's wake-up) and takes L
    assert F * big <= r["fallback_s"] < F * big + 0.01, r
    assert r["latency_s"] == pytest.approx((1 + F) * big, rel=0.02), r
    assert r["steps"] == [] and r["phases"]["device_s"] == pytest.approx(big, rel=0.02)
    # tokens streamed before the outage came from the MEC (within its first 0.2 s), the rest
    # from the local run
    tt = r["token_times"]
    assert len(tt) == TOKENS + 1 and tt[-1] == pytest.approx(r["latency_s"])
    k = next(i for i, t in enumerate(tt) if t > F * big)
    assert 10 < k < TOKENS and tt[k - 1] < outage[0] - r["t_start"] + 0.02
    assert tt[k] == pytest.approx(r["fallback_s"] + 0.020 + k * 0.004, abs=0.01)
    # the simulator's replay of the same request prices the same fallback
    assert r["predicted_latency_s"] == pytest.approx((1 + F) * big, rel=1e-6)
    # the requests after the outage offloaded as before
    after = [x for x in recs if x["t_start"] > outage[1]]
    assert len(after) >= 2 and all("fallback_s" not in x for x in after)
    assert all(x["phases"]["mec_s"] > 0 for x in after)


def test_request_arriving_in_an_outage_decides_without_the_link(tmp_path: Path) -> None:
    """The per-request echo has a deadline (1 s): a request that arrives while the link is dark
    reads an outage (a 0 bit/s sample, as the simulator counts a dark second) instead of the
    device waiting for the link to come back. Greedy's estimate is the mean of the last 4
    samples (agent.observation.throughput_estimate): the first three requests decided in the
    dark still offload, and the local fallback (F 0.5) ends each at 1.5 x L; from the fourth
    (four zeros) greedy reads the outage and runs locally, until the link is back and a probe
    has measured it."""
    dev, mec = write_synthetic_pair(tmp_path)
    a = _arrival_after(2.0)
    outage = (a - 0.5, a + 9.5)
    _, recs, _ = _run_outage(tmp_path, dev, mec, outage, "--policy", "greedy",
                             "--duration", f"{outage[1] + 4:.1f}", "--fallback", "0.5")
    dark = [r for r in recs if outage[0] < r["t_decide"] < outage[1] - 1.5]
    assert len(dark) >= 5, [(r["t_arrival"], r["t_decide"]) for r in recs]
    for r in dark:
        assert 1.0 <= r["decide_s"] < 1.2, r  # the echo's deadline, then the decision
        assert r["observation"]["throughput_bps"] == 0.0
    for r in dark[:3]:  # offloaded into the outage: the fallback ends them
        assert r["phases"]["mec_s"] == 0 and r["fallback_s"] == pytest.approx(0.018, abs=0.003)
        assert r["latency_s"] == pytest.approx(1.5 * 0.036, rel=0.1)
    for r in dark[3:]:  # the outage read: local
        assert "fallback_s" not in r and r["phases"]["upload_bytes"] == 0
        assert r["latency_s"] == pytest.approx(0.036, rel=0.1)
    # before the outage greedy offloads, and again once the link is back and probed
    assert all(r["phases"]["mec_s"] > 0 for r in recs if r["t_decide"] < outage[0] - 0.1)
    assert any(r["phases"]["mec_s"] > 0 for r in recs if r["t_decide"] > outage[1] + 0.5)
