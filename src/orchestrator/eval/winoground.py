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

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
from PIL import Image

from .spatial import wilson_interval

KINDS = ("text", "image", "group")


class Scorer(Protocol):
    def __call__(self, caption: str, image: Any) -> float: ...


@dataclass(frozen=True)
class WinogroundExample:
    id: int | str
    caption_0: str
    caption_1: str
    image_0: Any  # a PIL image, or a path loaded on demand
    image_1: Any
    tag: str = ""
    secondary_tag: str = ""
    num_main_preds: int = 1
    collapsed_tag: str = ""

    def images(self) -> tuple[Image.Image, Image.Image]:
        return _open(self.image_0), _open(self.image_1)


def _open(image: Any) -> Any:
    if isinstance(image, (str, Path)):
        with Image.open(image) as im:
            return im.convert("RGB")
    return image


# ---------------------------------------------------------------- data

def load_winoground(root: str | Path) -> list[WinogroundExample]:
    """Examples in Winoground's layout: examples.jsonl with images/<stem>.png beside it. `root` is
    that directory or one holding it as data/ (the released dataset) or winoground/ (the shapes world)."""
    root = Path(root)
    for base in (root, root / "data", root / "winoground"):
        if (base / "examples.jsonl").is_file():
            break
    else:
        raise FileNotFoundError(f"no examples.jsonl in {root} (nor in its data/ or winoground/)")
    out = []
    for n, line in enumerate((base / "examples.jsonl").read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            ex = WinogroundExample(
                r["id"], r["caption_0"], r["caption_1"], _image_path(base, r["image_0"]),
                _image_path(base, r["image_1"]), r.get("tag", ""), r.get("secondary_tag", ""),
                int(r.get("num_main_preds", 1)), r.get("collapsed_tag", ""))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{base / 'examples.jsonl'}:{n}: not a Winoground record ({exc})") from exc
        out.append(ex)
    return out


def _image_path(base: Path, stem: str) -> Path:
    for candidate in (base / "images" / f"{stem}.png", base / "images" / stem):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"Winoground image {stem!r} not found under {base / 'images'}")


def shapes_winoground(n_scenes: int, seed: int, image_size: int = 32) -> list[WinogroundExample]:
    """The shapes world's pairs among scenes 0..n_scenes-1, in memory (ids as `orch data shapes` writes them)."""
    from orchestrator.data.shapes import make_example, render

    out = []
    for i in range(n_scenes):
        ex = make_example(seed, i, image_size)
        if ex.pair is not None:
            out.append(WinogroundExample(len(out), ex.pair.caption_0, ex.pair.caption_1, ex.image(),
                                         render(ex.pair.scene_1), ex.pair.tag, "", 1, ex.pair.collapsed_tag))
    return out


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
    return WinogroundScore(len(tags_arr), _rates(passed, everything), per_tag)


def evaluate_winoground(examples: Sequence[WinogroundExample], scorer: Any) -> WinogroundScore:
    if not examples:
        raise ValueError("no Winoground examples to score")
    return summarise(score_examples(examples, scorer), [ex.collapsed_tag for ex in examples])


class WinogroundSuite:
    """Text / image / group scores, overall and per collapsed_tag, with CLIP as the scorer, on the
    shapes world's held-out pairs or on a Winoground-layout directory (options.winoground)."""
    name = "winoground"

    def requirements(self, ctx: Any) -> list[str]:
        problems = ctx.clip_problems(self.name)
        root = ctx.options.winoground
        if root and not Path(root).is_dir():
            problems.append(f"{self.name}: no Winoground directory at {root}")
        return problems

    def run(self, ctx: Any):
        import time

        from .suites import MetricValue, SuiteResult

        started = time.perf_counter()
        o = ctx.options
        examples = (load_winoground(o.winoground) if o.winoground
                    else shapes_winoground(o.winoground_scenes, o.eval_seed, ctx.image_size))
        scorer = ctx.clip()
        res = evaluate_winoground(examples, scorer)
        metrics = [MetricValue(k, r.value, r.n, *r.ci) for k, r in res.rates.items()]
        for tag, rates in res.per_tag.items():
            metrics += [MetricValue(f"{k}/{tag}", r.value, r.n, *r.ci) for k, r in rates.items()]
        info = {"scorer": f"clip:{scorer.name}", "data": o.winoground or f"shapes seed {o.eval_seed}",
                "examples": res.n}
        return SuiteResult(self.name, metrics, info, time.perf_counter() - started)
