"""The emulated network of one run: devices -- AP bridge -- MEC, shaped live from traces.

Layout (Mininet, LinuxBridge switch, no controller)::

    <id>d0 ─veth─┐                          ┌ uplink:   every device port's ingress
    <id>d1 ─veth─┤ <id>ap (bridge) ─wire─ <id>m │ is redirected to IFB <id>iu (HTB, u32 src ip)
    ...          │                          └ downlink: the MEC port's ingress to IFB <id>id
                                                (HTB, u32 dst ip); wire = veth, or the TAP
                                                relay when delay is needed and netem is absent

The wireless hop is shaped in the root namespace by HTB on two IFBs: one class per device (its
own trace), or for a shared cell one class ``1:1`` at the cell's rate whose leaf qdisc is a
second HTB (``2:``) with one class per device (rate = ceil = the trace's peak, never the
bottleneck), which shares the cell frame by frame among the devices that have frames queued, so
idle devices lend capacity. The cell's class alone bounds what the cell delivers. (Device classes
as borrowing children of the cell's class did not: a child sends on its own rate and burst
without asking its parent, so 64 children with an 8 kbit/s floor and a 4 ms burst each put the
cell's downlink up to 60% above its capacity in 1 s windows, 57 of 64 windows within 5%
measured with ``benchmarks/scale.py`` at 64 devices.) Every device class has a
TBF leaf that is normally open (10 Gbit/s, never the bottleneck) and holds the bounded queue (its
inner bfifo of ``queue_bytes``); the shaper closes it during outages (see
:mod:`emulator.net.shaper`). All veths have ``gso_max_segs 1`` and TSO/GSO off (per-frame
shaping); every host has ``net.ipv4.tcp_slow_start_after_idle=0``, cubic congestion control
(:data:`TCP_CC`), an initial window of the shaped queue (:meth:`EmulatedNetwork.initial_window`)
and a minimum RTO longer than the traces' closed stretches (:meth:`EmulatedNetwork.rto_min_s`),
and on traces with such stretches no tail loss probes and a 1 ms HTB bucket
(:data:`GATED_BURST_S`), at least two frames where the gate opens only in short bursts that
each carry that much (:func:`_burst_floor_bytes`). Unclassified frames (ARP)
pass unshaped. ``downlink=None`` leaves MEC->device unshaped (veth/relay line rate, no rows).

Until :meth:`EmulatedNetwork.start_shaping` each class sits at its trace's rate at time 0 (at
least ``outage_below_bps``).

Where the delay sits: uplink frames are shaped at the AP, then delayed (relay or netem towards
the MEC), as the simulator prices a send: the trace delivers its bytes, which arrive one
one-way delay later. Downlink frames are delayed first (the MEC's side) and shaped at the AP
after, so a frame sent at ``t`` meets the shaper at ``t + d``. The downlink classes therefore
replay their trace ``d`` late (:attr:`ShapedClass.lag_s`): the frame meets the capacity the
trace had at ``t`` and reaches the device when the simulator says. Without this, on a trace whose
capacity comes in short bursts, a reply sent within ``d`` of a burst's end missed the burst
and waited for the next (measured: on a trace open 0.1 s of every 0.5 s, 10 ms one-way delay, the 1-byte replies to 6
of 10 200 KB uploads came back 0.4 s late: 0.95 s against 0.56 s simulated).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from emulator.net.cleanup import RunState, delete_links, kill_tracked, proc_start_time
from emulator.net.config import DEFAULT_QUEUE_BYTES, NetConfig, new_run_id
from emulator.net.cpu import CpuWatch
from emulator.net.delay import DelayMethod, delay_line, netem_available
from emulator.net.errors import NetError
from emulator.net.shaper import (
    LINE_BURST,
    LINE_RATE_BPS,
    ShapedClass,
    ShaperProcess,
    ShaperSettings,
    wire_Bps,
)
from emulator.net.start import wait_line
from emulator.net.tc import FRAME_BYTES, burst_bytes, handle, tc_batch
from traces import Trace

__all__ = ["MEC_IP", "EmulatedNetwork", "device_ip"]

MEC_IP = "10.0.0.254"
_PREFIX = 24
_MIN_RATE_BPS_CHILD = 8_000.0
#: major handle of a shared cell's inner HTB (the leaf qdisc of the cell's class 1:1)
_CELL_QDISC = 2


def device_ip(i: int) -> str:
    """Address of device ``i`` (``10.0.0.<i+1>``)."""
    return f"10.0.0.{i + 1}"


#: congestion control in every emulated host. Not the machine's default BBR: BBR's PROBE_RTT
#: drops the window to 4 segments for 0.2 s every 10 s and its pacing follows a bandwidth
#: estimate, both invisible to the simulator's fluid link (measured on a trace open 0.1 s of
#: every 0.5 s: 2 of 40 200-KB uploads +4.6 % and +84 % with BBR, a window of 4 after one; in
#: ``emulator.run`` BBR's estimate fell to 0.97 Mbit/s after a gap and 200 KB uploads took 3-5
#: bursts instead of 2: requests +106 % and +135 %). A namespace may only choose one the root
#: namespace allows (:func:`_allow_congestion_control`); until 4 Dec every host had silently
#: kept BBR
TCP_CC = "cubic"
#: upper bound of the hosts' minimum RTO (s): longer outages still see timeouts, with backoff
RTO_MIN_CAP_S = 5.0
#: HTB burst (s at the class's rate) of a device class whose trace has closed stretches, when
#: shorter than ``NetConfig.burst_s``. Its bucket refills to the full burst in every closed
#: stretch and leaves at once when the gate opens, and a transfer sent at once (the initial
#: window) meets a full bucket. Measured on a trace open 0.1 s of every 0.5 s (11.6 Mbit/s
#: open, 10 ms delay, two runs each, 4 Dec): 10 KB transfers that start inside a burst ended
#: 16.5-17.1 % early with the 4 ms bucket, 8.2-9.5 % with two frames (HTB still sends three at
#: once); 200 KB uploads -0.1 to -0.6 % instead of -0.7 to -2.0 %
GATED_BURST_S = 0.001
#: a gated class whose trace opens only for stretches shorter than this (s), each carrying at
#: least :data:`GATED_BURST_FLOOR_BYTES`, keeps that much in its bucket
#: (:func:`_burst_floor_bytes`): each message costs ~0.8 ms more than the simulator prices
#: (relay, stacks), and without the floor a token ready just before a 0.1 s burst ends missed
#: it and waited 0.4 s for the next (+38 %: 16 of 18 requests within 5 % in CI, 4 Dec; 5 of
#: 48 missed and the others +0.9 % in three runs of the burst test on 5 Dec, none missed with
#: the floor in five). On traces with long open stretches (an outage in a steady trace) the
#: floor only adds credit the fluid link does not give: 3 KB uploads at 10 Mbit/s passed
#: 1.9 ms early of 12.5 ms, request medians -2.5 % with the host's own delays taken out
#: (-0.4 % without the floor; 5 Dec, two runs each)
GATED_OPEN_SHORT_S = 1.0
#: two frames: a message of two frames passes at an open gate at once
GATED_BURST_FLOOR_BYTES = 2 * FRAME_BYTES


def _open_stretches(trace: Trace, below_bps: float) -> list[tuple[float, float]]:
    """``(seconds, bits)`` of every stretch of ``trace`` at or above ``below_bps`` that a closed
    stretch ends or begins, over one period (wrapping around the end of a looping trace)."""
    span = trace.period_s * (2 if trace.end == "loop" else 1)
    out: list[tuple[float, float]] = []
    run = bits = 0.0
    seen_closed = False
    for s, e, r in trace.segments(0.0, span):
        if r < below_bps:
            if seen_closed and run > 0.0:
                out.append((run, bits))
            run = bits = 0.0
            seen_closed = True
        else:
            run += e - s
            bits += (e - s) * r
    if trace.end != "loop" and seen_closed and run > 0.0:
        out.append((run, bits))  # the open stretch after the last closed one
    return out


def _burst_floor_bytes(trace: Trace, below_bps: float) -> int:
    """The least HTB bucket of a gated class on ``trace``: :data:`GATED_BURST_FLOOR_BYTES`
    where every opening of its gate is shorter than :data:`GATED_OPEN_SHORT_S` and carries at
    least that many bytes (so the floor never passes more than an opening gives: a Mahimahi
    file replayed at its own 1 ms resolution, ``resample_s=None``, opens for 1 ms delivery
    opportunities of 1448 B at 11.58 Mbit/s), else one byte. At the default 0.1 s resampling
    ``TMobile-LTE-short.up`` has three closed stretches (at most 0.6 s) and opens for up to
    83 s: no floor."""
    opens = _open_stretches(trace, below_bps)
    if opens and max(d for d, _ in opens) < GATED_OPEN_SHORT_S \
            and min(b for _, b in opens) / 8.0 >= GATED_BURST_FLOOR_BYTES:
        return GATED_BURST_FLOOR_BYTES
    return 1


def _longest_closed(trace: Trace, below_bps: float) -> float:
    """Longest stretch (s) of ``trace`` with capacity below ``below_bps``, wrapping around the
    end of a looping trace (``inf`` for a trace that never reaches ``below_bps``)."""
    span = trace.period_s * (2 if trace.end == "loop" else 1)
    longest = run = 0.0
    for s, e, r in trace.segments(0.0, span):
        if r < below_bps:
            run += e - s
            longest = max(longest, run)
        else:
            run = 0.0
    return min(longest, trace.period_s) if longest < span else math.inf


_SYSCTL = Path("/proc/sys/net/ipv4")


def _allow_congestion_control(name: str) -> bool:
    """Let network namespaces choose ``name`` as their default congestion control: a namespace
    other than the root one may only pick one of the root's
    ``net.ipv4.tcp_allowed_congestion_control`` (Operation not permitted otherwise; on the
    build machine the list was ``reno bbr``, so every host silently kept BBR). Adds ``name`` to
    that list when the kernel has it; returns whether it is allowed now."""
    try:
        if name not in (_SYSCTL / "tcp_available_congestion_control").read_text().split():
            subprocess.run(["modprobe", f"tcp_{name}"], capture_output=True, check=False)
        if name not in (_SYSCTL / "tcp_available_congestion_control").read_text().split():
            return False
        allowed = (_SYSCTL / "tcp_allowed_congestion_control").read_text().split()
        if name not in allowed:
            (_SYSCTL / "tcp_allowed_congestion_control").write_text(" ".join([*allowed, name]))
        return name in (_SYSCTL / "tcp_allowed_congestion_control").read_text().split()
    except OSError:
        return False


def _prepare(trace: Trace, resample_s: float | None) -> Trace:
    if resample_s is None or trace.times_s.size < 2:
        return trace
    shortest = float(min(trace.times_s[1:] - trace.times_s[:-1]))
    return trace.resampled(resample_s) if shortest < resample_s - 1e-12 else trace


def _sh(argv: list[str]) -> None:
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise NetError(f"{' '.join(argv)} failed: {res.stderr.strip()}")


class EmulatedNetwork:
    """Builds the network on ``__enter__``, tears down exactly what it made on ``__exit__``.

    Nothing is shaped until :meth:`start_shaping`; before that the classes sit at the traces'
    rates at time 0. See the module docstring for the layout.
    """

    #: the congestion control the emulator's processes set on their sockets (a namespace
    #: may not take :data:`TCP_CC` as its default: see emulator.protocol.configure_socket)
    tcp_congestion: str = TCP_CC

    def __init__(self, cfg: NetConfig, *, verbose: bool = True) -> None:
        cfg.validate()
        self.cfg = cfg
        self.run_id: str = cfg.run_id or new_run_id()
        self.verbose = verbose
        self.up_traces = [_prepare(t, cfg.resample_s) for t in cfg.uplink_traces()]
        self.down_traces = [_prepare(t, cfg.resample_s) for t in cfg.downlink_traces()]
        self.delay_method: DelayMethod = "none"
        self.queue_bytes = cfg.queue_bytes or self._default_queue()
        self.mec: Any = None
        self.devices: list[Any] = []
        self._net: Any = None
        self._state: RunState | None = None
        self._shaper: ShaperProcess | None = None
        self._relay: subprocess.Popen[str] | None = None
        self._procs: list[subprocess.Popen[Any]] = []
        self._classes: list[ShapedClass] = []
        self._prev_sigterm: Any = None
        self._t0: float | None = None
        self._final: dict[str, Any] | None = None
        self._cpu: CpuWatch | None = None
        self._cpu_done = False

    # ------------------------------------------------------------------ names
    @property
    def ap_name(self) -> str:
        return f"{self.run_id}ap"

    def _ap_port(self, k: int) -> str:
        return f"{self.ap_name}-eth{k}"

    @property
    def ifb_up(self) -> str:
        return f"{self.run_id}iu"

    @property
    def ifb_down(self) -> str:
        return f"{self.run_id}id"

    @property
    def mec_port(self) -> str:
        """The AP-side end of the AP<->MEC wire."""
        if self.delay_method == "tun-relay":
            return f"{self.run_id}ta"
        return self._ap_port(self.cfg.n_devices + 1)

    def _default_queue(self) -> int:
        peak = max([t.percentile_bps(95) for t in self.up_traces + self.down_traces] or [0.0])
        rtt = max(2 * self.cfg.one_way_delay_s, 0.0)
        return int(max(DEFAULT_QUEUE_BYTES, 2 * peak / 8 * rtt))

    def _say(self, line: str) -> None:
        if self.verbose:
            print(f"emulator.net[{self.run_id}]: {line}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> EmulatedNetwork:
        if os.geteuid() != 0:
            raise NetError(
                "the emulated network needs root: sudo .venv/bin/python ... (check with "
                "python -m emulator.doctor)"
            )
        n = self.cfg.n_devices
        links = [
            self.ap_name,
            *[self._ap_port(k) for k in range(1, n + 2)],
            self.ifb_up,
            self.ifb_down,
            f"{self.run_id}ta",
        ]
        self._state = RunState.new(self.run_id)
        self._state.links = links
        self._state.save()
        self._install_sigterm()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:

            def _on_term(signum: int, frame: FrameType | None) -> None:
                raise SystemExit(128 + signum)

            self._prev_sigterm = signal.signal(signal.SIGTERM, _on_term)

    def _build(self) -> None:
        from mininet.log import lg
        from mininet.net import Mininet
        from mininet.nodelib import LinuxBridge

        from emulator.net.host import BoundedHost

        assert self._state is not None
        cfg = self.cfg
        t_build = time.monotonic()
        if lg.getEffectiveLevel() < 40:
            lg.setLogLevel("error")
        self._shaper = ShaperProcess()  # its interpreter starts while the network is built
        self._state.track(self._shaper.pid, "shaper")
        _sh(["ip", "link", "add", self.ifb_up, "type", "ifb"])
        if cfg.one_way_delay_s > 0:
            self.delay_method = "netem" if netem_available(self.ifb_up) else "tun-relay"
        net = Mininet(build=False, controller=None, switch=LinuxBridge, host=BoundedHost,
                      autoSetMacs=True)
        self._net = net
        ap = net.addSwitch(self.ap_name, dpid="1")
        self.devices = [
            self._add_host(f"{self.run_id}d{i}", device_ip(i)) for i in range(cfg.n_devices)
        ]
        self.mec = self._add_host(f"{self.run_id}m", MEC_IP)
        for h in self.devices:
            net.addLink(h, ap)
        if self.delay_method != "tun-relay":
            net.addLink(self.mec, ap)
        net.build()
        net.start()
        if self.delay_method == "tun-relay":
            self._start_relay()
        self._tune_links()
        self._setup_htb()
        if self.delay_method == "netem":
            d = f"{cfg.one_way_delay_s * 1e3:.3f}ms"
            tc_batch([f"qdisc add dev {self.mec_port} root netem delay {d} limit 100000"])
            tc_batch(
                [f"qdisc add dev {self.mec.defaultIntf()} root netem delay {d} limit 100000"],
                mnexec_pid=self.mec.pid,
            )
        self._shaper.load(
            self._classes,
            ShaperSettings(
                cfg.compensate_overhead,
                cfg.burst_s,
                cfg.sample_s,
                cfg.realtime,
                self.queue_bytes,
                cfg.outage_below_bps,
            ),
        )
        self._say(
            f"{cfg.n_devices} device(s) + MEC up in {time.monotonic() - t_build:.2f} s; "
            f"{'shared cell' if cfg.shared_cell else 'per-device links'}; queue "
            f"{self.queue_bytes} B; downlink {'shaped' if self.down_traces else 'unshaped'}"
        )
        if cfg.one_way_delay_s > 0:
            self._say(delay_line(self.delay_method, cfg.one_way_delay_s))

    def _add_host(self, name: str, ip: str) -> Any:
        """Start one host shell (bounded: :class:`~emulator.net.host.BoundedHost`), tracked."""
        assert self._state is not None
        h = self._net.addHost(name, ip=f"{ip}/{_PREFIX}")
        self._state.track(h.pid, f"mininet:{h.name}")
        return h

    def _start_relay(self) -> None:
        assert self._state is not None
        inner, outer = f"{self.run_id}tm", f"{self.run_id}ta"
        argv = [
            sys.executable,
            "-I",
            str(Path(__file__).with_name("tunrelay.py")),  # stdlib only: starts fast
            "--netns-pid",
            str(self.mec.pid),
            "--inner",
            inner,
            "--outer",
            outer,
            "--delay-s",
            repr(self.cfg.one_way_delay_s),
        ]
        if self.cfg.realtime:
            argv.append("--realtime")
        self._relay = subprocess.Popen(  # own session: a terminal's Ctrl-C reaches the parent only
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        self._state.track(self._relay.pid, "tunrelay")
        wait_line(self._relay, "ready", 15.0,
                  "the delay relay (check TUN support: python -m emulator.doctor)")
        from mininet.link import Intf

        _sh(["ip", "link", "set", outer, "master", self.ap_name])
        _sh(["ip", "link", "set", outer, "up"])
        Intf(inner, node=self.mec, moveIntfFn=lambda *a, **k: True)  # already there
        self.mec.setIP(MEC_IP, _PREFIX, intf=inner)
        self.mec.cmd(f"ip link set {inner} up")

    def rto_min_s(self) -> float:
        """TCP's minimum retransmission timeout in the hosts: longer than the longest stretch a
        shaped class stays closed (capacity below ``outage_below_bps``) plus a round trip and
        0.2 s, within [0.2 s, :data:`RTO_MIN_CAP_S`]. A closed gate holds frames, never drops
        them, so a timeout inside such a stretch is always spurious (and costs the next open
        stretch a restart from one segment)."""
        closed = max([_longest_closed(t, self.cfg.outage_below_bps)
                      for t in self.up_traces + self.down_traces] or [0.0])
        want = closed + 2 * self.cfg.one_way_delay_s + 0.2 if closed > 0 else 0.2
        return min(max(0.2, want), RTO_MIN_CAP_S)

    def initial_window(self) -> int:
        """TCP's initial congestion and receive window in the hosts (segments): as many
        full-size frames as 90 % of the shaped queue holds (the receive window ``emulator.run``
        clamps to), at least the kernel's default of 10. The simulator's fluid link sends a
        message's bytes as fast as the trace allows from its first byte; with the default
        initial window of 10 segments the first transfers of a connection are window-limited
        instead (measured on a trace open 0.1 s of every 0.5 s, 10 ms one-way delay: the second
        200 KB upload of a connection still +5 %, 76 ms late, the first +16 %)."""
        return max(10, int(0.9 * self.queue_bytes) // FRAME_BYTES)

    def closed_stretches(self) -> bool:
        """Whether any shaped trace has capacity below ``outage_below_bps`` somewhere."""
        return any(_longest_closed(t, self.cfg.outage_below_bps) > 0
                   for t in self.up_traces + self.down_traces)

    def _tune_links(self) -> None:
        rto_us = int(self.rto_min_s() * 1e6)
        iw = self.initial_window()
        _allow_congestion_control(TCP_CC)
        for h in [*self.devices, self.mec]:
            cmds = ["sysctl -qw net.ipv4.tcp_slow_start_after_idle=0",
                    f"sysctl -qw net.ipv4.tcp_congestion_control={TCP_CC}",
                    f"sysctl -qw net.ipv4.tcp_rto_min_us={rto_us}"]
            if self.closed_stretches():
                # tail loss probes (PTO ~2 RTT) fire inside every closed stretch and queue a
                # duplicate segment behind the held ones: spurious, as a closed gate holds frames
                # and never drops them (measured on the 0.1-of-0.5 s trace: 7 device and 18 MEC
                # probes in 25 s, every one a retransmission)
                cmds.append("sysctl -qw net.ipv4.tcp_early_retrans=0")
            for intf in h.intfNames():
                if intf == "lo":
                    continue
                cmds.append(f"ip link set dev {intf} gso_max_segs 1")
                cmds.append(f"ethtool -K {intf} tso off gso off >/dev/null 2>&1")
                cmds.append(f"ip route change 10.0.0.0/{_PREFIX} dev {intf} proto kernel scope "
                            f"link src {h.IP(intf)} initcwnd {iw} initrwnd {iw}")
            h.cmd("; ".join(cmds))
            cc = h.cmd("sysctl -n net.ipv4.tcp_congestion_control").strip()
            if cc != TCP_CC:
                print(f"emulator.net[{self.run_id}]: warning: {h.name} uses TCP congestion "
                      f"control {cc!r}, not {TCP_CC!r} (the kernel lacks it or refused it): "
                      "transfers on bursty traces may stall", file=sys.stderr, flush=True)
        for k in range(1, self.cfg.n_devices + 2):
            port = self._ap_port(k)
            if Path(f"/sys/class/net/{port}").exists():
                subprocess.run(
                    ["ip", "link", "set", "dev", port, "gso_max_segs", "1"],
                    capture_output=True,
                    check=False,
                )
                subprocess.run(
                    ["ethtool", "-K", port, "tso", "off", "gso", "off"],
                    capture_output=True,
                    check=False,
                )

    def _ifindex(self, name: str) -> int:
        try:
            return int(Path(f"/sys/class/net/{name}/ifindex").read_text())
        except OSError as exc:
            raise NetError(f"interface {name} vanished during setup") from exc

    def _setup_htb(self) -> None:
        cfg = self.cfg
        n = cfg.n_devices
        lines: list[str] = []
        dirs: list[tuple[str, str, list[Trace], list[str]]] = [
            ("up", self.ifb_up, self.up_traces, [self._ap_port(k) for k in range(1, n + 1)])
        ]
        if self.down_traces:
            _sh(["ip", "link", "add", self.ifb_down, "type", "ifb"])
            dirs.append(("down", self.ifb_down, self.down_traces, [self.mec_port]))
        for direction, ifb, traces, ports in dirs:
            _sh(["ip", "link", "set", ifb, "up"])
            idx = self._ifindex(ifb)
            match = "src" if direction == "up" else "dst"
            # the downlink's delay (relay or netem on the MEC's side) comes before its shaper:
            # the shaper replays the downlink that much later (see the module docstring)
            lag = cfg.one_way_delay_s if direction == "down" else 0.0
            lines.append(f"qdisc add dev {ifb} root handle 1: htb default fff")
            parent = handle(1, 0)
            floor = cfg.outage_below_bps
            leaf_tbf = f"tbf rate {LINE_RATE_BPS}bit burst {LINE_BURST} limit {self.queue_bytes}"
            cell_gates: list[tuple[int, int, int]] = []
            cell_fill: list[tuple[str, str]] = []
            # the major handle of the device classes: HTB 1: itself, or for a shared cell the
            # HTB 2: that is the cell class's leaf qdisc (see _CELL_QDISC)
            dev_major = 1
            if cfg.shared_cell:
                cell = traces[0]
                r = wire_Bps(max(float(cell.capacity_at(0.0)), floor), cfg.compensate_overhead)
                b = burst_bytes(r, cfg.burst_s)
                lines.append(
                    f"class add dev {ifb} parent 1: classid 1:1 htb rate {r * 8}bit "
                    f"ceil {r * 8}bit burst {b} cburst {b} quantum {FRAME_BYTES}"
                )
                lines.append(f"qdisc add dev {ifb} parent 1:1 handle {_CELL_QDISC:x}: htb "
                             f"default fff")
                parent = handle(1, 1)
                dev_major = _CELL_QDISC
            for i in range(n):
                minor = 0x10 + i
                tr = traces[0] if len(traces) == 1 else traces[i]
                cls_burst: float | None = None
                burst_floor = 1
                if cfg.shared_cell:
                    # never the bottleneck below the cell's own class (its peak): the device
                    # classes only share the cell out, frame by frame among the busy ones
                    peak = float(max(tr.rates_bps.max(), _MIN_RATE_BPS_CHILD))
                    rate = ceil = wire_Bps(peak, cfg.compensate_overhead)
                    role = "child"
                    par = f"{_CELL_QDISC:x}:"
                else:
                    cap0 = max(float(tr.capacity_at(0.0)), floor)
                    rate = ceil = wire_Bps(cap0, cfg.compensate_overhead)
                    role = "leaf"
                    par = "1:"
                    if _longest_closed(tr, floor) > 0:
                        cls_burst = min(cfg.burst_s, GATED_BURST_S)
                        burst_floor = _burst_floor_bytes(tr, floor)
                cls = f"{dev_major:x}:{minor:x}"
                b = max(burst_floor,
                        burst_bytes(ceil, cfg.burst_s if cls_burst is None else cls_burst))
                lines.append(
                    f"class add dev {ifb} parent {par} classid {cls} htb rate "
                    f"{rate * 8}bit ceil {ceil * 8}bit burst {b} cburst {b} "
                    f"quantum {FRAME_BYTES}"
                )
                lines.append(f"qdisc add dev {ifb} parent {cls} handle {minor:x}: {leaf_tbf}")
                lines.append(
                    f"filter add dev {ifb} parent 1: protocol ip prio 1 u32 match ip "
                    f"{match} {device_ip(i)}/32 flowid {'1:1' if cfg.shared_cell else cls}"
                )
                if cfg.shared_cell:
                    lines.append(
                        f"filter add dev {ifb} parent {_CELL_QDISC:x}: protocol ip prio 1 u32 "
                        f"match ip {match} {device_ip(i)}/32 flowid {cls}"
                    )
                gate = (idx, handle(minor, 0), handle(dev_major, minor))
                cell_gates.append(gate)
                # (source, destination) of a frame the filter puts in this device's class
                fill = (device_ip(i), MEC_IP) if direction == "up" else (MEC_IP, device_ip(i))
                cell_fill.append(fill)
                self._classes.append(
                    ShapedClass(
                        ifb,
                        idx,
                        handle(dev_major, minor),
                        handle(dev_major, 0) if cfg.shared_cell else parent,
                        role,
                        i,
                        direction,
                        tr,
                        () if cfg.shared_cell else (gate,),
                        () if cfg.shared_cell else (fill,),
                        lag,
                        cls_burst,
                        burst_floor,
                    )
                )
            if cfg.shared_cell:
                self._classes.append(
                    ShapedClass(
                        ifb,
                        idx,
                        handle(1, 1),
                        handle(1, 0),
                        "cell",
                        -1,
                        direction,
                        traces[0],
                        tuple(cell_gates),
                        tuple(cell_fill),
                        lag,
                    )
                )
            for port in ports:
                lines.append(f"qdisc add dev {port} handle ffff: ingress")
                lines.append(
                    f"filter add dev {port} parent ffff: protocol all u32 match u32 0 0 "
                    f"action mirred egress redirect dev {ifb}"
                )
        tc_batch(lines)

    def close(self) -> None:
        """Tear down everything this run created (idempotent; used by ``__exit__``)."""
        errors: list[str] = []
        if self._shaper is not None:
            try:
                self._final = self._shaper.stop()
            except Exception as exc:
                errors.append(f"shaper: {exc}")
            self._shaper = None
        self._stop_cpu()
        if self._procs:
            state = self._state
            if state is not None:
                kill_tracked([p for p in state.procs if p.tag.startswith("popen")])
            for p in self._procs:
                try:
                    p.wait(timeout=2.0)
                except subprocess.TimeoutExpired:
                    p.kill()
            self._procs = []
        if self._relay is not None:
            try:
                assert self._relay.stdin is not None
                self._relay.stdin.close()
                self._relay.terminate()
                self._relay.wait(timeout=2.0)
            except Exception:
                self._relay.kill()
            self._relay = None
        if self._net is not None:
            try:
                self._net.stop()
            except Exception as exc:
                errors.append(f"mininet stop: {exc}")
            self._net = None
        if self._state is not None:
            kill_tracked([p for p in self._state.procs if p.tag.startswith("mininet:")])
            delete_links(self._state.links)
            self._state.path.unlink(missing_ok=True)
            self._state = None
        if self._prev_sigterm is not None:
            signal.signal(signal.SIGTERM, self._prev_sigterm)
            self._prev_sigterm = None
        if errors:
            self._say("teardown: " + "; ".join(errors))

    # ------------------------------------------------------------------ running
    def popen(self, host: Any, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in ``host``'s namespace (own session); killed at teardown."""
        if self._state is None:
            raise NetError("popen needs a running network: use it inside `with EmulatedNetwork`")
        p: subprocess.Popen[Any] = subprocess.Popen(["mnexec", "-da", str(host.pid), *argv], **kw)
        self._procs.append(p)
        self._state.track(p.pid, f"popen:{host.name}:{os.path.basename(argv[0])}")
        return p

    def start_shaping(self, t0_monotonic: float | None = None) -> None:
        """Start the live replay; trace time 0 is ``t0_monotonic`` (default: now)."""
        if self._shaper is None:
            raise NetError("start_shaping needs a running network (inside `with`)")
        self._t0 = time.monotonic() if t0_monotonic is None else float(t0_monotonic)
        self._shaper.start(self._t0)
        self._cpu = CpuWatch(self.cfg.sample_s, self._t0)
        self._cpu.__enter__()

    def stop_shaping(self) -> None:
        """Stop the replay (rates stay as last set); stats and rows remain readable."""
        if self._shaper is not None:
            self._final = self._shaper.stop()
            self._shaper = None
        self._stop_cpu()

    def _stop_cpu(self) -> None:
        if self._cpu is not None and not self._cpu_done:
            self._cpu.__exit__(None, None, None)
            self._cpu_done = True
            warning = self._cpu.warning()
            if warning:
                self._say(warning)

    def _result(self) -> dict[str, Any]:
        if self._shaper is not None:
            return self._shaper.poll()
        return self._final or {"changes": 0, "rows": [], "lag_ms": {}, "call_ms": {}}

    def capacity_at(self, device_index: int, t_trace: float) -> float:
        """Uplink capacity (goodput bit/s) configured for a device at trace time ``t_trace``;
        with a shared cell, the cell's capacity."""
        if not 0 <= device_index < self.cfg.n_devices:
            raise NetError(
                f"device_index must be in 0..{self.cfg.n_devices - 1}, got {device_index}"
            )
        tr = self.up_traces[0] if len(self.up_traces) == 1 else self.up_traces[device_index]
        return float(tr.capacity_at(max(t_trace, 0.0)))

    def capacity_mean(self, device_index: int, t0: float, t1: float) -> float:
        """Mean uplink capacity (goodput bit/s) of a device over trace time ``[t0, t1)``."""
        self.capacity_at(device_index, t0)  # validates the index
        tr = self.up_traces[0] if len(self.up_traces) == 1 else self.up_traces[device_index]
        return float(tr.bytes_between(t0, t1)) * 8.0 / (t1 - t0)

    def link_rows(self) -> list[dict[str, Any]]:
        """Per ``sample_s`` window and shaped class: ``t_s, device, direction, capacity_mbps,
        goodput_mbps, wire_mbps`` (device ``-1`` is a shared cell's total)."""
        return list(self._result().get("rows", []))

    def shaper_stats(self) -> dict[str, Any]:
        """``changes``, ``lag_ms`` (median/p95/max), ``call_ms``, ``realtime``, ``errors``."""
        res = dict(self._result())
        res.pop("rows", None)
        res.pop("lags_ms", None)
        res["delay_method"] = self.delay_method
        res["queue_bytes"] = self.queue_bytes
        if self._cpu is not None:
            res["cpu_busy"] = [round(b, 3) for b in self._cpu.busy]
            res["cpu_saturated_windows"] = self._cpu.saturated()
        return res

    def elapsed(self) -> float:
        """Trace time now (seconds since ``t0``), NaN before :meth:`start_shaping`."""
        return math.nan if self._t0 is None else time.monotonic() - self._t0

    def host_pid_alive(self) -> bool:
        return self.mec is not None and proc_start_time(self.mec.pid) is not None
