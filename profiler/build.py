"""From a model to a :class:`~profiler.schema.Profile`: export, cut, check, time.

:func:`profile_zoo` does it for a zoo model (cut at module boundaries), :func:`profile_onnx`
for any ONNX file (cut points found in the graph).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import gc
import re
import shutil
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from .batch import check_batch_sizes, sum_vs_whole, with_batch
from .cut import Piece, build_pieces, partition_auto, partition_by_scope
from .export import export_pass, work_dir_for
from .graph import (
    analyse,
    dtype_of,
    fold_static_shapes,
    input_shapes,
    load_onnx,
    resolve_shapes,
)
from .hardware import HardwareClass, pinned
from .schema import Block, ModelInfo, Pass, Profile, ProfileError, TensorInfo
from .timing import PassTiming, compare_outputs, run_chain, run_whole, time_pass
from .torch_timing import time_pass_torch
from .zoo import BlockKey, PassSpec, get_model

__all__ = ["DEFAULT_TOLERANCE", "profile_onnx", "profile_pass", "profile_zoo", "timed_like"]

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
                 module_inputs: Sequence[torch.Tensor] = (),
                 past_inputs: Mapping[str, int | None] | None = None,
                 block_state: Mapping[str, tuple[int, int]] | None = None) -> Pass:
    """Cut ``whole_path`` into pieces, check the chain and time everything on ``hw``.

    Persistent state per block: ``past_inputs`` names the graph inputs that are state growing
    with the context (to their token axis; None for state that does not grow); each counts for
    the first block that reads it. ``block_state`` (block -> (per_token, fixed) bytes, zoo
    models) is what is written; it must agree with what ``past_inputs`` shows.

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
    bstate = _block_state(name, pieces, feeds, past_inputs or {}, block_state)
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
                                cold_ms=t.blocks_cold_ms[i],
                                state_bytes_per_token=bstate[p.name][0],
                                state_bytes_fixed=bstate[p.name][1]))
    total = sum(b.latency.median for b in out_blocks)
    _info(f"{name}: whole {t.whole.median:.2f} ms, sum of blocks {total:.2f} ms "
          f"({100 * (total / t.whole.median - 1):+.1f}%), chain error {t.max_error:.2g}", quiet)
    return Pass(name=name, repeat=repeat, blocks=tuple(out_blocks), whole=t.whole,
                input_bytes=in_bytes, output_bytes=out_bytes, cold_ms=t.whole_cold_ms, note=note,
                chain_max_error=t.max_error)


def _block_state(pass_name: str, pieces: Sequence[Piece], feeds: Mapping[str, np.ndarray],
                 past_inputs: Mapping[str, int | None],
                 declared: Mapping[str, tuple[int, int]] | None) -> dict[str, tuple[int, int]]:
    """(per_token, fixed) state bytes of every piece, from the graph's past-state inputs."""
    derived = {p.name: (0, 0) for p in pieces}
    for name, axis in past_inputs.items():
        # the last reader: an earlier one may read it for its length only (a dynamic past
        # axis: the embedding's positions), the layer that holds it reads its values
        reader = next((p for p in reversed(pieces) if name in p.inputs), None)
        if reader is None or name not in feeds:
            continue
        x = feeds[name]
        per, fixed = derived[reader.name]
        if axis is not None and x.shape[axis] > 0 and x.nbytes % x.shape[axis] == 0:
            per += int(x.nbytes) // int(x.shape[axis])
        else:
            fixed += int(x.nbytes)
        derived[reader.name] = (per, fixed)
    if declared is None:
        return derived
    unknown = sorted(set(declared) - set(derived))
    if unknown:
        raise ProfileError(f"pass {pass_name!r}: state declared for block {unknown[0]!r}, "
                           f"which the cut does not have (blocks: {', '.join(derived)})")
    out = {b: declared.get(b, (0, 0)) for b in derived}
    for b, v in derived.items():
        if v != (0, 0) and v != out[b]:
            raise ProfileError(f"pass {pass_name!r} block {b!r}: the graph's past inputs hold "
                               f"{v[0]} B per token + {v[1]} B, the zoo declares {out[b][0]} "
                               f"+ {out[b][1]}; fix profiler/zoo")
    return out


_PAST_NAME = re.compile(r"past|cache|state", re.IGNORECASE)
_TOKEN_DIM = re.compile(r"past|seq|len|total|cache|kv", re.IGNORECASE)


def _past_inputs(declared: Mapping[str, Sequence[int | str] | None]) -> dict[str, int | None]:
    """Graph inputs of an ONNX file that look like persistent state (past keys/values, caches).

    A name with ``past``, ``cache`` or ``state``; its token axis is its first symbolic
    dimension named like a length (``past_sequence_length``, ``total_seq``...), else the state
    counts as fixed.
    """
    out: dict[str, int | None] = {}
    for name, dims in declared.items():
        if not _PAST_NAME.search(name):
            continue
        axis = next((i for i, d in enumerate(dims or []) if isinstance(d, str)
                     and _TOKEN_DIM.search(d)), None)
        out[name] = axis
    return out


def profile_zoo(model: str, params: Mapping[str, int], hw: HardwareClass, work_root: Path, *,
                warmup: int = 2, runs: int = 10, min_seconds: float = 3.0, reuse: bool = True,
                command: str = "",
                tolerance: float = DEFAULT_TOLERANCE, quiet: bool = False,
                passes: Sequence[str] | None = None,
                batch_sizes: Sequence[int] = (1,),
                cut_from: Profile | None = None) -> Profile:
    """Export, cut and time every pass of a zoo model, at every batch size in ``batch_sizes``.

    Batch 1 is profiled first (export, cut, chain check, timing: the profile's main
    statistics and byte counts); each larger batch size then times the same blocks and the
    whole pass on a batch of that many requests, in this process, and is added as the
    block's and the pass's ``batch_ms`` (see :func:`profiler.batch.with_batch`).

    ``cut_from`` (torch timing only): a profile of the same model and request shape whose
    cut, byte counts, state and chain check are taken as they are (they do not depend on the
    hardware), so nothing is exported here and only the timings are measured
    (:func:`timed_like`).
    """
    sizes = check_batch_sizes(batch_sizes)
    zm = get_model(model)
    full = {**zm.defaults, **{k: v for k, v in params.items() if v is not None}}
    declared = zm.state(full)
    # torch times batches on the batch-1 modules (inputs repeated along the batch axis)
    base = _build(zm.name, full, passes) if hw.torch_device is not None else None
    if cut_from is not None:
        if base is None:
            raise ProfileError("--cut-from needs torch timing (--backend torch): ONNX Runtime "
                               "times the pieces it exports itself")
        ref = _reference_passes(cut_from, zm.name, zm.describe(full), [s.name for s in base])
        names = {p.name: [blk.name for blk in p.blocks] for p in ref}
        timed = _zoo_batch(zm.name, full, 1, hw, work_root, warmup=warmup, runs=runs,
                           min_seconds=min_seconds, reuse=reuse, tolerance=tolerance,
                           quiet=quiet, passes=passes, declared=declared, blocks_of=names,
                           specs=base)
        src = str(cut_from.path) if cut_from.path is not None else "a reference profile"
        out = [timed_like(r, t, src) for r, t in zip(ref, timed, strict=True)]
    else:
        out = _zoo_batch(zm.name, full, 1, hw, work_root, warmup=warmup, runs=runs,
                         min_seconds=min_seconds, reuse=reuse, tolerance=tolerance,
                         quiet=quiet, passes=passes, declared=declared, blocks_of=None,
                         specs=base)
    for b in sizes[1:]:
        names = {p.name: [blk.name for blk in p.blocks] for p in out}
        at_b = _zoo_batch(zm.name, full, b, hw, work_root, warmup=warmup, runs=runs,
                          min_seconds=min_seconds, reuse=reuse, tolerance=tolerance,
                          quiet=quiet, passes=passes, declared=declared, blocks_of=names,
                          specs=base)
        out = [with_batch(p1, b, pb) for p1, pb in zip(out, at_b, strict=True)]
    for p in out:
        for b in p.batch_sizes[1:]:
            _info(f"{p.name} batch {b}: {sum_vs_whole(p, b)}", quiet)
    info = zm.describe(full)
    if len(sizes) > 1:
        info["batch_sizes"] = list(sizes)
    how = (f"cold first run kept apart, {warmup} warm-up, then >= {runs} timed runs per "
           f"session (more within {min_seconds:g} s)")
    if len(sizes) > 1:
        how += f"; batch sizes {', '.join(map(str, sizes))} timed one after another"
    return Profile(model=ModelInfo(zm.name, zm.source, info), hardware=hw.describe(how),
                   passes=tuple(out), created=_now(), command=command)


def _reference_passes(ref: Profile, model: str, info: Mapping[str, object],
                      names: Sequence[str]) -> list[Pass]:
    """The passes ``names`` of ``ref``, which must profile ``model`` at request shape ``info``."""
    where = str(ref.path) if ref.path is not None else "--cut-from profile"
    if ref.model.name != model:
        raise ProfileError(f"{where}: profiles model {ref.model.name!r}, not {model!r}")
    have = {k: v for k, v in ref.model.parameters.items() if k != "batch_sizes"}
    # an older file may lack a parameter added to the description later (sd15's
    # vae_channels): the block names, checked when timing, must still match
    want = {k: v for k, v in info.items() if k in have}
    if have != want:
        diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        raise ProfileError(f"{where}: request shape differs from this run's in "
                           f"{', '.join(diff)} (file {[have.get(k) for k in diff]}, run "
                           f"{[want.get(k) for k in diff]}); profile with the same parameters")
    return [ref.pass_named(n) for n in names]


def timed_like(ref: Pass, timed: Pass, source: str) -> Pass:
    """``ref`` (cut, bytes, state, chain check) with ``timed``'s block and whole timings.

    Any batch curve of ``ref`` is dropped: it was measured on other hardware.
    """
    if [b.name for b in ref.blocks] != [b.name for b in timed.blocks]:
        raise ProfileError(f"pass {ref.name!r}: the torch modules give blocks "
                           f"{[b.name for b in timed.blocks]}, {source} has "
                           f"{[b.name for b in ref.blocks]}")
    blocks = tuple(dataclasses.replace(r, latency=t.latency, cold_ms=t.cold_ms,
                                       batch_latency={})
                   for r, t in zip(ref.blocks, timed.blocks, strict=True))
    note = (ref.note + "; " if ref.note else "") + f"cut and bytes from {source}"
    return dataclasses.replace(ref, blocks=blocks, whole=timed.whole, cold_ms=timed.cold_ms,
                               batch_whole={}, note=note)


def _build(model: str, params: Mapping[str, int], passes: Sequence[str] | None
           ) -> list[PassSpec]:
    """The zoo model's passes (only ``passes`` when given), errors as ProfileError."""
    try:
        specs = get_model(model).build(params)
    except ValueError as e:
        raise ProfileError(f"model {model!r}: {e}") from None
    if passes:
        unknown = sorted(set(passes) - {s.name for s in specs})
        if unknown:
            raise ProfileError(f"model {model!r} has no pass {unknown[0]!r} (passes: "
                               f"{', '.join(s.name for s in specs)})")
        specs = [s for s in specs if s.name in passes]
    return specs


def _zoo_batch(model: str, full: Mapping[str, int], batch: int, hw: HardwareClass,
               work_root: Path, *, warmup: int, runs: int, min_seconds: float, reuse: bool,
               tolerance: float, quiet: bool, passes: Sequence[str] | None,
               declared: Mapping[str, Mapping[str, tuple[int, int]]],
               blocks_of: Mapping[str, Sequence[str]] | None,
               specs: Sequence[PassSpec] | None = None) -> list[Pass]:
    """The passes of a zoo model at one batch size (``blocks_of``: block names at batch 1).

    ``specs`` (torch timing): the batch-1 passes, whose inputs are repeated ``batch`` times
    along their first (batch) axis instead of building the model again.
    """
    bparams = dict(full) if batch == 1 else {**full, "batch": batch}
    if specs is None:
        specs = _build(model, bparams, passes)
    elif batch > 1:
        specs = [dataclasses.replace(s, inputs=tuple(
            x.repeat(batch, *([1] * (x.dim() - 1))) for x in s.inputs)) for s in specs]
    tag = "" if batch == 1 else f" at batch {batch}"
    if blocks_of is not None and hw.torch_device is not None:
        # torch times the same modules on a batch: the cut was exported and checked at batch 1
        out = []
        for spec in specs:
            _info(f"{spec.name}{tag}: timing {warmup} warm-up + {runs} runs [{hw.label}]", quiet)
            with pinned(hw):
                tt = time_pass_torch(spec.name, spec.module, spec.inputs, spec.block_key,
                                     blocks_of[spec.name], torch.device(hw.torch_device),
                                     warmup=warmup, runs=runs, min_seconds=min_seconds,
                                     threads=hw.intra_threads, progress=not quiet)
            blocks = tuple(Block(name=n, latency=st, out_bytes=0, weight_bytes=0,
                                 cold_ms=c)
                           for n, st, c in zip(blocks_of[spec.name], tt.blocks,
                                               tt.blocks_cold_ms, strict=True))
            out.append(Pass(name=spec.name, repeat=spec.repeat, blocks=blocks, whole=tt.whole,
                            input_bytes=0, output_bytes=0, cold_ms=tt.whole_cold_ms))
        return out
    wd = work_dir_for(work_root, model, bparams)
    todo = []
    for spec in specs:  # export everything first, then free the torch modules before timing
        _info(f"{spec.name}{tag}: exporting to {wd / (spec.name + '.onnx')}", quiet)
        path = export_pass(spec, wd / f"{spec.name}.onnx", reuse=reuse)
        feeds = {n: x.detach().numpy().copy()
                 for n, x in zip(spec.input_names, spec.inputs, strict=True)}
        if hw.torch_device is None:  # ONNX Runtime times it: the torch module can go
            spec = dataclasses.replace(spec, module=torch.nn.Identity(), inputs=())
        todo.append((spec, path, feeds))
    specs = []
    gc.collect()
    out = []
    for spec, path, feeds in todo:
        # state bytes are per request: derived from the graph at batch 1 only
        out.append(profile_pass(spec.name + tag, spec.repeat, path, feeds, hw,
                                wd / f"{spec.name}.pieces", state=spec.state_inputs,
                                returns=spec.output_names[:1], warmup=warmup, runs=runs,
                                min_seconds=min_seconds,
                                tolerance=tolerance, note=spec.note, quiet=quiet,
                                block_key=spec.block_key, module=spec.module,
                                module_inputs=spec.inputs,
                                past_inputs=spec.past_inputs if batch == 1 else None,
                                block_state=declared.get(spec.name, {})))
    return [dataclasses.replace(p, name=s.name) for p, (s, _, _) in zip(out, todo, strict=True)]


def profile_onnx(path: Path, shapes: Mapping[str, Sequence[int]], hw: HardwareClass,
                 work_root: Path, *, blocks: int = 8, warmup: int = 2, runs: int = 10,
                 min_seconds: float = 3.0, command: str = "", tolerance: float = DEFAULT_TOLERANCE, quiet: bool = False,
                 seed: int = 0) -> Profile:
    """Profile any ONNX file: resolve input shapes, find cut points, time the pieces."""
    from .timing import random_feeds

    m = load_onnx(path)
    past = _past_inputs(input_shapes(m))
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
        note = "inputs " + "; ".join(f"{k}={list(v)}" for k, v in resolved.items())
        if past:
            note += ("; persistent state: graph inputs " + ", ".join(
                f"{k} ({'fixed' if a is None else f'token axis {a}'})" for k, a in past.items()))
        else:
            note += "; persistent state unknown (no past/cache graph inputs), assumed 0"
        p = profile_pass(path.stem, 1, static, feeds, hw, wd / "pieces", blocks=blocks,
                         warmup=warmup, runs=runs, min_seconds=min_seconds, state=set(past),
                         tolerance=tolerance, quiet=quiet, note=note, past_inputs=past)
    finally:
        if static.exists() and static.name.startswith("."):
            static.unlink()
    return Profile(model=ModelInfo(path.stem, f"ONNX file {path.name}",
                                   {k: list(v) for k, v in resolved.items()}),
                   hardware=hw.describe(f"cold first run kept apart, {warmup} warm-up, then >= {runs} "
                                       f"timed runs per session (more within {min_seconds:g} s)"),
                   passes=(p,), created=_now(), command=command)
