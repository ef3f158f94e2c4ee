"""Measuring the emulated network: bulk goodput per window, UDP flood, delay probes, link.csv.

:func:`bulk_goodput` saturates device 0's uplink with one TCP flow (:mod:`emulator.net.bulk`)
and returns per-window rows ``t_s, capacity_mbps, goodput_mbps`` where goodput is application
bytes counted by the receiver and capacity is the trace's mean over the window (the shaper sets
HTB to ``capacity / PAYLOAD_FRACTION``, so the two are directly comparable).
:func:`udp_flood` keeps the queue full with paced UDP (the shaper alone, without TCP).
:func:`udp_one_way` and :func:`ping_one_way` halve round trips. CPU load: :mod:`emulator.net.cpu`.
"""

from __future__ import annotations

import csv
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emulator.net.config import PAYLOAD_FRACTION
from emulator.net.errors import NetError
from emulator.net.start import wait_line
from emulator.net.topology import MEC_IP, EmulatedNetwork

__all__ = [
    "bulk_goodput",
    "fidelity",
    "ping_one_way",
    "transfer_times",
    "udp_flood",
    "udp_one_way",
    "write_link_csv",
]

_BULK = str(Path(__file__).with_name("bulk.py"))
#: the bulk endpoints run at nice -10: calibration measures the link, not a starved sender
_NICE = ["chrt", "-f", "1"]


def _measure(
    net: EmulatedNetwork,
    device: int,
    what: str,
    recv_args: list[str],
    send_args: list[str],
    t0: float,
    seconds: float,
    window_s: float,
    payload_scale: float,
) -> list[dict[str, Any]]:
    """Run one ``bulk.py`` receiver on the MEC and its sender on ``device``, start the replay at
    ``t0`` and return per-window rows ``t_s, capacity_mbps, goodput_mbps`` (received bytes x
    ``payload_scale``)."""
    py = sys.executable
    recv = net.popen(net.mec, [*_NICE, py, "-I", _BULK, *recv_args],
                     stdout=subprocess.PIPE, text=True)
    wait_line(recv, "listening", 15.0, f"the {what} receiver on the MEC host")
    send = net.popen(net.devices[device], [*_NICE, py, "-I", _BULK, *send_args],
                     stdout=subprocess.DEVNULL)
    net.start_shaping(t0)
    out, _ = recv.communicate(timeout=seconds + 30)
    send.wait(timeout=10)
    try:
        counts = json.loads(out.strip().splitlines()[-1])["bytes"]
    except (ValueError, IndexError, KeyError) as exc:
        raise NetError(f"{what} receiver gave no result: {out!r}") from exc
    rows = []
    for k, nbytes in enumerate(counts):
        a, b = k * window_s, (k + 1) * window_s
        rows.append(
            {
                "t_s": round(a, 3),
                "capacity_mbps": round(net.capacity_mean(device, a, b) / 1e6, 4),
                "goodput_mbps": round(nbytes * payload_scale * 8 / window_s / 1e6, 4),
            }
        )
    return rows


def bulk_goodput(
    net: EmulatedNetwork,
    seconds: float,
    *,
    window_s: float = 1.0,
    device: int = 0,
    t0: float | None = None,
) -> list[dict[str, Any]]:
    """Saturate ``device``'s uplink for ``seconds`` from the start of the replay.

    Starts the receiver on the MEC and the sender on the device (both at nice -10, so a busy
    shared machine starves them less), then :meth:`start_shaping` with ``t0`` (default 2 s
    from now: the flow is at full speed at trace time 0).
    """
    port = 5001
    if t0 is None:
        t0 = time.monotonic() + 2.0
    recv_args = ["recv", "--port", str(port), "--t0", repr(t0), "--window", repr(window_s),
                 "--seconds", repr(seconds)]
    send_args = ["send", "--host", MEC_IP, "--port", str(port),
                 "--seconds", repr(t0 - time.monotonic() + seconds + 1.0)]
    return _measure(net, device, "bulk", recv_args, send_args, t0, seconds, window_s, 1.0)


def transfer_times(
    net: EmulatedNetwork,
    plan: Sequence[tuple[float, int]],
    *,
    device: int = 0,
    clamp: int | None = None,
    lead_s: float = 1.0,
) -> list[tuple[float, float, int]]:
    """Time whole transfers from ``device`` to the MEC on one TCP connection: for each
    ``(at, n)``, ``n`` bytes sent at trace time ``at`` (or when the previous transfer is done),
    answered by one byte. Starts the replay ``lead_s`` from now; returns ``(start, end, n)`` in
    trace time, ``end`` being when the reply arrived. ``clamp``: the receiver's window clamp
    (default 90 % of the queue, as ``emulator.run`` sets it)."""
    port = 5004
    t0 = time.monotonic() + lead_s
    clamp_b = int(0.9 * net.queue_bytes) if clamp is None else clamp
    py = sys.executable
    last = max((a for a, _ in plan), default=0.0)
    srv = net.popen(net.mec, [*_NICE, py, "-I", _BULK, "xserve", "--port", str(port), "--clamp",
                              str(clamp_b), "--seconds", repr(last + lead_s + 120.0)],
                    stdout=subprocess.PIPE, text=True)
    wait_line(srv, "listening", 15.0, "the transfer server on the MEC host")
    spec = ",".join(f"{a!r}:{int(n)}" for a, n in plan)
    cli = net.popen(net.devices[device], [*_NICE, py, "-I", _BULK, "xsend", "--host", MEC_IP,
                                          "--port", str(port), "--t0", repr(t0), "--plan", spec],
                    stdout=subprocess.PIPE, text=True)
    net.start_shaping(t0)
    try:
        out, _ = cli.communicate(timeout=last + lead_s + 300.0)
    except subprocess.TimeoutExpired as exc:
        cli.kill()
        raise NetError("the transfer client did not finish within 300 s of its plan") from exc
    srv.wait(timeout=10)
    try:
        rows = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise NetError(f"the transfer client gave no result: {out!r}") from exc
    return [(float(a), float(b), int(n)) for a, b, n in rows]


def udp_flood(
    net: EmulatedNetwork,
    seconds: float,
    *,
    overload: float = 1.3,
    window_s: float = 1.0,
    device: int = 0,
) -> list[dict[str, Any]]:
    """Keep ``device``'s uplink queue full with paced UDP (``overload`` x the trace's rate,
    1514-byte frames) and count what the link delivers per window.

    Isolates the shaper from TCP's reaction to rate changes and outages. Rows: ``t_s,
    capacity_mbps, goodput_mbps`` where goodput is the UDP payload received, scaled to TCP
    payload (x 1448/1472) so it compares with capacity like the TCP figure.
    """
    dt = 0.1
    t0 = time.monotonic() + 1.5
    n = round(seconds / dt) + 1
    frac = PAYLOAD_FRACTION if net.cfg.compensate_overhead else 1.0
    rates = [
        overload * max(net.capacity_mean(device, k * dt, (k + 1) * dt), 0.0) / frac / 8.0
        for k in range(n)
    ]
    recv_args = ["urecv", "--t0", repr(t0), "--window", repr(window_s),
                 "--seconds", repr(seconds)]
    send_args = ["usend", "--host", MEC_IP, "--t0", repr(t0), "--seconds", repr(seconds + 0.5),
                 "--dt", repr(dt), "--rates", ",".join(f"{r:.0f}" for r in rates)]
    return _measure(net, device, "UDP", recv_args, send_args, t0, seconds, window_s,
                    1448 / 1472)


def fidelity(
    rows: Sequence[dict[str, Any]], tol: float = 0.05, min_capacity_mbps: float = 0.1
) -> tuple[int, int]:
    """``(windows within tol of capacity, windows with capacity >= min_capacity_mbps)``.

    The default minimum is the shaper's outage threshold (``OUTAGE_BELOW_BPS``, 0.1 Mbit/s):
    below it a window holds less than one full frame per 0.12 s and is emulated as an outage.
    """
    with_cap = [r for r in rows if r["capacity_mbps"] >= min_capacity_mbps]
    ok = [
        r
        for r in with_cap
        if abs(r["goodput_mbps"] - r["capacity_mbps"]) <= tol * r["capacity_mbps"]
    ]
    return len(ok), len(with_cap)


_RTT = re.compile(r"time=([0-9.]+) ms")


def ping_one_way(
    net: EmulatedNetwork, count: int = 50, interval_s: float = 0.05, device: int = 0
) -> list[float]:
    """One-way delays (RTT / 2, ms) of ``count`` pings device -> MEC (first, ARP one dropped)."""
    out = net.devices[device].cmd(f"ping -n -c {count + 1} -i {interval_s} {MEC_IP}")
    rtts = [float(x) for x in _RTT.findall(out)]
    if len(rtts) < count // 2:
        raise NetError(f"ping device{device} -> MEC lost too many replies: {out[-200:]!r}")
    return [r / 2 for r in rtts[1:]]


def udp_one_way(
    net: EmulatedNetwork, count: int = 100, interval_s: float = 0.02, device: int = 0
) -> list[float]:
    """One-way delays (RTT / 2, ms) of UDP probes device -> MEC echo, timed with the monotonic
    clock in Python (includes ~0.05-0.2 ms of Python and stack time per round trip)."""
    py = sys.executable
    srv = net.popen(
        net.mec,
        [*_NICE, py, "-I", _BULK, "echo", "--seconds", repr(count * interval_s + 10)],
        stdout=subprocess.PIPE,
        text=True,
    )
    wait_line(srv, "listening", 15.0, "the UDP echo server on the MEC host")
    cli = net.popen(
        net.devices[device],
        [
            *_NICE,
            py,
            "-I",
            _BULK,
            "uping",
            "--host",
            MEC_IP,
            "--count",
            str(count + 1),
            "--interval",
            repr(interval_s),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = cli.communicate(timeout=count * (interval_s + 1.0) + 10)
    srv.kill()
    try:
        rtts = [float(x) for x in json.loads(out.strip().splitlines()[-1])]
    except (ValueError, IndexError) as exc:
        raise NetError(f"UDP probes gave no result: {out!r}") from exc
    if len(rtts) < count // 2:
        raise NetError(f"UDP probes: only {len(rtts)} of {count + 1} answered")
    return [r / 2 for r in rtts[1:]]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    s = sorted(values)
    return {"median": statistics.median(s), "p95": s[int(0.95 * (len(s) - 1))], "max": s[-1]}


def write_link_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Write rows (dicts with the same keys, ``t_s`` first) as CSV."""
    if not rows:
        raise NetError(f"no link rows to write to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
