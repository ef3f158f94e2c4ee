"""Execute mode: the device runs the ONNX pieces before the split, the MEC the rest.

The pieces are the profiler's exported per-block ONNX models of each pass
(``<cache>/<model>/<key>/<pass>.pieces/NNN.onnx``, cache ``$AIGC_EMU_CACHE`` or
``~/.cache/aigc-offload-emu``; made by ``python -m profiler model NAME``). Both sides open one
ONNX Runtime session per piece (CPU, 1 intra-op thread, no spinning).

State (LLM models, whose pieces read ``past_*`` inputs with a dynamic token axis; exported so
by :func:`profiler.export.export_pass`): a generation is executed for real. The prompt
(``input_ids`` of the first pass) is drawn from the request's seed (integers in ``[0, 100)``);
the token a pass outputs (``next_token``) is the next pass's ``input_ids``; a layer's cache
output ``present_X`` is its ``past_X`` input in the next pass (the naming of the zoo's GPT-2).
Each side keeps the cache of the layers it ran (an item of the request's inbox); it crosses
the link only when the plan migrates it. A piece that reads a ``past_*`` input only for its
length (the embedding's positions) gets a zero placeholder of the current length when that
cache is on the other side. Pieces exported with a fixed past length are refused.

Other models (diffusion): every pass repetition draws its graph inputs from a seed that both
sides derive from the request's seed (:func:`emulator.steps.instance_seed`); integer inputs are
drawn in ``[0, 100)``, float inputs from N(0, 0.5^2); what is checked is each split pass.

What crosses the link: after block ``k-1`` the tensors the profile lists in that block's
``out_tensors`` (the cut); for ``k == 0`` the graph inputs that piece 0 reads or that cross
some cut. Tensors travel as raw C-order bytes, described in the message metadata
(``tensors``: name, dtype, shape).

Check (:meth:`emulator.steps.StepRunner.check`): an LLM request's generated tokens against
:meth:`PieceRunner.generate`, the same generation with every piece local; a diffusion request's
pass outputs from the MEC against local execution of the same instances (``numpy.allclose``,
rtol 1e-4, atol 1e-5; ORT on one machine is normally bit-exact).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.plan import tokens_appended
from emulator.errors import EmulatorError, ProtocolError
from profiler.schema import Profile

__all__ = [
    "DTYPES",
    "PieceRunner",
    "decode_tensors",
    "encode_tensors",
    "find_pieces_dir",
    "state_input",
]

PAST, PRESENT = "past_", "present_"


def state_input(output_name: str) -> str:
    """The ``past_*`` input a ``present_*`` cache output feeds in the next pass."""
    return PAST + output_name[len(PRESENT):] if output_name.startswith(PRESENT) else output_name

DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16",
              "tensor(double)": "float64", "tensor(int64)": "int64", "tensor(int32)": "int32",
              "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


def _cache_root() -> Path:
    env = os.environ.get("AIGC_EMU_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "aigc-offload-emu"


def find_pieces_dir(profile: Profile, given: str | Path | None = None) -> Path:
    """The export directory holding ``<pass>.pieces/`` with one piece per block for every pass
    of ``profile`` (the most recent match under the cache when not ``given``)."""
    def fits(d: Path) -> bool:
        for p in profile.passes:
            pieces = sorted((d / f"{p.name}.pieces").glob("*.onnx"))
            if len(pieces) != p.n_blocks:
                return False
        return True

    if given is not None:
        d = Path(given)
        if not fits(d):
            raise EmulatorError(f"--pieces {d}: no <pass>.pieces/ with one ONNX piece per block "
                                f"for every pass of {profile.model.name!r}", 2)
        return d
    root = _cache_root() / profile.model.name
    cands = [d for d in root.glob("*") if d.is_dir() and fits(d)] if root.is_dir() else []
    if not cands:
        raise EmulatorError(f"--compute execute: no exported ONNX pieces of {profile.model.name!r} "
                            f"under {root}; export them with python -m profiler model "
                            f"{profile.model.name} --class device", 2)
    return max(cands, key=lambda d: d.stat().st_mtime)


def encode_tensors(tensors: Mapping[str, np.ndarray]) -> tuple[list[dict[str, Any]], bytes]:
    """(descriptions, payload) for a set of named arrays."""
    descs, parts = [], []
    for name, arr in tensors.items():
        a = np.ascontiguousarray(arr)
        if a.dtype.name not in DTYPES:
            raise EmulatorError(f"tensor {name!r} has unsupported dtype {a.dtype}")
        descs.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape)})
        parts.append(a.tobytes())
    return descs, b"".join(parts)


def decode_tensors(descs: Any, payload: bytes | bytearray | memoryview) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode_tensors`; validates dtypes, shapes and the total size."""
    if not isinstance(descs, list):
        raise ProtocolError("tensor descriptions must be a list")
    out: dict[str, np.ndarray] = {}
    buf = memoryview(payload).cast("B")
    off = 0
    for d in descs:
        try:
            name, dtype, shape = str(d["name"]), str(d["dtype"]), [int(x) for x in d["shape"]]
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"malformed tensor description {d!r}") from e
        if dtype not in DTYPES or any(x < 0 for x in shape):
            raise ProtocolError(f"tensor {name!r}: bad dtype {dtype!r} or shape {shape}")
        n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if off + n > buf.nbytes:
            raise ProtocolError(f"tensor {name!r} needs {n} bytes past the payload's end")
        out[name] = np.frombuffer(buf[off:off + n], dtype=dtype).reshape(shape).copy()
        off += n
    if off != buf.nbytes:
        raise ProtocolError(f"payload has {buf.nbytes - off} bytes beyond its tensors")
    return out


class PieceRunner:
    """ORT sessions of every piece of every pass, and the seeded graph inputs."""

    def __init__(self, profile: Profile, pieces_dir: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        self.profile = profile
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        self.sessions: list[list[Any]] = []
        self.graph_inputs: list[dict[str, tuple[str, list[int]]]] = []
        self.sent_at_zero: list[set[str]] = []
        self.past_axis: list[dict[str, int]] = []  # pass -> {past_* input: its token axis}
        self.chain_input: list[str | None] = []  # the input a previous pass's token feeds
        for p in profile.passes:
            files = sorted((pieces_dir / f"{p.name}.pieces").glob("*.onnx"))
            sess = [ort.InferenceSession(str(f), so, providers=["CPUExecutionProvider"])
                    for f in files]
            produced: set[str] = set()
            ginputs: dict[str, tuple[str, list[int]]] = {}
            axes: dict[str, int] = {}
            for s in sess:
                for i in s.get_inputs():
                    if i.name not in produced and i.name not in ginputs:
                        dtype = _ORT_TYPES.get(i.type)
                        if dtype is None:
                            raise EmulatorError(f"{files[0].parent}: input {i.name} has "
                                                f"unsupported type {i.type}")
                        shape = [d if isinstance(d, int) and d >= 0 else 1 for d in i.shape]
                        ginputs[i.name] = (dtype, shape)
                        if i.name.startswith(PAST):
                            dyn = [a for a, d in enumerate(i.shape) if not isinstance(d, int)]
                            if len(dyn) != 1:
                                raise EmulatorError(
                                    f"{files[0].parent}: {i.name} was exported with a fixed "
                                    f"past length ({list(i.shape)}); re-export the pieces with "
                                    f"python -m profiler model {profile.model.name} --fresh", 2)
                            axes[i.name] = dyn[0]
                produced.update(o.name for o in s.get_outputs())
            crossing = {t.name for b in p.blocks for t in b.out_tensors}
            first = {i.name for i in sess[0].get_inputs()}
            self.sent_at_zero.append({n for n in ginputs if (n in first or n in crossing)
                                      and not n.startswith(PAST)})
            self.sessions.append(sess)
            self.graph_inputs.append(ginputs)
            self.past_axis.append(axes)
            free = [n for n in ginputs if n not in axes]
            self.chain_input.append(free[0] if len(free) == 1 else None)
        self._io = [[(s, [i.name for i in s.get_inputs()], [o.name for o in s.get_outputs()])
                     for s in sess] for sess in self.sessions]
        self.threaded = any(self.past_axis)
        """An LLM: the KV cache and the tokens are threaded through the generation."""
        params = profile.model.parameters
        self.appends = [tokens_appended(p.name, params, p.input_bytes) for p in profile.passes]
        self._zeros = np.zeros(0, dtype=np.float32)

    def past_len(self, pass_index: int, rep: int) -> int:
        """Tokens in the cache when instance ``rep`` of the pass starts (earlier passes run
        their profiled repeats; the LLM's prefill once)."""
        before = sum(self.appends[q] * self.profile.passes[q].repeat for q in range(pass_index))
        return before + self.appends[pass_index] * rep

    def placeholder(self, pass_index: int, name: str, length: int) -> np.ndarray:
        """Zeros of a ``past_*`` input's shape at ``length`` tokens (a view of one buffer)."""
        dtype, shape = self.graph_inputs[pass_index][name]
        shape = list(shape)
        shape[self.past_axis[pass_index][name]] = length
        n = int(np.prod(shape))
        if self._zeros.size < n:
            self._zeros = np.zeros(2 * n, dtype=np.float32)
        return self._zeros[:n].view(np.float32).astype(dtype, copy=False).reshape(shape)

    def inputs(self, pass_index: int, seed: int,
               skip: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """The seeded graph inputs of a pass repetition (except those in ``skip``)."""
        rng = np.random.default_rng(seed)
        out = {}
        for name, (dtype, shape) in sorted(self.graph_inputs[pass_index].items()):
            if dtype in ("int64", "int32", "int8", "uint8"):
                v = rng.integers(0, 100, size=shape).astype(dtype)
            elif dtype == "bool":
                v = np.ones(shape, dtype=bool)
            else:
                v = (0.5 * rng.standard_normal(shape)).astype(dtype)
            if name not in skip:
                out[name] = v
        return out

    def run(self, pass_index: int, lo: int, hi: int,
            env: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run pieces ``[lo, hi)`` on ``env`` (updated in place with their outputs)."""
        for s, ins, outs in self._io[pass_index][lo:hi]:
            env.update(zip(outs, s.run(outs, {n: env[n] for n in ins}), strict=True))
        return env

    def cut_names(self, pass_index: int, k: int) -> list[str]:
        """Names of the tensors that cross the link for split ``k`` (``k < n_blocks``): what
        pieces ``[k, N)`` read that pieces ``[0, k)`` made (the pieces' own names: a profile
        made from another export of the model may name them differently)."""
        if k == 0:
            return sorted(self.sent_at_zero[pass_index])
        later = {i.name for s in self.sessions[pass_index][k:] for i in s.get_inputs()}
        earlier = {o.name for s in self.sessions[pass_index][:k] for o in s.get_outputs()}
        return sorted(later & earlier)

    def output_names(self, pass_index: int) -> list[str]:
        """The pass outputs (what the last piece makes, its cache outputs aside)."""
        return [o.name for o in self.sessions[pass_index][-1].get_outputs()
                if not o.name.startswith(PRESENT)]

    def state_outputs(self, pass_index: int, lo: int, hi: int) -> list[list[str]]:
        """Per block of ``[lo, hi)``: the cache outputs (``present_*``) its piece makes."""
        return [[o.name for o in s.get_outputs() if o.name.startswith(PRESENT)]
                for s in self.sessions[pass_index][lo:hi]]

    def generate(self, seeds: Sequence[int], repeats: Sequence[int]) -> list[np.ndarray]:
        """The tokens of a whole generation with every piece here: pass ``q`` run
        ``repeats[q]`` times, instance ``r`` on the inputs of seed ``seeds[...]`` (one per
        instance, in order); the reference of an LLM request's check."""
        tokens: list[np.ndarray] = []
        cache: dict[str, np.ndarray] = {}
        i = 0
        for pi, reps in enumerate(repeats):
            for _ in range(reps):
                env = self.inputs(pi, seeds[i], skip=list(self.past_axis[pi]))
                i += 1
                if tokens and self.chain_input[pi] is not None:
                    env[self.chain_input[pi] or ""] = tokens[-1]
                env.update(cache)
                self.run(pi, 0, len(self.sessions[pi]), env)
                cache = {state_input(n): env[n] for n in env if n.startswith(PRESENT)}
                tokens.append(env[self.output_names(pi)[0]])
        return tokens

    def local(self, pass_index: int, seed: int) -> dict[str, np.ndarray]:
        """The pass outputs when everything runs here (the reference of the check)."""
        env = self.run(pass_index, 0, len(self.sessions[pass_index]),
                       self.inputs(pass_index, seed))
        return {n: env[n] for n in self.output_names(pass_index)}
