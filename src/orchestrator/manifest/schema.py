"""The experiment manifest schema.

Every section forbids unknown keys so a typo never silently falls back to a default.
Paths in a manifest are resolved against the manifest's own directory (as docker compose
does), so a manifest means the same thing whichever directory it is run from.

The model section names no variant: `model.<variant>` is the options section that variant's spec
declares (its package under models/), found through the catalog models/ installs (variants.py).
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)

# is_remote and local_path are read from here too (manifest.local_path, actors/evaluator.py).
from orchestrator.storage.location import LocationError, confine, is_remote, local_path, parse_location  # noqa: F401

from .section import Section, VariantOptions
from .section import check_location as _check_exists
from .suites import SUITE_NEEDS, SUITES
from .variants import VARIANT_NAME, options_of, sections

# The shapes world's names a manifest may use; data/ (below manifest in the house) implements
# each one and checks at import that it implements exactly these.
CAPTION_STYLES = ("generic", "spatial", "counting", "described", "web")  # captions.jsonl fields
WORLD_NAMES = ("mixed", "pairs")                                        # data/worlds.py WORLDS
SAMPLERS = ("ddim", "ddpm")  # what every generating variant's `generate` takes as sampler=
# How the spatial judge applies the relation (eval/spatial.py judge): GenEval's rule on the most
# confident detection of each described object, or on every pair of matching detections (stricter).
SPATIAL_RULES = ("geneval", "all_pairs")
# train.lr_schedule: after the warm-up, the learning rate stays, or decays to zero at train.steps.
LR_SCHEDULES = ("constant", "cosine", "linear")
SYNTHETIC_KINDS = ("shapes", "shapes-winoground", "shapes-comvg")
# The kinds that pair each image with a caption describing it: what a generator can train on.
IMAGE_TEXT_KINDS = ("shapes", "imagefolder", "gqa-captions", "winoground")
# Data kinds that pose text choices (an image, candidate texts, the right one).
CHOICE_KINDS = ("shapes-winoground", "winoground", "vl-checklist", "refcocog", "vqav2")
FILE_KINDS = (
    "imagefolder",
    "winoground", "drawbench", "gqa", "gqa-captions", "comvg", "refcocog", "vqav2", "vl-checklist", "shards",
)
# Only these sections change what a trial trains, so only they may be swept and hashed.
SWEEPABLE_SECTIONS = ("model", "data", "train")

PositiveInt = Annotated[int, Field(gt=0)]
# Reserved `model.base`: a freshly initialised tiny SD (tests, ablations from scratch).
TINY_RANDOM_BASE = "tiny-random"


RECIPE_FIELDS = ("ema_decay",)


class PretrainSpec(Section):
    """How the tiny shapes base is pretrained when `model.base` is null and the blob store has none
    yet (generic captions of the shapes world at `model.resolution`, seed `data.train.seed`)."""
    # The fields ids were first hashed with (see Section): dumped even at their defaults.
    ALWAYS_DUMPED = frozenset({"steps", "vae_steps", "n", "batch_size", "lr"})
    steps: Annotated[int, Field(ge=1, le=1_000_000)] = 3000          # denoiser (U-Net + text encoder) steps
    vae_steps: Annotated[int, Field(ge=1, le=1_000_000)] = 1000      # VAE steps, before the denoiser
    n: Annotated[int, Field(ge=1, le=1_000_000)] = 2000              # shapes scenes to pretrain on
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 32
    lr: Annotated[float, Field(gt=0, le=1)] = 5e-4                   # denoiser learning rate
    # The denoiser's recipe options (training/pretrain.py DenoiserStep says why each helps); the
    # defaults are the recipe before they existed (left out of the dump at them, as every field
    # added since ids were first hashed: a cached base's recorded settings keep too).
    ema_decay: Annotated[float, Field(gt=0, lt=1)] | None = None     # save an EMA of the denoiser's weights

    def recipe(self) -> dict[str, Any]:
        """The recipe options as pretrain_base's keyword arguments."""
        return {name: getattr(self, name) for name in RECIPE_FIELDS}

    @model_validator(mode="after")
    def _batch_fits(self) -> "PretrainSpec":
        if self.n < self.batch_size:
            raise ValueError(f"n ({self.n}) must be at least batch_size ({self.batch_size})")
        return self


class ModelSpec(Section):
    """The model section. Besides the fields below it holds the chosen variant's own options
    section, `model.<variant>`, validated by the options model that variant's spec names (found
    through the catalog, variants.py); `options` returns it."""
    ALWAYS_DUMPED = frozenset({"variant", "base", "resolution"})  # the fields ids were first hashed with (Section)
    # A variant name the model registry knows (the capability check, experiment.py, asks the
    # catalog which ones exist and what each can train on and serve, with the line).
    variant: str
    # A diffusers-format directory (local path, file:// or az:// URI). None: the project's
    # tiny base model for the shapes world, built by `orch pretrain` and cached in blobs.
    # "tiny-random": the tiny architecture, freshly initialised.
    base: str | None = None
    resolution: Annotated[int, Field(ge=16, le=1024, multiple_of=8)] = 32
    # Settings of the tiny base's pretraining (base: null only); None: PretrainSpec's defaults.
    pretrain: PretrainSpec | None = None
    # The variant sections the manifest wrote, by variant name (at most the variant's own, once
    # validated); private: a section is a key of the model section, not a field of the class.
    _sections: dict[str, VariantOptions] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _with_variant_sections(cls, data: Any, handler: Any, info: ValidationInfo) -> "ModelSpec":
        """Validates the section with every known variant's options section as a field (each
        problem at once, each at its own path), checks the sections against the variant, then
        keeps the base fields in this class and the written sections beside them."""
        if cls is not ModelSpec or not isinstance(data, dict):
            return handler(data)  # the sections model itself, an instance, or a wrong type (reported)
        known = sections()
        checked = _sections_model(tuple(known.items())).model_validate(data, context=info.context)
        written = {name: getattr(checked, name) for name in known if getattr(checked, name) is not None}
        for name in written:
            if name != checked.variant:
                raise ValueError(f"model.{name} holds options of variant {name!r}, but model.variant is "
                                 f"{checked.variant!r}")
        own = known.get(checked.variant)
        if own is not None:
            if own.REQUIRED and checked.variant not in written:
                raise ValueError(own.REQUIRED)
            options = written[checked.variant] if checked.variant in written else own()
            problem = options.model_problem(checked)
            if problem:
                raise ValueError(problem)
        spec = handler({name: getattr(checked, name) for name in cls.model_fields if name in data})
        spec._sections = written
        return spec

    @field_validator("variant")
    @classmethod
    def _variant_name(cls, v: str) -> str:
        if not VARIANT_NAME.fullmatch(v):
            # Which variants exist is the model registry's to say (`orch validate` asks it).
            raise ValueError(f"{v!r} is not a variant name (lower-case letters, digits and _, such as sd)")
        return v

    @field_validator("base")
    @classmethod
    def _base_exists(cls, v: str | None, info: ValidationInfo) -> str | None:
        return v if v == TINY_RANDOM_BASE else _check_exists(v, info, "model directory")

    @model_validator(mode="after")
    def _pretrain_needs_tiny_base(self) -> "ModelSpec":
        if self.pretrain is not None and self.base is not None:
            raise ValueError("pretrain applies only to the tiny shapes base (model.base: null); "
                             f"remove it or set base to null (base is {self.base!r})")
        return self

    @property
    def options(self) -> VariantOptions | None:
        """This variant's options section (its defaults when the manifest sets none), or None for a
        variant that has no options."""
        cls = options_of(self.variant)
        if cls is None:
            return None
        written = self._sections.get(self.variant)
        return written if written is not None else cls()

    def with_variant(self, name: str) -> "ModelSpec":
        """The same base, resolution and pretraining read as variant `name`, with that variant's
        default options (a variant built on another's base: Discffusion loads SD's)."""
        other = self.model_copy(update={"variant": name})
        other._sections = {}
        return other

    @property
    def pretrain_settings(self) -> PretrainSpec:
        return self.pretrain or PretrainSpec()

    def _dump_extra(self) -> dict[str, Any]:
        # A written variant section follows the fields, serialized by its own class; an unwritten
        # one is absent, so a manifest without one hashes as before sections existed.
        return dict(self._sections)


def variant_name_problem(name: str) -> str | None:
    """Why a variant cannot be named `name` (its options section is the model section's key
    `name`), or None."""
    if not VARIANT_NAME.fullmatch(name):
        return f"{name!r} is not a variant name (lower-case letters, digits and _, such as sd)"
    if hasattr(ModelSpec, name) or name in ModelSpec.model_fields:
        return f"{name!r} is taken by the model section itself (its field or attribute model.{name})"
    return None


_SECTIONS_MODELS: dict[tuple, type[ModelSpec]] = {}


def _sections_model(known: tuple[tuple[str, type[VariantOptions]], ...]) -> type[ModelSpec]:
    """ModelSpec with a field per known variant section (what the model section validates as);
    built once per set of known variants."""
    if known not in _SECTIONS_MODELS:
        _SECTIONS_MODELS[known] = create_model(
            "ModelSpec", __base__=ModelSpec, **{name: (options | None, None) for name, options in known})
    return _SECTIONS_MODELS[known]


class DataSource(Section):
    # The fields ids were first hashed with (see Section): dumped even at their defaults.
    ALWAYS_DUMPED = frozenset({"kind", "captions", "n", "size", "seed", "root", "categories", "on_error", "options",
                               "fewshot_fraction"})
    ONLY_WITH = {"fewshot_fraction": "fewshot"}  # a few-shot fraction means nothing without few-shot
    kind: Literal[SYNTHETIC_KINDS + FILE_KINDS]  # type: ignore[valid-type]
    captions: Literal[CAPTION_STYLES] | None = None  # type: ignore[valid-type]
    n: PositiveInt | None = None
    size: Literal[32, 64] | None = None
    seed: Annotated[int, Field(ge=0)] = 0
    root: str | None = None  # local directory or blob URI holding the files of a real benchmark
    categories: list[str] | None = None
    on_error: Literal["raise", "skip"] = "raise"
    # Loader-specific settings, e.g. GQA {questions: val_balanced_questions.json}, RefCOCOg
    # {split: val}, VQAv2 {layout: text}; checked against the loader when it is opened.
    options: dict[str, str | int | float | bool] = {}
    # Train on each image or its mirror image, chosen per step by the trial's seeded generator.
    random_flip: bool = False
    # A few-shot split of a matching benchmark (seeded by `seed`, by example): "train" is the first
    # `fewshot_fraction` of a seeded permutation, "heldout" the rest; the two never overlap.
    fewshot: Literal["train", "heldout"] | None = None
    fewshot_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.05
    # kind shapes: which shapes world the scenes come from (data.worlds; unset: mixed).
    world: Literal[WORLD_NAMES] | None = None  # type: ignore[valid-type]

    @field_validator("root")
    @classmethod
    def _root_exists(cls, v: str | None, info: ValidationInfo) -> str | None:
        return _check_exists(v, info, "data root")

    @model_validator(mode="after")
    def _kind_fields(self) -> "DataSource":
        if self.kind in SYNTHETIC_KINDS:
            if self.root is not None:
                raise ValueError(f"kind '{self.kind}' is generated; it takes no root")
            if self.n is None:
                raise ValueError(f"kind '{self.kind}' needs n (number of examples)")
        elif self.root is None:
            raise ValueError(f"kind '{self.kind}' reads files; set root to their directory or blob URI")
        if self.random_flip and self.kind not in IMAGE_TEXT_KINDS:
            raise ValueError(f"random_flip augments training images; kind '{self.kind}' is no training data")
        if self.world is not None and self.kind != "shapes":
            raise ValueError(f"world picks the shapes world of kind 'shapes'; kind '{self.kind}' takes none")
        if self.fewshot is not None and self.kind not in MATCHING_KINDS:
            raise ValueError(f"fewshot splits a matching benchmark; kind '{self.kind}' is none "
                             f"({', '.join(MATCHING_KINDS)})")
        return self



class DataSpec(Section):
    ALWAYS_DUMPED = frozenset({"train", "eval"})  # the fields ids were first hashed with (Section)
    train: DataSource | None = None
    eval: DataSource | None = None


class TrainSpec(Section):
    # The fields ids were first hashed with (see Section): dumped even at their defaults.
    ALWAYS_DUMPED = frozenset({"steps", "batch_size", "grad_accum", "lr", "weight_decay", "warmup_steps", "grad_clip",
                               "optimizer", "precision", "noise_offset", "min_snr_gamma", "ema_decay",
                               "gradient_checkpointing", "checkpoint_every", "seed"})
    steps: PositiveInt = 1000
    batch_size: PositiveInt = 8
    grad_accum: PositiveInt = 1
    lr: Annotated[float, Field(gt=0, le=1)] = 1e-4
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 1e-2
    warmup_steps: Annotated[int, Field(ge=0)] = 0
    lr_schedule: Literal[LR_SCHEDULES] = "constant"  # type: ignore[valid-type]
    grad_clip: Annotated[float, Field(gt=0)] | None = 1.0
    optimizer: Literal["adamw", "adamw8bit"] = "adamw"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    noise_offset: Annotated[float, Field(ge=0, le=1)] = 0.0
    min_snr_gamma: Annotated[float, Field(gt=0)] | None = None
    ema_decay: Annotated[float, Field(gt=0, lt=1)] | None = None
    gradient_checkpointing: bool = False
    checkpoint_every: PositiveInt = 200
    seed: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _warmup_within_steps(self) -> "TrainSpec":
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below steps ({self.steps})")
        return self


# How a sampled sweep draws its points from the unit cube (manifest/sweep.py `sample_points`).
SAMPLE_METHODS = ("random", "sobol")
DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")


class Distribution(Section):
    """One swept field's distribution: exactly one of `uniform: [lo, hi]`, `loguniform: [lo, hi]`
    (lo > 0), `int: [lo, hi]` (both ends included) or `choice: [a, b, ...]`."""
    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True,
                              serialize_by_alias=True)  # `int` is a keyword: the field is int_
    uniform: Annotated[list[float], Field(min_length=2, max_length=2)] | None = None
    loguniform: Annotated[list[float], Field(min_length=2, max_length=2)] | None = None
    int_: Annotated[list[int], Field(min_length=2, max_length=2)] | None = Field(None, alias="int")
    choice: Annotated[list[Any], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "Distribution":
        given = [k for k in DISTRIBUTIONS if self.bounds(k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(DISTRIBUTIONS)} (got {', '.join(given) or 'none'})")
        kind, value = given[0], self.bounds(given[0])
        if kind != "choice" and not value[0] < value[1]:
            raise ValueError(f"{kind}: the low end must be below the high end, got {value}")
        if kind == "loguniform" and value[0] <= 0:
            raise ValueError(f"loguniform: both ends must be positive, got {value}")
        return self

    def bounds(self, kind: str) -> list[Any] | None:
        return self.int_ if kind == "int" else getattr(self, kind)

    @model_serializer(mode="plain")
    def _as_written(self) -> dict[str, list[Any]]:
        return {self.kind: list(self.bounds(self.kind))}

    @property
    def kind(self) -> str:
        return next(k for k in DISTRIBUTIONS if self.bounds(k) is not None)


class SampleSpec(Section):
    """`sweep.sample`: `num_samples` points drawn from `space` (dotted field -> distribution) by
    `method`, seeded: the same seed draws the same points, hence the same trial ids."""
    num_samples: PositiveInt
    seed: Annotated[int, Field(ge=0)] = 0
    method: Literal[SAMPLE_METHODS] = "random"  # type: ignore[valid-type]
    space: Annotated[dict[str, Distribution], Field(min_length=1)]


EARLY_STOP_ALGORITHMS = ("asha",)


class EarlyStopSpec(Section):
    """`sweep.early_stop`: stop unpromising trials at rungs on their interim evaluations
    (experiment/early_stop.py). Rung k of bracket s sits at grace_steps * reduction_factor ** (k + s),
    below each trial's train.steps; every rung must be an evaluated checkpoint (a multiple of
    eval.every and of train.checkpoint_every)."""
    algorithm: Literal[EARLY_STOP_ALGORITHMS] = "asha"  # type: ignore[valid-type]
    metric: Annotated[str, Field(pattern=r"^[a-z_0-9]+(\.[A-Za-z_0-9/ -]+)*$")]  # e.g. spatial.accuracy, fid
    mode: Literal["max", "min"]
    grace_steps: PositiveInt
    reduction_factor: Annotated[int, Field(ge=2)] = 3
    brackets: Annotated[int, Field(ge=1, le=8)] = 1
    # The order trials start in. ASHA judges a trial against those that reached the rung before it, so
    # a grid started as written (say, ascending lr) lets every trial beat its predecessors:
    # "shuffled" starts them in a random order drawn from `seed` (ids and brackets stay the plan's).
    order: Literal["shuffled", "plan"] = "shuffled"
    seed: Annotated[int, Field(ge=0)] = 0

    def start_order(self, n: int) -> list[int]:
        """Plan indices of n trials in the order they start."""
        if self.order == "plan":
            return list(range(n))
        import numpy as np

        return [int(i) for i in np.random.default_rng(self.seed).permutation(n)]

    def rungs(self, bracket: int, total_steps: int) -> list[int]:
        """The steps of a bracket's rungs below `total_steps`."""
        out, k = [], 0
        while (step := self.grace_steps * self.reduction_factor ** (k + bracket)) < total_steps:
            out.append(step)
            k += 1
        return out

    def problems(self, trial: "Manifest", index: int) -> list[str]:
        """What keeps this rule from judging the sweep's trial `index` (its bracket: index mod brackets)."""
        out = []
        suite = self.metric.split(".")[0]
        if suite not in trial.eval.suites:
            out.append(f"early_stop.metric {self.metric} needs the {suite} suite in eval.suites")
        if trial.eval.every is None:
            out.append("early_stop needs eval.every: its rungs are interim evaluations")
        rungs = self.rungs(index % self.brackets, trial.train.steps)
        if not rungs:
            out.append(f"no rung below train.steps {trial.train.steps} (the first is at step "
                       f"{self.grace_steps * self.reduction_factor ** (index % self.brackets)})")
        cadences = (("eval.every", trial.eval.every), ("train.checkpoint_every", trial.train.checkpoint_every))
        for step in rungs:
            for name, every in cadences:
                if every and step % every:
                    out.append(f"rung at step {step} is not a multiple of {name} ({every}): it is never evaluated")
        return out


class SweepSpec(Section):
    ALWAYS_DUMPED = frozenset({"grid", "trials", "seeds"})  # the fields ids were first hashed with (Section)
    # dotted field path -> values; the trials are the cartesian product, in manifest order
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}
    # explicit trials, each a mapping of dotted path -> value (crossed with the grid if both given)
    trials: list[dict[str, Any]] = []
    seeds: list[Annotated[int, Field(ge=0)]] = []
    # sampled points (crossed with the grid, trials and seeds like them)
    sample: SampleSpec | None = None
    early_stop: EarlyStopSpec | None = None

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        return v


class ResourcesSpec(Section):
    # The fields ids were first hashed with (see Section): dumped even at their defaults.
    ALWAYS_DUMPED = frozenset({"gpus_per_trial", "cpus_per_trial", "max_concurrent_trials"})
    gpus_per_trial: Annotated[int, Field(ge=0, le=64)] = 0  # 0: one CPU slot per trial
    cpus_per_trial: Annotated[float, Field(gt=0)] = 1.0
    max_concurrent_trials: PositiveInt | None = None


# Benchmarks a matcher trains on and the matching suite reads: text choices, and the image choices
# of ComVG and of its shapes-world miniature (shapes-comvg, generated: `n` scenes).
MATCHING_KINDS = CHOICE_KINDS + ("comvg", "shapes-comvg")
R_PRECISION_CHUNKS = 10  # Park et al.'s protocol; orchestrator.eval.suites takes it from here
EVAL_INPUTS = {"clip": "CLIP directory", "fid_weights": "FID weights file",
               "fid_reference": "FID reference statistics", "winoground": "Winoground directory",
               "pick_score": "PickScore model directory"}


class DrawBenchSpec(Section):
    """The drawbench suite's options: where its CSV is, which categories, K images per prompt."""
    ALWAYS_DUMPED = frozenset({"file", "categories", "per_prompt"})  # the fields ids were first hashed with (Section)
    file: str = Field(description="DrawBench CSV (Prompts|Prompt, Category): path, URI or blob key.")
    categories: list[str] | None = Field(None, description="Categories to run; unset: Lin & Srikanth's two "
                                                           "(Counting, Positional).")
    per_prompt: Annotated[int, Field(ge=1, le=64)] = Field(4, description="Images per prompt (paired noise).")

    @field_validator("file")
    @classmethod
    def _file_exists(cls, v: str, info: ValidationInfo) -> str:
        return _check_exists(v, info, "DrawBench CSV")

    @field_validator("categories")
    @classmethod
    def _some_categories(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or any(not c.strip() for c in v)):
            raise ValueError("categories must name at least one category, none empty")
        return v


# GenEval's tasks (data/loaders/geneval.py reads these as its TAGS).
GENEVAL_TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
# `eval.geneval.detector: shapes`: the shapes world's own detector and palette colours instead of a Mask2Former
# directory (write ./shapes for a directory of that name).
SHAPES_DETECTOR = "shapes"


class GenEvalSpec(Section):
    """The geneval suite's options: GenEval's prompt metadata, the detector and colour CLIP that judge, K images
    per prompt, and which prompts."""
    ALWAYS_DUMPED = frozenset({"metadata", "detector", "clip", "per_prompt", "tags", "max_prompts"})
    metadata: str = Field(description="GenEval's evaluation_metadata.jsonl (one prompt per line): path, URI or "
                                      "blob key.")
    detector: str = Field(description="Mask2Former COCO-instance directory in transformers' format (config.json, "
                                      "model weights, preprocessor_config.json), e.g. "
                                      "facebook/mask2former-swin-small-coco-instance downloaded ahead; or 'shapes': "
                                      "the shapes-world detector and its palette colours.")
    clip: str | None = Field(None, description="CLIP directory for object colours (GenEval: ViT-L/14, "
                                               "openai/clip-vit-large-patch14); unset: eval.clip.")
    per_prompt: Annotated[int, Field(ge=1, le=64)] = Field(4, description="Images per prompt (GenEval's 4; paired "
                                                                          "noise).")
    tags: list[Literal[GENEVAL_TAGS]] | None = Field(  # type: ignore[valid-type]
        None, description="GenEval tasks to run; unset: all six.")
    max_prompts: PositiveInt | None = Field(None, description="Only the first N prompts of each task (quick runs); "
                                                              "unset: every prompt.")

    @field_validator("metadata")
    @classmethod
    def _metadata_exists(cls, v: str, info: ValidationInfo) -> str:
        return _check_exists(v, info, "GenEval metadata file")

    @field_validator("detector")
    @classmethod
    def _detector_exists(cls, v: str, info: ValidationInfo) -> str:
        return v if v == SHAPES_DETECTOR else _check_exists(v, info, "GenEval detector directory")

    @field_validator("clip")
    @classmethod
    def _clip_exists(cls, v: str | None, info: ValidationInfo) -> str | None:
        return _check_exists(v, info, "GenEval colour CLIP directory")

    @field_validator("tags")
    @classmethod
    def _some_tags(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError("tags must name at least one GenEval task, each once")
        return v


class EvalSpec(Section):
    # The fields ids were first hashed with (see Section): dumped even at their defaults.
    ALWAYS_DUMPED = frozenset({"suites", "every", "samples", "best_of", "clip", "fid_weights", "fid_reference",
                               "winoground", "drawbench", "kid_subsets", "reference_resamples", "reference_scenes",
                               "oracle", "evaluate_base", "consistency_embeddings", "consistency_images"})
    # The one definition of every evaluation setting: the Evaluator actor maps this section to the
    # suites' options (eval/context.py EvalOptions, whose defaults are these), and `orch eval`'s
    # flags are derived from these fields (their help is each field's description).
    suites: list[Literal[SUITES]] = []  # type: ignore[valid-type]
    every: PositiveInt | None = None  # evaluate every N steps as checkpoints land; None: at the end only
    samples: PositiveInt = Field(64, description="Held-out prompts (= generated images) per evaluation.")
    seed: Annotated[int, Field(ge=0)] = Field(
        1234, description="Generation noise (the same for every model: paired) and the protocols' sampling.")
    sampler: Literal[SAMPLERS] = Field("ddim", description="How images are sampled.")  # type: ignore[valid-type]
    steps: PositiveInt = Field(25, description="Sampling steps.")
    guidance_scale: Annotated[float, Field(ge=0)] = Field(
        3.0, description="Classifier-free guidance scale (<= 1: conditional sampling only).")
    # 64, the Evaluator actor's batch before this was a setting: a batch of 16 moves the demo base's
    # pixels by up to 3e-6 (docs/evaluation.md), so its journaled numbers keep their batch.
    batch_size: PositiveInt = Field(
        64, description="Prompts per generation batch (lower it where memory is short). Float sums differ across "
                        "batch sizes, and a sampler that draws noise at every step (ddpm) draws it per batch, so "
                        "it is recorded with the results.")
    best_of: PositiveInt = Field(1, description="Generate K images per prompt, keep the one the CLIP ranks highest "
                                               "(needs clip).")
    spatial_rule: Literal[SPATIAL_RULES] = Field(  # type: ignore[valid-type]
        "geneval", description="Spatial judge: geneval (the relation between the most confident detection of each "
                               "described object, as GenEval) or all_pairs (it must hold for every pair of matching "
                               "detections: a stray fragment on the wrong side fails the image).")
    clip: str | None = Field(None, description="CLIP directory (transformers' format, e.g. `orch clip train`): "
                                               "path, URI or blob key.")
    fid_weights: str | None = Field(None, description="pt_inception-2015-12-05-6726825d.pth: path, URI or blob key.")
    fid_reference: str | None = Field(None, description="FID reference statistics .npz (mu, sigma); unset: "
                                                        "computed from held-out scenes and cached.")
    winoground: str | None = Field(None, description="A Winoground-layout directory; unset: shapes-world pairs.")
    pick_score: str | None = Field(None, description="PickScore model directory (transformers CLIPModel, e.g. "
                                                     "PickScore_v1 with its CLIP-H processor files): path, URI or "
                                                     "blob key.")
    drawbench: DrawBenchSpec | None = None  # the drawbench suite's CSV, categories, images per prompt
    geneval: GenEvalSpec | None = None  # the geneval suite's metadata, detector, colour CLIP, images per prompt
    kid_subsets: PositiveInt = Field(100, description="KID's random subsets (of min(n, 1000) images each).")
    reference_resamples: Annotated[int, Field(ge=0)] = Field(
        3, description="Bootstrap resamplings of FID's reference (its spread; 0: none).")
    reference_scenes: Literal["prompted", "all"] = Field(
        "prompted", description="FID's real images: prompted (held-out scenes stating a relation: text-to-image "
                                "models) or all (every held-out scene: a chain that follows no prompt).")
    # The oracle arm of a conditioned chain (VCDM): fid/fid_clip also score images generated from
    # the model's own CLIP's embeddings of held-out real images (model.vcdm.clip), as oracle_*.
    oracle: bool = False
    # Evaluate the base model too (what each trial is compared against); false where the base
    # is tiny-random and its numbers would only cost time.
    evaluate_base: bool = True
    consistency_embeddings: Annotated[int, Field(ge=2)] = Field(
        50, description="Consistency suite: embeddings drawn from the chain's prior ...")
    consistency_images: Annotated[int, Field(ge=2)] = Field(
        4, description="... and images generated from each, with their own noise.")
    world: Literal[WORLD_NAMES] | None = Field(  # type: ignore[valid-type]
        None, description="Shapes world of the held-out prompts and FID's real images (as data.train's world; "
                          "unset: mixed).")

    @field_validator("suites")
    @classmethod
    def _unique_suites(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("suites must be distinct")
        return v

    @field_validator("clip", "fid_weights", "fid_reference", "winoground", "pick_score")
    @classmethod
    def _inputs_exist(cls, v: str | None, info: ValidationInfo) -> str | None:
        return _check_exists(v, info, EVAL_INPUTS[info.field_name])

    @model_validator(mode="after")
    def _suites_have_inputs(self) -> "EvalSpec":
        missing = [f"suite {s} needs eval.{SUITE_NEEDS[s]}" for s in self.suites
                   if s in SUITE_NEEDS and getattr(self, SUITE_NEEDS[s]) is None]
        if "clip_r_precision" in self.suites and self.samples < R_PRECISION_CHUNKS:
            missing.append(f"suite clip_r_precision reports mean ± std over {R_PRECISION_CHUNKS} chunks: "
                           f"eval.samples must be at least {R_PRECISION_CHUNKS}, got {self.samples}")
        if "drawbench" in self.suites and self.drawbench is None:
            missing.append("suite drawbench needs eval.drawbench: {file: CSV, categories: [...], per_prompt: K}")
        if "geneval" in self.suites and self.geneval is None:
            missing.append("suite geneval needs eval.geneval: {metadata: evaluation_metadata.jsonl, detector: "
                           "Mask2Former directory, clip: colour CLIP directory, per_prompt: 4}")
        elif "geneval" in self.suites and self.geneval.detector != SHAPES_DETECTOR and \
                self.geneval.clip is None and self.clip is None:
            missing.append("suite geneval needs a CLIP for object colours: eval.geneval.clip or eval.clip")
        if self.best_of > 1 and self.clip is None:
            missing.append(f"best_of {self.best_of} needs eval.clip (the CLIP that picks the best image)")
        if missing:
            raise ValueError("; ".join(missing))
        return self



_JOURNAL_URL = re.compile(r"^(sqlite:///.+|postgresql(\+psycopg)?://.+)$")


class StorageSpec(Section):
    ALWAYS_DUMPED = frozenset({"blobs", "journal"})  # the fields ids were first hashed with (Section)
    blobs: str = "file://./runs/blobs"
    journal: str = "sqlite:///./runs/journal.db"

    @field_validator("blobs")
    @classmethod
    def _blob_uri(cls, v: str, info: ValidationInfo) -> str:
        # file://DIR, az://container/prefix or a path, read as every location is
        roots = (info.context or {}).get("roots")
        try:
            parse_location(v)
            return v if roots is None else confine(v, base_dir=(info.context or {}).get("base_dir"), roots=roots)
        except LocationError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("journal")
    @classmethod
    def _journal_url(cls, v: str) -> str:
        if not _JOURNAL_URL.match(v):
            raise ValueError(f"'{v}' is not a journal URL (sqlite:///FILE or postgresql://...)")
        return v


class Manifest(Section):
    # The fields ids were first hashed with (see Section): dumped even at their defaults.
    ALWAYS_DUMPED = frozenset({"name", "description", "model", "data", "train", "sweep", "resources", "eval",
                               "storage"})
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    description: str = ""
    model: ModelSpec
    data: DataSpec
    train: TrainSpec = TrainSpec()
    sweep: SweepSpec = SweepSpec()
    resources: ResourcesSpec = ResourcesSpec()
    eval: EvalSpec = EvalSpec()
    storage: StorageSpec = StorageSpec()

    @model_validator(mode="after")
    def _needs_training_data(self) -> "Manifest":
        if self.data.train is None and self.data.eval is None:
            raise ValueError("data needs a train or an eval source")
        return self


def fields_of(model: type[BaseModel]) -> dict[str, Any]:
    """A section's keys with their annotations: its fields, and for the model section also each
    known variant's options section (`model.<variant>`)."""
    fields = {name: f.annotation for name, f in model.model_fields.items()}
    if issubclass(model, ModelSpec):
        fields.update(sections())
    return fields


def section_at(path: list[str]) -> tuple[type[BaseModel] | None, str | None]:
    """Walk the schema along a dotted path; returns (model holding the last field, problem)."""
    model: type[BaseModel] = Manifest
    for i, part in enumerate(path):
        fields = fields_of(model)
        if part not in fields:
            return None, f"'{'.'.join(path[: i + 1])}' is not a manifest field (allowed here: {', '.join(fields)})"
        if i == len(path) - 1:
            return model, None
        nxt = _model_of(fields[part])
        if nxt is None:
            return None, f"'{'.'.join(path[: i + 1])}' has no sub-fields"
        model = nxt
    return None, "empty field path"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None
