"""GenEval's detectors: a tiny random Mask2Former loaded by path (valid boxes, masks, scores, GenEval's class
names; the score is mmdet's formula), label mapping and refusal by name, and the shapes world's detector and
palette colours behind the same interface, judged by GenEval's code. Random weights: plumbing and invariants."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from orchestrator.data.loaders.geneval import OBJECT_NAMES, parse_record
from orchestrator.eval import geneval as ge
from orchestrator.eval.colour_classifiers import ShapesColourClassifier
from orchestrator.eval.detectors import Mask2FormerDetector, ShapesDetector, geneval_labels, mask_box
from orchestrator.eval.mask2former_configs import COCO_LABELS, mask2former_config, save_random_mask2former


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return save_random_mask2former(tmp_path_factory.mktemp("m2f") / "tiny", mask2former_config("tiny"))


def _image(w=48, h=40, seed=0):
    return Image.fromarray((np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8))


def test_mask2former_detections_are_boxes_masks_and_scores_in_geneval_names(detector_dir):
    det = Mask2FormerDetector(detector_dir, "cpu")
    assert det.name == "tiny" and set(det.classnames) == set(OBJECT_NAMES)
    assert det.labels[COCO_LABELS.index("mouse")] == "computer mouse"  # COCO's spelling mapped to GenEval's
    image = _image()
    found = det(image)
    assert 0 < len(found) <= det.model.config.num_queries
    for d in found:
        assert d.classname in OBJECT_NAMES and 0.0 <= d.score <= 1.0
        assert d.mask.dtype == bool and d.mask.shape == (40, 48) and d.mask.any()
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 40
        assert d.box == mask_box(d.mask)  # the mask's tight box, one past its last column and row
        ys, xs = np.nonzero(d.mask)
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert det(image) == found  # deterministic


def test_scores_are_mmdets_formula_on_transformers_mask_grid(detector_dir):
    """mmdet's MaskFormerFusionHead.instance_postprocess written out on the model's raw outputs: softmax without
    the no-object column, top-k of query x class pairs (k = queries), times the mean sigmoid of the mask logits
    where they are > 0, the logits read on transformers' 384 x 384 grid. Every detection is one of those pairs."""
    det = Mask2FormerDetector(detector_dir, "cpu")
    image = _image(seed=1)
    inputs = det.processor(images=image, return_tensors="pt")
    with torch.inference_mode():
        out = det.model(**inputs)
    cls, masks = out.class_queries_logits[0], out.masks_queries_logits[0]
    masks = torch.nn.functional.interpolate(masks[None], size=(384, 384), mode="bilinear", align_corners=False)[0]
    probs = cls.softmax(-1)[:, :-1]
    n_classes = probs.shape[1]
    top, idx = probs.flatten().topk(cls.shape[0])
    query, label = idx // n_classes, idx % n_classes
    binary = (masks[query] > 0).float()
    mask_score = (masks[query].sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    expected = sorted((det.labels[int(lab)], round(float(s), 6))
                      for lab, s, b in zip(label, top * mask_score, binary) if b.any())
    got = sorted((d.classname, d.score) for d in det(image))
    assert [n for n, _ in got] == [n for n, _ in expected]
    assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=2e-6)


def test_a_model_whose_labels_do_not_map_is_refused_by_name(tmp_path):
    labels = list(COCO_LABELS)
    labels[5] = "widget"
    path = save_random_mask2former(tmp_path / "odd", mask2former_config("tiny", tuple(labels)))
    with pytest.raises(ValueError, match=r"'widget' are not GenEval's COCO class names"):
        Mask2FormerDetector(path)


def test_label_mapping_accepts_other_spellings_and_refuses_twins_and_gaps():
    voc = {i: {"motorcycle": "motorbike", "couch": "sofa", "tv": "tvmonitor", "dining table": "diningtable"}.get(n, n)
           for i, n in enumerate(OBJECT_NAMES)}
    assert list(geneval_labels(voc).values()) == list(OBJECT_NAMES)
    shuffled = {str(i): n for i, n in zip(range(80), reversed(COCO_LABELS))}  # any order, string keys
    assert geneval_labels(shuffled)[0] == "toothbrush"
    twins = dict(enumerate(COCO_LABELS))
    twins[1] = "Computer_Mouse"
    with pytest.raises(ValueError, match=r"'mouse' and 'Computer_Mouse'|'Computer_Mouse' and 'mouse'"):
        geneval_labels(twins)
    with pytest.raises(ValueError, match="no class for GenEval's 'toothbrush'"):
        geneval_labels(dict(enumerate(COCO_LABELS[:-1])))
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        Mask2FormerDetector("/nonexistent-detector")


# ---- the shapes world behind the same interface -------------------------------------------------------------

def _scene():
    from orchestrator.data.shapes import Scene, ShapeObject, render

    scene = Scene(32, (ShapeObject("circle", "red", "large", 2, 10, 12, 12),
                       ShapeObject("square", "blue", "small", 22, 12, 8, 8)))
    return render(scene)


def _record(tag, include, prompt, exclude=None):
    rec = {"tag": tag, "include": include, "prompt": prompt}
    if exclude:
        rec["exclude"] = exclude
    return parse_record(rec, "mem.jsonl", 1, 0)


def test_shapes_detector_gives_shapes_boxes_blobs_and_confident_scores():
    from orchestrator.data.detector import detect

    image = _scene()
    found = ShapesDetector()(image)
    plain = detect(image)
    assert [d.classname for d in found] == [d.shape for d in plain] == ["circle", "square"]
    for d, p in zip(found, plain):
        x, y, w, h = p.box
        assert d.box == (x, y, x + w, y + h) == mask_box(d.mask)
        assert int(d.mask.sum()) == p.area and 0.95 < d.score <= 1.0
    assert found[0].score > found[1].score  # the larger blob is the more confident
    assert [d.attributes for d in found] == [("red", "large"), ("blue", "small")]  # read off the blob
    assert ShapesColourClassifier()(image, found, "circle") == ["red", "blue"]


def test_shapes_world_is_judged_by_genevals_code():
    image = _scene()
    det, colours = ShapesDetector(), ShapesColourClassifier()
    square = {"class": "square", "count": 1}
    right = _record("position", [square, {"class": "circle", "count": 1, "position": ["left of", 0]}], "a")
    wrong = _record("position", [square, {"class": "circle", "count": 1, "position": ["right of", 0]}], "b")
    colour = _record("color_attr", [{"class": "circle", "count": 1, "color": "red"},
                                    {"class": "square", "count": 1, "color": "yellow"}], "c")
    counting = _record("counting", [{"class": "circle", "count": 1}], "one circle", [{"class": "circle", "count": 2}])
    assert ge.evaluate_image(image, right, det, colours)["correct"]
    assert not ge.evaluate_image(image, wrong, det, colours)["correct"]
    rec = ge.evaluate_image(image, colour, det, colours)
    assert not rec["correct"]
    assert rec["reason"] == "expected at least 1 yellow square, found 0 yellow (colours seen: 1 blue)"
    assert ge.evaluate_image(image, counting, det, colours)["correct"]  # its scores clear the counting threshold
