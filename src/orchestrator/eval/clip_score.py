"""Per-image prompt-image scores, each the mean over the generated images with a 95% interval:

- CLIPScore (Hessel et al., EMNLP 2021): how well each image fits its prompt by the evaluation's
  CLIP, with no reference image: CLIP-S(c, v) = w · max(cos(E_c, E_v), 0), w = 2.5 (the paper's
  rescaling). torchmetrics' `CLIPScore` reports 100 · max(cos, 0), i.e. 40 times this.
- PickScore (Kirstain et al., NeurIPS 2023): a CLIP-H finetuned on human preferences (Pick-a-Pic);
  the score is its logit scale times the cosine, exp(logit_scale) · cos(E_c, E_v), as its authors'
  code computes it (about 100 times the cosine), unclipped.

The suite scores the held-out prompts' generated images (the images every generating suite judges),
reports the mean over images with a 95% normal interval (1.96 · sd / √n) and the images' sd, and
keeps every image's score in `info.outcomes` for the paired permutation test between two models
(results/paired.py).
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from .results import OUTCOMES, MetricValue, SuiteResult

W = 2.5
FORMULA = "w * max(cos(text, image), 0), w = 2.5 (Hessel et al. 2021)"


def clip_scores(encoder: Any, images: Any, prompts: Sequence[str]) -> np.ndarray:
    """CLIP-S of image k against prompt k, float64 [N]; `encoder.score_pairs` gives the cosines."""
    cos = np.asarray(encoder.score_pairs(list(prompts), images), dtype=np.float64)
    if cos.shape != (len(prompts),):
        raise ValueError(f"the scorer returned {cos.shape} scores for {len(prompts)} image-prompt pairs")
    return W * np.maximum(cos, 0.0)


def mean_with_interval(name: str, scores: np.ndarray) -> MetricValue:
    """The mean of per-sample scores with a 95% normal interval and the samples' sd (ddof 1)."""
    n = len(scores)
    mean = float(scores.mean())
    sd = float(scores.std(ddof=1)) if n > 1 else 0.0
    half = 1.96 * sd / np.sqrt(n)
    return MetricValue(name, mean, n, mean - half, mean + half, sd)


def _per_image(name: str, scores: np.ndarray, info: dict[str, Any], ctx: Any, started: float) -> SuiteResult:
    """A per-image score suite's result: the mean with its interval, every image's score for pairing."""
    info = {**info, "interval": "normal: mean ± 1.96 sd / sqrt(n)", OUTCOMES: {name: [float(s) for s in scores]},
            **ctx.generation_info}
    return SuiteResult(name, [mean_with_interval(name, scores)], info, time.perf_counter() - started)


class ClipScoreSuite:
    name = "clip_score"

    def requirements(self, ctx: Any) -> list[str]:
        return ctx.generation_problems(self.name) + ctx.clip_problems(self.name)

    def run(self, ctx: Any) -> SuiteResult:
        started = time.perf_counter()
        enc = ctx.clip()
        scores = clip_scores(enc, ctx.generated(), [p.text for p in ctx.prompts()])
        return _per_image(self.name, scores, {"clip": enc.name, "formula": FORMULA}, ctx, started)


class PickScoreSuite:
    name = "pick_score"

    def requirements(self, ctx: Any) -> list[str]:
        return ctx.generation_problems(self.name) + ctx.pick_problems(self.name)

    def run(self, ctx: Any) -> SuiteResult:
        started = time.perf_counter()
        model = ctx.pick_scorer()
        scale = float(model.model.logit_scale.detach().exp())
        cos = np.asarray(model.score_pairs([p.text for p in ctx.prompts()], ctx.generated()), dtype=np.float64)
        info = {"model": model.name, "formula": "exp(logit_scale) * cos(text, image)", "logit_scale_exp": scale}
        return _per_image(self.name, scale * cos, info, ctx, started)
