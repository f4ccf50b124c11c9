"""Visual Chain-of-Thought's options section, `model.vcdm` (light: no torch; the manifest
validates it)."""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from orchestrator.manifest.section import PathOption, VariantOptions


class VCDMOptions(VariantOptions):
    """Visual Chain-of-Thought's own settings (`model.vcdm`): a CLIP-embedding prior, then an
    embedding-conditioned image U-Net, trained together in one trial."""
    # The fields ids were first hashed with (see Section): dumped even at their defaults.
    ALWAYS_DUMPED = frozenset({"clip", "conditioning", "train", "embedding_dropout"})
    # The frozen CLIP (transformers' format: path, file://, az:// or a blob prefix) whose
    # unnormalised image embeddings the prior learns and the U-Net is conditioned on.
    clip: Annotated[str | None, PathOption("CLIP directory")] = None
    # embedding: the VCDM; none: the unconditional baseline (the U-Net alone, no CLIP, no prior).
    conditioning: Literal["embedding", "none"] = "embedding"
    # Which stages train; None: what the conditioning needs (both; the U-Net alone for none).
    train: Literal["prior", "unet", "both"] | None = None
    # Share of training images whose embedding is left out (the U-Net then also learns p(x)).
    embedding_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    # No defaults make a whole section (the CLIP has none): a manifest of this variant must say.
    REQUIRED: ClassVar[str] = ("variant vcdm needs its section model.vcdm: {clip: DIR} (the CLIP whose image "
                               "embeddings it learns), or {conditioning: none} for the unconditional baseline")

    @model_validator(mode="after")
    def _conditioning_fits(self) -> "VCDMOptions":
        if self.conditioning == "embedding" and self.clip is None:
            raise ValueError("conditioning: embedding needs clip (the CLIP directory whose image embeddings it "
                             "learns); set model.vcdm.clip, or conditioning: none for the unconditional baseline")
        if self.conditioning == "none" and self.train in ("prior", "both"):
            raise ValueError(f"conditioning: none trains the U-Net alone (no embeddings, so no prior); "
                             f"train: {self.train} needs conditioning: embedding")
        return self

    @property
    def stages(self) -> tuple[str, ...]:
        """The trained stages, by the model's module names."""
        train = self.train or ("both" if self.conditioning == "embedding" else "unet")
        return {"prior": ("prior",), "unet": ("unet",), "both": ("prior", "unet")}[train]
