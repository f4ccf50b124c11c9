"""Evaluation suites: what the Evaluator actor and `orch eval --checkpoint URI --suite NAMES` run.

A suite has a `name`, `requirements(ctx)` (what stops it, checked for every requested suite before
any work starts, so a missing weights file fails in a second, not after an hour of sampling) and
`run(ctx) -> SuiteResult`. Every value comes with its sample count and, where one is defined, a 95%
confidence interval. The context loads the checkpoint's model and generates images once, for the
held-out shapes-world spatial prompts; every generating suite judges those same images.

    results = run_suites("runs/tiny-model", ["spatial", "clip_r_precision"], clip="runs/clip", samples=200)
    record_results(journal, experiment_id, trial_id, step, results)   # the journal's `evaluated` event
"""
from __future__ import annotations

import hashlib
import importlib
import json
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from orchestrator.manifest.schema import R_PRECISION_CHUNKS

from .checkpoint_model import LoadedCheckpoint, load_checkpoint_model
from .spatial import SpatialPrompt, score_spatial

DEFAULT_EVAL_SEED = 1000  # shapes-world dataset seed of the held-out prompts: not a training seed


class MetricUnavailable(RuntimeError):
    """A requested metric cannot be computed as configured (and is not silently skipped)."""


@dataclass(frozen=True)
class MetricValue:
    name: str
    value: float
    n: int                        # samples the value is computed from
    ci_low: float | None = None   # 95% interval; None where none is defined (FID)
    ci_high: float | None = None
    std: float | None = None      # spread over chunks, where the protocol reports one


@dataclass
class SuiteResult:
    suite: str
    metrics: list[MetricValue]
    info: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"suite": self.suite, "metrics": [asdict(m) for m in self.metrics], "info": self.info,
                "wall_s": self.wall_s}


class Suite(Protocol):
    name: str

    def requirements(self, ctx: "EvalContext") -> list[str]: ...

    def run(self, ctx: "EvalContext") -> SuiteResult: ...


@dataclass(frozen=True)
class EvalOptions:
    samples: int = 64                   # prompts (= generated images) per evaluation
    seed: int = 1234                    # generation noise (same for every model: paired) + protocol sampling
    eval_seed: int = DEFAULT_EVAL_SEED  # shapes dataset seed of the held-out prompts and real images
    image_size: int | None = None       # default: the model's resolution
    sampler: str = "ddim"               # sampling as the Evaluator actor does: DDIM, 25 steps, CFG 3
    steps: int = 25
    guidance_scale: float = 3.0
    batch_size: int = 16                # prompts per generation batch
    best_of: int = 1                    # K images per prompt, the CLIP-best kept (needs `clip`)
    clip: str | None = None             # CLIP directory / blob prefix (clip_r_precision, fid_clip, winoground)
    fid_weights: str | None = None      # pt_inception-2015-12-05-6726825d.pth: local path or blob key
    fid_reference: str | None = None    # reference statistics .npz (path or blob key); else computed + cached
    fid_reference_n: int | None = None  # real images for computed reference statistics (default: samples)
    feature_batch_size: int = 32
    r_precision_pool: int = 1000        # held-out captions the 99 negatives are drawn from
    r_precision_negatives: int = 99
    r_precision_chunks: int = R_PRECISION_CHUNKS
    winoground: str | None = None       # a Winoground-layout directory; default: shapes-world pairs
    winoground_scenes: int = 500        # shapes scenes (eval_seed) whose pairs make the default set
    device: str | None = None           # default: cuda when available

    def __post_init__(self) -> None:
        for name in ("samples", "steps", "batch_size", "best_of", "feature_batch_size", "r_precision_chunks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class HeldOut:
    prompt: SpatialPrompt
    example: Any  # data.shapes.ShapesExample


class EvalContext:
    """What suites share: the model, held-out prompts, generated images, CLIP, Inception (all lazy)."""

    def __init__(self, checkpoint: str | None, options: EvalOptions, *, store: Any = None, base: str | None = None,
                 model: Any = None, clip: Any = None, inception: Any = None):
        self.checkpoint, self.options, self.store, self.base = checkpoint, options, store, base
        if model is not None and not isinstance(model, LoadedCheckpoint):  # bare SDComponents
            model = LoadedCheckpoint(model, checkpoint or "<in-memory model>", None)
        self.device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._model, self._clip, self._inception = model, clip, inception
        self._heldout: list[HeldOut] = []
        self._next_scene = 0
        self._generated: torch.Tensor | None = None
        self.generation_info: dict[str, Any] = {}

    # ---- prerequisites --------------------------------------------------------------
    def model_problems(self, suite: str) -> list[str]:
        if self._model is None and self.checkpoint is None:
            return [f"{suite}: needs a checkpoint to generate images from"]
        return []

    def clip_problems(self, suite: str) -> list[str]:
        if self._clip is not None:
            return []
        if not self.options.clip:
            return [f"{suite}: needs a CLIP (set clip to a CLIP directory or blob prefix in transformers' "
                    f"format, e.g. one trained by train_tiny_clip)"]
        return self._missing(self.options.clip, "config.json", f"{suite}: CLIP")

    def inception_problems(self, suite: str) -> list[str]:
        if self._inception is not None:
            return []
        if not self.options.fid_weights:
            return [f"{suite}: needs the FID Inception weights (fid_weights: a local path or blob key of "
                    f"pt_inception-2015-12-05-6726825d.pth); FID is never computed with other weights"]
        return self._missing(self.options.fid_weights, None, f"{suite}: FID Inception weights")

    def _missing(self, source: str, marker: str | None, what: str) -> list[str]:
        """A cheap existence check of a local path or blob (az:// URIs are checked when loaded)."""
        if source.startswith("az://"):
            return []
        local = Path(source[len("file://"):] if source.startswith("file://") else source).expanduser()
        if (local / marker).is_file() if marker else local.is_file():
            return []
        key = f"{source.strip('/')}/{marker}" if marker else source
        if self.store is not None and not source.startswith("file://") and self.store.exists(key):
            return []
        return [f"{what} not found at {local}" + (f" nor as blob {key!r}" if self.store is not None else "")]

    def generation_problems(self, suite: str) -> list[str]:
        problems = self.model_problems(suite)
        if self.options.best_of > 1:
            problems += self.clip_problems(f"{suite} (best_of={self.options.best_of})")
        return problems

    # ---- lazy resources -------------------------------------------------------------
    def model(self) -> LoadedCheckpoint:
        if self._model is None:
            if self.checkpoint is None:
                raise MetricUnavailable("no checkpoint to evaluate")
            self._model = load_checkpoint_model(self.checkpoint, store=self.store, base=self.base, device=self.device)
        return self._model

    def clip(self) -> Any:
        if self._clip is None:
            if not self.options.clip:
                raise MetricUnavailable(self.clip_problems("this suite")[0])
            from orchestrator.models.clip import load_clip

            self._clip = load_clip(self.options.clip, store=self.store, device=self.device)
        return self._clip

    def inception(self) -> Any:
        if self._inception is None:
            if not self.options.fid_weights:
                raise MetricUnavailable("fid: no FID Inception weights configured (fid_weights)")
            from .inception import load_fid_inception

            self._inception = load_fid_inception(self.options.fid_weights, store=self.store, device=self.device)
        return self._inception

    def loaded(self) -> dict[str, Any]:
        """What this context has loaded or made so far, for a caller to reuse in its next context
        (the Evaluator actor keeps CLIP and Inception between checkpoints): None where not."""
        return {"clip": self._clip, "inception": self._inception, "generated": self._generated}

    @property
    def image_size(self) -> int:
        if self.options.image_size:
            return self.options.image_size
        if self._model is None and self.checkpoint is None:
            return 32
        return int(self.model().components.vae.config.sample_size)

    # ---- data -----------------------------------------------------------------------
    def heldout(self, n: int) -> list[HeldOut]:
        """The first `n` scenes of the held-out shapes dataset that state a relation (as
        spatial.heldout_spatial_prompts selects them), with their examples."""
        from orchestrator.data.shapes import make_example

        while len(self._heldout) < n:
            ex = make_example(self.options.eval_seed, self._next_scene, self.image_size)
            if ex.spatial_fact is not None:
                self._heldout.append(HeldOut(SpatialPrompt.from_fact(ex.spatial_fact, ex.spatial), ex))
            self._next_scene += 1
        return self._heldout[:n]

    def prompts(self) -> list[SpatialPrompt]:
        return [h.prompt for h in self.heldout(self.options.samples)]

    def reference_images(self) -> torch.Tensor:
        """uint8 [N, 3, H, W]: the real held-out scenes (the prompts' own, then the next ones)."""
        n = self.options.fid_reference_n or self.options.samples
        arr = np.stack([np.asarray(h.example.image()) for h in self.heldout(n)])
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()

    def reference_key(self, suite: str, weights_id: str, n: int) -> str | None:
        if self.store is None:
            return None
        return (f"cache/eval/{suite}/{weights_id[:24]}/shapes-seed{self.options.eval_seed}"
                f"-{self.image_size}px-n{n}.npz")

    def generated(self) -> torch.Tensor:
        """[samples, 3, H, W] in [0, 1], for `prompts()`, generated once (best of K by CLIP if asked)."""
        if self._generated is None:
            from orchestrator.models.sd.sampling import generate

            o = self.options
            texts = [p.text for p in self.prompts()]
            started = time.perf_counter()
            gen = torch.Generator(self.device).manual_seed(o.seed)
            images = generate(self.model().components, texts * o.best_of, sampler=o.sampler, steps=o.steps,
                              guidance_scale=o.guidance_scale, generator=gen, resolution=self.image_size,
                              batch_size=o.batch_size)
            self.generation_info = {"samples": len(texts), "sampler": o.sampler, "steps": o.steps,
                                    "guidance_scale": o.guidance_scale, "seed": o.seed, "best_of": o.best_of}
            if o.best_of > 1:
                from .clip_r_precision import best_of_k

                images, pick = best_of_k(self.clip(), texts, images.reshape(o.best_of, len(texts), *images.shape[1:]))
                self.generation_info["best_of_picks"] = np.bincount(pick, minlength=o.best_of).tolist()
            self.generation_info["wall_s"] = time.perf_counter() - started
            self._generated = images
        return self._generated


# ---------------------------------------------------------------- the spatial suite

class SpatialSuite:
    """GenEval's position rule on detected objects, with VISOR's object accuracy (both objects
    generated) and conditional spatial accuracy (right relation among images with both)."""
    name = "spatial"

    def requirements(self, ctx: EvalContext) -> list[str]:
        return ctx.generation_problems(self.name)

    def run(self, ctx: EvalContext) -> SuiteResult:
        from orchestrator.models.sd.sampling import to_pil

        started = time.perf_counter()
        s = score_spatial(to_pil(ctx.generated()), ctx.prompts())
        metrics = [
            MetricValue("accuracy", s.accuracy, s.n, *s.accuracy_ci),
            MetricValue("object_accuracy", s.object_accuracy, s.n, *s.object_accuracy_ci),
            MetricValue("conditional_accuracy", s.conditional_accuracy, s.both_present, *s.conditional_ci),
        ]
        return SuiteResult(self.name, metrics, {"correct": s.correct, "both_present": s.both_present,
                                                **ctx.generation_info}, time.perf_counter() - started)


# ---------------------------------------------------------------- registry

REGISTRY: dict[str, tuple[str, str]] = {
    "spatial": (__name__, "SpatialSuite"),
    "clip_r_precision": ("orchestrator.eval.clip_r_precision", "ClipRPrecisionSuite"),
    "winoground": ("orchestrator.eval.winoground", "WinogroundSuite"),
    "fid": ("orchestrator.eval.fid", "FIDSuite"),
    "fid_clip": ("orchestrator.eval.fid", "FIDClipSuite"),
}
NOT_YET = {"matching": "image-text matching (ComVG, RefCOCOg, VQAv2, VL-CheckList)",
           "drawbench": "DrawBench generation sheets"}


def get_suite(name: str) -> Suite:
    if name in NOT_YET:
        raise MetricUnavailable(f"suite {name!r} ({NOT_YET[name]}) is not implemented yet")
    if name not in REGISTRY:
        raise ValueError(f"unknown suite {name!r}; known suites: {', '.join(REGISTRY)}")
    module, cls = REGISTRY[name]
    return getattr(importlib.import_module(module), cls)()


def parse_suites(names: str | Sequence[str]) -> list[str]:
    """'spatial,fid' or a list -> distinct names in order (validated)."""
    items = [s.strip() for s in (names.split(",") if isinstance(names, str) else names) if s.strip()]
    for s in items:
        if s not in REGISTRY and s not in NOT_YET:
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
    `model` (SDComponents or LoadedCheckpoint), `clip_encoder`, `inception_net` pass loaded objects
    (the Evaluator actor's, tests'); they take the place of the checkpoint URI, `clip`, `fid_weights`.
    Every suite's requirements are checked before any work; MetricUnavailable lists all that fail.
    """
    ctx = build_context(checkpoint, store=store, base=base, options=options, model=model, clip_encoder=clip_encoder,
                        inception_net=inception_net, **overrides)
    return run_in_context(ctx, suites)


# ---------------------------------------------------------------- journal

def flatten_metrics(results: Sequence[SuiteResult]) -> dict[str, float]:
    """{"<suite>.<metric>": value, "<...>.n": n, ".ci_low", ".ci_high", ".std"}: the numbers the
    `evaluated` event carries (a metric named like its suite is just "<suite>", e.g. "fid")."""
    out: dict[str, float] = {}
    for r in results:
        for m in r.metrics:
            key = r.suite if m.name == r.suite else f"{r.suite}.{m.name}"
            out[key] = float(m.value)
            out[f"{key}.n"] = int(m.n)
            for suffix in ("ci_low", "ci_high", "std"):
                v = getattr(m, suffix)
                if v is not None:
                    out[f"{key}.{suffix}"] = float(v)
    return out


def record_results(journal: Any, experiment_id: str, trial_id: str, step: int, results: Sequence[SuiteResult],
                   *, checkpoint: str | None = None) -> bool:
    """Append the trial's `evaluated` event; True if stored, False if this exact result was already.

    The idempotency key hashes the payload, so a retried append is a no-op while a re-evaluation
    with other options (other numbers) is a new event rather than a conflict.
    """
    from orchestrator.journal import Event, EventKind

    payload = {"step": int(step), "metrics": flatten_metrics(results), "suites": [r.suite for r in results],
               "checkpoint": checkpoint, "info": {r.suite: jsonable(r.info) for r in results}}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    key = f"{trial_id}/evaluated/{step}/{digest}"
    return journal.append(Event.for_trial(experiment_id, trial_id, EventKind.EVALUATED, key, **payload))


def jsonable(info: dict[str, Any]) -> dict[str, Any]:
    """Strict JSON for the journal: NaN/inf become None, other odd values their str()."""
    def conv(v: Any) -> Any:
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, (np.integer, np.floating)):
            return conv(v.item())
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if v is None or isinstance(v, (str, int, float, bool)):
            return v
        return str(v) if not isinstance(v, Path) else v.as_posix()
    return conv(info)
