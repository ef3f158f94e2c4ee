"""Errors of the emulated network (:mod:`emulator.net`).

Hierarchy (one place, so callers know what to catch)::

    EmulatorError (emulator/errors.py)
     └── NetError      the network could not be built, shaped, measured or cleaned up: not root,
                       a missing kernel feature or tool, a bad :class:`~emulator.net.NetConfig`,
                       a leftover run. The message is one line saying what failed and the
                       command that fixes it; CLIs print it as ``<prog>: <message>``, exit 2.

Internal invariants are asserts. Trace input errors stay :class:`traces.TraceError`.
"""

from __future__ import annotations

from emulator.errors import EmulatorError

__all__ = ["NetError"]


class NetError(EmulatorError):
    """The emulated network could not be built, shaped, measured or cleaned up."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message, exit_code)
