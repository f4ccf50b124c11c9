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
class AttentionRecorder:
    """What the processors share during one U-Net pass: how to pool, which tokens count, and the
    pooled values each scored layer appends ([B] per layer, heads averaged)."""
    pooling: str = "lse"
    lam: float = 1.0
    attention: str = "probs"
    token_mask: torch.Tensor | None = None      # [B, L] bool: the text tokens j runs over
    values: list[torch.Tensor] = field(default_factory=list)
    active: bool = False
    learn_heads: bool = False                   # training: fold attributions into the head weights
    attribution_steps: int = 1

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
        return self.pool_map(self.attention_map(logits))

    def attention_map(self, logits: torch.Tensor) -> torch.Tensor:
        """A: the attention probabilities, or the scaled pre-softmax logits themselves."""
        return logits.float().softmax(-1) if self.attention == "probs" else logits.float()

    def pool_map(self, a: torch.Tensor) -> torch.Tensor:
        """f(A) per sample and head: [B, H] from A [B, H, N, L]."""
        mask = self.token_mask
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

    def attribution(self, logits: torch.Tensor, steps: int) -> torch.Tensor:
        """[B, H] head attributions (the paper's Eq. 7): Σ over A_h's entries of A_h ⊙ the Riemann
        sum (1/m) Σ_{k=1..m} ∂f(k/m·A)/∂A_h, gradients detached from everything else."""
        a = self.attention_map(logits).detach()
        grad = torch.zeros_like(a)
        with torch.enable_grad():
            for step in range(1, steps + 1):
                x = (a * (step / steps)).requires_grad_(True)
                grad += torch.autograd.grad(self.pool_map(x).sum(), x)[0]
        return (a * grad / steps).sum(dim=(-1, -2))


class HeadWeights(torch.nn.Module):
    """One scored layer's head weights (dynamic head weighting): 1 until trained; each training
    pass folds in the batch's attributions, |Attr_h| normalised to mean 1, as a running mean over
    all passes so far (`count`). Buffers: checkpointed and exported with the adapters, never
    optimised."""

    def __init__(self, heads: int):
        super().__init__()
        self.register_buffer("weight", torch.ones(heads))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def learn(self, attribution: torch.Tensor) -> None:
        w = attribution.detach().abs().mean(0).to(self.weight)       # [H], the batch's mean
        w = w / w.mean().clamp(min=1e-12)
        n = int(self.count)
        self.weight.mul_(n / (n + 1)).add_(w / (n + 1))
        self.count += 1

    def combine(self, pooled: torch.Tensor) -> torch.Tensor:
        """[B] the heads' weighted mean of pooled [B, H]."""
        w = self.weight.to(pooled.dtype, copy=True)  # a copy: training updates the buffer in place
        return (pooled * w).sum(-1) / w.sum()


class ScoringProcessor:
    """Cross-attention as diffusers' AttnProcessor2_0 computes it, plus the adapters' p_k, p_v
    (added to the frozen W_k, W_v: the paper's Eq. 5) and, when `scored`, the pooled map."""

    def __init__(self, recorder: AttentionRecorder, scored: bool, adapter: "KVAdapter | None" = None,
                 heads: "HeadWeights | None" = None):
        self.recorder, self.scored, self.adapter, self.heads = recorder, scored, adapter, heads

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
            pooled = self.recorder.pool(q, k, logits)
            if self.heads is None:
                self.recorder.values.append(pooled.mean(-1))
            else:
                self.recorder.values.append(self.heads.combine(pooled))
                if self.recorder.learn_heads:
                    self.heads.learn(self.recorder.attribution(logits, self.recorder.attribution_steps))
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


def scored_layers(names: list[str], layers: str) -> list[str]:
    """The cross-attention layers the score reads (`options.layers`)."""
    return names if layers == "all" else last_of_down_mid_up(names)


def install(unet, recorder: AttentionRecorder, scored: list[str],
            adapters: "torch.nn.ModuleDict | None" = None) -> None:
    """Every cross-attention gets a ScoringProcessor: `scored` are read; p_k / p_v adapters (the
    adapters' KVAdapter entries) apply to every layer, head weights (its "heads") to theirs."""
    processors = dict(unet.attn_processors)
    heads = adapters["heads"] if adapters is not None and "heads" in adapters else {}
    for name in cross_attention_layers(unet):
        key = name.replace(".", "_")
        kv = adapters[key] if adapters is not None and key in adapters else None
        processors[f"{name}.processor"] = ScoringProcessor(
            recorder, name in scored, kv if isinstance(kv, KVAdapter) else None, heads[key] if key in heads else None)
    unet.set_attn_processor(processors)
