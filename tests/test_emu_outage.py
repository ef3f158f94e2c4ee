"""As root: a 30 s outage delivers nothing, and a request that needs the link waits for it
exactly as the simulator says (synthetic LLM profiles, prefill cut 200 000 bytes, 10 ms delay).

Measured on the shared 2-core build machine: 0 bytes in all 58 1-s windows (both directions)
inside the outage; the request caught by it took 30.440 s against 30.292 s simulated (+0.5 %),
the others after the first (slow start, +16 %) within 1 % on a quiet machine."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emulator.synthetic import write_synthetic_pair

ROOT = Path(__file__).resolve().parent.parent
OUTAGE = (3.0, 33.0)

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")]


def test_outage_delivers_nothing_and_requests_wait(tmp_path: Path) -> None:
    trace = tmp_path / "outage.csv"
    trace.write_text(f"time_s,mbps\n0,10\n{OUTAGE[0]:g},0\n{OUTAGE[1]:g},10\n# period_s=60\n")
    dev, mec = write_synthetic_pair(tmp_path)
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "emulator.run", "--trace", str(trace), "--model", str(dev),
         "--mec-profile", str(mec), "--policy", "fixed:2", "--devices", "1", "--closed-loop",
         "--duration", "36", "--delay-ms", "10", "--seed", "3", "--quiet", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader((out / "link.csv").open()))
    inside = [r for r in rows
              if OUTAGE[0] <= float(r["t_s"]) and float(r["t_s"]) + 1.0 <= OUTAGE[1]]
    assert len(inside) >= 2 * 28  # up and down, every whole second of the outage
    assert all(float(r["capacity_mbps"]) == 0.0 for r in inside)
    leaked = [(r["t_s"], r["direction"], r["goodput_mbps"]) for r in inside
              if float(r["goodput_mbps"]) > 0.0]
    assert leaked == [], f"bytes delivered while capacity was zero: {leaked}"
    recs = [json.loads(x) for x in (out / "requests.jsonl").read_text().splitlines()]
    caught = [r for r in recs if r["t_start"] < OUTAGE[0] < r["t_end"]]
    assert len(caught) == 1 and caught[0]["t_end"] > OUTAGE[1]  # it waited for the link
    # parity with the simulator: the request caught by the outage within 5 %, and, leaving out
    # the connection's first transfer (slow start, not modelled; as in test_emulator_e2e), 90 %
    # of the others within 5 % and their median within 2 % (on a quiet machine all were within
    # 1 %; with a load average of 7-10 from other jobs one of 18 came out at +7 %)
    def rel(r: dict[str, float]) -> float:
        return r["latency_s"] / r["predicted_latency_s"] - 1.0

    assert abs(rel(caught[0])) < 0.05, caught[0]
    rest = [rel(r) for r in recs[1:]]
    assert sum(abs(x) < 0.05 for x in rest) >= 0.9 * len(rest), rest
    assert abs(float(np.median(rest))) < 0.02, rest
