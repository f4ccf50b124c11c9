"""The prior's network F: a small transformer over three tokens — [timestep, noisy embedding,
learned query] — whose output at the query token is F(c_in·x; c_noise) (edm.py wraps it into the
denoiser D). The paper's prior is width 512, depth 6, 8 heads; `tiny` is the shapes-world size.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class PriorConfig:
    embed_dim: int = 512
    width: int = 512
    depth: int = 6
    heads: int = 8

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def read(cls, path: Path) -> "PriorConfig":
        data = json.loads(path.read_text())
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"{path}: unknown prior config keys {unknown}")
        return cls(**data)


def tiny_prior(embed_dim: int) -> PriorConfig:
    return PriorConfig(embed_dim=embed_dim, width=64, depth=2, heads=4)


def noise_embedding(c_noise: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features [B, dim] of the (continuous) noise level c_noise = ¼ ln σ."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=c_noise.device) / half)
    args = c_noise.float()[:, None] * 1000 * freqs[None]  # ×1000: c_noise spans a few units, not 1000 steps
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Prior(nn.Module):
    """F(x_in [B, D], c_noise [B]) -> [B, D]."""

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.time_embed = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w))
        self.embed_in = nn.Linear(cfg.embed_dim, w)
        self.query = nn.Parameter(torch.randn(w) * 0.02)
        self.positions = nn.Parameter(torch.randn(3, w) * 0.02)
        layer = nn.TransformerEncoderLayer(w, cfg.heads, 4 * w, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.norm_out = nn.LayerNorm(w)
        self.embed_out = nn.Linear(w, cfg.embed_dim)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        t = self.time_embed(noise_embedding(c_noise, self.cfg.width))
        tokens = torch.stack([t, self.embed_in(x), self.query.expand_as(t)], dim=1) + self.positions
        h = self.transformer(tokens)
        return self.embed_out(self.norm_out(h[:, 2]))
