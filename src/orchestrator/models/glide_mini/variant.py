"""GLIDE-mini as a variant (its spec, `SPEC`, is at the end; models/spec.py says what each part
is): a pixel-space generator.

Light at import (the manifest's checks read the spec); torch loads on first use.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.manifest.schema import IMAGE_TEXT_KINDS
from orchestrator.models.spec import VariantSpec

from .options import GlideMiniOptions

if TYPE_CHECKING:
    import torch

    from orchestrator.data.image_text import ImageTextData
    from orchestrator.manifest.schema import ModelSpec, TrainSpec

    from .model import GlideMini
    from .objective import GlideObjective

TINY_BASE = "models/tiny-glide-mini-base"  # blob prefix of the tiny shapes base (`orch pretrain`)


def build_tiny(seed: int = 0, resolution: int = 32, caption_texts: list[str] | None = None) -> "GlideMini":
    """The tiny architecture over the shapes vocabulary, freshly initialised (same seed, same weights)."""
    from .config import tiny
    from .model import build
    from .tokenizer import shapes_words

    tok = shapes_words(caption_texts)
    return build(tiny(resolution, vocab_size=tok.vocab_size), tok, seed)


def pretrain_options() -> GlideMiniOptions:
    """How `orch pretrain` trains the tiny base: everything, with GLIDE's caption dropout."""
    return GlideMiniOptions(train="both", caption_dropout=0.2)


def load_base(spec: "ModelSpec", store: Any, base_dir: Path | None) -> "GlideMini":
    """The manifest's base: an exported model directory (path, file://, az:// or a blob prefix),
    glide-text2im's released base.pt (with model.glide_mini.bpe), the tiny shapes base
    `orch pretrain --variant glide_mini` put in `store` (base: null), or tiny-random."""
    from orchestrator.manifest.schema import TINY_RANDOM_BASE
    from orchestrator.storage.location import resolve_location

    from .model import load, load_release

    if spec.base == TINY_RANDOM_BASE:
        return build_tiny(seed=0, resolution=spec.resolution)
    if spec.base is None:
        if store is None or not store.exists(f"{TINY_BASE}/model_index.json"):
            raise FileNotFoundError(
                f"model.base is null but the blob store has no tiny GLIDE-mini base at {TINY_BASE}/; build "
                f"it with `orch pretrain --variant glide_mini --blobs <storage.blobs>`, or set model.base: "
                f"{TINY_RANDOM_BASE}")
        with resolve_location(TINY_BASE, store=store).local_dir() as d:
            return load(d)
    loc = resolve_location(spec.base, base_dir=base_dir, store=store)
    if spec.base.endswith(".pt"):
        options = spec.options
        with resolve_location(options.bpe, base_dir=base_dir, store=store).local_dir() as bpe:
            return load_release(loc.read_bytes(), loc.describe(), bpe)
    with loc.local_dir() as d:
        return load(d)


def modules(m: "GlideMini") -> dict[str, "torch.nn.Module"]:
    return m.modules()


def objective(m: "GlideMini", data: "ImageTextData", spec: "TrainSpec", options: "GlideMiniOptions | None", *,
              store: Any, device: "torch.device", use_cache: bool = True) -> "GlideObjective":
    """`store`/`use_cache` are the seam's: pixel space has no encodings worth caching."""
    from .objective import GlideObjective

    return GlideObjective(m, data, spec, options or GlideMiniOptions(), device=device)


def export(m: "GlideMini", out_dir: Path) -> None:
    from .model import save

    save(m, out_dir)


def load(path: Path) -> "GlideMini":
    from .model import load as load_dir

    return load_dir(path)


def resolution(m: "GlideMini") -> int:
    return m.config.image_size


def generate(m: "GlideMini", prompts: list[str], **sampling: Any) -> "torch.Tensor":
    """Images in [0, 1] (sampling.generate: sampler ddpm|ddim, steps (respaced), guidance_scale,
    generator, resolution, batch_size)."""
    from .sampling import generate as sample

    return sample(m, prompts, **sampling)


SPEC = VariantSpec(
    name="glide_mini",
    kind="generator",
    trains_on=IMAGE_TEXT_KINDS,
    suites=("spatial", "clip_r_precision", "clip_score", "pick_score", "winoground", "fid", "fid_clip", "drawbench",
            "geneval"),
    load_base=load_base, modules=modules, objective=objective, export=export, load=load, resolution=resolution,
    generate=generate,
    options=GlideMiniOptions,
    pipeline_classes=("GlideMiniPipeline",),
    tiny_base=TINY_BASE,
    build_tiny=build_tiny,
    pretrain_options=pretrain_options,
)
