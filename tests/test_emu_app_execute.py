"""Execute mode: tensor framing, and a split run whose outputs equal local execution."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emulator.errors import EmulatorError, ProtocolError
from emulator.execute import decode_tensors, encode_tensors, find_pieces_dir
from profiler.schema import load_profile

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "profiles" / "gpt2-tiny.device.json"


def test_tensor_round_trip_and_validation() -> None:
    ts = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "ids": np.array([[1, 2]]),
          "empty": np.zeros((0, 4), dtype=np.float16)}
    descs, payload = encode_tensors(ts)
    got = decode_tensors(descs, payload)
    assert list(got) == ["a", "ids", "empty"]
    for k, v in ts.items():
        assert got[k].dtype == v.dtype and np.array_equal(got[k], v)
    with pytest.raises(ProtocolError, match="bytes beyond its tensors"):
        decode_tensors(descs, payload + b"x")
    with pytest.raises(ProtocolError, match="past the payload's end"):
        decode_tensors(descs, payload[:-20])
    with pytest.raises(ProtocolError, match="bad dtype 'object'"):
        decode_tensors([{"name": "x", "dtype": "object", "shape": [1]}], b"12345678")
    with pytest.raises(EmulatorError, match="unsupported dtype"):
        encode_tensors({"c": np.zeros(2, dtype=np.complex64)})


def _pieces_or_skip() -> None:
    if not TINY.is_file():
        pytest.skip("profiles/gpt2-tiny.device.json is missing")
    try:
        find_pieces_dir(load_profile(TINY))
    except EmulatorError:
        pytest.skip("no exported gpt2-tiny pieces (python -m profiler model gpt2-tiny)")


@pytest.mark.onnx
def test_split_execution_equals_local(tmp_path: Path) -> None:
    _pieces_or_skip()
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "emulator.run", "--network", "loopback", "--model", "gpt2-tiny",
         "--compute", "execute", "--policy", "fixed:2", "--devices", "1", "--closed-loop",
         "--duration", "1.5", "--quiet", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    check = summary["execute_check"]
    assert check["failed"] == 0 and check["passes_checked"] >= 9
    rec = json.loads((out / "requests.jsonl").read_text().splitlines()[0])
    assert rec["compute"] == "execute" and rec["check"]["ok"]
    # split 2 of 4 every pass: the prefill's cut and every decode's cut go up as real tensors,
    # and each token the MEC computed comes down and is checked (1 prefill + 8 decodes)
    assert rec["check"]["passes_checked"] == 9
    ups = [s for s in rec["steps"] if s["kind"] == "send" and s["side"] == "up"]
    assert [s["what"] for s in ups] == ["cut"] * 9
