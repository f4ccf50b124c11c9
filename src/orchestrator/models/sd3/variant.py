"""Stable Diffusion 3 / 3.5 (MMDiT) as a variant (its spec, `SPEC`, is at the end; models/spec.py
says what each part is): a generator.

Light at import (the manifest's checks read the spec); diffusers loads on first use.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.manifest.schema import IMAGE_TEXT_KINDS
from orchestrator.models.spec import VariantSpec

from .options import SD3Options

if TYPE_CHECKING:
    import torch

    from orchestrator.data.image_text import ImageTextData
    from orchestrator.manifest.schema import ModelSpec, TrainSpec

    from .components import SD3Components
    from .objective import SD3Objective

TINY_BASE = "models/tiny-sd3-base"  # blob prefix of the tiny shapes base (`orch pretrain --variant sd3`)


def pretrain_options() -> SD3Options:
    """How `orch pretrain --variant sd3` trains the tiny base: the transformer and both text
    encoders from scratch (random frozen encoders would give it no word order to learn from),
    with caption dropout for classifier-free guidance."""
    return SD3Options(train_text_encoders=True, caption_dropout=0.1)


def load_base(spec: "ModelSpec", store: Any, base_dir: Path | None) -> "SD3Components":
    """The manifest's base: an SD3 directory (path, file://, az:// or a prefix in `store`), the
    tiny shapes base in `store` (base: null), or the tiny architecture freshly initialised
    (base: tiny-random); then the variant's options applied."""
    from orchestrator.manifest.schema import TINY_RANDOM_BASE
    from orchestrator.storage.location import resolve_location

    from .components import build_tiny, load_components

    use_t5 = spec.options.use_t5 if spec.options is not None else True  # T5 left unread when dropped
    if spec.base == TINY_RANDOM_BASE:
        c = build_tiny(seed=0, resolution=spec.resolution)
    elif spec.base is None:
        # No silent fallback to random weights: a missing base is the user's to build.
        if store is None or not store.exists(f"{TINY_BASE}/model_index.json"):
            raise FileNotFoundError(
                f"model.base is null but the blob store has no tiny SD3 base at {TINY_BASE}/; build it with "
                f"`orch pretrain --variant sd3 --blobs <storage.blobs>`, or set model.base: {TINY_RANDOM_BASE}")
        c = load_components(TINY_BASE, store=store, use_t5=use_t5)
    else:
        with resolve_location(spec.base, base_dir=base_dir, store=store).local_dir() as d:
            c = load_components(d, use_t5=use_t5)
    return configure(c, spec.options)


def configure(c: "SD3Components", options: "SD3Options | None") -> "SD3Components":
    """Apply `model.sd3`: use_t5 false drops T5; max_sequence_length sets T5's token length;
    `lora` puts fresh adapters on the transformer. A base that carries adapters (a LoRA export
    used as a base) has them fused into its weights first: a base is a plain model."""
    if options is not None and not options.use_t5:
        c.drop_t5()
    if options is not None and options.max_sequence_length is not None:
        c.max_sequence_length = options.max_sequence_length
    if c.lora is not None or (options is not None and options.lora is not None):
        from orchestrator.models.common import lora

        c.lora = lora.configure(c.transformer, c.lora, options.lora if options is not None else None)
    return c


def modules(c: "SD3Components") -> dict[str, "torch.nn.Module"]:
    """Its modules; with LoRA also the adapters (`transformer_lora`, inside the transformer too),
    which are then what is trained and checkpointed."""
    parts = {"transformer": c.transformer, "vae": c.vae, **c.text_encoders}
    if c.lora is not None:
        parts["transformer_lora"] = c.lora
    return parts


def objective(c: "SD3Components", data: "ImageTextData", spec: "TrainSpec", options: "SD3Options | None", *,
              store: Any, device: "torch.device", use_cache: bool = True,
              cache_prefix: str = "cache/sd3") -> "SD3Objective":
    from .objective import SD3Objective

    return SD3Objective(c, data, spec, options or SD3Options(), store=store, device=device, use_cache=use_cache,
                        cache_prefix=cache_prefix)


def export(c: "SD3Components", out_dir: Path) -> None:
    c.save(out_dir)


def load(path: Path) -> "SD3Components":
    from .components import load_components

    return load_components(path)


def resolution(c: "SD3Components") -> int:
    return int(c.vae.config.sample_size)


def generate(c: "SD3Components", prompts: list[str], **sampling: Any) -> "torch.Tensor":
    """Images in [0, 1] by flow-matching Euler with classifier-free guidance (sampling.generate:
    sampler, steps, guidance_scale, generator, resolution, batch_size, latents)."""
    from .sampling import generate as sample

    return sample(c, prompts, **sampling)


def build_tiny(seed: int = 0, resolution: int = 32, caption_texts: list[str] | None = None, *,
               flavour: str = "sd3", with_t5: bool = False) -> "SD3Components":
    """The tiny SD3 (or SD3.5: flavour "sd35") over the shapes vocabulary, freshly initialised
    (components.build_tiny)."""
    from .components import build_tiny as build

    return build(seed, resolution, caption_texts, flavour=flavour, with_t5=with_t5)


SPEC = VariantSpec(
    name="sd3",
    kind="generator",
    trains_on=IMAGE_TEXT_KINDS,
    suites=("spatial", "clip_r_precision", "clip_score", "pick_score", "winoground", "fid", "fid_clip", "drawbench",
            "geneval"),
    load_base=load_base, modules=modules, objective=objective, export=export, load=load, resolution=resolution,
    generate=generate,
    options=SD3Options,
    pipeline_classes=("StableDiffusion3Pipeline",),
    tiny_base=TINY_BASE,
    build_tiny=build_tiny,
    pretrain_options=pretrain_options,
    pretrain_init="an SD3 directory whose VAE is trained (the objective trains the transformer and text encoders "
                  "only): scripts/build_sd3_base.sh writes one over the demo base's VAE",
)
