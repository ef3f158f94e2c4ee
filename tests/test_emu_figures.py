"""Service latency and response time, named and shown; passive link samples; probes charged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from emulator.figures import figures, progress_text
from emulator.observe import LinkEstimator
from emulator.plots import plot_timeline


def _rec(device: int, t_arrival: float, t_start: float, t_end: float,
         probe: dict[str, float] | None = None, up: int = 1280) -> dict[str, Any]:
    return {"device": device, "policy": "default", "t_arrival": t_arrival, "t_start": t_start,
            "t_end": t_end, "latency_s": t_end - t_start,
            "phases": {"upload_bytes": up, "download_bytes": 8},
            **({"probe": probe} if probe is not None else {})}


def test_small_transfers_measure_a_slow_link_passively() -> None:
    est = LinkEstimator(min_sample_bytes=16_384)
    est.add_rtt(0.020)  # 10 ms one way
    # a 1.3 KB GPT-2 input over 0.84 Mbit/s: 12.4 ms on the wire + 10 ms propagation
    est.add_upload(1300, 1300 * 8 / 0.84e6 + 0.010, 1.0)
    assert est.throughput_bps() == pytest.approx(0.84e6, rel=1e-6)
    assert not est.needs_probe(2.0)
    # the same bytes over 50 Mbit/s: 0.2 ms on the wire, hidden in the delay: no sample
    fast = LinkEstimator(min_sample_bytes=16_384)
    fast.add_rtt(0.020)
    fast.add_upload(1300, 1300 * 8 / 50e6 + 0.010, 1.0)
    assert fast.throughput_bps() == 0.0 and fast.needs_probe(5.0)


def test_probe_is_sized_to_the_estimate_and_charged_once() -> None:
    est = LinkEstimator(probe_bytes=32_768)
    assert est.probe_size() == 32_768  # nothing known yet
    est.add_rtt(0.020)
    est.add_upload(20_000, 20_000 * 8 / 0.84e6 + 0.010, 0.0)
    assert est.probe_size() == 4096  # 0.84 Mbit/s x 10 ms = 1 KB: the 4 KiB floor
    est.charge_probe(4096, 0.05)
    assert est.take_probe() == {"bytes": 4096, "s": 0.05}
    assert est.take_probe() == {"bytes": 0, "s": 0.0}


def test_summary_figures_and_progress_name_both() -> None:
    recs = [_rec(0, 0.0, 1.0, 2.0, {"bytes": 4096, "s": 0.05}), _rec(1, 0.5, 0.5, 1.0)]
    f = figures(recs)
    assert f["waiting"]["mean_s"] == pytest.approx(0.5)
    assert f["probe"]["requests"] == 1 and f["probe"]["bytes"] == 4096
    assert f["probe"]["share_of_uplink_bytes"] == pytest.approx(4096 / (4096 + 2560))
    assert "arrival to result" in f["definitions"]["response"]
    assert progress_text(recs) == "mean service   0.750 s  response   1.250 s"


def test_timeline_compares_capacity_and_goodput_per_window(tmp_path: Path) -> None:
    recs = [_rec(0, 0.0, 1.0, 2.0), _rec(1, 0.5, 0.5, 1.0)]
    rows = [{"t_s": float(t), "device": 0, "direction": "up", "capacity_mbps": 5.0,
             "goodput_mbps": 0.1} for t in range(4)]
    labels = plot_timeline(tmp_path / "t.png", recs, lambda t: 5e6, 4.0, rows)
    assert "capacity, device 0 (mean per 1 s window)" in labels
    assert "goodput the application sent, device 0 (per 1 s window)" in labels
    assert {"device 0 service latency", "device 0 response time"} <= set(labels)
    labels = plot_timeline(tmp_path / "t.png", recs, lambda t: 5e6, 4.0, [])
    assert "trace capacity, device 0 (the trace's steps)" in labels
