"""Evaluation metrics: pure functions over images and prompts (no Ray, no storage)."""
from .spatial import (
    Judgement,
    SpatialPrompt,
    SpatialScore,
    heldout_spatial_prompts,
    judge,
    score_spatial,
)
from .stats import mcnemar, wilson_interval

__all__ = ["Judgement", "SpatialPrompt", "SpatialScore", "heldout_spatial_prompts", "judge", "mcnemar",
           "score_spatial", "wilson_interval"]
