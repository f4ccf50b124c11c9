"""GLIDE's text side: a non-causal transformer over the caption's tokens, padding positions
replaced by a learned embedding, a final layer norm; it returns the last token's projection (added
to the timestep embedding) and the token sequence (keys/values of every U-Net attention block).

Parameter names follow the released checkpoint (`transformer.resblocks.N.attn.c_qkv`, ...), and so
does the head layout of the fused q/k/v projection: per head, q, k and v are adjacent.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import GlideConfig


class FloatLayerNorm(nn.LayerNorm):
    """Computed in float32 whatever the input dtype (bf16 / fp16 activations)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.c_qkv = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, width = x.shape
        q, k, v = self.c_qkv(x).view(b, n, self.heads, -1).split(width // self.heads, dim=-1)
        # [b, heads, n, ch]; SDPA scales by 1/sqrt(ch), as GLIDE's sqrt-on-both-sides does.
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.c_proj(out.transpose(1, 2).reshape(b, n, width))


class MLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = SelfAttention(width, heads)
        self.ln_1 = FloatLayerNorm(width)
        self.mlp = MLP(width)
        self.ln_2 = FloatLayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            if self.checkpointing and x.requires_grad:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


class TextEncoder(nn.Module):
    """tokens [B, ctx] + mask [B, ctx] → (projection [B, 4·channels], sequence [B, width, ctx])."""

    def __init__(self, cfg: GlideConfig):
        super().__init__()
        w = cfg.xf_width
        self.transformer = Transformer(w, cfg.xf_layers, cfg.xf_heads)
        self.final_ln = FloatLayerNorm(w)
        self.token_embedding = nn.Embedding(cfg.vocab_size, w)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.text_ctx, w))
        self.padding_embedding = nn.Parameter(torch.empty(cfg.text_ctx, w))
        self.transformer_proj = nn.Linear(w, cfg.time_embed_dim)
        std = 1 / math.sqrt(w)
        with torch.no_grad():
            self.positional_embedding.normal_(0, std)
            self.padding_embedding.normal_(0, std)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.token_embedding(tokens.long()) + self.positional_embedding[None]
        x = torch.where(mask[..., None], x, self.padding_embedding[None].to(x.dtype))
        x = self.final_ln(self.transformer(x))
        return self.transformer_proj(x[:, -1]), x.permute(0, 2, 1)
