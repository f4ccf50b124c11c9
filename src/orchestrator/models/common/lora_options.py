"""The `lora` key of a generator's options section (`model.<variant>.lora`), shared by the variants
that offer LoRA / DoRA (light: no torch; the manifest validates it). The torch side is lora.py.

A variant takes it in two lines: a subclass naming its usual target modules, and an optional field

    class SDLora(LoraSpec):
        DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")

    class SDOptions(VariantOptions):
        lora: SDLora | None = None        # None (the default): full finetune, no id moves
"""
from __future__ import annotations

import re
from typing import Annotated, ClassVar

from pydantic import Field, field_validator

from orchestrator.manifest.section import Section

# A module-name suffix as peft matches it (`to_q`, `to_out.0`, `attn2.to_k`): dotted identifiers
# or list indices, no wildcards (a regex would match differently in peft and in the docs).
_TARGET = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")


class LoraSpec(Section):
    """LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models") or DoRA (Liu et al.,
    "DoRA: Weight-Decomposed Low-Rank Adaptation") on the denoiser's linear layers, through peft:
    only the adapters train, checkpoints hold only them, the export writes diffusers' LoRA file."""
    # The variant's usual targets, used when `targets` is left out (a subclass sets them).
    DEFAULT_TARGETS: ClassVar[tuple[str, ...]] = ()

    rank: Annotated[int, Field(ge=1, le=4096)] = 4         # diffusers' LoRA scripts' default rank
    # The update is scaled by alpha / rank; None: alpha = rank (scale 1, diffusers' scripts' choice).
    alpha: Annotated[float, Field(gt=0)] | None = None
    # Module-name suffixes the adapters go on (peft's `target_modules`: a module whose name is the
    # suffix or ends with "." + it); None: the variant's DEFAULT_TARGETS.
    targets: Annotated[list[str], Field(min_length=1, max_length=64)] | None = None
    dora: bool = False                                      # DoRA: a learned magnitude per output row
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0     # on the adapter's input, while training
    # true: the export fuses the adapters into the denoiser's weights (a plain model directory, no
    # LoRA file); false: the base's weights and pytorch_lora_weights.safetensors beside them.
    merge_on_export: bool = False

    @field_validator("targets")
    @classmethod
    def _targets_are_names(cls, targets: list[str] | None) -> list[str] | None:
        if targets is None:
            return None
        bad = [t for t in targets if not _TARGET.fullmatch(t)]
        if bad:
            raise ValueError(f"targets are module-name suffixes such as to_q or to_out.0, not {bad[0]!r}")
        if len(set(targets)) != len(targets):
            raise ValueError("targets names a module twice")
        return targets

    @property
    def target_modules(self) -> list[str]:
        """What the adapters go on: `targets`, or the variant's defaults."""
        return list(self.targets) if self.targets is not None else list(self.DEFAULT_TARGETS)

    @property
    def scale_alpha(self) -> float:
        """alpha, with its default (= rank) filled in."""
        return float(self.alpha) if self.alpha is not None else float(self.rank)
