"""Exporting zoo passes to ONNX files, cached in a work directory outside git.

``torch.onnx.export(dynamo=True)`` records each node's module scope, which
:func:`profiler.cut.partition_by_scope` groups into blocks. A pass's ``past_inputs`` (an LLM
layer's past keys and values) are exported with a dynamic token axis (one symbolic dimension,
``past``, shared by all of them), so the same pieces run at every cache length: execute mode
(:mod:`emulator.execute`) threads the real KV cache through a generation with them. Models with more than ~1.8 GB of
weights are written with external data (``PASS.onnx.data`` next to ``PASS.onnx``).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import json
import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import cast

import torch

from .schema import ProfileError
from .zoo import PassSpec

__all__ = ["default_work_dir", "export_pass", "work_dir_for"]

_EXPORT_VERSION = 3  # bump when the zoo or the export settings change
_EXTERNAL_LIMIT = 1_800_000_000


def default_work_dir() -> Path:
    """``$AIGC_EMU_CACHE`` or ``~/.cache/aigc-offload-emu``."""
    env = os.environ.get("AIGC_EMU_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "aigc-offload-emu"


def work_dir_for(root: Path, model: str, params: Mapping[str, object]) -> Path:
    """A directory per (model and its architecture, parameters, export code version, torch
    version): a zoo model whose architecture changes never reuses an old export."""
    from .zoo import get_model

    zm = get_model(model)
    key = json.dumps({"model": model, "params": dict(params), "v": _EXPORT_VERSION,
                      "torch": torch.__version__, "source": zm.source,
                      "arch": zm.describe(cast(Mapping[str, int], params))}, sort_keys=True, default=str)
    return root / model / hashlib.sha256(key.encode()).hexdigest()[:12]


def _dynamic_shapes(spec: PassSpec) -> tuple[object, ...] | None:
    """torch.export ``dynamic_shapes`` giving every ``past_inputs`` tensor a dynamic token axis
    (one shared ``Dim``), in the structure of the module's positional parameters."""
    if not spec.past_inputs:
        return None
    past = torch.export.Dim("past", min=1, max=1 << 16)
    per_input = [{spec.past_inputs[n]: past} if n in spec.past_inputs else None
                 for n in spec.input_names]
    params = list(inspect.signature(spec.module.forward).parameters.values())
    out: list[object] = []
    i = 0
    for prm in params:
        if i >= len(per_input):
            break
        if prm.kind == inspect.Parameter.VAR_POSITIONAL:
            out.append(tuple(per_input[i:]))
            i = len(per_input)
        else:
            out.append(per_input[i])
            i += 1
    return tuple(out)


def export_pass(spec: PassSpec, path: Path, reuse: bool = True) -> Path:
    """Export ``spec`` to ``path`` (skipped when ``reuse`` and the file exists); returns it."""
    done = path.with_name(path.name + ".ok")
    if reuse and path.exists() and done.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, done, path.with_name(path.name + ".data")):
        if stale.exists():
            stale.unlink()
    nbytes = sum(p.numel() * p.element_size() for p in spec.module.parameters())
    quiet = io.StringIO()
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
            warnings.simplefilter("ignore")
            logging.getLogger("torch").setLevel(logging.ERROR)
            torch.onnx.export(spec.module, spec.inputs, str(path), dynamo=True,
                              input_names=list(spec.input_names),
                              output_names=list(spec.output_names),
                              external_data=nbytes > _EXTERNAL_LIMIT, optimize=True,
                              dynamic_shapes=_dynamic_shapes(spec))
    except OSError as e:
        raise ProfileError(f"{path}: cannot write the exported model: {e.strerror or e}") from e
    except Exception as e:
        raise ProfileError(f"export of pass {spec.name!r} failed: {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}") from e
    done.write_text("ok\n")
    return path
