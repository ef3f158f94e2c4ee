"""Scenario files (``--scenario FILE``): the shipped ones load and mean what they say, flags
override them, every output records the resolved scenario, and a bad file is one line naming
file, line and key."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.defaults import (
    DEFAULTS,
    SCENARIO_KEYS,
    apply_scenario_file,
    load_scenario_file,
    resolved_scenario,
)
from agent.errors import ScenarioFileError

ROOT = Path(__file__).resolve().parent.parent
SCEN = ROOT / "scenarios"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


def test_shipped_scenarios_load_and_the_demo_is_the_default_scenario() -> None:
    files = sorted(SCEN.glob("*.toml"))
    assert {f.stem for f in files} >= {"demo", "lte-8", "5g-32", "6g-64"}
    for f in files:
        sf = load_scenario_file(f)
        assert sf.name == f.stem
        for t in sf.values["link"]["traces"]:
            assert Path(t).is_file(), t
    demo = load_scenario_file(SCEN / "demo.toml").defaults_for("agent")
    assert {k: float(demo[k]) for k in DEFAULTS} == {k: float(v) for k, v in DEFAULTS.items()}
    counts = {f: load_scenario_file(SCEN / f"{f}.toml").values["devices"]["count"]
              for f in ("lte-8", "5g-32", "6g-64")}
    assert counts == {"lte-8": 8, "5g-32": 32, "6g-64": 64}


@pytest.mark.parametrize(("text", "message"), [
    ('name = "x"\n\n[mec]\nspeedup = 10\nslot = 2\n',
     ":5: unknown key mec.slot (expected one of speedup, slots, model, max_batch, memory_gb, batch_curve; did you mean 'slots'?)"),
    ('name = "x"\n[mec]\nslots = "2"\n', ":3: mec.slots must be an integer, got str '2'"),
    ("[devices]\ncount = true\n", ":2: devices.count must be an integer, got bool True"),
    ("[mecc]\nslots = 2\n", ":1: unknown key 'mecc' (expected tables"),
    ("seed = 1\nfoo = 3\n", ":2: unknown key 'foo'"),
    ("[link]\nscale = 0\n", ":2: link.scale must be > 0, got 0.0"),
    ('[link]\ntraces = ["nope.csv"]\n', ":2: link.traces: no such trace file or folder"),
    ("[mec\nslots = 2\n", ":1: not valid TOML"),
    ("mec = 3\n", ":1: mec must be a table ([mec]), got int"),
])
def test_a_bad_file_names_file_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    p = _write(tmp_path, text)
    with pytest.raises(ScenarioFileError, match=re.escape(f"{p}{message}")):
        load_scenario_file(p)


def test_every_key_maps_to_an_option_of_some_command() -> None:
    for table, keys in SCENARIO_KEYS.items():
        for key, spec in keys.items():
            if key not in ("name", "description"):
                assert spec.agent or spec.emulator, f"{table}.{key}"


def test_emulator_flags_override_the_file_and_the_resolved_scenario_says_so() -> None:
    from emulator.run import build_parser

    argv = ["--scenario", str(SCEN / "lte-8.toml"), "--devices", "3", "--tokens", "8"]
    p = build_parser()
    sf = apply_scenario_file(p, argv, "emulator")
    a = p.parse_args(argv)
    assert (a.devices, a.mec_slots, a.delay_ms, a.shared_cell, a.tokens) == (3, 2, 20.0, True, 8)
    assert a.trace == str(ROOT / "traces" / "data" / "cellular_120s.csv")
    assert sf is not None
    rec = resolved_scenario(sf, a, "emulator")
    assert rec["name"] == "lte-8" and rec["sha256"] == sf.sha256
    assert rec["values"]["devices"]["count"] == 3
    assert rec["values"]["workload"]["tokens"] == 8


def test_an_emulator_scenario_must_name_one_trace_file(tmp_path: Path) -> None:
    p = _write(tmp_path, f'[link]\ntraces = ["{ROOT}/traces/data/train"]\n')
    r = subprocess.run([sys.executable, "-m", "emulator.run", "--scenario", str(p)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "replays exactly one trace file" in lines[0], r.stderr


def test_agent_evaluate_with_a_scenario_and_an_override(tmp_path: Path) -> None:
    from agent.evaluate import main

    out = tmp_path / "ev"
    assert main(["--scenario", str(SCEN / "lte-8.toml"), "--policies", "local,offload",
                 "--mec-slots", "3", "--horizon", "30", "--out", str(out), "--no-plots"]) == 0
    doc = json.loads((out / "summary.json").read_text())
    res = doc["resolved_scenario"]
    assert res["name"] == "lte-8" and res["file"] == str(SCEN / "lte-8.toml")
    assert res["values"]["mec"] == {"speedup": 10.0, "slots": 3, "model": "slots",
                                    "max_batch": 8, "batch_curve": "auto"}
    assert res["values"]["devices"] == {"count": 8}
    assert res["values"]["link"]["shared_cell"] is True
    assert res["values"]["run"] == {"horizon_s": 30.0}
    assert doc["scenario"]["n_devices"] == 8 and doc["scenario"]["mec_slots"] == 3


def test_a_bad_scenario_is_one_line_and_exit_2(tmp_path: Path) -> None:
    p = _write(tmp_path, "[mec]\nslot = 2\n")
    argvs = {"agent.evaluate": ["--out", str(tmp_path / "ev")],
             "agent.train": ["--out", str(tmp_path / "x.zip"), "--steps", "1"]}
    for mod, rest in argvs.items():
        r = subprocess.run([sys.executable, "-m", mod, "--scenario", str(p), *rest],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert r.returncode == 2, (mod, r.stderr)
        assert r.stderr.strip() == (f"{mod}: error: {p}:2: unknown key mec.slot (expected one "
                                    "of speedup, slots, model, max_batch, memory_gb, batch_curve; did you mean "
                                    "'slots'?)")


def test_the_rest_never_imports_ray() -> None:
    code = ("import sys, agent, agent.evaluate, agent.train, agent.sweep, emulator.run, "
            "emulator.sweep; assert 'ray' not in sys.modules, 'ray imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stderr
