"""What a TCP socket has sent, from the kernel's ``TCP_INFO`` (Linux).

The simulator prices the messages of a plan; a real connection also carries what no plan step
holds: the pure ACKs a device sends for every segment it receives (a GPT-2 request's tokens
arrive as ~33 small segments), and the control messages around a request (``ECHO``, ``PLAN``,
``RELEASE``). On a cell shared by many devices that traffic takes a share of the uplink (measured
at 64 devices: ~20 KB/s of a 1.5-4 Mbit/s uplink in steady state). :func:`sent` reads the
counters a device records per request so that a replay can count it (:mod:`emulator.parity`).

Offsets of ``struct tcp_info`` (``include/uapi/linux/tcp.h``): ``tcpi_segs_out`` at 136 (every
segment sent, pure ACKs included), ``tcpi_data_segs_out`` at 156, ``tcpi_bytes_sent`` at 200
(payload bytes, retransmissions included; Linux >= 4.19).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

__all__ = ["SentSince", "TcpSent", "sent"]

_LEN = 208


@dataclass(frozen=True)
class TcpSent:
    """Cumulative counters of one socket: segments (pure ACKs included), data segments and
    payload bytes sent."""

    segments: int
    data_segments: int
    payload_bytes: int

    def since(self, before: TcpSent) -> dict[str, int]:
        """The counters' growth since ``before``, as a record field."""
        return {"segments": self.segments - before.segments,
                "data_segments": self.data_segments - before.data_segments,
                "payload_bytes": self.payload_bytes - before.payload_bytes}


def sent(sock: socket.socket) -> TcpSent | None:
    """The socket's counters, or ``None`` where the kernel does not give them (not Linux, an
    old kernel, a closed socket)."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _LEN)
    except (OSError, AttributeError):
        return None
    if len(raw) < _LEN:
        return None
    segs_out, = struct.unpack_from("I", raw, 136)
    data_segs_out, = struct.unpack_from("I", raw, 156)
    bytes_sent, = struct.unpack_from("Q", raw, 200)
    return TcpSent(int(segs_out), int(data_segs_out), int(bytes_sent))


class SentSince:
    """What a socket sent since the previous :meth:`take` (or since it was made)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._last = sent(sock)

    def take(self) -> dict[str, int] | None:
        """The counters' growth since the previous call (:meth:`TcpSent.since`); ``None``
        where the kernel gives no counters."""
        now = sent(self.sock)
        before, self._last = self._last, now
        return None if now is None or before is None else now.since(before)
