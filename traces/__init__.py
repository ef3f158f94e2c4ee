"""Link-capacity traces for the emulator and the simulator.

A :class:`Trace` is piecewise-constant capacity (bit/s) over time that loops at its end as
Mahimahi does. Read one from a file with :func:`load_trace` (Mahimahi, Pensieve, 5G dataset,
Lumos5G and generic CSV, auto-detected), make one with :mod:`traces.synth`, write it with
:func:`write_trace`. Every input error is a :class:`TraceError` (a ``ValueError``) naming the
file and line. ``python -m traces --help`` lists the command line tools.

Example::

    >>> from traces import load_trace, DATA_DIR
    >>> tr = load_trace(DATA_DIR / "cellular_120s.csv")
    >>> t_done = tr.finish_time(3.0, 400_000)      # a 400 KB activation sent at t = 3 s
    >>> t_done > 3.0
    True
"""

from __future__ import annotations

from pathlib import Path

from traces import synth
from traces.errors import TraceError, TraceWarning
from traces.readers import FORMATS, ZERO_GAP_WARN_S, detect_format, load_trace, load_traces
from traces.trace import END_POLICIES, EndPolicy, Trace
from traces.writers import WRITE_FORMATS, write_trace

__all__ = [
    "DATA_DIR",
    "END_POLICIES",
    "FORMATS",
    "WRITE_FORMATS",
    "ZERO_GAP_WARN_S",
    "EndPolicy",
    "Trace",
    "TraceError",
    "TraceWarning",
    "detect_format",
    "load_trace",
    "load_traces",
    "synth",
    "write_trace",
]

#: the bundled synthetic traces (see ``traces/data/README.md``)
DATA_DIR: Path = Path(__file__).resolve().parent / "data"
