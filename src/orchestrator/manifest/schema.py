"""The experiment manifest schema.

Every section forbids unknown keys so a typo never silently falls back to a default.
Paths in a manifest are resolved against the manifest's own directory (as docker compose
does), so a manifest means the same thing whichever directory it is run from.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, ValidationInfo, field_validator,
                      model_serializer, model_validator)

from orchestrator.storage.location import LocationError, confine, is_remote, local_path, parse_location

# The shapes world's names a manifest may use; data/ (below manifest in the house) implements
# each one and checks at import that it implements exactly these.
CAPTION_STYLES = ("generic", "spatial", "counting", "described", "web")  # captions.jsonl fields
WORLD_NAMES = ("mixed", "pairs")                                        # data/worlds.py WORLDS
SYNTHETIC_KINDS = ("shapes", "shapes-winoground", "shapes-comvg")
# The kinds that pair each image with a caption describing it: what a generator can train on.
IMAGE_TEXT_KINDS = ("shapes", "imagefolder", "gqa-captions", "winoground")
# Data kinds that pose text choices (an image, candidate texts, the right one).
CHOICE_KINDS = ("shapes-winoground", "winoground", "vl-checklist", "refcocog", "vqav2")
FILE_KINDS = (
    "imagefolder",
    "winoground", "drawbench", "gqa", "gqa-captions", "comvg", "refcocog", "vqav2", "vl-checklist", "shards",
)
SUITES = ("spatial", "clip_r_precision", "winoground", "fid", "fid_clip", "matching", "drawbench", "consistency")
# Only these sections change what a trial trains, so only they may be swept and hashed.
SWEEPABLE_SECTIONS = ("model", "data", "train")

PositiveInt = Annotated[int, Field(gt=0)]
# Reserved `model.base`: a freshly initialised tiny SD (tests, ablations from scratch).
TINY_RANDOM_BASE = "tiny-random"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_exists(value: str | None, info: ValidationInfo, what: str) -> str | None:
    """A location field: parsed the one way (storage.location), confined when the context names
    roots (a manifest from an API client: the value becomes the resolved path the workers open),
    then, if asked, checked to exist. A refused path is never probed; no OS error escapes."""
    if value is None:
        return value
    context = info.context or {}
    base = context.get("base_dir")
    try:
        if context.get("roots") is not None:
            value = confine(value, base_dir=base, roots=context["roots"])
        if is_remote(value):
            return value
        path = local_path(value, base)
        if context.get("check_files", True) and not path.exists():
            raise ValueError(f"{what} not found: {_excerpt(str(path))}")
    except LocationError as exc:
        raise ValueError(str(exc)) from None
    except OSError as exc:  # e.g. a directory that cannot be searched
        raise ValueError(f"{what} cannot be checked: {exc.strerror or type(exc).__name__}") from None
    return value


def _excerpt(text: str) -> str:
    return text if len(text) <= 120 else text[:80] + "..." + text[-24:]


RECIPE_FIELDS = ("ema_decay",)


class PretrainSpec(Section):
    """How the tiny shapes base is pretrained when `model.base` is null and the blob store has none
    yet (generic captions of the shapes world at `model.resolution`, seed `data.train.seed`)."""
    steps: Annotated[int, Field(ge=1, le=1_000_000)] = 3000          # denoiser (U-Net + text encoder) steps
    vae_steps: Annotated[int, Field(ge=1, le=1_000_000)] = 1000      # VAE steps, before the denoiser
    n: Annotated[int, Field(ge=1, le=1_000_000)] = 2000              # shapes scenes to pretrain on
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 32
    lr: Annotated[float, Field(gt=0, le=1)] = 5e-4                   # denoiser learning rate
    # The denoiser's recipe options (training/pretrain.py DenoiserStep says why each helps); the
    # defaults are the recipe before they existed, and a default is left out of the dump, so an
    # existing manifest keeps its trial ids and its cached base's recorded settings.
    ema_decay: Annotated[float, Field(gt=0, lt=1)] | None = None     # save an EMA of the denoiser's weights

    @model_serializer(mode="wrap")
    def _omit_default_recipe(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if isinstance(data, dict):
            for name in RECIPE_FIELDS:
                if name in data and data[name] == type(self).model_fields[name].default:
                    data.pop(name)
        return data

    def recipe(self) -> dict[str, Any]:
        """The recipe options as pretrain_base's keyword arguments."""
        return {name: getattr(self, name) for name in RECIPE_FIELDS}

    @model_validator(mode="after")
    def _batch_fits(self) -> "PretrainSpec":
        if self.n < self.batch_size:
            raise ValueError(f"n ({self.n}) must be at least batch_size ({self.batch_size})")
        return self


class SDOptions(Section):
    """Stable Diffusion's own settings (`model.sd`)."""
    # None: what the base's scheduler says (ε for v1-5 and the tiny base, v for v2-1 768).
    prediction_type: Literal["epsilon", "v_prediction"] | None = None
    # SD finetuning freezes the text encoder; true trains it with the U-Net (text embeddings are
    # then computed every step rather than cached).
    train_text_encoder: bool = False
    # Share of training captions replaced by "" so classifier-free guidance keeps working.
    caption_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0


class GlideMiniOptions(Section):
    """GLIDE-mini's own settings (`model.glide_mini`)."""
    # What finetuning trains: the U-Net, the text transformer (with its projection), or both.
    train: Literal["unet", "text", "both"] = "unet"
    # Share of training captions replaced by the all-padding tokens (GLIDE finetunes with 0.2), so
    # classifier-free guidance keeps working.
    caption_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.2
    # Weight of the VLB term of the hybrid loss; None: T/1000 (improved DDPM's rescaled form).
    vlb_weight: Annotated[float, Field(ge=0, le=1000)] | None = None
    # Directory with GPT-2's encoder.json and vocab.bpe: needed when model.base is the released
    # base.pt (a bare state dict carries no tokenizer).
    bpe: str | None = None

    @field_validator("bpe")
    @classmethod
    def _bpe_exists(cls, v: str | None, info: ValidationInfo) -> str | None:
        return _check_exists(v, info, "GPT-2 BPE directory")

    def model_problem(self, model: "ModelSpec") -> str | None:
        if model.base and model.base.endswith(".pt") and not self.bpe:
            return ("model.base is a bare state dict (.pt, glide-text2im's base.pt); set model.glide_mini.bpe "
                    "to the directory holding GPT-2's encoder.json and vocab.bpe")
        return None


class DiscffusionOptions(Section):
    """Discffusion's score (`model.discffusion`): the paper's method by default; each switch is a
    choice of its public code (or an ablation), so a sweep can compare them."""
    # f(A) per image token over text tokens: lse = (1/λ) log Σ_j exp(λ A_ij) (the paper); max_row /
    # max_col (ablations); cosine: of the mean query and the mean key (an ablation).
    pooling: Literal["lse", "max_row", "max_col", "cosine"] = "lse"
    lam: Annotated[float, Field(gt=0, le=100)] = 1.0
    # What A is: the attention probabilities (paper) or the pre-softmax scaled logits (public code).
    attention: Literal["probs", "logits"] = "probs"
    # Which cross-attention layers: all, or the last of the down, mid and up blocks (public code).
    layers: Literal["all", "last_down_mid_up"] = "all"
    # Which text tokens j runs over: the caption's own (with its start/end tokens), or all (public code: 77).
    tokens: Literal["caption", "all"] = "caption"
    # The attention term per sample (paper), or one batch mean per forward pass (public code; ablation).
    reduce: Literal["sample", "batch"] = "sample"
    # Weight of the public code's noise-error term ‖ε − ε̂_∅‖ − ‖ε − ε̂_c‖ (0: off, the paper).
    noise_error: Annotated[float, Field(ge=0, le=1000)] = 0.0
    # Where the score is taken: relative noise levels (the paper's ensemble) or the public code's
    # timesteps t = 999 − i for i in range(10, 990, 1000 // timestep_count).
    noise_levels: Annotated[list[Annotated[float, Field(gt=0, lt=1)]], Field(min_length=1, max_length=64)] = \
        [0.2, 0.4, 0.6, 0.8]
    timestep_count: Annotated[int, Field(ge=1, le=1000)] | None = None
    seed: Annotated[int, Field(ge=0)] = 0   # the noise, shared by every candidate of an example
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 32   # candidate pairs per U-Net pass
    # Few-shot training of the p_k / p_v adapters: Σ max(0, f(neg) − f(pos) + margin) (paper 0.2;
    # the public code trains with 0.1).
    margin: Annotated[float, Field(ge=0, le=100)] = 0.2
    # What few-shot training adapts: p_k / p_v added to the frozen W_k, W_v of every cross-attention
    # (the paper's Eq. 5), or LoRA (peft) of rank `lora_rank` on q, k, v and out of every attention,
    # self- and cross- (the public code's choice, rank 4).
    adapter: Literal["pk_pv", "lora"] = "pk_pv"
    lora_rank: Annotated[int, Field(ge=1, le=1024)] = 4
    # Dynamic head weighting (the paper's Eq. 7; off in the public code): while training, each scored
    # layer's heads get the attribution Attr_h = Σ A_h ⊙ (1/m) Σ_{k=1..m} ∂f(k/m·A)/∂A_h (gradients
    # detached; m = head_attribution_steps, a Riemann sum of integrated gradients, m = 1: gradient ×
    # input), normalised to mean 1 and averaged over the training steps; the score weights its heads
    # by these, at inference too. Zero-shot (no training) the weights are 1: the plain head mean.
    head_weighting: bool = False
    head_attribution_steps: Annotated[int, Field(ge=1, le=64)] = 1
    # Adaptive pruning (the Diffusion Classifier's): score every candidate on `prune_steps` evenly
    # spread timesteps of the set, keep the best `prune_keep`, score those on the rest; the pruned
    # rank below every kept one, in their first-stage order. None: every candidate on every timestep.
    prune_keep: Annotated[int, Field(ge=1)] | None = None
    prune_steps: Annotated[int, Field(ge=1)] = 1

    @model_validator(mode="after")
    def _switches_fit(self) -> "DiscffusionOptions":
        if self.head_weighting and self.pooling == "cosine":
            raise ValueError("head_weighting attributes the attention map A; pooling cosine reads no A "
                             "(use lse, max_row or max_col)")
        return self

    @model_serializer(mode="wrap")
    def _omit_new_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Switches added after the first Discffusion manifests: left out of the dump at their
        # defaults, so an existing manifest keeps its trial ids.
        data = handler(self)
        if isinstance(data, dict):
            for name in DISCFFUSION_LATER_FIELDS:
                if name in data and data[name] == type(self).model_fields[name].default:
                    data.pop(name)
        return data


DISCFFUSION_LATER_FIELDS = ("adapter", "lora_rank", "head_weighting", "head_attribution_steps",
                            "prune_keep", "prune_steps")


class VCDMOptions(Section):
    """Visual Chain-of-Thought's own settings (`model.vcdm`): a CLIP-embedding prior, then an
    embedding-conditioned image U-Net, trained together in one trial."""
    # The frozen CLIP (transformers' format: path, file://, az:// or a blob prefix) whose
    # unnormalised image embeddings the prior learns and the U-Net is conditioned on.
    clip: str | None = None
    # embedding: the VCDM; none: the unconditional baseline (the U-Net alone, no CLIP, no prior).
    conditioning: Literal["embedding", "none"] = "embedding"
    # Which stages train; None: what the conditioning needs (both; the U-Net alone for none).
    train: Literal["prior", "unet", "both"] | None = None
    # Share of training images whose embedding is left out (the U-Net then also learns p(x)).
    embedding_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    # No defaults make a whole section (the CLIP has none): a manifest of this variant must say.
    REQUIRED: ClassVar[str] = ("variant vcdm needs its section model.vcdm: {clip: DIR} (the CLIP whose image "
                               "embeddings it learns), or {conditioning: none} for the unconditional baseline")

    @field_validator("clip")
    @classmethod
    def _clip_exists(cls, v: str | None, info: ValidationInfo) -> str | None:
        return _check_exists(v, info, "CLIP directory")

    @model_validator(mode="after")
    def _conditioning_fits(self) -> "VCDMOptions":
        if self.conditioning == "embedding" and self.clip is None:
            raise ValueError("conditioning: embedding needs clip (the CLIP directory whose image embeddings it "
                             "learns); set model.vcdm.clip, or conditioning: none for the unconditional baseline")
        if self.conditioning == "none" and self.train in ("prior", "both"):
            raise ValueError(f"conditioning: none trains the U-Net alone (no embeddings, so no prior); "
                             f"train: {self.train} needs conditioning: embedding")
        return self

    @property
    def stages(self) -> tuple[str, ...]:
        """The trained stages, by the model's module names."""
        train = self.train or ("both" if self.conditioning == "embedding" else "unet")
        return {"prior": ("prior",), "unet": ("unet",), "both": ("prior", "unet")}[train]


# The options section of each variant that has one, named as the variant (`model.<variant>`).
VARIANT_OPTIONS: dict[str, type[Section]] = {"sd": SDOptions, "glide_mini": GlideMiniOptions,
                                             "discffusion": DiscffusionOptions, "vcdm": VCDMOptions}


class ModelSpec(Section):
    # A variant name the model registry knows (orchestrator.models.registry checks which ones
    # exist and what each can train on and serve, with the line, before anything runs).
    variant: str
    # A diffusers-format directory (local path, file:// or az:// URI). None: the project's
    # tiny base model for the shapes world, built by `orch pretrain` and cached in blobs.
    # "tiny-random": the tiny architecture, freshly initialised.
    base: str | None = None
    resolution: Annotated[int, Field(ge=16, le=1024, multiple_of=8)] = 32
    # Settings of the tiny base's pretraining (base: null only); None: PretrainSpec's defaults.
    pretrain: PretrainSpec | None = None
    sd: SDOptions | None = None
    glide_mini: GlideMiniOptions | None = None
    discffusion: DiscffusionOptions | None = None
    vcdm: VCDMOptions | None = None

    @field_validator("variant")
    @classmethod
    def _variant_name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", v):
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

    @model_validator(mode="after")
    def _options_of_this_variant(self) -> "ModelSpec":
        for name in VARIANT_OPTIONS:
            if name != self.variant and getattr(self, name) is not None:
                raise ValueError(f"model.{name} holds options of variant {name!r}, but model.variant is "
                                 f"{self.variant!r}")
        return self

    @model_validator(mode="after")
    def _options_fit_the_model(self) -> "ModelSpec":
        required = getattr(VARIANT_OPTIONS.get(self.variant), "REQUIRED", None)
        if required and getattr(self, self.variant) is None:
            raise ValueError(required)
        check = getattr(self.options, "model_problem", None)
        problem = check(self) if check else None
        if problem:
            raise ValueError(problem)
        return self

    @property
    def options(self) -> Section | None:
        """This variant's options section (its defaults when the manifest sets none), or None for a
        variant that has no options."""
        cls = VARIANT_OPTIONS.get(self.variant)
        if cls is None:
            return None
        return getattr(self, self.variant) or cls()

    @property
    def pretrain_settings(self) -> PretrainSpec:
        return self.pretrain or PretrainSpec()

    @model_serializer(mode="wrap")
    def _omit_unset_sections(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Trial and experiment ids hash the dumped model section: a manifest that sets neither
        # `pretrain` nor an options section dumps (and hashes) exactly as before they existed.
        data = handler(self)
        if isinstance(data, dict):
            for name in ("pretrain", *VARIANT_OPTIONS):
                if data.get(name) is None:
                    data.pop(name, None)
        return data


class DataSource(Section):
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

    @model_serializer(mode="wrap")
    def _omit_unset_flip(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # As ModelSpec's sections: a source that does not flip (or split) dumps and hashes as before.
        data = handler(self)
        if isinstance(data, dict):
            if not self.random_flip:
                data.pop("random_flip", None)
            if self.fewshot is None:
                data.pop("fewshot", None)
                data.pop("fewshot_fraction", None)
            if self.world is None:
                data.pop("world", None)
        return data


class DataSpec(Section):
    train: DataSource | None = None
    eval: DataSource | None = None


class TrainSpec(Section):
    steps: PositiveInt = 1000
    batch_size: PositiveInt = 8
    grad_accum: PositiveInt = 1
    lr: Annotated[float, Field(gt=0, le=1)] = 1e-4
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 1e-2
    warmup_steps: Annotated[int, Field(ge=0)] = 0
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


class SweepSpec(Section):
    # dotted field path -> values; the trials are the cartesian product, in manifest order
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}
    # explicit trials, each a mapping of dotted path -> value (crossed with the grid if both given)
    trials: list[dict[str, Any]] = []
    seeds: list[Annotated[int, Field(ge=0)]] = []

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        return v


class ResourcesSpec(Section):
    gpus_per_trial: Annotated[int, Field(ge=0, le=64)] = 0  # 0: one CPU slot per trial
    cpus_per_trial: Annotated[float, Field(gt=0)] = 1.0
    max_concurrent_trials: PositiveInt | None = None


# What each suite needs from the eval section; checked when the manifest loads, so a sweep never
# trains for an hour and then finds its metric cannot be computed.
SUITE_NEEDS = {"clip_r_precision": "clip", "fid_clip": "clip", "fid": "fid_weights", "drawbench": "clip"}
# Suites that score captions against images: with the model when it is a matcher, else with
# eval.clip (the capability table in models/registry.py checks which, since it knows the variant).
SCORER_SUITES = ("winoground", "matching")
# Benchmarks a matcher trains on and the matching suite reads: text choices, and the image choices
# of ComVG and of its shapes-world miniature (shapes-comvg, generated: `n` scenes).
MATCHING_KINDS = CHOICE_KINDS + ("comvg", "shapes-comvg")
R_PRECISION_CHUNKS = 10  # Park et al.'s protocol; orchestrator.eval.suites takes it from here
EVAL_INPUTS = {"clip": "CLIP directory", "fid_weights": "FID weights file",
               "fid_reference": "FID reference statistics", "winoground": "Winoground directory"}


class DrawBenchSpec(Section):
    """The drawbench suite's options: where its CSV is, which categories, K images per prompt."""
    file: str                         # DrawBench CSV (Prompts|Prompt, Category): a path or blob key
    categories: list[str] | None = None  # None: the suite's default, Lin & Srikanth's two
    per_prompt: Annotated[int, Field(ge=1, le=64)] = 4

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


class EvalSpec(Section):
    suites: list[Literal[SUITES]] = []  # type: ignore[valid-type]
    every: PositiveInt | None = None  # evaluate every N steps as checkpoints land; None: at the end only
    samples: PositiveInt = 64         # held-out prompts = generated images per evaluation
    best_of: PositiveInt = 1          # K images per prompt, the one the CLIP ranks highest kept
    clip: str | None = None           # CLIP directory in transformers' format (e.g. `orch clip train`)
    fid_weights: str | None = None    # pt_inception-2015-12-05-6726825d.pth, local path or blob URI
    fid_reference: str | None = None  # reference statistics .npz (mu, sigma); else computed and cached
    winoground: str | None = None     # a Winoground-layout directory; default: shapes-world pairs
    drawbench: DrawBenchSpec | None = None  # the drawbench suite's CSV, categories, images per prompt
    kid_subsets: PositiveInt = 100    # KID's random subsets (of min(n, 1000) images each)
    reference_resamples: Annotated[int, Field(ge=0)] = 3  # bootstrap resamplings of FID's reference (spread)
    # FID's real images: the held-out scenes stating a relation (prompted: text-to-image models) or
    # every held-out scene (all: the data's own distribution, for a chain that follows no prompt).
    reference_scenes: Literal["prompted", "all"] = "prompted"
    # The oracle arm of a conditioned chain (VCDM): fid/fid_clip also score images generated from
    # the model's own CLIP's embeddings of held-out real images (model.vcdm.clip), as oracle_*.
    oracle: bool = False
    # Evaluate the base model too (what each trial is compared against); false where the base
    # is tiny-random and its numbers would only cost time.
    evaluate_base: bool = True
    consistency_embeddings: Annotated[int, Field(ge=2)] = 50  # consistency suite: prior samples ...
    consistency_images: Annotated[int, Field(ge=2)] = 4       # ... and images generated from each
    # The shapes world of the held-out prompts (and FID's real images), as data.train's `world`
    # picks the training scenes' (data.worlds; unset: mixed).
    world: Literal[WORLD_NAMES] | None = None  # type: ignore[valid-type]

    @field_validator("suites")
    @classmethod
    def _unique_suites(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("suites must be distinct")
        return v

    @field_validator("clip", "fid_weights", "fid_reference", "winoground")
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
        if self.best_of > 1 and self.clip is None:
            missing.append(f"best_of {self.best_of} needs eval.clip (the CLIP that picks the best image)")
        if missing:
            raise ValueError("; ".join(missing))
        return self

    @model_serializer(mode="wrap")
    def _omit_unset_world(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A manifest that names no world dumps and hashes as before the field existed.
        data = handler(self)
        if isinstance(data, dict) and self.world is None:
            data.pop("world", None)
        return data


_JOURNAL_URL = re.compile(r"^(sqlite:///.+|postgresql(\+psycopg)?://.+)$")


class StorageSpec(Section):
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


def section_at(path: list[str]) -> tuple[type[BaseModel] | None, str | None]:
    """Walk the schema along a dotted path; returns (model holding the last field, problem)."""
    model: type[BaseModel] = Manifest
    for i, part in enumerate(path):
        fields = model.model_fields
        if part not in fields:
            return None, f"'{'.'.join(path[: i + 1])}' is not a manifest field (allowed here: {', '.join(fields)})"
        if i == len(path) - 1:
            return model, None
        nxt = _model_of(fields[part].annotation)
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
