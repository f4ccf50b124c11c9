"""Text-to-image sampling with DDIM or DDPM (diffusers' schedulers) and classifier-free guidance.

A plain loop rather than StableDiffusionPipeline: it works with any tokenizer the components
carry, takes a torch.Generator for reproducible batches, and keeps the CFG arithmetic visible.
"""
from __future__ import annotations

from typing import Literal

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from orchestrator.models.common.shapes_tokenizer import tokenize

from .pipeline import SDComponents

Sampler = Literal["ddim", "ddpm"]


@torch.no_grad()
def encode_text(c: SDComponents, texts: list[str]) -> torch.Tensor:
    """Per-token embeddings [B, L, D] (last hidden state), what SD's U-Net cross-attends to."""
    ids = tokenize(c.tokenizer, texts).to(c.text_encoder.device)
    return c.text_encoder(ids)[0]


def make_scheduler(c: SDComponents, sampler: Sampler):
    cls = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler}[sampler]
    return cls.from_config(c.scheduler.config)


@torch.no_grad()
def generate(
    c: SDComponents,
    prompts: list[str],
    *,
    sampler: Sampler = "ddim",
    steps: int = 50,
    guidance_scale: float = 7.5,
    generator: torch.Generator | None = None,
    resolution: int | None = None,
    batch_size: int = 16,
) -> torch.Tensor:
    """Images in [0, 1], [N, 3, H, W], generated in batches of `batch_size` prompts.

    guidance_scale <= 1 skips the unconditional pass (plain conditional sampling).
    """
    device = c.unet.device
    res = resolution or int(c.vae.config.sample_size)
    shape = (c.unet.config.in_channels, res // c.vae_downsample, res // c.vae_downsample)
    uncond = encode_text(c, [""]) if guidance_scale > 1 else None
    out = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        cond = encode_text(c, chunk)
        sched = make_scheduler(c, sampler)
        sched.set_timesteps(steps, device=device)
        latents = torch.randn((len(chunk), *shape), generator=generator, device=device, dtype=cond.dtype)
        latents = latents * sched.init_noise_sigma
        for t in sched.timesteps:
            x = sched.scale_model_input(latents, t)
            if uncond is not None:
                emb = torch.cat([uncond.expand(len(chunk), -1, -1), cond])
                eps_u, eps_c = c.unet(torch.cat([x, x]), t, encoder_hidden_states=emb).sample.chunk(2)
                eps = eps_u + guidance_scale * (eps_c - eps_u)
            else:
                eps = c.unet(x, t, encoder_hidden_states=cond).sample
            latents = sched.step(eps, t, latents, generator=generator).prev_sample
        images = c.vae.decode(latents / c.latent_scale).sample
        out.append((images.float() / 2 + 0.5).clamp(0, 1).cpu())
    return torch.cat(out)
