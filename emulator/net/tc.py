"""Traffic-control plumbing: HTB setup with ``tc -batch``, in-place rate changes over netlink.

Setup (once per run) feeds ``tc -batch -`` the qdiscs, classes, bfifo leaves and u32/mirred
filters; pyroute2 0.9 has no bfifo plugin and sends a bfifo qdisc to the root, so the CLI is
the reliable path for the static part. The live path, :class:`HtbRateSetter`, encodes an
``RTM_NEWTCLASS`` change with pyroute2's own HTB class encoder (``tc('change-class', 'htb',
...)`` builds the same message) and sends it on a dedicated netlink socket, without pyroute2's
asyncio round trip: ~0.6 ms instead of ~1.3-2 ms per change on the 2-core reference machine.
The class handle is unchanged by a change; the qdisc is never recreated. Class byte counters:
:class:`ClassCounter` (a raw dump, what the shaper samples with) or pyroute2's ``get_classes``
(:func:`class_bytes`).
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
from collections.abc import Iterator
from typing import Any, Self

from pyroute2 import IPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR
from pyroute2.netlink.rtnl import RTM_NEWQDISC, RTM_NEWTCLASS
from pyroute2.netlink.rtnl.tcmsg import plugins as _tc_plugins
from pyroute2.netlink.rtnl.tcmsg import tcmsg

from emulator.net.errors import NetError

__all__ = ["FRAME_BYTES", "ClassCounter", "HtbRateSetter", "burst_bytes", "class_bytes", "handle",
           "tc_batch"]

#: largest Ethernet frame HTB sees with gso_max_segs 1 (1500 MTU + 14 header)
FRAME_BYTES: int = 1514


def handle(major: int, minor: int) -> int:
    """A tc handle ``major:minor`` as the kernel's 32-bit integer."""
    return (major << 16) | minor


def burst_bytes(rate_Bps: float, burst_s: float) -> int:
    """HTB burst for a rate: ``burst_s`` seconds of it (at least one byte).

    No floor of whole frames: HTB sends a frame whenever its tokens are >= 0 and lets them go
    negative, so a bucket below one frame still passes full frames at the rate, and the bucket
    is exactly the credit an idle class gets for a short message, which the simulator's fluid
    link does not give. A floor of two frames (the former rule) was 42 ms of credit at
    0.58 Mbit/s: 3 KB messages after a pause arrived 22 ms (median) earlier than the trace
    allows below 1 Mbit/s, 8 ms at 1-2 Mbit/s (execute-mode parity run, T-Mobile LTE trace)."""
    return max(1, int(rate_Bps * burst_s))


def tc_batch(lines: list[str], *, mnexec_pid: int | None = None) -> None:
    """Run ``tc -batch -`` with ``lines`` (inside a host's namespace when ``mnexec_pid``).

    :raises NetError: tc failed; the message holds tc's first error line and the command.
    """
    argv = ["tc", "-batch", "-"]
    if mnexec_pid is not None:
        argv = ["mnexec", "-a", str(mnexec_pid), *argv]
    try:
        res = subprocess.run(
            argv, input="\n".join(lines) + "\n", capture_output=True, text=True, check=False
        )
    except FileNotFoundError as exc:
        raise NetError(f"{argv[0]} not found: apt-get install iproute2 mininet") from exc
    if res.returncode != 0:
        err = (res.stderr.strip().splitlines() or ["(no message)"])[0]
        raise NetError(
            f"tc setup failed: {err} (batch of {len(lines)} commands; first: {lines[0]!r}); "
            "check kernel support with: python -m emulator.doctor"
        )


def _tc_message(msg_type: int, kind: str, opts: Any, ifindex: int, handle_: int,
                parent: int) -> bytes:
    """One encoded ``RTM_NEW*`` change request (ack asked, sequence 0) for a qdisc or class."""
    msg = tcmsg()
    msg["family"] = 0
    msg["index"] = ifindex
    msg["handle"] = handle_
    msg["parent"] = parent
    msg["attrs"] = [["TCA_KIND", kind], ["TCA_OPTIONS", opts]]
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
    msg["header"]["sequence_number"] = 0
    msg.encode()
    return bytes(msg.data)


_TCA_OPTIONS = 2
_TCA_TBF_BURST = 6


_NLA_TYPE_MASK = 0x3FFF


def _attributes(data: bytes | bytearray, lo: int, hi: int) -> Iterator[tuple[int, int, int]]:
    """(type, offset, length) of each netlink attribute in ``data[lo:hi]`` (stops at a
    malformed one)."""
    while lo + 4 <= hi:
        alen, atype = struct.unpack_from("=HH", data, lo)
        if alen < 4:
            return
        yield atype & _NLA_TYPE_MASK, lo, alen
        lo += (alen + 3) & ~3


def _append_nla(message: bytes, container: int, nla_type: int, payload: bytes) -> bytes:
    """``message`` (one netlink message: header, tcmsg, attributes) with an attribute
    ``nla_type`` appended to the top-level nested attribute ``container``, which must be the
    last one (as :func:`_tc_message` writes ``TCA_OPTIONS``)."""
    data = bytearray(message)
    last = -1
    for t, off, _n in _attributes(data, 16 + 20, len(data)):  # after nlmsghdr + tcmsg
        last = off if t == container else -1
    assert last >= 0, "the container attribute must be the message's last one"
    nla = struct.pack("=HH", 4 + len(payload), nla_type) + payload
    nla += b"\0" * (-len(nla) % 4)
    (clen,) = struct.unpack_from("=H", data, last)
    pad = -clen % 4  # the container ended at its padded length
    struct.pack_into("=H", data, last, clen + pad + len(nla))
    data += nla
    struct.pack_into("=I", data, 0, len(data))
    return bytes(data)


class _Netlink:
    """A dedicated ``NETLINK_ROUTE`` socket with its own sequence numbers (a context manager)."""

    def __init__(self, seq: int = 0) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._seq = seq

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HtbRateSetter(_Netlink):
    """Changes the rate/ceil/burst of existing HTB classes in place over one netlink socket."""

    def __init__(self) -> None:
        super().__init__(seq=1000)
        self._htb: Any = _tc_plugins["htb"]
        self._tbf: Any = _tc_plugins["tbf"]

    def encode(
        self,
        ifindex: int,
        classid: int,
        parent: int,
        rate_Bps: int,
        ceil_Bps: int,
        burst: int,
        cburst: int,
        quantum: int = FRAME_BYTES,
    ) -> bytes:
        """The netlink message of ``tc class change dev IF parent P classid C htb rate ..
        ceil .. burst .. cburst .. quantum ..`` (built ahead of time, sent by :meth:`send`)."""
        opts = self._htb.get_class_parameters(
            {
                "rate": int(rate_Bps),
                "ceil": int(ceil_Bps),
                "burst": int(burst),
                "cburst": int(cburst),
                "quantum": int(quantum),
            }
        )
        # rate tables are legacy: the kernel derives timing from the rate itself
        opts["attrs"] = [a for a in opts["attrs"] if a[0] not in ("TCA_HTB_RTAB", "TCA_HTB_CTAB")]
        return _tc_message(RTM_NEWTCLASS, "htb", opts, ifindex, classid, parent)

    def encode_tbf(
        self, ifindex: int, qhandle: int, parent: int, rate_Bps: int, burst: int, limit: int
    ) -> bytes:
        """The netlink message of ``tc qdisc change dev IF parent P handle H tbf rate ..
        burst .. limit ..`` (the TBF keeps its inner bfifo and its backlog; its bucket refills).

        The bucket is also sent as ``TCA_TBF_BURST`` (bytes), as ``tc`` does: the kernel then
        derives the bucket's time from it in 64 bits. The legacy ``buffer`` field is 32-bit
        ticks, too small for a one-frame bucket at a rate of a few bytes per second (a closed
        gate); pyroute2 is given a bucket that fits and the kernel uses ``TCA_TBF_BURST``."""
        fits = min(int(burst), max(1, int(rate_Bps)))  # <= 1 s of the rate: fits 32-bit ticks
        opts = self._tbf.get_parameters(
            {"rate": int(rate_Bps), "burst": fits, "limit": int(limit)}
        )
        opts["attrs"] = [a for a in opts["attrs"] if a[0] != "TCA_TBF_RTAB"]
        msg = _tc_message(RTM_NEWQDISC, "tbf", opts, ifindex, qhandle, parent)
        return _append_nla(msg, _TCA_OPTIONS, _TCA_TBF_BURST, struct.pack("=I", int(burst)))

    def send(self, message: bytes) -> None:
        """Send an encoded change and wait for the kernel's ack.

        :raises NetError: the kernel refused (errno named).
        """
        self._seq += 1
        data = bytearray(message)
        struct.pack_into("=I", data, 8, self._seq)
        self._sock.send(data)
        while True:
            reply = self._sock.recv(65536)
            mtype, _flags, seq = struct.unpack_from("=HHI", reply, 4)
            if seq != self._seq:
                continue
            if mtype == NLMSG_ERROR:
                (err,) = struct.unpack_from("=i", reply, 16)
                if err != 0:
                    (handle_,) = struct.unpack_from("=I", data, 16 + 8)
                    raise NetError(
                        f"tc change of {handle_ >> 16:x}:{handle_ & 0xFFFF:x} failed: "
                        f"errno {-err} ({os.strerror(-err)})"
                    )
            return

    def change(self, *args: int) -> None:
        """:meth:`encode` then :meth:`send` (same arguments as :meth:`encode`)."""
        self.send(self.encode(*args))


_RTM_GETTCLASS = 42
_NLM_F_DUMP = 0x300
_NLMSG_DONE = 3
_TCA_STATS2 = 7
_TCA_STATS_BASIC = 1


class ClassCounter(_Netlink):
    """Reads every HTB class's byte counter of an interface with one netlink dump, parsing only
    the header and ``TCA_STATS2/TCA_STATS_BASIC`` (pyroute2's ``get_classes`` decodes every
    attribute of every class: ~22 ms median for the 130 classes of 64 devices on the 2-core
    reference machine, 46 ms at p95, which the shaper's sampler spent once a second). Same
    result as :func:`class_bytes` (tested)."""

    def read(self, ifindex: int) -> dict[int, int]:
        """Bytes sent so far by each class of ``ifindex`` (handle -> bytes)."""
        self._seq += 1
        body = struct.pack("=BxxxiIII", socket.AF_UNSPEC, ifindex, 0, 0, 0)
        self._sock.send(struct.pack("=IHHII", 16 + len(body), _RTM_GETTCLASS,
                                    NLM_F_REQUEST | _NLM_F_DUMP, self._seq, 0) + body)
        out: dict[int, int] = {}
        while True:
            data = self._sock.recv(1 << 16)
            off = 0
            while off + 16 <= len(data):
                length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", data, off)
                if length < 16:
                    raise NetError("netlink: a malformed class dump reply")
                if seq == self._seq:
                    if kind == _NLMSG_DONE:
                        return out
                    if kind == NLMSG_ERROR:
                        code, = struct.unpack_from("=i", data, off + 16)
                        raise NetError(f"netlink class dump of ifindex {ifindex} failed: "
                                       f"{os.strerror(-code)}")
                    if kind == RTM_NEWTCLASS:
                        _fam, idx, hdl = struct.unpack_from("=BxxxiI", data, off + 16)
                        n = _basic_bytes(data, off + 36, off + length)
                        if idx == ifindex and n is not None:
                            out[hdl] = n
                off += (length + 3) & ~3


def _basic_bytes(data: bytes, lo: int, hi: int) -> int | None:
    """``bytes`` of ``TCA_STATS2 / TCA_STATS_BASIC`` in the attributes ``data[lo:hi]``."""
    for atype, off, alen in _attributes(data, lo, hi):
        if atype == _TCA_STATS2:
            for btype, sub, blen in _attributes(data, off + 4, off + alen):
                if btype == _TCA_STATS_BASIC and blen >= 12:
                    return int(struct.unpack_from("=Q", data, sub + 4)[0])
            return None
    return None


def class_bytes(ipr: IPRoute, ifindex: int) -> dict[int, int]:
    """Bytes sent so far by each HTB class of ``ifindex`` (handle -> bytes)."""
    out: dict[int, int] = {}
    for msg in ipr.get_classes(ifindex):
        stats = msg.get_attr("TCA_STATS2")
        basic = stats.get_attr("TCA_STATS_BASIC") if stats is not None else None
        if basic is not None:
            out[int(msg["handle"])] = int(basic["bytes"])
    return out
