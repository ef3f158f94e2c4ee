"""The device process: generates requests, asks its policy, runs its part, offloads the rest.

Per request (arrivals: Poisson at ``rate`` per second from a seeded generator, or closed loop):

1. *observe*: an ``ECHO`` to the MEC gives the RTT and the MEC's queue state (with a probe
   payload when the device has no fresh throughput sample, see :mod:`emulator.observe`);
2. *decide*: ``policy.decide(Observation)`` gives the split of every pass repetition;
3. *run*: for every pass repetition with split ``k``: blocks ``[0, k)`` on the device, then (if
   ``k < N``) ``COMPUTE`` with the cut's bytes to the MEC, which runs ``[k, N)`` and returns the
   pass output in a ``RESULT``. A request that offloaded anything ends with ``RELEASE``.

Compute is profiled (:mod:`emulator.compute`) or, with ``--compute execute``, the profiler's
ONNX pieces (:mod:`emulator.execute`; each request's outputs are checked against local
execution and the result stored in the record's ``check``).

Timeline of one pass repetition (one monotonic clock shared with the MEC)::

    t0 pass start -> t1 device compute done, first byte sent -> t2 MEC has the last byte
    -> t3 MEC compute starts -> t4 MEC compute done -> t5 device has the last result byte

``device_s = t1-t0``, ``upload_s = t2-t1``, ``mec_wait_s = t3-t2``, ``mec_s = t4-t3``,
``download_s = t5-t4``; the next pass starts at ``t5``, so the phases of a request sum to its
latency exactly. Record fields mirror :class:`agent.latency.PassTiming` / ``RequestResult``.
Times in records are seconds of the trace (``monotonic - t0`` of the run).

Records go to stdout, one JSON object per line, flushed when each request finishes; logs go
to stderr. SIGTERM/SIGINT stop the device at once (finished requests are already written).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from agent.policy import Decision, Policy, Workload
from emulator.compute import JITTERS, ProfiledCompute, realtime_thread
from emulator.errors import EmulatorError, ProtocolError
from emulator.execute import PieceRunner, decode_tensors, encode_tensors, find_pieces_dir
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
    send_message,
)
from emulator.records import tolerate_log_errors
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
    """One device: a connection to the MEC, a policy, profiled compute, an estimator."""

    def __init__(self, index: int, sock: Any, profile: Profile, mec_profile: Profile,
                 policy: Policy, compute: ProfiledCompute, workload: Workload, t0: float,
                 estimator: LinkEstimator | None = None, runner: PieceRunner | None = None,
                 seed: int = 0) -> None:
        self.index = index
        self.sock = sock
        self.profile = profile
        self.mec_profile = mec_profile
        self.policy = policy
        self.compute = compute
        self.workload = workload
        self.t0 = t0
        self.est = estimator or LinkEstimator()
        self.runner = runner
        self.compute_mode = "profiled" if runner is None else "execute"
        self.seed = seed
        self.buf = PayloadBuffer()
        self.next_id = 1
        self.reps = {p.name: int(workload.repeats.get(p.name, p.repeat)) for p in profile.passes}
        self._probe = memoryview(bytearray(self.est.probe_bytes))

    # ------------------------------------------------------------------ messaging
    def _recv(self, want: MsgType) -> Message:
        msg = recv_message(self.sock, into=self.buf)
        if msg is None:
            raise ProtocolError("the MEC closed the connection")
        if msg.type == MsgType.ERROR:
            raise ProtocolError(f"the MEC reported: {msg.meta.get('message', '?')}")
        if msg.type != want:
            raise ProtocolError(f"expected {want.name} from the MEC, got {msg.type.name}")
        if "queue" in msg.meta:
            self.est.queue = QueueState.from_json(msg.meta["queue"])
        return msg

    def hello(self) -> None:
        meta: dict[str, Any] = {"device": self.index, "model": self.profile.model.name}
        token = token_from_env()  # the run's token (emulator.guard): the MEC wants it
        if token is not None:
            meta["token"] = token
        send_message(self.sock, Message(MsgType.HELLO, meta=meta))
        self._recv(MsgType.WELCOME)

    def echo(self) -> None:
        """An empty echo (RTT and queue state), then, when the device has no fresh throughput
        sample, an echo with a probe payload (upload throughput sample)."""
        t1 = time.monotonic()
        send_message(self.sock, Message(MsgType.ECHO))
        self._recv(MsgType.ECHO_REPLY)
        t2 = time.monotonic()
        self.est.add_rtt(t2 - t1)
        if self.est.needs_probe(t2):
            t1 = time.monotonic()
            send_message(self.sock, Message(MsgType.ECHO, payload=self._probe))
            reply = self._recv(MsgType.ECHO_REPLY)
            self.est.add_upload(len(self._probe), float(reply.meta["t_recv"]) - t1,
                                time.monotonic())

    # ------------------------------------------------------------------ one request
    def _expected_hold_s(self, decision: Decision, from_pass: int, from_rep: int) -> float:
        """The device's estimate of how long its MEC session will last from now."""
        thr = self.est.throughput_bps() or 1e6
        total = 0.0
        for pi, p in enumerate(self.profile.passes):
            mp = self.mec_profile.passes[pi]
            for r in range(self.reps[p.name]):
                if (pi, r) < (from_pass, from_rep):
                    continue
                k = decision.split_for(p.name, r)
                if k == p.n_blocks:
                    continue
                total += sum(b.latency.median for b in p.blocks[:k]) / 1e3
                total += sum(b.latency.median for b in mp.blocks[k:]) / 1e3
                total += (p.upload_bytes(k) + p.download_bytes(k)) * 8.0 / thr + self.est.rtt_s
        return total

    def run_request(self, t_arrival: float) -> dict[str, Any]:
        """Observe, decide and run one request; returns its record."""
        rid = self.next_id
        self.next_id += 1
        t_decide = time.monotonic()
        self.echo()
        obs = self.est.observation(self.workload, t_decide - self.t0)
        decision = self.policy.decide(obs)
        t_start = time.monotonic()
        rows: list[dict[str, Any]] = []
        executed: list[tuple[int, int, dict[str, np.ndarray]]] = []
        session = False
        t = t_start
        for pi, p in enumerate(self.profile.passes):
            n = p.n_blocks
            for r in range(self.reps[p.name]):
                k = decision.split_for(p.name, r)
                if not 0 <= k <= n:
                    raise EmulatorError(f"policy {self.policy.name!r} gave split {k} for pass "
                                        f"{p.name!r} with {n} blocks")
                t0 = t
                meta: dict[str, Any] = {}
                out: bytes | memoryview
                if self.runner is None:
                    _, out = self.compute.run(pi, 0, k)
                else:
                    out, meta = self._execute(rid, pi, r, k)
                t1 = time.monotonic()
                row: dict[str, Any] = {"name": p.name, "repetition": r, "split": k,
                                       "t_start": t0 - self.t0, "device_s": t1 - t0,
                                       "upload_s": 0.0, "upload_bytes": 0, "mec_wait_s": 0.0,
                                       "mec_s": 0.0, "download_s": 0.0, "download_bytes": 0}
                if k < n:
                    if not session:
                        meta["expected_hold_s"] = self._expected_hold_s(decision, pi, r)
                        session = True
                    send_message(self.sock, Message(MsgType.COMPUTE, rid, pi, r, k, n,
                                                    meta=meta, payload=out))
                    res = self._recv(MsgType.RESULT)
                    t5 = time.monotonic()
                    if "error" in res.meta:
                        raise EmulatorError(f"the MEC failed pass {p.name!r}: {res.meta['error']}")
                    t2, t3, t4 = (float(res.meta[x]) for x in ("t_recv", "t_start", "t_done"))
                    up_bytes = len(out)
                    row.update(upload_s=t2 - t1, upload_bytes=up_bytes, mec_wait_s=t3 - t2,
                               mec_s=t4 - t3, download_s=t5 - t4, download_bytes=len(res.payload))
                    self.est.add_upload(up_bytes, t2 - t1, t5)
                    if self.runner is not None:
                        executed.append((pi, int(meta["input_seed"]),
                                         decode_tensors(res.meta.get("tensors"), res.payload)))
                    t1 = t5
                t = t1
                row["t_end"] = t - self.t0
                rows.append(row)
        t_end = t
        if session:
            send_message(self.sock, Message(MsgType.RELEASE, rid))
        check = self._check(executed) if self.runner is not None else None
        phases = {key: sum(row[key] for row in rows) for key in (
            "device_s", "upload_s", "upload_bytes", "mec_wait_s", "mec_s", "download_s",
            "download_bytes")}
        return {
            "device": self.index, "request": rid, "workload": self.profile.model.name,
            "repeats": self.reps, "policy": self.policy.name, "compute": self.compute_mode,
            "split": decision.action,
            "splits": {k: list(v) if isinstance(v, tuple) else v
                       for k, v in decision.splits.items()},
            "t_arrival": t_arrival - self.t0, "t_decide": t_decide - self.t0,
            "t_start": t_start - self.t0, "t_end": t_end - self.t0,
            "latency_s": t_end - t_start, "queue_s": t_decide - t_arrival,
            "decide_s": t_start - t_decide,
            "observation": {"throughput_bps": obs.throughput_bps, "rtt_s": obs.rtt_s,
                            "mec_queue_len": obs.mec_queue_len,
                            "mec_busy_slots": obs.mec_busy_slots,
                            "mec_expected_wait_s": obs.mec_expected_wait_s},
            "phases": phases, "passes": rows,
            **({"check": check} if check is not None else {}),
        }

    def _execute(self, rid: int, pi: int, r: int, k: int) -> tuple[bytes, dict[str, Any]]:
        """Execute mode: run pieces ``[0, k)`` on seeded inputs; the cut's tensors + meta."""
        assert self.runner is not None
        seed = int(np.random.SeedSequence([self.seed, self.index, rid, pi, r])
                   .generate_state(1)[0])
        env = self.runner.inputs(pi, seed)
        self.runner.run(pi, 0, k, env)
        if k == self.profile.passes[pi].n_blocks:
            return b"", {}
        descs, payload = encode_tensors({nm: env[nm] for nm in self.runner.cut_names(pi, k)})
        return payload, {"tensors": descs, "input_seed": seed}

    def _check(self, executed: list[tuple[int, int, dict[str, np.ndarray]]]) -> dict[str, Any]:
        """Compare the split outputs with local execution of the same pass repetitions."""
        assert self.runner is not None
        worst = 0.0
        ok = True
        for pi, seed, got in executed:
            ref = self.runner.local(pi, seed)
            for name, want in ref.items():
                have = got.get(name)
                if have is None or have.shape != want.shape:
                    ok = False
                    continue
                if want.dtype.kind == "f":
                    worst = max(worst, float(np.max(np.abs(have.astype(np.float64) - want)))
                                if want.size else 0.0)
                    ok &= bool(np.allclose(have, want, rtol=1e-4, atol=1e-5))
                else:
                    ok &= bool(np.array_equal(have, want))
        if not ok:
            print(f"device {self.index}: split outputs differ from local execution "
                  f"(max |diff| {worst:.3g})", file=sys.stderr)
        return {"passes_checked": len(executed), "max_abs_diff": worst, "ok": ok}


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
    ap.add_argument("--probe-bytes", type=int, default=32_768,
                    help="payload of a throughput probe echo (0: never probe)")
    ap.add_argument("--no-realtime", action="store_true",
                    help="do not run with SCHED_FIFO (see emulator.compute)")
    ap.add_argument("--window-clamp", type=int, default=0,
                    help="TCP_WINDOW_CLAMP bytes on the MEC connection (0: none)")
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
    sock = None
    try:
        profile = load_profile(args.profile)
        mec_profile = load_profile(args.mec_profile)
        repeats = parse_repeats(args.repeat, profile)
        workload = Workload(profile.model.name, repeats)
        policy, _note = load_policy(args.policy, profile, mec_profile,
                                    mec_speedup=args.mec_speedup)
        seq = np.random.SeedSequence([args.seed, args.index, 0x444556])
        arr_rng, comp_rng = (np.random.default_rng(s) for s in seq.spawn(2))
        host, _, port = args.mec.rpartition(":")
        sock = connect(host, int(port), window_clamp=args.window_clamp)
        runner = None
        if args.compute == "execute":
            runner = PieceRunner(profile, find_pieces_dir(profile, args.pieces))
        dev = Device(args.index, sock, profile, mec_profile, policy,
                     ProfiledCompute(profile, comp_rng, args.jitter), workload, 0.0,
                     LinkEstimator(probe_bytes=args.probe_bytes), runner, args.seed)
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
            sys.stdout.write(json.dumps(rec, separators=(",", ":")) + "\n")
            sys.stdout.flush()
            done += 1
        send_message(sock, Message(MsgType.BYE))
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
            sys.stdout.write(json.dumps({"exit": True, "device": args.index, "started": started,
                                         "done": done}) + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
    print(f"device {args.index}: {done} requests done", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
