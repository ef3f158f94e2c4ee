"""Emulator against simulator on a short contended run (root): per-request latency error bounded.

Four devices on their own links shaped from the bundled cellular trace (10 ms one-way delay),
one MEC slot shared by all, closed loop, synthetic LLM-shaped profiles, policy ``fixed:2``
(a 200 kB prefill cut and four 3 kB decode round trips per request), 8 s. Every recorded
request is replayed through ``agent.latency.simulate_request`` with its start time, decision
and workload on the trace file (1 s segments: the emulator's 0.1 s averaging changes nothing),
against the MEC occupancy the records show, so the prediction includes the MEC wait
(``emulator/parity.py``).

Bounds, chosen from measurements (three runs of this scenario on the shared 2-core build
machine, 1 Dec 2026, seeds 3/4/5 with 3/4/4 devices, other jobs running): median |relative
error| 1.0%, 1.4%, 1.4%; p95 13.7%, 25.1%, 15.8% (the tail: requests started within a few ms
of each other, which the emulator's MEC queued in the other order). The test holds median
<= 5% and p95 <= 40%.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.parity import compare, replay
from emulator.records import read_records
from emulator.synthetic import write_synthetic_pair
from profiler.schema import load_profile
from traces import load_trace

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "traces" / "data" / "cellular_120s.csv"
MEDIAN_BOUND = 0.05
P95_BOUND = 0.40

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")]


def test_per_request_latency_matches_the_simulator(tmp_path: Path) -> None:
    dev, mec = write_synthetic_pair(tmp_path)
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "emulator.run", "--trace", str(TRACE), "--model", str(dev),
         "--mec-profile", str(mec), "--policy", "fixed:2", "--devices", "4", "--mec-model", "slots", "--mec-slots", "1",
         "--closed-loop", "--duration", "8", "--delay-ms", "10", "--seed", "4", "--quiet",
         "--mec-speedup", "1",  # as replayed below (emulator.run's default is the scenario's)
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    recs = read_records(out / "requests.jsonl")
    assert len(recs) >= 16 and {r["device"] for r in recs} == {0, 1, 2, 3}
    trace = load_trace(TRACE)
    pairs = replay(recs, load_profile(dev), load_profile(mec), up=trace, down=trace,
                   one_way_delay_s=0.010, mec_slots=1, mec_speedup=1.0)
    c = compare(pairs)
    msg = f"{c} (records in {out})"
    assert all(p.offloaded for p in pairs), msg
    # contended: the MEC made requests wait, and the simulator predicted waits too
    assert c["wait_measured_s"] > 0.1 and c["wait_predicted_s"] > 0.1, msg
    assert c["median_abs"] <= MEDIAN_BOUND, msg
    assert c["p95_abs"] <= P95_BOUND, msg
