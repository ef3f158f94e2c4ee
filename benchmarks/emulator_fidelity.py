"""How faithfully does the emulated network follow real traces? (root; ~3 minutes)

Runs, each <= 60 s, on traces from ``--traces-dir`` (default ``/work/shared/traces``; a missing
file is skipped with a message, they are not part of the repository):

1. ``lte``: Mahimahi ``TMobile-LTE-short.up``, bulk TCP saturating the uplink;
2. ``5g``: 5G dataset ``driving_B_2020.01.16_12.10.03.csv`` (downlink column), scaled so its
   peak is 200 Mbit/s, replayed as the uplink;
3. ``lte+10ms``: run 1 again with 10 ms one-way delay (RTT 20 ms through the delay path);
4. ``lte-udp``/``5g-udp``: the same traces with paced UDP at 1.3 x the coming second's peak capacity instead of TCP, so
   the queue never empties: what the shaper delivers, without TCP's reaction to outages;
5. ``delay``: UDP echo (and ping) RTT / 2 for 10 ms and 50 ms one-way targets.

Targets: goodput within 5% of the trace in >= 95% of 1 s windows with capacity (goodput is
application bytes; HTB is set to capacity / 0.956 so they compare directly); rate changes
applied within 2 ms of schedule (median of ack time - scheduled time; the shaper starts each
netlink call early by its median duration, ~0.1 ms); one-way delay within 1 ms of target
(median). Prints one line per figure and writes ``results.json`` to ``--out``.

    sudo .venv/bin/python benchmarks/emulator_fidelity.py --out runs/fidelity
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from emulator.calibrate import calibrate
from emulator.net import EmulatedNetwork, NetConfig, NetError
from emulator.net.cpu import CpuWatch
from emulator.net.measure import (
    fidelity,
    ping_one_way,
    udp_flood,
    udp_one_way,
    write_link_csv,
)
from profiler.machine import cpu_model
from traces import Trace, load_trace


def _machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} CPUs, kernel {platform.release()}"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _goodput_run(
    name: str, trace: Trace, seconds: float, delay_s: float, out: Path
) -> dict[str, Any]:
    cfg = NetConfig(uplink=trace, one_way_delay_s=delay_s)
    res = calibrate(cfg, seconds, verbose=False)
    s = res["summary"]
    write_link_csv(res["rows"], out / f"{name}_link.csv")
    lag = s["shaper"]["lag_ms"]
    call = s["shaper"]["call_ms"]
    frac = s["fraction_within"]
    print(
        f"{name:<9} {trace.name} ({trace.mean_bps() / 1e6:.1f} Mbit/s mean), {seconds:g} s, "
        f"delay {s['delay_method']}: goodput within 5% in {s['windows_within']}/"
        f"{s['windows_with_capacity']} windows ({frac:.1%}) [>= 95%: {_verdict(frac >= 0.95)}]; "
        f"{s['shaper']['changes']} rate changes, lag median {lag['median']:.3f} ms p95 "
        f"{lag['p95']:.3f} max {lag['max']:.2f} (netlink call median {call['median']:.3f} ms) "
        f"[median <= 2 ms: {_verdict(lag['median'] <= 2.0)}]; CPU-saturated windows "
        f"{s['cpu_saturated_windows']}/{len(res['rows'])}",
        flush=True,
    )
    return s


def _udp_run(name: str, trace: Trace, seconds: float, out: Path) -> dict[str, Any]:
    with EmulatedNetwork(NetConfig(uplink=trace), verbose=False) as net, CpuWatch(1.0) as cpu:
        rows = udp_flood(net, seconds)
        stats = net.shaper_stats()
    write_link_csv(rows, out / f"{name}_link.csv")
    ok, n = fidelity(rows)
    frac = ok / n if n else float("nan")
    print(
        f"{name:<9} {trace.name}, {seconds:g} s, paced UDP at 1.3 x the coming second's peak (queue always "
        f"full, no TCP): delivered within 5% in {ok}/{n} windows ({frac:.1%}) "
        f"[>= 95%: {_verdict(frac >= 0.95)}]; {stats['changes']} rate changes, lag median "
        f"{stats['lag_ms']['median']:.3f} ms; CPU-saturated windows {cpu.saturated()}/"
        f"{len(cpu.busy)}",
        flush=True,
    )
    return {
        "windows_within": ok,
        "windows_with_capacity": n,
        "fraction_within": frac,
        "shaper": stats,
        "cpu_saturated_windows": cpu.saturated(),
    }


def _delay_run(target_s: float) -> dict[str, Any]:
    trace = Trace(np.array([0.0]), np.array([100e6]), 10.0, name="const100")
    with EmulatedNetwork(
        NetConfig(uplink=trace, downlink=trace, one_way_delay_s=target_s), verbose=False
    ) as net:
        method = net.delay_method
        one_way = udp_one_way(net, count=100, interval_s=0.02)
        pings = ping_one_way(net, count=50, interval_s=0.02)
    med = statistics.median(one_way)
    p95 = sorted(one_way)[int(0.95 * (len(one_way) - 1))]
    err = med - target_s * 1e3
    print(
        f"delay     target {target_s * 1e3:g} ms one-way ({method}): median {med:.3f} ms, p95 "
        f"{p95:.3f} ms, error {err:+.3f} ms over {len(one_way)} UDP probes (RTT/2, monotonic "
        f"clock); ping RTT/2 median {statistics.median(pings):.2f} ms "
        f"[|error| <= 1 ms: {_verdict(abs(err) <= 1.0)}]",
        flush=True,
    )
    return {
        "target_ms": target_s * 1e3,
        "method": method,
        "median_ms": med,
        "p95_ms": p95,
        "error_ms": err,
        "ping_median_ms": statistics.median(pings),
        "samples_ms": one_way,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Emulated-network fidelity on real traces (root).")
    ap.add_argument(
        "--traces-dir",
        type=Path,
        default=Path("/work/shared/traces"),
        help="directory holding mahimahi/ and 5g/ (default /work/shared/traces)",
    )
    ap.add_argument("--seconds", type=float, default=40.0, help="length of each run (<= 60)")
    ap.add_argument(
        "--out",
        type=Path,
        default=Path("runs/emulator_fidelity"),
        help="output directory (default runs/emulator_fidelity)",
    )
    ap.add_argument("--skip-delay-bulk", action="store_true", help="skip the lte+10ms run")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print(
            "emulator_fidelity: needs root: sudo .venv/bin/python benchmarks/emulator_fidelity.py",
            file=sys.stderr,
        )
        return 2
    seconds = min(args.seconds, 60.0)
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        f"emulator fidelity on {_machine()}; {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}"
    )
    results: dict[str, Any] = {"machine": _machine(), "command": " ".join(sys.argv)}
    lte_path = args.traces_dir / "mahimahi" / "TMobile-LTE-short.up"
    g5_path = args.traces_dir / "5g" / "driving_B_2020.01.16_12.10.03.csv"
    try:
        if lte_path.exists():
            lte = load_trace(lte_path)
            results["lte"] = _goodput_run("lte", lte, seconds, 0.0, args.out)
            results["lte-udp"] = _udp_run("lte-udp", lte, min(seconds, 30.0), args.out)
            if not args.skip_delay_bulk:
                results["lte+10ms"] = _goodput_run("lte+10ms", lte, seconds, 0.010, args.out)
        else:
            print(f"lte       skipped: {lte_path} not found")
        if g5_path.exists():
            g5 = load_trace(g5_path, direction="down")
            g5 = g5.scaled(min(1.0, 200e6 / float(g5.rates_bps.max())))
            results["5g"] = _goodput_run("5g", g5, seconds, 0.0, args.out)
            results["5g-udp"] = _udp_run("5g-udp", g5, min(seconds, 30.0), args.out)
        else:
            print(f"5g        skipped: {g5_path} not found")
        results["delay"] = [_delay_run(0.010), _delay_run(0.050)]
    except NetError as exc:
        print(f"emulator_fidelity: {exc}", file=sys.stderr)
        return 2
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"results: {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
