"""Calibration of high-rate mode (issue 13): transfer-time error per request size at 1, 10 and
100 Gbit/s traces (root).

For every trace rate ``R`` (a constant trace) this builds the emulated network with one device,
the link shaped as ``emulator.run`` shapes it in high-rate mode (``F x R``, ``F`` from
:func:`emulator.run.high_rate`: ``1/ceil(R / limit)``, the limit measured by ``emulator.doctor
--measure-rate`` or the default 300 Mbit/s), and sends DATA messages of each size (real bytes
``n``; ``ceil(F n)`` on the wire, :func:`emulator.transport.wire_payload`) from the device to a
receiver in the MEC host, one at a time (the receiver acknowledges each; a warm-up message
first). The transfer time is first byte written on the device to last byte read on the MEC
(one monotonic clock); the expected time is the simulator's, :class:`agent.link.Link` on the
unscaled trace: ``up_finish(t, n) - t`` plus the one-way delay. Printed per rate and size:
the median measured and expected time and the relative error. ``--unscaled`` adds the same
sizes with ``F = 1`` at every rate (what the shaper does without the mode).

    sudo PYTHONPATH=$PWD .venv/bin/python benchmarks/high_rate.py

Exit 1 when a median error exceeds ``--target`` (5%) for a size whose expected time is at least
``--min-ms`` (10 ms: below that the fixed per-message costs dominate; they are printed too).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

SIZES = (10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)


def _serve(port: int, clamp: int) -> int:
    """In the MEC host: print the arrival of every message's last byte; ACK each."""
    from emulator.protocol import (
        Message,
        MsgType,
        PayloadBuffer,
        configure_socket,
        recv_message,
        send_message,
    )

    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(1)
    print(json.dumps({"ready": True}), flush=True)
    conn, _ = ls.accept()
    configure_socket(conn, clamp)
    buf = PayloadBuffer()
    while True:
        msg = recv_message(conn, 1 << 31, into=buf, discard_payload=True)
        t = time.monotonic()
        if msg is None:
            return 0
        print(json.dumps({"id": msg.request_id, "t_recv": t, "bytes": msg.payload_size}),
              flush=True)
        send_message(conn, Message(MsgType.ECHO_REPLY, msg.request_id))


def _send(addr: str, clamp: int, scale: float, sizes: list[int], reps: int) -> int:
    """In the device host: send each size ``reps`` times, one at a time; print send starts."""
    from emulator.protocol import Message, MsgType, connect, recv_message, send_message
    from emulator.transport import wire_payload

    host, _, port = addr.rpartition(":")
    sock = connect(host, int(port), window_clamp=clamp)
    zeros = bytearray(max(sizes))
    for rid, n in enumerate([sizes[-1], *[n for n in sizes for _ in range(reps)]]):  # warm-up
        msg = wire_payload(Message(MsgType.DATA, rid, payload=memoryview(zeros)[:n]), scale)
        t = time.monotonic()
        send_message(sock, msg)
        if recv_message(sock) is None:
            return 1
        print(json.dumps({"id": rid, "t_start": t, "n": n}), flush=True)
        time.sleep(0.05)
    sock.close()
    return 0


def _measure(rate_gbps: float, scale: float, sizes: list[int], reps: int,
             delay_s: float) -> list[dict[str, Any]]:
    from agent.link import Link
    from emulator.net import EmulatedNetwork, NetConfig
    from traces.synth import constant

    real = constant(600.0, rate_gbps * 1e3)
    cfg = NetConfig(n_devices=1, uplink=real.scaled(scale), downlink=None,
                    one_way_delay_s=delay_s)
    py = [sys.executable, str(Path(__file__).resolve())]
    with EmulatedNetwork(cfg, verbose=False) as net:
        clamp = int(0.9 * net.queue_bytes)
        srv = net.popen(net.mec, [*py, "--serve", "5555", "--clamp", str(clamp)],
                        stdout=subprocess.PIPE, text=True, cwd=str(_ROOT))
        assert srv.stdout is not None
        srv.stdout.readline()
        t0 = time.monotonic()
        net.start_shaping(t0)
        snd = net.popen(net.devices[0], [*py, "--send", f"{net.mec.IP()}:5555", "--clamp",
                                         str(clamp), "--scale", repr(scale), "--reps", str(reps),
                                         "--sizes", *map(str, sizes)],
                        stdout=subprocess.PIPE, text=True, cwd=str(_ROOT))
        out, _ = snd.communicate(timeout=600)
        srv.terminate()
        got, _ = srv.communicate(timeout=10)
        net.stop_shaping()
    starts = {r["id"]: r for r in map(json.loads, out.splitlines())}
    recvs = {r["id"]: r for r in map(json.loads, got.splitlines()[1:])}
    link = Link(up=real, one_way_delay_s=delay_s)
    rows = []
    for rid, s in sorted(starts.items()):
        if rid == 0 or rid not in recvs:
            continue
        t = s["t_start"] - t0
        rows.append({"n": s["n"], "measured_s": recvs[rid]["t_recv"] - s["t_start"],
                     "expected_s": link.up_finish(t, s["n"]) - t + delay_s,
                     "wire_bytes": recvs[rid]["bytes"]})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates-gbps", type=float, nargs="+", default=[1.0, 10.0, 100.0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--delay-ms", type=float, default=1.0)
    ap.add_argument("--unscaled", action="store_true", help="also every rate with F = 1")
    ap.add_argument("--target", type=float, default=0.05)
    ap.add_argument("--min-ms", type=float, default=10.0)
    ap.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--send", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--clamp", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve is not None:
        return _serve(a.serve, a.clamp)
    if a.send is not None:
        return _send(a.send, a.clamp, a.scale, a.sizes, a.reps)

    from emulator.run import high_rate
    from traces.synth import constant

    bad = 0
    print(f"{'trace':>9} {'F':>9} {'size':>11} {'wire B':>9} {'measured':>10} {'expected':>10} "
          f"{'error':>8}")
    for r in a.rates_gbps:
        mode = high_rate(constant(600.0, r * 1e3), "auto", "profiled", "mininet")
        scales = [float(mode["payload_scale"])]
        if a.unscaled and scales[0] < 1:
            scales.append(1.0)
        for f in scales:
            rows = _measure(r, f, a.sizes, a.reps, a.delay_ms / 1e3)
            for n in a.sizes:
                mine = [x for x in rows if x["n"] == n]
                if not mine:
                    print(f"{r:7g} G {f:9.3g} {n:11,d}  no transfer recorded")
                    bad += 1
                    continue
                meas = statistics.median(x["measured_s"] for x in mine)
                exp = statistics.median(x["expected_s"] for x in mine)
                err = (meas - exp) / exp
                flag = ""
                if f == scales[0] and exp * 1e3 >= a.min_ms and abs(err) > a.target:
                    bad += 1
                    flag = "  MISSED"
                print(f"{r:7g} G {f:9.3g} {n:11,d} {mine[0]['wire_bytes']:9,d} "
                      f"{meas * 1e3:8.3f}ms {exp * 1e3:8.3f}ms {err:+8.1%}{flag}")
        print(f"  {r:g} Gbit/s: {mode['reason']}; limit {mode['limit_mbps']:g} Mbit/s "
              f"({mode['limit_source']})", flush=True)
    ok = bad == 0
    print(f"high_rate: {'ok' if ok else f'{bad} size(s) missed'} (target |median error| <= "
          f"{a.target:.0%} where the expected time is >= {a.min_ms:g} ms)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
