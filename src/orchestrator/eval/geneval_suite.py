"""The geneval suite: GenEval (Ghosh et al. 2023) on the model under test.

K images (`eval.geneval.per_prompt`, GenEval's 4) per prompt of GenEval's metadata file, each judged by
`geneval.evaluate_image` with a detector and a colour classifier (`detectors`, `colour_classifiers`): a
Mask2Former directory and zero-shot CLIP colours for real images, or ``detector: shapes``, the shapes world's
detector and palette colours. Reported as `geneval.summarise` does (GenEval's summary_scores.py): the accuracy of
each task over its images (`geneval.<tag>`, n, Wilson interval) and their mean (`geneval.overall`, GenEval's
score), per-image pass/fail bits per task in `info.outcomes` (paired between models by McNemar's test), and
GenEval's results.jsonl as the artifact ``geneval-results.jsonl`` (one line per image, readable by
summary_scores.py), stored by whoever holds the blob store rather than in the journal.

Paired noise, as DrawBench's: a prompt's K images come from a generator seeded by the eval seed and the prompt's
position in the metadata file (`drawbench.noise_seed`), so every model meets the same noise for the same prompt
and image, whichever tasks or prompt counts are selected alongside it.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from orchestrator.data.loaders.geneval import TAGS, GenEvalPrompt, load_geneval_metadata
from orchestrator.manifest.schema import SHAPES_DETECTOR

from . import geneval as ge
from .drawbench import noise_seed
from .results import OUTCOMES, SuiteResult

ARTIFACT = "geneval-results.jsonl"
THRESHOLDS = {"threshold": ge.THRESHOLD, "counting_threshold": ge.COUNTING_THRESHOLD, "max_objects": ge.MAX_OBJECTS,
              "max_overlap": ge.MAX_OVERLAP, "position_threshold": ge.POSITION_THRESHOLD, "background": ge.BACKGROUND}


def read_metadata(source: str, store: Any = None) -> list[GenEvalPrompt]:
    """Every prompt of a GenEval metadata file: a path, or a key in `store` (read through a temporary copy)."""
    from orchestrator.storage.location import resolve_location

    loc = resolve_location(source, store=store)
    if loc.is_local:
        return load_geneval_metadata(loc.path)
    with tempfile.TemporaryDirectory(prefix="orch-geneval-") as tmp:
        path = Path(tmp) / (loc.prefix.rsplit("/", 1)[-1] or "evaluation_metadata.jsonl")
        path.write_bytes(loc.read_bytes())
        return load_geneval_metadata(path)


def choose_prompts(prompts: Sequence[GenEvalPrompt], tags: Sequence[str] | None = None,
                   max_prompts: int | None = None, where: str = "the metadata") -> list[GenEvalPrompt]:
    """The prompts of `tags` (None: all), at most the first `max_prompts` of each, in file order. A tag named
    that has no prompt is a ValueError naming it."""
    wanted = tuple(tags) if tags else TAGS
    counts = dict.fromkeys(wanted, 0)
    chosen = []
    for p in prompts:
        if p.tag in counts and (max_prompts is None or counts[p.tag] < max_prompts):
            counts[p.tag] += 1
            chosen.append(p)
    empty = [t for t, n in counts.items() if n == 0]
    if tags and empty:
        raise ValueError(f"{where} has no prompt of task(s) {', '.join(empty)}")
    if not chosen:
        raise ValueError(f"{where} has no prompt of GenEval's tasks ({', '.join(wanted)})")
    return chosen


def prompt_classes(prompts: Sequence[GenEvalPrompt]) -> list[str]:
    """The object classes the prompts name (include and exclude), in order of first mention."""
    return list(dict.fromkeys(c.classname for p in prompts for c in (*p.include, *p.exclude)))


class Timed:
    """A callable and the seconds spent in it."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __getattr__(self, name: str) -> Any:  # the wrapped one's name, classnames
        if name == "fn":
            raise AttributeError(name)
        return getattr(self.fn, name)

    def __call__(self, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.fn(*args)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1


def load_detector(source: str, store: Any = None, device: Any = "cpu") -> Any:
    """`source` as a `geneval.Detector`: "shapes", or a Mask2Former directory (a path or blob prefix)."""
    from .detectors import Mask2FormerDetector, ShapesDetector

    if source == SHAPES_DETECTOR:
        return ShapesDetector()
    from orchestrator.storage.location import resolve_location

    loc = resolve_location(source, store=store)
    with loc.local_dir() as path:  # loaded before a downloaded copy goes
        return Mask2FormerDetector(path, device, name=Path(source.rstrip("/")).name or source)


def judge_images(images: Sequence[Any], prompt: GenEvalPrompt, detector: Any, colours: Any) -> list[dict[str, Any]]:
    """GenEval's results.jsonl records of one prompt's images (PIL), named as GenEval's generation script saves
    them: <prompt index>/samples/<image index>.png."""
    return [ge.evaluate_image(im, prompt, detector, colours, filename=f"{prompt.index:05d}/samples/{k:05d}.png")
            for k, im in enumerate(images)]


def results_jsonl(records: Sequence[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


class GenEvalSuite:
    """GenEval's task accuracies and score on K paired images per prompt."""
    name = "geneval"

    def __init__(self) -> None:
        self._prompts: list[GenEvalPrompt] | None = None

    def prompts(self, ctx: Any) -> list[GenEvalPrompt]:
        if self._prompts is None:
            o = ctx.options
            self._prompts = choose_prompts(read_metadata(o.geneval, ctx.store), o.geneval_tags,
                                           o.geneval_max_prompts, where=o.geneval)
        return self._prompts

    def requirements(self, ctx: Any) -> list[str]:
        o = ctx.options
        problems = ctx.generation_problems(self.name)
        if not o.geneval:
            return problems + [f"{self.name}: needs GenEval's metadata (geneval: {{metadata: "
                               f"evaluation_metadata.jsonl, detector: DIR}})"]
        try:
            prompts = self.prompts(ctx)
        except (FileNotFoundError, ValueError) as exc:  # DataFormatError is a ValueError
            problems.append(f"{self.name}: {exc}")
            prompts = []
        if not o.geneval_detector:
            return problems + [f"{self.name}: needs a detector (geneval.detector: a Mask2Former directory, or "
                               f"{SHAPES_DETECTOR})"]
        return problems + self._detector_problems(ctx, prompts) + self._colour_problems(ctx)

    def _detector_problems(self, ctx: Any, prompts: list[GenEvalPrompt]) -> list[str]:
        o = ctx.options
        if o.geneval_detector == SHAPES_DETECTOR:
            from orchestrator.data.shapes import SHAPES
            classes: Sequence[str] | None = SHAPES
        else:
            missing = ctx.location_problems(o.geneval_detector, "config.json", f"{self.name}: detector")
            if missing:
                return missing
            classes = None
            from orchestrator.storage.location import resolve_location

            loc = resolve_location(o.geneval_detector, store=ctx.store)
            if loc.is_local:  # its labels, from config.json (a blob prefix's are checked when it loads)
                from .detectors import detector_labels
                try:
                    classes = list(detector_labels(loc.path).values())
                except ValueError as exc:
                    return [f"{self.name}: {exc}"]
        lacking = [c for c in prompt_classes(prompts) if classes is not None and c not in classes]
        if lacking:
            return [f"{self.name}: {o.geneval} names classes the detector {o.geneval_detector} does not detect: "
                    f"{', '.join(map(repr, lacking))}"]
        return []

    def _colour_problems(self, ctx: Any) -> list[str]:
        o = ctx.options
        if o.geneval_detector == SHAPES_DETECTOR:
            return []
        if o.geneval_clip:
            return ctx.location_problems(o.geneval_clip, "config.json", f"{self.name}: colour CLIP")
        return ctx.clip_problems(f"{self.name} (object colours; or set geneval.clip)")

    def colour_classifier(self, ctx: Any) -> Any:
        from .colour_classifiers import ClipColourClassifier, ShapesColourClassifier

        o = ctx.options
        if o.geneval_detector == SHAPES_DETECTOR:
            return ShapesColourClassifier()
        if o.geneval_clip:
            from orchestrator.models.clip import load_clip

            return ClipColourClassifier(load_clip(o.geneval_clip, store=ctx.store, device=ctx.device))
        return ClipColourClassifier(ctx.clip())

    def run(self, ctx: Any) -> SuiteResult:
        from orchestrator.models.common.images import to_pil

        started = time.perf_counter()
        o, m = ctx.options, ctx.model()
        prompts = self.prompts(ctx)
        detector = Timed(load_detector(o.geneval_detector, ctx.store, ctx.device))
        colours = Timed(self.colour_classifier(ctx))
        k = o.geneval_per_prompt
        generation_s = 0.0
        records: list[dict[str, Any]] = []
        for p in prompts:
            t0 = time.perf_counter()
            gen = torch.Generator(ctx.device).manual_seed(noise_seed(o.seed, p.index))
            images = m.variant.generate(m.model, [p.prompt] * k, sampler=o.sampler, steps=o.steps,
                                        guidance_scale=o.guidance_scale, generator=gen, resolution=ctx.image_size,
                                        batch_size=min(k, o.batch_size))
            generation_s += time.perf_counter() - t0
            records += judge_images(to_pil(images.detach().float().cpu()), p, detector, colours)
        summary = ge.summarise(records)
        wall = time.perf_counter() - started
        info = {"metadata": o.geneval, "detector": detector.name, "colours": colours.name,
                "tasks": {t.tag: t.n // k for t in summary.tags}, "per_prompt": k, "max_prompts": o.geneval_max_prompts,
                "thresholds": THRESHOLDS, "summary": summary.to_json(), "results": ARTIFACT,
                "sampler": o.sampler, "steps": o.steps, "guidance_scale": o.guidance_scale, "seed": o.seed,
                "wall_s": {"generation": generation_s, "detection": detector.seconds, "colour": colours.seconds,
                           "rest": wall - generation_s - detector.seconds - colours.seconds},
                OUTCOMES: summary.outcomes()}
        return SuiteResult(self.name, summary.metrics(), info, wall, artifacts={ARTIFACT: results_jsonl(records)})
