"""Text-to-image sampling for SD3: flow-matching Euler (diffusers' FlowMatchEulerDiscreteScheduler
on the model's own shifted σ schedule) with classifier-free guidance.

The loop is StableDiffusion3Pipeline's: the same initial noise (one draw of [N, C, h, w] from the
generator), the unconditional branch first in the doubled batch, the guided velocity handed to
the scheduler's step, then latents / scaling_factor + shift_factor through the VAE.

The suites name the SD samplers ("ddim", "ddpm"); on SD3 they map onto the flow-matching
scheduler: "ddim" (and "euler") is its deterministic Euler ODE step, what the pipeline does;
"ddpm" is its stochastic step (`stochastic_sampling`: predict x0, then draw fresh noise at the
next σ), the flow-matching counterpart of DDPM's ancestral sampling. docs/variants/sd3.md.
"""
from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from .components import SD3Components, encode_prompt

SAMPLERS = {"ddim": False, "euler": False, "ddpm": True}  # name -> stochastic_sampling


def make_scheduler(c: SD3Components, sampler: str) -> FlowMatchEulerDiscreteScheduler:
    if sampler not in SAMPLERS:
        raise ValueError(f"sd3 samples with flow-matching Euler: sampler must be one of "
                         f"{', '.join(SAMPLERS)} (ddim/euler: deterministic, ddpm: stochastic), not {sampler!r}")
    return FlowMatchEulerDiscreteScheduler.from_config(c.scheduler.config, stochastic_sampling=SAMPLERS[sampler])


@torch.no_grad()
def generate(
    c: SD3Components,
    prompts: list[str],
    *,
    sampler: str = "ddim",
    steps: int = 28,
    guidance_scale: float = 7.0,
    generator: torch.Generator | None = None,
    resolution: int | None = None,
    batch_size: int = 16,
    latents: torch.Tensor | None = None,
) -> torch.Tensor:
    """Images in [0, 1], [N, 3, H, W], generated in batches of `batch_size` prompts.

    guidance_scale <= 1 skips the unconditional pass. `latents`: the initial noise [N, C, h, w]
    (default: drawn from `generator`, batch by batch)."""
    device = c.transformer.device
    res = resolution or int(c.vae.config.sample_size)
    side = res // c.vae_downsample
    shape = (int(c.transformer.config.in_channels), side, side)
    uncond = encode_prompt(c, [""]) if guidance_scale > 1 else None
    out = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        cond, pooled = encode_prompt(c, chunk)
        sched = make_scheduler(c, sampler)
        sched.set_timesteps(steps, device=device)
        x = (latents[i:i + batch_size].to(device, cond.dtype) if latents is not None else
             torch.randn((len(chunk), *shape), generator=generator, device=device, dtype=cond.dtype))
        if uncond is not None:
            emb = torch.cat([uncond[0].expand(len(chunk), -1, -1), cond])
            pool = torch.cat([uncond[1].expand(len(chunk), -1), pooled])
        for t in sched.timesteps:
            if uncond is not None:
                v_u, v_c = c.transformer(hidden_states=torch.cat([x, x]), timestep=t.expand(2 * len(chunk)),
                                         encoder_hidden_states=emb, pooled_projections=pool).sample.chunk(2)
                v = v_u + guidance_scale * (v_c - v_u)
            else:
                v = c.transformer(hidden_states=x, timestep=t.expand(len(chunk)), encoder_hidden_states=cond,
                                  pooled_projections=pooled).sample
            x = sched.step(v, t, x, generator=generator).prev_sample
        images = c.vae.decode(x / c.scaling_factor + c.shift_factor).sample
        out.append((images.float() / 2 + 0.5).clamp(0, 1).cpu())
    return torch.cat(out)
