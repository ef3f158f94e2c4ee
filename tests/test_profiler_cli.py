"""The command line: bad input gives one clear line and a non-zero exit; show and curve work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_profiler_onnx import TinyUNet, export_dynamic

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "profiles" / "gpt2-tiny.device.json"
TINY_MEC = ROOT / "profiles" / "gpt2-tiny.mec-cpu.json"


@pytest.fixture(scope="module")
def unet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_dynamic(TinyUNet(), tmp_path_factory.mktemp("unet") / "tiny_unet.onnx")


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "profiler", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def one_error_line(r: subprocess.CompletedProcess[str], *words: str) -> str:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("profiler: error: ")
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def test_not_onnx(tmp_path: Path) -> None:
    f = tmp_path / "notes.onnx"
    f.write_text("this is not a model\n" * 10)
    one_error_line(run("profile", str(f), "--out", str(tmp_path / "o.json")), "notes.onnx",
                   "ONNX")


@pytest.mark.onnx
def test_truncated_model(tmp_path: Path, unet_file: Path) -> None:
    data = unet_file.read_bytes()
    f = tmp_path / "cut.onnx"
    f.write_bytes(data[: len(data) // 2])
    one_error_line(run("profile", str(f), "--out", str(tmp_path / "o.json")), "cut.onnx")


@pytest.mark.onnx
def test_missing_input_shape(tmp_path: Path, unet_file: Path) -> None:
    line = one_error_line(run("profile", str(unet_file), "--out", str(tmp_path / "o.json")),
                          "'x'", "--input x=")
    assert "dynamic" in line


@pytest.mark.onnx
def test_wrong_input_rank(tmp_path: Path, unet_file: Path) -> None:
    one_error_line(run("profile", str(unet_file), "--input", "x=1,3,16",
                       "--out", str(tmp_path / "o.json")), "rank 4")


def test_unknown_model(tmp_path: Path) -> None:
    one_error_line(run("model", "gpt3", "--out", str(tmp_path / "o.json")), "'gpt3'",
                   "Did you mean")


def test_unwritable_output(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    target = blocker / "o.json"  # its parent is a file: unwritable even for root
    one_error_line(run("model", "gpt2-tiny", "--out", str(target)), str(target))


def test_missing_profile_file(tmp_path: Path) -> None:
    one_error_line(run("show", str(tmp_path / "nope.json")), "nope.json", "not found")


def test_zoo_lists_every_model() -> None:
    r = run("zoo")
    assert r.returncode == 0
    for name in ("gpt2", "gpt2-tiny", "sd15", "sd15-tiny"):
        assert any(line.split()[0] == name for line in r.stdout.splitlines())


def test_help_on_every_command() -> None:
    for cmd in ([], ["zoo"], ["model"], ["profile"], ["show"], ["curve"]):
        r = run(*cmd, "--help")
        assert r.returncode == 0 and "usage:" in r.stdout


def test_show_and_curve_on_shipped_profile(tmp_path: Path) -> None:
    r = run("show", str(TINY))
    assert r.returncode == 0 and "pass prefill" in r.stdout and "h.1" in r.stdout
    png = tmp_path / "c.png"
    r = run("curve", str(TINY), "--mec", str(TINY_MEC), "--bandwidth-mbps", "10",
            "--rtt-ms", "20", "-o", str(png))
    assert r.returncode == 0, r.stderr
    assert "<- best" in r.stdout and png.stat().st_size > 1000


def test_curve_mec_speedup_divides_the_mec_times() -> None:
    gpt2, gpt2_mec = ROOT / "profiles" / "gpt2.device.json", ROOT / "profiles" / "gpt2.mec-cpu.json"
    best: dict[str, list[str]] = {}
    for speedup in ("1", "10"):
        r = run("curve", str(gpt2), "--mec", str(gpt2_mec), "--bandwidth-mbps", "20",
                "--rtt-ms", "20", "--mec-speedup", speedup)
        assert r.returncode == 0, r.stderr
        best[speedup] = [ln.split()[0] for ln in r.stdout.splitlines() if "<- best" in ln]
    # the CPU MEC profile is barely faster than the device: decode stays local; ten times
    # faster, every pass is best fully offloaded
    assert best["1"][-1] == "14" and best["10"] == ["0", "0"]
    one_error_line(run("curve", str(gpt2), "--bandwidth-mbps", "20", "--mec-speedup", "0"),
                   "--mec-speedup must be > 0")


@pytest.mark.onnx
def test_profile_zero_blocks_is_an_error(tmp_path: Path, unet_file: Path) -> None:
    one_error_line(run("profile", str(unet_file), "--input", "x=1,3,16,16", "--blocks", "0",
                       "--out", str(tmp_path / "o.json")), "--blocks must be >= 1, got 0")
    assert not (tmp_path / "o.json").exists()
