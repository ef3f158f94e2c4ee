"""Hostile clients against a running emulation (root): does the MEC stay small and do the real
devices notice nothing?

    sudo PYTHONPATH=$PWD .venv/bin/python benchmarks/hostile_clients.py [--window 12]

Starts ``emulator.run`` (Mininet, 2 devices, gpt2 profiles with 8 tokens, full offload so every
request uses the MEC, a constant 20 Mbit/s trace, 10 ms delay, block-time jitter off, closed
loop, 2 MEC slots: with one slot the two closed-loop devices fall into queueing patterns that
move the mean latency by +-7% between windows with no probe at all, measured), finds its MEC
process
and namespace from the run's state file, and runs one probe per time window from inside the
MEC's namespace (the probes reach the MEC port without crossing the devices' shaped links, so
what is measured is the MEC, not link contention):

=============  =======================================================================
``quiet``      nothing (baseline; once before and once after the probes)
``oversized``  40 connections, each sending headers that claim 1 GiB payloads
``slow``       40 connections sending a HELLO one byte every 0.5 s
``idle``       200 connections that send nothing
``many``       200 connections at once, each sending a wrong-token HELLO and echoes
``churn``      connect / close as fast as one thread can
``types``      malformed fields: device "abc", 1.5, true; model 7; wrong version; JSON
               nested 10 000 deep; a PLAN with a seed of 1e308 before HELLO; garbage bytes
=============  =======================================================================

It prints, per window, the MEC's peak RSS and threads, the real devices' mean echo RTT and mean
/ p95 request latency, and each window's mean latency against the quiet baseline. Exit status 1
when the MEC's peak RSS exceeds ``--rss-budget-mb`` or a probe window's mean latency is more
than ``--tolerance`` (5 %) from the baseline. The MEC's address is printed too (it must be the
MEC's own, 10.0.0.254, not 0.0.0.0).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PROBES = ("oversized", "slow", "idle", "many", "churn", "types")
STATE_DIR = Path(os.environ.get("AIGC_EMU_STATE_DIR", "/run/aigc-emu"))


# ---------------------------------------------------------------------------- probe clients
def _header(mtype: int, meta_len: int, payload_len: int, version: int = 1) -> bytes:
    return struct.pack("!4sBBHQHIHHIQ", b"AIGE", version, mtype, 0, 1, 0, 0, 0, 1, meta_len,
                       payload_len)


def _frame(mtype: int, meta: Any, payload_len: int = 0, version: int = 1) -> bytes:
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    return _header(mtype, len(raw), payload_len, version) + raw


def _conn(addr: tuple[str, int]) -> socket.socket | None:
    try:
        return socket.create_connection(addr, timeout=5)
    except OSError:
        return None


def _drain(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.settimeout(0.5)
        while s.recv(65536):
            pass


def _hold_many(addr: tuple[str, int], n: int, stop: float, first: bytes | None,
               trickle: bytes | None, every_s: float) -> int:
    """Keep ``n`` connections open until ``stop`` (reopening closed ones); each sends ``first``
    once and then ``trickle`` every ``every_s``. Returns connections opened."""
    socks: list[socket.socket | None] = [None] * n
    pos = [0] * n
    opened = 0
    while time.monotonic() < stop:
        for i in range(n):
            s = socks[i]
            if s is None:
                s = _conn(addr)
                if s is None:
                    continue
                opened += 1
                socks[i] = s
                pos[i] = 0
                if first:
                    with contextlib.suppress(OSError):
                        s.sendall(first)
            if trickle:
                try:
                    s.send(trickle[pos[i] % len(trickle):pos[i] % len(trickle) + 1])
                    pos[i] += 1
                except OSError:
                    s.close()
                    socks[i] = None
        time.sleep(every_s)
        for i, s in enumerate(socks):  # reap connections the MEC closed
            if s is None:
                continue
            s.setblocking(False)
            try:
                if s.recv(65536) == b"":
                    s.close()
                    socks[i] = None
            except BlockingIOError:
                pass
            except OSError:
                s.close()
                socks[i] = None
            else:
                if socks[i] is not None:
                    s.setblocking(True)
    for s in socks:
        if s is not None:
            s.close()
    return opened


def run_probe(name: str, addr: tuple[str, int], seconds: float) -> dict[str, Any]:
    stop = time.monotonic() + seconds
    count = 0
    if name == "oversized":
        count = _hold_many(addr, 40, stop, _header(3, 0, (1 << 30) - 1), b"\0" * 4096, 0.2)
    elif name == "slow":
        hello = _frame(1, {"device": 0, "model": "gpt2", "token": "x" * 32})
        count = _hold_many(addr, 40, stop, None, hello, 0.5)
    elif name == "idle":
        count = _hold_many(addr, 200, stop, None, None, 0.5)
    elif name == "many":
        first = _frame(1, {"device": 1, "model": "gpt2", "token": "guess"}) + _frame(3, {})
        count = _hold_many(addr, 200, stop, first, None, 0.3)
    elif name == "churn":
        while time.monotonic() < stop:
            s = _conn(addr)
            if s is not None:
                s.close()
                count += 1
    elif name == "types":
        bad = [
            _frame(1, {"device": "abc", "model": "gpt2"}), _frame(1, {"device": 1.5}),
            _frame(1, {"device": True, "model": "gpt2"}), _frame(1, {"device": 0, "model": 7}),
            _frame(1, {"device": 0}, version=9), _frame(1, b"[" * 10_000 + b"]" * 10_000),
            _frame(12, {"splits": {"prefill": 0}, "seed": 1e308}, 5000),
            b"GET / HTTP/1.1\r\n\r\n" * 3,
            _frame(1, b"\xff\xfe not json"),
        ]
        while time.monotonic() < stop:
            for msg in bad:
                s = _conn(addr)
                if s is None:
                    continue
                with contextlib.suppress(OSError):
                    s.sendall(msg)
                _drain(s)
                s.close()
                count += 1
    else:
        raise SystemExit(f"unknown probe {name!r}")
    return {"probe": name, "connections": count}


# ---------------------------------------------------------------------------- the run
def _state_of(owner: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for f in STATE_DIR.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                st = json.loads(f.read_text())
                if st.get("owner_pid") == owner and any(
                        p["tag"].startswith("popen:") and p["tag"].split(":")[1].endswith("m")
                        for p in st.get("procs", [])):
                    return dict(st)
        time.sleep(0.2)
    raise SystemExit("hostile_clients: the emulation did not start its MEC in time")


def _listen_addr(pid: int) -> tuple[str, int]:
    """The TCP address the MEC process ``pid`` listens on (from its namespace's /proc view)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[3] == "0A" and f[9] in inodes:
            ip_hex, port_hex = f[1].split(":")
            ip = socket.inet_ntoa(struct.pack("<I", int(ip_hex, 16)))
            return ip, int(port_hex, 16)
    raise SystemExit(f"hostile_clients: MEC process {pid} listens on no TCP port")


def _rss_mb(pid: int) -> tuple[float, int]:
    rss, threads = 0.0, 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--window", type=float, default=12.0, help="seconds per probe window")
    ap.add_argument("--rss-budget-mb", type=float, default=120.0,
                    help="the MEC's peak RSS must stay under this (MiB)")
    ap.add_argument("--tolerance", type=float, default=0.05,
                    help="largest relative change of a window's mean latency vs quiet")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds at the start of a window whose requests are not counted")
    ap.add_argument("--probe", choices=PROBES, help=argparse.SUPPRESS)
    ap.add_argument("--addr", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:  # a probe client, started in the MEC's namespace
        host, port = args.addr.rsplit(":", 1)
        print(json.dumps(run_probe(args.probe, (host, int(port)), args.window)), flush=True)
        return 0
    if os.geteuid() != 0:
        print("hostile_clients: needs root (sudo PYTHONPATH=$PWD .venv/bin/python ...)",
              file=sys.stderr)
        return 2
    schedule = ["quiet", *PROBES, "quiet"]
    tmp = Path(tempfile.mkdtemp(prefix="hostile-"))
    trace = tmp / "const20.csv"
    trace.write_text("time_s,mbps\n0,20\n# period_s=3600\n")
    duration = 4.0 + len(schedule) * args.window + 2.0
    cmd = [sys.executable, "-m", "emulator.run", "--model", "gpt2", "--tokens", "8",
           "--policy", "offload",
           "--mec-speedup", "10", "--devices", "2", "--mec-model", "slots", "--mec-slots", "2", "--closed-loop",
           "--trace", str(trace),
           "--delay-ms", "10", "--jitter", "none", "--duration", f"{duration:g}", "--quiet",
           "--out", str(tmp / "run")]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        st = _state_of(run.pid, 120.0)
        run_id = st["run_id"]
        mec_host = next(p["pid"] for p in st["procs"] if p["tag"] == f"mininet:{run_id}m")
        mec_pid = next(p["pid"] for p in st["procs"]
                       if p["tag"].startswith(f"popen:{run_id}m:"))
        time.sleep(1.0)
        host, port = _listen_addr(mec_pid)
        print(f"MEC pid {mec_pid} of run {run_id} listens on {host}:{port}", flush=True)
        t_wait = time.monotonic()
        while not (tmp / "run" / "requests.jsonl").exists() or \
                (tmp / "run" / "requests.jsonl").stat().st_size == 0:
            if time.monotonic() - t_wait > 60 or run.poll() is not None:
                raise SystemExit("hostile_clients: no request finished in the first 60 s")
            time.sleep(0.2)
        windows: list[dict[str, Any]] = []
        for name in schedule:
            w: dict[str, Any] = {"probe": name, "t0": time.monotonic()}
            probe = None
            if name != "quiet":
                probe = subprocess.Popen(
                    ["mnexec", "-a", str(mec_host), sys.executable, __file__, "--probe", name,
                     "--addr", f"{host}:{port}", "--window", f"{args.window:g}"],
                    env=env, stdout=subprocess.PIPE, text=True)
            peak, threads = 0.0, 0
            end = w["t0"] + args.window
            while time.monotonic() < end:
                r, t = _rss_mb(mec_pid)
                peak, threads = max(peak, r), max(threads, t)
                time.sleep(0.05)
            if probe is not None:
                outp, _ = probe.communicate(timeout=30)
                w.update(json.loads(outp.strip().splitlines()[-1]) if outp.strip() else {})
            w.update(t1=time.monotonic(), rss_peak_mb=peak, threads_peak=threads)
            windows.append(w)
        run.wait(timeout=duration + 120)
        stderr = run.stderr.read() if run.stderr else ""
    finally:
        if run.poll() is None:
            run.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.wait(timeout=60)
    if run.returncode != 0:
        print(stderr, file=sys.stderr)
        print(f"hostile_clients: the emulation failed (exit {run.returncode})", file=sys.stderr)
        return 1
    recs = [json.loads(x) for x in (tmp / "run" / "requests.jsonl").read_text().splitlines()]
    summary = json.loads((tmp / "run" / "summary.json").read_text())
    offset = summary.get("t0_monotonic")  # records carry trace time: monotonic - t0
    if offset is None:
        print("hostile_clients: summary.json has no t0_monotonic", file=sys.stderr)
        return 1
    rows = []
    for w in windows:
        a, b = w["t0"] - offset + args.settle, w["t1"] - offset
        sel = [r for r in recs if a <= r["t_decide"] and r["t_end"] <= b]
        lat = np.array([r["latency_s"] for r in sel]) if sel else np.array([np.nan])
        rtt = np.array([r["observation"]["rtt_s"] for r in sel]) if sel else np.array([np.nan])
        rows.append({**w, "n": len(sel), "mean_s": float(lat.mean()),
                     "p95_s": float(np.percentile(lat, 95)), "rtt_ms": float(rtt.mean() * 1e3)})
    base = float(np.mean([r["mean_s"] for r in rows if r["probe"] == "quiet"]))
    failed = False
    print(f"{'window':10s} {'conns':>6s} {'MEC RSS MiB':>11s} {'threads':>7s} {'requests':>8s} "
          f"{'echo RTT ms':>11s} {'mean s':>7s} {'p95 s':>7s} {'vs quiet':>8s}  verdict")
    for r in rows:
        rel = r["mean_s"] / base - 1.0
        ok_lat = abs(rel) <= args.tolerance and r["n"] > 0
        ok_rss = r["rss_peak_mb"] <= args.rss_budget_mb
        failed |= not (ok_lat and ok_rss)
        verdict = "ok" if ok_lat and ok_rss else \
            ("RSS over budget " if not ok_rss else "") + ("latency off" if not ok_lat else "")
        print(f"{r['probe']:10s} {r.get('connections', 0):6d} {r['rss_peak_mb']:11.1f} "
              f"{r['threads_peak']:7d} {r['n']:8d} {r['rtt_ms']:11.2f} {r['mean_s']:7.4f} "
              f"{r['p95_s']:7.4f} {rel * 100:+7.2f}%  {verdict}")
    print(f"MEC RSS budget {args.rss_budget_mb:g} MiB; latency tolerance "
          f"{args.tolerance * 100:g}% of the quiet mean {base:.4f} s; run in {tmp / 'run'}")
    mec_log = (tmp / "run" / "logs" / "mec.log").read_text(errors="replace")
    print(f"MEC log: {len(mec_log.splitlines())} lines, "
          f"{mec_log.count('Traceback')} tracebacks", flush=True)
    if "Traceback" in mec_log:
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
