"""Batch curves: a pass profiled at several batch sizes, merged into one profile.

``python -m profiler model NAME --batch-sizes 1,2,4,8`` profiles batch 1 as always (its
statistics and byte counts are the profile's main ones), then times the same blocks and the
whole pass on a batch of ``B`` requests for every other ``B``: an LLM decode on ``B`` sequences
at the same past length, a prefill on ``B`` prompts, a UNet step or a VAE decode on ``B``
latents. :func:`with_batch` adds those timings to the batch-1 pass as ``batch_ms``;
:meth:`profiler.schema.Block.latency_at` and :meth:`profiler.schema.Pass.whole_at` read them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from .schema import Pass, ProfileError

__all__ = ["check_batch_sizes", "parse_batch_sizes", "sum_vs_whole", "with_batch"]


def check_batch_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    """Sorted, distinct batch sizes; they must include 1 and all be >= 1."""
    out = tuple(sorted(set(sizes)))
    if not out or out[0] < 1:
        raise ProfileError(f"batch sizes must be integers >= 1, got {list(sizes)}")
    if out[0] != 1:
        raise ProfileError(f"batch sizes {','.join(map(str, out))} must include 1 (the "
                           "profile's main statistics and byte counts are batch 1)")
    return out


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """``"1,2,4,8"`` to ``(1, 2, 4, 8)`` (:class:`ProfileError` naming the bad item)."""
    try:
        sizes = [int(x) for x in text.split(",")]
    except ValueError:
        raise ProfileError(f"--batch-sizes {text!r}: expected integers separated by commas, "
                           "e.g. --batch-sizes 1,2,4,8") from None
    return check_batch_sizes(sizes)


def with_batch(base: Pass, batch: int, at_batch: Pass) -> Pass:
    """``base`` (batch 1) with ``at_batch``'s block and whole timings added as batch ``batch``."""
    if batch < 2:
        raise ValueError(f"batch size must be >= 2 to add, got {batch}")
    want = [b.name for b in base.blocks]
    got = [b.name for b in at_batch.blocks]
    if base.name != at_batch.name or want != got:
        raise ProfileError(f"pass {base.name!r} at batch {batch} has blocks {got}, at batch 1 "
                           f"{want}: the cut must not depend on the batch size")
    blocks = tuple(dataclasses.replace(b, batch_latency={**b.batch_latency, batch: x.latency})
                   for b, x in zip(base.blocks, at_batch.blocks, strict=True))
    return dataclasses.replace(base, blocks=blocks,
                               batch_whole={**base.batch_whole, batch: at_batch.whole})


def sum_vs_whole(p: Pass, batch: int) -> str:
    """One line: whole-pass median, sum of block medians and their difference at ``batch``."""
    whole = p.whole_at(batch).median
    total = sum(b.latency_at(batch).median for b in p.blocks)
    diff = f"{100 * (total / whole - 1):+.1f}%" if whole > 0 else "n/a"
    return (f"whole {whole:.2f} ms, sum of blocks {total:.2f} ms ({diff}), "
            f"{whole / batch:.2f} ms per request")
