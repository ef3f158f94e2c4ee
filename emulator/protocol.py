"""The wire protocol between a device and the MEC: framed binary messages over TCP.

Every message is a fixed 38-byte header, then ``meta_len`` bytes of UTF-8 JSON metadata (small:
control fields, timestamps, queue state, tensor descriptions; at most :data:`MAX_META` bytes),
then ``payload_len`` raw bytes (tensor data, at most the receiver's ``max_payload``). Nothing is
pickled. Header fields, network byte order (``struct`` format :data:`HEADER_FORMAT`)::

    magic        4s  b"AIGE"
    version      B   PROTOCOL_VERSION (a receiver rejects any other)
    type         B   a MsgType
    flags        H   reserved, 0
    request_id   Q   the device's request number (0 for control messages)
    pass_index   H   index of the pass in the profile (informational in DATA)
    repetition   I   repetition of the pass within the request (decode token, diffusion step)
    block_lo     H   first block of a range (block_lo <= block_hi; informational)
    block_hi     H   one past the last block
    meta_len     I   bytes of JSON metadata that follow
    payload_len  Q   bytes of raw payload after the metadata

Message flow: a device opens one connection, sends ``HELLO`` and gets ``WELCOME``; then per
request ``ECHO`` (optional probe payload) -> ``ECHO_REPLY``. A request that computes anything on
the MEC then runs its plan (:mod:`agent.plan`): the device sends ``PLAN`` (the decision and the
workload; both sides build the same plan from them) and both sides send ``DATA`` messages, one
per send step of the plan (``meta``: ``step`` index and ``items``; the payload is the items'
bytes), whenever the plan says: the device the prompt, cuts and state going up; the MEC every
streamed token, cut, state or output coming down, without waiting for the device. After its
last step the MEC sends ``REPORT`` (its own step timings and when each uplink item arrived);
the device ends the request with ``RELEASE`` (no reply). Every reply from the MEC carries its
queue state (:class:`QueueState`) in the metadata under ``"queue"``. ``QUEUE`` asks for it
alone. ``ERROR`` carries ``{"message": ...}``; ``BYE`` closes. Every socket sets
``TCP_NODELAY``.

Timestamps in metadata are ``time.monotonic()`` seconds. Device and MEC processes of one run
live on one machine (Mininet hosts share the kernel's monotonic clock), so the device can
subtract the MEC's stamps from its own.
"""

from __future__ import annotations

import enum
import json
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent import wire
from emulator.errors import ProtocolError

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "HEADER_FORMAT",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_META",
    "PROTOCOL_VERSION",
    "Budget",
    "Message",
    "MsgType",
    "PayloadBuffer",
    "QueueState",
    "RxClock",
    "configure_socket",
    "connect",
    "decode_header",
    "encode_header",
    "encode_message",
    "is_small",
    "recv_message",
    "send_message",
]

MAGIC = b"AIGE"
PROTOCOL_VERSION = 2
HEADER_FORMAT = "!4sBBHQHIHHIQ"
HEADER_SIZE = struct.calcsize(HEADER_FORMAT)
assert HEADER_SIZE == wire.HEADER_BYTES, "agent.wire prices the header this module writes"
_ONE_WRITE = 64 * 1024
"""Payloads up to this size go out in one write with their header (copied once)."""
MAX_META = 64 * 1024
"""Largest metadata block accepted (bytes)."""
DEFAULT_MAX_PAYLOAD = 1 << 30
"""Largest payload accepted unless the receiver says otherwise (1 GiB: SD VAE cuts reach 256 MB)."""
_SOCK_BUF = 4 << 20
_GROW_STEP = 1 << 20
"""A receive buffer grows at most by this much beyond the bytes that have arrived."""
_DISCARD_CHUNK = 1 << 16


class MsgType(enum.IntEnum):
    """Message types."""

    HELLO = 1
    WELCOME = 2
    ECHO = 3
    ECHO_REPLY = 4
    QUEUE = 7
    QUEUE_REPLY = 8
    ERROR = 9
    BYE = 10
    RELEASE = 11
    PLAN = 12
    DATA = 13
    REPORT = 14


@dataclass(frozen=True)
class QueueState:
    """What the MEC reports about its shared FIFO queue."""

    queue_len: int
    """Requests (sessions) waiting for a slot, not counting those holding one."""
    busy_slots: int
    slots: int
    expected_wait_s: float
    """How long a request arriving now would wait for a slot (the MEC's estimate)."""
    active: int | None = None
    """Batching MEC only (``None`` with slots): sessions in the batch (``busy_slots`` too;
    ``slots`` is then the maximum batch)."""
    memory_headroom_bytes: float | None = None
    """Batching MEC: memory left after weights and live state (-1: no budget)."""
    iteration_s: float | None = None
    """Batching MEC: predicted time of the next iteration with one more session."""

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"queue_len": self.queue_len, "busy_slots": self.busy_slots,
                             "slots": self.slots, "expected_wait_s": self.expected_wait_s}
        if self.active is not None:
            d.update(active=self.active, memory_headroom_bytes=self.memory_headroom_bytes,
                     iteration_s=self.iteration_s)
        return d

    @classmethod
    def from_json(cls, d: Any) -> QueueState:
        try:
            extra: dict[str, Any] = {}
            if "active" in d:
                extra = {"active": int(d["active"]),
                         "memory_headroom_bytes": float(d["memory_headroom_bytes"]),
                         "iteration_s": float(d["iteration_s"])}
            return cls(queue_len=int(d["queue_len"]), busy_slots=int(d["busy_slots"]),
                       slots=int(d["slots"]), expected_wait_s=float(d["expected_wait_s"]),
                       **extra)
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"malformed queue state in message metadata: {d!r}") from e


@dataclass
class Message:
    """One framed message. ``payload`` is raw bytes (a memoryview when sent from a buffer)."""

    type: MsgType
    request_id: int = 0
    pass_index: int = 0
    repetition: int = 0
    block_lo: int = 0
    block_hi: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    payload: bytes | bytearray | memoryview = b""
    payload_size: int = 0
    """Payload bytes received (set by :func:`recv_message`, also when the payload was dropped)."""


class PayloadBuffer:
    """A reusable receive buffer that grows as payload bytes *arrive* (never to a length a
    header merely claims), to the largest payload seen, so multi-megabyte activations are not
    re-allocated per message. With a :class:`Budget` every byte it holds is accounted for.
    A view it returned is valid until the next message is received into it."""

    def __init__(self, size: int = 0, budget: Budget | None = None) -> None:
        self._budget = budget
        if budget is not None and size:
            budget.acquire(size)
        self._buf = bytearray(size)

    @property
    def capacity(self) -> int:
        return len(self._buf)

    def reserve(self, n: int, keep: int) -> memoryview:
        """A view of at least ``n`` bytes whose first ``keep`` bytes are kept."""
        if n > len(self._buf):
            new = max(n, min(2 * len(self._buf), n + _GROW_STEP))
            if self._budget is not None:
                self._budget.acquire(new - len(self._buf))
            grown = bytearray(new)
            grown[:keep] = self._buf[:keep]
            self._buf = grown
        return memoryview(self._buf)

    def view(self, n: int) -> memoryview:
        """A view of ``n`` bytes (the buffer grows to ``n`` at once: for senders)."""
        return self.reserve(n, 0)[:n]

    def free(self) -> None:
        """Drop the buffer (and its share of the budget)."""
        if self._budget is not None:
            self._budget.release(len(self._buf))
        self._buf = bytearray()


class Budget(Protocol):
    """Accounts receive-buffer bytes across connections (see :class:`emulator.guard.MemoryBudget`)."""

    def acquire(self, n: int) -> None: ...

    def release(self, n: int) -> None: ...


class RxClock:
    """When a connection last received a byte (``time.monotonic()``); updated per ``recv``."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def get(self) -> float:
        return self.last


def encode_header(msg: Message, meta_len: int, payload_len: int) -> bytes:
    """Pack the fixed header of ``msg``; raises :class:`ProtocolError` on out-of-range fields."""
    if not 0 <= msg.block_lo <= msg.block_hi:
        raise ProtocolError(f"block range [{msg.block_lo}, {msg.block_hi}) is not valid")
    if meta_len > MAX_META:
        raise ProtocolError(f"metadata of {meta_len} bytes exceeds the {MAX_META}-byte bound")
    try:
        return struct.pack(HEADER_FORMAT, MAGIC, PROTOCOL_VERSION, int(msg.type), 0,
                           msg.request_id, msg.pass_index, msg.repetition, msg.block_lo,
                           msg.block_hi, meta_len, payload_len)
    except struct.error as e:
        raise ProtocolError(f"header field out of range: {e}") from e


def decode_header(buf: bytes, max_payload: int = DEFAULT_MAX_PAYLOAD) -> tuple[Message, int, int]:
    """Unpack and validate a header; returns (message without meta/payload, meta_len, payload_len)."""
    if len(buf) != HEADER_SIZE:
        raise ProtocolError(f"header must be {HEADER_SIZE} bytes, got {len(buf)}")
    (magic, version, mtype, _flags, rid, pidx, rep, lo, hi, meta_len,
     payload_len) = struct.unpack(HEADER_FORMAT, buf)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {magic!r} (expected {MAGIC!r}): the peer is not an "
                            "emulator process")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version} is not supported (this side speaks "
                            f"{PROTOCOL_VERSION}); run device and MEC from the same checkout")
    try:
        t = MsgType(mtype)
    except ValueError:
        raise ProtocolError(f"unknown message type {mtype}") from None
    if lo > hi:
        raise ProtocolError(f"block range [{lo}, {hi}) is not valid")
    if meta_len > MAX_META:
        raise ProtocolError(f"metadata of {meta_len} bytes exceeds the {MAX_META}-byte bound")
    if payload_len > max_payload:
        raise ProtocolError(f"payload of {payload_len} bytes exceeds the {max_payload}-byte bound")
    return Message(t, rid, pidx, rep, lo, hi), meta_len, payload_len


def configure_socket(sock: socket.socket, window_clamp: int = 0, congestion: str = "") -> None:
    """TCP_NODELAY (no Nagle stalls on small messages), large send/receive buffers and, when
    ``window_clamp > 0``, ``TCP_WINDOW_CLAMP``: the receive window this side advertises never
    exceeds that many bytes, so the peer never has more in flight. The ``run`` command sets it
    to 90 % of the shaped queue's size: a transfer then never overflows the bounded queue (no tail
    drop and 200 ms retransmission timeout), as the simulator's fluid model assumes, while a
    window of a full queue still covers the link's bandwidth-delay product.

    ``congestion``: the TCP congestion control of this socket (``TCP_CONGESTION``; empty: the
    namespace's default). The emulated network asks for cubic (:data:`emulator.net.topology.
    TCP_CC`) in every host, but a network namespace cannot make an algorithm its default
    unless the machine's ``net.ipv4.tcp_allowed_congestion_control`` lists it (on a machine
    with ``reno bbr`` there, the hosts kept BBR), while a process with CAP_NET_ADMIN may set
    any loaded algorithm on its own socket. BBR paces at its bandwidth estimate: after a slow
    stretch of the trace, 3 KB messages arrived 17 ms later than the link allowed for seconds
    (measured: execute-mode parity run on the T-Mobile LTE trace, ``ss`` showing ``bbr``,
    pacing 0.9-1.4 Mbit/s on a 2.8-7.8 Mbit/s link).

    :raises OSError: the kernel refused ``congestion`` (unknown, or not permitted)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCK_BUF)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCK_BUF)
    if window_clamp > 0:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_WINDOW_CLAMP, window_clamp)
    if congestion:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion.encode())


def connect(host: str, port: int, timeout_s: float = 10.0,
            window_clamp: int = 0, congestion: str = "") -> socket.socket:
    """Open a configured TCP connection (blocking mode after connect)."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as e:
        raise ProtocolError(f"cannot connect to the MEC at {host}:{port}: {e.strerror or e}") from e
    sock.settimeout(None)
    try:
        configure_socket(sock, window_clamp, congestion)
    except OSError as e:
        sock.close()
        raise ProtocolError(f"cannot configure the connection to {host}:{port} (TCP congestion "
                            f"control {congestion!r}?): {e.strerror or e}") from e
    return sock


def is_small(msg: Message) -> bool:
    """Whether ``msg`` goes out in one write (payload up to :data:`_ONE_WRITE` bytes)."""
    return memoryview(msg.payload).nbytes <= _ONE_WRITE


def _head_and_meta(msg: Message) -> tuple[bytes, memoryview]:
    """The header and JSON metadata of ``msg`` (one byte string) and its payload."""
    meta = json.dumps(msg.meta, separators=(",", ":")).encode() if msg.meta else b""
    payload = memoryview(msg.payload).cast("B")
    return encode_header(msg, len(meta), payload.nbytes) + meta, payload


def encode_message(msg: Message) -> bytes:
    """Header, metadata and payload of ``msg`` as one byte string (what one write sends)."""
    head, payload = _head_and_meta(msg)
    return head + payload


def send_message(sock: socket.socket, msg: Message) -> None:
    """Send header, metadata and payload: in one write up to :data:`_ONE_WRITE` payload
    bytes (a token and its framing in one segment, as :mod:`agent.wire` prices it; two writes
    with ``TCP_NODELAY`` put a small message in two segments, 66 more bytes of headers); a
    larger payload follows the header and metadata without a copy."""
    head, payload = _head_and_meta(msg)
    if is_small(msg):
        sock.sendall(head + payload)
        return
    sock.sendall(head)
    sock.sendall(payload)


def _recv_exact(sock: socket.socket, n: int, into: memoryview | None = None,
                clock: RxClock | None = None) -> memoryview:
    buf = into if into is not None else memoryview(bytearray(n))
    got = 0
    while got < n:
        r = sock.recv_into(buf[got:n], n - got)
        if r == 0:
            raise ProtocolError(f"connection closed by the peer after {got} of {n} bytes")
        got += r
        if clock is not None:
            clock.last = time.monotonic()
    return buf[:n]


def _recv_payload(sock: socket.socket, n: int, into: PayloadBuffer | None, discard: bool,
                  clock: RxClock | None) -> memoryview:
    """Receive ``n`` payload bytes; memory grows with the bytes that arrived, never ahead of
    them by more than one step. ``discard``: count them through a small scratch buffer."""
    if discard:
        scratch = memoryview(bytearray(min(n, _DISCARD_CHUNK)))
        got = 0
        while got < n:
            _recv_exact(sock, min(len(scratch), n - got), scratch, clock)
            got += min(len(scratch), n - got)
        return memoryview(b"")
    buf = into if into is not None else PayloadBuffer()
    got = 0
    while got < n:
        want = min(n, max(2 * got, got + _GROW_STEP))
        view = buf.reserve(want, got)
        _recv_exact(sock, want - got, view[got:want], clock)
        got = want
    return buf.reserve(n, n)[:n]


def recv_message(sock: socket.socket, max_payload: int = DEFAULT_MAX_PAYLOAD,
                 into: PayloadBuffer | None = None, discard_payload: bool = False,
                 clock: RxClock | None = None,
                 admit: Callable[[Message, int], None] | None = None) -> Message | None:
    """Receive one message; ``None`` when the peer closed cleanly between messages.

    With ``into`` the payload lands in that reusable buffer (the returned payload is then a view
    of it, valid until the next call with the same buffer); otherwise in a new bytearray. The
    buffer grows as bytes arrive, so a header that claims a large payload costs nothing until the
    bytes are there. ``discard_payload``: the payload is read and dropped (``payload`` is empty,
    ``payload_size`` says how much came). ``clock`` is updated whenever bytes arrive.
    ``admit(message, payload_len)`` sees the decoded header before any metadata or payload is
    read and may refuse the message by raising :class:`ProtocolError`.
    """
    head = bytearray(HEADER_SIZE)
    first = sock.recv_into(head, HEADER_SIZE)
    if first == 0:
        return None
    if clock is not None:
        clock.last = time.monotonic()
    if first < HEADER_SIZE:
        _recv_exact(sock, HEADER_SIZE - first, memoryview(head)[first:], clock)
    msg, meta_len, payload_len = decode_header(bytes(head), max_payload)
    if admit is not None:
        admit(msg, payload_len)
    if meta_len:
        raw = bytes(_recv_exact(sock, meta_len, clock=clock))
        try:
            meta = json.loads(raw)
        except (ValueError, RecursionError) as e:  # bad UTF-8, bad JSON, huge ints, deep nesting
            raise ProtocolError(f"metadata of a {msg.type.name} message is not valid JSON") from e
        if not isinstance(meta, dict):
            raise ProtocolError(f"metadata of a {msg.type.name} message must be a JSON object")
        msg.meta = meta
    if payload_len:
        msg.payload = _recv_payload(sock, payload_len, into, discard_payload, clock)
    msg.payload_size = payload_len
    return msg
