"""Scale (issue 13): a request in flight when a run stops is recorded as unfinished, not lost;
high-rate mode scales payloads and the link together and says so in every output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.synthetic import write_synthetic_pair

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emulator.run", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_synthetic_pair(tmp_path_factory.mktemp("profiles"))


def test_requests_in_flight_at_the_end_are_recorded_as_unfinished(
        tmp_path: Path, toy: tuple[Path, Path]) -> None:
    dev, mec = toy
    out = tmp_path / "run"
    # closed loop, each request far longer than the run: every device is stopped mid-request
    res = _run(["--model", str(dev), "--mec-profile", str(mec), "--policy", "offload",
                "--network", "loopback", "--devices", "3", "--duration", "0.5", "--grace", "0",
                "--closed-loop", "--repeat", "decode=3000", "--mec-speedup", "1", "--out", str(out), "--quiet"])
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"] == 0
    assert summary["unfinished"] == 3 and summary["lost"] == 0
    got = sorted((u["device"], u["request"]) for u in summary["unfinished_requests"])
    assert got == [(0, 1), (1, 1), (2, 1)]
    for u in summary["unfinished_requests"]:
        assert isinstance(u["split"], int) and u["t_stopped"] >= u["t_start"] >= u["t_arrival"]
    assert "(3 unfinished when the run stopped)" in res.stderr.splitlines()[-1]
