"""Stable Diffusion 3's options section, `model.sd3` (light: no torch; the manifest validates it)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from orchestrator.manifest.section import VariantOptions
from orchestrator.models.common.lora_options import LoraSpec

# How training draws the noise level σ and weights the loss, by the names diffusers' SD3 training
# scripts give them (training_utils: compute_density_for_timestep_sampling and
# compute_loss_weighting_for_sd3). logit_normal and mode shape the density of σ; cosmap and
# sigma_sqrt draw σ uniformly and weight the loss instead; uniform does neither.
WeightingScheme = Literal["logit_normal", "mode", "cosmap", "sigma_sqrt", "uniform"]


class SD3Lora(LoraSpec):
    """`model.sd3.lora`: LoRA / DoRA on the transformer (common/lora_options.py)."""
    # Both streams' attention projections of every joint block: diffusers' SD3 LoRA scripts' targets.
    DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


class SD3Options(VariantOptions):
    """Stable Diffusion 3 / 3.5's own settings (`model.sd3`)."""
    # A new section: no trial id was hashed with it before, so ALWAYS_DUMPED stays empty (the
    # base's) and every field holding its default is left out of dumps.
    weighting_scheme: WeightingScheme = "logit_normal"
    # logit_normal: σ-index u = sigmoid(N(logit_mean, logit_std)) (Esser et al. use (0, 1)).
    logit_mean: float = 0.0
    logit_std: Annotated[float, Field(gt=0)] = 1.0
    # mode: u = 1 − v − mode_scale·(cos²(πv/2) − 1 + v), v uniform (1.29 in the SD3 paper).
    mode_scale: float = 1.29
    # Share of training captions replaced by "" (every encoder's embedding of the empty prompt,
    # which is what classifier-free guidance's unconditional branch uses at sampling time).
    caption_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    # SD3 finetuning freezes the text encoders; true trains them with the transformer (a tiny base
    # from scratch needs it: random frozen encoders give it nothing to learn word order from).
    # Their embeddings are then computed every step rather than cached.
    train_text_encoders: bool = False
    # false: leave T5 out even where the base has it (its part of the prompt is zeros, as
    # StableDiffusion3Pipeline does without text_encoder_3); the export then has no T5 either.
    use_t5: bool = True
    # T5's token length (the zeros' length without T5); None: what the model directory records
    # (77, diffusers' SD3 training scripts' default, for a directory that records none).
    max_sequence_length: Annotated[int, Field(ge=1, le=512)] | None = None
    # EDM-style preconditioning as diffusers' train_dreambooth_sd3 offers it: the prediction is
    # turned into x0 = x_σ − σ·v and regressed on x0 (a σ²-weighted form of the flow loss).
    precondition_outputs: bool = False
    # LoRA / DoRA adapters on the transformer, trained alone (every other weight frozen); None: the
    # transformer is finetuned whole.
    lora: SD3Lora | None = None

    @model_validator(mode="after")
    def _lora_alone(self) -> "SD3Options":
        if self.lora is not None and self.train_text_encoders:
            raise ValueError("lora trains adapters on the transformer with every other weight frozen: "
                             "train_text_encoders cannot be true with it")
        return self
