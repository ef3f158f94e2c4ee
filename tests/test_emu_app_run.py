"""The ``emulator.run`` command: bad input is one line and a non-zero exit with nothing left
behind; a short loopback run (no root) writes complete, consistent records."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.synthetic import synthetic_profile, write_synthetic_pair
from profiler.schema import save_profile

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], env: dict[str, str] | None = None, timeout: float = 60,
         user: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [*(user or []), sys.executable, "-m", "emulator.run", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=env)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_synthetic_pair(tmp_path_factory.mktemp("profiles"))


def _one_error_line(res: subprocess.CompletedProcess[str], match: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("emulator: ")]
    errors = [ln for ln in lines if "note:" not in ln and "warning:" not in ln]
    assert len(errors) == 1, res.stderr
    assert match in errors[0], errors[0]
    assert "Traceback" not in res.stderr


def test_bad_inputs(tmp_path: Path, toy: tuple[Path, Path]) -> None:
    dev, mec = toy
    out = tmp_path / "out"
    base = ["--model", str(dev), "--policy", "offload", "--network", "loopback", "--out",
            str(out)]
    bad_trace = tmp_path / "bad.csv"
    bad_trace.write_text("time_s,mbps\n0,1\n1,banana\n")
    other = tmp_path / "other.json"
    save_profile(synthetic_profile(model="other", hw_class="mec"), other)
    cases = [
        (["--trace", str(bad_trace)], "bad.csv"),
        (["--devices", "0"], "--devices must be in [1, 200], got 0"),
        (["--rate", "-1"], "--rate must be in"),
        (["--mec-slots", "1000"], "--mec-slots must be in [1, 64]"),
        (["--mec-profile", str(other)], "is of model 'toy' but MEC profile is of 'other'"),
        (["--steps", "20"], "--steps needs a model with a 'unet' pass"),
        (["--policy", "gredy"], "Did you mean 'greedy'?"),
        (["--model", "gpt3"], "use one of gpt2, sd15"),
    ]
    for extra, match in cases:
        if "--mec-profile" not in extra:
            extra = [*extra, "--mec-profile", str(mec)]
        _one_error_line(_run([*base, *extra]), match)
        assert not out.exists()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root to drop to another user")
def test_not_root_and_missing_tools(tmp_path: Path, toy: tuple[Path, Path]) -> None:
    dev, mec = toy
    os.chmod(tmp_path, 0o755)
    out = tmp_path / "out"
    args = ["--model", str(dev), "--mec-profile", str(mec), "--policy", "offload",
            "--out", str(out)]
    env = {**os.environ, "HOME": "/tmp", "MPLCONFIGDIR": "/tmp"}
    # uid 65534 keeps one capability, reading and searching any directory, so that it can
    # reach the interpreter and the package in a clone under /root (mode 700); it is still
    # not root, which is what the run must notice
    res = _run(args, env=env, user=["setpriv", "--reuid=65534", "--regid=65534",
                                    "--clear-groups", "--inh-caps=+dac_read_search",
                                    "--ambient-caps=+dac_read_search"])
    _one_error_line(res, "run with sudo .venv/bin/python -m emulator.run")
    res = _run(args, env={**os.environ, "PATH": "/nonexistent"})
    _one_error_line(res, "install everything with bash scripts/setup.sh")
    assert not out.exists()


def test_loopback_run_records(tmp_path: Path, toy: tuple[Path, Path]) -> None:
    dev, mec = toy
    out = tmp_path / "run"
    res = _run(["--model", str(dev), "--mec-profile", str(mec), "--policy", "fixed:2",
                "--network", "loopback", "--devices", "2", "--duration", "1.5", "--rate", "4",
                "--seed", "7", "--out", str(out)])
    assert res.returncode == 0, res.stderr
    assert "requests done" in res.stderr  # live progress
    recs = [json.loads(x) for x in (out / "requests.jsonl").read_text().splitlines()]
    assert recs and {r["device"] for r in recs} == {0, 1}
    for r in recs:
        assert r["t_end"] - r["t_start"] == pytest.approx(r["latency_s"])
        assert r["splits"]["prefill"] == 2
        # split 2 of 4 for prefill and 4 decodes: each pass's cut goes up, each token down
        comps = [s for s in r["steps"] if s["kind"] == "compute"]
        assert [s["side"] for s in comps] == ["device", "mec"] * 5
        ups = [s["nbytes"] for s in r["steps"] if s["kind"] == "send" and s["side"] == "up"]
        assert ups == [200_000] + [3_072] * 4
        assert r["phases"]["download_bytes"] == 8 * 5 and len(r["token_times"]) == 5
        assert r["token_times"][-1] == pytest.approx(r["latency_s"])
        assert isinstance(r["predicted_latency_s"], float)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["requests"] == len(recs)
    assert summary["provenance"]["seed"] == 7
    assert len(summary["provenance"]["inputs"]["trace"]["sha256"]) == 64
    assert (out / "latency_timeline.png").stat().st_size > 0
    assert (out / "latency_cdf.png").stat().st_size > 0
    assert (out / "link.csv").exists()


README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_emulator_examples() -> list[str]:
    """The arguments of every ``sudo .venv/bin/python -m emulator.run ...`` line in README.md."""
    prefix = "sudo .venv/bin/python -m emulator.run"
    lines = [ln.strip() for ln in README.read_text().splitlines()]
    return [ln.split("#")[0][len(prefix):].strip() for ln in lines if ln.startswith(prefix)]


def test_readme_examples_parse() -> None:
    from emulator.run import build_parser

    examples = _readme_emulator_examples()
    assert len(examples) >= 6 and "" in examples  # the bare demo and the option examples
    for ex in examples:
        build_parser().parse_args(ex.split())
