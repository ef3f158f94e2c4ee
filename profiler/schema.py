"""The profile file: what the profiler writes and every other package reads.

A profile describes one generative model on one hardware class. A request of the model is a
list of *passes* in request order (an LLM: ``prefill`` once, then ``decode`` once per generated
token; a diffusion model: ``text_encoder`` once, ``unet`` once per denoising step, ``vae_decoder``
once). Each pass is a chain of *blocks* in execution order. A split ``k`` of a pass with ``N``
blocks runs blocks ``[0, k)`` on the device and ``[k, N)`` on the MEC:

* ``k == N``: the pass runs entirely on the device; nothing crosses the link.
* ``0 < k < N``: ``blocks[k-1].out_bytes`` go up the link, ``pass.output_bytes`` come back.
* ``k == 0``: the pass input (``pass.input_bytes``) goes up, ``pass.output_bytes`` come back.

On disk the profile is JSON with ``"schema": 2``::

    {"schema": 2,
     "model": {"name": "gpt2", "source": "...", "parameters": {...}},
     "hardware": {"class": "device", "cpu": "...", "gpu": null, "threads": 1,
                  "backend": "onnxruntime-cpu", "versions": {...}, "description": "..."},
     "passes": [{"name": "prefill", "repeat": 1, "input_bytes": 1024, "output_bytes": 8,
                 "whole_ms": {"median": ..., "p95": ..., "mean": ..., "std": ..., "runs": 20},
                 "blocks": [{"name": "h.0", "latency_ms": {...}, "out_bytes": 393216,
                             "weight_bytes": 28311552, "out_tensors": [...],
                             "state": {"per_token": 6144, "fixed": 0}}, ...]}],
     "created": "2026-11-27T13:00:00Z", "command": "python -m profiler ..."}

Latency statistics are milliseconds. ``out_tensors`` (optional) names every tensor crossing the
cut after a block with its shape, dtype and bytes; ``out_bytes`` is their total (after the last
block: the pass output). Optional, added compatibly by the profiler: ``cold_ms`` on blocks and
passes (first run of a fresh session, not in the statistics), ``note`` and ``chain_max_error``
(worst difference of the chained pieces from the whole model) on passes.

``state`` (schema 2) is the *persistent state* that lives with a block between pass instances
of one request, in bytes: ``fixed`` bytes plus ``per_token`` bytes for every token of context
the block has processed (a GPT-2 layer's KV cache: 2 x d_model x 4 B per token in fp32, no
fixed part). It is where the block last ran; running the block on the other side later in the
request means moving it. Pass outputs (a diffusion latent, a prompt embedding) are not state.
Schema-1 files still load, with ``Block.state_bytes_per_token`` and ``state_bytes_fixed`` None;
:meth:`Pass.state_bytes` then raises :class:`ProfileError` saying how to upgrade the file
(``python -m profiler upgrade FILE`` for a zoo model).

Optional ``batch_ms`` on blocks and passes (``profiler model --batch-sizes 1,2,4,8``): the
latency statistics of the block (of the whole pass) run on a batch of ``B`` requests at once,
``{"2": {...}, "4": {...}}``; batch 1 is ``latency_ms`` / ``whole_ms``. Every block of a pass
has the same batch sizes as the pass. Byte counts stay per request (batch 1).
:meth:`Block.latency_at` and :meth:`Pass.whole_at` interpolate linearly between measured sizes
(the result has ``runs == 0``: nothing was run at that size) and refuse a size above the largest
measured one.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "READABLE_SCHEMAS",
    "SCHEMA_VERSION",
    "Block",
    "Hardware",
    "LatencyStats",
    "ModelInfo",
    "Pass",
    "Profile",
    "ProfileError",
    "TensorInfo",
    "check_compatible",
    "load_profile",
    "save_profile",
]

SCHEMA_VERSION = 2
#: schema versions :func:`load_profile` reads (1: no per-block state bytes)
READABLE_SCHEMAS = (1, 2)


class ProfileError(ValueError):
    """A profile file is missing, unreadable, malformed, or does not fit what it is used with."""


@dataclass(frozen=True)
class LatencyStats:
    """Latency statistics of repeated timed runs, in milliseconds."""

    median: float
    p95: float
    mean: float
    std: float
    runs: int

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> LatencyStats:
        """Summarise timed runs (milliseconds)."""
        import numpy as np

        a = np.asarray(samples_ms, dtype=np.float64)
        if a.size == 0:
            raise ProfileError("no timing samples")
        return cls(
            median=float(np.median(a)),
            p95=float(np.percentile(a, 95)),
            mean=float(a.mean()),
            std=float(a.std(ddof=1)) if a.size > 1 else 0.0,
            runs=int(a.size),
        )

    def to_json(self) -> dict[str, Any]:
        return {"median": self.median, "p95": self.p95, "mean": self.mean, "std": self.std,
                "runs": self.runs}


def _at(by_batch: Mapping[int, LatencyStats], batch: int, what: str) -> LatencyStats:
    """Statistics at ``batch``: measured, else linear between the nearest measured sizes."""
    if batch < 1:
        raise ValueError(f"batch size must be >= 1, got {batch}")
    if batch in by_batch:
        return by_batch[batch]
    sizes = sorted(by_batch)
    if batch > sizes[-1]:
        raise ProfileError(f"{what}: batch size {batch} is above the largest measured "
                           f"({', '.join(map(str, sizes))}); profile it with `python -m "
                           f"profiler model ... --batch-sizes {','.join(map(str, sizes))},"
                           f"{batch}`")
    hi = next(b for b in sizes if b > batch)
    lo = max(b for b in sizes if b < batch)
    w = (batch - lo) / (hi - lo)
    a, c = by_batch[lo], by_batch[hi]

    def mix(x: float, y: float) -> float:
        return x + w * (y - x)

    return LatencyStats(median=mix(a.median, c.median), p95=mix(a.p95, c.p95),
                        mean=mix(a.mean, c.mean), std=mix(a.std, c.std), runs=0)


def _batch_json(by_batch: Mapping[int, LatencyStats]) -> dict[str, Any]:
    return {str(b): by_batch[b].to_json() for b in sorted(by_batch)}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor crossing a cut."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "bytes": self.bytes}


@dataclass(frozen=True)
class Block:
    """A contiguous piece of a pass, timed on its own."""

    name: str
    latency: LatencyStats
    out_bytes: int
    weight_bytes: int
    out_tensors: tuple[TensorInfo, ...] = ()
    cold_ms: float | None = None  # first run of a fresh session, kept apart from the stats
    #: persistent state bytes per token of context (a KV cache); None: read from schema 1
    state_bytes_per_token: int | None = 0
    #: persistent state bytes that do not grow with the context; None: read from schema 1
    state_bytes_fixed: int | None = 0
    #: latency of the block run on a batch of B requests, for measured B > 1
    batch_latency: Mapping[int, LatencyStats] = field(default_factory=dict)

    def latency_at(self, batch: int) -> LatencyStats:
        """Latency statistics at batch size ``batch``.

        Measured sizes give their statistics; a size between two measured ones is linear
        interpolation between them (``runs == 0`` marks it); batch 1 is :attr:`latency`.

        :raises ProfileError: ``batch`` is above the largest measured size.
        """
        return _at({1: self.latency, **self.batch_latency}, batch, f"block {self.name!r}")

    @property
    def has_state(self) -> bool:
        """Whether the state bytes are known (False only for a block read from schema 1)."""
        return self.state_bytes_per_token is not None and self.state_bytes_fixed is not None

    def to_json(self) -> dict[str, Any]:
        if self.state_bytes_per_token is None or self.state_bytes_fixed is None:
            raise ProfileError(f"block {self.name!r} has no state bytes (read from a schema-1 "
                               "profile); upgrade the file with `python -m profiler upgrade "
                               "FILE` (zoo models) or profile the model again")
        d: dict[str, Any] = {"name": self.name, "latency_ms": self.latency.to_json(),
                             "out_bytes": self.out_bytes, "weight_bytes": self.weight_bytes}
        if self.out_tensors:
            d["out_tensors"] = [t.to_json() for t in self.out_tensors]
        if self.cold_ms is not None:
            d["cold_ms"] = self.cold_ms
        d["state"] = {"per_token": self.state_bytes_per_token, "fixed": self.state_bytes_fixed}
        if self.batch_latency:
            d["batch_ms"] = _batch_json(self.batch_latency)
        return d


@dataclass(frozen=True)
class Pass:
    """One forward pass of a request, run ``repeat`` times per request."""

    name: str
    repeat: int
    blocks: tuple[Block, ...]
    whole: LatencyStats
    input_bytes: int
    output_bytes: int
    cold_ms: float | None = None  # first run of the whole pass in a fresh session
    note: str = ""  # what the pass is measured at (e.g. the decode's past length)
    chain_max_error: float | None = None  # chained pieces vs whole model (see profiler.timing)
    #: what to say when state bytes are missing: the file and how to upgrade it (set by the
    #: loader of a schema-1 file; not part of the profile's value)
    missing_state_hint: str = field(default="", compare=False, repr=False)
    #: latency of the whole pass run on a batch of B requests, for measured B > 1
    batch_whole: Mapping[int, LatencyStats] = field(default_factory=dict)

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """The measured batch sizes, ascending (``(1,)`` without a batch curve)."""
        return (1, *sorted(self.batch_whole))

    def whole_at(self, batch: int) -> LatencyStats:
        """The whole pass's latency statistics at batch size ``batch``.

        Measured sizes give their statistics; a size between two measured ones is linear
        interpolation between them (``runs == 0`` marks it); batch 1 is :attr:`whole`.

        :raises ProfileError: ``batch`` is above the largest measured size.
        """
        return _at({1: self.whole, **self.batch_whole}, batch, f"pass {self.name!r}")

    def state_bytes(self, lo: int, hi: int, tokens: int) -> int:
        """Persistent state of blocks ``[lo, hi)`` holding ``tokens`` tokens of context, bytes.

        The sum over those blocks of ``fixed + per_token * tokens``: what moves when these
        blocks start running on the other side of the link.

        :raises ProfileError: the profile was read from schema 1 (no state bytes); the message
            names the file and the command that upgrades it.
        """
        n = len(self.blocks)
        if not 0 <= lo <= hi <= n:
            raise ValueError(f"block range [{lo}, {hi}) out of range 0..{n} for pass "
                             f"{self.name!r}")
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        total = 0
        for b in self.blocks[lo:hi]:
            if b.state_bytes_per_token is None or b.state_bytes_fixed is None:
                hint = self.missing_state_hint or (
                    "profile without state bytes (schema 1); upgrade it with `python -m "
                    "profiler upgrade FILE` (zoo models) or profile the model again")
                raise ProfileError(f"pass {self.name!r} block {b.name!r}: no persistent state "
                                   f"bytes: {hint}")
            total += b.state_bytes_fixed + b.state_bytes_per_token * tokens
        return total

    def block_medians_ms(self) -> list[float]:
        return [b.latency.median for b in self.blocks]

    def upload_bytes(self, k: int) -> int:
        """Bytes sent device -> MEC for split ``k`` (0 when the pass stays local)."""
        n = len(self.blocks)
        if not 0 <= k <= n:
            raise ValueError(f"split {k} out of range 0..{n} for pass {self.name!r}")
        if k == n:
            return 0
        return self.input_bytes if k == 0 else self.blocks[k - 1].out_bytes

    def download_bytes(self, k: int) -> int:
        """Bytes sent MEC -> device for split ``k`` (0 when the pass stays local)."""
        return 0 if k == len(self.blocks) else self.output_bytes

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "repeat": self.repeat,
                             "input_bytes": self.input_bytes, "output_bytes": self.output_bytes,
                             "whole_ms": self.whole.to_json(),
                             "blocks": [b.to_json() for b in self.blocks]}
        if self.cold_ms is not None:
            d["cold_ms"] = self.cold_ms
        if self.note:
            d["note"] = self.note
        if self.chain_max_error is not None:
            d["chain_max_error"] = self.chain_max_error
        if self.batch_whole:
            d["batch_ms"] = _batch_json(self.batch_whole)
        return d


@dataclass(frozen=True)
class Hardware:
    """The hardware class a profile was measured on, and how."""

    hw_class: str
    cpu: str
    gpu: str | None
    threads: int
    backend: str
    versions: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"class": self.hw_class, "cpu": self.cpu, "gpu": self.gpu,
                "threads": self.threads, "backend": self.backend,
                "versions": dict(self.versions), "description": self.description}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    source: str
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "parameters": dict(self.parameters)}


@dataclass(frozen=True)
class Profile:
    """A measured profile of one model on one hardware class."""

    model: ModelInfo
    hardware: Hardware
    passes: tuple[Pass, ...]
    created: str = ""
    command: str = ""
    schema: int = SCHEMA_VERSION  # the version the file was read with (saved as SCHEMA_VERSION)
    #: the file it was read from (set by :func:`load_profile`; not part of the profile's value)
    path: Path | None = field(default=None, compare=False)

    @property
    def has_state(self) -> bool:
        """Whether every block's persistent state bytes are known (False for schema 1)."""
        return all(b.has_state for p in self.passes for b in p.blocks)

    def pass_named(self, name: str) -> Pass:
        for p in self.passes:
            if p.name == name:
                return p
        names = ", ".join(p.name for p in self.passes)
        raise ProfileError(f"profile of {self.model.name!r} has no pass {name!r} (has: {names})")

    def to_json(self) -> dict[str, Any]:
        """The profile as schema-:data:`SCHEMA_VERSION` JSON (ProfileError without state)."""
        return {"schema": SCHEMA_VERSION, "model": self.model.to_json(),
                "hardware": self.hardware.to_json(),
                "passes": [p.to_json() for p in self.passes],
                "created": self.created, "command": self.command}

    @classmethod
    def from_json(cls, data: Any, where: str = "<profile>") -> Profile:
        """Validate and build a profile from parsed JSON; errors name ``where`` and the field."""
        return _parse_profile(data, where)


def save_profile(profile: Profile, path: str | Path) -> None:
    """Write ``profile`` as schema-2 JSON (atomically: a temporary file renamed into place).

    :raises ProfileError: the profile has no state bytes (read from schema 1), or the file
        cannot be written.
    """
    p = Path(path)
    data = profile.to_json()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(p)
    except OSError as e:
        raise ProfileError(f"{p}: cannot write profile: {e.strerror or e}") from e


def load_profile(path: str | Path) -> Profile:
    """Read and validate a profile file. Raises :class:`ProfileError` naming file and field."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ProfileError(f"{p}: profile file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ProfileError(f"{p}: cannot read profile: {e}") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProfileError(f"{p}:{e.lineno}: not valid JSON ({e.msg})") from None
    return _parse_profile(data, str(p), path=p)


def check_compatible(device: Profile, mec: Profile) -> None:
    """Raise :class:`ProfileError` unless two profiles describe the same model and blocks."""
    if device.model.name != mec.model.name:
        raise ProfileError(f"device profile is of model {device.model.name!r} but MEC profile "
                           f"is of {mec.model.name!r}")
    dn = [(p.name, [b.name for b in p.blocks]) for p in device.passes]
    mn = [(p.name, [b.name for b in p.blocks]) for p in mec.passes]
    if dn != mn:
        raise ProfileError(f"device and MEC profiles of {device.model.name!r} have different "
                           "passes or blocks; profile both with the same model parameters")


# ---------------------------------------------------------------- validation helpers


def _get(d: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(d, dict):
        raise ProfileError(f"{where}: expected an object")
    if key not in d:
        raise ProfileError(f"{where}: missing field {key!r}")
    v = d[key]
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool):
        want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ProfileError(f"{where}: field {key!r} must be {want}, got {type(v).__name__}")
    return v


def _nonneg_float(d: Any, key: str, where: str) -> float:
    v = _get(d, key, float, where)
    if not math.isfinite(v) or v < 0:
        raise ProfileError(f"{where}: field {key!r} must be a finite number >= 0, got {v}")
    return float(v)


def _nonneg_int(d: Any, key: str, where: str) -> int:
    v = _get(d, key, int, where)
    if v < 0:
        raise ProfileError(f"{where}: field {key!r} must be >= 0, got {v}")
    return int(v)


def _opt_float(d: Any, key: str, where: str) -> float | None:
    return _nonneg_float(d, key, where) if isinstance(d, dict) and key in d else None


def _stats(d: Any, where: str) -> LatencyStats:
    return LatencyStats(median=_nonneg_float(d, "median", where), p95=_nonneg_float(d, "p95", where),
                        mean=_nonneg_float(d, "mean", where), std=_nonneg_float(d, "std", where),
                        runs=_nonneg_int(d, "runs", where))


def _state(rb: Any, schema: int, where: str) -> tuple[int | None, int | None]:
    if schema < 2:
        return None, None
    st = _get(rb, "state", dict, where)
    return (_nonneg_int(st, "per_token", f"{where} state"),
            _nonneg_int(st, "fixed", f"{where} state"))


def _missing_state_hint(model: ModelInfo, command: str, path: Path | None) -> str:
    f = str(path) if path is not None else "FILE"
    what = f"{path} is a schema-1 profile" if path is not None else "a schema-1 profile"
    if model.source.startswith("profiler/zoo/"):
        return (f"{what}; add them without re-timing: python -m profiler upgrade {shlex.quote(f)}")
    again = command or "python -m profiler profile MODEL.onnx ... --out " + f
    return f"{what} of a model outside the zoo; profile it again: {again}"


def _batch(d: Any, where: str) -> dict[int, LatencyStats]:
    """The optional ``batch_ms`` object: batch sizes > 1 (as strings) to statistics."""
    if not isinstance(d, dict) or "batch_ms" not in d:
        return {}
    raw = _get(d, "batch_ms", dict, where)
    out: dict[int, LatencyStats] = {}
    for k, v in raw.items():
        try:
            b = int(k)
        except ValueError:
            b = 0
        if b < 2 or str(b) != k:
            raise ProfileError(f"{where} batch_ms: key {k!r} must be a batch size >= 2 "
                               "written as an integer (batch 1 is latency_ms / whole_ms)")
        out[b] = _stats(v, f"{where} batch_ms[{k!r}]")
    return out


def _parse_profile(data: Any, where: str, path: Path | None = None) -> Profile:
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: a profile must be a JSON object")
    schema = _get(data, "schema", int, where)
    if schema not in READABLE_SCHEMAS:
        newer = " (written by a newer version of the profiler; update this checkout)" \
            if schema > SCHEMA_VERSION else ""
        raise ProfileError(f"{where}: schema {schema} is not supported (this version reads "
                           f"schema {', '.join(map(str, READABLE_SCHEMAS))}){newer}")
    m = _get(data, "model", dict, where)
    model = ModelInfo(name=_get(m, "name", str, f"{where}: model"),
                      source=str(m.get("source", "")), parameters=dict(m.get("parameters", {})))
    h = _get(data, "hardware", dict, where)
    hw = Hardware(hw_class=_get(h, "class", str, f"{where}: hardware"),
                  cpu=str(h.get("cpu", "")), gpu=h.get("gpu"),
                  threads=_nonneg_int(h, "threads", f"{where}: hardware"),
                  backend=str(h.get("backend", "")),
                  versions={str(k): str(v) for k, v in dict(h.get("versions", {})).items()},
                  description=str(h.get("description", "")))
    command = str(data.get("command", ""))
    hint = _missing_state_hint(model, command, path) if schema < 2 else ""
    raw_passes = _get(data, "passes", list, where)
    if not raw_passes:
        raise ProfileError(f"{where}: 'passes' is empty")
    passes = []
    for i, rp in enumerate(raw_passes):
        pw = f"{where}: passes[{i}]"
        name = _get(rp, "name", str, pw)
        pw = f"{where}: pass {name!r}"
        repeat = _nonneg_int(rp, "repeat", pw)
        if repeat < 1:
            raise ProfileError(f"{pw}: 'repeat' must be >= 1")
        raw_blocks = _get(rp, "blocks", list, pw)
        if not raw_blocks:
            raise ProfileError(f"{pw}: 'blocks' is empty")
        blocks = []
        for j, rb in enumerate(raw_blocks):
            bw = f"{pw} blocks[{j}]"
            per_token, fixed = _state(rb, schema, bw)
            tensors = tuple(
                TensorInfo(name=str(t.get("name", "")), shape=tuple(int(x) for x in t.get("shape", [])),
                           dtype=str(t.get("dtype", "")), bytes=_nonneg_int(t, "bytes", bw))
                for t in rb.get("out_tensors", []) if isinstance(t, dict))
            blocks.append(Block(name=_get(rb, "name", str, bw),
                                latency=_stats(_get(rb, "latency_ms", dict, bw), f"{bw} latency_ms"),
                                out_bytes=_nonneg_int(rb, "out_bytes", bw),
                                weight_bytes=_nonneg_int(rb, "weight_bytes", bw),
                                out_tensors=tensors, cold_ms=_opt_float(rb, "cold_ms", bw),
                                state_bytes_per_token=per_token, state_bytes_fixed=fixed,
                                batch_latency=_batch(rb, bw)))
        batch_whole = _batch(rp, pw)
        for j, b in enumerate(blocks):
            if sorted(b.batch_latency) != sorted(batch_whole):
                raise ProfileError(f"{pw} blocks[{j}]: batch sizes {sorted(b.batch_latency)} in "
                                   f"'batch_ms' differ from the pass's {sorted(batch_whole)}")
        passes.append(Pass(name=name, repeat=repeat, blocks=tuple(blocks),
                           whole=_stats(_get(rp, "whole_ms", dict, pw), f"{pw} whole_ms"),
                           input_bytes=_nonneg_int(rp, "input_bytes", pw),
                           output_bytes=_nonneg_int(rp, "output_bytes", pw),
                           cold_ms=_opt_float(rp, "cold_ms", pw), note=str(rp.get("note", "")),
                           chain_max_error=_opt_float(rp, "chain_max_error", pw),
                           missing_state_hint=hint, batch_whole=batch_whole))
    return Profile(model=model, hardware=hw, passes=tuple(passes),
                   created=str(data.get("created", "")), command=command,
                   schema=schema, path=path)
