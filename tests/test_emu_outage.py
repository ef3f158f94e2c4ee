"""As root: a 30 s outage delivers nothing, and a request that needs the link waits for it
exactly as the simulator says (synthetic LLM profiles, prefill cut 200 000 bytes, 10 ms delay);
on a Mahimahi trace whose deliveries all come in bursts (0.1 s of every 0.5 s) requests take
what the simulator says too.

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


DELAY_S = 0.010


def _run(tmp_path: Path, trace: Path, duration_s: float, *extra: str) -> Path:
    """``emulator.run`` on ``trace`` (both directions), one closed-loop device, fixed split 2."""
    dev, mec = write_synthetic_pair(tmp_path)
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "emulator.run", "--trace", str(trace), "--model", str(dev),
         "--mec-profile", str(mec), "--policy", "fixed:2", "--devices", "1", "--closed-loop",
         "--duration", f"{duration_s:g}", "--delay-ms", f"{DELAY_S * 1e3:g}", "--seed", "3",
         "--quiet", "--out", str(out), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    return out


def _rel(r: dict[str, float]) -> float:
    return r["latency_s"] / r["predicted_latency_s"] - 1.0


def test_outage_delivers_nothing_and_requests_wait(tmp_path: Path) -> None:
    trace = tmp_path / "outage.csv"
    trace.write_text(f"time_s,mbps\n0,10\n{OUTAGE[0]:g},0\n{OUTAGE[1]:g},10\n# period_s=60\n")
    out = _run(tmp_path, trace, 36)
    rows = list(csv.DictReader((out / "link.csv").open()))
    # the downlink replays its trace one delay late (its delay comes before its shaper)
    lag = {"up": 0.0, "down": DELAY_S}
    inside = [r for r in rows
              if OUTAGE[0] + lag[r["direction"]] <= float(r["t_s"])
              and float(r["t_s"]) + 1.0 <= OUTAGE[1] + lag[r["direction"]]]
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
    assert abs(_rel(caught[0])) < 0.05, caught[0]
    rest = [_rel(r) for r in recs[1:]]
    assert sum(abs(x) < 0.05 for x in rest) >= 0.9 * len(rest), rest
    assert abs(float(np.median(rest))) < 0.02, rest


def test_burst_trace_requests_match_the_simulator(tmp_path: Path) -> None:
    """Every delivery of a Mahimahi file in the first 0.1 s of each 0.5 s (11.6 Mbit/s open,
    nothing for 0.4 s), both directions: the 200 KB prefill upload spans bursts, each token's
    exchange waits for one. Before the downlink replayed its trace one delay late and the hosts
    got a minimum RTO above the 0.4 s gaps (and cubic instead of BBR), requests took up to 2.3 x
    the simulator's time (a reply sent in a burst's last 10 ms met a closed downlink; spurious
    timeouts inside the gaps restarted the upload from one segment)."""
    trace = tmp_path / "burst.up"
    trace.write_text("".join(f"{500 * k + j}\n" for k in range(120) for j in range(1, 101)))
    # compute at the profile's medians (no jitter), as the simulator prices it: on this trace a
    # jittered computation that ends 1 ms late can miss a burst and wait 0.4 s for the next one
    # (measured with jitter: one of 17 requests +38 %, 0.3 ms past a burst's end)
    out = _run(tmp_path, trace, 25, "--jitter", "none")
    recs = [json.loads(x) for x in (out / "requests.jsonl").read_text().splitlines()]
    rest = [_rel(r) for r in recs[1:]]  # the first: slow start, not modelled
    assert len(rest) >= 10, recs
    # measured (load average 2-4 from other jobs, three runs): 43 of 49 within 5 %, most within
    # 1 %; misses +5.2 %, one +106 % and four +38 %, where a token's
    # 8-byte reply left the MEC 2.6 ms after the simulator's (per-message overheads the simulator
    # does not price add up over a request), 0.7 ms before the burst's end, after the gate had
    # closed (one frame time early, see emulator.net.shaper) and waited 0.4 s for the next burst.
    # Before the fixes 4 of 17 were +37 % to +106 % and 200 KB uploads took up to 3.5 s (0.6 s).
    assert sum(abs(x) < 0.05 for x in rest) >= 0.8 * len(rest), rest
    assert abs(float(np.median(rest))) < 0.01, rest
