"""Trace writers: Mahimahi delivery-opportunity files and the generic ``time_s,mbps`` CSV.

Mahimahi: the capacity (goodput) is integrated per millisecond and a delivery opportunity (one
1500-byte IP packet, 1448 B of TCP payload: :data:`traces.readers.MAHIMAHI_PAYLOAD_BYTES`) is
written at millisecond ``m`` for every packet completed by then (fractions carry over, so the
mean is kept to within one packet per period). The period is rounded to whole milliseconds
(with a :class:`TraceWarning` when that changes it). Mahimahi needs the last line to be the
period; when the trace delivers nothing in its last millisecond, the last opportunity is moved
there. A trace read from a Mahimahi file is written back line for line identical.

CSV: comment lines (``# name:``, ``# source:``, ``# period_s=``), a ``time_s,mbps`` header, then
one row per segment with full float precision; :func:`traces.load_trace` reads it back to the
same segments and period.

Example::

    from traces import load_trace, write_trace
    write_trace(load_trace("Verizon-LTE-short.down"), "copy.down", "mahimahi")   # identical
    write_trace(load_trace("drive.csv", "5g").scaled(0.1), "drive_10pct.csv", "csv")
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt

from traces.errors import TraceError, TraceWarning
from traces.readers import MAHIMAHI_PACKET_BYTES, MAHIMAHI_PAYLOAD_BYTES, MAHIMAHI_SUFFIXES
from traces.trace import Trace

__all__ = ["WRITE_FORMATS", "mahimahi_timestamps", "write_trace"]

WRITE_FORMATS: tuple[str, ...] = ("mahimahi", "csv")


def mahimahi_timestamps(trace: Trace) -> npt.NDArray[np.int64]:
    """The delivery-opportunity timestamps (ms) of one period of ``trace``, as Mahimahi lists
    them. Raises :class:`TraceError` when the trace delivers less than one packet per period."""
    period_ms = max(1, round(trace.period_s * 1000.0))
    if abs(period_ms / 1000.0 - trace.period_s) > 1e-9:
        warnings.warn(
            f"{trace.label}: period {trace.period_s!r} s rounded to {period_ms} ms for Mahimahi",
            TraceWarning,
            stacklevel=3,
        )
    edges = np.minimum(np.arange(period_ms + 1) / 1000.0, trace.period_s)
    cum = np.asarray(trace.bytes_between(np.zeros_like(edges), edges), dtype=np.float64)
    packets = np.floor(cum / MAHIMAHI_PAYLOAD_BYTES + 1e-6).astype(np.int64)
    packets = np.maximum.accumulate(packets)
    counts = np.diff(packets)
    if packets[-1] <= 0:
        raise TraceError(
            f"{trace.label}: the trace delivers less than one {MAHIMAHI_PACKET_BYTES}-byte "
            f"packet ({MAHIMAHI_PAYLOAD_BYTES} B of goodput) per period; a Mahimahi trace needs "
            "at least one delivery opportunity"
        )
    at_zero = trace.mahimahi_at_zero if 0 < trace.mahimahi_at_zero < counts[-1] else 0
    counts[-1] -= at_zero
    stamps = np.concatenate(
        (np.zeros(at_zero, dtype=np.int64), np.repeat(np.arange(1, period_ms + 1), counts))
    )
    stamps[-1] = period_ms
    return stamps


def _clean(text: str) -> str:
    return " ".join(text.split())


def write_trace(trace: Trace, path: str | os.PathLike[str], fmt: str | None = None) -> None:
    """Write ``trace`` to ``path`` as ``fmt`` (``"mahimahi"`` or ``"csv"``; by default Mahimahi
    for ``.up/.down/.pps/.trace`` names and CSV otherwise)."""
    p = Path(path)
    if fmt is None:
        fmt = "mahimahi" if p.suffix.lower() in MAHIMAHI_SUFFIXES else "csv"
    if fmt == "mahimahi":
        stamps = mahimahi_timestamps(trace)
        text = "\n".join(map(str, stamps.tolist())) + "\n"
    elif fmt == "csv":
        lines = [
            f"# name: {_clean(trace.name)}",
            f"# source: {_clean(trace.source)}",
            f"# sha256: {trace.sha256()}",
            f"# period_s={trace.period_s!r}",
            "time_s,mbps",
        ]
        lines += [
            f"{t!r},{r / 1e6!r}"
            for t, r in zip(trace.times_s.tolist(), trace.rates_bps.tolist(), strict=True)
        ]
        text = "\n".join(lines) + "\n"
    else:
        raise TraceError(f"{p}: cannot write format {fmt!r}; use one of {', '.join(WRITE_FORMATS)}")
    try:
        p.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"{p}: cannot write trace: {exc.strerror or exc}") from exc
