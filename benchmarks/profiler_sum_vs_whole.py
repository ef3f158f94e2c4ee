"""Per pass: sum of block medians vs the whole-pass median (same session).

    .venv/bin/python benchmarks/profiler_sum_vs_whole.py [--remeasure 3] [--models gpt2-tiny sd15-tiny]
    .venv/bin/python benchmarks/profiler_sum_vs_whole.py --committed [PROFILE.json ...]

By default it *measures*: it profiles the given zoo models (the tiny ones) ``--remeasure`` (3)
times per hardware class (device and mec, as the shipped profiles were made; exports are
cached) and prints every difference and their median per pass: one measurement of a fast pass
moves by a few percent on a shared machine, the median of several does not. A pass whose
median is outside ``--limit`` (10%) makes the exit status 1.

``--committed`` measures nothing: it reads profile files (default every ``profiles/*.json``)
and checks that the numbers as shipped keep the sum of block medians within ``--limit`` of the
whole-pass median at every batch size a file measured (``--batch-sizes``), i.e. that the
committed files still meet the README's claim; missing files exit 2.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from profiler.schema import Profile, load_profile  # noqa: E402


def _diffs(p: Profile) -> dict[str, float]:
    return {ps.name: 100 * (sum(ps.block_medians_ms()) / ps.whole.median - 1) for ps in p.passes}


def _shipped(files: list[Path], limit: float) -> int:
    bad = rows = 0
    print(f"{'profile':<28} {'pass':<13} {'batch':>5} {'blocks':>6} {'whole ms':>10} "
          f"{'sum ms':>10} {'diff':>7} {'runs':>5}  ok")
    for f in files:
        p = load_profile(f)
        for ps in p.passes:
            for n in ps.batch_sizes:  # batch 1, then every measured batch size
                whole = ps.whole_at(n)
                s = sum(b.latency_at(n).median for b in ps.blocks)
                d = 100 * (s / whole.median - 1)
                ok = abs(d) <= limit
                bad += not ok
                rows += 1
                print(f"{f.name:<28} {ps.name:<13} {n:>5} {ps.n_blocks:>6} "
                      f"{whole.median:>10.2f} {s:>10.2f} {d:>+6.1f}% {whole.runs:>5}  "
                      f"{'yes' if ok else 'NO'}")
    print(f"{bad} of {rows} (pass, batch size) outside +-{limit:g}%")
    return bad


def _remeasure(models: list[str], n: int, limit: float) -> int:
    from profiler.build import profile_zoo
    from profiler.export import default_work_dir
    from profiler.hardware import resolve_class

    bad = 0
    print(f"{'model':<11} {'class':<8} {'pass':<13} {'median':>7}  {'each run':<40} ok")
    for model in models:
        for cls in ("device", "mec"):
            hw = resolve_class(cls)
            runs = [_diffs(profile_zoo(model, {}, hw, default_work_dir(), quiet=True))
                    for _ in range(n)]
            for name in runs[0]:
                each = [r[name] for r in runs]
                med = statistics.median(each)
                ok = abs(med) <= limit
                bad += not ok
                print(f"{model:<11} {hw.label:<8} {name:<13} {med:>+6.1f}%  "
                      f"{' '.join(f'{d:+.1f}%' for d in each):<40} {'yes' if ok else 'NO'}",
                      flush=True)
    print(f"{bad} pass(es) whose median is outside +-{limit:g}%")
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profiles", nargs="*", type=Path,
                    help="with --committed: profile files (default profiles/*.json)")
    ap.add_argument("--committed", action="store_true",
                    help="read committed profile files instead of measuring (checks the files)")
    ap.add_argument("--limit", type=float, default=10.0, help="allowed |difference| in percent")
    ap.add_argument("--remeasure", type=int, default=3, metavar="N",
                    help="profile --models N times per class (default 3)")
    ap.add_argument("--models", nargs="+", default=["gpt2-tiny", "sd15-tiny"],
                    help="zoo models for --remeasure (default: the tiny ones)")
    a = ap.parse_args()
    if a.profiles and not a.committed:
        ap.error("profile files are read only with --committed")
    if not a.committed:
        if a.remeasure < 1:
            ap.error("--remeasure must be >= 1")
        print(f"measuring: {', '.join(a.models)}, {a.remeasure} profile runs per class")
        return 1 if _remeasure(a.models, a.remeasure, a.limit) else 0
    files = a.profiles or sorted((ROOT / "profiles").glob("*.json"))
    missing = [str(f) for f in files if not f.is_file()]
    if not files or missing:
        print(f"profiler_sum_vs_whole: missing input: {', '.join(missing) or 'profiles/*.json'} "
              "(nothing checked)")
        return 2
    print(f"reading {len(files)} committed profile file(s): checks the shipped numbers, "
          "measures nothing")
    return 1 if _shipped(files, a.limit) else 0


if __name__ == "__main__":
    sys.exit(main())
