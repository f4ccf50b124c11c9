"""GLIDE's Gaussian diffusion (improved DDPM): the cosine schedule, learned-range variance, the
hybrid loss, and respaced DDPM / DDIM sampling.

Learned variance: the model's extra channels give v ∈ [−1, 1] and
log Σ = frac·log β_t + (1 − frac)·log β̃_t with frac = (v + 1)/2 (β̃: the posterior variance).
Hybrid loss: L_simple (ε MSE) + weight · L_vlb, the VLB term computed on the *detached* mean so it
trains only the variance; per timestep, in bits, averaged over pixels — which is the paper's
λ = 0.001 for T = 1000 (its L_vlb sums T terms), and `weight` = T/1000 rescales it for other T.
Respacing: a subset of the T timesteps with β recomputed from ᾱ at those steps; the model is
always called with the original timestep.
"""
from __future__ import annotations

import math

import torch

from orchestrator.models.common.diffusion import cosine_betas


def _gather(a: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return a.to(t.device)[t].float().view(-1, *([1] * (like.ndim - 1)))


class Schedule:
    """Every per-timestep quantity of a diffusion over `betas` (float64), and its original timesteps."""

    def __init__(self, betas: torch.Tensor, timesteps: torch.Tensor | None = None):
        self.betas = betas
        self.num_steps = len(betas)
        self.timesteps = torch.arange(self.num_steps) if timesteps is None else timesteps
        ac = torch.cumprod(1 - betas, 0)
        ac_prev = torch.cat([torch.ones(1, dtype=ac.dtype), ac[:-1]])
        self.alphas_cumprod, self.alphas_cumprod_prev = ac, ac_prev
        self.posterior_variance = betas * (1 - ac_prev) / (1 - ac)
        # β̃_0 is 0: its log is taken from β̃_1, as improved DDPM does.
        self.posterior_log_variance = torch.log(torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]]))
        self.posterior_coef_x0 = betas * ac_prev.sqrt() / (1 - ac)
        self.posterior_coef_xt = (1 - ac_prev) * (1 - betas).sqrt() / (1 - ac)

    @classmethod
    def cosine(cls, steps: int) -> "Schedule":
        return cls(cosine_betas(steps))

    def respaced(self, count: int) -> "Schedule":
        """`count` timesteps spread evenly over the schedule (first and last kept)."""
        if not 1 <= count <= self.num_steps:
            raise ValueError(f"respacing to {count} steps: must be within 1..{self.num_steps}")
        keep = sorted({round(i * (self.num_steps - 1) / max(count - 1, 1)) for i in range(count)})
        ac = self.alphas_cumprod[keep]
        prev = torch.cat([torch.ones(1, dtype=ac.dtype), ac[:-1]])
        return Schedule(1 - ac / prev, self.timesteps[keep])

    # ---- forward process -------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        ac = _gather(self.alphas_cumprod, t, x0)
        return ac.sqrt() * x0 + (1 - ac).sqrt() * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = _gather(self.posterior_coef_x0, t, xt) * x0 + _gather(self.posterior_coef_xt, t, xt) * xt
        return mean, _gather(self.posterior_log_variance, t, xt)

    # ---- the model's reverse step ------------------------------------------------------
    def x0_from_eps(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        ac = _gather(self.alphas_cumprod, t, xt)
        return (xt - (1 - ac).sqrt() * eps) / ac.sqrt()

    def eps_from_x0(self, xt: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        ac = _gather(self.alphas_cumprod, t, xt)
        return (xt - ac.sqrt() * x0) / (1 - ac).sqrt()

    def log_variance(self, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        frac = (v.float() + 1) / 2
        return frac * _gather(self.betas.log(), t, v) + (1 - frac) * _gather(self.posterior_log_variance, t, v)

    def p_mean_variance(self, out: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, clip: bool = True):
        """(mean, log variance, x̂0, ε̂) of p(x_{t-1} | x_t) from the model's 6 output channels."""
        eps, v = out.float().chunk(2, dim=1)
        x0 = self.x0_from_eps(xt, t, eps)
        if clip:
            x0 = x0.clamp(-1, 1)
        mean, _ = self.q_posterior(x0, xt, t)
        return mean, self.log_variance(v, t), x0, eps


# ---- the VLB term --------------------------------------------------------------------
def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """−log p(x) for images in [−1, 1] quantised to 256 levels (the decoder term at t = 0)."""
    centred, inv_std = x - mean, torch.exp(-log_scale)
    cdf_plus = _std_normal_cdf(inv_std * (centred + 1 / 255.0))
    cdf_min = _std_normal_cdf(inv_std * (centred - 1 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    logp = torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))
    return -logp


def vlb_bits(schedule: Schedule, out: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor,
             t: torch.Tensor) -> torch.Tensor:
    """Per-example L_t in bits per dimension, with the predicted mean detached (trains Σ only)."""
    eps, v = out.float().chunk(2, dim=1)
    frozen = torch.cat([eps.detach(), v], dim=1)
    mean, log_var, _, _ = schedule.p_mean_variance(frozen, xt, t, clip=False)
    true_mean, true_log_var = schedule.q_posterior(x0, xt, t)
    dims = tuple(range(1, x0.ndim))
    kl = normal_kl(true_mean, true_log_var, mean, log_var).mean(dim=dims) / math.log(2.0)
    nll = discretized_gaussian_nll(x0, mean, 0.5 * log_var).mean(dim=dims) / math.log(2.0)
    return torch.where(t == 0, nll, kl)


# ---- sampling ------------------------------------------------------------------------


@torch.no_grad()
def sample(model_fn, schedule: Schedule, shape: tuple[int, ...], *, sampler: str = "ddpm",
           generator: torch.Generator | None = None, device: torch.device | str = "cpu",
           eta: float = 0.0) -> torch.Tensor:
    """Images in [−1, 1] from noise, over a (respaced) `schedule`: DDPM with the learned variance,
    or DDIM (η = 0 deterministic). x̂0 is clipped to [−1, 1] at every step, as GLIDE samples."""
    if sampler not in ("ddpm", "ddim"):
        raise ValueError(f"unknown sampler {sampler!r} (ddpm or ddim)")
    x = torch.randn(shape, generator=generator, device=device)
    for i in reversed(range(schedule.num_steps)):
        t = torch.full((shape[0],), i, device=device, dtype=torch.long)
        out = model_fn(x, schedule.timesteps.to(device)[t])
        mean, log_var, x0, _ = schedule.p_mean_variance(out, x, t)
        noise = torch.randn(shape, generator=generator, device=device)
        if sampler == "ddpm":
            x = mean + (i > 0) * torch.exp(0.5 * log_var) * noise
            continue
        eps = schedule.eps_from_x0(x, t, x0)
        ac, ac_prev = _gather(schedule.alphas_cumprod, t, x), _gather(schedule.alphas_cumprod_prev, t, x)
        sigma = eta * ((1 - ac_prev) / (1 - ac) * (1 - ac / ac_prev)).sqrt()
        x = ac_prev.sqrt() * x0 + (1 - ac_prev - sigma ** 2).sqrt() * eps + (i > 0) * sigma * noise
    return x
