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

Scenario files (``--scenario FILE``, TOML, :data:`SCENARIO_KEYS`) describe a whole scenario:
the knobs above plus model and workload, traces, cell sharing, seed and run length. A file's
values take the place of the command line's defaults, so a flag given on the command line
overrides the file, and the file's knobs count as given (a trained policy's training scenario
fills only what neither sets). Paths in a file are relative to the file. Every output records
the resolved scenario (:func:`resolved_scenario`).
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import re
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import ScenarioFileError

__all__ = ["DEFAULTS", "FLAGS", "POLICIES_DIR", "SCENARIO_KEYS", "HelpFormatter", "ScenarioFile",
           "add_scenario_option", "apply_scenario_file", "load_scenario_file",
           "mec_model_note", "resolve_scenario", "resolved_scenario", "scenario_help",
           "trained_scenario",
           "training_sidecar"]

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


def mec_model_note(spec: str, model: str, mec_model: str) -> str | None:
    """One line when the trained policy ``spec`` (``default`` or a ``.zip``) was trained on
    another MEC server model than the run's ``mec_model``; a sidecar without ``mec_model``
    (before 6 Dec 2026, when slots were the default) was trained on slots. ``None`` otherwise
    or for a baseline."""
    if not (spec == "default" or spec.endswith(".zip")):
        return None
    found = training_sidecar(spec, model)
    if found is None:
        return None
    scen = found[1].get("scenario")
    trained = scen.get("mec_model", "slots") if isinstance(scen, dict) else "slots"
    if trained == mec_model:
        return None
    names = {"slots": "exclusive-slot", "batch": "batching"}
    return (f"note: {found[0]} was trained on the {names.get(trained, trained)} MEC; this run "
            f"uses the {names.get(mec_model, mec_model)} MEC (--mec-model {trained} for its "
            f"training MEC; policies/README.md measures the shipped policies on both)")


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


# ---------------------------------------------------------------------------------------------
# Scenario files


@dataclass(frozen=True)
class _Key:
    """One key of a scenario file: its type, lower bound, and the option of each command it
    sets (``agent``: ``agent.train`` and ``agent.evaluate``; ``emulator``: ``emulator.run``)."""

    kind: str  # "str", "int", "float", "bool" or "paths" (a path or a list of paths)
    doc: str
    agent: str | None = None
    emulator: str | None = None
    low: float | None = None
    strict_low: bool = False


SCENARIO_KEYS: dict[str, dict[str, _Key]] = {
    "": {
        "name": _Key("str", "short name, used by sweeps (default: the file's stem)"),
        "description": _Key("str", "what the scenario stands for"),
        "seed": _Key("int", "seed of arrivals and block times", "seed", "seed", 0),
    },
    "workload": {
        "model": _Key("str", "shipped model: gpt2, sd15, gpt2-tiny, sd15-tiny", "model",
                      "model"),
        "tokens": _Key("int", "decode tokens per request (LLMs)", "repeats", "tokens", 1),
        "steps": _Key("int", "denoising steps per request (diffusion)", "repeats", "steps", 1),
    },
    "link": {
        "traces": _Key("paths", "trace files or folders; the emulator replays exactly one file",
                       "traces", "trace"),
        "scale": _Key("float", "multiply every trace rate by X", "scale", "scale", 0, True),
        "delay_ms": _Key("float", "one-way propagation delay, ms", "delay_ms", "delay_ms", 0),
        "shared_cell": _Key("bool", "devices share one cell's capacity", "shared_cell",
                            "shared_cell"),
    },
    "devices": {
        "count": _Key("int", "devices sharing the MEC", "devices", "devices", 1),
        "fallback": _Key("float", "local fallback: a request that computes only on the MEC is "
                         "run on the device too once X times its local latency has passed "
                         "without its final output (default off)", "fallback", "fallback", 0),
    },
    "mec": {
        "speedup": _Key("float", "MEC block times divided by X", "mec_speedup", "mec_speedup",
                        0, True),
        "slots": _Key("int", "concurrent MEC sessions", "mec_slots", "mec_slots", 1),
        "model": _Key("str", "MEC server model: batch (iteration-level batching, "
                      "agent/mec_server.py; default) or slots (exclusive)", "mec_model",
                      "mec_model"),
        "max_batch": _Key("int", "batching MEC: most active sessions", "mec_max_batch",
                          "mec_max_batch", 1),
        "memory_gb": _Key("float", "batching MEC: memory budget, GB (weights + live state)",
                          "mec_memory_gb", "mec_memory_gb", 0, True),
        "batch_curve": _Key("str", "batching MEC: 'auto' (default), 'profile', 'llama7b-gpu' "
                            "(a GPU curve on the batch-1 profile) or a batch profile file",
                            "mec_batch_curve",
                            "mec_batch_curve"),
    },
    "arrivals": {
        "load": _Key("float", "offered load per device: fully-local latency / mean "
                     "inter-arrival", "load", "load", 0, True),
    },
    "run": {
        "duration_s": _Key("float", "emulator: seconds during which requests arrive", None,
                           "duration", 0, True),
        "horizon_s": _Key("float", "simulator: seconds simulated per trace", "horizon", None,
                          0, True),
    },
}
"""Every key a scenario file may hold, by table (``""``: top level)."""

_REPEAT_PASS = {"tokens": "decode", "steps": "unet"}


@dataclass(frozen=True)
class ScenarioFile:
    """A parsed, type-checked scenario file: ``values[table][key]``, paths made absolute."""

    path: Path
    sha256: str
    values: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.values.get("", {}).get("name") or self.path.stem)

    def defaults_for(self, command: str) -> dict[str, Any]:
        """Option destination -> value for ``command`` (``agent`` or ``emulator``)."""
        out: dict[str, Any] = {}
        for table, keys in self.values.items():
            for key, v in keys.items():
                spec = SCENARIO_KEYS[table][key]
                dest = spec.agent if command == "agent" else spec.emulator
                if dest is None:
                    continue
                if dest == "repeats":  # agent: --repeats PASS=N
                    out.setdefault("repeats", []).append(f"{_REPEAT_PASS[key]}={v}")
                elif dest == "trace":  # emulator: one trace file
                    if len(v) != 1 or Path(v[0]).is_dir():
                        raise ScenarioFileError(
                            f"{self.path}:{_line_of(self.path, table, key)}: link.traces: "
                            f"emulator.run replays exactly one trace file; this scenario "
                            f"names {', '.join(v)} (give one file, or --trace FILE)")
                    out[dest] = v[0]
                else:
                    out[dest] = v
        return out


def _line_of(path: Path, table: str, key: str | None) -> int:
    """Line (1-based) of ``key`` in ``[table]`` of ``path`` (of the table header when ``key`` is
    ``None``); 1 when not found (a dotted key or an inline table)."""
    current = ""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return 1
    for i, line in enumerate(lines, 1):
        head = re.match(r"\s*\[\s*([^\]]+?)\s*\]", line)
        if head and not line.lstrip().startswith("[["):
            current = head.group(1).strip().strip('"')
            if key is None and current == table:
                return i
            continue
        if key is not None and current == table and re.match(
                rf"\s*[\"']?{re.escape(key)}[\"']?\s*=", line):
            return i
    return 1


def _suggest(name: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


_TYPE_WORDS = {"str": "a string", "int": "an integer", "float": "a number",
               "bool": "true or false", "paths": "a path or a list of paths"}


def _check_value(path: Path, table: str, key: str, spec: _Key, v: Any) -> Any:
    where = f"{path}:{_line_of(path, table, key)}: {f'{table}.' if table else ''}{key}"
    kind = spec.kind
    ok = {"str": isinstance(v, str), "bool": isinstance(v, bool),
          "int": isinstance(v, int) and not isinstance(v, bool),
          "float": isinstance(v, (int, float)) and not isinstance(v, bool),
          "paths": isinstance(v, str) or (isinstance(v, list) and bool(v)
                                          and all(isinstance(x, str) for x in v))}[kind]
    if not ok:
        raise ScenarioFileError(f"{where} must be {_TYPE_WORDS[kind]}, got "
                                f"{type(v).__name__} {v!r}")
    if kind == "float":
        v = float(v)
        if v != v or v in (float("inf"), float("-inf")):
            raise ScenarioFileError(f"{where} must be a finite number, got {v!r}")
    if spec.low is not None and (v < spec.low or (spec.strict_low and v <= spec.low)):
        rel = ">" if spec.strict_low else ">="
        raise ScenarioFileError(f"{where} must be {rel} {spec.low:g}, got {v!r}")
    if kind == "paths":
        items = [v] if isinstance(v, str) else v
        v = [str((path.parent / x).resolve()) if not Path(x).is_absolute() else x
             for x in items]
        for x in v:
            if not Path(x).exists():
                raise ScenarioFileError(f"{where}: no such trace file or folder: {x}")
    return v


def load_scenario_file(path: str | Path) -> ScenarioFile:
    """Parse and check a scenario file; a :class:`ScenarioFileError` names file, line and key."""
    path = Path(path)
    try:
        raw_bytes = path.read_bytes()
    except OSError as e:
        raise ScenarioFileError(f"{path}: cannot read the scenario file ({e.strerror or e})"
                                ) from e
    try:
        raw = tomllib.loads(raw_bytes.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ScenarioFileError(f"{path}: not UTF-8 text ({e.reason})") from e
    except tomllib.TOMLDecodeError as e:
        line = getattr(e, "lineno", None)
        msg = getattr(e, "msg", str(e))
        raise ScenarioFileError(f"{path}:{line or 1}: not valid TOML: {msg}") from e
    values: dict[str, dict[str, Any]] = {}
    tables = [t for t in SCENARIO_KEYS if t]
    for top, v in raw.items():
        if top in SCENARIO_KEYS[""]:
            values.setdefault("", {})[top] = _check_value(path, "", top, SCENARIO_KEYS[""][top],
                                                          v)
            continue
        if top not in SCENARIO_KEYS:
            names = [*tables, *SCENARIO_KEYS[""]]
            line = _line_of(path, top, None) if isinstance(v, dict) else _line_of(path, "", top)
            raise ScenarioFileError(
                f"{path}:{line}: unknown key {top!r} (expected tables {', '.join(f'[{t}]' for t in tables)} "
                f"or keys {', '.join(SCENARIO_KEYS[''])}{_suggest(top, names)})")
        if not isinstance(v, dict):
            raise ScenarioFileError(f"{path}:{_line_of(path, '', top)}: {top} must be a table "
                                    f"([{top}]), got {type(v).__name__}")
        for key, x in v.items():
            keys = SCENARIO_KEYS[top]
            if key not in keys:
                raise ScenarioFileError(
                    f"{path}:{_line_of(path, top, key)}: unknown key {top}.{key} (expected "
                    f"one of {', '.join(keys)}{_suggest(key, list(keys))})")
            values.setdefault(top, {})[key] = _check_value(path, top, key, keys[key], x)
    return ScenarioFile(path=path.resolve(), sha256=hashlib.sha256(raw_bytes).hexdigest(),
                        values=values)


def add_scenario_option(p: argparse.ArgumentParser) -> None:
    """The ``--scenario FILE`` option (read by :func:`apply_scenario_file` before parsing)."""
    p.add_argument("--scenario", type=Path, metavar="FILE",
                   help="scenario TOML file (scenarios/*.toml); options given on the command "
                        "line override its values")


def apply_scenario_file(p: argparse.ArgumentParser, argv: Sequence[str] | None, command: str
                        ) -> ScenarioFile | None:
    """If ``argv`` names ``--scenario FILE``, load it and make its values the parser's defaults
    for ``command`` (``agent`` or ``emulator``), so that given options override them; options
    it provides are no longer required."""
    args = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--scenario", type=Path)
    ns, _ = pre.parse_known_args(args)
    if ns.scenario is None:
        return None
    sf = load_scenario_file(ns.scenario)
    given = {x.partition("=")[0] for x in args}
    defaults = sf.defaults_for(command)
    for act in p._actions:
        if act.dest not in defaults:
            continue
        if isinstance(act, argparse._AppendAction) and given & set(act.option_strings):
            del defaults[act.dest]  # the command line's list replaces the file's
            continue
        act.required = False
    p.set_defaults(**defaults)
    return sf


def resolved_scenario(sf: ScenarioFile | None, a: argparse.Namespace, command: str
                      ) -> dict[str, Any]:
    """The scenario a run used, after the file, the command line and the defaults (for every
    output): the file (path, sha256, name) and every key of :data:`SCENARIO_KEYS` that
    ``command`` has, as a file would hold it."""
    out: dict[str, Any] = {}
    for table, keys in SCENARIO_KEYS.items():
        for key, spec in keys.items():
            dest = spec.agent if command == "agent" else spec.emulator
            if dest is None or not hasattr(a, dest):
                continue
            v = getattr(a, dest)
            if dest == "repeats":
                v = next((int(r.partition("=")[2]) for r in v
                          if r.partition("=")[0] == _REPEAT_PASS[key]
                          and r.partition("=")[2].isdigit()), None)
            elif dest == "trace":
                v = [str(v)]
            elif isinstance(v, Path):
                v = str(v)
            elif isinstance(v, list):
                v = [str(x) for x in v]
            if v is None:
                continue
            if table:
                out.setdefault(table, {})[key] = v
            else:
                out[key] = v
    name = sf.name if sf else None
    return {"file": str(sf.path) if sf else None, "sha256": sf.sha256 if sf else None,
            "name": name, "values": out}
