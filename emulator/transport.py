"""What device and MEC share to run a plan: an inbox of items and an ordered sender.

A plan (:mod:`agent.plan`) names every piece of data a request moves as an *item* (an
integer). Each side keeps an :class:`Inbox`: when each item became available there (made by a
local computation, or its last byte received), and, in execute mode, its tensors. A
computation waits in :meth:`Inbox.wait` until everything it needs is there.

Sends are asynchronous, as the plan says: the side that made an item hands the message to its
:class:`Sender` and goes on computing (the MEC keeps running the loop while tokens stream);
one thread per connection writes the queued messages in order, so each direction of the link
is a FIFO, as the simulator models it. The time a message's first byte was written is
recorded (``t_start`` of the send).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from emulator.errors import ProtocolError
from emulator.protocol import Message, send_message

__all__ = ["Inbox", "Sender", "stamp_into"]


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
        with self._cv:
            while True:
                if self._error is not None:
                    raise ProtocolError(self._error)
                missing = [it for it in need if it not in self._t]
                if not missing:
                    return max((self._t[it] for it in need), default=default)
                heard = max(start, last_heard()) if last_heard is not None else start
                left = heard + timeout_s - time.monotonic()
                if left <= 0:
                    raise ProtocolError(f"items {missing} did not arrive within {timeout_s:g} s "
                                        "of silence")
                self._cv.wait(min(left, 1.0))


class Sender:
    """One thread that writes queued messages to a socket in order (a FIFO per direction).

    ``lock`` serialises with other writers of the same socket (e.g. replies sent directly)."""

    def __init__(self, sock: socket.socket, lock: threading.Lock | None = None,
                 name: str = "sender") -> None:
        self.sock = sock
        self.lock = lock or threading.Lock()
        self._q: queue.SimpleQueue[tuple[Message, Callable[[float], None] | None] | None] = \
            queue.SimpleQueue()
        self.error: str | None = None
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def send(self, msg: Message, on_start: Callable[[float], None] | None = None) -> None:
        """Queue ``msg``; ``on_start(t)`` is called with the time its writing began."""
        if self.error is not None:
            raise ProtocolError(self.error)
        self._q.put((msg, on_start))

    def _loop(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            msg, on_start = job
            try:
                with self.lock:
                    if on_start is not None:
                        on_start(time.monotonic())
                    send_message(self.sock, msg)
            except (OSError, ProtocolError) as e:
                self.error = f"sending {msg.type.name} failed: {e}"
                return

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop after the queued messages are written (or ``timeout_s``)."""
        self._q.put(None)
        with contextlib.suppress(RuntimeError):
            self._thread.join(timeout_s)
