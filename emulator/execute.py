"""Execute mode: the device runs the ONNX pieces before the split, the MEC the rest.

The pieces are the profiler's exported per-block ONNX models of each pass
(``<cache>/<model>/<key>/<pass>.pieces/NNN.onnx``, cache ``$AIGC_EMU_CACHE`` or
``~/.cache/aigc-offload-emu``; made by ``python -m profiler model NAME``). Both sides open one
ONNX Runtime session per piece (CPU, 1 intra-op thread, no spinning).

Inputs: every pass repetition draws its graph inputs from a seed that both sides derive from
the request's seed (:func:`emulator.steps.instance_seed`); integer inputs are drawn in ``[0, 100)`` (valid token ids),
float inputs from N(0, 0.5^2). Passes are executed independently (a decode token does not feed
the next; the KV cache is the seeded ``past_*`` input): what is checked is the split, not the
generation.

What crosses the link: after block ``k-1`` the tensors the profile lists in that block's
``out_tensors`` (the cut); for ``k == 0`` the graph inputs that piece 0 reads or that cross
some cut. Graph inputs that never cross (state: a KV cache, a prompt embedding) are regenerated
from the seed on the MEC side, as the state that stays on each side of a split. Tensors travel
as raw C-order bytes, described in the message metadata (``tensors``: name, dtype, shape).

Check: after each request the device runs every executed pass repetition locally, all pieces
on the same inputs, and compares the MEC's returned outputs with that local execution
(``numpy.allclose``, rtol 1e-4, atol 1e-5; ORT on one machine is normally bit-exact).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emulator.errors import EmulatorError, ProtocolError
from profiler.schema import Profile

__all__ = [
    "DTYPES",
    "PieceRunner",
    "decode_tensors",
    "encode_tensors",
    "find_pieces_dir",
]

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
        for p in profile.passes:
            files = sorted((pieces_dir / f"{p.name}.pieces").glob("*.onnx"))
            sess = [ort.InferenceSession(str(f), so, providers=["CPUExecutionProvider"])
                    for f in files]
            produced: set[str] = set()
            ginputs: dict[str, tuple[str, list[int]]] = {}
            for s in sess:
                for i in s.get_inputs():
                    if i.name not in produced and i.name not in ginputs:
                        dtype = _ORT_TYPES.get(i.type)
                        if dtype is None:
                            raise EmulatorError(f"{files[0].parent}: input {i.name} has "
                                                f"unsupported type {i.type}")
                        shape = [d if isinstance(d, int) and d >= 0 else 1 for d in i.shape]
                        ginputs[i.name] = (dtype, shape)
                produced.update(o.name for o in s.get_outputs())
            crossing = {t.name for b in p.blocks for t in b.out_tensors}
            first = {i.name for i in sess[0].get_inputs()}
            self.sent_at_zero.append({n for n in ginputs if n in first or n in crossing})
            self.sessions.append(sess)
            self.graph_inputs.append(ginputs)

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
        for s in self.sessions[pass_index][lo:hi]:
            feed = {i.name: env[i.name] for i in s.get_inputs()}
            names = [o.name for o in s.get_outputs()]
            env.update(zip(names, s.run(names, feed), strict=True))
        return env

    def cut_names(self, pass_index: int, k: int) -> list[str]:
        """Names of the tensors that cross the link for split ``k`` (``k < n_blocks``)."""
        if k == 0:
            return sorted(self.sent_at_zero[pass_index])
        block = self.profile.passes[pass_index].blocks[k - 1]
        if block.out_tensors:
            return [t.name for t in block.out_tensors]
        later = {i.name for s in self.sessions[pass_index][k:] for i in s.get_inputs()}
        earlier = {o.name for s in self.sessions[pass_index][:k] for o in s.get_outputs()}
        return sorted(later & earlier)

    def output_names(self, pass_index: int) -> list[str]:
        """The pass outputs sent back: the last block's listed outputs, else the last piece's."""
        last = self.profile.passes[pass_index].blocks[-1]
        if last.out_tensors:
            return [t.name for t in last.out_tensors]
        return [o.name for o in self.sessions[pass_index][-1].get_outputs()]

    def local(self, pass_index: int, seed: int) -> dict[str, np.ndarray]:
        """The pass outputs when everything runs here (the reference of the check)."""
        env = self.run(pass_index, 0, len(self.sessions[pass_index]),
                       self.inputs(pass_index, seed))
        return {n: env[n] for n in self.output_names(pass_index)}
