"""What the suites run with (no torch here: `orch eval` derives its flags from this module's
table at import). The manifest's eval section (manifest/schema.py EvalSpec) is the one definition
of each setting; EvalOptions holds the same settings under the same names and defaults, and
around them what a run fixes (the held-out data, the image size, protocol constants, the device).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, get_args

from orchestrator.data.worlds import DEFAULT_WORLD, get_world
from orchestrator.manifest.schema import (
    EVAL_INPUTS,
    GENEVAL_TAGS,
    R_PRECISION_CHUNKS,
    SHAPES_DETECTOR,
    SPATIAL_RULES,
    DrawBenchSpec,
    EvalSpec,
    GenEvalSpec,
)

DEFAULT_EVAL_SEED = 1000  # shapes-world dataset seed of the held-out prompts: not a training seed
REFERENCE_SCENES: tuple[str, ...] = get_args(EvalSpec.model_fields["reference_scenes"].annotation)


def _setting(name: str, section: type = EvalSpec) -> Any:
    """A setting's one default: the manifest's eval section's (manifest/schema.py EvalSpec)."""
    return section.model_fields[name].default


@dataclass(frozen=True)
class EvalOptions:
    """What the suites run with: the manifest's eval settings (same names, same defaults: the
    section is their one definition) and what a run fixes around them (the held-out data, the
    image size, protocol constants, the device). Build it from a section with `from_spec`."""
    # ---- the eval section's settings (EvalSpec: its descriptions say what each is)
    samples: int = _setting("samples")
    seed: int = _setting("seed")
    sampler: str = _setting("sampler")
    steps: int = _setting("steps")
    guidance_scale: float = _setting("guidance_scale")
    batch_size: int = _setting("batch_size")
    best_of: int = _setting("best_of")
    spatial_rule: str = _setting("spatial_rule")
    clip: str | None = _setting("clip")
    fid_weights: str | None = _setting("fid_weights")
    fid_reference: str | None = _setting("fid_reference")
    winoground: str | None = _setting("winoground")
    pick_score: str | None = _setting("pick_score")
    kid_subsets: int = _setting("kid_subsets")
    reference_resamples: int = _setting("reference_resamples")
    reference_scenes: str = _setting("reference_scenes")
    consistency_embeddings: int = _setting("consistency_embeddings")
    consistency_images: int = _setting("consistency_images")
    world: str = DEFAULT_WORLD  # eval.world; unset there means this
    drawbench: str | None = None  # eval.drawbench: its file, categories and per_prompt
    # None: Lin & Srikanth's categories as a default (those present are used; none present is an error)
    drawbench_categories: tuple[str, ...] | None = _setting("categories", DrawBenchSpec)
    drawbench_per_prompt: int = _setting("per_prompt", DrawBenchSpec)
    geneval: str | None = None  # eval.geneval: its metadata file, detector, colour CLIP, per_prompt, tags, max_prompts
    geneval_detector: str | None = None  # a Mask2Former directory, or "shapes" (schema.SHAPES_DETECTOR)
    geneval_clip: str | None = _setting("clip", GenEvalSpec)  # None: clip
    geneval_per_prompt: int = _setting("per_prompt", GenEvalSpec)
    geneval_tags: tuple[str, ...] | None = _setting("tags", GenEvalSpec)  # None: all six
    geneval_max_prompts: int | None = _setting("max_prompts", GenEvalSpec)  # None: every prompt
    # ---- what the run fixes around them
    eval_seed: int = DEFAULT_EVAL_SEED  # shapes dataset seed of the held-out prompts and real images
    image_size: int | None = None       # default: the model's resolution
    fid_reference_n: int | None = None  # real images for computed reference statistics (default: samples)
    feature_batch_size: int = 32
    # The CLIP a conditioned chain (VCDM) is conditioned on (eval.oracle: the model's own): given,
    # the FID suites also score the oracle arm, images generated from its embeddings of held-out
    # real images (the scenes after the reference ones, so no reference image is its own condition).
    oracle_clip: str | None = None
    r_precision_pool: int = 1000        # held-out captions the 99 negatives are drawn from
    r_precision_negatives: int = 99
    r_precision_chunks: int = R_PRECISION_CHUNKS
    winoground_scenes: int = 500        # shapes scenes (eval_seed) whose pairs make the default set
    matching: dict | None = None        # the matching suite's benchmark: a DataSource (data.eval) as JSON
    matching_base_dir: str | None = None  # where that source's relative root resolves
    device: str | None = None           # default: cuda when available

    @classmethod
    def from_spec(cls, spec: EvalSpec, *, resolve: Callable[[str], str] = str, **around: Any) -> EvalOptions:
        """The options an eval section asks for. `resolve` maps each location it names (clip,
        fid_weights, ..., the DrawBench file) to what the suites open; `around` sets the rest
        (eval_seed, image_size, oracle_clip, matching, device, ...)."""
        values: dict[str, Any] = {name: getattr(spec, name) for name in SECTION_SETTINGS}
        for name in EVAL_INPUTS:
            if values[name] is not None:
                values[name] = resolve(values[name])
        values["world"] = spec.world or DEFAULT_WORLD
        db = spec.drawbench
        if db is not None:
            values.update(drawbench=resolve(db.file), drawbench_per_prompt=db.per_prompt,
                          drawbench_categories=tuple(db.categories) if db.categories else None)
        ge = spec.geneval
        if ge is not None:
            values.update(geneval=resolve(ge.metadata),
                          geneval_detector=ge.detector if ge.detector == SHAPES_DETECTOR else resolve(ge.detector),
                          geneval_clip=resolve(ge.clip) if ge.clip is not None else None,
                          geneval_per_prompt=ge.per_prompt, geneval_max_prompts=ge.max_prompts,
                          geneval_tags=tuple(ge.tags) if ge.tags else None)
        return cls(**values, **around)

    def __post_init__(self) -> None:
        for name in ("drawbench_categories", "geneval_tags"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("samples", "steps", "batch_size", "best_of", "feature_batch_size", "r_precision_chunks",
                     "drawbench_per_prompt", "kid_subsets", "geneval_per_prompt"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.reference_resamples < 0:
            raise ValueError(f"reference_resamples must be >= 0, got {self.reference_resamples}")
        for name, why in (("consistency_embeddings", "chance pairs images of different ones"),
                          ("consistency_images", "pairs from one embedding")):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be >= 2 ({why}), got {getattr(self, name)}")
        if self.geneval_max_prompts is not None and self.geneval_max_prompts < 1:
            raise ValueError(f"geneval_max_prompts must be >= 1 (None: every prompt), got {self.geneval_max_prompts}")
        if self.geneval_tags is not None and (not self.geneval_tags or set(self.geneval_tags) - set(GENEVAL_TAGS)):
            raise ValueError(f"geneval_tags must name GenEval tasks ({', '.join(GENEVAL_TAGS)}), got "
                             f"{list(self.geneval_tags)}")
        get_world(self.world)  # an unknown world fails here, naming the known ones
        if self.spatial_rule not in SPATIAL_RULES:
            raise ValueError(f"spatial_rule must be one of {', '.join(SPATIAL_RULES)}, got {self.spatial_rule!r}")
        if self.reference_scenes not in REFERENCE_SCENES:
            raise ValueError(f"reference_scenes must be one of {', '.join(REFERENCE_SCENES)}, "
                             f"got {self.reference_scenes!r}")


# The eval section's fields that are EvalOptions fields of the same name; the rest of the section
# is mapped by from_spec (world, drawbench, geneval) or is not a suite option (suites, every, oracle,
# evaluate_base: when and what to evaluate). tests/test_eval_settings.py holds the partition.
MAPPED_SECTIONS = ("world", "drawbench", "geneval")
SECTION_SETTINGS: tuple[str, ...] = tuple(
    n for n in EvalSpec.model_fields if n in {f.name for f in fields(EvalOptions)} and n not in MAPPED_SECTIONS)
