"""Discffusion's options section, `model.discffusion` (light: no torch; the manifest validates it)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from orchestrator.manifest.section import VariantOptions


class DiscffusionOptions(VariantOptions):
    """Discffusion's score (`model.discffusion`): the paper's method by default; each switch is a
    choice of its public code (or an ablation), so a sweep can compare them."""
    # The fields ids were first hashed with (see Section): dumped even at their defaults.
    ALWAYS_DUMPED = frozenset({"pooling", "lam", "attention", "layers", "tokens", "reduce", "noise_error",
                               "noise_levels", "timestep_count", "seed", "batch_size", "margin"})
    # f(A) per image token over text tokens: lse = (1/λ) log Σ_j exp(λ A_ij) (the paper); max_row /
    # max_col (ablations); cosine: of the mean query and the mean key (an ablation).
    pooling: Literal["lse", "max_row", "max_col", "cosine"] = "lse"
    lam: Annotated[float, Field(gt=0, le=100)] = 1.0
    # What A is: the attention probabilities (paper) or the pre-softmax scaled logits (public code).
    attention: Literal["probs", "logits"] = "probs"
    # Which cross-attention layers: all, or the last of the down, mid and up blocks (public code).
    layers: Literal["all", "last_down_mid_up"] = "all"
    # Which text tokens j runs over: the caption's own (with its start/end tokens), or all (public code: 77).
    tokens: Literal["caption", "all"] = "caption"
    # The attention term per sample (paper), or one batch mean per forward pass (public code; ablation).
    reduce: Literal["sample", "batch"] = "sample"
    # Weight of the public code's noise-error term ‖ε − ε̂_∅‖ − ‖ε − ε̂_c‖ (0: off, the paper).
    noise_error: Annotated[float, Field(ge=0, le=1000)] = 0.0
    # Where the score is taken: relative noise levels (the paper's ensemble) or the public code's
    # timesteps t = 999 − i for i in range(10, 990, 1000 // timestep_count).
    noise_levels: Annotated[list[Annotated[float, Field(gt=0, lt=1)]], Field(min_length=1, max_length=64)] = \
        [0.2, 0.4, 0.6, 0.8]
    timestep_count: Annotated[int, Field(ge=1, le=1000)] | None = None
    seed: Annotated[int, Field(ge=0)] = 0   # the noise, shared by every candidate of an example
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 32   # candidate pairs per U-Net pass
    # Few-shot training of the p_k / p_v adapters: Σ max(0, f(neg) − f(pos) + margin) (paper 0.2;
    # the public code trains with 0.1).
    margin: Annotated[float, Field(ge=0, le=100)] = 0.2
    # What few-shot training adapts: p_k / p_v added to the frozen W_k, W_v of every cross-attention
    # (the paper's Eq. 5), or LoRA (peft) of rank `lora_rank` on q, k, v and out of every attention,
    # self- and cross- (the public code's choice, rank 4).
    adapter: Literal["pk_pv", "lora"] = "pk_pv"
    lora_rank: Annotated[int, Field(ge=1, le=1024)] = 4
    # Dynamic head weighting (the paper's Eq. 7; off in the public code): while training, each scored
    # layer's heads get the attribution Attr_h = Σ A_h ⊙ (1/m) Σ_{k=1..m} ∂f(k/m·A)/∂A_h (gradients
    # detached; m = head_attribution_steps, a Riemann sum of integrated gradients, m = 1: gradient ×
    # input), normalised to mean 1 and averaged over the training steps; the score weights its heads
    # by these, at inference too. Zero-shot (no training) the weights are 1: the plain head mean.
    head_weighting: bool = False
    head_attribution_steps: Annotated[int, Field(ge=1, le=64)] = 1
    # Adaptive pruning (the Diffusion Classifier's): score every candidate on `prune_steps` evenly
    # spread timesteps of the set, keep the best `prune_keep`, score those on the rest; the pruned
    # rank below every kept one, in their first-stage order. None: every candidate on every timestep.
    prune_keep: Annotated[int, Field(ge=1)] | None = None
    prune_steps: Annotated[int, Field(ge=1)] = 1

    @model_validator(mode="after")
    def _switches_fit(self) -> "DiscffusionOptions":
        if self.head_weighting and self.pooling == "cosine":
            raise ValueError("head_weighting attributes the attention map A; pooling cosine reads no A "
                             "(use lse, max_row or max_col)")
        return self
