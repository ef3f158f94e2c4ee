"""Calibrate the emulated link against a trace: does a saturating TCP flow get what it says?

``python -m emulator.calibrate --trace FILE --seconds N --out DIR`` builds a one-device network
shaped by the trace, saturates the uplink with one bulk TCP flow (TCP_NODELAY) for ``N``
seconds, and writes ``DIR/link.csv`` (``t_s, capacity_mbps, goodput_mbps`` per 1 s window, plus
``shaper_goodput_mbps`` from the HTB byte counters and ``cpu_busy``) and ``DIR/calibrate.json``
(provenance, shaper lag, summary). It prints how many windows are within 5% of the trace.

Accounting: ``goodput_mbps`` is application payload counted by the receiver. The shaper sets
HTB to ``capacity / PAYLOAD_FRACTION`` (1514-byte frames carry 1448 payload bytes, 95.6%), so
goodput is compared with the trace's capacity directly; ``--no-compensate`` shapes wire bytes
at the trace's rate and then compares goodput with ``PAYLOAD_FRACTION x capacity``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from emulator.net import PAYLOAD_FRACTION, EmulatedNetwork, NetConfig, NetError
from emulator.net.cpu import CPU_BUSY_WARN, CpuWatch
from emulator.net.measure import (
    bulk_goodput,
    fidelity,
    write_link_csv,
)
from profiler.machine import cpu_model
from traces import FORMATS, TraceError, load_trace

__all__ = ["calibrate", "main"]


def calibrate(
    cfg: NetConfig, seconds: float, *, tol: float = 0.05, verbose: bool = True
) -> dict[str, Any]:
    """Run one calibration; returns ``rows`` (per 1 s window) and a ``summary`` dict."""
    with EmulatedNetwork(cfg, verbose=verbose) as net:
        t0 = time.monotonic() + 2.0  # the flow runs (and is counted) one window before t0
        with CpuWatch(1.0, t0) as cpu:
            rows = bulk_goodput(net, seconds, t0=t0)
        shaper_rows = [r for r in net.link_rows() if r["direction"] == "up" and r["device"] >= 0]
        stats = net.shaper_stats()
        delay_method = net.delay_method
        run_id = net.run_id
    if stats.get("errors"):
        raise NetError("shaper failed: " + "; ".join(stats["errors"]))
    factor = 1.0 if cfg.compensate_overhead else PAYLOAD_FRACTION
    by_t = {round(r["t_s"]): r for r in shaper_rows}
    for k, r in enumerate(rows):
        r["capacity_mbps"] = round(r["capacity_mbps"] * factor, 4)
        sr = by_t.get(k)
        r["shaper_goodput_mbps"] = sr["goodput_mbps"] if sr else ""
        r["cpu_busy"] = round(cpu.busy[k], 3) if k < len(cpu.busy) else ""
    ok, n = fidelity(rows, tol)
    calm = [r for r in rows if r["cpu_busy"] == "" or r["cpu_busy"] < CPU_BUSY_WARN]
    ok_calm, n_calm = fidelity(calm, tol)
    summary = {
        "run_id": run_id,
        "windows_within": ok,
        "windows_with_capacity": n,
        "fraction_within": ok / n if n else float("nan"),
        "tolerance": tol,
        "windows_below_capacity_floor": sum(0 < r["capacity_mbps"] < 0.1 for r in rows),
        "unsaturated_within": ok_calm,
        "unsaturated_with_capacity": n_calm,
        "shaper": stats,
        "delay_method": delay_method,
        "cpu_saturated_windows": cpu.saturated(),
        "cpu_warning": cpu.warning(),
        "compared_with": "capacity" if cfg.compensate_overhead else "0.956 x capacity",
    }
    return {"rows": rows, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m emulator.calibrate",
        description="Saturate a trace-shaped emulated uplink with bulk TCP and report how "
        "closely goodput follows the trace (root).",
    )
    ap.add_argument("--trace", required=True, type=Path, help="trace file (any traces format)")
    ap.add_argument(
        "--format", choices=FORMATS, default=None, help="trace format (default: detected)"
    )
    ap.add_argument(
        "--direction",
        choices=("up", "down"),
        default="down",
        help="column of a 5G dataset CSV to use (default down)",
    )
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every rate (default 1)")
    ap.add_argument(
        "--max-mbps",
        type=float,
        default=None,
        help="scale the trace so its peak is this many Mbit/s (after --scale)",
    )
    ap.add_argument(
        "--offset",
        type=float,
        default=0.0,
        help="start this many seconds into the trace (default 0)",
    )
    ap.add_argument("--seconds", type=float, default=30.0, help="run length, s (default 30)")
    ap.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay, ms (default 0)")
    ap.add_argument(
        "--queue-bytes",
        type=int,
        default=None,
        help="bfifo limit per shaped class (default max(150 KB, 2 x BDP))",
    )
    ap.add_argument(
        "--resample-s",
        type=float,
        default=0.1,
        help="average the trace onto this grid before replay (default 0.1 s; 0: replay "
        "segments as they are)",
    )
    ap.add_argument(
        "--no-compensate",
        action="store_true",
        help="shape wire bytes at the trace rate (compare with 0.956 x capacity)",
    )
    ap.add_argument(
        "--tolerance", type=float, default=0.05, help="relative tolerance per window (default 0.05)"
    )
    ap.add_argument("--out", required=True, type=Path, help="output directory")
    args = ap.parse_args(argv)
    try:
        if not 1 <= args.seconds <= 3600:
            raise NetError(f"--seconds must be in 1..3600, got {args.seconds}")
        trace = load_trace(args.trace, args.format, direction=args.direction, scale=args.scale)
        if args.max_mbps is not None:
            peak = float(trace.rates_bps.max())
            if peak > args.max_mbps * 1e6:
                trace = trace.scaled(args.max_mbps * 1e6 / peak)
        if args.offset:
            trace = trace.shifted(args.offset)
        cfg = NetConfig(
            n_devices=1,
            uplink=trace,
            one_way_delay_s=args.delay_ms / 1e3,
            queue_bytes=args.queue_bytes,
            resample_s=args.resample_s or None,
            compensate_overhead=not args.no_compensate,
        )
        t_start = time.time()
        res = calibrate(cfg, args.seconds, tol=args.tolerance)
    except (NetError, TraceError) as exc:
        print(f"calibrate: {exc}", file=sys.stderr)
        return 2
    s = res["summary"]
    args.out.mkdir(parents=True, exist_ok=True)
    write_link_csv(res["rows"], args.out / "link.csv")
    prov = {
        "command": " ".join([sys.executable, "-m", "emulator.calibrate", *sys.argv[1:]]),
        "started_unix": t_start,
        "trace": {
            "file": str(args.trace),
            "name": trace.name,
            "sha256": trace.sha256(),
            "source": trace.source,
            "mean_mbps": trace.mean_bps() / 1e6,
        },
        "machine": {
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
        **s,
    }
    (args.out / "calibrate.json").write_text(json.dumps(prov, indent=1, default=str))
    lag = s["shaper"].get("lag_ms", {})
    print(
        f"calibrate: {s['windows_within']}/{s['windows_with_capacity']} windows with capacity "
        f"(>= 0.1 Mbit/s) within {args.tolerance:.0%} of the trace ({s['fraction_within']:.1%}; "
        f"goodput vs {s['compared_with']}; {s['unsaturated_within']}/"
        f"{s['unsaturated_with_capacity']} of the windows where the CPU was not saturated); "
        f"rate changes {s['shaper'].get('changes', 0)}, lag median "
        f"{lag.get('median', float('nan')):.2f} ms p95 {lag.get('p95', float('nan')):.2f} ms; "
        f"{args.out / 'link.csv'}"
    )
    if s["cpu_warning"]:
        print(f"calibrate: {s['cpu_warning']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
