"""GenEval's judging core on hand-built detections and tiny PIL images: the keep rule, each tag's clauses,
exclude, the colour crop, results.jsonl records and the summary (no model weights)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from orchestrator.data import spatial_rule
from orchestrator.data.loaders.geneval import parse_record
from orchestrator.eval import geneval as ge
from orchestrator.eval.geneval import ObjectDetection as Det
from orchestrator.eval.stats import wilson_interval

IMAGE = Image.new("RGB", (100, 100))


def _prompt(record, index=0):
    return parse_record(record, "mem.jsonl", index + 1, index)


SINGLE = _prompt({"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"})
TWO = _prompt({"tag": "two_object", "include": [{"class": "toilet", "count": 1}, {"class": "bicycle", "count": 1}],
               "prompt": "a photo of a toilet and a bicycle"})
COUNTING = _prompt({"tag": "counting", "include": [{"class": "clock", "count": 3}],
                    "exclude": [{"class": "clock", "count": 4}], "prompt": "a photo of three clocks"})
COLORS = _prompt({"tag": "colors", "include": [{"class": "car", "count": 1, "color": "orange"}],
                  "prompt": "a photo of an orange car"})
POSITION = _prompt({"tag": "position", "include": [{"class": "bench", "count": 1},
                                                   {"class": "cup", "count": 1, "position": ["left of", 0]}],
                    "prompt": "a photo of a cup left of a bench"})
ATTR = _prompt({"tag": "color_attr", "include": [{"class": "bus", "count": 1, "color": "red"},
                                                 {"class": "vase", "count": 1, "color": "white"}],
                "prompt": "a photo of a red bus and a white vase"})


class StubColours:
    """Colours by class name, one per detection; records each call."""

    def __init__(self, **by_class):
        self.by_class = by_class
        self.calls = []

    def __call__(self, image, detections, classname):
        self.calls.append((classname, list(detections)))
        return list(self.by_class[classname])[:len(detections)]


def never(image, detections, classname):
    raise AssertionError("colour classifier called for a prompt without colour")


def _judge(prompt, dets, colours=never, **kw):
    return ge.judge(IMAGE, ge.select(dets, prompt.tag, **kw), prompt, colours)


# ---- select: GenEval's keep rule ---------------------------------------------------------------------------

def test_select_thresholds_strictly_sorts_and_drops_empty_classes():
    dets = [Det("cup", 0.5, (0, 0, 5, 5)), Det("cup", 0.3, (1, 1, 5, 5)), Det("cup", 0.8, (2, 2, 5, 5)),
            Det("bench", 0.29, (0, 0, 9, 9))]
    kept = ge.select(dets, "single_object")
    assert list(kept) == ["cup"]  # bench has nothing above 0.3: absent, not empty
    assert [d.score for d in kept["cup"]] == [0.8, 0.5]  # 0.3 itself is not above the threshold


def test_select_uses_the_counting_threshold_only_for_counting():
    dets = [Det("clock", s, (10 * i, 0, 10 * i + 8, 8)) for i, s in enumerate((0.95, 0.85, 0.92, 0.9))]
    assert [d.score for d in ge.select(dets, "counting")["clock"]] == [0.95, 0.92]
    assert len(ge.select(dets, "single_object")["clock"]) == 4


def test_select_caps_each_class_at_max_objects_keeping_the_best():
    dets = [Det("kite", 0.31 + 0.03 * i, (i, 0, i + 1, 1)) for i in range(20)]
    kept = ge.select(dets, "two_object")["kite"]
    assert ge.MAX_OBJECTS == 16 and len(kept) == 16
    assert [d.score for d in kept] == sorted((d.score for d in dets), reverse=True)[:16]
    assert len(ge.select(dets, "two_object", max_objects=3)["kite"]) == 3


def test_ties_come_out_as_genevals_reversed_argsort():
    a, b = Det("cup", 0.5, (0, 0, 1, 1)), Det("cup", 0.5, (5, 5, 6, 6))
    assert ge.select([a, b], "single_object")["cup"] == [b, a]


def test_iou_uses_genevals_plus_one_pixel_convention():
    a, b = (0, 0, 9, 9), (5, 0, 14, 9)  # 10x10 boxes (with +1) sharing a 5x10 strip
    assert ge.box_iou(a, b) == pytest.approx(50 / 150)  # without the +1 it would be 36/126 = 0.286
    assert ge.box_iou((0, 0, 4, 4), (10, 10, 12, 12)) == 0.0


def test_no_suppression_by_default_and_greedy_suppression_below_one():
    a = Det("dog", 0.9, (0, 0, 9, 9))
    b = Det("dog", 0.8, (5, 0, 14, 9))    # IoU with a: 1/3 (+1 convention)
    c = Det("dog", 0.7, (0, 0, 9, 9))     # same box as a
    d = Det("dog", 0.6, (40, 40, 49, 49))  # far away
    assert ge.MAX_OVERLAP == 1.0
    assert ge.select([d, c, b, a], "single_object")["dog"] == [a, b, c, d]
    assert ge.select([d, c, b, a], "single_object", max_overlap=0.3)["dog"] == [a, d]  # 1/3 >= 0.3: b goes
    assert ge.select([d, c, b, a], "single_object", max_overlap=0.34)["dog"] == [a, b, d]


def test_select_rejects_an_unknown_tag():
    with pytest.raises(ValueError, match="tag"):
        ge.select([], "spatial")


# ---- judge: one test per tag -------------------------------------------------------------------------------

def test_single_object_found_and_missing():
    assert _judge(SINGLE, [Det("bench", 0.6, (0, 0, 9, 9))]) == (True, "")
    ok, reason = _judge(SINGLE, [Det("bench", 0.2, (0, 0, 9, 9)), Det("cup", 0.9, (0, 0, 9, 9))])
    assert not ok and reason == "expected at least 1 bench, found 0"


def test_two_object_needs_both():
    dets = [Det("toilet", 0.9, (0, 0, 9, 9)), Det("bicycle", 0.4, (20, 0, 29, 9))]
    assert _judge(TWO, dets)[0]
    ok, reason = _judge(TWO, dets[:1])
    assert not ok and reason.splitlines() == ["expected at least 1 bicycle, found 0"]


def test_counting_with_the_09_threshold_and_the_exclude_clause():
    def clocks(*scores):
        return [Det("clock", s, (20 * i, 0, 20 * i + 9, 9)) for i, s in enumerate(scores)]

    assert _judge(COUNTING, clocks(0.95, 0.93, 0.91)) == (True, "")
    ok, reason = _judge(COUNTING, clocks(0.95, 0.93, 0.89, 0.5))  # two above 0.9: 0.89 does not count
    assert not ok and reason == "expected at least 3 clock, found 2"
    ok, reason = _judge(COUNTING, clocks(0.95, 0.93, 0.91, 0.99))  # four: the exclude clause fails
    assert not ok and reason == "expected fewer than 4 clock, found 4"


def test_colors_checked_on_the_top_detections_with_the_classifier():
    cars = [Det("car", 0.5, (0, 0, 9, 9)), Det("car", 0.9, (20, 0, 29, 9))]
    stub = StubColours(car=["orange"])
    assert _judge(COLORS, cars, stub) == (True, "")
    assert stub.calls == [("car", [cars[1]])]  # count 1: only the most confident car is asked about
    ok, reason = _judge(COLORS, cars, StubColours(car=["red"]))
    assert not ok and reason == "expected at least 1 orange car, found 0 orange (colours seen: 1 red)"


def test_colour_not_asked_when_the_count_is_not_met():
    stub = StubColours(car=["orange"])
    ok, reason = _judge(COLORS, [Det("car", 0.2, (0, 0, 9, 9))], stub)
    assert not ok and stub.calls == [] and reason == "expected at least 1 car, found 0"


def test_colour_classifier_must_answer_once_per_detection():
    with pytest.raises(ValueError, match="colours for 1"):
        _judge(COLORS, [Det("car", 0.9, (0, 0, 9, 9))], lambda image, dets, name: ["orange", "red"])


def test_color_attr_needs_each_colour_on_its_own_object():
    dets = [Det("bus", 0.9, (0, 0, 39, 39)), Det("vase", 0.8, (50, 50, 59, 69))]
    assert _judge(ATTR, dets, StubColours(bus=["red"], vase=["white"]))[0]
    ok, reason = _judge(ATTR, dets, StubColours(bus=["red"], vase=["red"]))  # swapped attribute binding
    assert not ok and reason.splitlines() == ["expected at least 1 white vase, found 0 white (colours seen: 1 red)"]


BENCH = Det("bench", 0.9, (60, 40, 90, 70))


def test_position_right():
    assert _judge(POSITION, [BENCH, Det("cup", 0.8, (0, 40, 30, 70))]) == (True, "")


def test_position_wrong_and_too_close_to_call():
    ok, reason = _judge(POSITION, [BENCH, Det("cup", 0.8, (95, 40, 99, 70))])
    assert not ok and reason == "expected cup left of bench, found right of"
    ok, reason = _judge(POSITION, [BENCH, Det("cup", 0.8, (58, 40, 88, 70))])  # 2 px apart: no relation
    assert not ok and reason == "expected cup left of bench, found no relation"


def test_position_no_target_when_the_referenced_clause_failed():
    ok, reason = _judge(POSITION, [Det("cup", 0.8, (0, 40, 30, 70))])
    assert not ok
    assert reason.splitlines() == ["expected at least 1 bench, found 0",
                                   "no target for cup to be left of: clause 0 (bench) was not matched"]


def test_position_must_hold_for_every_pair():
    prompt = _prompt({"tag": "position", "include": [{"class": "bench", "count": 1},
                                                     {"class": "cup", "count": 2, "position": ["left of", 0]}],
                      "prompt": "two cups left of a bench"})
    left, right = Det("cup", 0.8, (0, 40, 30, 70)), Det("cup", 0.7, (95, 40, 99, 70))
    assert _judge(prompt, [BENCH, left, Det("cup", 0.6, (0, 0, 20, 20))])[0]
    ok, reason = _judge(prompt, [BENCH, left, right])
    assert not ok and reason == "expected cup left of bench, found right of"


def test_position_not_checked_after_the_colour_failed():
    prompt = _prompt({"tag": "position", "include": [{"class": "bench", "count": 1},
                                                     {"class": "cup", "count": 1, "color": "red",
                                                      "position": ["left of", 0]}],
                      "prompt": "a red cup left of a bench"})
    wrong_side = Det("cup", 0.8, (95, 40, 99, 70))
    ok, reason = _judge(prompt, [BENCH, wrong_side], StubColours(cup=["blue"]))
    assert not ok and reason.splitlines() == ["expected at least 1 red cup, found 0 red (colours seen: 1 blue)"]
    ok, reason = _judge(prompt, [BENCH, wrong_side], StubColours(cup=["red"]))
    assert not ok and reason == "expected cup left of bench, found right of"


def test_exclude_fails_at_count_or_more():
    prompt = _prompt({"tag": "single_object", "include": [{"class": "bench", "count": 1}],
                      "exclude": [{"class": "cup", "count": 2}, {"class": "dog", "count": 1}], "prompt": "a bench"})
    bench, cup = Det("bench", 0.9, (0, 0, 9, 9)), Det("cup", 0.9, (20, 0, 29, 9))
    assert _judge(prompt, [bench, cup]) == (True, "")  # one cup < 2
    ok, reason = _judge(prompt, [bench, cup, cup, Det("dog", 0.5, (0, 0, 1, 1))])
    assert not ok
    assert reason.splitlines() == ["expected fewer than 2 cup, found 2", "expected fewer than 1 dog, found 1"]


# ---- the relation test: spatial_rule against GenEval's formula ---------------------------------------------

def _geneval_formula(a, b, t=0.1):
    """GenEval's relative_position, restated from its formula over (x0, y0, x1, y1) boxes."""
    ba, bb = np.asarray(a, float).reshape(2, 2), np.asarray(b, float).reshape(2, 2)
    offset = ba.mean(0) - bb.mean(0)
    dims = np.abs(ba[1] - ba[0]) + np.abs(bb[1] - bb[0])
    rev = np.maximum(np.abs(offset) - t * dims, 0) * np.sign(offset)
    if np.all(np.abs(rev) < 1e-3):
        return set()
    dx, dy = rev / np.linalg.norm(offset)
    return {r for r, hit in (("left of", dx < -0.5), ("right of", dx > 0.5), ("above", dy < -0.5),
                             ("below", dy > 0.5)) if hit}


def test_box_adapter_gives_spatial_rule_genevals_relation():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        a, b = (np.sort(rng.integers(0, 64, (2, 2)), axis=0).T.ravel()[[0, 2, 1, 3]] for _ in range(2))
        assert set(ge.relations(Det("a", 1, a), Det("b", 1, b), 0.1)) == _geneval_formula(a, b)
    # Hand-computed: centres 30 px apart on x, shrink 0.1 * (10 + 10) = 2 -> dx = -28/30: "left of" only.
    assert spatial_rule.relation(ge._xywh((0, 0, 10, 10)), ge._xywh((30, 0, 40, 10))) == {"left of"}


# ---- colour crop ------------------------------------------------------------------------------------------

def _gradient(w=10, h=8):
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 0] = np.arange(w)[None, :] * 20
    arr[..., 1] = np.arange(h)[:, None] * 20
    return Image.fromarray(arr)


def test_crop_puts_the_masked_object_on_grey_and_crops_to_the_box():
    mask = np.zeros((8, 10), bool)
    mask[2:6, 3:7] = True
    crop = ge.crop_for_colour(_gradient(), Det("cup", 0.9, (2, 1, 8, 7), mask))
    assert crop.size == (6, 6) and crop.mode == "RGB"
    assert crop.getpixel((0, 0)) == (153, 153, 153)   # image (2, 1): outside the mask, "#999"
    assert crop.getpixel((1, 1)) == (60, 40, 0)       # image (3, 2): inside, the object's own pixel
    assert crop.getpixel((4, 4)) == (120, 100, 0)     # image (6, 5): inside
    assert crop.getpixel((5, 5)) == (153, 153, 153)   # image (7, 6): outside
    original = ge.crop_for_colour(_gradient(), Det("cup", 0.9, (2, 1, 8, 7), mask), background="original")
    assert original.getpixel((0, 0)) == (40, 20, 0)


def test_crop_without_mask_is_the_plain_box_and_a_wrong_mask_is_refused():
    crop = ge.crop_for_colour(_gradient(), Det("cup", 0.9, (1, 2, 4, 5)))
    assert crop.size == (3, 3) and crop.getpixel((0, 0)) == (20, 40, 0)
    with pytest.raises(ValueError, match="mask"):
        ge.crop_for_colour(_gradient(), Det("cup", 0.9, (1, 2, 4, 5), np.ones((10, 8), bool)))


def test_colour_texts_follow_genevals_templates():
    texts = ge.colour_texts("car")
    assert list(texts) == list(ge.COLORS) and ge.BACKGROUND == "#999"
    assert texts["orange"] == ("a photo of a orange car", "a photo of a orange-colored car",
                               "a photo of a orange object")


# ---- results.jsonl and the summary ------------------------------------------------------------------------

def test_result_record_has_genevals_columns_and_json_string_fields():
    cup = Det("cup", 0.8, (0, 40, 30, 70))
    selected = ge.select([BENCH, cup], "position")
    rec = ge.result_record("imgs/00004/samples/0001.png", POSITION, False, "why", selected)
    assert list(rec) == ["filename", "tag", "prompt", "correct", "reason", "metadata", "details"]
    assert rec["filename"] == "imgs/00004/samples/0001.png" and rec["tag"] == "position"
    assert rec["prompt"] == "a photo of a cup left of a bench" and rec["correct"] is False and rec["reason"] == "why"
    assert isinstance(rec["metadata"], str) and json.loads(rec["metadata"]) == POSITION.to_record()
    assert json.loads(rec["details"]) == {"bench": [[60.0, 40.0, 90.0, 70.0, 0.9]],
                                          "cup": [[0.0, 40.0, 30.0, 70.0, 0.8]]}


def test_evaluate_image_runs_detector_select_judge_and_record():
    def detector(image):
        return [Det("bench", 0.9, (60, 40, 90, 70)), Det("cup", 0.8, (0, 40, 30, 70)), Det("cup", 0.1, (0, 0, 5, 5))]
    rec = ge.evaluate_image(IMAGE, POSITION, detector, never, filename="x.png")
    assert rec["correct"] is True and rec["reason"] == ""
    assert len(json.loads(rec["details"])["cup"]) == 1  # the 0.1 cup is below the threshold


def _rec(tag, prompt, correct):
    return {"tag": tag, "correct": correct, "metadata": json.dumps({"tag": tag, "prompt": prompt})}


def test_summary_per_tag_and_overall_by_hand():
    records = [_rec("counting", "p2", True), _rec("single_object", "p1", True), _rec("counting", "p2", False),
               _rec("position", "p4", False), _rec("single_object", "p1", True), _rec("counting", "p3", False),
               _rec("counting", "p3", False)]
    s = ge.summarise(records)
    assert [t.tag for t in s.tags] == ["counting", "single_object", "position"]  # order of first appearance
    assert [(t.correct, t.n, t.accuracy) for t in s.tags] == [(1, 4, 0.25), (2, 2, 1.0), (0, 1, 0.0)]
    assert s.tags[0].ci == wilson_interval(1, 4)
    assert s.overall == pytest.approx((0.25 + 1.0 + 0.0) / 3)  # mean over tags: 0.4167, not 3/7 over images
    assert s.image_accuracy == pytest.approx(3 / 7) and s.n_images == 7
    assert s.n_prompts == 4 and s.prompt_accuracy == 0.5  # p1, p2 have a correct image; p3, p4 none
    metrics = {m.name: m for m in s.metrics()}
    assert list(metrics) == ["overall", "counting", "single_object", "position"]
    assert metrics["overall"].n == 7 and metrics["overall"].ci_low is None
    assert metrics["overall"].value == pytest.approx(0.4166666666)
    counting = metrics["counting"]
    assert (counting.n, counting.ci_low, counting.ci_high) == (4, *wilson_interval(1, 4))
    assert s.outcomes() == {"counting": "1000", "single_object": "11", "position": "0"}


def test_summary_reads_result_records_and_refuses_empty_or_non_boolean_input():
    rec = ge.result_record("a.png", SINGLE, True, "", {})
    assert ge.summarise([rec, dict(rec, correct=False)]).tags[0].accuracy == 0.5
    with pytest.raises(ValueError, match="no GenEval results"):
        ge.summarise([])
    with pytest.raises(ValueError, match="boolean"):
        ge.summarise([dict(rec, correct="yes")])


def test_detection_box_must_have_four_numbers():
    assert Det("cup", np.float32(0.5), np.array([1, 2, 3, 4])).box == (1.0, 2.0, 3.0, 4.0)
    with pytest.raises(ValueError, match="box"):
        Det("cup", 0.5, (1, 2, 3))
