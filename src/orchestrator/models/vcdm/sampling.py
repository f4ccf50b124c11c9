"""The chain: embeddings from the prior (EDM Heun sampler), then images given them.

Three arms from one model: `generate` (VCDM: sampled embeddings), `generate(..., embeddings=E)`
(oracle: given embeddings, e.g. the CLIP's of held-out images), `generate(..., conditioning="none")`
(no embedding: the unconditional U-Net). The chain is not text-conditioned (the paper's prior is
unconditional): the prompts only say how many images to make.
"""
from __future__ import annotations

from typing import Literal

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from .edm import heun_sample
from .model import VCDM

Sampler = Literal["ddim", "ddpm"]


@torch.no_grad()
def sample_embeddings(m: VCDM, count: int, *, steps: int = 18, generator: torch.Generator | None = None,
                      batch_size: int = 256) -> torch.Tensor:
    """[count, D] embeddings from the prior (Heun over Karras' σ schedule; EDM uses 18 steps)."""
    out = [heun_sample(m.prior, (min(batch_size, count - i), m.embed_dim), steps, m.edm, generator=generator,
                       device=m.device) for i in range(0, count, batch_size)]
    return torch.cat(out) if out else torch.zeros(0, m.embed_dim)


@torch.no_grad()
def images_from_embeddings(m: VCDM, embeddings: torch.Tensor | None, count: int, *, sampler: Sampler = "ddim",
                           steps: int = 50, generator: torch.Generator | None = None,
                           resolution: int | None = None, batch_size: int = 16) -> torch.Tensor:
    """Images in [0, 1], [count, 3, H, W]; `embeddings` [count, D], or None for no embedding."""
    if embeddings is not None and embeddings.shape != (count, m.embed_dim):
        raise ValueError(f"embeddings must be [{count}, {m.embed_dim}], got {tuple(embeddings.shape)}")
    device, res = m.device, resolution or m.resolution
    cls = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler}[sampler]
    out = []
    for i in range(0, count, batch_size):
        n = min(batch_size, count - i)
        emb = None if embeddings is None else embeddings[i:i + n].to(device)
        sched = cls.from_config(m.scheduler.config)
        sched.set_timesteps(steps, device=device)
        x = torch.randn((n, m.image.unet.config.in_channels, res, res), generator=generator, device=device)
        for t in sched.timesteps:
            eps = m.image(x, t.expand(n), emb)
            x = sched.step(eps, t, x, generator=generator).prev_sample
        out.append((x.float() / 2 + 0.5).clamp(0, 1).cpu())
    return torch.cat(out) if out else torch.zeros(0, 3, res, res)


@torch.no_grad()
def generate(m: VCDM, prompts: list[str], *, sampler: Sampler = "ddim", steps: int = 50,
             prior_steps: int = 18, generator: torch.Generator | None = None, resolution: int | None = None,
             batch_size: int = 16, embeddings: torch.Tensor | None = None,
             conditioning: Literal["embedding", "none"] = "embedding", guidance_scale: float | None = None
             ) -> torch.Tensor:
    """len(prompts) images in [0, 1]. `embeddings` given: the oracle arm (no prior); conditioning
    none: the unconditional arm. `guidance_scale` is accepted for the evaluator's sake and unused
    (no guidance in this first step)."""
    del guidance_scale
    count = len(prompts)
    if conditioning == "none":
        if embeddings is not None:
            raise ValueError("conditioning none takes no embeddings")
        emb = None
    else:
        emb = embeddings if embeddings is not None else sample_embeddings(m, count, steps=prior_steps,
                                                                          generator=generator)
    return images_from_embeddings(m, emb, count, sampler=sampler, steps=steps, generator=generator,
                                  resolution=resolution, batch_size=batch_size)
