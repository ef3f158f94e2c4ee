"""Per pass: sum of block medians vs the whole-pass median (same session), from profiles.

    .venv/bin/python benchmarks/profiler_sum_vs_whole.py [PROFILE.json ...]

With no arguments reads every ``profiles/*.json``. Prints one line per pass and flags any pass
whose sum of block medians is more than 10% from the whole-pass median. Exit status 1 if any.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from profiler.schema import load_profile  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profiles", nargs="*", type=Path)
    ap.add_argument("--limit", type=float, default=10.0, help="allowed |difference| in percent")
    a = ap.parse_args()
    files = a.profiles or sorted((ROOT / "profiles").glob("*.json"))
    bad = 0
    print(f"{'profile':<28} {'pass':<13} {'blocks':>6} {'whole ms':>10} {'sum ms':>10} "
          f"{'diff':>7} {'runs':>5}  ok")
    for f in files:
        p = load_profile(f)
        for ps in p.passes:
            s = sum(ps.block_medians_ms())
            d = 100 * (s / ps.whole.median - 1)
            ok = abs(d) <= a.limit
            bad += not ok
            print(f"{f.name:<28} {ps.name:<13} {ps.n_blocks:>6} {ps.whole.median:>10.2f} "
                  f"{s:>10.2f} {d:>+6.1f}% {ps.whole.runs:>5}  {'yes' if ok else 'NO'}")
    print(f"{bad} pass(es) outside +-{a.limit:g}%")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
