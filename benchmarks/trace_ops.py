"""Throughput of Trace queries: finish times per second, vectorised and scalar.

Usage: ``python benchmarks/trace_ops.py [--n 1000000] [--repeat 3]``. Prints one line per
(trace, operation) with queries per second (best of ``--repeat``), and the machine. It states
no target (the README quotes its figures), so it always exits 0; a missing real trace is said
in one line and replaced by a synthetic one. Traces: the
bundled 120 s cellular trace (120 segments) and a 1 ms-resolution Mahimahi trace (a real one
from ../shared/traces when present, else a synthetic 140 s one of the same shape).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

# run as a script from anywhere: import this checkout's traces package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from traces import DATA_DIR, Trace, load_trace
from traces.readers import trace_from_mahimahi

SHARED_MM = (
    Path(__file__).resolve().parents[2] / "shared" / "traces" / "mahimahi" / "TMobile-LTE-short.down"
)


def _mahimahi_trace(rng: np.random.Generator) -> Trace:
    if SHARED_MM.is_file():
        return load_trace(SHARED_MM, warn_gap_s=None)
    print(f"({SHARED_MM} not found: timing a synthetic 140 s Mahimahi-shaped trace instead)")
    stamps = np.sort(rng.integers(0, 140_000, 195_000))
    stamps[-1] = 140_000
    return trace_from_mahimahi(stamps, name="synthetic-mahimahi")


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="queries per vectorised call")
    parser.add_argument("--scalar-n", type=int, default=20_000, help="scalar calls timed")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions (best kept)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the query generator")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"machine: {platform.machine()} {platform.processor() or platform.platform()}, "
          f"{os.cpu_count()} logical CPUs, numpy {np.__version__}")
    for tr in (load_trace(DATA_DIR / "cellular_120s.csv"), _mahimahi_trace(rng)):
        t0 = rng.uniform(0, 10 * tr.period_s, args.n)
        nbytes = rng.uniform(1e3, 3e7, args.n)  # 1 KB .. 30 MB: decode tokens to SD activations
        t1 = t0 + rng.uniform(0, 5, args.n)
        label = f"{tr.name} ({tr.times_s.size} segments)"
        for op, fn in (
            ("finish_time", lambda tr=tr, t0=t0, nb=nbytes: tr.finish_time(t0, nb)),
            ("bytes_between", lambda tr=tr, t0=t0, t1=t1: tr.bytes_between(t0, t1)),
            ("capacity_at", lambda tr=tr, t0=t0: tr.capacity_at(t0)),
        ):
            secs = _best(fn, args.repeat)
            print(f"{label:<42} {op:<14} vectorised n={args.n:>8}: {args.n / secs:12,.0f} /s")
        ts, ns = t0[: args.scalar_n].tolist(), nbytes[: args.scalar_n].tolist()

        def scalar(tr: Trace = tr, ts: list[float] = ts, ns: list[float] = ns) -> None:
            for a, b in zip(ts, ns, strict=True):
                tr.finish_time(a, b)

        secs = _best(scalar, 1)
        print(f"{label:<42} {'finish_time':<14} scalar     n={len(ts):>8}: {len(ts) / secs:12,.0f} /s")


if __name__ == "__main__":
    main()
