"""One default scenario for every command (agent/defaults.py), the shipped policies' training
scenarios followed by default, mismatches reported, and every CLI's ``--help`` shows defaults."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.defaults import (
    DEFAULTS,
    POLICIES_DIR,
    mec_model_note,
    resolve_scenario,
    trained_scenario,
)
from agent.scenario import ScenarioConfig

_NONE = dict.fromkeys(DEFAULTS)


def _sidecar(model: str) -> dict[str, float]:
    return trained_scenario(json.loads((POLICIES_DIR / f"{model}.json").read_text()))


def test_defaults_are_the_shipped_gpt2_policy_scenario_and_the_simulators() -> None:
    assert _sidecar("gpt2") == {k: float(v) for k, v in DEFAULTS.items()}
    cfg = ScenarioConfig()
    assert (cfg.n_devices, cfg.mec_slots, cfg.one_way_delay_s * 1e3, cfg.load) == (
        DEFAULTS["devices"], DEFAULTS["mec_slots"], DEFAULTS["delay_ms"], DEFAULTS["load"])


@pytest.mark.parametrize("model", ["gpt2", "sd15"])
def test_baselines_run_in_the_default_policys_scenario(model: str) -> None:
    trained = _sidecar(model)
    runs = {spec: resolve_scenario(_NONE, spec, model) for spec in
            ("default", "offload", "local", "greedy", "fixed:3")}
    for spec, (values, warns, source) in runs.items():
        assert values == trained, spec
        assert warns == [] and f"{model}.zip" in source
    assert runs["default"][0]["scale"] == (0.01 if model == "sd15" else 1.0)


def test_a_mismatch_with_the_training_scenario_is_a_warning() -> None:
    given = {**_NONE, "scale": 0.1, "delay_ms": 20.0}
    values, warns, _ = resolve_scenario(given, "default", "sd15")
    assert values["scale"] == 0.1 and values["delay_ms"] == 20.0
    if "ranges" in json.loads((POLICIES_DIR / "sd15.json").read_text()):
        # trained over scenario ranges: inside them no warning, outside one naming the range
        assert warns == []
        _, warns, _ = resolve_scenario({**given, "delay_ms": 200.0}, "default", "sd15")
        assert len(warns) == 1 and "--delay-ms 200 is outside the policy's training range " \
            "1-50" in warns[0]
    else:
        assert len(warns) == 2
        assert any("--scale 0.01; this run uses 0.1" in w for w in warns)
        assert any("--delay-ms 10; this run uses 20" in w for w in warns)
    # a baseline told otherwise runs as told, without a warning
    values, warns, _ = resolve_scenario(given, "offload", "sd15")
    assert values["scale"] == 0.1 and warns == []


def test_a_policy_run_on_another_mec_model_says_so(tmp_path: Path) -> None:
    shipped = json.loads((POLICIES_DIR / "gpt2.json").read_text())
    trained = shipped["scenario"].get("mec_model", "slots")  # no key: trained before batching
    other = "batch" if trained == "slots" else "slots"
    note = mec_model_note("default", "gpt2", other)
    assert note is not None and note.startswith(f"note: {POLICIES_DIR / 'gpt2.zip'} was trained")
    assert f"--mec-model {trained}" in note
    assert mec_model_note("default", "gpt2", trained) is None
    assert mec_model_note("greedy", "gpt2", other) is None  # a baseline has no training MEC
    # a policy whose sidecar records the batching MEC
    side = {**shipped, "scenario": {**shipped["scenario"], "mec_model": "batch"}}
    (tmp_path / "p.json").write_text(json.dumps(side))
    assert mec_model_note(str(tmp_path / "p.zip"), "gpt2", "batch") is None
    note = mec_model_note(str(tmp_path / "p.zip"), "gpt2", "slots")
    assert note is not None and "trained on the batching MEC; this run uses the " \
        "exclusive-slot MEC" in note


def test_without_a_shipped_policy_the_defaults_apply(tmp_path: Path) -> None:
    values, warns, source = resolve_scenario(_NONE, "offload", "no-such-model")
    assert values == {k: float(v) for k, v in DEFAULTS.items()} and warns == []
    assert source == "agent.defaults.DEFAULTS"


class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def _capture(main: Callable[[list[str]], object], argv: list[str],
             monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    def fake(self: argparse.ArgumentParser, *a: object, **k: object) -> None:
        raise _Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", fake)
    with pytest.raises(_Parsed) as got:
        main(argv)
    return got.value.parser


def _unset(default: object) -> bool:
    return default is None or default is False or default == [] or default == argparse.SUPPRESS


def _parsers(p: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield p
    for act in p._actions:
        if isinstance(act, argparse._SubParsersAction):
            for sub in act.choices.values():
                yield from _parsers(sub)


def _mains() -> dict[str, Callable[[list[str]], object]]:
    from agent import evaluate, train
    from emulator import calibrate, doctor, run
    from profiler import cli as profiler_cli
    from traces import cli as traces_cli

    return {"emulator.run": run.main, "emulator.doctor": doctor.main,
            "emulator.calibrate": calibrate.main, "agent.train": train.main,
            "agent.evaluate": evaluate.main, "profiler": profiler_cli.main,
            "traces": traces_cli.main}


@pytest.mark.parametrize("name", sorted(_mains()))
def test_help_shows_every_default(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    parser = _capture(_mains()[name], [], monkeypatch)
    missing = []
    for p in _parsers(parser):
        for act in p._actions:
            if _unset(act.default) or not act.option_strings:
                continue
            if "default" not in p._get_formatter()._format_action(act):
                missing.append(f"{p.prog} {act.option_strings[-1]}")
    assert missing == [], missing



def test_emulator_baselines_and_default_get_one_scenario(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    from emulator.run import _plan, build_parser

    plans = {}
    for pol in ("default", "offload", "local"):
        args = build_parser().parse_args(["--policy", pol, "--out", str(tmp_path / pol)])
        plan, _, _ = _plan(args)
        plans[pol] = (plan.mec_speedup, plan.n_devices, plan.mec_slots, args.delay_ms,
                      round(plan.rate or 0, 3), args.scale)
    assert set(plans.values()) == {(10.0, 4, 1, 10.0, 0.297, 1.0)}, plans
    # the shipped sd15 policy was trained over scenario ranges (agent/ranges.py): a scale inside
    # its range runs without a word, one outside is a warning naming the range
    args = build_parser().parse_args(["--model", "sd15", "--scale", "0.1",
                                      "--out", str(tmp_path / "sd")])
    plan, _, _ = _plan(args)
    assert args.scale == 0.1 and plan.mec_speedup == 10.0
    assert "warning" not in capsys.readouterr().err
    args = build_parser().parse_args(["--model", "sd15", "--scale", "1000",
                                      "--out", str(tmp_path / "sd1000")])
    _plan(args)
    assert ("--scale 1000 is outside the policy's training range 0.003-100"
            in capsys.readouterr().err)
