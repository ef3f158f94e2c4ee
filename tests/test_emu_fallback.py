"""As root: the device's local fallback in a real emulator run (``emulator.run --fallback F``).
A closed-loop device offloads every request of a synthetic LLM (local latency ``L`` = 36 ms)
over a 10 Mbit/s link that goes dark for 10 s: the request caught by the outage is run on the
device too from ``F x L`` after its start and ends ``(1 + F) x L`` after it (the simulator's
:func:`agent.latency.fallback_start` rule, which the run's own replay also prices), the MEC
drops its session when the device releases it, what the MEC sends for it after the link comes
back is ignored, and the requests after the outage offload as before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.synthetic import write_synthetic_pair

ROOT = Path(__file__).resolve().parent.parent
OUTAGE = (3.0, 13.0)
F = 3.0
L = 0.036  # the toy profile's fully-local latency (4 prefill blocks + 4 x 4 decode blocks)

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")]


def test_request_caught_by_an_outage_falls_back(tmp_path: Path) -> None:
    dev, mec = write_synthetic_pair(tmp_path)
    from agent.latency import LatencyModel
    from agent.policy import Workload
    from profiler.schema import load_profile

    assert LatencyModel(load_profile(dev), load_profile(mec)).local_latency(
        Workload("toy")) == pytest.approx(L)
    trace = tmp_path / "outage.csv"
    trace.write_text(f"time_s,mbps\n0,10\n{OUTAGE[0]:g},0\n{OUTAGE[1]:g},10\n# period_s=60\n")
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "emulator.run", "--trace", str(trace), "--model", str(dev),
         "--mec-profile", str(mec), "--policy", "offload", "--devices", "1", "--closed-loop",
         "--duration", "16", "--delay-ms", "10", "--seed", "3", "--jitter", "none",
         "--fallback", f"{F:g}", "--quiet", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    assert f"local fallback after {F:g} x the local latency" in res.stderr
    recs = [json.loads(x) for x in (out / "requests.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["provenance"]["inputs"]["fallback"] == F
    fell = [r for r in recs if "fallback_s" in r]
    assert len(fell) == 1, [(r["t_start"], r["latency_s"]) for r in recs if r["latency_s"] > L]
    r = fell[0]
    assert r["t_start"] < OUTAGE[0] < r["t_end"] < OUTAGE[1]
    # the local run starts F x L after the start (+ the wait's wake-up) and takes L
    assert F * L <= r["fallback_s"] < F * L + 0.005, r
    assert r["latency_s"] == pytest.approx((1 + F) * L, rel=0.1), r
    assert r["steps"] == [] and r["phases"]["device_s"] == pytest.approx(L, rel=0.1)
    assert len(r["token_times"]) == 5 and r["token_times"][-1] == pytest.approx(r["latency_s"])
    # the simulator's replay of the same request prices the same fallback
    assert r["predicted_latency_s"] == pytest.approx((1 + F) * L, rel=1e-6)
    # the next request waited for the link (its echo) and the ones after offloaded as before
    after = [x for x in recs if x["t_start"] > OUTAGE[1]]
    assert len(after) > 20 and all("fallback_s" not in x for x in after)
    assert all(x["phases"]["mec_s"] > 0 for x in after)
