"""One emulation run: start the MEC and device processes in the network, follow, collect.

:func:`run_session` is given a validated :class:`RunPlan` and a network (the Mininet
:class:`emulator.net.EmulatedNetwork` or :class:`emulator.loopback.LoopbackNetwork`, already
entered). It

1. starts the MEC process in the MEC host and waits for its ``{"ready", "port"}`` line;
2. starts one device process per device host; each connects, says ``{"ready": true}``;
3. picks trace time 0 (``t0``, a ``time.monotonic()`` value shared by all hosts), starts the
   shaper at ``t0`` and sends ``{"t0": ...}`` to every device;
4. writes every request record as it arrives (reader thread per device) and prints a progress
   line to stderr once per second;
5. after ``duration`` the devices stop issuing requests and finish the ones that arrived
   (up to ``grace_s``; a device in execute mode that then checks its outputs gets ``grace_s``
   more from when it says so); then everything is stopped and ``link.csv``,
   ``summary.json`` and the plots are written.

Every exit path (normal end, Ctrl-C, SIGTERM turned into ``KeyboardInterrupt`` by the caller,
crash) goes through one ``finally``: processes are terminated (then killed), readers drained,
``requests.jsonl`` closed, and the outputs written with the run's ``status``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from emulator.errors import EmulatorError, OutputError
from emulator.figures import figures, progress_text
from emulator.guard import TOKEN_ENV, new_token
from emulator.plots import plot_run
from emulator.records import RecordSink, summarize, write_atomic, write_link_csv
from emulator.transport import PAYLOAD_SCALE_ENV
from traces import Trace

__all__ = ["RunPlan", "run_session"]

_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class RunPlan:
    """Everything a run needs, validated by the ``run`` command."""

    out_dir: Path
    device_profile: Path
    mec_profile: Path
    model: str
    trace: Trace
    n_devices: int
    policy: str
    seed: int
    duration_s: float
    rate: float | None
    mec_slots: int = 1
    mec_args: list[str] = field(default_factory=list)
    """Extra MEC server-model flags (``--mec-model batch --max-batch B ...``; empty: slots)."""
    mec_label: str = "slots"
    mec_config: Any = None
    """The :class:`agent.mec_server.MecConfig` (``None``: slots), for the parity replay."""
    repeats: list[str] = field(default_factory=list)
    jitter: str = "lognormal"
    compute: str = "profiled"
    grace_s: float = 30.0
    shared_cell: bool = False
    mec_speedup: float = 1.0
    probe_bytes: int = 32_768
    fallback: float | None = None
    """The devices' local fallback (``--fallback F``; None: off)."""
    startup_timeout_s: float = 90.0
    progress: bool = True
    realtime: bool = True
    pieces: Path | None = None
    window_clamp: int | None = None
    """TCP_WINDOW_CLAMP of both ends; None: the network's shaped queue size; 0: off."""
    payload_scale: float = 1.0
    """High-rate mode's factor (emulator.transport): < 1 shrinks payloads and the link."""
    high_rate: dict[str, Any] = field(default_factory=dict)
    """What decided the payload scale (emulator.run.high_rate), for summary.json."""


def _env(token: str, payload_scale: float = 1.0) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(PAYLOAD_SCALE_ENV, None)
    if payload_scale < 1.0:  # high-rate mode: every device's and the MEC's Sender shrinks
        env[PAYLOAD_SCALE_ENV] = repr(payload_scale)
    env[TOKEN_ENV] = token  # the MEC accepts only devices that present it (emulator.guard)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    env["AIGC_AGENT_NO_GYM"] = "1"  # device and MEC never make the Gymnasium env (agent/)
    return env


class _Proc:
    """A started process with a stdout reader thread and a log file for stderr."""

    def __init__(self, name: str, popen: subprocess.Popen[str], log: IO[str],
                 on_line: Callable[[_Proc, dict[str, Any]], None]) -> None:
        self.name = name
        self.p = popen
        self.log = log
        self.ready = threading.Event()
        self.info: dict[str, Any] = {}
        self.exit_info: dict[str, Any] = {}
        self.unfinished: list[dict[str, Any]] = []
        self.checking_since: float | None = None
        """When the device said its requests are over and it checks their outputs (execute
        mode), ``time.monotonic()``; ``None`` before."""
        self.bad_lines = 0
        self._on_line = on_line
        self.thread = threading.Thread(target=self._read, name=f"read-{name}", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                self.bad_lines += 1
                continue
            if isinstance(obj, dict) and obj.get("ready") is True:
                self.info = obj
                self.ready.set()
            elif isinstance(obj, dict) and obj.get("exit") is True:
                self.exit_info = obj
            elif isinstance(obj, dict) and obj.get("unfinished") is True:
                self.unfinished.append(obj)
            elif isinstance(obj, dict) and "checking" in obj and len(obj) == 1:
                self.checking_since = time.monotonic()
            elif isinstance(obj, dict):
                self._on_line(self, obj)

    def log_tail(self) -> str:
        self.log.flush()
        try:
            lines = Path(self.log.name).read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def stop(self, timeout_s: float = 3.0) -> None:
        if self.p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.p.terminate()
            try:
                self.p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.p.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.p.wait(timeout=timeout_s)
        self.thread.join(timeout=timeout_s)


def _wait_ready(procs: list[_Proc], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for pr in procs:
        while not pr.ready.wait(0.1):
            if pr.p.poll() is not None:
                raise EmulatorError(f"{pr.name} exited during start-up: "
                                    f"{pr.log_tail() or 'no message'} (log: {pr.log.name})")
            if time.monotonic() > deadline:
                raise EmulatorError(f"{pr.name} did not start within {timeout_s:.0f} s "
                                    f"(log: {pr.log.name})")


def run_session(plan: RunPlan, net: Any, predictor: Any, provenance: dict[str, Any]) -> int:
    """Run the plan inside ``net``; returns the number of finished requests."""
    out = plan.out_dir
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    sink = RecordSink(out / "requests.jsonl", predictor)
    reserve = _reserve_space(out / ".reserved-for-summary", _SUMMARY_RESERVE)
    procs: list[_Proc] = []
    devices: list[_Proc] = []
    status = "failed"
    t0 = math.nan
    t_stop = math.nan
    error = ""
    log_files: list[IO[str]] = []
    token = new_token()
    # the MEC's per-request stamps go through here, not over the emulated link (see mec.py)
    reports = out / ".reports"
    reports.mkdir(exist_ok=True)

    def on_record(_pr: _Proc, rec: dict[str, Any]) -> None:
        sink.add(rec)

    def start(name: str, host: Any, argv: list[str], stdin: bool) -> _Proc:
        log = (logs / f"{name}.log").open("w", encoding="utf-8")
        log_files.append(log)
        p = net.popen(host, [sys.executable, *argv], stdout=subprocess.PIPE,
                      stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stderr=log,
                      text=True, bufsize=1, cwd=str(_ROOT),
                      env=_env(token, plan.payload_scale))
        pr = _Proc(name, p, log, on_record)
        procs.append(pr)
        return pr

    clamp = plan.window_clamp
    if clamp is None:  # payload bytes in flight < the queue's wire bytes (1448/1514 + margin)
        clamp = int(0.9 * int(getattr(net, "queue_bytes", 0) or 0))
    # the network's congestion control, set on each socket (emulator.protocol.configure_socket)
    congestion = str(getattr(net, "tcp_congestion", "") or "")
    cc = ["--tcp-congestion", congestion] if congestion else []
    try:
        mec = start("mec", net.mec, [
            "-m", "emulator.mec", "--profile", str(plan.mec_profile),
            "--host", net.mec.IP(), "--device-profile", str(plan.device_profile),
            # a session silent through the trace's longest outage is not idle
            "--session-idle", f"{120.0 + max((e - s for s, e in plan.trace.zero_gaps()), default=0.0):g}",
            *[a for r in plan.repeats for a in ("--repeat", r)],
            "--window-clamp", str(clamp), *cc,
            "--slots", str(plan.mec_slots), "--seed", str(plan.seed), "--jitter", plan.jitter,
            "--compute", plan.compute, "--speedup", str(plan.mec_speedup), *plan.mec_args,
            *(["--pieces", str(plan.pieces)] if plan.pieces else []),
            *([] if plan.realtime else ["--no-realtime"]), "--report-dir", str(reports)],
            stdin=False)
        _wait_ready([mec], plan.startup_timeout_s)
        addr = f"{net.mec.IP()}:{int(mec.info['port'])}"
        for i, host in enumerate(net.devices):
            argv = ["-m", "emulator.device", "--index", str(i), "--mec", addr,
                    "--profile", str(plan.device_profile), "--mec-profile", str(plan.mec_profile),
                    "--policy", plan.policy, "--seed", str(plan.seed),
                    "--duration", str(plan.duration_s), "--jitter", plan.jitter,
                    "--mec-speedup", str(plan.mec_speedup), "--probe-bytes",
                    str(plan.probe_bytes), "--wait-go"]
            argv += ["--closed-loop"] if plan.rate is None else ["--rate", str(plan.rate)]
            argv += [] if plan.realtime else ["--no-realtime"]
            argv += ["--compute", plan.compute, "--window-clamp", str(clamp), *cc]
            argv += ["--report-dir", str(reports)]
            argv += ["--fallback", repr(plan.fallback)] if plan.fallback is not None else []
            argv += ["--pieces", str(plan.pieces)] if plan.pieces else []
            for r in plan.repeats:
                argv += ["--repeat", r]
            devices.append(start(f"device-{i}", host, argv, stdin=True))
        _wait_ready(devices, plan.startup_timeout_s)
        t0 = time.monotonic() + 0.3
        net.start_shaping(t0)
        for d in devices:
            assert d.p.stdin is not None
            d.p.stdin.write(json.dumps({"t0": t0}) + "\n")
            d.p.stdin.flush()
        status = "running"
        _follow(plan, net, devices, sink, t0)
        status = "completed"
    except KeyboardInterrupt:
        status = "interrupted"
        print("\nemulator: interrupted; stopping processes and writing what finished",
              file=sys.stderr)
    except OutputError as e:  # reported below, once the outputs that fit are written
        status, error = "failed", str(e)
    except EmulatorError as e:
        status, error = "failed", str(e)
        raise
    except BaseException as e:
        status, error = "failed", f"{type(e).__name__}: {e}"
        raise
    finally:
        t_stop = time.monotonic()
        for pr in reversed(procs):  # devices first, the MEC last
            pr.stop()
        for f in log_files:
            f.close()
        shutil.rmtree(reports, ignore_errors=True)
        sink.close()
        with contextlib.suppress(Exception):
            net.stop_shaping()
        with contextlib.suppress(OSError):
            reserve.unlink()  # its space is now summary.json's and link.csv's
        out_error = _write_outputs(plan, net, sink, provenance, status, error, t0, t_stop, procs)
    if sink.error or out_error:
        raise OutputError(_output_failure(plan, sink, out_error))
    return len(sink.records)


_SUMMARY_RESERVE = 512 * 1024
"""Bytes set aside at the start so summary.json and link.csv fit even if the disk fills."""


def _reserve_space(path: Path, n: int) -> Path:
    """Allocate ``n`` bytes in ``path`` (freed before the outputs are written)."""
    with contextlib.suppress(OSError), path.open("wb") as f:
        os.posix_fallocate(f.fileno(), 0, n)
    return path


def _output_failure(plan: RunPlan, sink: RecordSink, out_error: str | None) -> str:
    """The one line that ends a run whose outputs could not be written."""
    kept = (f"{len(sink.records)} request record(s) kept in {plan.out_dir / 'requests.jsonl'}"
            if sink.records else "no request record was written")
    summary = ("summary.json not written" if out_error and "summary.json" in out_error
               else "summary.json written")
    return f"{sink.error or out_error}; the run stopped ({kept}, {summary})"


def _follow(plan: RunPlan, net: Any, devices: list[_Proc], sink: RecordSink,
            t0: float) -> None:
    t_end = t0 + plan.duration_s
    deadline = t_end + plan.grace_s

    def due(d: _Proc) -> float:
        """A device running requests has until ``deadline``; one checking its outputs (its
        requests over) has ``grace_s`` from when it started, and at least ``deadline``."""
        since = d.checking_since
        return deadline if since is None else max(deadline, since + plan.grace_s)

    next_print = t0 + 1.0
    while True:
        now = time.monotonic()
        if sink.error:  # a full or failing disk ends the run (the caller says so in one line)
            raise OutputError(sink.error)
        alive = [d for d in devices if d.p.poll() is None]
        if not alive:
            break
        if all(now > due(d) for d in alive):
            busy = sum(d.checking_since is None for d in alive)
            print(f"emulator: {busy} device(s) still running requests and "
                  f"{len(alive) - busy} still checking outputs past the grace period "
                  f"({plan.grace_s:.0f} s); stopping them (unfinished requests are recorded as "
                  "such, unchecked ones without a check, in summary.json)", file=sys.stderr)
            break
        if plan.progress and now >= next_print:
            next_print += 1.0
            _progress(net, sink, now - t0, len(alive), plan.payload_scale)
        time.sleep(0.1)
    failed = [d for d in devices if d.p.poll() not in (None, 0)]
    if sink.error:
        raise OutputError(sink.error)
    if failed:
        d = failed[0]
        raise EmulatorError(f"{d.name} failed: {d.log_tail() or 'no message'} "
                            f"(log: {d.log.name})")


def _progress(net: Any, sink: RecordSink, t: float, alive: int, scale: float = 1.0) -> None:
    recs = sink.snapshot()
    cap = net.capacity_at(0, t) / 1e6 / scale  # the trace's rate (high-rate mode: unscaled)
    last = [r["latency_s"] for r in recs[-5:]]
    print(f"emulator: t={t:6.1f} s  requests done {len(recs):4d}  devices busy {alive}  "
          f"capacity {cap:7.2f} Mbit/s  {progress_text(recs)}  "
          f"last service {'/'.join(f'{x:.2f}' for x in last)}", file=sys.stderr, flush=True)


def _write_outputs(plan: RunPlan, net: Any, sink: RecordSink, prov: dict[str, Any],
                   status: str, error: str, t0: float, t_stop: float,
                   procs: list[_Proc]) -> str | None:
    """Write link.csv, summary.json and the plots, each whole or not at all; returns what
    could not be written (None: all of it)."""
    out = plan.out_dir
    records = sink.snapshot()
    unfinished = [u for pr in procs for u in pr.unfinished]
    try:
        rows = net.link_rows()
        stats = net.shaper_stats()
    except Exception as e:
        rows, stats = [], {"error": f"{type(e).__name__}: {e}"}
    if plan.payload_scale < 1.0:  # high-rate mode: link.csv in the trace's real rates
        rows = [{k: (round(v / plan.payload_scale, 4) if k.endswith("_mbps")
                     and isinstance(v, float)
                     else v) for k, v in r.items()} for r in rows]
    failure: str | None = None
    try:
        write_link_csv(out / "link.csv", rows)
    except OSError as e:
        failure = f"cannot write {out / 'link.csv'}: {e.strerror or e}"
    summary: dict[str, Any] = {
        "status": status,
        **({"error": error} if error else {}),
        "model": plan.model,
        "policy": plan.policy,
        "devices": plan.n_devices,
        "shared_cell": plan.shared_cell,
        "mec_slots": plan.mec_slots,
        "mec_model": plan.mec_label,
        "mec_speedup": plan.mec_speedup,
        "compute": plan.compute,
        "jitter": plan.jitter,
        "realtime_compute": plan.realtime,
        "high_rate": plan.high_rate or {"payload_scale": plan.payload_scale,
                                        "active": plan.payload_scale < 1.0},
        "tcp_window_clamp": plan.window_clamp if plan.window_clamp is not None else
        int(0.9 * int(getattr(net, "queue_bytes", 0) or 0)),
        "tcp_congestion": getattr(net, "tcp_congestion", None),
        "arrivals": "closed-loop" if plan.rate is None else f"poisson {plan.rate}/s per device",
        "duration_s": plan.duration_s,
        "elapsed_s": (t_stop - t0) if math.isfinite(t0) else 0.0,
        "t0_monotonic": t0 if math.isfinite(t0) else None,
        "run_id": getattr(net, "run_id", None),
        "delay_method": getattr(net, "delay_method", None),
        "shaper": stats,
        "exit_codes": {pr.name: pr.p.returncode for pr in procs},
        "device_counts": {pr.name: pr.exit_info for pr in procs if pr.name != "mec"},
        "unrecorded": sum(int(pr.exit_info.get("done", 0)) for pr in procs) - len(records),
        "unfinished": len(unfinished),
        # started, neither recorded nor unfinished (a device killed without its exit line)
        "lost": max(0, sum(int(pr.exit_info.get("started", 0)) for pr in procs)
                    - len(records) - len(unfinished)),
        "unfinished_requests": unfinished,
        "unparsable_lines": sum(pr.bad_lines for pr in procs),
        **({"records_dropped": sink.dropped, "output_error": sink.error} if sink.error else {}),
        "prediction_errors": sink.prediction_errors,
        **summarize(records, getattr(sink.predictor, "parity", None)),
        **figures(records),
        "provenance": prov,
    }

    try:
        write_atomic(out / "summary.json", json.dumps(summary, indent=1, default=str) + "\n")
    except OSError as e:
        failure = f"cannot write {out / 'summary.json'}: {e.strerror or e}"
    if records and not (failure or sink.error):
        try:
            plot_run(out, records, lambda t: net.capacity_at(0, t) / plan.payload_scale,
                     plan.duration_s, rows)
        except OSError as e:  # a half-written image is worse than none
            for png in ("latency_timeline.png", "latency_cdf.png"):
                with contextlib.suppress(OSError):
                    (out / png).unlink()
            failure = f"cannot write the plots in {out}: {e.strerror or e}"
        except Exception as e:  # plots are a convenience; never lose the run for them
            print(f"emulator: plots not written: {type(e).__name__}: {e}", file=sys.stderr)
    return failure
