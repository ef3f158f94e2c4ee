"""``python -m traces``: every subcommand, its help, and clean failures on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from traces import DATA_DIR, load_trace
from traces.cli import main

REPO = Path(__file__).resolve().parents[1]
CELL = DATA_DIR / "cellular_120s.csv"


@pytest.mark.parametrize("command", ["show", "convert", "synth", "plot"])
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: python -m traces {command}" in out and len(out.splitlines()) > 5


def test_show_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(CELL), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    tr = load_trace(CELL)
    assert info["duration_s"] == 120.0
    assert info["mean_mbps"] == pytest.approx(tr.mean_bps() / 1e6, abs=1e-6)
    rates = sorted(tr.rates_bps / 1e6)  # 1 s segments: the 5th percentile is the 6th smallest
    assert info["p5_mbps"] == pytest.approx(rates[5]) and info["outage_fraction"] == 0.0


def test_show_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(CELL)]) == 0
    out = capsys.readouterr().out
    for key in ("duration_s", "mean_mbps", "median_mbps", "p5_mbps", "p95_mbps", "outage_fraction"):
        assert key in out


def test_convert_both_ways_with_scale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mm = tmp_path / "cell.down"
    assert main(["convert", str(CELL), str(mm), "--to", "mahimahi", "--scale", "0.5"]) == 0
    back = tmp_path / "cell.csv"
    assert main(["convert", str(mm), str(back), "--to", "csv"]) == 0
    want = load_trace(CELL).mean_bps() / 2
    # Mahimahi quantises to whole packets (1448 B of goodput each) per period
    assert load_trace(back).mean_bps() == pytest.approx(want, abs=1448 * 8 / 120)
    assert "wrote" in capsys.readouterr().out


def test_synth_is_reproducible(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    for out in (a, b):
        assert main(["synth", "mmwave", "--seconds", "5", "--seed", "3", str(out)]) == 0
    assert a.read_bytes() == b.read_bytes()
    assert main(["synth", "step", "--seconds", "4", "--levels-mbps", "1,9", "--step-s", "1",
                 str(a)]) == 0
    assert load_trace(a).rates_bps.tolist() == [1e6, 9e6, 1e6, 9e6]


def test_plot_writes_png(tmp_path: Path) -> None:
    png = tmp_path / "cell.png"
    assert main(["plot", str(CELL), "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("content", "args"),
    [
        (b"", ["show"]),
        (b"\x00\x01\x02garbage", ["show"]),
        (b"0\n7\n3\n", ["convert", "--to", "csv"]),
        (b"0 1\n1 nan\n", ["show", "--json"]),
        (b"0 0\n1 0\n", ["convert", "--to", "mahimahi"]),  # all zero: no transfer finishes
        (b"0 0\n1 0\n", ["show"]),
    ],
)
def test_bad_input_is_one_line_and_exit_1(
    tmp_path: Path, content: bytes, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.down" if content.startswith(b"0\n") else tmp_path / "bad.log"
    path.write_bytes(content)
    argv = [args[0], str(path)]
    if args[0] == "convert":
        argv.append(str(tmp_path / "out.any"))
    assert main(argv + args[1:]) == 1
    err = capsys.readouterr().err
    error = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(error) == 1 and path.name in error[0] and "Traceback" not in err


def test_module_entry_point_exit_status(tmp_path: Path) -> None:
    bad = tmp_path / "x.down"
    bad.write_text("5\n1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "traces", "show", str(bad)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {bad}:2: timestamps must be non-decreasing (1 after 5)"
