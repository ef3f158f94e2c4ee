"""Live trace replay: a shaper process that changes HTB rates on schedule and measures links.

:class:`ShaperProcess` runs in its own process (spawned when the network is built, so the
application's threads and the GIL cannot delay it; SCHED_FIFO when allowed). On ``start(t0)``
it sets every shaped class to the trace's rate at ``now - t0``, then walks the traces'
segments in time order: it sleeps until just before each change (``Event.wait``, then a short
spin), starts the netlink change early by the running median of its own duration, and logs
``lag = ack time - scheduled time`` (the kernel applied the change at or before the ack). A
second thread samples each class's byte counter every ``sample_s`` and turns windows into
``link.csv`` rows. ``stop()`` returns the lags and rows to the parent.

Rates: ``capacity_bps`` from the trace is application goodput; the HTB rate is
``capacity / PAYLOAD_FRACTION`` wire bits when overhead compensation is on (see
:mod:`emulator.net.config`).

Outages: HTB charges a sent frame against the rate in force when it leaves, and a rate change
keeps that debt: one 1514-byte frame at 8 kbit/s is 1.5 s during which the class stays silent
even after capacity returns (measured: a whole 1 s window at 0 goodput after a 0.7 s outage in
the T-Mobile LTE trace). So capacity below ``outage_below_bps`` does not lower the HTB rate; it
closes the class's TBF leaf instead (TBF never goes into debt, and ``tc qdisc change`` on a TBF
keeps its queue). HTB itself still carries up to one frame-time of debt across each change
(about -2% goodput at 10 changes/s alternating 5/12 Mbit/s, measured).

Opening a gate: a closed TBF that holds a queue has armed its watchdog for the time its next
frame would conform at GATE_RATE (up to 1.5 s ahead), and ``tc qdisc change`` neither cancels
nor re-arms it; HTB meanwhile does not poll a leaf that returned nothing. So the queued frames
would wait for that stale watchdog, or for the sender's next frame (with TCP backed off after
an outage: its next RTO), before leaving. Measured: 0 bytes in the first 100 ms after an 8 s
outage of the 5G trace (15 Mbit/s), 0.4 s of silence after a 0.5 s outage of the LTE trace at
20 ms RTT. After opening a gate the shaper therefore "kicks" the interface: one 60-byte frame
of a local experimental EtherType sent on the IFB with a packet socket is enqueued on its root
qdisc (unclassified: HTB's direct queue), which runs a dequeue round; the IFB discards the
frame itself (it only forwards redirected frames).
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import math
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from emulator.net.config import MIN_RATE_BPS, PAYLOAD_FRACTION
from emulator.net.errors import NetError
from emulator.net.tc import FRAME_BYTES, ClassCounter, HtbRateSetter, burst_bytes
from traces import Trace

__all__ = [
    "GATE_RATE_BPS",
    "LINE_BURST",
    "LINE_RATE_BPS",
    "ShapedClass",
    "ShaperProcess",
    "ShaperSettings",
    "lag_summary",
    "wire_Bps",
]

_SPIN_S = 0.0015  # busy-wait this long before a change (Event.wait wakes ~0.1-1 ms late)
_CHUNK_S = 60.0  # trace segments are read ahead in chunks of this many seconds

#: an open TBF gate: line rate (never the bottleneck) and its bucket
LINE_RATE_BPS: int = 10_000_000_000
LINE_BURST: int = 65536
#: the frame sent on an IFB to run its qdisc after a gate opens (broadcast, EtherType 0x88b5)
KICK_FRAME: bytes = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + b"\x00" * 46
#: a closed TBF gate: 1 byte/s and a one-frame bucket. A TBF refills its bucket when changed,
#: so at most one frame leaves as it closes (the shaper closes it one frame time early, at the
#: rate before the outage, so that frame belongs to the last open interval); after that a
#: queued frame would need 1514 s of tokens: an outage delivers nothing (measured: 0 bytes in
#: 5 s with a TCP sender waiting; the former 8 kbit/s gate let ~1 frame per 1.5 s through).
GATE_RATE_BPS: int = 8
GATE_BURST: int = FRAME_BYTES


@dataclass(frozen=True)
class ShapedClass:
    """One HTB class the run shapes or measures.

    :param role: ``leaf`` (own trace, updated live), ``cell`` (shared-cell parent, updated
        live), ``child`` (a device's share of a cell: a class of the HTB under the cell's class,
        fixed at the trace's peak; measured only).
    :param trace: capacity (goodput bit/s) the class follows; for ``child`` the cell's trace.
    """

    ifname: str
    ifindex: int
    classid: int
    parent: int
    role: str
    device: int
    direction: str
    trace: Trace
    #: TBF leaves ``(ifindex, qdisc handle, parent class)`` this class opens and closes
    gates: tuple[tuple[int, int, int], ...] = ()
    #: per gate, IPv4 ``(source, destination)`` of a frame the interface's filter puts in it
    fill: tuple[tuple[str, str], ...] = ()
    #: the class replays its trace this many seconds late (trace time ``t`` at ``t0 + t +
    #: lag_s``): a downlink whose propagation delay comes before its shaper (see the module
    #: docstring); until then it sits at the trace's time-0 rate
    lag_s: float = 0.0
    #: HTB burst/cburst of this class in seconds at its rate (``None``: the settings' own)
    burst_s: float | None = None
    #: the least HTB bucket of this class (bytes), whatever ``burst_s`` gives at its rate
    burst_floor_bytes: int = 1


@dataclass(frozen=True)
class ShaperSettings:
    """How rates map onto HTB and how often links are sampled."""

    compensate_overhead: bool = True
    burst_s: float = 0.004
    sample_s: float = 1.0
    realtime: bool = True
    queue_bytes: int = 150_000
    outage_below_bps: float = 100e3


def _fill_frame(src: str, dst: str) -> bytes:
    """A full-size (:data:`FRAME_BYTES`) Ethernet/IPv4 frame from ``src`` to ``dst`` with an
    experimental IP protocol number (253) and a TTL of 1: it never reaches a host."""
    total = FRAME_BYTES - 14
    head = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 1, 253, 0,
                                 socket.inet_aton(src), socket.inet_aton(dst)))
    csum = sum(struct.unpack("!10H", head))
    while csum >> 16:
        csum = (csum & 0xFFFF) + (csum >> 16)
    struct.pack_into("!H", head, 10, ~csum & 0xFFFF)
    eth = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x02" + b"\x08\x00"
    return eth + bytes(head) + b"\0" * (total - len(head))


def wire_Bps(capacity_bps: float, compensate: bool) -> int:
    """HTB rate in bytes/s for a trace capacity in bit/s."""
    bps = max(capacity_bps, MIN_RATE_BPS)
    if compensate:
        bps /= PAYLOAD_FRACTION
    return max(1, int(bps / 8.0))


def _changes(trace: Trace, t_from: float) -> Iterator[tuple[float, float]]:
    """``(t, rate)`` for every rate change strictly after ``t_from`` (trace time), forever.

    Ends when none can follow: a trace with a single rate, or past the end of a non-looping
    trace (without this a constant trace would be scanned for ever, busy, at SCHED_FIFO)."""
    last = float(trace.capacity_at(t_from))
    a = t_from
    quiet_since = t_from
    while True:
        b = a + _CHUNK_S
        for s, _e, r in trace.segments(a, b):
            if s > t_from and r != last:
                yield s, r
                last = r
                quiet_since = s
        a = b
        if a - quiet_since > trace.period_s + _CHUNK_S:
            return  # a whole period without a change: there will be none


def lag_summary(values_ms: list[float]) -> dict[str, float]:
    """Median, 95th percentile and max of a list of milliseconds (NaN when empty)."""
    if not values_ms:
        return {"median": math.nan, "p95": math.nan, "max": math.nan}
    s = sorted(values_ms)
    return {
        "median": statistics.median(s),
        "p95": s[min(len(s) - 1, math.ceil(0.95 * len(s)) - 1)],
        "max": s[-1],
    }



def _packet_socket(socks: dict[str, socket.socket], ifname: str) -> socket.socket:
    """A raw packet socket bound to ``ifname``, opened once and kept in ``socks``."""
    sock = socks.get(ifname)
    if sock is None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        try:
            sock.bind((ifname, 0))
        except OSError:
            sock.close()
            raise
        socks[ifname] = sock
    return sock


class _Child:
    """Runs inside the shaper process."""

    def __init__(
        self, classes: list[ShapedClass], cfg: ShaperSettings, conn: Connection | None
    ) -> None:
        self.classes = classes
        self.cfg = cfg
        self.conn = conn
        self.stop_evt = threading.Event()
        self.lags_ms: list[float] = []
        self.calls_ms: list[float] = []
        self.reads_ms: list[float] = []  # how long each sample's read of the counters took
        self.rows: list[dict[str, Any]] = []
        self.rows_lock = threading.Lock()
        self.realtime = False
        self.errors: list[str] = []
        self.state: list[dict[str, Any]] = []
        self.kick_errors = 0
        #: filler bytes sent per (ifindex, class): not traffic, taken out of the class counters
        self.fill_bytes: dict[tuple[int, int], int] = {}

    def _msgs(
        self, setter: HtbRateSetter, k: int, c: ShapedClass, capacity_bps: float
    ) -> list[bytes]:
        """Messages taking class ``k`` to ``capacity_bps`` from its current state.

        At or above ``outage_below_bps``: the HTB class gets the rate and the TBF gates are
        open (line rate). Below it, the gates close (TBF at GATE_RATE): HTB stays as it was, so
        no HTB token debt at a near-zero rate delays the link after the outage.
        """
        state = self.state[k]
        state["opened"] = state["closed"] = False
        msgs: list[bytes] = []
        if capacity_bps < self.cfg.outage_below_bps:
            if state["open"]:
                msgs += [
                    setter.encode_tbf(i, h, p, GATE_RATE_BPS // 8, GATE_BURST, self.cfg.queue_bytes)
                    for i, h, p in c.gates
                ]
                state["open"] = False
                state["closed"] = True
            return msgs
        if state["rate"] != capacity_bps:
            rate = wire_Bps(capacity_bps, self.cfg.compensate_overhead)
            b = max(c.burst_floor_bytes,
                    burst_bytes(rate, self.cfg.burst_s if c.burst_s is None else c.burst_s))
            msgs.append(setter.encode(c.ifindex, c.classid, c.parent, rate, rate, b, b))
            state["rate"] = capacity_bps
        if not state["open"]:
            msgs += [
                setter.encode_tbf(i, h, p, LINE_RATE_BPS // 8, LINE_BURST, self.cfg.queue_bytes)
                for i, h, p in c.gates
            ]
            state["open"] = True
            state["opened"] = True
        return msgs

    def _kick(self, socks: dict[str, socket.socket], c: ShapedClass) -> None:
        """Run the qdisc of ``c``'s interface now (see the module docstring: opening a gate)."""
        try:
            _packet_socket(socks, c.ifname).send(KICK_FRAME)
        except OSError as exc:  # a missed kick costs at most the stale watchdog's delay
            self.kick_errors += 1
            if self.kick_errors == 1:
                print(f"emulator.net shaper: kick on {c.ifname} failed: {exc}", file=sys.stderr)

    def _fill(self, socks: dict[str, socket.socket], c: ShapedClass) -> None:
        """Spend the bucket a gate got back as it closed: one full-size frame per gate that the
        interface's filter classifies into it. Sent on the IFB with a packet socket, it leaves
        through the gate at once (or waits at the tail of the gate's queue when a queued frame
        spent the bucket first) and the IFB then discards it (it only forwards redirected
        frames). Without it a closed gate would still pass up to one frame of whatever arrives
        first during the outage (measured: ~500 bytes of a reply in a 30 s outage)."""
        try:
            sock = _packet_socket(socks, c.ifname)
            for (ifindex, _q, cls), (src, dst) in zip(c.gates, c.fill, strict=True):
                for key in {(ifindex, cls), (c.ifindex, c.classid)}:  # its class (and cell)
                    self.fill_bytes[key] = self.fill_bytes.get(key, 0) + FRAME_BYTES
                sock.send(_fill_frame(src, dst))  # counted first: a sample never sees it alone
        except OSError as exc:
            self.kick_errors += 1
            if self.kick_errors == 1:
                print(f"emulator.net shaper: filler frame on {c.ifname} failed: {exc}",
                      file=sys.stderr)

    def replay(self, t0: float) -> None:
        live = [c for c in self.classes if c.role in ("leaf", "cell")]
        self.state = [{"rate": None, "open": True, "opened": False, "closed": False}
                      for _ in live]
        kick_socks: dict[str, socket.socket] = {}
        try:
            with HtbRateSetter() as setter:
                # heap entries: (seconds after t0 a change is due, class, rate)
                heap: list[tuple[float, int, float]] = []
                iters = []
                prev: list[tuple[float, float]] = []  # per class: trace (time, rate) last set

                def push(k: int, nxt: tuple[float, float] | None) -> None:
                    if nxt is None:
                        return
                    t_p, r_p = prev[k]
                    lead = self._close_lead(t_p, r_p, *nxt)
                    heapq.heappush(heap, (nxt[0] + live[k].lag_s - lead, k, nxt[1]))
                    prev[k] = nxt

                for k, c in enumerate(live):
                    t_now = max(0.0, time.monotonic() - t0 - c.lag_s)  # the class's trace time
                    cap = float(c.trace.capacity_at(t_now))
                    for m in self._msgs(setter, k, c, cap):
                        setter.send(m)
                    if self.state[k]["closed"]:  # a trace that starts in an outage
                        self._fill(kick_socks, c)
                    it = _changes(c.trace, t_now)
                    iters.append(it)
                    prev.append((t_now, cap))
                    push(k, next(it, None))
                lead = 0.0005
                while heap and not self.stop_evt.is_set():
                    t_s, k, rate = heapq.heappop(heap)
                    due = t0 + t_s
                    msgs = self._msgs(setter, k, live[k], rate)
                    if msgs and not self._sleep_until(due - lead):
                        break
                    for m in msgs:
                        a = time.monotonic()
                        setter.send(m)
                        b = time.monotonic()
                        self.calls_ms.append((b - a) * 1e3)
                        self.lags_ms.append((b - due) * 1e3)
                    if self.state[k]["opened"]:
                        self._kick(kick_socks, live[k])
                    elif self.state[k]["closed"]:
                        self._fill(kick_socks, live[k])
                    if msgs:
                        lead = min(statistics.median(self.calls_ms[-32:]) / 1e3, 0.005)
                    push(k, next(iters[k], None))
        except Exception as exc:  # reported to the parent by poll()/stop()
            self.errors.append(f"shaper: {type(exc).__name__}: {exc}")
            print(f"emulator.net shaper: {self.errors[-1]}", file=sys.stderr, flush=True)
        finally:
            for sock in kick_socks.values():
                sock.close()

    def _close_lead(self, t_prev: float, rate_prev: float, t: float, rate: float) -> float:
        """How early to close a gate at ``t``: one frame time at the rate before, so the frame
        a closing TBF still lets out (its bucket refills) leaves before the outage begins
        (never earlier than the change before)."""
        if rate >= self.cfg.outage_below_bps or rate_prev < self.cfg.outage_below_bps:
            return 0.0
        wire = wire_Bps(rate_prev, self.cfg.compensate_overhead)
        return min(GATE_BURST / wire, max(0.0, t - t_prev))

    def _sleep_until(self, deadline: float) -> bool:
        while True:
            rem = deadline - time.monotonic()
            if rem <= 0:
                return True
            if rem > _SPIN_S:
                if self.stop_evt.wait(rem - _SPIN_S):
                    return False
            elif self.stop_evt.is_set():
                return False

    def sample(self, t0: float) -> None:
        # measurement, not shaping: off SCHED_FIFO (the process's replay thread keeps it). A
        # read once took 22 ms median (pyroute2 decoding 130 classes at 64 devices) at this
        # process's priority and held up the devices' and the MEC's threads (priority 5) once
        # a second: tokens sent in the 30 ms before a read reached their device 15-25 ms late.
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        dt = self.cfg.sample_s
        try:
            with ClassCounter() as counter:
                ifaces = sorted({c.ifindex for c in self.classes})

                def read() -> tuple[dict[tuple[int, int], int], float]:
                    """The counters and when they were read (the middle of the read)."""
                    a = time.monotonic()
                    out: dict[tuple[int, int], int] = {}
                    for i in ifaces:
                        for h, n in counter.read(i).items():
                            out[(i, h)] = n - self.fill_bytes.get((i, h), 0)
                    b = time.monotonic()
                    self.reads_ms.append((b - a) * 1e3)
                    return out, (a + b) / 2

                rel = time.monotonic() - t0
                k = 0 if rel < 0.1 * dt else math.ceil(rel / dt)
                if not self._wait(t0 + k * dt):  # windows start at t0 + k * dt
                    return
                prev, prev_t = read()
                while True:
                    k += 1
                    if not self._wait(t0 + k * dt):
                        return
                    cur, now = read()
                    self._rows(prev, cur, prev_t - t0, now - t0)
                    prev, prev_t = cur, now
        except Exception as exc:
            self.errors.append(f"sampler: {type(exc).__name__}: {exc}")
            print(f"emulator.net shaper: {self.errors[-1]}", file=sys.stderr, flush=True)

    def _wait(self, deadline: float) -> bool:
        rem = deadline - time.monotonic()
        return not (rem > 0 and self.stop_evt.wait(rem))

    def _rows(
        self, prev: dict[tuple[int, int], int], cur: dict[tuple[int, int], int], a: float, b: float
    ) -> None:
        span = max(b - a, 1e-6)
        frac = PAYLOAD_FRACTION if self.cfg.compensate_overhead else 1.0
        new: list[dict[str, Any]] = []
        for c in self.classes:
            key = (c.ifindex, c.classid)
            if key not in cur or key not in prev:
                continue
            wire = max(0, cur[key] - prev[key]) * 8.0 / span  # a filler taken out early
            # trace time lags the wall clock by lag_s; before that the class sat at the rate at 0
            head = max(0.0, min(b, c.lag_s) - max(a, 0.0)) * float(c.trace.capacity_at(0.0)) / 8
            ta, tb = max(a - c.lag_s, 0.0), max(b - c.lag_s, 0.0)
            cap = (head + float(c.trace.bytes_between(ta, tb) if tb > ta else 0.0)) * 8.0 / span
            new.append(
                {
                    "t_s": round(a, 4),
                    "device": c.device,
                    "direction": c.direction,
                    "capacity_mbps": round(cap / 1e6, 4),
                    "goodput_mbps": round(wire * frac / 1e6, 4),
                    "wire_mbps": round(wire / 1e6, 4),
                }
            )
        with self.rows_lock:
            self.rows.extend(new)

    def result(self) -> dict[str, Any]:
        with self.rows_lock:
            rows = list(self.rows)
        return {
            "changes": len(self.lags_ms),
            "lag_ms": lag_summary(self.lags_ms),
            "call_ms": lag_summary(self.calls_ms),
            "sample_read_ms": lag_summary(self.reads_ms),
            "lags_ms": list(self.lags_ms),
            "realtime": self.realtime,
            "errors": list(self.errors),
            "rows": rows,
        }


def _child_main(classes: list[ShapedClass], cfg: ShaperSettings, conn: Connection) -> None:
    child = _Child(classes, cfg, conn)
    if cfg.realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
            child.realtime = True
        except (OSError, AttributeError):
            child.realtime = False
    conn.send(("ready", os.getpid()))
    threads: list[threading.Thread] = []
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            child.stop_evt.set()
            break
        if msg[0] == "start" and not threads:
            t0 = float(msg[1])
            threads = [
                threading.Thread(target=child.replay, args=(t0,), daemon=True),
                threading.Thread(target=child.sample, args=(t0,), daemon=True),
            ]
            for t in threads:
                t.start()
            conn.send(("started",))
        elif msg[0] == "poll":
            conn.send(("result", child.result()))
        elif msg[0] == "stop":
            child.stop_evt.set()
            for t in threads:
                t.join(timeout=5.0)
            conn.send(("result", child.result()))
            break
    conn.close()


class ShaperProcess:
    """Parent-side handle of the shaper process (started at construction, idle until start).

    The process is a plain ``python -c`` subprocess running :func:`main` (so the
    caller's ``__main__`` is never re-imported); it talks over a socketpair with pickled
    messages, the first of which is the plan (classes and settings).
    """

    def __init__(self) -> None:
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        # the child imports exactly what the parent imports (same traces, same emulator)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env.setdefault("AIGC_AGENT_NO_GYM", "1")  # config's agent.wire import: no Gymnasium
        fd = child_sock.fileno()
        code = "import sys; from emulator.net.shaper import main; sys.exit(main(sys.argv[1:]))"
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code, "--fd", str(fd)],
            pass_fds=(fd,),
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a terminal's Ctrl-C reaches the parent only
        )
        child_sock.close()
        self._conn = Connection(parent_sock.detach())
        self._result: dict[str, Any] | None = None
        self._started = False

    def load(self, classes: list[ShapedClass], settings: ShaperSettings) -> None:
        """Send the plan (the process starts while the network is built) and wait for it."""
        self._conn.send(("plan", classes, settings))
        msg = self._recv(timeout=30.0)
        assert msg[0] == "ready"

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _recv(self, timeout: float) -> Any:
        try:
            if not self._conn.poll(timeout):
                raise NetError(
                    f"shaper process (pid {self._proc.pid}) did not answer within {timeout:.0f} s"
                )
            return self._conn.recv()
        except (EOFError, OSError) as exc:
            raise NetError(f"shaper process exited (code {self._proc.poll()})") from exc

    def start(self, t0: float) -> None:
        """Begin the replay with trace time 0 at ``t0`` (``time.monotonic()`` clock)."""
        if self._started:
            raise NetError("shaping already started; stop_shaping() first (one replay per run)")
        self._conn.send(("start", t0))
        self._recv(timeout=10.0)
        self._started = True

    def poll(self) -> dict[str, Any]:
        """Stats and rows so far (the replay goes on)."""
        if self._result is not None:
            return self._result
        self._conn.send(("poll",))
        msg = self._recv(timeout=10.0)
        return dict(msg[1])

    def stop(self) -> dict[str, Any]:
        """Stop the replay and the process; returns the final stats and rows."""
        if self._result is None:
            try:
                self._conn.send(("stop",))
                self._result = dict(self._recv(timeout=10.0)[1])
            except (NetError, OSError):
                self._result = _Child([], ShaperSettings(), None).result()
            self.close()
        return self._result

    def close(self) -> None:
        """Terminate the process if still running (idempotent)."""
        try:
            self._proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=2.0)
        self._conn.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m emulator.net.shaper",
        description="Shaper process of emulator.net (started by EmulatedNetwork, not by hand).",
    )
    ap.add_argument("--fd", type=int, required=True, help="socket fd to the parent")
    args = ap.parse_args(argv)
    conn = Connection(args.fd)
    try:
        msg = conn.recv()
    except EOFError:
        return 0
    if msg[0] != "plan":  # the run was torn down before it finished building
        return 0
    _child_main(msg[1], msg[2], conn)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
