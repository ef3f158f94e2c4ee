"""Errors of the emulator's application side (device, MEC, protocol, the ``run`` command).

Hierarchy (one place, so callers know what to catch)::

    Exception
     └── EmulatorError      a user-facing problem: bad input (counts, rates, files that do not
         │                  fit), a missing prerequisite, or a peer that broke the rules. The
         │                  message is one line saying what, where and how to fix it; the CLI
         │                  prints it as ``emulator: <message>`` and exits non-zero.
         ├── NetError       (emulator.net) the emulated network could not be built, shaped,
         │                  measured or cleaned up; exit status 2.
         ├── OutputError    ``--out`` is not writable, has too little free space, or filled up
         │                  during the run (the message names the file); exit status 2.
         └── ProtocolError  a malformed, oversized or unexpected message on the wire (bad magic,
                            unsupported version, unknown type, length over the bound, a field
                            of the wrong type), a peer that closed the connection mid-message,
                            or a client the MEC does not serve (no HELLO with the run's token).

Trace and profile errors (``traces.TraceError``, ``profiler.schema.ProfileError``) are turned into
:class:`EmulatorError` where they enter the ``run`` command. Internal invariants are asserts.
"""

from __future__ import annotations

__all__ = ["EmulatorError", "OutputError", "ProtocolError"]


class EmulatorError(Exception):
    """A user-facing emulator problem; the message is one line that says how to fix it."""

    exit_code: int = 1

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ProtocolError(EmulatorError):
    """A malformed, oversized or unexpected message, or a connection closed mid-message."""


class OutputError(EmulatorError):
    """The run's output directory cannot take (more of) the run's results; exit status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 2)
