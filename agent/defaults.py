"""The one default scenario of every command (``emulator.run``, ``agent.evaluate``,
``agent.train``), and the rule that resolves a run's scenario.

A scenario here is six knobs, named by their command-line flags: ``--delay-ms`` (one-way
propagation delay), ``--mec-speedup`` (MEC block times divided by X), ``--devices``,
``--mec-slots`` (MEC capacity: concurrent sessions), ``--load`` (offered load per device:
fully-local latency / mean inter-arrival) and ``--scale`` (trace rates multiplied by X).

Resolution (:func:`resolve_scenario`), knob by knob: the value given on the command line; else
the training scenario of the model's shipped policy (``policies/<model>.zip``'s sidecar, or of
the ``.zip`` being run), so that a baseline runs in the same scenario as ``default``; else
:data:`DEFAULTS`. Every given value that differs from a trained policy's training scenario is
reported as a warning (``--mec-speedup`` is an error in :class:`agent.policies.SB3Policy`: the
policy's latency estimates depend on it). A policy trained over scenario ranges (its sidecar
has ``ranges``, :mod:`agent.ranges`) warns only for a knob outside its range, naming it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["DEFAULTS", "FLAGS", "POLICIES_DIR", "HelpFormatter", "resolve_scenario",
           "scenario_help", "trained_scenario", "training_sidecar"]

POLICIES_DIR: Path = Path(__file__).resolve().parent.parent / "policies"

DEFAULTS: dict[str, float] = {
    "delay_ms": 10.0,
    "mec_speedup": 10.0,
    "devices": 4,
    "mec_slots": 1,
    "load": 0.5,
    "scale": 1.0,
}
"""The default scenario: the shipped gpt2 policy's training scenario (``policies/gpt2.json``)."""

FLAGS: dict[str, str] = {k: "--" + k.replace("_", "-") for k in DEFAULTS}


def training_sidecar(spec: str, model: str) -> tuple[str, dict[str, Any]] | None:
    """``(path, sidecar)`` of the trained policy whose scenario a run of ``spec`` on ``model``
    follows: the ``.zip`` itself, else (``default`` or a baseline) ``policies/<model>.zip``;
    ``None`` when there is none or it has no readable sidecar."""
    path = Path(spec) if spec.endswith(".zip") else POLICIES_DIR / f"{model}.zip"
    side = path.with_suffix(".json")
    if not side.is_file():
        return None
    try:
        raw = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    return (str(path), raw) if isinstance(raw, dict) else None


def trained_scenario(sidecar: Mapping[str, Any]) -> dict[str, float]:
    """The knobs a policy was trained with, from its sidecar (missing ones left out)."""
    scen = sidecar.get("scenario") or {}
    delay = scen.get("one_way_delay_s")
    raw = {"delay_ms": delay * 1e3 if isinstance(delay, (int, float)) else None,
           "mec_speedup": sidecar.get("mec_speedup"), "devices": scen.get("n_devices"),
           "mec_slots": scen.get("mec_slots"), "load": scen.get("load"),
           "scale": sidecar.get("scale")}
    return {k: float(v) for k, v in raw.items() if isinstance(v, (int, float))}


def resolve_scenario(given: Mapping[str, float | None], spec: str, model: str
                     ) -> tuple[dict[str, float], list[str], str]:
    """The run's scenario knobs, the warnings to print, and where the defaults came from.

    :param given: knob -> the command-line value, or ``None`` when not given.
    :param spec: the policy being run (``default``, a ``.zip``, or a baseline name); warnings
        are given only for a trained policy (``default`` or a ``.zip``).
    """
    found = training_sidecar(spec, model)
    trained = trained_scenario(found[1]) if found else {}
    out: dict[str, float] = {}
    warnings: list[str] = []
    is_trained = spec == "default" or spec.endswith(".zip")
    ranges = found[1].get("ranges") if found else None
    if is_trained and found and isinstance(ranges, dict):
        from agent.ranges import ScenarioRanges

        warnings += [f"warning: {found[0]}: {w}"
                     for w in ScenarioRanges.from_json(ranges).outside(given)]
    for k, default in DEFAULTS.items():
        v = given.get(k)
        t = trained.get(k)
        out[k] = float(v) if v is not None else (t if t is not None else float(default))
        if (is_trained and found and not isinstance(ranges, dict) and v is not None
                and t is not None and abs(v - t) > 1e-9 * abs(t)):
            warnings.append(f"warning: {found[0]} was trained with {FLAGS[k]} {t:g}; this run "
                            f"uses {v:g} (its decisions assume the training scenario)")
    source = f"the training scenario of {found[0]}" if found else "agent.defaults.DEFAULTS"
    return out, warnings, source


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with every option's default (none shown for unset flags and options whose
    help already says it), descriptions kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        d = action.default
        if d is None or d is False or d == [] or d == argparse.SUPPRESS or "(default" in text:
            return text
        return super()._get_help_string(action)


def scenario_help(key: str, what: str) -> str:
    """Help text of a scenario knob's option, naming its default and where it comes from."""
    return (f"{what} (default: the shipped policy's training scenario, else "
            f"{DEFAULTS[key]:g})")
