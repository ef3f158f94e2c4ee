"""Timing a zoo pass's blocks with torch (the MEC GPU path when ONNX Runtime has no CUDA).

The blocks are the same as the ONNX pieces': a module whose scopes the pass's
:data:`~profiler.zoo.BlockKey` maps to a block name (and whose parent's do not) *heads* that
block. A forward hook on every head stamps the time each head finishes; a block ends when its
last head finishes, and ops between blocks count towards the next block, as
:func:`profiler.cut.partition_by_scope` assigns them. Block times are the differences between
consecutive stamps of one hooked forward pass, so they include everything the model does
between them; the whole pass is timed in separate, hook-free forward passes interleaved with
the hooked ones (the sum of block medians against the whole median then shows what the hooks
cost).

On CUDA the stamps are ``torch.cuda.Event`` records on the current stream (no
synchronisation inside the pass; one ``synchronize`` after it), so a block's time is GPU time
between the events; on the CPU they are ``time.perf_counter`` readings (torch CPU ops are
synchronous).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from .schema import LatencyStats, ProfileError
from .timing import timed_rounds
from .zoo import BlockKey

__all__ = ["TorchTiming", "block_heads", "time_pass_torch"]


@dataclass
class TorchTiming:
    whole: LatencyStats
    whole_cold_ms: float
    blocks: list[LatencyStats]
    blocks_cold_ms: list[float]


def _prefixes(name: str) -> list[str]:
    """``'a.b.c'`` -> ``['', 'a', 'a.b', 'a.b.c']``: the scopes of a module, outermost first."""
    parts = name.split(".") if name else []
    return [""] + [".".join(parts[: i + 1]) for i in range(len(parts))]


def block_heads(module: torch.nn.Module, key: BlockKey) -> list[tuple[str, str, torch.nn.Module]]:
    """``(module name, block name, module)`` for every module that heads a block."""
    out = []
    for name, mod in module.named_modules():
        if not name:
            continue
        scopes = _prefixes(name)
        block = key(scopes)
        if block is not None and key(scopes[:-1]) is None:
            out.append((name, block, mod))
    return out


class _Clock:
    """Stamps on the device's timeline: CUDA events, or ``perf_counter`` on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        # CUDA events are created once and reused: creating one inside a block-boundary
        # hook costs tens of microseconds of CPU time, which a launch-bound pass (GPT-2
        # decode on a GPU) pays as GPU idle time (the hooked pass then runs slower)
        self._pool: list[Any] = []
        self._next = 0

    def reset(self) -> None:
        """Start a pass: the pool's events may be recorded again (after a ``sync``)."""
        self._next = 0

    def mark(self) -> Any:
        if self.cuda:
            if self._next == len(self._pool):
                self._pool.append(torch.cuda.Event(enable_timing=True))
            e = self._pool[self._next]
            self._next += 1
            e.record()
            return e
        return time.perf_counter()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def ms(self, a: Any, b: Any) -> float:
        return float(a.elapsed_time(b)) if self.cuda else (b - a) * 1e3


def time_pass_torch(name: str, module: torch.nn.Module, inputs: Sequence[torch.Tensor],
                    key: BlockKey, expected: Sequence[str], device: torch.device, *,
                    warmup: int, runs: int, min_seconds: float = 0.0, threads: int | None = None,
                    progress: bool = True) -> TorchTiming:
    """Time ``module(*inputs)`` and its blocks on ``device``.

    ``expected`` is the block order of the ONNX pieces; the hooked pass must produce the
    same order or the blocks cannot be matched (a :class:`ProfileError` says how they differ).
    The first hooked pass is the cold run (blocks and whole); then ``warmup`` untimed
    rounds; then at least ``runs`` timed rounds, each one hooked and one plain pass.
    """
    if runs < 1 or warmup < 0:
        raise ProfileError(f"need runs >= 1 and warmup >= 0 (got runs={runs}, warmup={warmup})")
    heads = block_heads(module, key)
    if not heads:
        raise ProfileError(f"pass {name!r}: no torch module matches the pass's block rule")
    old_threads = torch.get_num_threads()
    if threads is not None and device.type == "cpu":
        torch.set_num_threads(threads)
    clock = _Clock(device)
    marks: list[tuple[str, Any]] = []

    def stamp(block: str) -> Callable[..., None]:
        def hook(_m: torch.nn.Module, _a: Any, _o: Any) -> None:
            marks.append((block, clock.mark()))
        return hook

    mod = module.to(device).eval()
    args = tuple(x.to(device) for x in inputs)

    def plain() -> float:
        clock.reset()
        a = clock.mark()
        mod(*args)
        b = clock.mark()
        clock.sync()
        return clock.ms(a, b)

    def hooked() -> list[float]:
        marks.clear()
        clock.reset()
        handles = [m.register_forward_hook(stamp(b)) for _, b, m in heads]
        try:
            a = clock.mark()
            mod(*args)
            end = clock.mark()
            clock.sync()
        finally:
            for h in handles:
                h.remove()
        names: list[str] = []
        ends: list[Any] = []
        for block, mk in marks:
            if names and names[-1] == block:
                ends[-1] = mk
            else:
                names.append(block)
                ends.append(mk)
        if names != list(expected):
            raise ProfileError(f"pass {name!r}: torch runs the blocks as {names}, the ONNX "
                               f"pieces are {list(expected)}; cannot match them")
        ends[-1] = end  # the tail after the last head joins the last block
        out, prev = [], a
        for e in ends:
            out.append(clock.ms(prev, e))
            prev = e
        return out

    n = len(expected)
    bar = tqdm(total=1 + 2 * (warmup + runs), desc=f"{name} [torch {device.type}]", unit="run",
               file=sys.stderr, disable=not progress, leave=False)
    samples: list[list[float]] = [[] for _ in range(n)]
    whole: list[float] = []
    try:
        with torch.inference_mode():
            colds = hooked()
            bar.update(1)
            for _ in range(warmup):
                hooked()
                plain()
                bar.update(2)
            for r in timed_rounds(runs, min_seconds):
                if r > runs:
                    bar.total += 2
                for i, t in enumerate(hooked()):
                    samples[i].append(t)
                whole.append(plain())
                bar.update(2)
    except torch.cuda.OutOfMemoryError:
        raise ProfileError(f"pass {name!r}: out of GPU memory timing it with torch") from None
    finally:
        bar.close()
        torch.set_num_threads(old_threads)
    return TorchTiming(whole=LatencyStats.from_samples(whole), whole_cold_ms=sum(colds),
                       blocks=[LatencyStats.from_samples(s) for s in samples],
                       blocks_cold_ms=colds)
