"""Split-latency curve and profile table on a hand-made profile (no ONNX needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from profiler.report import format_curve, format_table, split_curve
from profiler.schema import (
    Block,
    Hardware,
    LatencyStats,
    ModelInfo,
    Pass,
    Profile,
    ProfileError,
    load_profile,
    save_profile,
)


def _stats(ms: float) -> LatencyStats:
    return LatencyStats(median=ms, p95=ms, mean=ms, std=0.0, runs=3)


def _profile(scale: float, hw: str = "device") -> Profile:
    blocks = tuple(Block(f"b{i}", _stats(ms * scale), out, 100, cold_ms=2 * ms)
                   for i, (ms, out) in enumerate([(10, 1000), (20, 250), (30, 8)]))
    p = Pass("fwd", 4, blocks, _stats(60 * scale), input_bytes=5000, output_bytes=8,
             cold_ms=99.0, note="n", chain_max_error=0.0)
    return Profile(ModelInfo("toy", "hand-made"), Hardware(hw, "cpu", None, 1, "ort"), (p,))


def test_curve_matches_hand_computation() -> None:
    dev, mec = _profile(1.0), _profile(0.1, "mec")
    bw = 8.0  # Mbit/s: 1000 bytes take 1 ms
    c = split_curve(dev.passes[0], mec.passes[0], bw, rtt_ms=5.0)
    assert [s.k for s in c] == [0, 1, 2, 3]
    # k=0: upload input 5000 B (5 ms) + output 8 B (0.008 ms) + rtt 5 + mec 6 ms
    assert c[0].total_ms == pytest.approx(5 + 0.008 + 5 + 6)
    # k=1: device 10 + upload 1000 B (1 ms) + 0.008 + 5 + mec (2 + 3)
    assert c[1].total_ms == pytest.approx(10 + 1 + 0.008 + 5 + 5)
    assert c[2].up_bytes == 250 and c[2].mec_ms == pytest.approx(3)
    # k=N: all local, nothing on the link
    assert c[3].total_ms == 60 and c[3].network_ms == 0 and c[3].up_bytes == 0
    text = format_curve(dev, mec, bw, 5.0)
    assert "<- best" in text and "all local 240.0 ms" in text


def test_curve_rejects_bad_bandwidth() -> None:
    p = _profile(1.0).passes[0]
    with pytest.raises(ProfileError, match="bandwidth"):
        split_curve(p, p, 0.0)


def test_extended_fields_round_trip_and_old_files_still_load(tmp_path: Path) -> None:
    prof = _profile(1.0)
    f = tmp_path / "p.json"
    save_profile(prof, f)
    assert load_profile(f) == prof
    data = json.loads(f.read_text())
    for k in ("cold_ms", "note", "chain_max_error"):
        del data["passes"][0][k]
    for b in data["passes"][0]["blocks"]:
        del b["cold_ms"]
    f.write_text(json.dumps(data))
    old = load_profile(f)
    assert old.passes[0].cold_ms is None and old.passes[0].blocks[0].cold_ms is None
    assert "pass fwd x4" in format_table(old)
