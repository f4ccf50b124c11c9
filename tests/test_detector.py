"""Detector recovery on rendered ground truth, connected components, and GenEval's position rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from orchestrator.data import spatial_rule
from orchestrator.data.detector import classify_shape, detect, label_components
from orchestrator.data.shapes import SHAPES, SIZES, Scene, ShapeObject, make_example, render, side_pixels


def _recovery(size: int, n: int, seed: int) -> tuple[int, int, int]:
    """(objects recovered with right shape, colour and box within 1 px; objects; extra detections)."""
    found = total = extra = 0
    for i in range(n):
        ex = make_example(seed, i, size)
        dets = list(detect(ex.image()))
        for o in ex.scene.objects:
            total += 1
            match = next((d for d in dets if d.shape == o.shape and d.colour == o.colour
                          and all(abs(a - b) <= 1 for a, b in zip(d.box, o.box))), None)
            if match is not None:
                found += 1
                dets.remove(match)
        extra += len(dets)
    return found, total, extra


def test_detector_recovers_rendered_objects():
    results = {size: _recovery(size, 300, seed=123) for size in (32, 64)}  # 600 scenes in all
    found = sum(r[0] for r in results.values())
    total = sum(r[1] for r in results.values())
    rate = found / total
    print(f"detector recovery: {found}/{total} = {rate:.4f}; per size {results}")
    assert total >= 600
    assert rate >= 0.99
    assert sum(r[2] for r in results.values()) <= 0.01 * total  # hardly any spurious detections


def test_detection_fields_and_inputs():
    scene = Scene(32, (ShapeObject("circle", "red", "large", 2, 3, 12, 12),
                       ShapeObject("triangle", "blue", "small", 20, 20, 8, 8)))
    img = render(scene)
    dets = detect(img)
    assert [(d.shape, d.colour, d.box) for d in dets] == [("circle", "red", (2, 3, 12, 12)),
                                                          ("triangle", "blue", (20, 20, 8, 8))]
    assert dets[0].centre == (8.0, 9.0)
    as_float = np.asarray(img, dtype=np.float32) / 255.0  # a decoded model sample in [0, 1]
    assert detect(as_float) == dets
    assert detect(np.asarray(img)) == dets
    assert detect(Image.new("RGB", (32, 32), (255, 255, 255))) == []


def test_detector_ignores_speckle_and_tolerates_noise():
    scene = Scene(64, (ShapeObject("square", "green", "large", 5, 5, 24, 24),))
    arr = np.asarray(render(scene)).astype(np.int16)
    rng = np.random.default_rng(0)
    noisy = np.clip(arr + rng.integers(-30, 31, arr.shape), 0, 255).astype(np.uint8)
    noisy[50, 50] = (255, 0, 0)  # one stray red pixel
    dets = detect(noisy)
    assert [(d.shape, d.colour, d.box) for d in dets] == [("square", "green", (5, 5, 24, 24))]


@pytest.mark.parametrize("image_size", [32, 64])
def test_classify_every_shape_and_size(image_size):
    for shape in SHAPES:
        for size in SIZES:
            side = side_pixels(size, image_size)
            img = np.asarray(render(Scene(image_size, (ShapeObject(shape, "yellow", size, 2, 2, side, side),))))
            blob = (img[2:2 + side, 2:2 + side] != 255).any(axis=-1)
            assert classify_shape(blob) == shape


def test_label_components_matches_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(7)
    for _ in range(200):
        h, w = rng.integers(1, 30, size=2)
        mask = rng.random((h, w)) < rng.random()
        for conn, structure in ((8, np.ones((3, 3))), (4, None)):
            ours, k = label_components(mask, conn)
            ref, k_ref = ndimage.label(mask, structure=structure)
            assert k == k_ref
            np.testing.assert_array_equal(ours, ref)


def test_label_components_long_snake():
    mask = np.zeros((40, 40), bool)
    mask[::2, :] = True
    mask[1::4, -1] = True
    mask[3::4, 0] = True  # one serpentine component
    labels, k = label_components(mask)
    assert k == 1 and labels[mask].min() == 1


# ---------------------------------------------------------------- GenEval's rule

def test_rule_basic_directions():
    b = (10, 10, 4, 4)
    assert spatial_rule.relation((0, 10, 4, 4), b) == {"left of"}
    assert spatial_rule.relation((20, 10, 4, 4), b) == {"right of"}
    assert spatial_rule.relation((10, 0, 4, 4), b) == {"above"}  # image y grows downwards
    assert spatial_rule.relation((10, 20, 4, 4), b) == {"below"}
    assert spatial_rule.relation((0, 0, 4, 4), b) == {"left of", "above"}  # diagonal: both
    assert spatial_rule.relation(b, b) == set()  # same centre: nothing


def test_rule_shrink_boundary():
    # Centres 10 apart on x; sizes summing to 50 shrink the offset by exactly 5: dx = 0.5, not > 0.5.
    a, b = (10 - 12.5, 0, 25, 1), (-12.5, 0, 25, 1)
    assert spatial_rule.components(a, b)[0] == pytest.approx(0.5)
    assert spatial_rule.relation(a, b) == set()
    # Sizes summing to 48 shrink by 4.8: dx = 0.52 -> right of.
    a, b = (10 - 12, 0, 24, 1), (-12, 0, 24, 1)
    assert spatial_rule.relation(a, b) == {"right of"}
    assert spatial_rule.relation(b, a) == {"left of"}
    # Sizes summing to 100 shrink the whole offset away: below the 1e-3 floor, no relation.
    assert spatial_rule.components((10 - 25, 0, 50, 1), (-25, 0, 50, 1)) is None


def test_rule_normalises_by_unshrunk_offset():
    # Points (size 0): no shrink, so (dx, dy) is the unit direction of the offset.
    dx, dy = spatial_rule.components((3, 4, 0, 0), (0, 0, 0, 0))
    assert (dx, dy) == pytest.approx((0.6, 0.8))
    assert spatial_rule.relation((3, 4, 0, 0), (0, 0, 0, 0)) == {"right of", "below"}
    # 30 degrees off horizontal: dy = sin 30 = 0.5 exactly at the threshold -> only "right of".
    ang = math.radians(29.9)
    assert spatial_rule.relation((100 * math.cos(ang), 100 * math.sin(ang), 0, 0), (0, 0, 0, 0)) == {"right of"}
    ang = math.radians(30.1)
    assert spatial_rule.relation((100 * math.cos(ang), 100 * math.sin(ang), 0, 0), (0, 0, 0, 0)) == \
        {"right of", "below"}
    # Scale invariance: the same layout at twice the size gives the same answer.
    a, b = (0, 0, 6, 6), (9, 2, 4, 4)
    assert spatial_rule.relation(a, b) == spatial_rule.relation(tuple(2 * v for v in a), tuple(2 * v for v in b))


def test_rule_names_and_holds():
    a, b = (0, 10, 4, 4), (10, 10, 4, 4)
    assert spatial_rule.gqa_relations(a, b) == {"to the left of"}
    assert spatial_rule.holds("to the left of", a, b) and spatial_rule.holds("left of", a, b)
    assert not spatial_rule.holds("to the right of", a, b)
    with pytest.raises(ValueError):
        spatial_rule.holds("on", a, b)


def test_detected_relations_agree_with_scene_graph():
    for i in range(100):
        ex = make_example(5, i, 32)
        dets = detect(ex.image())
        by_key = {(d.shape, d.colour, d.box): d for d in dets}
        for obj in ex.scene_graph.objects.values():
            for rel in obj.relations:
                tgt = ex.scene_graph.objects[rel.object]
                da = by_key[(obj.name, obj.attributes[0], obj.box)]
                db = by_key[(tgt.name, tgt.attributes[0], tgt.box)]
                assert spatial_rule.holds(rel.name, da.box, db.box)
