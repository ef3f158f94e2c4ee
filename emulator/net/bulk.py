"""A bulk TCP sender and a receiver that counts application bytes per window (stdlib only).

``python -I bulk.py recv --port P --t0 T --window W --seconds N`` accepts one connection and
prints one JSON line: the application bytes received in each window ``[T + kW, T + (k+1)W)``
of the monotonic clock (shared by all network namespaces). ``python -I bulk.py send --host H
--port P --seconds N`` connects (TCP_NODELAY) and writes 256 KB buffers until ``N`` seconds
have passed. ``echo``/``uping`` measure UDP round trips with the monotonic clock (finer than
ping's printed 3 significant digits). ``xserve``/``xsend`` time whole transfers: the sender
writes a length-prefixed message of ``n`` bytes at a given monotonic time and waits for the
receiver's 1-byte reply (one connection, TCP_NODELAY, 4 MB buffers, the receiver's window
optionally clamped as the emulator's own processes clamp it). Used by ``python -m emulator.calibrate``, the fidelity
benchmark and the tests.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

__all__ = ["echo", "main", "receive", "send", "udp_receive", "udp_send", "uping", "xsend",
           "xserve"]

_XBUF = 4 << 20


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _tune(sock: socket.socket, clamp: int) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _XBUF)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _XBUF)
    if clamp > 0:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_WINDOW_CLAMP, clamp)


def xserve(port: int, clamp: int, seconds: float) -> None:
    """Accept one connection; answer each length-prefixed message with one byte."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(1)
    ls.settimeout(seconds)
    print("listening", flush=True)
    conn, _ = ls.accept()
    conn.settimeout(seconds)
    _tune(conn, clamp)
    try:
        while True:
            n = int.from_bytes(_recv_exact(conn, 8), "big")
            _recv_exact(conn, n)
            conn.sendall(b"k")
    except (EOFError, OSError):
        pass
    finally:
        conn.close()
        ls.close()


def xsend(host: str, port: int, t0: float, plan: list[tuple[float, int]]) -> list[list[float]]:
    """For each ``(at, n)``: at ``t0 + at`` (or as soon as the previous one is done) send ``n``
    bytes and wait for the reply. Returns ``[start, end, n]`` (seconds after ``t0``)."""
    sock = socket.create_connection((host, port), timeout=30.0)
    _tune(sock, 0)
    out: list[list[float]] = []
    try:
        for at, n in plan:
            while (rem := t0 + at - time.monotonic()) > 0:
                time.sleep(min(rem, 0.01) if rem > 0.002 else 0.0)
            a = time.monotonic()
            sock.sendall(n.to_bytes(8, "big") + bytes(n))
            _recv_exact(sock, 1)
            out.append([a - t0, time.monotonic() - t0, float(n)])
    finally:
        sock.close()
    return out


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


def udp_receive(port: int, t0: float, window_s: float, seconds: float) -> list[int]:
    """UDP payload bytes received on ``port`` per window from ``t0`` for ``seconds``."""
    n = max(1, round(seconds / window_s))
    counts = [0] * n
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("0.0.0.0", port))
    sock.settimeout(0.2)
    print("listening", flush=True)
    buf = bytearray(65536)
    end = t0 + n * window_s
    mono = time.monotonic
    while True:
        try:
            got = sock.recv_into(buf)
        except TimeoutError:
            got = 0
        now = mono()
        if now >= end:
            break
        if got > 0 and now >= t0:
            counts[min(int((now - t0) / window_s), n - 1)] += got
    sock.close()
    return counts


def udp_send(
    host: str, port: int, t0: float, seconds: float, dt: float, wire_Bps: list[float]
) -> int:
    """Send 1472-byte datagrams (1514-byte frames) paced at ``wire_Bps[k]`` bytes/s of frames
    during ``[t0 + k dt, t0 + (k+1) dt)``, from now until ``t0 + seconds``; returns datagrams."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((host, port))
    payload = b"\0" * 1472
    mono = time.monotonic
    last = mono()
    budget = 0.0
    sent = 0
    end = t0 + seconds
    while True:
        now = mono()
        if now >= end:
            break
        k = min(max(int((now - t0) / dt), 0), len(wire_Bps) - 1)
        r = wire_Bps[k]
        budget = min(budget + r * (now - last), r * 0.005 + 3028)
        last = now
        while budget >= 1514:
            try:
                sock.send(payload)
                sent += 1
            except OSError:
                pass
            budget -= 1514
        time.sleep(0.0005)
    sock.close()
    return sent


def echo(port: int, seconds: float) -> None:
    """Echo UDP datagrams back to their sender for ``seconds``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    sock.settimeout(0.2)
    print("listening", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            data, addr = sock.recvfrom(2048)
        except TimeoutError:
            continue
        sock.sendto(data, addr)
    sock.close()


def uping(host: str, port: int, count: int, interval_s: float) -> list[float]:
    """RTTs in ms of ``count`` 64-byte UDP probes to an :func:`echo` server (lost ones skipped)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    rtts: list[float] = []
    for seq in range(count):
        t = time.monotonic()
        sock.sendto(seq.to_bytes(4, "big") + b"\0" * 60, (host, port))
        try:
            while True:
                data, _ = sock.recvfrom(2048)
                if int.from_bytes(data[:4], "big") == seq:
                    rtts.append((time.monotonic() - t) * 1e3)
                    break
        except TimeoutError:
            pass
        time.sleep(max(0.0, t + interval_s - time.monotonic()))
    sock.close()
    return rtts


def _counter_args(p: argparse.ArgumentParser, proto: str, port: int) -> None:
    """Options of a receiver that counts bytes per window."""
    p.add_argument("--port", type=int, default=port, help=f"{proto} port (default {port})")
    p.add_argument("--t0", type=float, required=True, help="time.monotonic() of window 0")
    p.add_argument("--window", type=float, default=1.0, help="window length, s (default 1)")
    p.add_argument("--seconds", type=float, required=True, help="how long to count, s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bulk.py", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    _counter_args(sub.add_parser("recv", help="receive and count bytes per window"), "TCP", 5001)
    s = sub.add_parser("send", help="send bulk data")
    s.add_argument("--host", required=True, help="receiver address")
    s.add_argument("--port", type=int, default=5001, help="TCP port (default 5001)")
    s.add_argument("--seconds", type=float, required=True, help="how long to send, s")
    e = sub.add_parser("echo", help="UDP echo server")
    e.add_argument("--port", type=int, default=5002, help="UDP port (default 5002)")
    e.add_argument("--seconds", type=float, required=True, help="how long to serve, s")
    u = sub.add_parser("uping", help="UDP RTT probes to an echo server (JSON list of ms)")
    u.add_argument("--host", required=True, help="echo server address")
    u.add_argument("--port", type=int, default=5002, help="UDP port (default 5002)")
    u.add_argument("--count", type=int, default=100, help="probes (default 100)")
    u.add_argument("--interval", type=float, default=0.02, help="seconds between probes")
    _counter_args(sub.add_parser("urecv", help="receive UDP and count payload bytes per window"),
                  "UDP", 5003)
    us = sub.add_parser("usend", help="paced UDP sender following a rate schedule")
    us.add_argument("--host", required=True, help="receiver address")
    us.add_argument("--port", type=int, default=5003, help="UDP port (default 5003)")
    us.add_argument("--t0", type=float, required=True, help="time.monotonic() of schedule 0")
    us.add_argument("--seconds", type=float, required=True, help="send until t0 + seconds")
    us.add_argument("--dt", type=float, required=True, help="schedule step, s")
    us.add_argument("--rates", required=True, help="comma-separated frame bytes/s per step")
    xs = sub.add_parser("xserve", help="answer each length-prefixed message with one byte")
    xs.add_argument("--port", type=int, default=5004, help="TCP port (default 5004)")
    xs.add_argument("--clamp", type=int, default=0, help="TCP_WINDOW_CLAMP, bytes (0: none)")
    xs.add_argument("--seconds", type=float, required=True, help="give up after this long idle")
    xc = sub.add_parser("xsend", help="timed transfers to xserve (JSON [start, end, n] rows)")
    xc.add_argument("--host", required=True, help="xserve address")
    xc.add_argument("--port", type=int, default=5004, help="TCP port (default 5004)")
    xc.add_argument("--t0", type=float, required=True, help="time.monotonic() of time 0")
    xc.add_argument("--plan", required=True, help="comma-separated AT:BYTES (AT s after t0)")
    args = ap.parse_args(argv)
    if args.mode == "xserve":
        xserve(args.port, args.clamp, args.seconds)
        return 0
    if args.mode == "xsend":
        plan = [(float(a), int(n)) for a, n in (x.split(":") for x in args.plan.split(","))]
        print(json.dumps(xsend(args.host, args.port, args.t0, plan)), flush=True)
        return 0
    if args.mode == "urecv":
        counts = udp_receive(args.port, args.t0, args.window, args.seconds)
        print(json.dumps({"window_s": args.window, "bytes": counts}), flush=True)
        return 0
    if args.mode == "usend":
        rates = [float(x) for x in args.rates.split(",")]
        print(
            json.dumps(
                {"datagrams": udp_send(args.host, args.port, args.t0, args.seconds, args.dt, rates)}
            ),
            flush=True,
        )
        return 0
    if args.mode == "echo":
        echo(args.port, args.seconds)
        return 0
    if args.mode == "uping":
        print(json.dumps(uping(args.host, args.port, args.count, args.interval)), flush=True)
        return 0
    if args.mode == "recv":
        counts = receive(args.port, args.t0, args.window, args.seconds)
        print(json.dumps({"window_s": args.window, "bytes": counts}), flush=True)
    else:
        print(json.dumps({"sent": send(args.host, args.port, args.seconds)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
