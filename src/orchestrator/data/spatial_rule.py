"""GenEval's relative-position rule as a pure function.

What is implemented (GenEval, Ghosh et al. 2023, ``evaluation/evaluate_images.py::relative_position``):

    offset  = centre_A - centre_B                               (pixels, image coordinates, y down)
    revised = sign(offset) * max(|offset| - t * (size_A + size_B), 0)   per axis, t = 0.1,
              size = width on the x axis and height on the y axis
    if every |revised| < 1e-3: no relation
    (dx, dy) = revised / ||offset||_2                           (normalised by the length of the
                                                                 *unshrunk* offset, so the result is
                                                                 independent of image size)
    dx < -0.5 -> "left of", dx > 0.5 -> "right of", dy < -0.5 -> "above", dy > 0.5 -> "below"

GenEval takes mmdet boxes (x1, y1, x2, y2); this module takes (x, y, w, h) boxes, which give the same
centres (x + w/2, y + h/2) and sizes. Comparisons are strict, so |d| == 0.5 is no relation.
Several relations can hold at once (diagonal placement), or none (boxes too close to call).
"""

from __future__ import annotations

import math
from typing import Sequence

Box = Sequence[float]  # (x, y, w, h)

POSITION_THRESHOLD = 0.1
LEFT, RIGHT, ABOVE, BELOW = "left of", "right of", "above", "below"
GENEVAL_RELATIONS = (LEFT, RIGHT, ABOVE, BELOW)

# The scene graphs and captions use GQA's relation names; the metric uses GenEval's.
GENEVAL_TO_GQA = {LEFT: "to the left of", RIGHT: "to the right of", ABOVE: "above", BELOW: "below"}
GQA_TO_GENEVAL = {v: k for k, v in GENEVAL_TO_GQA.items()}
INVERSE = {LEFT: RIGHT, RIGHT: LEFT, ABOVE: BELOW, BELOW: ABOVE}


def components(box_a: Box, box_b: Box, threshold: float = POSITION_THRESHOLD) -> tuple[float, float] | None:
    """Normalised, shrunk offset (dx, dy) of A relative to B, or None when the rule calls no relation."""
    ax, ay, aw, ah = (float(v) for v in box_a)
    bx, by, bw, bh = (float(v) for v in box_b)
    ox = (ax + aw / 2) - (bx + bw / 2)
    oy = (ay + ah / 2) - (by + bh / 2)
    rx = math.copysign(max(abs(ox) - threshold * (aw + bw), 0.0), ox)
    ry = math.copysign(max(abs(oy) - threshold * (ah + bh), 0.0), oy)
    if abs(rx) < 1e-3 and abs(ry) < 1e-3:
        return None
    norm = math.hypot(ox, oy)  # > 0 here, since |revised| <= |offset|
    return rx / norm, ry / norm


def relation(box_a: Box, box_b: Box, threshold: float = POSITION_THRESHOLD) -> set[str]:
    """GenEval relations of A relative to B: a subset of {"left of", "right of", "above", "below"}."""
    comp = components(box_a, box_b, threshold)
    if comp is None:
        return set()
    dx, dy = comp
    out: set[str] = set()
    if dx < -0.5:
        out.add(LEFT)
    if dx > 0.5:
        out.add(RIGHT)
    if dy < -0.5:
        out.add(ABOVE)
    if dy > 0.5:
        out.add(BELOW)
    return out


def gqa_relations(box_a: Box, box_b: Box, threshold: float = POSITION_THRESHOLD) -> set[str]:
    """The same rule, named as in GQA scene graphs ("to the left of", ...)."""
    return {GENEVAL_TO_GQA[r] for r in relation(box_a, box_b, threshold)}


def to_geneval(name: str) -> str:
    """Accept either naming ("to the left of" or "left of") and return GenEval's."""
    name = name.strip().lower()
    if name in GQA_TO_GENEVAL:
        return GQA_TO_GENEVAL[name]
    if name in GENEVAL_TO_GQA:
        return name
    raise ValueError(f"not a spatial relation: {name!r} (expected one of {sorted(GQA_TO_GENEVAL)})")


def holds(name: str, box_a: Box, box_b: Box, threshold: float = POSITION_THRESHOLD) -> bool:
    """Whether relation `name` (either naming) holds for A relative to B."""
    return to_geneval(name) in relation(box_a, box_b, threshold)
