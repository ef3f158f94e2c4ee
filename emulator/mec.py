"""The MEC server process: one FIFO queue shared by all devices, ``C`` compute slots.

Scheduling is the latency model's (:mod:`agent.latency`), so simulator and emulator agree: a
request that offloads anything is a *session*. Its first ``COMPUTE`` joins the tail of one FIFO
queue shared by all devices; when a slot is free the session at the head takes it and keeps it
(its KV cache / latent stays on the MEC) for every later pass of the request, until the device
sends ``RELEASE``. So only the first MEC job of a request waits; the rest start on arrival.

Threads: one reader per device connection (stamps ``t_recv`` when the last payload byte is in),
one worker per slot (stamps ``t_start``, computes blocks ``[block_lo, block_hi)`` -- profiled:
waits out the profiled time; execute: runs the ONNX pieces -- stamps ``t_done`` and sends the
``RESULT``). Every reply carries the queue state; the expected wait of a new session is a FIFO
replay over the slots' remaining expected hold times and the queued sessions' expected hold
times, as declared by each device in its first ``COMPUTE`` (``expected_hold_s``: its own
estimate of the session length from the profiles and its throughput estimate).

Run as a process: ``python -m emulator.mec --profile P.json [--slots C] ...``; it prints one
line ``{"ready": true, "port": PORT}`` on stdout when it listens, logs to stderr, and exits on
SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from emulator.compute import JITTERS, ProfiledCompute, realtime_thread, wait_until
from emulator.errors import EmulatorError, ProtocolError
from emulator.protocol import (
    DEFAULT_MAX_PAYLOAD,
    Message,
    MsgType,
    PayloadBuffer,
    QueueState,
    configure_socket,
    recv_message,
    send_message,
)
from profiler.schema import Profile, ProfileError, load_profile

__all__ = ["Job", "MecBackend", "MecServer", "ProfiledMecBackend", "main"]


@dataclass
class Job:
    """One pass repetition's MEC part (a session's first job waits in the FIFO queue)."""

    conn: _Conn
    msg: Message
    t_recv: float
    expected_s: float
    """Expected slot hold time of the session (first job) or compute time of the job."""
    t_start: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


class MecBackend(Protocol):
    """How the MEC computes a job (profiled or executed)."""

    name: str

    def expected_s(self, pass_index: int, lo: int, hi: int) -> float:
        """Expected compute time of blocks ``[lo, hi)`` (for the queue's wait estimate)."""
        ...

    def run(self, msg: Message) -> tuple[dict[str, Any], bytes | bytearray | memoryview]:
        """Compute ``msg``'s block range on its payload; returns (result metadata, payload)."""
        ...


class ProfiledMecBackend:
    """Waits out the MEC profile's block times; thread-safe (the generator is locked)."""

    name = "profiled"

    def __init__(self, compute: ProfiledCompute) -> None:
        self.compute = compute
        self._lock = threading.Lock()

    def expected_s(self, pass_index: int, lo: int, hi: int) -> float:
        return self.compute.expected_s(pass_index, lo, hi)

    def run(self, msg: Message) -> tuple[dict[str, Any], memoryview]:
        start = time.perf_counter()
        with self._lock:
            target = self.compute.sample_s(msg.pass_index, msg.block_lo, msg.block_hi)
        if target > 0:
            wait_until(start + target, self.compute.spin_s)
        return {"target_s": target}, self.compute.payload(msg.pass_index, msg.block_lo,
                                                          msg.block_hi)


class _Conn:
    """A device connection: the socket and a lock so replies from workers do not interleave."""

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        self.device = -1
        self.lock = threading.Lock()

    def send(self, msg: Message) -> None:
        with self.lock:
            send_message(self.sock, msg)


class MecServer:
    """The MEC: listens, queues sessions FIFO across all devices, runs them on ``slots`` workers."""

    def __init__(self, profile: Profile, backend: MecBackend, slots: int = 1,
                 host: str = "0.0.0.0", port: int = 0,
                 max_payload: int = DEFAULT_MAX_PAYLOAD, realtime: bool = False,
                 window_clamp: int = 0) -> None:
        if slots < 1:
            raise EmulatorError(f"MEC slots must be >= 1, got {slots}")
        self.realtime = realtime
        self.window_clamp = window_clamp
        self.profile = profile
        self.backend = backend
        self.slots = slots
        self.max_payload = max_payload
        self._cv = threading.Condition()
        self._waiting: deque[Job] = deque()          # first jobs of sessions waiting for a slot
        self._free: list[int] = list(range(slots))   # free slot numbers (lowest first)
        self._slot_of: dict[int, int] = {}           # id(conn) -> slot held
        self._hold: dict[int, tuple[float, float]] = {}  # slot -> (granted at, expected hold)
        self._jobs: list[deque[Job]] = [deque() for _ in range(slots)]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[_Conn] = []
        self.jobs_done = 0
        self.sessions = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._listener.bind((host, port))
        except OSError as e:
            raise EmulatorError(f"MEC cannot listen on {host}:{port}: {e.strerror or e}") from e
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]

    # ------------------------------------------------------------------ queue state
    def queue_state(self, now: float | None = None) -> QueueState:
        """Sessions waiting, slots held, and the expected wait of a session arriving ``now``."""
        now = time.monotonic() if now is None else now
        with self._cv:
            held = list(self._hold.values())
            queued = [j.expected_s for j in self._waiting]
        free = [max(0.0, t0 + e - now) for t0, e in held]
        free += [0.0] * (self.slots - len(free))
        heapq.heapify(free)
        for e in queued:
            heapq.heappush(free, heapq.heappop(free) + e)
        return QueueState(queue_len=len(queued), busy_slots=len(held), slots=self.slots,
                          expected_wait_s=free[0])

    def _grant(self) -> None:
        """Give free slots to waiting sessions, FIFO (call with ``_cv`` held)."""
        now = time.monotonic()
        while self._free and self._waiting:
            slot = self._free.pop(0)
            job = self._waiting.popleft()
            self._slot_of[id(job.conn)] = slot
            self._hold[slot] = (now, job.expected_s)
            self._jobs[slot].append(job)
            self.sessions += 1
        self._cv.notify_all()

    def _release(self, conn: _Conn) -> None:
        with self._cv:
            slot = self._slot_of.pop(id(conn), None)
            if slot is not None:
                del self._hold[slot]
                self._free.append(slot)
                self._free.sort()
            self._waiting = deque(j for j in self._waiting if j.conn is not conn)
            self._grant()

    # ------------------------------------------------------------------ threads
    def start(self) -> None:
        for i in range(self.slots):
            self._spawn(self._worker, i, name=f"mec-worker-{i}")
        self._spawn(self._accept, name="mec-accept")

    def _spawn(self, target: Any, *args: Any, name: str) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        for sock in [self._listener, *(c.sock for c in self._conns)]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, addr = self._listener.accept()
            except OSError:
                return
            configure_socket(sock, self.window_clamp)
            conn = _Conn(sock, f"{addr[0]}:{addr[1]}")
            self._conns.append(conn)
            self._spawn(self._reader, conn, name=f"mec-reader-{addr[1]}")

    def _reader(self, conn: _Conn) -> None:
        if self.realtime:  # a reader delayed by other load would stamp t_recv late
            realtime_thread()
        buf = PayloadBuffer()
        try:
            while not self._stop.is_set():
                msg = recv_message(conn.sock, self.max_payload, into=buf)
                if msg is None or msg.type == MsgType.BYE:
                    return
                self._handle(conn, msg, time.monotonic())
        except ProtocolError as e:
            if not self._stop.is_set():
                print(f"mec: device {conn.device} ({conn.peer}): {e}", file=sys.stderr)
                with contextlib.suppress(OSError):
                    conn.send(Message(MsgType.ERROR, meta={"message": str(e)}))
        except OSError as e:
            if not self._stop.is_set():
                print(f"mec: device {conn.device} ({conn.peer}): {e}", file=sys.stderr)
        finally:
            self._release(conn)
            conn.sock.close()

    def _handle(self, conn: _Conn, msg: Message, t_recv: float) -> None:
        if msg.type == MsgType.HELLO:
            conn.device = int(msg.meta.get("device", -1))
            model = msg.meta.get("model")
            if model != self.profile.model.name:
                raise ProtocolError(f"device speaks model {model!r}, this MEC serves "
                                    f"{self.profile.model.name!r}")
            conn.send(Message(MsgType.WELCOME, meta={
                "model": self.profile.model.name, "slots": self.slots,
                "backend": self.backend.name, "queue": self.queue_state(t_recv).to_json()}))
        elif msg.type == MsgType.ECHO:
            conn.send(Message(MsgType.ECHO_REPLY, request_id=msg.request_id, meta={
                "t_recv": t_recv, "bytes": len(msg.payload),
                "queue": self.queue_state(t_recv).to_json()}))
        elif msg.type == MsgType.QUEUE:
            conn.send(Message(MsgType.QUEUE_REPLY, request_id=msg.request_id,
                              meta={"queue": self.queue_state(t_recv).to_json()}))
        elif msg.type == MsgType.RELEASE:
            self._release(conn)
        elif msg.type == MsgType.COMPUTE:
            if msg.pass_index >= len(self.profile.passes):
                raise ProtocolError(f"pass index {msg.pass_index} out of range")
            n = self.profile.passes[msg.pass_index].n_blocks
            if msg.block_hi > n or msg.block_lo >= n:
                raise ProtocolError(f"block range [{msg.block_lo}, {msg.block_hi}) out of range "
                                    f"for pass {msg.pass_index} with {n} blocks")
            # the reader's buffer is reused for the next message: keep a copy only if needed
            msg.payload = bytes(msg.payload) if self.backend.name != "profiled" else b""
            hold = msg.meta.get("expected_hold_s")
            expected = float(hold) if isinstance(hold, (int, float)) else \
                self.backend.expected_s(msg.pass_index, msg.block_lo, msg.block_hi)
            job = Job(conn, msg, t_recv, expected)
            with self._cv:
                slot = self._slot_of.get(id(conn))
                if slot is None:
                    self._waiting.append(job)
                    self._grant()
                else:
                    self._jobs[slot].append(job)
                    self._cv.notify_all()
        else:
            raise ProtocolError(f"unexpected {msg.type.name} message from a device")

    def _worker(self, slot: int) -> None:
        if self.realtime and not realtime_thread():
            print("mec: SCHED_FIFO not allowed; compute timing may jitter", file=sys.stderr)
        jobs = self._jobs[slot]
        while True:
            with self._cv:
                while not jobs and not self._stop.is_set():
                    self._cv.wait()
                if self._stop.is_set():
                    return
                job = jobs.popleft()
            job.t_start = time.monotonic()
            try:
                meta, payload = self.backend.run(job.msg)
            except EmulatorError as e:
                meta, payload = {"error": str(e)}, b""
            t_done = time.monotonic()
            with self._cv:
                self.jobs_done += 1
            meta.update({"t_recv": job.t_recv, "t_start": job.t_start, "t_done": t_done,
                         "slot": slot, "queue": self.queue_state(t_done).to_json()})
            m = job.msg
            reply = Message(MsgType.RESULT, m.request_id, m.pass_index, m.repetition,
                            m.block_lo, m.block_hi, meta=meta, payload=payload)
            try:
                job.conn.send(reply)
            except OSError as e:
                if not self._stop.is_set():
                    print(f"mec: cannot reply to device {job.conn.device}: {e}",
                          file=sys.stderr)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m emulator.mec",
                                 description="The MEC server process of the emulator (started "
                                             "by emulator.run inside the MEC host).")
    ap.add_argument("--profile", required=True, help="MEC profile JSON (block times)")
    ap.add_argument("--slots", type=int, default=1, help="concurrent compute slots C (default 1)")
    ap.add_argument("--host", default="0.0.0.0", help="address to listen on (default all)")
    ap.add_argument("--port", type=int, default=0, help="TCP port (default: any free one)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the block-time generator")
    ap.add_argument("--jitter", choices=JITTERS, default="lognormal",
                    help="block-time distribution (see emulator.compute)")
    ap.add_argument("--compute", choices=("profiled", "execute"), default="profiled",
                    help="wait out profiled times, or run the ONNX pieces")
    ap.add_argument("--pieces", default=None, help="directory of ONNX pieces (execute mode)")
    ap.add_argument("--threads", type=int, default=1,
                    help="ONNX Runtime intra-op threads per slot (execute mode)")
    ap.add_argument("--max-payload", type=int, default=DEFAULT_MAX_PAYLOAD,
                    help="largest payload accepted, bytes")
    ap.add_argument("--no-realtime", action="store_true",
                    help="do not run compute slots with SCHED_FIFO (see emulator.compute)")
    ap.add_argument("--window-clamp", type=int, default=0,
                    help="TCP_WINDOW_CLAMP bytes on device connections (0: none)")
    ap.add_argument("--speedup", type=float, default=1.0,
                    help="divide every profiled MEC block time by this (mec_speedup)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the MEC process."""
    args = _parse_args(argv)
    sys.setswitchinterval(0.0005)  # let readers in quickly while a worker spins
    try:
        profile = load_profile(args.profile)
        backend: MecBackend
        if args.compute == "execute":
            from emulator.execute import ExecuteMecBackend

            backend = ExecuteMecBackend(profile, args.pieces, threads=args.threads)
        else:
            rng = np.random.default_rng(np.random.SeedSequence([args.seed, 0x4D4543]))
            backend = ProfiledMecBackend(ProfiledCompute(profile, rng, args.jitter,
                                                         speedup=args.speedup))
        server = MecServer(profile, backend, args.slots, args.host, args.port, args.max_payload,
                           realtime=not args.no_realtime, window_clamp=args.window_clamp)
    except (EmulatorError, ProfileError, ValueError) as e:
        print(f"mec: {e}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server.start()
    print(json.dumps({"ready": True, "port": server.port}), flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    print(f"mec: stopped after {server.jobs_done} jobs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
