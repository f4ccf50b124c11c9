"""Diffusion training losses and schedules: ε-prediction MSE, Min-SNR-γ weighting, offset noise,
the cosine (`squaredcos_cap_v2`) β schedule.

Formulas as in diffusers' train_text_to_image: SNR(t) = ᾱ_t / (1 − ᾱ_t); for ε-prediction the
Min-SNR weight is min(SNR, γ) / SNR (Hang et al. 2023); offset noise adds a per-(sample, channel)
constant so the model can learn to shift mean brightness.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    a = alphas_cumprod.to(timesteps.device)[timesteps].float()
    return a / (1.0 - a)


def min_snr_weights(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, gamma: float,
                    prediction_type: str = "epsilon") -> torch.Tensor:
    s = snr(alphas_cumprod, timesteps)
    # v-prediction's loss already carries a factor SNR+1 relative to ε's, hence the other divisor.
    return torch.clamp(s, max=gamma) / (s + 1 if prediction_type == "v_prediction" else s)


def training_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the U-Net learns to predict: ε (SD v1-5, the tiny base) or v (SD v2-1 768)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    raise ValueError(f"unsupported scheduler prediction_type {kind!r} (epsilon or v_prediction)")


def sample_noise(shape: torch.Size | tuple, generator: torch.Generator, noise_offset: float = 0.0) -> torch.Tensor:
    """Gaussian noise (on the generator's device), plus offset noise when `noise_offset` > 0."""
    noise = torch.randn(shape, generator=generator)
    if noise_offset > 0:
        noise = noise + noise_offset * torch.randn((shape[0], shape[1], 1, 1), generator=generator)
    return noise


def diffusion_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """MSE in float32, averaged per sample then (optionally weighted) over the batch."""
    if weights is None:
        return F.mse_loss(pred.float(), target.float())
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=tuple(range(1, pred.ndim)))
    return (per_sample * weights).mean()


def cosine_betas(steps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule in float64: ᾱ(t) = cos²((t/T + 0.008)/1.008 · π/2),
    β_i = 1 − ᾱ((i+1)/T)/ᾱ(i/T), capped at `max_beta` (diffusers' `squaredcos_cap_v2`)."""
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor([min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), max_beta)
                         for i in range(steps)], dtype=torch.float64)
