"""Shared command-line plumbing of ``agent.train`` and ``agent.evaluate``: profile and trace
arguments, scenario knobs, provenance, and turning user errors into one line and exit 2."""

from __future__ import annotations

import argparse
import hashlib
import platform
import sys
import warnings
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from agent.defaults import (
    DEFAULTS,
    ScenarioFile,
    add_scenario_option,
    apply_scenario_file,
    resolve_scenario,
    scenario_help,
)
from agent.errors import AgentError
from agent.scenario import ScenarioConfig
from profiler.machine import cpu_model
from profiler.schema import Profile, ProfileError, load_profile
from traces import Trace, TraceError, TraceWarning, load_trace

__all__ = [
    "PROFILES_DIR",
    "add_common_args",
    "file_sha256",
    "load_profiles",
    "load_trace_files",
    "parse_with_scenario",
    "provenance",
    "resolve_args",
    "run_main",
    "scenario_from_args",
    "show_path",
]

PROFILES_DIR: Path = Path(__file__).resolve().parent.parent / "profiles"
_SKIP = {".md", ".txt", ".json", ".png", ".pdf", ".py", ".sh"}


def add_common_args(p: argparse.ArgumentParser) -> None:
    """Profile, trace and scenario arguments (and ``--scenario FILE``)."""
    add_scenario_option(p)
    g = p.add_argument_group("model and profiles")
    g.add_argument("--model", help="model name: reads profiles/MODEL.device.json and "
                   "profiles/MODEL.mec-cpu.json (e.g. gpt2, sd15)")
    g.add_argument("--device-profile", type=Path, help="device profile JSON (instead of --model)")
    g.add_argument("--mec-profile", type=Path, help="MEC profile JSON (instead of --model)")
    g.add_argument("--mec-speedup", type=float, default=None,
                   help=scenario_help("mec_speedup", "scenario knob: divide MEC block times by "
                                      "X (recorded in every output)"))
    g = p.add_argument_group("traces")
    g.add_argument("--traces", nargs="+", required=True,
                   help="trace files or folders (every trace file in a folder, sorted)")
    g.add_argument("--scale", type=float, default=None,
                   help=scenario_help("scale", "multiply every trace rate by X (recorded)"))
    g = p.add_argument_group("scenario")
    d = ScenarioConfig()
    g.add_argument("--devices", type=int, default=None,
                   help=scenario_help("devices", "devices sharing the MEC"))
    g.add_argument("--mec-slots", type=int, default=None,
                   help=scenario_help("mec_slots", "slot MEC (--mec-model slots): concurrent "
                                      "MEC sessions (C)"))
    g.add_argument("--mec-queue", type=int, default=d.mec_queue_limit,
                   help="MEC queue limit (sessions waiting; offloading is masked at the limit)")
    g.add_argument("--mec-model", choices=("slots", "batch"), default=d.mec_model,
                   help="MEC server model: iteration-level batching (agent/mec_server.py) or "
                   "exclusive slots, which the shipped policies were trained on "
                   "(default %(default)s)")
    g.add_argument("--mec-max-batch", type=int, default=d.mec_max_batch,
                   help="batching MEC: most active sessions (default %(default)s)")
    g.add_argument("--mec-memory-gb", type=float, default=d.mec_memory_gb,
                   help="batching MEC: memory budget in GB, weights plus live session state "
                   "(default unlimited)")
    g.add_argument("--mec-batch-curve", default=d.mec_batch_curve,
                   help="batching MEC: per-batch block times: 'auto' (the MEC profile's own "
                   "batch curve if measured, else the model's shipped GPU profile "
                   "profiles/<model>.mec-gpu.json as a shape, else llama7b-gpu), 'profile' (the "
                   "MEC profile's batch curve), 'llama7b-gpu' (llama.cpp batched-bench LLaMA-7B "
                   "F16 on a GPU: 24.1/57.4/68.8 ms at batch 1/8/32, applied to the batch-1 "
                   "profile) or a batch profile file (default %(default)s)")
    g.add_argument("--delay-ms", type=float, default=None,
                   help=scenario_help("delay_ms", "one-way propagation delay in ms"))
    g.add_argument("--load", type=float, default=None,
                   help=scenario_help("load", "offered load per device (fully-local latency / "
                                      "mean inter-arrival)"))
    g.add_argument("--shared-cell", action="store_true",
                   help="devices share one cell (each gets 1/devices of the capacity)")
    g.add_argument("--horizon", type=float, default=d.horizon_s,
                   help="seconds simulated per trace (evaluate: traces loop; train: an episode also ends "
                   "at the end of its trace)")
    g.add_argument("--mask-budget", type=float, default=None,
                   help="mask actions predicted to take more than X times the local latency "
                   "(policy knob, stored with trained policies; default off)")
    g.add_argument("--fallback", type=float, default=d.fallback, metavar="F",
                   help="device runtime: a request whose plan computes only on the MEC is also "
                   "run locally once F times its local latency has passed without its final "
                   "output; the first to finish ends it and the MEC session is released "
                   "(default off)")
    g.add_argument("--repeats", action="append", default=[], metavar="PASS=N[,N...]",
                   help="workload variants: repeats of a pass, e.g. decode=16,32,64 (each "
                   "request draws one); default the profile's repeats")


def parse_with_scenario(p: argparse.ArgumentParser, argv: Sequence[str] | None
                        ) -> tuple[argparse.Namespace, ScenarioFile | None]:
    """Parse ``argv`` with a ``--scenario FILE``'s values as defaults (flags override them)."""
    sf = apply_scenario_file(p, argv, "agent")
    return p.parse_args(argv), sf


def resolve_args(a: argparse.Namespace, model: str, spec: str, prog: str) -> str:
    """Fill the scenario knobs not given on the command line (``a.delay_ms``, ``a.mec_speedup``,
    ``a.devices``, ``a.mec_slots``, ``a.load``, ``a.scale``) by :func:`agent.defaults.resolve_scenario`
    for policy ``spec`` on ``model``; prints each mismatch with a trained policy's training
    scenario as a warning on stderr; returns where the defaults came from."""
    given = {k: getattr(a, k) for k in DEFAULTS}
    values, warns, source = resolve_scenario(given, spec, model)
    for w in warns:
        print(f"{prog}: {w}", file=sys.stderr)
    for k, v in values.items():
        setattr(a, k, int(v) if k in ("devices", "mec_slots") else v)
    return source


def scenario_from_args(a: argparse.Namespace) -> ScenarioConfig:
    """The scenario of parsed arguments (call :func:`resolve_args` first)."""
    variants: list[dict[str, int]] = [{}]
    for spec in a.repeats:
        name, _, vals = str(spec).partition("=")
        try:
            nums = [int(x) for x in vals.split(",") if x.strip()]
        except ValueError:
            nums = []
        if not name or not nums or min(nums) < 1:
            raise AgentError(f"--repeats {spec!r}: use PASS=N[,N...] with N >= 1, "
                             "e.g. decode=16,32,64")
        variants = [{**v, name: n} for v in variants for n in nums]
    workloads = tuple(v for v in variants if v)
    return ScenarioConfig(n_devices=a.devices, mec_slots=a.mec_slots, mec_queue_limit=a.mec_queue,
                          one_way_delay_s=a.delay_ms / 1e3, load=a.load,
                          shared_cell=a.shared_cell, horizon_s=a.horizon, workloads=workloads,
                          mask_budget=a.mask_budget, mec_model=a.mec_model,
                          mec_max_batch=a.mec_max_batch, mec_memory_gb=a.mec_memory_gb,
                          mec_batch_curve=a.mec_batch_curve, fallback=a.fallback)


def load_profiles(a: argparse.Namespace) -> tuple[Profile, Profile, list[Path]]:
    """The device and MEC profiles from ``--model`` or ``--device-profile/--mec-profile``."""
    if a.device_profile or a.mec_profile:
        if not (a.device_profile and a.mec_profile):
            raise AgentError("give both --device-profile and --mec-profile (or --model)")
        paths = [Path(a.device_profile), Path(a.mec_profile)]
    elif a.model:
        paths = [PROFILES_DIR / f"{a.model}.device.json", PROFILES_DIR / f"{a.model}.mec-cpu.json"]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            have = sorted({p.name.split(".")[0] for p in PROFILES_DIR.glob("*.json")})
            raise AgentError(f"no profiles for model {a.model!r} ({', '.join(missing)} missing); "
                             f"profiled models: {', '.join(have) or 'none'}; or pass "
                             "--device-profile and --mec-profile")
    else:
        raise AgentError("give --model NAME or --device-profile P --mec-profile Q")
    dev, mec = load_profile(paths[0]), load_profile(paths[1])
    if a.model and dev.model.name != a.model:
        raise ProfileError(f"{paths[0]}: profile is of model {dev.model.name!r}, not {a.model!r}")
    return dev, mec, paths


def trace_paths(specs: Sequence[str]) -> list[Path]:
    """Trace files named by ``specs`` (folders expand to their trace files, sorted)."""
    out: list[Path] = []
    for s in specs:
        p = Path(s)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                           and f.suffix.lower() not in _SKIP and "readme" not in f.name.lower())
            if not files:
                raise AgentError(f"{p}: folder has no trace files")
            out.extend(files)
        elif p.is_file():
            out.append(p)
        else:
            raise AgentError(f"{p}: no such trace file or folder")
    if not out:
        raise AgentError("no trace files given")
    return out


def load_trace_files(paths: Sequence[Path], scale: float) -> list[Trace]:
    """Load traces (zero-gap warnings off), scaled by ``scale``."""
    if not (scale > 0 and scale < float("inf")):
        raise AgentError(f"--scale must be a positive number, got {scale}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceWarning)
        out = [load_trace(p, scale=scale, warn_gap_s=None) for p in paths]
    for tr, p in zip(out, paths, strict=True):
        if tr.bytes_per_period <= 0:
            raise TraceError(f"{p}: the trace has zero capacity everywhere; remove it")
    return out


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def show_path(path: Path) -> str:
    """``path`` relative to the repository root when inside it (for provenance records)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(PROFILES_DIR.parent))
    except ValueError:
        return str(path)


def provenance(argv: Sequence[str], **extra: Any) -> dict[str, Any]:
    """Command line, versions and machine, plus ``extra``."""
    vers = {}
    for pkg in ("numpy", "torch", "gymnasium", "stable-baselines3", "sb3-contrib"):
        try:
            vers[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            vers[pkg] = "absent"
    cpu = cpu_model()
    return {"command": " ".join(["python", "-m", *argv]), "python": platform.python_version(),
            "versions": vers, "machine": {"cpu": cpu, "platform": platform.platform()}, **extra}


def run_main(prog: str, main: Callable[[list[str] | None], int],
             argv: list[str] | None = None) -> int:
    """Run ``main``; user errors become one line on stderr and exit status 2."""
    try:
        return main(argv)
    except (AgentError, ProfileError, TraceError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. an output folder that cannot be written
        where = f"{e.filename}: " if e.filename else ""
        print(f"{prog}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
