"""From a model to a :class:`~profiler.schema.Profile`: export, cut, check, time.

:func:`profile_zoo` does it for a zoo model (cut at module boundaries), :func:`profile_onnx`
for any ONNX file (cut points found in the graph).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import gc
import shutil
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from .cut import build_pieces, partition_auto, partition_by_scope
from .export import export_pass, work_dir_for
from .graph import analyse, dtype_of, fold_static_shapes, load_onnx, resolve_shapes
from .hardware import HardwareClass, pinned
from .schema import Block, ModelInfo, Pass, Profile, ProfileError, TensorInfo
from .timing import PassTiming, compare_outputs, run_chain, run_whole, time_pass
from .torch_timing import time_pass_torch
from .zoo import BlockKey, get_model

__all__ = ["DEFAULT_TOLERANCE", "profile_onnx", "profile_pass", "profile_zoo"]

DEFAULT_TOLERANCE = 1e-4


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _info(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def profile_pass(name: str, repeat: int, whole_path: Path,
                 feeds: Mapping[str, np.ndarray], hw: HardwareClass, pieces_dir: Path, *,
                 state: Collection[str] = (), returns: Sequence[str] | None = None,
                 blocks: int = 8, warmup: int = 2, runs: int = 10, min_seconds: float = 3.0,
                 tolerance: float = DEFAULT_TOLERANCE, note: str = "", quiet: bool = False,
                 block_key: BlockKey | None = None, module: torch.nn.Module | None = None,
                 module_inputs: Sequence[torch.Tensor] = ()) -> Pass:
    """Cut ``whole_path`` into pieces, check the chain and time everything on ``hw``.

    Blocks follow module scopes when ``block_key`` is given (zoo models), otherwise cut
    points are found in the graph (about ``blocks`` blocks). When ``hw`` times with torch,
    ``module(*module_inputs)`` (the pass the ONNX file was exported from) is timed on the
    same blocks, and ONNX Runtime on the CPU only runs the chain check once.
    """
    if hw.torch_device is not None and (module is None or block_key is None):
        raise ProfileError("timing with torch needs a zoo model (its torch modules); an ONNX "
                           "file is timed with ONNX Runtime (--backend onnxruntime)")
    m = load_onnx(whole_path)
    info = analyse(m)
    if block_key is not None:
        part = partition_by_scope(info, block_key)
    else:
        part = partition_auto(info, blocks)
    for n in part.notes:
        _info(f"note: {n}", quiet)
    if pieces_dir.exists():
        shutil.rmtree(pieces_dir)
    pieces = build_pieces(info, part, whole_path.parent, pieces_dir, state)
    wbytes = sum(p.weight_bytes for p in pieces)
    _info(f"{name}: {len(pieces)} blocks, timing {warmup} warm-up + {runs} runs [{hw.label}]",
          quiet)
    with pinned(hw):
        if hw.torch_device is None:
            t = time_pass(name, whole_path, pieces, feeds, hw, warmup=warmup, runs=runs,
                          weight_bytes=wbytes, min_seconds=min_seconds, progress=not quiet)
        else:
            assert module is not None and block_key is not None
            # ONNX Runtime on the CPU runs the chain and the whole model once (the check and
            # the cut tensors); torch times the blocks
            check = dataclasses.replace(hw, torch_device=None, providers=("CPUExecutionProvider",))
            values = run_chain(pieces, feeds, check)
            wout = run_whole(whole_path, feeds, check)
            tt = time_pass_torch(name, module, module_inputs, block_key,
                                 [p.name for p in pieces], torch.device(hw.torch_device),
                                 warmup=warmup, runs=runs, min_seconds=min_seconds,
                                 threads=hw.intra_threads, progress=not quiet)
            t = PassTiming(whole=tt.whole, whole_cold_ms=tt.whole_cold_ms, blocks=tt.blocks,
                           blocks_cold_ms=tt.blocks_cold_ms, values=values, whole_outputs=wout,
                           max_error=compare_outputs(wout, values))
    if t.max_error > tolerance:
        raise ProfileError(f"pass {name!r}: chained pieces differ from the whole model by "
                           f"{t.max_error:.3g} (> tolerance {tolerance:g}); the cut is wrong")
    returns = list(returns) if returns is not None else list(t.whole_outputs)
    out_bytes = sum(int(t.whole_outputs[r].nbytes) for r in returns)
    in_bytes = sum(int(v.nbytes) for k, v in feeds.items() if k not in state)
    out_blocks = []
    for i, p in enumerate(pieces):
        if i < len(pieces) - 1:
            tensors = tuple(TensorInfo(x, tuple(int(d) for d in t.values[x].shape),
                                       str(t.values[x].dtype), int(t.values[x].nbytes))
                            for x in p.crossing)
            ob = sum(x.bytes for x in tensors)
        else:
            tensors = tuple(TensorInfo(r, tuple(int(d) for d in t.whole_outputs[r].shape),
                                       str(t.whole_outputs[r].dtype),
                                       int(t.whole_outputs[r].nbytes)) for r in returns)
            ob = out_bytes
        out_blocks.append(Block(name=p.name, latency=t.blocks[i], out_bytes=ob,
                                weight_bytes=p.weight_bytes, out_tensors=tensors,
                                cold_ms=t.blocks_cold_ms[i]))
    total = sum(b.latency.median for b in out_blocks)
    _info(f"{name}: whole {t.whole.median:.2f} ms, sum of blocks {total:.2f} ms "
          f"({100 * (total / t.whole.median - 1):+.1f}%), chain error {t.max_error:.2g}", quiet)
    return Pass(name=name, repeat=repeat, blocks=tuple(out_blocks), whole=t.whole,
                input_bytes=in_bytes, output_bytes=out_bytes, cold_ms=t.whole_cold_ms, note=note,
                chain_max_error=t.max_error)


def profile_zoo(model: str, params: Mapping[str, int], hw: HardwareClass, work_root: Path, *,
                warmup: int = 2, runs: int = 10, min_seconds: float = 3.0, reuse: bool = True,
                command: str = "",
                tolerance: float = DEFAULT_TOLERANCE, quiet: bool = False,
                passes: Sequence[str] | None = None) -> Profile:
    """Export, cut and time every pass of a zoo model."""
    zm = get_model(model)
    full = {**zm.defaults, **{k: v for k, v in params.items() if v is not None}}
    try:
        specs = zm.build(full)
    except ValueError as e:
        raise ProfileError(f"model {model!r}: {e}") from None
    wd = work_dir_for(work_root, model, full)
    if passes:
        unknown = sorted(set(passes) - {s.name for s in specs})
        if unknown:
            raise ProfileError(f"model {model!r} has no pass {unknown[0]!r} (passes: "
                               f"{', '.join(s.name for s in specs)})")
    todo = []
    for spec in specs:  # export everything first, then free the torch modules before timing
        if passes and spec.name not in passes:
            continue
        _info(f"{spec.name}: exporting to {wd / (spec.name + '.onnx')}", quiet)
        path = export_pass(spec, wd / f"{spec.name}.onnx", reuse=reuse)
        feeds = {n: x.detach().numpy().copy()
                 for n, x in zip(spec.input_names, spec.inputs, strict=True)}
        if hw.torch_device is None:  # ONNX Runtime times it: the torch module can go
            spec = dataclasses.replace(spec, module=torch.nn.Identity(), inputs=())
        todo.append((spec, path, feeds))
    del specs
    gc.collect()
    out: list[Pass] = []
    for spec, path, feeds in todo:
        out.append(profile_pass(spec.name, spec.repeat, path, feeds, hw,
                                wd / f"{spec.name}.pieces", state=spec.state_inputs,
                                returns=spec.output_names[:1], warmup=warmup, runs=runs,
                                min_seconds=min_seconds,
                                tolerance=tolerance, note=spec.note, quiet=quiet,
                                block_key=spec.block_key, module=spec.module,
                                module_inputs=spec.inputs))
    return Profile(model=ModelInfo(zm.name, zm.source, zm.describe(full)),
                   hardware=hw.describe(f"cold first run kept apart, {warmup} warm-up, then >= {runs} "
                                       f"timed runs per session (more within {min_seconds:g} s)"),
                   passes=tuple(out), created=_now(), command=command)


def profile_onnx(path: Path, shapes: Mapping[str, Sequence[int]], hw: HardwareClass,
                 work_root: Path, *, blocks: int = 8, warmup: int = 2, runs: int = 10,
                 min_seconds: float = 3.0, command: str = "", tolerance: float = DEFAULT_TOLERANCE, quiet: bool = False,
                 seed: int = 0) -> Profile:
    """Profile any ONNX file: resolve input shapes, find cut points, time the pieces."""
    from .timing import random_feeds

    m = load_onnx(path)
    resolved = resolve_shapes(m, shapes)
    folded = fold_static_shapes(m)
    if folded:
        _info(f"note: {folded} Shape/Size node(s) folded into constants", quiet)
    import hashlib

    tag = hashlib.sha256(f"{path.resolve()}:{path.stat().st_mtime}:{sorted(resolved.items())}"
                         .encode()).hexdigest()[:12]
    wd = work_root / "onnx" / f"{path.stem}-{tag}"
    wd.mkdir(parents=True, exist_ok=True)
    import onnx

    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)
    # a copy with the resolved shapes; with external weights it must sit next to their files
    static = (path.parent / f".{path.stem}.static-{tag}.onnx" if external
              else wd / "model.static.onnx")
    try:
        try:
            onnx.save(m, str(static))
        except OSError as e:
            raise ProfileError(f"{static.parent}: cannot write a working copy of the model "
                               f"({e.strerror or e})") from None
        info_types = {vi.name: vi for vi in m.graph.input}
        types = {n: (s, dtype_of(info_types[n].type.tensor_type.elem_type))
                 for n, s in resolved.items()}
        feeds = random_feeds(types, seed)
        p = profile_pass(path.stem, 1, static, feeds, hw, wd / "pieces", blocks=blocks,
                         warmup=warmup, runs=runs, min_seconds=min_seconds,
                         tolerance=tolerance, quiet=quiet, note="inputs " + "; ".join(f"{k}={list(v)}" for k, v in resolved.items()))
    finally:
        if static.exists() and static.name.startswith("."):
            static.unlink()
    return Profile(model=ModelInfo(path.stem, f"ONNX file {path.name}",
                                   {k: list(v) for k, v in resolved.items()}),
                   hardware=hw.describe(f"cold first run kept apart, {warmup} warm-up, then >= {runs} "
                                       f"timed runs per session (more within {min_seconds:g} s)"),
                   passes=(p,), created=_now(), command=command)
