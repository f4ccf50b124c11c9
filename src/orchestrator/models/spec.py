"""A model variant as one typed value: the spec its package exports (`SPEC`) and the registry
hands out by name (registry.get_variant). Composition, no base class: a spec holds the variant's
facts, its manifest section and its functions; an optional hook left None is one the variant does
not have (nobody probes with hasattr).

Light: no torch here or in a variant's spec module (the manifest's checks read specs).
docs/extending.md walks through writing one.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from orchestrator.manifest.schema import variant_name_problem
from orchestrator.manifest.section import PathOption, VariantOptions, path_options
from orchestrator.manifest.suites import check_suite_names

__all__ = ["GENERATING_KINDS", "Kind", "PathOption", "VariantOptions", "VariantSpec"]

Kind = Literal["generator", "matcher", "chain"]
KINDS: tuple[str, ...] = ("generator", "matcher", "chain")
# Kinds whose `generate` makes images (a chain: a prior's output, then an image model given it).
GENERATING_KINDS: tuple[str, ...] = ("generator", "chain")


@dataclass(frozen=True)
class VariantSpec:
    # ------------------------------------------------------------ what it is
    name: str                             # `model.variant` in a manifest; also its options section's key
    kind: Kind                            # generator (text -> image), matcher (caption, image -> score), chain
    trains_on: tuple[str, ...]            # data kinds its objective can train on
    suites: tuple[str, ...]               # evaluation suites it can serve
    # ------------------------------------------------------------ the seam (every variant)
    # (model section, blob store, manifest directory) -> the manifest's base model, built or loaded
    load_base: Callable[[Any, Any, Path | None], Any]
    modules: Callable[[Any], dict[str, Any]]        # its torch modules by name (devices, checkpoints, EMA)
    # (model, data, train section, options, *, store, device, use_cache) -> an Objective: the
    # trained modules and the loss of a batch (models/common/objective.py)
    objective: Callable[..., Any]
    export: Callable[[Any, Path], None]   # a model directory whose model_index.json names the variant
    load: Callable[[Path], Any]           # ... and back
    resolution: Callable[[Any], int]      # the image size the model was built for
    # Generators and chains: (model, prompts, **sampling) -> images in [0, 1].
    generate: Callable[..., Any] | None = None
    # Matchers: (model, captions, images) -> a score per (caption, image), higher = better fit.
    score: Callable[..., Any] | None = None
    # ------------------------------------------------------------ its manifest section
    # The options section it validates (`model.<name>`); None: the variant takes no options. Its
    # options marked PathOption are locations (`path_options`): the head confines them.
    options: type[VariantOptions] | None = None
    # What its objective takes as data: "image_text" (images with captions: generators) or
    # "choices" (an image and candidate texts, or a text and candidate images: matchers).
    train_data: Literal["image_text", "choices"] = "image_text"
    # model_index.json `_class_name`s of directories written by other tools that `load` reads (a
    # real SD v1-5 / v2-1 directory names StableDiffusionPipeline).
    pipeline_classes: tuple[str, ...] = ()
    # ------------------------------------------------------------ its tiny shapes-world base
    # Blob prefix of the tiny base that `model.base: null` loads and `orch pretrain --variant NAME`
    # builds; None: the variant has none.
    tiny_base: str | None = None
    # (seed, resolution, caption_texts) -> the tiny architecture, freshly initialised.
    build_tiny: Callable[..., Any] | None = None
    # How `orch pretrain` trains the tiny base: through the variant's own objective with these
    # options, every module trained (training/pretrain.py); None: the latent staged recipe there
    # (VAE, latent scale, then U-Net and text encoder: SD's components).
    pretrain_options: Callable[[], VariantOptions] | None = None
    # What `orch pretrain --init DIR` must name for this variant, and why; None: it builds from
    # scratch (build_tiny) when --init is left out. (sd3: its objective trains no VAE, so it starts
    # from a directory whose VAE is already trained.)
    pretrain_init: str | None = None
    # ------------------------------------------------------------ optional hooks
    # (model) -> module_hash of the CLIP it is conditioned on, or None (fid_clip refuses to judge a
    # model with that same CLIP).
    conditioning_clip_sha256: Callable[[Any], str | None] | None = None
    # (options) -> where its options name that CLIP, or None (the same refusal, when a manifest loads).
    conditioning_clip_source: Callable[[VariantOptions | None], str | None] | None = None
    # Chains: (model, count, *, repeats, generator) -> `generate` keywords holding the first stage's
    # samples fixed (the consistency suite).
    sampled_conditioning: Callable[..., dict[str, Any]] | None = None
    # Chains: (model, clip, images) -> `generate` keywords replacing the first stage's samples by the
    # CLIP's embeddings of real images (the oracle arm).
    oracle_conditioning: Callable[..., dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        problem = variant_name_problem(self.name)
        if problem:
            raise ValueError(f"VariantSpec: {problem}")
        if self.kind not in KINDS:
            raise ValueError(f"variant {self.name!r}: kind {self.kind!r} is none of {', '.join(KINDS)}")
        if self.kind in GENERATING_KINDS and self.generate is None:
            raise ValueError(f"variant {self.name!r} is a {self.kind}: it needs generate")
        if self.kind == "matcher" and self.score is None:
            raise ValueError(f"variant {self.name!r} is a matcher: it needs score")
        check_suite_names(self.suites, f"variant {self.name!r}")
        options = self.options
        if options is not None and not (isinstance(options, type) and issubclass(options, VariantOptions)):
            raise TypeError(f"variant {self.name!r}: options must be a VariantOptions subclass, not {options!r}")
        if self.pretrain_options is not None and (self.tiny_base is None or self.build_tiny is None):
            raise ValueError(f"variant {self.name!r}: pretrain_options pretrains a tiny base: it needs tiny_base "
                             f"and build_tiny")

    @property
    def path_options(self) -> dict[str, str]:
        """{option: what it names} for each option of its section that is a location (PathOption)."""
        return path_options(self.options) if self.options is not None else {}

    @property
    def INFO(self) -> VariantSpec:
        """The spec under the name callers written against the older `INFO` table read it by
        (`variant.INFO.name`)."""
        return self
