"""Bad input around plans: one clear error naming what to fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent.errors import AgentError, PolicyMismatchError
from agent.latency import LatencyModel
from agent.plan import SEMANTICS, decision_from_json
from agent.policies import make_policy
from agent.policy import Decision, Workload
from profiler.schema import load_profile

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "profiles"


def _profiles() -> tuple:
    return (load_profile(PROFILES / "gpt2.device.json"),
            load_profile(PROFILES / "gpt2.mec-cpu.json"))


def test_shipped_policies_are_on_the_current_semantics() -> None:
    for model in ("gpt2", "sd15"):
        side = json.loads((ROOT / "policies" / f"{model}.json").read_text())
        assert side["semantics"] == SEMANTICS


def test_a_policy_trained_before_plans_is_refused(tmp_path: Path) -> None:
    dev, mec = _profiles()
    zp = tmp_path / "old.zip"
    shutil.copy(ROOT / "policies" / "gpt2.zip", zp)
    side = json.loads((ROOT / "policies" / "gpt2.json").read_text())
    del side["semantics"]
    zp.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(PolicyMismatchError, match=r"before plans.*retrain it with the command"):
        make_policy(str(zp), dev, mec, mec_speedup=10)


def test_a_decision_that_is_not_a_plan_of_the_model() -> None:
    dev, mec = _profiles()
    m = LatencyModel(dev, mec)
    with pytest.raises(AgentError, match="no split for pass 'decode'"):
        m.plan(Decision({"prefill": 0}), Workload("gpt2"))
    with pytest.raises(AgentError, match=r"out of range 0\.\.14"):
        m.plan(Decision({"prefill": 0, "decode": 15}), Workload("gpt2"))
    with pytest.raises(AgentError, match="gives 3 splits for pass 'decode', which runs 32"):
        m.plan(Decision({"prefill": 0, "decode": (0, 1, 2)}), Workload("gpt2"))
    with pytest.raises(AgentError, match="integer or a non-empty list"):
        decision_from_json({"prefill": "zero"})
