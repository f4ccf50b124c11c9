"""EDM (Karras et al. 2022) for the prior: preconditioning, the training loss, the Heun sampler.

D(x; σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x; c_noise(σ)) with
c_skip = σ_d² / (σ² + σ_d²), c_out = σ·σ_d / √(σ² + σ_d²), c_in = 1 / √(σ² + σ_d²), c_noise = ¼ ln σ.
Training draws ln σ ~ N(P_mean, P_std²) and weights ‖D(y + n; σ) − y‖² by
λ(σ) = (σ² + σ_d²) / (σ·σ_d)²; here the squared error is averaged over the embedding's dimensions
(EDM sums them: a constant factor of the embedding width, which Adam does not see).
Sampling: Karras' σ_i = (σ_max^{1/ρ} + i/(N−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, σ_N = 0, and the
deterministic 2nd-order Heun steps of their Algorithm 1 (S_churn = 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Net = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # F(c_in·x, c_noise) -> same shape as x


@dataclass(frozen=True)
class EDMConfig:
    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0


def coefficients(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, ...]:
    """(c_skip, c_out, c_in, c_noise) for noise levels `sigma` (any shape)."""
    s2, d2 = sigma ** 2, sigma_data ** 2
    return d2 / (s2 + d2), sigma * sigma_data / (s2 + d2).sqrt(), 1 / (s2 + d2).sqrt(), sigma.log() / 4


def denoise(net: Net, x: torch.Tensor, sigma: torch.Tensor, cfg: EDMConfig) -> torch.Tensor:
    """D(x; σ) for x [B, D] and σ [B]: the preconditioned estimate of the clean embedding."""
    c_skip, c_out, c_in, c_noise = coefficients(sigma.float(), cfg.sigma_data)
    out = net(x * c_in[:, None], c_noise).float()
    return c_skip[:, None] * x + c_out[:, None] * out


def loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def edm_loss(net: Net, y: torch.Tensor, log_sigma_normal: torch.Tensor, noise: torch.Tensor,
             cfg: EDMConfig) -> torch.Tensor:
    """Per-example EDM loss; the caller draws `log_sigma_normal` ~ N(0, 1) [B] and `noise` ~ N(0, I)
    like y (so the loop's generator owns every draw)."""
    sigma = (log_sigma_normal * cfg.p_std + cfg.p_mean).exp().to(y.device)
    d = denoise(net, y + noise.to(y.device) * sigma[:, None], sigma, cfg)
    return loss_weight(sigma, cfg.sigma_data) * (d - y).pow(2).mean(dim=1)


def karras_sigmas(steps: int, cfg: EDMConfig) -> torch.Tensor:
    """σ_0 > ... > σ_{N-1} and a final 0 ([steps + 1], float64)."""
    if steps < 1:
        raise ValueError(f"the prior samples with at least 1 step, not {steps}")
    i = torch.arange(steps, dtype=torch.float64)
    lo, hi = cfg.sigma_min ** (1 / cfg.rho), cfg.sigma_max ** (1 / cfg.rho)
    ramp = i / max(steps - 1, 1)
    return torch.cat([(hi + ramp * (lo - hi)) ** cfg.rho, torch.zeros(1, dtype=torch.float64)])


@torch.no_grad()
def heun_sample(net: Net, shape: tuple[int, int], steps: int, cfg: EDMConfig, *,
                generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """Embeddings [B, D] from N(0, σ_max²) by Heun's method over Karras' σ schedule (deterministic
    given the initial noise)."""
    sigmas = karras_sigmas(steps, cfg).float().to(device)
    x = torch.randn(shape, generator=generator, device=device) * sigmas[0]
    for i in range(steps):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = (x - denoise(net, x, s.expand(shape[0]), cfg)) / s
        x_next = x + (s_next - s) * d
        if s_next > 0:  # the 2nd-order correction, skipped on the last step to σ = 0
            d_next = (x_next - denoise(net, x_next, s_next.expand(shape[0]), cfg)) / s_next
            x_next = x + (s_next - s) * (d + d_next) / 2
        x = x_next
    return x
