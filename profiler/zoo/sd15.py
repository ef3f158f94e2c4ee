"""Stable Diffusion 1.5 from configs: CLIP-L text encoder, UNet, VAE decoder (random weights).

Passes of a request: ``text_encoder`` once (77 token ids -> prompt embedding), ``unet`` once per
denoising step (no classifier-free guidance, 64x64 latent; batch 1 unless ``batch`` is given), ``vae_decoder`` once
(latent -> 8-bit RGB image, so the pass returns what a phone would display). The prompt
embedding is a *state* input of the UNet: it crosses the link at most once per request (as the
text encoder's output), not at every step or cut. No block has persistent state (schema 2
``state`` is 0 everywhere): the latent and the prompt embedding are pass outputs that follow
the data, not state living with a block.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import nn

from ._spec import PassSpec, ZooModel, scope_key

__all__ = ["SD15_MODELS"]

_UNIT = r"(?:down_blocks|up_blocks)\.\d+\.(?:resnets|attentions|downsamplers|upsamplers)\.\d+"

_TEXT_KEY = scope_key([(r"m\.(?:text_model\.)?embeddings", "embeddings"),
                       (r"m\.(?:text_model\.)?encoder\.layers\.(\d+)", r"layers.\1"),
                       (r"m\.(?:text_model\.)?final_layer_norm", "final_layer_norm")])
_UNET_KEY = scope_key([(r"m\.(time_proj|time_embedding|conv_in)", "stem"),
                       (rf"m\.({_UNIT})", r"\1"),
                       (r"m\.(mid_block\.(?:resnets|attentions)\.\d+)", r"\1"),
                       (r"m\.(conv_norm_out|conv_act|conv_out)", "out")])
_VAE_KEY = scope_key([(r"m\.(post_quant_conv)", "stem"),
                      (r"m\.decoder\.conv_in", "stem"),
                      (r"m\.decoder\.(mid_block\.(?:resnets|attentions)\.\d+)", r"\1"),
                      (rf"m\.decoder\.({_UNIT})", r"\1"),
                      (r"m\.decoder\.(conv_norm_out|conv_act|conv_out)", "out")])


def _configs(name: str) -> dict[str, dict[str, Any]]:
    if name == "sd15":
        return {
            "text": dict(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                         num_hidden_layers=12, num_attention_heads=12,
                         max_position_embeddings=77, hidden_act="quick_gelu"),
            "unet": dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                         block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
                         attention_head_dim=8,
                         down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                         up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
            "vae": dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                        block_out_channels=(128, 256, 512, 512), sample_size=512,
                        down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4),
            "shape": dict(tokens=77, latent=64),
        }
    return {
        "text": dict(vocab_size=1000, hidden_size=256, intermediate_size=1024, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
                     bos_token_id=998, eos_token_id=999, pad_token_id=1),
        "unet": dict(sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
                     block_out_channels=(32, 64), cross_attention_dim=256, attention_head_dim=4,
                     norm_num_groups=8,
                     down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
        # 64/128 channels: at 32/64 the decoder took 19 ms at two threads, and the fixed cost of
        # an ONNX Runtime call per piece (10 pieces) put the sum of blocks 6-13% over the whole
        "vae": dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                    block_out_channels=(64, 128), norm_num_groups=8, sample_size=64,
                    down_block_types=("DownEncoderBlock2D",) * 2,
                    up_block_types=("UpDecoderBlock2D",) * 2),
        "shape": dict(tokens=77, latent=32),
    }


class _Text(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.m(input_ids=ids, return_dict=False)[0]  # type: ignore[no-any-return]


class _UNet(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, latent: torch.Tensor, timestep: torch.Tensor, prompt: torch.Tensor
                ) -> torch.Tensor:
        return self.m(latent, timestep, prompt, return_dict=False)[0]  # type: ignore[no-any-return]


class _VAEDecoder(nn.Module):
    """``AutoencoderKL.decode`` of a scaled latent, then quantised to an 8-bit image."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        img = self.m.decode(latent / 0.18215, return_dict=False)[0]  # type: ignore[operator]
        return ((img / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)


def _seeded_init(m: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)


def _build(name: str, params: Mapping[str, int]) -> list[PassSpec]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    steps = int(params["steps"])
    b = int(params.get("batch", 1))  # B requests at once: B prompts, B latents
    if steps < 1:
        raise ValueError(f"need at least 1 denoising step (got {steps})")
    if b < 1:
        raise ValueError(f"need a batch of at least 1 request (got {b})")
    c = _configs(name)
    torch.manual_seed(0)  # diffusers/transformers initialise with the global generator;
    text = CLIPTextModel(CLIPTextConfig(**c["text"])).eval()  # weights are then reseeded below
    unet = cast(nn.Module, UNet2DConditionModel(**c["unet"]))
    vae = cast(nn.Module, AutoencoderKL(**c["vae"]))
    unet.eval()
    vae.eval()
    for i, m in enumerate((text, unet, vae)):
        _seeded_init(m, i)
    n, lat, hid = c["shape"]["tokens"], c["shape"]["latent"], c["text"]["hidden_size"]
    img = lat * 2 ** (len(c["vae"]["block_out_channels"]) - 1)
    latent = torch.randn(b, 4, lat, lat, generator=torch.Generator().manual_seed(1))
    prompt = torch.randn(b, n, hid, generator=torch.Generator().manual_seed(2))
    return [
        PassSpec("text_encoder", 1, _Text(text), (torch.zeros(b, n, dtype=torch.long),),
                 ("input_ids",), ("prompt_embedding",), _TEXT_KEY, note=f"{n} token ids"),
        PassSpec("unet", steps, _UNet(unet), (latent, torch.tensor([500] * b), prompt),
                 ("latent", "timestep", "prompt_embedding"), ("noise_pred",), _UNET_KEY,
                 state_inputs=frozenset({"prompt_embedding"}),
                 note=f"one denoising step at a {lat}x{lat} latent"),
        PassSpec("vae_decoder", 1, _VAEDecoder(vae), (latent,), ("latent",), ("image",),
                 _VAE_KEY, note=f"latent to a {img}x{img} uint8 RGB image"),
    ]


def _describe(name: str, params: Mapping[str, int]) -> dict[str, Any]:
    c = _configs(name)
    img = c["shape"]["latent"] * 2 ** (len(c["vae"]["block_out_channels"]) - 1)
    return {**dict(params), "latent": c["shape"]["latent"], "image": img,
            "prompt_tokens": c["shape"]["tokens"], "batch": int(params.get("batch", 1)),
            "guidance": "none (batch 1)",
            "unet_channels": list(c["unet"]["block_out_channels"]),
            "vae_channels": list(c["vae"]["block_out_channels"])}


_SOURCE = ("profiler/zoo/sd15.py: transformers CLIPTextModel, diffusers UNet2DConditionModel and "
           "AutoencoderKL built from {} configs, random weights (seeded), exported with "
           "torch.onnx.export(dynamo=True)")

SD15_MODELS = [
    ZooModel(
        name=n, summary=s, source=_SOURCE.format("Stable Diffusion 1.5" if n == "sd15" else "tiny"),
        defaults={"steps": 20 if n == "sd15" else 4},
        build=lambda params, n=n: _build(n, params),  # type: ignore[misc]
        describe=lambda params, n=n: _describe(n, params),  # type: ignore[misc]
    )
    for n, s in [("sd15", "Stable Diffusion 1.5 (CLIP-L, 860M UNet x S steps, VAE decoder)"),
                 ("sd15-tiny", "tiny SD-shaped text encoder / UNet / VAE for tests")]
]
