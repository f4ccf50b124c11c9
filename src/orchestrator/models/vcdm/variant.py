"""VCDM as a variant (its spec, `SPEC`, is at the end; models/spec.py says what each part is): a
chain — a CLIP-embedding prior, then an embedding-conditioned image U-Net — that generates images.

Light at import (the manifest's checks read the spec); torch loads on first use.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.manifest.schema import IMAGE_TEXT_KINDS
from orchestrator.models.spec import VariantSpec

from .options import VCDMOptions

if TYPE_CHECKING:
    import torch

    from orchestrator.data.image_text import ImageTextData
    from orchestrator.manifest.schema import ModelSpec, TrainSpec

    from .model import VCDM
    from .objective import VCDMObjective


def build_tiny(seed: int = 0, resolution: int = 32, embed_dim: int = 64) -> "VCDM":
    """The tiny architecture, freshly initialised (same seed, same weights); embed_dim: the CLIP's."""
    from .model import build_tiny as build

    return build(seed, resolution, embed_dim)


def load_base(spec: "ModelSpec", store: Any, base_dir: Path | None) -> "VCDM":
    """The manifest's base: an exported VCDM directory (path, file://, az:// or a blob prefix) or
    tiny-random (its embedding width the CLIP's); with the CLIP of `model.vcdm.clip` attached for
    training (frozen, not part of the model's directory)."""
    from orchestrator.manifest.schema import TINY_RANDOM_BASE
    from orchestrator.models.clip import load_clip_dir
    from orchestrator.storage.location import resolve_location

    from .model import load

    options, clip = spec.options, None
    # Only a conditioned model carries its CLIP: the unconditional arm of a sweep that names one
    # for every trial is conditioned on nothing (no oracle arm, no fid_clip refusal).
    if options.clip is not None and options.conditioning == "embedding":
        with resolve_location(options.clip, base_dir=base_dir, store=store).local_dir() as d:
            clip = load_clip_dir(d)
    if spec.base == TINY_RANDOM_BASE:
        m = build_tiny(seed=0, resolution=spec.resolution, embed_dim=clip.embed_dim if clip else 64)
    elif spec.base is None:
        raise FileNotFoundError(f"variant vcdm has no tiny shapes base yet (no `orch pretrain --variant vcdm`): "
                                f"set model.base to an exported VCDM directory or {TINY_RANDOM_BASE}")
    else:
        with resolve_location(spec.base, base_dir=base_dir, store=store).local_dir() as d:
            m = load(d)
    m.clip = clip
    return m


def modules(m: "VCDM") -> dict[str, "torch.nn.Module"]:
    return m.modules()


def objective(m: "VCDM", data: "ImageTextData", spec: "TrainSpec", options: "VCDMOptions | None", *,
              store: Any, device: "torch.device", use_cache: bool = True,
              cache_prefix: str = "cache/vcdm") -> "VCDMObjective":
    from .objective import VCDMObjective

    options = options or VCDMOptions(conditioning="none")
    return VCDMObjective(m, data, spec, options, store=store, device=device, use_cache=use_cache,
                         cache_prefix=cache_prefix)


def export(m: "VCDM", out_dir: Path) -> None:
    from .model import save

    save(m, out_dir)


def load(path: Path) -> "VCDM":
    from .model import load as load_dir

    return load_dir(path)


def resolution(m: "VCDM") -> int:
    return m.resolution


def generate(m: "VCDM", prompts: list[str], **sampling: Any) -> "torch.Tensor":
    """Images in [0, 1] (sampling.generate: sampler ddim|ddpm, steps, prior_steps, generator,
    resolution, batch_size; embeddings= for the oracle arm, conditioning="none" for the
    unconditional one). Prompts only count images: the chain is not text-conditioned."""
    from .sampling import generate as sample

    return sample(m, prompts, **sampling)


def conditioning_clip_sha256(m: "VCDM") -> str | None:
    """The CLIP whose image embeddings it trains on and samples (what fid_clip must not judge with)."""
    return m.conditioning_clip_sha256


def conditioning_clip_source(options: VCDMOptions | None) -> str | None:
    """Where the manifest names that CLIP (model.vcdm.clip). Named for the unconditional arm too
    (a sweep's conditioning axis): its oracle arm is then reported as not applicable."""
    return options.clip if options is not None else None


def sampled_conditioning(m: "VCDM", count: int, *, repeats: int = 1,
                         generator: "torch.Generator | None" = None) -> dict[str, Any]:
    """`generate`'s keywords that fix what count * repeats images are conditioned on: `count`
    embeddings from the prior, each repeated `repeats` times in a row (the consistency suite).
    A model conditioned on no CLIP (the unconditional arm) is sampled as it is: without one."""
    from .sampling import sample_embeddings

    if m.conditioning_clip_sha256 is None:
        return {"conditioning": "none"}
    return {"embeddings": sample_embeddings(m, count, generator=generator).repeat_interleave(repeats, dim=0)}


def oracle_conditioning(m: "VCDM", clip: Any, images: "torch.Tensor") -> dict[str, Any]:
    """`generate`'s keywords for the oracle arm: the conditioning CLIP's embeddings of real images
    (uint8 [N, 3, H, W]), in place of the prior's samples."""
    from .embeddings import image_embeddings

    return {"embeddings": image_embeddings(clip, images).to(m.device)}


SPEC = VariantSpec(
    name="vcdm",
    kind="chain",
    trains_on=IMAGE_TEXT_KINDS,  # the images (their captions are not used: the chain is unconditional)
    suites=("fid", "fid_clip", "consistency"),  # image statistics only: the chain does not follow captions
    load_base=load_base, modules=modules, objective=objective, export=export, load=load, resolution=resolution,
    generate=generate,
    options=VCDMOptions,
    pipeline_classes=("VCDMPipeline",),
    tiny_base=None,              # no `orch pretrain --variant vcdm` yet: base tiny-random or a directory
    conditioning_clip_sha256=conditioning_clip_sha256,
    conditioning_clip_source=conditioning_clip_source,
    sampled_conditioning=sampled_conditioning,
    oracle_conditioning=oracle_conditioning,
)
