"""GenEval's judging of generated images (Ghosh et al., NeurIPS 2023 D&B; github.com/djghosh13/geneval).

GenEval measures compositional text-to-image alignment with an object detector instead of a
similarity score. Each prompt (``data.loaders.geneval``) says which COCO objects the image must show,
how many, in which colour and where relative to each other; an image is correct when every clause
holds. Six tasks (tags): single_object, two_object, counting, colors, position, color_attr. The
GenEval score is the mean of the six task accuracies, each an accuracy over images.

What is implemented here, after GenEval's ``evaluation/evaluate_images.py`` and ``summary_scores.py``:

- `select`: which detections count (``evaluate_image``'s keep rule): per class, by score, highest
  first (ties as GenEval's reversed ``np.argsort``); only scores strictly above `THRESHOLD` (0.3), or
  `COUNTING_THRESHOLD` (0.9) for counting prompts; at most `MAX_OBJECTS` (16) per class; then greedy
  suppression of boxes whose IoU (`box_iou`, GenEval's +1 pixel convention) with a kept box is at least
  `MAX_OVERLAP`, where GenEval's default 1.0 suppresses nothing.
- `judge`: GenEval's ``evaluate``: include clauses ANDed, exclude clauses ORed. An include clause
  takes the top ``count`` detections of its class; with fewer it fails. Colour is checked only when the
  count is met, on those detections, by the `ColourClassifier`. Position is checked only when the clause
  has held so far: every one of its detections must stand in the relation to every detection the
  referenced earlier clause matched (a referenced clause that failed leaves "no target"). The relation
  is the project's `data.spatial_rule.relation` (GenEval's ``relative_position``), fed boxes converted
  by `_xywh`. An exclude clause fails when its class has ``count`` or more kept detections.
- `crop_for_colour`: what the colour classifier sees (GenEval's ``ImageCrops``): the object's mask
  composited over a flat `BACKGROUND` ("#999"), cropped to its box.
- `COLOUR_TEMPLATES` / `colour_texts`: the three CLIP prompt templates per colour.
- `result_record`: one line of GenEval's ``results.jsonl`` (filename, tag, prompt, correct, reason,
  metadata, details).
- `summarise`: ``summary_scores.py``: per-tag accuracy over images (tags in order of first appearance),
  the overall score as the unweighted mean of the tag accuracies, and its side numbers (images, prompts,
  % correct images, % of prompts with at least one correct image).

What plugs in: a `Detector` (GenEval uses mmdet's Mask2Former Swin-S on COCO; here any callable returning
`ObjectDetection`s for all classes with raw scores and, for colour, instance masks; its class names must be
the prompts' (GenEval's 80 COCO names): `detectors.Mask2FormerDetector`, `detectors.ShapesDetector`) and a
`ColourClassifier` (GenEval: open_clip ViT-L-14 "openai", zero-shot over `COLORS` with `colour_texts(classname)`
per colour, embeddings of the three texts averaged, on `crop_for_colour` crops:
`colour_classifiers.ClipColourClassifier`; the shapes world's palette: `ShapesColourClassifier`). The suite
is `geneval_suite.GenEvalSuite`. GenEval loads images with ``ImageOps.exif_transpose``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Protocol, Sequence

import numpy as np
from PIL import Image

from orchestrator.data import spatial_rule
from orchestrator.data.loaders.geneval import COLORS, TAGS, GenEvalPrompt

from .results import MetricValue, bits
from .stats import wilson_interval

__all__ = ["BACKGROUND", "COLORS", "COLOUR_TEMPLATES", "COUNTING_THRESHOLD", "MAX_OBJECTS", "MAX_OVERLAP",
           "POSITION_THRESHOLD", "TAGS", "THRESHOLD", "ColourClassifier", "Detector", "GenEvalSummary",
           "ObjectDetection", "TagScore", "box_iou", "colour_texts", "crop_for_colour", "evaluate_image", "judge",
           "rank_order", "relations", "result_record", "select", "summarise"]

THRESHOLD = 0.3            # keep detections scoring above this ...
COUNTING_THRESHOLD = 0.9   # ... or above this for counting prompts
MAX_OBJECTS = 16           # per class, after thresholding
MAX_OVERLAP = 1.0          # suppression IoU; 1.0 = GenEval's default, no suppression at all
POSITION_THRESHOLD = 0.1    # relation test margin, as a fraction of the two boxes' summed sizes
BACKGROUND = "#999"        # flat colour behind a masked object in the colour crop
# CLIP texts per colour {c} for an object {classname}; GenEval writes "a" before every colour.
COLOUR_TEMPLATES = ("a photo of a {c} {classname}", "a photo of a {c}-colored {classname}", "a photo of a {c} object")

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


@dataclass(frozen=True)
class ObjectDetection:
    classname: str
    score: float
    box: Box
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)  # H x W bool, or None
    # Words the detector reads off the object itself: the shapes detector's palette colour and size
    # class. Real-image detectors leave it empty; their colours come from a `ColourClassifier`.
    attributes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        box = tuple(float(v) for v in self.box)
        if len(box) != 4:
            raise ValueError(f"box must be (x0, y0, x1, y1), got {self.box!r}")
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "score", float(self.score))


class Detector(Protocol):
    """Every detection in an image, of all classes, with raw scores (no thresholding)."""

    def __call__(self, image: Image.Image) -> list[ObjectDetection]: ...


class ColourClassifier(Protocol):
    """One of `COLORS` per detection, for detections of `classname` in `image`."""

    def __call__(self, image: Image.Image, detections: list[ObjectDetection], classname: str) -> list[str]: ...


def colour_texts(classname: str) -> dict[str, tuple[str, ...]]:
    """The CLIP texts of each colour class for objects of `classname`, in `COLORS` order."""
    return {c: tuple(t.format(c=c, classname=classname) for t in COLOUR_TEMPLATES) for c in COLORS}


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x0, y0, x1, y1) boxes as GenEval computes it: a side spans x1 - x0 + 1 pixels."""
    def area(x0: float, y0: float, x1: float, y1: float) -> float:
        return max(x1 - x0 + 1, 0) * max(y1 - y0 + 1, 0)
    inter = area(max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    union = area(*a[:4]) + area(*b[:4]) - inter
    return inter / union if union else 0.0


def select(detections: Iterable[ObjectDetection], tag: str, *, threshold: float = THRESHOLD,
           counting_threshold: float = COUNTING_THRESHOLD, max_objects: int = MAX_OBJECTS,
           max_overlap: float = MAX_OVERLAP) -> dict[str, list[ObjectDetection]]:
    """The detections GenEval keeps, by class (in order of first appearance), best first.

    Classes with nothing kept are absent. See the module docstring for the rule.
    """
    if tag not in TAGS:
        raise ValueError(f"unknown GenEval tag {tag!r} (expected one of {', '.join(TAGS)})")
    cut = counting_threshold if tag == "counting" else threshold
    by_class: dict[str, list[ObjectDetection]] = {}
    for det in detections:
        by_class.setdefault(det.classname, []).append(det)
    kept: dict[str, list[ObjectDetection]] = {}
    for name, dets in by_class.items():
        order = [i for i in rank_order(dets) if dets[i].score > cut][:max_objects]
        keep: list[ObjectDetection] = []
        while order:
            best = dets[order.pop(0)]
            keep.append(best)
            if max_overlap != 1:
                order = [i for i in order if box_iou(best.box, dets[i].box) < max_overlap]
        if keep:
            kept[name] = keep
    return kept


def _xywh(box: Sequence[float]) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) as spatial_rule's (x, y, w, h): centre (x0 + x1) / 2 and size |x1 - x0|, as GenEval."""
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    return min(x0, x1), min(y0, y1), abs(x1 - x0), abs(y1 - y0)


def rank_order(detections: Sequence[ObjectDetection]) -> list[int]:
    """Indices of `detections`, most confident first, ties as GenEval's reversed ``np.argsort``."""
    scores = np.array([d.score for d in detections], dtype=np.float64)
    return [int(i) for i in np.argsort(scores)[::-1]]


def relations(a: ObjectDetection, b: ObjectDetection, threshold: float = POSITION_THRESHOLD) -> list[str]:
    """GenEval's relations of `a` to `b` (``relative_position``), in `GENEVAL_RELATIONS` order."""
    rels = spatial_rule.relation(_xywh(a.box), _xywh(b.box), threshold)
    return [r for r in spatial_rule.GENEVAL_RELATIONS if r in rels]


def judge(image: Image.Image, selected: Mapping[str, Sequence[ObjectDetection]], prompt: GenEvalPrompt,
          colours: ColourClassifier, *, position_threshold: float = POSITION_THRESHOLD) -> tuple[bool, str]:
    """Whether the image satisfies the prompt, and why not (one line per failed clause; "" when correct).

    `selected` is `select`'s output (best first per class); `colours` is called only for colour clauses
    whose count is met.
    """
    correct = True
    reasons: list[str] = []
    matched_groups: list[list[ObjectDetection] | None] = []
    for clause in prompt.include:
        name, count = clause.classname, clause.count
        found = list(selected.get(name, ()))[:count]
        matched = True
        if len(found) < count:
            matched = False
            reasons.append(f"expected at least {count} {name}, found {len(found)}")
        else:
            if clause.color is not None:
                got = list(colours(image, found, name))
                if len(got) != len(found):
                    raise ValueError(f"colour classifier gave {len(got)} colours for {len(found)} {name} detections")
                hits = got.count(clause.color)
                if hits < count:
                    matched = False
                    seen = ", ".join(f"{got.count(c)} {c}" for c in COLORS if c in got)
                    reasons.append(f"expected at least {count} {clause.color} {name}, found {hits} {clause.color} "
                                   f"(colours seen: {seen or 'none'})")
            if clause.position is not None and matched:
                relation, target = clause.position
                targets = matched_groups[target]
                if targets is None:
                    matched = False
                    reasons.append(f"no target for {name} to be {relation}: clause {target} "
                                   f"({prompt.include[target].classname}) was not matched")
                else:
                    for obj in found:
                        for other in targets:
                            rels = relations(obj, other, position_threshold)
                            if relation not in rels:
                                matched = False
                                reasons.append(f"expected {name} {relation} {other.classname}, found "
                                               f"{' and '.join(rels) or 'no relation'}")
                                break
                        if not matched:
                            break
        correct = correct and matched
        matched_groups.append(found if matched else None)
    for ex in prompt.exclude:
        n = len(selected.get(ex.classname, ()))
        if n >= ex.count:
            correct = False
            reasons.append(f"expected fewer than {ex.count} {ex.classname}, found {n}")
    return correct, "\n".join(reasons)


def crop_for_colour(image: Image.Image, det: ObjectDetection, background: str = BACKGROUND) -> Image.Image:
    """What GenEval's colour classifier sees of a detection: with a mask, the object over a flat
    `background` (or over the image itself when background is "original"); cropped to the box
    (PIL rounds a fractional box to whole pixels)."""
    rgb = image.convert("RGB")
    out = rgb
    if det.mask is not None:
        mask = np.asarray(det.mask, dtype=bool)
        if mask.shape != (rgb.height, rgb.width):
            raise ValueError(f"mask of shape {mask.shape} for an image of {rgb.height}x{rgb.width} (HxW)")
        blank = rgb.copy() if background == "original" else Image.new("RGB", rgb.size, color=background)
        out = Image.composite(rgb, blank, Image.fromarray(mask))
    return out.crop(det.box)


def result_record(filename: str | os.PathLike[str], prompt: GenEvalPrompt, correct: bool, reason: str,
                  selected: Mapping[str, Sequence[ObjectDetection]]) -> dict[str, Any]:
    """One line of GenEval's results.jsonl; `metadata` and `details` are JSON strings, as GenEval writes them
    (details: class -> kept boxes, each [x0, y0, x1, y1, score])."""
    details = {name: [[*d.box, d.score] for d in dets] for name, dets in selected.items()}
    return {"filename": os.fspath(filename), "tag": prompt.tag, "prompt": prompt.prompt, "correct": bool(correct),
            "reason": reason, "metadata": prompt.metadata, "details": json.dumps(details)}


def evaluate_image(image: Image.Image, prompt: GenEvalPrompt, detector: Detector, colours: ColourClassifier,
                   filename: str | os.PathLike[str] = "", **select_kw: Any) -> dict[str, Any]:
    """Detect, select, judge and record one image (GenEval's ``evaluate_image``)."""
    selected = select(detector(image), prompt.tag, **select_kw)
    correct, reason = judge(image, selected, prompt, colours)
    return result_record(filename, prompt, correct, reason, selected)


@dataclass(frozen=True)
class TagScore:
    tag: str
    correct: int
    n: int                    # images
    accuracy: float
    ci: tuple[float, float]   # 95% Wilson interval
    outcomes: tuple[bool, ...]  # per image, in record order


@dataclass(frozen=True)
class GenEvalSummary:
    tags: tuple[TagScore, ...]  # in order of first appearance, as summary_scores.py groups them
    overall: float              # mean of the tag accuracies (GenEval's "Overall score")
    n_images: int
    n_prompts: int              # distinct metadata strings
    image_accuracy: float       # "% correct images"
    prompt_accuracy: float      # "% correct prompts": at least one correct image per prompt

    def metrics(self) -> list[MetricValue]:
        out = [MetricValue("overall", self.overall, self.n_images)]
        out += [MetricValue(t.tag, t.accuracy, t.n, t.ci[0], t.ci[1]) for t in self.tags]
        return out

    def outcomes(self) -> dict[str, str]:
        """{tag: per-image pass/fail bits, in record order} (results.OUTCOMES)."""
        return {t.tag: bits(t.outcomes) for t in self.tags}

    def to_json(self) -> dict[str, Any]:
        return {"overall": self.overall, "n_images": self.n_images, "n_prompts": self.n_prompts,
                "image_accuracy": self.image_accuracy, "prompt_accuracy": self.prompt_accuracy,
                "tags": {t.tag: {"correct": t.correct, "n": t.n, "accuracy": t.accuracy, "ci": list(t.ci)}
                         for t in self.tags}}


def _flag(value: Any, i: int) -> bool:
    if isinstance(value, (bool, np.bool_)) or value in (0, 1):
        return bool(value)
    raise ValueError(f"record {i}: correct must be a boolean, not {value!r}")


def summarise(records: Iterable[Mapping[str, Any]]) -> GenEvalSummary:
    """summary_scores.py over result records (`result_record`'s, or results.jsonl lines read back)."""
    by_tag: dict[str, list[bool]] = {}
    by_prompt: dict[str, bool] = {}
    flags: list[bool] = []
    for i, rec in enumerate(records):
        ok = _flag(rec["correct"], i)
        flags.append(ok)
        by_tag.setdefault(str(rec["tag"]), []).append(ok)
        key = str(rec["metadata"])
        by_prompt[key] = by_prompt.get(key, False) or ok
    if not flags:
        raise ValueError("no GenEval results to summarise")
    tags = tuple(TagScore(tag, sum(f), len(f), sum(f) / len(f), wilson_interval(sum(f), len(f)), tuple(f))
                 for tag, f in by_tag.items())
    overall = float(np.mean([t.accuracy for t in tags]))
    return GenEvalSummary(tags, overall, len(flags), len(by_prompt), sum(flags) / len(flags),
                          sum(by_prompt.values()) / len(by_prompt))

