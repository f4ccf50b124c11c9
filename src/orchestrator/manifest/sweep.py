"""Sweep expansion: explicit trials x grid x sampled points x seeds -> trials with content-hash ids.

A trial id is a hash of the trial's resolved training config (model, data, train), so the
same manifest always yields the same ids whatever the key order, and resubmitting it can
skip trials that already finished.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
from pydantic import ValidationError

from .errors import ManifestError, ManifestIssue
from .issues import issues_from_validation
from .loaded import LoadedManifest
from .schema import SWEEPABLE_SECTIONS, Distribution, Manifest, SampleSpec, section_at


@dataclass(frozen=True)
class Trial:
    id: str
    index: int
    overrides: dict[str, Any]  # dotted path -> value, in sweep order
    manifest: Manifest = field(repr=False)

    @property
    def config(self) -> dict[str, Any]:
        return trial_config(self.manifest)

    @property
    def label(self) -> str:
        return _label(self.overrides) or "(base)"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def content_id(prefix: str, value: Any) -> str:
    return prefix + hashlib.sha256(canonical_json(value).encode()).hexdigest()[:12]


def trial_config(manifest: Manifest) -> dict[str, Any]:
    """What determines a trial's trained weights; its hash is the trial id."""
    return manifest.model_dump(mode="json", include=set(SWEEPABLE_SECTIONS))


def experiment_id(loaded: LoadedManifest, trials: list[Trial]) -> str:
    """Same manifest, same id; storage and description are where/why, not what."""
    body = loaded.manifest.model_dump(mode="json", exclude={"storage", "description", "sweep"})
    body["trials"] = [t.id for t in trials]
    return content_id("e", body)


def _label(overrides: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in overrides.items())


def _fmt(v: Any) -> str:
    return format(v, "g") if isinstance(v, float) else str(v)


def set_dotted(target: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = target
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[leaf] = value


MAX_TRIALS_ENV = "ORCH_MAX_TRIALS"
DEFAULT_MAX_TRIALS = 10_000


def max_trials() -> int:
    raw = os.environ.get(MAX_TRIALS_ENV)
    try:
        return int(raw) if raw else DEFAULT_MAX_TRIALS
    except ValueError:
        raise ManifestError([ManifestIssue(MAX_TRIALS_ENV, "", None, f"not an integer: {raw!r}")]) from None


def expand(loaded: LoadedManifest, *, check_files: bool = True) -> list[Trial]:
    """All trials of the manifest's sweep, each validated; raises ManifestError on any problem.
    `check_files=False`: local paths are not checked for existence (as `load_manifest`'s)."""
    m, src = loaded.manifest, loaded.source
    sweep = m.sweep
    space = sweep.sample.space if sweep.sample else {}
    issues = sweep_key_issues(m.sweep.grid, m.sweep.trials, bool(m.sweep.seeds), src.file, src.line_of, space)
    if issues:
        raise ManifestError(issues)
    count = math.prod(len(v) for v in sweep.grid.values()) * max(len(sweep.trials), 1) * max(len(sweep.seeds), 1) \
        * (sweep.sample.num_samples if sweep.sample else 1)
    limit = max_trials()
    if count > limit:  # counted before anything is built: a typo'd grid must not eat the memory
        raise ManifestError([ManifestIssue(src.file, "sweep", src.line_of(("sweep",)),
                                           f"the sweep expands to {count:,} trials, more than the limit of "
                                           f"{limit:,} (set {MAX_TRIALS_ENV} to allow more)")])

    # Each point records where each value came from, so an invalid value is reported there.
    grid_points: list[list[tuple[str, Any, tuple]]] = [[]]
    if sweep.grid:
        axes = [[(k, v, ("sweep", "grid", k, j)) for j, v in enumerate(vals)] for k, vals in sweep.grid.items()]
        grid_points = [list(p) for p in itertools.product(*axes)]
    trial_points = [[(k, v, ("sweep", "trials", i, k)) for k, v in t.items()]
                    for i, t in enumerate(sweep.trials)] or [[]]
    seed_points = [[("train.seed", s, ("sweep", "seeds", j))] for j, s in enumerate(sweep.seeds)] or [[]]
    drawn = [[(k, v, ("sweep", "sample", "space", k)) for k, v in p.items()]
             for p in sample_points(sweep.sample)] if sweep.sample else [[]]

    base = m.model_dump(mode="json", exclude={"sweep"})
    context = loaded.context(check_files)
    trials: list[Trial] = []
    first_index: dict[str, int] = {}
    for tp, gp, dp, sp in itertools.product(trial_points, grid_points, drawn, seed_points):
        point = tp + gp + dp + sp
        data = copy.deepcopy(base)
        for dotted, value, _ in point:
            set_dotted(data, dotted, value)
        try:
            trial_manifest = Manifest.model_validate(data, context=context)
        except ValidationError as exc:
            issues.extend(issues_from_validation(exc, src, data=data, remap=_remapper(point)))
            continue
        overrides = {dotted: value for dotted, value, _ in point}
        if sweep.early_stop is not None:
            issues.extend(ManifestIssue(src.file, "sweep.early_stop", src.line_of(("sweep", "early_stop")),
                                        f"trial {len(trials)}" + (f" ({_label(overrides)})" if overrides else "")
                                        + f": {problem}")
                          for problem in sweep.early_stop.problems(trial_manifest, len(trials)))
        tid = content_id("t", trial_config(trial_manifest))
        if tid in first_index:
            hint = (" (sweep.sample drew a config twice: draw fewer points or grid a space this small)"
                    if sweep.sample and any(where[:2] == ("sweep", "sample") for _, _, where in point) else "")
            issues.append(ManifestIssue(src.file, "sweep", src.line_of(("sweep",)),
                                        f"trial {len(trials)} duplicates trial {first_index[tid]} (same config {tid})"
                                        + hint))
            continue
        first_index[tid] = len(trials)
        trials.append(Trial(tid, len(trials), overrides, trial_manifest))
    if issues:
        # One bad grid value fails every trial that uses it; report each problem once.
        raise ManifestError(list(dict.fromkeys(issues)))
    return trials


def sample_points(spec: SampleSpec) -> list[dict[str, Any]]:
    """`spec.num_samples` points of `spec.space`, in draw order: a point of the unit cube per trial, one
    coordinate per field in manifest order, mapped through each field's distribution. "random": numpy's
    PCG64 from `seed`; "sobol": scipy's scrambled Sobol sequence seeded alike (its first n points; n a power
    of two keeps its balance). Floats keep 6 significant digits, so labels and written-out manifests read
    cleanly; the same spec gives the same points on any machine."""
    keys = list(spec.space)
    rng = np.random.default_rng(spec.seed)
    if spec.method == "sobol":
        from scipy.stats import qmc

        with warnings.catch_warnings():  # n need not be a power of two: the first n points are what is asked
            warnings.filterwarnings("ignore", message=".*balance properties.*")
            unit = qmc.Sobol(d=len(keys), scramble=True, rng=rng).random(spec.num_samples)
    else:
        unit = rng.random((spec.num_samples, len(keys)))
    return [{k: draw(spec.space[k], float(u)) for k, u in zip(keys, row)} for row in unit]


def draw(dist: Distribution, u: float) -> Any:
    """The value at quantile `u` in [0, 1) of `dist` (inverse CDF)."""
    kind, b = dist.kind, dist.bounds(dist.kind)
    if kind == "choice":
        return b[min(int(u * len(b)), len(b) - 1)]
    if kind == "int":
        return int(min(b[0] + math.floor(u * (b[1] - b[0] + 1)), b[1]))
    lo, hi = (math.log(b[0]), math.log(b[1])) if kind == "loguniform" else (b[0], b[1])
    x = lo + u * (hi - lo)
    return float(f"{math.exp(x) if kind == 'loguniform' else x:.6g}")


def sweep_key_issues(grid: dict, trials: list, has_seeds: bool, file: str, line_of,
                     space: Mapping[str, Any] | None = None) -> list[ManifestIssue]:
    """Problems with the swept field names themselves; needs no valid base manifest."""
    issues: list[ManifestIssue] = []

    def add(yaml_path: tuple, message: str) -> None:
        issues.append(ManifestIssue(file, ".".join(map(str, yaml_path)), line_of(yaml_path), message))

    def check(yaml_path: tuple, dotted: str) -> None:
        parts = str(dotted).split(".")
        if parts[0] not in SWEEPABLE_SECTIONS:
            add(yaml_path, f"cannot sweep '{dotted}': only {', '.join(SWEEPABLE_SECTIONS)} fields change a trial")
            return
        _, problem = section_at(parts)
        if problem:
            add(yaml_path, problem)
        elif dotted == "train.seed" and has_seeds:
            add(yaml_path, "train.seed is set by sweep.seeds; sweep it in one place only")

    for key in grid:
        check(("sweep", "grid", key), key)
    for i, entry in enumerate(trials):
        if not isinstance(entry, dict):
            continue  # the schema reports the wrong type
        if not entry:
            add(("sweep", "trials", i), "empty trial")
        for key in entry:
            check(("sweep", "trials", i, key), key)
            if key in grid:
                add(("sweep", "trials", i, key), f"'{key}' is both in sweep.grid and this trial")
    for key in space or {}:
        check(("sweep", "sample", "space", key), key)
        others = [name for name, keys in (("sweep.grid", grid), ("sweep.trials", {k for t in trials
                  if isinstance(t, dict) for k in t})) if key in keys]
        if others:
            add(("sweep", "sample", "space", key), f"'{key}' is both sampled and in {others[0]}; sweep it in one place")
    return issues


def _remapper(point: list[tuple[str, Any, tuple]]):
    def remap(path: list) -> tuple[tuple, str]:
        dotted = ".".join(str(p) for p in path)
        for key, value, yaml_path in point:
            if dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + "."):
                shown = repr(value)
                shown = shown if len(shown) <= 80 else shown[:60] + "..." + shown[-12:]
                return yaml_path, f"swept value {shown}: "
        return tuple(path), ""

    return remap


def pick_trial(trials: list[Trial], trial_id: str, path) -> Trial:
    """The trial `trial_id` names: its id, a unique id prefix, or its index in plan order."""
    exact = [t for t in trials if t.id == trial_id]
    if exact:
        return exact[0]
    if trial_id.isdigit() and int(trial_id) < len(trials):
        return trials[int(trial_id)]
    prefixed = [t for t in trials if t.id.startswith(trial_id)]
    if len(prefixed) == 1:
        return prefixed[0]
    known = ", ".join(t.id for t in trials)
    raise KeyError(f"{path}: no single trial matches {trial_id!r} (trials: {known})")


def written_out(loaded: LoadedManifest, trials: list[Trial]) -> dict[str, Any]:
    """The manifest as data with its sweep written out trial by trial, each swept value as the
    trial's validated manifest holds it (a confined location: the resolved path). Loading it
    expands to the same trials, in the same order, with the same ids."""
    data = loaded.manifest.model_dump(mode="json", exclude_unset=True, exclude={"sweep"})
    explicit = []
    for t in trials:
        if not t.overrides:
            continue
        full = t.manifest.model_dump(mode="json")
        entry = {}
        for dotted in t.overrides:
            node = full
            for part in dotted.split("."):
                node = node[part]
            entry[dotted] = node
        explicit.append(entry)
    if explicit:
        data["sweep"] = {"trials": explicit}
    return data
