"""Batch curves (``--batch-sizes``): the schema's batch_ms, interpolation, merge, show/curve."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from profiler.batch import check_batch_sizes, parse_batch_sizes, sum_vs_whole, with_batch
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

ROOT = Path(__file__).resolve().parents[1]


def _st(ms: float, runs: int = 5) -> LatencyStats:
    return LatencyStats(median=ms, p95=2 * ms, mean=ms, std=0.1 * ms, runs=runs)


def _pass(scale: float = 1.0, name: str = "decode") -> Pass:
    blocks = tuple(Block(f"b{i}", _st(10.0 * (i + 1) * scale), 100, 10) for i in range(2))
    return Pass(name, 4, blocks, _st(31.0 * scale), input_bytes=8, output_bytes=8)


def _batched() -> Pass:
    # batch 1: 10 + 20 (whole 31); batch 2: x1.5; batch 8: x4
    return with_batch(with_batch(_pass(), 2, _pass(1.5)), 8, _pass(4.0))


def test_measured_sizes_and_merge() -> None:
    p = _batched()
    assert p.batch_sizes == (1, 2, 8)
    assert p.whole_at(1) == p.whole and p.whole_at(8).median == 124.0
    assert p.blocks[1].latency_at(2).median == 30.0
    assert p.blocks[0].latency_at(8) == _st(40.0)


def test_between_measured_sizes_is_linear_and_marked() -> None:
    p = _batched()
    # batch 5 lies half way from 2 (whole 46.5) to 8 (124): 85.25 ms
    w = p.whole_at(5)
    assert w.median == pytest.approx(46.5 + 0.5 * (124.0 - 46.5))
    assert w.p95 == pytest.approx(2 * w.median) and w.runs == 0  # runs 0: interpolated
    assert p.blocks[0].latency_at(3).median == pytest.approx(15.0 + (40.0 - 15.0) / 6)


def test_above_the_largest_measured_is_refused() -> None:
    with pytest.raises(ProfileError, match=re.escape(
            "pass 'decode': batch size 16 is above the largest measured (1, 2, 8); profile it "
            "with `python -m profiler model ... --batch-sizes 1,2,8,16`")):
        _batched().whole_at(16)
    with pytest.raises(ProfileError, match=re.escape("block 'b0': batch size 2 is above the "
                                                     "largest measured (1)")):
        _pass().blocks[0].latency_at(2)
    with pytest.raises(ValueError, match="batch size must be >= 1"):
        _pass().whole_at(0)


def test_round_trip_and_old_files(tmp_path: Path) -> None:
    prof = Profile(ModelInfo("toy", "hand-made"), Hardware("mec-cpu", "cpu", None, 2, "ort"),
                   (_batched(), _pass(name="prefill")))
    f = tmp_path / "b.json"
    save_profile(prof, f)
    d = json.loads(f.read_text())
    assert d["schema"] == 2
    assert sorted(d["passes"][0]["batch_ms"]) == ["2", "8"]
    assert d["passes"][0]["blocks"][0]["batch_ms"]["8"]["median"] == 40.0
    assert "batch_ms" not in d["passes"][1]  # batch 1 only: no key, as before
    assert load_profile(f) == prof
    # a shipped profile without batch curves still loads: batch 1 only
    old = load_profile(ROOT / "profiles" / "gpt2-tiny.device.json")
    assert all(p.batch_sizes == (1,) for p in old.passes)


def test_loader_rejects_inconsistent_batches(tmp_path: Path) -> None:
    prof = Profile(ModelInfo("toy", "hand-made"), Hardware("mec-cpu", "cpu", None, 2, "ort"),
                   (_batched(),))
    d = prof.to_json()
    del d["passes"][0]["blocks"][1]["batch_ms"]["8"]
    f = tmp_path / "b.json"
    f.write_text(json.dumps(d))
    with pytest.raises(ProfileError, match=re.escape(
            "pass 'decode' blocks[1]: batch sizes [2] in 'batch_ms' differ from the pass's [2, 8]")):
        load_profile(f)
    d = prof.to_json()
    d["passes"][0]["batch_ms"]["1"] = d["passes"][0]["whole_ms"]
    f.write_text(json.dumps(d))
    with pytest.raises(ProfileError, match=re.escape("batch_ms: key '1' must be a batch size >= 2")):
        load_profile(f)


def test_batch_sizes_parsed_and_checked() -> None:
    assert parse_batch_sizes("8,1,2,4,2") == (1, 2, 4, 8)
    with pytest.raises(ProfileError, match=re.escape("must include 1")):
        parse_batch_sizes("2,4")
    with pytest.raises(ProfileError, match=re.escape("--batch-sizes '1,two'")):
        parse_batch_sizes("1,two")
    with pytest.raises(ProfileError, match=">= 1"):
        check_batch_sizes([0, 1])


def test_merge_needs_the_same_blocks() -> None:
    other = Pass("decode", 4, (Block("x", _st(1.0), 1, 1),), _st(1.0), 8, 8)
    with pytest.raises(ProfileError, match="the cut must not depend on the batch size"):
        with_batch(_pass(), 2, other)


def test_sum_vs_whole_line() -> None:
    assert sum_vs_whole(_batched(), 8) == ("whole 124.00 ms, sum of blocks 120.00 ms (-3.2%), "
                                           "15.50 ms per request")


def test_show_and_curve_print_the_batch_curve(tmp_path: Path) -> None:
    prof = Profile(ModelInfo("toy", "hand-made"), Hardware("mec-cpu", "cpu", None, 2, "ort"),
                   (_batched(),))
    f = tmp_path / "b.json"
    save_profile(prof, f)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cli(*a: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "profiler", *a], capture_output=True,
                              text=True, env=env, timeout=120)

    r = cli("show", str(f))
    assert r.returncode == 0, r.stderr
    assert re.search(r"\n\s+8\s+124\.00\s+248\.00\s+5\s+15\.50\s+4\.00\s+120\.00\s+-3\.2%", r.stdout)
    r = cli("curve", str(f), "--batch", "-o", str(tmp_path / "c.png"))
    assert r.returncode == 0, r.stderr
    assert "pass decode x4" in r.stdout and (tmp_path / "c.png").stat().st_size > 1000
    r = cli("curve", str(f))
    assert r.returncode == 1 and "needs --bandwidth-mbps (or --batch" in r.stderr
