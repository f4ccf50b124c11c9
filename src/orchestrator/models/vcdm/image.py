"""The image model: diffusers' pixel-space UNet2DModel whose timestep embedding gets
Linear(CLIP image embedding) added (`class_embed_type="identity"` adds what it is given to the
timestep embedding). The projection starts at zero, so at initialisation — and for a model
finetuned with `conditioning: none` — the conditioned U-Net is exactly the unconditional one;
no embedding (`None`) adds nothing at all.
"""
from __future__ import annotations

from typing import Any

import torch
from diffusers import UNet2DModel
from torch import nn

# A cosine schedule over 1000 steps, ε-prediction (as GLIDE-mini's, in diffusers' terms).
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "epsilon",
    "clip_sample": True,
    "set_alpha_to_one": False,
    "steps_offset": 0,
}


def tiny_unet_config(resolution: int = 32) -> dict[str, Any]:
    """Three levels, attention at quarter resolution (8x8 at 32 px); ~1.1 M parameters. Attention at
    half resolution (16x16, two levels) cost 1.7x as much per training step on this CPU (1.13 s vs
    0.65 s at batch 32, one thread) for a smaller receptive field."""
    return {
        "sample_size": resolution, "in_channels": 3, "out_channels": 3,
        "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
        "block_out_channels": [32, 64, 64], "layers_per_block": 1, "attention_head_dim": 8,
        "norm_num_groups": 8, "class_embed_type": "identity",
    }


def time_embed_dim(unet: UNet2DModel) -> int:
    return int(unet.config.time_embedding_dim or unet.config.block_out_channels[0] * 4)


class EmbeddingUNet(nn.Module):
    """ε̂(x_t, t, e) = UNet(x_t, t, class_labels = W·e + b), W and b zero at initialisation."""

    def __init__(self, unet: UNet2DModel, embed_dim: int):
        super().__init__()
        if unet.config.class_embed_type != "identity":
            raise ValueError(f"the image U-Net needs class_embed_type 'identity' (it adds the projected embedding "
                             f"to the timestep embedding), not {unet.config.class_embed_type!r}")
        self.unet = unet
        self.embed_proj = nn.Linear(embed_dim, time_embed_dim(unet))
        nn.init.zeros_(self.embed_proj.weight)
        nn.init.zeros_(self.embed_proj.bias)

    @property
    def embed_dim(self) -> int:
        return self.embed_proj.in_features

    def forward(self, x: torch.Tensor, t: torch.Tensor, embedding: torch.Tensor | None,
                present: torch.Tensor | None = None) -> torch.Tensor:
        """`present` [B] bool: rows where it is False get no embedding (embedding dropout)."""
        if embedding is None:
            cond = torch.zeros(x.shape[0], self.embed_proj.out_features, device=x.device, dtype=x.dtype)
        else:
            cond = self.embed_proj(embedding.to(self.embed_proj.weight.dtype))
            if present is not None:
                cond = cond * present.to(cond.device, cond.dtype)[:, None]
        return self.unet(x, t, class_labels=cond).sample
