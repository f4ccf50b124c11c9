"""Stable Diffusion as a variant (see models/registry.py for the interface): a generator.

Light at import (the registry reads INFO to check manifests); diffusers loads on first use.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.manifest.schema import IMAGE_TEXT_KINDS
from orchestrator.models.registry import VariantInfo

if TYPE_CHECKING:
    import torch

    from orchestrator.data.image_text import ImageTextData
    from orchestrator.manifest.schema import ModelSpec, SDOptions, TrainSpec

    from .objective import SDObjective
    from .pipeline import SDComponents

INFO = VariantInfo(
    name="sd",
    kind="generator",
    trains_on=IMAGE_TEXT_KINDS,
    suites=("spatial", "clip_r_precision", "winoground", "fid", "fid_clip", "drawbench"),
    pipeline_classes=("StableDiffusionPipeline",),
    tiny_base="models/tiny-sd-base",
)


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
        if store is None or not store.exists(f"{INFO.tiny_base}/model_index.json"):
            raise FileNotFoundError(
                f"model.base is null but the blob store has no tiny base at {INFO.tiny_base}/; "
                f"build it with `orch pretrain --blobs <storage.blobs>`, or set model.base: {TINY_RANDOM_BASE}")
        c = load_components(INFO.tiny_base, store=store)
    else:
        with resolve_location(spec.base, base_dir=base_dir, store=store).local_dir() as d:
            c = load_components(d)
    return configure(c, spec.options)


def configure(c: "SDComponents", options: "SDOptions | None") -> "SDComponents":
    """Apply `model.sd`: a prediction type other than the base's retargets its noise schedule."""
    if options is not None and options.prediction_type and options.prediction_type != \
            c.scheduler.config.prediction_type:
        from diffusers import DDPMScheduler

        c.scheduler = DDPMScheduler.from_config(c.scheduler.config, prediction_type=options.prediction_type)
    return c


def modules(c: "SDComponents") -> dict[str, "torch.nn.Module"]:
    return {"unet": c.unet, "vae": c.vae, "text_encoder": c.text_encoder}


def objective(c: "SDComponents", data: "ImageTextData", spec: "TrainSpec", options: "SDOptions | None", *,
              store: Any, device: "torch.device", use_cache: bool = True,
              cache_prefix: str = "cache/sd") -> "SDObjective":
    from orchestrator.manifest.schema import SDOptions

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
