"""GLIDE's pixel-space U-Net (improved-DDPM / ADM layout): scale-shift residual blocks that also
down- and upsample, attention blocks whose keys and values are the caption's tokens (`encoder_kv`,
a 1×1 conv) placed in front of the image's own.

Module and parameter names follow the released checkpoint (`input_blocks.5.1.encoder_kv`,
`out.2`, ...), so its state dict loads as it is; the text side lives in text.py.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import GlideConfig


class GroupNorm(nn.GroupNorm):
    """Computed in float32; `swish` fuses the SiLU that follows most norms."""

    def __init__(self, groups: int, channels: int, swish: bool):
        super().__init__(groups, channels)
        self.swish = swish

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x.float()).to(x.dtype)
        return F.silu(y) if self.swish else y


def zeroed(module: nn.Module) -> nn.Module:
    """Output layers start at zero, so every residual branch starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [N, dim], cosines first (GLIDE's order)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Resample(nn.Module):
    """Parameter-free 2× resampling inside a residual block: nearest up, average-pool down."""

    def __init__(self, up: bool):
        super().__init__()
        self.up = up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest") if self.up else F.avg_pool2d(x, 2)


class ResBlock(nn.Module):
    def __init__(self, channels: int, emb: int, out: int, cfg: GlideConfig, resample: str | None = None):
        super().__init__()
        g = cfg.norm_groups
        self.in_layers = nn.Sequential(GroupNorm(g, channels, swish=True), nn.Identity(),
                                       nn.Conv2d(channels, out, 3, padding=1))
        self.resample = Resample(resample == "up") if resample else None
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb, 2 * out))
        self.out_layers = nn.Sequential(GroupNorm(g, out, swish=False), nn.SiLU(), nn.Dropout(cfg.dropout),
                                        zeroed(nn.Conv2d(out, out, 3, padding=1)))
        self.skip_connection = nn.Identity() if out == channels else nn.Conv2d(channels, out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers[:-1](x)
        if self.resample is not None:  # resample between the norm and the conv, as GLIDE does
            h, x = self.resample(h), self.resample(x)
        h = self.in_layers[-1](h)
        scale, shift = self.emb_layers(emb).to(h.dtype)[..., None, None].chunk(2, dim=1)
        h = self.out_layers[0](h) * (1 + scale) + shift
        return self.skip_connection(x) + self.out_layers[1:](h)


class AttentionBlock(nn.Module):
    """Self-attention over pixels with the caption's tokens as extra keys/values in front.

    The fused qkv (and encoder kv) channels are split per head first, then into q, k, v."""

    def __init__(self, channels: int, cfg: GlideConfig):
        super().__init__()
        self.heads = channels // cfg.num_head_channels
        self.norm = GroupNorm(cfg.norm_groups, channels, swish=False)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.encoder_kv = nn.Conv1d(cfg.xf_width, 2 * channels, 1)
        self.proj_out = zeroed(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        ch = c // self.heads
        q, k, v = self.qkv(self.norm(x).view(b, c, -1)).reshape(b, self.heads, 3 * ch, -1).split(ch, dim=2)
        ek, ev = self.encoder_kv(text).to(q.dtype).reshape(b, self.heads, 2 * ch, -1).split(ch, dim=2)
        k, v = torch.cat([ek, k], dim=-1), torch.cat([ev, v], dim=-1)
        # [b, heads, positions, ch]: SDPA's 1/sqrt(ch) is GLIDE's ch^-1/4 on each of q and k.
        out = F.scaled_dot_product_attention(q.transpose(2, 3), k.transpose(2, 3), v.transpose(2, 3))
        h = self.proj_out(out.transpose(2, 3).reshape(b, c, -1))
        return x + h.reshape(b, c, hgt, wid)


class Step(nn.ModuleList):
    """One entry of input_blocks / middle_block / output_blocks: layers applied in order."""

    def forward(self, h: torch.Tensor, emb: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
            elif isinstance(layer, AttentionBlock):
                h = layer(h, text)
            else:
                h = layer(h)
        return h


class UNet(nn.Module):
    """x_t [B, 3, H, W], timesteps [B], text projection [B, E], tokens [B, width, ctx] → [B, 6, H, W]."""

    def __init__(self, cfg: GlideConfig):
        super().__init__()
        self.cfg = cfg
        mc, emb = cfg.model_channels, cfg.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        ch = mc * cfg.channel_mult[0]
        self.input_blocks = nn.ModuleList([Step([nn.Conv2d(cfg.in_channels, ch, 3, padding=1)])])
        skips, ds = [ch], 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb, mc * mult, cfg)]
                ch = mc * mult
                if ds in cfg.attention_ds:
                    layers.append(AttentionBlock(ch, cfg))
                self.input_blocks.append(Step(layers))
                skips.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(Step([ResBlock(ch, emb, ch, cfg, resample="down")]))
                skips.append(ch)
                ds *= 2
        self.middle_block = Step([ResBlock(ch, emb, ch, cfg), AttentionBlock(ch, cfg), ResBlock(ch, emb, ch, cfg)])
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), emb, mc * mult, cfg)]
                ch = mc * mult
                if ds in cfg.attention_ds:
                    layers.append(AttentionBlock(ch, cfg))
                if level and i == cfg.num_res_blocks:
                    layers.append(ResBlock(ch, emb, ch, cfg, resample="up"))
                    ds //= 2
                self.output_blocks.append(Step(layers))
        self.out = nn.Sequential(GroupNorm(cfg.norm_groups, ch, swish=False), nn.SiLU(),
                                 zeroed(nn.Conv2d(mc * cfg.channel_mult[0], cfg.out_channels, 3, padding=1)))
        self.checkpointing = False

    def _run(self, step: Step, h: torch.Tensor, emb: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(step, h, emb, text, use_reentrant=False)
        return step(h, emb, text)

    def forward(self, x: torch.Tensor, t: torch.Tensor, text_proj: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t, self.cfg.model_channels)) + text_proj.to(torch.float32)
        h, hs = x, []
        for step in self.input_blocks:
            h = self._run(step, h, emb, text)
            hs.append(h)
        h = self._run(self.middle_block, h, emb, text)
        for step in self.output_blocks:
            h = self._run(step, torch.cat([h, hs.pop()], dim=1), emb, text)
        return self.out(h)
