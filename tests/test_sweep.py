"""Sweeps (``agent.sweep``, ``emulator.sweep``): the grid, the confidence intervals, resuming
without Ray, a Ray address that does not answer, and (slow) a real sweep through Ray on this
machine, resumed, and interrupted by Ctrl-C with nothing left behind."""

from __future__ import annotations

import csv
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent._sweep import _check_address, make_cells, run_sweep, summarise_rows
from agent.errors import AgentError

ROOT = Path(__file__).resolve().parent.parent
SCEN = ROOT / "scenarios"


def test_the_grid_is_scenarios_x_policies_x_seeds() -> None:
    cells = make_cells([str(SCEN / "demo.toml"), str(SCEN / "lte-8.toml")], "local,offload,greedy",
                       [0, 1, 2])
    assert len(cells) == 18
    assert len({c.key() for c in cells}) == 18
    assert {c.scenario for c in cells} == {"demo", "lte-8"}


def test_two_scenarios_with_one_name_are_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text('name = "same"\n')
    b.write_text('name = "same"\n')
    with pytest.raises(AgentError, match="scenario name 'same' is also the name of"):
        make_cells([str(a), str(b)], "local", [0])


def test_confidence_interval_is_students_t_over_seeds() -> None:
    rows = [{"scenario": "s", "policy": "p", "status": "ok", "mean_s": str(v)}
            for v in (1.0, 2.0, 3.0)]
    rows.append({"scenario": "s", "policy": "p", "status": "failed", "mean_s": ""})
    (d,) = summarise_rows(rows, ["mean_s"])
    assert d["seeds"] == 3 and d["mean_s"] == 2.0
    assert d["mean_s_ci95"] == pytest.approx(4.303 * 1.0 / math.sqrt(3))


def test_a_finished_sweep_is_summarised_again_without_ray(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cells = make_cells([str(SCEN / "demo.toml")], "local,offload", [0, 1])
    cols = ["scenario", "policy", "seed", "scenario_sha256", "overrides", "scenario_file",
            "status", "mean_s", "error"]
    with (tmp_path / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for i, c in enumerate(cells):
            w.writerow({**c.__dict__, "status": "ok", "mean_s": 1.0 + i, "error": ""})
    monkeypatch.setitem(sys.modules, "ray", None)  # importing ray would fail

    def never(*a: object) -> dict[str, object]:
        raise AssertionError("no run should start")

    rc = run_sweep(cells, never, [], tmp_path, ["scenario_file", "status", "mean_s", "error"],
                   [("mean_s", "mean (s)")], prog="test", address=None, num_cpus=None)
    assert rc == 0
    assert (tmp_path / "comparison.png").stat().st_size > 0
    with (tmp_path / "summary.csv").open() as f:
        summ = {r["policy"]: r for r in csv.DictReader(f)}
    assert float(summ["local"]["mean_s"]) == 1.5 and summ["local"]["seeds"] == "2"


def test_a_ray_address_that_does_not_answer_is_one_line() -> None:
    with pytest.raises(AgentError, match=r"^no Ray cluster answers at 127\.0\.0\.1:1 "):
        _check_address("127.0.0.1:1")
    with pytest.raises(AgentError, match="use HOST:PORT"):
        _check_address("nonsense")
    r = subprocess.run([sys.executable, "-m", "agent.sweep", "--scenarios", str(SCEN),
                        "--out", "/nonexistent-dir/never", "--address", "127.0.0.1:1"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("agent.sweep: error: ") and "\n" not in r.stderr.strip()


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _ray_left(session_pid: int, tag: str) -> list[str]:
    """Processes left by the sweep started as ``session_pid``: its process group, and every
    process whose environment carries ``tag`` (Ray's workers inherit the driver's; other
    sessions' Ray workers on a shared machine do not)."""
    out = subprocess.run(["ps", "-eo", "pid,pgid,cmd"], capture_output=True, text=True).stdout
    left = []
    for ln in out.splitlines()[1:]:
        pid, pgid = ln.split(None, 2)[:2]
        if pgid == str(session_pid):
            left.append(ln)
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if f"AIGC_TEST_TAG={tag}".encode() in env.split(b"\0"):
            left.append(ln)
    return left


@pytest.mark.slow
def test_a_sweep_through_ray_resumes_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "sw"
    base = [sys.executable, "-m", "agent.sweep", "--scenarios", str(SCEN / "6g-64.toml"),
            "--seeds", "0", "1", "--out", str(out), "--horizon", "20"]
    r = subprocess.run([*base, "--policies", "local,offload"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = _rows(out / "results.csv")
    assert len(rows) == 4 and {x["status"] for x in rows} == {"ok"}
    local = [float(x["mean_s"]) for x in rows if x["policy"] == "local"]
    assert local[0] == pytest.approx(local[1])  # local latency does not depend on the seed
    assert (out / "comparison.png").is_file() and (out / "summary.csv").is_file()
    assert "0 already in" in r.stdout and "4 to run" in r.stdout
    again = subprocess.run([*base, "--policies", "local,offload"], capture_output=True,
                           text=True, cwd=ROOT, timeout=300)
    assert again.returncode == 0 and "4 already in" in again.stdout and "0 to run" in again.stdout
    # adding a policy runs only the new cells (64 devices, 3000 s: long); Ctrl-C during them
    tag = f"sweep-{os.getpid()}-{time.monotonic_ns()}"
    p = subprocess.Popen([*base[:-1], "3000", "--policies", "local,offload,greedy"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         start_new_session=True, env={**os.environ, "AIGC_TEST_TAG": tag},
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((out / "cells").glob("*horizon_3000")):
        time.sleep(0.5)
    time.sleep(3)
    os.killpg(p.pid, signal.SIGINT)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stderr
    assert "0 already in" in stdout and "6 to run" in stdout  # another --horizon: other runs
    assert stderr.strip().splitlines()[-1].startswith("agent.sweep: interrupted: the finished "
                                                      "runs are kept in")
    assert len(_rows(out / "results.csv")) < 10  # the 4 and any that finished before Ctrl-C
    time.sleep(2)
    assert _ray_left(p.pid, tag) == []


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces and tc)")
def test_an_emulator_sweep_runs_records_and_resumes(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "esw"
    cmd = [sys.executable, "-m", "emulator.sweep", "--scenarios", str(SCEN / "demo.toml"),
           "--policies", "offload", "--seeds", "3", "--duration", "4", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=400)
    assert r.returncode == 0, r.stderr
    (row,) = _rows(out / "results.csv")
    assert row["status"] == "ok" and int(row["requests"]) >= 1 and row["unrecorded"] == "0"
    assert 0.05 < float(row["mean_s"]) < 2.0
    import json

    summ = json.loads((Path(row["out"]) / "summary.json").read_text())
    res = summ["provenance"]["inputs"]["resolved_scenario"]
    assert res["name"] == "demo" and res["values"]["run"]["duration_s"] == 4.0
    assert res["values"]["seed"] == 3
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert again.returncode == 0 and "1 already in" in again.stdout, again.stderr


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces and tc)")
def test_ctrl_c_stops_an_emulator_run_of_a_sweep_in_order(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "esw"
    tag = f"esweep-{os.getpid()}-{time.monotonic_ns()}"
    p = subprocess.Popen([sys.executable, "-m", "emulator.sweep", "--scenarios",
                          str(SCEN / "demo.toml"), "--policies", "offload", "--seeds", "0", "1",
                          "--duration", "60", "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         start_new_session=True, env={**os.environ, "AIGC_TEST_TAG": tag},
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log = out / "cells" / "demo__offload__seed0__duration_60.log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "up in" not in (log.read_text() if log.exists()
                                                         else ""):
        time.sleep(0.5)
    time.sleep(3)
    t0 = time.monotonic()
    os.killpg(p.pid, signal.SIGINT)
    _, stderr = p.communicate(timeout=150)
    assert p.returncode == 130, stderr
    assert time.monotonic() - t0 < 60
    text = log.read_text()
    assert "emulator: interrupted" in text, text[-2000:]
    run_id = re.search(r"emulator\.net\[(\w+)\]", text)
    assert run_id is not None
    assert not (Path("/run/aigc-emu") / f"{run_id.group(1)}.json").exists()
    assert not [n for n in os.listdir("/sys/class/net") if n.startswith(run_id.group(1))]
    time.sleep(2)
    assert _ray_left(p.pid, tag) == []
    assert not (out / "results.csv").exists()  # nothing finished, nothing recorded
