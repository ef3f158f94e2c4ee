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
    request): they are not counted as crossing a cut nor in ``input_bytes``. ``past_inputs``
    maps the state inputs that are a block's persistent state growing with the context (a
    layer's past keys and values) to their token axis; the profiler derives each block's state
    bytes per token from them and checks them against :attr:`ZooModel.state`.
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
    past_inputs: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ZooModel:
    """A model of the zoo: architecture built from a config, random weights.

    ``state`` gives, from the request parameters and without building the model, the
    persistent state of every block that has some: ``{pass: {block: (per_token, fixed)}}``
    in bytes (blocks not named have none). It is what the profiler writes into a profile and
    what ``python -m profiler upgrade`` adds to a schema-1 profile.
    """

    name: str
    summary: str
    source: str
    defaults: Mapping[str, int]
    build: Callable[[Mapping[str, int]], list[PassSpec]]
    describe: Callable[[Mapping[str, int]], dict[str, Any]] = field(default=lambda p: dict(p))
    state: Callable[[Mapping[str, int]], dict[str, dict[str, tuple[int, int]]]] = field(
        default=lambda p: {})


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
