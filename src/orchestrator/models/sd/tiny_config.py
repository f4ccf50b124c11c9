"""Component configs of the tiny Stable Diffusion used for the shapes world and in tests.

Same classes and layout as SD v1-5 (AutoencoderKL, UNet2DConditionModel, CLIPTextModel), only
narrow: a 32 px image becomes a 4x8x8 latent (three VAE blocks = two 2x downsamples), so a
training step takes milliseconds on a CPU while exercising every code path of the real model.
`LATENT_DOWNSAMPLES` offers a finer latent too (4x16x16: two VAE blocks), where a small shape
covers 4x4 latent cells instead of 2x2.
"""
from __future__ import annotations

from typing import Any

from orchestrator.models.common.shapes_tokenizer import MAX_TOKENS

# SD's own noise schedule, so schedules, SNR weights and samplers behave as on real weights.
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}



# Image side / latent side -> the VAE's block widths and the U-Net layout over that latent. At 2
# (16x16 at 32 px) the U-Net gets a third level and attends at 8x8 and 4x4 only: attention at
# 16x16 costs about twice as much per step on a CPU, and as a demo base it drew shapes right more
# often but colours less often (docs/measurements.md: the step times and accuracies).
LATENT_DOWNSAMPLES: dict[int, dict[str, Any]] = {
    4: {"vae": [16, 32, 32], "unet": {}},
    2: {"vae": [16, 32], "unet": {
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "block_out_channels": [32, 64, 64]}},
}


def latent_layout(downsample: int) -> dict[str, Any]:
    try:
        return LATENT_DOWNSAMPLES[downsample]
    except KeyError:
        raise ValueError(f"latent downsample must be one of {sorted(LATENT_DOWNSAMPLES)} (image side / latent side), "
                         f"not {downsample}") from None


def vae_config(resolution: int = 32, downsample: int = 4) -> dict[str, Any]:
    blocks = latent_layout(downsample)["vae"]
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * len(blocks),
        "up_block_types": ["UpDecoderBlock2D"] * len(blocks),
        "block_out_channels": blocks,
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 8,
        "sample_size": resolution,
        # Replaced by 1/std of the latents once `orch pretrain` has trained the VAE.
        "scaling_factor": 1.0,
    }


# Denoiser widths: "tiny" for tests, sweeps and the shipped demo base; "small" (wider, text
# attention at both resolutions, wider text encoder) was tried for the demo base over the same VAE
# (`orch pretrain --init assets/demo-base --denoiser small`, 2026-12-04, 200 held-out prompts):
# object accuracy 0.20 at 2,000 steps, then 0.385 at 4,000 and 6,000 -- the same plateau as tiny
# (0.38 at 7,000, 0.345-0.40 when continued to 14,500), at 2.3x the cost per step. So width is
# not what limits it; kept so that finding can be rebuilt and extended.
DENOISER_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"unet": {}, "text": {}},
    "small": {"unet": {"block_out_channels": [64, 128], "down_block_types": ["CrossAttnDownBlock2D"] * 2,
                       "up_block_types": ["CrossAttnUpBlock2D"] * 2},
              "text": {"hidden_size": 64, "intermediate_size": 128, "projection_dim": 64}},
}


def denoiser_size(name: str) -> dict[str, Any]:
    try:
        return DENOISER_SIZES[name]
    except KeyError:
        raise ValueError(f"unknown denoiser size {name!r}; sizes: {', '.join(DENOISER_SIZES)}") from None


def unet_config(resolution: int = 32, cross_attention_dim: int = 32, size: str = "tiny",
                downsample: int = 4) -> dict[str, Any]:
    return {
        "sample_size": resolution // downsample,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "cross_attention_dim": cross_attention_dim,
        "attention_head_dim": 8,
        "norm_num_groups": 8,
        **latent_layout(downsample)["unet"],
        **denoiser_size(size)["unet"],
    }


def text_config(vocab_size: int, pad_id: int, bos_id: int, eos_id: int, size: str = "tiny") -> dict[str, Any]:
    return {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": MAX_TOKENS,
        "pad_token_id": pad_id,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "projection_dim": 32,
        **denoiser_size(size)["text"],
    }
