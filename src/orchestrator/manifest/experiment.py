"""`load_experiment`: a manifest checked as every entry point needs it — the schema, then what the
variants can do (the capability check), so nothing reaches a trainer that would refuse it later.

The capability check asks the variant catalog (variants.py) for each trial's variant: whether it
exists, what it trains on, which suites it serves, and which optional hooks it has (a CLIP it is
conditioned on, an oracle arm). Each problem is reported with its line; a swept value points at
its sweep entry.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.storage.location import is_remote, local_path

from .errors import ManifestError, ManifestIssue
from .load import load_manifest
from .loaded import LoadedManifest
from .schema import MATCHING_KINDS, ModelSpec
from .suites import SCORER_SUITES
from .sweep import expand
from .variants import UnknownVariant, catalog


def load_experiment(path: str | Path, **kwargs: Any) -> LoadedManifest:
    """`load_manifest` (same keywords: check_files, roots) plus the capability check: what `orch
    validate`, run, train, the head's API and the actors load. Raises ManifestError listing every
    problem."""
    loaded = load_manifest(path, **kwargs)
    issues = check_experiment(loaded)
    if issues:
        raise ManifestError(issues)
    return loaded


def check_experiment(loaded: LoadedManifest) -> list[ManifestIssue]:
    """Every trial's variant, data kind and suites against what the variant can do, each problem
    with its line (a swept value points at its sweep entry)."""
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


def capability_problems(variant: str, train_kind: str | None, suites: list[str], *, eval_kind: str | None = None,
                        has_clip: bool = True) -> dict[str, str]:
    """{field: problem} for a trial's variant, training data kind and suites ({} when all fit):
    also what a scoring suite scores with (a matcher scores itself; anything else needs eval.clip)
    and what the matching suite reads (data.eval of a matching benchmark)."""
    try:
        info = catalog().get(variant)
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


def declared_conditioning_clip(model: ModelSpec) -> str | None:
    """Where a manifest's model section names the CLIP its model is conditioned on (the variant's
    `conditioning_clip_source` hook), or None: a variant without the hook, or an unconditioned setting."""
    try:
        declared = catalog().get(model.variant).conditioning_clip_source
    except (UnknownVariant, NotImplementedError):
        return None  # capability_problems says so
    return declared(model.options) if declared is not None else None


def _oracle_problem(m: Any) -> dict[str, str]:
    """eval.oracle for a variant that is conditioned on no CLIP: there is no true embedding to give."""
    if not m.eval.oracle:
        return {}
    try:
        has_arm = catalog().get(m.model.variant).oracle_conditioning is not None
    except (UnknownVariant, NotImplementedError):
        return {}
    if not has_arm:
        return {"eval.oracle": f"variant {m.model.variant} has no oracle arm (only a chain conditioned on CLIP "
                               f"embeddings, {', '.join(_with_oracle_arm())}, has one)"}
    if not {"fid", "fid_clip"} & set(m.eval.suites):
        return {"eval.oracle": "the oracle arm is scored by the fid and fid_clip suites: add one to eval.suites"}
    if declared_conditioning_clip(m.model) is None:
        return {"eval.oracle": f"the oracle arm needs the CLIP the model is conditioned on "
                               f"(model.{m.model.variant}.clip)"}
    return {}


def _with_oracle_arm() -> list[str]:
    """The variants that have an oracle arm (the `oracle_conditioning` hook)."""
    found, cat = [], catalog()
    for name in cat.names():
        try:
            if cat.get(name).oracle_conditioning is not None:
                found.append(name)
        except (UnknownVariant, NotImplementedError):
            continue
    return found


def _same_clip_problem(m: Any, base_dir: Path) -> dict[str, str]:
    """fid_clip with eval.clip naming the CLIP the model is conditioned on (the suite checks the
    weights too, when it runs: this catches the same path before any training)."""
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


def _swept_at(loaded: LoadedManifest, overrides: dict, dotted: str) -> tuple | None:
    if dotted not in overrides:
        return None
    sweep = loaded.manifest.sweep
    if dotted in sweep.grid:
        return ("sweep", "grid", dotted)
    for i, point in enumerate(sweep.trials):
        if dotted in point:
            return ("sweep", "trials", i, dotted)
    return None
