"""Chained pieces vs the whole model: ONNX pieces run in order against torch and ORT outputs.

    .venv/bin/python benchmarks/profiler_chain_check.py [--models gpt2-tiny gpt2 sd15-tiny ...]

For every pass: export (cached), cut at module boundaries, run the pieces in a chain with ONNX
Runtime, and print the largest absolute difference of each output from (a) the whole ONNX
model and (b) the torch module. Floats must agree within 1e-4 (relative to the output's
magnitude when it exceeds 1); token ids exactly; 8-bit images within one rounding step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from profiler.cut import build_pieces, partition_by_scope  # noqa: E402
from profiler.export import default_work_dir, export_pass, work_dir_for  # noqa: E402
from profiler.graph import analyse, load_onnx  # noqa: E402
from profiler.hardware import resolve_class  # noqa: E402
from profiler.timing import compare_outputs, run_chain  # noqa: E402
from profiler.zoo import get_model  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["gpt2-tiny", "gpt2", "sd15-tiny"])
    ap.add_argument("--tolerance", type=float, default=1e-4)
    a = ap.parse_args()
    hw = resolve_class("mec")
    worst = 0.0
    for name in a.models:
        z = get_model(name)
        wd = work_dir_for(default_work_dir(), name, z.defaults)
        for spec in z.build(z.defaults):
            path = export_pass(spec, wd / f"{spec.name}.onnx")
            info = analyse(load_onnx(path))
            part = partition_by_scope(info, spec.block_key)
            pieces = build_pieces(info, part, wd, wd / f"{spec.name}.chaincheck",
                                  spec.state_inputs)
            feeds = {n: x.numpy() for n, x in zip(spec.input_names, spec.inputs, strict=True)}
            chained = run_chain(pieces, feeds, hw)
            import onnxruntime as ort

            sess = ort.InferenceSession(str(path), sess_options=hw.session_options(),
                                        providers=list(hw.providers))
            whole = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds),
                             strict=True))
            del sess
            with torch.no_grad():
                t = spec.module(*spec.inputs)
            touts = [t] if isinstance(t, torch.Tensor) else list(t)
            ref = {n: x.numpy() for n, x in zip(spec.output_names, touts, strict=True)}
            e_whole = compare_outputs(whole, chained)
            e_torch = compare_outputs(ref, chained)
            worst = max(worst, e_whole, e_torch)
            print(f"{name:<10} {spec.name:<13} {len(pieces):>3} pieces  chain vs whole ONNX "
                  f"{e_whole:.2e}  chain vs torch {e_torch:.2e}  "
                  f"{'ok' if max(e_whole, e_torch) <= a.tolerance else 'FAIL'}", flush=True)
    print(f"worst difference {worst:.2e} (tolerance {a.tolerance:g})")
    return 0 if worst <= a.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
