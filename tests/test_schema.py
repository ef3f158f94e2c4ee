"""The profile file contract (profiler/schema.py): round trip, validation messages, split bytes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from profiler.schema import (
    SCHEMA_VERSION,
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
                         weight_bytes=4096, state_bytes_per_token=100 * i, state_bytes_fixed=7)
                   for i in range(3))
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
    assert back.path == f and back.has_state and back.schema == 2
    d = json.loads(f.read_text())
    assert d["schema"] == 2 == SCHEMA_VERSION
    assert d["passes"][0]["blocks"][2]["state"] == {"per_token": 200, "fixed": 7}
    # blocks [1, 3) at 10 tokens: (7 + 100 * 10) + (7 + 200 * 10)
    assert back.passes[0].state_bytes(1, 3, 10) == 3014
    assert back.passes[0].state_bytes(0, 0, 10) == 0


def _schema1(tmp_path: Path, source: str = "test") -> Path:
    d = _profile().to_json()
    d["schema"] = 1
    d["model"]["source"] = source
    d["command"] = "python -m profiler model toy --out old.json"
    for b in d["passes"][0]["blocks"]:
        del b["state"]
    f = tmp_path / "old.json"
    f.write_text(json.dumps(d))
    return f


def test_schema1_loads_without_state(tmp_path: Path) -> None:
    f = _schema1(tmp_path, source="profiler/zoo/toy.py: ...")
    prof = load_profile(f)
    assert prof.schema == 1 and not prof.has_state
    b = prof.passes[0].blocks[0]
    assert (b.state_bytes_per_token, b.state_bytes_fixed) == (None, None)
    assert b.latency == _stats(10.0)  # everything else as before
    with pytest.raises(ProfileError, match=re.escape(
            f"pass 'fwd' block 'b0': no persistent state bytes: {f} is a schema-1 profile; "
            f"add them without re-timing: python -m profiler upgrade {f}")):
        prof.passes[0].state_bytes(0, 3, 5)
    with pytest.raises(ProfileError, match="upgrade"):  # never written back without state
        save_profile(prof, tmp_path / "again.json")


def test_schema1_outside_the_zoo_says_profile_again(tmp_path: Path) -> None:
    prof = load_profile(_schema1(tmp_path))
    with pytest.raises(ProfileError, match=re.escape(
            "of a model outside the zoo; profile it again: python -m profiler model toy "
            "--out old.json")):
        prof.passes[0].state_bytes(0, 1, 1)


def test_schema2_needs_state_on_every_block(tmp_path: Path) -> None:
    d = _profile().to_json()
    del d["passes"][0]["blocks"][1]["state"]
    f = tmp_path / "s2.json"
    f.write_text(json.dumps(d))
    with pytest.raises(ProfileError, match=re.escape("pass 'fwd' blocks[1]: missing field 'state'")):
        load_profile(f)
    d = _profile().to_json()
    d["passes"][0]["blocks"][0]["state"]["per_token"] = -3
    f.write_text(json.dumps(d))
    with pytest.raises(ProfileError, match=re.escape("blocks[0] state: field 'per_token' must be >= 0")):
        load_profile(f)


def test_state_range_checked() -> None:
    with pytest.raises(ValueError, match=re.escape("block range [2, 4) out of range 0..3")):
        _profile().passes[0].state_bytes(2, 4, 1)


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
    with pytest.raises(ProfileError, match=re.escape(
            "s.json: schema 7 is not supported (this version reads schema 1, 2) (written by a "
            "newer version of the profiler; update this checkout)")):
        load_profile(f)
    d["schema"] = 0
    f.write_text(json.dumps(d))
    with pytest.raises(ProfileError, match=re.escape("schema 0 is not supported")):
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
