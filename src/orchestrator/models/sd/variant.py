"""Stable Diffusion as a variant (its spec, `SPEC`, is at the end; models/spec.py says what each
part is): a generator.

Light at import (the manifest's checks read the spec); diffusers loads on first use.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.manifest.schema import IMAGE_TEXT_KINDS
from orchestrator.models.spec import VariantSpec

from .options import SDOptions

if TYPE_CHECKING:
    import torch

    from orchestrator.data.image_text import ImageTextData
    from orchestrator.manifest.schema import ModelSpec, TrainSpec

    from .objective import SDObjective
    from .pipeline import SDComponents

TINY_BASE = "models/tiny-sd-base"  # blob prefix of the tiny shapes base (`orch pretrain`)


def load_base(spec: "ModelSpec", store: Any, base_dir: Path | None) -> "SDComponents":
    """The manifest's base: a diffusers directory (path, file://, az:// or a prefix in `store`),
    the tiny shapes base `orch pretrain` put in `store` (base: null), or the tiny architecture
    freshly initialised (base: tiny-random); then the variant's options applied."""
    from orchestrator.manifest.schema import TINY_RANDOM_BASE
    from orchestrator.storage.location import resolve_location

    from .pipeline import build_tiny, load_components

    if spec.base == TINY_RANDOM_BASE:
        c = build_tiny(seed=0, resolution=spec.resolution)
    elif spec.base is None:
        # No silent fallback to random weights: a missing base is the user's to build.
        if store is None or not store.exists(f"{TINY_BASE}/model_index.json"):
            raise FileNotFoundError(
                f"model.base is null but the blob store has no tiny base at {TINY_BASE}/; "
                f"build it with `orch pretrain --blobs <storage.blobs>`, or set model.base: {TINY_RANDOM_BASE}")
        c = load_components(TINY_BASE, store=store)
    else:
        with resolve_location(spec.base, base_dir=base_dir, store=store).local_dir() as d:
            c = load_components(d)
    return configure(c, spec.options)


def configure(c: "SDComponents", options: "SDOptions | None") -> "SDComponents":
    """Apply `model.sd`: a prediction type other than the base's retargets its noise schedule;
    `lora` puts fresh adapters on the U-Net. A base that carries adapters (a LoRA export used as
    a base) has them fused into its weights first: a base is a plain model."""
    if options is not None and options.prediction_type and options.prediction_type != \
            c.scheduler.config.prediction_type:
        from diffusers import DDPMScheduler

        c.scheduler = DDPMScheduler.from_config(c.scheduler.config, prediction_type=options.prediction_type)
    if c.lora is not None or (options is not None and options.lora is not None):
        from orchestrator.models.common import lora

        c.lora = lora.configure(c.unet, c.lora, options.lora if options is not None else None)
    return c


def modules(c: "SDComponents") -> dict[str, "torch.nn.Module"]:
    """Its modules; with LoRA also the adapters (`unet_lora`, inside the U-Net too), which are
    then what is trained and checkpointed: a LoRA checkpoint holds `unet_lora` alone."""
    parts = {"unet": c.unet, "vae": c.vae, "text_encoder": c.text_encoder}
    if c.lora is not None:
        parts["unet_lora"] = c.lora
    return parts


def objective(c: "SDComponents", data: "ImageTextData", spec: "TrainSpec", options: "SDOptions | None", *,
              store: Any, device: "torch.device", use_cache: bool = True,
              cache_prefix: str = "cache/sd") -> "SDObjective":
    from .objective import SDObjective

    return SDObjective(c, data, spec, options or SDOptions(), store=store, device=device, use_cache=use_cache,
                       cache_prefix=cache_prefix)


def export(c: "SDComponents", out_dir: Path) -> None:
    c.save(out_dir)


def load(path: Path) -> "SDComponents":
    from .pipeline import load_components

    return load_components(path)


def resolution(c: "SDComponents") -> int:
    return int(c.vae.config.sample_size)


def generate(c: "SDComponents", prompts: list[str], **sampling: Any) -> "torch.Tensor":
    """Images in [0, 1] (see sampling.generate for the options: sampler, steps, guidance_scale,
    generator, resolution, batch_size)."""
    from .sampling import generate as sample

    return sample(c, prompts, **sampling)


def build_tiny(seed: int = 0, resolution: int = 32, caption_texts: list[str] | None = None) -> "SDComponents":
    """The tiny architecture over the shapes vocabulary, freshly initialised (pipeline.build_tiny)."""
    from .pipeline import build_tiny as build

    return build(seed, resolution, caption_texts)


SPEC = VariantSpec(
    name="sd",
    kind="generator",
    trains_on=IMAGE_TEXT_KINDS,
    suites=("spatial", "clip_r_precision", "clip_score", "pick_score", "winoground", "fid", "fid_clip", "drawbench",
            "geneval"),
    load_base=load_base, modules=modules, objective=objective, export=export, load=load, resolution=resolution,
    generate=generate,
    options=SDOptions,
    pipeline_classes=("StableDiffusionPipeline",),
    tiny_base=TINY_BASE,
    build_tiny=build_tiny,
)
