"""The profile file contract (profiler/schema.py): round trip, validation messages, split bytes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from profiler.schema import (
    Block,
    Hardware,
    LatencyStats,
    ModelInfo,
    Pass,
    Profile,
    ProfileError,
    check_compatible,
    load_profile,
    save_profile,
)


def _stats(ms: float) -> LatencyStats:
    return LatencyStats(median=ms, p95=ms * 1.1, mean=ms, std=ms * 0.01, runs=5)


def _profile(name: str = "toy", hw: str = "device") -> Profile:
    blocks = tuple(Block(name=f"b{i}", latency=_stats(10.0 + i), out_bytes=1000 * (i + 1),
                         weight_bytes=4096) for i in range(3))
    p = Pass(name="fwd", repeat=4, blocks=blocks, whole=_stats(33.0), input_bytes=512,
             output_bytes=8)
    return Profile(model=ModelInfo(name=name, source="test", parameters={"P": 1}),
                   hardware=Hardware(hw_class=hw, cpu="cpu", gpu=None, threads=1,
                                     backend="onnxruntime-cpu"),
                   passes=(p,))


def test_round_trip(tmp_path: Path) -> None:
    prof = _profile()
    f = tmp_path / "sub" / "p.json"
    save_profile(prof, f)
    back = load_profile(f)
    assert back == prof
    assert json.loads(f.read_text())["schema"] == 1


def test_stats_from_samples_match_numpy_free_computation() -> None:
    s = LatencyStats.from_samples([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s.median == 3.0
    assert s.mean == pytest.approx(110.0 / 5)
    # sample std by hand
    m = 22.0
    var = sum((x - m) ** 2 for x in [1, 2, 3, 4, 100]) / 4
    assert s.std == pytest.approx(var ** 0.5)
    assert s.runs == 5


@pytest.mark.parametrize(("k", "up", "down"), [(0, 512, 8), (1, 1000, 8), (2, 2000, 8), (3, 0, 0)])
def test_split_bytes(k: int, up: int, down: int) -> None:
    p = _profile().passes[0]
    assert p.upload_bytes(k) == up
    assert p.download_bytes(k) == down


def test_split_out_of_range() -> None:
    with pytest.raises(ValueError, match=re.escape("out of range 0..3")):
        _profile().passes[0].upload_bytes(4)


def test_missing_field_is_named(tmp_path: Path) -> None:
    d = _profile().to_json()
    del d["passes"][0]["blocks"][1]["out_bytes"]
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(d))
    with pytest.raises(ProfileError, match=re.escape("pass 'fwd' blocks[1]: missing field 'out_bytes'")):
        load_profile(f)


def test_wrong_schema_and_bad_json(tmp_path: Path) -> None:
    d = _profile().to_json()
    d["schema"] = 7
    f = tmp_path / "s.json"
    f.write_text(json.dumps(d))
    with pytest.raises(ProfileError, match="schema 7 is not supported"):
        load_profile(f)
    f.write_text('{"schema": 1,\n "model": ')
    with pytest.raises(ProfileError, match=r"s\.json:2: not valid JSON"):
        load_profile(f)
    with pytest.raises(ProfileError, match="not found"):
        load_profile(tmp_path / "nope.json")


def test_negative_latency_rejected(tmp_path: Path) -> None:
    d = _profile().to_json()
    d["passes"][0]["blocks"][0]["latency_ms"]["median"] = -1
    f = tmp_path / "n.json"
    f.write_text(json.dumps(d))
    with pytest.raises(ProfileError, match="'median' must be a finite number >= 0"):
        load_profile(f)


def test_compatibility() -> None:
    check_compatible(_profile(hw="device"), _profile(hw="mec"))
    with pytest.raises(ProfileError, match="model 'toy' but MEC profile is of 'other'"):
        check_compatible(_profile(), _profile(name="other"))
