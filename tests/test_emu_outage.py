"""As root: a 30 s outage delivers nothing, and a request that needs the link waits for it
exactly as the simulator says (synthetic LLM profiles, prefill cut 200 000 bytes, 10 ms delay);
on a Mahimahi trace whose deliveries all come in bursts (0.1 s of every 0.5 s) requests take
what the simulator says too.

Measured on the shared 2-core build machine: 0 bytes in all 58 1-s windows (both directions)
inside the outage; the request caught by it took 30.440 s against 30.292 s simulated (+0.5 %),
the others within 1 % on a quiet machine (the connection's first too, since the hosts' initial
window covers the queue; it was +16 % with the kernel's 10 segments). Under load the requests'
errors come from the host (a send or a computation starting late: its own stamps show it), so
the parity check takes that time out (see ``_host_delay_s``) and a load-independent invariant
(no transfer ends before the trace lets it) is checked on every transfer."""

from __future__ import annotations

import csv
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


def _simulated(tmp_path: Path, trace: Path, out: Path) -> tuple[Any, list[tuple[dict[str, Any], Any]]]:
    """Every record of the run with the simulator's step-by-step timeline of the same request
    (its decision, workload and start time; the run's MEC speed-up; an idle MEC)."""
    from agent.latency import LatencyModel
    from agent.link import Link
    from emulator.parity import simulate_record
    from profiler.schema import load_profile
    from traces import load_trace

    summary = json.loads((out / "summary.json").read_text())
    model = LatencyModel(load_profile(tmp_path / "toy.device.json"),
                         load_profile(tmp_path / "toy.mec.json"),
                         mec_speedup=float(summary["mec_speedup"]))
    from emulator.net import NetConfig
    from emulator.net.topology import _prepare

    tr = _prepare(load_trace(trace), NetConfig.resample_s)  # as the network replays it
    link = Link(up=tr, down=tr, one_way_delay_s=DELAY_S)
    recs = [json.loads(x) for x in (out / "requests.jsonl").read_text().splitlines()]
    return link, [(r, simulate_record(model, link, r, detail=True)) for r in recs]


def _host_delay_s(rec: dict[str, Any], sim: Any) -> float:
    """Time the emulating host itself added to the request, as its own step stamps show: a
    computation or a send that started after its inputs were ready and its side (device or
    MEC; uplink or downlink) was free, and a computation that ran longer than the profile the
    simulator prices. None of it is the network's, and all of it grows with CPU load (measured
    under a load average of 7-10: sends starting 2-9 ms after their data was ready)."""
    late = 0.0
    free: dict[str, float] = {}
    for e, s in zip(rec["steps"], sim.steps, strict=True):
        key = e["kind"] + e["side"]
        late += max(0.0, e["t_start"] - max(e["t_ready"], free.get(key, -1e9)))
        if e["kind"] == "compute":
            late += max(0.0, (e["t_end"] - e["t_start"]) - (s.t_end - s.t_start))
        free[key] = e["t_end"]
    return late


def _sends(link: Any, pairs: list[tuple[dict[str, Any], Any]]
           ) -> list[tuple[dict[str, Any], dict[str, Any], float]]:
    """``(record, send step, due)`` of every send with bytes: ``due`` is when the simulator's
    link, started when the emulator started the send, delivers it (one delay included)."""
    out = []
    for rec, _sim in pairs:
        for e in rec["steps"]:
            if e["kind"] == "send" and e["nbytes"] > 0:
                fin = link.up_finish if e["side"] == "up" else link.down_finish
                out.append((rec, e, fin(e["t_start"], e["nbytes"]) + DELAY_S))
    return out


def _no_transfer_early(link: Any, pairs: list[tuple[dict[str, Any], Any]],
                       link_bps: float) -> None:
    """No transfer ends before the trace lets it (a load-independent invariant: a busy CPU only
    makes things later): every send of every request ends no earlier than the simulator's
    link, started when the emulator started it, says, less what the shaper may pass at once
    (HTB's 4 ms bucket and one frame at the link's wire rate) and 1 ms of clock stamps."""
    from emulator.net import PAYLOAD_FRACTION

    slack = 0.004 + 1514 * 8 / (link_bps / PAYLOAD_FRACTION) + 0.001
    early = [(rec["request"], e["side"], e["nbytes"], e["t_start"], e["t_end"], due)
             for rec, e, due in _sends(link, pairs) if e["t_end"] < due - slack]
    assert early == [], f"transfers ended before the trace allowed: {early}"


def test_outage_delivers_nothing_and_requests_wait(tmp_path: Path) -> None:
    trace = tmp_path / "outage.csv"
    trace.write_text(f"time_s,mbps\n0,10\n{OUTAGE[0]:g},0\n{OUTAGE[1]:g},10\n# period_s=60\n")
    out = _run(tmp_path, trace, 36)
    rows = list(csv.DictReader((out / "link.csv").open()))
    # the downlink replays its trace one delay late (its delay comes before its shaper)
    lag = {"up": 0.0, "down": DELAY_S}
    # a row covers from its t_s to the next row's of its direction (the sampling windows are
    # ~1 s, measured up to 1.015 s: a window from 32.0065 s to 33.0148 s saw 4.8 ms of the
    # downlink reopened at 33.01 s)
    ends: dict[str, float] = {}
    for r in reversed(rows):
        r["t_end"] = ends.get(r["direction"], float("inf"))
        ends[r["direction"]] = float(r["t_s"])
    inside = [r for r in rows
              if OUTAGE[0] + lag[r["direction"]] <= float(r["t_s"])
              and r["t_end"] <= OUTAGE[1] + lag[r["direction"]]]
    assert len(inside) >= 2 * 28  # up and down, every whole second of the outage
    assert all(float(r["capacity_mbps"]) == 0.0 for r in inside)
    leaked = [(r["t_s"], r["direction"], r["goodput_mbps"]) for r in inside
              if float(r["goodput_mbps"]) > 0.0]
    assert leaked == [], f"bytes delivered while capacity was zero: {leaked}"
    link, pairs = _simulated(tmp_path, trace, out)
    recs = [r for r, _ in pairs]
    caught = [r for r in recs if r["t_start"] < OUTAGE[0] < r["t_end"]]
    assert len(caught) == 1 and caught[0]["t_end"] > OUTAGE[1]  # it waited for the link
    _no_transfer_early(link, pairs, 10e6)
    # parity with the simulator, every request (the connection's first included: the hosts'
    # initial window covers the queue): the one caught by the outage within 5 %; the others'
    # median within 2 % and 85 % of them within 5 % once the time the host itself added (its
    # own stamps, _host_delay_s) is taken out. Measured (4 Dec, four runs, load average 2.4-10.7
    # from other jobs): raw errors up to +22 % (the host's delays 40 ms of 353 ms), within 5 %
    # without the host's delays 19/19, 17/19, 19/19 and 19/19 (the two misses, +12 % and +9 %:
    # an upload and token messages late on the link itself under load), raw medians -1.2 % to
    # +1.2 %; on a quiet machine all within 1 % raw. With a two-frame HTB bucket on this
    # trace (a3dd888) the 3 KB uploads passed at once: net median -2.5 %, CI's raw median
    # -2.0 %; with the 1 ms bucket (5 Dec, quiet machine, two runs): net medians -0.4 % and
    # -0.4 %, raw +1.0 % and +1.1 % (the host's ~0.5 ms per token message).
    assert abs(_rel(caught[0])) < 0.05, caught[0]
    rest = [(r, s) for r, s in pairs if r is not caught[0]]
    raw = [_rel(r) for r, _ in rest]
    net = [(r["latency_s"] - _host_delay_s(r, s)) / r["predicted_latency_s"] - 1.0
           for r, s in rest]
    assert sum(abs(x) < 0.05 for x in net) >= 0.85 * len(net), (net, raw)
    # the median judged without the host's own delays too: raw medians went from -2.0 % (CI,
    # a two-frame bucket) to +2.05 % (5 Dec, this machine, the host's ~0.5 ms per message and
    # MEC computations of 0.2 ms taking 1-1.7 ms) with nets of -2.5 % and about +0.5 %
    assert abs(float(np.median(net))) < 0.02, (net, raw)
    assert abs(float(np.median(raw))) < 0.05, raw


def test_burst_trace_requests_match_the_simulator(tmp_path: Path) -> None:
    """Every delivery of a Mahimahi file in the first 0.1 s of each 0.5 s (11.6 Mbit/s open,
    nothing for 0.4 s), both directions: the 200 KB prefill upload spans bursts, each token's
    exchange waits for one. Before the downlink replayed its trace one delay late, the hosts got
    a minimum RTO above the 0.4 s gaps and really used cubic (a namespace could not leave the
    machine's BBR, whose bandwidth estimate fell to ~1 Mbit/s after a gap: uploads took 2-3 x
    the simulator's time) and an initial window of the queue, requests took up to 2.3 x the
    simulator's time."""
    trace = tmp_path / "burst.up"
    trace.write_text("".join(f"{500 * k + j}\n" for k in range(120) for j in range(1, 101)))
    # compute at the profile's medians (no jitter), as the simulator prices it: on this trace a
    # jittered computation that ends 1 ms late can miss a burst and wait 0.4 s for the next one
    # (measured with jitter: one of 17 requests +38 %, 0.3 ms past a burst's end)
    # and 5 tokens: with the profile's 4 (and with 3), every request's last token reply is
    # ready within ~2 ms of a burst's end in the simulator, so a host delay of 2 ms (the MEC
    # sending it 1.6-2.5 ms after its computation instead of 0.3 ms) sends it 0.4 s later:
    # measured (5 Dec, quiet machine) 7 of 72 requests +38 % with 4 tokens (four runs), 1 of
    # 40 -28 % with 3 (two), 0 of 85 off by more than 1 % with 5 (five runs).
    out = _run(tmp_path, trace, 25, "--jitter", "none", "--tokens", "5")
    link, pairs = _simulated(tmp_path, trace, out)
    rel = [_rel(r) for r, _ in pairs]  # the connection's first included (initial window)
    assert len(rel) >= 10, pairs
    # Every transfer against the trace from when it really started (host delays do not
    # count): within 5 ms + 5 %, or off by one whole closed stretch (0.4 s): a message that
    # reaches a burst's edge within the shaper's lag (median 0.02 ms, p95 8 ms) or the relay's
    # 0.4 ms of it goes in the other burst. Measured (5 Dec, this machine, 12 runs of 160-204
    # transfers): 96.9-100 % within 5 ms + 5 %, every other one 400.4-407.9 ms off.
    errs = [(e["t_end"] - due, due - e["t_start"]) for _rec, e, due in _sends(link, pairs)]
    close = [x for x in errs if abs(x[0]) <= 0.005 + 0.05 * x[1]]
    assert len(close) >= 0.95 * len(errs), errs
    assert all(abs(abs(x[0]) - 0.4) < 0.015 for x in errs if x not in close), errs
    # Requests: a flipped burst costs one +0.4 s (+38 %; -28 % when it comes early). Measured
    # (4 Dec, load 1.4-3.6, two runs) 40 of 40 within 1.4 %; 5 Dec on this machine, with MEC
    # computations taking 1-1.7 ms for 0.2 ms now and then, 14 of 16 and medians up to +1.4 %.
    assert sum(abs(x) < 0.05 for x in rel) >= 0.75 * len(rel), rel
    assert abs(float(np.median(rel))) < 0.02, rel
