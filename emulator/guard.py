"""What the MEC server trusts and how much it lets a connection cost (see :mod:`emulator.mec`).

The MEC port is reachable by anything that can route to it, so the server assumes nothing of a
client until it has proved it is a device of this run:

- **Token.** ``emulator.run`` draws a random per-run token and gives it to the MEC and the device
  processes in the environment variable :data:`TOKEN_ENV` (not on the command line, where any
  local user could read it). A connection becomes a session only after a ``HELLO`` carrying it;
  anything else first gets an ``ERROR`` and the connection is closed.
- **Lengths.** A header's ``payload_len`` is a claim, not an allocation: receive buffers grow as
  bytes arrive (:class:`MemoryBudget` accounts for them across all connections), and lengths
  above what the run's plans can need (:func:`plan_max_payload`) are refused outright.
- **Declared values.** Nothing a device declares feeds the wait estimate every device sees: the
  MEC builds each session's plan itself and estimates its hold from the profiles.
- **Fields.** :func:`int_field` / :func:`float_field` turn a missing or mistyped metadata field
  into a :class:`~emulator.errors.ProtocolError` (an ``ERROR`` reply), never a traceback.
"""

from __future__ import annotations

import hmac
import math
import os
import secrets
import threading
from collections.abc import Mapping
from typing import Any

from emulator.errors import ProtocolError
from profiler.schema import Profile

__all__ = [
    "TOKEN_ENV",
    "MemoryBudget",
    "float_field",
    "int_field",
    "new_token",
    "plan_max_payload",
    "token_from_env",
    "token_matches",
]

TOKEN_ENV = "AIGC_EMU_TOKEN"
"""Environment variable carrying the per-run token to the MEC and device processes."""

_PAYLOAD_SLACK = 1 << 20
"""Bytes allowed above the largest tensor of a plan (echo probes, tensor descriptions)."""


def new_token() -> str:
    """A fresh per-run token (128 random bits, hex)."""
    return secrets.token_hex(16)


def token_matches(expected: str | None, got: object) -> bool:
    """Whether ``got`` is the run's token (constant-time); any token when ``expected`` is None."""
    if expected is None:
        return True
    return isinstance(got, str) and hmac.compare_digest(expected.encode(), got.encode())


def int_field(meta: Mapping[str, Any], key: str, what: str, lo: int, hi: int) -> int:
    """``meta[key]`` as an int in ``[lo, hi]`` (a JSON integer; ``true`` is not one)."""
    v = meta.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProtocolError(f"{what}: field {key!r} must be an integer, got {v!r:.40}")
    if not lo <= v <= hi:
        raise ProtocolError(f"{what}: field {key!r} must be in {lo}..{hi}, got {v}")
    return v


def float_field(meta: Mapping[str, Any], key: str, what: str, lo: float, hi: float) -> float:
    """``meta[key]`` as a finite number in ``[lo, hi]``."""
    v = meta.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ProtocolError(f"{what}: field {key!r} must be a number, got {v!r:.40}")
    f = float(v)
    if not (math.isfinite(f) and lo <= f <= hi):
        raise ProtocolError(f"{what}: field {key!r} must be a finite number in [{lo:g}, {hi:g}], "
                            f"got {v!r:.40}")
    return f


def plan_max_payload(profile: Profile, probe_bytes: int = 1 << 16) -> int:
    """The largest payload any plan of ``profile`` sends to the MEC, plus slack: the largest
    cut or pass input (tensor bytes), or an echo probe, plus :data:`_PAYLOAD_SLACK`."""
    need = probe_bytes
    for p in profile.passes:
        for k in range(p.n_blocks + 1):
            need = max(need, p.upload_bytes(k))
    return int(need * 1.25) + _PAYLOAD_SLACK


class MemoryBudget:
    """Bytes of receive buffers held by all connections together; thread-safe."""

    def __init__(self, limit_bytes: int) -> None:
        if limit_bytes < 1:
            raise ValueError(f"memory budget must be >= 1 byte, got {limit_bytes}")
        self.limit = int(limit_bytes)
        self.used = 0
        self.peak = 0
        self._lock = threading.Lock()

    def acquire(self, n: int) -> None:
        """Reserve ``n`` bytes or raise :class:`ProtocolError` (the connection is dropped)."""
        with self._lock:
            if self.used + n > self.limit:
                raise ProtocolError(f"the MEC's receive-buffer budget ({self.limit >> 20} MiB) is "
                                    f"in use ({self.used >> 20} MiB); try again later")
            self.used += n
            self.peak = max(self.peak, self.used)

    def release(self, n: int) -> None:
        with self._lock:
            self.used -= n
            assert self.used >= 0, "released more receive-buffer bytes than were acquired"


def token_from_env() -> str | None:
    """The per-run token from :data:`TOKEN_ENV`, or None when it is not set."""
    tok = os.environ.get(TOKEN_ENV, "")
    return tok or None
