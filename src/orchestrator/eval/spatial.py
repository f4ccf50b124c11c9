"""Spatial accuracy of generated images, judged by detection (GenEval's position task, VISOR's splits).

The judging is GenEval's own code (`geneval`): the shapes world's detector sits behind GenEval's
`Detector` interface (`detectors.ShapesDetector`), the most confident detection is GenEval's
(`geneval.rank_order`), and the relation is GenEval's (`geneval.relations`, margin 0.1). What is the
shapes world's own is which detections can stand for a described object: for "A <relation> B" the
detections that fit A's description (shape, colour, and size when the description names one; `fits`)
and those that fit B's. GenEval picks the top detections of a class and then asks their colour, which
cannot judge "a red circle left of a blue circle": both clauses would take the same top circle.
Two rules (`eval.spatial_rule`) then decide:
- "geneval" (the default): as GenEval's `evaluate_images.py`, only the most confident detection of
  each described object counts (a prompt names one of each, and GenEval keeps the first `count`
  detections by confidence); the relation must hold between those two. The shapes detector's
  confidence (`detectors.shape_confidence`) is a blob's pixel area, then how close its fill ratio is
  to its shape's (a square fills its box, a circle pi/4 of it, a triangle half): a fragment is small.
- "all_pairs" (stricter, the project's rule before 2026-12-07): every pair of fitting detections
  must hold the relation, so a duplicated or fragmented object on the wrong side fails the image.

Three rates, after VISOR (Gokhale et al. 2022):
- object accuracy: both A and B were generated (at least one distinct detection each);
- spatial accuracy: the relation is right, over all prompts (GenEval's position score);
- conditional spatial accuracy: the relation is right, over the images where both are present.
Each comes with a 95% Wilson score interval, which stays inside [0, 1] at small n.
A diagnostic fourth, axis accuracy, accepts either direction on the stated axis ("right of" for
"left of"): it separates a model that learned where to separate the objects from one that also
learned which goes where. A continuous fifth, displacement, is the offset of A from B along the
stated direction (as a fraction of the image side, mean over images with both objects): 0 for a
model that ignores the relation, positive for one that follows it; it detects a weak effect long
before the thresholded accuracy does.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from orchestrator.data import spatial_rule
from orchestrator.data.captions import SpatialFact
from orchestrator.data.shapes import COLOURS, SIZE_FRACTION, make_example
from orchestrator.data.worlds import DEFAULT_WORLD
from orchestrator.manifest.schema import SPATIAL_RULES

from .detectors import ShapesDetector
from .geneval import POSITION_THRESHOLD, ObjectDetection, rank_order, relations
from .stats import mean_ci, wilson_interval

Desc = tuple[str, tuple[str, ...]]  # (shape name, attributes), as captions.SpatialFact carries them
AXIS = {spatial_rule.LEFT: "x", spatial_rule.RIGHT: "x", spatial_rule.ABOVE: "y", spatial_rule.BELOW: "y"}
# Unit vector of each relation in image coordinates (y down): "A left of B" wants A - B along (-1, 0).
DIRECTION = {spatial_rule.LEFT: (-1, 0), spatial_rule.RIGHT: (1, 0), spatial_rule.ABOVE: (0, -1),
             spatial_rule.BELOW: (0, 1)}


@dataclass(frozen=True)
class SpatialPrompt:
    text: str          # what the model is prompted with
    subject: Desc      # A
    relation: str      # GenEval naming: "left of", "right of", "above", "below"
    object: Desc       # B

    @classmethod
    def from_fact(cls, fact: SpatialFact | Mapping[str, Any], text: str | None = None) -> "SpatialPrompt":
        """From a shapes caption's fact (the dataclass or its `to_json()` record)."""
        if isinstance(fact, SpatialFact):
            return cls(text or fact.text(), fact.subject_desc, spatial_rule.to_geneval(fact.relation),
                       fact.object_desc)
        s, o = fact["subject"], fact["object"]
        a, b = (s["name"], tuple(s["attributes"])), (o["name"], tuple(o["attributes"]))
        rel = spatial_rule.to_geneval(fact["relation"])
        return cls(text or f"{_phrase(a)} {spatial_rule.GENEVAL_TO_GQA[rel]} {_phrase(b)}", a, rel, b)

    def swapped(self) -> "SpatialPrompt":
        """B <relation> A: false wherever the original is cleanly true."""
        text = f"{_phrase(self.object)} {spatial_rule.GENEVAL_TO_GQA[self.relation]} {_phrase(self.subject)}"
        return SpatialPrompt(text, self.object, self.relation, self.subject)


def _phrase(d: Desc) -> str:
    return " ".join(["a", *d[1], d[0]])


@dataclass(frozen=True)
class Judgement:
    subject_found: bool
    object_found: bool
    both_present: bool  # a distinct detection for each side: one red circle is not two
    correct: bool
    axis_correct: bool  # every pair is apart along the stated axis, in either direction
    displacement: float | None = None  # mean offset of A from B along the stated direction / side


def fits(det: ObjectDetection, desc: Desc) -> bool:
    """A detection fits a description when its shape is the named one and it carries every stated
    colour and size (the shapes detector reads both off the blob)."""
    name, attrs = desc
    return det.classname == name and all(a in det.attributes for a in attrs if a in COLOURS or a in SIZE_FRACTION)


def _centre(det: ObjectDetection) -> tuple[float, float]:
    x0, y0, x1, y1 = det.box
    return (x0 + x1) / 2, (y0 + y1) / 2


def judge(image: Image.Image | np.ndarray, prompt: SpatialPrompt, rule: str = SPATIAL_RULES[0],
          **detect_kw: Any) -> Judgement:
    """Detect objects in one image and judge the prompt's relation by `rule` (module docstring).
    `detect_kw` goes to the shapes detector (`detectors.ShapesDetector`)."""
    if rule not in SPATIAL_RULES:
        raise ValueError(f"spatial rule must be one of {', '.join(SPATIAL_RULES)}, got {rule!r}")
    dets = ShapesDetector(**detect_kw)(image)
    side = max(np.asarray(image).shape[:2]) if not isinstance(image, Image.Image) else max(image.size)
    subj = [d for d in dets if fits(d, prompt.subject)]
    obj = [d for d in dets if fits(d, prompt.object)]
    if rule == "all_pairs":
        pairs = [(a, b) for a in subj for b in obj if a is not b]
    else:  # GenEval's: the most confident detection of each described object
        top_a = subj[rank_order(subj)[0]] if subj else None
        rest = [b for b in obj if b is not top_a]
        pairs = [(top_a, rest[rank_order(rest)[0]])] if top_a is not None and rest else []
    rels = [relations(a, b, POSITION_THRESHOLD) for a, b in pairs]
    correct = bool(pairs) and all(prompt.relation in r for r in rels)
    axis = bool(pairs) and all(any(AXIS[x] == AXIS[prompt.relation] for x in r) for r in rels)
    ux, uy = DIRECTION[prompt.relation]
    shift = [((_centre(a)[0] - _centre(b)[0]) * ux + (_centre(a)[1] - _centre(b)[1]) * uy) / side for a, b in pairs]
    return Judgement(bool(subj), bool(obj), bool(pairs), correct, axis,
                     sum(shift) / len(shift) if shift else None)


@dataclass(frozen=True)
class SpatialScore:
    n: int              # prompts (images) judged
    both_present: int   # images with both objects detected
    correct: int        # images whose relation holds
    accuracy: float
    accuracy_ci: tuple[float, float]
    object_accuracy: float
    object_accuracy_ci: tuple[float, float]
    conditional_accuracy: float
    conditional_ci: tuple[float, float]
    axis_correct: int
    axis_accuracy: float  # over all prompts, like `accuracy`
    displacement: float  # mean over the images with both objects (0.0 if none)
    displacement_ci: tuple[float, float]  # normal-approximation 95% interval of that mean
    outcomes: tuple[bool, ...] = ()  # per-image correctness, in prompt order, for paired tests
    object_outcomes: tuple[bool, ...] = ()  # per-image "both objects drawn", in prompt order

    def to_json(self, with_outcomes: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not with_outcomes:
            d.pop("outcomes")
            d.pop("object_outcomes")
        return d


def score_judgements(judgements: Sequence[Judgement]) -> SpatialScore:
    n = len(judgements)
    both = sum(j.both_present for j in judgements)
    ok = sum(j.correct for j in judgements)
    axis = sum(j.axis_correct for j in judgements)
    shift = [j.displacement for j in judgements if j.displacement is not None]
    mean, ci = mean_ci(shift)
    return SpatialScore(n, both, ok, ok / n if n else 0.0, wilson_interval(ok, n),
                        both / n if n else 0.0, wilson_interval(both, n),
                        ok / both if both else 0.0, wilson_interval(ok, both),
                        axis, axis / n if n else 0.0, mean, ci, tuple(j.correct for j in judgements),
                        tuple(j.both_present for j in judgements))


def score_spatial(images: Iterable[Image.Image | np.ndarray], prompts: Sequence[SpatialPrompt],
                  rule: str = SPATIAL_RULES[0], **detect_kw: Any) -> SpatialScore:
    """Judge each image against its prompt (same order) by `rule` and aggregate."""
    images = list(images)
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images for {len(prompts)} prompts")
    return score_judgements([judge(im, p, rule, **detect_kw) for im, p in zip(images, prompts)])


def heldout_spatial_prompts(seed: int, n: int, image_size: int = 32, start: int = 0,
                            world: str = DEFAULT_WORLD) -> list[SpatialPrompt]:
    """The first `n` shapes-world examples (from index `start` of the dataset with `seed`) that state
    a relation, as prompts: their spatial captions. Pick a seed the model was not trained on."""
    out: list[SpatialPrompt] = []
    i = start
    while len(out) < n:
        ex = make_example(seed, i, image_size, world)
        if ex.spatial_fact is not None:
            out.append(SpatialPrompt.from_fact(ex.spatial_fact, ex.spatial))
        i += 1
    return out
