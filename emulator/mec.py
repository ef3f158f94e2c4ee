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

Hostile clients (see :mod:`emulator.guard`): the server listens only on ``--host`` (the MEC's
own address; ``emulator.run`` passes 127.0.0.1 in loopback mode). A connection is a session
only after a ``HELLO`` with the run's token (:data:`emulator.guard.TOKEN_ENV`) within
``hello_timeout_s``; every malformed message or field gets an ``ERROR`` and the connection is
closed. Receive buffers grow as bytes arrive, within a per-connection bound (``max_payload``,
from what the profile's plans can send) and a whole-server :class:`~emulator.guard.MemoryBudget`;
in profiled mode payloads are counted and dropped. A watchdog frees the slot of a session that
is idle (no byte and no job for ``idle_timeout_s``) or held longer than ``max_session_s``, and
closes connections that never said ``HELLO``. Nothing of a connection outlives it.

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
from emulator.guard import (
    HoldEstimator,
    MemoryBudget,
    float_field,
    int_field,
    plan_max_payload,
    token_from_env,
    token_matches,
)
from emulator.protocol import (
    Message,
    MsgType,
    PayloadBuffer,
    QueueState,
    RxClock,
    configure_socket,
    encode_header,
    recv_message,
    send_message,
)
from emulator.records import tolerate_log_errors
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
    """A device connection: the socket and a lock so replies from workers do not interleave;
    what the watchdog needs to time it out (accepted at, last byte in, jobs in flight)."""

    def __init__(self, sock: socket.socket, peer: str, budget: MemoryBudget) -> None:
        self.sock = sock
        self.peer = peer
        self.device = -1
        self.authed = False
        self.lock = threading.Lock()
        self.rx = RxClock()
        self.t_accept = self.rx.last
        self.last_tx = self.rx.last
        self.inflight = 0  # COMPUTE jobs received and not yet answered (guarded by the cv)
        self.buf = PayloadBuffer(budget=budget)
        self.closing = False

    def send(self, msg: Message) -> None:
        with self.lock:
            send_message(self.sock, msg)
            self.last_tx = time.monotonic()

    def admit(self, msg: Message, payload_len: int) -> None:
        """Refuse, from its header alone, a message that needs a session before there is one
        (so a stranger never makes the MEC read a payload)."""
        if not self.authed and (msg.type != MsgType.HELLO or payload_len > 0):
            raise ProtocolError(f"{msg.type.name} with {payload_len} payload bytes before a "
                                "HELLO: say HELLO (no payload) with the run's token first")

    def abort(self, reason: str) -> None:
        """Best-effort ERROR (never blocks on a peer that does not read), then close both ways:
        the reader wakes up and cleans up."""
        self.closing = True
        meta = json.dumps({"message": reason}, separators=(",", ":")).encode()[:4000]
        frame = encode_header(Message(MsgType.ERROR), len(meta), 0) + meta
        if self.lock.acquire(timeout=0.1):
            try:
                self.sock.send(frame, socket.MSG_DONTWAIT)
            except OSError:
                pass
            finally:
                self.lock.release()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


class MecServer:
    """The MEC: listens, queues sessions FIFO across all devices, runs them on ``slots`` workers."""

    def __init__(self, profile: Profile, backend: MecBackend, slots: int = 1,
                 host: str = "127.0.0.1", port: int = 0,
                 max_payload: int | None = None, realtime: bool = False,
                 window_clamp: int = 0, token: str | None = None,
                 holds: HoldEstimator | None = None, memory_budget: int | None = None,
                 max_connections: int = 1024, hello_timeout_s: float = 5.0,
                 idle_timeout_s: float = 120.0, max_session_s: float | None = None) -> None:
        if slots < 1:
            raise EmulatorError(f"MEC slots must be >= 1, got {slots}")
        self.realtime = realtime
        self.window_clamp = window_clamp
        self.profile = profile
        self.backend = backend
        self.slots = slots
        self.max_payload = plan_max_payload(profile) if max_payload is None else max_payload
        self.keep_payload = backend.name != "profiled"  # profiled compute never reads it
        self.token = token
        n = len(profile.passes)
        self.holds = holds or HoldEstimator(
            [backend.expected_s(i, 0, p.n_blocks) for i, p in enumerate(profile.passes)],
            [0.0] * n, [p.repeat for p in profile.passes])
        self.budget = MemoryBudget(memory_budget or max(64 << 20, 8 * self.max_payload))
        self.max_connections = max_connections
        self.hello_timeout_s = hello_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_session_s = (max(600.0, 10.0 * self.holds.request_s) if max_session_s is None
                              else max_session_s)
        self.expired = 0
        self.refused = 0
        self._quiet_until = 0.0
        self._suppressed = 0
        self._cv = threading.Condition()
        self._waiting: deque[Job] = deque()          # first jobs of sessions waiting for a slot
        self._free: list[int] = list(range(slots))   # free slot numbers (lowest first)
        self._slot_of: dict[int, int] = {}           # id(conn) -> slot held
        self._hold: dict[int, tuple[float, float]] = {}  # slot -> (granted at, expected hold)
        self._jobs: list[deque[Job]] = [deque() for _ in range(slots)]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: set[_Conn] = set()  # guarded by _cv; a connection removes itself
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
            kept = deque(j for j in self._waiting if j.conn is not conn)
            conn.inflight -= len(self._waiting) - len(kept)
            self._waiting = kept
            self._grant()

    # ------------------------------------------------------------------ threads
    def start(self) -> None:
        for i in range(self.slots):
            self._spawn(self._worker, i, name=f"mec-worker-{i}")
        self._spawn(self._accept, name="mec-accept")
        self._spawn(self._watchdog, name="mec-watchdog")

    def _spawn(self, target: Any, *args: Any, name: str, keep: bool = True) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        if keep:  # per-connection readers are not kept: nothing of a connection outlives it
            self._threads.append(t)

    def connections(self) -> int:
        """Open connections (for tests and the hostile-clients benchmark)."""
        with self._cv:
            return len(self._conns)

    def stop(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        with self._cv:
            conns = list(self._conns)
        for sock in [self._listener, *(c.sock for c in conns)]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, addr = self._listener.accept()
            except OSError:
                return
            with self._cv:
                full = len(self._conns) >= self.max_connections
            if full:  # refuse at once: no thread, no buffer for it
                self.refused += 1
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
                continue
            try:
                configure_socket(sock, self.window_clamp)
            except OSError:  # the peer already left
                sock.close()
                continue
            conn = _Conn(sock, f"{addr[0]}:{addr[1]}", self.budget)
            with self._cv:
                self._conns.add(conn)
            self._spawn(self._reader, conn, name=f"mec-reader-{addr[1]}", keep=False)

    def _reader(self, conn: _Conn) -> None:
        if self.realtime:  # a reader delayed by other load would stamp t_recv late
            realtime_thread()
        try:
            while not self._stop.is_set():
                msg = recv_message(conn.sock, self.max_payload, into=conn.buf,
                                   discard_payload=not self.keep_payload, clock=conn.rx,
                                   admit=conn.admit)
                if msg is None or msg.type == MsgType.BYE:
                    return
                self._handle(conn, msg, time.monotonic())
        except ProtocolError as e:
            if not self._stop.is_set() and not conn.closing:
                self._log(conn, str(e))
                conn.abort(str(e))
        except OSError as e:
            if not self._stop.is_set() and not conn.closing:
                self._log(conn, str(e))
        finally:
            self._release(conn)
            conn.buf.free()
            conn.sock.close()
            with self._cv:
                self._conns.discard(conn)

    def _log(self, conn: _Conn, text: str) -> None:
        """One log line per event of a device; for connections that never said a valid HELLO
        at most one line a second (a flood of strangers must not fill the log's disk)."""
        if not conn.authed:
            now = time.monotonic()
            with self._cv:
                if now < self._quiet_until:
                    self._suppressed += 1
                    return
                self._quiet_until = now + 1.0
                n, self._suppressed = self._suppressed, 0
            if n:
                text += f" ({n} more such lines in the last second not shown)"
        print(f"mec: device {conn.device} ({conn.peer}): {text}", file=sys.stderr)

    def _watchdog(self) -> None:
        """Close connections that never said HELLO; free the slots of idle or over-long
        sessions (a session with a job queued or running is never idle)."""
        while not self._stop.wait(0.2):
            now = time.monotonic()
            expire: list[tuple[_Conn, str]] = []
            with self._cv:
                for conn in self._conns:
                    if conn.closing:
                        continue
                    if not conn.authed:
                        if now - conn.t_accept > self.hello_timeout_s:
                            expire.append((conn, f"no valid HELLO within "
                                                 f"{self.hello_timeout_s:g} s"))
                        continue
                    slot = self._slot_of.get(id(conn))
                    if slot is None:
                        continue
                    quiet = now - max(conn.rx.last, conn.last_tx)
                    if conn.inflight == 0 and quiet > self.idle_timeout_s:
                        expire.append((conn, f"session idle for {quiet:.0f} s (limit "
                                             f"{self.idle_timeout_s:g} s); its slot is freed"))
                    elif now - self._hold[slot][0] > self.max_session_s:
                        expire.append((conn, f"session held its slot for more than "
                                             f"{self.max_session_s:g} s; it is freed"))
            for conn, why in expire:
                self.expired += 1
                self._log(conn, why)
                self._release(conn)
                conn.abort(why)

    def _hello(self, conn: _Conn, msg: Message) -> None:
        if conn.authed:
            raise ProtocolError("a second HELLO on one connection")
        if not token_matches(self.token, msg.meta.get("token")):
            raise ProtocolError("HELLO without this run's token: the MEC serves only the "
                                "devices of its own run")
        device = int_field(msg.meta, "device", "HELLO", 0, 1_000_000)
        model = msg.meta.get("model")
        if model != self.profile.model.name:
            raise ProtocolError(f"device speaks model {model!r:.60}, this MEC serves "
                                f"{self.profile.model.name!r}")
        conn.device = device
        conn.authed = True

    def _handle(self, conn: _Conn, msg: Message, t_recv: float) -> None:
        if not conn.authed and msg.type != MsgType.HELLO:
            raise ProtocolError(f"{msg.type.name} before HELLO: say HELLO with the run's token "
                                "first")
        if msg.type == MsgType.HELLO:
            self._hello(conn, msg)
            conn.send(Message(MsgType.WELCOME, meta={
                "model": self.profile.model.name, "slots": self.slots,
                "backend": self.backend.name, "queue": self.queue_state(t_recv).to_json()}))
        elif msg.type == MsgType.ECHO:
            conn.send(Message(MsgType.ECHO_REPLY, request_id=msg.request_id, meta={
                "t_recv": t_recv, "bytes": msg.payload_size,
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
            reps = self.holds.repeats[msg.pass_index]
            if msg.repetition >= reps:
                raise ProtocolError(f"repetition {msg.repetition} out of range for pass "
                                    f"{msg.pass_index} with {reps} repetitions in this run")
            declared = (float_field(msg.meta, "expected_hold_s", "COMPUTE", 0.0, 1e9)
                        if "expected_hold_s" in msg.meta else None)
            # the reader's buffer is reused for the next message: keep a copy only if needed
            msg.payload = bytes(msg.payload) if self.keep_payload else b""
            expected = self.holds.cap(
                declared, msg.pass_index, msg.repetition,
                self.backend.expected_s(msg.pass_index, msg.block_lo, msg.block_hi))
            job = Job(conn, msg, t_recv, expected)
            with self._cv:
                conn.inflight += 1
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
            except (EmulatorError, ValueError, TypeError, KeyError) as e:  # malformed tensors
                meta, payload = {"error": f"{type(e).__name__}: {e}"}, b""
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
            except (OSError, ProtocolError) as e:
                if not self._stop.is_set() and not job.conn.closing:
                    print(f"mec: cannot reply to device {job.conn.device}: {e}",
                          file=sys.stderr)
            finally:
                with self._cv:
                    job.conn.inflight -= 1


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m emulator.mec",
                                 description="The MEC server process of the emulator (started "
                                             "by emulator.run inside the MEC host).")
    ap.add_argument("--profile", required=True, help="MEC profile JSON (block times)")
    ap.add_argument("--slots", type=int, default=1, help="concurrent compute slots C (default 1)")
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to listen on: the MEC's own address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=0, help="TCP port (default: any free one)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the block-time generator")
    ap.add_argument("--jitter", choices=JITTERS, default="lognormal",
                    help="block-time distribution (see emulator.compute)")
    ap.add_argument("--compute", choices=("profiled", "execute"), default="profiled",
                    help="wait out profiled times, or run the ONNX pieces")
    ap.add_argument("--pieces", default=None, help="directory of ONNX pieces (execute mode)")
    ap.add_argument("--threads", type=int, default=1,
                    help="ONNX Runtime intra-op threads per slot (execute mode)")
    ap.add_argument("--max-payload", type=int, default=None,
                    help="largest payload accepted, bytes (default: the largest tensor a plan "
                         "of the profile sends, +25%% and 1 MiB)")
    ap.add_argument("--device-profile", default=None,
                    help="device profile (for the MEC's own bound on a session's hold time)")
    ap.add_argument("--repeat", action="append", default=[], metavar="PASS=N",
                    help="repetitions of a pass per request in this run (as the devices')")
    ap.add_argument("--memory-budget-mb", type=float, default=None,
                    help="receive buffers of all connections together, MiB (default "
                         "max(64, 8 x max payload))")
    ap.add_argument("--max-connections", type=int, default=1024,
                    help="connections held at once; more are closed at once")
    ap.add_argument("--hello-timeout", type=float, default=5.0,
                    help="seconds a new connection has to send a valid HELLO")
    ap.add_argument("--session-idle", type=float, default=120.0,
                    help="seconds a session holding a slot may stay silent with no job running")
    ap.add_argument("--session-max", type=float, default=None,
                    help="seconds a session may hold a slot (default max(600, 10 x the MEC's "
                         "bound on a whole request))")
    ap.add_argument("--no-realtime", action="store_true",
                    help="do not run compute slots with SCHED_FIFO (see emulator.compute)")
    ap.add_argument("--window-clamp", type=int, default=0,
                    help="TCP_WINDOW_CLAMP bytes on device connections (0: none)")
    ap.add_argument("--speedup", type=float, default=1.0,
                    help="divide every profiled MEC block time by this (mec_speedup)")
    return ap.parse_args(argv)


def _hold_estimator(profile: Profile, backend: MecBackend, device_profile: str | None,
                    repeat: list[str]) -> HoldEstimator:
    """The MEC's bound on session holds: its own block times, the device's (when given) and
    the run's repetitions."""
    from emulator.device import parse_repeats

    reps = parse_repeats(repeat, profile)
    dev = load_profile(device_profile) if device_profile else None
    mec_s, dev_s, counts = [], [], []
    for i, p in enumerate(profile.passes):
        mec_s.append(backend.expected_s(i, 0, p.n_blocks))
        dev_s.append(sum(b.latency.median for b in dev.passes[i].blocks) / 1e3
                     if dev is not None and i < len(dev.passes) else 0.0)
        counts.append(reps.get(p.name, p.repeat))
    return HoldEstimator(mec_s, dev_s, counts)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the MEC process."""
    args = _parse_args(argv)
    tolerate_log_errors()  # a log on a full disk must not end this process
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
        holds = _hold_estimator(profile, backend, args.device_profile, args.repeat)
        budget = (None if args.memory_budget_mb is None
                  else int(args.memory_budget_mb * (1 << 20)))
        token = token_from_env()
        if token is None:
            print("mec: warning: no per-run token in the environment: any HELLO is accepted",
                  file=sys.stderr)
        server = MecServer(profile, backend, args.slots, args.host, args.port, args.max_payload,
                           realtime=not args.no_realtime, window_clamp=args.window_clamp,
                           token=token, holds=holds, memory_budget=budget,
                           max_connections=args.max_connections,
                           hello_timeout_s=args.hello_timeout, idle_timeout_s=args.session_idle,
                           max_session_s=args.session_max)
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
