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

7. ``burst``: a Mahimahi file written here whose deliveries all come in bursts (100 packets in
   the first 0.1 s of every 0.5 s, nothing in the other 0.4 s: 11.6 Mbit/s open, 2.3 Mbit/s
   mean), shaping both directions, 10 ms one-way delay: timed transfers of 10 KB, 200 KB and
   2 MB on one TCP connection (each answered by one byte, the receiver's window clamped to 90% of
   the queue as ``emulator.run`` does), started at phases spread over the period, against the
   simulator's price of the same transfer (:class:`agent.link.Link`: fluid finish times of the
   trace, one one-way delay each way). The connection's first transfer (slow start, not
   modelled) is a warm-up and not counted.

6. ``step``: a square-wave trace (4 <-> 16 Mbit/s every second, built here) under paced UDP,
   the receiver counting bytes per 1 ms: the rate-change lag on the wire.

Everything is measured at the receiver, independently of the shaper: goodput per 1 s window is
the application bytes the receiver counted, compared with the capacity computed here from the
trace file itself (``Trace.bytes_between`` of the loaded file over the same window; goodput is
application bytes and HTB is set to capacity / 0.956, so the two compare directly). The lag of a
rate change is read from the receiver's step response: lines fitted to its cumulative byte count
before (``[-0.6, -0.1]`` s) and after (``[+0.1, +0.6]`` s) each scheduled change meet at the
time the new rate shows on the wire; their slopes are the delivered rates. The shaper's own lag
(netlink acknowledgement against the schedule) is printed for reference and gates nothing.

Targets (exit status 1 when one is missed): TCP and UDP goodput within 5% of the file's trace in
>= 95% of 1 s windows with capacity (>= 0.1 Mbit/s); step response: median lag <= 20 ms (up and
down steps) and delivered rates within 5% of the trace's; one-way delay within 1 ms of target
(median); burst: per size, the median |error| of the transfer time against the simulator's
<= 5% (the count within 5% and the largest error are printed, not gated: a 10 KB transfer that
starts inside a burst meets a full HTB bucket, two frames on such traces, and HTB sends three
frames at once: it ends ~2.5 ms (8-10%) early; measured 4 Dec, load average 1.9-2.4). A missing trace file is one line ``missing input: ...`` and exit status 2 (nothing
is reported as met). Prints one line per figure and writes ``results.json`` to ``--out``.

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.wire import step_lags


def _machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} CPUs, kernel {platform.release()}"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


#: every target checked in this run: name -> met
CHECKS: dict[str, bool] = {}


def _check(name: str, ok: bool) -> str:
    CHECKS[name] = ok
    return _verdict(ok)


def _on_file(rows: list[dict[str, Any]], trace: Trace, window_s: float = 1.0,
             factor: float = 1.0) -> list[dict[str, Any]]:
    """Rows with ``capacity_mbps`` recomputed from ``trace`` (the file's) over each window."""
    out = []
    for k, r in enumerate(rows):
        a, b = k * window_s, (k + 1) * window_s
        cap = float(trace.bytes_between(a, b)) * 8.0 / window_s / 1e6 * factor
        out.append({**r, "capacity_mbps": round(cap, 4),
                    "shaper_capacity_mbps": r["capacity_mbps"]})
    return out


def _goodput_run(
    name: str, trace: Trace, seconds: float, delay_s: float, out: Path
) -> dict[str, Any]:
    cfg = NetConfig(uplink=trace, one_way_delay_s=delay_s)
    res = calibrate(cfg, seconds, verbose=False)
    s = res["summary"]
    rows = _on_file(res["rows"], trace)
    write_link_csv(rows, out / f"{name}_link.csv")
    ok, n = fidelity(rows)
    frac = ok / n if n else 0.0
    lag = s["shaper"]["lag_ms"]
    print(
        f"{name:<9} {trace.name} ({trace.mean_bps() / 1e6:.1f} Mbit/s mean), {seconds:g} s, "
        f"delay {s['delay_method']}: receiver's goodput within 5% of the file's trace in "
        f"{ok}/{n} windows ({frac:.1%}) [>= 95%: {_check(name + ' goodput', n > 0 and frac >= 0.95)}]"
        f"; CPU-saturated windows {s['cpu_saturated_windows']}/{len(rows)}; (shaper's own "
        f"report, not gated: {s['windows_within']}/{s['windows_with_capacity']} against its "
        f"replay, netlink lag median {lag['median']:.3f} ms)",
        flush=True,
    )
    return {**s, "on_file_within": ok, "on_file_windows": n, "on_file_fraction": frac}


def _udp_run(name: str, trace: Trace, seconds: float, out: Path) -> dict[str, Any]:
    with EmulatedNetwork(NetConfig(uplink=trace), verbose=False) as net, CpuWatch(1.0) as cpu:
        rows = udp_flood(net, seconds)
        stats = net.shaper_stats()
    rows = _on_file(rows, trace)
    write_link_csv(rows, out / f"{name}_link.csv")
    ok, n = fidelity(rows)
    frac = ok / n if n else 0.0
    print(
        f"{name:<9} {trace.name}, {seconds:g} s, paced UDP at 1.3 x the coming second's peak "
        f"(queue always full, no TCP): receiver's goodput within 5% of the file's trace in "
        f"{ok}/{n} windows ({frac:.1%}) [>= 95%: {_check(name + ' goodput', n > 0 and frac >= 0.95)}]"
        f"; CPU-saturated windows {cpu.saturated()}/{len(cpu.busy)}",
        flush=True,
    )
    return {
        "windows_within": ok,
        "windows_with_capacity": n,
        "fraction_within": frac,
        "shaper": stats,
        "cpu_saturated_windows": cpu.saturated(),
    }


def _step_run(seconds: float, out: Path) -> dict[str, Any]:
    """A 4 <-> 16 Mbit/s square wave (1 s each), paced UDP, the receiver counting per 1 ms."""
    trace = Trace(np.array([0.0, 1.0]), np.array([4e6, 16e6]), 2.0, name="square4-16")
    with EmulatedNetwork(NetConfig(uplink=trace), verbose=False) as net, CpuWatch(1.0) as cpu:
        rows = udp_flood(net, seconds, window_s=0.001)
    counts = [r["goodput_mbps"] * 1e6 / 8 * 0.001 for r in rows]  # payload bytes per 1 ms
    steps = step_lags(counts, 0.001, trace)
    (out / "step.json").write_text(json.dumps(steps, indent=1))
    ups = [x["lag_ms"] for x in steps if x["trace_after_mbps"] > x["trace_before_mbps"]]
    downs = [x["lag_ms"] for x in steps if x["trace_after_mbps"] < x["trace_before_mbps"]]
    rate_err = [abs(x[f"rate_{w}_mbps"] / x[f"trace_{w}_mbps"] - 1) for x in steps
                for w in ("before", "after")]
    ok_lag = bool(ups and downs) and max(abs(statistics.median(ups)),
                                         abs(statistics.median(downs))) <= 20.0
    ok_rate = bool(rate_err) and statistics.median(rate_err) <= 0.05
    print(
        f"step      {trace.name}, {seconds:g} s, paced UDP, receiver counting per 1 ms: rate "
        f"changes seen on the wire {len(ups)} up / {len(downs)} down, lag median "
        f"{statistics.median(ups) if ups else float('nan'):+.1f} ms up, "
        f"{statistics.median(downs) if downs else float('nan'):+.1f} ms down "
        f"(max |lag| {max((abs(x['lag_ms']) for x in steps), default=float('nan')):.1f} ms) "
        f"[|median| <= 20 ms: {_check('step lag', ok_lag)}]; delivered rates vs the trace's: "
        f"median |error| {statistics.median(rate_err) if rate_err else float('nan'):.1%} "
        f"[<= 5%: {_check('step rates', ok_rate)}]; CPU-saturated windows {cpu.saturated()}/"
        f"{len(cpu.busy)}",
        flush=True,
    )
    return {"steps": steps, "lag_up_ms": ups, "lag_down_ms": downs}


def burst_mahimahi(path: Path, seconds: float = 60.0) -> Path:
    """Write a Mahimahi file whose 100 deliveries per 0.5 s all fall in its first 0.1 s (ms
    1-100 of each period: the 0.1 s bins the emulator averages onto are exactly open or
    closed)."""
    lines = [str(500 * k + j) for k in range(int(seconds / 0.5)) for j in range(1, 101)]
    path.write_text("\n".join(lines) + "\n")
    return path


BURST_SIZES = (10_000, 200_000, 2_000_000)


def _burst_run(out: Path, delay_s: float = 0.010) -> dict[str, Any]:
    from agent.link import Link
    from emulator.net.measure import transfer_times

    trace = load_trace(burst_mahimahi(out / "burst.up"))
    plan: list[tuple[float, int]] = [(0.2, 200_000)]  # warm-up: slow start, not counted
    t = 1.0
    for n, step in ((10_000, 1.0), (200_000, 1.5), (2_000_000, 8.0)):
        for i in range(10 if n < 2_000_000 else 3):
            plan.append((t + (0.137 * i + 0.05) % 0.5, n))
            t += step
    cfg = NetConfig(uplink=trace, downlink=trace, one_way_delay_s=delay_s)
    with EmulatedNetwork(cfg, verbose=False) as net, CpuWatch(1.0) as cpu:
        rows = transfer_times(net, plan)
        link = Link(up=net.up_traces[0], down=net.down_traces[0], one_way_delay_s=delay_s)
        rto = net.rto_min_s()
        shaper = net.shaper_stats()
    res: dict[str, Any] = {"transfers": [], "rto_min_s": rto, "shaper": shaper}
    for a, b, n in rows[1:]:
        sim = link.down_finish(link.up_finish(a, n + 8) + delay_s, 1) + delay_s - a
        res["transfers"].append({"start_s": a, "bytes": n, "emulated_s": b - a,
                                 "simulated_s": sim, "error": (b - a) / sim - 1})
    parts = []
    for n in BURST_SIZES:
        errs = [x["error"] for x in res["transfers"] if x["bytes"] == n]
        med = statistics.median(abs(e) for e in errs) if errs else float("nan")
        within = sum(abs(e) <= 0.05 for e in errs)
        ok = bool(errs) and med <= 0.05
        res[f"{n}"] = {"median_abs_error": med, "within_5pct": within, "count": len(errs),
                       "max_abs_error": max((abs(e) for e in errs), default=float("nan"))}
        parts.append(
            f"{n / 1e3:g} KB: median |error| {med:.1%}, {within}/{len(errs)} within 5%, max "
            f"{res[f'{n}']['max_abs_error']:.1%} [{_check(f'burst {n / 1e3:g} KB', ok)}]")
    print(f"burst     {trace.name} (0.1 s open of every 0.5 s, {trace.mean_bps() / 1e6:.2f} Mbit/s "
          f"mean, both directions, {delay_s * 1e3:g} ms delay, min RTO {rto:.2f} s): transfer time "
          f"against the simulator's: " + "; ".join(parts)
          + f"; CPU-saturated windows {cpu.saturated()}/{len(cpu.busy)}; shaper: "
          f"{shaper['changes']} gate/rate changes, lag p95 {shaper['lag_ms']['p95']:.2f} ms, max "
          f"{shaper['lag_ms']['max']:.2f} ms", flush=True)
    return res


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
        f"[|error| <= 1 ms: {_check(f'delay {target_s * 1e3:g} ms', abs(err) <= 1.0)}]",
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
    ap.add_argument("--only", default=None,
                    help="comma-separated runs to do (lte, lte-udp, lte+10ms, 5g, 5g-udp, step, "
                    "burst, delay); default all")
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
    missing = [str(p) for p in (lte_path, g5_path) if not p.is_file()]
    if missing:
        print(f"emulator_fidelity: missing input: {', '.join(missing)} (nothing measured)")
        return 2
    runs = set(args.only.split(",")) if args.only else None

    def want(name: str) -> bool:
        return runs is None or name in runs

    try:
        lte = load_trace(lte_path)
        if want("lte"):
            results["lte"] = _goodput_run("lte", lte, seconds, 0.0, args.out)
        if want("lte-udp"):
            results["lte-udp"] = _udp_run("lte-udp", lte, min(seconds, 30.0), args.out)
        if want("lte+10ms") and not args.skip_delay_bulk:
            results["lte+10ms"] = _goodput_run("lte+10ms", lte, seconds, 0.010, args.out)
        g5 = load_trace(g5_path, direction="down")
        g5 = g5.scaled(min(1.0, 200e6 / float(g5.rates_bps.max())))
        if want("5g"):
            results["5g"] = _goodput_run("5g", g5, seconds, 0.0, args.out)
        if want("5g-udp"):
            results["5g-udp"] = _udp_run("5g-udp", g5, min(seconds, 30.0), args.out)
        if want("step"):
            results["step"] = _step_run(min(seconds, 12.0), args.out)
        if want("burst"):
            results["burst"] = _burst_run(args.out)
        if want("delay"):
            results["delay"] = [_delay_run(0.010), _delay_run(0.050)]
    except NetError as exc:
        print(f"emulator_fidelity: {exc}", file=sys.stderr)
        return 2
    results["checks"] = CHECKS
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"results: {args.out / 'results.json'}")
    missed = [k for k, ok in CHECKS.items() if not ok]
    print(f"targets: {len(CHECKS) - len(missed)}/{len(CHECKS)} met"
          + (f"; NOT met: {', '.join(missed)}" if missed else ""))
    return 1 if missed or not CHECKS else 0


if __name__ == "__main__":
    raise SystemExit(main())
