"""Cross-attention maps read where diffusers computes them: an attention processor installed on
every cross-attention (`attn2`) of the U-Net that does the standard computation and, for the layers
being scored, pools the map A (image tokens × text tokens) into one number per sample per head.

Pooling (f over j = text tokens, then the mean over i = image tokens, unless said otherwise):
    lse      (1/λ) log Σ_j exp(λ A_ij)          the paper's LogSumExp
    max_row  max_j A_ij
    max_col  max_i A_ij, then the mean over j    (column max)
    cosine   cos(mean_i q_i, mean_j k_j)         per head, of the queries and keys themselves
A is the attention probabilities or the scaled pre-softmax logits; `token_mask` restricts j.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class Recorder:
    """What the processors share during one U-Net pass: how to pool, which tokens count, and the
    pooled values each scored layer appends ([B] per layer, heads averaged)."""
    pooling: str = "lse"
    lam: float = 1.0
    attention: str = "probs"
    token_mask: torch.Tensor | None = None      # [B, L] bool: the text tokens j runs over
    values: list[torch.Tensor] = field(default_factory=list)
    active: bool = False

    def pool(self, q: torch.Tensor, k: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """[B, H] pooled scores from q [B,H,N,d], k [B,H,L,d], logits [B,H,N,L]."""
        mask = self.token_mask
        if self.pooling == "cosine":
            if mask is not None:
                m = mask[:, None, :, None].to(k.dtype)
                kbar = (k * m).sum(2) / m.sum(2).clamp(min=1)
            else:
                kbar = k.mean(2)
            return F.cosine_similarity(q.mean(2).float(), kbar.float(), dim=-1)
        a = logits.float().softmax(-1) if self.attention == "probs" else logits.float()
        if mask is not None:
            a = a.masked_fill(~mask[:, None, None, :], float("-inf"))
        if self.pooling == "lse":
            return (torch.logsumexp(self.lam * a, dim=-1) / self.lam).mean(-1)
        if self.pooling == "max_row":
            return a.amax(-1).mean(-1)
        if self.pooling == "max_col":
            col = a.amax(-2)                      # [B, H, L]
            if mask is not None:
                col = col.masked_fill(~mask[:, None, :], 0.0)
                return col.sum(-1) / mask.sum(-1)[:, None].clamp(min=1)
            return col.mean(-1)
        raise ValueError(f"unknown pooling {self.pooling!r} (lse, max_row, max_col, cosine)")


class ScoringProcessor:
    """Cross-attention as diffusers' AttnProcessor2_0 computes it, plus the adapters' p_k, p_v
    (added to the frozen W_k, W_v: the paper's Eq. 5) and, when `scored`, the pooled map."""

    def __init__(self, recorder: Recorder, scored: bool, adapter: "torch.nn.Module | None" = None):
        self.recorder, self.scored, self.adapter = recorder, scored, adapter

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        if attn.spatial_norm is not None or attn.group_norm is not None or attention_mask is not None \
                or hidden_states.ndim != 3 or encoder_hidden_states is None:
            raise NotImplementedError("Discffusion scores SD's cross-attention (attn2): token inputs, no masks "
                                      "or norms in the attention module")
        b = hidden_states.shape[0]
        enc = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states
        q, k, v = attn.to_q(hidden_states), attn.to_k(enc), attn.to_v(enc)
        if self.adapter is not None:
            k = k + F.linear(enc, self.adapter.p_k.to(enc.dtype))
            v = v + F.linear(enc, self.adapter.p_v.to(enc.dtype))
        heads = attn.heads
        q, k, v = (x.view(b, -1, heads, x.shape[-1] // heads).transpose(1, 2) for x in (q, k, v))
        logits = (q @ k.transpose(-1, -2)) * (attn.scale if attn.scale else 1 / math.sqrt(q.shape[-1]))
        if self.scored and self.recorder.active:
            self.recorder.values.append(self.recorder.pool(q, k, logits).mean(-1))
        out = logits.softmax(-1) @ v
        out = out.transpose(1, 2).reshape(b, -1, heads * v.shape[-1])
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


class KVAdapter(torch.nn.Module):
    """Learnable p_k, p_v of one cross-attention layer, zero at start (so zero-shot = the base)."""

    def __init__(self, inner_dim: int, cross_dim: int):
        super().__init__()
        self.p_k = torch.nn.Parameter(torch.zeros(inner_dim, cross_dim))
        self.p_v = torch.nn.Parameter(torch.zeros(inner_dim, cross_dim))


def cross_attention_layers(unet) -> list[str]:
    """Names of the U-Net's cross-attention modules, in module order."""
    return [name for name, m in unet.named_modules()
            if name.endswith("attn2") and getattr(m, "is_cross_attention", False)]


def last_of_down_mid_up(names: list[str]) -> list[str]:
    """The public code's layer set: the last cross-attention of the down, mid and up blocks."""
    picked = []
    for part in ("down_blocks", "mid_block", "up_blocks"):
        in_part = [n for n in names if n.startswith(part)]
        if in_part:
            picked.append(in_part[-1])
    return picked


def install(unet, recorder: Recorder, scored: list[str], adapters: "torch.nn.ModuleDict | None" = None) -> None:
    """Every cross-attention gets a ScoringProcessor (adapters apply to all; `scored` are read)."""
    processors = dict(unet.attn_processors)
    for name in cross_attention_layers(unet):
        adapter = adapters[name.replace(".", "_")] if adapters is not None else None
        processors[f"{name}.processor"] = ScoringProcessor(recorder, name in scored, adapter)
    unet.set_attn_processor(processors)


def make_adapters(unet) -> torch.nn.ModuleDict:
    mods = dict(unet.named_modules())
    return torch.nn.ModuleDict({
        name.replace(".", "_"): KVAdapter(mods[name].to_k.out_features, mods[name].to_k.in_features)
        for name in cross_attention_layers(unet)})
