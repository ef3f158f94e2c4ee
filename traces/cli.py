"""``python -m traces``: inspect, convert, generate and plot traces.

Subcommands (``python -m traces SUBCOMMAND --help`` for details)::

    show FILE [--format F] [--json]                  duration, mean, median, p5, p95, outage
    convert IN OUT --to mahimahi|csv [--scale X]     rewrite a trace in another format
    synth KIND --seconds N --seed S OUT              generate cellular/mmwave/subthz/constant/step
    plot FILE -o PNG                                 capacity over time (matplotlib, Agg)

Bad input (including an all-zero trace, over which no transfer can finish) prints one
``error: FILE:LINE: ...`` line on stderr and exits with status 1 (no traceback); warnings (long
zero-capacity gaps) print ``warning: ...`` lines and do not fail.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from traces import synth
from traces.errors import TraceError
from traces.readers import FORMATS, detect_format, load_trace
from traces.trace import Trace
from traces.writers import WRITE_FORMATS, write_trace

__all__ = ["build_parser", "main", "summary"]


def summary(trace: Trace, window_s: float | None = 1.0) -> dict[str, object]:
    """Statistics that ``show`` prints; percentiles and outage over ``window_s`` averages."""
    mbps = 1e6

    def pct(q: float) -> float:
        return round(trace.percentile_bps(q, window_s=window_s) / mbps, 6)

    return {
        "name": trace.name,
        "source": trace.source,
        "sha256": trace.sha256(),
        "segments": int(trace.times_s.size),
        "duration_s": trace.duration_s,
        "end": trace.end,
        "mean_mbps": round(trace.mean_bps() / mbps, 6),
        "median_mbps": pct(50),
        "p5_mbps": pct(5),
        "p95_mbps": pct(95),
        "min_mbps": pct(0),
        "max_mbps": pct(100),
        "outage_fraction": round(trace.outage_fraction(0.0, window_s=window_s), 6),
        "window_s": window_s,
        "longest_zero_gap_s": round(max((e - s for s, e in trace.zero_gaps()), default=0.0), 6),
    }


def _add_input(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", "-f", choices=FORMATS, default=None,
                   help="input format (default: detected from extension and content)")
    p.add_argument("--direction", choices=("down", "up"), default="down",
                   help="5G dataset column: DL_bitrate (down, default) or UL_bitrate (up)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every rate by this factor (default 1)")


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="python -m traces",
        description="Inspect, convert, generate and plot link-capacity traces.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("show", help="print statistics of a trace",
                       description="Print duration, mean, median, p5, p95 and outage fraction "
                                   "(fraction of time at zero capacity) of a trace.")
    p.add_argument("file", type=Path, help="trace file")
    _add_input(p)
    p.add_argument("--window", type=float, default=1.0,
                   help="averaging window in s for percentiles and outage (default 1; "
                        "0 = raw segments)")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("convert", help="convert a trace to Mahimahi or CSV",
                       description="Read IN (any supported format) and write OUT.")
    p.add_argument("input", type=Path, help="input trace file")
    p.add_argument("output", type=Path, help="output file")
    p.add_argument("--to", choices=WRITE_FORMATS, required=True, help="output format")
    _add_input(p)

    p = sub.add_parser("synth", help="generate a seeded synthetic trace",
                       description="Generate a synthetic trace (models in traces/synth.py). "
                                   "The same KIND, parameters and seed give the same file.")
    p.add_argument("kind", choices=synth.KINDS, help="trace model")
    p.add_argument("output", type=Path, help="output file (.csv, or .up/.down for Mahimahi)")
    p.add_argument("--seconds", type=float, required=True, help="trace length in seconds")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--dt", type=float, default=None,
                   help="time step in s (cellular default 1, mmwave/subthz 0.1)")
    p.add_argument("--levels-mbps", type=_floats, default=None,
                   help="comma-separated levels (cellular states, or step levels)")
    p.add_argument("--rate-mbps", type=float, default=None, help="rate of a constant trace")
    p.add_argument("--step-s", type=float, default=None, help="length of each step (step)")
    p.add_argument("--to", choices=WRITE_FORMATS, default=None,
                   help="output format (default: from the output file's extension)")

    p = sub.add_parser("plot", help="plot capacity over time to a PNG",
                       description="Plot capacity (Mbit/s) over one period of the trace.")
    p.add_argument("file", type=Path, help="trace file")
    p.add_argument("-o", "--output", type=Path, required=True, help="PNG file to write")
    _add_input(p)
    p.add_argument("--window", type=float, default=None,
                   help="average over windows of this many seconds before plotting")
    return parser


def _load(args: argparse.Namespace, path: Path) -> Trace:
    trace = load_trace(path, args.format, direction=args.direction, scale=args.scale)
    if trace.bytes_per_period <= 0:
        raise TraceError(
            f"{path}: the trace has zero capacity everywhere, so no transfer over it can "
            f"finish; check the file, the column (--direction) or --scale"
        )
    return trace


def _show(args: argparse.Namespace) -> None:
    trace = _load(args, args.file)
    info = summary(trace, args.window if args.window > 0 else None)
    info = {"file": str(args.file), "format": args.format or detect_format(args.file), **info}
    if args.json:
        print(json.dumps(info))
        return
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")


def _synth(args: argparse.Namespace) -> None:
    params: dict[str, object] = {}
    if args.dt is not None:
        params["dt_s"] = args.dt
    if args.levels_mbps is not None:
        params["levels_mbps"] = args.levels_mbps
    if args.rate_mbps is not None:
        params["rate_mbps"] = args.rate_mbps
    if args.step_s is not None:
        params["step_s"] = args.step_s
    trace = synth.make(args.kind, args.seconds, args.seed, **params)
    write_trace(trace, args.output, args.to)
    print(f"wrote {args.output}: {trace.duration_s:g} s, mean {trace.mean_bps() / 1e6:.3f} Mbit/s")


def _plot(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trace = _load(args, args.file)
    if args.window:
        trace = trace.resampled(args.window)
    xs = [*trace.times_s.tolist(), trace.period_s]
    ys = [*(trace.rates_bps / 1e6).tolist(), float(trace.rates_bps[-1] / 1e6)]
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.step(xs, ys, where="post", lw=0.8)
    ax.axhline(trace.mean_bps() / 1e6, color="k", ls="--", lw=0.8,
               label=f"mean {trace.mean_bps() / 1e6:.2f} Mbit/s")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("capacity (Mbit/s)")
    ax.set_title(trace.name or str(args.file))
    ax.legend(loc="upper right")
    fig.tight_layout()
    try:
        fig.savefig(args.output, dpi=120)
    except OSError as exc:
        raise TraceError(f"{args.output}: cannot write plot: {exc.strerror or exc}") from exc
    finally:
        plt.close(fig)
    print(f"wrote {args.output}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 bad input, 2 usage)."""
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if args.command == "show":
                _show(args)
            elif args.command == "convert":
                trace = _load(args, args.input)
                write_trace(trace, args.output, args.to)
                print(f"wrote {args.output} ({args.to}, mean {trace.mean_bps() / 1e6:.3f} Mbit/s)")
            elif args.command == "synth":
                _synth(args)
            else:
                _plot(args)
        except TraceError as exc:
            for w in caught:
                print(f"warning: {w.message}", file=sys.stderr)
            print(f"error: {exc}", file=sys.stderr)
            return 1
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    return 0
