"""Text-to-image sampling with GLIDE's classifier-free guidance over a respaced schedule.

Guidance as glide-text2im samples: the conditional and the unconditional (all-padding tokens)
pass run as one batch; ε̂ = ε̂_u + s·(ε̂_c − ε̂_u) on the first 3 channels, the variance channels
are the conditional pass's. The reference sampler: 100 respaced steps, s = 3.
"""
from __future__ import annotations

import torch

from .diffusion import sample
from .model import GlideMini


@torch.no_grad()
def generate(m: GlideMini, prompts: list[str], *, sampler: str = "ddpm", steps: int = 100,
             guidance_scale: float = 3.0, generator: torch.Generator | None = None,
             resolution: int | None = None, batch_size: int = 16) -> torch.Tensor:
    """Images in [0, 1], [N, 3, H, W]; guidance_scale <= 1 runs the conditional pass only."""
    device, res = m.device, resolution or m.config.image_size
    schedule = m.schedule.respaced(steps)
    guided = guidance_scale > 1
    out = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        n = len(chunk)
        tokens, mask = m.tokens(chunk + [""] * n if guided else chunk)
        proj, seq = m.text(tokens.to(device), mask.to(device))

        # sample() below calls model_fn only within this iteration: proj, seq and n are this chunk's.
        def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if not guided:
                return m.unet(x, t, proj, seq)  # noqa: B023
            both = m.unet(torch.cat([x, x]), torch.cat([t, t]), proj, seq)  # noqa: B023
            cond, uncond = both[:n], both[n:]  # noqa: B023
            eps = uncond[:, :3] + guidance_scale * (cond[:, :3] - uncond[:, :3])
            return torch.cat([eps, cond[:, 3:]], dim=1)

        x = sample(model_fn, schedule, (n, m.config.in_channels, res, res), sampler=sampler,
                   generator=generator, device=device)
        out.append((x.float() / 2 + 0.5).clamp(0, 1).cpu())
    return torch.cat(out)
