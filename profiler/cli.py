"""``python -m profiler``: list the zoo, profile a zoo model or any ONNX file, show, curve.

Every user error (a missing or malformed file, an unknown model, a dynamic input without
``--input``, an unwritable output) ends as one ``profiler: error: ...`` line on stderr and
exit status 1; usage errors exit 2 (argparse).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from .schema import ProfileError, load_profile, save_profile

__all__ = ["main"]

_EPILOG = """examples:
  python -m profiler zoo
  python -m profiler model gpt2 --class device --out profiles/gpt2.device.json
  python -m profiler profile net.onnx --input x=1,3,224,224 --out net.device.json
  python -m profiler show profiles/gpt2.device.json
  python -m profiler upgrade old.device.json --out new.device.json
  python -m profiler curve profiles/gpt2.device.json --mec profiles/gpt2.mec-cpu.json \\
      --bandwidth-mbps 20 --rtt-ms 30 -o curve.png
  python -m profiler model gpt2 --class mec --batch-sizes 1,2,4,8 --out gpt2.mec.json
  python -m profiler curve gpt2.mec.json --batch -o batch.png"""


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m profiler", description="Cut generative models into blocks, time them "
        "per hardware class with ONNX Runtime (or torch on a GPU) and write profile JSON.", epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    sub.add_parser("zoo", help="list the zoo models and their default request shape")

    def timing_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", required=True, type=Path, help="profile JSON to write")
        p.add_argument("--class", dest="hw", choices=["device", "mec"], default="device",
                       help="hardware class: device = 1 ORT thread pinned to one core; mec = "
                       "ORT CUDA if installed, else all CPU threads (labelled mec-cpu); default device")
        p.add_argument("--backend", choices=["auto", "onnxruntime", "torch"], default="auto",
                       help="what times the blocks: auto = ONNX Runtime, or for --class mec "
                       "torch CUDA when a GPU exists but ORT has no CUDA provider (zoo models "
                       "only); torch = torch on the class's device (CPU without a GPU); default auto")
        p.add_argument("--runs", type=int, default=10, help="timed runs per session (default 10)")
        p.add_argument("--min-seconds", type=float, default=3.0,
                       help="fast passes keep timing until this much time passed (max 10x "
                       "--runs; default 3)")
        p.add_argument("--warmup", type=int, default=2,
                       help="warm-up runs after the cold first run, not timed (default 2)")
        p.add_argument("--threads", type=int, default=None,
                       help="ORT intra-op threads (default: 1 for device, all for mec)")
        p.add_argument("--core", type=int, default=None,
                       help="core the device class is pinned to (default: the last allowed)")
        p.add_argument("--cpu-quota", type=float, default=None, metavar="FRACTION",
                       help="device class only: limit to this fraction of one core with a "
                       "cgroup CPU quota (a slower phone; labelled device-q<percent>; root)")
        p.add_argument("--work-dir", type=Path, default=None,
                       help="where exported models and pieces go (default $AIGC_EMU_CACHE or "
                       "~/.cache/aigc-offload-emu)")
        p.add_argument("--tolerance", type=float, default=1e-4,
                       help="max difference of chained pieces from the whole model (default 1e-4)")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress output")

    m = sub.add_parser("model", help="export, cut and time a zoo model",
                       description="Export a zoo model to ONNX (cached), cut it at module "
                       "boundaries, check the chained pieces against the whole model, time "
                       "blocks and whole passes, write a profile.")
    m.add_argument("name", help="zoo model (see `python -m profiler zoo`)")
    m.add_argument("--prompt-tokens", type=int, default=None, help="gpt2*: prompt length P")
    m.add_argument("--new-tokens", type=int, default=None, help="gpt2*: generated tokens T")
    m.add_argument("--steps", type=int, default=None, help="sd15*: denoising steps S")
    m.add_argument("--passes", nargs="+", default=None, help="profile only these passes")
    m.add_argument("--fresh", action="store_true", help="re-export even if cached")
    m.add_argument("--cut-from", type=Path, default=None, metavar="PROFILE",
                   help="with --backend torch: take the cut, byte counts, state and chain "
                   "check from this profile of the same model and request shape (e.g. "
                   "profiles/sd15.mec-cpu.json) and only time, exporting nothing (default: "
                   "export and check here)")
    m.add_argument("--batch-sizes", default="1", metavar="B1,B2,...",
                   help="also time every block and the whole pass on a batch of B requests "
                   "for each B (must include 1, the main statistics), e.g. 1,2,4,8; stored "
                   "per block and pass as batch_ms (default 1)")
    timing_opts(m)

    p = sub.add_parser("profile", help="cut and time any ONNX model",
                       description="Find cut points in the graph of any ONNX file (positions "
                       "where few, small tensors cross; never inside If/Loop/Scan), check the "
                       "chained pieces, time them, write a profile with one pass.")
    p.add_argument("model", type=Path, help="the .onnx file (external data next to it)")
    p.add_argument("--input", action="append", default=[], metavar="NAME=D1,D2,...",
                   help="shape of an input with dynamic dimensions (repeatable)")
    p.add_argument("--blocks", type=int, default=8, help="about how many blocks (default 8)")
    timing_opts(p)

    s = sub.add_parser("show", help="print a profile as a table")
    s.add_argument("profile", type=Path)

    u = sub.add_parser("upgrade", help="add state bytes to a schema-1 profile of a zoo model "
                       "(schema 2), without re-timing",
                       description="Turn a schema-1 profile of a zoo model into schema 2: add "
                       "each block's persistent state bytes, computed from the zoo "
                       "architecture and the profile's request parameters. Timings are kept "
                       "as measured; the file's command says so.")
    u.add_argument("profile", type=Path, help="schema-1 profile")
    u.add_argument("--out", type=Path, default=None, help="where to write (default: in place)")

    c = sub.add_parser("curve", help="latency of every split point at a bandwidth "
                       "(Neurosurgeon curve), or with --batch the batch-size curve")
    c.add_argument("profile", type=Path, help="device profile")
    c.add_argument("--mec", type=Path, default=None,
                   help="MEC profile of the same model (default: MEC = device times)")
    c.add_argument("--bandwidth-mbps", type=float, default=None,
                   help="link bandwidth, Mbit/s each way (needed unless --batch)")
    c.add_argument("--batch", action="store_true",
                   help="the batch curve instead: whole-pass latency per measured batch size")
    c.add_argument("--rtt-ms", type=float, default=0.0,
                   help="round-trip time per pass (ms; default 0)")
    c.add_argument("--mec-speedup", type=float, default=1.0,
                   help="divide the MEC profile's block times by X, as the agent and the "
                   "emulator do (default 1; their default scenario uses 10, agent/defaults.py)")
    c.add_argument("-o", "--output", type=Path, default=None, help="write a PNG plot here")
    return ap


def _parse_inputs(items: Sequence[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for it in items:
        name, sep, dims = it.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            out[name] = [int(x) for x in dims.split(",")]
        except ValueError:
            raise ProfileError(f"--input {it!r}: expected NAME=D1,D2,... with integer "
                               "dimensions, e.g. --input x=1,3,224,224") from None
    return out


def _check_writable(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ProfileError(f"{path}: output path is a directory")
    if not parent.is_dir():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ProfileError(f"{path}: cannot create output directory ({e.strerror or e})"
                               ) from None
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ProfileError(f"{path}: output path is not writable")


def _run(a: argparse.Namespace, argv: Sequence[str]) -> int:
    command = "python -m profiler " + shlex.join(argv)
    if a.cmd == "zoo":
        from .zoo import MODELS

        for z in MODELS.values():
            print(f"{z.name:<10} {z.summary}; defaults {dict(z.defaults)}")
        return 0
    if a.cmd == "show":
        from .report import format_table

        print(format_table(load_profile(a.profile)))
        return 0
    if a.cmd == "upgrade":
        from .upgrade import upgrade_profile

        old = load_profile(a.profile)
        out = a.out or a.profile
        if old.has_state:
            print(f"{a.profile}: already schema {old.schema} with state bytes; nothing to do")
            return 0
        _check_writable(out)
        save_profile(upgrade_profile(old, command), out)
        print(f"wrote {out} (schema 2: state bytes added, timings unchanged)")
        return 0
    if a.cmd == "curve" and a.batch:
        from .report import format_batch_curve, plot_batch_curve

        prof = load_profile(a.profile)
        print(format_batch_curve(prof))
        if a.output:
            plot_batch_curve(prof, a.output)
            print(f"wrote {a.output}")
        return 0
    if a.cmd == "curve":
        from .report import format_curve, plot_curve

        if a.bandwidth_mbps is None:
            raise ProfileError("curve needs --bandwidth-mbps (or --batch for the batch curve)")
        dev = load_profile(a.profile)
        mec = load_profile(a.mec) if a.mec else None
        print(format_curve(dev, mec, a.bandwidth_mbps, a.rtt_ms, a.mec_speedup))
        if a.output:
            plot_curve(dev, mec, a.bandwidth_mbps, a.rtt_ms, a.output, a.mec_speedup)
            print(f"wrote {a.output}")
        return 0

    _check_writable(a.out)
    if a.cmd == "profile" and a.blocks < 1:
        raise ProfileError(f"--blocks must be >= 1, got {a.blocks}")
    if a.runs < 1 or a.warmup < 0:
        raise ProfileError(f"need --runs >= 1 and --warmup >= 0 (got {a.runs}, {a.warmup})")
    from .build import profile_onnx, profile_zoo
    from .export import default_work_dir
    from .hardware import resolve_class

    backend = a.backend
    if a.cmd == "profile":  # an ONNX file has no torch modules to time
        if backend == "torch":
            raise ProfileError("--backend torch needs a zoo model (`python -m profiler model`); "
                               "an ONNX file is timed with ONNX Runtime")
        backend = "onnxruntime"
    hw = resolve_class(a.hw, threads=a.threads, core=a.core, quota=a.cpu_quota, backend=backend)
    work = a.work_dir or default_work_dir()
    if a.cmd == "model":
        from .zoo import get_model

        zm = get_model(a.name)
        given = {"prompt_tokens": a.prompt_tokens, "new_tokens": a.new_tokens, "steps": a.steps}
        extra = [k for k, v in given.items() if v is not None and k not in zm.defaults]
        if extra:
            raise ProfileError(f"model {a.name!r} takes no --{extra[0].replace('_', '-')} "
                               f"(its parameters: {', '.join(zm.defaults)})")
        params = {k: v for k, v in given.items() if v is not None}
        from .batch import parse_batch_sizes

        sizes = parse_batch_sizes(a.batch_sizes)
        prof = profile_zoo(a.name, params, hw, work, warmup=a.warmup, runs=a.runs,
                           min_seconds=a.min_seconds,
                           reuse=not a.fresh, command=command, tolerance=a.tolerance,
                           quiet=a.quiet, passes=a.passes, batch_sizes=sizes,
                           cut_from=load_profile(a.cut_from) if a.cut_from else None)
    else:
        prof = profile_onnx(a.model, _parse_inputs(a.input), hw, work, blocks=a.blocks,
                            warmup=a.warmup, runs=a.runs, min_seconds=a.min_seconds,
                            command=command,
                            tolerance=a.tolerance, quiet=a.quiet)
    save_profile(prof, a.out)
    print(f"wrote {a.out} ({hw.label}, {sum(p.n_blocks for p in prof.passes)} blocks in "
          f"{len(prof.passes)} pass(es))")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    a = _parser().parse_args(args)
    try:
        return _run(a, args)
    except ProfileError as e:
        print(f"profiler: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("profiler: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except MemoryError:
        print("profiler: error: out of memory (try fewer passes or another machine)",
              file=sys.stderr)
        return 1
