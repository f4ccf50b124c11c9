"""The `matching` suite: image-text matching accuracy of any scorer (the model when it is a
matcher, else the CLIP) on a benchmark read by data/loaders, overall and per category.

Text choices (an image, candidate texts: Winoground's two questions per pair, VL-CheckList's
positive vs negative, RefCOCOg's expression among others, VQAv2's "question answer" texts): right
when the true text scores strictly above every other (a tie is a failure); top-5 as well when a
choice has more than 5 candidates. Image choices (ComVG: one sentence, two images): right when
the true image scores strictly higher. Categories are the loader's (ComVG neg_value, VL-CheckList
path, VQAv2 answer type, Winoground tag). Every value with n and a 95% Wilson interval.
"""
from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.data.choices import labelled_choices
from orchestrator.data.loaders.base import ImageChoice
from orchestrator.manifest.schema import DataSource

from .results import OUTCOMES, MetricValue, SuiteResult, bits
from .stats import wilson_interval


def _rate(name: str, flags: list[bool]) -> MetricValue:
    k, n = int(sum(flags)), len(flags)
    lo, hi = wilson_interval(k, n)
    return MetricValue(name, k / n, n, lo, hi)


def judge(scorer: Any, choices: list[Any]) -> tuple[list[bool], list[bool | None]]:
    """Per choice: top-1 right, and top-5 right (None with 5 or fewer candidates). All pairs are
    scored in one call, each image decoded once (a matcher shares its encoding across candidates)."""
    captions, images, spans = [], [], []
    for ch in choices:
        start = len(captions)
        if isinstance(ch, ImageChoice):
            decoded = [ref.open_image() for ref in ch.images]
            captions += [ch.text] * len(decoded)
            images += decoded
        else:
            image = ch.image.open_image()
            captions += list(ch.texts)
            images += [image] * len(ch.texts)
        spans.append((start, len(captions)))
    scores = np.asarray(scorer.score_pairs(captions, images), dtype=np.float64)
    top1, top5 = [], []
    for ch, (a, b) in zip(choices, spans):
        s = scores[a:b]
        right = s[ch.answer]
        above = int((np.delete(s, ch.answer) >= right).sum())  # ties count against the true one
        top1.append(above == 0)
        top5.append(above < 5 if len(s) > 5 else None)
    return top1, top5


class MatchingSuite:
    name = "matching"

    def requirements(self, ctx: Any) -> list[str]:
        problems = ctx.scorer_problems(self.name)
        if not ctx.options.matching:
            problems.append(f"{self.name}: needs a benchmark to read (the manifest's data.eval, e.g. kind: comvg)")
        return problems

    def run(self, ctx: Any) -> SuiteResult:
        started = time.perf_counter()
        o = ctx.options
        src = DataSource.model_validate(o.matching, context={"check_files": False})
        base = Path(o.matching_base_dir) if o.matching_base_dir else None
        labelled = labelled_choices(src, ctx.image_size, base_dir=base, store=ctx.store)
        scorer = ctx.scorer()
        top1, top5 = judge(scorer, [c for c, _ in labelled])
        metrics = [_rate("accuracy", top1)]
        if any(t is not None for t in top5):
            metrics.append(_rate("top5", [bool(t) for t in top5 if t is not None]))
        by_cat: dict[str, list[bool]] = defaultdict(list)
        for (_, category), ok in zip(labelled, top1):
            if category:
                by_cat[category].append(ok)
        metrics += [_rate(f"accuracy/{cat}", flags) for cat, flags in sorted(by_cat.items())]
        outcomes = {"accuracy": bits(top1), **{f"accuracy/{cat}": bits(flags) for cat, flags in sorted(by_cat.items())}}
        if any(t is not None for t in top5):
            outcomes["top5"] = bits([bool(t) for t in top5 if t is not None])
        info = {"scorer": scorer.name, "data": src.kind, "choices": len(labelled), OUTCOMES: outcomes}
        return SuiteResult(self.name, metrics, info, time.perf_counter() - started)
