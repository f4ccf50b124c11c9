"""Stable Diffusion's options section, `model.sd` (light: no torch; the manifest validates it)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from orchestrator.manifest.section import VariantOptions
from orchestrator.models.common.lora_options import LoraSpec


class SDLora(LoraSpec):
    """`model.sd.lora`: LoRA / DoRA on the U-Net (common/lora_options.py)."""
    # q, k, v and out of every attention, self and cross: diffusers' train_text_to_image_lora.py.
    DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


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
    # LoRA / DoRA adapters on the U-Net, trained alone (the U-Net's own weights frozen); None: the
    # U-Net is finetuned whole.
    lora: SDLora | None = None

    @model_validator(mode="after")
    def _lora_alone(self) -> "SDOptions":
        if self.lora is not None and self.train_text_encoder:
            raise ValueError("lora trains adapters on the U-Net with every other weight frozen: "
                             "train_text_encoder cannot be true with it")
        return self
