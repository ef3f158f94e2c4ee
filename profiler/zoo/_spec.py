"""What a zoo model hands the exporter: one :class:`PassSpec` per pass of a request."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["BlockKey", "PassSpec", "ZooModel", "scope_key"]

#: Maps a node's module scopes (outermost first, e.g. ``['', 'h', 'h.0', 'h.0.attn']``) to the
#: name of the block the node belongs to, or ``None`` when the node sits between blocks.
BlockKey = Callable[[Sequence[str]], str | None]


@dataclass(frozen=True)
class PassSpec:
    """One pass of a request, as a torch module with example inputs.

    ``inputs`` are in the module's positional order and named ``input_names``; ``state_inputs``
    are inputs held on each side of a split (a KV cache, the prompt embedding of a diffusion
    request): they are not counted as crossing a cut nor in ``input_bytes``.
    """

    name: str
    repeat: int
    module: torch.nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    block_key: BlockKey
    state_inputs: frozenset[str] = frozenset()
    note: str = ""


@dataclass(frozen=True)
class ZooModel:
    """A model of the zoo: architecture built from a config, random weights."""

    name: str
    summary: str
    source: str
    defaults: Mapping[str, int]
    build: Callable[[Mapping[str, int]], list[PassSpec]]
    describe: Callable[[Mapping[str, int]], dict[str, Any]] = field(default=lambda p: dict(p))


def scope_key(patterns: Sequence[tuple[str, str]]) -> BlockKey:
    """A :data:`BlockKey` from ``(regex, name)`` pairs tried in order on each scope.

    ``name`` may use ``\\1``-style groups of the regex; the first scope (outermost first)
    matching any pattern decides the block.
    """
    compiled = [(re.compile(p), n) for p, n in patterns]

    def key(scopes: Sequence[str]) -> str | None:
        for s in scopes:
            for rx, name in compiled:
                m = rx.fullmatch(s)
                if m:
                    return m.expand(name)
        return None

    return key
