"""The consistency suite: how alike several images generated from one conditioning are.

For a chain (VCDM), the first stage's sample is the image's "description": draw
`consistency_embeddings` embeddings from the prior and generate `consistency_images` images from
each with independent noise. The detector reads each image's objects; two images agree when they
show the same non-empty multiset of (shape, colour). Reported per embedding (the share of its
image pairs that agree), averaged over embeddings with a 95% interval (embeddings are the
independent units, pairs within one are not): `consistency`; the same for the colours alone and
for the object count. Chance level beside it: the same agreement between images of *different*
embeddings (image i of embedding k against image i of embedding k+1), and the paired difference
with its interval, so "the embedding fixes what is drawn" is a measured claim, not a look at a grid.
Images where the detector finds nothing never agree (an empty pair says nothing about content);
the share of such images is reported as `detected`. A model conditioned on nothing (the
unconditional arm of the same sweep) is measured the same way: its groups share nothing, so it
lands on chance, which checks the chance estimate.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from orchestrator.data.detector import Detection, detect

from .context import generate_images
from .results import MetricValue, SuiteResult
from .stats import mean_ci, wilson_interval

if TYPE_CHECKING:
    from .context import EvalContext

Key = Callable[[list[Detection]], Any]
ASPECTS: dict[str, Key] = {
    "consistency": lambda ds: Counter((d.shape, d.colour) for d in ds),
    "colour_consistency": lambda ds: Counter(d.colour for d in ds),
    "count_consistency": lambda ds: len(ds),
}


def agree(a: list[Detection], b: list[Detection], key: Key) -> bool:
    return bool(a) and bool(b) and key(a) == key(b)


def group_agreement(groups: Sequence[Sequence[list[Detection]]], key: Key) -> tuple[list[float], list[float]]:
    """(within, across) per group: the share of agreeing pairs among a group's images, and among
    image i of the group and image i of the next group (cyclically)."""
    within, across = [], []
    for k, g in enumerate(groups):
        pairs = [(i, j) for i in range(len(g)) for j in range(i + 1, len(g))]
        within.append(sum(agree(g[i], g[j], key) for i, j in pairs) / len(pairs))
        nxt = groups[(k + 1) % len(groups)]
        across.append(sum(agree(a, b, key) for a, b in zip(g, nxt)) / len(g))
    return within, across


class ConsistencySuite:
    name = "consistency"

    def requirements(self, ctx: "EvalContext") -> list[str]:
        problems = ctx.generation_problems(self.name)
        if problems:
            return problems
        return ctx.hook_problems(self.name, "sampled_conditioning", "samples no conditioning of its own to hold "
                                 "fixed (a chain such as vcdm does)")

    def run(self, ctx: "EvalContext") -> SuiteResult:
        from orchestrator.models.common.images import to_pil

        started = time.perf_counter()
        o, m = ctx.options, ctx.model()
        k, per = o.consistency_embeddings, o.consistency_images
        gen = torch.Generator(ctx.device).manual_seed(o.seed)
        cond = m.variant.sampled_conditioning(m.model, k, repeats=per, generator=gen)
        images = generate_images(m, [""] * (k * per), o, ctx.device, ctx.image_size, generator=gen, **cond)
        dets = [detect(img) for img in to_pil(images)]
        groups = [dets[i * per:(i + 1) * per] for i in range(k)]
        metrics: list[MetricValue] = []
        info: dict[str, Any] = {"embeddings": k, "images_per_embedding": per, "seed": o.seed, "sampler": o.sampler,
                                "steps": o.steps, "unit": "embedding: the share of its image pairs that agree"}
        if m.conditioning_clip_sha256 is None:
            info["conditioned"] = ("no: the unconditional arm; its groups share nothing, so its consistency is "
                                   "chance level by construction (a check of the chance estimate)")
        for name, key in ASPECTS.items():
            within, across = group_agreement(groups, key)
            mean, (lo, hi) = mean_ci(within)
            c_mean, (c_lo, c_hi) = mean_ci(across)
            d_mean, (d_lo, d_hi) = mean_ci([w - a for w, a in zip(within, across)])
            metrics += [MetricValue(name, mean, k, lo, hi), MetricValue(f"chance_{name}", c_mean, k, c_lo, c_hi),
                        MetricValue(f"{name}_gain", d_mean, k, d_lo, d_hi)]
        found = sum(bool(d) for d in dets)
        metrics.append(MetricValue("detected", found / len(dets), len(dets), *wilson_interval(found, len(dets))))
        info["objects_per_image"] = float(np.mean([len(d) for d in dets]))
        return SuiteResult(self.name, metrics, info, time.perf_counter() - started)
