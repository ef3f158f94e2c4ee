"""Errors of the emulated network (:mod:`emulator.net`).

Hierarchy (one place, so callers know what to catch)::

    RuntimeError
     └── NetError      the network could not be built, shaped, measured or cleaned up: not root,
                       a missing kernel feature or tool, a bad :class:`~emulator.net.NetConfig`,
                       a leftover run. The message is one line saying what failed and the
                       command that fixes it; CLIs print it as ``<prog>: <message>``, exit 2.

Internal invariants are asserts. Trace input errors stay :class:`traces.TraceError`.
"""

from __future__ import annotations

__all__ = ["NetError"]


class NetError(RuntimeError):
    """The emulated network could not be built, shaped, measured or cleaned up."""
