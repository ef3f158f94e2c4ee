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

Run as a process: ``python -m emulator.mec --profile P.json --device-profile D.json [--slots C]
...``; it prints one line ``{"ready": true, "port": PORT}`` on stdout when it listens, logs to
stderr, and exits on SIGTERM/SIGINT.
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
from typing import Any

import numpy as np

from agent.errors import AgentError
from agent.latency import LatencyModel, run_plan
from agent.link import Link
from agent.plan import COMPUTE, DEVICE, MEC, SEND, Plan, decision_from_json
from agent.policy import Workload
from emulator.compute import JITTERS, ProfiledCompute, realtime_thread
from emulator.errors import EmulatorError, ProtocolError
from emulator.protocol import (
    DEFAULT_MAX_PAYLOAD,
    Message,
    MsgType,
    PayloadBuffer,
    QueueState,
    configure_socket,
    recv_message,
)
from emulator.steps import StepRunner
from emulator.transport import Inbox, Sender, stamp_into
from profiler.schema import ProfileError, check_compatible, load_profile
from traces import synth

__all__ = ["MecServer", "main"]


class _Conn:
    """A device connection: the socket, its ordered sender and its live sessions."""

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        self.device = -1
        self.lock = threading.Lock()
        self.sender = Sender(sock, self.lock, name=f"mec-send-{peer}")
        self.sessions: dict[int, _Session] = {}

    def send(self, msg: Message) -> None:
        """Queue a message behind this connection's earlier ones."""
        self.sender.send(msg)


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
    slot: int | None = None
    done: bool = False
    thread: threading.Thread | None = None


class MecServer:
    """The MEC: listens, runs sessions' plans, shares ``slots`` FIFO among all devices."""

    def __init__(self, model: LatencyModel, steps: StepRunner, slots: int = 1,
                 host: str = "0.0.0.0", port: int = 0,
                 max_payload: int = DEFAULT_MAX_PAYLOAD, realtime: bool = False,
                 window_clamp: int = 0, data_timeout_s: float = 600.0) -> None:
        if slots < 1:
            raise EmulatorError(f"MEC slots must be >= 1, got {slots}")
        self.realtime = realtime
        self.window_clamp = window_clamp
        self.model = model
        self.profile = model.mec_profile
        self.steps = steps
        self.slots = slots
        self.max_payload = max_payload
        self.data_timeout_s = data_timeout_s
        self._cv = threading.Condition()
        self._waiting: deque[_Session] = deque()     # sessions waiting for a slot
        self._free: list[int] = list(range(slots))   # free slot numbers (lowest first)
        self._hold: dict[int, tuple[float, float]] = {}  # slot -> (granted at, expected hold)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[_Conn] = []
        self._ideal = Link(synth.constant(3600.0, 1e6), None, 0.0)
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

    def _spawn(self, target: Any, *args: Any, name: str) -> threading.Thread:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        self._threads.append(t)
        return t

    def stop(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        for conn in list(self._conns):
            for sess in list(conn.sessions.values()):
                self._end_session(sess, "the MEC is stopping")
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
                with contextlib.suppress(OSError, ProtocolError):
                    conn.send(Message(MsgType.ERROR, meta={"message": str(e)}))
        except OSError as e:
            if not self._stop.is_set():
                print(f"mec: device {conn.device} ({conn.peer}): {e}", file=sys.stderr)
        finally:
            for sess in list(conn.sessions.values()):
                self._end_session(sess, "the device disconnected")
            conn.sessions.clear()
            conn.sender.close(1.0)
            with contextlib.suppress(OSError):
                conn.sock.close()
            with contextlib.suppress(ValueError):
                self._conns.remove(conn)

    def _handle(self, conn: _Conn, msg: Message, t_recv: float) -> None:
        if msg.type == MsgType.HELLO:
            conn.device = int(msg.meta.get("device", -1))
            model = msg.meta.get("model")
            if model != self.profile.model.name:
                raise ProtocolError(f"device speaks model {model!r}, this MEC serves "
                                    f"{self.profile.model.name!r}")
            conn.send(Message(MsgType.WELCOME, meta={
                "model": self.profile.model.name, "slots": self.slots,
                "backend": self.steps.mode, "queue": self.queue_state(t_recv).to_json()}))
        elif msg.type == MsgType.ECHO:
            conn.send(Message(MsgType.ECHO_REPLY, request_id=msg.request_id, meta={
                "t_recv": t_recv, "bytes": len(msg.payload),
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
        try:
            decision = decision_from_json(meta.get("splits") or {}, int(meta.get("action", -1)))
            reps = meta.get("repeats") or {}
            if not isinstance(reps, dict) or not all(isinstance(v, int) for v in reps.values()):
                raise AgentError(f"PLAN repeats must map pass names to integers, got {reps!r}")
            plan = self.model.plan(decision, Workload(self.model.model, dict(reps)))
            seed = int(meta.get("seed", 0))
        except (AgentError, ProfileError, TypeError, ValueError) as e:
            raise ProtocolError(f"request {rid}: not a plan of {self.model.model!r}: {e}") from e
        span = run_plan(plan, self._ideal, 0.0, None, detail=False)
        sess = _Session(rid, conn, plan, seed, max(span[6] - span[5], 0.0), t_recv)
        conn.sessions[rid] = sess
        sess.thread = self._spawn(self._run_session, sess, name=f"mec-session-{conn.device}-{rid}")

    @staticmethod
    def _check_data(sess: _Session, msg: Message) -> tuple[int, ...]:
        """The items a DATA message carries, checked against the plan's send step."""
        step = msg.meta.get("step")
        steps = sess.plan.steps
        if not isinstance(step, int) or not 0 <= step < len(steps):
            raise ProtocolError(f"DATA step {step!r} is not a step of request {sess.rid}'s plan")
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
        try:
            for idx, st in enumerate(plan.steps):
                if st.side != MEC or sess.done:
                    continue
                if st.kind == COMPUTE:
                    t_ready = sess.inbox.wait(st.needs, self.data_timeout_s, sess.t_plan)
                    if sess.slot is None:
                        self._acquire(sess)
                    received = self._tensors(sess, st.needs)
                    t0 = time.monotonic()
                    _, tensors = self.steps.run(st, sess.seed, received)
                    t1 = time.monotonic()
                    sess.inbox.put(st.makes, t1, tensors)
                    rows.append({"step": idx, "t_ready": t_ready, "t_start": t0, "t_end": t1})
                    with self._cv:
                        self.jobs_done += 1
                    if idx == last:
                        self._release(sess)
                else:
                    t_ready = max(sess.inbox.wait(st.items, self.data_timeout_s, sess.t_plan),
                                  sess.t_plan)
                    meta, payload = self.steps.payload(st, sess.inbox.data(st.items[0]))
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
                rep.payload = json.dumps({"steps": rows, "recv": recv},
                                         separators=(",", ":")).encode()

            conn.sender.send(rep, on_start=_fill)
        except ProtocolError as e:
            if not sess.done and not self._stop.is_set():
                print(f"mec: device {conn.device} request {sess.rid}: {e}", file=sys.stderr)
                with contextlib.suppress(ProtocolError):
                    conn.send(Message(MsgType.ERROR, sess.rid, meta={"message": str(e)}))
        except EmulatorError as e:
            with contextlib.suppress(ProtocolError):
                conn.send(Message(MsgType.ERROR, sess.rid, meta={"message": str(e)}))
        finally:
            sess.done = True
            self._release(sess)

    def _tensors(self, sess: _Session, items: tuple[int, ...]) -> dict[str, Any] | None:
        if self.steps.runner is None:
            return None
        out: dict[str, Any] = {}
        for it in items:
            got = sess.inbox.data(it)
            if isinstance(got, dict) and sess.plan.item_names[it].startswith("cut:"):
                out.update(got)
        return out


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m emulator.mec",
                                 description="The MEC server process of the emulator (started "
                                             "by emulator.run inside the MEC host).")
    ap.add_argument("--profile", required=True, help="MEC profile JSON (block times)")
    ap.add_argument("--device-profile", required=True,
                    help="device profile JSON of the same model (to build the plans)")
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
        device_profile = load_profile(args.device_profile)
        check_compatible(device_profile, profile)
        model = LatencyModel(device_profile, profile, mec_speedup=args.speedup)
        rng = np.random.default_rng(np.random.SeedSequence([args.seed, 0x4D4543]))
        compute = ProfiledCompute(profile, rng, args.jitter, speedup=args.speedup)
        runner = None
        if args.compute == "execute":
            from emulator.execute import PieceRunner, find_pieces_dir

            runner = PieceRunner(profile, find_pieces_dir(profile, args.pieces), args.threads)
        server = MecServer(model, StepRunner(compute, runner), args.slots, args.host, args.port,
                           args.max_payload, realtime=not args.no_realtime,
                           window_clamp=args.window_clamp)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
