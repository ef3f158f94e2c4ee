"""The command lines: a tiny end-to-end evaluate run, and bad input as one line + exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

FIX = Path(__file__).parent / "fixtures" / "agent"
ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "traces" / "data" / "train"
LLM = ["--device-profile", str(FIX / "llm.device.json"), "--mec-profile",
       str(FIX / "llm.mec.json")]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_evaluate_end_to_end(tmp_path: Path) -> None:
    r = _run("agent.evaluate", *LLM, "--traces", str(TRAIN / "cellular_300s_s100.csv"),
             "--train-traces", str(TRAIN / "cellular_300s_s101.csv"), "--horizon", "40",
             "--policies", "greedy,local,offload,fixed,oracle", "--mec-speedup", "4",
             "--deadline", "2", "--slo-e2e", "2", "--out", str(tmp_path), "--no-plots")
    assert r.returncode == 0, r.stderr
    assert "mec-speedup 4" in r.stdout
    s = json.loads((tmp_path / "summary.json").read_text())
    pols = s["policies"]
    assert set(pols) == {"greedy", "local", "offload", "fixed", "oracle"}
    # local by hand from tests/fixtures/agent/llm.device.json: prefill 1 + 12 x 19 + 91 = 320 ms,
    # decode 0.2 + 12 x 2.4 + 3.6 = 32.6 ms x 32 tokens = 1043.2 ms: every request 1.3632 s
    local = pols["local"]
    for key in ("mean_latency_s", "p50_latency_s", "p95_latency_s"):
        assert local[key] == pytest.approx(1.3632, rel=1e-9), key
    assert local["deadline_miss_rate"] == 0.0  # 1.36 s < the 2 s deadline
    # the oracle may pick local for every request, so it is never slower on the mean
    orc = pols["oracle"]["mean_latency_s"]
    assert 0.0 < orc <= 1.3632 + 1e-9
    assert local["ratio_to_oracle"] == pytest.approx(1.3632 / orc, rel=1e-9)
    for name, d in pols.items():
        assert 0.0 <= d["deadline_miss_rate"] <= 1.0, name
        # an end-to-end SLO alone: goodput is the share within the deadline
        assert d["goodput"] == pytest.approx(1.0 - d["deadline_miss_rate"], abs=1e-12), name
    assert "SLO e2e <= 2 s" in r.stdout and "goodput" in r.stdout
    assert s["scenario"]["mec_speedup"] == 4.0
    assert "command" in s["provenance"] and s["provenance"]["trace_sha256"]


BAD = [
    # profiles of different models
    (["agent.evaluate", "--device-profile", str(FIX / "llm.device.json"), "--mec-profile",
      str(FIX / "twoblock.mec.json"), "--traces", str(TRAIN), "--out", "/tmp/x"], "model"),
    # empty trace folder
    (["agent.evaluate", *LLM, "--traces", "{empty}", "--out", "/tmp/x"], "no trace files"),
    # nonsense parameters
    (["agent.train", *LLM, "--traces", str(TRAIN), "--steps", "-5", "--out", "/tmp/x.zip"],
     "--steps"),
    (["agent.evaluate", *LLM, "--traces", str(TRAIN), "--scale", "0", "--out", "/tmp/x"],
     "--scale"),
    (["agent.evaluate", *LLM, "--traces", str(TRAIN), "--devices", "0", "--out", "/tmp/x"],
     "--devices"),
    (["agent.evaluate", *LLM, "--traces", str(TRAIN), "--policies", "gredy", "--out", "/tmp/x"],
     "Did you mean"),
    (["agent.evaluate", *LLM, "--traces", str(TRAIN), "--slo-ttft", "-1", "--out", "/tmp/x"],
     "--slo-ttft must be a positive number"),
    (["agent.evaluate", "--model", "nosuchmodel", "--traces", str(TRAIN), "--out", "/tmp/x"],
     "no profiles"),
    # an SB3 file with another observation space
    (["agent.evaluate", "--device-profile", str(FIX / "twoblock.device.json"), "--mec-profile",
      str(FIX / "twoblock.mec.json"), "--traces", str(TRAIN), "--policies", "rl:{zip}",
      "--out", "/tmp/x"], "observation space"),
    # a plan template the profile cannot express
    (["agent.evaluate", *LLM, "--traces", str(TRAIN), "--policies", "fixed:kv-up",
      "--out", "/tmp/x"], "plan template 'kv-up' does not fit the 'llm' profiles"),
    # a policy zip of another model, of another action set, of another throughput estimate
    (["agent.evaluate", *LLM, "--traces", str(TRAIN), "--policies", "rl:{dir}/model.zip",
      "--out", "/tmp/x"], "policy was trained for model 'sd15', not 'llm'"),
    (["agent.evaluate", *LLM, "--traces", str(TRAIN), "--policies", "rl:{dir}/aset.zip",
      "--out", "/tmp/x"], "policy was trained on action set 'templates-0:llm:offload,local'"),
    (["agent.evaluate", *LLM, "--traces", str(TRAIN), "--policies", "rl:{dir}/est.zip",
      "--out", "/tmp/x"], "policy was trained with throughput estimate 'harmonic mean'"),
]


@pytest.fixture(scope="module")
def llm_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sb3_contrib import MaskablePPO

    from agent.env import AigcSplitEnv
    from agent.scenario import ScenarioConfig
    from traces import load_traces

    env = AigcSplitEnv(FIX / "llm.device.json", FIX / "llm.mec.json",
                       load_traces(TRAIN)[:1], ScenarioConfig(horizon_s=20.0))
    algo = MaskablePPO("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=1, device="cpu")
    path = tmp_path_factory.mktemp("pol") / "llm.zip"
    algo.save(str(path))
    import json
    import shutil

    from agent.plan import SEMANTICS

    good = {"model": "llm", "mec_speedup": 1.0, "semantics": SEMANTICS,
            "action_set": env.actions.action_set, "obs_scales": env.encoder.scales()}
    bad = {"model": {"model": "sd15"}, "aset": {"action_set": "templates-0:llm:offload,local"},
           "est": {"obs_scales": {"size": env.encoder.size}}}
    for name, change in bad.items():
        shutil.copy(path, path.parent / f"{name}.zip")
        (path.parent / f"{name}.json").write_text(json.dumps({**good, **change}))
    return path


@pytest.mark.parametrize(("args", "needle"), BAD)
def test_bad_input_one_line(args: list[str], needle: str, tmp_path: Path, llm_zip: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [a.replace("{empty}", str(empty)).replace("{zip}", str(llm_zip))
            .replace("{dir}", str(llm_zip.parent)) for a in args]
    r = _run(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr and needle in lines[0]


@pytest.mark.parametrize("n_traces", [3, 142])
def test_per_trace_plot_stays_readable(tmp_path: Path, n_traces: int) -> None:
    import matplotlib.image

    from agent.evaluate import _plots

    rng = np.random.default_rng(0)
    lat = {p: [list(rng.uniform(0.5, 2.0, 5)) for _ in range(n_traces)]
           for p in ("default", "greedy", "local", "offload", "fixed", "oracle")}
    _plots(lat, [f"trace{i:03d}.csv" for i in range(n_traces)], tmp_path, "scenario")
    height, width = matplotlib.image.imread(tmp_path / "per_trace.png").shape[:2]
    assert 6 * 120 <= width <= 14 * 120 and height == 4 * 120, (width, height)
