"""GLIDE-mini's options section, `model.glide_mini` (light: no torch; the manifest validates it)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from orchestrator.manifest.section import PathOption, VariantOptions

if TYPE_CHECKING:
    from orchestrator.manifest.schema import ModelSpec


class GlideMiniOptions(VariantOptions):
    """GLIDE-mini's own settings (`model.glide_mini`)."""
    # The fields ids were first hashed with (see Section): dumped even at their defaults.
    ALWAYS_DUMPED = frozenset({"train", "caption_dropout", "vlb_weight", "bpe"})
    # What finetuning trains: the U-Net, the text transformer (with its projection), or both.
    train: Literal["unet", "text", "both"] = "unet"
    # Share of training captions replaced by the all-padding tokens (GLIDE finetunes with 0.2), so
    # classifier-free guidance keeps working.
    caption_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.2
    # Weight of the VLB term of the hybrid loss; None: T/1000 (improved DDPM's rescaled form).
    vlb_weight: Annotated[float, Field(ge=0, le=1000)] | None = None
    # Directory with GPT-2's encoder.json and vocab.bpe: needed when model.base is the released
    # base.pt (a bare state dict carries no tokenizer).
    bpe: Annotated[str | None, PathOption("GPT-2 BPE directory")] = None

    def model_problem(self, model: "ModelSpec") -> str | None:
        if model.base and model.base.endswith(".pt") and not self.bpe:
            return ("model.base is a bare state dict (.pt, glide-text2im's base.pt); set model.glide_mini.bpe "
                    "to the directory holding GPT-2's encoder.json and vocab.bpe")
        return None
