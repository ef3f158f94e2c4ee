"""GPT-2 written out in torch with explicit per-layer past key/value inputs.

A request is a prefill over ``P`` prompt tokens, then ``T`` decode passes of one token each
with a KV cache. The head keeps only the last position and samples greedily (argmax), so a
pass returns one token id (8 bytes). Blocks: ``embed`` (token + position embeddings), ``h.0``
... ``h.{L-1}`` (transformer layers, residuals inside), ``head`` (final norm, tied LM head,
argmax). The KV cache of layer ``i`` lives where layer ``i`` runs, so it never crosses a cut:
it is block ``h.i``'s persistent state, ``2 x d_model x 4`` bytes per token in fp32 (keys and
values), in both passes (prefill creates it, each decode appends one token).
Architecture and initialisation follow the original GPT-2 (pre-norm, GELU-tanh, tied
embeddings, N(0, 0.02) weights); weights are random, seeded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ._spec import PassSpec, ZooModel, scope_key

__all__ = ["GPT2", "GPT2_MODELS", "GPT2Config"]


@dataclass(frozen=True)
class GPT2Config:
    vocab: int = 50257
    positions: int = 1024
    d_model: int = 768
    heads: int = 12
    layers: int = 12


class _Attention(nn.Module):
    def __init__(self, c: GPT2Config) -> None:
        super().__init__()
        self.heads = c.heads
        self.c_attn = nn.Linear(c.d_model, 3 * c.d_model)
        self.c_proj = nn.Linear(c.d_model, c.d_model)

    def forward(self, x: torch.Tensor, past_k: torch.Tensor | None, past_v: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        hd = d // self.heads
        q, k, v = self.c_attn(x).split(d, dim=2)
        q = q.view(b, t, self.heads, hd).transpose(1, 2)
        k = k.view(b, t, self.heads, hd).transpose(1, 2)
        v = v.view(b, t, self.heads, hd).transpose(1, 2)
        if past_k is not None and past_v is not None:
            k = torch.cat([past_k, k], dim=2)
            v = torch.cat([past_v, v], dim=2)
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(hd))
        if t > 1:  # prefill: causal mask (decode attends to the whole past)
            s = k.shape[2]
            mask = torch.ones(t, s, dtype=torch.bool, device=att.device).tril(diagonal=s - t)
            att = att.masked_fill(~mask, float("-inf"))
        y = F.softmax(att, dim=-1) @ v
        y = y.transpose(1, 2).reshape(b, t, d)
        return self.c_proj(y), k, v


class _MLP(nn.Module):
    def __init__(self, c: GPT2Config) -> None:
        super().__init__()
        self.c_fc = nn.Linear(c.d_model, 4 * c.d_model)
        self.c_proj = nn.Linear(4 * c.d_model, c.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class _Layer(nn.Module):
    def __init__(self, c: GPT2Config) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(c.d_model)
        self.attn = _Attention(c)
        self.ln_2 = nn.LayerNorm(c.d_model)
        self.mlp = _MLP(c)

    def forward(self, x: torch.Tensor, past_k: torch.Tensor | None, past_v: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, k, v = self.attn(self.ln_1(x), past_k, past_v)
        x = x + a
        return x + self.mlp(self.ln_2(x)), k, v


class _Embed(nn.Module):
    def __init__(self, c: GPT2Config) -> None:
        super().__init__()
        self.wte = nn.Embedding(c.vocab, c.d_model)
        self.wpe = nn.Embedding(c.positions, c.d_model)

    def forward(self, ids: torch.Tensor, past_len: int) -> torch.Tensor:
        pos = torch.arange(past_len, past_len + ids.shape[1], dtype=torch.long, device=ids.device)
        return self.wte(ids) + self.wpe(pos).unsqueeze(0)


class _Head(nn.Module):
    def __init__(self, c: GPT2Config, wte: nn.Embedding) -> None:
        super().__init__()
        self.ln_f = nn.LayerNorm(c.d_model)
        self.wte = wte  # tied with the token embedding, as in GPT-2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.ln_f(x[:, -1:, :]) @ self.wte.weight.t()
        return logits.argmax(dim=-1)  # greedy sampling: the next token id, shape [B, 1]


class GPT2(nn.Module):
    """GPT-2 with explicit KV cache: ``forward(ids, k0, v0, k1, v1, ...)``.

    Returns ``(next_token, present_k0, present_v0, ...)``; with no past it is a prefill.
    """

    def __init__(self, c: GPT2Config, seed: int = 0) -> None:
        super().__init__()
        self.config = c
        self.embed = _Embed(c)
        self.h = nn.ModuleList(_Layer(c) for _ in range(c.layers))
        self.head = _Head(c, self.embed.wte)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("bias"):
                    p.zero_()
                elif ".ln_" in name or name.startswith("head.ln_f"):
                    p.fill_(1.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.02)

    def forward(self, ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        past_len = past[0].shape[2] if past else 0
        x = self.embed(ids, past_len)
        presents: list[torch.Tensor] = []
        for i, layer in enumerate(self.h):
            pk = past[2 * i] if past else None
            pv = past[2 * i + 1] if past else None
            x, k, v = layer(x, pk, pv)
            presents += [k, v]
        return (self.head(x), *presents)


_KEY = scope_key([(r"embed", "embed"), (r"h\.(\d+)", r"h.\1"), (r"head", "head")])

_CONFIGS = {
    "gpt2": GPT2Config(),
    # 768 wide like GPT-2 small: a decode pass takes 7.8 ms at one thread and 5.1 ms at two
    # on the 2-core build VM (512 wide: 4.3 and 2.7 ms), so the fixed cost of an ONNX Runtime
    # call per piece (0.04-0.06 ms there) stays well under 10% of a tiny pass
    "gpt2-tiny": GPT2Config(vocab=8192, positions=256, d_model=768, heads=12, layers=2),
}


def _build(name: str, params: Mapping[str, int]) -> list[PassSpec]:
    c = _CONFIGS[name]
    p, t = int(params["prompt_tokens"]), int(params["new_tokens"])
    b = int(params.get("batch", 1))  # B sequences at once, all at the same length
    if b < 1:
        raise ValueError(f"need a batch of at least 1 sequence (got {b})")
    if p < 1 or t < 1 or p + t > c.positions:
        raise ValueError(f"need 1 <= prompt tokens, 1 <= new tokens and their sum <= "
                         f"{c.positions} (got {p} + {t})")
    model = GPT2(c).eval()
    past = p + t // 2  # decode is timed at the middle of the generation
    hd = c.d_model // c.heads
    kv_names = tuple(f"{kind}.{i}" for i in range(c.layers) for kind in ("past_key", "past_value"))
    out_kv = tuple(f"{kind}.{i}" for i in range(c.layers)
                   for kind in ("present_key", "present_value"))
    ids = torch.zeros(b, p, dtype=torch.long)
    kv = tuple(torch.randn(b, c.heads, past, hd) * 0.1 for _ in kv_names)
    return [
        PassSpec("prefill", 1, model, (ids,), ("input_ids",), ("next_token", *out_kv), _KEY,
                 note=f"{p} prompt tokens"),
        PassSpec("decode", t, model, (torch.zeros(b, 1, dtype=torch.long), *kv),
                 ("input_ids", *kv_names), ("next_token", *out_kv), _KEY,
                 state_inputs=frozenset(kv_names), past_inputs={k: 2 for k in kv_names},
                 note=f"one token with a KV cache of {past} past tokens (P + T/2)"),
    ]


_FP32_BYTES = 4


def _state(name: str) -> dict[str, dict[str, tuple[int, int]]]:
    """Layer ``h.i`` holds its keys and values: ``2 x d_model`` fp32 numbers per token."""
    c = _CONFIGS[name]
    layers = {f"h.{i}": (2 * c.d_model * _FP32_BYTES, 0) for i in range(c.layers)}
    return {"prefill": dict(layers), "decode": dict(layers)}


def _describe(name: str, params: Mapping[str, int]) -> dict[str, int]:
    c = _CONFIGS[name]
    return {**dict(params), "layers": c.layers, "d_model": c.d_model, "heads": c.heads,
            "vocab": c.vocab, "decode_past_tokens": int(params["prompt_tokens"])
            + int(params["new_tokens"]) // 2, "batch": int(params.get("batch", 1))}


GPT2_MODELS = [
    ZooModel(
        name=n,
        summary=s,
        source="profiler/zoo/gpt2.py: GPT-2 written in torch (explicit KV cache), GPT-2 "
               f"architecture {_CONFIGS[n]}, random N(0,0.02) weights (seed 0), exported with "
               "torch.onnx.export(dynamo=True)",
        defaults={"prompt_tokens": 128 if n == "gpt2" else 32,
                  "new_tokens": 32 if n == "gpt2" else 8},
        build=lambda params, n=n: _build(n, params),  # type: ignore[misc]
        describe=lambda params, n=n: _describe(n, params),  # type: ignore[misc]
        state=lambda params, n=n: _state(n),  # type: ignore[misc]
    )
    for n, s in [("gpt2", "GPT-2 small, 124M parameters: prefill + T decode passes"),
                 ("gpt2-tiny", "2-layer 768-wide GPT-2 (8k vocab) for tests: profiles in seconds")]
]
