"""Persistent state per block (schema 2): zoo values by hand, the graph's past inputs, upgrade."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from profiler.build import _block_state, _past_inputs
from profiler.cut import Piece
from profiler.schema import ProfileError, load_profile
from profiler.zoo import MODELS

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted((ROOT / "profiles").glob("*.json"))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "profiler", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120)


def test_gpt2_small_kv_cache_per_token_is_the_hand_value() -> None:
    # PLANS.md: 12 layers x 2 (keys, values) x 768 x 4 B (fp32) = 73728 B = 72 KiB per token
    prof = load_profile(ROOT / "profiles" / "gpt2.mec-cpu.json")
    for name in ("prefill", "decode"):
        p = prof.pass_named(name)
        assert p.state_bytes(0, p.n_blocks, 1) == 12 * 2 * 768 * 4 == 73728
        assert p.state_bytes(0, p.n_blocks, 0) == 0
        assert [b.state_bytes_per_token for b in p.blocks] == [0] + [6144] * 12 + [0]
    # PLANS.md: kv(P) at P = 128 is 9.4 MB
    assert prof.pass_named("decode").state_bytes(0, 14, 128) == 9_437_184
    # a split at k = 5 moves the caches of layers h.4 .. h.11 (8 layers) at 144 tokens
    assert prof.pass_named("decode").state_bytes(5, 14, 144) == 8 * 6144 * 144


def test_sd_blocks_hold_no_state() -> None:
    prof = load_profile(ROOT / "profiles" / "sd15.mec-cpu.json")
    assert prof.has_state
    assert all(p.state_bytes(0, p.n_blocks, 1000) == 0 for p in prof.passes)


@pytest.mark.parametrize("path", PROFILES, ids=[p.name for p in PROFILES])
def test_shipped_profiles_are_schema_2(path: Path) -> None:
    prof = load_profile(path)
    assert prof.schema == 2 and prof.has_state


def test_zoo_declares_what_the_graph_inputs_hold() -> None:
    # the decode pass's past keys/values, read by each layer's piece, give the declared state
    z = MODELS["gpt2-tiny"]
    decode = next(s for s in z.build(z.defaults) if s.name == "decode")
    feeds = {n: x.numpy() for n, x in zip(decode.input_names, decode.inputs, strict=True)}
    pieces = [Piece(n, Path(n), tuple(ins), (), (), 0) for n, ins in
              [("embed", ["input_ids"]), ("h.0", ["x", "past_key.0", "past_value.0"]),
               ("h.1", ["x", "past_key.1", "past_value.1"]), ("head", ["x"])]]
    declared = z.state(z.defaults)["decode"]
    got = _block_state("decode", pieces, feeds, decode.past_inputs, declared)
    assert got == {"embed": (0, 0), "h.0": (6144, 0), "h.1": (6144, 0), "head": (0, 0)}
    assert _block_state("decode", pieces, feeds, decode.past_inputs, None) == got
    wrong = {**declared, "h.1": (3072, 0)}
    with pytest.raises(ProfileError, match=re.escape(
            "block 'h.1': the graph's past inputs hold 6144 B per token + 0 B, the zoo "
            "declares 3072 + 0")):
        _block_state("decode", pieces, feeds, decode.past_inputs, wrong)


def test_third_party_past_inputs_found_by_name_and_length_dimension() -> None:
    declared: dict[str, list[int | str] | None] = {
        "input_ids": ["batch", "seq"],
        "past_key_values.0.key": ["batch", 12, "past_sequence_length", 64],
        "conv_state": ["batch", 16],
        "x": [1, 3, 224, 224]}
    assert _past_inputs(declared) == {"past_key_values.0.key": 2, "conv_state": None}
    pieces = [Piece("a", Path("a"), ("past_key_values.0.key", "conv_state"), (), (), 0)]
    feeds = {"past_key_values.0.key": np.zeros((1, 12, 10, 64), np.float32),
             "conv_state": np.zeros((1, 16), np.float32)}
    assert _block_state("p", pieces, feeds, _past_inputs(declared), None) == {
        "a": (12 * 64 * 4, 16 * 4)}


def test_upgrade_reproduces_the_shipped_state(tmp_path: Path) -> None:
    shipped = ROOT / "profiles" / "gpt2-tiny.mec-cpu.json"
    d = json.loads(shipped.read_text())
    d["schema"] = 1
    d["command"] = d["command"].split("  # ")[0]
    for p in d["passes"]:
        for b in p["blocks"]:
            del b["state"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(d))
    assert not load_profile(old).has_state
    r = _cli("upgrade", str(old), "--out", str(tmp_path / "new.json"))
    assert r.returncode == 0, r.stderr
    new = load_profile(tmp_path / "new.json")
    want = load_profile(shipped)
    assert new.passes == want.passes and new.hardware == want.hardware  # timings, state
    assert "without re-timing by: python -m profiler upgrade" in new.command
    r = _cli("upgrade", str(tmp_path / "new.json"))
    assert r.returncode == 0 and "nothing to do" in r.stdout
    r = _cli("show", str(old))
    assert r.returncode == 0
    assert "persistent state unknown: pass 'prefill' block 'embed'" in r.stdout
    assert f"python -m profiler upgrade {old}" in r.stdout


def test_upgrade_refuses_a_model_outside_the_zoo(tmp_path: Path) -> None:
    d = json.loads((ROOT / "profiles" / "gpt2-tiny.device.json").read_text())
    d["schema"], d["model"]["name"], d["model"]["source"] = 1, "mynet", "ONNX file mynet.onnx"
    for p in d["passes"]:
        for b in p["blocks"]:
            del b["state"]
    f = tmp_path / "mynet.json"
    f.write_text(json.dumps(d))
    r = _cli("upgrade", str(f))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a zoo model" in lines[0] and "mynet.json" in lines[0]


def test_show_prints_state() -> None:
    r = _cli("show", str(ROOT / "profiles" / "gpt2.device.json"))
    assert r.returncode == 0
    assert "persistent state (all blocks): 72.0 KiB per token + 0 B fixed" in r.stdout
    assert "state/token" in r.stdout
