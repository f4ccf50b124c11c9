"""Stable Diffusion's options section, `model.sd` (light: no torch; the manifest validates it)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from orchestrator.manifest.section import VariantOptions


class SDOptions(VariantOptions):
    """Stable Diffusion's own settings (`model.sd`)."""
    # The fields ids were first hashed with (see Section): dumped even at their defaults.
    ALWAYS_DUMPED = frozenset({"prediction_type", "train_text_encoder", "caption_dropout"})
    # None: what the base's scheduler says (ε for v1-5 and the tiny base, v for v2-1 768).
    prediction_type: Literal["epsilon", "v_prediction"] | None = None
    # SD finetuning freezes the text encoder; true trains it with the U-Net (text embeddings are
    # then computed every step rather than cached).
    train_text_encoder: bool = False
    # Share of training captions replaced by "" so classifier-free guidance keeps working.
    caption_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
