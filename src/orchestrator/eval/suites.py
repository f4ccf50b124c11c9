"""Evaluation suites: what the Evaluator actor and `orch eval --checkpoint URI --suite NAMES` run.

A suite has a `name`, `requirements(ctx)` (what stops it, checked for every requested suite before
any work starts, so a missing weights file fails in a second, not after an hour of sampling) and
`run(ctx) -> SuiteResult`. Every value comes with its sample count and, where one is defined, a 95%
confidence interval. The context (context.py) loads the model under test through the one loader
and generates images once, for the held-out shapes-world spatial prompts; every generating suite
judges those same images.

    results = run_suites("runs/tiny-model", ["spatial", "clip_r_precision"], clip="runs/clip", samples=200)
    record_results(journal, experiment_id, trial_id, step, results, weights=..., options=...)  # record.py
"""
from __future__ import annotations

import importlib
import time
from dataclasses import fields, replace
from typing import Any, Protocol, Sequence

from orchestrator.manifest.suites import SUITE_TABLE

from .context import EvalContext, HeldOut
from .options import DEFAULT_EVAL_SEED, EvalOptions
from .results import (
    OUTCOMES,
    MetricUnavailable,
    MetricValue,
    SuiteResult,
    bits,
    flatten_metrics,
    jsonable,
    store_artifacts,
)
from .spatial import score_spatial

__all__ = ["DEFAULT_EVAL_SEED", "EvalContext", "EvalOptions", "HeldOut", "MetricUnavailable", "MetricValue",
           "Suite", "SuiteResult", "build_context", "flatten_metrics", "get_suite", "jsonable", "parse_suites",
           "run_in_context", "run_suites", "store_artifacts"]


class Suite(Protocol):
    name: str

    def requirements(self, ctx: EvalContext) -> list[str]: ...

    def run(self, ctx: EvalContext) -> SuiteResult: ...


# ---------------------------------------------------------------- the spatial suite

class SpatialSuite:
    """GenEval's position rule on detected objects, with VISOR's object accuracy (both objects
    generated) and conditional spatial accuracy (right relation among images with both)."""
    name = "spatial"

    def requirements(self, ctx: EvalContext) -> list[str]:
        return ctx.generation_problems(self.name)

    def run(self, ctx: EvalContext) -> SuiteResult:
        from orchestrator.models.common.images import to_pil

        started = time.perf_counter()
        rule = ctx.options.spatial_rule
        s = score_spatial(to_pil(ctx.generated()), ctx.prompts(), rule)
        metrics = [
            MetricValue("accuracy", s.accuracy, s.n, *s.accuracy_ci),
            MetricValue("object_accuracy", s.object_accuracy, s.n, *s.object_accuracy_ci),
            MetricValue("conditional_accuracy", s.conditional_accuracy, s.both_present, *s.conditional_ci),
        ]
        # Per-prompt outcomes as "0"/"1" strings, in prompt order: what a paired test between two
        # models judged on the same prompts and noise needs (orch results --paired).
        outcomes = {"accuracy": bits(s.outcomes), "object_accuracy": bits(s.object_outcomes)}
        return SuiteResult(self.name, metrics, {"rule": rule, "correct": s.correct, "both_present": s.both_present,
                                                OUTCOMES: outcomes, **ctx.generation_info},
                           time.perf_counter() - started)


# ---------------------------------------------------------------- registry

# name -> (module, class), from the one suite table (manifest/suites.py)
REGISTRY: dict[str, tuple[str, str]] = {e.name: tuple(e.implementation.split(":")) for e in SUITE_TABLE}


def get_suite(name: str) -> Suite:
    if name not in REGISTRY:
        raise ValueError(f"unknown suite {name!r}; known suites: {', '.join(REGISTRY)}")
    module, cls = REGISTRY[name]
    return getattr(importlib.import_module(module), cls)()


def parse_suites(names: str | Sequence[str]) -> list[str]:
    """'spatial,fid' or a list -> distinct names in order (validated)."""
    items = [s.strip() for s in (names.split(",") if isinstance(names, str) else names) if s.strip()]
    for s in items:
        if s not in REGISTRY:
            raise ValueError(f"unknown suite {s!r}; known suites: {', '.join(REGISTRY)}")
    return list(dict.fromkeys(items))


def build_context(checkpoint: str | None, *, store: Any = None, base: str | None = None,
                  options: EvalOptions | None = None, model: Any = None, clip_encoder: Any = None,
                  inception_net: Any = None, **overrides: Any) -> EvalContext:
    """The context suites run in (see `run_suites` for the arguments); keep it to reuse its
    generated images, e.g. for a sample grid: `ctx.generated()`."""
    known = {f.name for f in fields(EvalOptions)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown evaluation options {unknown}; options: {sorted(known)}")
    opts = replace(options or EvalOptions(), **overrides)
    return EvalContext(checkpoint, opts, store=store, base=base, model=model, clip=clip_encoder,
                       inception=inception_net)


def run_in_context(ctx: EvalContext, suites: str | Sequence[str]) -> list[SuiteResult]:
    """Check every suite's requirements, then run them in order; MetricUnavailable lists all problems."""
    chosen = [get_suite(n) for n in parse_suites(suites)]
    if not chosen:
        raise ValueError("no suites to run")
    problems = [p for s in chosen for p in s.requirements(ctx)]
    if problems:
        raise MetricUnavailable("cannot run the requested suites:\n  " + "\n  ".join(problems))
    return [s.run(ctx) for s in chosen]


def run_suites(checkpoint: str | None, suites: str | Sequence[str], *, store: Any = None, base: str | None = None,
               options: EvalOptions | None = None, model: Any = None, clip_encoder: Any = None,
               inception_net: Any = None, **overrides: Any) -> list[SuiteResult]:
    """Run the named suites ("spatial,fid" or a list) on a checkpoint (URI forms: checkpoint_model).

    `overrides` are EvalOptions fields (samples=..., seed=..., clip=..., fid_weights=...).
    `model` (a LoadedModel), `clip_encoder`, `inception_net` pass loaded objects
    (the Evaluator actor's, tests'); they take the place of the checkpoint URI, `clip`, `fid_weights`.
    Every suite's requirements are checked before any work; MetricUnavailable lists all that fail.
    """
    ctx = build_context(checkpoint, store=store, base=base, options=options, model=model, clip_encoder=clip_encoder,
                        inception_net=inception_net, **overrides)
    return run_in_context(ctx, suites)
