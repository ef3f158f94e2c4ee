"""``python -m emulator.run``: one real-time emulation of split AIGC inference.

Devices and a MEC server run as processes in Mininet hosts; each device's wireless hop is
shaped live from a bandwidth trace; before every request a device asks its policy where to
split. A bare ``sudo .venv/bin/python -m emulator.run`` runs the bundled demo: GPT-2 profiles,
the bundled cellular trace, the shipped policy, 2 devices, 40 s, results in ``runs/<time>/``.

Outputs in ``--out``: ``requests.jsonl`` (one record per finished request, written as it
finishes), ``link.csv`` (capacity and measured goodput per second), ``summary.json`` (counts,
latency statistics, shaper statistics, provenance), ``latency_timeline.png``,
``latency_cdf.png`` and ``logs/``. A request still running when the run stops is recorded
in ``summary.json`` (``unfinished_requests``), not lost.

High-rate mode (``--payload-scale``, :mod:`emulator.transport`): when the trace's peak exceeds
what this machine can shape (``emulator.doctor --measure-rate``, else 300 Mbit/s), the link is
shaped at ``F`` times the trace and every payload sent at ``F`` times its size, so transfer
times are the trace's; ``F`` and why are in ``summary.json`` (``high_rate``) and on the
console. Errors are one line ``emulator: ...`` and a non-zero exit
(2: bad input or missing prerequisite, 1: the run failed, 130: interrupted by Ctrl-C,
143: stopped by SIGTERM).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import math
import os
import shutil
import signal
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.defaults import (
    HelpFormatter,
    add_scenario_option,
    apply_scenario_file,
    mec_model_note,
    resolve_scenario,
    resolved_scenario,
    scenario_help,
)
from emulator.errors import EmulatorError
from emulator.provenance import file_sha256, provenance
from emulator.records import Predictor, check_out_dir
from emulator.session import RunPlan, run_session

__all__ = ["DEFAULT_TRACE", "PROFILES_DIR", "build_parser", "main", "resolve_profiles"]

_ROOT = Path(__file__).resolve().parent.parent
PROFILES_DIR = _ROOT / "profiles"
DEFAULT_TRACE = _ROOT / "traces" / "data" / "cellular_120s.csv"
_SHIPPED = ("gpt2", "sd15", "gpt2-tiny", "sd15-tiny")
_TOOLS = {"mnexec": "mininet", "tc": "iproute2", "ip": "iproute2"}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="sudo .venv/bin/python -m emulator.run",
        description="Real-time emulation of split generative-AI inference between mobile "
                    "devices and a MEC server over trace-shaped links. With no arguments: the "
                    "bundled demo.",
        formatter_class=HelpFormatter)
    add_scenario_option(ap)
    g = ap.add_argument_group("link")
    g.add_argument("--trace", default=str(DEFAULT_TRACE),
                   help="uplink capacity trace (Mahimahi, Pensieve, 5G CSV, Lumos, CSV)")
    g.add_argument("--format", default=None, help="trace format (default: detected)")
    g.add_argument("--scale", type=float, default=None,
                   help=scenario_help("scale", "multiply the trace's rates by X"))
    g.add_argument("--downlink", choices=("same", "none"), default="same",
                   help="downlink shaping: the same trace (as the simulator assumes) or none")
    g.add_argument("--shared-cell", action="store_true",
                   help="all devices share one cell of the trace's capacity")
    g.add_argument("--delay-ms", type=float, default=None,
                   help=scenario_help("delay_ms", "one-way propagation delay between devices "
                                      "and MEC, ms"))
    g.add_argument("--queue-bytes", type=int, default=None,
                   help="bounded queue of each shaped class (default: the network's choice)")
    g.add_argument("--window-clamp", type=int, default=None,
                   help="TCP_WINDOW_CLAMP bytes of device and MEC sockets (default: the shaped "
                        "queue's size, so transfers never overflow it; 0: off, to study loss)")
    g.add_argument("--payload-scale", default="auto", metavar="auto|F",
                   help="high-rate mode: shape the link at F x the trace and send F x every "
                        "payload (transfer times preserved; 0 < F <= 1, 1: off). auto: on when "
                        "the trace's peak exceeds what this machine can shape (emulator.doctor "
                        "--measure-rate, else 300 Mbit/s), F = 1/ceil(peak/limit)")
    g.add_argument("--network", choices=("mininet", "loopback"), default="mininet",
                   help="loopback: plain processes on 127.0.0.1, NO shaping (development)")
    g = ap.add_argument_group("workload")
    g.add_argument("--model", default="gpt2",
                   help="gpt2, sd15, gpt2-tiny, sd15-tiny (shipped profiles) or a device "
                        "PROFILE.json")
    g.add_argument("--mec-profile", default=None,
                   help="MEC profile (default: the shipped MEC profile of --model, or the "
                        "same file as a PROFILE.json --model)")
    g.add_argument("--tokens", type=int, default=None, help="decode tokens T per request")
    g.add_argument("--steps", type=int, default=None, help="denoising steps S per request")
    g.add_argument("--repeat", action="append", default=[], metavar="PASS=N",
                   help="repetitions of any pass per request (repeatable)")
    a = g.add_mutually_exclusive_group()
    a.add_argument("--rate", type=float, default=None,
                   help="Poisson arrivals per second per device (default: --load divided by "
                        "the model's fully-local latency)")
    a.add_argument("--load", type=float, default=None,
                   help=scenario_help("load", "offered load per device: fully-local latency "
                                      "/ mean inter-arrival (sets the Poisson --rate)"))
    a.add_argument("--closed-loop", action="store_true",
                   help="each device starts a request as soon as the previous one ends")
    g = ap.add_argument_group("system")
    g.add_argument("--policy", default="default",
                   help="local, offload, fixed:K, fixed, greedy, default, or an SB3 .zip")
    g.add_argument("--devices", type=int, default=None,
                   help=scenario_help("devices", "number of devices N"))
    g.add_argument("--mec-slots", type=int, default=None,
                   help=scenario_help("mec_slots", "slot MEC (--mec-model slots): concurrent "
                                      "compute slots C"))
    g.add_argument("--mec-speedup", type=float, default=None,
                   help=scenario_help("mec_speedup", "divide every MEC block time by X, at the "
                                      "MEC and in the policy's latency model (emulates a faster "
                                      "MEC, e.g. a GPU, from a CPU profile)"))
    g.add_argument("--mec-model", choices=("slots", "batch"), default=None,
                   help="MEC server model: iteration-level batching (agent/mec_server.py; "
                   "profiled compute) or exclusive slots (default: batch; slots with "
                   "--compute execute, which runs real pieces one session at a time)")
    g.add_argument("--mec-max-batch", type=int, default=8,
                   help="batching MEC: most active sessions")
    g.add_argument("--mec-memory-gb", type=float, default=None,
                   help="batching MEC: memory budget, GB (weights + live state; default none)")
    g.add_argument("--mec-batch-curve", default="auto",
                   help="batching MEC: 'auto' (the MEC profile's own batch curve if measured, "
                   "else the model's shipped GPU profile profiles/<model>.mec-gpu.json as a "
                   "shape, else llama7b-gpu), 'profile', 'llama7b-gpu' (a published GPU curve "
                   "on the batch-1 profile) or a batch profile file")
    g.add_argument("--fallback", type=float, default=None, metavar="F",
                   help="devices run a request that computes only on the MEC locally too once "
                   "F times its local latency has passed without its final output; the first "
                   "to finish ends it and the MEC session is released (profiled compute; "
                   "default off)")
    g.add_argument("--compute", choices=("profiled", "execute"), default="profiled",
                   help="wait out profiled block times, or execute ONNX pieces")
    g.add_argument("--pieces", default=None,
                   help="execute mode: export directory with <pass>.pieces/ (default: the "
                        "newest fitting one in the profiler's cache)")
    g.add_argument("--jitter", choices=("lognormal", "none"), default="lognormal",
                   help="profiled block times: lognormal(median, std) draws, or medians")
    g.add_argument("--no-realtime", action="store_true",
                   help="do not give device/MEC compute SCHED_FIFO priority 5 (precise waits)")
    g = ap.add_argument_group("run")
    g.add_argument("--duration", type=float, default=40.0,
                   help="seconds during which requests arrive")
    g.add_argument("--grace", type=float, default=30.0,
                   help="seconds after --duration to let requests in flight finish")
    g.add_argument("--seed", type=int, default=1, help="seed of arrivals and block times")
    g.add_argument("--out", default=None, help="output directory (default runs/<UTC time>)")
    g.add_argument("--quiet", action="store_true", help="no progress lines")
    return ap


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not (math.isfinite(value) and lo <= value <= hi):
        raise EmulatorError(f"{name} must be in [{lo:g}, {hi:g}], got {value:g}", 2)


def resolve_profiles(model: str, mec_profile: str | None) -> tuple[Path, Path]:
    """Paths of the device and MEC profiles for ``--model`` / ``--mec-profile``."""
    if model in _SHIPPED:
        dev = PROFILES_DIR / f"{model}.device.json"
        mec = Path(mec_profile) if mec_profile else PROFILES_DIR / f"{model}.mec-cpu.json"
        for p in (dev, mec):
            if not p.is_file():
                raise EmulatorError(f"profile {p} not found: the shipped {model} profiles are "
                                    "missing from this checkout (make them with python -m "
                                    "profiler, or pass --model PROFILE.json)", 2)
        return dev, mec
    dev = Path(model)
    if not dev.suffix == ".json" and not dev.exists():
        raise EmulatorError(f"--model {model!r}: use one of {', '.join(_SHIPPED)} or a profile "
                            "file PROFILE.json", 2)
    return dev, Path(mec_profile) if mec_profile else dev


def _repeats(args: argparse.Namespace, pass_names: list[str]) -> list[str]:
    reps = list(args.repeat)
    for opt, pname, n in (("--tokens", "decode", args.tokens), ("--steps", "unet", args.steps)):
        if n is None:
            continue
        if pname not in pass_names:
            raise EmulatorError(f"{opt} needs a model with a {pname!r} pass; this one has "
                                f"{', '.join(pass_names)} (use --repeat PASS=N)", 2)
        _check_range(opt, n, 1, 100_000)
        reps.append(f"{pname}={n}")
    return reps


def _check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise EmulatorError("the emulator needs root for network namespaces and tc: run with "
                            "sudo .venv/bin/python -m emulator.run", 2)
    missing = sorted({pkg for tool, pkg in _TOOLS.items() if shutil.which(tool) is None})
    if importlib.util.find_spec("mininet") is None:
        missing.append("mininet (Python module)")
    if missing:
        raise EmulatorError(f"missing: {', '.join(missing)}; install everything with "
                            "bash scripts/setup.sh", 2)


class _Simulator:
    """The simulator's prediction of recorded requests, on the trace as the network replays it
    (``net.up_traces``: resampled like the shaper; the trace itself on loopback):

    * per request as it finishes (``__call__``): :func:`agent.latency.simulate_request` with the
      request's decision, workload and start time and an idle MEC;
    * for the whole run (``parity``, in ``summary.json``): every recorded request with the
      MEC's contention (:mod:`emulator.parity`), so the waits the requests caused each other
      are predicted too."""

    def __init__(self, plan: RunPlan, dev: Any, mec: Any, delay_s: float, downlink: bool,
                 net: Any) -> None:
        from agent.latency import LatencyModel
        from agent.link import Link

        self.model = LatencyModel(dev, mec, mec_speedup=plan.mec_speedup)
        self.fallback = plan.fallback
        self.slots = plan.mec_slots
        self.mec_config = plan.mec_config
        up = (getattr(net, "up_traces", None) or [plan.trace])[0]
        self.trace_source = "network replay" if hasattr(net, "up_traces") else "trace file"
        real = 1.0 / plan.payload_scale if hasattr(net, "up_traces") else 1.0  # high-rate mode
        if plan.shared_cell:
            up = up.scaled(real / plan.n_devices)
        elif real != 1.0:
            up = up.scaled(real)
        downs = getattr(net, "down_traces", None)
        down = downs[0].scaled(real) if downs else None
        if down is not None and plan.shared_cell:
            down = down.scaled(1.0 / plan.n_devices)
        # an unshaped downlink is modelled as effectively unlimited
        self.link = Link(up=up, down=down if downlink else up.scaled(1e6),
                         one_way_delay_s=delay_s)

    def __call__(self, rec: dict[str, Any]) -> dict[str, Any]:
        from emulator.parity import simulate_record

        r = simulate_record(self.model, self.link, rec, fallback=self.fallback).to_record()
        return {"latency_s": r["latency_s"], "ttft_s": r["ttft_s"], "tpot_s": r["tpot_s"],
                "phases": r["phases"]}

    def parity(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Every record against the simulator with MEC contention (:mod:`emulator.parity`):
        against the MEC occupancy the records show, and with the simulator's own MEC."""
        from emulator.parity import compare, replay_with

        out: dict[str, Any] = {}
        for mode in ("measured", "predicted"):
            pairs = replay_with(self.model, self.link, records, mec_slots=self.slots,
                                mec_sessions=mode, mec_config=self.mec_config,
                                fallback=self.fallback)
            out[f"mec_{mode}"] = compare(pairs)
        own = ("iteration-level batching, agent.batchsim, every request together"
               if self.mec_config is not None and self.mec_config.model == "batch"
               else "slots, FIFO by first-ready time")
        out["note"] = ("relative error (measured - simulated) / simulated of every recorded "
                       "request replayed through agent.latency with its decision, workload and "
                       "start time on the trace as replayed; mec_measured: against the MEC "
                       "sessions the records show; mec_predicted: the simulator's own MEC "
                       f"({own}), errors carry on")
        return out


def _make_predictor(plan: RunPlan, dev: Any, mec: Any, delay_s: float, downlink: bool,
                    net: Any) -> Predictor | None:
    """The simulator's prediction of each recorded request, if agent/ is there."""
    try:
        return _Simulator(plan, dev, mec, delay_s, downlink, net)
    except ImportError:
        return None


def _scenario(args: argparse.Namespace, dev_path: Path, mec_path: Path) -> float:
    """Fill the scenario knobs not given (:func:`agent.defaults.resolve_scenario`: the
    policy's, else the model's shipped policy's training scenario, else the defaults), print
    each mismatch with a trained policy's scenario; returns the model's fully-local latency."""
    from agent.errors import AgentError
    from agent.latency import LatencyModel
    from agent.policy import Workload
    from profiler.schema import ProfileError, load_profile

    try:
        dev, mec = load_profile(dev_path), load_profile(mec_path)
        local_s = LatencyModel(dev, mec).local_latency(Workload(dev.model.name))
    except (AgentError, ProfileError, ValueError) as e:
        raise EmulatorError(str(e), 2) from e
    given = {"delay_ms": args.delay_ms, "mec_speedup": args.mec_speedup,
             "devices": args.devices, "mec_slots": args.mec_slots, "scale": args.scale,
             "load": args.load if args.rate is None else args.rate * local_s}
    if args.closed_loop:
        given["load"] = None
    values, warns, _source = resolve_scenario(given, args.policy, dev.model.name)
    for w in warns:
        print(f"emulator: {w}", file=sys.stderr)
    for k, v in values.items():
        setattr(args, k, int(v) if k in ("devices", "mec_slots") else v)
    return local_s


def high_rate(trace: Any, spec: str, compute: str, network: str) -> dict[str, Any]:
    """High-rate mode (:mod:`emulator.transport`): the payload scale F for ``--payload-scale
    spec`` and the trace, and what decided it (recorded in summary.json)."""
    from emulator.doctor import shaping_limit
    from emulator.parity import averaged

    peak = float(averaged(trace, 0.1).rates_bps.max())  # as the shaper replays it
    limit, source = shaping_limit()
    rec: dict[str, Any] = {"trace_peak_mbps": peak / 1e6, "limit_mbps": limit / 1e6,
                           "limit_source": source}
    if spec == "auto":
        f = 1.0 / math.ceil(peak / limit - 1e-9) if peak > limit * (1 + 1e-9) else 1.0
        why = (f"trace peak {peak / 1e6:.4g} Mbit/s > shaping limit {limit / 1e6:g} Mbit/s"
               if f < 1 else "trace peak within the shaping limit")
    else:
        try:
            f = float(spec)
        except ValueError:
            f = math.nan
        if not (math.isfinite(f) and 0 < f <= 1):
            raise EmulatorError(f"--payload-scale must be auto or a number in (0, 1], got "
                                f"{spec!r}", 2)
        why = "--payload-scale given"
    if f < 1 and compute == "execute":
        raise EmulatorError("high-rate mode (payload scale "
                            f"{f:g}: {why}) cannot carry execute mode's real tensors; use "
                            "--compute profiled, a slower trace (--scale), or "
                            "--payload-scale 1 (shaping may then fall behind the trace)", 2)
    if network == "loopback":
        f, why = 1.0, "loopback network: nothing is shaped"
    rec.update(payload_scale=f, active=f < 1, reason=why,
               shaped_peak_mbps=peak * f / 1e6)
    if f < 1:
        rec["note"] = ("every DATA/ECHO payload is sent at payload_scale x its size and the "
                       "link shaped at payload_scale x the trace, so transfer times are the "
                       "trace's; records, link.csv and the simulator are in real bytes and "
                       "rates. Not scaled: message framing (~100 B), TCP/IP headers and ACKs "
                       "(1/payload_scale times longer on the wire), the segment count per "
                       "transfer (slow start), the shaper's queue in bytes")
    return rec


def _plan(args: argparse.Namespace) -> tuple[RunPlan, Any, Any]:
    from profiler.schema import ProfileError, check_compatible, load_profile
    from traces import TraceError, TraceWarning, load_trace

    if args.rate is not None:
        _check_range("--rate", args.rate, 1e-4, 1_000)
    dev_path, mec_path = resolve_profiles(args.model, args.mec_profile)
    local_s = _scenario(args, dev_path, mec_path)
    _check_range("--devices", args.devices, 1, 200)
    _check_range("--mec-slots", args.mec_slots, 1, 64)
    _check_range("--duration", args.duration, 0.1, 86_400)
    _check_range("--grace", args.grace, 0, 3_600)
    _check_range("--delay-ms", args.delay_ms, 0, 5_000)
    _check_range("--scale", args.scale, 1e-6, 1e6)
    _check_range("--mec-speedup", args.mec_speedup, 1e-3, 1e6)
    _check_range("--load", args.load, 1e-6, 100)
    if args.fallback is not None:
        _check_range("--fallback", args.fallback, 0, 1e6)
        if args.compute != "profiled":
            raise EmulatorError("--fallback runs with profiled compute only (give --compute "
                                "profiled)", 2)
    if args.queue_bytes is not None:
        _check_range("--queue-bytes", args.queue_bytes, 3028, 1 << 31)
    if args.window_clamp is not None:
        _check_range("--window-clamp", args.window_clamp, 0, 1 << 30)
    rate = None if args.closed_loop else (args.load / local_s if args.rate is None else args.rate)
    if rate is not None:
        _check_range("--rate", rate, 1e-4, 1_000)
    try:
        dev = load_profile(dev_path)
        mec = load_profile(mec_path)
        if args.model in _SHIPPED and dev.model.name != args.model:
            raise ProfileError(f"{dev_path} is a profile of {dev.model.name!r}, not of "
                               f"--model {args.model}")
        check_compatible(dev, mec)
    except ProfileError as e:
        raise EmulatorError(str(e), 2) from e
    from agent.errors import AgentError
    from agent.latency import LatencyModel
    from agent.mec_server import BatchServer, MecConfig

    try:
        if args.mec_model is None:  # execute mode runs real pieces, one session at a time
            args.mec_model = "batch" if args.compute == "profiled" else "slots"
        mec_config = MecConfig(args.mec_model, args.mec_max_batch, args.mec_memory_gb,
                               args.mec_batch_curve).resolved(mec)
        if mec_config.model == "batch":
            if args.compute != "profiled":
                raise AgentError("--mec-model batch runs profiled compute only (give "
                                 "--mec-model slots with --compute execute)")
            BatchServer.for_model(LatencyModel(dev, mec, mec_speedup=args.mec_speedup),
                                  mec_config)
    except (AgentError, ProfileError) as e:
        raise EmulatorError(str(e), 2) from e
    note = mec_model_note(args.policy, dev.model.name, mec_config.model)
    if note:
        print(f"emulator: {note}", file=sys.stderr)
    mec_args = [] if mec_config.model == "slots" else [
        "--mec-model", "batch", "--max-batch", str(mec_config.max_batch), "--batch-curve",
        mec_config.batch_curve,
        *([] if mec_config.memory_gb is None else ["--memory-gb", f"{mec_config.memory_gb!r}"])]
    pieces = None
    if args.compute == "execute":
        from emulator.execute import find_pieces_dir

        pieces = find_pieces_dir(dev, args.pieces)
    repeats = _repeats(args, [p.name for p in dev.passes])
    from emulator.device import parse_repeats

    parse_repeats(repeats, dev)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TraceWarning)
            trace = load_trace(args.trace, args.format, scale=args.scale)
        for w in caught:
            print(f"emulator: warning: {w.message}", file=sys.stderr)
        trace.finish_time(0.0, 1.0)  # an all-zero trace fails here, not mid-run
    except TraceError as e:
        raise EmulatorError(f"--trace: {e}", 2) from e
    rate_mode = high_rate(trace, str(args.payload_scale), args.compute, args.network)
    from emulator.policies import load_policy

    # as the device processes load it: a trained policy's network in numpy (no torch)
    policy, note = load_policy(args.policy, dev, mec, light=True, mec_speedup=args.mec_speedup)
    if note:
        print(f"emulator: {note}", file=sys.stderr)
    spec = "greedy" if policy.name == "greedy" and args.policy == "default" else args.policy
    if args.out:
        out = Path(args.out)
        if (out / "requests.jsonl").exists():
            raise EmulatorError(f"--out {out} already holds a run (requests.jsonl); choose "
                                "another directory", 2)
    else:
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
        out = _ROOT / "runs" / stamp
    check_out_dir(out)  # writable, some space: before the network is built
    plan = RunPlan(out_dir=out.resolve(), device_profile=dev_path.resolve(),
                   mec_profile=mec_path.resolve(), model=dev.model.name, trace=trace,
                   n_devices=args.devices, policy=spec, seed=args.seed,
                   duration_s=args.duration, rate=rate, mec_slots=args.mec_slots,
                   mec_args=mec_args, mec_label=mec_config.label, mec_config=mec_config,
                   repeats=repeats, jitter=args.jitter, compute=args.compute,
                   grace_s=args.grace, shared_cell=args.shared_cell,
                   mec_speedup=args.mec_speedup, progress=not args.quiet,
                   # real ONNX work must not run at RT priority (it would starve the rest)
                   realtime=(not args.no_realtime and args.network == "mininet"
                             and args.compute == "profiled"),
                   pieces=pieces, startup_timeout_s=60.0 + 15.0 * args.devices,
                   window_clamp=args.window_clamp, fallback=args.fallback,
                   payload_scale=float(rate_mode["payload_scale"]), high_rate=rate_mode)
    del policy
    return plan, dev, mec


def _network(plan: RunPlan, args: argparse.Namespace) -> Any:
    if args.network == "loopback":
        from emulator.loopback import LoopbackNetwork

        return LoopbackNetwork(plan.n_devices, plan.trace)
    from emulator.net import EmulatedNetwork, NetConfig

    shaped = plan.trace.scaled(plan.payload_scale) if plan.payload_scale < 1 else plan.trace
    cfg = NetConfig(n_devices=plan.n_devices, uplink=shaped,
                    downlink=shaped if args.downlink == "same" else None,
                    shared_cell=plan.shared_cell, one_way_delay_s=args.delay_ms / 1e3,
                    queue_bytes=args.queue_bytes)
    return EmulatedNetwork(cfg)


def _run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    if args.network == "mininet":
        _check_prerequisites()
    plan, dev, mec = _plan(args)
    from agent.latency import fallback_label

    delay_s = args.delay_ms / 1e3 if args.network == "mininet" else 0.0
    inputs = {
        "trace": {"path": str(Path(args.trace).resolve()), "format": args.format,
                  "scale": args.scale, "sha256": plan.trace.sha256(),
                  "file_sha256": file_sha256(args.trace), "name": plan.trace.label,
                  "mean_mbps": plan.trace.mean_bps() / 1e6},
        "device_profile": {"path": str(plan.device_profile),
                           "sha256": file_sha256(plan.device_profile)},
        "mec_profile": {"path": str(plan.mec_profile), "sha256": file_sha256(plan.mec_profile)},
        "network": args.network, "delay_ms": args.delay_ms, "downlink": args.downlink,
        "load": None if plan.rate is None else args.load, "fallback": plan.fallback,
        "resolved_scenario": resolved_scenario(args.scenario_file, args, "emulator"),
    }
    prov = provenance(list(argv), args.seed, inputs)
    arrivals = ("closed loop" if plan.rate is None else
                f"load {args.load:g} ({plan.rate:.3g} requests/s per device)")
    print(f"emulator: {plan.model}, {plan.n_devices} device(s), "
          f"{f'{plan.mec_slots} MEC slot(s)' if plan.mec_label == 'slots' else 'MEC ' + plan.mec_label}, "
          f"policy {plan.policy}, MEC speedup {plan.mec_speedup:g}, delay {args.delay_ms:g} ms, "
          f"{arrivals}, trace {plan.trace.label} x{args.scale:g} "
          f"(mean {plan.trace.mean_bps() / 1e6:.2f} Mbit/s), "
          + (f"{fallback_label(plan.fallback)}, " if plan.fallback is not None else "")
          + f"{plan.duration_s:g} s -> {plan.out_dir}", file=sys.stderr, flush=True)
    hr = plan.high_rate
    if hr.get("active"):
        print(f"emulator: high-rate mode: payloads and link x{plan.payload_scale:.4g} "
              f"({hr['reason']}; limit: {hr['limit_source']}); transfer times are the "
              "trace's, per-packet effects are not (see summary.json high_rate)",
              file=sys.stderr, flush=True)
    with _network(plan, args) as net:
        predictor = _make_predictor(plan, dev, mec, delay_s, args.downlink == "same", net)
        n = run_session(plan, net, predictor, prov)
    import json

    summary = json.loads((plan.out_dir / "summary.json").read_text())
    def _fig(key: str) -> str:
        st = summary[key]
        if st["mean_s"] is None:
            return "-"
        return f"mean {st['mean_s']:.3f} s, p95 {st['p95_s']:.3f} s"

    unf = (f" ({summary['unfinished']} unfinished when the run stopped)"
           if summary.get("unfinished") else "")
    hr_txt = (f"; high-rate mode x{plan.payload_scale:.4g}"
              if plan.high_rate.get("active") else "")
    print(f"emulator: {summary['status']}: {n} requests{unf}{hr_txt}; "
          f"service latency {_fig('latency')}; "
          f"response time {_fig('response')}; results in {plan.out_dir}", file=sys.stderr)
    return 130 if summary["status"] == "interrupted" else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    from agent.errors import AgentError

    try:
        scenario_file = apply_scenario_file(parser, argv, "emulator")
    except AgentError as e:
        print(f"emulator: {e}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    args.scenario_file = scenario_file

    got: list[int] = []

    def _on_term(signum: int, _frame: Any) -> None:
        got.append(signum)
        raise KeyboardInterrupt  # the same orderly stop as Ctrl-C

    def _code(code: int) -> int:  # stopped by SIGTERM: 128 + 15, as the shell reports it
        return 128 + signal.SIGTERM if got and code == 130 else code

    prev = signal.signal(signal.SIGTERM, _on_term)
    # SIGINT always stops the run as Ctrl-C does, also when it was started with SIGINT ignored
    # (a background job of a non-interactive shell inherits that)
    prev_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _code(_run(args, argv))
    except EmulatorError as e:
        print(f"emulator: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("emulator: interrupted", file=sys.stderr)
        return _code(130)
    finally:
        signal.signal(signal.SIGTERM, prev)
        signal.signal(signal.SIGINT, prev_int)


if __name__ == "__main__":
    sys.exit(main())
