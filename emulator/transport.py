"""What device and MEC share to run a plan: an inbox of items and an ordered sender.

A plan (:mod:`agent.plan`) names every piece of data a request moves as an *item* (an
integer). Each side keeps an :class:`Inbox`: when each item became available there (made by a
local computation, or its last byte received), and, in execute mode, its tensors. A
computation waits in :meth:`Inbox.wait` until everything it needs is there.

Sends are asynchronous, as the plan says: the side that made an item hands the message to its
:class:`Sender` and goes on computing (the MEC keeps running the loop while tokens stream);
one thread per connection writes the queued messages in order, so each direction of the link
is a FIFO, as the simulator models it. A small message (one write) sent while nothing is queued
or being written is written at once by the caller, without blocking (whatever the socket does
not take goes to the thread, in order): handing it to the thread cost ~0.5 ms (a wake-up and
the GIL) on every token, measured at 64 devices as the median lag from a token's computation
to its write. The time a message's first byte was written is recorded (``t_start`` of the
send).

High-rate mode (payload scaling): with a payload scale ``f < 1`` (``emulator.run`` picks it
when a trace's peak exceeds what this machine can shape, and passes it to every device and MEC
process in the environment variable :data:`PAYLOAD_SCALE_ENV`), the sender writes only
``ceil(f x n)`` bytes of every ``DATA`` or ``ECHO`` payload of ``n`` zero bytes, while the link
is shaped at ``f`` times the trace: each transfer takes ``8 n / R`` seconds as at the trace's
rate ``R``. Everything recorded stays in real bytes (the plan's sizes; a probe counts its
real length). Payloads that carry real tensors (execute mode, ``meta["tensors"]``) are never
scaled. What is not scaled: the message framing (header and JSON metadata, ~100 bytes), TCP/IP
headers (66 bytes per segment) and ACKs, which therefore take ``1/f`` times longer on the wire
than at the trace's rate; the number of segments per transfer, and so TCP's slow start
(counted in segments), per-packet processing and the shaper's queue (in bytes) are those of
the scaled transfer.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from emulator.errors import ProtocolError
from emulator.protocol import Message, MsgType, encode_message, is_small, send_message

__all__ = ["PAYLOAD_SCALE_ENV", "Inbox", "Sender", "payload_scale_from_env", "stamp_into",
           "wire_payload"]

PAYLOAD_SCALE_ENV = "AIGC_EMU_PAYLOAD_SCALE"
"""Environment variable with the run's payload scale (high-rate mode; absent: 1)."""

_SCALED = (MsgType.DATA, MsgType.ECHO)


def payload_scale_from_env() -> float:
    """The payload scale given in :data:`PAYLOAD_SCALE_ENV` (1 when absent)."""
    raw = os.environ.get(PAYLOAD_SCALE_ENV)
    if not raw:
        return 1.0
    try:
        f = float(raw)
    except ValueError:
        f = math.nan
    if not 0.0 < f <= 1.0:
        raise ProtocolError(f"{PAYLOAD_SCALE_ENV}={raw!r}: expected a number in (0, 1]")
    return f


def wire_payload(msg: Message, scale: float) -> Message:
    """``msg`` as written in high-rate mode: a DATA or ECHO payload of zeros cut to
    ``ceil(scale x n)`` bytes (at least 1 when ``n > 0``); anything else unchanged."""
    view = memoryview(msg.payload).cast("B")
    n = view.nbytes
    if scale >= 1.0 or n == 0 or msg.type not in _SCALED or "tensors" in msg.meta:
        return msg
    k = max(1, math.ceil(scale * n))
    return Message(msg.type, msg.request_id, msg.pass_index, msg.repetition, msg.block_lo,
                   msg.block_hi, msg.meta, view[:k])


def stamp_into(row: dict[str, Any], key: str = "t_start") -> Callable[[float], None]:
    """An ``on_start`` callback for :meth:`Sender.send` that stores the time in ``row[key]``."""

    def _set(t: float) -> None:
        row[key] = t

    return _set


class Inbox:
    """Items present on one side of one request: arrival times and optional payloads."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._t: dict[int, float] = {}
        self._data: dict[int, Any] = {}
        self._error: str | None = None

    def put(self, items: Iterable[int], t: float, data: Any = None) -> None:
        """Items are here since ``t`` (``time.monotonic()``); ``data`` kept for each if given."""
        with self._cv:
            for it in items:
                if it not in self._t:
                    self._t[it] = t
                if data is not None:
                    self._data[it] = data
            self._cv.notify_all()

    def fail(self, message: str) -> None:
        """Wake every waiter with an error (the connection broke, the peer reported one)."""
        with self._cv:
            self._error = message
            self._cv.notify_all()

    def time(self, item: int) -> float | None:
        with self._cv:
            return self._t.get(item)

    def data(self, item: int) -> Any:
        with self._cv:
            return self._data.get(item)

    def wait(self, items: Iterable[int], timeout_s: float, default: float,
             last_heard: Callable[[], float] | None = None) -> float:
        """Block until every item is here; returns the latest arrival time (``default`` when
        ``items`` is empty). Raises :class:`ProtocolError` on :meth:`fail` or when nothing was
        heard for ``timeout_s`` seconds (``last_heard()``: when the peer last sent a byte, so
        a long transfer in progress keeps the wait alive)."""
        need = tuple(items)
        start = time.monotonic()

        def left() -> float:
            heard = max(start, last_heard()) if last_heard is not None else start
            return heard + timeout_s - time.monotonic()

        got = self._wait(need, left)
        if got is None:
            missing = [it for it in need if self.time(it) is None]
            raise ProtocolError(f"items {missing} did not arrive within {timeout_s:g} s "
                                "of silence")
        return default if not need else got

    def wait_until(self, items: Iterable[int], deadline: float) -> float | None:
        """Block until every item is here (their latest arrival time) or until ``deadline``
        (``time.monotonic()``; ``None`` then). Raises :class:`ProtocolError` on :meth:`fail`."""
        return self._wait(tuple(items), lambda: deadline - time.monotonic())

    def _wait(self, need: tuple[int, ...], left: Callable[[], float]) -> float | None:
        """The latest arrival of ``need`` once all are here (``-inf`` for none), ``None`` when
        ``left()`` (seconds still to wait) runs out first; raises on :meth:`fail`."""
        with self._cv:
            while True:
                if self._error is not None:
                    raise ProtocolError(self._error)
                if all(it in self._t for it in need):
                    return max((self._t[it] for it in need), default=-math.inf)
                rem = left()
                if rem <= 0:
                    return None
                self._cv.wait(min(rem, 1.0))


class Sender:
    """One thread that writes queued messages to a socket in order (a FIFO per direction).

    ``lock`` serialises with other writers of the same socket (e.g. replies sent directly).
    ``payload_scale``: high-rate mode's factor (see the module docstring); default: from the
    environment (:func:`payload_scale_from_env`)."""

    def __init__(self, sock: socket.socket, lock: threading.Lock | None = None,
                 name: str = "sender", payload_scale: float | None = None,
                 direct: bool = True) -> None:
        self.sock = sock
        self.payload_scale = payload_scale_from_env() if payload_scale is None else payload_scale
        self.lock = lock or threading.Lock()
        self.direct = direct
        self._q: queue.SimpleQueue[tuple[Message | bytes, Callable[[float], None] | None]
                                   | None] = queue.SimpleQueue()
        self._state = threading.Lock()
        self._busy = 0  # jobs queued or being written by the thread
        self.error: str | None = None
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def send(self, msg: Message, on_start: Callable[[float], None] | None = None) -> None:
        """Send ``msg`` after the earlier ones; ``on_start(t)`` is called with the time its
        writing began (before it is encoded: it may still fill the message in)."""
        if self.error is not None:
            raise ProtocolError(self.error)
        with self._state:
            if self._busy == 0 and self.direct and is_small(msg) \
                    and self.lock.acquire(blocking=False):
                try:
                    rest = self._write_now(msg, on_start)
                finally:
                    self.lock.release()
                if not rest:
                    return
                job: tuple[Message | bytes, Callable[[float], None] | None] = (rest, None)
            else:
                job = (msg, on_start)
            self._busy += 1
            self._q.put(job)

    def _write_now(self, msg: Message, on_start: Callable[[float], None] | None) -> bytes:
        """Write ``msg`` without blocking; returns what the socket did not take."""
        if on_start is not None:
            on_start(time.monotonic())
        frame = encode_message(wire_payload(msg, self.payload_scale))
        try:
            n = self.sock.send(frame, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as e:
            self.error = f"sending {msg.type.name} failed: {e}"
            raise ProtocolError(self.error) from None
        return frame[n:]

    def _loop(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            msg, on_start = job
            try:
                with self.lock:
                    if isinstance(msg, bytes):  # the rest of a message written at once
                        self.sock.sendall(msg)
                    else:
                        if on_start is not None:
                            on_start(time.monotonic())
                        send_message(self.sock, wire_payload(msg, self.payload_scale))
            except (OSError, ProtocolError) as e:
                what = "a message" if isinstance(msg, bytes) else msg.type.name
                self.error = f"sending {what} failed: {e}"
                return
            finally:
                with self._state:
                    self._busy -= 1

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop after the queued messages are written (or ``timeout_s``)."""
        self._q.put(None)
        with contextlib.suppress(RuntimeError):
            self._thread.join(timeout_s)
