"""Timing a pass and its pieces with ONNX Runtime, by wall clock, in one process.

Every session's first run is kept apart as its *cold* time; ``warmup`` further runs are
discarded; then ``runs`` timed runs per session. When the pieces and the whole model fit in
memory together and the pass is fast (its cold run under 1 s), the timed runs are
interleaved (one run of every piece, then one of the whole model, repeated), so slow drift on a
shared machine hits blocks and whole alike. For bigger or slower passes the whole model's
session stays open while piece sessions are opened one at a time, and its timed runs are
spread evenly between the pieces, for the same reason: with every piece session open, their
memory arenas (gigabytes for the SD 1.5 VAE decoder at 512x512) slowed the whole pass's warm
runs on the 2-core build VM to 28.8 s against 19.8-22.3 s in a session of its own. The first (cold)
run of the pieces is also the chained run whose outputs are compared with the whole model's.

Warm-up and timed runs go through ONNX Runtime's I/O binding: each session's inputs are bound
once as ``OrtValue`` objects on the class's device (the chained run's values), and outputs stay in
ONNX Runtime's memory. A plain ``InferenceSession.run`` wraps the inputs and copies every
output into a new numpy array on each call; summed over the pieces that copying is a cost the
whole model does not pay (measured on the 2-core build VM with the tiny models of then, a
512-wide GPT-2 and a 32/64-channel VAE: sum of blocks over whole +9.6% -> +6.1% on the VAE
decoder's 10 pieces, +14% -> +5% on the GPT-2 decode pass at two threads). On a GPU it
also keeps host-device copies out of the block times.

Memory: the arrays a plain run returns point into the session's CPU memory arena and hold the
whole arena (not just their bytes) alive after the session is closed. Kept as the chained
run's values, they kept every piece's arena: 1.1 GB for each 64x64 attention block of the
SD 1.5 UNet at batch 1, twice that at batch 2, which took the process to 12 GB at batch 1
and past the build VM's 24 GB at batch 2 (OOM-killed). :func:`_run` copies them (after the
clock stops), so a piece's arena goes with its session: for a big pass, memory is the whole
model's session and one piece's (UNet at batch 2: 8.2 GB peak instead of over 24 GB).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tqdm import tqdm

from .cut import Piece
from .hardware import HardwareClass
from .schema import LatencyStats, ProfileError

__all__ = ["PassTiming", "compare_outputs", "random_feeds", "run_chain", "run_whole",
           "time_pass", "timed_rounds"]

_INTERLEAVE_LIMIT = 1_500_000_000  # bytes of weights (whole model) up to which we interleave
_INTERLEAVE_MAX_MS = 1000.0  # ... and the whole pass's cold run time (ms)


@dataclass
class PassTiming:
    whole: LatencyStats
    whole_cold_ms: float
    blocks: list[LatencyStats]
    blocks_cold_ms: list[float]
    values: dict[str, np.ndarray]  # every tensor of the chained run (graph inputs included)
    whole_outputs: dict[str, np.ndarray]
    max_error: float  # worst output difference, chained vs whole (relative to output scale)


def random_feeds(types: Mapping[str, tuple[tuple[int, ...], np.dtype]], seed: int = 0
                 ) -> dict[str, np.ndarray]:
    """Inputs for timing: N(0,1) floats, zeros for integers (always valid indices)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, (shape, dt) in types.items():
        if np.issubdtype(dt, np.floating):
            out[name] = rng.standard_normal(shape).astype(dt)
        else:
            out[name] = np.zeros(shape, dtype=dt)
    return out


def _session(path: Path, hw: HardwareClass) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), sess_options=hw.session_options(),
                                    providers=list(hw.providers))
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ProfileError(f"{path}: ONNX Runtime cannot load it: {msg}") from None


def _run(sess: ort.InferenceSession, feeds: Mapping[str, np.ndarray]
         ) -> tuple[float, list[np.ndarray]]:
    """One plain run: wall time in ms and the outputs as arrays that own their memory.

    ``sess.run`` returns arrays that point into the session's memory arena and keep all of
    it alive, after the session is gone, for as long as any of them lives (see the module
    docstring); they are copied, after the clock has stopped.
    """
    t0 = time.perf_counter()
    try:
        out = sess.run(None, dict(feeds))
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ProfileError(f"ONNX Runtime failed running the model: {msg}") from None
    ms = (time.perf_counter() - t0) * 1e3
    return ms, [np.array(o, copy=True) if isinstance(o, np.ndarray) else o for o in out]


class _Bound:
    """A session with its inputs bound once (as ``OrtValue`` objects on ``device``) and its outputs
    left in ONNX Runtime's memory: calling it runs once and returns the wall time in ms."""

    def __init__(self, sess: ort.InferenceSession, feeds: Mapping[str, np.ndarray],
                 device: str) -> None:
        self.sess = sess
        self.binding = sess.io_binding()
        self._arrays = [np.ascontiguousarray(feeds[i.name]) for i in sess.get_inputs()]
        self._values = [ort.OrtValue.ortvalue_from_numpy(a, device, 0) for a in self._arrays]
        for i, v in zip(sess.get_inputs(), self._values, strict=True):
            self.binding.bind_ortvalue_input(i.name, v)
        for o in sess.get_outputs():
            self.binding.bind_output(o.name, device)

    def __call__(self) -> float:
        t0 = time.perf_counter()
        try:
            self.sess.run_with_iobinding(self.binding)
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ProfileError(f"ONNX Runtime failed running the model: {msg}") from None
        return (time.perf_counter() - t0) * 1e3


def timed_rounds(runs: int, min_seconds: float) -> Iterator[int]:
    """Round numbers 1, 2, ...: at least ``runs``, then more while less than ``min_seconds``
    have passed since the first began, up to ``10 * runs`` in all."""
    start = time.perf_counter()
    r = 0
    while r < runs or (time.perf_counter() - start < min_seconds and r < 10 * runs):
        r += 1
        yield r


def _timed(fn: Callable[[], float], runs: int, min_seconds: float, bar: tqdm) -> list[float]:
    out: list[float] = []
    for r in timed_rounds(runs, min_seconds):
        out.append(fn())
        if r > runs:
            bar.total += 1
        bar.update(1)
    return out


def compare_outputs(whole: Mapping[str, np.ndarray], chained: Mapping[str, np.ndarray]) -> float:
    """Worst difference over outputs: max |a-b| / max(1, max |a|) for floats; for integers
    the fraction of elements that differ (for 8-bit outputs such as an image: that differ by
    more than one step, which float rounding of the same value can give); 0 when identical."""
    worst = 0.0
    for name, a in whole.items():
        if name not in chained:
            raise ProfileError(f"chained pieces did not produce output {name!r}")
        b = chained[name]
        if a.shape != b.shape:
            raise ProfileError(f"output {name!r}: chained shape {b.shape} != whole {a.shape}")
        if a.size == 0:
            continue
        if np.issubdtype(a.dtype, np.floating):
            scale = max(1.0, float(np.max(np.abs(a))))
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b))) / scale)
        elif a.dtype in (np.uint8, np.int8):  # quantised values: a rounding step is allowed
            worst = max(worst, float(np.mean(np.abs(a.astype(np.int64) - b) > 1)))
        else:  # indices, token ids: must be equal
            worst = max(worst, float(np.mean(a != b)))
    return worst


def time_pass(name: str, whole_path: Path, pieces: Sequence[Piece], feeds: Mapping[str, np.ndarray],
              hw: HardwareClass, *, warmup: int, runs: int, weight_bytes: int,
              min_seconds: float = 0.0, progress: bool = True,
              interleave_limit: int = _INTERLEAVE_LIMIT,
              interleave_max_ms: float = _INTERLEAVE_MAX_MS) -> PassTiming:
    """Time the whole pass and each piece; run the chain once and compare outputs.

    At least ``runs`` timed runs per session; fast passes keep going until ``min_seconds`` of
    timed runs have passed (at most ``10 * runs``), so their statistics rest on more samples.
    """
    if runs < 1 or warmup < 0:
        raise ProfileError(f"need runs >= 1 and warmup >= 0 (got runs={runs}, warmup={warmup})")
    n = len(pieces)
    bar = tqdm(total=(n + 1) * (1 + warmup + runs), desc=f"{name} [{hw.label}]", unit="run",
               file=sys.stderr, disable=not progress, leave=False)
    values: dict[str, np.ndarray] = dict(feeds)
    samples: list[list[float]] = [[] for _ in range(n)]
    colds = [0.0] * n
    whole_samples: list[float] = []
    whole_feeds = {k: feeds[k] for k in feeds}

    def piece_feeds(p: Piece) -> dict[str, np.ndarray]:
        return {k: values[k] for k in p.inputs}

    def first_run(i: int, sess: ort.InferenceSession) -> None:
        colds[i], outs = _run(sess, piece_feeds(pieces[i]))
        values.update(zip(pieces[i].outputs, outs, strict=True))
        bar.update(1)

    try:
        whole = _session(whole_path, hw)
        out_names = [o.name for o in whole.get_outputs()]
        whole_cold, wout = _run(whole, whole_feeds)
        bar.update(1)
        bound_whole = _Bound(whole, whole_feeds, hw.ort_device)
        if weight_bytes <= interleave_limit and whole_cold <= interleave_max_ms:
            sessions = [_session(p.path, hw) for p in pieces]
            for i, s in enumerate(sessions):
                first_run(i, s)
            bound = [_Bound(s, piece_feeds(pieces[i]), hw.ort_device)
                     for i, s in enumerate(sessions)]
            for _ in range(warmup):
                for b in bound:
                    b()
                    bar.update(1)
                bound_whole()
                bar.update(1)
            for r in timed_rounds(runs, min_seconds):
                if r > runs:
                    bar.total += n + 1
                for i, b in enumerate(bound):
                    samples[i].append(b())
                    bar.update(1)
                whole_samples.append(bound_whole())
                bar.update(1)
            del bound, sessions
        else:  # big or slow pass: one piece session at a time, whole runs spread among them
            for _ in range(warmup):
                bound_whole()
                bar.update(1)
            spread = {max(0, round((j + 1) * n / runs) - 1): 0 for j in range(runs)}
            for j in range(runs):
                spread[max(0, round((j + 1) * n / runs) - 1)] += 1
            for i, p in enumerate(pieces):
                s = _session(p.path, hw)
                first_run(i, s)
                b = _Bound(s, piece_feeds(p), hw.ort_device)
                for _ in range(warmup):
                    b()
                    bar.update(1)
                samples[i] = _timed(b, runs, min_seconds, bar)
                del b, s
                for _ in range(spread.get(i, 0)):
                    whole_samples.append(bound_whole())
                    bar.update(1)
        del bound_whole, whole
    finally:
        bar.close()
    whole_outputs = dict(zip(out_names, wout, strict=True))
    err = compare_outputs(whole_outputs, values)
    return PassTiming(whole=LatencyStats.from_samples(whole_samples), whole_cold_ms=whole_cold,
                      blocks=[LatencyStats.from_samples(s) for s in samples], blocks_cold_ms=colds,
                      values=values, whole_outputs=whole_outputs, max_error=err)



def run_chain(pieces: Sequence[Piece], feeds: Mapping[str, np.ndarray], hw: HardwareClass
              ) -> dict[str, np.ndarray]:
    """Run the pieces in order once; every tensor produced (and the feeds) by name."""
    values: dict[str, np.ndarray] = dict(feeds)
    for p in pieces:
        sess = _session(p.path, hw)
        _, outs = _run(sess, {k: values[k] for k in p.inputs})
        values.update(zip(p.outputs, outs, strict=True))
        del sess
    return values


def run_whole(path: Path, feeds: Mapping[str, np.ndarray], hw: HardwareClass
              ) -> dict[str, np.ndarray]:
    """Run the whole model once; its outputs by name."""
    sess = _session(path, hw)
    _, outs = _run(sess, feeds)
    return dict(zip((o.name for o in sess.get_outputs()), outs, strict=True))
