"""The model variants, found by the manifest's `model.variant`, and what each can do.

A variant is a module (one package per variant under models/) that provides a plain set of
functions — composition, no base class; `Variant` below is the interface it satisfies:

    INFO                              VariantInfo: what it is, what it trains on, what it serves
    load_base(spec, store, base_dir)  the manifest's base model (built or loaded)
    modules(model)                    its torch modules by name (devices, checkpoints, EMA)
    objective(model, data, spec, options, *, store, device, use_cache)
                                      the trained modules and the loss of a batch (an `Objective`)
    export(model, out_dir) / load(path)
                                      a model directory whose model_index.json names the variant
    resolution(model)                 the image size it was built for
    generate(model, prompts, ...)     generators and chains: images in [0, 1]
    score(model, captions, images)    matchers: a score per (caption, image)
    conditioning_clip_sha256(model)   optional: module_hash of the CLIP it is conditioned on, or None
                                      (fid_clip refuses to judge a model with that same CLIP)
    conditioning_clip_source(options) optional: where its model options name that CLIP, or None
                                      (the same refusal, when a manifest loads)
    sampled_conditioning(model, count, *, repeats, generator) / oracle_conditioning(model, clip, images)
                                      optional, chains: `generate` keywords holding the first stage's
                                      samples fixed (consistency suite) / replacing them by the CLIP's
                                      embeddings of real images (the oracle arm)

Modules are imported when first asked for, so checking a manifest never loads torch.
"""
from __future__ import annotations

import importlib
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from orchestrator.manifest.errors import ManifestError, ManifestIssue

if TYPE_CHECKING:
    from orchestrator.manifest import LoadedManifest

Kind = Literal["generator", "matcher", "chain"]
# Kinds whose `generate` makes images (a chain: a prior's output, then an image model given it).
GENERATING_KINDS: tuple[str, ...] = ("generator", "chain")
INDEX_KEY = "_orch_variant"  # model_index.json key naming the variant (diffusers ignores "_" keys)


@dataclass(frozen=True)
class VariantInfo:
    name: str
    kind: Kind
    trains_on: tuple[str, ...]            # data kinds its objective can train on
    suites: tuple[str, ...]               # evaluation suites it can serve
    # model_index.json `_class_name`s of directories written by other tools that this variant
    # loads (a real SD v1-5 / v2-1 directory names StableDiffusionPipeline).
    pipeline_classes: tuple[str, ...] = ()
    # Blob prefix of the variant's tiny shapes-world base (`model.base: null`), which
    # `orch pretrain --variant NAME` builds; None: the variant has none.
    tiny_base: str | None = None
    # What its objective takes as data: "image_text" (images with captions: generators) or
    # "choices" (an image and candidate texts, or a text and candidate images: matchers).
    train_data: Literal["image_text", "choices"] = "image_text"


class Variant(Protocol):
    INFO: VariantInfo

    def load_base(self, spec: Any, store: Any, base_dir: Path | None) -> Any: ...
    def modules(self, model: Any) -> dict[str, Any]: ...
    def objective(self, model: Any, data: Any, spec: Any, options: Any, *, store: Any, device: Any,
                  use_cache: bool = True) -> Any: ...
    def export(self, model: Any, out_dir: Path) -> None: ...
    def load(self, path: Path) -> Any: ...
    def resolution(self, model: Any) -> int: ...


@dataclass(frozen=True)
class _Entry:
    module: str | None                    # where the variant lives; None: not built yet
    planned: str = ""                     # what it is and where it comes from, for the error
    kind: Kind | None = None              # declared here only for planned variants


_VARIANTS: dict[str, _Entry] = {
    "sd": _Entry("orchestrator.models.sd.variant"),
    "glide_mini": _Entry("orchestrator.models.glide_mini.variant"),
    "discffusion": _Entry("orchestrator.models.discffusion.variant"),
    "vcdm": _Entry("orchestrator.models.vcdm.variant"),
}
_plugged: dict[str, types.ModuleType | Any] = {}


class UnknownVariant(ValueError):
    pass


def names() -> list[str]:
    return [*_VARIANTS, *(n for n in _plugged if n not in _VARIANTS)]


def register(name: str, variant: Any) -> None:
    """Plug in a variant that lives outside this package (a module or object with the interface)."""
    info = getattr(variant, "INFO", None)
    if not isinstance(info, VariantInfo) or info.name != name:
        raise TypeError(f"variant {name!r} must carry INFO = VariantInfo(name={name!r}, ...)")
    _plugged[name] = variant


def unregister(name: str) -> None:
    _plugged.pop(name, None)


def get_variant(name: str) -> Variant:
    """The variant's module; UnknownVariant for a name nobody registered, NotImplementedError for a
    variant that is planned but not built."""
    if name in _plugged:
        return _plugged[name]
    entry = _VARIANTS.get(name)
    if entry is None:
        raise UnknownVariant(f"unknown model variant {name!r}; known: {', '.join(names())}")
    if entry.module is None:
        raise NotImplementedError(f"model variant {name!r} ({entry.planned}) is not implemented yet")
    return importlib.import_module(entry.module)


def variant_of_index(index: dict, where: str) -> str:
    """The variant a model directory's model_index.json names: our own key, or a pipeline class
    a variant declares it loads."""
    name = index.get(INDEX_KEY)
    if name:
        return name
    cls = index.get("_class_name")
    for candidate in names():
        try:
            if cls in get_variant(candidate).INFO.pipeline_classes:
                return candidate
        except NotImplementedError:
            continue
    raise ValueError(f"{where}: model_index.json names no variant ({INDEX_KEY}) and its _class_name "
                     f"{cls!r} is no pipeline a variant loads")


# ---------------------------------------------------------------- the capability table

def capability_problems(variant: str, train_kind: str | None, suites: list[str], *, eval_kind: str | None = None,
                        has_clip: bool = True) -> dict[str, str]:
    """{field: problem} for a trial's variant, training data kind and suites ({} when all fit):
    also what a scoring suite scores with (a matcher scores itself; anything else needs eval.clip)
    and what the matching suite reads (data.eval of a matching benchmark)."""
    from orchestrator.manifest.schema import MATCHING_KINDS, SCORER_SUITES

    try:
        info = get_variant(variant).INFO
    except (UnknownVariant, NotImplementedError) as exc:
        return {"model.variant": str(exc)}
    problems: dict[str, str] = {}
    for i, suite in enumerate(suites):
        if suite in SCORER_SUITES and suite in info.suites and info.kind != "matcher" and not has_clip:
            problems[f"eval.suites.{i}"] = (f"suite {suite} scores captions against images: variant {variant!r} is a "
                                            f"{info.kind}, so it needs eval.clip to score with")
    if "matching" in suites and eval_kind not in MATCHING_KINDS:
        problems["data.eval.kind" if eval_kind else "data.eval"] = (
            f"suite matching reads the benchmark in data.eval; kinds: {', '.join(MATCHING_KINDS)}"
            + (f" (not {eval_kind!r})" if eval_kind else ""))
    if train_kind is not None and train_kind not in info.trains_on:
        can = f"it trains on: {', '.join(info.trains_on)}" if info.trains_on else "it trains on no data yet"
        problems["data.train.kind"] = (f"variant {variant!r} ({info.kind}) cannot train on data kind "
                                       f"{train_kind!r}; {can}")
    for i, suite in enumerate(suites):
        if suite not in info.suites:
            problems[f"eval.suites.{i}"] = (f"suite {suite!r} cannot run on variant {variant!r} ({info.kind}); "
                                            f"it serves: {', '.join(info.suites)}")
    return problems


def check_manifest(loaded: "LoadedManifest") -> list[ManifestIssue]:
    """Every trial's variant, data kind and suites against the table, each problem with its line
    (a swept value points at its sweep entry)."""
    from orchestrator.manifest import expand

    src, issues = loaded.source, []
    for trial in expand(loaded):
        m = trial.manifest
        found = capability_problems(m.model.variant, m.data.train.kind if m.data.train else None, list(m.eval.suites),
                                    eval_kind=m.data.eval.kind if m.data.eval else None,
                                    has_clip=m.eval.clip is not None)
        found.update(_same_clip_problem(m, loaded.base_dir))
        found.update(_oracle_problem(m))
        for dotted, message in found.items():
            yaml_path = _swept_at(loaded, trial.overrides, dotted) or tuple(
                int(p) if p.isdigit() else p for p in dotted.split("."))
            issues.append(ManifestIssue(src.file, dotted, src.line_of(yaml_path), message))
    return list(dict.fromkeys(issues))


def declared_conditioning_clip(model_spec: Any) -> str | None:
    """Where a manifest's model section names the CLIP its model is conditioned on (a variant's
    `conditioning_clip_source`), or None: a variant without one, or an unconditioned setting."""
    try:
        declared = getattr(get_variant(model_spec.variant), "conditioning_clip_source", None)
    except (UnknownVariant, NotImplementedError):
        return None  # capability_problems says so
    return declared(model_spec.options) if declared else None


def _oracle_problem(m: Any) -> dict[str, str]:
    """eval.oracle for a variant that is conditioned on no CLIP: there is no true embedding to give."""
    if not m.eval.oracle:
        return {}
    try:
        has_arm = hasattr(get_variant(m.model.variant), "oracle_conditioning")
    except (UnknownVariant, NotImplementedError):
        return {}
    if not has_arm:
        return {"eval.oracle": f"variant {m.model.variant} has no oracle arm (only a chain conditioned on CLIP "
                               f"embeddings, vcdm, has one)"}
    if not {"fid", "fid_clip"} & set(m.eval.suites):
        return {"eval.oracle": "the oracle arm is scored by the fid and fid_clip suites: add one to eval.suites"}
    if declared_conditioning_clip(m.model) is None:
        return {"eval.oracle": "the oracle arm needs the CLIP the model is conditioned on (model.vcdm.clip)"}
    return {}


def _same_clip_problem(m: Any, base_dir: Path) -> dict[str, str]:
    """fid_clip with eval.clip naming the CLIP the model is conditioned on (the suite checks the
    weights too, when it runs: this catches the same path before any training)."""
    from orchestrator.storage.location import is_remote, local_path

    if "fid_clip" not in m.eval.suites or m.eval.clip is None:
        return {}
    ours, theirs = declared_conditioning_clip(m.model), m.eval.clip
    if ours is None:
        return {}
    same = ours == theirs or (not is_remote(ours) and not is_remote(theirs)
                              and local_path(ours, base_dir).resolve() == local_path(theirs, base_dir).resolve())
    if not same:
        return {}
    return {"eval.clip": (f"fid_clip would judge the model with the CLIP it is conditioned on ({ours}); set eval.clip "
                          f"to a second CLIP, trained on other data or with another seed")}


def _swept_at(loaded: "LoadedManifest", overrides: dict, dotted: str) -> tuple | None:
    if dotted not in overrides:
        return None
    sweep = loaded.manifest.sweep
    if dotted in sweep.grid:
        return ("sweep", "grid", dotted)
    for i, point in enumerate(sweep.trials):
        if dotted in point:
            return ("sweep", "trials", i, dotted)
    return None


def load_checked_manifest(path: str | Path, **kwargs: Any) -> "LoadedManifest":
    """`load_manifest` plus the capability table: what every entry point (orch validate, run,
    train, the actors) loads, so nothing reaches a trainer that would refuse it later."""
    from orchestrator.manifest import load_manifest

    loaded = load_manifest(path, **kwargs)
    issues = check_manifest(loaded)
    if issues:
        raise ManifestError(issues)
    return loaded

