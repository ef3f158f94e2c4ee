"""Errors and warnings of the ``traces`` package.

Hierarchy (one place, so callers know what to catch)::

    ValueError
     └── TraceError        bad trace input or an impossible request; the message names the
                           file and line where there is one, and says how to fix it
    UserWarning
     └── TraceWarning      a trace that loads but deserves attention (a long zero-capacity gap,
                           an all-zero trace, a period rounded to whole milliseconds)
"""

from __future__ import annotations

__all__ = ["TraceError", "TraceWarning"]


class TraceError(ValueError):
    """Bad trace input, or a request the trace cannot satisfy (e.g. bytes over an all-zero trace)."""


class TraceWarning(UserWarning):
    """A trace that loads but may not be what the user intended (long zero-capacity gaps)."""
