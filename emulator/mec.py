"""The MEC server process: runs the MEC side of every request's plan, sessions share ``C`` slots.

Scheduling is the latency model's (:mod:`agent.latency`), so simulator and emulator agree: a
request that computes anything on the MEC is a *session*. The device's ``PLAN`` message names the
decision and the workload; the MEC builds the same plan (:func:`agent.plan.build_plan`, with the
device and MEC profiles) and runs its side of it in a thread of its own, step by step:

* a computation waits until everything it needs is on the MEC (made here, or its ``DATA``
  received: the reader stamps ``t_recv`` when the last payload byte is in); the session's
  first computation joins one FIFO queue shared by all devices and starts when a slot is free;
  the session holds its slot (its KV cache, latent and context stay here) until its last MEC
  computation ends, then frees it;
* a send (a streamed token, a cut, state or an output for the device) is handed to the
  connection's sender thread and written in order without stopping the loop.

After its last step the session sends ``REPORT``: its computations' ready/start/end stamps, its
sends' start stamps and when each uplink item arrived. Every reply carries the queue state; the
expected wait of a new session is a FIFO replay over the slots' remaining expected hold times
and the queued sessions' expected hold times, each the MEC's own estimate from the profiles
(the session's span on an ideal link: its MEC computations and the device work between them).

Hostile clients (see :mod:`emulator.guard`): the server listens only on ``--host`` (the MEC's
own address; 127.0.0.1 by default and in loopback mode). A connection is a session only after a
``HELLO`` with the run's token (:data:`emulator.guard.TOKEN_ENV`) within ``hello_timeout_s``;
every malformed message or field gets an ``ERROR`` and the connection is closed. Receive buffers
grow as bytes arrive, within a per-connection bound (``max_payload``: what the run's plans can
send) and a whole-server :class:`~emulator.guard.MemoryBudget`; in profiled mode payloads are
counted and dropped. A session that waits for the device's data longer than
``idle_timeout_s``, or holds its slot longer than ``max_session_s``, ends and frees its slot;
connections that never said ``HELLO`` are closed. Nothing of a connection outlives it.

With ``--mec-model batch`` the MEC is the iteration-level batching server of
:mod:`agent.mec_server` instead of slots: a session thread hands each MEC computation, once its
inputs are here, to the shared :class:`~agent.mec_server.BatchServer` and waits; one batcher
thread asks the server which computations form the next iteration and how long it lasts (the
batch profile's medians: no jitter draw), waits that long (profiled compute only; ``execute``
is refused with batching) and hands every session its ``(start, end)``. Admission, the queue
and the iteration time are the server's, the same object the simulator drives
(:mod:`agent.batchsim`). Replies carry its status (active batch, queue, memory headroom,
predicted iteration time) in the queue state.

Run as a process: ``python -m emulator.mec --profile P.json --device-profile D.json [--slots C]
...``; it prints one line ``{"ready": true, "port": PORT}`` on stdout when it listens, logs to
stderr, and exits on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.errors import AgentError
from agent.latency import LatencyModel, run_plan
from agent.link import Link
from agent.mec_server import BatchServer, MecConfig, Work, session_state_bytes
from agent.plan import COMPUTE, DEVICE, MEC, SEND, Plan, decision_from_json
from agent.policy import Workload
from emulator.compute import JITTERS, ProfiledCompute, realtime_thread, wait_until
from emulator.errors import EmulatorError, ProtocolError
from emulator.guard import (
    MemoryBudget,
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
)
from emulator.records import tolerate_log_errors
from emulator.steps import StepRunner
from emulator.tcpinfo import SentSince
from emulator.transport import Inbox, Sender, stamp_into
from profiler.schema import ProfileError, check_compatible, load_profile
from traces import synth

__all__ = ["MecServer", "main"]

_GRID_SLACK_S = 0.25
"""Batching MEC: how far behind the model's iteration boundaries the batcher may start an
iteration and still count it from the boundary: its own Python work between iterations, or a
stall of the host, is absorbed by the next deadlines (as :func:`emulator.compute.wait_until`'s
deadline absorbs a stall inside one step). The lag absorbed is counted (``batch_lag``) and
logged when the MEC stops."""


class _Conn:
    """A device connection: the socket, its ordered sender, its live sessions, and what the
    watchdog needs (accepted at, last byte in, authenticated)."""

    def __init__(self, sock: socket.socket, peer: str, budget: MemoryBudget) -> None:
        self.sock = sock
        self.peer = peer
        self.device = -1
        self.authed = False
        self.closing = False
        self.lock = threading.Lock()
        self.sender = Sender(sock, self.lock, name=f"mec-send-{peer}")
        self.sessions: dict[int, _Session] = {}
        self.rx = RxClock()
        self.t_accept = self.rx.last
        self.buf = PayloadBuffer(budget=budget)
        # what the socket sent since the previous REPORT; taken with the connection's send
        # lock held (a REPORT's on_start)
        self.tcp = SentSince(sock)

    def send(self, msg: Message) -> None:
        """Queue a message behind this connection's earlier ones."""
        self.sender.send(msg)

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


@dataclass
class _Pending:
    """A MEC computation handed to the batching server: when it was ready, and its
    ``(start, end)`` once its iteration ran (``box``)."""

    sess: _Session
    idx: int
    ready: float
    box: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class _Session:
    """One request's MEC side."""

    rid: int
    conn: _Conn
    plan: Plan
    seed: int
    expected_s: float
    t_plan: float
    inbox: Inbox = field(default_factory=Inbox)
    limit_s: float = 600.0
    """Longest the session may hold a slot (watchdog)."""
    slot: int | None = None
    bid: int | None = None
    """The session's id in the batching server (batch model), once its first work is in."""
    prefetch: dict[int, _Pending] = field(default_factory=dict)
    """Batch model: MEC computations the batcher submitted for the session (step index ->)."""
    t_granted: float = 0.0
    done: bool = False
    thread: threading.Thread | None = None


class MecServer:
    """The MEC: listens, runs sessions' plans, shares ``slots`` FIFO among all devices."""

    def __init__(self, model: LatencyModel, steps: StepRunner, slots: int = 1,
                 host: str = "127.0.0.1", port: int = 0,
                 max_payload: int | None = None, realtime: bool = False,
                 window_clamp: int = 0, token: str | None = None, congestion: str = "",
                 memory_budget: int | None = None, max_connections: int = 1024,
                 hello_timeout_s: float = 5.0, idle_timeout_s: float = 120.0,
                 max_session_s: float | None = None,
                 mec_config: MecConfig | None = None,
                 report_dir: Path | None = None) -> None:
        if slots < 1:
            raise EmulatorError(f"MEC slots must be >= 1, got {slots}")
        self.realtime = realtime
        self.window_clamp = window_clamp
        self.report_dir = report_dir
        self.congestion = congestion
        self.model = model
        self.profile = model.mec_profile
        self.steps = steps
        self.slots = slots
        self.max_payload = (plan_max_payload(model.device_profile) if max_payload is None
                            else max_payload)
        self.keep_payload = steps.runner is not None  # profiled compute never reads it
        self.token = token
        self.budget = MemoryBudget(memory_budget or max(64 << 20, 8 * self.max_payload))
        self.max_connections = max_connections
        self.hello_timeout_s = hello_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_session_s = max_session_s
        self.expired = 0
        self.refused = 0
        self._quiet_until = 0.0
        self._suppressed = 0
        self._cv = threading.Condition()
        self._waiting: deque[_Session] = deque()     # sessions waiting for a slot
        self._free: list[int] = list(range(slots))   # free slot numbers (lowest first)
        self._hold: dict[int, tuple[float, float]] = {}  # slot -> (granted at, expected hold)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: set[_Conn] = set()  # guarded by _cv; a connection removes itself
        self._ideal = Link(synth.constant(3600.0, 1e6), None, 0.0)
        self.batch: BatchServer | None = None
        self.batch_lag = [0, 0.0, 0.0]
        """Batching MEC: iterations started > 1 ms behind their boundary, total and max lag."""
        self._bids = 0
        if mec_config is not None and mec_config.model == "batch":
            if steps.runner is not None:
                raise EmulatorError("--mec-model batch runs profiled compute only (the "
                                    "batched iteration is timed from the profile); use "
                                    "--compute profiled")
            self.batch = BatchServer.for_model(model, mec_config)
        self.jobs_done = 0
        self.sessions = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._listener.bind((host, port))
        except OSError as e:
            self._listener.close()
            raise EmulatorError(f"MEC cannot listen on {host}:{port}: {e.strerror or e}") from e
        if congestion:  # refused here in one line, not as every connection dropped later
            try:
                self._listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION,
                                          congestion.encode())
            except OSError as e:
                self._listener.close()
                raise EmulatorError(f"--tcp-congestion {congestion}: refused by the kernel "
                                    f"({e.strerror or e}); see "
                                    "/proc/sys/net/ipv4/tcp_available_congestion_control") from e
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]

    # ------------------------------------------------------------------ queue state
    def queue_state(self, now: float | None = None) -> QueueState:
        """Sessions waiting, slots held, and the expected wait of a session arriving ``now``."""
        now = time.monotonic() if now is None else now
        if self.batch is not None:
            with self._cv:
                st = self.batch.status(now)
            return QueueState(queue_len=st.queue_len, busy_slots=st.active, slots=st.max_batch,
                              expected_wait_s=st.expected_wait_s, active=st.active,
                              memory_headroom_bytes=st.memory_headroom_bytes,
                              iteration_s=st.iteration_s)
        with self._cv:
            held = list(self._hold.values())
            queued = [s.expected_s for s in self._waiting]
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
            sess = self._waiting.popleft()
            sess.slot = slot
            sess.t_granted = now
            self._hold[slot] = (now, sess.expected_s)
            self.sessions += 1
        self._cv.notify_all()

    def _acquire(self, sess: _Session) -> None:
        with self._cv:
            self._waiting.append(sess)
            self._grant()
            while sess.slot is None and not self._stop.is_set() and not sess.done:
                self._cv.wait(1.0)
        if sess.slot is None:
            raise ProtocolError("the session ended before it got a MEC slot")

    def _release(self, sess: _Session) -> None:
        with self._cv:
            if sess.bid is not None and self.batch is not None:
                self.batch.drop(sess.bid)
                sess.bid = None
                self._cv.notify_all()
            if sess.slot is not None:
                self._hold.pop(sess.slot, None)
                self._free.append(sess.slot)
                self._free.sort()
                sess.slot = None
            if sess in self._waiting:
                self._waiting.remove(sess)
            self._grant()

    def _end_session(self, sess: _Session, why: str = "") -> None:
        sess.done = True
        if why:
            sess.inbox.fail(why)
        self._release(sess)

    # ------------------------------------------------------------------ threads
    def start(self) -> None:
        self._spawn(self._accept, name="mec-accept")
        self._spawn(self._watchdog, name="mec-watchdog")
        if self.batch is not None:
            self._spawn(self._batcher, name="mec-batcher")

    def _spawn(self, target: Any, *args: Any, name: str, keep: bool = True) -> threading.Thread:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        if keep:  # per-connection and per-session threads are not kept: nothing outlives them
            self._threads.append(t)
        return t

    def connections(self) -> int:
        """Open connections (for tests and the hostile-clients benchmark)."""
        with self._cv:
            return len(self._conns)

    def stop(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
            conns = list(self._conns)
        for conn in conns:
            for sess in list(conn.sessions.values()):
                self._end_session(sess, "the MEC is stopping")
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
                configure_socket(sock, self.window_clamp, self.congestion)
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
            for sess in list(conn.sessions.values()):
                self._end_session(sess, "the device disconnected")
            conn.sessions.clear()
            conn.sender.close(1.0)
            conn.buf.free()
            with contextlib.suppress(OSError):
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
        """Close connections that never said HELLO; end sessions that hold a slot too long
        (a session waiting for the device's data ends by itself after ``idle_timeout_s``)."""
        while not self._stop.wait(0.2):
            now = time.monotonic()
            expire: list[tuple[_Conn, str]] = []
            over: list[_Session] = []
            with self._cv:
                for conn in self._conns:
                    if not conn.closing and not conn.authed and \
                            now - conn.t_accept > self.hello_timeout_s:
                        expire.append((conn, f"no valid HELLO within "
                                             f"{self.hello_timeout_s:g} s"))
                    over += [x for x in conn.sessions.values() if x.slot is not None
                             and now - x.t_granted > x.limit_s]
            for conn, why in expire:
                self.expired += 1
                self._log(conn, why)
                conn.abort(why)
            for sess in over:
                self.expired += 1
                why = (f"request {sess.rid} held its slot for more than {sess.limit_s:g} s; "
                       "it is freed")
                self._log(sess.conn, why)
                self._end_session(sess, why)

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
                "backend": self.steps.mode, "queue": self.queue_state(t_recv).to_json()}))
        elif msg.type == MsgType.ECHO:
            conn.send(Message(MsgType.ECHO_REPLY, request_id=msg.request_id, meta={
                "t_recv": t_recv, "bytes": msg.payload_size,
                "queue": self.queue_state(t_recv).to_json()}))
        elif msg.type == MsgType.QUEUE:
            conn.send(Message(MsgType.QUEUE_REPLY, request_id=msg.request_id,
                              meta={"queue": self.queue_state(t_recv).to_json()}))
        elif msg.type == MsgType.RELEASE:
            sess = conn.sessions.pop(msg.request_id, None)
            if sess is not None and not sess.done:
                self._end_session(sess, "the device released the request")
        elif msg.type == MsgType.PLAN:
            self._start_session(conn, msg, t_recv)
        elif msg.type == MsgType.DATA:
            sess = conn.sessions.get(msg.request_id)
            if sess is None:
                raise ProtocolError(f"DATA for request {msg.request_id}, which has no PLAN")
            items = self._check_data(sess, msg)
            sess.inbox.put(items, t_recv, self.steps.received(msg.meta, msg.payload))
        else:
            raise ProtocolError(f"unexpected {msg.type.name} message from a device")

    def _start_session(self, conn: _Conn, msg: Message, t_recv: float) -> None:
        rid = msg.request_id
        if rid in conn.sessions:
            raise ProtocolError(f"a second PLAN for request {rid}")
        meta = msg.meta
        seed = int_field(meta, "seed", "PLAN", 0, 2**64 - 1) if "seed" in meta else 0
        action = int_field(meta, "action", "PLAN", -1, 1_000_000) if "action" in meta else -1
        try:
            splits = meta.get("splits")
            if not isinstance(splits, dict):
                raise AgentError(f"PLAN splits must map pass names to splits, got {splits!r:.60}")
            decision = decision_from_json(splits, action)
            reps = meta.get("repeats") or {}
            if not isinstance(reps, dict) or not all(isinstance(v, int) for v in reps.values()):
                raise AgentError(f"PLAN repeats must map pass names to integers, got {reps!r}")
            plan = self.model.plan(decision, Workload(self.model.model, dict(reps)))
        except (AgentError, ProfileError, TypeError, ValueError) as e:
            raise ProtocolError(f"request {rid}: not a plan of {self.model.model!r}: {e}") from e
        if any(st.kind == SEND and st.side == DEVICE and st.nbytes > self.max_payload
               for st in plan.steps):
            raise ProtocolError(f"request {rid}: its plan sends more than this MEC accepts in "
                                f"one message ({self.max_payload} bytes, --max-payload)")
        span = run_plan(plan, self._ideal, 0.0, None, detail=False)
        compute = sum(st.seconds for st in plan.steps if st.kind == COMPUTE)
        limit = (self.max_session_s if self.max_session_s is not None
                 else max(600.0, 10.0 * compute))
        sess = _Session(rid, conn, plan, seed, max(span[6] - span[5], 0.0), t_recv,
                        limit_s=limit)
        conn.sessions[rid] = sess
        sess.thread = self._spawn(self._run_session, sess,
                                  name=f"mec-session-{conn.device}-{rid}", keep=False)

    @staticmethod
    def _check_data(sess: _Session, msg: Message) -> tuple[int, ...]:
        """The items a DATA message carries, checked against the plan's send step."""
        steps = sess.plan.steps
        step = int_field(msg.meta, "step", f"DATA of request {sess.rid}", 0, len(steps) - 1)
        st = steps[step]
        if st.kind != SEND or st.side != DEVICE:
            raise ProtocolError(f"step {step} of request {sess.rid} is not a device send")
        return st.items

    def _run_session(self, sess: _Session) -> None:
        if self.realtime:
            realtime_thread()
        plan = sess.plan
        last = plan.last_mec_compute()
        rows: list[dict[str, Any]] = []
        conn = sess.conn
        due = -1.0  # when the previous MEC computation of this session was due to end
        try:
            for idx, st in enumerate(plan.steps):
                if st.side != MEC or sess.done:
                    continue
                if st.kind == COMPUTE:
                    if self.batch is not None:
                        t_ready, t0, t1 = self._batched(sess, idx)
                        sess.inbox.put(st.makes, t1, None)
                    else:
                        t_ready = sess.inbox.wait(st.needs, self.idle_timeout_s, sess.t_plan,
                                                  conn.rx.get)
                        if sess.slot is None:
                            self._acquire(sess)
                        received = self.steps.gather(sess.inbox, st.needs)
                        t0 = time.monotonic()
                        if self.steps.runner is None and t_ready - due < _CHAIN_SLACK_S \
                                and t0 - due < _CHAIN_SLACK_S:
                            t0 = due  # back to back with the previous one, as in the model
                        target, tensors = self.steps.run(st, sess.seed, received, t0)
                        t1 = time.monotonic()
                        due = t0 + target
                        self.steps.store(sess.inbox, st, t1, tensors)
                    rows.append({"step": idx, "t_ready": t_ready, "t_start": t0, "t_end": t1})
                    if self.batch is None:
                        with self._cv:
                            self.jobs_done += 1
                    if idx == last:
                        if self.batch is not None:
                            self._finish_batched(sess)
                        self._release(sess)
                else:
                    t_ready = max(sess.inbox.wait(st.items, self.idle_timeout_s, sess.t_plan,
                                                  conn.rx.get), sess.t_plan)
                    meta, payload = self.steps.payload(st, self.steps.gather(sess.inbox, st.items))
                    meta.update(step=idx, items=list(st.items))
                    row: dict[str, Any] = {"step": idx, "t_ready": t_ready}
                    conn.sender.send(
                        Message(MsgType.DATA, sess.rid, self.steps.pass_index(st.pass_name),
                                st.rep, meta=meta, payload=payload),
                        on_start=stamp_into(row))
                    rows.append(row)
            recv = {str(i): sess.inbox.time(st.items[0]) for i, st in enumerate(plan.steps)
                    if st.kind == SEND and st.side == DEVICE}
            rep = Message(MsgType.REPORT, sess.rid, meta={"queue": self.queue_state().to_json()})

            def _fill(_t: float, rep: Message = rep) -> None:  # when written: every stamp is in
                doc: dict[str, Any] = {"steps": rows, "recv": recv}
                tcp = conn.tcp.take()
                if tcp is not None:
                    doc["tcp"] = tcp
                body = json.dumps(doc, separators=(",", ":")).encode()
                if self.report_dir is None:
                    rep.payload = body
                    return
                # the stamps are measurement, not traffic: they do not cross the shaped link
                name = f"{conn.device}-{sess.rid}.json"
                tmp = self.report_dir / f".{name}.tmp"
                try:
                    tmp.write_bytes(body)
                    os.replace(tmp, self.report_dir / name)
                except OSError:  # no room for it: over the link as before
                    rep.payload = body
                    return
                rep.meta["report_file"] = name

            conn.sender.send(rep, on_start=_fill)
        except ProtocolError as e:
            if not sess.done and not self._stop.is_set():
                self._log(conn, f"request {sess.rid}: {e}")
                with contextlib.suppress(ProtocolError):
                    conn.send(Message(MsgType.ERROR, sess.rid, meta={"message": str(e)}))
        except EmulatorError as e:
            with contextlib.suppress(ProtocolError):
                conn.send(Message(MsgType.ERROR, sess.rid, meta={"message": str(e)}))
        finally:
            sess.done = True
            self._release(sess)

    # ------------------------------------------------------------------ batching MEC
    def _batched(self, sess: _Session, idx: int) -> tuple[float, float, float]:
        """Run MEC computation ``idx`` of ``sess`` in the batching server: ``(ready, start,
        end)``. The batcher has submitted it already when its inputs were all made here by the
        session's previous computation (as the simulator's server sees it: ready at once);
        otherwise it is submitted when its inputs arrive."""
        st = sess.plan.steps[idx]
        with self._cv:
            pend = sess.prefetch.pop(idx, None)
        if pend is None:
            t_ready = sess.inbox.wait(st.needs, self.idle_timeout_s, sess.t_plan,
                                      sess.conn.rx.get)
            pend = _Pending(sess, idx, t_ready)
            with self._cv:
                assert self.batch is not None
                if sess.bid is None:
                    self._bids += 1
                    sess.bid = self._bids
                    self.batch.arrive(sess.bid, t_ready,
                                      session_state_bytes(self.model, sess.plan))
                    self.sessions += 1
                self.batch.submit(Work(sess.bid, st.pass_name, st.lo, st.hi, st.seconds,
                                       t_ready, pend))
                self._cv.notify_all()
        with self._cv:
            while not pend.box and not self._stop.is_set() and not sess.done:
                self._cv.wait(1.0)
        if not pend.box:
            raise ProtocolError("the session ended before its MEC computation ran")
        return (pend.ready, *pend.box[0])

    def _prefetch(self, pend: _Pending, t1: float) -> None:
        """After ``pend`` ran (``_cv`` held): its outputs are here at ``t1``; submit the
        session's next MEC computation at once if everything it needs is here."""
        sess = pend.sess
        steps = sess.plan.steps
        sess.inbox.put(steps[pend.idx].makes, t1)
        if sess.done or sess.bid is None or self.batch is None:
            return
        nxt = next((i for i in range(pend.idx + 1, len(steps))
                    if steps[i].kind == COMPUTE and steps[i].side == MEC), None)
        if nxt is None:
            return
        st = steps[nxt]
        times = [sess.inbox.time(it) for it in st.needs]
        if any(t is None for t in times):
            return
        ready = max([t1, *(t for t in times if t is not None)])
        nxt_pend = _Pending(sess, nxt, ready)
        sess.prefetch[nxt] = nxt_pend
        self.batch.submit(Work(sess.bid, st.pass_name, st.lo, st.hi, st.seconds, ready,
                               nxt_pend))

    def _finish_batched(self, sess: _Session) -> None:
        with self._cv:
            if sess.bid is not None and self.batch is not None:
                self.batch.finish(sess.bid)
                sess.bid = None
                self._cv.notify_all()

    def _batcher(self) -> None:
        """Run iterations: ask the shared server what runs next and for how long."""
        if self.realtime:
            realtime_thread()
        batch = self.batch
        assert batch is not None
        while not self._stop.is_set():
            with self._cv:
                now = time.monotonic()
                t = batch.next_start()
                if t > now:
                    self._cv.wait(min(t - now, 0.2))
                    continue
                # keep the model's iteration grid: this thread's own bookkeeping between
                # iterations (up to _GRID_SLACK_S late) is not MEC compute time
                it = batch.next_iteration(at=now - _GRID_SLACK_S)
                if it is None:
                    self._cv.wait(0.2)
                    continue
                t0, works, secs = it
                batch.complete(t0, works, secs)
                lag = now - t0
                if lag > 0.001:
                    self.batch_lag[0] += 1
                    self.batch_lag[1] += lag
                    self.batch_lag[2] = max(self.batch_lag[2], lag)
            wait_until(time.perf_counter() + (t0 + secs - time.monotonic()))
            t1 = max(t0 + secs, time.monotonic() - _GRID_SLACK_S)
            with self._cv:
                for w in works:
                    pend = w.tag
                    assert isinstance(pend, _Pending)
                    pend.box.append((t0, t1))
                    self._prefetch(pend, t1)
                self.jobs_done += len(works)
                self._cv.notify_all()


_CHAIN_SLACK_S = 0.002
"""Profiled compute: a session's MEC computation that follows its previous one (its inputs made
by it) within this long starts when the previous one was due to end, not when this thread got
to it: each wait ends ~0.1 ms late (a sleep's wake-up), which added up to +3% over a GPT-2
request's 33 computations (``benchmarks/scale.py`` records, 64 devices), where the latency
model runs them back to back."""


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m emulator.mec",
                                 description="The MEC server process of the emulator (started "
                                             "by emulator.run inside the MEC host).",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--profile", required=True, help="MEC profile JSON (block times)")
    ap.add_argument("--device-profile", required=True,
                    help="device profile JSON of the same model (to build the plans)")
    ap.add_argument("--slots", type=int, default=1, help="concurrent compute slots C")
    ap.add_argument("--mec-model", choices=("slots", "batch"), default="slots",
                    help="exclusive slots, or iteration-level batching (agent/mec_server.py); "
                    "emulator.run passes --mec-model batch for its default")
    ap.add_argument("--max-batch", type=int, default=8, help="batching: most active sessions")
    ap.add_argument("--memory-gb", type=float, default=None,
                    help="batching: memory budget, GB (weights + live state; default none)")
    ap.add_argument("--batch-curve", default="auto",
                    help="batching: 'auto', 'profile', 'llama7b-gpu' or a batch profile file")
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to listen on: the MEC's own address")
    ap.add_argument("--port", type=int, default=0, help="TCP port (0: any free one)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the block-time generator")
    ap.add_argument("--jitter", choices=JITTERS, default="lognormal",
                    help="block-time distribution (see emulator.compute)")
    ap.add_argument("--compute", choices=("profiled", "execute"), default="profiled",
                    help="wait out profiled times, or run the ONNX pieces")
    ap.add_argument("--pieces", default=None, help="directory of ONNX pieces (execute mode)")
    ap.add_argument("--threads", type=int, default=1,
                    help="ONNX Runtime intra-op threads (execute mode)")
    ap.add_argument("--max-payload", type=int, default=None,
                    help="largest payload accepted, bytes (default: the largest send a plan of "
                         "the run's workload makes, +25%% and 1 MiB)")
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
                    help="seconds a session may wait for the device's data")
    ap.add_argument("--session-max", type=float, default=None,
                    help="seconds a session may hold a slot (default max(600, 10 x its "
                         "computation))")
    ap.add_argument("--no-realtime", action="store_true",
                    help="do not run compute with SCHED_FIFO (see emulator.compute)")
    ap.add_argument("--window-clamp", type=int, default=0,
                    help="TCP_WINDOW_CLAMP bytes on device connections (0: none)")
    ap.add_argument("--tcp-congestion", default="",
                    help="TCP congestion control of device connections (default: the host's)")
    ap.add_argument("--speedup", type=float, default=1.0,
                    help="divide every profiled MEC block time by this (mec_speedup)")
    ap.add_argument("--report-dir", type=Path, default=None,
                    help="write each session's REPORT stamps to a file here (the devices "
                         "read them) instead of sending them over the emulated link")
    return ap.parse_args(argv)


def max_upload(model: LatencyModel, repeats: dict[str, int]) -> int:
    """An upper bound on one message a device sends for a plan of ``model`` with ``repeats``:
    the largest pass input, cut or output, plus every block's state at the longest length."""
    tokens = sum(p.tokens_appended * repeats.get(p.name, p.repeat) for p in model.passes)
    biggest = max(max(p.input_bytes, p.output_bytes, *p.cut_bytes) for p in model.passes)
    per_block = {name: (fixed or 0) + (per or 0) * tokens for p in model.passes
                 for name, (per, fixed) in zip(p.block_names, p.state, strict=True)}
    state = sum(per_block.values())  # a block's state counts once, whichever passes run it
    return biggest + state


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the MEC process."""
    args = _parse_args(argv)
    tolerate_log_errors()  # a log on a full disk must not end this process
    sys.setswitchinterval(0.0005)  # let readers in quickly while a worker spins
    try:
        from emulator.device import parse_repeats

        profile = load_profile(args.profile)
        device_profile = load_profile(args.device_profile)
        check_compatible(device_profile, profile)
        model = LatencyModel(device_profile, profile, mec_speedup=args.speedup)
        rng = np.random.default_rng(np.random.SeedSequence([args.seed, 0x4D4543]))
        compute = ProfiledCompute(profile, rng, args.jitter, speedup=args.speedup)
        runner = None
        if args.compute == "execute":
            from emulator.execute import PieceRunner, find_pieces_dir

            runner = PieceRunner(profile, find_pieces_dir(profile, args.pieces), args.threads)
        reps = parse_repeats(args.repeat, profile)
        bound = args.max_payload
        if bound is None:
            bound = max(plan_max_payload(device_profile),
                        int(1.25 * max_upload(model, reps)) + (1 << 20))
        budget = (None if args.memory_budget_mb is None
                  else int(args.memory_budget_mb * (1 << 20)))
        token = token_from_env()
        if token is None:
            print("mec: warning: no per-run token in the environment: any HELLO is accepted",
                  file=sys.stderr)
        server = MecServer(model, StepRunner(compute, runner), args.slots, args.host, args.port,
                           bound, realtime=not args.no_realtime, window_clamp=args.window_clamp,
                           token=token, congestion=args.tcp_congestion, memory_budget=budget,
                           max_connections=args.max_connections,
                           hello_timeout_s=args.hello_timeout, idle_timeout_s=args.session_idle,
                           max_session_s=args.session_max,
                           mec_config=MecConfig(args.mec_model, args.max_batch, args.memory_gb,
                                                args.batch_curve),
                           report_dir=args.report_dir)
    except (EmulatorError, ProfileError, AgentError, ValueError) as e:
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
    if server.batch is not None:
        n, tot, top = server.batch_lag
        print(f"mec: batcher started {n} iterations > 1 ms behind their boundary (lag absorbed "
              f"{tot:.3f} s in all, max {top * 1e3:.1f} ms)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
