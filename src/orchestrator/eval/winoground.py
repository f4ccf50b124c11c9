"""Winoground (Thrush et al. 2022): text, image and group scores over any scorer s(caption, image).

With s the score of a caption for an image (higher = better match), per example:
    text  = s(c0, i0) > s(c1, i0)  and  s(c1, i1) > s(c0, i1)     (right caption for each image)
    image = s(c0, i0) > s(c0, i1)  and  s(c1, i1) > s(c1, i0)     (right image for each caption)
    group = text and image
Strict >, as in the official definitions: a tie is a failure (a scorer blind to word order gets 0).
Chance is 25 / 25 / 16.7 %. Reported overall and per `collapsed_tag` (Object, Relation, Both).

A scorer is any callable s(caption, image) -> float (CLIP cosine similarity now; diffusion
scorers later); one with `score_pairs(captions, images)` is called once, batched.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from orchestrator.data.loaders.winoground import WinogroundExample, shapes_pairs

from .results import bits
from .stats import wilson_interval

KINDS = ("text", "image", "group")


class Scorer(Protocol):
    def __call__(self, caption: str, image: Any) -> float: ...


# ---------------------------------------------------------------- data

def load_winoground(root: str | Path, **loader_options: Any) -> list[WinogroundExample]:
    """Examples through the benchmark loader (examples.jsonl + images/, or the parquet revision).
    `root` is that directory or one holding it as data/ (the released dataset) or winoground/
    (the shapes world written by `orch data shapes`)."""
    from orchestrator.data.loaders.winoground import WinogroundLoader

    root = Path(root)
    for base in (root, root / "data", root / "winoground"):
        if (base / "examples.jsonl").is_file() or list(base.glob("data/*.parquet")):
            return WinogroundLoader(base, **loader_options).load()
    raise FileNotFoundError(f"no Winoground data (examples.jsonl or data/*.parquet) in {root} "
                            f"(nor in its data/ or winoground/)")


# ---------------------------------------------------------------- scoring

def score_examples(examples: Sequence[WinogroundExample], scorer: Any) -> np.ndarray:
    """[M, 2, 2] float64 scores s[m, c, i] of caption c for image i of example m."""
    captions, images = [], []
    for ex in examples:
        i0, i1 = ex.images()
        for c in (ex.caption_0, ex.caption_1):
            captions += [c, c]
            images += [i0, i1]
    if hasattr(scorer, "score_pairs"):
        flat = np.asarray(scorer.score_pairs(captions, images), dtype=np.float64)
    else:
        flat = np.array([float(scorer(c, im)) for c, im in zip(captions, images)], dtype=np.float64)
    if flat.shape != (len(captions),):
        raise ValueError(f"scorer returned {flat.shape} scores for {len(captions)} pairs")
    return flat.reshape(len(examples), 2, 2)


def outcomes(scores: np.ndarray) -> dict[str, np.ndarray]:
    """Per example, whether the text, image and group tests pass (strict >)."""
    s = np.asarray(scores, dtype=np.float64)
    c0i0, c0i1, c1i0, c1i1 = s[:, 0, 0], s[:, 0, 1], s[:, 1, 0], s[:, 1, 1]
    text = (c0i0 > c1i0) & (c1i1 > c0i1)
    image = (c0i0 > c0i1) & (c1i1 > c1i0)
    return {"text": text, "image": image, "group": text & image}


@dataclass(frozen=True)
class Rate:
    correct: int
    n: int

    @property
    def value(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def ci(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.n)


@dataclass(frozen=True)
class WinogroundScore:
    n: int
    rates: dict[str, Rate]                                           # text, image, group
    per_tag: dict[str, dict[str, Rate]] = field(default_factory=dict)  # collapsed_tag -> rates
    # metric name (text, image, group, "text/<tag>", ...) -> per-example "0"/"1", in example order
    outcomes: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        def dump(rates: dict[str, Rate]) -> dict[str, Any]:
            return {k: {"value": r.value, "correct": r.correct, "n": r.n, "ci": list(r.ci)} for k, r in rates.items()}
        return {"n": self.n, **dump(self.rates), "per_tag": {t: dump(r) for t, r in self.per_tag.items()}}


def _rates(passed: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, Rate]:
    return {k: Rate(int(passed[k][mask].sum()), int(mask.sum())) for k in KINDS}


def summarise(scores: np.ndarray, tags: Sequence[str]) -> WinogroundScore:
    passed = outcomes(scores)
    tags_arr = np.asarray(tags, dtype=object)
    everything = np.ones(len(tags_arr), dtype=bool)
    per_tag = {t: _rates(passed, tags_arr == t) for t in sorted(set(tags)) if t}
    per_example = {k: bits(passed[k]) for k in KINDS}
    per_example |= {f"{k}/{t}": bits(passed[k][tags_arr == t]) for t in per_tag for k in KINDS}
    return WinogroundScore(len(tags_arr), _rates(passed, everything), per_tag, per_example)


def evaluate_winoground(examples: Sequence[WinogroundExample], scorer: Any) -> WinogroundScore:
    if not examples:
        raise ValueError("no Winoground examples to score")
    return summarise(score_examples(examples, scorer), [ex.collapsed_tag for ex in examples])


class WinogroundSuite:
    """Text / image / group scores, overall and per collapsed_tag, with CLIP as the scorer, on the
    shapes world's held-out pairs or on a Winoground-layout directory (options.winoground)."""
    name = "winoground"

    def requirements(self, ctx: Any) -> list[str]:
        problems = ctx.scorer_problems(self.name)
        root = ctx.options.winoground
        if root and not Path(root).is_dir():
            problems.append(f"{self.name}: no Winoground directory at {root}")
        return problems

    def run(self, ctx: Any):
        import time

        from .results import OUTCOMES, MetricValue, SuiteResult

        started = time.perf_counter()
        o = ctx.options
        examples = (load_winoground(o.winoground) if o.winoground
                    else shapes_pairs(o.winoground_scenes, o.eval_seed, ctx.image_size))
        scorer = ctx.scorer()
        res = evaluate_winoground(examples, scorer)
        metrics = [MetricValue(k, r.value, r.n, *r.ci) for k, r in res.rates.items()]
        for tag, rates in res.per_tag.items():
            metrics += [MetricValue(f"{k}/{tag}", r.value, r.n, *r.ci) for k, r in rates.items()]
        info = {"scorer": scorer.name, "data": o.winoground or f"shapes seed {o.eval_seed}",
                "examples": res.n, OUTCOMES: res.outcomes}
        return SuiteResult(self.name, metrics, info, time.perf_counter() - started)
