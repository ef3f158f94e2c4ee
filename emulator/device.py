"""The device process: generates requests, asks its policy, runs its side of each plan.

Per request (arrivals: Poisson at ``rate`` per second from a seeded generator, or closed loop):

1. *observe*: an ``ECHO`` to the MEC gives the RTT and the MEC's queue state (with a probe
   payload when the device has no fresh throughput sample, see :mod:`emulator.observe`);
2. *decide*: ``policy.decide(Observation)`` gives the split of every pass repetition (a
   trained SB3 policy's network is evaluated with numpy, :mod:`agent.numpy_policy`: no torch
   in a device process);
3. *run*: the request's plan (:func:`agent.plan.build_plan`, the same the simulator prices and
   the MEC runs): if anything runs on the MEC the device sends ``PLAN``, then runs its own steps
   in order: a computation waits until its inputs are here (made here, or received: a reader
   thread stamps every ``DATA`` when its last byte is in), a send is queued on the connection's
   sender thread and the device goes on. The request ends when its final output is on the
   device; every user-visible output's arrival is recorded (LLM tokens: TTFT, TPOT). The MEC's
   ``REPORT`` gives its side's stamps; the device then sends ``RELEASE``.
4. *fall back* (``--fallback F``, :func:`agent.latency.fallback_start`, the rule the simulator
   prices): when a plan that computes only on the MEC has no final output ``F`` times the local
   latency after the start, the device runs the whole request itself too, step by step; the
   first of the two to finish ends it (each output counts when the first of them had it). If
   the local run wins, the device sends ``RELEASE`` at once (the MEC drops the session) and
   ignores what the MEC still sends for it; the record has ``fallback_s``, no ``steps`` (the
   MEC's stamps never came) and phases of the local run and the bytes sent up.

Compute is profiled (:mod:`emulator.compute`) or, with ``--compute execute``, the profiler's
ONNX pieces (:mod:`emulator.steps`; outputs the MEC sent are checked against local execution
and the result stored in the record's ``check``). The checks run after the device's last
request (the reference generations would take the CPU the requests are timed on): it then
prints ``{"checking": N}``, checks, and writes the N held records.

The record mirrors :meth:`agent.latency.RequestResult.to_record` field by field: ``t_start``
(first computation may begin) to ``t_end`` (final output here) is ``latency_s``; ``steps``
has one row per plan step with ``t_ready``/``t_start``/``t_end`` (a send's ``t_end`` is its
arrival on the other side), ``token_times`` the user-visible outputs relative to ``t_start``.
Times are seconds of the trace (``monotonic - t0`` of the run; device and MEC share the clock).

Records go to stdout, one JSON object per line, flushed when each request finishes; logs go
to stderr. SIGTERM/SIGINT stop the device at once (finished requests are already written; the
request in flight, if any, is written as one ``{"unfinished": true, ...}`` line with what was
known of it, then the ``{"exit": true, "started", "done"}`` line).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.errors import AgentError
from agent.latency import LatencyModel, fallback_start, local_decision
from agent.plan import COMPUTE, DEVICE, SEND, Plan
from agent.policy import Policy, Workload
from emulator.compute import JITTERS, ProfiledCompute, background_thread, realtime_thread
from emulator.errors import EmulatorError, ProtocolError
from emulator.execute import PieceRunner, find_pieces_dir
from emulator.guard import token_from_env
from emulator.observe import LinkEstimator
from emulator.policies import load_policy
from emulator.protocol import (
    Message,
    MsgType,
    PayloadBuffer,
    QueueState,
    connect,
    recv_message,
)
from emulator.records import tolerate_log_errors
from emulator.steps import StepRunner
from emulator.tcpinfo import SentSince
from emulator.transport import Inbox, Sender, stamp_into
from profiler.schema import Profile, ProfileError, load_profile

__all__ = ["Device", "arrivals", "main", "parse_repeats"]


def arrivals(rng: np.random.Generator, rate: float | None) -> Iterator[float | None]:
    """Arrival times in seconds from the start: Poisson at ``rate``/s, or ``None`` for each
    request of a closed loop (start when the previous one finishes)."""
    t = 0.0
    while True:
        if rate is None:
            yield None
        else:
            t += float(rng.exponential(1.0 / rate))
            yield t


def parse_repeats(items: Sequence[str], profile: Profile) -> dict[str, int]:
    """``["decode=32"]`` -> ``{"decode": 32}``, checked against the profile's passes."""
    out: dict[str, int] = {}
    names = [p.name for p in profile.passes]
    for it in items:
        name, sep, val = it.partition("=")
        if not sep or name not in names:
            raise EmulatorError(f"--repeat {it!r}: use PASS=N with PASS one of {', '.join(names)}")
        try:
            n = int(val)
        except ValueError:
            raise EmulatorError(f"--repeat {it!r}: N must be an integer") from None
        if not 0 <= n <= 100_000:
            raise EmulatorError(f"--repeat {it!r}: N must be in 0..100000")
        out[name] = n
    return out


class _Stop(Exception):
    """Raised by the signal handler to stop the device at once."""


class Device:
    """One device: a connection to the MEC, a policy, a step runner, an estimator."""

    def __init__(self, index: int, sock: Any, profile: Profile, mec_profile: Profile,
                 policy: Policy, compute: ProfiledCompute, workload: Workload, t0: float,
                 estimator: LinkEstimator | None = None, runner: PieceRunner | None = None,
                 seed: int = 0, mec_speedup: float = 1.0, data_timeout_s: float = 600.0,
                 report_dir: Path | None = None, fallback: float | None = None,
                 echo_deadline_s: float = 1.0) -> None:
        self.index = index
        self.sock = sock
        self._tcp = SentSince(sock)
        self.profile = profile
        self.mec_profile = mec_profile
        self.model = LatencyModel(profile, mec_profile, mec_speedup=mec_speedup)
        self.policy = policy
        self.steps = StepRunner(compute, runner)
        self.workload = workload
        self.t0 = t0
        self.est = estimator or LinkEstimator()
        self.compute_mode = self.steps.mode
        self.seed = seed
        self.data_timeout_s = data_timeout_s
        self.report_dir = report_dir
        """Where the MEC writes the REPORT stamps it names (``--report-dir``), else None."""
        self.fallback = fallback
        """The local fallback's F (``--fallback``), or None: off."""
        self.echo_deadline_s = echo_deadline_s
        """How long the device waits for the reply to its empty echo before it reads an
        outage (``--echo-deadline``)."""
        self._echo_id = 0
        self._released: set[int] = set()
        """Requests ended by their local fallback: what the MEC still sends for them is
        dropped."""
        self.next_id = 1
        self.in_flight: dict[str, Any] | None = None
        """The request being run (what is known of it so far), or None: written as an
        ``unfinished`` line when the device is stopped in the middle of it."""
        self.reps = {p.name: int(workload.repeats.get(p.name, p.repeat)) for p in profile.passes}
        self._probe = memoryview(bytearray(self.est.probe_bytes))
        self.sender = Sender(sock, name=f"device-{index}-send")
        self._replies: queue.SimpleQueue[Message | str] = queue.SimpleQueue()
        self._inboxes: dict[int, Inbox] = {}
        self._reports: dict[int, queue.SimpleQueue[Message | str]] = {}
        self.pending_checks: dict[int, tuple[list[Any], int]] = {}
        self._reader = threading.Thread(target=self._read, name=f"device-{index}-read",
                                        daemon=True)
        self._reader.start()

    # ------------------------------------------------------------------ messaging
    def _read(self) -> None:
        """Reader thread: stamps and routes every message from the MEC."""
        buf = PayloadBuffer()
        why = "the MEC closed the connection"
        try:
            while True:
                msg = recv_message(self.sock, into=buf)
                t = time.monotonic()
                if msg is None:
                    break
                if "queue" in msg.meta:
                    self.est.queue = QueueState.from_json(msg.meta["queue"])
                if msg.request_id in self._released and msg.type in (MsgType.DATA,
                                                                     MsgType.REPORT):
                    self._drop_report(msg)
                    continue
                if msg.type == MsgType.DATA:
                    inbox = self._inboxes.get(msg.request_id)
                    items = msg.meta.get("items")
                    if inbox is None or not isinstance(items, list):
                        raise ProtocolError(f"unexpected DATA for request {msg.request_id}")
                    inbox.put(items, t, self.steps.received(msg.meta, msg.payload))
                elif msg.type == MsgType.REPORT:
                    msg.payload = bytes(msg.payload)
                    self._reports.setdefault(msg.request_id, queue.SimpleQueue()).put(msg)
                elif msg.type == MsgType.ERROR:
                    why = f"the MEC reported: {msg.meta.get('message', '?')}"
                    break
                else:
                    msg.payload = b""
                    self._replies.put(msg)
        except (ProtocolError, OSError) as e:
            why = f"connection to the MEC failed: {e}"
        self._replies.put(why)
        for inbox in list(self._inboxes.values()):
            inbox.fail(why)
        for q in list(self._reports.values()):
            q.put(why)

    def _recv(self, want: MsgType, timeout_s: float = 60.0) -> Message:
        try:
            msg = self._replies.get(timeout=timeout_s)
        except queue.Empty:
            raise ProtocolError(f"no {want.name} from the MEC within {timeout_s:g} s") from None
        if isinstance(msg, str):
            self._replies.put(msg)  # every later call fails the same way
            raise ProtocolError(msg)
        if msg.type != want:
            raise ProtocolError(f"expected {want.name} from the MEC, got {msg.type.name}")
        return msg

    def hello(self) -> None:
        meta: dict[str, Any] = {"device": self.index, "model": self.profile.model.name}
        token = token_from_env()  # the run's token (emulator.guard): the MEC wants it
        if token is not None:
            meta["token"] = token
        self.sender.send(Message(MsgType.HELLO, meta=meta))
        self._recv(MsgType.WELCOME)

    def _echo_reply(self, eid: int, timeout_s: float) -> Message | None:
        """The MEC's reply to echo ``eid`` (replies to earlier echoes, which their deadline
        gave up on, are discarded), or ``None`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                msg = self._replies.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                return None
            if isinstance(msg, str):
                self._replies.put(msg)  # every later call fails the same way
                raise ProtocolError(msg)
            if msg.type != MsgType.ECHO_REPLY:
                raise ProtocolError(f"expected ECHO_REPLY from the MEC, got {msg.type.name}")
            if msg.request_id == eid:
                return msg

    def echo(self) -> None:
        """An empty echo (RTT and queue state), then, when the device has no fresh throughput
        sample, an echo with a probe payload (upload throughput sample). An empty echo not
        answered within ``echo_deadline_s`` is read as an outage (:mod:`emulator.observe`):
        the device decides at once instead of waiting for the link."""
        self._echo_id += 1
        t1 = time.monotonic()
        self.sender.send(Message(MsgType.ECHO, self._echo_id))
        got = self._echo_reply(self._echo_id, self.echo_deadline_s)
        t2 = time.monotonic()
        if got is None:
            self.est.add_outage(t2)
            return
        self.est.add_rtt(t2 - t1)
        if self.est.needs_probe(t2):
            probe = self._probe[:self.est.probe_size()]
            self._echo_id += 1
            t1 = time.monotonic()
            self.sender.send(Message(MsgType.ECHO, self._echo_id, payload=probe))
            reply = self._echo_reply(self._echo_id, 60.0)
            if reply is None:
                raise ProtocolError("no ECHO_REPLY to a probe from the MEC within 60 s")
            t3 = time.monotonic()
            t_recv = float(reply.meta["t_recv"])
            self.est.add_upload(len(probe), t_recv - t1, t3)
            self.est.charge_probe(len(probe), t3 - t1, (t1 - self.t0, t_recv - self.t0))

    # ------------------------------------------------------------------ one request
    def run_request(self, t_arrival: float) -> dict[str, Any]:
        """Observe, decide and run one request; returns its record."""
        rid = self.next_id
        self.next_id += 1
        t_decide = time.monotonic()
        self.in_flight = {"device": self.index, "request": rid,
                          "workload": self.profile.model.name, "policy": self.policy.name,
                          "t_arrival": t_arrival - self.t0, "t_decide": t_decide - self.t0}
        self.echo()
        obs = self.est.observation(self.workload, t_decide - self.t0)
        decision = self.policy.decide(obs)
        self.in_flight["split"] = decision.action
        try:
            plan = self.model.plan(decision, self.workload)
        except AgentError as e:
            raise EmulatorError(f"policy {self.policy.name!r}: {e}") from None
        seed = int(np.random.SeedSequence([self.seed, self.index, rid]).generate_state(1)[0])
        inbox = Inbox()
        self._inboxes[rid] = inbox
        t_start = time.monotonic()
        self.in_flight["t_start"] = t_start - self.t0
        inbox.put(plan.initial, t_start)
        splits = {k: list(v) if isinstance(v, tuple) else v for k, v in decision.splits.items()}
        if plan.offloaded:
            self._reports.setdefault(rid, queue.SimpleQueue())
            self.sender.send(Message(MsgType.PLAN, rid, meta={
                "splits": splits, "repeats": self.reps, "action": decision.action,
                "seed": seed}))
        rows: dict[int, dict[str, Any]] = {}
        try:
            for idx, st in enumerate(plan.steps):
                if st.side != DEVICE:
                    continue
                if st.kind == COMPUTE:
                    t_ready = inbox.wait(st.needs, self.data_timeout_s, t_start)
                    t_s = time.monotonic()
                    _, tensors = self.steps.run(st, seed, self.steps.gather(inbox, st.needs))
                    t_e = time.monotonic()
                    self.steps.store(inbox, st, t_e, tensors)
                    rows[idx] = {"t_ready": t_ready, "t_start": t_s, "t_end": t_e}
                else:
                    t_ready = max(inbox.time(it) or t_start for it in st.items)
                    meta, payload = self.steps.payload(st, self.steps.gather(inbox, st.items))
                    meta.update(step=idx, items=list(st.items))
                    row: dict[str, Any] = {"t_ready": t_ready}
                    rows[idx] = row
                    self.sender.send(
                        Message(MsgType.DATA, rid, self.steps.pass_index(st.pass_name), st.rep,
                                meta=meta, payload=payload),
                        on_start=stamp_into(row))
            fell = None
            t_fb = fallback_start(self.model, plan, self.workload, t_start, self.fallback)
            if t_fb < float("inf") and inbox.wait_until([plan.final], t_fb) is None:
                self.in_flight["fallback_s"] = time.monotonic() - t_start
                fell = self._fall_back(inbox, plan, seed)
            if fell is not None:
                t_fell, t_end, tokens = fell
                self.in_flight["fallback_s"] = t_fell - t_start
                report = None
                self._released.add(rid)  # before the inbox goes: late DATA is dropped
            else:
                t_end = inbox.wait([plan.final], self.data_timeout_s, t_start)
                tokens = [inbox.wait([o], self.data_timeout_s, t_start) for o in plan.outputs]
                report = self._report(rid) if plan.offloaded else None
        finally:
            if plan.offloaded:
                with contextlib.suppress(ProtocolError):
                    self.sender.send(Message(MsgType.RELEASE, rid))
            self._inboxes.pop(rid, None)
            self._reports.pop(rid, None)
        if fell is None:
            steps = self._step_rows(plan, rows, inbox, report, t_start)
            phases = _phases(steps)
            for row in steps:
                if row["kind"] == "send" and row["side"] == "up" and row["nbytes"] > 0:
                    self.est.add_upload(row["nbytes"], row["t_end"] - row["t_start"], t_end)
        else:  # released before the MEC reported: its side's stamps are not known
            steps = []
            phases = {**_phases([]), "device_s": t_end - fell[0], "upload_bytes": sum(
                st.nbytes for st in plan.steps if st.kind == SEND and st.side == DEVICE)}
        check = None
        if self.steps.runner is not None and self.steps.runner.threaded:
            # the reference generation runs after the run (finish_checks), not between
            # requests: it would take the CPU the emulated requests are timed on
            self.pending_checks[rid] = (self.steps.user_tokens(plan, inbox.data), seed)
        elif self.steps.runner is not None:
            check = self.steps.check_request(plan, inbox.data, seed, self.reps)
            _report_check(self.index, check)
        rel = [x - self.t0 for x in tokens]
        ttft = tokens[0] - t_start
        tpot = (tokens[-1] - tokens[0]) / (len(tokens) - 1) if len(tokens) > 1 else None
        up = self._tcp.take()  # what this device's socket sent since the previous record
        self.in_flight = None
        return {
            "device": self.index, "request": rid, "workload": self.profile.model.name,
            "repeats": self.reps, "policy": self.policy.name, "compute": self.compute_mode,
            "split": decision.action, "splits": splits,
            "t_arrival": t_arrival - self.t0, "t_decide": t_decide - self.t0,
            "t_start": t_start - self.t0, "t_end": t_end - self.t0,
            "latency_s": t_end - t_start, "response_s": t_end - t_arrival,
            "queue_s": t_decide - t_arrival, "decide_s": t_start - t_decide,
            "ttft_s": ttft, "tpot_s": tpot,
            "token_times": [x - (t_start - self.t0) for x in rel],
            "observation": {"throughput_bps": obs.throughput_bps, "rtt_s": obs.rtt_s,
                            "mec_queue_len": obs.mec_queue_len,
                            "mec_busy_slots": obs.mec_busy_slots,
                            "mec_expected_wait_s": obs.mec_expected_wait_s},
            "phases": phases, "steps": steps, "probe": self.est.take_probe(),
            **({"uplink_tcp": up} if up is not None else {}),
            **({"downlink_tcp": report["tcp"]} if report and "tcp" in report else {}),
            **({"check": check} if check is not None else {}),
            **({"fallback_s": fell[0] - t_start} if fell is not None else {}),
        }

    def _fall_back(self, inbox: Inbox, plan: Plan, seed: int
                   ) -> tuple[float, float, list[float]] | None:
        """Run the whole request here, step by step, while the MEC's outputs may still come
        (module docstring, 4): ``(t_fallback, t_end, output_times)`` when the local run
        finished first, ``None`` when the MEC's final output was here first."""
        t_fb = time.monotonic()
        local = self.model.plan(local_decision(self.model), self.workload)
        mine = Inbox()
        mine.put(local.initial, t_fb)
        t_e = t_fb
        for st in local.steps:
            if inbox.time(plan.final) is not None:
                return None
            self.steps.run(st, seed)
            t_e = time.monotonic()
            mine.put(st.makes, t_e)
        t_mec = inbox.time(plan.final)
        if t_mec is not None and t_mec <= t_e:
            return None
        times = []
        for o_mec, o_loc in zip(plan.outputs, local.outputs, strict=True):
            a, b = inbox.time(o_mec), mine.time(o_loc)
            assert b is not None
            times.append(b if a is None else min(a, b))
        return t_fb, t_e, times

    def _drop_report(self, msg: Message) -> None:
        """A REPORT for a request its fallback ended: remove the stamps file it names."""
        name = msg.meta.get("report_file")
        if msg.type == MsgType.REPORT and isinstance(name, str) and self.report_dir:
            with contextlib.suppress(OSError):
                (self.report_dir / Path(name).name).unlink(missing_ok=True)

    def finish_checks(self, recs: list[dict[str, Any]]) -> None:
        """Check the tokens of the requests in ``recs`` (held since they ran), below the
        real-time priority of compute: other devices' requests may still be running."""
        if recs:
            with contextlib.suppress(OSError, AttributeError):
                os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        for rec in recs:
            tokens, seed = self.pending_checks.pop(rec["request"])
            rec["check"] = self.steps.check_tokens(tokens, seed, self.reps)
            _report_check(self.index, rec["check"])

    def _report(self, rid: int) -> dict[str, Any]:
        q = self._reports.setdefault(rid, queue.SimpleQueue())
        try:
            msg = q.get(timeout=self.data_timeout_s)
        except queue.Empty:
            raise ProtocolError(f"no REPORT for request {rid} from the MEC") from None
        if isinstance(msg, str):
            raise ProtocolError(msg)
        name = msg.meta.get("report_file")
        try:
            if isinstance(name, str) and self.report_dir is not None:
                path = self.report_dir / Path(name).name  # only ever inside our own directory
                msg.payload = path.read_bytes()
                path.unlink(missing_ok=True)
            rep = json.loads(bytes(msg.payload))
            assert isinstance(rep, dict)
            return rep
        except (ValueError, AssertionError, OSError) as e:
            raise ProtocolError(f"malformed REPORT for request {rid}: {e}") from e

    def _step_rows(self, plan: Plan, rows: dict[int, dict[str, Any]], inbox: Inbox,
                   report: dict[str, Any] | None, t_start: float) -> list[dict[str, Any]]:
        """One row per plan step (as :class:`agent.latency.StepTiming`), run times relative to
        the trace's t0, merged from this side's stamps and the MEC's report."""
        mec_rows = {int(r["step"]): r for r in (report or {}).get("steps", [])}
        recv = {int(k): v for k, v in (report or {}).get("recv", {}).items()}
        out = []
        for idx, st in enumerate(plan.steps):
            r = dict(rows.get(idx) or mec_rows.get(idx) or {})
            if st.kind == SEND:
                r["t_end"] = recv.get(idx) if st.side == DEVICE else inbox.time(st.items[0])
            t = {k: (float(r[k]) if r.get(k) is not None else t_start) - self.t0
                 for k in ("t_ready", "t_start", "t_end")}
            out.append({"kind": "compute" if st.kind == COMPUTE else "send",
                        "side": ("device", "mec")[st.side] if st.kind == COMPUTE
                        else ("up", "down")[st.side],
                        "pass_name": st.pass_name, "rep": st.rep, "lo": st.lo, "hi": st.hi,
                        "what": st.what, "nbytes": st.nbytes, **t})
        return out


def _report_check(index: int, check: dict[str, Any]) -> None:
    if not check["ok"]:
        print(f"device {index}: split outputs differ from local execution "
              f"(max |diff| {check['max_abs_diff']:.3g})", file=sys.stderr)


def _phases(steps: list[dict[str, Any]]) -> dict[str, float]:
    """Totals of a request's step rows (as :class:`agent.latency.RequestResult`)."""
    ph = {"device_s": 0.0, "upload_s": 0.0, "upload_bytes": 0, "mec_wait_s": 0.0,
          "mec_s": 0.0, "download_s": 0.0, "download_bytes": 0}
    first_mec = True
    for s in steps:
        dur = s["t_end"] - s["t_start"]
        if s["kind"] == "compute":
            ph["device_s" if s["side"] == "device" else "mec_s"] += dur
            if s["side"] == "mec" and first_mec:
                ph["mec_wait_s"] = s["t_start"] - s["t_ready"]
                first_mec = False
        else:
            d = "upload" if s["side"] == "up" else "download"
            ph[f"{d}_s"] += dur
            ph[f"{d}_bytes"] += s["nbytes"]
    return ph


def _sleep_until(deadline: float) -> None:
    while True:
        rem = deadline - time.monotonic()
        if rem <= 0:
            return
        time.sleep(min(rem, 0.2))


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m emulator.device",
                                 description="A device process of the emulator (started by "
                                             "emulator.run inside a device host).")
    ap.add_argument("--index", type=int, required=True, help="device number")
    ap.add_argument("--mec", required=True, help="MEC address HOST:PORT")
    ap.add_argument("--profile", required=True, help="device profile JSON")
    ap.add_argument("--mec-profile", required=True, help="MEC profile JSON")
    ap.add_argument("--policy", default="greedy", help="policy spec for agent.policies")
    ap.add_argument("--seed", type=int, default=0, help="run seed (mixed with --index)")
    ap.add_argument("--t0", type=float, default=None,
                    help="time.monotonic() of the run start (trace time 0); default now")
    ap.add_argument("--wait-go", action="store_true",
                    help='after connecting print {"ready": true} and read {"t0": T} from stdin')
    ap.add_argument("--duration", type=float, required=True,
                    help="seconds after t0 during which requests arrive")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--rate", type=float, default=None, help="Poisson arrivals per second")
    g.add_argument("--closed-loop", action="store_true", help="next request when one ends")
    ap.add_argument("--repeat", action="append", default=[], metavar="PASS=N",
                    help="repetitions of a pass per request (e.g. decode=32, unet=20)")
    ap.add_argument("--jitter", choices=JITTERS, default="lognormal",
                    help="block-time distribution (see emulator.compute)")
    ap.add_argument("--compute", choices=("profiled", "execute"), default="profiled",
                    help="wait out profiled times, or run the ONNX pieces (emulator.execute)")
    ap.add_argument("--pieces", default=None, help="export directory of the pieces (execute)")
    ap.add_argument("--mec-speedup", type=float, default=1.0,
                    help="passed to the policy's latency model")
    ap.add_argument("--fallback", type=float, default=None, metavar="F",
                    help="run a request that computes only on the MEC locally too once F times "
                         "its local latency has passed without its final output; the first "
                         "to finish ends it (agent.latency.fallback_start; default off)")
    ap.add_argument("--echo-deadline", type=float, default=1.0, metavar="S",
                    help="seconds to wait for the reply to the per-request echo; past it the "
                         "device reads an outage (a 0 bit/s sample) and decides at once "
                         "(default %(default)s: the simulator's 1-s sampling window)")
    ap.add_argument("--probe-bytes", type=int, default=32_768,
                    help="payload of a throughput probe echo (0: never probe)")
    ap.add_argument("--no-realtime", action="store_true",
                    help="do not run with SCHED_FIFO (see emulator.compute)")
    ap.add_argument("--window-clamp", type=int, default=0,
                    help="TCP_WINDOW_CLAMP bytes on the MEC connection (0: none)")
    ap.add_argument("--report-dir", type=Path, default=None,
                    help="the MEC's --report-dir: where it writes the REPORT stamps it names")
    ap.add_argument("--tcp-congestion", default="",
                    help="TCP congestion control of the MEC connection (default: the host's)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of a device process."""
    args = _parse_args(argv)
    tolerate_log_errors()  # a log on a full disk must not end this process

    def _on_signal(signum: int, _frame: Any) -> None:
        raise _Stop()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    done = started = 0
    held: list[dict[str, Any]] = []
    sock = None
    dev: Device | None = None
    try:
        profile = load_profile(args.profile)
        mec_profile = load_profile(args.mec_profile)
        repeats = parse_repeats(args.repeat, profile)
        workload = Workload(profile.model.name, repeats)
        # light: a trained policy's network in numpy, no torch in a device process
        policy, note = load_policy(args.policy, profile, mec_profile, light=True,
                                   mec_speedup=args.mec_speedup)
        if note:
            print(f"device {args.index}: {note}", file=sys.stderr)
        seq = np.random.SeedSequence([args.seed, args.index, 0x444556])
        arr_rng, comp_rng = (np.random.default_rng(s) for s in seq.spawn(2))
        host, _, port = args.mec.rpartition(":")
        sock = connect(host, int(port), window_clamp=args.window_clamp,
                       congestion=args.tcp_congestion)
        if args.fallback is not None and not (args.fallback >= 0 and args.fallback < 1e6):
            raise EmulatorError(f"--fallback must be >= 0 (times the local latency), got "
                                f"{args.fallback}")
        if not (args.echo_deadline > 0 and args.echo_deadline <= 600):
            raise EmulatorError(f"--echo-deadline must be in (0, 600] s, got "
                                f"{args.echo_deadline}")
        if args.fallback is not None and args.compute == "execute":
            raise EmulatorError("--fallback runs with profiled compute only (an executed "
                                "local run would need the request's tensors checked twice)")
        runner = None
        if args.compute == "execute":
            runner = PieceRunner(profile, find_pieces_dir(profile, args.pieces))
        dev = Device(args.index, sock, profile, mec_profile, policy,
                     ProfiledCompute(profile, comp_rng, args.jitter), workload, 0.0,
                     LinkEstimator(probe_bytes=args.probe_bytes), runner, args.seed,
                     mec_speedup=args.mec_speedup, report_dir=args.report_dir,
                     fallback=args.fallback, echo_deadline_s=args.echo_deadline)
        dev.hello()
        t0 = time.monotonic() if args.t0 is None else args.t0
        if args.wait_go:
            print(json.dumps({"ready": True}), flush=True)
            line = sys.stdin.readline()
            try:
                t0 = float(json.loads(line)["t0"])
            except (ValueError, KeyError, TypeError):
                if not line:
                    return 0  # the run was cancelled before it started
                raise EmulatorError(f"expected {{\"t0\": T}} on stdin, got {line!r}") from None
        dev.t0 = t0
        if not args.no_realtime and not realtime_thread():
            print(f"device {args.index}: SCHED_FIFO not allowed; compute timing may jitter",
                  file=sys.stderr)
        rate = None if args.closed_loop or args.rate is None else args.rate
        _sleep_until(t0)
        for a in arrivals(arr_rng, rate):
            t_arr = time.monotonic() if a is None else t0 + a
            if t_arr - t0 >= args.duration:
                break
            _sleep_until(t_arr)
            started += 1
            rec = dev.run_request(t_arr)
            done += 1
            if rec["request"] in dev.pending_checks:  # written once checked, after the run
                held.append(rec)
                continue
            sys.stdout.write(json.dumps(rec, separators=(",", ":")) + "\n")
            sys.stdout.flush()
        # requests over: what is left (the BYE, the after-run checks, the interpreter's exit)
        # must not take the CPU from devices still running theirs, as it did at SCHED_FIFO
        background_thread()
        dev.sender.send(Message(MsgType.BYE))
        dev.sender.close()
        if held:  # requests over: the run's grace deadline no longer applies (emulator.session)
            print(json.dumps({"checking": len(held)}), flush=True)
            t_chk = time.monotonic()
            dev.finish_checks(held)
            print(f"device {args.index}: {len(held)} requests checked in "
                  f"{time.monotonic() - t_chk:.1f} s", file=sys.stderr)
    except _Stop:
        pass
    except (EmulatorError, ProfileError) as e:
        print(f"device {args.index}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"device {args.index}: connection to the MEC failed: {e}", file=sys.stderr)
        return 1
    finally:
        if sock is not None:
            sock.close()
        try:  # the run command checks that every finished request was recorded
            for rec in held:  # unchecked when the run was stopped before the checks
                sys.stdout.write(json.dumps(rec, separators=(",", ":")) + "\n")
            if dev is not None and dev.in_flight is not None:  # stopped in the middle of one
                sys.stdout.write(json.dumps({
                    "unfinished": True, **dev.in_flight,
                    "t_stopped": time.monotonic() - dev.t0}) + "\n")
            sys.stdout.write(json.dumps({"exit": True, "device": args.index, "started": started,
                                         "done": done}) + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
    print(f"device {args.index}: {done} requests done", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
