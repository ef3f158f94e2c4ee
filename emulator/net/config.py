"""What a run of the emulated network looks like: :class:`NetConfig`, names and sizes.

Names. Everything a run creates carries its run id (``[a-z][a-z0-9]{0,5}``, generated as
``e`` + 4 hex digits), so interface names stay <= 15 characters and cleanup can remove exactly
what one run made: hosts ``<id>d<i>`` and ``<id>m``, the access-point bridge ``<id>ap``, the
IFBs ``<id>iu``/``<id>id`` and the delay relay's TAPs ``<id>ta``/``<id>tm``.

Rates. A trace gives capacity as application goodput (what the simulator's
``Trace.finish_time`` assumes). HTB counts whole Ethernet frames, so by default the shaper sets
``rate = capacity / PAYLOAD_FRACTION`` (1448 payload bytes of TCP/IPv4 with timestamps per
1514-byte frame): a saturating TCP flow then delivers the trace's capacity to the application.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

from agent.wire import PAYLOAD_FRACTION  # the one owner of the wire-bytes rule
from emulator.net.errors import NetError
from traces import Trace

__all__ = [
    "DEFAULT_QUEUE_BYTES",
    "MIN_RATE_BPS",
    "OUTAGE_BELOW_BPS",
    "PAYLOAD_FRACTION",
    "NetConfig",
    "new_run_id",
]

#: HTB needs a positive rate: the lowest rate ever given to an HTB class (bit/s)
MIN_RATE_BPS: float = 8_000.0
#: capacity below this (bit/s) is an outage: the class's TBF gate closes (see shaper)
OUTAGE_BELOW_BPS: float = 100_000.0
#: bounded leaf queue (bfifo) when NetConfig.queue_bytes is None and 2 x BDP is smaller
DEFAULT_QUEUE_BYTES: int = 150_000

_RUN_ID = re.compile(r"^[a-z][a-z0-9]{0,5}$")


def new_run_id() -> str:
    """A fresh run id: ``e`` followed by 4 random hex digits."""
    return "e" + secrets.token_hex(2)


@dataclass
class NetConfig:
    """The emulated network of one run.

    :param n_devices: device hosts (1-200).
    :param uplink: device->MEC capacity: one :class:`Trace` shared by all devices, or one per
        device. With ``shared_cell`` the first trace is the cell's capacity.
    :param downlink: MEC->device capacity, same shapes as ``uplink``; ``None`` leaves the
        downlink unshaped (veth line rate, not measured).
    :param shared_cell: one cell capacity (``uplink[0]``/``downlink[0]``) divided among the
        devices that are active (HTB parent class, one borrowing child per device).
    :param one_way_delay_s: propagation delay added in each direction (netem where the kernel
        has it, else the userspace TUN/TAP relay).
    :param queue_bytes: bounded queue (bytes, drop-tail) of each shaped class; ``None`` ->
        ``max(DEFAULT_QUEUE_BYTES, 2 x BDP)`` with BDP at the trace's 95th-percentile rate and
        an RTT of ``2 x one_way_delay_s``.
    :param run_id: short id used in every name; generated when ``None``.
    :param resample_s: traces with segments shorter than this are averaged onto this grid before
        live replay (bytes per bin preserved); HTB cannot follow per-millisecond Mahimahi
        delivery opportunities. ``None`` replays segments as they are.
    :param compensate_overhead: shape at ``capacity / PAYLOAD_FRACTION`` so application goodput
        matches the trace (default); ``False`` shapes wire bytes at the trace's rate.
    :param burst_s: HTB burst/cburst as seconds at the current rate (no floor of frames),
        recomputed at every rate change.
    :param sample_s: measurement interval of :meth:`EmulatedNetwork.link_rows`.
    :param outage_below_bps: capacity below this is treated as an outage (less than one
        1514-byte frame per 0.12 s at the default): the link's TBF gate closes (~1 KB/s)
        instead of HTB running at a near-zero rate, whose per-packet token debt (1514 B at
        8 kbit/s = 1.5 s) would stall the link long after capacity returns.
    :param realtime: run the shaper and the delay relay with SCHED_FIFO when allowed.
    """

    n_devices: int = 1
    uplink: Trace | list[Trace] = field(default_factory=list)
    downlink: Trace | list[Trace] | None = None
    shared_cell: bool = False
    one_way_delay_s: float = 0.0
    queue_bytes: int | None = None
    run_id: str | None = None
    resample_s: float | None = 0.1
    compensate_overhead: bool = True
    burst_s: float = 0.004
    sample_s: float = 1.0
    realtime: bool = True
    outage_below_bps: float = OUTAGE_BELOW_BPS

    def validate(self) -> None:
        """Raise :class:`NetError` naming the first bad field and a valid value."""
        if not 1 <= self.n_devices <= 200:
            raise NetError(f"NetConfig.n_devices must be in 1..200, got {self.n_devices!r}")
        self.uplink_traces()
        self.downlink_traces()
        if not 0.0 <= self.one_way_delay_s <= 5.0:
            raise NetError(
                f"NetConfig.one_way_delay_s must be in [0, 5] seconds, got {self.one_way_delay_s!r}"
            )
        if self.queue_bytes is not None and self.queue_bytes < 3028:
            raise NetError(
                f"NetConfig.queue_bytes must be >= 3028 (two frames), got {self.queue_bytes!r}"
            )
        if self.run_id is not None and not _RUN_ID.match(self.run_id):
            raise NetError(
                f"NetConfig.run_id must match [a-z][a-z0-9]{{0,5}} (interface names <= 15 "
                f"chars), got {self.run_id!r}"
            )
        if self.resample_s is not None and not 0.001 <= self.resample_s <= 10.0:
            raise NetError(
                f"NetConfig.resample_s must be in [0.001, 10] s, got {self.resample_s!r}"
            )
        if not 0.0 < self.burst_s <= 1.0:
            raise NetError(f"NetConfig.burst_s must be in (0, 1] s, got {self.burst_s!r}")
        if not 0.0 <= self.outage_below_bps <= 10e6:
            raise NetError(
                f"NetConfig.outage_below_bps must be in [0, 1e7], got {self.outage_below_bps!r}"
            )
        if not 0.01 <= self.sample_s <= 60.0:
            raise NetError(f"NetConfig.sample_s must be in [0.01, 60] s, got {self.sample_s!r}")

    def _traces(self, value: Trace | list[Trace] | None, what: str) -> list[Trace]:
        if value is None:
            return []
        items = [value] if isinstance(value, Trace) else list(value)
        if not items:
            raise NetError(f"NetConfig.{what} needs at least one Trace (traces.load_trace(...))")
        for tr in items:
            if not isinstance(tr, Trace):
                raise NetError(f"NetConfig.{what} must hold traces.Trace objects, got {tr!r}")
        if self.shared_cell:
            if len(items) != 1:
                raise NetError(
                    f"NetConfig.{what}: a shared cell has one capacity trace, got {len(items)}"
                )
        elif len(items) not in (1, self.n_devices):
            raise NetError(
                f"NetConfig.{what}: give one trace or one per device ({self.n_devices}), "
                f"got {len(items)}"
            )
        return items

    def uplink_traces(self) -> list[Trace]:
        """Uplink traces as given: one (shared by all / cell) or one per device."""
        return self._traces(self.uplink, "uplink")

    def downlink_traces(self) -> list[Trace]:
        """Downlink traces as given (empty when the downlink is unshaped)."""
        return self._traces(self.downlink, "downlink")
