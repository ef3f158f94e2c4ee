"""A bulk TCP sender and a receiver that counts application bytes per window (stdlib only).

``python -I bulk.py recv --port P --t0 T --window W --seconds N`` accepts one connection and
prints one JSON line: the application bytes received in each window ``[T + kW, T + (k+1)W)``
of the monotonic clock (shared by all network namespaces). ``python -I bulk.py send --host H
--port P --seconds N`` connects (TCP_NODELAY) and writes 256 KB buffers until ``N`` seconds
have passed. Used by ``python -m emulator.calibrate``, the fidelity benchmark and the tests.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

__all__ = ["main", "receive", "send"]


def receive(port: int, t0: float, window_s: float, seconds: float) -> list[int]:
    """Accept one connection on ``port``; bytes received per window from ``t0`` for ``seconds``.

    Counting starts one window early and that warm-up window is dropped: bytes queued in the
    socket before ``t0`` would otherwise all land in window 0.
    """
    n = max(1, round(seconds / window_s))
    t0 -= window_s
    n += 1
    counts = [0] * n
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(1)
    print("listening", flush=True)
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.settimeout(0.2)
    buf = bytearray(1 << 20)
    end = t0 + n * window_s
    mono = time.monotonic
    while True:
        try:
            got = conn.recv_into(buf)
        except TimeoutError:
            got = -1
        now = mono()
        if got == 0 or now >= end:
            break
        if got > 0 and now >= t0:
            counts[min(int((now - t0) / window_s), n - 1)] += got
    conn.close()
    srv.close()
    return counts[1:]


def send(host: str, port: int, seconds: float) -> int:
    """Write to ``host:port`` for ``seconds``; returns bytes written."""
    deadline = time.monotonic() + seconds
    for _ in range(100):
        try:
            sock = socket.create_connection((host, port), timeout=2.0)
            break
        except OSError:
            time.sleep(0.05)
    else:
        raise OSError(f"cannot connect to {host}:{port}")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(1.0)
    chunk = b"\x00" * (256 * 1024)
    total = 0
    while time.monotonic() < deadline:
        try:
            total += sock.send(chunk)
        except TimeoutError:
            continue
        except OSError:
            break
    sock.close()
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bulk.py", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("recv", help="receive and count bytes per window")
    r.add_argument("--port", type=int, default=5001, help="TCP port (default 5001)")
    r.add_argument("--t0", type=float, required=True, help="time.monotonic() of window 0")
    r.add_argument("--window", type=float, default=1.0, help="window length, s (default 1)")
    r.add_argument("--seconds", type=float, required=True, help="how long to count, s")
    s = sub.add_parser("send", help="send bulk data")
    s.add_argument("--host", required=True, help="receiver address")
    s.add_argument("--port", type=int, default=5001, help="TCP port (default 5001)")
    s.add_argument("--seconds", type=float, required=True, help="how long to send, s")
    args = ap.parse_args(argv)
    if args.mode == "recv":
        counts = receive(args.port, args.t0, args.window, args.seconds)
        print(json.dumps({"window_s": args.window, "bytes": counts}), flush=True)
    else:
        print(json.dumps({"sent": send(args.host, args.port, args.seconds)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
