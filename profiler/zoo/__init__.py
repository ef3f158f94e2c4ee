"""The model zoo: architectures built from configs with random weights (nothing downloaded).

``gpt2`` / ``gpt2-tiny`` (prefill + decode with a KV cache) and ``sd15`` / ``sd15-tiny`` (text
encoder, UNet per denoising step, VAE decoder). :func:`get_model` resolves a name, suggesting
the closest one when it is unknown.
"""

from __future__ import annotations

import difflib

from ..schema import ProfileError
from ._spec import BlockKey, PassSpec, ZooModel, scope_key
from .gpt2 import GPT2_MODELS
from .sd15 import SD15_MODELS

__all__ = ["MODELS", "BlockKey", "PassSpec", "ZooModel", "get_model", "scope_key"]

MODELS: dict[str, ZooModel] = {m.name: m for m in [*GPT2_MODELS, *SD15_MODELS]}


def get_model(name: str) -> ZooModel:
    """The zoo model called ``name``; :class:`ProfileError` with a suggestion otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(MODELS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ProfileError(f"unknown model {name!r}; the zoo has {', '.join(MODELS)}.{hint} "
                           "(python -m profiler zoo lists them)") from None
