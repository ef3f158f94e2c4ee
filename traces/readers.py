"""Trace readers: Mahimahi, Pensieve, the 5G production dataset, Lumos5G-style and generic CSV.

Every reader validates as it reads and raises :class:`traces.TraceError` naming the file and
line (``path:line: what is wrong``). The format is detected from the extension and the first
lines, or forced with ``fmt``:

===========  =====================================================================================
``mahimahi`` ``.up``/``.down``/``.pps``/``.trace``: one integer-ms timestamp per delivery
             opportunity of one 1500-byte IP packet, headers included, as Mahimahi means it; a
             Trace's capacity is application goodput, so each line is the 1448 bytes of TCP
             payload such a packet carries (IPv4 + TCP with timestamps: what Mahimahi's own
             replay delivers to a TCP application; :data:`MAHIMAHI_PAYLOAD_BYTES`). The emulator
             shapes that goodput at 1514 wire bytes per 1448 (``emulator.net``), i.e. one
             full-size frame per line. Non-decreasing, repeats allowed; the last timestamp is
             the period. Kept
             at 1 ms resolution: the opportunities at timestamp ``t`` deliver in ``[t-1, t)`` ms,
             so those at 0 share the loop's last slot with those at the period (as in Mahimahi,
             where the next loop starts at the period). Writing it back gives the same file.
``pensieve`` ``time_s Mbps`` per line, whitespace separated (Pensieve's cooked traces). Each
             sample holds until the next; the last lasts as long as the one before it. A trace
             whose first time is not 0 is moved to start at 0.
``5g``       CSV with ``DL_bitrate``/``UL_bitrate`` in kbit/s (5G production dataset, Cork), one
             row per second (its timestamps repeat and skip, so rows, not timestamps, are used);
             ``direction="down"`` (default) or ``"up"``.
``lumos``    CSV with a ``Throughput`` column in Mbit/s, one row per second (Lumos5G).
``csv``      generic ``time_s,mbps`` with a header; optional ``# period_s=X`` comment line
             (written by :func:`traces.write_trace`), else the last row lasts as the one before.
===========  =====================================================================================

Example::

    from traces import load_trace
    tr = load_trace("traces/data/cellular_120s.csv")            # auto-detected: csv
    up = load_trace("drive.csv", "5g", direction="up", scale=0.5)
"""

from __future__ import annotations

import csv
import difflib
import math
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from traces.errors import TraceError, TraceWarning
from traces.trace import EndPolicy, Trace

__all__ = [
    "FORMATS",
    "MAHIMAHI_PACKET_BYTES",
    "MAHIMAHI_PAYLOAD_BYTES",
    "MAHIMAHI_SUFFIXES",
    "ZERO_GAP_WARN_S",
    "detect_format",
    "load_trace",
    "load_traces",
    "trace_from_mahimahi",
]

FORMATS: tuple[str, ...] = ("mahimahi", "pensieve", "5g", "lumos", "csv")
MAHIMAHI_SUFFIXES: tuple[str, ...] = (".up", ".down", ".pps", ".trace")
MAHIMAHI_PACKET_BYTES = 1500
"""Bytes of the IP packet one Mahimahi line lets through (headers included)."""
MAHIMAHI_PAYLOAD_BYTES = 1448
"""Goodput of one Mahimahi line: TCP payload of a 1500-byte IPv4 packet (20 B IP header, 32 B
TCP header with timestamps), what a TCP application gets through Mahimahi's own replay."""
#: zero-capacity gaps at least this long (seconds) trigger a TraceWarning at load time
ZERO_GAP_WARN_S = 5.0
_DIRECTIONS = {"down": "DL_bitrate", "up": "UL_bitrate"}
_PERIOD_RE = re.compile(r"^#\s*period_s\s*=\s*(\S+)\s*$")
_SOURCE_RE = re.compile(r"^#\s*source:\s*(.+)$")
_SKIP_NAMES = re.compile(r"(^\.|^readme|\.md$|\.txt$|\.json$|\.png$|\.py$|\.sh$)", re.IGNORECASE)


def _read_lines(path: Path) -> list[str]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TraceError(f"{path}: cannot read trace file: {exc.strerror or exc}") from exc
    if not data.strip():
        raise TraceError(f"{path}: empty file; a trace needs at least one sample")
    if b"\0" in data:
        line = data[: data.index(b"\0")].count(b"\n") + 1
        raise TraceError(f"{path}:{line}: binary data (NUL byte); expected a text trace")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TraceError(f"{path}:{line}: not UTF-8 text; expected a text trace") from exc
    return text.splitlines()


def _number(text: str, where: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"{where}: {what} must be a number, got {text.strip()!r}") from None
    if not math.isfinite(value):
        raise TraceError(f"{where}: {what} must be finite, got {text.strip()!r}")
    return value


def _rate(text: str, where: str, what: str) -> float:
    value = _number(text, where, what)
    if value < 0:
        raise TraceError(f"{where}: {what} must be >= 0, got {text.strip()!r}")
    return value


def detect_format(path: str | os.PathLike[str]) -> str:
    """Guess the format of a trace file from its extension and first non-comment line.

    Raises :class:`TraceError` when it cannot tell; pass ``fmt`` to :func:`load_trace` then.
    """
    p = Path(path)
    if p.suffix.lower() in MAHIMAHI_SUFFIXES:
        return "mahimahi"
    lines = _read_lines(p)
    first = next((ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")), "")
    header = [c.strip().lower() for c in first.split(",")]
    if "dl_bitrate" in header or "ul_bitrate" in header:
        return "5g"
    if "throughput" in header:
        return "lumos"
    if "time_s" in header or any(ln.startswith("#") for ln in lines[:5]):
        return "csv"
    parts = first.split()
    if len(parts) == 1 and parts[0].isdigit():
        return "mahimahi"
    if len(parts) == 2 and "," not in first:
        return "pensieve"
    if len(header) == 2:
        return "csv"
    raise TraceError(
        f"{p}:1: cannot detect the trace format from {first[:60]!r}; "
        f"pass fmt= (one of {', '.join(FORMATS)})"
    )


# ---------------------------------------------------------------------------- mahimahi
def trace_from_mahimahi(
    stamps_ms: npt.ArrayLike, *, name: str = "", source: str = ""
) -> Trace:
    """Build the 1 ms-resolution trace of a list of Mahimahi delivery opportunities (ms)."""
    ts = np.asarray(stamps_ms, dtype=np.int64)
    period_ms = int(ts[-1])
    bins = ts - 1
    bins[ts == 0] = period_ms - 1
    counts = np.bincount(bins, minlength=period_ms)
    rates = counts.astype(np.float64) * (MAHIMAHI_PAYLOAD_BYTES * 8 * 1000)
    starts = np.concatenate(([0], np.flatnonzero(rates[1:] != rates[:-1]) + 1))
    return Trace(
        starts / 1000.0,
        rates[starts],
        period_ms / 1000.0,
        name=name,
        source=source,
        mahimahi_at_zero=int(np.count_nonzero(ts == 0)),
    )


def _read_mahimahi(path: Path) -> Trace:
    stamps: list[int] = []
    prev = -1
    for lineno, raw in enumerate(_read_lines(path), 1):
        text = raw.strip()
        if not text:
            continue
        if not text.isdigit():
            raise TraceError(
                f"{path}:{lineno}: expected a non-negative integer millisecond timestamp "
                f"(Mahimahi format), got {text[:40]!r}"
            )
        value = int(text)
        if value < prev:
            raise TraceError(
                f"{path}:{lineno}: timestamps must be non-decreasing ({value} after {prev})"
            )
        stamps.append(value)
        prev = value
    if not stamps:
        raise TraceError(f"{path}: no timestamps; a Mahimahi trace needs at least one line")
    if stamps[-1] <= 0:
        raise TraceError(
            f"{path}:{len(stamps)}: the last timestamp is the period and must be > 0 ms"
        )
    return trace_from_mahimahi(stamps, name=path.name, source=str(path))


# ---------------------------------------------------------------------------- time/rate pairs
def _from_samples(
    path: Path, times: list[float], rates: list[float], lines: list[int], period: float | None
) -> Trace:
    if not times:
        raise TraceError(f"{path}: no samples; a trace needs at least one data row")
    for k in range(1, len(times)):
        if times[k] <= times[k - 1]:
            raise TraceError(
                f"{path}:{lines[k]}: timestamps must be strictly increasing "
                f"({times[k]} after {times[k - 1]})"
            )
    t = np.array(times) - times[0]
    if period is None:
        last = t[-1] - t[-2] if t.size > 1 else 1.0
        period = float(t[-1] + last)
    else:
        period -= times[0]
        if period <= t[-1]:
            raise TraceError(
                f"{path}: period_s {period + times[0]} must be after the last sample {times[-1]}"
            )
    return Trace(t, np.array(rates), period, name=path.name, source=str(path))


def _read_pensieve(path: Path) -> Trace:
    times: list[float] = []
    rates: list[float] = []
    lines: list[int] = []
    for lineno, raw in enumerate(_read_lines(path), 1):
        parts = raw.split()
        if not parts:
            continue
        where = f"{path}:{lineno}"
        if len(parts) != 2:
            raise TraceError(
                f"{where}: expected 'time_s Mbps' (2 columns, Pensieve format), got {raw[:60]!r}"
            )
        times.append(_number(parts[0], where, "time_s"))
        rates.append(_rate(parts[1], where, "Mbps") * 1e6)
        lines.append(lineno)
    return _from_samples(path, times, rates, lines, None)


def _csv_rows(
    path: Path,
) -> tuple[list[str], list[tuple[int, list[str]]], float | None, str]:
    """Header (lower-cased), data rows with line numbers, ``# period_s=`` and ``# source:``."""
    period: float | None = None
    origin = ""
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    for lineno, raw in enumerate(_read_lines(path), 1):
        if not raw.strip():
            continue
        if raw.lstrip().startswith("#"):
            m = _PERIOD_RE.match(raw.strip())
            if m:
                period = _number(m.group(1), f"{path}:{lineno}", "period_s")
            m = _SOURCE_RE.match(raw.strip())
            if m:
                origin = m.group(1).strip()
            continue
        cells = next(csv.reader([raw]))
        if header is None:
            header = [c.strip().lower() for c in cells]
            continue
        rows.append((lineno, cells))
    return header or [], rows, period, origin


def _column(path: Path, header: list[str], name: str, fmt: str) -> int:
    try:
        return header.index(name.lower())
    except ValueError:
        raise TraceError(
            f"{path}:1: missing column {name!r} ({fmt} format); the header has "
            f"{', '.join(header[:12]) or 'no columns'}"
        ) from None


def _cell(path: Path, lineno: int, cells: list[str], col: int, name: str) -> str:
    if col >= len(cells) or not cells[col].strip():
        raise TraceError(f"{path}:{lineno}: no value in column {name!r}")
    return cells[col]


def _read_per_second(path: Path, column: str, unit_bps: float, fmt: str, label: str) -> Trace:
    header, rows, _, _ = _csv_rows(path)
    col = _column(path, header, column, fmt)
    rates = [
        _rate(_cell(path, ln, cells, col, column), f"{path}:{ln}", f"{column} ({label})") * unit_bps
        for ln, cells in rows
    ]
    if not rates:
        raise TraceError(f"{path}: no data rows after the header")
    return Trace(
        np.arange(len(rates), dtype=np.float64),
        np.array(rates),
        float(len(rates)),
        name=path.name,
        source=f"{path} [{column}]",
    )


def _read_csv(path: Path) -> Trace:
    header, rows, period, origin = _csv_rows(path)
    if header and all(_is_number(c) for c in header):
        rows.insert(0, (rows[0][0] - 1 if rows else 1, header))
        header = ["time_s", "mbps"]
    tcol = _column(path, header, "time_s", "csv")
    rcol = _column(path, header, "mbps", "csv")
    times = [_number(_cell(path, ln, c, tcol, "time_s"), f"{path}:{ln}", "time_s") for ln, c in rows]
    rates = [_rate(_cell(path, ln, c, rcol, "mbps"), f"{path}:{ln}", "mbps") * 1e6 for ln, c in rows]
    trace = _from_samples(path, times, rates, [ln for ln, _ in rows], period)
    if origin:
        trace = Trace(trace.times_s, trace.rates_bps, trace.period_s, name=trace.name,
                      source=f"{path} [{origin}]")
    return trace


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------- entry points
def load_trace(
    path: str | os.PathLike[str],
    fmt: str | None = None,
    *,
    direction: str = "down",
    scale: float = 1.0,
    end: EndPolicy = "loop",
    warn_gap_s: float | None = ZERO_GAP_WARN_S,
) -> Trace:
    """Read a trace file.

    :param path: the file.
    :param fmt: one of ``mahimahi``, ``pensieve``, ``5g``, ``lumos``, ``csv``; detected when
        ``None`` (see :func:`detect_format`).
    :param direction: ``"down"`` (default) or ``"up"``; selects ``DL_bitrate``/``UL_bitrate`` of
        the 5G dataset (other formats hold one direction per file).
    :param scale: multiply every rate by this factor (recorded in ``source``).
    :param end: end-of-trace policy, ``loop`` (default), ``hold`` or ``stop``.
    :param warn_gap_s: warn (:class:`TraceWarning`) about zero-capacity gaps at least this long;
        ``None`` turns the warning off.
    :raises TraceError: unreadable, empty or malformed file (the message names file and line).
    """
    p = Path(path)
    if direction not in _DIRECTIONS:
        raise TraceError(f"direction must be 'down' or 'up', got {direction!r}")
    if fmt is None:
        fmt = detect_format(p)
    if fmt == "mahimahi":
        trace = _read_mahimahi(p)
    elif fmt == "pensieve":
        trace = _read_pensieve(p)
    elif fmt == "5g":
        trace = _read_per_second(p, _DIRECTIONS[direction], 1e3, "5g", "kbit/s")
    elif fmt == "lumos":
        trace = _read_per_second(p, "Throughput", 1e6, "lumos", "Mbit/s")
    elif fmt == "csv":
        trace = _read_csv(p)
    else:
        hint = difflib.get_close_matches(str(fmt), FORMATS, n=1)
        raise TraceError(
            f"{p}: unknown trace format {fmt!r}; use one of {', '.join(FORMATS)}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
        )
    if scale != 1.0:
        trace = trace.scaled(scale)
    if end != "loop":
        trace = trace.with_end(end)
    if warn_gap_s is not None:
        _warn_gaps(trace, p, warn_gap_s)
    return trace


def _warn_gaps(trace: Trace, path: Path, min_s: float) -> None:
    if trace.bytes_per_period <= 0:
        warnings.warn(
            f"{path}: the trace has zero capacity everywhere; no transfer over it can finish",
            TraceWarning,
            stacklevel=3,
        )
        return
    gaps = trace.zero_gaps(min_s)
    if gaps:
        start, stop = max(gaps, key=lambda g: g[1] - g[0])
        warnings.warn(
            f"{path}: {len(gaps)} zero-capacity gap(s) of >= {min_s:g} s; the longest is "
            f"{stop - start:.3f} s from {start:.3f} s; transfers stall there",
            TraceWarning,
            stacklevel=3,
        )


def load_traces(
    paths_or_dir: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    fmt: str | None = None,
    **kwargs: object,
) -> list[Trace]:
    """Load several traces, sorted by name (then source), so the order never depends on the
    file system. A directory yields its files (not sub-directories), skipping README, ``*.md``,
    ``*.txt``, ``*.json``, images, scripts and hidden files. Keyword arguments go to
    :func:`load_trace`."""
    if isinstance(paths_or_dir, str | os.PathLike):
        root = Path(paths_or_dir)
        if root.is_dir():
            paths = [p for p in root.iterdir() if p.is_file() and not _SKIP_NAMES.search(p.name)]
        else:
            paths = [root]
    else:
        paths = [Path(p) for p in paths_or_dir]
    loaded = [load_trace(p, fmt, **kwargs) for p in sorted(paths)]  # type: ignore[arg-type]
    return sorted(loaded, key=lambda t: (t.name, t.source))
